/* Test plugin for plugin metrics (ABI 1.2): echoes what it receives (raw
 * listeners) and counts it in its own metrics:
 *   messages_total{kind}   counter, kind "ping" for data starting with 'p',
 *                          else "other"
 *   received_bytes_total   counter
 *   sessions               gauge, +1 on connect, -1 on disconnect
 *   message_bytes          histogram of the read sizes, bounds 2, 4, 8
 *   generation             gauge, set by on_load to its generation
 * It records to the file named by its config ("out") one line per on_load,
 * with what each declaration returned; with "refuse":1 in its config,
 * on_load declares them and then fails; with "extra":"NAME" it also
 * declares a gauge NAME; with "hold":"PATH", on_load records "holding" and
 * then waits (up to 30 s) for PATH to exist before it returns. Built three
 * ways:
 *   metered.so      as above; with "caps":1 in its config, on_load instead
 *                   runs into every limit and records each result; with
 *                   "audit":1, into the misuses, the histogram suffix
 *                   clashes and the cap on samples per plugin
 *   metered_v2.so   (METERED_V2) version 2.0.0: the same metrics (the
 *                   generation's with other help text), plus v2_only_total,
 *                   and a "sessions" redeclared as a counter (refused: it
 *                   keeps its type)
 *   metered_old.so  (METERED_OLD_ABI) a descriptor of ABI 1.1 that never
 *                   touches the 1.2 entries: an older plugin that must load */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "pier/plugin.h"

#if !defined(O_CLOEXEC) && defined(O_NOINHERIT)
#define O_CLOEXEC O_NOINHERIT
#endif

static const pier_host *host;
static int out_fd = -1;

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

/* The string value of "key" in compact JSON (no escapes) into out, or "". */
static void json_str(const char *json, const char *key, char *out, size_t cap) {
  char k[64];
  const char *p;
  size_t n = 0;
  snprintf(k, sizeof(k), "\"%s\":\"", key);
  if ((p = strstr(json, k)) != NULL)
    for (p += strlen(k); *p && *p != '"' && n < cap - 1;)
      out[n++] = *p++;
  out[n] = '\0';
}

static void open_out(const char *json) {
  char path[256];
  json_str(json, "out", path, sizeof(path));
  if (!*path)
    return;
  if (out_fd >= 0)
    close(out_fd);
  out_fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
}

#ifndef METERED_OLD_ABI
static pier_series *ping, *other, *bytes, *sessions, *sizes, *gen;

static int declare(pier_metric_type type, const char *name, const char *help,
                   const char *const *labels, size_t nlabels, const double *bounds,
                   size_t nbounds, pier_metric **m) {
  pier_metric_spec s = {sizeof(s), type, name, help, labels, nlabels, bounds, nbounds};
  return host->metric_declare(host, &s, m);
}

/* A metric without labels: its one series. */
static pier_series *plain(pier_metric_type type, const char *name, const char *help) {
  pier_metric *m;
  pier_series *s = NULL;
  int rc = declare(type, name, help, NULL, 0, NULL, 0, &m);
  if (rc == 0)
    rc = host->metric_series(host, m, NULL, &s);
  record("declare %s: %d", name, rc);
  return s;
}

static void declare_all(unsigned generation) {
  static const char *const kind[] = {"kind"};
  static const char *const v_ping[] = {"ping"}, *const v_other[] = {"other"};
  static const double bounds[] = {2, 4, 8};
  pier_metric *m;
  int rc = declare(PIER_METRIC_COUNTER, "messages_total", "Messages received, by kind.", kind, 1,
                   NULL, 0, &m);
  if (rc == 0)
    rc = host->metric_series(host, m, v_ping, &ping);
  if (rc == 0)
    rc = host->metric_series(host, m, v_other, &other);
  record("declare messages_total: %d", rc);
  bytes = plain(PIER_METRIC_COUNTER, "received_bytes_total", "Bytes received.");
  sessions = plain(PIER_METRIC_GAUGE, "sessions", "Sessions open now.");
  rc = declare(PIER_METRIC_HISTOGRAM, "message_bytes", "Sizes of the reads.", NULL, 0, bounds, 3,
               &m);
  if (rc == 0)
    rc = host->metric_series(host, m, NULL, &sizes);
  record("declare message_bytes: %d", rc);
#ifdef METERED_V2
  gen = plain(PIER_METRIC_GAUGE, "generation", "Help that version 2 would have.");
#else
  gen = plain(PIER_METRIC_GAUGE, "generation", "The generation of the code serving.");
#endif
  host->metric_set(host, gen, generation);
#ifdef METERED_V2
  host->metric_add(host, plain(PIER_METRIC_COUNTER, "v2_only_total", "Only in version 2."), 1);
  record("redeclare sessions as a counter: %d",
         declare(PIER_METRIC_COUNTER, "sessions", "Now a counter.", NULL, 0, NULL, 0, &m));
#endif
}

/* on_load with "caps":1: every limit, in an order that puts the refusals
 * the tests read from the log first (the log keeps 10 lines a second). */
static void run_into_limits(void) {
  static const char *const player[] = {"player"};
  static const char *const nine[] = {"a", "b", "c", "d", "e", "f", "g", "h", "i"};
  static const char *const own[] = {"plugin"}, *const le[] = {"le"}, *const twice[] = {"a", "a"};
  static const double flat[] = {1, 1}, inf[] = {1, INFINITY};
  char name[80], value[160], help[300];
  const char *v[1] = {value};
  pier_metric *m, *again;
  pier_series *s, *s7 = NULL, *s7b = NULL;
  int ok = 0, rc;

  rc = declare(PIER_METRIC_COUNTER, "per_player_total", "By player.", player, 1, NULL, 0, &m);
  record("declare per_player_total: %d", rc);
  for (int i = 0; i <= PIER_METRIC_SERIES_MAX; i++) {
    snprintf(value, sizeof(value), "p%d", i);
    if ((rc = host->metric_series(host, m, v, &s)) == 0)
      ok++;
    if (i == 7)
      s7 = s;
  }
  record("series: %d taken, then %d", ok, rc);
  snprintf(value, sizeof(value), "p7");
  rc = host->metric_series(host, m, v, &s7b);
  record("series p7 again: %d, same handle: %d", rc, s7b == s7);

  for (ok = 1; ok <= PIER_METRICS_MAX; ok++) { /* per_player_total is one */
    snprintf(name, sizeof(name), "m%d", ok);
    if ((rc = declare(PIER_METRIC_GAUGE, name, "Filler.", NULL, 0, NULL, 0, &again)) < 0)
      break;
  }
  record("metrics: %d declared, then %d", ok, rc);

  rc = declare(PIER_METRIC_COUNTER, "per_player_total", "By player.", player, 1, NULL, 0, &again);
  record("per_player_total again: %d, same handle: %d", rc, again == m);
  record("per_player_total as a gauge: %d",
         declare(PIER_METRIC_GAUGE, "per_player_total", "x", player, 1, NULL, 0, &again));
  record("name 9lives: %d", declare(PIER_METRIC_GAUGE, "9lives", "x", NULL, 0, NULL, 0, &again));
  record("name a:b: %d", declare(PIER_METRIC_GAUGE, "a:b", "x", NULL, 0, NULL, 0, &again));
  memset(name, 'n', 65);
  name[65] = '\0';
  record("name of 65 bytes: %d", declare(PIER_METRIC_GAUGE, name, "x", NULL, 0, NULL, 0, &again));
  record("9 labels: %d", declare(PIER_METRIC_GAUGE, "g", "x", nine, 9, NULL, 0, &again));
  record("label plugin: %d", declare(PIER_METRIC_GAUGE, "g", "x", own, 1, NULL, 0, &again));
  record("label le on a histogram: %d",
         declare(PIER_METRIC_HISTOGRAM, "h", "x", le, 1, flat, 1, &again));
  record("label twice: %d", declare(PIER_METRIC_GAUGE, "g", "x", twice, 2, NULL, 0, &again));
  record("bounds 1, 1: %d", declare(PIER_METRIC_HISTOGRAM, "h", "x", NULL, 0, flat, 2, &again));
  record("bounds 1, inf: %d", declare(PIER_METRIC_HISTOGRAM, "h", "x", NULL, 0, inf, 2, &again));
  record("no bounds: %d", declare(PIER_METRIC_HISTOGRAM, "h", "x", NULL, 0, NULL, 0, &again));
  memset(help, 'h', 257);
  help[257] = '\0';
  record("help of 257 bytes: %d", declare(PIER_METRIC_GAUGE, "g", help, NULL, 0, NULL, 0, &again));
  record("help not UTF-8: %d", declare(PIER_METRIC_GAUGE, "g", "\xc3(", NULL, 0, NULL, 0, &again));
  memset(value, 'v', 129);
  value[129] = '\0';
  record("value of 129 bytes: %d", host->metric_series(host, m, v, &s));
  record("values NULL: %d", host->metric_series(host, m, NULL, &s));
  record("add -1 to a counter: %d", host->metric_add(host, s7, -1));
  record("add NaN to a counter: %d", host->metric_add(host, s7, NAN));
  record("set a counter: %d", host->metric_set(host, s7, 5));
  record("observe a counter: %d", host->metric_observe(host, s7, 5));
  record("add 2.5 to a counter: %d", host->metric_add(host, s7, 2.5));
  {
    pier_metric_spec spec = {sizeof(spec), PIER_METRIC_GAUGE, "g", "x", NULL, 0, NULL, 0};
    record("declare with out NULL: %d", host->metric_declare(host, &spec, NULL));
  }
  record("series with out NULL: %d", host->metric_series(host, m, v, NULL));
}

/* on_load with "audit":1: the refusals that name no metric, the clashes of
 * a histogram's _bucket/_sum/_count with other families, and the cap on
 * the sample lines of the plugin's series, each logging one line (nine in
 * all with the clash the tests add from a second plugin: under the log's
 * ten a second). */
static void run_audit(void) {
  static const char *const player[] = {"player"};
  static const double one[] = {1};
  double wide[PIER_METRIC_BOUNDS_MAX];
  pier_metric_spec small = {8, PIER_METRIC_GAUGE, "small", "x", NULL, 0, NULL, 0};
  pier_metric_spec unnamed = {sizeof(unnamed), PIER_METRIC_GAUGE, "unnamed", "x", NULL, 2, NULL,
                              0};
  char name[16], value[16];
  const char *v[1] = {value};
  pier_metric *m;
  pier_series *s;
  int ok, rc;

  record("spec NULL: %d", host->metric_declare(host, NULL, &m));
  record("spec size 8: %d", host->metric_declare(host, &small, &m));
  record("labels NULL, nlabels 2: %d", host->metric_declare(host, &unnamed, &m));
  record("series of NULL: %d", host->metric_series(host, NULL, NULL, &s));
  record("histogram h: %d", declare(PIER_METRIC_HISTOGRAM, "h", "x", NULL, 0, one, 1, &m));
  record("gauge h_sum: %d", declare(PIER_METRIC_GAUGE, "h_sum", "x", NULL, 0, NULL, 0, &m));
  record("gauge c_count: %d", declare(PIER_METRIC_GAUGE, "c_count", "x", NULL, 0, NULL, 0, &m));
  record("histogram c: %d", declare(PIER_METRIC_HISTOGRAM, "c", "x", NULL, 0, one, 1, &m));

  for (int i = 0; i < PIER_METRIC_BOUNDS_MAX; i++)
    wide[i] = i + 1;
  rc = declare(PIER_METRIC_HISTOGRAM, "wide", "x", player, 1, wide, PIER_METRIC_BOUNDS_MAX, &m);
  record("histogram wide: %d", rc);
  for (ok = 0; ok < PIER_METRIC_SERIES_MAX; ok++) {
    snprintf(value, sizeof(value), "p%d", ok);
    if ((rc = host->metric_series(host, m, v, &s)) < 0)
      break;
  }
  record("wide series: %d taken, then %d", ok, rc);
  for (ok = 0; ok < PIER_METRICS_MAX; ok++) {
    snprintf(name, sizeof(name), "g%d", ok + 1);
    if ((rc = declare(PIER_METRIC_GAUGE, name, "x", NULL, 0, NULL, 0, &m)) < 0)
      break;
  }
  record("gauges: %d declared, then %d", ok, rc);
}
#endif

static int metered_load(const pier_load_args *a) {
#ifndef METERED_OLD_ABI
  char extra[80], hold[256];
#endif
  host = a->host;
  open_out(a->config_json);
  record("load gen=%u host ABI %u.%u", a->generation, host->abi_major, host->abi_minor);
#ifndef METERED_OLD_ABI
  if (host->size < offsetof(pier_host, metric_observe) + sizeof(host->metric_observe))
    return -ENOSYS;
  if (strstr(a->config_json, "\"caps\":1"))
    run_into_limits();
  else if (strstr(a->config_json, "\"audit\":1"))
    run_audit();
  else
    declare_all(a->generation);
  json_str(a->config_json, "extra", extra, sizeof(extra));
  if (*extra) {
    pier_metric *m;
    record("declare %s: %d", extra,
           declare(PIER_METRIC_GAUGE, extra, "Extra.", NULL, 0, NULL, 0, &m));
  }
  json_str(a->config_json, "hold", hold, sizeof(hold));
  if (*hold) {
    record("holding");
    for (int i = 0; i < 3000 && access(hold, F_OK) != 0; i++)
      usleep(10000);
  }
  if (strstr(a->config_json, "\"refuse\":1"))
    return -EINVAL; /* after declaring: a rollback must find them as they were */
#endif
  return 0;
}

static void metered_connected(pier_sid sid, const char *peer) {
  (void)sid;
  (void)peer;
#ifndef METERED_OLD_ABI
  host->metric_add(host, sessions, 1);
#endif
}

static void metered_recv(pier_sid sid, const void *data, size_t len) {
#ifndef METERED_OLD_ABI
  host->metric_add(host, len && *(const char *)data == 'p' ? ping : other, 1);
  host->metric_add(host, bytes, (double)len);
  host->metric_observe(host, sizes, (double)len);
#endif
  host->send(host, sid, data, len);
}

static void metered_disconnected(pier_sid sid, pier_reason reason) {
  (void)sid;
  (void)reason;
#ifndef METERED_OLD_ABI
  host->metric_add(host, sessions, -1);
#endif
}

#ifdef METERED_OLD_ABI
/* What PIER_PLUGIN wrote when the header said ABI 1.1: pier_plugin ended
 * at on_tick (1.3 added on_message and on_node), so its size says so and
 * the host must read nothing past it. */
PIER_EXPORT const pier_plugin pier_plugin_descriptor = {
    .magic = PIER_PLUGIN_MAGIC,
    .abi_major = 1,
    .abi_minor = 1,
    .size = offsetof(pier_plugin, on_message),
    .name = "metered",
    .version = "1.1.0",
    .on_load = metered_load,
    .on_connected = metered_connected,
    .on_recv = metered_recv,
    .on_disconnected = metered_disconnected,
};
#else
#ifdef METERED_V2
#define METERED_VERSION "2.0.0"
#else
#define METERED_VERSION "1.0.0"
#endif
PIER_PLUGIN("metered", METERED_VERSION, .on_load = metered_load,
            .on_connected = metered_connected, .on_recv = metered_recv,
            .on_disconnected = metered_disconnected);
#endif
