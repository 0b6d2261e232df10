/* Slot table. Free slots wait in a first-in-first-out ring (lowest first at
 * the start); a slot's generation advances on every allocation so an old id
 * never matches a newer session in the same slot. FIFO rather than a stack:
 * with LIFO, one client cycling connections gets the same slot every time and
 * wraps its 24-bit generation after 16M connections; with FIFO a slot comes
 * back only after every other free slot has been handed out, so an id repeats
 * only after 2^24 x (free slots) allocations on the worker.
 *
 * Other threads reach a session's user pointer and peer address by id. A
 * check that the id is live followed by the access is a race: between the
 * two the owner may release the slot and hand it to a new session, and the
 * access lands on (or reads) the new player's data. So the access is made
 * under a lock bit in the slot's `live` word, taken with a CAS that also
 * checks the generation: taken, the slot cannot be released (sid_release
 * waits for the bit), so the session it names is the one the access touches.
 * The bit is held for one pointer or address copy; sid_live and sid_exists
 * ignore it. */
#include "net/sid.h"

#include <errno.h>

#include "os/os.h"
#include <stdlib.h>

int sid_table_init(sid_table *t, unsigned worker, uint32_t cap) {
  t->cap = cap;
  t->worker = worker;
  t->free_slots = malloc(cap * sizeof(*t->free_slots));
  t->next_gen = calloc(cap, sizeof(*t->next_gen));
  t->live = calloc(cap, sizeof(*t->live));
  t->user = calloc(cap, sizeof(*t->user));
  t->xsend = calloc(cap, sizeof(*t->xsend));
  t->backlog = calloc(cap, sizeof(*t->backlog));
  if (!t->free_slots || !t->next_gen || !t->live || !t->user || !t->xsend || !t->backlog) {
    sid_table_free(t);
    return -ENOMEM;
  }
  for (uint32_t i = 0; i < cap; i++)
    t->free_slots[i] = i;
  t->free_head = 0;
  t->nfree = cap;
  return 0;
}

void sid_table_free(sid_table *t) {
  free(t->free_slots);
  free(t->next_gen);
  free((void *)t->live);
  free((void *)t->user);
  free((void *)t->xsend);
  free((void *)t->backlog);
  t->backlog = NULL;
  t->user = NULL;
  t->xsend = NULL;
  t->free_slots = NULL;
  t->next_gen = NULL;
  t->live = NULL;
  t->nfree = 0;
}

pier_sid sid_take(sid_table *t) {
  uint32_t slot, gen;
  if (t->nfree == 0)
    return 0;
  slot = t->free_slots[t->free_head];
  t->free_head = t->free_head + 1 == t->cap ? 0 : t->free_head + 1;
  t->nfree--;
  gen = (t->next_gen[slot] + 1) & 0xffffffu;
  if (gen == 0)
    gen = 1;
  t->next_gen[slot] = gen;
  atomic_store_explicit(&t->backlog[slot], (uint64_t)gen << SID_BL_SHIFT, memory_order_relaxed);
  return PIER_SID_MAKE(t->worker, gen, slot);
}

void sid_publish(sid_table *t, pier_sid sid) {
  atomic_store_explicit(&t->live[PIER_SID_SLOT(sid)], PIER_SID_GEN(sid), memory_order_release);
}

pier_sid sid_alloc(sid_table *t) {
  pier_sid sid = sid_take(t);
  if (sid)
    sid_publish(t, sid);
  return sid;
}

/* Lets another thread finish its short hold of a slot lock. */
static void spin_wait(unsigned *spins) {
  if (++*spins % 64 == 0)
    os_yield();
}

void sid_release(sid_table *t, pier_sid sid) {
  uint32_t slot = PIER_SID_SLOT(sid);
  uint32_t v = atomic_load_explicit(&t->live[slot], memory_order_relaxed);
  unsigned spins = 0;
  for (;;) {
    if (v & SID_LOCK) {
      spin_wait(&spins);
      v = atomic_load_explicit(&t->live[slot], memory_order_relaxed);
      continue;
    }
    /* Acquire: what a lock holder wrote before unlocking happens before
     * the slot is reset below. */
    if (atomic_compare_exchange_weak_explicit(&t->live[slot], &v, 0, memory_order_acq_rel,
                                              memory_order_relaxed))
      break;
  }
  atomic_store_explicit(&t->user[slot], NULL, memory_order_relaxed);
  t->free_slots[(uint32_t)(((uint64_t)t->free_head + t->nfree) % t->cap)] = slot;
  t->nfree++;
}

void sid_mark_closing(sid_table *t, pier_sid sid) {
  uint32_t slot = PIER_SID_SLOT(sid), gen = PIER_SID_GEN(sid), v;
  if (slot >= t->cap || gen == 0)
    return;
  /* A CAS loop, so a lock held meanwhile is kept. */
  v = atomic_load_explicit(&t->live[slot], memory_order_relaxed);
  while ((v & ~SID_LOCK) == gen &&
         !atomic_compare_exchange_weak_explicit(&t->live[slot], &v, v | SID_CLOSING,
                                                memory_order_acq_rel, memory_order_relaxed)) {
  }
}

int sid_exists(const sid_table *t, pier_sid sid) {
  uint32_t slot = PIER_SID_SLOT(sid), gen = PIER_SID_GEN(sid);
  if (sid == 0 || PIER_SID_WORKER(sid) != t->worker || slot >= t->cap || gen == 0)
    return 0;
  return (atomic_load_explicit(&t->live[slot], memory_order_acquire) & SID_GEN_MASK) == gen;
}

int sid_live(const sid_table *t, pier_sid sid) {
  uint32_t slot = PIER_SID_SLOT(sid), gen = PIER_SID_GEN(sid);
  if (sid == 0 || PIER_SID_WORKER(sid) != t->worker || slot >= t->cap || gen == 0)
    return 0;
  return (atomic_load_explicit(&t->live[slot], memory_order_acquire) & ~SID_LOCK) == gen;
}

int sid_lock(sid_table *t, pier_sid sid) {
  uint32_t slot = PIER_SID_SLOT(sid), gen = PIER_SID_GEN(sid), v;
  unsigned spins = 0;
  if (sid == 0 || PIER_SID_WORKER(sid) != t->worker || slot >= t->cap || gen == 0)
    return 0;
  v = atomic_load_explicit(&t->live[slot], memory_order_relaxed);
  for (;;) {
    if ((v & SID_GEN_MASK) != gen)
      return 0;
    if (v & SID_LOCK) {
      spin_wait(&spins);
      v = atomic_load_explicit(&t->live[slot], memory_order_relaxed);
      continue;
    }
    if (atomic_compare_exchange_weak_explicit(&t->live[slot], &v, v | SID_LOCK,
                                              memory_order_acquire, memory_order_relaxed))
      return 1;
  }
}

void sid_unlock(sid_table *t, pier_sid sid) {
  atomic_fetch_and_explicit(&t->live[PIER_SID_SLOT(sid)], ~SID_LOCK, memory_order_release);
}

int sid_set_user(sid_table *t, pier_sid sid, void *user) {
  if (!sid_lock(t, sid))
    return -ENOTCONN;
  atomic_store_explicit(&t->user[PIER_SID_SLOT(sid)], user, memory_order_relaxed);
  sid_unlock(t, sid);
  return 0;
}

void *sid_get_user(sid_table *t, pier_sid sid) {
  void *user;
  if (!sid_lock(t, sid))
    return NULL;
  user = atomic_load_explicit(&t->user[PIER_SID_SLOT(sid)], memory_order_relaxed);
  sid_unlock(t, sid);
  return user;
}
