/* Strand implementation: a mutex-protected FIFO and a `running` flag that
 * passes ownership between threads. */
#include "host/strand.h"

#include <string.h>

#define BATCH 256

void strand_init(strand *st, strand_kick_fn kick, void *owner) {
  memset(st, 0, sizeof(*st));
  os_mutex_init(&st->mu);
  st->kick = kick;
  st->owner = owner;
}

void strand_destroy(strand *st) { os_mutex_destroy(&st->mu); }

void strand_push(strand *st, strand_job *job) {
  int start;
  job->next = NULL;
  os_mutex_lock(&st->mu);
  if (st->tail)
    st->tail->next = job;
  else
    st->head = job;
  st->tail = job;
  st->queued++;
  start = !st->running && !st->paused;
  if (start)
    st->running = 1;
  os_mutex_unlock(&st->mu);
  if (start)
    st->kick(st);
}

int strand_try_enter(strand *st) {
  int ok;
  os_mutex_lock(&st->mu);
  ok = !st->running && !st->head && !st->paused;
  if (ok)
    st->running = 1;
  os_mutex_unlock(&st->mu);
  return ok;
}

static strand_job *pop(strand *st) {
  strand_job *job = st->head;
  if (job) {
    st->head = job->next;
    if (!st->head)
      st->tail = NULL;
    st->queued--;
  }
  return job;
}

void strand_run(strand *st) {
  for (int n = 0;; n++) {
    strand_job *job;
    os_mutex_lock(&st->mu);
    if (n == BATCH && st->head) {
      os_mutex_unlock(&st->mu);
      st->kick(st); /* keep ownership; continue elsewhere later */
      return;
    }
    job = st->paused ? NULL : pop(st);
    if (!job) {
      st->running = 0;
      os_mutex_unlock(&st->mu);
      return;
    }
    os_mutex_unlock(&st->mu);
    job->run(job);
  }
}

void strand_drain(strand *st) {
  strand_job *job;
  for (;;) {
    os_mutex_lock(&st->mu);
    job = pop(st);
    if (!job)
      st->running = 0;
    os_mutex_unlock(&st->mu);
    if (!job)
      return;
    job->run(job);
  }
}

void strand_pause(strand *st) {
  os_mutex_lock(&st->mu);
  st->paused = 1;
  os_mutex_unlock(&st->mu);
}

int strand_busy(strand *st) {
  int busy;
  os_mutex_lock(&st->mu);
  busy = st->running;
  os_mutex_unlock(&st->mu);
  return busy;
}

void strand_unpause(strand *st) {
  int start;
  os_mutex_lock(&st->mu);
  st->paused = 0;
  start = st->head && !st->running;
  if (start)
    st->running = 1;
  os_mutex_unlock(&st->mu);
  if (start)
    st->kick(st);
}
