/* Faulty plugins in a real pierd: a slow callback is logged (when it returns
 * and while it still runs), a plugin that keeps failing is quarantined while
 * the others keep serving, a crash writes a report (backtrace, plugins) and
 * a plugin built for an older ABI minor still loads. Both backends. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "daemon.h"
#include "testlib.h"

#define TP PIER_BINARY_DIR "/tests/plugins"

static void config_for(char *buf, size_t len, const char *so, const char *limits) {
  snprintf(buf, len,
           "{\"workers\": 2, \"limits\": {%s}, \"plugins\": ["
           "{\"name\": \"bad\", \"path\": \"" TP "/%s\"},"
           "{\"name\": \"echo\", \"path\": \"@PLUGINS@/echo.so\"}],"
           " \"listeners\": [{\"port\": 0, \"plugin\": \"bad\"}, {\"port\": 0, \"plugin\": \"echo\"}]}",
           limits, so);
}

static void echo_ok(uint16_t port) {
  int fd = test_connect(port);
  char buf[4];
  test_send_all(fd, "ping", 4);
  ck_assert_int_eq(test_recv_exact(fd, buf, 4), 0);
  ck_assert_int_eq(memcmp(buf, "ping", 4), 0);
  close(fd);
}

START_TEST(test_faults_slow_callback_is_logged) {
  test_daemon d;
  char config[1024], buf[2];
  config_for(config, sizeof(config), "sleepy.so", "\"slow_callback_ms\": 100");
  ck_assert_int_eq(test_daemon_start(&d, config, test_backend(_i)), 0);
  int fd = test_connect(d.ports[0]);
  test_send_all(fd, "zz", 2);
  ck_assert(test_daemon_wait_log(&d, "plugin \"bad\": on_recv still running after", 5000));
  ck_assert_int_eq(test_recv_exact(fd, buf, 2), 0);
  ck_assert(test_daemon_wait_log(&d, "plugin \"bad\": on_recv took 2", 5000));
  ck_assert(test_daemon_wait_log(&d, "(slow_callback_ms 100)", 1000));
  echo_ok(d.ports[1]);
  test_daemon_command(&d, "plugins");
  ck_assert(test_daemon_wait_log(&d, ", 1 failures, 1 slow callbacks", 5000));
  close(fd);
  ck_assert_int_eq(test_daemon_signal_wait(&d, SIGTERM, 10000), 0);
  test_daemon_cleanup(&d);
}
END_TEST

START_TEST(test_faults_failing_plugin_is_quarantined) {
  test_daemon d;
  char config[1024], buf[1];
  size_t got;
  config_for(config, sizeof(config), "failing.so", "\"quarantine_after\": 3");
  ck_assert_int_eq(test_daemon_start(&d, config, test_backend(_i)), 0);
  int bystander = test_connect(d.ports[0]);
  test_send_all(bystander, "a", 1);
  ck_assert_int_eq(test_recv_exact(bystander, buf, 1), 0);
  int fd = test_connect(d.ports[0]);
  test_send_all(fd, "x", 1); /* failure 2 */
  ck_assert_int_eq(test_recv_exact(fd, buf, 1), 0);
  /* The third failure: quarantine closes every session of the plugin. */
  test_send_all(fd, "x", 1);
  ck_assert(test_daemon_wait_log(&d, "plugin \"bad\" quarantined after 3 failures (last: reported "
                                     "failure: could not handle the packet)",
                                 5000));
  test_recv_until_close(fd, &got);
  ck_assert_int_eq(test_recv_until_close(bystander, &got), 0);
  /* New sessions of the plugin are refused; the other plugin serves. */
  int late = test_connect(d.ports[0]);
  int rc = test_recv_until_close(late, &got);
  ck_assert(rc == 0 || rc == -ECONNRESET);
  echo_ok(d.ports[1]);
  test_daemon_command(&d, "plugins");
  ck_assert(test_daemon_wait_log(&d, ", QUARANTINED, 3 failures", 5000));
  /* A reload lifts it. */
  test_daemon_command(&d, "reload bad");
  ck_assert(test_daemon_wait_log(&d, "plugin \"bad\": quarantine lifted by the reload", 5000));
  int again = test_connect(d.ports[0]);
  test_send_all(again, "b", 1);
  ck_assert_int_eq(test_recv_exact(again, buf, 1), 0);
  close(again);
  close(late);
  close(fd);
  close(bystander);
  ck_assert_int_eq(test_daemon_signal_wait(&d, SIGTERM, 10000), 0);
  test_daemon_cleanup(&d);
}
END_TEST

START_TEST(test_faults_crash_writes_a_report) {
  test_daemon d;
  char config[1024];
  config_for(config, sizeof(config), "crashload.so", "\"slow_callback_ms\": 100");
  /* Under AddressSanitizer its own SIGSEGV handler wins unless told otherwise. */
  {
    const char *old = getenv("ASAN_OPTIONS");
    char opts[512];
    snprintf(opts, sizeof(opts), "%s%sallow_user_segv_handler=1", old ? old : "",
             old && *old ? ":" : "");
    setenv("ASAN_OPTIONS", opts, 1);
  }
  int status = test_daemon_run_to_exit(&d, config, test_backend(_i), NULL);
  ck_assert_int_eq(status, 128 + SIGSEGV);
  ck_assert_ptr_nonnull(strstr(d.log, "pierd: fatal signal 11 (SIGSEGV) at address 0x10; crash report:"));
  ck_assert_ptr_nonnull(strstr(d.log, "backtrace:\n"));
  ck_assert_ptr_nonnull(strstr(d.log, "plugins loaded:\nplugin bad: faulty 0.0.1, generation 1"));
  ck_assert_ptr_nonnull(strstr(d.log, "plugin echo: echo 1.0.0, generation 1"));
  test_daemon_cleanup(&d);
}
END_TEST

START_TEST(test_faults_older_abi_minor_still_loads) {
  test_daemon d;
  const char *config = "{\"plugins\": [{\"name\": \"old\", \"path\": \"" TP "/abi_minor0.so\"}],"
                       " \"listeners\": [{\"port\": 0, \"plugin\": \"old\"}]}";
  ck_assert_int_eq(test_daemon_run_to_exit(&d, config, test_backend(_i), "--check"), 0);
  ck_assert_ptr_nonnull(strstr(d.log, "is valid"));
  test_daemon_cleanup(&d);
}
END_TEST

int main(void) {
  Suite *s = suite_create("faults");
  TCase *tc = tcase_create("daemon");
  tcase_set_timeout(tc, 120);
  tcase_add_loop_test(tc, test_faults_slow_callback_is_logged, 0, TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_faults_failing_plugin_is_quarantined, 0, TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_faults_crash_writes_a_report, 0, TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_faults_older_abi_minor_still_loads, 0, TEST_NBACKENDS);
  suite_add_tcase(s, tc);
  return test_run(s);
}
