/* pier plugin SDK: the only header a content plugin includes.
 *
 * A plugin is a shared library that exports one descriptor (a `pier_plugin`
 * named `pier_plugin_descriptor`), made with PIER_PLUGIN(...). The daemon
 * loads it as server.json says, checks the descriptor's magic, ABI version
 * and size, and calls its callbacks. The
 * host's services reach the plugin as a function table (const pier_host *)
 * handed to on_load: plugins never link against the daemon.
 *
 * ABI rule: a plugin built for ABI major.minor loads into a host with the
 * same major and a minor >= the plugin's. Structs only grow at the end and
 * start with their size, so either side can tell which fields the other has.
 *
 * Threads: with "threading": "session" (default) all callbacks of one session
 * run on that session's worker, in order, never concurrently; callbacks of
 * different sessions may run at the same time on different workers. With
 * "threading": "serial" every callback of the plugin runs one at a time, so
 * plugin state needs no locks. Every host function may be called from any
 * thread.
 *
 * Hot reload (`reload NAME`, pierctl, SIGHUP, or "watch": true) swaps a
 * plugin's code while its sessions stay connected, as one state machine
 * (docs/RELOAD.md):
 *   1. load+check: the new file is loaded from a private copy and checked
 *      (ABI, and a descriptor with the running version's name); if that
 *      fails nothing changes;
 *   2. quiesce: the running version is paused between two callbacks. Events
 *      that arrive meanwhile are held, in order; past limits.recv_backlog
 *      bytes held for one session (limits.plugin_backlog for the plugin)
 *      pier stops reading that session, so TCP flow control holds the rest;
 *   3. hand-off: the old version's on_unload may fill a pier_state; the
 *      timers it started and the jobs it posted are cancelled (they point
 *      into code that is unloaded); the new version's on_load gets the
 *      state and a generation never used before;
 *   4. resume: held events go to the new version, each on its session's
 *      worker (serial plugins: on the strand), in order, through the same
 *      watchdog and quarantine as any callback; the host's on_tick carries
 *      on;
 *   rollback: if the new on_load fails, its timers are cancelled and its
 *      code unloaded; the old code and its config text come back and its
 *      on_load runs again with the same state and the next unused
 *      generation (it starts its own timers again); held events go to it.
 *      If that on_load fails too, the plugin is quarantined.
 * A generation is used once: nothing queued under an earlier generation, or
 * by a version whose on_load failed, ever runs. The outcome of the last
 * failed reload shows in `plugins`.
 * Per-session user data (set_user) stays with each session across a reload:
 * it must point to memory that outlives the old image (malloc'd, not a
 * static of the plugin), and the new version must understand its layout
 * (keep a version field in it, or convert it in on_load via sessions()).
 *
 * Backpressure: events waiting for a plugin (held for a reload, or queued
 * on a busy serial plugin's strand) count toward limits.recv_backlog per
 * session and limits.plugin_backlog per plugin; past them pier stops reading
 * the sessions concerned until their events are delivered. Nothing a client
 * sent is dropped or reordered. A timer firing that has to wait is queued
 * once: further firings are skipped until it ran. */
#ifndef PIER_PLUGIN_H
#define PIER_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#include "pier/types.h"

#ifdef __cplusplus
extern "C" {
#endif

#define PIER_ABI_MAJOR 1
#define PIER_ABI_MINOR 3
#define PIER_PLUGIN_MAGIC 0x52454950u /* "PIER" */

/* printf-style checking of h->log's format where the compiler has it. The
 * host formats with a C99 printf on every platform (on mingw its own, which
 * GCC calls gnu_printf there). */
#if defined(__MINGW32__)
#define PIER_PRINTF(fmt, args) __attribute__((format(gnu_printf, fmt, args)))
#elif defined(__GNUC__)
#define PIER_PRINTF(fmt, args) __attribute__((format(printf, fmt, args)))
#else
#define PIER_PRINTF(fmt, args)
#endif

typedef enum pier_log_level {
  PIER_LOG_ERROR = 0,
  PIER_LOG_WARN = 1,
  PIER_LOG_INFO = 2,
  PIER_LOG_DEBUG = 3
} pier_log_level;

typedef struct pier_host pier_host;

/* What on_load gets. */
typedef struct pier_load_args {
  uint32_t size;           /* sizeof(pier_load_args) of the host */
  const pier_host *host;   /* valid until on_unload returns */
  const char *config_json; /* this plugin's "config" object from server.json, as JSON text */
  const void *state;       /* handed over by the previous version's on_unload, else NULL */
  size_t state_len;
  unsigned generation;     /* 1 for the first load; every later on_load (a reload, or the
                              old version restored after a failed one) gets a higher one,
                              never used before */
} pier_load_args;

/* What on_unload may hand to the next version: set data to a malloc'd block
 * (the host frees it with free()) and len to its size. */
typedef struct pier_state {
  void *data;
  size_t len;
} pier_state;

typedef void (*pier_timer_fn)(void *arg);
typedef void (*pier_job_fn)(void *arg);

/* ---- plugin metrics (ABI 1.2) ----
 * A plugin declares counters, gauges and histograms (metric_declare), gets
 * one series handle per combination of label values (metric_series), and
 * updates it from any thread (metric_add, metric_set, metric_observe: lock
 * free, a few atomic operations, never a system call). pierd serves them
 * with its own metrics (/metrics, the `metrics` command) as the family
 * "<plugin>_<name>" (the plugin's server.json name, '-' written as '_' and a
 * '_' in front of a leading digit), each series with the label
 * plugin="<plugin>" before the plugin's own labels.
 *
 * The host keeps the metrics, not the plugin's image: a reloaded version
 * that declares a metric again with the same name, type, labels and bounds
 * gets the same handle and its series keep their values (a counter does not
 * restart at 0). Handles stay valid until pierd exits, even across reloads;
 * a declared metric stays on /metrics until then, with its last values.
 *
 * Limits (each refusal is logged, naming the plugin and the metric, or the
 * entry when there is no metric to name):
 * -ENOSPC past PIER_METRICS_MAX metrics per plugin, PIER_METRIC_SERIES_MAX
 * series per metric, or PIER_METRIC_SAMPLES_MAX sample lines across all of a
 * plugin's series (one per counter or gauge series, nbounds + 3 per
 * histogram series: its buckets with +Inf, _sum and _count), which bounds
 * what one scrape renders; -EINVAL for a NULL spec, metric or out, a
 * spec->size below sizeof(pier_metric_spec), labels NULL with nlabels > 0,
 * a name that is not [a-zA-Z_][a-zA-Z0-9_]* (at most PIER_METRIC_NAME_MAX
 * bytes; label names likewise, not starting with "__", not "plugin", not
 * "le" on a histogram, no two alike), more than
 * PIER_METRIC_LABELS_MAX labels, help over PIER_METRIC_HELP_MAX bytes, a
 * label value over PIER_METRIC_VALUE_MAX bytes, text that is not UTF-8, or
 * histogram bounds that are not finite and strictly ascending (1 to
 * PIER_METRIC_BOUNDS_MAX of them), or a family starting with "pier_" or
 * "process_" (pierd's own); -EEXIST for a name already declared with another
 * type, labels or bounds, or whose family another plugin has, or whose
 * sample names meet another family's (a histogram F also writes F_bucket,
 * F_sum and F_count: a gauge F_sum beside it, of this plugin or another
 * after the <plugin>_ prefix, is refused, and so is a histogram F when a
 * family F_count exists). */
#define PIER_METRICS_MAX 64
#define PIER_METRIC_SERIES_MAX 256
#define PIER_METRIC_SAMPLES_MAX 8192
#define PIER_METRIC_LABELS_MAX 8
#define PIER_METRIC_BOUNDS_MAX 32
#define PIER_METRIC_NAME_MAX 64
#define PIER_METRIC_HELP_MAX 256
#define PIER_METRIC_VALUE_MAX 128

typedef enum pier_metric_type {
  PIER_METRIC_COUNTER = 0,  /* only goes up: metric_add with v >= 0 */
  PIER_METRIC_GAUGE = 1,    /* metric_set, metric_add (v may be negative) */
  PIER_METRIC_HISTOGRAM = 2 /* metric_observe */
} pier_metric_type;

typedef struct pier_metric_spec {
  uint32_t size;              /* sizeof(pier_metric_spec) */
  pier_metric_type type;
  const char *name;           /* "messages_total": shown as <plugin>_messages_total */
  const char *help;           /* one line for # HELP (NULL: none) */
  const char *const *labels;  /* nlabels label names */
  size_t nlabels;
  const double *bounds;       /* histogram: upper bounds of the buckets, ascending; */
  size_t nbounds;             /* a last bucket, +Inf, is implied */
} pier_metric_spec;

typedef struct pier_metric pier_metric; /* a declared metric (host-owned) */
typedef struct pier_series pier_series; /* one set of label values of one (host-owned) */

/* ---- the cluster bus (ABI 1.3) ----
 * With "cluster" in server.json, pierd joins a NATS bus and plugins on
 * different nodes talk through it. A plugin's subjects are its own: "a.b"
 * is "<subject_prefix>.<plugin>.a.b" on the bus, so the same plugin on every
 * node meets there, and no other plugin's traffic reaches it. A subject is
 * 1..PIER_SUBJECT_MAX bytes of '.'-separated tokens, each non-empty, of
 * visible ASCII (no space, no '*' or '>' in a token); subscribe also takes the NATS
 * wildcards: '*' as a whole token (any one token), '>' as the last token (one
 * or more). A payload is 0..PIER_BUS_PAYLOAD_MAX bytes (and at most what
 * the NATS server allows).
 *
 * Messages arrive in on_message as callbacks of the plugin (serial: on its
 * strand; "session": on worker 0), never on the bus client's threads, in
 * the order the bus delivered them (one publisher's messages to one subject
 * space keep their order). Each subscription holds at most
 * cluster.max_pending messages (and cluster.max_pending_bytes) waiting for
 * the plugin; past that, new ones are dropped, counted in `status` and
 * /metrics, and logged (once a second per subscription, with the number
 * dropped in that second), as NATS does for a slow consumer; once the plugin
 * has caught up, messages are delivered again.
 *
 * Subscriptions belong to the plugin, not to its code: they stay across a
 * reload, and messages that arrive during one are held and given to the new
 * version (subscribing again to a subject already subscribed is a no-op
 * that returns 0). What a reload's on_unload and new on_load change takes
 * effect only if the reload succeeds: after a rollback the subscriptions
 * are exactly what they were before it. A request's reply (or its timeout)
 * goes to the version that made it; after a reload it is dropped.
 *
 * Without "cluster" (and on a build without a NATS client) every bus entry
 * returns -ENOTSUP and node() returns NULL. Errors: -EINVAL (NULL, a bad
 * subject, a wildcard given to publish/request, a NULL cb), -EMSGSIZE (a
 * payload too large), -ENOSPC (more than PIER_SUBSCRIPTIONS_MAX
 * subscriptions, or PIER_REQUESTS_MAX requests waiting), -ENOENT
 * (unsubscribe of a subject not subscribed), -ENOBUFS (the bus is
 * disconnected and finds its reconnect buffer full: the message is dropped and
 * counted), -ECANCELED (the daemon is stopping). While the bus is
 * disconnected, publish buffers (up to cluster.reconnect_buffer) and sends on
 * reconnect. */
#define PIER_SUBJECT_MAX 200
#define PIER_BUS_PAYLOAD_MAX (1024 * 1024)
#define PIER_SUBSCRIPTIONS_MAX 1024
#define PIER_REQUESTS_MAX 65536

/* A request's outcome, as a callback of the plugin that made it: status 0
 * with the reply's bytes (valid during the call only), -ETIMEDOUT when no
 * reply came within timeout_ms, -EHOSTUNREACH when nobody subscribes to the
 * subject, or -ECANCELED (the daemon is stopping: data is NULL). */
typedef void (*pier_reply_fn)(void *arg, int status, const void *data, size_t len);

/* Host services. Each takes the pier_host the plugin was given, first.
 * Returns: 0 or a negative errno-style code. -ENOTCONN: the session is gone
 * (a stale id never reaches another player). */
struct pier_host {
  uint32_t size; /* sizeof(pier_host) of the host: entries past it are absent */
  uint16_t abi_major, abi_minor;

  /* Copies len bytes into the session's send queue. -ENOBUFS: the queue was
   * over max_send_queue and the session is being disconnected (from a
   * thread other than the session's worker, sends waiting for that worker
   * count against it too, their bytes and about 180 bytes each). */
  int (*send)(const pier_host *h, pier_sid sid, const void *data, size_t len);
  /* Sends one u16_size_id packet: header (size = len + 4, id) then body.
   * -EMSGSIZE if len > 65531 (whatever len is: no wrap-around). */
  int (*send_packet)(const pier_host *h, pier_sid sid, uint16_t id, const void *body, size_t len);
  /* One shared copy of data queued to every live id; returns how many got it. */
  size_t (*broadcast)(const pier_host *h, const pier_sid *sids, size_t n, const void *data,
                      size_t len);
  /* Graceful close: queued data is sent first; on_disconnected gets reason. */
  int (*close)(const pier_host *h, pier_sid sid, pier_reason reason);
  /* Per-session pointer owned by the plugin; it stays with the session across
   * a reload of the plugin. get returns NULL for a stale id. */
  int (*set_user)(const pier_host *h, pier_sid sid, void *user);
  void *(*get_user)(const pier_host *h, pier_sid sid);
  /* "1.2.3.4:5678" / "[::1]:5678" into buf. */
  int (*peer)(const pier_host *h, pier_sid sid, char *buf, size_t len);
  /* Calls fn(arg) after after_ms, then every repeat_ms if non-zero, as a
   * callback of this plugin (serial plugins: on their strand; "session"
   * plugins: on worker 0). *id names it for timer_cancel. Timers end when
   * the plugin unloads or is reloaded (whether the reload succeeds or not).
   * A delay too large to represent means "never". A firing that cannot run
   * at once (held, or behind on the strand) is queued once; further firings
   * are skipped until it ran. -EAGAIN when the plugin already has 65,536
   * timers. */
  int (*timer_start)(const pier_host *h, uint64_t after_ms, uint64_t repeat_ms, pier_timer_fn fn,
                     void *arg, uint64_t *id);
  /* After it returns the timer never fires again (-ENOENT if unknown). */
  int (*timer_cancel)(const pier_host *h, uint64_t id);
  void (*log)(const pier_host *h, pier_log_level level, const char *fmt, ...)
      PIER_PRINTF(3, 4);
  /* Ids of the open sessions of this plugin's listeners: up to max written to
   * out; returns the total. */
  size_t (*sessions)(const pier_host *h, pier_sid *out, size_t max);
  /* Runs fn(arg) later as a callback of this plugin (serial: on its strand;
   * else on worker 0). Dropped if the plugin is reloaded before it runs
   * (whether the reload succeeds or not). -EAGAIN when 65,536 posted jobs of
   * this plugin have not run yet. */
  int (*post)(const pier_host *h, pier_job_fn fn, void *arg);
  /* Monotonic milliseconds. */
  uint64_t (*now)(const pier_host *h);
  /* Text for a disconnect reason. */
  const char *(*reason_text)(pier_reason reason);

  /* ABI 1.1. Reports that the plugin failed to do its job (reason is logged).
   * With limits.quarantine_after set, a plugin that fails that many times
   * (slow callbacks count too) is quarantined: its sessions are closed with
   * PIER_REASON_PLUGIN_ERROR, new ones are refused, and it gets no callback
   * until it is reloaded. Check h->size before using it. */
  int (*fail)(const pier_host *h, const char *reason);

  /* ABI 1.2: plugin metrics (see pier_metric_spec above). Check h->size (or
   * h->abi_minor >= 2) before using them.
   * Declares a metric, or finds the one this plugin declared before under
   * that name (by any version) if type, labels and bounds match (the help
   * text stays the first one's). Any thread; the spec's strings are copied. */
  int (*metric_declare)(const pier_host *h, const pier_metric_spec *spec, pier_metric **out);
  /* The series of m for values (one per label name, in the spec's order;
   * NULL when m has no labels), created at 0 the first time. Any thread; it
   * takes a lock, so keep the handle rather than asking on every update. */
  int (*metric_series)(const pier_host *h, pier_metric *m, const char *const *values,
                       pier_series **out);
  /* Updates, from any thread, without a lock. -EINVAL for NULL, the wrong
   * type (add: counters and gauges; set: gauges only; observe: histograms
   * only), a negative or NaN add to a counter, a NaN observation. */
  int (*metric_add)(const pier_host *h, pier_series *s, double v);
  int (*metric_set)(const pier_host *h, pier_series *s, double v);
  int (*metric_observe)(const pier_host *h, pier_series *s, double v);

  /* ABI 1.3: the cluster bus (see above). Check h->size (or h->abi_minor >=
   * 3) before using them.
   * This node's name (cluster.node), or NULL without a cluster. */
  const char *(*node)(const pier_host *h);
  /* Sends data to every subscriber of subject, on every node (this one too:
   * a plugin subscribed to what it publishes gets its own messages). */
  int (*publish)(const pier_host *h, const char *subject, const void *data, size_t len);
  int (*subscribe)(const pier_host *h, const char *subject);
  int (*unsubscribe)(const pier_host *h, const char *subject);
  /* Publishes data to subject with a reply address; cb(arg, ...) gets the
   * first reply, or the timeout (1..600000 ms), exactly once. */
  int (*request)(const pier_host *h, const char *subject, const void *data, size_t len,
                 uint32_t timeout_ms, pier_reply_fn cb, void *arg);
  /* Answers a message that came with a reply_to (on_message's last
   * argument, copied if the answer comes later). */
  int (*respond)(const pier_host *h, const char *reply_to, const void *data, size_t len);
};

/* The descriptor, exported as the symbol `pier_plugin_descriptor`
 * (PIER_DESCRIPTOR_SYMBOL) by PIER_PLUGIN. Callbacks may be NULL; server.json
 * may bind any of them to another exported symbol by name
 * ("callbacks": {"on_recv": "my_recv"}). */
typedef struct pier_plugin {
  uint32_t magic;     /* PIER_PLUGIN_MAGIC */
  uint16_t abi_major; /* PIER_ABI_MAJOR the plugin was built with */
  uint16_t abi_minor;
  uint32_t size;      /* sizeof(pier_plugin) the plugin was built with */
  const char *name;
  const char *version;
  /* Returns 0, or a negative errno to refuse to start (the daemon says so). */
  int (*on_load)(const pier_load_args *args);
  void (*on_unload)(pier_state *out);
  void (*on_connected)(pier_sid sid, const char *peer);
  /* One whole packet (header included) on u16_size_id listeners, else the
   * bytes as they came. data is valid during the call only. */
  void (*on_recv)(pier_sid sid, const void *data, size_t len);
  /* bytes of what the plugin sent to this session went out. On a TCP
   * listener, each time the socket takes some; through TLS or WebSocket,
   * once everything queued has gone out, counting only the plugin's own
   * bytes (not frame headers, pings, close frames, HTTP or TLS records). */
  void (*on_send)(pier_sid sid, size_t bytes);
  /* Exactly once for every session on_connected saw. */
  void (*on_disconnected)(pier_sid sid, pier_reason reason);
  void (*on_tick)(uint64_t now_ms);
  /* ABI 1.3 (a plugin built for an older minor has neither). A bus message
   * on one of the plugin's subscriptions: subject without the prefix and
   * plugin name ("room.red"), the payload (valid during the call only), and
   * the reply address to give respond(), or NULL. */
  void (*on_message)(const char *subject, const void *data, size_t len, const char *reply_to);
  /* A node of the cluster came (up = 1: first heard of, or back after it
   * was gone) or went (0: it said goodbye, or was not heard from for
   * cluster.node_timeout_ms). Never called for this node itself. */
  void (*on_node)(const char *node, int up);
} pier_plugin;

typedef int (*pier_on_load_fn)(const pier_load_args *args);
typedef void (*pier_on_unload_fn)(pier_state *out);
typedef void (*pier_on_connected_fn)(pier_sid sid, const char *peer);
typedef void (*pier_on_recv_fn)(pier_sid sid, const void *data, size_t len);
typedef void (*pier_on_send_fn)(pier_sid sid, size_t bytes);
typedef void (*pier_on_disconnected_fn)(pier_sid sid, pier_reason reason);
typedef void (*pier_on_tick_fn)(uint64_t now_ms);
typedef void (*pier_on_message_fn)(const char *subject, const void *data, size_t len,
                                   const char *reply_to);
typedef void (*pier_on_node_fn)(const char *node, int up);

/* Marks what the daemon looks up in the plugin: the descriptor, and any
 * callback that server.json names. Build with hidden visibility (POSIX) so
 * that nothing else is exported; a DLL exports only what is marked. */
#ifdef _WIN32
#define PIER_EXPORT __declspec(dllexport)
#else
#define PIER_EXPORT __attribute__((visibility("default")))
#endif

/* Defines the exported descriptor:
 *   PIER_PLUGIN("echo", "1.0.0", .on_load = echo_load, .on_recv = echo_recv);
 *
 * In C++ the descriptor gets C linkage (an unmangled, exported
 * pier_plugin_descriptor) and the callbacks must be listed in declaration
 * order, each at most once: on_load, on_unload, on_connected, on_recv,
 * on_send, on_disconnected, on_tick, on_message, on_node (C++20 designated initializers require
 * it; C takes any order). C++17 has no designated initializers: g++ and
 * clang accept them there as an extension, and the macro silences, for the
 * descriptor only, what they say of that (-Wpedantic, -Wc++20-extensions)
 * and of the callbacks left out (-Wmissing-field-initializers: they are
 * NULL, as in C). include/pier/plugin.hpp is the C++
 * layer that needs none of this. */
/* The descriptor's initializer, in declaration order (C++20 requires it). */
#define PIER_DESCRIPTOR_INIT_(plugin_name, plugin_version, ...) \
  {.magic = PIER_PLUGIN_MAGIC,                                  \
   .abi_major = PIER_ABI_MAJOR,                                 \
   .abi_minor = PIER_ABI_MINOR,                                 \
   .size = sizeof(pier_plugin),                                 \
   .name = plugin_name,                                         \
   .version = plugin_version,                                   \
   __VA_ARGS__}

#ifdef __cplusplus

#if defined(__clang__)
#define PIER_DESIGNATORS_BEGIN                                     \
  _Pragma("clang diagnostic push")                                 \
  _Pragma("clang diagnostic ignored \"-Wc++20-designator\"")      \
  _Pragma("clang diagnostic ignored \"-Wc99-designator\"")       \
  _Pragma("clang diagnostic ignored \"-Wmissing-field-initializers\"")
#define PIER_DESIGNATORS_END _Pragma("clang diagnostic pop")
#elif defined(__GNUC__)
#define PIER_DESIGNATORS_BEGIN                                     \
  _Pragma("GCC diagnostic push")                                   \
  _Pragma("GCC diagnostic ignored \"-Wpragmas\"")                  \
  _Pragma("GCC diagnostic ignored \"-Wpedantic\"")                 \
  _Pragma("GCC diagnostic ignored \"-Wc++20-extensions\"")         \
  _Pragma("GCC diagnostic ignored \"-Wmissing-field-initializers\"")
#define PIER_DESIGNATORS_END _Pragma("GCC diagnostic pop")
#else
#define PIER_DESIGNATORS_BEGIN
#define PIER_DESIGNATORS_END
#endif
#define PIER_PLUGIN(plugin_name, plugin_version, ...)          \
  PIER_DESIGNATORS_BEGIN                                       \
  extern "C" PIER_EXPORT const pier_plugin pier_plugin_descriptor; \
  extern "C" PIER_EXPORT const pier_plugin pier_plugin_descriptor = \
      PIER_DESCRIPTOR_INIT_(plugin_name, plugin_version, __VA_ARGS__); \
  PIER_DESIGNATORS_END                                         \
  static_assert(true, "PIER_PLUGIN(...) ends with a semicolon")
#else
#define PIER_PLUGIN(plugin_name, plugin_version, ...)          \
  PIER_EXPORT const pier_plugin pier_plugin_descriptor =       \
      PIER_DESCRIPTOR_INIT_(plugin_name, plugin_version, __VA_ARGS__)
#endif

#define PIER_DESCRIPTOR_SYMBOL "pier_plugin_descriptor"

/* Little-endian helpers for u16_size_id packets. */
static inline uint16_t pier_u16le(const void *p) {
  const uint8_t *b = (const uint8_t *)p;
  return (uint16_t)(b[0] | (b[1] << 8));
}
static inline uint16_t pier_packet_size(const void *packet) { return pier_u16le(packet); }
static inline uint16_t pier_packet_id(const void *packet) {
  return pier_u16le((const uint8_t *)packet + 2);
}

#ifdef __cplusplus
}
#endif

#endif
