/* The built-in metrics: net_get_stats (sessions, bytes, limits, the io
 * loops), the host's per-listener and per-plugin numbers, and the process's
 * own (os/procstat.h), each family written once with all its series, as the
 * format requires. Names follow Prometheus' conventions: pier_ prefix,
 * _total on counters, seconds and bytes as units. */
#include "daemon/metrics.h"
#include "host/cluster.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/promtext.h"
#include "os/procstat.h"

#ifndef PIER_VERSION
#define PIER_VERSION "unknown"
#endif

/* A family with one unlabelled series. */
static void one(FILE *out, const char *name, const char *type, const char *help, uint64_t v) {
  prom_family(out, name, type, help);
  prom_sample_u64(out, name, NULL, 0, v);
}

static void one_labelled(FILE *out, const char *name, const char *label, const char *value,
                         uint64_t v) {
  const char *l[2] = {label, value};
  prom_sample_u64(out, name, l, 1, v);
}

static void render_net(FILE *out, const net_stats *st) {
  const struct {
    const char *limit;
    uint64_t v;
  } limits[] = {
      {"max_send_queue", st->send_queue_full},   {"max_packet_size", st->bad_packets},
      {"idle_timeout_ms", st->idle_timeouts},    {"packet_timeout_ms", st->packet_timeouts},
      {"send_timeout_ms", st->send_timeouts},    {"max_conns_per_ip", st->refused_per_ip},
      {"max_sessions", st->refused_full},        {"recv_backlog", st->read_pauses},
      {"handshake_timeout_ms", st->handshake_timeouts},
  };

  prom_family(out, "pier_sessions_refused_total", "counter",
              "Connections closed at once, by the limit that refused them.");
  one_labelled(out, "pier_sessions_refused_total", "reason", "max_sessions", st->refused_full);
  one_labelled(out, "pier_sessions_refused_total", "reason", "max_conns_per_ip",
               st->refused_per_ip);

  prom_family(out, "pier_sessions_closed_total", "counter",
              "Sessions that ended, by the reason their plugin was given.");
  for (size_t r = 0; r < NET_REASON_COUNT; r++)
    one_labelled(out, "pier_sessions_closed_total", "reason", net_reason_label((pier_reason)r),
                 st->closed_by_reason[r]);

  one(out, "pier_received_bytes_total", "counter", "Bytes read from clients.", st->bytes_in);
  one(out, "pier_sent_bytes_total", "counter", "Bytes written to clients.", st->bytes_out);
  one(out, "pier_received_messages_total", "counter",
      "Messages delivered to plugins (packets, or reads on raw framing).", st->messages_in);
  one(out, "pier_sent_messages_total", "counter",
      "Messages queued for clients (a broadcast counts once per recipient).", st->messages_out);
  one(out, "pier_send_queue_bytes", "gauge", "Bytes waiting in send queues now.",
      st->send_queue_bytes);

  prom_family(out, "pier_limit_hits_total", "counter",
              "Times a limit of server.json was hit, by its key.");
  for (size_t k = 0; k < sizeof(limits) / sizeof(limits[0]); k++)
    one_labelled(out, "pier_limit_hits_total", "limit", limits[k].limit, limits[k].v);

  prom_family(out, "pier_handshakes_total", "counter",
              "TLS and WebSocket handshakes, by outcome.");
  one_labelled(out, "pier_handshakes_total", "outcome", "done", st->handshakes);
  one_labelled(out, "pier_handshakes_total", "outcome", "failed", st->handshake_failures);
  one_labelled(out, "pier_handshakes_total", "outcome", "timeout", st->handshake_timeouts);
  one(out, "pier_http_files_total", "counter", "Static files served by WebSocket listeners.",
      st->http_files);
  one(out, "pier_ws_protocol_errors_total", "counter",
      "WebSocket sessions closed for a protocol violation.", st->ws_protocol_errors);
  one(out, "pier_ws_ping_timeouts_total", "counter",
      "WebSocket peers that answered no keepalive ping.", st->ping_timeouts);

  one(out, "pier_io_cq_overflows_total", "counter", "io_uring completion queue overflows.",
      st->io_cq_overflows);
  one(out, "pier_io_enobufs_total", "counter",
      "Multishot receives ended for want of a provided buffer.", st->io_enobufs);
  one(out, "pier_io_rearms_total", "counter", "Multishot operations re-armed by the backend.",
      st->io_rearms);
}

static void render_listeners(FILE *out, host *h) {
  size_t n = host_listener_count(h);

  prom_family(out, "pier_listener_sessions", "gauge", "Sessions open now, per listener.");
  for (size_t i = 0; i < n; i++) {
    host_listener_stats ls;
    host_get_listener_stats(h, i, &ls);
    const char *l[6] = {"listener", ls.address, "plugin", ls.plugin, "transport", ls.transport};
    prom_sample(out, "pier_listener_sessions", l, 3, (double)ls.open);
  }
  prom_family(out, "pier_sessions_accepted_total", "counter",
              "Sessions that reached their plugin, per listener.");
  for (size_t i = 0; i < n; i++) {
    host_listener_stats ls;
    host_get_listener_stats(h, i, &ls);
    const char *l[4] = {"listener", ls.address, "plugin", ls.plugin};
    prom_sample_u64(out, "pier_sessions_accepted_total", l, 2, ls.accepted);
  }
}

/* Cumulative bucket counts of a host_latency, as the format wants them. */
static void histogram(FILE *out, const char *name, const char *const *labels, size_t nlabels,
                      const host_latency *lat) {
  uint64_t cum[HOST_LAT_BUCKETS], run = 0;
  for (size_t b = 0; b < HOST_LAT_BUCKETS; b++)
    cum[b] = run += lat->bucket[b];
  prom_histogram(out, name, labels, nlabels, host_lat_bounds, cum, HOST_LAT_BUCKETS,
                 (double)lat->sum_ns / 1e9, lat->count);
}

/* One family with a series per plugin, the value get() picks. */
static void per_plugin(FILE *out, const host_plugin_stats *ps, size_t n, const char *name,
                       const char *type, const char *help,
                       uint64_t (*get)(const host_plugin_stats *)) {
  prom_family(out, name, type, help);
  for (size_t i = 0; i < n; i++)
    one_labelled(out, name, "plugin", ps[i].name, get(&ps[i]));
}

static uint64_t get_sessions(const host_plugin_stats *p) { return p->sessions; }
static uint64_t get_quarantined(const host_plugin_stats *p) { return p->quarantined != 0; }
static uint64_t get_failures(const host_plugin_stats *p) { return p->failures; }
static uint64_t get_slow(const host_plugin_stats *p) { return p->slow_calls; }
static uint64_t get_backlog(const host_plugin_stats *p) { return p->backlog; }

static void render_plugins(FILE *out, const host_plugin_stats *ps, size_t n) {
  prom_family(out, "pier_plugin_info", "gauge",
              "The version of each plugin serving now (value 1).");
  for (size_t i = 0; i < n; i++) {
    char gen[16];
    snprintf(gen, sizeof(gen), "%u", ps[i].generation);
    const char *l[8] = {"plugin", ps[i].name, "version", ps[i].version,
                        "generation", gen, "file", ps[i].file};
    prom_sample_u64(out, "pier_plugin_info", l, 4, 1);
  }
  per_plugin(out, ps, n, "pier_plugin_sessions", "gauge",
             "Sessions open now, all of the plugin's listeners.", get_sessions);
  per_plugin(out, ps, n, "pier_plugin_quarantined", "gauge",
             "1 while the plugin is quarantined (fenced off until reloaded).",
             get_quarantined);
  per_plugin(out, ps, n, "pier_plugin_failures_total", "counter",
             "Failures counted towards quarantine_after.", get_failures);
  per_plugin(out, ps, n, "pier_plugin_slow_callbacks_total", "counter",
             "Callbacks that ran longer than slow_callback_ms.", get_slow);
  per_plugin(out, ps, n, "pier_plugin_backlog_bytes", "gauge",
             "Bytes of events held or queued for the plugin.", get_backlog);

  prom_family(out, "pier_plugin_callback_duration_seconds", "histogram",
              "How long plugin callbacks ran.");
  for (size_t i = 0; i < n; i++)
    for (unsigned t = 0; t < HOST_CB_TYPES; t++) {
      const char *l[4] = {"plugin", ps[i].name, "callback", host_cb_label(t)};
      histogram(out, "pier_plugin_callback_duration_seconds", l, 2, &ps[i].latency[t]);
    }

  prom_family(out, "pier_plugin_reloads_total", "counter", "Hot reloads, by outcome.");
  for (size_t i = 0; i < n; i++) {
    const struct {
      const char *outcome;
      uint64_t v;
    } o[] = {{"ok", ps[i].reloads_ok},
             {"failed", ps[i].reloads_failed},
             {"rolled_back", ps[i].reloads_rolled_back},
             {"quarantined", ps[i].reloads_quarantined}};
    for (size_t k = 0; k < sizeof(o) / sizeof(o[0]); k++) {
      const char *l[4] = {"plugin", ps[i].name, "outcome", o[k].outcome};
      prom_sample_u64(out, "pier_plugin_reloads_total", l, 2, o[k].v);
    }
  }

  prom_family(out, "pier_plugin_reload_pause_seconds", "histogram",
              "How long a reload held the plugin's events.");
  for (size_t i = 0; i < n; i++) {
    const char *l[2] = {"plugin", ps[i].name};
    histogram(out, "pier_plugin_reload_pause_seconds", l, 1, &ps[i].reload_pause);
  }
}

static void render_process(FILE *out) {
  os_procstat ps;
  os_procstat_self(&ps);
  if (ps.has_rss)
    one(out, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.",
        ps.rss_bytes);
  if (ps.has_fds)
    one(out, "process_open_fds", "gauge", "Number of open file descriptors.", ps.open_fds);
  if (ps.has_cpu) {
    prom_family(out, "process_cpu_seconds_total", "counter",
                "Total user and system CPU time spent in seconds.");
    prom_sample(out, "process_cpu_seconds_total", NULL, 0, ps.cpu_seconds);
  }
  if (ps.has_start) {
    prom_family(out, "process_start_time_seconds", "gauge",
                "Start time of the process since unix epoch in seconds.");
    prom_sample(out, "process_start_time_seconds", NULL, 0, ps.start_time);
  }
}

/* The bus, when this node is in a cluster. */
static void render_cluster(FILE *out, host *h) {
  cluster_stats cs;
  const char *in[2] = {"direction", "in"}, *outl[2] = {"direction", "out"};
  cluster_get_stats(h, &cs);
  if (!cs.node)
    return;
  prom_family(out, "pier_bus_messages_total", "counter",
              "Bus messages delivered to plugins (in) and published by them (out).");
  prom_sample_u64(out, "pier_bus_messages_total", in, 1, cs.messages_in);
  prom_sample_u64(out, "pier_bus_messages_total", outl, 1, cs.messages_out);
  prom_family(out, "pier_bus_dropped_total", "counter",
              "Bus messages dropped: in, a subscription over max_pending (slow consumer); "
              "out, published while disconnected with the reconnect buffer full.");
  prom_sample_u64(out, "pier_bus_dropped_total", in, 1, cs.dropped_in);
  prom_sample_u64(out, "pier_bus_dropped_total", outl, 1, cs.dropped_out);
  one(out, "pier_bus_reconnects_total", "counter", "Reconnections to the bus.", cs.reconnects);
  one(out, "pier_bus_connected", "gauge", "1 while connected to a NATS server.",
      (uint64_t)cs.connected);
  one(out, "pier_cluster_nodes_up", "gauge", "Other nodes heard from within node_timeout_ms.",
      cs.nodes_up);
}

void metrics_render(host *h, FILE *out) {
  const char *ver[2] = {"version", PIER_VERSION};
  size_t np = host_plugin_count(h);
  host_plugin_stats *ps = calloc(np ? np : 1, sizeof(*ps)); /* ~2 KiB each: not the stack */
  net_stats st;

  net_get_stats(host_net(h), &st);
  prom_family(out, "pier_build_info", "gauge", "The pierd version (value 1).");
  prom_sample_u64(out, "pier_build_info", ver, 1, 1);
  one(out, "pier_up", "gauge", "1 while pierd serves.", 1);
  one(out, "pier_ready", "gauge", "1 once every listener is open, 0 while starting or draining.",
      (uint64_t)host_ready(h));
  one(out, "pier_uptime_seconds", "gauge", "Seconds since the host started.", host_uptime_s(h));
  render_listeners(out, h);
  render_net(out, &st);
  if (ps) {
    for (size_t i = 0; i < np; i++)
      host_get_plugin_stats(h, i, &ps[i]);
    render_plugins(out, ps, np);
    free(ps);
  } else {
    fputs("# pier: out of memory: the plugin families are left out\n", out);
  }
  render_cluster(out, h);
  render_process(out);
  host_render_plugin_metrics(h, out);
}
