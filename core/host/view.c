/* Console and admin views of the host: status, plugins and sessions, as the
 * text lines `pierctl` and the console print. A view copies what it needs
 * under the host's locks and prints without them, so a slow reader of the
 * admin socket never stalls a worker. */
#include <cjson/cJSON.h>
#include <errno.h>
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
  if (h->cluster) {
    cluster_stats cs;
    cluster_get_stats(h, &cs);
    fprintf(out,
            "cluster: node %s, bus %s%s; %llu other nodes up; messages in %llu, out %llu, "
            "dropped %llu; reconnects %llu\n",
            cs.node, cs.connected ? "connected to " : "disconnected", cs.url,
            (unsigned long long)cs.nodes_up, (unsigned long long)cs.messages_in,
            (unsigned long long)cs.messages_out,
            (unsigned long long)(cs.dropped_in + cs.dropped_out),
            (unsigned long long)cs.reconnects);
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

size_t host_crash_modules(host *h, os_crash_module *m, size_t max) {
  size_t n = 0;
  for (size_t i = 0; i < h->nplugins && n < max; i++) {
    host_plugin *p = &h->plugins[i];
    if (!p->img.dl || os_dl_range(p->img.dl, &m[n].start, &m[n].end, &m[n].bias) < 0)
      continue;
    snprintf(m[n].name, sizeof(m[n].name), "%s", p->cfg->name);
    snprintf(m[n].file, sizeof(m[n].file), "%s", p->cfg->resolved_path);
    n++;
  }
  return n;
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

/* ---- the same as JSON: built with cJSON, so every string is escaped ---- */

/* Prints j as one line and frees it; -ENOMEM when any part failed (cJSON
 * returns NULL from an add that could not allocate, and we check once). */
static int put_json(cJSON *j, int complete, FILE *out) {
  char *text = j && complete ? cJSON_PrintUnformatted(j) : NULL;
  cJSON_Delete(j);
  if (!text)
    return -ENOMEM;
  fprintf(out, "%s\n", text);
  cJSON_free(text);
  return 0;
}

static cJSON *plugins_json(host *h) {
  cJSON *arr = cJSON_CreateArray();
  for (size_t i = 0; arr && i < h->nplugins; i++) {
    host_plugin *p = &h->plugins[i];
    cJSON *o = cJSON_CreateObject();
    if (!o || !cJSON_AddItemToArray(arr, o) || !cJSON_AddStringToObject(o, "name", p->cfg->name) ||
        !cJSON_AddStringToObject(o, "image", p->img.name) ||
        !cJSON_AddStringToObject(o, "version", p->img.version) ||
        !cJSON_AddNumberToObject(o, "generation", atomic_load(&p->generation)) ||
        !cJSON_AddStringToObject(o, "threading", p->serial ? "serial" : "session") ||
        !cJSON_AddStringToObject(o, "file", p->cfg->resolved_path) ||
        !cJSON_AddBoolToObject(o, "quarantined", atomic_load(&p->quarantined) != 0) ||
        !cJSON_AddNumberToObject(o, "failures", atomic_load(&p->failures)) ||
        !cJSON_AddNumberToObject(o, "slow_callbacks", atomic_load(&p->slow_calls)) ||
        !cJSON_AddNumberToObject(o, "backlog_bytes", (double)atomic_load(&p->backlog)) ||
        !(p->last_failure[0] ? cJSON_AddStringToObject(o, "last_failure", p->last_failure)
                             : cJSON_AddNullToObject(o, "last_failure"))) {
      cJSON_Delete(arr);
      return NULL;
    }
  }
  return arr;
}

int host_print_plugins_json(host *h, FILE *out) {
  cJSON *arr = plugins_json(h);
  return put_json(arr, arr != NULL, out);
}

int host_print_sessions_json(host *h, FILE *out) {
  cJSON *arr = cJSON_CreateArray();
  int ok = arr != NULL;
  for (size_t i = 0; ok && i < h->nplugins; i++) {
    host_plugin *p = &h->plugins[i];
    size_t n = host_plugin_sids(p, NULL, 0), got;
    pier_sid *sids = malloc((n ? n : 1) * sizeof(*sids));
    if (!sids) {
      ok = 0;
      break;
    }
    got = host_plugin_sids(p, sids, n);
    if (got > n)
      got = n;
    for (size_t k = 0; ok && k < got; k++) {
      net_addr a;
      char peer[NET_ADDR_STRLEN] = "?", sid[17];
      cJSON *o = cJSON_CreateObject();
      if (net_peer(h->net, sids[k], &a) == 0)
        net_addr_format(&a, peer, sizeof(peer));
      snprintf(sid, sizeof(sid), "%016llx", (unsigned long long)sids[k]);
      ok = o && cJSON_AddItemToArray(arr, o) && cJSON_AddStringToObject(o, "sid", sid) &&
           cJSON_AddStringToObject(o, "plugin", p->cfg->name) &&
           cJSON_AddStringToObject(o, "peer", peer);
    }
    free(sids);
  }
  return put_json(arr, ok, out);
}

static int add_u64(cJSON *o, const char *name, uint64_t v) {
  return cJSON_AddNumberToObject(o, name, (double)v) != NULL;
}

static cJSON *sessions_json(host *h) {
  net_stats st;
  cJSON *o = cJSON_CreateObject();
  net_get_stats(h->net, &st);
  if (!o || !add_u64(o, "open", st.sessions) || !add_u64(o, "accepted", st.accepted) ||
      !add_u64(o, "refused_full", st.refused_full) ||
      !add_u64(o, "refused_per_ip", st.refused_per_ip) ||
      !add_u64(o, "closed_send_queue", st.send_queue_full) ||
      !add_u64(o, "closed_bad_packets", st.bad_packets) ||
      !add_u64(o, "closed_idle", st.idle_timeouts) ||
      !add_u64(o, "closed_packet_timeout", st.packet_timeouts) ||
      !add_u64(o, "closed_send_timeout", st.send_timeouts) ||
      !add_u64(o, "read_pauses", st.read_pauses) || !add_u64(o, "handshakes", st.handshakes) ||
      !add_u64(o, "handshake_failures", st.handshake_failures) ||
      !add_u64(o, "handshake_timeouts", st.handshake_timeouts) ||
      !add_u64(o, "http_files", st.http_files) ||
      !add_u64(o, "ws_protocol_errors", st.ws_protocol_errors) ||
      !add_u64(o, "ping_timeouts", st.ping_timeouts) || !add_u64(o, "bytes_in", st.bytes_in) ||
      !add_u64(o, "bytes_out", st.bytes_out)) {
    cJSON_Delete(o);
    return NULL;
  }
  return o;
}

static cJSON *listeners_json(host *h) {
  cJSON *arr = cJSON_CreateArray();
  for (size_t i = 0; arr && i < h->nlisteners; i++) {
    host_listener *l = &h->listeners[i];
    cJSON *o = cJSON_CreateObject();
    int ws = l->cfg->transport == CFG_TRANSPORT_WEBSOCKET;
    if (!o || !cJSON_AddItemToArray(arr, o) ||
        !cJSON_AddStringToObject(o, "address", l->cfg->address) ||
        !cJSON_AddNumberToObject(o, "port", l->nl ? net_listener_port(l->nl) : l->cfg->port) ||
        !cJSON_AddStringToObject(o, "framing", cfg_framing_name(l->cfg->framing)) ||
        !cJSON_AddStringToObject(o, "transport", ws ? "websocket" : "tcp") ||
        !(ws ? cJSON_AddStringToObject(o, "ws_path", l->cfg->ws_path)
             : cJSON_AddNullToObject(o, "ws_path")) ||
        !cJSON_AddBoolToObject(o, "tls", l->cfg->tls_cert != NULL) ||
        !cJSON_AddStringToObject(o, "plugin", l->p->cfg->name) ||
        !cJSON_AddNumberToObject(o, "sessions", (double)atomic_load(&l->sessions))) {
      cJSON_Delete(arr);
      return NULL;
    }
  }
  return arr;
}

int host_print_status_json(host *h, FILE *out) {
  cJSON *o = cJSON_CreateObject(), *sess = sessions_json(h), *ls = listeners_json(h),
        *ps = plugins_json(h);
  int ok = o && sess && ls && ps;
  if (!ok) {
    cJSON_Delete(sess);
    cJSON_Delete(ls);
    cJSON_Delete(ps);
    cJSON_Delete(o);
    return -ENOMEM;
  }
  cJSON_AddItemToObject(o, "sessions", sess);
  cJSON_AddItemToObject(o, "listeners", ls);
  cJSON_AddItemToObject(o, "plugins", ps);
  if (h->cluster) {
    cluster_stats cs;
    cJSON *c = cJSON_CreateObject();
    cluster_get_stats(h, &cs);
    cJSON_AddItemToObject(o, "cluster", c);
    ok = c && cJSON_AddStringToObject(c, "node", cs.node) &&
         cJSON_AddBoolToObject(c, "connected", cs.connected) &&
         (cs.url[0] ? cJSON_AddStringToObject(c, "url", cs.url)
                    : cJSON_AddNullToObject(c, "url")) &&
         cJSON_AddNumberToObject(c, "messages_in", (double)cs.messages_in) &&
         cJSON_AddNumberToObject(c, "messages_out", (double)cs.messages_out) &&
         cJSON_AddNumberToObject(c, "dropped", (double)(cs.dropped_in + cs.dropped_out)) &&
         cJSON_AddNumberToObject(c, "dropped_in", (double)cs.dropped_in) &&
         cJSON_AddNumberToObject(c, "dropped_out", (double)cs.dropped_out) &&
         cJSON_AddNumberToObject(c, "reconnects", (double)cs.reconnects) &&
         cJSON_AddNumberToObject(c, "nodes_up", (double)cs.nodes_up);
    if (!ok) {
      cJSON_Delete(o);
      return -ENOMEM;
    }
  }
  ok = cJSON_AddStringToObject(o, "version", PIER_VERSION) &&
       add_u64(o, "uptime_s", (clock_ms() - h->started_ms) / 1000) &&
       cJSON_AddStringToObject(o, "backend", net_backend_name(h->net)) &&
       cJSON_AddNumberToObject(o, "workers", net_workers(h->net)) &&
       cJSON_AddBoolToObject(o, "ready", host_ready(h) != 0) &&
       cJSON_AddBoolToObject(o, "draining", host_draining(h) != 0);
  return put_json(o, ok, out);
}
