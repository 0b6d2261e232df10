/* Strand implementation: a mutex-protected FIFO and a `running` flag that
 * passes ownership between threads. */
#include "host/strand.h"

#include <string.h>

#define BATCH 256

void strand_init(strand *st, strand_kick_fn kick, void *owner) {
  memset(st, 0, sizeof(*st));
  pthread_mutex_init(&st->mu, NULL);
  st->kick = kick;
  st->owner = owner;
}

void strand_destroy(strand *st) { pthread_mutex_destroy(&st->mu); }

void strand_push(strand *st, strand_job *job) {
  int start;
  job->next = NULL;
  pthread_mutex_lock(&st->mu);
  if (st->tail)
    st->tail->next = job;
  else
    st->head = job;
  st->tail = job;
  st->queued++;
  start = !st->running && !st->paused;
  if (start)
    st->running = 1;
  pthread_mutex_unlock(&st->mu);
  if (start)
    st->kick(st);
}

int strand_try_enter(strand *st) {
  int ok;
  pthread_mutex_lock(&st->mu);
  ok = !st->running && !st->head && !st->paused;
  if (ok)
    st->running = 1;
  pthread_mutex_unlock(&st->mu);
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
    pthread_mutex_lock(&st->mu);
    if (n == BATCH && st->head) {
      pthread_mutex_unlock(&st->mu);
      st->kick(st); /* keep ownership; continue elsewhere later */
      return;
    }
    job = st->paused ? NULL : pop(st);
    if (!job) {
      st->running = 0;
      pthread_mutex_unlock(&st->mu);
      return;
    }
    pthread_mutex_unlock(&st->mu);
    job->run(job);
  }
}

void strand_drain(strand *st) {
  strand_job *job;
  for (;;) {
    pthread_mutex_lock(&st->mu);
    job = pop(st);
    if (!job)
      st->running = 0;
    pthread_mutex_unlock(&st->mu);
    if (!job)
      return;
    job->run(job);
  }
}

void strand_pause(strand *st) {
  pthread_mutex_lock(&st->mu);
  st->paused = 1;
  pthread_mutex_unlock(&st->mu);
}

int strand_busy(strand *st) {
  int busy;
  pthread_mutex_lock(&st->mu);
  busy = st->running;
  pthread_mutex_unlock(&st->mu);
  return busy;
}

void strand_unpause(strand *st) {
  int start;
  pthread_mutex_lock(&st->mu);
  st->paused = 0;
  start = st->head && !st->running;
  if (start)
    st->running = 1;
  pthread_mutex_unlock(&st->mu);
  if (start)
    st->kick(st);
}
