/* Slot table. Free slots wait in a first-in-first-out ring (lowest first at
 * the start); a slot's generation advances on every allocation so an old id
 * never matches a newer session in the same slot. FIFO rather than a stack:
 * with LIFO, one client cycling connections gets the same slot every time and
 * wraps its 24-bit generation after 16M connections; with FIFO a slot comes
 * back only after every other free slot has been handed out, so an id repeats
 * only after 2^24 x (free slots) allocations on the worker. */
#include "net/sid.h"

#include <errno.h>
#include <stdlib.h>

int sid_table_init(sid_table *t, unsigned worker, uint32_t cap) {
  t->cap = cap;
  t->worker = worker;
  t->free_slots = malloc(cap * sizeof(*t->free_slots));
  t->next_gen = calloc(cap, sizeof(*t->next_gen));
  t->live = calloc(cap, sizeof(*t->live));
  t->user = calloc(cap, sizeof(*t->user));
  t->xsend = calloc(cap, sizeof(*t->xsend));
  if (!t->free_slots || !t->next_gen || !t->live || !t->user || !t->xsend) {
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

void sid_release(sid_table *t, pier_sid sid) {
  uint32_t slot = PIER_SID_SLOT(sid);
  atomic_store_explicit(&t->live[slot], 0, memory_order_release);
  atomic_store_explicit(&t->user[slot], NULL, memory_order_relaxed);
  t->free_slots[(uint32_t)(((uint64_t)t->free_head + t->nfree) % t->cap)] = slot;
  t->nfree++;
}

void sid_mark_closing(sid_table *t, pier_sid sid) {
  uint32_t slot = PIER_SID_SLOT(sid), gen = PIER_SID_GEN(sid);
  if (slot < t->cap)
    atomic_compare_exchange_strong(&t->live[slot], &gen, gen | SID_CLOSING);
}

int sid_exists(const sid_table *t, pier_sid sid) {
  uint32_t slot = PIER_SID_SLOT(sid), gen = PIER_SID_GEN(sid);
  if (sid == 0 || PIER_SID_WORKER(sid) != t->worker || slot >= t->cap || gen == 0)
    return 0;
  return (atomic_load_explicit(&t->live[slot], memory_order_acquire) & ~SID_CLOSING) == gen;
}

int sid_live(const sid_table *t, pier_sid sid) {
  uint32_t slot = PIER_SID_SLOT(sid), gen = PIER_SID_GEN(sid);
  if (sid == 0 || PIER_SID_WORKER(sid) != t->worker || slot >= t->cap || gen == 0)
    return 0;
  return atomic_load_explicit(&t->live[slot], memory_order_acquire) == gen;
}
