/* Test plugin for the gate and reload tests: echoes what it receives (raw
 * listeners) and records what happened, one line each, to the file named by
 * its config ("out"). Options in its config (compact JSON, "key":N):
 *   "cancel_in_load":1  on_load starts a 20 ms timer and cancels it at once;
 *                       "canceled timer fired" is recorded if it ever runs
 *   "reload_ms":N       on_load sleeps N ms when it is not the first load
 *   "recv_us":N         each on_recv sleeps N µs (a slow plugin)
 *   "threads":1         each on_recv records "recv SID TID"
 *   "refuse":1          on_load refuses to start (-EINVAL)
 *   "post_flood":N      on_load posts N jobs and records how many were taken
 *   "huge_packet":1     on_recv also calls send_packet with a length near
 *                       SIZE_MAX and records its result
 *   "slow_s_ms":N       on_recv of data starting with 's' sleeps N ms
 *   "refuse_gen":G      on_load refuses when its generation is G
 *   "cancel_queued":1   on_recv of data starting with 'c' starts a 1 ms
 *                       once-timer, stalls 30 ms (a serial plugin's firing
 *                       then waits on the strand), cancels it and records
 *                       the result; the timer records if it still fires
 *   "timer_flood":N     on_load starts N one-hour timers and records how
 *                       many were taken; with "timer_flood_cancel":1 it then
 *                       cancels each by its id (every second one first) and
 *                       each once more, and records the results
 *   "timer_burst":N     on_load starts a thread of its own that starts N 1 ms
 *                       once-timers, 100 at a time, then waits for them and
 *                       records how many started and fired and how many of
 *                       the ids it was given were 0 or given twice; two more
 *                       threads spin meanwhile, so that the scheduler takes
 *                       the CPU from it at any point now and then (not on
 *                       Windows)
 *   "stall":1           on_load starts a 1 ms repeating timer; on_recv of
 *                       data starting with 'w' stalls 300 ms, then records
 *                       how often the timer ran in the 100 ms after
 * Every on_load records "load gen=G config=TEXT". Built twice: probe.so, and
 * probe_fail.so (PROBE_FAIL) whose on_load starts a 200 ms timer and posts a
 * job that would record "failed version's ... ran", then fails. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
/* Which thread ran a callback: the system's id, the same in every loaded
 * version of the plugin. */
#ifdef _WIN32
#include <windows.h>
#define this_thread() ((long)GetCurrentThreadId())
#else
#include <sys/syscall.h>
#define this_thread() ((long)syscall(SYS_gettid))
#endif

#include "pier/plugin.h"

#ifndef _WIN32
#include <pthread.h>
#endif

#if !defined(O_CLOEXEC) && defined(O_NOINHERIT)
#define O_CLOEXEC O_NOINHERIT /* Windows' C runtime */
#endif

static const pier_host *host;
static int out_fd = -1;
static int recv_us, threads, huge_packet, slow_s_ms, stall, cancel_queued;
static atomic_int posted_runs, timer_runs, runs_at_stall_end;

static void record(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void record(const char *fmt, ...) {
  char line[600];
  va_list ap;
  int n;
  va_start(ap, fmt);
  n = vsnprintf(line, sizeof(line) - 1, fmt, ap);
  va_end(ap);
  if (n < 0 || out_fd < 0)
    return;
  if ((size_t)n > sizeof(line) - 2)
    n = sizeof(line) - 2;
  line[n++] = '\n';
  if (write(out_fd, line, (size_t)n) < 0) { /* O_APPEND: one line per write */
  }
}

static int json_int(const char *json, const char *key) {
  char k[64];
  const char *p;
  snprintf(k, sizeof(k), "\"%s\":", key);
  p = strstr(json, k);
  return p ? atoi(p + strlen(k)) : 0;
}

static void open_out(const char *json) {
  const char *p = strstr(json, "\"out\":\"");
  char path[256];
  size_t n = 0;
  if (!p)
    return;
  p += 7;
  while (*p && *p != '"' && n < sizeof(path) - 1)
    path[n++] = *p++;
  path[n] = '\0';
  if (out_fd >= 0)
    close(out_fd);
  out_fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
}

static void sleep_us(long us) {
  struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
  nanosleep(&ts, NULL);
}

__attribute__((unused)) static void canceled_timer(void *arg) { record("canceled timer fired"); }
__attribute__((unused)) static void failed_timer(void *arg) { record("failed version's timer ran"); }
__attribute__((unused)) static void failed_job(void *arg) { record("failed version's job ran"); }
__attribute__((unused)) static void counted_job(void *arg) { atomic_fetch_add(&posted_runs, 1); }
__attribute__((unused)) static void report_posts(void *arg) { record("posted jobs ran: %d", atomic_load(&posted_runs)); }
__attribute__((unused)) static void cancelled_once(void *arg) {
  record("cancelled once-timer fired");
}
__attribute__((unused)) static void count_timer(void *arg) { atomic_fetch_add(&timer_runs, 1); }
__attribute__((unused)) static void report_stall(void *arg) {
  record("timer ran %d times in the 100 ms after a 300 ms stall",
         atomic_load(&timer_runs) - atomic_load(&runs_at_stall_end));
}

static uint64_t flood_ids[70000];
static int flood_nids;
__attribute__((unused)) static int start_hour_timer(void) {
  uint64_t id = 0;
  int rc = host->timer_start(host, 3600000, 0, count_timer, NULL, &id);
  if (rc == 0 && flood_nids < (int)(sizeof(flood_ids) / sizeof(flood_ids[0])))
    flood_ids[flood_nids++] = id;
  return rc;
}

/* Cancels the flood's timers by id, the odd places first, and each again. */
__attribute__((unused)) static void flood_cancel(void) {
  int ok = 0, other = 0, gone = 0;
  for (int pass = 1; pass >= 0; pass--)
    for (int i = pass; i < flood_nids; i += 2)
      host->timer_cancel(host, flood_ids[i]) == 0 ? ok++ : other++;
  for (int i = 0; i < flood_nids; i++)
    if (host->timer_cancel(host, flood_ids[i]) == -ENOENT)
      gone++;
  record("cancel by id: %d ok, %d other; again: %d ENOENT", ok, other, gone);
}
__attribute__((unused)) static int post_counted(void) { return host->post(host, counted_job, NULL); }

/* Calls take() n times and records how many calls it took and refused. */
__attribute__((unused)) static void flood(const char *what, int n, int (*take)(void)) {
  int ok = 0, again = 0, other = 0;
  for (int i = 0; i < n; i++) {
    int rc = take();
    if (rc == 0)
      ok++;
    else if (rc == -EAGAIN)
      again++;
    else
      other++;
  }
  record("%s: %d taken, %d refused with EAGAIN, %d other", what, ok, again, other);
}

#ifndef _WIN32
static int burst_n;
static pthread_t burst_thread;
static int burst_started_thread;
static pthread_t burst_spinner[2];
static int burst_nspin;
static atomic_int burst_fired, burst_done;

__attribute__((unused)) static void *burst_spin(void *arg) {
  while (!atomic_load(&burst_done))
    ;
  return NULL;
}

__attribute__((unused)) static void burst_timer(void *arg) { atomic_fetch_add(&burst_fired, 1); }

__attribute__((unused)) static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

/* From a thread that is no worker, as a plugin's own thread would. */
__attribute__((unused)) static void *burst_run(void *arg) {
  uint64_t *ids = calloc((size_t)burst_n, sizeof(*ids));
  int started = 0, bad = 0, tries = 0;
  if (!ids) {
    atomic_store(&burst_done, 1);
    return NULL;
  }
  while (started < burst_n && tries < 2 * burst_n) { /* refused: shutting down */
    for (int i = 0; i < 100 && started < burst_n; i++, tries++)
      if (host->timer_start(host, 1, 0, burst_timer, NULL, &ids[started]) == 0)
        started++;
    sleep_us(2000);
  }
  atomic_store(&burst_done, 1);
  for (int i = 0; i < 500 && atomic_load(&burst_fired) < started; i++)
    sleep_us(10000);
  qsort(ids, (size_t)started, sizeof(*ids), cmp_u64);
  for (int i = 0; i < started; i++)
    if (ids[i] == 0 || (i && ids[i] == ids[i - 1]))
      bad++;
  record("timer burst: %d started, %d fired, %d bad ids", started, atomic_load(&burst_fired),
         bad);
  free(ids);
  return NULL;
}
#endif

static int probe_load(const pier_load_args *a) {
  host = a->host;
  open_out(a->config_json);
  recv_us = json_int(a->config_json, "recv_us");
  threads = json_int(a->config_json, "threads");
  huge_packet = json_int(a->config_json, "huge_packet");
  slow_s_ms = json_int(a->config_json, "slow_s_ms");
  stall = json_int(a->config_json, "stall");
  cancel_queued = json_int(a->config_json, "cancel_queued");
  record("load gen=%u config=%s", a->generation, a->config_json);
#ifdef PROBE_FAIL
  host->timer_start(host, 200, 0, failed_timer, NULL, NULL);
  host->post(host, failed_job, NULL);
  return -EINVAL;
#else
  if (json_int(a->config_json, "refuse") ||
      (unsigned)json_int(a->config_json, "refuse_gen") == a->generation)
    return -EINVAL;
  if (stall)
    host->timer_start(host, 1, 1, count_timer, NULL, NULL);
  if (a->generation > 1 && json_int(a->config_json, "reload_ms"))
    sleep_us((long)json_int(a->config_json, "reload_ms") * 1000);
  if (json_int(a->config_json, "cancel_in_load")) {
    uint64_t id = 0;
    int rc = host->timer_start(host, 20, 0, canceled_timer, NULL, &id);
    record("timer_start %d, timer_cancel %d", rc, host->timer_cancel(host, id));
  }
#ifndef _WIN32
  burst_n = json_int(a->config_json, "timer_burst");
  if (burst_n > 0 && pthread_create(&burst_thread, NULL, burst_run, NULL) == 0) {
    burst_started_thread = 1;
    for (int i = 0; i < 2; i++)
      if (pthread_create(&burst_spinner[burst_nspin], NULL, burst_spin, NULL) == 0)
        burst_nspin++;
  }
#endif
  if (json_int(a->config_json, "timer_flood"))
    flood("timers", json_int(a->config_json, "timer_flood"), start_hour_timer);
  if (json_int(a->config_json, "timer_flood_cancel"))
    flood_cancel();
  if (json_int(a->config_json, "post_flood")) {
    flood("posts", json_int(a->config_json, "post_flood"), post_counted);
    host->timer_start(host, 300, 0, report_posts, NULL, NULL);
  }
  return 0;
#endif
}

static void probe_unload(pier_state *out) {
#ifndef _WIN32
  if (burst_started_thread) {
    pthread_join(burst_thread, NULL);
    burst_started_thread = 0;
  }
  while (burst_nspin > 0)
    pthread_join(burst_spinner[--burst_nspin], NULL);
#endif
  record("unload");
}

static void probe_recv(pier_sid sid, const void *data, size_t len) {
  if (recv_us)
    sleep_us(recv_us);
  if (slow_s_ms && len && ((const char *)data)[0] == 's')
    sleep_us((long)slow_s_ms * 1000);
  if (cancel_queued && len && ((const char *)data)[0] == 'c') {
    uint64_t id = 0;
    host->timer_start(host, 1, 0, cancelled_once, NULL, &id);
    sleep_us(30000);
    record("cancel of a queued once-timer: %d", host->timer_cancel(host, id));
  }
  if (stall && len && ((const char *)data)[0] == 'w') {
    sleep_us(300000);
    atomic_store(&runs_at_stall_end, atomic_load(&timer_runs));
    host->timer_start(host, 100, 0, report_stall, NULL, NULL);
  }
  if (threads)
    record("recv %016llx %ld", (unsigned long long)sid, this_thread());
  if (huge_packet) {
    int rc = host->send_packet(host, sid, 1, data, SIZE_MAX - 2);
    record("send_packet of SIZE_MAX - 2 bytes: %d", rc);
  }
  host->send(host, sid, data, len);
}

#ifndef PROBE_VERSION
#define PROBE_VERSION "1.0.0"
#endif

PIER_PLUGIN("probe", PROBE_VERSION, .on_load = probe_load, .on_unload = probe_unload,
            .on_recv = probe_recv);
