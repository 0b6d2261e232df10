/* Unit tests for the session slot table: id layout, allocation until full,
 * staleness after release, the closing mark, generation wrap-around and
 * first-in-first-out slot reuse. */
#include <errno.h>
#include <stdint.h>

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
  suite_add_tcase(s, tc);
  return test_run(s);
}
