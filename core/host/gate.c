/* The event gate: every event for a plugin passes here on its way to a
 * callback. A "session" plugin is called at once on the session's worker; a
 * serial plugin through its strand (at once when the strand is idle). While
 * a reload pauses a plugin, its events are held (per worker, or on the paused
 * strand) and later delivered to the version then loaded, in order, on the
 * same thread rules. Whatever is kept for later costs backlog: past
 * limits.recv_backlog for a session, or limits.plugin_backlog for the plugin,
 * the session stops being read until its events are delivered, so a client
 * cannot make the daemon buffer without bound. Faults (slow callbacks,
 * fail(), quarantine) are counted here too. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "host/host_internal.h"

const char *const host_ev_callback[] = {"on_connected", "on_recv",    "on_send",
                                        "on_disconnected", "on_tick", "timer",
                                        "posted job",   "on_message", "request callback",
                                        "on_node"};

/* During a serial plugin's on_disconnected the session's slot may already
 * be reused: get_user answers from the value captured at disconnect. */
_Thread_local pier_sid host_tls_gone_sid;
_Thread_local void *host_tls_gone_user;

static void call(host_plugin *p, const ev *e) {
  const pier_plugin *cb = &p->img.cb;
  /* A timer or job of another generation points into code that is gone or
   * into state it was told to drop: never run it. */
  if ((e->type == EV_TIMER || e->type == EV_POST || e->type == EV_REPLY) &&
      e->gen != atomic_load(&p->generation))
    return;
  switch (e->type) {
  case EV_CONNECTED:
    if (cb->on_connected)
      cb->on_connected(e->sid, e->data);
    break;
  case EV_RECV:
    if (cb->on_recv)
      cb->on_recv(e->sid, e->data, e->n);
    break;
  case EV_SEND:
    if (cb->on_send)
      cb->on_send(e->sid, e->n);
    break;
  case EV_DISCONNECTED:
    host_tls_gone_sid = e->sid;
    host_tls_gone_user = e->user;
    if (cb->on_disconnected)
      cb->on_disconnected(e->sid, e->reason);
    host_tls_gone_sid = 0;
    host_tls_gone_user = NULL;
    break;
  case EV_TICK:
    if (cb->on_tick)
      cb->on_tick(e->n);
    break;
  case EV_TIMER:
    if (timer_live(e->timer))
      e->fn(e->arg);
    break;
  case EV_POST:
    e->fn(e->arg);
    break;
  case EV_MESSAGE:
    /* Not for a subscription removed since the message came: an unsubscribe,
     * or a reload rolled back that had added it. */
    if (cb->on_message && cluster_sub_live(e->arg))
      cb->on_message(e->subject, e->data, e->n, e->reply_to);
    break;
  case EV_REPLY:
    e->reply_fn(e->arg, e->status, e->data, e->n);
    break;
  case EV_NODE:
    if (cb->on_node)
      cb->on_node(e->data, (int)e->n);
    break;
  }
}

/* A callback that ran past slow_callback_ms: logged and counted as a
 * failure. Out of line, so the common path keeps a small frame. */
static __attribute__((noinline)) void slow_call(host_plugin *p, const ev *e, uint64_t ns,
                                                unsigned slow_ms) {
  char why[160];
  atomic_fetch_add(&p->slow_calls, 1);
  snprintf(why, sizeof(why), "%s took %.1f ms (slow_callback_ms %u)", host_ev_callback[e->type],
           (double)ns / 1e6, slow_ms);
  gate_failed(p, why);
}

/* call(), timed, on worker w (or, w < 0, on a thread that is no worker's):
 * its duration goes into this thread's latency histogram (two clock reads
 * and a bucket search; no lock, and on a worker no locked add either). With
 * slow_callback_ms the start time is also visible to the watchdog thread
 * while it runs, and a slow call is logged and counted. The slot's stores
 * are plain (release) stores: the watchdog only needs to see them
 * eventually. (It reads the type after the start time, so a callback that
 * began meanwhile can lend its type to the older start it logs: a log
 * line's detail, as before.) */
static void timed_call(host_plugin *p, const ev *e, int w) {
  unsigned slow_ms = p->h->cfg->limits.slow_callback_ms;
  int shared = w < 0;
  cb_slot *slot = &p->running[shared ? p->h->nworkers : (unsigned)w];
  uint64_t t0, ns;

  t0 = os_clock_ns();
  if (slow_ms) {
    atomic_store_explicit(&slot->type, (int)e->type, memory_order_relaxed);
    atomic_store_explicit(&slot->start_us, t0 / 1000 ? t0 / 1000 : 1, memory_order_release);
  }
  call(p, e);
  ns = os_clock_ns() - t0;
  stats_observe(&slot->lat[e->type], ns, shared);
  if (!slow_ms)
    return;
  atomic_store_explicit(&slot->start_us, 0, memory_order_release);
  if (ns > (uint64_t)slow_ms * 1000000)
    slow_call(p, e, ns, slow_ms);
}

/* A quarantined plugin gets no callback until it is reloaded; an unloaded
 * one (leftover work at shutdown) none at all. w: as for timed_call. */
static void invoke(host_plugin *p, const ev *e, int w) {
  if (p->loaded && !atomic_load_explicit(&p->quarantined, memory_order_relaxed))
    timed_call(p, e, w);
}

/* invoke() where the caller does not know its thread. */
static void invoke_here(host_plugin *p, const ev *e) {
  invoke(p, e, net_current_worker(p->h->net));
}

/* ---- jobs: events kept for later ---- */

static void job_to_ev(const ev_job *j, ev *e) {
  *e = (ev){.type = j->type, .gen = j->gen, .sid = j->sid, .reason = j->reason, .n = j->n,
            .data = j->data, .user = j->user, .fn = j->fn, .arg = j->arg, .timer = j->timer,
            .reply_fn = j->reply_fn, .status = j->status};
  if (j->type == EV_MESSAGE) {
    e->subject = j->data + j->subj_off;
    e->reply_to = j->reply_off ? j->data + j->reply_off : NULL;
  } else if (j->type == EV_REPLY && j->status != 0) {
    e->data = NULL;
  }
}

/* Bytes of e's data a job copies: the payload, and for a message its
 * subject and reply address after it (each with its NUL). */
static size_t ev_extra(const ev *e) {
  switch (e->type) {
  case EV_RECV:
  case EV_CONNECTED:
    return e->n;
  case EV_MESSAGE:
    return e->n + 1 + strlen(e->subject) + 1 + (e->reply_to ? strlen(e->reply_to) + 1 : 0);
  case EV_REPLY:
    return e->data ? e->n : 0;
  case EV_NODE:
    return strlen(e->data) + 1;
  default:
    return 0;
  }
}

static size_t limit_or(size_t v, size_t dflt) { return v ? v : dflt; }

/* Releases what j holds: its backlog (which may let its session be read
 * again), its timer's queued mark, its post count. */
static void release_job(ev_job *j) {
  host_plugin *p = j->p;
  atomic_fetch_sub(&p->backlog, j->cost);
  if (j->paced && p->h->net)
    net_backlog_done(p->h->net, j->sid, j->cost);
  if (j->timer) {
    timer_unqueue(j->timer);
    timer_unref(j->timer);
  }
  if (j->type == EV_POST)
    atomic_fetch_sub(&p->posts, 1);
  else if (j->type == EV_MESSAGE)
    cluster_msg_done(j->arg, j->n);
  else if (j->type == EV_REPLY)
    cluster_reply_done(p, j->n);
  else if (j->type == EV_NODE)
    cluster_node_done(p);
  free(j);
}

static void run_job(strand_job *job) {
  ev_job *j = (ev_job *)job;
  ev e;
  job_to_ev(j, &e);
  invoke_here(j->p, &e);
  release_job(j);
}

/* A heap copy of e (with its data) that outlives the callback, charged to the
 * backlog. A session event made on the session's worker pauses reading it
 * when its backlog or the plugin's is over the limit. NULL (and logged) when
 * out of memory: the event is lost, which is said. */
static ev_job *make_job(host_plugin *p, const ev *e) {
  const cfg_limits *lim = &p->h->cfg->limits;
  size_t extra = ev_extra(e);
  ev_job *j = malloc(sizeof(*j) + extra);
  size_t total;

  if (!j) {
    log_error("plugin \"%s\": out of memory queueing %s for session %016llx; dropped",
              p->cfg->name, host_ev_callback[e->type], (unsigned long long)e->sid);
    return NULL;
  }
  *j = (ev_job){.base.run = run_job, .p = p, .type = e->type, .gen = e->gen, .sid = e->sid,
                .reason = e->reason, .n = e->n, .user = e->user, .fn = e->fn, .arg = e->arg,
                .timer = e->timer, .reply_fn = e->reply_fn, .status = e->status,
                .cost = sizeof(*j) + extra};
  if (e->type == EV_MESSAGE) {
    size_t sl = strlen(e->subject) + 1;
    memcpy(j->data, e->data, e->n);
    j->data[e->n] = '\0';
    j->subj_off = (uint32_t)(e->n + 1);
    memcpy(j->data + j->subj_off, e->subject, sl);
    if (e->reply_to) {
      j->reply_off = (uint32_t)(j->subj_off + sl);
      memcpy(j->data + j->reply_off, e->reply_to, strlen(e->reply_to) + 1);
    }
  } else if (extra) {
    memcpy(j->data, e->data, extra);
  }
  if (e->timer)
    timer_ref(e->timer);
  total = atomic_fetch_add(&p->backlog, j->cost) + j->cost;
  if (e->s) {
    j->paced = 1;
    session_backlog_add(e->s, j->cost, total > limit_or(lim->plugin_backlog, 16u << 20));
  }
  return j;
}

/* ---- "session" plugins: the reload gate and the held queues ---- */

/* Returns 1 if e is now held, 0 if it was lost (out of memory, logged). */
static int hold(host_plugin *p, held_q *q, const ev *e) {
  ev_job *j = make_job(p, e);
  if (!j)
    return 0;
  atomic_fetch_add(&p->nheld, 1);
  if (q->tail)
    q->tail->next_held = j;
  else
    q->head = j;
  q->tail = j;
  return 1;
}

/* Runs on worker q->worker: delivers what is held there, in order, until the
 * queue is empty or a new reload pauses the plugin (its resume posts this
 * again). */
static void drain_run(io_job *job) {
  held_q *q = container_of(job, held_q, drain);
  host_plugin *p = q->p;

  atomic_store(&q->drain_posted, 0);
  while (q->head) {
    ev_job *j = q->head;
    ev e;
    if (!p->h->stopped) {
      atomic_fetch_add(&p->active, 1);
      if (atomic_load(&p->paused)) {
        atomic_fetch_sub(&p->active, 1);
        return;
      }
    }
    q->head = j->next_held;
    if (!q->head)
      q->tail = NULL;
    job_to_ev(j, &e);
    if (!p->h->stopped) {
      invoke_here(p, &e);
      atomic_fetch_sub(&p->active, 1);
    }
    release_job(j);
  }
}

static int deliver_session(host_plugin *p, const ev *e) {
  int w = net_current_worker(p->h->net);
  held_q *q;

  if (w < 0) { /* no worker thread (the workers are gone): nothing to order with */
    invoke(p, e, w);
    return 0;
  }
  q = &p->held[w];
  if (!q->head) { /* else older events wait on this worker: keep the order */
    atomic_fetch_add(&p->active, 1);
    if (!atomic_load(&p->paused)) {
      invoke(p, e, w);
      atomic_fetch_sub(&p->active, 1);
      return 0;
    }
    atomic_fetch_sub(&p->active, 1);
  }
  return hold(p, q, e);
}

/* ---- serial plugins: the strand ---- */

static int deliver_serial(host_plugin *p, const ev *e) {
  ev_job *j;
  if (strand_try_enter(&p->st)) {
    invoke_here(p, e);
    strand_run(&p->st);
    return 0;
  }
  j = make_job(p, e);
  if (!j)
    return 0;
  if (atomic_load(&p->paused))
    atomic_fetch_add(&p->nheld, 1);
  strand_push(&p->st, &j->base);
  return 1;
}

int gate_deliver(host_plugin *p, const ev *e) {
  return p->serial ? deliver_serial(p, e) : deliver_session(p, e);
}

/* ---- pause and resume for a reload ---- */

static void nap(void) { os_nap_us(20); }

int gate_quiesce(host_plugin *p) {
  uint64_t deadline = clock_ms() + QUIESCE_TIMEOUT_MS;
  atomic_store(&p->nheld, 0);
  if (p->serial) {
    atomic_store(&p->paused, 1); /* for the count of held events only */
    strand_pause(&p->st);
    while (strand_busy(&p->st)) {
      if (clock_ms() > deadline)
        return -ETIMEDOUT;
      nap();
    }
    return 0;
  }
  atomic_store(&p->paused, 1);
  while (atomic_load(&p->active) > 0) {
    if (clock_ms() > deadline)
      return -ETIMEDOUT;
    nap();
  }
  return 0;
}

size_t gate_resume(host_plugin *p) {
  atomic_store(&p->paused, 0);
  if (p->serial) {
    strand_unpause(&p->st);
    return atomic_load(&p->nheld);
  }
  /* Each worker delivers its own held events, so they keep the session's
   * thread and order; a worker with none finds its queue empty. */
  for (unsigned w = 0; w < p->h->nworkers; w++) {
    held_q *q = &p->held[w];
    if (!atomic_exchange(&q->drain_posted, 1))
      net_post(p->h->net, w, &q->drain);
  }
  return atomic_load(&p->nheld);
}

void gate_discard(host_plugin *p) {
  for (unsigned w = 0; p->held && w < p->h->nworkers; w++) {
    held_q *q = &p->held[w];
    while (q->head) {
      ev_job *j = q->head;
      q->head = j->next_held;
      release_job(j);
    }
    q->tail = NULL;
  }
}

void gate_init_held(host_plugin *p, unsigned w) {
  held_q *q = &p->held[w];
  q->p = p;
  q->worker = w;
  q->drain.fn = drain_run;
}

/* ---- faults ---- */

void gate_quarantine(host_plugin *p, const char *why) {
  pier_sid *sids;
  size_t n, got;
  if (atomic_exchange(&p->quarantined, 1))
    return;
  n = host_plugin_sids(p, NULL, 0);
  sids = malloc((n ? n : 1) * sizeof(*sids));
  got = sids ? host_plugin_sids(p, sids, n) : 0;
  if (got > n)
    got = n;
  log_error("plugin \"%s\" quarantined after %u failures (last: %s): closing its %zu sessions, "
            "refusing new ones until `reload %s`",
            p->cfg->name, atomic_load(&p->failures), why, got, p->cfg->name);
  for (size_t i = 0; i < got; i++)
    net_close(p->h->net, sids[i], PIER_REASON_PLUGIN_ERROR);
  free(sids);
}

void gate_failed(host_plugin *p, const char *why) {
  unsigned limit = p->h->cfg->limits.quarantine_after;
  unsigned n = atomic_fetch_add(&p->failures, 1) + 1;
  os_mutex_lock(&p->fault_mu);
  log_limited(&p->fault_rl, LOG_WARN, "plugin \"%s\": %s", p->cfg->name, why);
  os_mutex_unlock(&p->fault_mu);
  if (limit && n >= limit)
    gate_quarantine(p, why);
}
