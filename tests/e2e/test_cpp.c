/* C++ plugins in a real pierd: the lobby example (plugins/lobby, on
 * include/pier/plugin.hpp) byte for byte, and the cppprobe test plugin
 * built as C++17 and as C++20: OnSend counted, one OnDisconnected per
 * session, an exception in OnRecv reported as a failure that closes the
 * session (and quarantines the plugin with quarantine_after 1), an
 * exception in OnLoad refusing the start, a hot reload with sessions
 * connected (OnResumed, Save handed over). Every case once per backend. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "daemon.h"
#include "testlib.h"

#define TP PIER_BINARY_DIR "/tests/plugins"

static void start(test_daemon *d, const char *config, const char *be) {
  int rc = test_daemon_start(d, config, be);
  ck_assert_msg(rc == 0, "pierd did not start:\n%s", d->log);
  ck_assert_int_eq(d->nports, 1);
}

static void stop(test_daemon *d) {
  int status = test_daemon_signal_wait(d, SIGTERM, 10000);
  ck_assert_msg(status == 0, "pierd exited %d:\n%s", status, d->log);
  test_daemon_cleanup(d);
}

/* Reads one line ('\n' included) into buf; returns its length, 0 at EOF or
 * timeout. */
static size_t recv_line(int fd, char *buf, size_t cap) {
  size_t n = 0;
  while (n + 1 < cap) {
    if (test_recv_exact(fd, buf + n, 1) < 0)
      break;
    if (buf[n++] == '\n')
      break;
  }
  buf[n] = '\0';
  return n;
}

#define expect_line(fd, want)                                                          \
  do {                                                                                 \
    char got_[1024];                                                                   \
    recv_line((fd), got_, sizeof(got_));                                               \
    ck_assert_str_eq(got_, (want));                                                    \
  } while (0)

static void say(int fd, const char *text) { test_send_all(fd, text, strlen(text)); }

static void expect_eof(int fd) {
  size_t got = 1;
  ck_assert_int_eq(test_recv_until_close(fd, &got), 0);
  ck_assert_uint_eq(got, 0);
}

/* ---- lobby ---- */

#define LOBBY                                                                              \
  "{\"workers\": 2, \"plugins\": [{\"name\": \"lobby\", \"path\": \"@PLUGINS@/lobby@EXT@\", " \
  "\"threading\": \"serial\"}], \"listeners\": [{\"address\": \"127.0.0.1\", \"port\": 0, "   \
  "\"plugin\": \"lobby\", \"framing\": \"raw\"}]}"

/* Welcome, a line in pieces to the other member only, /nick, a refused
 * name, departure; a line over 512 bytes is refused and closes its
 * session. */
START_TEST(test_cpp_lobby_conversation) {
  const char *be = test_backend(_i);
  test_daemon d;
  char big[600];
  start(&d, LOBBY, be);
  int a = test_connect(d.ports[0]);
  expect_line(a, "welcome guest-1\n");
  int b = test_connect(d.ports[0]);
  expect_line(b, "welcome guest-2\n");
  expect_line(a, "guest-2 joined\n");
  say(a, "hi th");
  usleep(20000);
  say(a, "ere\r\n");
  expect_line(b, "guest-1: hi there\n");
  /* Nothing came back to the sender: its next line is the rename's. */
  say(a, "/nick alice\n");
  expect_line(a, "you are alice\n");
  expect_line(b, "guest-1 is now alice\n");
  say(b, "/nick no spaces\n");
  expect_line(b, "error: a name is 1 to 24 letters, digits, '-' or '_'\n");
  say(b, "/nick alice\n");
  expect_line(b, "error: alice is taken\n");
  say(b, "/nick guest-9\n");
  expect_line(b, "error: names starting with guest- are given to guests\n");
  say(b, "\nhello alice\n");
  expect_line(a, "guest-2: hello alice\n");
  /* 513 bytes without a newline: refused, closed, announced. */
  int c = test_connect(d.ports[0]);
  expect_line(c, "welcome guest-3\n");
  expect_line(a, "guest-3 joined\n");
  expect_line(b, "guest-3 joined\n");
  memset(big, 'x', 513);
  test_send_all(c, big, 513);
  expect_line(c, "error: line longer than 512 bytes\n");
  expect_eof(c);
  expect_line(a, "guest-3 left\n");
  expect_line(b, "guest-3 left\n");
  ck_assert(test_daemon_wait_log(&d, "disconnected: protocol error from the client", 5000));
  /* Exactly 512 bytes and a newline is a line. */
  memset(big, 'y', 512);
  big[512] = '\n';
  test_send_all(b, big, 513);
  {
    char got[1024];
    ck_assert_uint_eq(recv_line(a, got, sizeof(got)), strlen("guest-2: ") + 513);
    ck_assert_int_eq(memcmp(got, "guest-2: yyyy", 13), 0);
  }
  /* 512 bytes, then "\r\n": a line too. */
  memset(big, 'z', 512);
  big[512] = '\r';
  big[513] = '\n';
  test_send_all(b, big, 514);
  {
    char got[1024];
    ck_assert_uint_eq(recv_line(a, got, sizeof(got)), strlen("guest-2: ") + 513);
    ck_assert_int_eq(memcmp(got, "guest-2: zzzz", 13), 0);
  }
  close(b);
  expect_line(a, "guest-2 left\n");
  close(a);
  close(c);
  stop(&d);
}
END_TEST

/* A reload with members connected: they keep their names and keep
 * talking (a line begun before it ends after it), the guest counter goes
 * on, nobody sees a departure. */
START_TEST(test_cpp_lobby_reload_keeps_members) {
  const char *be = test_backend(_i);
  test_daemon d;
  start(&d, LOBBY, be);
  int a = test_connect(d.ports[0]);
  expect_line(a, "welcome guest-1\n");
  int b = test_connect(d.ports[0]);
  expect_line(b, "welcome guest-2\n");
  expect_line(a, "guest-2 joined\n");
  say(a, "/nick alice\n");
  expect_line(a, "you are alice\n");
  expect_line(b, "guest-1 is now alice\n");
  say(b, "half a li");
  test_daemon_command(&d, "reload lobby");
  ck_assert(test_daemon_wait_log(&d, "reloaded lobby: generation 2, version 1.0.0", 10000));
  say(a, "still here\n");
  expect_line(b, "alice: still here\n");
  /* The partial line went across with the name. */
  say(b, "ne\n");
  expect_line(a, "guest-2: half a line\n");
  int c = test_connect(d.ports[0]);
  expect_line(c, "welcome guest-3\n");
  expect_line(a, "guest-3 joined\n");
  expect_line(b, "guest-3 joined\n");
  close(c);
  expect_line(a, "guest-3 left\n");
  close(a);
  close(b);
  stop(&d);
}
END_TEST

/* ---- cppprobe ---- */

static void probe_config(char *buf, size_t len, const char *so, const char *limits,
                         const char *config) {
  snprintf(buf, len,
           "{\"workers\": 2, \"limits\": {%s}, \"plugins\": [{\"name\": \"cpp\", \"path\": \"" TP
           "/%s@EXT@\", \"config\": {%s}}], \"listeners\": [{\"address\": \"127.0.0.1\", "
           "\"port\": 0, \"plugin\": \"cpp\", \"framing\": \"raw\"}]}",
           limits, so, config);
}

/* Both builds load and greet with their language version; OnSend sums to
 * every byte the client got; each session's OnDisconnected runs once. */
static void probe_serves(const char *be, const char *so, const char *hello) {
  test_daemon d;
  char config[1024], line[256];
  size_t received = 0;
  probe_config(config, sizeof(config), so, "", "");
  start(&d, config, be);
  int fd[3];
  for (int k = 0; k < 3; k++) {
    fd[k] = test_connect(d.ports[0]);
    expect_line(fd[k], hello);
  }
  received = strlen(hello);
  say(fd[0], "abcd");
  {
    char buf[4];
    ck_assert_int_eq(test_recv_exact(fd[0], buf, 4), 0);
    ck_assert_int_eq(memcmp(buf, "abcd", 4), 0);
    received += 4;
  }
  /* OnSend lags the bytes by a moment: ask until it has caught up. */
  for (int tries = 0;; tries++) {
    unsigned long long sent;
    say(fd[0], "count");
    size_t n = recv_line(fd[0], line, sizeof(line));
    ck_assert_int_eq(sscanf(line, "sent %llu\n", &sent), 1);
    ck_assert_uint_le(sent, received);
    received += n;
    if (sent == received - n)
      break;
    ck_assert_int_lt(tries, 100);
    usleep(10000);
  }
  for (int k = 0; k < 3; k++)
    close(fd[k]);
  ck_assert(test_daemon_wait_log(&d, "[cpp] cppprobe: OnDisconnected", 5000));
  usleep(100000);
  stop(&d);
  ck_assert_int_eq(test_count(d.log, "cppprobe: OnDisconnected"), 3);
  ck_assert_int_eq(test_count(d.log, "peer closed the connection"), 3);
}

START_TEST(test_cpp_probe17_serves) {
  probe_serves(test_backend(_i), "cppprobe17", "hello gen=1 std=201703\n");
}
END_TEST

START_TEST(test_cpp_probe20_serves) {
  probe_serves(test_backend(_i), "cppprobe20", "hello gen=1 std=202002\n");
}
END_TEST

/* Without "cluster" the bus helpers of pier::Plugin answer -ENOTSUP and
 * Node() is NULL; the plugin serves on. */
START_TEST(test_cpp_bus_without_cluster) {
  const char *be = test_backend(_i);
  test_daemon d;
  char config[1024], want[64];
  probe_config(config, sizeof(config), "cppprobe17", "", "");
  start(&d, config, be);
  int fd = test_connect(d.ports[0]);
  expect_line(fd, "hello gen=1 std=201703\n");
  say(fd, "node");
  expect_line(fd, "node (none)\n");
  snprintf(want, sizeof(want), "rc sub %d\n", -ENOTSUP);
  say(fd, "sub room.*");
  expect_line(fd, want);
  snprintf(want, sizeof(want), "rc pub %d\n", -ENOTSUP);
  say(fd, "pub room.red hi");
  expect_line(fd, want);
  snprintf(want, sizeof(want), "rc unsub %d\n", -ENOTSUP);
  say(fd, "unsub room.*");
  expect_line(fd, want);
  close(fd);
  stop(&d);
}
END_TEST

/* OnRecv throws: a reported failure, that session closed as "plugin
 * failed" (OnDisconnected still once), the others served. */
START_TEST(test_cpp_throw_closes_the_session) {
  const char *be = test_backend(_i);
  test_daemon d;
  char config[1024], buf[2];
  probe_config(config, sizeof(config), "cppprobe17", "", "");
  start(&d, config, be);
  int other = test_connect(d.ports[0]);
  expect_line(other, "hello gen=1 std=201703\n");
  int fd = test_connect(d.ports[0]);
  expect_line(fd, "hello gen=1 std=201703\n");
  say(fd, "throw");
  expect_eof(fd);
  ck_assert(test_daemon_wait_log(
      &d, "plugin \"cpp\": reported failure: OnRecv threw: asked to throw", 5000));
  ck_assert(test_daemon_wait_log(&d, "disconnected: plugin failed after", 5000));
  ck_assert(test_daemon_wait_log(&d, " plugin failed\n", 5000)); /* its OnDisconnected */
  say(other, "ok");
  ck_assert_int_eq(test_recv_exact(other, buf, 2), 0);
  ck_assert_int_eq(memcmp(buf, "ok", 2), 0);
  test_daemon_command(&d, "plugins");
  ck_assert(test_daemon_wait_log(&d, ", 1 failures, 0 slow callbacks", 5000));
  close(fd);
  close(other);
  stop(&d);
  ck_assert_int_eq(test_count(d.log, "cppprobe: OnDisconnected"), 2);
}
END_TEST

/* With quarantine_after 1 the throw quarantines the plugin; the sessions
 * it closes get their OnDisconnected at the reload that lifts it. */
START_TEST(test_cpp_throw_quarantines) {
  const char *be = test_backend(_i);
  test_daemon d;
  char config[1024];
  probe_config(config, sizeof(config), "cppprobe20", "\"quarantine_after\": 1", "");
  start(&d, config, be);
  int bystander = test_connect(d.ports[0]);
  expect_line(bystander, "hello gen=1 std=202002\n");
  int fd = test_connect(d.ports[0]);
  expect_line(fd, "hello gen=1 std=202002\n");
  say(fd, "throw");
  ck_assert(test_daemon_wait_log(&d,
                                 "plugin \"cpp\" quarantined after 1 failures (last: reported "
                                 "failure: OnRecv threw: asked to throw)",
                                 5000));
  expect_eof(fd);
  expect_eof(bystander);
  test_daemon_command(&d, "plugins");
  ck_assert(test_daemon_wait_log(&d, ", QUARANTINED, 1 failures", 5000));
  test_daemon_command(&d, "reload cpp");
  ck_assert(test_daemon_wait_log(&d, "plugin \"cpp\": quarantine lifted by the reload", 5000));
  int again = test_connect(d.ports[0]);
  expect_line(again, "hello gen=2 std=202002\n");
  close(again);
  close(fd);
  close(bystander);
  ck_assert(test_daemon_wait_log(&d, "peer closed the connection\n", 5000));
  usleep(100000);
  stop(&d);
  /* fd and bystander once each: at the reload (reason unknown: "none") if
   * pierd had finished closing them while quarantined, else by the new
   * version when it did ("plugin failed"); again at its close. */
  ck_assert_int_eq(test_count(d.log, "cppprobe: OnDisconnected"), 3);
  ck_assert_int_eq(test_count(d.log, " none\n") + test_count(d.log, " plugin failed\n"), 2);
  ck_assert_int_eq(test_count(d.log, " peer closed the connection\n"), 1);
}
END_TEST

/* OnLoad throws: pierd refuses to start and says why. */
START_TEST(test_cpp_throw_in_on_load_refuses) {
  const char *be = test_backend(_i);
  test_daemon d;
  char config[1024];
  probe_config(config, sizeof(config), "cppprobe17", "", "\"throw_on_load\": true");
  int status = test_daemon_run_to_exit(&d, config, be, NULL);
  ck_assert_int_ne(status, 0);
  ck_assert_msg(strstr(d.log, "[cpp] OnLoad threw: the config asks OnLoad to throw\n"), "%s",
                d.log);
  ck_assert_msg(strstr(d.log, "on_load failed: Invalid argument (-22)"), "%s", d.log);
  test_daemon_cleanup(&d);
}
END_TEST

/* A reload with sessions connected: each is resumed with what its old
 * object saved, and the plugin's state arrives in OnLoad. */
START_TEST(test_cpp_reload_resumes_sessions) {
  const char *be = test_backend(_i);
  test_daemon d;
  char config[1024], buf[8];
  probe_config(config, sizeof(config), "cppprobe20", "", "");
  start(&d, config, be);
  int a = test_connect(d.ports[0]);
  expect_line(a, "hello gen=1 std=202002\n");
  int b = test_connect(d.ports[0]);
  expect_line(b, "hello gen=1 std=202002\n");
  say(a, "abc");
  ck_assert_int_eq(test_recv_exact(a, buf, 3), 0);
  int c = test_connect(d.ports[0]);
  expect_line(c, "hello gen=1 std=202002\n");
  say(c, "big");
  ck_assert_int_eq(test_recv_exact(c, buf, 3), 0);
  test_daemon_command(&d, "reload cpp");
  ck_assert(test_daemon_wait_log(&d, "reloaded cpp: generation 2", 10000));
  /* Over 1 MiB saved: refused (and logged), that session resumes with "". */
  ck_assert_msg(strstr(d.log, "reported failure: Save returned 1048577 bytes, over the 1048576 "
                              "one session may hand over"),
                "%s", d.log);
  expect_line(c, "resumed gen=2 saved= plugin=from-gen-1\n");
  close(c);
  expect_line(a, "resumed gen=2 saved=recv3 plugin=from-gen-1\n");
  expect_line(b, "resumed gen=2 saved=recv0 plugin=from-gen-1\n");
  say(b, "xyz");
  ck_assert_int_eq(test_recv_exact(b, buf, 3), 0);
  ck_assert_int_eq(memcmp(buf, "xyz", 3), 0);
  test_daemon_command(&d, "reload cpp");
  ck_assert(test_daemon_wait_log(&d, "reloaded cpp: generation 3", 10000));
  expect_line(a, "resumed gen=3 saved=recv0 plugin=from-gen-2\n");
  expect_line(b, "resumed gen=3 saved=recv3 plugin=from-gen-2\n");
  close(a);
  close(b);
  ck_assert(test_daemon_wait_log(&d, "[cpp] cppprobe: OnDisconnected", 5000));
  usleep(100000);
  stop(&d);
  ck_assert_int_eq(test_count(d.log, "cppprobe: OnDisconnected"), 3);
}
END_TEST

/* A throw while a reload resumes the sessions counts after the reload
 * (pierd resets the failure count when a reload succeeds): that session is
 * closed as "plugin failed", the failure is reported once the reload is
 * done, and with quarantine_after 1 it quarantines the plugin. */
START_TEST(test_cpp_throw_on_resume_counts) {
  const char *be = test_backend(_i);
  test_daemon d;
  char config[1024], buf[4];
  probe_config(config, sizeof(config), "cppprobe17", "\"quarantine_after\": 1", "");
  start(&d, config, be);
  int armed = test_connect(d.ports[0]);
  expect_line(armed, "hello gen=1 std=201703\n");
  int other = test_connect(d.ports[0]);
  expect_line(other, "hello gen=1 std=201703\n");
  say(armed, "arm");
  ck_assert_int_eq(test_recv_exact(armed, buf, 3), 0);
  test_daemon_command(&d, "reload cpp");
  ck_assert(test_daemon_wait_log(&d, "reloaded cpp: generation 2", 10000));
  expect_line(other, "resumed gen=2 saved=recv0 plugin=from-gen-1\n");
  ck_assert(test_daemon_wait_log(&d,
                                 "plugin \"cpp\" quarantined after 1 failures (last: reported "
                                 "failure: OnResumed threw: asked to throw on resume)",
                                 5000));
  expect_eof(armed);
  expect_eof(other);
  test_daemon_command(&d, "plugins");
  ck_assert(test_daemon_wait_log(&d, ", QUARANTINED, 1 failures", 5000));
  close(armed);
  close(other);
  stop(&d);
}
END_TEST

/* A reload from a C version (per-session user pointers into its own image,
 * no hand-over) into the C++ layer: every open session gets an object and
 * OnResumed("") instead of a call through the stale pointer, and goes on
 * being served. */
START_TEST(test_cpp_reload_from_c_adopts_sessions) {
  const char *be = test_backend(_i);
  test_daemon d;
  char dir[256], so[320], config[1024], buf[8];
  test_mkdtemp(dir, sizeof(dir), "pier-cpp-adopt");
  snprintf(so, sizeof(so), "%s/cpp.so", dir);
  test_copy_file(TP "/cuser.so", so);
  snprintf(config, sizeof(config),
           "{\"workers\": 2, \"plugins\": [{\"name\": \"cpp\", \"path\": \"%s\"}], "
           "\"listeners\": [{\"address\": \"127.0.0.1\", \"port\": 0, \"plugin\": \"cpp\", "
           "\"framing\": \"raw\"}]}",
           so);
  start(&d, config, be);
  int a = test_connect(d.ports[0]);
  expect_line(a, "c hello\n");
  int b = test_connect(d.ports[0]);
  expect_line(b, "c hello\n");
  say(a, "q");
  ck_assert_int_eq(test_recv_exact(a, buf, 1), 0);
  test_copy_file(TP "/cppprobe17.so", so);
  test_daemon_command(&d, "reload cpp");
  ck_assert(test_daemon_wait_log(&d, "reloaded cpp: generation 2", 10000));
  expect_line(a, "resumed gen=2 saved= plugin=\n");
  expect_line(b, "resumed gen=2 saved= plugin=\n");
  say(b, "xyz");
  ck_assert_int_eq(test_recv_exact(b, buf, 3), 0);
  ck_assert_int_eq(memcmp(buf, "xyz", 3), 0);
  close(a);
  close(b);
  ck_assert(test_daemon_wait_log(&d, "[cpp] cppprobe: OnDisconnected", 5000));
  usleep(100000);
  stop(&d);
  ck_assert_int_eq(test_count(d.log, "cppprobe: OnDisconnected"), 2);
  test_rm_rf(dir);
}
END_TEST

int main(void) {
  Suite *s = suite_create("cpp");
  TCase *tc = tcase_create("daemon");
  tcase_set_timeout(tc, 120);
  tcase_add_loop_test(tc, test_cpp_lobby_conversation, 0, TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_cpp_lobby_reload_keeps_members, 0, TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_cpp_probe17_serves, 0, TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_cpp_probe20_serves, 0, TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_cpp_throw_closes_the_session, 0, TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_cpp_throw_quarantines, 0, TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_cpp_throw_in_on_load_refuses, 0, TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_cpp_reload_resumes_sessions, 0, TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_cpp_reload_from_c_adopts_sessions, 0, TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_cpp_throw_on_resume_counts, 0, TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_cpp_bus_without_cluster, 0, TEST_NBACKENDS);
  suite_add_tcase(s, tc);
  return test_run(s);
}
