/* Test plugin: records every callback with its arguments, one line each, to
 * the file named by its config ("out"), and echoes what it receives so
 * on_send fires too. Options in its config: "timer_after_disconnect": 1
 * starts a 20 ms timer in on_disconnected that tries to send to the gone
 * session and records the result; "check_overlap": 1 records "overlap" if two
 * callbacks ever run at once (for serial plugins). */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "pier/plugin.h"

#if !defined(O_CLOEXEC) && defined(O_NOINHERIT)
#define O_CLOEXEC O_NOINHERIT /* Windows' C runtime */
#endif

static const pier_host *host;
static int out_fd = -1;
static int timer_after_disconnect, check_overlap;
static atomic_int busy;

static void record(const char *fmt, ...) PIER_PRINTF(1, 2);
#include <stdarg.h>
static void record(const char *fmt, ...) {
  char line[512];
  va_list ap;
  int n;
  va_start(ap, fmt);
  n = vsnprintf(line, sizeof(line) - 1, fmt, ap);
  va_end(ap);
  if (n < 0)
    return;
  if ((size_t)n > sizeof(line) - 2)
    n = sizeof(line) - 2;
  line[n++] = '\n';
  if (write(out_fd, line, (size_t)n) < 0) { /* O_APPEND: one line per write */
  }
}

static void enter(void) {
  if (check_overlap) {
    if (atomic_exchange(&busy, 1))
      record("overlap");
    struct timespec ts = {0, 100000};
    nanosleep(&ts, NULL); /* widen the window a concurrent call would hit */
  }
}

static void leave(void) {
  if (check_overlap)
    atomic_store(&busy, 0);
}

static int json_int(const char *json, const char *key) {
  const char *p = strstr(json, key);
  return p ? atoi(p + strlen(key) + 1) : 0; /* compact JSON: "key":N */
}

/* Windows' C runtime turns "\n" into "\r\n" unless the file is binary. */
#ifndef O_BINARY
#define O_BINARY 0
#endif

static int rec_load(const pier_load_args *a) {
  const char *p = strstr(a->config_json, "\"out\":\"");
  char path[256];
  size_t n;
  if (!p)
    return -EINVAL;
  p += 7;
  n = strcspn(p, "\"");
  if (n >= sizeof(path))
    return -ENAMETOOLONG;
  memcpy(path, p, n);
  path[n] = '\0';
  out_fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_BINARY, 0600);
  if (out_fd < 0)
    return -errno;
  host = a->host;
  timer_after_disconnect = json_int(a->config_json, "\"timer_after_disconnect\"");
  check_overlap = json_int(a->config_json, "\"check_overlap\"");
  record("load generation=%u", a->generation);
  return 0;
}

static void rec_unload(pier_state *st) {
  record("unload");
  close(out_fd);
  out_fd = -1;
}

static void rec_connected(pier_sid sid, const char *peer) {
  enter();
  record("connected %016" PRIx64 " %s", sid, peer);
  leave();
}

static void rec_recv(pier_sid sid, const void *data, size_t len) {
  enter();
  record("recv %016" PRIx64 " %zu", sid, len);
  host->send(host, sid, data, len);
  leave();
}

static void rec_send(pier_sid sid, size_t bytes) {
  enter();
  record("send %016" PRIx64 " %zu", sid, bytes);
  leave();
}

static void late_send(void *arg) {
  pier_sid sid = (pier_sid)(uintptr_t)arg;
  int rc = host->send(host, sid, "late", 4);
  record("timer %016" PRIx64 " rc=%d", sid, rc);
}

static void rec_disconnected(pier_sid sid, pier_reason reason) {
  enter();
  record("disconnected %016" PRIx64 " %d", sid, (int)reason);
  if (timer_after_disconnect)
    host->timer_start(host, 20, 0, late_send, (void *)(uintptr_t)sid, NULL);
  leave();
}

PIER_PLUGIN("recorder", "0.1.0", .on_load = rec_load, .on_unload = rec_unload,
            .on_connected = rec_connected, .on_recv = rec_recv, .on_send = rec_send,
            .on_disconnected = rec_disconnected);

/* Exported under its own name for configs that bind callbacks by symbol. */
PIER_EXPORT void recorder_alt_recv(pier_sid sid, const void *data, size_t len) {
  record("alt_recv %016" PRIx64 " %zu", sid, len);
  host->send(host, sid, data, len);
}
