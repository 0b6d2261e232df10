/* End-to-end tests of pierd under a service manager, through a real pierd:
 * the sd_notify messages a fake NOTIFY_SOCKET receives (READY=1,
 * WATCHDOG=1, STOPPING=1), the graceful drain (new connections refused at
 * once, open sessions still served until they end, the timeout or a second
 * stop request) and the privilege drop (checked in /proc/PID/status and by
 * what a plugin's on_load sees). Linux only; each case once per backend. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "daemon.h"
#include "testlib.h"

#define PIERD PIER_BINARY_DIR "/pierd"

/* ---- a fake service manager ---- */

typedef struct manager {
  int fd;
  char dir[64];
  char path[96]; /* what NOTIFY_SOCKET says */
} manager;

/* A datagram socket at a path, or in the abstract namespace ("@..."). */
static void manager_open(manager *m, int abstract) {
  struct sockaddr_un sa;
  socklen_t len;
  memset(m, 0, sizeof(*m));
  memset(&sa, 0, sizeof(sa));
  sa.sun_family = AF_UNIX;
  m->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  ck_assert_int_ge(m->fd, 0);
  if (abstract) {
    snprintf(m->path, sizeof(m->path), "@pier-test-notify-%d", (int)getpid());
    memcpy(sa.sun_path + 1, m->path + 1, strlen(m->path) - 1);
    len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(m->path));
  } else {
    snprintf(m->dir, sizeof(m->dir), "/tmp/pier-notify-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(m->dir));
    snprintf(m->path, sizeof(m->path), "%s/notify", m->dir);
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", m->path);
    len = sizeof(sa);
  }
  ck_assert_int_eq(bind(m->fd, (struct sockaddr *)&sa, len), 0);
}

/* The next message, or "" when none came within 10 s. */
static const char *manager_next(manager *m, char *buf, size_t cap) {
  struct pollfd p = {.fd = m->fd, .events = POLLIN};
  buf[0] = '\0';
  if (poll(&p, 1, 10000) == 1) {
    ssize_t n = recv(m->fd, buf, cap - 1, 0);
    buf[n > 0 ? n : 0] = '\0';
  }
  return buf;
}

static void manager_close(manager *m) {
  close(m->fd);
  if (m->dir[0]) {
    unlink(m->path);
    rmdir(m->dir);
  }
}

static const char echo_config[] =
    "{\"admin_socket\": \"run/pierd.sock\","
    " \"plugins\": [{\"name\": \"echo\", \"path\": \"@PLUGINS@/echo@EXT@\"}],"
    " \"listeners\": [{\"port\": 0, \"plugin\": \"echo\"}]}";

static void start_or_fail(test_daemon *d, const char *config, int i) {
  ck_assert_msg(test_daemon_start(d, config, test_backend(i)) == 0, "log: %s", d->log);
}

START_TEST(test_ops_notify_ready_watchdog_stopping) {
  manager m;
  test_daemon d;
  char msg[256];
  int pings = 0;

  manager_open(&m, 0);
  setenv("NOTIFY_SOCKET", m.path, 1);
  setenv("WATCHDOG_USEC", "200000", 1); /* a ping every 100 ms */
  start_or_fail(&d, echo_config, _i);
  unsetenv("NOTIFY_SOCKET");
  unsetenv("WATCHDOG_USEC");
  ck_assert_str_eq(manager_next(&m, msg, sizeof(msg)), "READY=1");
  while (pings < 2 && strcmp(manager_next(&m, msg, sizeof(msg)), "WATCHDOG=1") == 0)
    pings++;
  ck_assert_int_eq(pings, 2);
  kill(d.pid, SIGTERM);
  while (strcmp(manager_next(&m, msg, sizeof(msg)), "WATCHDOG=1") == 0) {
  }
  ck_assert_str_eq(msg, "STOPPING=1");
  ck_assert_int_eq(test_daemon_signal_wait(&d, 0, 20000), 0);
  test_daemon_cleanup(&d);
  manager_close(&m);
}
END_TEST

/* An abstract socket name ("@..."), and no WATCHDOG_USEC: no pings. */
START_TEST(test_ops_notify_abstract_socket_without_watchdog) {
  manager m;
  test_daemon d;
  char msg[256];

  manager_open(&m, 1);
  setenv("NOTIFY_SOCKET", m.path, 1);
  start_or_fail(&d, echo_config, _i);
  unsetenv("NOTIFY_SOCKET");
  ck_assert_str_eq(manager_next(&m, msg, sizeof(msg)), "READY=1");
  test_daemon_command(&d, "quit");
  ck_assert_str_eq(manager_next(&m, msg, sizeof(msg)), "STOPPING=1");
  ck_assert_int_eq(test_daemon_quit(&d, 20000), 0);
  test_daemon_cleanup(&d);
  manager_close(&m);
}
END_TEST

static void start_whoami(test_daemon *d, const char *extra, const char *daemon_cmd, int i);

/* The variables are pierd's alone: plugins (and what they start) never see
 * them; and WATCHDOG_PID naming another process means no pings. */
START_TEST(test_ops_notify_env_hidden_from_plugins) {
  manager m;
  test_daemon d;
  char msg[256];

  manager_open(&m, 0);
  setenv("NOTIFY_SOCKET", m.path, 1);
  setenv("WATCHDOG_USEC", "2000", 1);
  setenv("WATCHDOG_PID", "1", 1);
  start_whoami(&d, "", NULL, _i);
  unsetenv("NOTIFY_SOCKET");
  unsetenv("WATCHDOG_USEC");
  unsetenv("WATCHDOG_PID");
  ck_assert_msg(strstr(d.log, "whoami env NOTIFY_SOCKET=- WATCHDOG_USEC=-"), "log: %s", d.log);
  ck_assert_str_eq(manager_next(&m, msg, sizeof(msg)), "READY=1");
  test_daemon_command(&d, "quit");
  ck_assert_str_eq(manager_next(&m, msg, sizeof(msg)), "STOPPING=1");
  ck_assert_int_eq(test_daemon_quit(&d, 20000), 0);
  test_daemon_cleanup(&d);
  manager_close(&m);
}
END_TEST

/* ---- drain ---- */

/* A connect to the loopback port: 0 when it was taken, else -errno. */
static int try_connect(uint16_t port) {
  struct sockaddr_in in;
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), rc;
  memset(&in, 0, sizeof(in));
  in.sin_family = AF_INET;
  in.sin_port = htons(port);
  in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  rc = connect(fd, (struct sockaddr *)&in, sizeof(in)) == 0 ? 0 : -errno;
  close(fd);
  return rc;
}

static void echo_once(int fd, const char *text) {
  char buf[64];
  size_t n = strlen(text);
  test_send_all(fd, text, n);
  ck_assert_int_eq(test_recv_exact(fd, buf, n), 0);
  ck_assert_int_eq(memcmp(buf, text, n), 0);
}

static const char drain_config[] =
    "{\"admin_socket\": \"run/pierd.sock\", \"drain_timeout_ms\": 600000,"
    " \"plugins\": [{\"name\": \"echo\", \"path\": \"@PLUGINS@/echo@EXT@\"}],"
    " \"listeners\": [{\"port\": 0, \"plugin\": \"echo\"}]}";

/* SIGTERM with a session open: the listener refuses at once, the session
 * is still echoed, and pierd exits once that session ends. */
START_TEST(test_ops_drain_refuses_new_and_serves_open_sessions) {
  test_daemon d;
  int fd;

  start_or_fail(&d, drain_config, _i);
  fd = test_connect(d.ports[0]);
  echo_once(fd, "before");
  kill(d.pid, SIGTERM);
  ck_assert_msg(test_daemon_wait_log(&d, "draining: 1 session open, waiting up to 600000 ms "
                                         "for them to end (stop again to end it now)", 10000),
                "log: %s", d.log);
  ck_assert_msg(test_daemon_wait_log(&d, "listeners closed: new connections are refused", 0),
                "log: %s", d.log);
  ck_assert_int_eq(try_connect(d.ports[0]), -ECONNREFUSED);
  echo_once(fd, "during the drain");
  ck_assert_int_eq(try_connect(d.ports[0]), -ECONNREFUSED);
  {
    /* pierctl is still served meanwhile, and sees the session */
    char out[4096], err[1024];
    const char *admin = test_daemon_admin(&d, 10000);
    ck_assert_ptr_nonnull(admin);
    const char *args[] = {"--socket", admin, "status", NULL};
    ck_assert_int_eq(test_daemon_pierctl(args, out, sizeof(out), err, sizeof(err), 10000), 0);
    ck_assert_msg(strstr(out, "\nsessions 1 open, 1 accepted"), "out: %s", out);
  }
  os_sock_close(fd);
  ck_assert_int_eq(test_daemon_signal_wait(&d, 0, 20000), 0);
  ck_assert_msg(strstr(d.log, "drain: every session ended"), "log: %s", d.log);
  ck_assert_msg(strstr(d.log, "pierd stopped: 1 session served"), "log: %s", d.log);
  test_daemon_cleanup(&d);
}
END_TEST

/* A second stop request (here `quit` after SIGTERM) ends the drain: the
 * open session is closed as at any shutdown. */
START_TEST(test_ops_drain_second_stop_ends_it) {
  test_daemon d;
  int fd, rc;
  size_t got;

  start_or_fail(&d, drain_config, _i);
  fd = test_connect(d.ports[0]);
  echo_once(fd, "x");
  kill(d.pid, SIGTERM);
  ck_assert(test_daemon_wait_log(&d, "draining: 1 session open", 10000));
  test_daemon_command(&d, "quit");
  rc = test_recv_until_close(fd, &got);
  ck_assert_int_eq(rc, 0);
  ck_assert_int_eq(test_daemon_signal_wait(&d, 0, 20000), 0);
  ck_assert_msg(strstr(d.log, "second stop request: ending the drain"), "log: %s", d.log);
  os_sock_close(fd);
  test_daemon_cleanup(&d);
}
END_TEST

START_TEST(test_ops_drain_timeout_closes_what_is_left) {
  static const char config[] =
      "{\"admin_socket\": \"run/pierd.sock\", \"drain_timeout_ms\": 200,"
      " \"plugins\": [{\"name\": \"echo\", \"path\": \"@PLUGINS@/echo@EXT@\"}],"
      " \"listeners\": [{\"port\": 0, \"plugin\": \"echo\"}]}";
  test_daemon d;
  int fd;
  size_t got;

  start_or_fail(&d, config, _i);
  fd = test_connect(d.ports[0]);
  echo_once(fd, "x");
  test_daemon_command(&d, "quit");
  ck_assert_int_eq(test_recv_until_close(fd, &got), 0);
  ck_assert_int_eq(test_daemon_signal_wait(&d, 0, 20000), 0); /* no second request */
  ck_assert_msg(strstr(d.log, "drain: drain_timeout_ms reached with 1 session open; "
                              "closing them"),
                "log: %s", d.log);
  os_sock_close(fd);
  test_daemon_cleanup(&d);
}
END_TEST

/* Without drain_timeout_ms a stop closes at once, as it always did. */
START_TEST(test_ops_no_drain_by_default) {
  test_daemon d;
  int fd;
  size_t got;

  start_or_fail(&d, echo_config, _i);
  fd = test_connect(d.ports[0]);
  echo_once(fd, "x");
  kill(d.pid, SIGTERM);
  ck_assert_int_eq(test_recv_until_close(fd, &got), 0);
  ck_assert_int_eq(test_daemon_signal_wait(&d, 0, 20000), 0);
  ck_assert_ptr_null(strstr(d.log, "draining"));
  os_sock_close(fd);
  test_daemon_cleanup(&d);
}
END_TEST

/* ---- privileges ---- */

/* The "Uid:" or "Gid:" line of /proc/PID/status ("65534\t65534\t..."). */
static void proc_ids(pid_t pid, const char *key, char *out, size_t cap) {
  char path[64], line[256];
  FILE *f;
  snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
  f = fopen(path, "r");
  ck_assert_ptr_nonnull(f);
  out[0] = '\0';
  while (fgets(line, sizeof(line), f))
    if (strncmp(line, key, strlen(key)) == 0) {
      snprintf(out, cap, "%s", line + strlen(key) + 1);
      out[strcspn(out, "\n")] = '\0';
    }
  fclose(f);
}

static const char whoami_config[] =
    "{\"admin_socket\": \"run/pierd.sock\", %s"
    " \"plugins\": [{\"name\": \"whoami\", \"path\": \"@TESTPLUGINS@/whoami@EXT@\"}],"
    " \"listeners\": [{\"port\": 0, \"plugin\": \"whoami\"}]}";

/* Starts pierd on whoami_config with `extra` keys; with argv_extra, those
 * words come before pierd's own arguments (see PIER_TEST_DAEMON). */
static void start_whoami(test_daemon *d, const char *extra, const char *daemon_cmd, int i) {
  char config[1024];
  snprintf(config, sizeof(config), whoami_config, extra);
  if (daemon_cmd)
    setenv("PIER_TEST_DAEMON", daemon_cmd, 1);
  int rc = test_daemon_start(d, config, test_backend(i));
  unsetenv("PIER_TEST_DAEMON");
  ck_assert_msg(rc == 0, "log: %s", d->log);
}

static void assert_runs_as(test_daemon *d, const char *ids) {
  char uid[128], gid[128], line[128];
  int fd;
  proc_ids(d->pid, "Uid:", uid, sizeof(uid));
  proc_ids(d->pid, "Gid:", gid, sizeof(gid));
  snprintf(line, sizeof(line), "%s\t%s\t%s\t%s", ids, ids, ids, ids);
  ck_assert_str_eq(uid, line);
  ck_assert_str_eq(gid, line);
  snprintf(line, sizeof(line), "whoami uid=%s euid=%s gid=%s egid=%s", ids, ids, ids, ids);
  ck_assert_msg(strstr(d->log, line), "log: %s", d->log);
  fd = test_connect(d->ports[0]);
  echo_once(fd, "still serving");
  os_sock_close(fd);
}

#define NEED_ROOT()                                                              \
  do {                                                                           \
    if (geteuid() != 0) {                                                        \
      fprintf(stderr, "%s: skipped, needs root to drop privileges\n", __func__); \
      return;                                                                    \
    }                                                                            \
  } while (0)

START_TEST(test_ops_user_nobody_drops_before_on_load) {
  test_daemon d;
  NEED_ROOT();
  start_whoami(&d, "\"user\": \"nobody\",", NULL, _i);
  assert_runs_as(&d, "65534");
  ck_assert_msg(strstr(d.log, "running as user nobody (uid 65534), group nogroup (gid 65534)"),
                "log: %s", d.log);
  /* bound as root, before the drop: the listener is there and served */
  ck_assert(strstr(d.log, "listening on ") < strstr(d.log, "running as user nobody"));
  ck_assert(strstr(d.log, "running as user nobody") < strstr(d.log, "whoami uid="));
  ck_assert_int_eq(test_daemon_quit(&d, 20000), 0);
  test_daemon_cleanup(&d);
}
END_TEST

/* Root and no "user": a warning, and the plugins run as nobody anyway. */
START_TEST(test_ops_root_without_user_drops_to_nobody) {
  test_daemon d;
  NEED_ROOT();
  start_whoami(&d, "", PIERD, _i); /* PIER_TEST_DAEMON: no "--user root" from the harness */
  ck_assert_msg(strstr(d.log, "running as root without \"user\" in the config: plugins will "
                              "run as \"nobody\" (set \"user\", or \"user\": \"root\" to keep "
                              "root)"),
                "log: %s", d.log);
  assert_runs_as(&d, "65534");
  ck_assert_int_eq(test_daemon_quit(&d, 20000), 0);
  test_daemon_cleanup(&d);
}
END_TEST

START_TEST(test_ops_user_root_explicit_keeps_root) {
  test_daemon d;
  NEED_ROOT();
  start_whoami(&d, "\"user\": \"root\",", NULL, _i);
  ck_assert_msg(strstr(d.log, "\"user\": \"root\": plugins run as root"), "log: %s", d.log);
  assert_runs_as(&d, "0");
  ck_assert_int_eq(test_daemon_quit(&d, 20000), 0);
  test_daemon_cleanup(&d);
}
END_TEST

/* --user overrides the config's "user". */
START_TEST(test_ops_user_option_overrides_config) {
  test_daemon d;
  NEED_ROOT();
  start_whoami(&d, "\"user\": \"root\",", PIERD " --user nobody", _i);
  assert_runs_as(&d, "65534");
  ck_assert_int_eq(test_daemon_quit(&d, 20000), 0);
  test_daemon_cleanup(&d);
}
END_TEST

START_TEST(test_ops_unknown_user_refuses_start) {
  test_daemon d;
  char config[1024];
  snprintf(config, sizeof(config), whoami_config, "\"user\": \"pier-no-such-user\",");
  ck_assert_int_eq(test_daemon_run_to_exit(&d, config, test_backend(_i), NULL), 1);
  ck_assert_msg(strstr(d.log, "pierd: not started: user \"pier-no-such-user\": no such user"),
                "log: %s", d.log);
  ck_assert_ptr_null(strstr(d.log, "whoami uid="));
  test_daemon_cleanup(&d);
}
END_TEST

/* Not root: pierd cannot become anyone else, and says so before it starts.
 * Run as nobody through setpriv(1), on a config nobody can read, from copies
 * of pierd and the plugin in a directory nobody can reach (the build tree
 * may lie under a home directory only root enters). */
static void run_as_nobody(const char *extra, char *out, size_t cap, int *status) {
  char dir[] = "/tmp/pier-ops-XXXXXX", path[64], cmd[1024];
  FILE *f;
  size_t n;
  ck_assert_ptr_nonnull(mkdtemp(dir));
  ck_assert_int_eq(chmod(dir, 0755), 0);
  snprintf(cmd, sizeof(cmd), "cp %s %s/pierd && cp %s/echo.so %s/echo.so", PIERD, dir,
           test_daemon_plugin_dir(), dir);
  ck_assert_int_eq(system(cmd), 0);
  snprintf(path, sizeof(path), "%s/server.json", dir);
  f = fopen(path, "w");
  ck_assert_ptr_nonnull(f);
  fprintf(f,
          "{\"admin_socket\": \"/tmp/pier-ops-unused.sock\", %s"
          " \"plugins\": [{\"name\": \"echo\", \"path\": \"%s/echo.so\"}],"
          " \"listeners\": [{\"port\": 0, \"plugin\": \"echo\"}]}",
          extra, dir);
  fclose(f);
  snprintf(cmd, sizeof(cmd),
           "/usr/bin/setpriv --reuid=65534 --regid=65534 --clear-groups %s/pierd --config %s "
           "</dev/null 2>&1",
           dir, path);
  f = popen(cmd, "r");
  ck_assert_ptr_nonnull(f);
  n = fread(out, 1, cap - 1, f);
  out[n] = '\0';
  *status = pclose(f);
  unlink(path);
  snprintf(cmd, sizeof(cmd), "rm -f %s/pierd %s/echo.so", dir, dir);
  ck_assert_int_eq(system(cmd), 0);
  rmdir(dir);
}

START_TEST(test_ops_not_root_cannot_switch) {
  char out[8192];
  int status;
  NEED_ROOT(); /* to become nobody first */
  if (access("/usr/bin/setpriv", X_OK) != 0) {
    fprintf(stderr, "%s: skipped, no /usr/bin/setpriv\n", __func__);
    return;
  }
  run_as_nobody("\"user\": \"root\",", out, sizeof(out), &status);
  ck_assert_int_eq(WEXITSTATUS(status), 1);
  ck_assert_msg(strstr(out, "pierd: not started: cannot switch to user \"root\": pierd is not "
                            "running as root"),
                "out: %s", out);
  run_as_nobody("\"user\": \"nobody\", \"group\": \"nogroup\",", out, sizeof(out), &status);
  ck_assert_int_eq(WEXITSTATUS(status), 1);
  ck_assert_msg(strstr(out, "pierd: not started: cannot switch to group \"nogroup\": pierd is "
                            "not running as root"),
                "out: %s", out);
  ck_assert_ptr_null(strstr(out, "listening on"));
}
END_TEST

int main(void) {
  Suite *s = suite_create("ops");
  TCase *tc = tcase_create("daemon");
  tcase_set_timeout(tc, 120);
  tcase_add_loop_test(tc, test_ops_notify_ready_watchdog_stopping, 0, TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_ops_notify_abstract_socket_without_watchdog, 0, TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_ops_notify_env_hidden_from_plugins, 0, TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_ops_drain_refuses_new_and_serves_open_sessions, 0,
                      TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_ops_drain_second_stop_ends_it, 0, TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_ops_drain_timeout_closes_what_is_left, 0, TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_ops_no_drain_by_default, 0, TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_ops_user_nobody_drops_before_on_load, 0, TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_ops_root_without_user_drops_to_nobody, 0, TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_ops_user_root_explicit_keeps_root, 0, TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_ops_user_option_overrides_config, 0, TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_ops_unknown_user_refuses_start, 0, TEST_NBACKENDS);
  tcase_add_test(tc, test_ops_not_root_cannot_switch);
  suite_add_tcase(s, tc);
  return test_run(s);
}
