/* End-to-end tests of the admin socket through a real pierd and the real
 * pierctl: socket and directory modes, commands and their exit statuses,
 * finding the socket through the config, stale and busy sockets, `quit`, and
 * clients that send garbage, too much or nothing. Each case runs once per
 * backend. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <netinet/in.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "daemon.h"
#include "testlib.h"

#define PIERCTL PIER_BINARY_DIR "/pierctl"
#define PIERD PIER_BINARY_DIR "/pierd"
#define ECHO_SO PIER_BINARY_DIR "/plugins/echo.so"

static const char echo_config[] =
    "{\"admin_socket\": \"run/pierd.sock\","
    " \"plugins\": [{\"name\": \"echo\", \"path\": \"@PLUGINS@/echo.so\"}],"
    " \"listeners\": [{\"port\": 0, \"plugin\": \"echo\"}]}";

static uint64_t ms_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ---- running programs ---- */

typedef struct run_result {
  int status; /* exit status, 128+signal, or -1 when it had to be killed */
  char out[32768];
  size_t out_len;
  char err[16384];
  size_t err_len;
} run_result;

/* Runs argv[0] (a path) with stdin from /dev/null in cwd (NULL: this one),
 * capturing stdout and stderr; kills it after timeout_ms. */
static void run_argv(run_result *r, const char *cwd, int timeout_ms, char *const argv[]) {
  int out[2], err[2], status;
  uint64_t end = ms_now() + (uint64_t)timeout_ms;
  pid_t pid;

  memset(r, 0, sizeof(*r));
  ck_assert_int_eq(pipe2(out, O_CLOEXEC), 0);
  ck_assert_int_eq(pipe2(err, O_CLOEXEC), 0);
  pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0) {
    int null = open("/dev/null", O_RDONLY);
    dup2(null, STDIN_FILENO);
    dup2(out[1], STDOUT_FILENO);
    dup2(err[1], STDERR_FILENO);
    if (cwd && chdir(cwd) < 0)
      _exit(126);
    execv(argv[0], argv);
    _exit(127);
  }
  close(out[1]);
  close(err[1]);
  struct pollfd p[2] = {{.fd = out[0], .events = POLLIN}, {.fd = err[0], .events = POLLIN}};
  while (p[0].fd >= 0 || p[1].fd >= 0) {
    uint64_t now = ms_now();
    if (now >= end)
      break;
    if (poll(p, 2, (int)(end - now)) <= 0)
      continue;
    for (int k = 0; k < 2; k++) {
      char *buf = k ? r->err : r->out;
      size_t *len = k ? &r->err_len : &r->out_len;
      size_t cap = (k ? sizeof(r->err) : sizeof(r->out)) - 1;
      char sink[4096];
      ssize_t n;
      if (p[k].fd < 0 || !p[k].revents)
        continue;
      if (*len < cap)
        n = read(p[k].fd, buf + *len, cap - *len);
      else
        n = read(p[k].fd, sink, sizeof(sink));
      if (n <= 0) {
        close(p[k].fd);
        p[k].fd = -1;
      } else if (*len < cap) {
        *len += (size_t)n;
        buf[*len] = '\0';
      }
    }
  }
  for (int k = 0; k < 2; k++)
    if (p[k].fd >= 0)
      close(p[k].fd);
  if (ms_now() >= end) {
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    r->status = -1;
    return;
  }
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  r->status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* pierctl with the given arguments (NULL-terminated), from cwd. */
static void pierctl_in(run_result *r, const char *cwd, ...) {
  char *argv[16];
  int n = 0;
  va_list ap;
  argv[n++] = (char *)PIERCTL;
  va_start(ap, cwd);
  for (char *a; n < 15 && (a = va_arg(ap, char *));)
    argv[n++] = a;
  va_end(ap);
  argv[n] = NULL;
  run_argv(r, cwd, 20000, argv);
}
#define pierctl(r, ...) pierctl_in(r, NULL, __VA_ARGS__, (char *)NULL)

/* ---- the daemon and raw clients ---- */

static void socket_path(const test_daemon *d, char *buf, size_t len) {
  snprintf(buf, len, "%s/run/pierd.sock", d->dir);
}

/* Starts pierd on json and waits until its admin socket is serving. */
static void start_daemon(test_daemon *d, const char *json, const char *backend) {
  ck_assert_msg(test_daemon_start(d, json, backend) == 0, "pierd did not start:\n%s", d->log);
  ck_assert_msg(test_daemon_wait_log(d, " ready (pierctl)", 10000),
                "no admin socket in the log:\n%s", d->log);
}

static int unix_connect(const char *path) {
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  struct timeval tv = {.tv_sec = 10};
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ck_assert_int_ge(fd, 0);
  snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  ck_assert_msg(connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0, "connect %s: %s", path,
                strerror(errno));
  return fd;
}

/* Sends without failing the test: the daemon may close on us mid-way. */
static void send_loose(int fd, const void *data, size_t len) {
  if (send(fd, data, len, MSG_NOSIGNAL) < 0) {
  }
}

/* Reads until EOF (or a reset once something was read); returns the text. */
static size_t read_answer(int fd, char *buf, size_t cap) {
  size_t len = 0;
  for (;;) {
    ssize_t n = recv(fd, buf + len, cap - 1 - len, 0);
    if (n <= 0) {
      ck_assert_msg(n == 0 || errno == ECONNRESET, "recv: %s", strerror(errno));
      break;
    }
    len += (size_t)n;
    ck_assert_uint_lt(len, cap - 1);
  }
  buf[len] = '\0';
  return len;
}

/* Leaves a socket file nobody listens on at path (as a killed daemon would). */
static void make_stale_socket(const char *path) {
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  ck_assert_int_ge(fd, 0);
  snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
  ck_assert_int_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
  ck_assert_int_eq(listen(fd, 1), 0);
  close(fd);
}

static void rm_rf(const char *dir) {
  char cmd[256];
  ck_assert(strncmp(dir, "/tmp/pier-", 10) == 0);
  snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
  if (system(cmd) != 0) {
  }
}

/* ---- modes and commands ---- */

START_TEST(test_admin_socket_is_private_and_runs_commands) {
  test_daemon d;
  run_result *r = malloc(sizeof(*r));
  char sock[256], dir[256], want[256], sidbuf[32];
  struct stat st;
  size_t got;

  start_daemon(&d, echo_config, test_backend(_i));
  socket_path(&d, sock, sizeof(sock));
  snprintf(dir, sizeof(dir), "%s/run", d.dir);
  ck_assert_int_eq(stat(sock, &st), 0);
  ck_assert(S_ISSOCK(st.st_mode));
  ck_assert_uint_eq(st.st_mode & 07777, 0600);
  ck_assert_int_eq(stat(dir, &st), 0);
  ck_assert(S_ISDIR(st.st_mode));
  ck_assert_uint_eq(st.st_mode & 07777, 0700);

  /* status through --socket: the console's text, without the final line. */
  pierctl(r, "--socket", sock, "status");
  ck_assert_msg(r->status == 0, "status: %d\n%s%s", r->status, r->out, r->err);
  snprintf(want, sizeof(want), "listener 127.0.0.1:%u raw plugin echo: 0 sessions\n",
           (unsigned)d.ports[0]);
  ck_assert_msg(strstr(r->out, want), "no \"%s\" in:\n%s", want, r->out);
  ck_assert_ptr_nonnull(strstr(r->out, "plugin echo: "));
  ck_assert_ptr_null(strstr(r->out, "OK\n"));
  ck_assert_uint_eq(r->err_len, 0);

  /* plugins through the config, by path and from its directory. */
  pierctl(r, "--config", d.config, "plugins");
  ck_assert_msg(r->status == 0, "plugins: %d\n%s%s", r->status, r->out, r->err);
  ck_assert_int_eq(strncmp(r->out, "plugin echo: ", 13), 0);
  ck_assert_ptr_null(strstr(r->out, "OK\n"));
  pierctl_in(r, d.dir, "--config", "server.json", "plugins", (char *)NULL);
  ck_assert_int_eq(r->status, 0);
  ck_assert_int_eq(strncmp(r->out, "plugin echo: ", 13), 0);
  /* The default config/server.json relative to the current directory. */
  {
    char cdir[256], cfile[320];
    FILE *f;
    snprintf(cdir, sizeof(cdir), "%s/config", d.dir);
    ck_assert_int_eq(mkdir(cdir, 0755), 0);
    snprintf(cfile, sizeof(cfile), "%s/server.json", cdir);
    f = fopen(cfile, "w");
    ck_assert_ptr_nonnull(f);
    fputs("{\"admin_socket\": \"../run/pierd.sock\", \"plugins\": [{\"name\": \"echo\", \"path\": "
          "\"" ECHO_SO "\"}], \"listeners\": [{\"port\": 0, \"plugin\": \"echo\"}]}",
          f);
    fclose(f);
    pierctl_in(r, d.dir, "help", (char *)NULL);
    ck_assert_msg(r->status == 0, "help: %d\n%s%s", r->status, r->out, r->err);
    ck_assert_ptr_nonnull(strstr(r->out, "kick SID"));
  }

  /* sessions, then kick one by the id it shows. */
  int fd = test_connect(d.ports[0]);
  test_send_all(fd, "hi", 2);
  ck_assert_int_eq(test_recv_exact(fd, sidbuf, 2), 0);
  pierctl(r, "--socket", sock, "sessions");
  ck_assert_int_eq(r->status, 0);
  const char *line = strstr(r->out, " echo 127.0.0.1:");
  ck_assert_msg(line && line - r->out >= 16, "no session in:\n%s", r->out);
  memcpy(sidbuf, line - 16, 16);
  sidbuf[16] = '\0';
  pierctl(r, "--socket", sock, "kick", sidbuf);
  ck_assert_msg(r->status == 0, "kick: %d\n%s%s", r->status, r->out, r->err);
  snprintf(want, sizeof(want), "kicked %s\n", sidbuf);
  ck_assert_str_eq(r->out, want);
  ck_assert_int_eq(test_recv_until_close(fd, &got), 0);
  close(fd);

  /* Failures: exit 1, the daemon's error on stderr. */
  pierctl(r, "--socket", sock, "kick", "zz");
  ck_assert_int_eq(r->status, 1);
  ck_assert_msg(strstr(r->err, "error: kick: \"zz\" is not a session id"), "stderr:\n%s", r->err);
  ck_assert_ptr_null(strstr(r->out, "error:"));
  ck_assert_ptr_null(strstr(r->out, "ERR"));
  pierctl(r, "--socket", sock, "kick", sidbuf);
  ck_assert_int_eq(r->status, 1);
  snprintf(want, sizeof(want), "error: kick: no session %s\n", sidbuf);
  ck_assert_str_eq(r->err, want);
  pierctl(r, "--socket", sock, "frobnicate", "now");
  ck_assert_int_eq(r->status, 1);
  ck_assert_str_eq(r->err, "error: unknown command \"frobnicate now\" (type `help`)\n");
  ck_assert_uint_eq(r->out_len, 0);

  ck_assert_int_eq(test_daemon_signal_wait(&d, SIGTERM, 10000), 0);
  ck_assert_int_eq(stat(sock, &st), -1);
  ck_assert_int_eq(errno, ENOENT);
  test_daemon_cleanup(&d);
  free(r);
}
END_TEST

/* kick and reload without their argument (or with too many) answer a usage
 * line, on the console and through pierctl, which exits 1. */
START_TEST(test_admin_kick_and_reload_without_argument_print_usage) {
  test_daemon d;
  run_result *r = malloc(sizeof(*r));
  char sock[256];
  static const struct {
    const char *arg1, *arg2, *want;
  } cases[] = {{"kick", NULL, "usage: kick SID\n"},
               {"reload", NULL, "usage: reload NAME\n"},
               {"kick", "1 2", "usage: kick SID\n"},
               {"reload", "echo echo", "usage: reload NAME\n"}};

  start_daemon(&d, echo_config, test_backend(_i));
  socket_path(&d, sock, sizeof(sock));
  for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
    if (cases[k].arg2)
      pierctl(r, "--socket", sock, cases[k].arg1, cases[k].arg2);
    else
      pierctl(r, "--socket", sock, cases[k].arg1);
    ck_assert_msg(r->status == 1, "%s: exit %d\n%s%s", cases[k].arg1, r->status, r->out, r->err);
    ck_assert_str_eq(r->err, cases[k].want);
    ck_assert_uint_eq(r->out_len, 0);
  }
  /* The console answers the same words. */
  test_daemon_command(&d, "kick");
  ck_assert_msg(test_daemon_wait_log(&d, "usage: kick SID\n", 10000), "log:\n%s", d.log);
  test_daemon_command(&d, "reload");
  ck_assert_msg(test_daemon_wait_log(&d, "usage: reload NAME\n", 10000), "log:\n%s", d.log);
  ck_assert_ptr_null(strstr(d.log, "unknown command"));
  ck_assert_int_eq(test_daemon_signal_wait(&d, SIGTERM, 10000), 0);
  test_daemon_cleanup(&d);
  free(r);
}
END_TEST

/* ---- SIGHUP ---- */

/* Writes len bytes to path through a temporary file and a rename. */
static void put_file(const char *path, const void *data, size_t len) {
  char tmp[320];
  FILE *f;
  snprintf(tmp, sizeof(tmp), "%s.tmp", path);
  f = fopen(tmp, "wb");
  ck_assert_ptr_nonnull(f);
  ck_assert_uint_eq(fwrite(data, 1, len, f), len);
  ck_assert_int_eq(fclose(f), 0);
  ck_assert_int_eq(rename(tmp, path), 0);
}

static void copy_echo(const char *to) {
  static char image[4 << 20];
  FILE *f = fopen(ECHO_SO, "rb");
  size_t n;
  ck_assert_ptr_nonnull(f);
  n = fread(image, 1, sizeof(image), f);
  ck_assert(n > 0 && n < sizeof(image));
  fclose(f);
  put_file(to, image, n);
}

static int count_in(const char *text, const char *needle) {
  int n = 0;
  for (const char *p = text; (p = strstr(p, needle)); p += strlen(needle))
    n++;
  return n;
}

/* Reads the daemon's log until needle appears n times; 1 if it did. */
static int wait_count(test_daemon *d, const char *needle, int n, int timeout_ms) {
  uint64_t end = ms_now() + (uint64_t)timeout_ms;
  while (count_in(d->log, needle) < n) {
    if (ms_now() >= end)
      return 0;
    test_daemon_wait_log(d, "\x01 never logged", 50);
  }
  return 1;
}

static void write_config(const char *path, const char *level, const char *so, const char *sock) {
  char text[1024];
  snprintf(text, sizeof(text),
           "{\"log_level\": \"%s\", \"admin_socket\": \"%s\", \"plugins\": [{\"name\": \"echo\", "
           "\"path\": \"%s\"}], \"listeners\": [{\"port\": 0, \"plugin\": \"echo\"}]}",
           level, sock, so);
  put_file(path, text, strlen(text));
}

/* SIGHUP compares what applies live with what is in force now: log_level goes
 * info -> debug -> info (debug lines stop again), and a plugin file that
 * failed to reload is tried again by the next SIGHUP. */
START_TEST(test_admin_sighup_applies_log_level_both_ways_and_retries) {
  test_daemon d;
  run_result *r = malloc(sizeof(*r));
  char dir[] = "/tmp/pier-admin-XXXXXX", so[128], sock[160], json[1024];
  static const char junk[] = "not a shared object\n";

  ck_assert_ptr_nonnull(mkdtemp(dir));
  snprintf(so, sizeof(so), "%s/echo.so", dir);
  snprintf(sock, sizeof(sock), "%s/pierd.sock", dir);
  copy_echo(so);
  snprintf(json, sizeof(json),
           "{\"log_level\": \"info\", \"admin_socket\": \"%s\", \"plugins\": [{\"name\": "
           "\"echo\", \"path\": \"%s\"}], \"listeners\": [{\"port\": 0, \"plugin\": \"echo\"}]}",
           sock, so);
  start_daemon(&d, json, test_backend(_i));

  /* info -> debug: the admin socket's debug line appears. */
  write_config(d.config, "debug", so, sock);
  kill(d.pid, SIGHUP);
  ck_assert_msg(test_daemon_wait_log(&d, "SIGHUP: log_level is now debug", 10000), "log:\n%s",
                d.log);
  pierctl(r, "--socket", sock, "status");
  ck_assert_int_eq(r->status, 0);
  ck_assert_msg(test_daemon_wait_log(&d, "admin: \"status\": OK", 10000), "log:\n%s", d.log);

  /* debug -> info: back to the start-up value, and debug lines stop. */
  write_config(d.config, "info", so, sock);
  kill(d.pid, SIGHUP);
  ck_assert_msg(test_daemon_wait_log(&d, "SIGHUP: log_level is now info", 10000), "log:\n%s",
                d.log);
  pierctl(r, "--socket", sock, "plugins");
  ck_assert_int_eq(r->status, 0);
  test_daemon_command(&d, "marker-after-plugins"); /* served after the admin command */
  ck_assert(test_daemon_wait_log(&d, "unknown command \"marker-after-plugins\"", 10000));
  ck_assert_msg(!strstr(d.log, "admin: \"plugins\""), "a debug line at info:\n%s", d.log);
  ck_assert_int_eq(count_in(d.log, "SIGHUP: log_level is now"), 2);

  /* A file that fails to reload is tried again by each SIGHUP until it loads. */
  put_file(so, junk, sizeof(junk) - 1);
  kill(d.pid, SIGHUP);
  ck_assert_msg(wait_count(&d, "SIGHUP: reload echo failed at load: ", 1, 10000), "log:\n%s",
                d.log);
  kill(d.pid, SIGHUP);
  ck_assert_msg(wait_count(&d, "SIGHUP: reload echo failed at load: ", 2, 10000), "log:\n%s",
                d.log);
  copy_echo(so);
  kill(d.pid, SIGHUP);
  ck_assert_msg(test_daemon_wait_log(&d, "SIGHUP: reloaded echo: generation 2,", 10000),
                "log:\n%s", d.log);
  ck_assert_int_eq(count_in(d.log, "SIGHUP: log_level is now"), 2);

  /* A new limit (here recv_backlog) still needs a restart. */
  snprintf(json, sizeof(json),
           "{\"limits\": {\"recv_backlog\": 8192}, \"admin_socket\": \"%s\", \"plugins\": "
           "[{\"name\": \"echo\", \"path\": \"%s\"}], \"listeners\": [{\"port\": 0, "
           "\"plugin\": \"echo\"}]}",
           sock, so);
  put_file(d.config, json, strlen(json));
  kill(d.pid, SIGHUP);
  ck_assert_msg(test_daemon_wait_log(&d, "SIGHUP: limits changed: needs a restart; not applied",
                                     10000),
                "log:\n%s", d.log);

  ck_assert_int_eq(test_daemon_signal_wait(&d, SIGTERM, 10000), 0);
  test_daemon_cleanup(&d);
  rm_rf(dir);
  free(r);
}
END_TEST

/* ---- plugin_dir ---- */

/* A plugin path that is a link out of plugin_dir is refused by --check,
 * naming the file and where it leads; a link that stays inside loads. The
 * loader checks the file it opens as well: a link swapped to point outside
 * after the start is refused by `reload`, and the running version serves on. */
START_TEST(test_admin_plugin_dir_refuses_links_that_lead_out) {
  test_daemon d;
  run_result *r = malloc(sizeof(*r));
  char dir[] = "/tmp/pier-admin-XXXXXX", path[160], link[160], json[1024], want[1024];
  static const char fmt[] =
      "{\"plugin_dir\": \"%s/plugins\", \"admin_socket\": \"%s/pierd.sock\", \"plugins\": "
      "[{\"name\": \"echo\", \"path\": \"%s/plugins/%s\"}], \"listeners\": [{\"port\": 0, "
      "\"plugin\": \"echo\"}]}";

  ck_assert_ptr_nonnull(mkdtemp(dir));
  snprintf(path, sizeof(path), "%s/plugins", dir);
  ck_assert_int_eq(mkdir(path, 0700), 0);
  snprintf(path, sizeof(path), "%s/outside", dir);
  ck_assert_int_eq(mkdir(path, 0700), 0);
  snprintf(path, sizeof(path), "%s/outside/echo.so", dir);
  copy_echo(path);
  snprintf(path, sizeof(path), "%s/plugins/echo-1.so", dir);
  copy_echo(path);
  snprintf(link, sizeof(link), "%s/plugins/evil.so", dir);
  ck_assert_int_eq(symlink("../outside/echo.so", link), 0);
  snprintf(link, sizeof(link), "%s/plugins/echo.so", dir);
  ck_assert_int_eq(symlink("echo-1.so", link), 0);

  snprintf(json, sizeof(json), fmt, dir, dir, dir, "evil.so");
  ck_assert_int_eq(test_daemon_run_to_exit(&d, json, test_backend(_i), "--check"), 1);
  snprintf(want, sizeof(want),
           " %s: plugins[0].path: \"%s/plugins/evil.so\" resolves to %s/outside/echo.so, "
           "outside plugin_dir (%s/plugins)\n",
           d.config, dir, dir, dir);
  ck_assert_msg(strstr(d.log, want), "no \"%s\" in:\n%s", want, d.log);
  snprintf(want, sizeof(want), "pierd: configuration %s is invalid\n", d.config);
  ck_assert_msg(strstr(d.log, want), "log:\n%s", d.log);
  test_daemon_cleanup(&d);

  snprintf(json, sizeof(json), fmt, dir, dir, dir, "echo.so");
  ck_assert_int_eq(test_daemon_run_to_exit(&d, json, test_backend(_i), "--check"), 0);
  ck_assert_msg(strstr(d.log, "is valid (1 plugins, 1 listeners)"), "log:\n%s", d.log);
  test_daemon_cleanup(&d);

  start_daemon(&d, json, test_backend(_i));
  ck_assert_int_eq(unlink(link), 0);
  ck_assert_int_eq(symlink("../outside/echo.so", link), 0);
  snprintf(path, sizeof(path), "%s/pierd.sock", dir);
  pierctl(r, "--socket", path, "reload", "echo");
  ck_assert_int_eq(r->status, 1);
  snprintf(want, sizeof(want),
           "error: reload echo failed at load: plugin \"echo\" (%s/plugins/echo.so): the file "
           "resolves to %s/outside/echo.so, outside plugin_dir (%s/plugins); generation 1 keeps "
           "serving\n",
           dir, dir, dir);
  ck_assert_str_eq(r->err, want);
  int fd = test_connect(d.ports[0]);
  char buf[2];
  test_send_all(fd, "hi", 2);
  ck_assert_int_eq(test_recv_exact(fd, buf, 2), 0);
  close(fd);
  ck_assert_int_eq(test_daemon_signal_wait(&d, SIGTERM, 10000), 0);
  test_daemon_cleanup(&d);
  rm_rf(dir);
  free(r);
}
END_TEST

/* ---- --check ---- */

/* pierd --check prints every problem of the config, one log line each, in
 * file order, and exits 1; pierctl shows the same lines. */
START_TEST(test_admin_check_reports_every_config_error) {
  test_daemon d;
  run_result *r = malloc(sizeof(*r));
  char want[2048];
  static const char json[] =
      "{\"wokers\": 2, \"plugins\": [{\"name\": \"echo\", \"path\": \"@PLUGINS@/echo.so\"}],"
      " \"listeners\": [{\"port\": 70000, \"plugin\": \"echo\", \"framing\": \"u8\"}],"
      " \"max_sessions\": 0}";

  ck_assert_int_eq(test_daemon_run_to_exit(&d, json, test_backend(_i), "--check"), 1);
  snprintf(want, sizeof(want),
           " error %s: wokers: unknown key (did you mean \"workers\"?)\n", d.config);
  ck_assert_msg(strstr(d.log, want), "no \"%s\" in:\n%s", want, d.log);
  const char *a = strstr(d.log, ": wokers: unknown key");
  const char *b = strstr(d.log, ": listeners[0].port: expected an integer 0..65535, got 70000\n");
  const char *c = strstr(d.log, ": listeners[0].framing: expected one of \"raw\", \"u16_size_id\", "
                                "got \"u8\"\n");
  const char *e = strstr(d.log, ": max_sessions: expected an integer 1..1000000, got 0\n");
  snprintf(want, sizeof(want), "pierd: configuration %s is invalid\n", d.config);
  const char *end = strstr(d.log, want);
  ck_assert_msg(a && b && c && e && end && a < b && b < c && c < e && e < end, "log:\n%s", d.log);

  char *argv[] = {(char *)PIERCTL, "--config", d.config, "status", NULL};
  run_argv(r, NULL, 20000, argv);
  ck_assert_int_eq(r->status, 2);
  snprintf(want, sizeof(want),
           "pierctl: %s: wokers: unknown key (did you mean \"workers\"?)\n"
           "pierctl: %s: listeners[0].port: expected an integer 0..65535, got 70000\n"
           "pierctl: %s: listeners[0].framing: expected one of \"raw\", \"u16_size_id\", got "
           "\"u8\"\n"
           "pierctl: %s: max_sessions: expected an integer 1..1000000, got 0\n"
           "pierctl: cannot find the admin socket (give --config PATH or --socket PATH)\n",
           d.config, d.config, d.config, d.config);
  ck_assert_str_eq(r->err, want);
  test_daemon_cleanup(&d);
  free(r);
}
END_TEST

/* ---- "::" ---- */

/* Connects to addr:port (IPv4 or IPv6 literal); returns the socket or -errno. */
static int tcp_connect(const char *addr, uint16_t port) {
  struct sockaddr_storage ss;
  socklen_t len;
  int fd;
  memset(&ss, 0, sizeof(ss));
  if (strchr(addr, ':')) {
    struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
    a->sin6_family = AF_INET6;
    a->sin6_port = htons(port);
    ck_assert_int_eq(inet_pton(AF_INET6, addr, &a->sin6_addr), 1);
    len = sizeof(*a);
  } else {
    struct sockaddr_in *a = (struct sockaddr_in *)&ss;
    a->sin_family = AF_INET;
    a->sin_port = htons(port);
    ck_assert_int_eq(inet_pton(AF_INET, addr, &a->sin_addr), 1);
    len = sizeof(*a);
  }
  fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ck_assert_int_ge(fd, 0);
  if (connect(fd, (struct sockaddr *)&ss, len) < 0) {
    int e = errno;
    close(fd);
    return -e;
  }
  return fd;
}

/* A "::" listener is IPv6 only, as config/README.md says: ::1 is served,
 * 127.0.0.1 on the same port is refused. */
START_TEST(test_admin_any6_listener_is_ipv6_only) {
  test_daemon d;
  char buf[2];
  int fd;
  static const char json[] =
      "{\"admin_socket\": \"run/pierd.sock\","
      " \"plugins\": [{\"name\": \"echo\", \"path\": \"@PLUGINS@/echo.so\"}],"
      " \"listeners\": [{\"address\": \"::\", \"port\": 0, \"plugin\": \"echo\"}]}";

  start_daemon(&d, json, test_backend(_i));
  ck_assert_int_eq(d.nports, 1);
  ck_assert_msg(strstr(d.log, "listening on [::]:"), "log:\n%s", d.log);
  fd = tcp_connect("::1", d.ports[0]);
  ck_assert_msg(fd >= 0, "::1: %s", strerror(-fd));
  test_send_all(fd, "v6", 2);
  ck_assert_int_eq(test_recv_exact(fd, buf, 2), 0);
  ck_assert_int_eq(memcmp(buf, "v6", 2), 0);
  close(fd);
  fd = tcp_connect("127.0.0.1", d.ports[0]);
  ck_assert_msg(fd == -ECONNREFUSED, "127.0.0.1 on a \"::\" listener: %d", fd);
  ck_assert_int_eq(test_daemon_signal_wait(&d, SIGTERM, 10000), 0);
  test_daemon_cleanup(&d);
}
END_TEST

/* ---- no daemon ---- */

START_TEST(test_admin_pierctl_without_daemon_exits_2) {
  run_result *r = malloc(sizeof(*r));
  char dir[] = "/tmp/pier-admin-XXXXXX", sock[128], want[384], cfg[128];
  FILE *f;

  ck_assert_ptr_nonnull(mkdtemp(dir));
  snprintf(sock, sizeof(sock), "%s/run/pierd.sock", dir);
  pierctl(r, "--socket", sock, "status");
  ck_assert_int_eq(r->status, 2);
  snprintf(want, sizeof(want),
           "pierctl: cannot connect to %s: No such file or directory (is pierd running?)\n", sock);
  ck_assert_str_eq(r->err, want);
  ck_assert_uint_eq(r->out_len, 0);

  /* Through a config whose daemon is not running, with a stale socket. */
  snprintf(cfg, sizeof(cfg), "%s/server.json", dir);
  f = fopen(cfg, "w");
  ck_assert_ptr_nonnull(f);
  fputs("{\"plugins\": [{\"name\": \"echo\", \"path\": \"" ECHO_SO "\"}], \"listeners\": "
        "[{\"port\": 0, \"plugin\": \"echo\"}]}",
        f);
  fclose(f);
  snprintf(want, sizeof(want), "%s/run", dir);
  ck_assert_int_eq(mkdir(want, 0700), 0);
  make_stale_socket(sock);
  pierctl(r, "--config", cfg, "status");
  ck_assert_int_eq(r->status, 2);
  snprintf(want, sizeof(want),
           "pierctl: cannot connect to %s: Connection refused (is pierd running?)\n", sock);
  ck_assert_str_eq(r->err, want);

  /* No config at all, and no command. */
  snprintf(want, sizeof(want), "%s/none.json", dir);
  pierctl(r, "--config", want, "status");
  ck_assert_int_eq(r->status, 2);
  ck_assert_ptr_nonnull(strstr(r->err, "none.json"));
  ck_assert_ptr_nonnull(strstr(r->err, "pierctl: cannot find the admin socket"));
  pierctl(r, "--socket", sock);
  ck_assert_int_eq(r->status, 2);
  ck_assert_ptr_nonnull(strstr(r->err, "usage: pierctl"));
  pierctl(r, "--help");
  ck_assert_int_eq(r->status, 0);
  ck_assert_ptr_nonnull(strstr(r->out, "usage: pierctl"));
  rm_rf(dir);
  free(r);
}
END_TEST

/* ---- stale and busy sockets ---- */

START_TEST(test_admin_stale_socket_is_replaced) {
  test_daemon d;
  run_result *r = malloc(sizeof(*r));
  char dir[] = "/tmp/pier-admin-XXXXXX", sock[128], json[1024];
  struct stat st1, st2;

  ck_assert_ptr_nonnull(mkdtemp(dir));
  snprintf(sock, sizeof(sock), "%s/run", dir);
  ck_assert_int_eq(mkdir(sock, 0700), 0);
  snprintf(sock, sizeof(sock), "%s/run/pierd.sock", dir);
  snprintf(json, sizeof(json),
           "{\"admin_socket\": \"%s\", \"plugins\": [{\"name\": \"echo\", \"path\": "
           "\"@PLUGINS@/echo.so\"}], \"listeners\": [{\"port\": 0, \"plugin\": \"echo\"}]}",
           sock);

  /* A file that is not a socket is never removed. */
  FILE *f = fopen(sock, "w");
  ck_assert_ptr_nonnull(f);
  fputs("keep me\n", f);
  fclose(f);
  ck_assert_int_eq(test_daemon_run_to_exit(&d, json, test_backend(_i), NULL), 1);
  ck_assert_msg(strstr(d.log, "exists and is not a socket"), "log:\n%s", d.log);
  test_daemon_cleanup(&d);
  ck_assert_int_eq(stat(sock, &st1), 0);
  ck_assert(S_ISREG(st1.st_mode));
  ck_assert_int_eq(unlink(sock), 0);

  /* A bound-then-closed socket is replaced. */
  make_stale_socket(sock);
  ck_assert_int_eq(stat(sock, &st1), 0);
  start_daemon(&d, json, test_backend(_i));
  ck_assert_ptr_nonnull(strstr(d.log, "removed a stale socket"));
  ck_assert_int_eq(stat(sock, &st2), 0);
  ck_assert(S_ISSOCK(st2.st_mode));
  ck_assert_uint_eq(st2.st_mode & 07777, 0600);
  pierctl(r, "--socket", sock, "status");
  ck_assert_msg(r->status == 0, "status: %d\n%s%s", r->status, r->out, r->err);

  /* So is the one a killed daemon leaves behind. */
  ck_assert_int_eq(test_daemon_signal_wait(&d, SIGKILL, 10000), 128 + SIGKILL);
  test_daemon_cleanup(&d);
  ck_assert_int_eq(stat(sock, &st1), 0);
  start_daemon(&d, json, test_backend(_i));
  pierctl(r, "--socket", sock, "status");
  ck_assert_int_eq(r->status, 0);
  ck_assert_int_eq(test_daemon_signal_wait(&d, SIGTERM, 10000), 0);
  ck_assert_int_eq(stat(sock, &st1), -1);
  test_daemon_cleanup(&d);
  rm_rf(dir);
  free(r);
}
END_TEST

START_TEST(test_admin_second_daemon_on_same_config_refuses) {
  test_daemon d;
  run_result *r = malloc(sizeof(*r));
  char sock[256], want[384];
  struct stat st1, st2;

  start_daemon(&d, echo_config, test_backend(_i));
  socket_path(&d, sock, sizeof(sock));
  ck_assert_int_eq(stat(sock, &st1), 0);
  char *argv[] = {(char *)PIERD, "--config", d.config, "--io-backend",
                  (char *)test_backend(_i), NULL};
  run_argv(r, NULL, 30000, argv);
  ck_assert_msg(r->status == 1, "second pierd: %d\n%s%s", r->status, r->out, r->err);
  snprintf(want, sizeof(want), "admin socket %s is in use by a running pierd", sock);
  ck_assert_msg(strstr(r->err, want), "no \"%s\" in:\n%s", want, r->err);
  /* The first one keeps its socket and keeps serving. */
  ck_assert_int_eq(stat(sock, &st2), 0);
  ck_assert_uint_eq(st1.st_ino, st2.st_ino);
  pierctl(r, "--config", d.config, "status");
  ck_assert_msg(r->status == 0, "status: %d\n%s%s", r->status, r->out, r->err);
  ck_assert_ptr_nonnull(strstr(r->out, "plugin echo: "));
  ck_assert_int_eq(test_daemon_signal_wait(&d, SIGTERM, 10000), 0);
  test_daemon_cleanup(&d);
  free(r);
}
END_TEST

/* ---- quit ---- */

START_TEST(test_admin_quit_stops_daemon) {
  test_daemon d;
  run_result *r = malloc(sizeof(*r));
  char sock[256];
  struct stat st;

  start_daemon(&d, echo_config, test_backend(_i));
  socket_path(&d, sock, sizeof(sock));
  pierctl(r, "--socket", sock, "quit");
  ck_assert_msg(r->status == 0, "quit: %d\n%s%s", r->status, r->out, r->err);
  ck_assert_uint_eq(r->out_len, 0);
  ck_assert_uint_eq(r->err_len, 0);
  ck_assert_int_eq(test_daemon_signal_wait(&d, 0, 10000), 0);
  ck_assert_int_eq(stat(sock, &st), -1);
  ck_assert_int_eq(errno, ENOENT);
  pierctl(r, "--socket", sock, "status");
  ck_assert_int_eq(r->status, 2);
  test_daemon_cleanup(&d);
  free(r);
}
END_TEST

/* ---- bad clients ---- */

START_TEST(test_admin_bad_clients_do_not_block_the_daemon) {
  test_daemon d;
  run_result *r = malloc(sizeof(*r));
  char sock[256], junk[5 * 1024], buf[4096];
  int silent[20];
  uint64_t t0;

  start_daemon(&d, echo_config, test_backend(_i));
  socket_path(&d, sock, sizeof(sock));

  /* Garbage without a newline: others are served meanwhile, it is cut off. */
  static const char garbage[] = "\x01garbage\xff without newline";
  int g = unix_connect(sock);
  send_loose(g, garbage, sizeof(garbage) - 1);
  t0 = ms_now();
  pierctl(r, "--socket", sock, "status");
  ck_assert_msg(r->status == 0, "status: %d\n%s%s", r->status, r->out, r->err);
  ck_assert_uint_lt(ms_now() - t0, 1500);

  /* 5 KiB of junk: refused as too long. */
  int j = unix_connect(sock);
  memset(junk, 'x', sizeof(junk));
  send_loose(j, junk, sizeof(junk));
  read_answer(j, buf, sizeof(buf));
  ck_assert_msg(strncmp(buf, "error: command line too long", 28) == 0, "got: %s", buf);
  ck_assert_uint_ge(strlen(buf), 4);
  ck_assert_str_eq(buf + strlen(buf) - 4, "ERR\n");
  close(j);
  pierctl(r, "--socket", sock, "status");
  ck_assert_int_eq(r->status, 0);

  /* The silent one gets its error after the read deadline. */
  t0 = ms_now();
  read_answer(g, buf, sizeof(buf));
  ck_assert_str_eq(buf, "error: no complete command line within 2 s\nERR\n");
  ck_assert_uint_lt(ms_now() - t0, 5000);
  close(g);

  /* A NUL byte, a client that leaves at once, one that leaves mid-line. */
  int z = unix_connect(sock);
  send_loose(z, "sta\0tus\n", 8);
  read_answer(z, buf, sizeof(buf));
  ck_assert_str_eq(buf, "error: the command line contains a NUL byte\nERR\n");
  close(z);
  close(unix_connect(sock));
  int h = unix_connect(sock);
  send_loose(h, "quit", 4);
  close(h);
  /* A raw client speaks the protocol as pierctl does. */
  int ok = unix_connect(sock);
  send_loose(ok, "plugins\r\n", 9);
  read_answer(ok, buf, sizeof(buf));
  ck_assert_int_eq(strncmp(buf, "plugin echo: ", 13), 0);
  ck_assert_str_eq(buf + strlen(buf) - 3, "OK\n");
  close(ok);

  /* More silent clients than slots: pierctl still gets through, late. */
  for (int k = 0; k < 20; k++)
    silent[k] = unix_connect(sock);
  pierctl(r, "--socket", sock, "status");
  ck_assert_msg(r->status == 0, "status: %d\n%s%s", r->status, r->out, r->err);
  for (int k = 0; k < 20; k++)
    close(silent[k]);

  pierctl(r, "--socket", sock, "status");
  ck_assert_int_eq(r->status, 0);
  ck_assert_int_eq(test_daemon_signal_wait(&d, SIGTERM, 10000), 0);
  test_daemon_cleanup(&d);
  free(r);
}
END_TEST

int main(void) {
  Suite *s = suite_create("admin");
  TCase *tc = tcase_create("daemon");
  tcase_set_timeout(tc, 120);
  tcase_add_loop_test(tc, test_admin_socket_is_private_and_runs_commands, 0, TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_admin_kick_and_reload_without_argument_print_usage, 0,
                      TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_admin_sighup_applies_log_level_both_ways_and_retries, 0,
                      TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_admin_plugin_dir_refuses_links_that_lead_out, 0, TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_admin_any6_listener_is_ipv6_only, 0, TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_admin_check_reports_every_config_error, 0, TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_admin_pierctl_without_daemon_exits_2, 0, TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_admin_stale_socket_is_replaced, 0, TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_admin_second_daemon_on_same_config_refuses, 0, TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_admin_quit_stops_daemon, 0, TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_admin_bad_clients_do_not_block_the_daemon, 0, TEST_NBACKENDS);
  suite_add_tcase(s, tc);
  return test_run(s);
}
