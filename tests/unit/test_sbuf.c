/* Unit tests for send buffers: size classes, reference counting, the
 * per-thread block cache, and a release on another thread than the one that
 * allocated. */
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "net/sbuf.h"
#include "testlib.h"

static uint32_t refs(sbuf *b) { return atomic_load(&b->refs); }

START_TEST(test_sbuf_alloc_len_cap) {
  static const struct {
    size_t want;
    uint32_t cap;
  } cases[] = {{0, 256},       {1, 256},       {256, 256},       {257, 2048},
               {2048, 2048},   {2049, 16384},  {16384, 16384},   {16385, 65536},
               {65536, 65536}, {65537, 65537}, {100000, 100000}};

  sbuf_cache_trim();
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    sbuf *b = sbuf_alloc(cases[i].want);
    ck_assert_ptr_nonnull(b);
    ck_assert_uint_eq(b->len, 0);
    ck_assert_uint_eq(b->cap, cases[i].cap);
    ck_assert_uint_eq(refs(b), 1);
    /* The whole capacity is usable. */
    memset(b->data, 0xab, b->cap);
    sbuf_release(b);
  }
  sbuf_cache_trim();
  ck_assert_uint_eq(sbuf_cache_count(), 0);
}
END_TEST

START_TEST(test_sbuf_refcount_survives_until_last_release) {
  sbuf *b;
  size_t before;

  sbuf_cache_trim();
  before = sbuf_cache_count();
  ck_assert_uint_eq(before, 0);
  b = sbuf_alloc(100);
  ck_assert_ptr_nonnull(b);
  memcpy(b->data, "refcounted bytes", 16);
  b->len = 16;
  ck_assert_ptr_eq(sbuf_ref(b), b);
  ck_assert_ptr_eq(sbuf_ref(b), b);
  ck_assert_uint_eq(refs(b), 3);

  sbuf_release(b);
  ck_assert_uint_eq(refs(b), 2);
  ck_assert_uint_eq(sbuf_cache_count(), 0);
  sbuf_release(b);
  ck_assert_uint_eq(refs(b), 1);
  ck_assert_uint_eq(sbuf_cache_count(), 0);
  ck_assert_uint_eq(b->len, 16);
  ck_assert_int_eq(memcmp(b->data, "refcounted bytes", 16), 0);

  sbuf_release(b);
  ck_assert_uint_eq(sbuf_cache_count(), 1);
  sbuf_cache_trim();
  ck_assert_uint_eq(sbuf_cache_count(), 0);
}
END_TEST

START_TEST(test_sbuf_reuse_comes_from_cache) {
  sbuf *a, *b, *c, *d;

  sbuf_cache_trim();
  a = sbuf_alloc(1000); /* 2 KiB class */
  ck_assert_ptr_nonnull(a);
  a->len = 1000;
  sbuf_release(a);
  ck_assert_uint_eq(sbuf_cache_count(), 1);

  /* A request of another class does not take it. */
  c = sbuf_alloc(100);
  ck_assert_ptr_nonnull(c);
  ck_assert_ptr_ne(c, a);
  ck_assert_uint_eq(sbuf_cache_count(), 1);

  /* The same class does: same block, reset to one reference and len 0. */
  b = sbuf_alloc(2000);
  ck_assert_ptr_eq(b, a);
  ck_assert_uint_eq(sbuf_cache_count(), 0);
  ck_assert_uint_eq(b->len, 0);
  ck_assert_uint_eq(b->cap, 2048);
  ck_assert_uint_eq(refs(b), 1);

  /* With the cache empty a new block is made. */
  d = sbuf_alloc(2000);
  ck_assert_ptr_nonnull(d);
  ck_assert_ptr_ne(d, b);

  /* Most recently released first. */
  sbuf_release(b);
  sbuf_release(d);
  ck_assert_uint_eq(sbuf_cache_count(), 2);
  ck_assert_ptr_eq(sbuf_alloc(300), d);
  ck_assert_ptr_eq(sbuf_alloc(2048), b);
  ck_assert_uint_eq(sbuf_cache_count(), 0);
  sbuf_release(b);
  sbuf_release(c);
  sbuf_release(d);
  ck_assert_uint_eq(sbuf_cache_count(), 3);
  sbuf_cache_trim();
  ck_assert_uint_eq(sbuf_cache_count(), 0);
}
END_TEST

START_TEST(test_sbuf_largest_class_cached_larger_not) {
  sbuf *big, *top;

  sbuf_cache_trim();
  top = sbuf_alloc(65536);
  ck_assert_ptr_nonnull(top);
  ck_assert_uint_eq(top->cap, 65536);
  sbuf_release(top);
  ck_assert_uint_eq(sbuf_cache_count(), 1);

  big = sbuf_alloc(65537);
  ck_assert_ptr_nonnull(big);
  ck_assert_ptr_ne(big, top); /* not served from the 64 KiB class */
  ck_assert_uint_eq(big->cap, 65537);
  ck_assert_uint_eq(big->cls, SBUF_UNPOOLED);
  ck_assert_uint_eq(sbuf_cache_count(), 1);
  sbuf_release(big);
  ck_assert_uint_eq(sbuf_cache_count(), 1);

  big = sbuf_alloc(1u << 20);
  ck_assert_ptr_nonnull(big);
  sbuf_release(big);
  ck_assert_uint_eq(sbuf_cache_count(), 1);
  sbuf_cache_trim();
}
END_TEST

START_TEST(test_sbuf_cap_above_max_is_null) {
  sbuf *b;

  ck_assert_ptr_null(sbuf_alloc((size_t)SBUF_MAX + 1));
  ck_assert_ptr_null(sbuf_alloc(SIZE_MAX));
  b = sbuf_alloc(SBUF_MAX);
  ck_assert_ptr_nonnull(b);
  ck_assert_uint_eq(b->cap, SBUF_MAX);
  b->data[0] = 1;
  b->data[SBUF_MAX - 1] = 2;
  sbuf_release(b);
}
END_TEST

START_TEST(test_sbuf_from_copies) {
  char src[300];
  sbuf *b, *e;

  for (size_t i = 0; i < sizeof(src); i++)
    src[i] = (char)test_pattern(7, i);
  b = sbuf_from(src, sizeof(src));
  ck_assert_ptr_nonnull(b);
  ck_assert_ptr_ne(b->data, src);
  ck_assert_uint_eq(b->len, sizeof(src));
  ck_assert_uint_eq(b->cap, 2048);
  ck_assert_uint_eq(refs(b), 1);
  /* A copy: later changes to the source do not show. */
  memset(src, 0, sizeof(src));
  for (size_t i = 0; i < sizeof(src); i++)
    if ((uint8_t)b->data[i] != test_pattern(7, i))
      ck_abort_msg("byte %zu differs", i);
  sbuf_release(b);

  e = sbuf_from(NULL, 0);
  ck_assert_ptr_nonnull(e);
  ck_assert_uint_eq(e->len, 0);
  sbuf_release(e);
  sbuf_cache_trim();
}
END_TEST

/* ---- release on another thread ---- */

typedef struct xrel {
  sbuf *b;
  size_t count_before, count_after_first, count_after_last;
  uint32_t refs_after_first;
  int data_ok;
} xrel;

static void *release_thread(void *arg) {
  xrel *x = arg;
  x->count_before = sbuf_cache_count();
  sbuf_release(x->b); /* not the last reference */
  x->count_after_first = sbuf_cache_count();
  x->refs_after_first = atomic_load(&x->b->refs);
  x->data_ok = x->b->len == 5 && memcmp(x->b->data, "cross", 5) == 0;
  sbuf_release(x->b); /* the last: joins this thread's cache */
  x->count_after_last = sbuf_cache_count();
  return NULL;
}

START_TEST(test_sbuf_release_on_other_thread_joins_its_cache) {
  os_thread th;
  xrel x = {0};

  sbuf_cache_trim();
  x.b = sbuf_from("cross", 5);
  ck_assert_ptr_nonnull(x.b);
  sbuf_ref(x.b);
  ck_assert_int_eq(os_thread_create(&th, release_thread, &x), 0);
  os_thread_join(th);
  ck_assert_uint_eq(x.count_before, 0);
  ck_assert_uint_eq(x.count_after_first, 0);
  ck_assert_uint_eq(x.refs_after_first, 1);
  ck_assert(x.data_ok);
  ck_assert_uint_eq(x.count_after_last, 1);
  /* Not in this thread's cache; the other thread's cache was freed when it
   * exited (a leak here shows up under AddressSanitizer). */
  ck_assert_uint_eq(sbuf_cache_count(), 0);
}
END_TEST

typedef struct many {
  sbuf *bufs[40];
  int n;
  size_t count_after;
} many;

static void *release_many_thread(void *arg) {
  many *m = arg;
  for (int i = 0; i < m->n; i++)
    sbuf_release(m->bufs[i]);
  m->count_after = sbuf_cache_count();
  return NULL;
}

START_TEST(test_sbuf_thread_exit_frees_cache_of_every_class) {
  static const size_t sizes[] = {10, 1000, 10000, 60000};
  os_thread th;
  many m = {.n = 40};

  sbuf_cache_trim();
  for (int i = 0; i < m.n; i++) {
    m.bufs[i] = sbuf_alloc(sizes[i % 4]);
    ck_assert_ptr_nonnull(m.bufs[i]);
  }
  ck_assert_int_eq(os_thread_create(&th, release_many_thread, &m), 0);
  os_thread_join(th);
  /* 64 KiB blocks are cached up to the 1 MiB budget of their class (16), so
   * all 40 fit. */
  ck_assert_uint_eq(m.count_after, 40);
  ck_assert_uint_eq(sbuf_cache_count(), 0);
}
END_TEST

START_TEST(test_sbuf_cache_budget_per_class) {
  sbuf *bufs[20];

  sbuf_cache_trim();
  for (int i = 0; i < 20; i++) {
    bufs[i] = sbuf_alloc(65536);
    ck_assert_ptr_nonnull(bufs[i]);
  }
  for (int i = 0; i < 20; i++)
    sbuf_release(bufs[i]);
  /* 16 x 64 KiB = 1 MiB per class; the rest are freed. */
  ck_assert_uint_eq(sbuf_cache_count(), 16);
  sbuf_cache_trim();
  ck_assert_uint_eq(sbuf_cache_count(), 0);
}
END_TEST

int main(void) {
  Suite *s = suite_create("sbuf");
  TCase *tc = tcase_create("sbuf");

  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, test_sbuf_alloc_len_cap);
  tcase_add_test(tc, test_sbuf_refcount_survives_until_last_release);
  tcase_add_test(tc, test_sbuf_reuse_comes_from_cache);
  tcase_add_test(tc, test_sbuf_largest_class_cached_larger_not);
  tcase_add_test(tc, test_sbuf_cap_above_max_is_null);
  tcase_add_test(tc, test_sbuf_from_copies);
  tcase_add_test(tc, test_sbuf_release_on_other_thread_joins_its_cache);
  tcase_add_test(tc, test_sbuf_thread_exit_frees_cache_of_every_class);
  tcase_add_test(tc, test_sbuf_cache_budget_per_class);
  suite_add_tcase(s, tc);
  return test_run(s);
}
