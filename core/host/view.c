/* Console and admin views of the host: status, plugins and sessions, as the
 * text lines `pierctl` and the console print. A view copies what it needs
 * under the host's locks and prints without them, so a slow reader of the
 * admin socket never stalls a worker. */
#include <stdlib.h>

#include "host/host_internal.h"

void host_print_status(host *h, FILE *out) {
  net_stats st;
  uint64_t up = (clock_ms() - h->started_ms) / 1000;
  net_get_stats(h->net, &st);
  fprintf(out, "uptime %llus, backend %s, workers %u\n", (unsigned long long)up,
          net_backend_name(h->net), net_workers(h->net));
  fprintf(out,
          "sessions %llu open, %llu accepted, %llu refused (max_sessions %u), %llu closed "
          "for send queue, %llu for bad packets, %llu idle, %llu for slow packets, %llu for no "
          "send progress, %llu over max_conns_per_ip; reading paused %llu times\n",
          (unsigned long long)st.sessions, (unsigned long long)st.accepted,
          (unsigned long long)st.refused_full, h->cfg->max_sessions,
          (unsigned long long)st.send_queue_full, (unsigned long long)st.bad_packets,
          (unsigned long long)st.idle_timeouts, (unsigned long long)st.packet_timeouts,
          (unsigned long long)st.send_timeouts, (unsigned long long)st.refused_per_ip,
          (unsigned long long)st.read_pauses);
  if (st.handshakes || st.handshake_failures || st.handshake_timeouts || st.http_files)
    fprintf(out,
            "handshakes %llu done, %llu refused or failed, %llu timed out; %llu static files "
            "served; %llu closed for WebSocket protocol errors, %llu for no pong\n",
            (unsigned long long)st.handshakes, (unsigned long long)st.handshake_failures,
            (unsigned long long)st.handshake_timeouts, (unsigned long long)st.http_files,
            (unsigned long long)st.ws_protocol_errors, (unsigned long long)st.ping_timeouts);
  for (size_t i = 0; i < h->nlisteners; i++) {
    host_listener *l = &h->listeners[i];
    char addr[NET_ADDR_STRLEN] = "?";
    if (l->nl) {
      net_addr a;
      net_addr_parse(l->cfg->address, net_listener_port(l->nl), &a);
      net_addr_format(&a, addr, sizeof(addr));
    }
    fprintf(out, "listener %s %s%s%s%s plugin %s: %ld sessions\n", addr,
            cfg_framing_name(l->cfg->framing),
            l->cfg->transport == CFG_TRANSPORT_WEBSOCKET ? " websocket " : "",
            l->cfg->transport == CFG_TRANSPORT_WEBSOCKET ? l->cfg->ws_path : "",
            l->cfg->tls_cert ? " tls" : "", l->p->cfg->name, atomic_load(&l->sessions));
  }
  host_print_plugins(h, out);
}

void host_print_plugins(host *h, FILE *out) {
  for (size_t i = 0; i < h->nplugins; i++) {
    host_plugin *p = &h->plugins[i];
    fprintf(out,
            "plugin %s: %s %s, generation %u, %s, %s%s, %u failures, %u slow callbacks, "
            "%zu bytes waiting\n",
            p->cfg->name, p->img.name, p->img.version, atomic_load(&p->generation),
            p->serial ? "serial" : "session", p->cfg->resolved_path,
            atomic_load(&p->quarantined) ? ", QUARANTINED" : "", atomic_load(&p->failures),
            atomic_load(&p->slow_calls), atomic_load(&p->backlog));
    if (p->last_failure[0])
      fprintf(out, "plugin %s: last reload failed: %s\n", p->cfg->name, p->last_failure);
  }
}

void host_print_sessions(host *h, FILE *out) {
  size_t total = 0;
  for (size_t i = 0; i < h->nplugins; i++) {
    host_plugin *p = &h->plugins[i];
    size_t n = host_plugin_sids(p, NULL, 0), got;
    pier_sid *sids = malloc((n ? n : 1) * sizeof(*sids));
    if (!sids) {
      fprintf(out, "plugin %s: %zu sessions (out of memory listing them)\n", p->cfg->name, n);
      total += n;
      continue;
    }
    got = host_plugin_sids(p, sids, n);
    if (got > n)
      got = n; /* more came since: they are in the next listing */
    for (size_t k = 0; k < got; k++) {
      net_addr a;
      char peer[NET_ADDR_STRLEN] = "?";
      if (net_peer(h->net, sids[k], &a) == 0)
        net_addr_format(&a, peer, sizeof(peer));
      fprintf(out, "%016llx %s %s\n", (unsigned long long)sids[k], p->cfg->name, peer);
    }
    total += got;
    free(sids);
  }
  fprintf(out, "%zu session%s\n", total, total == 1 ? "" : "s");
}
