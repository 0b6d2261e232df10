/* Plugin metrics (ABI 1.2) with the metered test plugin: the exposition
 * host_render_plugin_metrics writes (what /metrics and the `metrics` command
 * append), read from a real host in this process while loopback clients talk
 * to it; a reload keeps the values; every limit is refused with its code
 * and, in a real pierd, its log line; a plugin built for ABI 1.1 loads and
 * serves beside them. Each case runs once per backend. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "daemon.h"
#include "host/config.h"
#include "host/host.h"
#include "pier/plugin.h"
#include "testlib.h"

#define TP PIER_BINARY_DIR "/tests/plugins"

typedef struct fixture {
  char dir[256], plugin[300];
  uint16_t port;
  test_rec rec;
  cfg_server *cfg;
  host *h;
  char *text; /* the last render */
} fixture;

static void copy_file(const char *from, const char *to) {
  FILE *in = fopen(from, "rb"), *out = fopen(to, "wb");
  char buf[65536];
  size_t n;
  ck_assert_ptr_nonnull(in);
  ck_assert_ptr_nonnull(out);
  while ((n = fread(buf, 1, sizeof(buf), in)) > 0)
    ck_assert_uint_eq(fwrite(buf, 1, n, out), n);
  fclose(in);
  ck_assert_int_eq(fclose(out), 0);
}

/* A host serving a private copy of the file src (so a reload can replace
 * it) as plugin name on one listener of that framing. */
static void start_as(fixture *f, const char *backend, const char *src, const char *name,
                     const char *framing) {
  char json[2048], err[CFG_ERR_LEN];
  memset(f, 0, sizeof(*f));
  test_mkdtemp(f->dir, sizeof(f->dir), "pier-pmetrics-");
  snprintf(f->plugin, sizeof(f->plugin), "%s/plugin.so", f->dir);
  copy_file(src, f->plugin);
  test_rec_init(&f->rec);
  f->port = test_unused_port();
  snprintf(json, sizeof(json),
           "{\"workers\": 2, \"plugins\": [{\"name\": \"%s\", \"path\": \"%s\", "
           "\"config\": {\"out\": \"%s\"}}], "
           "\"listeners\": [{\"port\": %u, \"plugin\": \"%s\", \"framing\": \"%s\"}]}",
           name, f->plugin, f->rec.path, f->port, name, framing);
  ck_assert_msg(cfg_load_text(json, strlen(json), "server.json", f->dir, &f->cfg, err,
                              sizeof(err)) == 0,
                "%s", err);
  ck_assert_int_eq(host_create(f->cfg, backend, 0, &f->h), 0);
  ck_assert_int_eq(host_start(f->h), 0);
}

/* The metered test plugin TP/so as "meter-1" on a raw listener. */
static void start(fixture *f, const char *backend, const char *so) {
  char src[512];
  snprintf(src, sizeof(src), "%s/%s", TP, so);
  start_as(f, backend, src, "meter-1", "raw");
}

static void finish(fixture *f) {
  free(f->text);
  host_stop(f->h);
  host_destroy(f->h);
  cfg_free(f->cfg);
  test_rec_free(&f->rec);
  test_rm_rf(f->dir);
}

static const char *render(fixture *f) {
  size_t len = 0;
  FILE *out;
  free(f->text);
  f->text = NULL;
  out = open_memstream(&f->text, &len);
  ck_assert_ptr_nonnull(out);
  host_render_plugin_metrics(f->h, out);
  ck_assert_int_eq(fclose(out), 0);
  return f->text;
}

/* What `promtool check metrics` (Debian's prometheus package) says of
 * text: its exit status, 0 when the exposition parses and passes its lint. */
static int promtool_check(const char *text) {
  FILE *p = popen("promtool check metrics", "w");
  ck_assert_ptr_nonnull(p);
  fputs(text, p);
  return pclose(p);
}

static void echo(int fd, const char *msg) {
  char buf[64];
  size_t n = strlen(msg);
  test_send_all(fd, msg, n);
  ck_assert_int_eq(test_recv_exact(fd, buf, n), 0);
  ck_assert_int_eq(memcmp(buf, msg, n), 0);
}

typedef struct want_text {
  fixture *f;
  const char *line;
} want_text;

static int rendered(void *arg) {
  want_text *w = arg;
  return strstr(render(w->f), w->line) != NULL;
}

#define L "{plugin=\"meter-1\""

static const char fresh[] =
    "# HELP meter_1_messages_total Messages received, by kind.\n"
    "# TYPE meter_1_messages_total counter\n"
    "meter_1_messages_total" L ",kind=\"ping\"} 0\n"
    "meter_1_messages_total" L ",kind=\"other\"} 0\n"
    "# HELP meter_1_received_bytes_total Bytes received.\n"
    "# TYPE meter_1_received_bytes_total counter\n"
    "meter_1_received_bytes_total" L "} 0\n"
    "# HELP meter_1_sessions Sessions open now.\n"
    "# TYPE meter_1_sessions gauge\n"
    "meter_1_sessions" L "} 0\n"
    "# HELP meter_1_message_bytes Sizes of the reads.\n"
    "# TYPE meter_1_message_bytes histogram\n"
    "meter_1_message_bytes_bucket" L ",le=\"2\"} 0\n"
    "meter_1_message_bytes_bucket" L ",le=\"4\"} 0\n"
    "meter_1_message_bytes_bucket" L ",le=\"8\"} 0\n"
    "meter_1_message_bytes_bucket" L ",le=\"+Inf\"} 0\n"
    "meter_1_message_bytes_sum" L "} 0\n"
    "meter_1_message_bytes_count" L "} 0\n"
    "# HELP meter_1_generation The generation of the code serving.\n"
    "# TYPE meter_1_generation gauge\n"
    "meter_1_generation" L "} 1\n";

/* Declared metrics show at once (0), under "<plugin>_<name>" with '-' as
 * '_' and plugin="<name>" first; updates from the session's callbacks show
 * in the next render, histograms with cumulative buckets. */
START_TEST(test_pmetrics_rendered_under_the_plugin_name) {
  fixture f;
  want_text closed = {&f, "meter_1_sessions" L "} 0\n"};
  int fd;

  start(&f, test_backend(_i), "metered.so");
  ck_assert_str_eq(render(&f), fresh);
  ck_assert_str_eq(test_rec_read(&f.rec),
                   "load gen=1 host ABI 1.3\n"
                   "declare messages_total: 0\n"
                   "declare received_bytes_total: 0\n"
                   "declare sessions: 0\n"
                   "declare message_bytes: 0\n"
                   "declare generation: 0\n");
  fd = test_connect(f.port);
  echo(fd, "ping");
  echo(fd, "hello");
  echo(fd, "p");
  ck_assert_str_eq(render(&f),
                   "# HELP meter_1_messages_total Messages received, by kind.\n"
                   "# TYPE meter_1_messages_total counter\n"
                   "meter_1_messages_total" L ",kind=\"ping\"} 2\n"
                   "meter_1_messages_total" L ",kind=\"other\"} 1\n"
                   "# HELP meter_1_received_bytes_total Bytes received.\n"
                   "# TYPE meter_1_received_bytes_total counter\n"
                   "meter_1_received_bytes_total" L "} 10\n"
                   "# HELP meter_1_sessions Sessions open now.\n"
                   "# TYPE meter_1_sessions gauge\n"
                   "meter_1_sessions" L "} 1\n"
                   "# HELP meter_1_message_bytes Sizes of the reads.\n"
                   "# TYPE meter_1_message_bytes histogram\n"
                   "meter_1_message_bytes_bucket" L ",le=\"2\"} 1\n"
                   "meter_1_message_bytes_bucket" L ",le=\"4\"} 2\n"
                   "meter_1_message_bytes_bucket" L ",le=\"8\"} 3\n"
                   "meter_1_message_bytes_bucket" L ",le=\"+Inf\"} 3\n"
                   "meter_1_message_bytes_sum" L "} 10\n"
                   "meter_1_message_bytes_count" L "} 3\n"
                   "# HELP meter_1_generation The generation of the code serving.\n"
                   "# TYPE meter_1_generation gauge\n"
                   "meter_1_generation" L "} 1\n");
  ck_assert_int_eq(promtool_check(f.text), 0);
  close(fd);
  ck_assert(test_wait(rendered, &closed, 10000));
  finish(&f);
}
END_TEST

/* Updates from both workers at once, rendered while they land: nothing is
 * lost (a counter is exact), and every render is a histogram whose buckets
 * add up to its count. */
START_TEST(test_pmetrics_concurrent_updates_exact) {
  enum { CLIENTS = 8, ROUNDS = 200 };
  fixture f;
  int fd[CLIENTS];
  char buf[1], want[128];

  start(&f, test_backend(_i), "metered.so");
  for (int c = 0; c < CLIENTS; c++)
    fd[c] = test_connect(f.port);
  for (int r = 0; r < ROUNDS; r++) {
    for (int c = 0; c < CLIENTS; c++)
      test_send_all(fd[c], "x", 1);
    render(&f); /* while the workers count */
    ck_assert_ptr_nonnull(strstr(f.text, "meter_1_message_bytes_bucket" L ",le=\"+Inf\"} "));
    {
      const char *inf = strstr(f.text, ",le=\"+Inf\"} "), *cnt = strstr(f.text, "_count" L "} ");
      ck_assert_int_eq(atoi(inf + strlen(",le=\"+Inf\"} ")), atoi(cnt + strlen("_count" L "} ")));
    }
    for (int c = 0; c < CLIENTS; c++)
      ck_assert_int_eq(test_recv_exact(fd[c], buf, 1), 0);
  }
  render(&f);
  snprintf(want, sizeof(want), "meter_1_messages_total" L ",kind=\"other\"} %d\n",
           CLIENTS * ROUNDS);
  ck_assert_ptr_nonnull(strstr(f.text, want));
  snprintf(want, sizeof(want), "meter_1_message_bytes_count" L "} %d\n", CLIENTS * ROUNDS);
  ck_assert_ptr_nonnull(strstr(f.text, want));
  ck_assert_ptr_nonnull(strstr(f.text, "meter_1_sessions" L "} 8\n"));
  for (int c = 0; c < CLIENTS; c++)
    close(fd[c]);
  finish(&f);
}
END_TEST

/* A reload keeps every value: the new version declares the same metrics and
 * gets them back (with the first help text), its session (still open) is
 * still counted, a metric only the new version has joins, a redeclaration
 * with another type is refused (-EEXIST) and changes nothing, a metric
 * stays when the version that declared it is replaced again, and a rollback
 * finds them all as they were. */
START_TEST(test_pmetrics_reload_keeps_values) {
  fixture f;
  char msg[512];
  const char *t;
  int fd;

  start(&f, test_backend(_i), "metered.so");
  fd = test_connect(f.port);
  echo(fd, "ping");
  echo(fd, "other");

  copy_file(TP "/metered_v2.so", f.plugin);
  ck_assert_msg(host_reload(f.h, "meter-1", NULL, msg, sizeof(msg)) == 0, "%s", msg);
  ck_assert_ptr_nonnull(strstr(msg, "reloaded meter-1: generation 2, version 2.0.0"));
  echo(fd, "ping");
  t = render(&f);
  ck_assert_ptr_nonnull(strstr(t, "meter_1_messages_total" L ",kind=\"ping\"} 2\n"
                                  "meter_1_messages_total" L ",kind=\"other\"} 1\n"));
  ck_assert_ptr_nonnull(strstr(t, "meter_1_received_bytes_total" L "} 13\n"));
  ck_assert_ptr_nonnull(strstr(t, "# TYPE meter_1_sessions gauge\n"
                                  "meter_1_sessions" L "} 1\n"));
  ck_assert_ptr_nonnull(strstr(t, "meter_1_message_bytes_count" L "} 3\n"));
  ck_assert_ptr_nonnull(strstr(t, "# HELP meter_1_generation The generation of the code serving.\n"
                                  "# TYPE meter_1_generation gauge\n"
                                  "meter_1_generation" L "} 2\n"));
  ck_assert_ptr_nonnull(strstr(t, "# HELP meter_1_v2_only_total Only in version 2.\n"
                                  "# TYPE meter_1_v2_only_total counter\n"
                                  "meter_1_v2_only_total" L "} 1\n"));
  ck_assert_int_eq(test_count(t, "# TYPE "), 6); /* each family once */
  ck_assert_ptr_nonnull(strstr(test_rec_read(&f.rec),
                               "load gen=2 host ABI 1.3\n"
                               "declare messages_total: 0\n"
                               "declare received_bytes_total: 0\n"
                               "declare sessions: 0\n"
                               "declare message_bytes: 0\n"
                               "declare generation: 0\n"
                               "declare v2_only_total: 0\n"
                               "redeclare sessions as a counter: -17\n"));

  copy_file(TP "/metered.so", f.plugin);
  ck_assert_msg(host_reload(f.h, "meter-1", NULL, msg, sizeof(msg)) == 0, "%s", msg);
  echo(fd, "p");
  t = render(&f);
  ck_assert_ptr_nonnull(strstr(t, "meter_1_messages_total" L ",kind=\"ping\"} 3\n"));
  ck_assert_ptr_nonnull(strstr(t, "meter_1_sessions" L "} 1\n"));
  ck_assert_ptr_nonnull(strstr(t, "meter_1_generation" L "} 3\n"));
  ck_assert_ptr_nonnull(strstr(t, "meter_1_v2_only_total" L "} 1\n"));

  /* A new on_load that fails after declaring: the old version, restored,
   * declares them again and counts on. */
  ck_assert_int_eq(host_reload(f.h, "meter-1", "{\"refuse\":1}", msg, sizeof(msg)), -EINVAL);
  ck_assert_ptr_nonnull(strstr(msg, "restored as generation 5"));
  echo(fd, "p");
  t = render(&f);
  ck_assert_ptr_nonnull(strstr(t, "meter_1_messages_total" L ",kind=\"ping\"} 4\n"));
  ck_assert_ptr_nonnull(strstr(t, "meter_1_sessions" L "} 1\n"));
  ck_assert_ptr_nonnull(strstr(t, "meter_1_generation" L "} 5\n"));
  ck_assert_int_eq(test_count(t, "# TYPE "), 6);

  /* What a failed version declared is gone with it, so 64 failed attempts,
   * each with a metric of its own, leave the 64-metric limit as it was: a
   * good version after them still declares a new one. */
  for (int i = 0; i < 64; i++) {
    char cfg[512];
    snprintf(cfg, sizeof(cfg), "{\"out\":\"%s\",\"refuse\":1,\"extra\":\"attempt%d\"}",
             f.rec.path, i);
    ck_assert_int_eq(host_reload(f.h, "meter-1", cfg, msg, sizeof(msg)), -EINVAL);
  }
  ck_assert_ptr_nonnull(strstr(test_rec_read(&f.rec), "declare attempt63: 0\n"));
  t = render(&f);
  ck_assert_ptr_null(strstr(t, "attempt"));
  ck_assert_int_eq(test_count(t, "# TYPE "), 6);
  {
    char cfg[512];
    snprintf(cfg, sizeof(cfg), "{\"out\":\"%s\",\"extra\":\"after_all\"}", f.rec.path);
    ck_assert_msg(host_reload(f.h, "meter-1", cfg, msg, sizeof(msg)) == 0, "%s", msg);
  }
  ck_assert_ptr_nonnull(strstr(test_rec_read(&f.rec), "declare after_all: 0\n"));
  t = render(&f);
  ck_assert_ptr_nonnull(strstr(t, "# TYPE meter_1_after_all gauge\n"));
  ck_assert_ptr_nonnull(strstr(t, "meter_1_messages_total" L ",kind=\"ping\"} 4\n"));
  ck_assert_int_eq(test_count(t, "# TYPE "), 7);
  close(fd);
  finish(&f);
}
END_TEST

/* A reload run on a thread of its own, so the test can look on while the
 * new version's on_load holds. */
typedef struct reload_call {
  host *h;
  char cfg[512];
  int rc;
  char msg[HOST_MSG_MAX];
} reload_call;

static void *reload_thread(void *arg) {
  reload_call *c = arg;
  c->rc = host_reload(c->h, "meter-1", c->cfg, c->msg, sizeof(c->msg));
  return NULL;
}

/* Starts a reload of f's plugin with cfg + "hold", waits until its on_load
 * holds, and returns the version and generation stats (and so /metrics'
 * pier_plugin_info) show as serving meanwhile; *rc and msg get the reload's
 * outcome once the hold is released. */
static void reload_held(fixture *f, const char *cfg, host_plugin_stats *during, int *rc,
                        char *msg, size_t len) {
  reload_call c = {.h = f->h};
  char go[320];
  pthread_t t;
  int before = test_count(test_rec_read(&f->rec), "holding\n");
  snprintf(go, sizeof(go), "%s/go", f->dir);
  (void)unlink(go);
  snprintf(c.cfg, sizeof(c.cfg), "{\"out\":\"%s\",\"hold\":\"%s\"%s}", f->rec.path, go, cfg);
  ck_assert_int_eq(pthread_create(&t, NULL, reload_thread, &c), 0);
  ck_assert(test_rec_wait(&f->rec, "holding\n", before + 1, 10000));
  host_get_plugin_stats(f->h, 0, during);
  fclose(fopen(go, "w"));
  ck_assert_int_eq(pthread_join(t, NULL), 0);
  *rc = c.rc;
  snprintf(msg, len, "%s", c.msg);
}

/* While a new version's on_load runs, the version shown as serving is the
 * one that serves: a version its own on_load then refuses is never shown,
 * the restored one shows under its new generation, and a good version shows
 * once its on_load has returned. */
START_TEST(test_pmetrics_info_shows_the_serving_version_during_on_load) {
  fixture f;
  host_plugin_stats ps;
  char msg[HOST_MSG_MAX];
  int rc;

  start(&f, test_backend(_i), "metered.so");
  host_get_plugin_stats(f.h, 0, &ps);
  ck_assert_str_eq(ps.version, "1.0.0");
  ck_assert_uint_eq(ps.generation, 1);

  copy_file(TP "/metered_v2.so", f.plugin);
  reload_held(&f, ",\"refuse\":1", &ps, &rc, msg, sizeof(msg));
  ck_assert_str_eq(ps.version, "1.0.0");
  ck_assert_uint_eq(ps.generation, 1);
  ck_assert_int_eq(rc, -EINVAL);
  ck_assert_msg(strstr(msg, "(version 1.0.0) restored as generation 3") != NULL, "%s", msg);
  host_get_plugin_stats(f.h, 0, &ps);
  ck_assert_str_eq(ps.version, "1.0.0");
  ck_assert_uint_eq(ps.generation, 3);

  reload_held(&f, "", &ps, &rc, msg, sizeof(msg));
  ck_assert_str_eq(ps.version, "1.0.0");
  ck_assert_uint_eq(ps.generation, 3);
  ck_assert_msg(rc == 0, "%s", msg);
  ck_assert_msg(strstr(msg, "reloaded meter-1: generation 4, version 2.0.0") != NULL, "%s", msg);
  host_get_plugin_stats(f.h, 0, &ps);
  ck_assert_str_eq(ps.version, "2.0.0");
  ck_assert_uint_eq(ps.generation, 4);
  finish(&f);
}
END_TEST

/* A plugin built for ABI 1.1 loads and serves: it sees the host's 1.3 table
 * (and never the entries it does not know), and declares nothing. */
START_TEST(test_pmetrics_abi_1_1_plugin_still_loads) {
  fixture f;
  host_plugin_stats ps;
  int fd;

  start(&f, test_backend(_i), "metered_old.so");
  ck_assert_str_eq(test_rec_read(&f.rec), "load gen=1 host ABI 1.3\n");
  host_get_plugin_stats(f.h, 0, &ps);
  ck_assert_str_eq(ps.version, "1.1.0");
  fd = test_connect(f.port);
  echo(fd, "ping");
  ck_assert_str_eq(render(&f), "");
  close(fd);
  finish(&f);
}
END_TEST

/* Families are unique across plugins, and pierd's own prefixes are kept for
 * it: the second plugin to want a family is refused, and so is a plugin
 * whose name would put its metrics among pier_* (both logged). */
START_TEST(test_pmetrics_family_clash_refused) {
  test_daemon d;
  test_rec rec;
  char config[1024];

  test_rec_init(&rec);
  snprintf(config, sizeof(config),
           "{\"plugins\": [{\"name\": \"a_b\", \"path\": \"@TESTPLUGINS@/metered@EXT@\", "
           "\"config\": {\"out\": \"%s\"}},"
           " {\"name\": \"a\", \"path\": \"@TESTPLUGINS@/metered@EXT@\", "
           "\"config\": {\"out\": \"%s\", \"extra\": \"b_generation\"}},"
           " {\"name\": \"pier\", \"path\": \"@TESTPLUGINS@/metered@EXT@\", "
           "\"config\": {\"out\": \"%s\"}}],"
           " \"listeners\": [{\"port\": 0, \"plugin\": \"a_b\"}]}",
           rec.path, rec.path, rec.path);
  ck_assert_int_eq(test_daemon_start(&d, config, test_backend(_i)), 0);
  ck_assert_str_eq(test_rec_read(&rec),
                   "load gen=1 host ABI 1.3\n"
                   "declare messages_total: 0\n"
                   "declare received_bytes_total: 0\n"
                   "declare sessions: 0\n"
                   "declare message_bytes: 0\n"
                   "declare generation: 0\n"
                   "load gen=1 host ABI 1.3\n"
                   "declare messages_total: 0\n"
                   "declare received_bytes_total: 0\n"
                   "declare sessions: 0\n"
                   "declare message_bytes: 0\n"
                   "declare generation: 0\n"
                   "declare b_generation: -17\n"
                   "load gen=1 host ABI 1.3\n"
                   "declare messages_total: -22\n"
                   "declare received_bytes_total: -22\n"
                   "declare sessions: -22\n"
                   "declare message_bytes: -22\n"
                   "declare generation: -22\n");
  ck_assert(test_daemon_wait_log(
      &d, "plugin \"a\": metric \"b_generation\": its family a_b_generation is plugin \"a_b\"'s",
      5000));
  ck_assert(test_daemon_wait_log(&d,
                                 "plugin \"pier\": metric \"messages_total\": its family "
                                 "pier_messages_total would be among pierd's own metrics",
                                 5000));
  ck_assert_int_eq(test_daemon_quit(&d, 10000), 0);
  test_daemon_cleanup(&d);
  test_rec_free(&rec);
}
END_TEST

/* Sends one u16_size_id packet and reads one back; returns its id. */
static unsigned packet_exchange(int fd, unsigned id, const char *body) {
  unsigned char pkt[64], head[4], rest[600];
  size_t n = strlen(body), size;
  pkt[0] = (unsigned char)(n + 4);
  pkt[1] = 0;
  pkt[2] = (unsigned char)id;
  pkt[3] = 0;
  memcpy(pkt + 4, body, n);
  test_send_all(fd, pkt, n + 4);
  ck_assert_int_eq(test_recv_exact(fd, head, 4), 0);
  size = (size_t)(head[0] | head[1] << 8);
  ck_assert_uint_ge(size, 4);
  ck_assert_uint_le(size - 4, sizeof(rest));
  ck_assert_int_eq(test_recv_exact(fd, rest, size - 4), 0);
  return (unsigned)(head[2] | head[3] << 8);
}

#define CHAT_L "{plugin=\"chat\",kind="

/* The chat example counts its packets by kind, and a reload (the rooms are
 * handed over) keeps the counts. */
START_TEST(test_pmetrics_chat_counts_packets) {
  fixture f;
  char msg[512];
  int fd;

  start_as(&f, test_backend(_i), PIER_BINARY_DIR "/plugins/chat.so", "chat", "u16_size_id");
  fd = test_connect(f.port);
  ck_assert_uint_eq(packet_exchange(fd, 1, "lobby"), 102); /* the join notice */
  ck_assert_uint_eq(packet_exchange(fd, 2, "hi"), 101);    /* our own line back */
  ck_assert_str_eq(render(&f), "# HELP chat_packets_total Packets received, by kind.\n"
                               "# TYPE chat_packets_total counter\n"
                               "chat_packets_total" CHAT_L "\"join\"} 1\n"
                               "chat_packets_total" CHAT_L "\"chat\"} 1\n"
                               "chat_packets_total" CHAT_L "\"other\"} 0\n");
  ck_assert_msg(host_reload(f.h, "chat", NULL, msg, sizeof(msg)) == 0, "%s", msg);
  ck_assert_uint_eq(packet_exchange(fd, 2, "again"), 101); /* still in the room */
  ck_assert_ptr_nonnull(strstr(render(&f), "chat_packets_total" CHAT_L "\"chat\"} 2\n"));
  ck_assert_ptr_nonnull(strstr(f.text, "chat_packets_total" CHAT_L "\"join\"} 1\n"));
  close(fd);
  finish(&f);
}
END_TEST

/* Every limit in a real pierd: what each call returned (recorded by the
 * plugin) and the error lines the refusals log; an ABI 1.1 plugin serves in
 * the same daemon. */
START_TEST(test_pmetrics_limits_refused_and_logged) {
  test_daemon d;
  test_rec rec;
  char config[1024];
  int fd;

  test_rec_init(&rec);
  snprintf(config, sizeof(config),
           "{\"plugins\": [{\"name\": \"capped\", \"path\": \"@TESTPLUGINS@/metered@EXT@\", "
           "\"config\": {\"out\": \"%s\", \"caps\": 1}},"
           " {\"name\": \"old\", \"path\": \"@TESTPLUGINS@/metered_old@EXT@\"}],"
           " \"listeners\": [{\"port\": 0, \"plugin\": \"capped\"},"
           " {\"port\": 0, \"plugin\": \"old\"}]}",
           rec.path);
  ck_assert_int_eq(test_daemon_start(&d, config, test_backend(_i)), 0);
  ck_assert_str_eq(test_rec_read(&rec),
                   "load gen=1 host ABI 1.3\n"
                   "declare per_player_total: 0\n"
                   "series: 256 taken, then -28\n"
                   "series p7 again: 0, same handle: 1\n"
                   "metrics: 64 declared, then -28\n"
                   "per_player_total again: 0, same handle: 1\n"
                   "per_player_total as a gauge: -17\n"
                   "name 9lives: -22\n"
                   "name a:b: -22\n"
                   "name of 65 bytes: -22\n"
                   "9 labels: -22\n"
                   "label plugin: -22\n"
                   "label le on a histogram: -22\n"
                   "label twice: -22\n"
                   "bounds 1, 1: -22\n"
                   "bounds 1, inf: -22\n"
                   "no bounds: -22\n"
                   "help of 257 bytes: -22\n"
                   "help not UTF-8: -22\n"
                   "value of 129 bytes: -22\n"
                   "values NULL: -22\n"
                   "add -1 to a counter: -22\n"
                   "add NaN to a counter: -22\n"
                   "set a counter: -22\n"
                   "observe a counter: -22\n"
                   "add 2.5 to a counter: 0\n"
                   "declare with out NULL: -22\n"
                   "series with out NULL: -22\n");
  ck_assert(test_daemon_wait_log(
      &d,
      "plugin \"capped\": metric \"per_player_total\": more than 256 series "
      "(PIER_METRIC_SERIES_MAX); the new one is refused",
      5000));
  ck_assert(test_daemon_wait_log(
      &d, "plugin \"capped\": metric \"m64\": more than 64 metrics (PIER_METRICS_MAX); refused",
      5000));
  ck_assert(test_daemon_wait_log(&d,
                                 "plugin \"capped\": metric \"per_player_total\": declared before "
                                 "with another type, labels or bounds; it keeps those",
                                 5000));
  ck_assert(test_daemon_wait_log(
      &d,
      "plugin \"capped\": metric \"9lives\": the name must match [a-zA-Z_][a-zA-Z0-9_]* "
      "(1..64 bytes)",
      5000));
  ck_assert(test_daemon_wait_log(
      &d, "plugin \"capped\": metric \"g\": label 0: \"plugin\" is not a label name of its own",
      5000));
  ck_assert(test_daemon_wait_log(&d, "plugin \"old\": metered 1.1.0 from ", 1000));
  fd = test_connect(d.ports[1]);
  echo(fd, "ping");
  close(fd);
  ck_assert_int_eq(test_daemon_quit(&d, 10000), 0);
  test_daemon_cleanup(&d);
  test_rec_free(&rec);
}
END_TEST

/* In a real pierd: the refusals that have no metric to name, a histogram's
 * _bucket/_sum/_count meeting another family's name (in one plugin, either
 * way round, and across plugins after the <plugin>_ prefix), and the cap
 * on the samples of one plugin's series (a histogram series of 32 bounds
 * is 35 of them): each call's code and each error line. */
START_TEST(test_pmetrics_audit_refused_and_logged) {
  test_daemon d;
  test_rec rec;
  char config[1024], line[160];

  test_rec_init(&rec);
  snprintf(config, sizeof(config),
           "{\"plugins\": [{\"name\": \"audit\", \"path\": \"@TESTPLUGINS@/metered@EXT@\", "
           "\"config\": {\"out\": \"%s\", \"audit\": 1}},"
           " {\"name\": \"audit_h\", \"path\": \"@TESTPLUGINS@/metered@EXT@\", "
           "\"config\": {\"out\": \"%s\", \"extra\": \"sum\"}}],"
           " \"listeners\": [{\"port\": 0, \"plugin\": \"audit\"}]}",
           rec.path, rec.path);
  ck_assert_int_eq(test_daemon_start(&d, config, test_backend(_i)), 0);
  ck_assert_str_eq(test_rec_read(&rec),
                   "load gen=1 host ABI 1.3\n"
                   "spec NULL: -22\n"
                   "spec size 8: -22\n"
                   "labels NULL, nlabels 2: -22\n"
                   "series of NULL: -22\n"
                   "histogram h: 0\n"
                   "gauge h_sum: -17\n"
                   "gauge c_count: 0\n"
                   "histogram c: -17\n"
                   "histogram wide: 0\n"
                   "wide series: 233 taken, then -28\n" /* 5 + 233 * 35 = 8160 */
                   "gauges: 32 declared, then -28\n"    /* 8160 + 32 = 8192 */
                   "load gen=1 host ABI 1.3\n"
                   "declare messages_total: 0\n"
                   "declare received_bytes_total: 0\n"
                   "declare sessions: 0\n"
                   "declare message_bytes: 0\n"
                   "declare generation: 0\n"
                   "declare sum: -17\n");
  ck_assert(test_daemon_wait_log(&d, "plugin \"audit\": metric_declare: spec is NULL", 5000));
  snprintf(line, sizeof(line),
           "plugin \"audit\": metric_declare: spec->size is 8, less than "
           "sizeof(pier_metric_spec) (%zu)",
           sizeof(pier_metric_spec));
  ck_assert(test_daemon_wait_log(&d, line, 5000));
  ck_assert(test_daemon_wait_log(
      &d, "plugin \"audit\": metric \"unnamed\": 2 labels but no label names (labels is NULL)",
      5000));
  ck_assert(
      test_daemon_wait_log(&d, "plugin \"audit\": metric_series: the metric is NULL", 5000));
  ck_assert(test_daemon_wait_log(
      &d,
      "plugin \"audit\": metric \"h_sum\": gauge audit_h_sum would write audit_h_sum, as does "
      "the histogram audit_h of plugin \"audit\" (a histogram F also writes F_bucket, F_sum "
      "and F_count)",
      5000));
  ck_assert(test_daemon_wait_log(
      &d,
      "plugin \"audit\": metric \"c\": histogram audit_c would write audit_c_count, as does "
      "the gauge audit_c_count of plugin \"audit\" (a histogram F also writes F_bucket, F_sum "
      "and F_count)",
      5000));
  ck_assert(test_daemon_wait_log(&d,
                                 "plugin \"audit\": metric \"wide\": the plugin's metrics would "
                                 "render more than 8192 samples (PIER_METRIC_SAMPLES_MAX); the "
                                 "new series is refused",
                                 5000));
  ck_assert(test_daemon_wait_log(&d,
                                 "plugin \"audit\": metric \"g33\": the plugin's metrics would "
                                 "render more than 8192 samples (PIER_METRIC_SAMPLES_MAX); the "
                                 "new series is refused",
                                 5000));
  ck_assert(test_daemon_wait_log(
      &d,
      "plugin \"audit_h\": metric \"sum\": gauge audit_h_sum would write audit_h_sum, as does "
      "the histogram audit_h of plugin \"audit\" (a histogram F also writes F_bucket, F_sum "
      "and F_count)",
      5000));
  ck_assert_int_eq(test_daemon_quit(&d, 10000), 0);
  test_daemon_cleanup(&d);
  test_rec_free(&rec);
}
END_TEST

int main(void) {
  Suite *s = suite_create("pmetrics");
  TCase *tc = tcase_create("host");
  tcase_set_timeout(tc, 120);
  tcase_add_loop_test(tc, test_pmetrics_rendered_under_the_plugin_name, 0, TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_pmetrics_concurrent_updates_exact, 0, TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_pmetrics_reload_keeps_values, 0, TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_pmetrics_info_shows_the_serving_version_during_on_load, 0,
                      TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_pmetrics_abi_1_1_plugin_still_loads, 0, TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_pmetrics_limits_refused_and_logged, 0, TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_pmetrics_chat_counts_packets, 0, TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_pmetrics_family_clash_refused, 0, TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_pmetrics_audit_refused_and_logged, 0, TEST_NBACKENDS);
  suite_add_tcase(s, tc);
  return test_run(s);
}
