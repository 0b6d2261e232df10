/* Numbers for /metrics and the JSON views: see host.h. */
#include <string.h>

#include "host/host_internal.h"

const double host_lat_bounds[HOST_LAT_BUCKETS] = {
    0.000005, 0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005,
    0.001,    0.0025,  0.005,    0.01,    0.05,   0.25,    1.0};

static const char *const cb_labels[HOST_CB_TYPES] = {
    "on_connected", "on_recv", "on_send", "on_disconnected", "on_tick", "timer", "post"};

const char *host_cb_label(unsigned type) { return type < HOST_CB_TYPES ? cb_labels[type] : "?"; }

size_t host_plugin_count(const host *h) { return h->nplugins; }
size_t host_listener_count(const host *h) { return h->nlisteners; }

void host_get_plugin_stats(host *h, size_t i, host_plugin_stats *out) {
  host_plugin *p = &h->plugins[i];
  memset(out, 0, sizeof(*out));
  out->name = p->cfg->name;
  snprintf(out->version, sizeof(out->version), "%s", p->img.version);
  snprintf(out->file, sizeof(out->file), "%s", p->cfg->resolved_path);
  out->generation = atomic_load(&p->generation);
  out->quarantined = atomic_load(&p->quarantined);
  out->failures = atomic_load(&p->failures);
  out->slow_calls = atomic_load(&p->slow_calls);
  out->backlog = atomic_load(&p->backlog);
}

void host_get_listener_stats(host *h, size_t i, host_listener_stats *out) {
  host_listener *l = &h->listeners[i];
  net_addr a;
  memset(out, 0, sizeof(*out));
  /* The port bound, not the configured one: several "port": 0 listeners
   * must not share one label. */
  if (net_addr_parse(l->cfg->address, l->nl ? net_listener_port(l->nl) : l->cfg->port, &a) < 0 ||
      !net_addr_format(&a, out->address, sizeof(out->address)))
    snprintf(out->address, sizeof(out->address), "%s:%u", l->cfg->address, l->cfg->port);
  out->plugin = l->p->cfg->name;
  out->transport = l->cfg->transport == CFG_TRANSPORT_WEBSOCKET
                       ? (l->cfg->tls_cert ? "websocket+tls" : "websocket")
                       : (l->cfg->tls_cert ? "tls" : "tcp");
  out->framing = cfg_framing_name(l->cfg->framing);
  out->open = atomic_load(&l->sessions);
}

uint64_t host_uptime_s(host *h) { return h->started ? (clock_ms() - h->started_ms) / 1000 : 0; }

int host_ready(host *h) { return atomic_load(&h->ready) && !atomic_load(&h->draining); }
void host_set_draining(host *h) { atomic_store(&h->draining, 1); }
int host_draining(host *h) { return atomic_load(&h->draining); }
