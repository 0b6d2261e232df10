/* Session slot table of one worker: slot allocation, generations, and the
 * cross-thread staleness check behind every pier_sid. The owner thread
 * allocates and releases; any thread may ask whether an id is live. */
#ifndef PIER_NET_SID_H
#define PIER_NET_SID_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "pier/types.h"

#define SID_GEN_MASK 0xffffffu
#define SID_CLOSING 0x1000000u
/* Held while a thread reads or writes what belongs to the slot's session
 * (its user pointer, its peer address) on behalf of an id: the owner cannot
 * release the slot, and so no newer session can take it, until it is clear. */
#define SID_LOCK 0x2000000u

#define SID_BL_SHIFT 40
#define SID_BL_PAUSED (1ull << 39) /* reading paused, no resume posted yet */
#define SID_BL_BYTES (SID_BL_PAUSED - 1)

typedef struct sid_table {
  uint32_t cap;
  uint32_t nfree;
  uint32_t free_head;       /* oldest entry of the free ring */
  uint32_t *free_slots;     /* ring of free slot numbers, oldest freed first */
  uint32_t *next_gen;       /* owner thread only */
  _Atomic uint32_t *live;   /* generation of the open session in the slot; 0 if free,
                             SID_CLOSING added once it is closing, SID_LOCK while
                             another thread touches the slot for that id */
  _Atomic(void *) *user;   /* per-session pointer of the session's owner */
  /* Bytes the owner holds for the slot's session (session_backlog_add):
   * generation << SID_BL_SHIFT | SID_BL_PAUSED | bytes. Tagged, so a
   * net_backlog_done meant for an earlier session of the slot cannot touch
   * this one's count; retagged (count 0) when the slot is handed out. */
  _Atomic uint64_t *backlog;
  _Atomic size_t *xsend;   /* bytes of sends to the slot posted from other threads and
                             not yet run (may briefly include a previous session's) */
  unsigned worker;
} sid_table;

/* Returns 0 or -ENOMEM. cap must be >= 1. */
int sid_table_init(sid_table *t, unsigned worker, uint32_t cap);
void sid_table_free(sid_table *t);
/* Takes the free slot that has been free longest (first in, first out) and
 * gives it a new generation (never 0). Returns the id, or 0 when the table
 * is full. Owner thread only. */
pier_sid sid_alloc(sid_table *t);
/* sid_alloc in two steps: sid_take reserves the id without making it live,
 * so the owner can fill in what other threads may read once it is (the
 * peer address); sid_publish makes it live. */
pier_sid sid_take(sid_table *t);
void sid_publish(sid_table *t, pier_sid sid);
/* Marks the slot free; its id becomes stale at once. Waits (briefly: a lock
 * covers one pointer or address copy) until no other thread holds the slot's
 * lock, so nothing done for the old id can land after this returns. Owner
 * thread only. */
void sid_release(sid_table *t, pier_sid sid);
/* Marks a live id as closing: sid_live() is false for it from now on, so
 * other threads stop queueing to it. Any thread. */
void sid_mark_closing(sid_table *t, pier_sid sid);
/* Whether sid names the session in its slot, closing or not. Any thread. */
int sid_exists(const sid_table *t, pier_sid sid);
/* Whether sid names the live session of its slot. Any thread. */
int sid_live(const sid_table *t, pier_sid sid);
/* Locks the slot for sid if sid names its session (closing or not): returns
 * 1 with the lock held (release it with sid_unlock at once), or 0 for a
 * stale or bad id. While it is held the slot cannot be released, so what the
 * caller reads or writes is that session's. Any thread but the owner (which
 * would wait on itself in sid_release only if it held it there). */
int sid_lock(sid_table *t, pier_sid sid);
void sid_unlock(sid_table *t, pier_sid sid);
/* The session's user pointer, under the slot lock: a stale id sets nothing
 * (-ENOTCONN) and reads NULL, even while its slot is being reused. Any
 * thread. */
int sid_set_user(sid_table *t, pier_sid sid, void *user);
void *sid_get_user(sid_table *t, pier_sid sid);

#endif
