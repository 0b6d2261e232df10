/* pierctl: sends one console command to a running pierd over its admin socket
 * (a named pipe on Windows) and prints the answer. The socket comes from
 * --socket, or from the admin_socket of the same config pierd reads
 * (config/server.json by default). */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/admin.h"
#include "host/config.h"
#include "os/ipc.h"
#include "os/os.h"

#define DEFAULT_CONFIG "config/server.json"
#define TIMEOUT_MS 10000

/* Exit statuses. */
#define EXIT_OK 0
#define EXIT_ERR 1         /* the daemon answered ERR */
#define EXIT_UNREACHED 2   /* usage, config or connection problem: nothing ran */

static void usage(FILE *out) {
  fprintf(out,
          "usage: pierctl [--config PATH] [--socket PATH] COMMAND [ARG...] | --version\n"
          "  --config PATH   find the admin socket in this config (default " DEFAULT_CONFIG ")\n"
          "  --socket PATH   use this admin socket\n"
          "  --version       print \"pierctl VERSION\" and exit\n"
          "  --help          this text\n"
          "Runs one pierd console command (`pierctl help` lists them) and prints its output.\n"
          "Exit status: 0 done, 1 the command failed (its error lines go to stderr),\n"
          "2 pierd was not reached (no config, no socket, no answer within %d s).\n",
          TIMEOUT_MS / 1000);
}

static long long now_ms(void) { return (long long)os_clock_ms(); }

/* Joins argv into one command line; returns NULL (with a message) when it
 * cannot be sent as one. */
static char *join_command(int argc, char **argv) {
  size_t len = 0;
  char *line;

  for (int i = 0; i < argc; i++) {
    if (strpbrk(argv[i], "\r\n")) {
      fprintf(stderr, "pierctl: the command must be a single line\n");
      return NULL;
    }
    len += strlen(argv[i]) + 1;
  }
  if (len + 1 > ADMIN_MAX_LINE) {
    fprintf(stderr, "pierctl: the command is too long (at most %d bytes)\n", ADMIN_MAX_LINE - 1);
    return NULL;
  }
  line = calloc(1, len + 1);
  if (!line) {
    fprintf(stderr, "pierctl: out of memory\n");
    return NULL;
  }
  for (int i = 0; i < argc; i++) {
    if (i)
      strcat(line, " ");
    strcat(line, argv[i]);
  }
  strcat(line, "\n");
  return line;
}

/* Connects to path with the deadline; returns the connection or NULL
 * (message printed). */
static os_ipc_conn *connect_to(const char *path) {
  os_ipc_conn *conn;
  int at, rc = os_ipc_dial(path, TIMEOUT_MS, &conn, &at);

  if (rc == 0)
    return conn;
  if (at == OS_IPC_AT_NAME)
    fprintf(stderr, "pierctl: cannot connect to %s: %s\n", path, os_strerror(-rc));
  else if (at == OS_IPC_AT_SOCKET)
    fprintf(stderr, "pierctl: socket: %s\n", os_strerror(-rc));
  else
    fprintf(stderr, "pierctl: cannot connect to %s: %s (is pierd running?)\n", path,
            os_strerror(-rc));
  return NULL;
}

/* True when text (len bytes) ends with the line "OK" or "ERR"; sets *body_len
 * to the length before that line and *ok. */
static int final_line(const char *text, size_t len, size_t *body_len, int *ok) {
  size_t start;
  if (len == 0 || text[len - 1] != '\n')
    return 0;
  start = len - 1;
  while (start > 0 && text[start - 1] != '\n')
    start--;
  if (len - 1 - start == 2 && memcmp(text + start, "OK", 2) == 0)
    *ok = 1;
  else if (len - 1 - start == 3 && memcmp(text + start, "ERR", 3) == 0)
    *ok = 0;
  else
    return 0;
  *body_len = start;
  return 1;
}

/* Prints the body of an ERR answer: its "error:" and "usage:" lines to
 * stderr, the rest to stdout. */
static void print_failure(const char *body, size_t len) {
  int errors = 0;
  while (len > 0) {
    const char *nl = memchr(body, '\n', len);
    size_t n = nl ? (size_t)(nl - body) + 1 : len;
    if ((n >= 6 && memcmp(body, "error:", 6) == 0) || (n >= 6 && memcmp(body, "usage:", 6) == 0)) {
      fwrite(body, 1, n, stderr);
      errors++;
    } else {
      fwrite(body, 1, n, stdout);
    }
    body += n;
    len -= n;
  }
  if (!errors)
    fprintf(stderr, "pierctl: pierd reported an error\n");
}

int main(int argc, char **argv) {
  static const struct option opts[] = {{"config", required_argument, NULL, 'c'},
                                       {"socket", required_argument, NULL, 's'},
                                       {"help", no_argument, NULL, 'h'},
                                       {"version", no_argument, NULL, 'V'},
                                       {NULL, 0, NULL, 0}};
  const char *config = DEFAULT_CONFIG, *sock = NULL;
  char *line, *answer = NULL, *path;
  size_t len = 0, cap = 0, body;
  cfg_server *cfg = NULL;
  long long deadline = now_ms() + TIMEOUT_MS;
  int c, ok = 0, timed_out = 0, status, rc;
  os_ipc_conn *conn;

  while ((c = getopt_long(argc, argv, "+c:s:h", opts, NULL)) != -1) {
    switch (c) {
    case 'c':
      config = optarg;
      break;
    case 's':
      sock = optarg;
      break;
    case 'h':
      usage(stdout);
      return EXIT_OK;
    case 'V':
      printf("pierctl %s\n", PIER_VERSION);
      return EXIT_OK;
    default:
      usage(stderr);
      return EXIT_UNREACHED;
    }
  }
  if (optind >= argc) {
    fprintf(stderr, "pierctl: no command given\n");
    usage(stderr);
    return EXIT_UNREACHED;
  }
  line = join_command(argc - optind, argv + optind);
  if (!line)
    return EXIT_UNREACHED;

  if (!sock) {
    static char err[CFG_ERR_LEN];
    if (cfg_load_file(config, &cfg, err, sizeof(err)) < 0) {
      for (const char *l = err, *nl; *l; l = nl ? nl + 1 : "") {
        nl = strchr(l, '\n');
        fprintf(stderr, "pierctl: %.*s\n", nl ? (int)(nl - l) : (int)strlen(l), l);
      }
      fprintf(stderr, "pierctl: cannot find the admin socket (give --config PATH or --socket "
                      "PATH)\n");
      free(line);
      return EXIT_UNREACHED;
    }
    sock = cfg->admin_socket;
  }
  path = strdup(sock);
  cfg_free(cfg);
  if (!path) {
    free(line);
    return EXIT_UNREACHED;
  }

  conn = connect_to(path);
  if (!conn) {
    free(line);
    free(path);
    return EXIT_UNREACHED;
  }
  rc = os_ipc_send_all(conn, line, strlen(line));
  free(line);
  if (rc < 0) {
    fprintf(stderr, "pierctl: cannot send to %s: %s\n", path, os_strerror(-rc));
    os_ipc_conn_close(conn);
    free(path);
    return EXIT_UNREACHED;
  }

  /* The answer ends when pierd closes the connection. */
  for (;;) {
    long long left = deadline - now_ms();
    long n;
    if (left <= 0) {
      timed_out = 1;
      break;
    }
    if (len + 4096 > cap) {
      char *bigger = realloc(answer, cap ? cap * 2 : 8192);
      if (!bigger) {
        fprintf(stderr, "pierctl: out of memory\n");
        free(answer);
        free(path);
        os_ipc_conn_close(conn);
        return EXIT_UNREACHED;
      }
      answer = bigger;
      cap = cap ? cap * 2 : 8192;
    }
    n = os_ipc_recv(conn, answer + len, cap - len, (int)left);
    if (n == -EINTR)
      continue;
    if (n == -ETIMEDOUT) {
      timed_out = 1;
      break;
    }
    if (n <= 0)
      break; /* EOF, or a reset after the answer */
    len += (size_t)n;
  }
  os_ipc_conn_close(conn);

  if (!final_line(answer, len, &body, &ok)) {
    if (len)
      fwrite(answer, 1, len, stdout);
    if (timed_out)
      fprintf(stderr, "pierctl: no answer from pierd on %s within %d s\n", path,
              TIMEOUT_MS / 1000);
    else
      fprintf(stderr, "pierctl: %s closed the connection before the answer was complete\n",
              path);
    free(answer);
    free(path);
    return EXIT_UNREACHED;
  }
  if (ok) {
    fwrite(answer, 1, body, stdout);
    status = EXIT_OK;
  } else {
    print_failure(answer, body);
    status = EXIT_ERR;
  }
  free(answer);
  free(path);
  return fflush(stdout) == 0 ? status : EXIT_ERR;
}
