/* End-to-end tests of the plugin host through a real pierd process and real
 * test plugins (built in tests/plugins): callbacks and their arguments, ABI and
 * symbol refusals, on_load failure, timers after a disconnect, shutdown with
 * many sessions, serial threading, --check and the console. Each case runs
 * once per backend. */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "daemon.h"
#include "testlib.h"

#define TP PIER_BINARY_DIR "/tests/plugins"

static char *recorder_config(const test_rec *r, unsigned workers, const char *threading,
                             const char *extra) {
  static char buf[2048];
  snprintf(buf, sizeof(buf),
           "{\"workers\": %u, \"plugins\": [{\"name\": \"rec\", \"path\": \"@TESTPLUGINS@/"
           "recorder.so\", \"threading\": \"%s\", \"config\": {\"out\": \"%s\"%s}}],"
           " \"listeners\": [{\"port\": 0, \"plugin\": \"rec\"}]}",
           workers, threading, r->path, extra ? extra : "");
  return buf;
}

/* ---- callbacks with their arguments, per session, in order ---- */

START_TEST(test_host_callbacks_fire_in_order_with_arguments) {
  test_daemon d;
  test_rec r;
  int fd[5];
  char buf[8];
  pier_sid sids[5];

  test_rec_init(&r);
  ck_assert_int_eq(test_daemon_start(&d, recorder_config(&r, 2, "session", NULL), test_backend(_i)), 0);
  for (int i = 0; i < 5; i++) {
    fd[i] = test_connect(d.ports[0]);
    test_send_all(fd[i], "abcdef", 6);
    ck_assert_int_eq(test_recv_exact(fd[i], buf, 6), 0);
    ck_assert_int_eq(memcmp(buf, "abcdef", 6), 0);
  }
  for (int i = 0; i < 5; i++)
    close(fd[i]);
  ck_assert(test_rec_wait(&r, "disconnected ", 5, 10000));
  ck_assert_int_eq(test_count(test_rec_read(&r), "load generation=1\n"), 1);
  /* "disconnected" contains "connected " too */
  ck_assert_int_eq(test_count(test_rec_read(&r), "connected "), 5 + 5);
  /* Per session: connected first (with the peer), 6 bytes received, 6 sent,
   * disconnected last with reason 1 (peer closed), each exactly once. */
  const char *text = test_rec_read(&r);
  int n = 0;
  for (const char *p = text; (p = strstr(p, "\nconnected ")) && n < 5; p++) {
    unsigned long long sid;
    ck_assert_int_eq(sscanf(p + 11, "%llx", &sid), 1);
    sids[n++] = (pier_sid)sid;
  }
  if (strncmp(text, "connected ", 10) == 0)
    ck_abort_msg("load must come first");
  ck_assert_int_eq(n, 5);
  for (int i = 0; i < 5; i++) {
    char c[64], rv[64], sd[64], dc[64];
    snprintf(c, sizeof(c), "connected %016" PRIx64 " 127.0.0.1:", sids[i]);
    snprintf(rv, sizeof(rv), "recv %016" PRIx64 " ", sids[i]);
    snprintf(sd, sizeof(sd), "send %016" PRIx64 " ", sids[i]);
    snprintf(dc, sizeof(dc), "disconnected %016" PRIx64 " 1\n", sids[i]);
    const char *pc = strstr(text, c), *pr = strstr(text, rv), *ps = strstr(text, sd),
               *pd = strstr(text, dc);
    ck_assert_ptr_nonnull(pc);
    ck_assert_ptr_nonnull(pr);
    ck_assert_ptr_nonnull(ps);
    ck_assert_ptr_nonnull(pd);
    ck_assert(pc < pr && pr < ps && ps < pd);
    /* Bytes add up to what the client sent and got back. */
    size_t in = 0, out = 0;
    for (const char *p = text; (p = strstr(p, rv)); p++)
      in += strtoul(p + strlen(rv), NULL, 10);
    for (const char *p = text; (p = strstr(p, sd)); p++)
      out += strtoul(p + strlen(sd), NULL, 10);
    ck_assert_uint_eq(in, 6);
    ck_assert_uint_eq(out, 6);
    ck_assert_int_eq(test_count(test_rec_read(&r), dc), 1);
    text = test_rec_read(&r);
  }
  ck_assert_int_eq(test_daemon_signal_wait(&d, SIGTERM, 10000), 0);
  ck_assert_int_eq(test_count(test_rec_read(&r), "unload\n"), 1);
  test_daemon_cleanup(&d);
  test_rec_free(&r);
}
END_TEST

/* ---- refusals ---- */

typedef struct refusal {
  const char *config;
  const char *message;
} refusal;

static const refusal refusals[] = {
    {"{\"plugins\": [{\"name\": \"bad\", \"path\": \"" TP "/abi_major2.so\"}],"
     " \"listeners\": [{\"port\": 0, \"plugin\": \"bad\"}]}",
     "plugin \"bad\" (" TP "/abi_major2.so): built for ABI 2.3, host ABI is 1.3: major versions "
     "differ; rebuild the plugin against this host's include/pier"},
    {"{\"plugins\": [{\"name\": \"bad\", \"path\": \"" TP "/abi_minor9.so\"}],"
     " \"listeners\": [{\"port\": 0, \"plugin\": \"bad\"}]}",
     "plugin \"bad\" (" TP "/abi_minor9.so): built for ABI 1.9, host ABI is 1.3: the plugin "
     "needs a newer host (minor 9 > 3)"},
    {"{\"plugins\": [{\"name\": \"bad\", \"path\": \"" TP "/abi_magic.so\"}],"
     " \"listeners\": [{\"port\": 0, \"plugin\": \"bad\"}]}",
     "plugin \"bad\" (" TP "/abi_magic.so): descriptor magic is 0x12345678, expected 0x52454950 "
     "(not a pier plugin descriptor)"},
    {"{\"plugins\": [{\"name\": \"bad\", \"path\": \"" TP "/abi_small.so\"}],"
     " \"listeners\": [{\"port\": 0, \"plugin\": \"bad\"}]}",
     "plugin \"bad\" (" TP "/abi_small.so): descriptor size 16 is smaller than ABI 1.0's"},
    {"{\"plugins\": [{\"name\": \"rec\", \"path\": \"" TP "/recorder.so\", \"callbacks\": "
     "{\"on_recv\": \"no_such_function\"}}], \"listeners\": [{\"port\": 0, \"plugin\": \"rec\"}]}",
     "plugin \"rec\" (" TP "/recorder.so): callbacks.on_recv names symbol \"no_such_function\", "
     "which the plugin does not export"},
    {"{\"plugins\": [{\"name\": \"gone\", \"path\": \"" TP "/missing.so\"}],"
     " \"listeners\": [{\"port\": 0, \"plugin\": \"gone\"}]}",
     "plugin \"gone\": cannot open " TP "/missing.so: No such file or directory"},
    /* Without an extension, the platform's: the error names the file tried. */
    {"{\"plugins\": [{\"name\": \"gone\", \"path\": \"" TP "/missing\"}],"
     " \"listeners\": [{\"port\": 0, \"plugin\": \"gone\"}]}",
     "plugin \"gone\": cannot open " TP "/missing.so: No such file or directory"},
    {"{\"plugins\": [{\"name\": \"notso\", \"path\": \"" TP "/../CTestTestfile.cmake\"}],"
     " \"listeners\": [{\"port\": 0, \"plugin\": \"notso\"}]}",
     "plugin \"notso\" (" TP "/../CTestTestfile.cmake): cannot load: "},
};

START_TEST(test_host_refuses_bad_plugins_with_exact_reason) {
  test_daemon d;
  for (size_t k = 0; k < sizeof(refusals) / sizeof(refusals[0]); k++) {
    /* --check and a real start both refuse, with the same words. */
    int rc = test_daemon_run_to_exit(&d, refusals[k].config, test_backend(_i), "--check");
    ck_assert_int_eq(rc, 1);
    ck_assert_msg(strstr(d.log, refusals[k].message), "case %zu: expected \"%s\" in:\n%s", k,
                  refusals[k].message, d.log);
    ck_assert_ptr_nonnull(strstr(d.log, "is invalid"));
    test_daemon_cleanup(&d);
    rc = test_daemon_run_to_exit(&d, refusals[k].config, test_backend(_i), NULL);
    ck_assert_int_eq(rc, 1);
    ck_assert_ptr_nonnull(strstr(d.log, refusals[k].message));
    test_daemon_cleanup(&d);
  }
}
END_TEST

START_TEST(test_host_on_load_failure_refuses_start) {
  test_daemon d;
  test_rec r;
  char config[1024];
  test_rec_init(&r);
  /* The recorder loads first, then failload refuses: the recorder is unloaded
   * again and nothing listens. */
  snprintf(config, sizeof(config),
           "{\"plugins\": [{\"name\": \"rec\", \"path\": \"" TP "/recorder.so\", \"config\": "
           "{\"out\": \"%s\"}}, {\"name\": \"failing\", \"path\": \"" TP "/failload.so\"}],"
           " \"listeners\": [{\"port\": 0, \"plugin\": \"rec\"}]}",
           r.path);
  ck_assert_int_eq(test_daemon_run_to_exit(&d, config, test_backend(_i), NULL), 1);
  ck_assert_ptr_nonnull(
      strstr(d.log, "plugin \"failing\" (" TP "/failload.so): on_load failed: Invalid argument (-22)"));
  ck_assert_ptr_null(strstr(d.log, "pierd ready"));
  ck_assert_int_eq(test_count(test_rec_read(&r), "load generation=1\n"), 1);
  ck_assert_int_eq(test_count(test_rec_read(&r), "unload\n"), 1);
  test_daemon_cleanup(&d);
  test_rec_free(&r);
}
END_TEST

START_TEST(test_host_callback_bound_by_symbol_name) {
  test_daemon d;
  test_rec r;
  char config[1024], buf[4];
  test_rec_init(&r);
  snprintf(config, sizeof(config),
           "{\"plugins\": [{\"name\": \"rec\", \"path\": \"" TP "/recorder.so\", \"callbacks\": "
           "{\"on_recv\": \"recorder_alt_recv\"}, \"config\": {\"out\": \"%s\"}}],"
           " \"listeners\": [{\"port\": 0, \"plugin\": \"rec\"}]}",
           r.path);
  ck_assert_int_eq(test_daemon_start(&d, config, test_backend(_i)), 0);
  int fd = test_connect(d.ports[0]);
  test_send_all(fd, "wxyz", 4);
  ck_assert_int_eq(test_recv_exact(fd, buf, 4), 0);
  ck_assert(test_rec_wait(&r, "alt_recv ", 1, 10000));
  ck_assert_int_eq(test_count(test_rec_read(&r), "\nrecv "), 0);
  close(fd);
  ck_assert_int_eq(test_daemon_signal_wait(&d, SIGTERM, 10000), 0);
  test_daemon_cleanup(&d);
  test_rec_free(&r);
}
END_TEST

/* ---- timers ---- */

START_TEST(test_host_timer_send_after_disconnect_fails_cleanly) {
  test_daemon d;
  test_rec r;
  char want[80];
  test_rec_init(&r);
  ck_assert_int_eq(test_daemon_start(&d, recorder_config(&r, 1, "session", ", \"timer_after_disconnect\": 1"),
                                     test_backend(_i)),
                   0);
  int fd = test_connect(d.ports[0]);
  ck_assert(test_rec_wait(&r, "\nconnected ", 1, 10000));
  close(fd);
  ck_assert(test_rec_wait(&r, "\ntimer ", 1, 10000));
  unsigned long long sid;
  const char *p = strstr(test_rec_read(&r), "\nconnected ");
  ck_assert_int_eq(sscanf(p + 11, "%llx", &sid), 1);
  snprintf(want, sizeof(want), "timer %016llx rc=%d\n", sid, -ENOTCONN);
  ck_assert_int_eq(test_count(test_rec_read(&r), want), 1);
  ck_assert_int_eq(test_daemon_signal_wait(&d, SIGTERM, 10000), 0);
  test_daemon_cleanup(&d);
  test_rec_free(&r);
}
END_TEST

/* ---- shutdown ---- */

START_TEST(test_host_sigterm_disconnects_every_session_once) {
  test_daemon d;
  test_rec r;
  int fd[100];
  test_rec_init(&r);
  ck_assert_int_eq(test_daemon_start(&d, recorder_config(&r, 2, "session", NULL), test_backend(_i)), 0);
  for (int i = 0; i < 100; i++)
    fd[i] = test_connect(d.ports[0]);
  ck_assert(test_rec_wait(&r, "\nconnected ", 100, 10000));
  ck_assert_int_eq(test_daemon_signal_wait(&d, SIGTERM, 20000), 0);
  ck_assert_int_eq(test_count(test_rec_read(&r), "\ndisconnected "), 100);
  ck_assert_int_eq(test_count(test_rec_read(&r), " 10\n"), 100); /* reason SHUTDOWN */
  /* on_unload comes last, after every on_disconnected. */
  const char *text = test_rec_read(&r);
  ck_assert_ptr_nonnull(strstr(text, "unload\n"));
  ck_assert_ptr_null(strstr(strstr(text, "unload\n"), "disconnected"));
  for (int i = 0; i < 100; i++) {
    size_t got = 1;
    ck_assert_int_eq(test_recv_until_close(fd[i], &got), 0);
    ck_assert_uint_eq(got, 0);
    close(fd[i]);
  }
  test_daemon_cleanup(&d);
  test_rec_free(&r);
}
END_TEST

/* ---- serial threading ---- */

START_TEST(test_host_serial_plugin_never_runs_two_callbacks_at_once) {
  test_daemon d;
  test_rec r;
  enum { CLIENTS = 16, MSGS = 40 };
  int fd[CLIENTS];
  char buf[16];
  test_rec_init(&r);
  ck_assert_int_eq(test_daemon_start(&d, recorder_config(&r, 2, "serial", ", \"check_overlap\": 1"),
                                     test_backend(_i)),
                   0);
  for (int i = 0; i < CLIENTS; i++)
    fd[i] = test_connect(d.ports[0]);
  /* Every client keeps one message in flight, all at once. */
  for (int m = 0; m < MSGS; m++) {
    for (int i = 0; i < CLIENTS; i++)
      test_send_all(fd[i], "0123456789abcdef", 16);
    for (int i = 0; i < CLIENTS; i++)
      ck_assert_int_eq(test_recv_exact(fd[i], buf, 16), 0);
  }
  for (int i = 0; i < CLIENTS; i++)
    close(fd[i]);
  ck_assert(test_rec_wait(&r, "\ndisconnected ", CLIENTS, 10000));
  ck_assert_int_eq(test_count(test_rec_read(&r), "overlap"), 0);
  ck_assert_int_ge(test_count(test_rec_read(&r), "\nrecv "), 1);
  ck_assert_int_eq(test_daemon_signal_wait(&d, SIGTERM, 10000), 0);
  test_daemon_cleanup(&d);
  test_rec_free(&r);
}
END_TEST

/* ---- --check and the console ---- */

START_TEST(test_host_check_accepts_valid_config) {
  test_daemon d;
  test_rec r;
  test_rec_init(&r);
  ck_assert_int_eq(test_daemon_run_to_exit(&d, recorder_config(&r, 1, "session", NULL), test_backend(_i), "--check"), 0);
  ck_assert_ptr_nonnull(strstr(d.log, "is valid (1 plugins, 1 listeners)"));
  /* --check runs no plugin code. */
  ck_assert_int_eq(test_count(test_rec_read(&r), "load"), 0);
  test_daemon_cleanup(&d);
  ck_assert_int_eq(test_daemon_run_to_exit(&d,
                                           "{\"workers\": 0, \"plugins\": [{\"name\": \"a\", "
                                           "\"path\": \"a.so\"}], \"listeners\": [{\"port\": 0, "
                                           "\"plugin\": \"a\"}]}",
                                           test_backend(_i), "--check"),
                   1);
  ck_assert_ptr_nonnull(strstr(d.log, "server.json: workers: expected an integer 1..64, got 0"));
  test_daemon_cleanup(&d);
  test_rec_free(&r);
}
END_TEST

START_TEST(test_host_console_commands) {
  test_daemon d;
  test_rec r;
  char cmd[64];
  size_t got;
  test_rec_init(&r);
  ck_assert_int_eq(test_daemon_start(&d, recorder_config(&r, 1, "session", NULL), test_backend(_i)), 0);
  int fd = test_connect(d.ports[0]);
  ck_assert(test_rec_wait(&r, "\nconnected ", 1, 10000));
  unsigned long long sid;
  ck_assert_int_eq(sscanf(strstr(test_rec_read(&r), "\nconnected ") + 11, "%llx", &sid), 1);
  test_daemon_command(&d, "status");
  ck_assert(test_daemon_wait_log(&d, "raw plugin rec: 1 sessions", 5000));
  ck_assert(test_daemon_wait_log(&d, "plugin rec: recorder 0.1.0, generation 1, session", 5000));
  test_daemon_command(&d, "sessions");
  snprintf(cmd, sizeof(cmd), "%016llx rec 127.0.0.1:", sid);
  ck_assert(test_daemon_wait_log(&d, cmd, 5000));
  test_daemon_command(&d, "frobnicate");
  ck_assert(test_daemon_wait_log(&d, "error: unknown command \"frobnicate\" (type `help`)", 5000));
  test_daemon_command(&d, "kick zz");
  ck_assert(test_daemon_wait_log(&d, "error: kick: \"zz\" is not a session id", 5000));
  snprintf(cmd, sizeof(cmd), "kick %llx", sid);
  test_daemon_command(&d, cmd);
  ck_assert_int_eq(test_recv_until_close(fd, &got), 0);
  ck_assert(test_rec_wait(&r, " 5\n", 1, 10000)); /* reason KICKED */
  test_daemon_command(&d, cmd);
  snprintf(cmd, sizeof(cmd), "error: kick: no session %016llx", sid);
  ck_assert(test_daemon_wait_log(&d, cmd, 5000));
  test_daemon_command(&d, "quit");
  ck_assert_int_eq(test_daemon_signal_wait(&d, 0, 10000), 0);
  close(fd);
  test_daemon_cleanup(&d);
  test_rec_free(&r);
}
END_TEST

/* A backend of another platform is refused by name, with the ones this
 * platform has: one config file serves Linux and Windows with "auto". */
START_TEST(test_host_backend_of_another_platform_is_refused) {
  test_daemon d;
  const char *config = "{\"io_backend\": \"iocp\", \"plugins\": [{\"name\": \"echo\", "
                       "\"path\": \"@PLUGINS@/echo\"}], \"listeners\": [{\"port\": 0, "
                       "\"plugin\": \"echo\"}]}";
  ck_assert_int_eq(test_daemon_run_to_exit(&d, config, NULL, NULL), 1);
  ck_assert_msg(strstr(d.log, "io_backend \"iocp\" is not available on this platform "
                              "(expected auto, io_uring or epoll)"),
                "log: %s", d.log);
  ck_assert_ptr_null(strstr(d.log, "pierd ready"));
  test_daemon_cleanup(&d);
  ck_assert_int_eq(test_daemon_run_to_exit(&d, config, "iocp", NULL), 1);
  ck_assert_msg(strstr(d.log, "pierd: --io-backend: expected auto, io_uring or epoll, got \"iocp\""),
                "log: %s", d.log);
  test_daemon_cleanup(&d);
}
END_TEST

int main(void) {
  Suite *s = suite_create("host");
  TCase *tc = tcase_create("daemon");
  tcase_set_timeout(tc, 120);
  tcase_add_loop_test(tc, test_host_callbacks_fire_in_order_with_arguments, 0, TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_host_refuses_bad_plugins_with_exact_reason, 0, TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_host_on_load_failure_refuses_start, 0, TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_host_callback_bound_by_symbol_name, 0, TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_host_timer_send_after_disconnect_fails_cleanly, 0, TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_host_sigterm_disconnects_every_session_once, 0, TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_host_serial_plugin_never_runs_two_callbacks_at_once, 0,
                      TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_host_check_accepts_valid_config, 0, TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_host_console_commands, 0, TEST_NBACKENDS);
  tcase_add_test(tc, test_host_backend_of_another_platform_is_refused);
  suite_add_tcase(s, tc);
  return test_run(s);
}
