/* Plugin timers and the host's on_tick, all on worker 0's loop. A timer is
 * on the host's list (the list's reference) until it is reaped; every heap
 * operation happens on worker 0, through jobs posted to its inbox in the
 * order the calls were made, so a timer started and cancelled before the
 * workers run is never put in the heap. A firing that has to wait (a reload
 * holds it, or a serial plugin's strand is behind) is queued once: the next
 * firings are skipped until it ran, so a stuck plugin cannot pile them up. */
#include <errno.h>
#include <stdlib.h>

#include "host/host_internal.h"

struct host_timer {
  host_timer *next, *prev; /* host.timers, under host.timer_mu */
  host_timer *idnext, **idprev; /* its chain of host.timer_ids, under host.timer_mu */
  host_timer *cnext;            /* the one canceller's list of what it canceled */
  host_plugin *p;
  uint64_t id;
  pier_timer_fn fn; /* NULL: the plugin's tick */
  void *arg;
  uint64_t after, repeat;
  io_timer t;
  unsigned gen;     /* plugin generation that started it */
  int canceled;     /* under host.timer_mu: it never fires again */
  int listed;       /* under host.timer_mu: on host.timers */
  _Atomic int queued; /* a firing waits in a queue */
  _Atomic int refs;   /* the list, each job for it, each queued firing */
};

void timer_ref(host_timer *t) { atomic_fetch_add(&t->refs, 1); }

void timer_unref(host_timer *t) {
  if (atomic_fetch_sub(&t->refs, 1) == 1) {
    atomic_fetch_sub(&t->p->ntimers, 1);
    free(t);
  }
}


int timer_live(host_timer *t) {
  host *h = t->p->h;
  int live;
  os_mutex_lock(&h->timer_mu);
  live = !t->canceled;
  os_mutex_unlock(&h->timer_mu);
  return live;
}

/* Takes t off the list (under timer_mu); returns whether it was on it, in
 * which case the caller drops the list's reference. */
static int unlist(host *h, host_timer *t) {
  if (!t->listed)
    return 0;
  if (t->prev)
    t->prev->next = t->next;
  else
    h->timers = t->next;
  if (t->next)
    t->next->prev = t->prev;
  t->next = t->prev = NULL;
  *t->idprev = t->idnext;
  if (t->idnext)
    t->idnext->idprev = t->idprev;
  t->idnext = NULL;
  t->idprev = NULL;
  t->listed = 0;
  return 1;
}

static host_timer **id_chain(host *h, uint64_t id) {
  return &h->timer_ids[id & (HOST_TIMER_BUCKETS - 1)];
}

/* A firing of t ran or was dropped. A once-timer is done then and leaves
 * the list; until then it stays on it, so timer_cancel still finds it and
 * a queued firing never runs after the cancel returned. */
void timer_unqueue(host_timer *t) {
  host *h = t->p->h;
  int listed = 0;
  atomic_store(&t->queued, 0);
  if (t->repeat)
    return;
  os_mutex_lock(&h->timer_mu);
  listed = unlist(h, t);
  os_mutex_unlock(&h->timer_mu);
  if (listed)
    timer_unref(t);
}

/* Takes t off the list and out of worker 0's heap. Idempotent. On worker 0,
 * or once the workers are gone. */
static void timer_reap(host *h, host_timer *t) {
  int listed;
  os_mutex_lock(&h->timer_mu);
  t->canceled = 1;
  listed = unlist(h, t);
  os_mutex_unlock(&h->timer_mu);
  if (!h->stopped)
    io_timer_stop(net_loop(h->net, 0), &t->t);
  if (listed)
    timer_unref(t);
}

static void timer_fire(io_timer *it) {
  host_timer *t = container_of(it, host_timer, t);
  ev e = {.type = t->fn ? EV_TIMER : EV_TICK, .gen = t->gen, .fn = t->fn, .arg = t->arg,
          .timer = t};

  if (!timer_live(t))
    return;
  if (!t->fn)
    e.n = clock_ms();
  if (!atomic_exchange(&t->queued, 1)) {
    timer_ref(t); /* t stays valid through the call */
    if (!gate_deliver(t->p, &e))
      timer_unqueue(t); /* ran at once */
    timer_unref(t);
  }
}

typedef struct timer_job {
  io_job job;
  host_timer *t;
  int reap;
} timer_job;

static void timer_job_run(io_job *job) {
  timer_job *j = container_of(job, timer_job, job);
  host_timer *t = j->t;
  host *h = t->p->h;
  if (j->reap) {
    timer_reap(h, t);
  } else if (!h->stopped && timer_live(t)) {
    io_timer_start(net_loop(h->net, 0), &t->t, t->after, t->repeat);
  }
  timer_unref(t);
  free(j);
}

static int timer_post(host *h, host_timer *t, int reap) {
  timer_job *j = calloc(1, sizeof(*j));
  if (!j)
    return -ENOMEM;
  j->job.fn = timer_job_run;
  j->t = t;
  j->reap = reap;
  timer_ref(t);
  net_post(h->net, 0, &j->job);
  return 0;
}

int timer_add(host_plugin *p, uint64_t after, uint64_t repeat, pier_timer_fn fn, void *arg,
              uint64_t *id) {
  host *h = p->h;
  host_timer *t;
  uint64_t tid;
  int rc;

  if (h->stopped || !h->net)
    return -ECANCELED;
  if (atomic_fetch_add(&p->ntimers, 1) >= HOST_TIMER_MAX) {
    atomic_fetch_sub(&p->ntimers, 1);
    return -EAGAIN;
  }
  t = calloc(1, sizeof(*t));
  if (!t) {
    atomic_fetch_sub(&p->ntimers, 1);
    return -ENOMEM;
  }
  t->p = p;
  t->gen = atomic_load(&p->generation);
  t->id = atomic_fetch_add(&h->next_timer_id, 1) + 1;
  t->fn = fn;
  t->arg = arg;
  t->after = after;
  t->repeat = repeat;
  t->listed = 1;
  atomic_init(&t->refs, 1);
  io_timer_init(&t->t, timer_fire);
  os_mutex_lock(&h->timer_mu);
  t->next = h->timers;
  if (t->next)
    t->next->prev = t;
  h->timers = t;
  t->idprev = id_chain(h, t->id);
  t->idnext = *t->idprev;
  if (t->idnext)
    t->idnext->idprev = &t->idnext;
  *t->idprev = t;
  os_mutex_unlock(&h->timer_mu);
  /* Posted, a once-timer can fire on worker 0 and be freed before this
   * thread runs again: its id is read before. */
  tid = t->id;
  rc = timer_post(h, t, 0);
  if (rc < 0) {
    int listed;
    os_mutex_lock(&h->timer_mu);
    t->canceled = 1;
    listed = unlist(h, t);
    os_mutex_unlock(&h->timer_mu);
    if (listed)
      timer_unref(t); /* a cancel that found it meanwhile holds its own reference */
    return rc;
  }
  if (id)
    *id = tid;
  return 0;
}

/* Marks t canceled and puts it on *hits with a reference (under timer_mu). */
static void cancel_one(host_timer *t, host_timer **hits) {
  t->canceled = 1;
  timer_ref(t);
  t->cnext = *hits;
  *hits = t;
}

int timer_cancel_match(host *h, host_plugin *p, uint64_t id) {
  host_timer *hits = NULL, *t;
  int total = 0;
  os_mutex_lock(&h->timer_mu);
  if (id != 0 && id != TIMERS_OF_CODE) { /* one: found by its id */
    for (t = *id_chain(h, id); t && t->id != id; t = t->idnext) {
    }
    if (t && t->p == p && !t->canceled)
      cancel_one(t, &hits);
  } else {
    for (t = h->timers; t; t = t->next)
      if (t->p == p && !t->canceled && (id == 0 || t->fn))
        cancel_one(t, &hits);
  }
  os_mutex_unlock(&h->timer_mu);
  while ((t = hits) != NULL) {
    hits = t->cnext;
    /* Canceled now (it never fires again); reaped where its heap is. */
    if (h->stopped)
      timer_reap(h, t);
    else
      timer_post(h, t, 1); /* no memory: listed, canceled, until timer_reap_all */
    timer_unref(t);
    total++;
  }
  return total;
}

void timer_reap_all(host *h) {
  for (;;) {
    host_timer *t;
    os_mutex_lock(&h->timer_mu);
    t = h->timers;
    if (t)
      timer_ref(t);
    os_mutex_unlock(&h->timer_mu);
    if (!t)
      return;
    timer_reap(h, t);
    timer_unref(t);
  }
}
