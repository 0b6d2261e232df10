/* Numbers for /metrics and the JSON views: see host.h. Writers keep them in
 * relaxed atomics of their own (per worker where workers write: the latency
 * slots of gate.c's timed_call); the getters here sum them on the reader's
 * thread and never take a lock a worker could wait on. */
#include <string.h>

#include "host/host_internal.h"

const double host_lat_bounds[HOST_LAT_BUCKETS] = {
    0.000005, 0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005,
    0.001,    0.0025,  0.005,    0.01,    0.05,   0.25,    1.0};

/* host_lat_bounds in nanoseconds, so observing is integer compares only. */
static const uint64_t lat_bounds_ns[HOST_LAT_BUCKETS] = {
    5000,     10000,    25000,    50000,    100000,    250000,    500000,
    1000000,  2500000,  5000000,  10000000, 50000000,  250000000, 1000000000};

static void add(_Atomic uint64_t *c, uint64_t v, int shared) {
  if (shared)
    atomic_fetch_add_explicit(c, v, memory_order_relaxed);
  else /* one writer: no locked add */
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + v,
                          memory_order_relaxed);
}

void stats_observe(lat_hist *hist, uint64_t ns, int shared) {
  unsigned b = 0;
  while (b < HOST_LAT_BUCKETS && ns > lat_bounds_ns[b])
    b++;
  add(&hist->bucket[b], 1, shared);
  add(&hist->count, 1, shared);
  add(&hist->sum_ns, ns, shared);
}

/* Adds hist into out (a reader's sum over slots). The count is taken from
 * the buckets read, so a scrape in the middle of an observe still shows a
 * histogram whose +Inf bucket equals its count. */
static void sum_hist(const lat_hist *hist, host_latency *out) {
  for (unsigned b = 0; b <= HOST_LAT_BUCKETS; b++) {
    uint64_t v = atomic_load_explicit(&hist->bucket[b], memory_order_relaxed);
    out->bucket[b] += v;
    out->count += v;
  }
  out->sum_ns += atomic_load_explicit(&hist->sum_ns, memory_order_relaxed);
}

static const char *const cb_labels[HOST_CB_TYPES] = {
    "on_connected", "on_recv", "on_send", "on_disconnected", "on_tick", "timer", "post",
    "on_message", "reply", "on_node"};

const char *host_cb_label(unsigned type) { return type < HOST_CB_TYPES ? cb_labels[type] : "?"; }

size_t host_plugin_count(const host *h) { return h->nplugins; }
size_t host_listener_count(const host *h) { return h->nlisteners; }

void stats_show_serving(host_plugin *p) {
  os_mutex_lock(&p->h->img_mu);
  snprintf(p->shown_version, sizeof(p->shown_version), "%s", p->img.version);
  p->shown_gen = atomic_load(&p->generation);
  os_mutex_unlock(&p->h->img_mu);
}

void host_get_plugin_stats(host *h, size_t i, host_plugin_stats *out) {
  host_plugin *p = &h->plugins[i];
  memset(out, 0, sizeof(*out));
  out->name = p->cfg->name;
  os_mutex_lock(&h->img_mu);
  snprintf(out->version, sizeof(out->version), "%s", p->shown_version);
  out->generation = p->shown_gen;
  os_mutex_unlock(&h->img_mu);
  snprintf(out->file, sizeof(out->file), "%s", p->cfg->resolved_path);
  out->quarantined = atomic_load(&p->quarantined);
  out->failures = atomic_load(&p->failures);
  out->slow_calls = atomic_load(&p->slow_calls);
  out->backlog = atomic_load(&p->backlog);
  for (size_t k = 0; k < h->nlisteners; k++)
    if (h->listeners[k].p == p)
      out->sessions += (uint64_t)atomic_load(&h->listeners[k].sessions);
  for (unsigned w = 0; p->running && w <= h->nworkers; w++)
    for (unsigned t = 0; t < HOST_CB_TYPES; t++)
      sum_hist(&p->running[w].lat[t], &out->latency[t]);
  out->reloads_ok = atomic_load_explicit(&p->reloads_ok, memory_order_relaxed);
  out->reloads_failed = atomic_load_explicit(&p->reloads_failed, memory_order_relaxed);
  out->reloads_rolled_back = atomic_load_explicit(&p->reloads_rolled_back, memory_order_relaxed);
  out->reloads_quarantined = atomic_load_explicit(&p->reloads_quarantined, memory_order_relaxed);
  sum_hist(&p->reload_pause, &out->reload_pause);
}

void host_get_listener_stats(host *h, size_t i, host_listener_stats *out) {
  host_listener *l = &h->listeners[i];
  net_addr a;
  memset(out, 0, sizeof(*out));
  /* As bound: "port": 0 in server.json means the port the system chose, and
   * an IPv6 address comes in brackets. */
  if (l->nl && net_addr_parse(l->cfg->address, net_listener_port(l->nl), &a) == 0)
    net_addr_format(&a, out->address, sizeof(out->address));
  else
    snprintf(out->address, sizeof(out->address), "%s:%u", l->cfg->address, l->cfg->port);
  out->plugin = l->p->cfg->name;
  out->transport = l->cfg->transport == CFG_TRANSPORT_WEBSOCKET
                       ? (l->cfg->tls_cert ? "websocket+tls" : "websocket")
                       : (l->cfg->tls_cert ? "tls" : "tcp");
  out->framing = cfg_framing_name(l->cfg->framing);
  out->open = atomic_load(&l->sessions);
  out->accepted = atomic_load_explicit(&l->accepted, memory_order_relaxed);
}

uint64_t host_uptime_s(host *h) { return h->started ? (clock_ms() - h->started_ms) / 1000 : 0; }

int host_ready(host *h) { return atomic_load(&h->ready) && !atomic_load(&h->draining); }
void host_set_draining(host *h) { atomic_store(&h->draining, 1); }
int host_draining(host *h) { return atomic_load(&h->draining); }
