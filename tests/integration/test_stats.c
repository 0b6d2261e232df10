/* The plugin host's numbers for /metrics (host_get_plugin_stats,
 * host_get_listener_stats), read the way the metrics endpoint reads them:
 * from another thread while a real host (in this process, with the probe
 * test plugin and real loopback clients) serves. Each case runs once per
 * backend. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "host/config.h"
#include "host/host.h"
#include "net/net.h"
#include "testlib.h"

#define TP PIER_BINARY_DIR "/tests/plugins"

typedef struct fixture {
  char dir[256], plugin[300];
  test_rec rec;
  cfg_server *cfg;
  host *h;
} fixture;

/* A host serving probe.so (a private copy in a temp dir, so a case may spoil
 * it) on one listener (raw, unless `listener` adds keys), with `opts` added
 * to the plugin's config. */
static void start_on(fixture *f, const char *backend, unsigned workers, const char *opts,
                     const char *listener) {
  char json[2048], err[CFG_ERR_LEN];

  memset(f, 0, sizeof(*f));
  test_mkdtemp(f->dir, sizeof(f->dir), "pier-stats-");
  snprintf(f->plugin, sizeof(f->plugin), "%s/probe.so", f->dir);
  test_copy_file(TP "/probe.so", f->plugin);
  test_rec_init(&f->rec);
  snprintf(json, sizeof(json),
           "{\"workers\": %u, \"plugins\": [{\"name\": \"probe\", \"path\": \"%s\", "
           "\"config\": {\"out\": \"%s\"%s}}], "
           "\"listeners\": [{\"port\": 0, \"plugin\": \"probe\"%s}]}",
           workers, f->plugin, f->rec.path, opts, listener);
  ck_assert_msg(cfg_load_text(json, strlen(json), "server.json", f->dir, &f->cfg, err,
                              sizeof(err)) == 0,
                "%s", err);
  ck_assert_int_eq(host_create(f->cfg, backend, 0, &f->h), 0);
  ck_assert_int_eq(host_start(f->h), 0);
}

static void start(fixture *f, const char *backend, unsigned workers, const char *opts) {
  start_on(f, backend, workers, opts, "");
}

static void finish(fixture *f) {
  host_stop(f->h);
  host_destroy(f->h);
  cfg_free(f->cfg);
  test_rec_free(&f->rec);
  test_rm_rf(f->dir);
}

static uint16_t port_of(fixture *f) {
  host_listener_stats ls;
  const char *colon;
  host_get_listener_stats(f->h, 0, &ls);
  colon = strrchr(ls.address, ':');
  ck_assert_ptr_nonnull(colon);
  return (uint16_t)atoi(colon + 1);
}

typedef struct want_cb {
  fixture *f;
  unsigned type;
  uint64_t count;
} want_cb;

static int cond_cb(void *arg) {
  want_cb *w = arg;
  host_plugin_stats ps;
  host_get_plugin_stats(w->f->h, 0, &ps);
  return ps.latency[w->type].count >= w->count;
}

/* Bucket counts add up to the count: a histogram Prometheus accepts. */
static uint64_t bucket_sum(const host_latency *l) {
  uint64_t n = 0;
  for (unsigned b = 0; b <= HOST_LAT_BUCKETS; b++)
    n += l->bucket[b];
  return n;
}

/* Every callback is timed into its own histogram (with slow_callback_ms 0,
 * the default, too), listeners count the sessions that reached the plugin,
 * and the plugin's open sessions follow connects and disconnects. */
START_TEST(test_stats_callbacks_timed_and_sessions_counted) {
  fixture f;
  host_plugin_stats ps;
  host_listener_stats ls;
  want_cb gone = {&f, 3, 3};
  int fd[3];
  char buf[3];
  uint16_t port;

  start(&f, test_backend(_i), 2, "");
  port = port_of(&f);
  ck_assert_uint_gt(port, 0);
  host_get_listener_stats(f.h, 0, &ls);
  ck_assert_str_eq(ls.plugin, "probe");
  ck_assert_str_eq(ls.transport, "tcp");
  ck_assert_uint_eq(ls.accepted, 0);
  for (int i = 0; i < 3; i++) {
    fd[i] = test_connect(port);
    test_send_all(fd[i], "abc", 3);
    ck_assert_int_eq(test_recv_exact(fd[i], buf, 3), 0);
    ck_assert_int_eq(memcmp(buf, "abc", 3), 0);
  }
  host_get_plugin_stats(f.h, 0, &ps);
  ck_assert_str_eq(ps.name, "probe");
  ck_assert_str_eq(ps.file, f.plugin);
  ck_assert_uint_eq(ps.generation, 1);
  ck_assert_uint_eq(ps.sessions, 3);
  ck_assert_uint_eq(ps.latency[0].count, 3); /* on_connected */
  ck_assert_uint_eq(ps.latency[1].count, 3); /* on_recv: one read of 3 bytes each */
  host_get_listener_stats(f.h, 0, &ls);
  ck_assert_uint_eq(ls.accepted, 3);
  ck_assert_int_eq(ls.open, 3);

  for (int i = 0; i < 3; i++)
    close(fd[i]);
  ck_assert(test_wait(cond_cb, &gone, 10000));
  host_get_plugin_stats(f.h, 0, &ps);
  ck_assert_str_eq(host_cb_label(3), "on_disconnected");
  ck_assert_uint_eq(ps.latency[3].count, 3);
  ck_assert_uint_eq(ps.sessions, 0);
  for (unsigned t = 0; t < HOST_CB_TYPES; t++)
    ck_assert_uint_eq(bucket_sum(&ps.latency[t]), ps.latency[t].count);
  ck_assert_uint_gt(ps.latency[1].sum_ns, 0);
  host_get_listener_stats(f.h, 0, &ls);
  ck_assert_uint_eq(ls.accepted, 3);
  ck_assert_int_eq(ls.open, 0);
  /* No reload yet: nothing counted, no pause. */
  ck_assert_uint_eq(ps.reloads_ok + ps.reloads_failed + ps.reloads_rolled_back +
                        ps.reloads_quarantined,
                    0);
  ck_assert_uint_eq(ps.reload_pause.count, 0);
  finish(&f);
}
END_TEST

/* A slow on_recv lands in a bucket whose bound is past its duration: 20 ms
 * of sleep is never counted at or below 10 ms. */
START_TEST(test_stats_slow_callback_in_upper_bucket) {
  fixture f;
  host_plugin_stats ps;
  uint64_t low = 0;
  int fd;
  char buf[1];

  start(&f, test_backend(_i), 1, ", \"recv_us\": 20000");
  fd = test_connect(port_of(&f));
  test_send_all(fd, "x", 1);
  ck_assert_int_eq(test_recv_exact(fd, buf, 1), 0);
  host_get_plugin_stats(f.h, 0, &ps);
  ck_assert_uint_eq(ps.latency[1].count, 1);
  for (unsigned b = 0; b < HOST_LAT_BUCKETS && host_lat_bounds[b] <= 0.010; b++)
    low += ps.latency[1].bucket[b];
  ck_assert_uint_eq(low, 0);
  ck_assert_uint_ge(ps.latency[1].sum_ns, 20000000u);
  close(fd);
  finish(&f);
}
END_TEST

/* A WebSocket client: the upgrade, then frames (masked, as a client must). */
static int ws_connect(uint16_t port) {
  static const char req[] = "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                            "Sec-WebSocket-Version: 13\r\n\r\n";
  char head[1024];
  size_t n = 0;
  int fd = test_connect(port);

  test_send_all(fd, req, sizeof(req) - 1);
  while (n < 4 || memcmp(head + n - 4, "\r\n\r\n", 4) != 0) {
    ck_assert_uint_lt(n, sizeof(head) - 1);
    ck_assert_int_eq(test_recv_exact(fd, head + n, 1), 0);
    n++;
  }
  head[n] = '\0';
  ck_assert_msg(strncmp(head, "HTTP/1.1 101", 12) == 0, "%s", head);
  return fd;
}

static void ws_send_binary(int fd, const char *data, size_t len) {
  char f[2 + 4 + 125] = {(char)0x82, (char)(0x80 | len)}; /* mask 0: payload as is */
  ck_assert_uint_le(len, 125);
  memcpy(f + 6, data, len);
  test_send_all(fd, f, 6 + len);
}

static void ws_recv_binary(int fd, char *data, size_t len) {
  unsigned char h[2];
  ck_assert_int_eq(test_recv_exact(fd, h, 2), 0);
  ck_assert_uint_eq(h[0], 0x82);
  ck_assert_uint_eq(h[1], len);
  ck_assert_int_eq(test_recv_exact(fd, data, len), 0);
}

/* Over WebSocket a message is one message in, whether framing is raw or
 * u16_size_id, and the echo one message out; the HTTP upgrade is neither. */
START_TEST(test_stats_websocket_messages_counted) {
  static const char pkt[] = "\x06\x00\x01\x00ok";
  fixture f;
  net_stats st;
  host_listener_stats ls;
  char buf[6];
  int fd;

  start_on(&f, test_backend(_i), 1, "",
           ", \"transport\": \"websocket\", \"path\": \"/\", \"framing\": \"u16_size_id\"");
  fd = ws_connect(port_of(&f));
  for (int k = 0; k < 2; k++) {
    ws_send_binary(fd, pkt, 6);
    ws_recv_binary(fd, buf, 6);
    ck_assert_int_eq(memcmp(buf, pkt, 6), 0);
  }
  net_get_stats(host_net(f.h), &st);
  ck_assert_uint_eq(st.messages_in, 2);
  ck_assert_uint_eq(st.messages_out, 2);
  ck_assert_uint_eq(st.handshakes, 1);
  host_get_listener_stats(f.h, 0, &ls);
  ck_assert_str_eq(ls.transport, "websocket");
  ck_assert_uint_eq(ls.accepted, 1);
  close(fd);
  finish(&f);
}
END_TEST

static void reload(fixture *f, const char *config, int want_rc) {
  char msg[2048];
  int rc = host_reload(f->h, "probe", config, msg, sizeof(msg));
  ck_assert_msg(rc == want_rc, "reload: %d (want %d): %s", rc, want_rc, msg);
}

/* Each reload counts once, under its outcome; every reload that paused the
 * plugin adds one pause to the histogram, and one refused at load (before
 * any pause) adds none. */
START_TEST(test_stats_reloads_counted_by_outcome) {
  fixture f;
  host_plugin_stats ps;
  char cfg[512];
  FILE *junk;

  start(&f, test_backend(_i), 2, "");
  /* gen 2: ok. */
  reload(&f, NULL, 0);
  /* gen 3 refuses (the new config says so): rolled back, restored as gen 4. */
  snprintf(cfg, sizeof(cfg), "{\"out\": \"%s\", \"refuse_gen\": 3}", f.rec.path);
  reload(&f, cfg, -EINVAL);
  /* gen 5 with a config that refuses gen 7: ok. */
  snprintf(cfg, sizeof(cfg), "{\"out\": \"%s\", \"refuse_gen\": 7}", f.rec.path);
  reload(&f, cfg, 0);
  /* gen 6 refuses; the restore, gen 7, refuses too: quarantined. */
  snprintf(cfg, sizeof(cfg), "{\"out\": \"%s\", \"refuse_gen\": 6}", f.rec.path);
  reload(&f, cfg, -EINVAL);
  host_get_plugin_stats(f.h, 0, &ps);
  ck_assert_uint_eq(ps.reloads_ok, 2);
  ck_assert_uint_eq(ps.reloads_rolled_back, 1);
  ck_assert_uint_eq(ps.reloads_quarantined, 1);
  ck_assert_uint_eq(ps.reloads_failed, 0);
  ck_assert_int_eq(ps.quarantined, 1);
  ck_assert_uint_eq(ps.generation, 7);
  ck_assert_uint_eq(ps.reload_pause.count, 4);
  ck_assert_uint_eq(bucket_sum(&ps.reload_pause), 4);

  /* A file that is no plugin: refused at load, the running version kept. */
  junk = fopen(f.plugin, "wb");
  ck_assert_ptr_nonnull(junk);
  fputs("not a shared library\n", junk);
  fclose(junk);
  reload(&f, NULL, -ENOEXEC);
  host_get_plugin_stats(f.h, 0, &ps);
  ck_assert_uint_eq(ps.reloads_failed, 1);
  ck_assert_uint_eq(ps.reloads_ok, 2);
  ck_assert_uint_eq(ps.reload_pause.count, 4);
  finish(&f);
}
END_TEST

int main(void) {
  Suite *s = suite_create("stats");
  TCase *tc = tcase_create("host");

  tcase_set_timeout(tc, 60);
  tcase_add_loop_test(tc, test_stats_callbacks_timed_and_sessions_counted, 0, TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_stats_slow_callback_in_upper_bucket, 0, TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_stats_reloads_counted_by_outcome, 0, TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_stats_websocket_messages_counted, 0, TEST_NBACKENDS);
  suite_add_tcase(s, tc);
  return test_run(s);
}
