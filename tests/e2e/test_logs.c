/* Operating pierd, end to end through a real daemon: --version, status,
 * sessions and plugins as JSON (console and pierctl), the per-session log
 * lines, operator actions in the log, log_file and its reopen after a
 * rotation, JSON log lines, and a crash report that names the plugin's own
 * file with offsets addr2line resolves. Both backends. */
#include <cjson/cJSON.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "daemon.h"
#include "testlib.h"

#define TP PIER_BINARY_DIR "/tests/plugins"

static const char echo_config[] =
    "{\"admin_socket\": \"run/pierd.sock\", \"log_level\": \"%s\"%s,"
    " \"plugins\": [{\"name\": \"echo\", \"path\": \"@PLUGINS@/echo.so\"}],"
    " \"listeners\": [{\"port\": 0, \"plugin\": \"echo\"}]}";

static void start_echo(test_daemon *d, int i, const char *level, const char *extra) {
  char config[1024];
  snprintf(config, sizeof(config), echo_config, level, extra);
  ck_assert_int_eq(test_daemon_start(d, config, test_backend(i)), 0);
}

/* Runs `pierctl --socket S words...`; returns its exit status, stdout in out. */
static int pierctl(test_daemon *d, const char *w1, const char *w2, char *out, size_t cap) {
  char err[4096];
  const char *sock = test_daemon_admin(d, 5000);
  const char *args[] = {"--socket", sock, w1, w2, NULL};
  ck_assert_ptr_nonnull(sock);
  return test_daemon_pierctl(args, out, cap, err, sizeof(err), 10000);
}

static void echo_once(int fd) {
  char buf[4];
  test_send_all(fd, "ping", 4);
  ck_assert_int_eq(test_recv_exact(fd, buf, 4), 0);
}

START_TEST(test_logs_version) {
  test_daemon d;
  char out[256], err[256];
  const char *args[] = {"--version", NULL};
  char config[1024];
  snprintf(config, sizeof(config), echo_config, "info", "");
  ck_assert_int_eq(test_daemon_run_to_exit(&d, config, test_backend(_i), "--version"), 0);
  ck_assert_str_eq(d.log, "pierd " PIER_VERSION "\n");
  test_daemon_cleanup(&d);
  ck_assert_int_eq(test_daemon_pierctl(args, out, sizeof(out), err, sizeof(err), 10000), 0);
  ck_assert_str_eq(out, "pierctl " PIER_VERSION "\n");
  ck_assert_str_eq(err, "");
}
END_TEST

START_TEST(test_logs_status_json) {
  test_daemon d;
  static char out[65536];
  cJSON *j, *item;
  start_echo(&d, _i, "info", "");
  int fd = test_connect(d.ports[0]);
  echo_once(fd);

  ck_assert_int_eq(pierctl(&d, "status", "--json", out, sizeof(out)), 0);
  j = cJSON_Parse(out);
  ck_assert_msg(j != NULL, "not JSON: %s", out);
  ck_assert_str_eq(cJSON_GetObjectItem(j, "version")->valuestring, PIER_VERSION);
  ck_assert_str_eq(cJSON_GetObjectItem(j, "backend")->valuestring, test_backend(_i));
  ck_assert_int_eq(cJSON_GetObjectItem(j, "workers")->valueint, 1);
  ck_assert(cJSON_IsTrue(cJSON_GetObjectItem(j, "ready")));
  ck_assert(cJSON_IsFalse(cJSON_GetObjectItem(j, "draining")));
  item = cJSON_GetObjectItem(j, "sessions");
  ck_assert_int_eq(cJSON_GetObjectItem(item, "open")->valueint, 1);
  ck_assert_int_eq(cJSON_GetObjectItem(item, "accepted")->valueint, 1);
  ck_assert_int_eq(cJSON_GetObjectItem(item, "bytes_in")->valueint, 4);
  item = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "listeners"), 0);
  ck_assert_str_eq(cJSON_GetObjectItem(item, "address")->valuestring, "127.0.0.1");
  ck_assert_int_eq(cJSON_GetObjectItem(item, "port")->valueint, d.ports[0]);
  ck_assert_str_eq(cJSON_GetObjectItem(item, "transport")->valuestring, "tcp");
  ck_assert_str_eq(cJSON_GetObjectItem(item, "plugin")->valuestring, "echo");
  ck_assert_int_eq(cJSON_GetObjectItem(item, "sessions")->valueint, 1);
  item = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "plugins"), 0);
  ck_assert_str_eq(cJSON_GetObjectItem(item, "name")->valuestring, "echo");
  cJSON_Delete(j);

  ck_assert_int_eq(pierctl(&d, "plugins", "--json", out, sizeof(out)), 0);
  j = cJSON_Parse(out);
  ck_assert_msg(cJSON_GetArraySize(j) == 1, "%s", out);
  item = cJSON_GetArrayItem(j, 0);
  ck_assert_str_eq(cJSON_GetObjectItem(item, "name")->valuestring, "echo");
  ck_assert_str_eq(cJSON_GetObjectItem(item, "image")->valuestring, "echo");
  ck_assert_str_eq(cJSON_GetObjectItem(item, "version")->valuestring, "1.0.0");
  ck_assert_int_eq(cJSON_GetObjectItem(item, "generation")->valueint, 1);
  ck_assert_str_eq(cJSON_GetObjectItem(item, "threading")->valuestring, "session");
  ck_assert_ptr_nonnull(strstr(cJSON_GetObjectItem(item, "file")->valuestring, "/echo.so"));
  ck_assert(cJSON_IsFalse(cJSON_GetObjectItem(item, "quarantined")));
  ck_assert_int_eq(cJSON_GetObjectItem(item, "failures")->valueint, 0);
  ck_assert(cJSON_IsNull(cJSON_GetObjectItem(item, "last_failure")));
  cJSON_Delete(j);

  ck_assert_int_eq(pierctl(&d, "sessions", "--json", out, sizeof(out)), 0);
  j = cJSON_Parse(out);
  ck_assert_msg(cJSON_GetArraySize(j) == 1, "%s", out);
  item = cJSON_GetArrayItem(j, 0);
  ck_assert_int_eq(strlen(cJSON_GetObjectItem(item, "sid")->valuestring), 16);
  ck_assert_str_eq(cJSON_GetObjectItem(item, "plugin")->valuestring, "echo");
  ck_assert_int_eq(strncmp(cJSON_GetObjectItem(item, "peer")->valuestring, "127.0.0.1:", 10), 0);
  cJSON_Delete(j);

  /* The console answers the same way; a wrong argument gets its usage. */
  test_daemon_command(&d, "plugins --json");
  ck_assert(test_daemon_wait_log(&d, "[{\"name\":\"echo\",\"image\":\"echo\"", 5000));
  {
    char err[256];
    const char *args[] = {"--socket", test_daemon_admin(&d, 5000), "status", "--jsn", NULL};
    ck_assert_int_eq(test_daemon_pierctl(args, out, sizeof(out), err, sizeof(err), 10000), 1);
    ck_assert_str_eq(err, "usage: status [--json]\n");
  }
  close(fd);
  ck_assert_int_eq(test_daemon_quit(&d, 10000), 0);
  test_daemon_cleanup(&d);
}
END_TEST

/* The sid of the only session, from `sessions --json`. */
static void only_sid(test_daemon *d, char *sid, size_t cap) {
  char out[4096];
  cJSON *j;
  ck_assert_int_eq(pierctl(d, "sessions", "--json", out, sizeof(out)), 0);
  j = cJSON_Parse(out);
  ck_assert_int_eq(cJSON_GetArraySize(j), 1);
  snprintf(sid, cap, "%s", cJSON_GetObjectItem(cJSON_GetArrayItem(j, 0), "sid")->valuestring);
  cJSON_Delete(j);
}

START_TEST(test_logs_session_lines_at_debug) {
  test_daemon d;
  char sid[32], want[256];
  size_t got;
  start_echo(&d, _i, "debug", "");
  int fd = test_connect(d.ports[0]);
  echo_once(fd);
  only_sid(&d, sid, sizeof(sid));
  snprintf(want, sizeof(want), "session %s connected: listener 127.0.0.1:%u, plugin echo, peer 127.0.0.1:",
           sid, d.ports[0]);
  ck_assert(test_daemon_wait_log(&d, want, 5000));
  close(fd);
  snprintf(want, sizeof(want), "session %s disconnected: peer closed the connection after ", sid);
  ck_assert(test_daemon_wait_log(&d, want, 5000));
  ck_assert(test_daemon_wait_log(&d, "s (plugin echo, peer 127.0.0.1:", 1000));
  ck_assert_ptr_nonnull(strstr(d.log, " debug session "));

  /* Kicked: the operator's action and the session's end. */
  fd = test_connect(d.ports[0]);
  echo_once(fd);
  only_sid(&d, sid, sizeof(sid));
  snprintf(want, sizeof(want), "kick %s", sid);
  test_daemon_command(&d, want);
  snprintf(want, sizeof(want), "kick %s (console): done", sid);
  ck_assert(test_daemon_wait_log(&d, want, 5000));
  snprintf(want, sizeof(want), "session %s disconnected: kicked by an operator after ", sid);
  ck_assert(test_daemon_wait_log(&d, want, 5000));
  test_recv_until_close(fd, &got);
  close(fd);
  ck_assert_int_eq(test_daemon_quit(&d, 10000), 0);
  test_daemon_cleanup(&d);
}
END_TEST

START_TEST(test_logs_abnormal_close_at_info) {
  test_daemon d;
  size_t got;
  start_echo(&d, _i, "info", ", \"limits\": {\"idle_timeout_ms\": 200}");
  int fd = test_connect(d.ports[0]);
  echo_once(fd);
  ck_assert_int_eq(test_recv_until_close(fd, &got), 0);
  ck_assert(test_daemon_wait_log(&d, " info  session ", 5000));
  ck_assert(test_daemon_wait_log(&d, " disconnected: idle timeout after ", 5000));
  ck_assert(test_daemon_wait_log(&d, "s (plugin echo, peer 127.0.0.1:", 1000));
  /* A normal end is not logged at info, nor is a connect. */
  close(fd);
  fd = test_connect(d.ports[0]);
  echo_once(fd);
  close(fd);
  test_daemon_command(&d, "kick 1");
  ck_assert(test_daemon_wait_log(&d, "kick 0000000000000001 (console): no such session", 5000));
  ck_assert_ptr_null(strstr(d.log, "connected: listener"));
  ck_assert_ptr_null(strstr(d.log, "peer closed the connection"));
  ck_assert_int_eq(test_daemon_quit(&d, 10000), 0);
  test_daemon_cleanup(&d);
}
END_TEST

START_TEST(test_logs_operator_actions) {
  test_daemon d;
  char out[4096];
  start_echo(&d, _i, "info", "");
  ck_assert_int_eq(pierctl(&d, "kick", "zz", out, sizeof(out)), 1);
  ck_assert(test_daemon_wait_log(&d, "kick zz (pierctl): not a session id", 5000));
  ck_assert_int_eq(pierctl(&d, "kick", "ff", out, sizeof(out)), 1);
  ck_assert(test_daemon_wait_log(&d, "kick 00000000000000ff (pierctl): no such session", 5000));
  ck_assert_int_eq(pierctl(&d, "reload", "echo", out, sizeof(out)), 0);
  ck_assert(test_daemon_wait_log(&d, "reload echo (pierctl): reloaded echo: generation 2, version 1.0.0 (was 1.0.0)", 5000));
  test_daemon_command(&d, "reload nosuch");
  ck_assert(test_daemon_wait_log(&d, "reload nosuch (console): reload nosuch: no such plugin", 5000));
  kill(d.pid, SIGHUP);
  ck_assert(test_daemon_wait_log(&d, "SIGHUP: re-reading configuration ", 5000));
  ck_assert(test_daemon_wait_log(&d, "SIGHUP: configuration ", 5000));
  ck_assert(test_daemon_wait_log(&d, " re-read", 5000));
  /* The log's format and file need a restart. */
  {
    char config[1024];
    FILE *f = fopen(d.config, "w");
    ck_assert_ptr_nonnull(f);
    snprintf(config, sizeof(config), echo_config, "info",
             ", \"log_format\": \"json\", \"log_file\": \"x.log\"");
    fputs(config, f);
    fclose(f);
  }
  kill(d.pid, SIGHUP);
  ck_assert(test_daemon_wait_log(&d, "SIGHUP: log_file changed: needs a restart; not applied", 5000));
  ck_assert(test_daemon_wait_log(&d, "SIGHUP: log_format changed: needs a restart; not applied", 5000));
  /* Without a log_file, a reopen says there is nothing to reopen. */
  ck_assert_int_eq(pierctl(&d, "reopen-log", NULL, out, sizeof(out)), 1);
  ck_assert(test_daemon_wait_log(&d, "reopen-log (pierctl): no log_file configured; logging to "
                                     "stderr",
                                 5000));
  ck_assert_int_eq(test_daemon_quit(&d, 10000), 0);
  test_daemon_cleanup(&d);
}
END_TEST

static char *slurp(const char *path) {
  FILE *f = fopen(path, "r");
  static char buf[1 << 16];
  size_t n;
  ck_assert_ptr_nonnull(f);
  n = fread(buf, 1, sizeof(buf) - 1, f);
  buf[n] = '\0';
  fclose(f);
  return buf;
}

/* Points the test's tail at the (new) file at the log's path. */
static void tail_again(test_daemon *d, const char *path) {
  snprintf(d->tail, sizeof(d->tail), "%s", path);
  d->tail_off = 0;
}

/* With "user", the log file root opened is handed to the account, and a
 * rotation works as that account when it may write the directory; when it
 * may not, pierd says so at start. */
START_TEST(test_logs_file_reopened_as_the_account) {
  test_daemon d;
  char dir[] = "/tmp/pier-logdir-XXXXXX", config[1024], path[256], old[256], want[512];
  struct stat st;
  if (geteuid() != 0) {
    fprintf(stderr, "%s: skipped, needs root to drop privileges\n", __func__);
    return;
  }
  ck_assert_ptr_nonnull(mkdtemp(dir));
  snprintf(path, sizeof(path), "%s/pierd.log", dir);
  snprintf(old, sizeof(old), "%s/pierd.log.1", dir);

  /* A directory only root may write: the warning, and the file is nobody's. */
  ck_assert_int_eq(chmod(dir, 0755), 0);
  snprintf(config, sizeof(config),
           "{\"admin_socket\": \"run/pierd.sock\", \"user\": \"nobody\", \"log_file\": \"%s\","
           " \"plugins\": [{\"name\": \"echo\", \"path\": \"@PLUGINS@/echo.so\"}],"
           " \"listeners\": [{\"port\": 0, \"plugin\": \"echo\"}]}", path);
  ck_assert_int_eq(test_daemon_start_file(&d, config, test_backend(_i), path), 0);
  snprintf(want, sizeof(want), "log_file: %s is not writable by nobody: reopen-log after a "
                               "rename will fail (give the directory to nobody)", dir);
  ck_assert_msg(strstr(d.log, want), "log: %s", d.log);
  ck_assert_int_eq(stat(path, &st), 0);
  ck_assert_int_eq((int)st.st_uid, 65534);
  ck_assert_int_eq(test_daemon_quit(&d, 20000), 0);
  test_daemon_cleanup(&d);
  ck_assert_int_eq(unlink(path), 0);

  /* The directory given to nobody: no warning, and a rename + SIGUSR1
   * makes a new file, created by the account. */
  ck_assert_int_eq(chown(dir, 65534, 65534), 0);
  ck_assert_int_eq(test_daemon_start_file(&d, config, test_backend(_i), path), 0);
  ck_assert_msg(!strstr(d.log, "is not writable by nobody"), "log: %s", d.log);
  ck_assert_int_eq(rename(path, old), 0);
  tail_again(&d, path);
  kill(d.pid, SIGUSR1);
  ck_assert_msg(test_daemon_wait_log(&d, "reopen-log (SIGUSR1): reopened ", 5000), "log: %s",
                d.log);
  ck_assert_int_eq(stat(path, &st), 0);
  ck_assert_int_eq((int)st.st_uid, 65534);
  ck_assert_int_eq(test_daemon_quit(&d, 20000), 0);
  test_daemon_cleanup(&d);
  unlink(path);
  unlink(old);
  ck_assert_int_eq(rmdir(dir), 0);
}
END_TEST

START_TEST(test_logs_file_reopened_after_rename) {
  test_daemon d;
  char config[1024], path[200], old1[256], old2[256], out[4096];
  snprintf(config, sizeof(config), echo_config, "info", ", \"log_file\": \"pierd.log\"");
  ck_assert_int_eq(test_daemon_start_file(&d, config, test_backend(_i), "pierd.log"), 0);
  snprintf(path, sizeof(path), "%s/pierd.log", d.dir);
  snprintf(old1, sizeof(old1), "%s/pierd.log.1", d.dir);
  snprintf(old2, sizeof(old2), "%s/pierd.log.2", d.dir);
  /* stderr only says where the lines go. */
  ck_assert_ptr_nonnull(strstr(d.log, "pierd: logging to "));

  /* Rotation by rename, then SIGUSR1. */
  ck_assert_int_eq(rename(path, old1), 0);
  tail_again(&d, path);
  kill(d.pid, SIGUSR1);
  ck_assert(test_daemon_wait_log(&d, "reopen-log (SIGUSR1): reopened ", 5000));
  test_daemon_command(&d, "kick 2");
  ck_assert(test_daemon_wait_log(&d, "kick 0000000000000002 (console): no such session", 5000));
  ck_assert_ptr_nonnull(strstr(slurp(old1), "pierd ready"));
  ck_assert_ptr_null(strstr(slurp(old1), "reopen-log"));
  ck_assert_ptr_null(strstr(slurp(path), "pierd ready"));
  ck_assert_ptr_nonnull(strstr(slurp(path), "kick 0000000000000002 (console): no such session"));

  /* Again by the command, through pierctl. */
  ck_assert_int_eq(rename(path, old2), 0);
  tail_again(&d, path);
  ck_assert_int_eq(pierctl(&d, "reopen-log", NULL, out, sizeof(out)), 0);
  ck_assert_int_eq(strncmp(out, "reopened ", 9), 0);
  ck_assert(test_daemon_wait_log(&d, "reopen-log (pierctl): reopened ", 5000));
  ck_assert_ptr_nonnull(strstr(slurp(old2), "kick 0000000000000002"));
  ck_assert_ptr_null(strstr(slurp(path), "kick 0000000000000002"));

  /* A reopen that fails (a directory where the file was) keeps the old file. */
  ck_assert_int_eq(rename(path, old1), 0);
  ck_assert_int_eq(test_mkdir(path), 0);
  tail_again(&d, old1);
  d.tail_off = (long)strlen(slurp(old1));
  kill(d.pid, SIGUSR1);
  {
    char want[512];
    snprintf(want, sizeof(want), "reopen-log (SIGUSR1): cannot reopen %s: Is a directory; still "
                                 "writing to the old file", path);
    ck_assert(test_daemon_wait_log(&d, want, 5000));
  }
  test_daemon_command(&d, "kick 3");
  ck_assert(test_daemon_wait_log(&d, "kick 0000000000000003 (console): no such session", 5000));
  ck_assert_int_eq(rmdir(path), 0);
  ck_assert_int_eq(rename(old1, path), 0);
  ck_assert_int_eq(test_daemon_quit(&d, 10000), 0);
  ck_assert_ptr_nonnull(strstr(slurp(path), "pierd stopped"));
  test_daemon_cleanup(&d);
}
END_TEST

START_TEST(test_logs_json_lines_parse) {
  test_daemon d;
  int lines = 0, found = 0;
  start_echo(&d, _i, "debug", ", \"log_format\": \"json\"");
  int fd = test_connect(d.ports[0]);
  echo_once(fd);
  close(fd);
  char out[1024];
  /* A quote, a backslash and a control character, escaped in the line. */
  ck_assert_int_eq(pierctl(&d, "kick", "\"x\\\x01y", out, sizeof(out)), 1);
  ck_assert(test_daemon_wait_log(&d, "(pierctl): not a session id", 5000));
  ck_assert_int_eq(test_daemon_signal_wait(&d, SIGTERM, 10000), 0);
  for (char *line = d.log, *nl; *line; line = nl + 1) {
    cJSON *j, *msg;
    nl = strchr(line, '\n');
    ck_assert_ptr_nonnull(nl);
    *nl = '\0';
    j = cJSON_Parse(line);
    ck_assert_msg(j != NULL, "not JSON: %s", line);
    ck_assert(cJSON_IsString(cJSON_GetObjectItem(j, "ts")));
    ck_assert_int_eq(strlen(cJSON_GetObjectItem(j, "ts")->valuestring), 24);
    ck_assert(cJSON_IsString(cJSON_GetObjectItem(j, "level")));
    msg = cJSON_GetObjectItem(j, "msg");
    ck_assert(cJSON_IsString(msg));
    if (strcmp(msg->valuestring, "kick \"x\\\x01y (pierctl): not a session id") == 0)
      found++;
    if (strncmp(msg->valuestring, "session ", 8) == 0)
      ck_assert_str_eq(cJSON_GetObjectItem(j, "level")->valuestring, "debug");
    cJSON_Delete(j);
    lines++;
  }
  ck_assert_int_eq(found, 1);
  ck_assert_int_gt(lines, 5);
  test_daemon_cleanup(&d);
}
END_TEST

/* Runs `addr2line -f -e file addr`; its output in out. */
static void addr2line(const char *file, const char *addr, char *out, size_t cap) {
  int fds[2];
  size_t n = 0;
  ssize_t r;
  pid_t pid;
  ck_assert_int_eq(pipe(fds), 0);
  pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0) {
    dup2(fds[1], STDOUT_FILENO);
    execlp("addr2line", "addr2line", "-f", "-e", file, addr, (char *)NULL);
    _exit(127);
  }
  close(fds[1]);
  while (n + 1 < cap && (r = read(fds[0], out + n, cap - 1 - n)) > 0)
    n += (size_t)r;
  out[n] = '\0';
  close(fds[0]);
  ck_assert_int_eq(waitpid(pid, NULL, 0), pid);
}

START_TEST(test_logs_crash_report_names_plugin_file) {
  test_daemon d;
  char config[1024], want[1024], file[448], addr[32], out[1024];
  const char *line;
  snprintf(config, sizeof(config),
           "{\"plugins\": [{\"name\": \"bad\", \"path\": \"" TP "/crashload.so\"}],"
           " \"listeners\": [{\"port\": 0, \"plugin\": \"bad\"}]}");
  {
    /* Under AddressSanitizer its own SIGSEGV handler wins unless told otherwise. */
    const char *old = getenv("ASAN_OPTIONS");
    char opts[512];
    snprintf(opts, sizeof(opts), "%s%sallow_user_segv_handler=1", old ? old : "",
             old && *old ? ":" : "");
    setenv("ASAN_OPTIONS", opts, 1);
  }
  ck_assert_int_eq(test_daemon_run_to_exit(&d, config, test_backend(_i), NULL), 128 + SIGSEGV);
  ck_assert_ptr_nonnull(strstr(d.log, "plugin frames (the plugin's own file, address in it):\n"));
  /* The faulting frame: on_load, in the plugin's own file (not the copy). */
  snprintf(want, sizeof(want), " plugin bad: %s/crashload.so 0x", TP);
  line = strstr(d.log, want);
  ck_assert_msg(line != NULL, "%s", d.log);
  ck_assert_int_eq(sscanf(line, " plugin bad: %447s %31s", file, addr), 2);
  ck_assert_str_eq(file, TP "/crashload.so");
  addr[strcspn(addr, ";")] = '\0';
  snprintf(want, sizeof(want), "%s; resolve with: addr2line -f -e %s %s\n", addr, file, addr);
  ck_assert_ptr_nonnull(strstr(line, want));
  addr2line(file, addr, out, sizeof(out));
  ck_assert_msg(strncmp(out, "faulty_load\n", 12) == 0, "%s", out);
  ck_assert_msg(strstr(out, "tests/plugins/faulty.c:") != NULL, "%s", out);
  test_daemon_cleanup(&d);
}
END_TEST

int main(void) {
  Suite *s = suite_create("logs");
  TCase *tc = tcase_create("logs");
  tcase_set_timeout(tc, 120);
  tcase_add_loop_test(tc, test_logs_version, 0, 1);
  tcase_add_loop_test(tc, test_logs_status_json, 0, TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_logs_session_lines_at_debug, 0, TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_logs_abnormal_close_at_info, 0, TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_logs_operator_actions, 0, TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_logs_file_reopened_after_rename, 0, TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_logs_file_reopened_as_the_account, 0, TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_logs_json_lines_parse, 0, TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_logs_crash_report_names_plugin_file, 0, TEST_NBACKENDS);
  suite_add_tcase(s, tc);
  return test_run(s);
}
