/* Unit tests for the send queue: byte accounting, the max_send_queue cap,
 * coalescing of small writes into an unshared tail buffer, partial sends,
 * the iovec view, and buffer references. */
#include <errno.h>
#include <stdatomic.h>
#include <string.h>

#include "net/sendq.h"
#include "testlib.h"

#define NOLIMIT ((size_t)1 << 30)

static uint32_t refs(sbuf *b) { return atomic_load(&b->refs); }

/* The queue's bytes, read back through the iovec view. */
static size_t iov_flatten(const sendq *q, char *out, size_t cap, int *niov) {
  struct iovec iov[SENDQ_IOV_MAX];
  size_t n = 0;
  int k = sendq_iov(q, iov, SENDQ_IOV_MAX);
  for (int i = 0; i < k; i++) {
    ck_assert_uint_le(n + iov[i].iov_len, cap);
    memcpy(out + n, iov[i].iov_base, iov[i].iov_len);
    n += iov[i].iov_len;
  }
  if (niov)
    *niov = k;
  return n;
}

START_TEST(test_sendq_push_consume_accounting) {
  sendq q = {0};
  sbuf *b = sbuf_from("hello world", 11);
  struct iovec iov[4];

  ck_assert_ptr_null(q.ring); /* nothing allocated before first use */
  ck_assert_int_eq(sendq_push(&q, b, 0, 5, NOLIMIT), 0);
  ck_assert_uint_eq(q.bytes, 5);
  ck_assert_uint_eq(q.count, 1);
  ck_assert_uint_eq(refs(b), 2);
  ck_assert_int_eq(sendq_push(&q, b, 6, 5, NOLIMIT), 0);
  ck_assert_uint_eq(q.bytes, 10);
  ck_assert_uint_eq(q.count, 2);
  ck_assert_uint_eq(refs(b), 3);

  ck_assert_int_eq(sendq_iov(&q, iov, 4), 2);
  ck_assert_ptr_eq(iov[0].iov_base, b->data);
  ck_assert_uint_eq(iov[0].iov_len, 5);
  ck_assert_ptr_eq(iov[1].iov_base, b->data + 6);
  ck_assert_uint_eq(iov[1].iov_len, 5);

  /* A zero-length push queues nothing and takes no reference. */
  ck_assert_int_eq(sendq_push(&q, b, 0, 0, NOLIMIT), 0);
  ck_assert_uint_eq(q.count, 2);
  ck_assert_uint_eq(refs(b), 3);

  sendq_consume(&q, 5);
  ck_assert_uint_eq(q.bytes, 5);
  ck_assert_uint_eq(q.count, 1);
  ck_assert_uint_eq(refs(b), 2);
  sendq_consume(&q, 5);
  ck_assert_uint_eq(q.bytes, 0);
  ck_assert_uint_eq(q.count, 0);
  ck_assert_uint_eq(refs(b), 1);
  ck_assert_int_eq(sendq_iov(&q, iov, 4), 0);
  sendq_clear(&q);
  sbuf_release(b);
}
END_TEST

/* Two queues summed into one gauge: what enters either (push, write, also
 * an append into the tail) raises it, what leaves (consume, clear) lowers it,
 * a refused write leaves it alone, and the gauge survives a clear. */
START_TEST(test_sendq_gauge_sums_queues) {
  _Atomic uint64_t gauge = 0;
  sendq a = {.gauge = &gauge}, b = {.gauge = &gauge};
  sbuf *buf = sbuf_from("0123456789", 10);

  ck_assert_int_eq(sendq_push(&a, buf, 0, 10, NOLIMIT), 0);
  ck_assert_int_eq(sendq_write(&b, "abc", 3, NOLIMIT), 0);
  ck_assert_int_eq(sendq_write(&b, "de", 2, NOLIMIT), 0); /* appended */
  ck_assert_uint_eq(atomic_load(&gauge), 15);
  ck_assert_int_eq(sendq_write(&b, "toolong", 7, 8), -ENOBUFS);
  ck_assert_uint_eq(atomic_load(&gauge), 15);
  sendq_consume(&a, 4);
  ck_assert_uint_eq(atomic_load(&gauge), 11);
  sendq_clear(&b);
  ck_assert_uint_eq(atomic_load(&gauge), 6);
  ck_assert_ptr_eq(b.gauge, &gauge);
  ck_assert_int_eq(sendq_write(&b, "z", 1, NOLIMIT), 0);
  ck_assert_uint_eq(atomic_load(&gauge), 7);
  sendq_clear(&a);
  sendq_clear(&b);
  ck_assert_uint_eq(atomic_load(&gauge), 0);
  sbuf_release(buf);
}
END_TEST

START_TEST(test_sendq_cap_refuses_over_limit) {
  sendq q = {0};
  sbuf *b = sbuf_from("0123456789", 10);
  char out[32];

  ck_assert_int_eq(sendq_write(&q, "abcdef", 6, 10), 0);
  ck_assert_uint_eq(q.bytes, 6);
  /* 6 + 5 > 10: refused, nothing queued, no reference taken. */
  ck_assert_int_eq(sendq_push(&q, b, 0, 5, 10), -ENOBUFS);
  ck_assert_uint_eq(q.bytes, 6);
  ck_assert_uint_eq(q.count, 1);
  ck_assert_uint_eq(refs(b), 1);
  ck_assert_int_eq(sendq_write(&q, "ghijk", 5, 10), -ENOBUFS);
  ck_assert_uint_eq(q.bytes, 6);
  ck_assert_uint_eq(iov_flatten(&q, out, sizeof(out), NULL), 6);
  ck_assert_int_eq(memcmp(out, "abcdef", 6), 0);

  /* Exactly to the limit is allowed. */
  ck_assert_int_eq(sendq_push(&q, b, 0, 4, 10), 0);
  ck_assert_uint_eq(q.bytes, 10);
  ck_assert_uint_eq(refs(b), 2);
  ck_assert_int_eq(sendq_write(&q, "x", 1, 10), -ENOBUFS);
  ck_assert_int_eq(sendq_push(&q, b, 4, 1, 10), -ENOBUFS);
  ck_assert_uint_eq(q.bytes, 10);
  ck_assert_uint_eq(iov_flatten(&q, out, sizeof(out), NULL), 10);
  ck_assert_int_eq(memcmp(out, "abcdef0123", 10), 0);

  /* Room comes back as bytes are confirmed sent. */
  sendq_consume(&q, 3);
  ck_assert_int_eq(sendq_write(&q, "xyz", 3, 10), 0);
  ck_assert_uint_eq(q.bytes, 10);
  ck_assert_uint_eq(iov_flatten(&q, out, sizeof(out), NULL), 10);
  ck_assert_int_eq(memcmp(out, "def0123xyz", 10), 0);

  /* An empty queue with limit 0 refuses any byte. */
  sendq_clear(&q);
  ck_assert_int_eq(sendq_write(&q, "x", 1, 0), -ENOBUFS);
  ck_assert_uint_eq(q.count, 0);
  sendq_clear(&q);
  sbuf_release(b);
}
END_TEST

START_TEST(test_sendq_write_coalesces_unshared_tail) {
  sendq q = {0};
  struct iovec iov[4];

  ck_assert_int_eq(sendq_write(&q, "ab", 2, NOLIMIT), 0);
  ck_assert_int_eq(sendq_write(&q, "cde", 3, NOLIMIT), 0);
  ck_assert_int_eq(sendq_write(&q, "f", 1, NOLIMIT), 0);
  ck_assert_int_eq(sendq_write(&q, "ghij", 4, NOLIMIT), 0);
  ck_assert_uint_eq(q.count, 1);
  ck_assert_uint_eq(q.bytes, 10);
  ck_assert_int_eq(sendq_iov(&q, iov, 4), 1);
  ck_assert_uint_eq(iov[0].iov_len, 10);
  ck_assert_int_eq(memcmp(iov[0].iov_base, "abcdefghij", 10), 0);
  ck_assert_uint_eq(refs(q.ring[q.head].buf), 1);
  sendq_clear(&q);
}
END_TEST

START_TEST(test_sendq_write_coalesces_until_full) {
  sendq q = {0};
  char chunk[1000], out[4096];
  int niov;

  /* 2 KiB buffers: the third 1000-byte write no longer fits the first. */
  for (int i = 0; i < 3; i++) {
    memset(chunk, 'a' + i, sizeof(chunk));
    ck_assert_int_eq(sendq_write(&q, chunk, sizeof(chunk), NOLIMIT), 0);
  }
  ck_assert_uint_eq(q.count, 2);
  ck_assert_uint_eq(q.bytes, 3000);
  ck_assert_uint_eq(iov_flatten(&q, out, sizeof(out), &niov), 3000);
  ck_assert_int_eq(niov, 2);
  for (int i = 0; i < 3000; i++)
    if (out[i] != 'a' + i / 1000)
      ck_abort_msg("byte %d is %c", i, out[i]);
  sendq_clear(&q);
}
END_TEST

START_TEST(test_sendq_write_does_not_touch_shared_tail) {
  sendq q = {0};
  sbuf *bc = sbuf_from("BROADCAST", 9);
  struct iovec iov[4];
  char out[64];

  /* A broadcast buffer the caller still holds (and other queues may too). */
  ck_assert_int_eq(sendq_push(&q, bc, 0, 9, NOLIMIT), 0);
  ck_assert_uint_eq(refs(bc), 2);
  ck_assert_int_eq(sendq_write(&q, "xy", 2, NOLIMIT), 0);
  ck_assert_uint_eq(q.count, 2);
  ck_assert_uint_eq(q.bytes, 11);
  ck_assert_uint_eq(bc->len, 9);
  ck_assert_int_eq(memcmp(bc->data, "BROADCAST", 9), 0);
  ck_assert_int_eq(sendq_iov(&q, iov, 4), 2);
  ck_assert_ptr_eq(iov[0].iov_base, bc->data);
  ck_assert_uint_eq(iov[0].iov_len, 9);
  ck_assert_uint_eq(iov[1].iov_len, 2);
  ck_assert_int_eq(memcmp(iov[1].iov_base, "xy", 2), 0);

  /* The new tail is the queue's own: later writes join it. */
  ck_assert_int_eq(sendq_write(&q, "zw", 2, NOLIMIT), 0);
  ck_assert_uint_eq(q.count, 2);
  ck_assert_uint_eq(iov_flatten(&q, out, sizeof(out), NULL), 13);
  ck_assert_int_eq(memcmp(out, "BROADCASTxyzw", 13), 0);
  ck_assert_uint_eq(bc->len, 9);

  sendq_clear(&q);
  ck_assert_uint_eq(refs(bc), 1);
  sbuf_release(bc);
}
END_TEST

START_TEST(test_sendq_write_not_into_partially_pushed_buffer) {
  sendq q = {0};
  sbuf *b = sbuf_from("0123456789", 10);
  char out[64];

  /* Only bytes [2, 6) of b are queued; the queue then holds the only
   * reference, but b's bytes after 6 are not the queue's to overwrite. */
  ck_assert_int_eq(sendq_push(&q, b, 2, 4, NOLIMIT), 0);
  sbuf_release(b);
  ck_assert_int_eq(sendq_write(&q, "ab", 2, NOLIMIT), 0);
  ck_assert_uint_eq(q.bytes, 6);
  ck_assert_uint_eq(iov_flatten(&q, out, sizeof(out), NULL), 6);
  ck_assert_int_eq(memcmp(out, "2345ab", 6), 0);
  sendq_clear(&q);
}
END_TEST

START_TEST(test_sendq_partial_consume_moves_offset) {
  sendq q = {0};
  sbuf *a = sbuf_from("abcd", 4), *b = sbuf_from("efghij", 6);
  struct iovec iov[4];

  ck_assert_int_eq(sendq_push(&q, a, 0, 4, NOLIMIT), 0);
  ck_assert_int_eq(sendq_push(&q, b, 0, 6, NOLIMIT), 0);
  sendq_consume(&q, 1);
  ck_assert_uint_eq(q.bytes, 9);
  ck_assert_int_eq(sendq_iov(&q, iov, 4), 2);
  ck_assert_ptr_eq(iov[0].iov_base, a->data + 1);
  ck_assert_uint_eq(iov[0].iov_len, 3);
  ck_assert_ptr_eq(iov[1].iov_base, b->data);

  /* Across an entry boundary: the rest of a and 2 bytes of b. */
  sendq_consume(&q, 5);
  ck_assert_uint_eq(q.bytes, 4);
  ck_assert_uint_eq(q.count, 1);
  ck_assert_uint_eq(refs(a), 1);
  ck_assert_uint_eq(refs(b), 2);
  ck_assert_int_eq(sendq_iov(&q, iov, 4), 1);
  ck_assert_ptr_eq(iov[0].iov_base, b->data + 2);
  ck_assert_uint_eq(iov[0].iov_len, 4);
  ck_assert_int_eq(memcmp(iov[0].iov_base, "ghij", 4), 0);

  /* Exactly the rest of an entry releases it. */
  sendq_consume(&q, 4);
  ck_assert_uint_eq(q.count, 0);
  ck_assert_uint_eq(q.bytes, 0);
  ck_assert_uint_eq(refs(b), 1);
  sendq_clear(&q);
  sbuf_release(a);
  sbuf_release(b);
}
END_TEST

START_TEST(test_sendq_consume_all_releases_buffers) {
  sendq q = {0};
  sbuf *held[5];

  for (int i = 0; i < 5; i++) {
    held[i] = sbuf_from("payload", 7);
    ck_assert_int_eq(sendq_push(&q, held[i], 0, 7, NOLIMIT), 0);
    ck_assert_int_eq(sendq_push(&q, held[i], 1, 3, NOLIMIT), 0);
    ck_assert_uint_eq(refs(held[i]), 3);
  }
  ck_assert_uint_eq(q.bytes, 50);
  sendq_consume(&q, 50);
  ck_assert_uint_eq(q.bytes, 0);
  ck_assert_uint_eq(q.count, 0);
  for (int i = 0; i < 5; i++) {
    ck_assert_uint_eq(refs(held[i]), 1);
    sbuf_release(held[i]);
  }
  sendq_clear(&q);
}
END_TEST

START_TEST(test_sendq_iov_caps_at_max) {
  sendq q = {0};
  sbuf *b = sbuf_alloc(256);
  struct iovec iov[SENDQ_IOV_MAX + 8];
  int n, bad = -1;

  for (int i = 0; i < 200; i++)
    b->data[i] = (char)i;
  b->len = 200;
  for (int i = 0; i < 100; i++)
    ck_assert_int_eq(sendq_push(&q, b, (uint32_t)i, 1, NOLIMIT), 0);
  ck_assert_uint_eq(q.count, 100);
  ck_assert_uint_eq(refs(b), 101);

  n = sendq_iov(&q, iov, SENDQ_IOV_MAX);
  ck_assert_int_eq(n, SENDQ_IOV_MAX);
  for (int i = 0; i < n; i++)
    if (iov[i].iov_base != b->data + i || iov[i].iov_len != 1)
      bad = i;
  ck_assert_int_eq(bad, -1);
  ck_assert_int_eq(sendq_iov(&q, iov, 3), 3);
  ck_assert_int_eq(sendq_iov(&q, iov, 0), 0);
  ck_assert_int_eq(sendq_iov(&q, iov, SENDQ_IOV_MAX + 8), SENDQ_IOV_MAX + 8);

  sendq_consume(&q, SENDQ_IOV_MAX);
  n = sendq_iov(&q, iov, SENDQ_IOV_MAX);
  ck_assert_int_eq(n, 100 - SENDQ_IOV_MAX);
  ck_assert_ptr_eq(iov[0].iov_base, b->data + SENDQ_IOV_MAX);
  ck_assert_ptr_eq(iov[n - 1].iov_base, b->data + 99);
  ck_assert_uint_eq(refs(b), 1 + 100 - SENDQ_IOV_MAX);
  sendq_clear(&q);
  ck_assert_uint_eq(refs(b), 1);
  sbuf_release(b);
}
END_TEST

START_TEST(test_sendq_ring_grows_across_wrap) {
  sendq q = {0};
  sbuf *b = sbuf_alloc(256);
  struct iovec iov[SENDQ_IOV_MAX];
  int n, bad = -1;

  for (int i = 0; i < 256; i++)
    b->data[i] = (char)i;
  b->len = 256;
  /* Move the head into the middle of the 8-entry ring, then grow it while
   * the live entries wrap around its end. */
  for (int i = 0; i < 6; i++)
    ck_assert_int_eq(sendq_push(&q, b, (uint32_t)i, 1, NOLIMIT), 0);
  sendq_consume(&q, 5);
  ck_assert_uint_eq(q.count, 1);
  for (int i = 6; i < 30; i++)
    ck_assert_int_eq(sendq_push(&q, b, (uint32_t)i, 1, NOLIMIT), 0);
  ck_assert_uint_eq(q.count, 25);
  ck_assert_uint_eq(q.bytes, 25);
  n = sendq_iov(&q, iov, SENDQ_IOV_MAX);
  ck_assert_int_eq(n, 25);
  for (int i = 0; i < n; i++)
    if (iov[i].iov_base != b->data + 5 + i)
      bad = i;
  ck_assert_int_eq(bad, -1);
  sendq_clear(&q);
  ck_assert_uint_eq(refs(b), 1);
  sbuf_release(b);
}
END_TEST

START_TEST(test_sendq_clear_releases_all) {
  sendq q = {0};
  sbuf *a = sbuf_from("a", 1), *b = sbuf_from("bb", 2);

  ck_assert_int_eq(sendq_push(&q, a, 0, 1, NOLIMIT), 0);
  ck_assert_int_eq(sendq_push(&q, b, 0, 2, NOLIMIT), 0);
  ck_assert_int_eq(sendq_push(&q, a, 0, 1, NOLIMIT), 0);
  ck_assert_int_eq(sendq_write(&q, "own", 3, NOLIMIT), 0);
  sendq_consume(&q, 1);
  ck_assert_uint_eq(refs(a), 2);
  ck_assert_uint_eq(refs(b), 2);
  sendq_clear(&q);
  ck_assert_uint_eq(refs(a), 1);
  ck_assert_uint_eq(refs(b), 1);
  ck_assert_ptr_null(q.ring);
  ck_assert_uint_eq(q.count, 0);
  ck_assert_uint_eq(q.cap, 0);
  ck_assert_uint_eq(q.bytes, 0);
  /* Usable again after a clear. */
  ck_assert_int_eq(sendq_write(&q, "again", 5, NOLIMIT), 0);
  ck_assert_uint_eq(q.bytes, 5);
  sendq_clear(&q);
  sendq_clear(&q);
  sbuf_release(a);
  sbuf_release(b);
}
END_TEST

/* A queue that drains holds no ring, and works again on the next write,
 * byte for byte; one with fixed storage goes back to it, and frees the
 * larger ring it grew into. */
START_TEST(test_sendq_drained_ring_is_freed) {
  sendq q = {0};
  sendq_entry fixed[4];
  struct iovec iov[SENDQ_IOV_MAX];
  sbuf *b[6];

  ck_assert_int_eq(sendq_write(&q, "hello", 5, 1 << 20), 0);
  ck_assert_ptr_nonnull(q.ring);
  sendq_consume(&q, 5);
  ck_assert_ptr_null(q.ring);
  ck_assert_uint_eq(q.cap, 0);
  ck_assert_int_eq(sendq_write(&q, "again", 5, 1 << 20), 0);
  ck_assert_int_eq(sendq_iov(&q, iov, SENDQ_IOV_MAX), 1);
  ck_assert_uint_eq(iov[0].iov_len, 5);
  ck_assert_mem_eq(iov[0].iov_base, "again", 5);
  sendq_consume(&q, 2);
  ck_assert_ptr_nonnull(q.ring); /* not drained yet */
  sendq_consume(&q, 3);
  ck_assert_ptr_null(q.ring);

  sendq_init(&q, fixed, 4, NULL);
  for (int i = 0; i < 6; i++) { /* shared buffers: one entry each */
    b[i] = sbuf_from("x", 1);
    ck_assert_int_eq(sendq_push(&q, b[i], 0, 1, 1 << 20), 0);
  }
  ck_assert(q.ring != fixed); /* outgrew it */
  ck_assert(sendq_owns_ring(&q));
  sendq_consume(&q, 6);
  ck_assert(q.ring == fixed);
  ck_assert_uint_eq(q.cap, 4);
  ck_assert(!sendq_owns_ring(&q));
  ck_assert_int_eq(sendq_write(&q, "ok", 2, 1 << 20), 0);
  ck_assert(q.ring == fixed);
  sendq_clear(&q);
  ck_assert(q.ring == fixed);
  for (int i = 0; i < 6; i++) {
    ck_assert_uint_eq(atomic_load(&b[i]->refs), 1);
    sbuf_release(b[i]);
  }
}
END_TEST

int main(void) {
  Suite *s = suite_create("sendq");
  TCase *tc = tcase_create("sendq");

  tcase_add_test(tc, test_sendq_push_consume_accounting);
  tcase_add_test(tc, test_sendq_drained_ring_is_freed);
  tcase_add_test(tc, test_sendq_gauge_sums_queues);
  tcase_add_test(tc, test_sendq_cap_refuses_over_limit);
  tcase_add_test(tc, test_sendq_write_coalesces_unshared_tail);
  tcase_add_test(tc, test_sendq_write_coalesces_until_full);
  tcase_add_test(tc, test_sendq_write_does_not_touch_shared_tail);
  tcase_add_test(tc, test_sendq_write_not_into_partially_pushed_buffer);
  tcase_add_test(tc, test_sendq_partial_consume_moves_offset);
  tcase_add_test(tc, test_sendq_consume_all_releases_buffers);
  tcase_add_test(tc, test_sendq_iov_caps_at_max);
  tcase_add_test(tc, test_sendq_ring_grows_across_wrap);
  tcase_add_test(tc, test_sendq_clear_releases_all);
  suite_add_tcase(s, tc);
  return test_run(s);
}
