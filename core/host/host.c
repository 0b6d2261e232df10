/* Plugin host. Session events arrive from core/net on the session's worker
 * and become plugin callbacks: called at once for "session" plugins; for
 * "serial" plugins called at once when the plugin's strand is idle, else
 * queued on the strand with a copy of the data. Plugin timers, ticks and
 * posted jobs run on worker 0's loop (then through the strand for serial
 * plugins). */
#include "host/host.h"

#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base/log.h"
#include "host/loader.h"
#include "host/strand.h"
#include "net/framing.h"

#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

typedef struct host_plugin host_plugin;

typedef struct host_listener {
  host *h;
  host_plugin *p;
  const cfg_listener *cfg;
  net_endpoint ep;
  net_listener *nl;
  _Atomic long sessions;
} host_listener;

typedef struct host_timer {
  struct host_timer *next;
  host_plugin *p;
  uint64_t id;
  pier_timer_fn fn; /* NULL: the plugin's tick */
  void *arg;
  uint64_t after, repeat;
  io_timer t;
  unsigned gen;       /* plugin generation that started it */
  int canceled;       /* under host.timer_mu */
  _Atomic int refs;   /* the timer list, plus each queued strand call */
} host_timer;

struct host_plugin {
  pier_host api; /* what the plugin gets; container_of leads back here */
  host *h;
  const cfg_plugin *cfg;
  plugin_image img;
  _Atomic unsigned generation;
  int serial;
  int loaded; /* on_load succeeded */
  char *config_json; /* what on_load gets; SIGHUP may replace it */
  struct stat file;  /* identity of the file the image came from */
  strand st;
  /* The reload gate: callbacks count themselves in `active`; a reload sets
   * `paused`, waits for active == 0, and events arriving meanwhile are held
   * in order and delivered to the new version. */
  _Atomic int active;
  _Atomic int paused;
  pthread_mutex_t held_mu;
  struct ev_job *held_head, *held_tail;
  size_t nheld;
  /* Faults: callbacks in progress per thread (workers, then one slot for
   * any other thread) for the watchdog; failures toward quarantine. */
  struct cb_slot *running;
  _Atomic unsigned failures;
  _Atomic unsigned slow_calls;
  _Atomic int quarantined;
  _Atomic int wants_send; /* the version loaded has on_send: skip the event otherwise */
  pthread_mutex_t fault_mu; /* the plugin's rate-limited fault log */
  log_rate fault_rl;
  pthread_mutex_t reg_mu; /* the plugin's open sessions */
  pier_sid *sids;
  size_t nsids, capsids;
};

typedef struct cb_slot {
  _Atomic uint64_t start_us; /* 0 when no callback runs */
  _Atomic int type;
  uint64_t reported;         /* watchdog thread only: start_us it already reported */
} cb_slot;

struct host {
  const cfg_server *cfg;
  pthread_t watchdog;
  int watchdog_running;
  _Atomic int watchdog_stop;
  net *net;
  host_plugin *plugins;
  size_t nplugins;
  host_listener *listeners;
  size_t nlisteners;
  pthread_mutex_t timer_mu;
  host_timer *timers;
  _Atomic uint64_t next_timer_id;
  uint64_t started_ms;
  int started, stopped;
};

/* During a serial plugin's on_disconnected the session's slot may already
 * be reused: get_user answers from the value captured at disconnect. */
static _Thread_local pier_sid tls_gone_sid;
static _Thread_local void *tls_gone_user;

/* ---- session registry per plugin ---- */

static void reg_add(host_plugin *p, pier_sid sid) {
  pthread_mutex_lock(&p->reg_mu);
  if (p->nsids == p->capsids) {
    size_t cap = p->capsids ? p->capsids * 2 : 64;
    pier_sid *n = realloc(p->sids, cap * sizeof(*n));
    if (n) {
      p->sids = n;
      p->capsids = cap;
    }
  }
  if (p->nsids < p->capsids)
    p->sids[p->nsids++] = sid;
  pthread_mutex_unlock(&p->reg_mu);
}

static void reg_remove(host_plugin *p, pier_sid sid) {
  pthread_mutex_lock(&p->reg_mu);
  for (size_t i = p->nsids; i-- > 0;) {
    if (p->sids[i] == sid) {
      p->sids[i] = p->sids[--p->nsids];
      break;
    }
  }
  pthread_mutex_unlock(&p->reg_mu);
}

/* ---- event delivery ---- */

typedef enum { EV_CONNECTED, EV_RECV, EV_SEND, EV_DISCONNECTED, EV_TICK, EV_TIMER, EV_POST } ev_type;

typedef struct ev_job {
  strand_job base;
  struct ev_job *next_held;
  host_plugin *p;
  ev_type type;
  unsigned gen;
  pier_sid sid;
  pier_reason reason;
  size_t n;
  void *user;
  pier_timer_fn fn;
  void *arg;
  host_timer *timer;
  char data[];
} ev_job;

typedef struct ev {
  ev_type type;
  unsigned gen; /* EV_TIMER/EV_POST: generation whose code fn belongs to */
  pier_sid sid;
  pier_reason reason;
  size_t n; /* bytes of data, or bytes sent */
  const char *data;
  void *user;
  pier_timer_fn fn;
  void *arg;
  host_timer *timer;
} ev;

static void timer_unref(host_timer *t);
static void plugin_failed(host_plugin *p, const char *why);
static uint64_t clock_us(void);

static const char *const ev_callback[] = {"on_connected", "on_recv", "on_send", "on_disconnected",
                                          "on_tick", "timer", "posted job"};

static void call(host_plugin *p, const ev *e) {
  const pier_plugin *cb = &p->img.cb;
  /* A timer or job of a version that was reloaded away points into code
   * that is gone: drop it. */
  if ((e->type == EV_TIMER || e->type == EV_POST) && e->gen != p->generation)
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
    tls_gone_sid = e->sid;
    tls_gone_user = e->user;
    if (cb->on_disconnected)
      cb->on_disconnected(e->sid, e->reason);
    tls_gone_sid = 0;
    tls_gone_user = NULL;
    break;
  case EV_TICK:
    if (cb->on_tick)
      cb->on_tick(e->n);
    break;
  case EV_TIMER: {
    int canceled;
    pthread_mutex_lock(&p->h->timer_mu);
    canceled = e->timer->canceled && e->timer->repeat; /* a once-timer that fired still runs */
    pthread_mutex_unlock(&p->h->timer_mu);
    if (!canceled)
      e->fn(e->arg);
    break;
  }
  case EV_POST:
    e->fn(e->arg);
    break;
  }
}

static void gated_call(host_plugin *p, const ev *e);

static void job_to_ev(const ev_job *j, ev *e) {
  *e = (ev){.type = j->type, .gen = j->gen, .sid = j->sid, .reason = j->reason, .n = j->n,
            .data = j->data, .user = j->user, .fn = j->fn, .arg = j->arg, .timer = j->timer};
}

static void free_job(ev_job *j) {
  if (j->timer)
    timer_unref(j->timer);
  free(j);
}

static void run_job(strand_job *job) {
  ev_job *j = (ev_job *)job;
  ev e;
  job_to_ev(j, &e);
  gated_call(j->p, &e);
  free_job(j);
}

/* A heap copy of e (with its data) that outlives the callback. */
static ev_job *make_job(host_plugin *p, const ev *e) {
  size_t extra = e->type == EV_RECV || e->type == EV_CONNECTED ? e->n : 0;
  ev_job *j = malloc(sizeof(*j) + extra);
  if (!j) {
    log_error("plugin \"%s\": out of memory queueing an event; dropped", p->cfg->name);
    return NULL;
  }
  j->base.run = run_job;
  j->next_held = NULL;
  j->p = p;
  j->gen = e->gen;
  j->type = e->type;
  j->sid = e->sid;
  j->reason = e->reason;
  j->n = e->n;
  j->user = e->user;
  j->fn = e->fn;
  j->arg = e->arg;
  j->timer = e->timer;
  if (e->timer)
    atomic_fetch_add(&e->timer->refs, 1);
  if (extra)
    memcpy(j->data, e->data, extra);
  return j;
}

/* Holds e while a reload is under way; returns 0 if the reload already
 * finished (the caller then calls through). */
static int hold(host_plugin *p, const ev *e) {
  ev_job *j;
  pthread_mutex_lock(&p->held_mu);
  if (!atomic_load(&p->paused)) {
    pthread_mutex_unlock(&p->held_mu);
    return 0;
  }
  j = make_job(p, e);
  if (j) {
    if (p->held_tail)
      p->held_tail->next_held = j;
    else
      p->held_head = j;
    p->held_tail = j;
    p->nheld++;
  }
  pthread_mutex_unlock(&p->held_mu);
  return 1;
}

/* call() with the watchdog's bookkeeping: the start time is visible to the
 * watchdog thread while it runs, and a slow call is logged and counted. */
static void timed_call(host_plugin *p, const ev *e) {
  unsigned slow_ms = p->h->cfg->limits.slow_callback_ms;
  cb_slot *slot;
  uint64_t t0, us;
  int w;

  if (!slow_ms) {
    call(p, e);
    return;
  }
  w = net_current_worker(p->h->net);
  slot = &p->running[w < 0 ? net_workers(p->h->net) : (unsigned)w];
  t0 = clock_us();
  atomic_store(&slot->type, (int)e->type);
  atomic_store(&slot->start_us, t0);
  call(p, e);
  atomic_store(&slot->start_us, 0);
  us = clock_us() - t0;
  if (us > (uint64_t)slow_ms * 1000) {
    char why[160];
    atomic_fetch_add(&p->slow_calls, 1);
    snprintf(why, sizeof(why), "%s took %.1f ms (slow_callback_ms %u)", ev_callback[e->type],
             (double)us / 1000.0, slow_ms);
    plugin_failed(p, why);
  }
}

static void gated_call(host_plugin *p, const ev *e) {
  /* A quarantined plugin gets no callback until it is reloaded. */
  if (atomic_load_explicit(&p->quarantined, memory_order_relaxed))
    return;
  for (;;) {
    atomic_fetch_add(&p->active, 1);
    if (!atomic_load(&p->paused)) {
      timed_call(p, e);
      atomic_fetch_sub(&p->active, 1);
      return;
    }
    atomic_fetch_sub(&p->active, 1);
    if (hold(p, e))
      return;
  }
}

static void deliver(host_plugin *p, const ev *e, int may_inline) {
  ev_job *j;

  if (!p->serial) {
    gated_call(p, e);
    return;
  }
  if (may_inline && strand_try_enter(&p->st)) {
    gated_call(p, e);
    strand_run(&p->st);
    return;
  }
  j = make_job(p, e);
  if (j)
    strand_push(&p->st, &j->base);
}

static void kick_run(io_job *job) { strand_run(container_of(job, strand, kick_job)); }

static void kick(strand *st) {
  host_plugin *p = st->owner;
  int w = net_current_worker(p->h->net);
  st->kick_job.fn = kick_run;
  net_post(p->h->net, w < 0 ? 0 : (unsigned)w, &st->kick_job);
}

/* ---- net handler ---- */

static void on_connected(void *ctx, session *s) {
  host_listener *l = ctx;
  char peer[NET_ADDR_STRLEN];
  ev e = {.type = EV_CONNECTED, .sid = session_sid(s)};

  if (atomic_load(&l->p->quarantined)) { /* its listeners refuse new sessions */
    atomic_fetch_add(&l->sessions, 1);
    net_abort(l->h->net, e.sid, PIER_REASON_PLUGIN_ERROR);
    return;
  }
  atomic_fetch_add(&l->sessions, 1);
  reg_add(l->p, e.sid);
  net_addr_format(session_peer(s), peer, sizeof(peer));
  e.data = peer;
  e.n = strlen(peer) + 1;
  deliver(l->p, &e, 1);
}

static void on_recv(void *ctx, session *s, const char *data, size_t len) {
  host_listener *l = ctx;
  ev e = {.type = EV_RECV, .sid = session_sid(s), .data = data, .n = len};
  deliver(l->p, &e, 1);
}

static void on_send(void *ctx, session *s, size_t bytes) {
  host_listener *l = ctx;
  ev e = {.type = EV_SEND, .sid = session_sid(s), .n = bytes};
  if (atomic_load_explicit(&l->p->wants_send, memory_order_relaxed))
    deliver(l->p, &e, 1);
}

static void on_disconnected(void *ctx, session *s, pier_reason reason) {
  host_listener *l = ctx;
  ev e = {.type = EV_DISCONNECTED, .sid = session_sid(s), .reason = reason,
          .user = session_user(s)};
  atomic_fetch_sub(&l->sessions, 1);
  reg_remove(l->p, e.sid);
  if (!atomic_load(&l->p->quarantined))
    deliver(l->p, &e, 1);
}

static const net_handler host_handler = {on_connected, on_recv, on_send, on_disconnected, NULL};

/* ---- timers (on worker 0) ---- */

static void timer_unref(host_timer *t) {
  if (atomic_fetch_sub(&t->refs, 1) == 1)
    free(t);
}

/* Removes t from the list and its loop; worker 0 (or after the workers
 * stopped). */
static void timer_reap(host *h, host_timer *t) {
  pthread_mutex_lock(&h->timer_mu);
  for (host_timer **pp = &h->timers; *pp; pp = &(*pp)->next) {
    if (*pp == t) {
      *pp = t->next;
      break;
    }
  }
  pthread_mutex_unlock(&h->timer_mu);
  if (h->net && !h->stopped)
    io_timer_stop(net_loop(h->net, 0), &t->t);
  timer_unref(t);
}

static void timer_fire(io_timer *it) {
  host_timer *t = container_of(it, host_timer, t);
  host *h = t->p->h;
  int canceled;
  ev e = {.type = t->fn ? EV_TIMER : EV_TICK, .gen = t->gen, .fn = t->fn, .arg = t->arg,
          .timer = t};

  pthread_mutex_lock(&h->timer_mu);
  canceled = t->canceled;
  pthread_mutex_unlock(&h->timer_mu);
  if (canceled)
    return;
  if (!t->fn) {
    e.n = clock_ms();
    e.timer = NULL;
  }
  atomic_fetch_add(&t->refs, 1); /* t stays valid through the call */
  deliver(t->p, &e, 1);
  if (!t->repeat) {
    pthread_mutex_lock(&h->timer_mu);
    canceled = t->canceled;
    t->canceled = 1;
    pthread_mutex_unlock(&h->timer_mu);
    if (!canceled)
      timer_reap(h, t); /* else the cancel's reap job does it */
  }
  timer_unref(t);
}

typedef struct timer_job {
  io_job job;
  host_timer *t;
  int reap;
} timer_job;

static void timer_job_run(io_job *job) {
  timer_job *j = container_of(job, timer_job, job);
  host *h = j->t->p->h;
  if (j->reap)
    timer_reap(h, j->t);
  else if (!h->stopped)
    io_timer_start(net_loop(h->net, 0), &j->t->t, j->t->after, j->t->repeat);
  timer_unref(j->t);
  free(j);
}

static int timer_post(host *h, host_timer *t, int reap) {
  timer_job *j = calloc(1, sizeof(*j));
  if (!j)
    return -ENOMEM;
  j->job.fn = timer_job_run;
  j->t = t;
  j->reap = reap;
  atomic_fetch_add(&t->refs, 1);
  net_post(h->net, 0, &j->job);
  return 0;
}

static int timer_add(host_plugin *p, uint64_t after, uint64_t repeat, pier_timer_fn fn, void *arg,
                     uint64_t *id) {
  host *h = p->h;
  host_timer *t = calloc(1, sizeof(*t));
  int rc;
  if (!t)
    return -ENOMEM;
  t->p = p;
  t->gen = p->generation;
  t->id = atomic_fetch_add(&h->next_timer_id, 1) + 1;
  t->fn = fn;
  t->arg = arg;
  t->after = after;
  t->repeat = repeat;
  atomic_init(&t->refs, 1);
  io_timer_init(&t->t, timer_fire);
  pthread_mutex_lock(&h->timer_mu);
  t->next = h->timers;
  h->timers = t;
  pthread_mutex_unlock(&h->timer_mu);
  if (id)
    *id = t->id;
  rc = timer_post(h, t, 0);
  if (rc < 0) {
    pthread_mutex_lock(&h->timer_mu);
    t->canceled = 1;
    pthread_mutex_unlock(&h->timer_mu);
    timer_reap(h, t);
  }
  return rc;
}

/* Cancels timers of p matching id (0 = all of p's; TIMERS_OF_CODE = all but
 * the host's tick). Returns how many. */
#define TIMERS_OF_CODE UINT64_MAX
static int timer_cancel_match(host *h, host_plugin *p, uint64_t id) {
  host_timer *hit[64];
  int n = 0, total = 0;
  do {
    n = 0;
    pthread_mutex_lock(&h->timer_mu);
    for (host_timer *t = h->timers; t && n < 64; t = t->next) {
      if (t->p == p && !t->canceled &&
          (id == 0 || t->id == id || (id == TIMERS_OF_CODE && t->fn))) {
        t->canceled = 1;
        hit[n++] = t;
      }
    }
    pthread_mutex_unlock(&h->timer_mu);
    for (int i = 0; i < n; i++) {
      if (h->stopped || !h->started)
        timer_reap(h, hit[i]);
      else
        timer_post(h, hit[i], 1);
    }
    total += n;
  } while (n == 64);
  return total;
}

/* ---- the pier_host table ---- */

#define PLUGIN(api) container_of(api, host_plugin, api)

static int api_send(const pier_host *api, pier_sid sid, const void *data, size_t len) {
  return net_send(PLUGIN(api)->h->net, sid, data, len);
}

static int api_send_packet(const pier_host *api, pier_sid sid, uint16_t id, const void *body,
                           size_t len) {
  sbuf *b;
  int rc;
  if (len + FRAME_HEADER > 65535)
    return -EMSGSIZE;
  b = sbuf_alloc(len + FRAME_HEADER);
  if (!b)
    return -ENOMEM;
  b->data[0] = (char)((len + FRAME_HEADER) & 0xff);
  b->data[1] = (char)((len + FRAME_HEADER) >> 8);
  b->data[2] = (char)(id & 0xff);
  b->data[3] = (char)(id >> 8);
  if (len)
    memcpy(b->data + FRAME_HEADER, body, len);
  b->len = (uint32_t)(len + FRAME_HEADER);
  rc = net_send_buf(PLUGIN(api)->h->net, sid, b);
  sbuf_release(b);
  return rc;
}

static size_t api_broadcast(const pier_host *api, const pier_sid *sids, size_t n, const void *data,
                            size_t len) {
  return net_broadcast(PLUGIN(api)->h->net, sids, n, data, len);
}

static int api_close(const pier_host *api, pier_sid sid, pier_reason reason) {
  return net_close(PLUGIN(api)->h->net, sid, reason);
}

static int api_set_user(const pier_host *api, pier_sid sid, void *user) {
  return net_set_user(PLUGIN(api)->h->net, sid, user);
}

static void *api_get_user(const pier_host *api, pier_sid sid) {
  if (sid != 0 && sid == tls_gone_sid)
    return tls_gone_user;
  return net_get_user(PLUGIN(api)->h->net, sid);
}

static int api_peer(const pier_host *api, pier_sid sid, char *buf, size_t len) {
  net_addr a;
  int rc = net_peer(PLUGIN(api)->h->net, sid, &a);
  if (rc == 0)
    net_addr_format(&a, buf, len);
  return rc;
}

static int api_timer_start(const pier_host *api, uint64_t after_ms, uint64_t repeat_ms,
                           pier_timer_fn fn, void *arg, uint64_t *id) {
  if (!fn)
    return -EINVAL;
  return timer_add(PLUGIN(api), after_ms, repeat_ms, fn, arg, id);
}

static int api_timer_cancel(const pier_host *api, uint64_t id) {
  host_plugin *p = PLUGIN(api);
  return id && id != TIMERS_OF_CODE && timer_cancel_match(p->h, p, id) > 0 ? 0 : -ENOENT;
}

static void api_log(const pier_host *api, pier_log_level level, const char *fmt, ...) {
  char buf[1024];
  va_list ap;
  if ((int)level > (int)log_get_level())
    return;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof(buf), fmt, ap);
  va_end(ap);
  log_msg((log_level)(level > PIER_LOG_DEBUG ? PIER_LOG_DEBUG : level), "[%s] %s",
          PLUGIN(api)->cfg->name, buf);
}

static size_t api_sessions(const pier_host *api, pier_sid *out, size_t max) {
  host_plugin *p = PLUGIN(api);
  size_t n;
  pthread_mutex_lock(&p->reg_mu);
  n = p->nsids;
  if (out)
    memcpy(out, p->sids, (n < max ? n : max) * sizeof(*out));
  pthread_mutex_unlock(&p->reg_mu);
  return n;
}

typedef struct post_job {
  io_job job;
  host_plugin *p;
  unsigned gen;
  pier_job_fn fn;
  void *arg;
} post_job;

static void post_run(io_job *job) {
  post_job *j = container_of(job, post_job, job);
  ev e = {.type = EV_POST, .gen = j->gen, .fn = j->fn, .arg = j->arg};
  if (!j->p->h->stopped)
    deliver(j->p, &e, 1);
  free(j);
}

static int api_post(const pier_host *api, pier_job_fn fn, void *arg) {
  host_plugin *p = PLUGIN(api);
  post_job *j;
  if (!fn)
    return -EINVAL;
  if (p->h->stopped)
    return -ECANCELED;
  j = malloc(sizeof(*j));
  if (!j)
    return -ENOMEM;
  j->job.fn = post_run;
  j->p = p;
  j->gen = p->generation;
  j->fn = fn;
  j->arg = arg;
  net_post(p->h->net, 0, &j->job);
  return 0;
}

static uint64_t api_now(const pier_host *api) { return clock_ms(); }

/* Quarantine: close every session of p; its listeners refuse new ones (see
 * on_connected) and gated_call drops its callbacks until a reload. */
static void quarantine(host_plugin *p, const char *why) {
  pier_sid *sids;
  size_t n;
  if (atomic_exchange(&p->quarantined, 1))
    return;
  pthread_mutex_lock(&p->reg_mu);
  n = p->nsids;
  sids = malloc((n ? n : 1) * sizeof(*sids));
  if (sids)
    memcpy(sids, p->sids, n * sizeof(*sids));
  pthread_mutex_unlock(&p->reg_mu);
  log_error("plugin \"%s\" quarantined after %u failures (last: %s): closing its %zu sessions, "
            "refusing new ones until `reload %s`",
            p->cfg->name, atomic_load(&p->failures), why, n, p->cfg->name);
  for (size_t i = 0; sids && i < n; i++)
    net_close(p->h->net, sids[i], PIER_REASON_PLUGIN_ERROR);
  free(sids);
}

static void plugin_failed(host_plugin *p, const char *why) {
  unsigned limit = p->h->cfg->limits.quarantine_after;
  unsigned n = atomic_fetch_add(&p->failures, 1) + 1;
  pthread_mutex_lock(&p->fault_mu);
  log_limited(&p->fault_rl, LOG_WARN, "plugin \"%s\": %s", p->cfg->name, why);
  pthread_mutex_unlock(&p->fault_mu);
  if (limit && n >= limit)
    quarantine(p, why);
}

static int api_fail(const pier_host *api, const char *reason) {
  char why[300];
  snprintf(why, sizeof(why), "reported failure: %s", reason ? reason : "(no reason)");
  plugin_failed(PLUGIN(api), why);
  return 0;
}

static const char *api_reason_text(pier_reason reason) { return net_reason_text(reason); }

static void fill_api(host_plugin *p) {
  pier_host *a = &p->api;
  a->size = sizeof(*a);
  a->abi_major = PIER_ABI_MAJOR;
  a->abi_minor = PIER_ABI_MINOR;
  a->send = api_send;
  a->send_packet = api_send_packet;
  a->broadcast = api_broadcast;
  a->close = api_close;
  a->set_user = api_set_user;
  a->get_user = api_get_user;
  a->peer = api_peer;
  a->timer_start = api_timer_start;
  a->timer_cancel = api_timer_cancel;
  a->log = api_log;
  a->sessions = api_sessions;
  a->post = api_post;
  a->now = api_now;
  a->reason_text = api_reason_text;
  a->fail = api_fail;
}

/* ---- lifecycle ---- */

int host_create(const cfg_server *cfg, const char *backend_override, int check_only,
                host **out) {
  host *h = calloc(1, sizeof(*h));
  char err[1024];
  int rc = 0;

  *out = NULL;
  if (!h)
    return -ENOMEM;
  h->cfg = cfg;
  pthread_mutex_init(&h->timer_mu, NULL);
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
    pthread_mutex_init(&p->reg_mu, NULL);
    pthread_mutex_init(&p->held_mu, NULL);
    pthread_mutex_init(&p->fault_mu, NULL);
    strand_init(&p->st, kick, p);
    p->running = calloc(cfg->workers + 1, sizeof(*p->running));
    if (!p->running) {
      host_destroy(h);
      return -ENOMEM;
    }
    p->config_json = strdup(p->cfg->config_json ? p->cfg->config_json : "{}");
    p->generation = 1;
    fill_api(p);
    h->nplugins = i + 1;
    rc = loader_open(p->cfg, &p->img, err, sizeof(err));
    if (rc < 0) {
      log_error("%s", err);
      host_destroy(h);
      return rc;
    }
    stat(p->cfg->resolved_path, &p->file);
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
                  .max_conns_per_ip = cfg->limits.max_conns_per_ip};
    rc = net_create(&o, &h->net);
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
    struct timespec ts = {0, 100 * 1000000};
    nanosleep(&ts, NULL);
    uint64_t now = clock_us();
    for (size_t i = 0; i < h->nplugins; i++) {
      host_plugin *p = &h->plugins[i];
      for (unsigned k = 0; k <= h->cfg->workers; k++) {
        cb_slot *s = &p->running[k];
        uint64_t start = atomic_load(&s->start_us);
        if (start && start != s->reported && now - start > (uint64_t)slow_ms * 1000) {
          s->reported = start;
          log_warn("plugin \"%s\": %s still running after %.0f ms on %s %u", p->cfg->name,
                   ev_callback[atomic_load(&s->type)], (double)(now - start) / 1000.0,
                   k < h->cfg->workers ? "worker" : "thread", k);
        }
      }
    }
  }
  return NULL;
}

int host_start(host *h) {
  int rc;
  for (size_t i = 0; i < h->nplugins; i++) {
    host_plugin *p = &h->plugins[i];
    pier_load_args args = {.size = sizeof(args),
                           .host = &p->api,
                           .config_json = p->config_json,
                           .generation = 1};
    rc = p->img.cb.on_load ? p->img.cb.on_load(&args) : 0;
    if (rc != 0) {
      log_error("plugin \"%s\" (%s): on_load failed: %s (%d)", p->cfg->name,
                p->cfg->resolved_path, rc < 0 ? strerror(-rc) : "non-zero return", rc);
      unload_all(h);
      return rc < 0 ? rc : -EINVAL;
    }
    p->loaded = 1;
  }
  for (size_t i = 0; i < h->nlisteners; i++) {
    host_listener *l = &h->listeners[i];
    net_addr a;
    rc = net_addr_parse(l->cfg->address, (uint16_t)l->cfg->port, &a);
    if (rc == 0)
      rc = net_listen(h->net, &a, &l->ep, &l->nl);
    if (rc < 0) {
      log_error("listeners[%zu] %s:%u (plugin \"%s\"): %s", i, l->cfg->address, l->cfg->port,
                l->p->cfg->name, strerror(-rc));
      unload_all(h);
      return rc;
    }
  }
  h->started_ms = clock_ms();
  h->started = 1;
  for (size_t i = 0; i < h->nplugins; i++) {
    host_plugin *p = &h->plugins[i];
    if (p->cfg->tick_ms && p->img.cb.on_tick)
      timer_add(p, p->cfg->tick_ms, p->cfg->tick_ms, NULL, NULL, NULL);
  }
  rc = net_start(h->net);
  if (rc < 0) {
    unload_all(h);
    return rc;
  }
  if (h->cfg->limits.slow_callback_ms &&
      pthread_create(&h->watchdog, NULL, watchdog_main, h) == 0)
    h->watchdog_running = 1;
  return 0;
}

void host_stop(host *h) {
  if (!h->started || h->stopped)
    return;
  if (h->watchdog_running) {
    atomic_store(&h->watchdog_stop, 1);
    pthread_join(h->watchdog, NULL);
    h->watchdog_running = 0;
  }
  net_stop(h->net); /* every session gets on_disconnected */
  h->stopped = 1;
  for (size_t i = 0; i < h->nplugins; i++) {
    timer_cancel_match(h, &h->plugins[i], 0);
    strand_drain(&h->plugins[i].st);
  }
  unload_all(h);
}

void host_destroy(host *h) {
  if (!h)
    return;
  host_stop(h);
  unload_all(h);
  net_destroy(h->net); /* may run leftover jobs: strands must still exist */
  h->net = NULL;
  while (h->timers)
    timer_reap(h, h->timers);
  for (size_t i = 0; i < h->nplugins; i++) {
    host_plugin *p = &h->plugins[i];
    loader_close(&p->img);
    strand_destroy(&p->st);
    pthread_mutex_destroy(&p->reg_mu);
    pthread_mutex_destroy(&p->held_mu);
    pthread_mutex_destroy(&p->fault_mu);
    free(p->running);
    free(p->sids);
    free(p->config_json);
  }
  free(h->plugins);
  free(h->listeners);
  pthread_mutex_destroy(&h->timer_mu);
  free(h);
}

net *host_net(host *h) { return h->net; }

/* ---- hot reload ---- */

#define QUIESCE_TIMEOUT_MS 2000

static host_plugin *find_plugin(host *h, const char *name) {
  for (size_t i = 0; i < h->nplugins; i++)
    if (strcmp(h->plugins[i].cfg->name, name) == 0)
      return &h->plugins[i];
  return NULL;
}

static uint64_t clock_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* Pauses p's callbacks at a callback boundary: from now on events are held.
 * Returns 0 once no callback of p runs, or -ETIMEDOUT. */
static int quiesce(host_plugin *p) {
  uint64_t deadline = clock_ms() + QUIESCE_TIMEOUT_MS;
  atomic_store(&p->paused, 1);
  while (atomic_load(&p->active) > 0) {
    if (clock_ms() > deadline)
      return -ETIMEDOUT;
    struct timespec ts = {0, 20000};
    nanosleep(&ts, NULL);
  }
  return 0;
}

/* Delivers what was held, in order, then lets callbacks through again.
 * Returns how many events were held. */
static size_t resume(host_plugin *p) {
  size_t n = 0;
  for (;;) {
    ev_job *j;
    ev e;
    pthread_mutex_lock(&p->held_mu);
    j = p->held_head;
    if (!j) {
      atomic_store(&p->paused, 0);
      p->held_tail = NULL;
      pthread_mutex_unlock(&p->held_mu);
      return n;
    }
    p->held_head = j->next_held;
    if (!p->held_head)
      p->held_tail = NULL;
    p->nheld--;
    pthread_mutex_unlock(&p->held_mu);
    job_to_ev(j, &e);
    call(p, &e);
    free_job(j);
    n++;
  }
}

int host_reload(host *h, const char *name, const char *config_json, char *msg, size_t len) {
  host_plugin *p = find_plugin(h, name);
  plugin_image fresh, old;
  pier_state state = {NULL, 0};
  char err[1024], oldver[64];
  unsigned gen;
  uint64_t t0, t1;
  size_t held;
  int rc;

  if (!p) {
    snprintf(msg, len, "reload %s: no such plugin", name);
    return -ENOENT;
  }
  if (!h->started || h->stopped) {
    snprintf(msg, len, "reload %s: the daemon is not running", name);
    return -ECANCELED;
  }
  /* Step 1: the new file must load and pass every check before the running
   * version is touched. */
  rc = loader_open(p->cfg, &fresh, err, sizeof(err));
  if (rc < 0) {
    snprintf(msg, len, "reload %s failed at load: %s; generation %u keeps serving", name, err,
             atomic_load(&p->generation));
    return rc;
  }
  /* Step 2: quiesce at a callback boundary. */
  t0 = clock_us();
  rc = quiesce(p);
  if (rc < 0) {
    resume(p);
    loader_close(&fresh);
    snprintf(msg, len,
             "reload %s failed at quiesce: a callback ran longer than %d ms; generation %u keeps "
             "serving",
             name, QUIESCE_TIMEOUT_MS, atomic_load(&p->generation));
    return rc;
  }
  /* Step 3: hand over. Timers and jobs of the old code end here. */
  if (p->img.cb.on_unload)
    p->img.cb.on_unload(&state);
  timer_cancel_match(h, p, TIMERS_OF_CODE);
  old = p->img;
  snprintf(oldver, sizeof(oldver), "%s", old.version);
  gen = atomic_load(&p->generation);
  p->img = fresh;
  atomic_store(&p->wants_send, p->img.cb.on_send != NULL);
  atomic_store(&p->generation, gen + 1);
  if (config_json && strcmp(config_json, p->config_json) != 0) {
    char *c = strdup(config_json);
    if (c) {
      free(p->config_json);
      p->config_json = c;
    }
  }
  {
    pier_load_args args = {.size = sizeof(args),
                           .host = &p->api,
                           .config_json = p->config_json,
                           .state = state.data,
                           .state_len = state.len,
                           .generation = gen + 1};
    rc = p->img.cb.on_load ? p->img.cb.on_load(&args) : 0;
    if (rc != 0) {
      /* Step 4 (failure): the old version comes back with its own state. */
      int rc2;
      p->img = old;
      atomic_store(&p->wants_send, p->img.cb.on_send != NULL);
      atomic_store(&p->generation, gen);
      args.generation = gen;
      rc2 = p->img.cb.on_load ? p->img.cb.on_load(&args) : 0;
      loader_close(&fresh);
      free(state.data);
      held = resume(p);
      snprintf(msg, len,
               "reload %s failed at on_load: the new version returned %d (%s); generation %u (%s) "
               "restored%s",
               name, rc, rc < 0 ? strerror(-rc) : "error", gen, oldver,
               rc2 == 0 ? "" : ", but its own on_load failed too");
      (void)held;
      return rc < 0 ? rc : -EINVAL;
    }
  }
  loader_close(&old);
  free(state.data);
  stat(p->cfg->resolved_path, &p->file);
  if (atomic_exchange(&p->quarantined, 0))
    log_info("plugin \"%s\": quarantine lifted by the reload", name);
  atomic_store(&p->failures, 0);
  held = resume(p);
  t1 = clock_us();
  snprintf(msg, len,
           "reloaded %s: generation %u, version %s (was %s), paused %.3f ms, %zu event%s held",
           name, gen + 1, p->img.version, oldver, (double)(t1 - t0) / 1000.0, held,
           held == 1 ? "" : "s");
  return 0;
}

int host_plugin_file_changed(host *h, const char *name) {
  host_plugin *p = find_plugin(h, name);
  struct stat st;
  if (!p || stat(p->cfg->resolved_path, &st) < 0)
    return 0;
  return st.st_ino != p->file.st_ino || st.st_dev != p->file.st_dev ||
         st.st_size != p->file.st_size || st.st_mtim.tv_sec != p->file.st_mtim.tv_sec ||
         st.st_mtim.tv_nsec != p->file.st_mtim.tv_nsec;
}

const char *host_plugin_config_json(host *h, const char *name) {
  host_plugin *p = find_plugin(h, name);
  return p ? p->config_json : NULL;
}

/* ---- console views ---- */

void host_print_status(host *h, FILE *out) {
  net_stats st;
  uint64_t up = (clock_ms() - h->started_ms) / 1000;
  net_get_stats(h->net, &st);
  fprintf(out, "uptime %llus, backend %s, workers %u\n", (unsigned long long)up,
          net_backend_name(h->net), net_workers(h->net));
  fprintf(out,
          "sessions %llu open, %llu accepted, %llu refused (max_sessions %u), %llu closed "
          "for send queue, %llu for bad packets, %llu idle, %llu for slow packets, %llu over "
          "max_conns_per_ip\n",
          (unsigned long long)st.sessions, (unsigned long long)st.accepted,
          (unsigned long long)st.refused_full, h->cfg->max_sessions,
          (unsigned long long)st.send_queue_full, (unsigned long long)st.bad_packets,
          (unsigned long long)st.idle_timeouts, (unsigned long long)st.packet_timeouts,
          (unsigned long long)st.refused_per_ip);
  for (size_t i = 0; i < h->nlisteners; i++) {
    host_listener *l = &h->listeners[i];
    char addr[NET_ADDR_STRLEN] = "?";
    if (l->nl) {
      net_addr a;
      net_addr_parse(l->cfg->address, net_listener_port(l->nl), &a);
      net_addr_format(&a, addr, sizeof(addr));
    }
    fprintf(out, "listener %s %s plugin %s: %ld sessions\n", addr,
            cfg_framing_name(l->cfg->framing), l->p->cfg->name, atomic_load(&l->sessions));
  }
  host_print_plugins(h, out);
}

void host_print_plugins(host *h, FILE *out) {
  for (size_t i = 0; i < h->nplugins; i++) {
    host_plugin *p = &h->plugins[i];
    fprintf(out, "plugin %s: %s %s, generation %u, %s, %s%s, %u failures, %u slow callbacks\n",
            p->cfg->name, p->img.name, p->img.version, atomic_load(&p->generation),
            p->serial ? "serial" : "session", p->cfg->resolved_path,
            atomic_load(&p->quarantined) ? ", QUARANTINED" : "", atomic_load(&p->failures),
            atomic_load(&p->slow_calls));
  }
}

void host_print_sessions(host *h, FILE *out) {
  size_t total = 0;
  for (size_t i = 0; i < h->nplugins; i++) {
    host_plugin *p = &h->plugins[i];
    pthread_mutex_lock(&p->reg_mu);
    for (size_t k = 0; k < p->nsids; k++) {
      net_addr a;
      char peer[NET_ADDR_STRLEN] = "?";
      if (net_peer(h->net, p->sids[k], &a) == 0)
        net_addr_format(&a, peer, sizeof(peer));
      fprintf(out, "%016llx %s %s\n", (unsigned long long)p->sids[k], p->cfg->name, peer);
    }
    total += p->nsids;
    pthread_mutex_unlock(&p->reg_mu);
  }
  fprintf(out, "%zu session%s\n", total, total == 1 ? "" : "s");
}

int host_kick(host *h, pier_sid sid) { return net_close(h->net, sid, PIER_REASON_KICKED); }
