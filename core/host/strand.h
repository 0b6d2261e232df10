/* A strand: a job queue whose jobs run one at a time, in order, on whichever
 * thread takes it (the classic JobQueue). A serial plugin's callbacks all go
 * through its strand, so plugin code needs no locks. The thread that finds
 * the strand idle runs it; after a batch it hands the rest to a worker so
 * one busy strand cannot starve a worker's sessions. */
#ifndef PIER_HOST_STRAND_H
#define PIER_HOST_STRAND_H

#include "os/os.h"
#include <stddef.h>

#include "io/io.h"

typedef struct strand_job strand_job;
struct strand_job {
  strand_job *next;
  void (*run)(strand_job *job); /* runs the job and frees it */
};

typedef struct strand strand;
/* Schedules st to continue on some thread later (a worker's inbox). */
typedef void (*strand_kick_fn)(strand *st);

struct strand {
  os_mutex mu;
  strand_job *head, *tail;
  int running;          /* a thread owns the strand */
  int paused;           /* strand_pause: no job starts until strand_unpause */
  size_t queued;
  strand_kick_fn kick;
  io_job kick_job;      /* used by kick: one outstanding at a time */
  void *owner;
};

void strand_init(strand *st, strand_kick_fn kick, void *owner);
void strand_destroy(strand *st);
/* Queues job; if the strand was idle, schedules it with kick. Any thread. */
void strand_push(strand *st, strand_job *job);
/* Takes the strand if it is idle and empty: the caller may run one callback
 * inline, then must call strand_run. Returns 1 if taken. */
int strand_try_enter(strand *st);
/* Runs queued jobs until the queue is empty (the strand is let go) or a
 * batch is done (the rest is kicked to a worker). The strand must be owned by
 * the caller: after strand_try_enter, or from the kick job. */
void strand_run(strand *st);
/* With every worker stopped: runs everything left, on this thread. */
void strand_drain(strand *st);
/* Stops the strand between two jobs (a reload): jobs still queue, none
 * starts; the job running now finishes. Any thread. */
void strand_pause(strand *st);
/* Whether a job of a paused strand is still running. */
int strand_busy(strand *st);
/* Lets a paused strand run again; what queued meanwhile is kicked to a worker. */
void strand_unpause(strand *st);

#endif
