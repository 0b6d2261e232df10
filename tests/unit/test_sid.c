/* Unit tests for the session slot table: id layout, allocation until full,
 * staleness after release, the closing mark, generation wrap-around and
 * first-in-first-out slot reuse. */
#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

#include "net/sid.h"
#include "testlib.h"

START_TEST(test_sid_layout_macros) {
  pier_sid sid = PIER_SID_MAKE(0xab, 0x123456, 0xdeadbeefu);

  ck_assert_uint_eq(sid, 0xab123456deadbeefull);
  ck_assert_uint_eq(PIER_SID_WORKER(sid), 0xab);
  ck_assert_uint_eq(PIER_SID_GEN(sid), 0x123456);
  ck_assert_uint_eq(PIER_SID_SLOT(sid), 0xdeadbeefu);
  /* The generation keeps to its 24 bits. */
  sid = PIER_SID_MAKE(1, 0x1000002, 3);
  ck_assert_uint_eq(PIER_SID_WORKER(sid), 1);
  ck_assert_uint_eq(PIER_SID_GEN(sid), 2);
  ck_assert_uint_eq(PIER_SID_SLOT(sid), 3);
}
END_TEST

START_TEST(test_sid_alloc_encodes_worker_gen_slot) {
  sid_table t;
  pier_sid ids[4];

  ck_assert_int_eq(sid_table_init(&t, 3, 4), 0);
  for (int i = 0; i < 4; i++) {
    ids[i] = sid_alloc(&t);
    ck_assert_uint_ne(ids[i], 0);
    ck_assert_uint_eq(PIER_SID_WORKER(ids[i]), 3);
    ck_assert_uint_eq(PIER_SID_GEN(ids[i]), 1);
    ck_assert_uint_eq(PIER_SID_SLOT(ids[i]), (uint32_t)i); /* lowest slot first */
    ck_assert(sid_live(&t, ids[i]));
  }
  sid_table_free(&t);
}
END_TEST

START_TEST(test_sid_alloc_until_full_returns_0) {
  sid_table t;
  pier_sid ids[8];

  ck_assert_int_eq(sid_table_init(&t, 0, 8), 0);
  for (int i = 0; i < 8; i++) {
    ids[i] = sid_alloc(&t);
    ck_assert_uint_ne(ids[i], 0);
    for (int j = 0; j < i; j++)
      ck_assert_uint_ne(PIER_SID_SLOT(ids[i]), PIER_SID_SLOT(ids[j]));
  }
  ck_assert_uint_eq(sid_alloc(&t), 0);
  ck_assert_uint_eq(sid_alloc(&t), 0);
  /* Freeing one makes exactly one more allocation possible. */
  sid_release(&t, ids[5]);
  ids[5] = sid_alloc(&t);
  ck_assert_uint_ne(ids[5], 0);
  ck_assert_uint_eq(PIER_SID_SLOT(ids[5]), 5);
  ck_assert_uint_eq(sid_alloc(&t), 0);
  sid_table_free(&t);
}
END_TEST

START_TEST(test_sid_released_slot_old_id_stale) {
  sid_table t;
  pier_sid a, b, c, a2, a3;

  ck_assert_int_eq(sid_table_init(&t, 2, 3), 0);
  a = sid_alloc(&t);
  b = sid_alloc(&t);
  c = sid_alloc(&t);
  sid_release(&t, a);
  ck_assert(!sid_live(&t, a));
  ck_assert(sid_live(&t, b));
  ck_assert(sid_live(&t, c));

  a2 = sid_alloc(&t);
  ck_assert_uint_eq(PIER_SID_SLOT(a2), PIER_SID_SLOT(a));
  ck_assert_uint_ne(PIER_SID_GEN(a2), PIER_SID_GEN(a));
  ck_assert_uint_ne(a2, a);
  ck_assert(sid_live(&t, a2));
  ck_assert(!sid_live(&t, a));

  sid_release(&t, a2);
  a3 = sid_alloc(&t);
  ck_assert_uint_eq(PIER_SID_SLOT(a3), PIER_SID_SLOT(a));
  ck_assert_uint_ne(PIER_SID_GEN(a3), PIER_SID_GEN(a));
  ck_assert_uint_ne(PIER_SID_GEN(a3), PIER_SID_GEN(a2));
  ck_assert(sid_live(&t, a3));
  ck_assert(!sid_live(&t, a2));
  ck_assert(!sid_live(&t, a));
  sid_table_free(&t);
}
END_TEST

START_TEST(test_sid_mark_closing_keeps_slot_allocated) {
  sid_table t;
  pier_sid a, b, a2;

  ck_assert_int_eq(sid_table_init(&t, 1, 2), 0);
  a = sid_alloc(&t);
  b = sid_alloc(&t);
  sid_mark_closing(&t, a);
  ck_assert(!sid_live(&t, a));
  ck_assert(sid_live(&t, b));
  /* Still allocated: the full table has nothing to give. */
  ck_assert_uint_eq(sid_alloc(&t), 0);
  /* Marking twice changes nothing. */
  sid_mark_closing(&t, a);
  ck_assert(!sid_live(&t, a));

  sid_release(&t, a);
  a2 = sid_alloc(&t);
  ck_assert_uint_eq(PIER_SID_SLOT(a2), PIER_SID_SLOT(a));
  ck_assert_uint_ne(PIER_SID_GEN(a2), PIER_SID_GEN(a));
  ck_assert(sid_live(&t, a2));
  /* A stale id's closing mark does not touch the slot's new session. */
  sid_mark_closing(&t, a);
  ck_assert(sid_live(&t, a2));
  sid_table_free(&t);
}
END_TEST

START_TEST(test_sid_foreign_or_bad_ids_not_live) {
  sid_table t;
  pier_sid a;

  ck_assert_int_eq(sid_table_init(&t, 3, 4), 0);
  a = sid_alloc(&t);
  ck_assert(sid_live(&t, a));
  ck_assert(!sid_live(&t, 0));
  /* Same generation and slot, another worker. */
  ck_assert(!sid_live(&t, PIER_SID_MAKE(4, PIER_SID_GEN(a), PIER_SID_SLOT(a))));
  ck_assert(!sid_live(&t, PIER_SID_MAKE(2, PIER_SID_GEN(a), PIER_SID_SLOT(a))));
  /* Slots past the table. */
  ck_assert(!sid_live(&t, PIER_SID_MAKE(3, 1, 4)));
  ck_assert(!sid_live(&t, PIER_SID_MAKE(3, 1, 0xffffffffu)));
  /* Generation 0 never names a session, nor does a free slot. */
  ck_assert(!sid_live(&t, PIER_SID_MAKE(3, 0, PIER_SID_SLOT(a))));
  ck_assert(!sid_live(&t, PIER_SID_MAKE(3, 0, 1)));
  ck_assert(!sid_live(&t, PIER_SID_MAKE(3, 1, 1)));
  /* A wrong generation in a live slot. */
  ck_assert(!sid_live(&t, PIER_SID_MAKE(3, 2, PIER_SID_SLOT(a))));
  /* Marking an out-of-range id closing is harmless. */
  sid_mark_closing(&t, PIER_SID_MAKE(3, 1, 1000));
  ck_assert(sid_live(&t, a));
  sid_table_free(&t);
}
END_TEST

START_TEST(test_sid_generation_wraps_to_1_never_0) {
  sid_table t;
  pier_sid first, sid = 0, prev;
  uint32_t expect = 1, bad_at = 0, bad_gen = 0;

  ck_assert_int_eq(sid_table_init(&t, 5, 1), 0);
  first = sid_alloc(&t);
  ck_assert_uint_eq(PIER_SID_GEN(first), 1);
  sid_release(&t, first);
  /* Allocations 2 .. 2^24+2 of the one slot. */
  for (uint32_t i = 2; i <= 0x1000002u; i++) {
    sid = sid_alloc(&t);
    expect = expect == 0xffffffu ? 1 : expect + 1;
    if (!bad_at && (sid == 0 || PIER_SID_GEN(sid) != expect || PIER_SID_SLOT(sid) != 0)) {
      bad_at = i;
      bad_gen = PIER_SID_GEN(sid);
    }
    if (i == 0xffffffu) {
      prev = sid;
      if (PIER_SID_GEN(prev) != 0xffffffu && !bad_at)
        bad_at = i;
    }
    if (i == 0x1000000u && !bad_at) {
      /* The first allocation past 0xffffff: generation 1 again. */
      if (PIER_SID_GEN(sid) != 1 || !sid_live(&t, sid))
        bad_at = i;
    }
    sid_release(&t, sid);
  }
  ck_assert_msg(bad_at == 0, "allocation %u gave generation %u", bad_at, bad_gen);
  /* The last of the loop: 2^24+2 allocations = 0xffffff, then 1, 2, 3. */
  ck_assert_uint_eq(PIER_SID_GEN(sid), 3);
  sid = sid_alloc(&t);
  ck_assert_uint_eq(PIER_SID_GEN(sid), 4);
  ck_assert(sid_live(&t, sid));
  ck_assert(!sid_live(&t, first));
  sid_table_free(&t);
}
END_TEST

/* Freed slots come back first in, first out: the slot freed longest ago is
 * handed out next, so one client cycling connections walks every free slot
 * and a slot's generation advances once per (free slots) allocations. */
START_TEST(test_sid_free_slots_reused_fifo) {
  sid_table t;
  pier_sid ids[4], a, b, c, d;

  ck_assert_int_eq(sid_table_init(&t, 0, 4), 0);
  for (int i = 0; i < 4; i++)
    ids[i] = sid_alloc(&t);
  sid_release(&t, ids[2]);
  sid_release(&t, ids[0]);
  sid_release(&t, ids[3]);
  a = sid_alloc(&t);
  sid_release(&t, a); /* freed again: behind 0 and 3 */
  b = sid_alloc(&t);
  c = sid_alloc(&t);
  d = sid_alloc(&t);
  ck_assert_uint_eq(PIER_SID_SLOT(a), 2);
  ck_assert_uint_eq(PIER_SID_SLOT(b), 0);
  ck_assert_uint_eq(PIER_SID_SLOT(c), 3);
  ck_assert_uint_eq(PIER_SID_SLOT(d), 2);
  ck_assert_uint_eq(PIER_SID_GEN(d), 3);
  ck_assert_uint_eq(sid_alloc(&t), 0);
  sid_table_free(&t);

  /* One client cycling through a table of 1000 free slots: after 10000
   * sessions each slot's generation has advanced 10 times, not 10000. */
  ck_assert_int_eq(sid_table_init(&t, 0, 1000), 0);
  for (int i = 0; i < 10000; i++) {
    a = sid_alloc(&t);
    ck_assert_uint_eq(PIER_SID_SLOT(a), (uint32_t)(i % 1000));
    sid_release(&t, a);
  }
  ck_assert_uint_eq(PIER_SID_GEN(a), 10);
  sid_table_free(&t);
}
END_TEST

/* ---- a stale id never reaches the slot's next session ---- */

typedef struct race {
  sid_table t;
  _Atomic pier_sid current; /* the id now in the slot, as other threads learn it */
  _Atomic int stop;
  _Atomic long wrong_get; /* a reader got another session's pointer */
  _Atomic long calls;
} race;

static void *racer(void *arg) {
  race *r = arg;
  while (!atomic_load(&r->stop)) {
    pier_sid id = atomic_load(&r->current);
    void *got;
    /* Each writer stores the id it holds: a pointer found on a session
     * other than that id's is a stale write that landed. */
    sid_set_user(&r->t, id, (void *)(uintptr_t)id);
    got = sid_get_user(&r->t, id);
    if (got && (pier_sid)(uintptr_t)got != id)
      atomic_fetch_add(&r->wrong_get, 1);
    atomic_fetch_add_explicit(&r->calls, 1, memory_order_relaxed);
  }
  return NULL;
}

/* Two threads set and read the user pointer by ids that go stale while the
 * owner cycles the one slot through new sessions: every new session starts
 * with no pointer and only ever holds its own, and no reader gets another
 * session's. */
START_TEST(test_sid_stale_set_user_never_lands_on_new_session) {
  static race r;
  os_thread th[2];
  long sessions = 0, stale_on_new = 0, foreign = 0;
  uint64_t end;

  memset(&r, 0, sizeof(r));
  ck_assert_int_eq(sid_table_init(&r.t, 0, 1), 0);
  for (int i = 0; i < 2; i++)
    ck_assert_int_eq(os_thread_create(&th[i], racer, &r), 0);
  end = os_clock_ms() + 1500;
  while (os_clock_ms() < end || sessions < 1000) {
    pier_sid sid = sid_alloc(&r.t);
    void *u;
    ck_assert_uint_ne(sid, 0);
    /* What the owner sees for its new session (session_user reads this). */
    if (atomic_load(&r.t.user[0]) != NULL)
      stale_on_new++;
    atomic_store(&r.current, sid);
    for (int k = 0; k < 50; k++) /* let the racers at it */
      u = atomic_load(&r.t.user[0]);
    u = atomic_load(&r.t.user[0]);
    if (u && (pier_sid)(uintptr_t)u != sid)
      foreign++;
    sid_release(&r.t, sid);
    sessions++;
  }
  atomic_store(&r.stop, 1);
  for (int i = 0; i < 2; i++)
    os_thread_join(th[i]);
  ck_assert_int_gt(atomic_load(&r.calls), 1000);
  ck_assert_msg(stale_on_new == 0 && foreign == 0,
                "%ld of %ld new sessions started with a stale pointer, %ld held another's",
                stale_on_new, sessions, foreign);
  ck_assert_int_eq(atomic_load(&r.wrong_get), 0);
  sid_table_free(&r.t);
}
END_TEST

/* The lock bit is invisible to the liveness checks, and a closing mark made
 * while it is held keeps it. */
START_TEST(test_sid_lock_bit_invisible_to_checks) {
  sid_table t;
  pier_sid a;

  ck_assert_int_eq(sid_table_init(&t, 0, 2), 0);
  a = sid_alloc(&t);
  ck_assert(sid_lock(&t, a));
  ck_assert(sid_live(&t, a));
  ck_assert(sid_exists(&t, a));
  sid_mark_closing(&t, a);
  ck_assert(!sid_live(&t, a));
  ck_assert(sid_exists(&t, a));
  sid_unlock(&t, a);
  ck_assert(sid_exists(&t, a));
  ck_assert(!sid_live(&t, a));
  ck_assert_int_eq(sid_set_user(&t, a, &t), 0); /* closing: still its own */
  ck_assert_ptr_eq(sid_get_user(&t, a), &t);
  sid_release(&t, a);
  ck_assert(!sid_lock(&t, a));
  ck_assert_int_eq(sid_set_user(&t, a, &t), -ENOTCONN);
  ck_assert_ptr_null(sid_get_user(&t, a));
  ck_assert(!sid_lock(&t, 0));
  sid_table_free(&t);
}
END_TEST

int main(void) {
  Suite *s = suite_create("sid");
  TCase *tc = tcase_create("sid");

  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, test_sid_layout_macros);
  tcase_add_test(tc, test_sid_alloc_encodes_worker_gen_slot);
  tcase_add_test(tc, test_sid_alloc_until_full_returns_0);
  tcase_add_test(tc, test_sid_released_slot_old_id_stale);
  tcase_add_test(tc, test_sid_mark_closing_keeps_slot_allocated);
  tcase_add_test(tc, test_sid_foreign_or_bad_ids_not_live);
  tcase_add_test(tc, test_sid_generation_wraps_to_1_never_0);
  tcase_add_test(tc, test_sid_free_slots_reused_fifo);
  tcase_add_test(tc, test_sid_stale_set_user_never_lands_on_new_session);
  tcase_add_test(tc, test_sid_lock_bit_invisible_to_checks);
  suite_add_tcase(s, tc);
  return test_run(s);
}
