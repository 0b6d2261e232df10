/* The network service: creation of the workers and their loops, listeners
 * (one listening socket that every worker accepts on), outgoing connections,
 * the any-thread API that routes work to a session's worker through its
 * inbox, and orderly stop. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "net/net_internal.h"
#include "net/xport.h"

_Thread_local net_worker *net_tls_worker;

#define ACCEPT_RETRY_MS 100

/* ---- max_conns_per_ip ---- */

typedef struct ip_count {
  struct ip_count *next;
  uint8_t key[17]; /* family byte + address */
  unsigned count;
} ip_count;

static void ip_key(const net_addr *a, uint8_t key[17]) {
  memset(key, 0, 17);
  if (a->u.sa.sa_family == AF_INET6) {
    key[0] = 6;
    memcpy(key + 1, &a->u.in6.sin6_addr, 16);
  } else {
    key[0] = 4;
    memcpy(key + 1, &a->u.in4.sin_addr, 4);
  }
}

static size_t ip_hash(const uint8_t key[17], size_t buckets) {
  uint64_t h = 1469598103934665603ull; /* FNV-1a */
  for (int i = 0; i < 17; i++)
    h = (h ^ key[i]) * 1099511628211ull;
  return (size_t)(h % buckets);
}

/* Counts one more session from peer; -ENOSPC if that would pass the cap. */
int net_ip_acquire(net *n, const net_addr *peer) {
  uint8_t key[17];
  ip_count **pp, *e;
  int rc = 0;
  if (!n->opts.max_conns_per_ip)
    return 0;
  ip_key(peer, key);
  os_mutex_lock(&n->ip_mu);
  for (pp = &n->ip_table[ip_hash(key, n->ip_buckets)]; (e = *pp); pp = &e->next)
    if (memcmp(e->key, key, 17) == 0)
      break;
  if (!e && (e = calloc(1, sizeof(*e)))) {
    memcpy(e->key, key, 17);
    *pp = e;
  }
  if (!e)
    rc = -ENOMEM;
  else if (e->count >= n->opts.max_conns_per_ip)
    rc = -ENOSPC;
  else
    e->count++;
  os_mutex_unlock(&n->ip_mu);
  return rc;
}

void net_ip_release(net *n, const net_addr *peer) {
  uint8_t key[17];
  ip_count **pp, *e;
  if (!n->opts.max_conns_per_ip)
    return;
  ip_key(peer, key);
  os_mutex_lock(&n->ip_mu);
  for (pp = &n->ip_table[ip_hash(key, n->ip_buckets)]; (e = *pp); pp = &e->next) {
    if (memcmp(e->key, key, 17) == 0) {
      if (--e->count == 0) {
        *pp = e->next;
        free(e);
      }
      break;
    }
  }
  os_mutex_unlock(&n->ip_mu);
}

/* ---- workers ---- */

void worker_maybe_finish(net_worker *w) {
  if (!w->stopping || w->nsessions > 0)
    return;
  for (net_listener *l = w->n->listeners; l; l = l->next)
    if (l->eps[w->id].ev.armed)
      return;
  io_loop_stop(&w->loop);
}

static void on_accept(io_ev *ev, int res, unsigned flags, char *data);

static void arm_accept(listen_ep *le) {
  int rc = io_accept(&le->w->loop, &le->ev, &le->fd, on_accept);
  if (rc < 0) {
    log_limited(&le->w->rl_accept, LOG_ERROR, "listener %d: cannot arm accept: %s; retrying",
                le->l->fd, os_strerror(-rc));
    io_timer_start(&le->w->loop, &le->retry, ACCEPT_RETRY_MS, 0);
  }
}

static void on_accept_retry(io_timer *t) {
  listen_ep *le = container_of(t, listen_ep, retry);
  if (!le->closed && !atomic_load(&le->w->n->accept_off))
    arm_accept(le);
}

static int post_adopt(net_worker *to, net_listener *l, int fd, const net_addr *peer);

/* Starts a session for an accepted fd on worker w (max_sessions and the
 * per-address count already taken for it). */
static void adopt(net_worker *w, net_listener *l, int fd, const net_addr *peer) {
  session *s;

  if (w->stopping || !(s = session_new(w, fd, &l->ep, peer))) {
    atomic_fetch_sub(&w->n->accepted_open, 1);
    net_ip_release(w->n, peer);
    if (!w->stopping)
      STAT_ADD(w, refused_full, 1);
    os_sock_close(fd);
    return;
  }
  s->accepted = 1;
  STAT_ADD(w, accepted, 1);
  os_sock_nodelay(fd);
  session_start(s);
}

/* Every worker accepts on the same socket, and the kernel may wake the same
 * one each time (or, on IOCP, only worker 0 accepts): an fd accepted by a
 * busier worker goes to the least loaded one, so sessions spread evenly. */
static net_worker *least_loaded(net *n, net_worker *w) {
  net_worker *best = w;
  int best_load = atomic_load_explicit(&w->load, memory_order_relaxed);
  for (unsigned i = 0; i < n->nworkers; i++) {
    int load = atomic_load_explicit(&n->workers[i].load, memory_order_relaxed);
    if (load + 1 < best_load) {
      best = &n->workers[i];
      best_load = load;
    }
  }
  return best;
}

static void accept_one(listen_ep *le, int fd) {
  net_worker *w = le->w, *to;
  net *n = w->n;
  net_addr peer;
  struct sockaddr_storage ss;
  socklen_t len = sizeof(ss);
  char text[NET_ADDR_STRLEN];

  if (w->stopping) {
    os_sock_close(fd);
    return;
  }
  if (atomic_load(&n->accept_off)) {
    os_sock_abort(fd); /* an RST: refused (Windows, or accepted just before) */
    return;
  }
  memset(&peer, 0, sizeof(peer));
  if (getpeername(fd, (struct sockaddr *)&ss, &len) == 0)
    net_addr_from_sockaddr((struct sockaddr *)&ss, len, &peer);
  if (atomic_fetch_add(&n->accepted_open, 1) >= n->opts.max_sessions) {
    atomic_fetch_sub(&n->accepted_open, 1);
    STAT_ADD(w, refused_full, 1);
    os_sock_abort(fd); /* an RST: refused */
    log_limited(&w->rl_full, LOG_WARN, "listener %s: max_sessions (%u) reached; connection refused",
                net_addr_format(&le->l->addr, (char[NET_ADDR_STRLEN]){0}, NET_ADDR_STRLEN),
                n->opts.max_sessions);
    return;
  }
  if (net_ip_acquire(n, &peer) < 0) {
    atomic_fetch_sub(&n->accepted_open, 1);
    STAT_ADD(w, refused_per_ip, 1);
    os_sock_abort(fd); /* an RST: refused */
    log_limited(&w->rl_ip, LOG_WARN,
                "listener %s: %s already has max_conns_per_ip (%u) sessions; connection refused",
                net_addr_format(&le->l->addr, (char[NET_ADDR_STRLEN]){0}, NET_ADDR_STRLEN),
                net_addr_format(&peer, text, sizeof(text)), n->opts.max_conns_per_ip);
    return;
  }
  to = least_loaded(n, w);
  if (to != w && post_adopt(to, le->l, fd, &peer) == 0)
    return;
  adopt(w, le->l, fd, &peer);
}

static void on_accept(io_ev *ev, int res, unsigned flags, char *data) {
  listen_ep *le = container_of(ev, listen_ep, ev);
  net_worker *w = le->w;

  if (res >= 0)
    accept_one(le, res);
  if (flags & IO_F_MORE)
    return;
  if (le->closed || w->stopping) {
    worker_maybe_finish(w);
    return;
  }
  if (atomic_load(&w->n->accept_off)) {
    /* EINVAL: the socket no longer listens (Linux), the kernel refuses for
     * us. Elsewhere keep accepting, to refuse each one (accept_one). */
    if (res != -EINVAL)
      arm_accept(le);
    return;
  }
  if (res < 0 && res != -ECANCELED) {
    /* EMFILE/ENFILE and the like: back off instead of spinning. */
    log_limited(&w->rl_accept, LOG_ERROR, "listener %s: accept failed: %s; retrying in %d ms",
                net_addr_format(&le->l->addr, (char[NET_ADDR_STRLEN]){0}, NET_ADDR_STRLEN),
                os_strerror(-res), ACCEPT_RETRY_MS);
    io_timer_start(&w->loop, &le->retry, ACCEPT_RETRY_MS, 0);
    return;
  }
  arm_accept(le);
}

/* A burst leaves memory behind that a quiet worker does not need: the send
 * buffers and session exts this thread keeps for reuse, the pages of the
 * loop's receive buffers, and what the allocator keeps of what was freed.
 * After a second without a completion it is given back, once per quiet
 * spell (the next burst makes it all again, at the price of a few page
 * faults); nothing of it is on the path of a message. */
#define TRIM_MS 1000

static void on_trim(io_timer *t) {
  net_worker *w = container_of(t, net_worker, trim);
  uint64_t seen = w->loop.stats.completions;
  if (seen != w->trim_seen) {
    w->trim_seen = seen;
    w->trimmed = 0;
    session_ext_sweep(w, 0);
    return;
  }
  session_ext_sweep(w, 1);
  if (w->trimmed)
    return;
  w->trimmed = 1;
  sbuf_cache_trim();
  session_ext_cache_trim(w);
  io_loop_trim(&w->loop);
  os_heap_trim();
}

/* Every worker accepts on each listener where the backend allows it; on
 * IOCP (shared_accept 0: a socket belongs to one completion port) worker 0
 * alone does, and least_loaded() hands the sessions to the others. */
static void *worker_main(void *arg) {
  net_worker *w = arg;
  net_tls_worker = w;
  io_timer_init(&w->trim, on_trim);
  io_timer_start(&w->loop, &w->trim, TRIM_MS, TRIM_MS);
  if (w->id == 0 || w->n->be->shared_accept)
    for (net_listener *l = w->n->listeners; l; l = l->next)
      arm_accept(&l->eps[w->id]);
  io_loop_run(&w->loop);
  io_timer_stop(&w->loop, &w->trim);
  sbuf_cache_trim();
  return NULL;
}

/* ---- cross-thread jobs ---- */

typedef enum {
  JOB_SEND,
  JOB_CLOSE,
  JOB_ABORT,
  JOB_QUEUE_FULL, /* a send from another thread would pass max_send_queue */
  JOB_RESUME,     /* the owner's backlog of a read-paused session reached 0 */
  JOB_CONNECT,
  JOB_ADOPT,
  JOB_STOP
} job_op;

typedef struct net_job {
  io_job job;
  net_worker *w;
  job_op op;
  pier_sid sid;
  sbuf *buf;
  size_t len; /* JOB_SEND: what it counts in xsend (bytes + XSEND_OVERHEAD); JOB_QUEUE_FULL:
                the refused send's bytes */
  size_t posted; /* JOB_QUEUE_FULL: the memory posted before it and not yet run */
  pier_reason reason;
  net_addr addr;
  const net_endpoint *ep;
  net_listener *listener;
  int fd;
} net_job;

/* What a posted send holds besides its bytes: the job, the buffer's header
 * and the allocator's share of each. */
#define XSEND_OVERHEAD (sizeof(net_job) + sizeof(sbuf) + 32)

static void do_connect(net_worker *w, const net_addr *addr, const net_endpoint *ep) {
  int fd = os_sock_stream(addr->u.sa.sa_family);
  session *s;
  int rc;

  if (fd < 0) {
    rc = fd;
    goto fail;
  }
  s = w->stopping ? NULL : session_new(w, fd, ep, addr);
  if (!s) {
    os_sock_close(fd);
    rc = w->stopping ? -ECANCELED : -ENOSPC;
    goto fail;
  }
  rc = session_connect(s, addr);
  if (rc < 0) {
    s->state = SS_OPEN; /* never connected: close quietly */
    session_close(s, PIER_REASON_IO_ERROR, 1);
    goto fail;
  }
  return;
fail:
  if (ep->handler->on_connect_failed)
    ep->handler->on_connect_failed(ep->ctx, addr, rc);
}

static void stop_worker(net_worker *w) {
  w->stopping = 1;
  for (net_listener *l = w->n->listeners; l; l = l->next) {
    listen_ep *le = &l->eps[w->id];
    le->closed = 1;
    io_timer_stop(&w->loop, &le->retry);
    io_cancel(&w->loop, &le->ev);
  }
  for (uint32_t i = 0; i < w->sids.cap; i++) {
    session *s = &w->sessions[i];
    if (s->state == SS_OPEN || s->state == SS_CONNECTING || s->state == SS_CLOSING)
      session_close(s, PIER_REASON_SHUTDOWN, 0);
  }
  worker_maybe_finish(w);
}

static void run_job(io_job *job) {
  net_job *j = container_of(job, net_job, job);
  net_worker *w = j->w;
  session *s;

  if (w->dead) { /* the loop is being torn down: free only */
    if (j->buf)
      sbuf_release(j->buf);
    if (j->op == JOB_SEND)
      atomic_fetch_sub(&w->sids.xsend[PIER_SID_SLOT(j->sid)], j->len);
    if (j->op == JOB_ADOPT) {
      os_sock_close(j->fd);
      atomic_fetch_sub(&w->n->accepted_open, 1);
      net_ip_release(w->n, &j->addr);
    }
    free(j);
    return;
  }
  switch (j->op) {
  case JOB_SEND:
    s = session_lookup(w, j->sid);
    if (s)
      session_write_buf(s, j->buf);
    sbuf_release(j->buf);
    atomic_fetch_sub(&w->sids.xsend[PIER_SID_SLOT(j->sid)], j->len);
    break;
  case JOB_QUEUE_FULL:
    s = session_lookup(w, j->sid);
    if (s && (s->state == SS_OPEN || s->state == SS_CLOSING)) {
      if (j->posted)
        session_posted_full(s, j->len + XSEND_OVERHEAD, j->posted);
      else
        session_queue_full(s, j->len);
    }
    break;
  case JOB_CLOSE:
  case JOB_ABORT:
    s = session_lookup(w, j->sid);
    /* A send accepted before the close may reach the inbox after it: a
     * graceful close waits, a loop iteration at a time, until the sends
     * counted for the slot have run (none is counted once the mark is seen,
     * so the wait ends). */
    if (s && j->op == JOB_CLOSE &&
        atomic_load_explicit(&w->sids.xsend[PIER_SID_SLOT(j->sid)], memory_order_acquire)) {
      io_post(&w->loop, &j->job);
      return;
    }
    if (s)
      session_close(s, j->reason, j->op == JOB_ABORT);
    break;
  case JOB_RESUME:
    s = session_lookup(w, j->sid);
    if (s)
      session_resume_reading(s);
    break;
  case JOB_CONNECT:
    do_connect(w, &j->addr, j->ep);
    break;
  case JOB_ADOPT:
    atomic_fetch_sub_explicit(&w->load, 1, memory_order_relaxed);
    adopt(w, j->listener, j->fd, &j->addr);
    break;
  case JOB_STOP:
    stop_worker(w);
    break;
  }
  free(j);
}

static int post(net_worker *w, job_op op, pier_sid sid, sbuf *buf, pier_reason reason) {
  net_job *j = calloc(1, sizeof(*j));
  if (!j)
    return -ENOMEM;
  j->job.fn = run_job;
  j->w = w;
  j->op = op;
  j->sid = sid;
  j->buf = buf;
  j->reason = reason;
  io_post(&w->loop, &j->job);
  return 0;
}

static int post_adopt(net_worker *to, net_listener *l, int fd, const net_addr *peer) {
  net_job *j = calloc(1, sizeof(*j));
  if (!j)
    return -ENOMEM;
  j->job.fn = run_job;
  j->w = to;
  j->op = JOB_ADOPT;
  j->listener = l;
  j->fd = fd;
  j->addr = *peer;
  atomic_fetch_add_explicit(&to->load, 1, memory_order_relaxed);
  io_post(&to->loop, &j->job);
  return 0;
}

static net_worker *worker_of(net *n, pier_sid sid) {
  unsigned id = PIER_SID_WORKER(sid);
  return sid != 0 && id < n->nworkers ? &n->workers[id] : NULL;
}

/* ---- public API ---- */

int net_create(const net_opts *opts, net **out) {
  char why[256];
  net *n;
  io_opts io = {0};
  int rc;

  *out = NULL;
  if (opts->workers < 1 || opts->workers > 64 || opts->max_sessions < 1)
    return -EINVAL;
  n = calloc(1, sizeof(*n));
  if (!n)
    return -ENOMEM;
  n->opts = *opts;
  if (!n->opts.close_timeout_ms)
    n->opts.close_timeout_ms = 5000;
  if (!n->opts.max_send_queue)
    n->opts.max_send_queue = 1u << 20;
  if (!n->opts.recv_backlog)
    n->opts.recv_backlog = 65536;
  n->be = io_backend_pick(opts->backend ? opts->backend : "auto", why, sizeof(why));
  if (!n->be) {
    log_error("io_backend \"%s\" is not available on this platform (expected %s)",
              opts->backend, io_backend_names);
    free(n);
    return -EINVAL;
  }
  if (strcmp(opts->backend ? opts->backend : "auto", "auto") == 0 && why[0])
    log_info("io_uring unavailable (%s); using epoll", why);
  if (n->be->probe && strcmp(opts->backend ? opts->backend : "auto", "auto") != 0 &&
      n->be->probe(why, sizeof(why)) < 0) {
    log_error("io_backend %s: %s", n->be->name, why);
    free(n);
    return -ENOTSUP;
  }
  n->nworkers = opts->workers;
  n->workers = calloc(n->nworkers, sizeof(*n->workers));
  n->ip_buckets = 4096;
  n->ip_table = calloc(n->ip_buckets, sizeof(*n->ip_table));
  os_mutex_init(&n->ip_mu);
  if (!n->workers || !n->ip_table) {
    free(n->workers);
    free(n->ip_table);
    free(n);
    return -ENOMEM;
  }
  io.buf_count = opts->buf_count;
  io.buf_size = opts->buf_size;
  for (unsigned i = 0; i < n->nworkers; i++) {
    net_worker *w = &n->workers[i];
    w->n = n;
    w->id = i;
    rc = sid_table_init(&w->sids, i, opts->max_sessions);
    if (rc == 0) {
      /* calloc, so the pages of slots never used are never touched; on a
       * cache line's start, so a session spans no more lines than it must. */
      w->sessions_mem = calloc(1, (size_t)opts->max_sessions * sizeof(*w->sessions) + 63);
      w->sessions = w->sessions_mem
                        ? (session *)(((uintptr_t)w->sessions_mem + 63) & ~(uintptr_t)63)
                        : NULL;
      rc = w->sessions ? io_loop_init(&w->loop, n->be, &io) : -ENOMEM;
    }
    if (rc < 0) {
      log_error("worker %u: cannot create its %s loop: %s", i, n->be->name, os_strerror(-rc));
      sid_table_free(&w->sids);
      free(w->sessions_mem);
      w->sessions = w->sessions_mem = NULL;
      n->nworkers = i;
      net_destroy(n);
      return rc;
    }
    w->loop.data = w;
    w->loop.prepare = worker_flush;
  }
  *out = n;
  return 0;
}

int net_listen(net *n, const net_addr *addr, const net_endpoint *ep, net_listener **out) {
  char text[NET_ADDR_STRLEN];
  net_listener *l;
  int fd, rc;
  struct sockaddr_storage ss;
  socklen_t len = sizeof(ss);

  xport_site *site = NULL;

  if (n->started)
    return -EBUSY;
  rc = xport_site_new(ep, &site); /* the certificate first: nothing to undo */
  if (rc < 0)
    return rc;
  fd = os_sock_stream(addr->u.sa.sa_family);
  if (fd < 0) {
    xport_site_free(site);
    return fd;
  }
  os_sock_reuse(fd);
  if (addr->u.sa.sa_family == AF_INET6)
    os_sock_v6only(fd);
  if (bind(fd, &addr->u.sa, net_addr_len(addr)) < 0 || listen(fd, 4096) < 0) {
    rc = -os_sock_errno();
    log_error("listen on %s failed: %s", net_addr_format(addr, text, sizeof(text)),
              os_strerror(-rc));
    os_sock_close(fd);
    xport_site_free(site);
    return rc;
  }
  l = calloc(1, sizeof(*l));
  if (l)
    l->eps = calloc(n->nworkers, sizeof(*l->eps));
  if (!l || !l->eps) {
    if (l)
      free(l);
    os_sock_close(fd);
    xport_site_free(site);
    return -ENOMEM;
  }
  l->n = n;
  l->fd = fd;
  l->ep = *ep;
  l->ep.site = site;
  if (ep->transport == NET_TRANSPORT_WEBSOCKET)
    n->has_ws = 1;
  if (getsockname(fd, (struct sockaddr *)&ss, &len) == 0)
    net_addr_from_sockaddr((struct sockaddr *)&ss, len, &l->addr);
  for (unsigned i = 0; i < n->nworkers; i++) {
    listen_ep *le = &l->eps[i];
    le->fd.fd = fd;
    le->fd.shared = 1;
    le->w = &n->workers[i];
    le->l = l;
    io_timer_init(&le->retry, on_accept_retry);
  }
  l->next = n->listeners;
  n->listeners = l;
  log_info("listening on %s (%s%s%s%s)", net_addr_format(&l->addr, text, sizeof(text)),
           ep->framing == NET_FRAMING_RAW ? "raw" : "u16_size_id",
           ep->transport == NET_TRANSPORT_WEBSOCKET ? ", WebSocket " : "",
           ep->transport == NET_TRANSPORT_WEBSOCKET ? (ep->ws_path ? ep->ws_path : "/") : "",
           ep->tls_cert ? ", TLS" : "");
  if (out)
    *out = l;
  return 0;
}

uint16_t net_listener_port(const net_listener *l) { return net_addr_port(&l->addr); }

int net_listener_reload_tls(net_listener *l, const char *cert, const char *key, char *err,
                            size_t errlen) {
  return xport_site_reload_tls(l->ep.site, cert, key, err, errlen);
}

int net_start(net *n) {
  if (n->started)
    return -EBUSY;
  n->started = 1;
  for (unsigned i = 0; i < n->nworkers; i++) {
    int rc = os_thread_create(&n->workers[i].thread, worker_main, &n->workers[i]);
    if (rc < 0) {
      log_error("cannot start worker %u: %s", i, os_strerror(-rc));
      net_stop(n);
      return rc;
    }
    n->workers[i].thread_started = 1;
  }
  log_info("%u worker%s on %s", n->nworkers, n->nworkers == 1 ? "" : "s", n->be->name);
  return 0;
}

int net_stop_accepting(net *n) {
  int rc = 0;
  atomic_store(&n->accept_off, 1);
  for (net_listener *l = n->listeners; l; l = l->next) {
    int r = os_sock_stop_listen(l->fd);
    if (r < 0 && rc == 0)
      rc = r;
  }
  if (n->listeners)
    log_info("listeners closed: new connections are refused");
  return rc == -ENOSYS ? 0 : rc;
}

void net_stop(net *n) {
  if (n->stopped)
    return;
  n->stopped = 1;
  for (unsigned i = 0; i < n->nworkers; i++)
    if (n->workers[i].thread_started)
      post(&n->workers[i], JOB_STOP, 0, NULL, PIER_REASON_SHUTDOWN);
  for (unsigned i = 0; i < n->nworkers; i++) {
    if (n->workers[i].thread_started) {
      os_thread_join(n->workers[i].thread);
      n->workers[i].thread_started = 0;
    }
  }
}

void net_destroy(net *n) {
  net_listener *l, *next;
  if (!n)
    return;
  net_stop(n);
  for (l = n->listeners; l; l = l->next) {
    for (unsigned i = 0; i < n->nworkers; i++)
      io_close_fd(&n->workers[i].loop, &l->eps[i].fd);
    os_sock_close(l->fd);
  }
  for (unsigned i = 0; i < n->nworkers; i++) {
    net_worker *w = &n->workers[i];
    /* Sessions left (a worker that never ran) own fds and buffers. */
    for (uint32_t k = 0; w->sessions && k < w->sids.cap; k++) {
      session *s = &w->sessions[k];
      if (s->state != SS_FREE) {
        os_sock_close(s->iofd.fd);
        session_ext_free(s);
        framing_reset(&s->fr);
        if (s->xp)
          xport_free(s);
      }
    }
    w->dead = 1;
    io_loop_done(&w->loop);
    session_ext_sweep(w, 1); /* after the jobs io_loop_done ran */
    session_ext_cache_trim(w);
    sid_table_free(&w->sids);
    free(w->sessions_mem);
  }
  for (l = n->listeners; l; l = next) { /* after the sessions that use their sites */
    next = l->next;
    xport_site_free(l->ep.site);
    free(l->eps);
    free(l);
  }
  free(n->workers);
  for (size_t i = 0; i < n->ip_buckets; i++) {
    while (n->ip_table[i]) {
      ip_count *e = n->ip_table[i];
      n->ip_table[i] = e->next;
      free(e);
    }
  }
  free(n->ip_table);
  os_mutex_destroy(&n->ip_mu);
  free(n);
}

int net_connect(net *n, const net_addr *addr, const net_endpoint *ep) {
  unsigned id = atomic_fetch_add(&n->rr, 1) % n->nworkers;
  net_job *j;
  if (n->stopped)
    return -ECANCELED;
  j = calloc(1, sizeof(*j));
  if (!j)
    return -ENOMEM;
  j->job.fn = run_job;
  j->w = &n->workers[id];
  j->op = JOB_CONNECT;
  j->addr = *addr;
  j->ep = ep;
  io_post(&j->w->loop, &j->job);
  return 0;
}

/* Whether a send to sid may go straight into the queue: only on the
 * session's own worker, and only when no send from another thread is still
 * on its way through the inbox (it must not be overtaken: sends to one
 * session arrive in the order the calls were made). */
static int send_direct(net_worker *w, pier_sid sid) {
  return net_tls_worker == w &&
         atomic_load_explicit(&w->sids.xsend[PIER_SID_SLOT(sid)], memory_order_acquire) == 0;
}

/* A send of len bytes from another thread that would pass max_send_queue,
 * alone or behind the memory already posted: the session is disconnected
 * as the contract says, on its worker (which logs it with its rate limit),
 * and stops taking sends from other threads at once. */
static int refuse_send(net_worker *w, pier_sid sid, size_t len, size_t posted) {
  net_job *j;
  sid_mark_closing(&w->sids, sid);
  j = calloc(1, sizeof(*j));
  if (!j) {
    log_error("session %016llx: out of memory disconnecting it (send queue full)",
              (unsigned long long)sid);
    return -ENOBUFS;
  }
  j->job.fn = run_job;
  j->w = w;
  j->op = JOB_QUEUE_FULL;
  j->sid = sid;
  j->len = len;
  j->posted = posted;
  io_post(&w->loop, &j->job);
  return -ENOBUFS;
}

/* Posts a send of b (a reference the job takes over) to the session's
 * worker. The memory posted to one slot and not yet run, its bytes and each
 * job's own, is capped like its queue: a plugin thread cannot grow a
 * worker's inbox past max_send_queue per session, in one-byte sends either.
 * A send with nothing posted before it fits whenever its bytes do, as on
 * the session's own worker, so the inbox holds at most max_send_queue plus
 * one job's overhead. */
static int post_send(net_worker *w, pier_sid sid, sbuf *b) {
  _Atomic size_t *pending = &w->sids.xsend[PIER_SID_SLOT(sid)];
  size_t len = b->len - b->off, cost = len + XSEND_OVERHEAD, before;
  size_t cap = w->n->opts.max_send_queue;
  net_job *j;

  if (len == 0) { /* nothing to send or to keep in order */
    sbuf_release(b);
    return 0;
  }
  if (len > cap) {
    sbuf_release(b);
    return refuse_send(w, sid, len, 0);
  }
  before = atomic_fetch_add(pending, cost);
  if (before && before + cost > cap) {
    atomic_fetch_sub(pending, cost);
    sbuf_release(b);
    return refuse_send(w, sid, len, before);
  }
  /* A close marks the sid, then reads the slot's count: either it sees this
   * send there and closes behind it (JOB_CLOSE waits), or this sees its mark
   * and refuses, never accepting what a close already ended. */
  atomic_thread_fence(memory_order_seq_cst);
  if (!sid_live(&w->sids, sid)) {
    atomic_fetch_sub(pending, cost);
    sbuf_release(b);
    return -ENOTCONN;
  }
  j = calloc(1, sizeof(*j));
  if (!j) {
    atomic_fetch_sub(pending, cost);
    sbuf_release(b);
    return -ENOMEM;
  }
  j->job.fn = run_job;
  j->w = w;
  j->op = JOB_SEND;
  j->sid = sid;
  j->buf = b;
  j->len = cost;
  io_post(&w->loop, &j->job);
  return 0;
}

int net_send(net *n, pier_sid sid, const void *data, size_t len) {
  net_worker *w = worker_of(n, sid);
  sbuf *b;

  if (!w || PIER_SID_SLOT(sid) >= w->sids.cap)
    return -ENOTCONN;
  if (send_direct(w, sid)) {
    session *s = session_lookup(w, sid);
    return s ? session_write(s, data, len) : -ENOTCONN;
  }
  if (!sid_live(&w->sids, sid))
    return -ENOTCONN;
  if (len > n->opts.max_send_queue)
    return refuse_send(w, sid, len, 0);
  b = sbuf_from(data, len);
  if (!b)
    return -ENOMEM;
  return post_send(w, sid, b);
}

int net_send_buf(net *n, pier_sid sid, sbuf *b) {
  net_worker *w = worker_of(n, sid);

  if (!w || PIER_SID_SLOT(sid) >= w->sids.cap)
    return -ENOTCONN;
  if (send_direct(w, sid)) {
    session *s = session_lookup(w, sid);
    return s ? session_write_buf(s, b) : -ENOTCONN;
  }
  if (!sid_live(&w->sids, sid))
    return -ENOTCONN;
  return post_send(w, sid, sbuf_ref(b));
}

size_t net_broadcast(net *n, const pier_sid *sids, size_t count, const void *data, size_t len) {
  /* With WebSocket listeners the buffer carries a frame header too, so TCP
   * and WebSocket recipients share it (see sbuf.h). */
  sbuf *b = n->has_ws ? xport_shared_frame(data, len) : sbuf_from(data, len);
  size_t ok = 0;
  if (!b)
    return 0;
  for (size_t i = 0; i < count; i++)
    if (net_send_buf(n, sids[i], b) == 0)
      ok++;
  sbuf_release(b);
  return ok;
}

static int close_any(net *n, pier_sid sid, pier_reason reason, int abortive) {
  net_worker *w = worker_of(n, sid);
  if (!w)
    return -ENOTCONN;
  if (net_tls_worker == w) {
    session *s = session_lookup(w, sid);
    if (!s || (s->state != SS_OPEN && s->state != SS_CONNECTING && s->state != SS_CLOSING))
      return -ENOTCONN;
    /* Sends from other threads still on their way through the inbox were
     * accepted before this close: a graceful one goes in behind them, so
     * they are queued, and flushed, first (see post_send for the order of
     * the mark and the count). */
    if (!abortive) {
      sid_mark_closing(&w->sids, sid);
      atomic_thread_fence(memory_order_seq_cst);
      if (atomic_load_explicit(&w->sids.xsend[PIER_SID_SLOT(sid)], memory_order_relaxed) &&
          post(w, JOB_CLOSE, sid, NULL, reason) == 0)
        return 0;
    }
    session_close(s, reason, abortive);
    return 0;
  }
  if (!sid_live(&w->sids, sid))
    return -ENOTCONN;
  /* Sends from other threads fail from now on; those accepted before are
   * queued before the close (JOB_CLOSE waits for them), so still flushed by
   * a graceful close. */
  sid_mark_closing(&w->sids, sid);
  atomic_thread_fence(memory_order_seq_cst); /* before the wait reads the count */
  return post(w, abortive ? JOB_ABORT : JOB_CLOSE, sid, NULL, reason);
}

int net_close(net *n, pier_sid sid, pier_reason reason) { return close_any(n, sid, reason, 0); }

int net_abort(net *n, pier_sid sid, pier_reason reason) { return close_any(n, sid, reason, 1); }

int net_set_user(net *n, pier_sid sid, void *user) {
  net_worker *w = worker_of(n, sid);
  return w ? sid_set_user(&w->sids, sid, user) : -ENOTCONN;
}

void *net_get_user(net *n, pier_sid sid) {
  net_worker *w = worker_of(n, sid);
  return w ? sid_get_user(&w->sids, sid) : NULL;
}

int net_peer(net *n, pier_sid sid, net_addr *out) {
  net_worker *w = worker_of(n, sid);
  if (!w || !sid_lock(&w->sids, sid))
    return -ENOTCONN;
  /* Under the slot lock the session cannot be released and its slot reused,
   * so this is the peer of the session sid names. */
  *out = w->sessions[PIER_SID_SLOT(sid)].peer;
  sid_unlock(&w->sids, sid);
  return 0;
}

void net_backlog_done(net *n, pier_sid sid, size_t bytes) {
  net_worker *w = worker_of(n, sid);
  _Atomic uint64_t *word;
  uint64_t v, tag, held, nv;

  if (!w || PIER_SID_SLOT(sid) >= w->sids.cap || PIER_SID_GEN(sid) == 0)
    return;
  word = &w->sids.backlog[PIER_SID_SLOT(sid)];
  tag = (uint64_t)PIER_SID_GEN(sid) << SID_BL_SHIFT;
  v = atomic_load_explicit(word, memory_order_relaxed);
  do {
    if ((v & ~(SID_BL_PAUSED | SID_BL_BYTES)) != tag)
      return; /* an earlier session of the slot: not this count */
    held = v & SID_BL_BYTES;
    held = bytes < held ? held - bytes : 0;
    nv = tag | held | (held ? (v & SID_BL_PAUSED) : 0);
  } while (!atomic_compare_exchange_weak_explicit(word, &v, nv, memory_order_acq_rel,
                                                  memory_order_relaxed));
  /* Whoever clears the paused bit posts the one resume of this pause. */
  if ((v & SID_BL_PAUSED) && !held && post(w, JOB_RESUME, sid, NULL, PIER_REASON_NONE) < 0)
    log_error("session %016llx: out of memory resuming its reads; it stays paused",
              (unsigned long long)sid);
}

void net_post(net *n, unsigned worker, io_job *job) {
  io_post(&n->workers[worker % n->nworkers].loop, job);
}

int net_current_worker(const net *n) {
  return net_tls_worker && net_tls_worker->n == n ? (int)net_tls_worker->id : -1;
}

io_loop *net_loop(net *n, unsigned i) { return &n->workers[i % n->nworkers].loop; }

const char *net_backend_name(const net *n) { return n->be->name; }

unsigned net_workers(const net *n) { return n->nworkers; }

/* The io loop's rare-event counters: relaxed atomic reads, never a lock or a
 * wait on the worker. */
static void io_stats_read(io_loop *loop, uint64_t *cq_overflows, uint64_t *enobufs,
                          uint64_t *rearms, uint64_t *waits) {
  *cq_overflows += atomic_load_explicit(&loop->stats.cq_overflows, memory_order_relaxed);
  *enobufs += atomic_load_explicit(&loop->stats.enobufs, memory_order_relaxed);
  *rearms += atomic_load_explicit(&loop->stats.rearms, memory_order_relaxed);
  *waits += atomic_load_explicit(&loop->stats.waits, memory_order_relaxed);
}

void net_get_stats(net *n, net_stats *out) {
  memset(out, 0, sizeof(*out));
#define SUM(f) out->f += atomic_load_explicit(&w->stats.f, memory_order_relaxed)
  for (unsigned i = 0; i < n->nworkers; i++) {
    net_worker *w = &n->workers[i];
    SUM(accepted);
    SUM(refused_full);
    SUM(connected_out);
    SUM(disconnects);
    SUM(bytes_in);
    SUM(bytes_out);
    SUM(send_queue_full);
    SUM(bad_packets);
    SUM(idle_timeouts);
    SUM(packet_timeouts);
    SUM(refused_per_ip);
    SUM(send_timeouts);
    SUM(read_pauses);
    SUM(handshakes);
    SUM(handshake_failures);
    SUM(handshake_timeouts);
    SUM(http_files);
    SUM(ws_protocol_errors);
    SUM(ping_timeouts);
    SUM(messages_in);
    SUM(messages_out);
    SUM(send_queue_bytes);
    for (unsigned r = 0; r < NET_REASON_COUNT; r++)
      out->closed_by_reason[r] += atomic_load_explicit(&w->stats.closed_by_reason[r],
                                                       memory_order_relaxed);
    io_stats_read(&w->loop, &out->io_cq_overflows, &out->io_enobufs, &out->io_rearms,
                  &out->io_waits);
  }
#undef SUM
  out->sessions = out->accepted + out->connected_out - out->disconnects;
}
