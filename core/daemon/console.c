/* Console command parser and dispatcher. Lines are split on blanks; a line
 * longer than the buffer is rejected whole rather than cut into commands. */
#include "daemon/console.h"

#include "base/log.h"
#include "daemon/metrics.h"
#include "host/cluster.h"
#include "os/os.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void console_init(console *c, host *h, const char *source) {
  memset(c, 0, sizeof(*c));
  c->h = h;
  c->source = source;
}

int console_reopen_log(const char *source) {
  int rc = log_reopen();
  if (rc == -ENOENT)
    log_info("reopen-log (%s): no log_file configured; logging to stderr", source);
  else if (rc < 0)
    log_error("reopen-log (%s): cannot reopen %s: %s; still writing to the old file", source,
              log_file_path(), os_strerror(-rc));
  else
    log_info("reopen-log (%s): reopened %s", source, log_file_path());
  return rc;
}

/* status, sessions, plugins, cluster: text, or JSON with --json. */
static int view(console *c, const char *cmd, int json, FILE *out) {
  int rc = 0;
  if (strcmp(cmd, "status") == 0)
    json ? (rc = host_print_status_json(c->h, out)) : host_print_status(c->h, out);
  else if (strcmp(cmd, "sessions") == 0)
    json ? (rc = host_print_sessions_json(c->h, out)) : host_print_sessions(c->h, out);
  else if (strcmp(cmd, "cluster") == 0)
    rc = cluster_print(c->h, out, json);
  else
    json ? (rc = host_print_plugins_json(c->h, out)) : host_print_plugins(c->h, out);
  if (rc < 0) {
    fprintf(out, "error: %s: out of memory\n", cmd);
    return -1;
  }
  return 0;
}

static int is_view(const char *cmd) {
  return strcmp(cmd, "status") == 0 || strcmp(cmd, "sessions") == 0 ||
         strcmp(cmd, "plugins") == 0 || strcmp(cmd, "cluster") == 0;
}

static const char help_text[] = "commands:\n"
                                "  help            this text\n"
                                "  status [--json] uptime, backend, sessions per listener, plugins\n"
                                "  sessions [--json]\n"
                                "                  open sessions: id, plugin, peer\n"
                                "  kick SID        close session SID (hex, as `sessions` shows)\n"
                                "  plugins [--json]\n"
                                "                  loaded plugins and versions\n"
                                "  cluster [--json]\n"
                                "                  the nodes of the cluster: state, sessions, "
                                "last seen\n"
                                "  metrics         every metric, as /metrics serves them\n"
                                "  reload NAME     hot-reload plugin NAME from its file\n"
                                "  reopen-log      reopen log_file (after it was rotated)\n"
                                "  quit            stop the daemon (as SIGTERM)\n";

int console_exec(console *c, const char *line, FILE *out) {
  char cmd[32], arg[64], extra[8];
  int n = sscanf(line, "%31s %63s %7s", cmd, arg, extra);

  if (n <= 0)
    return 0;
  if (strcmp(cmd, "help") == 0 && n == 1) {
    fputs(help_text, out);
  } else if (is_view(cmd) && (n == 1 || (n == 2 && strcmp(arg, "--json") == 0))) {
    return view(c, cmd, n == 2, out);
  } else if (strcmp(cmd, "reopen-log") == 0 && n == 1) {
    int rc = console_reopen_log(c->source);
    if (rc == -ENOENT) {
      fprintf(out, "error: reopen-log: no log_file configured\n");
      return -1;
    }
    if (rc < 0) {
      fprintf(out, "error: reopen-log: %s: %s\n", log_file_path(), os_strerror(-rc));
      return -1;
    }
    fprintf(out, "reopened %s\n", log_file_path());
  } else if (strcmp(cmd, "metrics") == 0 && n == 1) {
    metrics_render(c->h, out);
  } else if (strcmp(cmd, "kick") == 0 && n == 2) {
    char *end;
    errno = 0;
    unsigned long long sid = strtoull(arg, &end, 16);
    if (errno || *end || end == arg) {
      fprintf(out, "error: kick: \"%s\" is not a session id (hex, as `sessions` shows)\n", arg);
      log_info("kick %s (%s): not a session id", arg, c->source);
      return -1;
    }
    if (host_kick(c->h, (pier_sid)sid) < 0) {
      fprintf(out, "error: kick: no session %016llx\n", sid);
      log_info("kick %016llx (%s): no such session", sid, c->source);
      return -1;
    }
    fprintf(out, "kicked %016llx\n", sid);
    log_info("kick %016llx (%s): done", sid, c->source);
  } else if (strcmp(cmd, "reload") == 0 && n == 2) {
    char msg[HOST_MSG_MAX];
    int rc = host_reload(c->h, arg, NULL, msg, sizeof(msg));
    fprintf(out, "%s%s\n", rc < 0 ? "error: " : "", msg);
    if (rc < 0) {
      log_error("reload %s (%s): %s", arg, c->source, msg);
      return -1;
    }
    log_info("reload %s (%s): %s", arg, c->source, msg);
  } else if (strcmp(cmd, "quit") == 0 && n == 1) {
    return CONSOLE_QUIT;
  } else if (strcmp(cmd, "kick") == 0 || strcmp(cmd, "reload") == 0) {
    /* Known command, wrong number of arguments. */
    fprintf(out, "usage: %s\n", cmd[0] == 'k' ? "kick SID" : "reload NAME");
    return -1;
  } else if (is_view(cmd)) {
    fprintf(out, "usage: %s [--json]\n", cmd);
    return -1;
  } else {
    fprintf(out, "error: unknown command \"%s\" (type `help`)\n", line);
    return -1;
  }
  return 0;
}

/* Runs the complete lines in the buffer after n more bytes were put in it. */
static int run_lines(console *c, size_t n, FILE *out) {
  int rc = CONSOLE_OK;
  char *start, *nl;

  c->len += n;
  c->buf[c->len] = '\0';
  start = c->buf;
  while ((nl = memchr(start, '\n', c->len - (size_t)(start - c->buf)))) {
    *nl = '\0';
    if (nl > start && nl[-1] == '\r')
      nl[-1] = '\0';
    if (c->discarding) {
      c->discarding = 0;
      fprintf(out, "error: line too long\n");
    } else if (console_exec(c, start, out) == CONSOLE_QUIT) {
      rc = CONSOLE_QUIT;
    }
    start = nl + 1;
    if (rc == CONSOLE_QUIT)
      break;
  }
  c->len -= (size_t)(start - c->buf);
  memmove(c->buf, start, c->len);
  if (c->len == sizeof(c->buf) - 1) {
    c->len = 0;
    c->discarding = 1;
  }
  fflush(out);
  return rc;
}

int console_read(console *c, int fd, FILE *out) {
  ssize_t n = read(fd, c->buf + c->len, sizeof(c->buf) - 1 - c->len);

  if (n == 0)
    return CONSOLE_EOF;
  if (n < 0)
    return errno == EAGAIN || errno == EINTR ? CONSOLE_OK : CONSOLE_EOF;
  return run_lines(c, (size_t)n, out);
}

int console_feed(console *c, const char *data, size_t n, FILE *out) {
  /* In pieces that fit the buffer, as successive reads would bring them. */
  while (n > 0) {
    size_t k = sizeof(c->buf) - 1 - c->len;
    if (k > n)
      k = n;
    memcpy(c->buf + c->len, data, k);
    data += k;
    n -= k;
    if (run_lines(c, k, out) == CONSOLE_QUIT)
      return CONSOLE_QUIT;
  }
  return CONSOLE_OK;
}
