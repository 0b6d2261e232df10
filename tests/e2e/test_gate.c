/* The event gate and the reload state machine through a real pierd and the
 * probe test plugin: floods during a slow reload and into a slow serial
 * plugin stay within a small memory bound (reading pauses, nothing is lost
 * or reordered, a normal client is still served); held events run on their
 * session's worker; generations are never reused, so nothing a failed
 * version queued runs; a rejected config is not kept; timers cancelled in
 * on_load never fire; post() and send_packet() refuse what they cannot take.
 * Each case runs once per backend. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "daemon.h"
#include "testlib.h"

#define TP PIER_BINARY_DIR "/tests/plugins"

static uint64_t ms_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Waits until text appears n times in the daemon's log. */
static int wait_log_count(test_daemon *d, const char *text, int n, int timeout_ms) {
  uint64_t end = ms_now() + (uint64_t)timeout_ms;
  do {
    if (test_count(d->log, text) >= n)
      return 1;
    test_daemon_wait_log(d, "\001never", 20);
  } while (ms_now() < end);
  return test_count(d->log, text) >= n;
}

static const char *probe_config(char *buf, size_t len, int workers, const char *threading,
                                const char *path, const test_rec *r, const char *opts) {
  snprintf(buf, len,
           "{\"workers\": %d, \"plugins\": [{\"name\": \"probe\", \"path\": \"%s\", "
           "\"threading\": \"%s\", \"config\": {\"out\": \"%s\"%s}}], "
           "\"listeners\": [{\"port\": 0, \"plugin\": \"probe\"}]}",
           workers, path, threading, r->path, opts);
  return buf;
}

static void echo_check(uint16_t port, const char *msg) {
  int fd = test_connect(port);
  char buf[64] = {0};
  size_t n = strlen(msg);
  test_send_all(fd, msg, n);
  ck_assert_int_eq(test_recv_exact(fd, buf, n), 0);
  ck_assert_str_eq(buf, msg);
  close(fd);
}

/* The daemon's resident set, in KiB. */
static long rss_kib(pid_t pid) {
  char path[64], line[256];
  long kib = -1;
  FILE *f;
  snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
  f = fopen(path, "r");
  if (!f)
    return -1;
  while (fgets(line, sizeof(line), f))
    if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
      break;
  fclose(f);
  return kib;
}

/* ASan keeps freed memory in a quarantine (256 MiB by default), which would
 * be counted as the daemon's: keep it small so RSS measures pier. */
static void small_asan_quarantine(void) {
  const char *o = getenv("ASAN_OPTIONS");
  char buf[512];
  snprintf(buf, sizeof(buf), "%s%squarantine_size_mb=8", o ? o : "", o && *o ? ":" : "");
  setenv("ASAN_OPTIONS", buf, 1);
}

/* ---- flooding clients: a numbered byte stream out, the echo checked back ---- */

typedef struct flooder {
  uint16_t port;
  uint32_t seed;
  int fd;
  _Atomic int stop;
  size_t sent, got;
  long bad_at; /* first mismatching offset, -1 if none */
  int closed;
  pthread_t th;
} flooder;

static void *flood_main(void *arg) {
  flooder *f = arg;
  static _Thread_local uint8_t out[16384], in[65536];
  uint64_t stop_at = 0;

  for (;;) {
    int sending = !atomic_load(&f->stop);
    struct pollfd pfd = {f->fd, (short)(POLLIN | (sending ? POLLOUT : 0)), 0};
    if (!sending) {
      if (!stop_at)
        stop_at = ms_now();
      if (f->got == f->sent || ms_now() - stop_at > 30000)
        break;
    }
    if (poll(&pfd, 1, 100) < 0)
      break;
    if (pfd.revents & (POLLIN | POLLHUP | POLLERR)) {
      ssize_t n = recv(f->fd, in, sizeof(in), MSG_DONTWAIT);
      if (n == 0 || (n < 0 && errno != EAGAIN)) {
        f->closed = 1;
        break;
      }
      for (ssize_t i = 0; i < n; i++)
        if (f->bad_at < 0 && in[i] != test_pattern(f->seed, f->got + (size_t)i))
          f->bad_at = (long)(f->got + (size_t)i);
      if (n > 0)
        f->got += (size_t)n;
    }
    if (sending && (pfd.revents & POLLOUT)) {
      ssize_t n;
      for (size_t i = 0; i < sizeof(out); i++)
        out[i] = test_pattern(f->seed, f->sent + i);
      n = send(f->fd, out, sizeof(out), MSG_DONTWAIT | MSG_NOSIGNAL);
      if (n > 0)
        f->sent += (size_t)n;
    }
  }
  return NULL;
}

static void flood_start(flooder *f, uint16_t port, uint32_t seed) {
  memset(f, 0, sizeof(*f));
  f->port = port;
  f->seed = seed;
  f->bad_at = -1;
  f->fd = test_connect(port);
  ck_assert_int_eq(pthread_create(&f->th, NULL, flood_main, f), 0);
}

/* Stops sending, waits for every echo, and checks the stream came back
 * whole and in order. */
static size_t flood_finish(flooder *f, test_daemon *d) {
  atomic_store(&f->stop, 1);
  pthread_join(f->th, NULL);
  close(f->fd);
  test_daemon_wait_log(d, "\001never", 50);
  ck_assert_msg(!f->closed, "flooder %u: the daemon closed the connection; its log: %s",
                f->seed, d->log_len > 3000 ? d->log + d->log_len - 3000 : d->log);
  ck_assert_msg(f->bad_at < 0, "flooder %u: byte %ld came back wrong", f->seed, f->bad_at);
  ck_assert_msg(f->got == f->sent, "flooder %u: sent %zu, got %zu back", f->seed, f->sent,
                f->got);
  return f->sent;
}

/* Samples the daemon's RSS until stop_text is in its log or timeout_ms pass;
 * returns the largest sample. */
static long sample_rss_until(test_daemon *d, const char *stop_text, int timeout_ms) {
  uint64_t end = ms_now() + (uint64_t)timeout_ms;
  long max = 0;
  while (ms_now() < end) {
    long r = rss_kib(d->pid);
    if (r > max)
      max = r;
    if (stop_text && test_daemon_wait_log(d, stop_text, 100))
      break;
    if (!stop_text)
      usleep(100000);
  }
  return max;
}

/* ---- bounds ---- */

START_TEST(test_gate_flood_during_a_slow_reload_is_bounded) {
  test_daemon d;
  test_rec r;
  char cfg[1024];
  flooder f[2];
  long base, peak;
  size_t total = 0;

  test_rec_init(&r);
  small_asan_quarantine();
  ck_assert_int_eq(test_daemon_start(&d, probe_config(cfg, sizeof(cfg), 2, "session",
                                                      TP "/probe.so", &r, ", \"reload_ms\": 6000"),
                                     test_backend(_i)),
                   0);
  echo_check(d.ports[0], "warm");
  base = rss_kib(d.pid);
  for (int i = 0; i < 2; i++)
    flood_start(&f[i], d.ports[0], 100 + (uint32_t)i);
  usleep(300000);
  test_daemon_command(&d, "reload probe"); /* on_load takes 6 s */
  usleep(200000);
  {
    /* A normal client arriving mid-reload is served once it is done. */
    int fd = test_connect(d.ports[0]);
    char buf[8] = {0};
    test_send_all(fd, "hello", 5);
    peak = sample_rss_until(&d, "reloaded probe: generation 2,", 15000);
    ck_assert_int_eq(test_recv_exact(fd, buf, 5), 0);
    ck_assert_str_eq(buf, "hello");
    close(fd);
  }
  ck_assert(test_daemon_wait_log(&d, "reloaded probe: generation 2,", 1000));
  usleep(300000);
  for (int i = 0; i < 2; i++)
    total += flood_finish(&f[i], &d);
  fprintf(stderr, "%s: RSS %ld KiB before, peak %ld KiB during the reload; %zu bytes echoed\n",
          test_backend(_i), base, peak, total);
  ck_assert_msg(total > (1u << 20), "the flood sent only %zu bytes", total);
  ck_assert_msg(peak - base < 128 * 1024, "RSS grew from %ld to %ld KiB", base, peak);
  ck_assert_int_eq(test_daemon_signal_wait(&d, SIGTERM, 10000), 0);
  test_daemon_cleanup(&d);
  test_rec_free(&r);
}
END_TEST

START_TEST(test_gate_flood_into_a_slow_serial_plugin_is_bounded) {
  test_daemon d;
  test_rec r;
  char cfg[1024];
  flooder f[6];
  long base, peak;
  size_t total = 0;
  uint64_t t0;

  test_rec_init(&r);
  small_asan_quarantine();
  ck_assert_int_eq(test_daemon_start(&d, probe_config(cfg, sizeof(cfg), 2, "serial",
                                                      TP "/probe.so", &r, ", \"recv_us\": 100"),
                                     test_backend(_i)),
                   0);
  echo_check(d.ports[0], "warm");
  base = rss_kib(d.pid);
  for (int i = 0; i < 6; i++)
    flood_start(&f[i], d.ports[0], 200 + (uint32_t)i);
  peak = sample_rss_until(&d, NULL, 1500);
  t0 = ms_now();
  echo_check(d.ports[0], "still served"); /* behind at most every flooder's backlog */
  fprintf(stderr, "%s: a normal echo took %llu ms during the flood\n", test_backend(_i),
          (unsigned long long)(ms_now() - t0));
  {
    long p = sample_rss_until(&d, NULL, 1500);
    if (p > peak)
      peak = p;
  }
  for (int i = 0; i < 6; i++)
    total += flood_finish(&f[i], &d);
  fprintf(stderr, "%s: RSS %ld KiB before, peak %ld KiB during the flood; %zu bytes echoed\n",
          test_backend(_i), base, peak, total);
  ck_assert_msg(total > (1u << 20), "the flood sent only %zu bytes", total);
  ck_assert_msg(peak - base < 128 * 1024, "RSS grew from %ld to %ld KiB", base, peak);
  /* Nothing is left to drain for minutes: the daemon stops at once. */
  ck_assert_int_eq(test_daemon_signal_wait(&d, SIGTERM, 10000), 0);
  test_daemon_cleanup(&d);
  test_rec_free(&r);
}
END_TEST

/* ---- held events keep their session's worker ---- */

START_TEST(test_gate_held_events_run_on_the_sessions_worker) {
  test_daemon d;
  test_rec r;
  char cfg[1024], buf[4];
  int fd[8];
  const char *text, *p;

  test_rec_init(&r);
  ck_assert_int_eq(test_daemon_start(&d, probe_config(cfg, sizeof(cfg), 2, "session",
                                                      TP "/probe.so", &r,
                                                      ", \"threads\": 1, \"reload_ms\": 400"),
                                     test_backend(_i)),
                   0);
  for (int i = 0; i < 8; i++) {
    fd[i] = test_connect(d.ports[0]);
    test_send_all(fd[i], "a", 1);
    ck_assert_int_eq(test_recv_exact(fd[i], buf, 1), 0);
  }
  test_daemon_command(&d, "reload probe");
  ck_assert(test_rec_wait(&r, "load gen=2", 1, 5000)); /* the new on_load is running */
  for (int i = 0; i < 8; i++)
    test_send_all(fd[i], "b", 1); /* held until the reload is done */
  ck_assert(test_daemon_wait_log(&d, "reloaded probe: generation 2,", 10000));
  for (int i = 0; i < 8; i++) {
    ck_assert_int_eq(test_recv_exact(fd[i], buf, 1), 0);
    ck_assert_int_eq(buf[0], 'b');
    close(fd[i]);
  }
  ck_assert_msg(strstr(d.log, "paused") && strstr(d.log, ", 8 events held"),
                "want 8 events held in: %s", d.log);
  /* Every callback of one session ran on one thread, never the main one. */
  text = test_rec_read(&r);
  ck_assert_int_eq(test_count(text, "recv "), 16);
  for (p = text; (p = strstr(p, "recv ")); p++) {
    char sid[17], other[64];
    long tid;
    ck_assert_int_eq(sscanf(p, "recv %16s %ld", sid, &tid), 2);
    ck_assert_msg(tid != (long)d.pid, "session %s: a callback ran on the main thread", sid);
    for (const char *q = text; (q = strstr(q, "recv ")); q++) {
      long t2;
      if (sscanf(q, "recv %16s %ld", other, &t2) == 2 && strcmp(other, sid) == 0)
        ck_assert_msg(t2 == tid, "session %s ran on threads %ld and %ld", sid, tid, t2);
    }
  }
  ck_assert_int_eq(test_daemon_signal_wait(&d, SIGTERM, 10000), 0);
  test_daemon_cleanup(&d);
  test_rec_free(&r);
}
END_TEST

/* ---- generations and rollback ---- */

START_TEST(test_gate_failed_version_never_runs) {
  test_daemon d;
  test_rec r;
  char cfg[1024], dir[64], so[128];
  const char *text;

  test_rec_init(&r);
  snprintf(dir, sizeof(dir), "/tmp/pier-gate-XXXXXX");
  ck_assert_ptr_nonnull(mkdtemp(dir));
  snprintf(so, sizeof(so), "%s/probe.so", dir);
  test_copy_file(TP "/probe.so", so);
  ck_assert_int_eq(
      test_daemon_start(&d, probe_config(cfg, sizeof(cfg), 2, "session", so, &r, ""),
                        test_backend(_i)),
      0);
  echo_check(d.ports[0], "one");
  /* A version that starts a timer and posts a job, then fails on_load. */
  test_copy_file(TP "/probe_fail.so", so);
  test_daemon_command(&d, "reload probe");
  ck_assert(test_daemon_wait_log(&d,
                                 "reload probe failed at on_load: the new version returned -22 "
                                 "(Invalid argument); probe (version 1.0.0) restored as "
                                 "generation 3",
                                 10000));
  echo_check(d.ports[0], "two");
  /* A good version at once: it must not inherit what the failed one queued. */
  test_copy_file(TP "/probe.so", so);
  test_daemon_command(&d, "reload probe");
  ck_assert(test_daemon_wait_log(&d, "reloaded probe: generation 4,", 10000));
  usleep(500000); /* past the failed version's 200 ms timer */
  echo_check(d.ports[0], "three");
  text = test_rec_read(&r);
  ck_assert_msg(!strstr(text, "failed version's"), "probe recorded: %s", text);
  for (int g = 1; g <= 4; g++) {
    char want[32];
    snprintf(want, sizeof(want), "load gen=%d ", g);
    ck_assert_msg(test_count(text, want) == 1, "want one \"%s\" in: %s", want, text);
  }
  ck_assert_int_eq(test_daemon_signal_wait(&d, SIGTERM, 10000), 0);
  test_daemon_cleanup(&d);
  test_rec_free(&r);
  snprintf(cfg, sizeof(cfg), "rm -rf '%s'", dir);
  ck_assert_int_eq(system(cfg), 0);
}
END_TEST

START_TEST(test_gate_rejected_config_is_not_kept) {
  test_daemon d;
  test_rec r;
  char cfg[1024], want[256];
  FILE *f;

  test_rec_init(&r);
  ck_assert_int_eq(test_daemon_start(&d, probe_config(cfg, sizeof(cfg), 1, "session",
                                                      TP "/probe.so", &r, ""),
                                     test_backend(_i)),
                   0);
  /* The operator adds a setting the plugin refuses. */
  f = fopen(d.config, "w");
  ck_assert_ptr_nonnull(f);
  fputs(probe_config(cfg, sizeof(cfg), 1, "session", TP "/probe.so", &r, ", \"refuse\": 1"), f);
  fclose(f);
  kill(d.pid, SIGHUP);
  ck_assert(test_daemon_wait_log(&d, "SIGHUP: reload probe failed at on_load: the new version "
                                     "returned -22",
                                 10000));
  /* The restored version got its own config back, not the rejected one. */
  snprintf(want, sizeof(want), "load gen=3 config={\"out\":\"%s\"}\n", r.path);
  ck_assert_msg(test_rec_wait(&r, want, 1, 5000), "probe recorded: %s", test_rec_read(&r));
  echo_check(d.ports[0], "still here");
  test_daemon_command(&d, "plugins");
  ck_assert(test_daemon_wait_log(&d, "plugin probe: last reload failed: reload probe failed at "
                                     "on_load",
                                 5000));
  /* The file still differs from what runs: the next SIGHUP tries again. */
  kill(d.pid, SIGHUP);
  ck_assert(wait_log_count(&d, "SIGHUP: reload probe failed at on_load", 2, 10000));
  snprintf(want, sizeof(want), "load gen=5 config={\"out\":\"%s\"}\n", r.path);
  ck_assert_msg(test_rec_wait(&r, want, 1, 5000), "probe recorded: %s", test_rec_read(&r));
  ck_assert_int_eq(test_daemon_signal_wait(&d, SIGTERM, 10000), 0);
  test_daemon_cleanup(&d);
  test_rec_free(&r);
}
END_TEST

START_TEST(test_gate_held_events_pass_the_watchdog) {
  test_daemon d;
  test_rec r;
  char cfg[1536], buf[4];
  int fd;

  test_rec_init(&r);
  snprintf(cfg, sizeof(cfg),
           "{\"workers\": 2, \"limits\": {\"slow_callback_ms\": 50}, \"plugins\": [{\"name\": "
           "\"probe\", \"path\": \"" TP "/probe.so\", \"config\": {\"out\": \"%s\", "
           "\"slow_s_ms\": 120, \"reload_ms\": 300}}], \"listeners\": [{\"port\": 0, "
           "\"plugin\": \"probe\"}]}",
           r.path);
  ck_assert_int_eq(test_daemon_start(&d, cfg, test_backend(_i)), 0);
  fd = test_connect(d.ports[0]);
  test_daemon_command(&d, "reload probe");
  ck_assert(test_rec_wait(&r, "load gen=2", 1, 5000));
  test_send_all(fd, "s", 1); /* held, then slow in the new version */
  ck_assert(test_daemon_wait_log(&d, "reloaded probe: generation 2,", 10000));
  ck_assert_int_eq(test_recv_exact(fd, buf, 1), 0);
  ck_assert(test_daemon_wait_log(&d, "plugin \"probe\": on_recv took ", 5000));
  test_daemon_command(&d, "plugins");
  ck_assert(test_daemon_wait_log(&d, ", 1 failures, 1 slow callbacks", 5000));
  close(fd);
  ck_assert_int_eq(test_daemon_signal_wait(&d, SIGTERM, 10000), 0);
  test_daemon_cleanup(&d);
  test_rec_free(&r);
}
END_TEST

START_TEST(test_gate_rollback_that_fails_quarantines) {
  test_daemon d;
  test_rec r;
  char cfg[1024], dir[64], so[128], buf[4];
  int fd;
  size_t got;

  test_rec_init(&r);
  snprintf(dir, sizeof(dir), "/tmp/pier-gate-XXXXXX");
  ck_assert_ptr_nonnull(mkdtemp(dir));
  snprintf(so, sizeof(so), "%s/probe.so", dir);
  test_copy_file(TP "/probe.so", so);
  ck_assert_int_eq(test_daemon_start(&d, probe_config(cfg, sizeof(cfg), 1, "session", so, &r,
                                                      ", \"refuse_gen\": 3"),
                                     test_backend(_i)),
                   0);
  fd = test_connect(d.ports[0]);
  test_send_all(fd, "k", 1);
  ck_assert_int_eq(test_recv_exact(fd, buf, 1), 0);
  test_copy_file(TP "/probe_fail.so", so); /* generation 2 fails; the restored 3 fails too */
  test_daemon_command(&d, "reload probe");
  ck_assert(test_daemon_wait_log(&d, "restored as generation 3, but its own on_load failed too: "
                                     "quarantined",
                                 10000));
  ck_assert(test_daemon_wait_log(&d, "plugin \"probe\" quarantined after ", 5000));
  /* Its session is closed; a reload of a good file brings it back. */
  ck_assert_int_eq(test_recv_until_close(fd, &got), 0);
  close(fd);
  test_copy_file(TP "/probe.so", so);
  test_daemon_command(&d, "reload probe");
  ck_assert(test_daemon_wait_log(&d, "reloaded probe: generation 4,", 10000));
  echo_check(d.ports[0], "back");
  ck_assert_int_eq(test_daemon_signal_wait(&d, SIGTERM, 10000), 0);
  test_daemon_cleanup(&d);
  test_rec_free(&r);
  snprintf(cfg, sizeof(cfg), "rm -rf '%s'", dir);
  ck_assert_int_eq(system(cfg), 0);
}
END_TEST

/* ---- timers, posts, packets ---- */

START_TEST(test_gate_timer_firings_do_not_pile_up) {
  test_daemon d;
  test_rec r;
  char cfg[1024], buf[4];
  int fd, runs = -1;
  const char *p;

  test_rec_init(&r);
  ck_assert_int_eq(test_daemon_start(&d, probe_config(cfg, sizeof(cfg), 2, "serial",
                                                      TP "/probe.so", &r, ", \"stall\": 1"),
                                     test_backend(_i)),
                   0);
  fd = test_connect(d.ports[0]);
  test_send_all(fd, "w", 1); /* the strand stalls 300 ms; the 1 ms timer keeps firing */
  ck_assert_int_eq(test_recv_exact(fd, buf, 1), 0);
  ck_assert(test_rec_wait(&r, "timer ran ", 1, 5000));
  p = strstr(test_rec_read(&r), "timer ran ");
  ck_assert_int_eq(sscanf(p, "timer ran %d times", &runs), 1);
  /* About 100 at 1 ms, plus the one firing queued during the stall; 300
   * more if every firing of the stall had queued. */
  ck_assert_msg(runs <= 150, "the timer ran %d times in 100 ms", runs);
  close(fd);
  ck_assert_int_eq(test_daemon_signal_wait(&d, SIGTERM, 10000), 0);
  test_daemon_cleanup(&d);
  test_rec_free(&r);
}
END_TEST

START_TEST(test_gate_timer_cancelled_in_on_load_never_fires) {
  test_daemon d;
  test_rec r;
  char cfg[1024];

  test_rec_init(&r);
  ck_assert_int_eq(test_daemon_start(&d, probe_config(cfg, sizeof(cfg), 1, "session",
                                                      TP "/probe.so", &r,
                                                      ", \"cancel_in_load\": 1"),
                                     test_backend(_i)),
                   0);
  ck_assert(test_rec_wait(&r, "timer_start 0, timer_cancel 0", 1, 5000));
  usleep(200000); /* ten times the timer's delay */
  echo_check(d.ports[0], "alive");
  ck_assert_int_eq(test_daemon_signal_wait(&d, SIGTERM, 10000), 0);
  ck_assert_msg(!strstr(test_rec_read(&r), "canceled timer fired"), "probe recorded: %s", r.text);
  test_daemon_cleanup(&d);
  test_rec_free(&r);
}
END_TEST

START_TEST(test_gate_cancel_reaches_a_queued_once_timer) {
  test_daemon d;
  test_rec r;
  char cfg[1024], buf[4];
  int fd;

  test_rec_init(&r);
  ck_assert_int_eq(test_daemon_start(&d, probe_config(cfg, sizeof(cfg), 2, "serial",
                                                      TP "/probe.so", &r,
                                                      ", \"cancel_queued\": 1"),
                                     test_backend(_i)),
                   0);
  fd = test_connect(d.ports[0]);
  test_send_all(fd, "c", 1); /* the timer fires while on_recv holds the strand */
  ck_assert_int_eq(test_recv_exact(fd, buf, 1), 0);
  ck_assert_msg(test_rec_wait(&r, "cancel of a queued once-timer: 0", 1, 5000),
                "probe recorded: %s", test_rec_read(&r));
  usleep(100000);
  ck_assert_msg(!strstr(test_rec_read(&r), "cancelled once-timer fired"), "probe recorded: %s",
                r.text);
  close(fd);
  ck_assert_int_eq(test_daemon_signal_wait(&d, SIGTERM, 10000), 0);
  test_daemon_cleanup(&d);
  test_rec_free(&r);
}
END_TEST

/* timer_start from a thread of the plugin's own while worker 0 fires and
 * frees the once-timers started before: every one fires, each with its own
 * id (the id was once read after the timer could be gone: ASan's pass). */
START_TEST(test_gate_timers_started_off_the_workers_fire_with_their_ids) {
  test_daemon d;
  test_rec r;
  char cfg[1024];

  test_rec_init(&r);
  ck_assert_int_eq(test_daemon_start(&d, probe_config(cfg, sizeof(cfg), 2, "session",
                                                      TP "/probe.so", &r,
                                                      ", \"timer_burst\": 5000"),
                                     test_backend(_i)),
                   0);
  ck_assert_msg(test_rec_wait(&r, "timer burst: 5000 started, 5000 fired, 0 bad ids", 1, 20000),
                "probe recorded: %s", test_rec_read(&r));
  echo_check(d.ports[0], "alive");
  ck_assert_int_eq(test_daemon_signal_wait(&d, SIGTERM, 10000), 0);
  test_daemon_cleanup(&d);
  test_rec_free(&r);
}
END_TEST

START_TEST(test_gate_timers_refuse_past_their_cap) {
  test_daemon d;
  test_rec r;
  char cfg[1024];

  test_rec_init(&r);
  ck_assert_int_eq(test_daemon_start(&d, probe_config(cfg, sizeof(cfg), 1, "session",
                                                      TP "/probe.so", &r,
                                                      ", \"timer_flood\": 70000"),
                                     test_backend(_i)),
                   0);
  ck_assert_msg(test_rec_wait(&r, "timers: 65536 taken, 4464 refused with EAGAIN, 0 other", 1,
                              5000),
                "probe recorded: %s", test_rec_read(&r));
  echo_check(d.ports[0], "alive");
  ck_assert_int_eq(test_daemon_signal_wait(&d, SIGTERM, 10000), 0);
  test_daemon_cleanup(&d);
  test_rec_free(&r);
}
END_TEST

/* Each of 65,536 timers (the cap) cancelled by its id finds its own timer,
 * and a second cancel of the same id finds none. */
START_TEST(test_gate_timers_cancelled_one_by_one_by_id) {
  test_daemon d;
  test_rec r;
  char cfg[1024];

  test_rec_init(&r);
  ck_assert_int_eq(test_daemon_start(&d, probe_config(cfg, sizeof(cfg), 1, "session",
                                                      TP "/probe.so", &r,
                                                      ", \"timer_flood\": 65536, "
                                                      "\"timer_flood_cancel\": 1"),
                                     test_backend(_i)),
                   0);
  ck_assert_msg(test_rec_wait(&r, "cancel by id: 65536 ok, 0 other; again: 65536 ENOENT", 1,
                              20000),
                "probe recorded: %s", test_rec_read(&r));
  echo_check(d.ports[0], "alive");
  ck_assert_int_eq(test_daemon_signal_wait(&d, SIGTERM, 10000), 0);
  test_daemon_cleanup(&d);
  test_rec_free(&r);
}
END_TEST

START_TEST(test_gate_post_refuses_past_its_cap) {
  test_daemon d;
  test_rec r;
  char cfg[1024];

  test_rec_init(&r);
  ck_assert_int_eq(test_daemon_start(&d, probe_config(cfg, sizeof(cfg), 1, "session",
                                                      TP "/probe.so", &r,
                                                      ", \"post_flood\": 70000"),
                                     test_backend(_i)),
                   0);
  ck_assert_msg(test_rec_wait(&r, "posts: 65536 taken, 4464 refused with EAGAIN, 0 other", 1, 5000),
                "probe recorded: %s", test_rec_read(&r));
  ck_assert_msg(test_rec_wait(&r, "posted jobs ran: 65536", 1, 10000), "probe recorded: %s",
                test_rec_read(&r));
  ck_assert_int_eq(test_daemon_signal_wait(&d, SIGTERM, 10000), 0);
  test_daemon_cleanup(&d);
  test_rec_free(&r);
}
END_TEST

START_TEST(test_gate_send_packet_refuses_a_huge_length) {
  test_daemon d;
  test_rec r;
  char cfg[1024];

  test_rec_init(&r);
  ck_assert_int_eq(test_daemon_start(&d, probe_config(cfg, sizeof(cfg), 1, "session",
                                                      TP "/probe.so", &r,
                                                      ", \"huge_packet\": 1"),
                                     test_backend(_i)),
                   0);
  echo_check(d.ports[0], "x");
  ck_assert_msg(test_rec_wait(&r, "send_packet of SIZE_MAX - 2 bytes: -90", 1, 5000),
                "probe recorded: %s", test_rec_read(&r)); /* -EMSGSIZE */
  ck_assert_int_eq(test_daemon_signal_wait(&d, SIGTERM, 10000), 0);
  test_daemon_cleanup(&d);
  test_rec_free(&r);
}
END_TEST

int main(void) {
  Suite *s = suite_create("gate");
  TCase *tc = tcase_create("daemon");
  tcase_set_timeout(tc, 120);
  tcase_add_loop_test(tc, test_gate_timer_cancelled_in_on_load_never_fires, 0, TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_gate_failed_version_never_runs, 0, TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_gate_rejected_config_is_not_kept, 0, TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_gate_post_refuses_past_its_cap, 0, TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_gate_cancel_reaches_a_queued_once_timer, 0, TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_gate_timers_refuse_past_their_cap, 0, TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_gate_timers_cancelled_one_by_one_by_id, 0, TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_gate_timers_started_off_the_workers_fire_with_their_ids, 0,
                      TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_gate_send_packet_refuses_a_huge_length, 0, TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_gate_held_events_run_on_the_sessions_worker, 0, TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_gate_held_events_pass_the_watchdog, 0, TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_gate_rollback_that_fails_quarantines, 0, TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_gate_timer_firings_do_not_pile_up, 0, TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_gate_flood_during_a_slow_reload_is_bounded, 0, TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_gate_flood_into_a_slow_serial_plugin_is_bounded, 0,
                      TEST_NBACKENDS);
  suite_add_tcase(s, tc);
  return test_run(s);
}
