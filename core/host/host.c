/* Plugin host: lifecycle and the glue between core/net and the plugins.
 * host_create loads and checks every plugin and binds each listener to its
 * plugin and framing; host_start listens, calls on_load and starts the
 * workers; session events from core/net become gate deliveries (gate.c).
 * Each plugin keeps the list of its open sessions per worker, and a
 * watchdog thread reports callbacks that run too long. */
#include "host/host.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "host/host_internal.h"

host_plugin *host_find_plugin(host *h, const char *name) {
  for (size_t i = 0; i < h->nplugins; i++)
    if (strcmp(h->plugins[i].cfg->name, name) == 0)
      return &h->plugins[i];
  return NULL;
}

/* ---- each plugin's open sessions, per worker ---- */

/* On the session's worker. */
static void reg_add(host_plugin *p, pier_sid sid) {
  unsigned w = PIER_SID_WORKER(sid);
  reg_list *r = &p->reg[w];
  os_mutex_lock(&r->mu);
  if (r->n == r->cap) {
    uint32_t cap = r->cap ? r->cap * 2 : 64;
    pier_sid *n = realloc(r->sids, cap * sizeof(*n));
    if (n) {
      r->sids = n;
      r->cap = cap;
    }
  }
  if (r->n < r->cap) {
    p->h->reg_pos[w][PIER_SID_SLOT(sid)] = r->n;
    r->sids[r->n++] = sid;
  } else {
    log_error("plugin \"%s\": out of memory listing session %016llx; sessions() will miss it",
              p->cfg->name, (unsigned long long)sid);
    p->h->reg_pos[w][PIER_SID_SLOT(sid)] = UINT32_MAX;
  }
  os_mutex_unlock(&r->mu);
}

/* On the session's worker: O(1), the last entry moves into the hole. */
static void reg_remove(host_plugin *p, pier_sid sid) {
  unsigned w = PIER_SID_WORKER(sid);
  reg_list *r = &p->reg[w];
  uint32_t *pos = p->h->reg_pos[w];
  uint32_t i = pos[PIER_SID_SLOT(sid)];
  os_mutex_lock(&r->mu);
  if (i < r->n && r->sids[i] == sid) {
    pier_sid last = r->sids[--r->n];
    r->sids[i] = last;
    pos[PIER_SID_SLOT(last)] = i;
  }
  os_mutex_unlock(&r->mu);
}

size_t host_plugin_sids(host_plugin *p, pier_sid *out, size_t max) {
  size_t total = 0;
  for (unsigned w = 0; p->reg && w < p->h->nworkers; w++) {
    reg_list *r = &p->reg[w];
    os_mutex_lock(&r->mu);
    if (out && total < max && r->n) {
      size_t k = r->n < max - total ? r->n : max - total;
      memcpy(out + total, r->sids, k * sizeof(*out));
    }
    total += r->n;
    os_mutex_unlock(&r->mu);
  }
  return total;
}

/* ---- net handler ---- */

/* Ends the operator would not ask about: everything else (errors, limits,
 * timeouts) is logged at info, rate-limited per worker. */
static int normal_close(pier_reason reason) {
  return reason == PIER_REASON_PEER_CLOSED || reason == PIER_REASON_CLOSED ||
         reason == PIER_REASON_KICKED || reason == PIER_REASON_SHUTDOWN;
}

static void log_connected(host_listener *l, pier_sid sid, const char *peer) {
  log_debug("session %016llx connected: listener %s:%u, plugin %s, peer %s",
            (unsigned long long)sid, l->cfg->address, l->nl ? net_listener_port(l->nl) : 0,
            l->p->cfg->name, peer);
}

static void log_disconnected(host_listener *l, session *s, pier_reason reason) {
  pier_sid sid = session_sid(s);
  unsigned w = PIER_SID_WORKER(sid);
  uint64_t ms = clock_ms() - l->h->conn_ms[w][PIER_SID_SLOT(sid)];
  char peer[NET_ADDR_STRLEN];
  const char *fmt = "session %016llx disconnected: %s after %llu.%03llus (plugin %s, peer %s)";

  if (normal_close(reason) && log_get_level() < LOG_DEBUG)
    return;
  net_addr_format(session_peer(s), peer, sizeof(peer));
  if (normal_close(reason))
    log_debug(fmt, (unsigned long long)sid, net_reason_text(reason),
              (unsigned long long)(ms / 1000), (unsigned long long)(ms % 1000), l->p->cfg->name,
              peer);
  else
    log_limited(&l->h->close_rl[w], LOG_INFO, fmt, (unsigned long long)sid,
                net_reason_text(reason), (unsigned long long)(ms / 1000),
                (unsigned long long)(ms % 1000), l->p->cfg->name, peer);
}

static void on_connected(void *ctx, session *s) {
  host_listener *l = ctx;
  char peer[NET_ADDR_STRLEN];
  ev e = {.type = EV_CONNECTED, .sid = session_sid(s), .s = s};

  l->h->conn_ms[PIER_SID_WORKER(e.sid)][PIER_SID_SLOT(e.sid)] = clock_ms();
  atomic_fetch_add(&l->sessions, 1);
  if (atomic_load(&l->p->quarantined)) { /* its listeners refuse new sessions */
    net_abort(l->h->net, e.sid, PIER_REASON_PLUGIN_ERROR);
    return;
  }
  reg_add(l->p, e.sid);
  if (atomic_load(&l->p->quarantined)) { /* quarantined meanwhile, after its snapshot */
    net_abort(l->h->net, e.sid, PIER_REASON_PLUGIN_ERROR);
    return;
  }
  atomic_fetch_add_explicit(&l->accepted, 1, memory_order_relaxed);
  net_addr_format(session_peer(s), peer, sizeof(peer));
  log_connected(l, e.sid, peer);
  e.data = peer;
  e.n = strlen(peer) + 1;
  gate_deliver(l->p, &e);
}

static void on_recv(void *ctx, session *s, const char *data, size_t len) {
  host_listener *l = ctx;
  ev e = {.type = EV_RECV, .sid = session_sid(s), .s = s, .data = data, .n = len};
  gate_deliver(l->p, &e);
}

static void on_send(void *ctx, session *s, size_t bytes) {
  host_listener *l = ctx;
  if (atomic_load_explicit(&l->p->wants_send, memory_order_relaxed)) {
    ev e = {.type = EV_SEND, .sid = session_sid(s), .s = s, .n = bytes};
    gate_deliver(l->p, &e);
  }
}

static void on_disconnected(void *ctx, session *s, pier_reason reason) {
  host_listener *l = ctx;
  /* No .s: the session is finishing, there is no reading left to pause. */
  ev e = {.type = EV_DISCONNECTED, .sid = session_sid(s), .reason = reason,
          .user = session_user(s)};
  atomic_fetch_sub(&l->sessions, 1);
  log_disconnected(l, s, reason);
  reg_remove(l->p, e.sid);
  if (!atomic_load(&l->p->quarantined))
    gate_deliver(l->p, &e);
}

static const net_handler host_handler = {on_connected, on_recv, on_send, on_disconnected, NULL};

/* ---- lifecycle ---- */

static void kick_run(io_job *job) { strand_run(container_of(job, strand, kick_job)); }

static void kick(strand *st) {
  host_plugin *p = st->owner;
  int w = net_current_worker(p->h->net);
  st->kick_job.fn = kick_run;
  net_post(p->h->net, w < 0 ? 0 : (unsigned)w, &st->kick_job);
}

/* Per-worker state of the plugins and the host (after net_create). */
static int alloc_worker_state(host *h) {
  unsigned nw = h->nworkers;
  h->reg_pos = calloc(nw, sizeof(*h->reg_pos));
  h->conn_ms = calloc(nw, sizeof(*h->conn_ms));
  h->close_rl = calloc(nw, sizeof(*h->close_rl));
  if (!h->reg_pos || !h->conn_ms || !h->close_rl)
    return -ENOMEM;
  for (unsigned w = 0; w < nw; w++)
    if (!(h->reg_pos[w] = calloc(h->cfg->max_sessions, sizeof(**h->reg_pos))) ||
        !(h->conn_ms[w] = calloc(h->cfg->max_sessions, sizeof(**h->conn_ms))))
      return -ENOMEM;
  for (size_t i = 0; i < h->nplugins; i++) {
    host_plugin *p = &h->plugins[i];
    p->held = calloc(nw, sizeof(*p->held));
    p->reg = calloc(nw, sizeof(*p->reg));
    if (!p->held || !p->reg)
      return -ENOMEM;
    for (unsigned w = 0; w < nw; w++) {
      gate_init_held(p, w);
      os_mutex_init(&p->reg[w].mu);
    }
  }
  return 0;
}

int host_create(const cfg_server *cfg, const char *backend_override, int check_only,
                host **out) {
  host *h = calloc(1, sizeof(*h));
  char err[1024];
  int rc = 0;

  *out = NULL;
  if (!h)
    return -ENOMEM;
  h->cfg = cfg;
  h->nworkers = cfg->workers;
  os_mutex_init(&h->timer_mu);
  os_mutex_init(&h->img_mu);
  os_mutex_init(&h->metrics_mu);
  h->plugins = calloc(cfg->nplugins, sizeof(*h->plugins));
  h->listeners = calloc(cfg->nlisteners, sizeof(*h->listeners));
  if (!h->plugins || !h->listeners) {
    host_destroy(h);
    return -ENOMEM;
  }
  for (size_t i = 0; i < cfg->nplugins; i++) {
    host_plugin *p = &h->plugins[i];
    p->h = h;
    p->cfg = &cfg->plugins[i];
    p->serial = p->cfg->threading == CFG_THREADING_SERIAL;
    os_mutex_init(&p->fault_mu);
    strand_init(&p->st, kick, p);
    p->running = calloc(cfg->workers + 1, sizeof(*p->running));
    p->config_json = strdup(p->cfg->config_json ? p->cfg->config_json : "{}");
    h->nplugins = i + 1;
    if (!p->running || !p->config_json) {
      host_destroy(h);
      return -ENOMEM;
    }
    p->generation = 1;
    p->last_gen = 1;
    api_fill(p);
    rc = loader_open(p->cfg, &p->img, err, sizeof(err));
    if (rc < 0) {
      log_error("%s", err);
      host_destroy(h);
      return rc;
    }
    (void)os_file_id_get(p->cfg->resolved_path, &p->file);
    stats_show_serving(p);
    atomic_store(&p->wants_send, p->img.cb.on_send != NULL);
    log_info("plugin \"%s\": %s %s from %s (%s)", p->cfg->name, p->img.name, p->img.version,
             p->cfg->resolved_path, p->serial ? "serial" : "session");
  }
  h->nlisteners = cfg->nlisteners;
  for (size_t i = 0; i < cfg->nlisteners; i++) {
    host_listener *l = &h->listeners[i];
    l->h = h;
    l->cfg = &cfg->listeners[i];
    l->p = &h->plugins[l->cfg->plugin_index];
    l->ep.handler = &host_handler;
    l->ep.ctx = l;
    l->ep.framing =
        l->cfg->framing == CFG_FRAMING_RAW ? NET_FRAMING_RAW : NET_FRAMING_U16_SIZE_ID;
    l->ep.max_packet_size = cfg->limits.max_packet_size;
    l->ep.transport = l->cfg->transport == CFG_TRANSPORT_WEBSOCKET ? NET_TRANSPORT_WEBSOCKET
                                                                   : NET_TRANSPORT_TCP;
    l->ep.tls_cert = l->cfg->tls_cert;
    l->ep.tls_key = l->cfg->tls_key;
    l->ep.handshake_timeout_ms = l->cfg->handshake_timeout_ms;
    l->ep.ws_path = l->cfg->ws_path;
    l->ep.ws_origins = (const char *const *)l->cfg->origins;
    l->ep.ws_norigins = l->cfg->norigins;
    l->ep.ws_static_root = l->cfg->static_root;
    l->ep.ws_ping_interval_ms = l->cfg->ping_interval_ms;
  }
  if (!check_only) {
    net_opts o = {.workers = cfg->workers,
                  .backend = backend_override ? backend_override
                                              : cfg_backend_name(cfg->io_backend),
                  .max_sessions = cfg->max_sessions,
                  .max_send_queue = cfg->limits.max_send_queue,
                  .close_timeout_ms = 5000,
                  .idle_timeout_ms = cfg->limits.idle_timeout_ms,
                  .packet_timeout_ms = cfg->limits.packet_timeout_ms,
                  .max_conns_per_ip = cfg->limits.max_conns_per_ip,
                  .send_timeout_ms = cfg->limits.send_timeout_ms,
                  .recv_backlog = cfg->limits.recv_backlog};
    rc = net_create(&o, &h->net);
    if (rc == 0)
      rc = alloc_worker_state(h);
    if (rc == 0)
      rc = cluster_create(h);
    if (rc < 0) {
      host_destroy(h);
      return rc;
    }
  }
  *out = h;
  return 0;
}

static void unload_all(host *h) {
  for (size_t i = h->nplugins; i-- > 0;) {
    host_plugin *p = &h->plugins[i];
    if (p->loaded) {
      pier_state st = {NULL, 0};
      if (p->img.cb.on_unload)
        p->img.cb.on_unload(&st);
      free(st.data);
      p->loaded = 0;
      log_info("plugin \"%s\" unloaded", p->cfg->name);
    }
  }
}

/* Reports callbacks that are still running past slow_callback_ms (a callback
 * that never returns is never logged by timed_call). */
static void *watchdog_main(void *arg) {
  host *h = arg;
  unsigned slow_ms = h->cfg->limits.slow_callback_ms;
  while (!atomic_load(&h->watchdog_stop)) {
    os_sleep_ms(100);
    uint64_t now = os_clock_us();
    for (size_t i = 0; i < h->nplugins; i++) {
      host_plugin *p = &h->plugins[i];
      for (unsigned k = 0; k <= h->cfg->workers; k++) {
        cb_slot *s = &p->running[k];
        uint64_t start = atomic_load_explicit(&s->start_us, memory_order_acquire);
        /* start may be later than now: a callback began after now was read */
        if (start && start < now && start != s->reported &&
            now - start > (uint64_t)slow_ms * 1000) {
          s->reported = start;
          log_warn("plugin \"%s\": %s still running after %.0f ms on %s %u", p->cfg->name,
                   host_ev_callback[atomic_load_explicit(&s->type, memory_order_relaxed)], (double)(now - start) / 1000.0,
                   k < h->cfg->workers ? "worker" : "thread", k);
        }
      }
    }
  }
  return NULL;
}

/* Undoes a host_start that failed after on_load: what the plugins started
 * (timers, posted jobs) never runs, and every plugin is unloaded. */
static int start_failed(host *h, int rc) {
  for (size_t i = 0; i < h->nplugins; i++)
    timer_cancel_match(h, &h->plugins[i], 0);
  cluster_mute(h);
  unload_all(h);
  cluster_stop(h);
  return rc;
}

void host_set_bound_hook(host *h, host_bound_cb cb, void *arg) {
  h->bound_cb = cb;
  h->bound_arg = arg;
}

int host_start(host *h) {
  int rc;
  for (size_t i = 0; i < h->nlisteners; i++) {
    host_listener *l = &h->listeners[i];
    net_addr a;
    rc = net_addr_parse(l->cfg->address, (uint16_t)l->cfg->port, &a);
    if (rc == 0)
      rc = net_listen(h->net, &a, &l->ep, &l->nl);
    if (rc < 0) {
      log_error("listeners[%zu] %s:%u (plugin \"%s\"): %s", i, l->cfg->address, l->cfg->port,
                l->p->cfg->name, os_strerror(-rc));
      return start_failed(h, rc);
    }
  }
  /* Bound, and nothing accepts yet (no worker runs): the place to give up
   * root, before the first line of plugin code. */
  if (h->bound_cb && (rc = h->bound_cb(h->bound_arg)) != 0)
    return start_failed(h, rc < 0 ? rc : -EPERM);
  /* On the bus with the node name claimed before any plugin runs, so
   * on_load may subscribe. */
  if ((rc = cluster_start(h)) < 0)
    return start_failed(h, rc);
  for (size_t i = 0; i < h->nplugins; i++) {
    host_plugin *p = &h->plugins[i];
    pier_load_args args = {.size = sizeof(args),
                           .host = &p->api,
                           .config_json = p->config_json,
                           .generation = 1};
    rc = p->img.cb.on_load ? p->img.cb.on_load(&args) : 0;
    if (rc != 0) {
      log_error("plugin \"%s\" (%s): on_load failed: %s (%d)", p->cfg->name,
                p->cfg->resolved_path, rc < 0 ? os_strerror(-rc) : "non-zero return", rc);
      return start_failed(h, rc < 0 ? rc : -EINVAL);
    }
    p->loaded = 1;
  }
  h->started_ms = clock_ms();
  h->started = 1;
  for (size_t i = 0; i < h->nplugins; i++) {
    host_plugin *p = &h->plugins[i];
    if (p->cfg->tick_ms && p->img.cb.on_tick)
      timer_add(p, p->cfg->tick_ms, p->cfg->tick_ms, NULL, NULL, NULL);
  }
  rc = net_start(h->net);
  if (rc == 0)
    rc = cluster_run(h);
  if (rc < 0) {
    h->started = 0;
    return start_failed(h, rc);
  }
  if (h->cfg->limits.slow_callback_ms &&
      os_thread_create(&h->watchdog, watchdog_main, h) == 0)
    h->watchdog_running = 1;
  atomic_store(&h->ready, 1);
  return 0;
}

void host_stop(host *h) {
  if (!h->started || h->stopped)
    return;
  if (h->watchdog_running) {
    atomic_store(&h->watchdog_stop, 1);
    os_thread_join(h->watchdog);
    h->watchdog_running = 0;
  }
  /* Bus messages stop reaching plugins; what plugins publish while their
   * sessions end (net_stop) and in on_unload still goes out. */
  cluster_mute(h);
  net_stop(h->net); /* every session gets on_disconnected */
  h->stopped = 1;
  for (size_t i = 0; i < h->nplugins; i++) {
    timer_cancel_match(h, &h->plugins[i], 0);
    strand_drain(&h->plugins[i].st);
  }
  cluster_cancel_requests(h);
  for (size_t i = 0; i < h->nplugins; i++)
    strand_drain(&h->plugins[i].st);
  unload_all(h);
  cluster_stop(h);
}

void host_destroy(host *h) {
  if (!h)
    return;
  host_stop(h);
  unload_all(h);
  h->stopped = 1; /* from here no loop is touched */
  cluster_stop(h);     /* no bus callback posts a job after this */
  net_destroy(h->net); /* may run leftover jobs: strands must still exist */
  h->net = NULL;
  cluster_destroy(h);
  timer_reap_all(h);
  for (size_t i = 0; i < h->nplugins; i++) {
    host_plugin *p = &h->plugins[i];
    strand_drain(&p->st); /* frees jobs queued by leftover work */
    gate_discard(p);
    loader_close(&p->img);
    strand_destroy(&p->st);
    os_mutex_destroy(&p->fault_mu);
    for (unsigned w = 0; p->reg && w < h->nworkers; w++) {
      os_mutex_destroy(&p->reg[w].mu);
      free(p->reg[w].sids);
    }
    free(p->reg);
    free(p->held);
    free(p->running);
    free(p->config_json);
    pmetrics_free(p);
  }
  for (unsigned w = 0; h->reg_pos && w < h->nworkers; w++)
    free(h->reg_pos[w]);
  free(h->reg_pos);
  for (unsigned w = 0; h->conn_ms && w < h->nworkers; w++)
    free(h->conn_ms[w]);
  free(h->conn_ms);
  free(h->close_rl);
  free(h->plugins);
  free(h->listeners);
  os_mutex_destroy(&h->timer_mu);
  os_mutex_destroy(&h->img_mu);
  os_mutex_destroy(&h->metrics_mu);
  free(h);
}

net *host_net(host *h) { return h->net; }

int host_plugin_file_changed(host *h, const char *name) {
  host_plugin *p = host_find_plugin(h, name);
  os_file_id now;
  if (!p || os_file_id_get(p->cfg->resolved_path, &now) < 0)
    return 0;
  return !os_file_id_equal(&now, &p->file);
}

const char *host_plugin_config_json(host *h, const char *name) {
  host_plugin *p = host_find_plugin(h, name);
  return p ? p->config_json : NULL;
}

int host_kick(host *h, pier_sid sid) { return net_close(h->net, sid, PIER_REASON_KICKED); }

int host_reload_tls(host *h, size_t i, const char *cert, const char *key, char *msg,
                    size_t len) {
  if (i >= h->nlisteners || !h->listeners[i].nl) {
    snprintf(msg, len, "listeners[%zu] is not listening", i);
    return -EINVAL;
  }
  return net_listener_reload_tls(h->listeners[i].nl, cert, key, msg, len);
}
