/* Hot reload end to end, through a real pierd: reloads under streaming load
 * lose, duplicate or reorder nothing and disconnect nobody; chat rooms
 * survive; bad new files (truncated, wrong ABI, failing on_load) leave the
 * old version serving; the inotify watch reloads on an atomic rename and
 * never loads a half-written file; SIGHUP applies or refuses config changes.
 * Each case runs once per backend. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "daemon.h"
#include "testlib.h"

#define PLUG PIER_BINARY_DIR "/plugins"
#define TP PIER_BINARY_DIR "/tests/plugins"

static uint64_t ms_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static char *slurp(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  char *buf;
  ck_assert_msg(f != NULL, "open %s: %s", path, strerror(errno));
  fseek(f, 0, SEEK_END);
  *len = (size_t)ftell(f);
  fseek(f, 0, SEEK_SET);
  buf = malloc(*len);
  ck_assert_uint_eq(fread(buf, 1, *len, f), *len);
  fclose(f);
  return buf;
}

/* Writes the first `part` bytes of src to dst (all if part is 0). */
static void copy_file(const char *src, const char *dst, size_t part) {
  size_t len;
  char *buf = slurp(src, &len);
  int fd = open(dst, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  ck_assert_int_ge(fd, 0);
  ck_assert_int_eq(write(fd, buf, part ? part : len), (ssize_t)(part ? part : len));
  close(fd);
  free(buf);
}

/* A private directory with a copy of echo.so the tests may replace. */
typedef struct site {
  int workers;
  char dir[64];
  char so[512];
  char config[1024];
} site;

static void site_init(site *s, int watch) {
  s->workers = 2;
  snprintf(s->dir, sizeof(s->dir), "/tmp/pier-reload-XXXXXX");
  ck_assert_ptr_nonnull(mkdtemp(s->dir));
  snprintf(s->so, sizeof(s->so), "%s/echo.so", s->dir);
  copy_file(PLUG "/echo.so", s->so, 0);
  snprintf(s->config, sizeof(s->config),
           "{\"workers\": %d, \"plugins\": [{\"name\": \"echo\", \"path\": \"%s\", \"watch\": %s}],"
           " \"listeners\": [{\"port\": 0, \"plugin\": \"echo\"}]}",
           s->workers, s->so, watch ? "true" : "false");
}

/* Moves the site's echo.so into a directory with a 200-character name, so
 * that a message naming its path is long. */
static void site_long_path(site *s) {
  char sub[300];
  snprintf(sub, sizeof(sub), "%s/%0200d", s->dir, 0);
  ck_assert_int_eq(mkdir(sub, 0755), 0);
  snprintf(s->so, sizeof(s->so), "%s/echo.so", sub);
  copy_file(PLUG "/echo.so", s->so, 0);
  snprintf(s->config, sizeof(s->config),
           "{\"workers\": %d, \"plugins\": [{\"name\": \"echo\", \"path\": \"%s\"}],"
           " \"listeners\": [{\"port\": 0, \"plugin\": \"echo\"}]}",
           s->workers, s->so);
}

static void site_free(site *s) {
  char cmd[128];
  snprintf(cmd, sizeof(cmd), "rm -rf '%s'", s->dir);
  ck_assert_int_eq(system(cmd), 0);
}

static void echo_once(uint16_t port, int fd_or_neg) {
  int fd = fd_or_neg >= 0 ? fd_or_neg : test_connect(port);
  char buf[5];
  test_send_all(fd, "alive", 5);
  ck_assert_int_eq(test_recv_exact(fd, buf, 5), 0);
  ck_assert_int_eq(memcmp(buf, "alive", 5), 0);
  if (fd_or_neg < 0)
    close(fd);
}

/* ---- 200 sessions streaming through 20 reloads ---- */

#define STREAMS 200

START_TEST(test_reload_under_load_loses_nothing) {
  test_daemon d;
  site s;
  struct pollfd pfd[STREAMS];
  size_t sent[STREAMS] = {0}, got[STREAMS] = {0};
  char buf[4096];
  int reloads = 0;
  uint64_t start, stop_sending;
  char want[64];

  site_init(&s, 0);
  ck_assert_int_eq(test_daemon_start(&d, s.config, test_backend(_i)), 0);
  for (int i = 0; i < STREAMS; i++) {
    pfd[i].fd = test_connect(d.ports[0]);
    fcntl(pfd[i].fd, F_SETFL, O_NONBLOCK);
  }
  start = ms_now();
  stop_sending = start + 1500;
  for (;;) {
    uint64_t now = ms_now();
    int pending = 0;
    /* A reload every 50 ms while the streams run. */
    if (reloads < 20 && now >= start + 100 + (uint64_t)reloads * 50) {
      test_daemon_command(&d, "reload echo");
      reloads++;
    }
    for (int i = 0; i < STREAMS; i++) {
      pfd[i].events = POLLIN | (now < stop_sending ? POLLOUT : 0);
      pending += got[i] < sent[i] || now < stop_sending;
    }
    if (!pending && reloads == 20)
      break;
    ck_assert_msg(now < start + 60000, "streams stalled");
    ck_assert_int_ge(poll(pfd, STREAMS, 10), 0);
    for (int i = 0; i < STREAMS; i++) {
      if ((pfd[i].revents & POLLOUT) && now < stop_sending) {
        size_t n = 512;
        for (size_t k = 0; k < n; k++)
          buf[k] = (char)test_pattern((uint32_t)i + 7, sent[i] + k);
        ssize_t w = send(pfd[i].fd, buf, n, MSG_NOSIGNAL);
        if (w > 0)
          sent[i] += (size_t)w;
      }
      if (pfd[i].revents & (POLLIN | POLLHUP | POLLERR)) {
        ssize_t r = recv(pfd[i].fd, buf, sizeof(buf), 0);
        if (r == 0 || (r < 0 && errno != EAGAIN))
          ck_abort_msg("stream %d closed during reloads (%s)", i, r == 0 ? "EOF" : strerror(errno));
        for (ssize_t k = 0; k < r; k++)
          if ((uint8_t)buf[k] != test_pattern((uint32_t)i + 7, got[i] + (size_t)k)) {
            long delta = 0;
            for (long dd = -200000; dd < 200000 && !delta; dd++) {
              long base = (long)(got[i] + (size_t)k) + dd;
              int ok = base >= 0 && k + 32 <= r;
              for (int q = 0; ok && q < 32; q++)
                ok = (uint8_t)buf[k + q] == test_pattern((uint32_t)i + 7, (size_t)base + q);
              if (ok)
                delta = dd;
            }
            ck_abort_msg("stream %d: byte %zu lost, duplicated or reordered (delta %ld, r %zd k %zd sent %zu)", i,
                         got[i] + (size_t)k, delta, r, k, sent[i]);
          }
        if (r > 0)
          got[i] += (size_t)r;
        ck_assert_uint_le(got[i], sent[i]);
      }
    }
  }
  ck_assert(test_daemon_wait_log(&d, "reloaded echo: generation 21,", 20000));
  for (int i = 0; i < STREAMS; i++) {
    ck_assert_uint_gt(sent[i], 0);
    ck_assert_uint_eq(got[i], sent[i]);
  }
  test_daemon_command(&d, "status");
  ck_assert(test_daemon_wait_log(&d, "raw plugin echo: 200 sessions", 5000));
  ck_assert(test_daemon_wait_log(&d, "generation 21, session", 5000));
  snprintf(want, sizeof(want), "reload echo failed");
  ck_assert_ptr_null(strstr(d.log, want));
  for (int i = 0; i < STREAMS; i++)
    close(pfd[i].fd);
  ck_assert_int_eq(test_daemon_signal_wait(&d, SIGTERM, 20000), 0);
  test_daemon_cleanup(&d);
  site_free(&s);
}
END_TEST

/* ---- chat rooms survive a reload ---- */

static void chat_send(int fd, uint16_t id, const char *body) {
  char pkt[256];
  size_t n = strlen(body);
  pkt[0] = (char)((n + 4) & 0xff);
  pkt[1] = (char)((n + 4) >> 8);
  pkt[2] = (char)(id & 0xff);
  pkt[3] = (char)(id >> 8);
  memcpy(pkt + 4, body, n);
  test_send_all(fd, pkt, n + 4);
}

/* Reads packets until one with id arrives; returns its body (static). */
static const char *chat_expect(int fd, uint16_t id) {
  static char body[512];
  for (int tries = 0; tries < 20; tries++) {
    unsigned char hdr[4];
    ck_assert_int_eq(test_recv_exact(fd, hdr, 4), 0);
    size_t size = (size_t)(hdr[0] | hdr[1] << 8), bid = (size_t)(hdr[2] | hdr[3] << 8);
    ck_assert_uint_ge(size, 4);
    ck_assert_uint_lt(size - 4, sizeof(body));
    ck_assert_int_eq(test_recv_exact(fd, body, size - 4), 0);
    body[size - 4] = '\0';
    if (bid == id)
      return body;
  }
  ck_abort_msg("packet %u never came", id);
  return NULL;
}

START_TEST(test_reload_chat_keeps_rooms) {
  test_daemon d;
  const char *config =
      "{\"workers\": 2, \"plugins\": [{\"name\": \"chat\", \"path\": \"@PLUGINS@/chat.so\", "
      "\"threading\": \"serial\"}], \"listeners\": [{\"port\": 0, \"plugin\": \"chat\", "
      "\"framing\": \"u16_size_id\"}]}";
  ck_assert_int_eq(test_daemon_start(&d, config, test_backend(_i)), 0);
  int a = test_connect(d.ports[0]), b = test_connect(d.ports[0]);
  chat_send(a, 1, "red");
  ck_assert_ptr_nonnull(strstr(chat_expect(a, 102), "joined red"));
  chat_send(b, 1, "red");
  ck_assert_ptr_nonnull(strstr(chat_expect(b, 102), "joined red"));
  ck_assert_ptr_nonnull(strstr(chat_expect(a, 102), "joined red"));
  test_daemon_command(&d, "reload chat");
  ck_assert(test_daemon_wait_log(&d, "reloaded chat: generation 2,", 10000));
  /* Nobody re-joined: the rooms came through the state hand-off. */
  chat_send(a, 2, "still here?");
  ck_assert_str_eq(chat_expect(b, 101) + 8, "still here?");
  ck_assert_str_eq(chat_expect(a, 101) + 8, "still here?");
  close(a);
  close(b);
  ck_assert_int_eq(test_daemon_signal_wait(&d, SIGTERM, 10000), 0);
  test_daemon_cleanup(&d);
}
END_TEST

/* Runs build/pierctl --socket <daemon dir>/run/pierd.sock ARG...; returns
 * its exit status, with what it printed on stderr in err. */
static int pierctl(test_daemon *d, const char *cmd, const char *arg, char *err, size_t errlen) {
  char sock[256];
  int pipefd[2], status;
  ssize_t n;
  size_t used = 0;
  pid_t pid;
  snprintf(sock, sizeof(sock), "%s/run/pierd.sock", d->dir);
  ck_assert_int_eq(pipe(pipefd), 0);
  pid = fork();
  if (pid == 0) {
    dup2(pipefd[1], STDERR_FILENO);
    close(pipefd[0]);
    execl(PIER_BINARY_DIR "/pierctl", "pierctl", "--socket", sock, cmd, arg, (char *)NULL);
    _exit(127);
  }
  close(pipefd[1]);
  while (used + 1 < errlen && (n = read(pipefd[0], err + used, errlen - 1 - used)) > 0)
    used += (size_t)n;
  err[used] = '\0';
  close(pipefd[0]);
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* ---- bad new versions leave the old one serving ---- */

START_TEST(test_reload_failures_keep_old_version) {
  test_daemon d;
  site s;
  size_t len;
  free(slurp(PLUG "/echo.so", &len));
  site_init(&s, 0);
  site_long_path(&s);
  ck_assert_int_eq(test_daemon_start(&d, s.config, test_backend(_i)), 0);
  int fd = test_connect(d.ports[0]);
  echo_once(d.ports[0], fd);

  copy_file(PLUG "/echo.so", s.so, len / 2); /* truncated */
  test_daemon_command(&d, "reload echo");
  ck_assert(test_daemon_wait_log(&d, "reload echo failed at load: plugin \"echo\" (", 10000));
  ck_assert(test_daemon_wait_log(&d, "cannot load: ", 1000));
  ck_assert(test_daemon_wait_log(&d, "; generation 1 keeps serving", 1000));
  echo_once(d.ports[0], fd);

  copy_file(TP "/abi_major2.so", s.so, 0);
  test_daemon_command(&d, "reload echo");
  ck_assert(test_daemon_wait_log(&d, "built for ABI 2.3, host ABI is 1.3: major versions differ", 10000));
  echo_once(d.ports[0], fd);
  {
    /* `plugins` keeps the whole reason, the path and what keeps serving. */
    char want[1024];
    snprintf(want, sizeof(want),
             "plugin echo: last reload failed: reload echo failed at load: plugin \"echo\" (%s): "
             "built for ABI 2.3, host ABI is 1.3: major versions differ; rebuild the plugin "
             "against this host's include/pier; generation 1 keeps serving",
             s.so);
    ck_assert_uint_gt(strlen(want), 300);
    test_daemon_command(&d, "plugins");
    ck_assert_msg(test_daemon_wait_log(&d, want, 10000), "no line: %s", want);
  }

  copy_file(TP "/failload.so", s.so, 0); /* another plugin's file */
  test_daemon_command(&d, "reload echo");
  ck_assert(test_daemon_wait_log(&d, "echo.so: its descriptor names plugin \"failload\", not "
                                     "\"echo\"; generation 1 keeps serving", 10000));
  echo_once(d.ports[0], fd);

  copy_file(TP "/failload_echo.so", s.so, 0);
  {
    char err[2048];
    /* Through the admin socket: pierctl exits 1 and says why. The failed
     * version used generation 2; the restored one gets 3 (never reused). */
    ck_assert_int_eq(pierctl(&d, "reload", "echo", err, sizeof(err)), 1);
    ck_assert_msg(strstr(err, "reload echo failed at on_load: the new version returned -22 "
                              "(Invalid argument); echo (version 1.0.0) restored as generation 3"),
                  "pierctl said: %s", err);
  }
  echo_once(d.ports[0], fd);
  echo_once(d.ports[0], -1);
  test_daemon_command(&d, "plugins");
  ck_assert(test_daemon_wait_log(&d, "plugin echo: last reload failed: reload echo failed at "
                                     "on_load:", 10000));

  copy_file(PLUG "/echo.so", s.so, 0);
  test_daemon_command(&d, "reload echo");
  ck_assert(test_daemon_wait_log(&d, "reloaded echo: generation 4, version 1.0.0", 10000));
  echo_once(d.ports[0], fd);
  test_daemon_command(&d, "reload nosuch");
  ck_assert(test_daemon_wait_log(&d, "error: reload nosuch: no such plugin", 10000));
  close(fd);
  ck_assert_int_eq(test_daemon_signal_wait(&d, SIGTERM, 10000), 0);
  test_daemon_cleanup(&d);
  site_free(&s);
}
END_TEST

/* ---- the watch trigger ---- */

START_TEST(test_reload_watch_atomic_rename_and_half_written_file) {
  test_daemon d;
  site s;
  char tmp[160];
  size_t len;
  char *image = slurp(PLUG "/echo.so", &len);

  site_init(&s, 1);
  ck_assert_int_eq(test_daemon_start(&d, s.config, test_backend(_i)), 0);
  ck_assert(test_daemon_wait_log(&d, "watch: plugin \"echo\" reloads when", 5000));
  int fd = test_connect(d.ports[0]);

  /* The atomic way: write beside it, then rename over it. */
  snprintf(tmp, sizeof(tmp), "%s/.echo.so.new", s.dir);
  copy_file(PLUG "/echo.so", tmp, 0);
  ck_assert_int_eq(rename(tmp, s.so), 0);
  ck_assert(test_daemon_wait_log(&d, "watch: reloaded echo: generation 2,", 10000));
  echo_once(d.ports[0], fd);

  /* Half a file, still open: nothing loads. */
  int out = open(s.so, O_WRONLY | O_TRUNC);
  ck_assert_int_ge(out, 0);
  ck_assert_int_eq(write(out, image, len / 2), (ssize_t)(len / 2));
  usleep(700000);
  ck_assert_ptr_null(strstr(d.log, "generation 3"));
  ck_assert_ptr_null(strstr(d.log, "reload echo failed"));
  echo_once(d.ports[0], fd);
  /* Finished and closed: one reload. */
  ck_assert_int_eq(write(out, image + len / 2, len - len / 2), (ssize_t)(len - len / 2));
  close(out);
  ck_assert(test_daemon_wait_log(&d, "watch: reloaded echo: generation 3,", 10000));
  usleep(400000);
  test_daemon_wait_log(&d, "generation 4", 100);
  ck_assert_ptr_null(strstr(d.log, "generation 4"));
  echo_once(d.ports[0], fd);
  close(fd);
  free(image);
  ck_assert_int_eq(test_daemon_signal_wait(&d, SIGTERM, 10000), 0);
  test_daemon_cleanup(&d);
  site_free(&s);
}
END_TEST

/* ---- SIGHUP ---- */

static void rewrite(const char *path, const char *text) {
  FILE *f = fopen(path, "w");
  ck_assert_ptr_nonnull(f);
  fputs(text, f);
  fclose(f);
}

START_TEST(test_reload_sighup_applies_or_refuses) {
  test_daemon d;
  site s;
  char text[1200];
  site_init(&s, 0);
  ck_assert_int_eq(test_daemon_start(&d, s.config, test_backend(_i)), 0);
  int fd = test_connect(d.ports[0]);

  /* Invalid: nothing changes. */
  rewrite(d.config, "{\"workers\": \"two\"}");
  kill(d.pid, SIGHUP);
  ck_assert(test_daemon_wait_log(&d, "; keeping the running configuration", 10000));
  echo_once(d.ports[0], fd);

  /* Valid: log_level applies live; workers, drain_timeout_ms, user and
   * cluster need a restart; a new plugin file reloads. */
  snprintf(text, sizeof(text),
           "{\"workers\": 1, \"log_level\": \"debug\", \"drain_timeout_ms\": 30000, "
           "\"user\": \"nobody\", \"cluster\": {\"nats\": [\"nats://127.0.0.1:4222\"], "
           "\"node\": \"a\"}, \"plugins\": [{\"name\": \"echo\", "
           "\"path\": \"%s\"}], \"listeners\": [{\"port\": 0, \"plugin\": \"echo\"}]}",
           s.so);
  rewrite(d.config, text);
  usleep(20000);
  copy_file(PLUG "/echo.so", s.so, 0);
  kill(d.pid, SIGHUP);
  ck_assert(test_daemon_wait_log(&d, "SIGHUP: workers changed: needs a restart; not applied", 10000));
  ck_assert(test_daemon_wait_log(&d, "SIGHUP: drain_timeout_ms changed: needs a restart; not applied",
                                 10000));
  ck_assert(test_daemon_wait_log(&d, "SIGHUP: user or group changed: needs a restart; not applied",
                                 10000));
  ck_assert(test_daemon_wait_log(&d, "SIGHUP: cluster changed: needs a restart; not applied",
                                 10000));
  ck_assert(test_daemon_wait_log(&d, "SIGHUP: log_level is now debug", 10000));
  ck_assert(test_daemon_wait_log(&d, "SIGHUP: reloaded echo: generation 2,", 10000));
  echo_once(d.ports[0], fd);
  close(fd);
  ck_assert_int_eq(test_daemon_signal_wait(&d, SIGTERM, 10000), 0);
  test_daemon_cleanup(&d);
  site_free(&s);
}
END_TEST

int main(void) {
  Suite *s = suite_create("reload");
  TCase *tc = tcase_create("daemon");
  tcase_set_timeout(tc, 180);
  tcase_add_loop_test(tc, test_reload_under_load_loses_nothing, 0, TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_reload_chat_keeps_rooms, 0, TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_reload_failures_keep_old_version, 0, TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_reload_watch_atomic_rename_and_half_written_file, 0,
                      TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_reload_sighup_applies_or_refuses, 0, TEST_NBACKENDS);
  suite_add_tcase(s, tc);
  return test_run(s);
}
