/* Test plugin for the transports' backpressure and output paths, driven by
 * the packet ids its clients send (u16_size_id listeners):
 *   on_connected   sends packet 1 whose 1-byte body is the session's worker;
 *   99 (u32 ms)    sleeps ms (without the argument: the config's
 *                  "stall_ms", default 1500), then sends packet 99 "woke":
 *                  a serial plugin's strand is held all that time, so the
 *                  events of its other sessions wait in their backlogs and
 *                  past recv_backlog those sessions stop being read;
 *   98             one host->send of 2 MiB (over any max_send_queue the
 *                  tests set);
 *   97 (u32 n)     broadcasts n pattern bytes (byte i is i % 251) to every
 *                  session of the plugin;
 *   96 (u32 n)     sends n pattern bytes to this session in one host->send;
 *   95 (u32 n)     pushes n pattern bytes to this session every millisecond
 *                  (a timer) until a send fails;
 *   2              echoes the packet;
 *   anything else  is taken and dropped.
 * Recorded, one line each, to the file named by "out" (the recorder's
 * format where they overlap): "connected SID PEER", "disconnected SID
 * REASON", "sent SID N RC", "broadcast N GOT", "pushed SID TOTAL RC". */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "pier/plugin.h"

#define BIG (2u << 20)
#define PUSH_MAX (1u << 20)
#define MAX_SIDS 4096

static const pier_host *host;
static int out_fd = -1;
static long stall_ms = 1500;
static char *pattern; /* BIG bytes, byte i is i % 251 */

/* One push at a time. */
static atomic_int pushing;
static pier_sid push_sid;
static size_t push_len, push_total;
static uint64_t push_timer;

static void record(const char *fmt, ...) PIER_PRINTF(1, 2);
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

/* "key": N in the config text (any spacing); fallback when absent. */
static long json_long(const char *json, const char *key, long fallback) {
  const char *p = strstr(json, key);
  if (!p)
    return fallback;
  p += strlen(key);
  while (*p == ' ' || *p == ':')
    p++;
  return strtol(p, NULL, 10);
}

static uint32_t u32le(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static int st_load(const pier_load_args *a) {
  const char *p = strstr(a->config_json, "\"out\"");
  char path[256];
  size_t n;
  if (!p || !(p = strchr(p + 5, '"')))
    return -EINVAL;
  p++;
  n = strcspn(p, "\"");
  if (n >= sizeof(path))
    return -ENAMETOOLONG;
  memcpy(path, p, n);
  path[n] = '\0';
  if (!(pattern = malloc(BIG)))
    return -ENOMEM;
  for (size_t i = 0; i < BIG; i++)
    pattern[i] = (char)(i % 251);
  out_fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (out_fd < 0) {
    free(pattern);
    return -errno;
  }
  host = a->host;
  stall_ms = json_long(a->config_json, "\"stall_ms\"", 1500);
  return 0;
}

static void st_unload(pier_state *st) {
  (void)st;
  close(out_fd);
  out_fd = -1;
  free(pattern);
  pattern = NULL;
}

static void st_connected(pier_sid sid, const char *peer) {
  uint8_t w = (uint8_t)PIER_SID_WORKER(sid);
  record("connected %016" PRIx64 " %s", sid, peer);
  host->send_packet(host, sid, 1, &w, 1);
}

static void push_tick(void *arg) {
  int rc;
  (void)arg;
  if (!atomic_load(&pushing))
    return;
  rc = host->send(host, push_sid, pattern + push_total % 251, push_len);
  if (rc == 0) {
    push_total += push_len;
    return;
  }
  host->timer_cancel(host, push_timer);
  record("pushed %016" PRIx64 " %zu %d", push_sid, push_total, rc);
  atomic_store(&pushing, 0);
}

static void st_recv(pier_sid sid, const void *data, size_t len) {
  const uint8_t *p = data;
  unsigned id = len >= 4 ? pier_packet_id(data) : 0;
  size_t n = len >= 8 ? u32le(p + 4) : 0;

  switch (id) {
  case 99: {
    long ms = len >= 8 ? (long)n : stall_ms;
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
    host->send_packet(host, sid, 99, "woke", 4);
    break;
  }
  case 98:
    host->send(host, sid, pattern, BIG);
    break;
  case 97: {
    static pier_sid sids[MAX_SIDS];
    size_t k = host->sessions(host, sids, MAX_SIDS), got;
    if (k > MAX_SIDS)
      k = MAX_SIDS;
    got = host->broadcast(host, sids, k, pattern, n <= BIG ? n : BIG);
    record("broadcast %zu %zu", n, got);
    break;
  }
  case 96: {
    int rc = host->send(host, sid, pattern, n <= BIG ? n : BIG);
    record("sent %016" PRIx64 " %zu %d", sid, n, rc);
    break;
  }
  case 95:
    if (atomic_exchange(&pushing, 1))
      break;
    push_sid = sid;
    push_len = n && n <= PUSH_MAX ? n : 65536;
    push_total = 0;
    if (host->timer_start(host, 1, 1, push_tick, NULL, &push_timer) < 0)
      atomic_store(&pushing, 0);
    break;
  case 2:
    host->send(host, sid, data, len);
    break;
  default:
    break;
  }
}

static void st_disconnected(pier_sid sid, pier_reason reason) {
  record("disconnected %016" PRIx64 " %d", sid, (int)reason);
}

PIER_PLUGIN("stall", "0.1.0", .on_load = st_load, .on_unload = st_unload,
            .on_connected = st_connected, .on_recv = st_recv,
            .on_disconnected = st_disconnected);
