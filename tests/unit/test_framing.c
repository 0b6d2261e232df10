/* Unit tests for the u16_size_id decoder: whole packets, packets split at
 * every byte boundary, size errors (also split across reads), stopping from
 * the callback, and release of partial-packet storage. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "net/framing.h"
#include "testlib.h"

#define MAXP 1024

typedef struct sink {
  char bytes[8192]; /* delivered packets, back to back */
  size_t nbytes;
  size_t lens[64];
  int n;
  int stop_at;   /* return non-zero from the callback delivering packet #stop_at (1-based) */
  int overflow;
} sink;

static int on_packet(void *ctx, const char *pkt, size_t len) {
  sink *s = ctx;
  if (s->n >= 64 || s->nbytes + len > sizeof(s->bytes)) {
    s->overflow = 1;
    return 1;
  }
  memcpy(s->bytes + s->nbytes, pkt, len);
  s->nbytes += len;
  s->lens[s->n++] = len;
  return s->stop_at && s->n == s->stop_at;
}

/* Appends a packet of `size` bytes (header included) with id and a body of
 * test_pattern(id, k); returns the new stream length. */
static size_t put_packet(char *out, size_t at, uint16_t size, uint16_t id) {
  out[at] = (char)(size & 0xff);
  out[at + 1] = (char)(size >> 8);
  out[at + 2] = (char)(id & 0xff);
  out[at + 3] = (char)(id >> 8);
  for (size_t k = 4; k < size; k++)
    out[at + k] = (char)test_pattern(id, k);
  return at + size;
}

/* Three packets: 9, 4 (empty body) and 23 bytes. */
static size_t three_packets(char *out) {
  size_t n = put_packet(out, 0, 9, 0x0101);
  n = put_packet(out, n, 4, 0x0202);
  return put_packet(out, n, 23, 0x0303);
}

static int same_as_stream(const sink *s, const char *stream, size_t len) {
  return s->n == 3 && s->nbytes == len && memcmp(s->bytes, stream, len) == 0 && s->lens[0] == 9 &&
         s->lens[1] == 4 && s->lens[2] == 23 && !s->overflow;
}

START_TEST(test_framing_whole_packets_from_one_buffer) {
  char stream[64];
  size_t len = three_packets(stream);
  framer f = {0};
  sink s = {0};

  ck_assert_int_eq(framing_feed(&f, MAXP, stream, len, on_packet, &s), 0);
  ck_assert_int_eq(s.n, 3);
  ck_assert_uint_eq(s.lens[0], 9);
  ck_assert_uint_eq(s.lens[1], 4);
  ck_assert_uint_eq(s.lens[2], 23);
  ck_assert_int_eq(memcmp(s.bytes, stream, len), 0);
  ck_assert_uint_eq(frame_u16(s.bytes + 2), 0x0101);
  ck_assert_uint_eq(frame_u16(s.bytes + 9 + 2), 0x0202);
  ck_assert_uint_eq(frame_u16(s.bytes + 13 + 2), 0x0303);
  /* Nothing was held back. */
  ck_assert_ptr_null(f.held);
  ck_assert_uint_eq(framing_held(&f), 0);
  framing_reset(&f);
}
END_TEST

START_TEST(test_framing_one_byte_at_a_time) {
  char stream[64];
  size_t len = three_packets(stream);
  framer f = {0};
  sink s = {0};
  int rc_bad = 0;

  for (size_t i = 0; i < len; i++) {
    int rc = framing_feed(&f, MAXP, stream + i, 1, on_packet, &s);
    if (rc != 0 && !rc_bad)
      rc_bad = rc;
  }
  ck_assert_int_eq(rc_bad, 0);
  ck_assert_msg(same_as_stream(&s, stream, len), "got %d packets, %zu bytes", s.n, s.nbytes);
  ck_assert_ptr_null(f.held);
  ck_assert_uint_eq(framing_held(&f), 0);
}
END_TEST

START_TEST(test_framing_every_split_point) {
  char stream[64];
  size_t len = three_packets(stream);
  size_t fail_i = 0, fail_j = 0;
  int failed = 0;

  /* Two pieces at every i, and three pieces at every i <= j. */
  for (size_t i = 0; i <= len && !failed; i++) {
    for (size_t j = i; j <= len && !failed; j++) {
      framer f = {0};
      sink s = {0};
      int rc = framing_feed(&f, MAXP, stream, i, on_packet, &s);
      rc |= framing_feed(&f, MAXP, stream + i, j - i, on_packet, &s);
      rc |= framing_feed(&f, MAXP, stream + j, len - j, on_packet, &s);
      if (rc != 0 || !same_as_stream(&s, stream, len) || f.held != NULL || framing_held(&f) != 0) {
        failed = 1;
        fail_i = i;
        fail_j = j;
      }
      framing_reset(&f);
    }
  }
  ck_assert_msg(!failed, "split at %zu and %zu decoded differently", fail_i, fail_j);
}
END_TEST

START_TEST(test_framing_size_below_header_is_eproto) {
  for (unsigned size = 0; size < 4; size++) {
    char pkt[4] = {(char)size, 0, 1, 0};
    framer f = {0};
    sink s = {0};

    ck_assert_int_eq(framing_feed(&f, MAXP, pkt, 4, on_packet, &s), -EPROTO);
    ck_assert_int_eq(s.n, 0);
    ck_assert_ptr_null(f.held);
    ck_assert_uint_eq(framing_held(&f), 0);
    /* Split after the first size byte. */
    ck_assert_int_eq(framing_feed(&f, MAXP, pkt, 1, on_packet, &s), 0);
    ck_assert_int_eq(framing_feed(&f, MAXP, pkt + 1, 3, on_packet, &s), -EPROTO);
    ck_assert_int_eq(s.n, 0);
    ck_assert_ptr_null(f.held);
    ck_assert_uint_eq(framing_held(&f), 0);
  }
}
END_TEST

START_TEST(test_framing_size_above_max_is_emsgsize) {
  char stream[128];
  size_t n;
  framer f = {0};
  sink s = {0};

  /* 101 > 100 in one buffer, even with the body not there yet. */
  put_packet(stream, 0, 101, 5);
  ck_assert_int_eq(framing_feed(&f, 100, stream, 4, on_packet, &s), -EMSGSIZE);
  ck_assert_int_eq(framing_feed(&f, 100, stream, 2, on_packet, &s), -EMSGSIZE);
  ck_assert_int_eq(s.n, 0);
  ck_assert_ptr_null(f.held);

  /* The header split across two feeds: the second one reports it. */
  ck_assert_int_eq(framing_feed(&f, 100, stream, 1, on_packet, &s), 0);
  ck_assert_int_eq(framing_feed(&f, 100, stream + 1, 1, on_packet, &s), -EMSGSIZE);
  ck_assert_ptr_null(f.held);
  ck_assert_uint_eq(framing_held(&f), 0);
  /* ... and with more bytes after it in the second feed. */
  ck_assert_int_eq(framing_feed(&f, 100, stream, 1, on_packet, &s), 0);
  ck_assert_int_eq(framing_feed(&f, 100, stream + 1, 3, on_packet, &s), -EMSGSIZE);
  ck_assert_ptr_null(f.held);
  ck_assert_int_eq(s.n, 0);

  /* A good packet first is delivered, then the bad size stops the feed. */
  n = put_packet(stream, 0, 6, 7);
  n = put_packet(stream, n, 4, 8);
  stream[n] = (char)0xff;
  stream[n + 1] = (char)0xff;
  ck_assert_int_eq(framing_feed(&f, 100, stream, n + 2, on_packet, &s), -EMSGSIZE);
  ck_assert_int_eq(s.n, 2);
  ck_assert_ptr_null(f.held);
  ck_assert_uint_eq(framing_held(&f), 0);
}
END_TEST

START_TEST(test_framing_callback_stop_drops_rest) {
  char stream[64];
  size_t len = three_packets(stream);
  framer f = {0};
  sink s = {.stop_at = 2};

  ck_assert_int_eq(framing_feed(&f, MAXP, stream, len, on_packet, &s), 0);
  ck_assert_int_eq(s.n, 2);
  ck_assert_uint_eq(s.nbytes, 13);
  ck_assert_ptr_null(f.held);
  ck_assert_uint_eq(framing_held(&f), 0);
}
END_TEST

START_TEST(test_framing_callback_stop_on_completed_partial) {
  char stream[64];
  size_t len = three_packets(stream);
  framer f = {0};
  sink s = {.stop_at = 1};

  /* Packet 1 arrives in two reads; it stops the decoder, so packets 2 and 3
   * from the same read are not delivered and nothing is held. */
  ck_assert_int_eq(framing_feed(&f, MAXP, stream, 5, on_packet, &s), 0);
  ck_assert_int_eq(s.n, 0);
  ck_assert_int_eq(framing_feed(&f, MAXP, stream + 5, len - 5, on_packet, &s), 0);
  ck_assert_int_eq(s.n, 1);
  ck_assert_uint_eq(s.lens[0], 9);
  ck_assert_int_eq(memcmp(s.bytes, stream, 9), 0);
  ck_assert_ptr_null(f.held);
  ck_assert_uint_eq(framing_held(&f), 0);
}
END_TEST

START_TEST(test_framing_partial_storage_freed_on_completion) {
  char stream[64];
  framer f = {0};
  sink s = {0};

  put_packet(stream, 0, 40, 9);
  ck_assert_int_eq(framing_feed(&f, MAXP, stream, 17, on_packet, &s), 0);
  ck_assert_int_eq(s.n, 0);
  ck_assert_ptr_nonnull(f.held);
  ck_assert_uint_eq(framing_held(&f), 17);
  ck_assert_int_eq(framing_feed(&f, MAXP, stream + 17, 10, on_packet, &s), 0);
  ck_assert_ptr_nonnull(f.held);
  ck_assert_uint_eq(framing_held(&f), 27);
  ck_assert_int_eq(framing_feed(&f, MAXP, stream + 27, 13, on_packet, &s), 0);
  ck_assert_int_eq(s.n, 1);
  ck_assert_int_eq(memcmp(s.bytes, stream, 40), 0);
  ck_assert_ptr_null(f.held);
  ck_assert_uint_eq(framing_held(&f), 0);
  ck_assert_ptr_null(f.held); /* nothing allocated */

  /* A held partial is dropped by framing_reset. */
  ck_assert_int_eq(framing_feed(&f, MAXP, stream, 3, on_packet, &s), 0);
  ck_assert_ptr_nonnull(f.held);
  framing_reset(&f);
  ck_assert_ptr_null(f.held);
  ck_assert_uint_eq(framing_held(&f), 0);
  ck_assert_int_eq(framing_feed(&f, MAXP, stream, 40, on_packet, &s), 0);
  ck_assert_int_eq(s.n, 2);
}
END_TEST

START_TEST(test_framing_empty_body_and_exact_max_accepted) {
  static char big[65535 + 8];
  char hdr[4] = {4, 0, 0x34, 0x12};
  framer f = {0};
  sink s = {0};

  ck_assert_int_eq(framing_feed(&f, MAXP, hdr, 4, on_packet, &s), 0);
  ck_assert_int_eq(s.n, 1);
  ck_assert_uint_eq(s.lens[0], 4);
  ck_assert_uint_eq(frame_u16(s.bytes + 2), 0x1234);

  /* Exactly max: whole, and split in the body. */
  put_packet(big, 0, 100, 3);
  ck_assert_int_eq(framing_feed(&f, 100, big, 100, on_packet, &s), 0);
  ck_assert_int_eq(s.n, 2);
  ck_assert_uint_eq(s.lens[1], 100);
  ck_assert_int_eq(framing_feed(&f, 100, big, 50, on_packet, &s), 0);
  ck_assert_int_eq(framing_feed(&f, 100, big + 50, 50, on_packet, &s), 0);
  ck_assert_int_eq(s.n, 3);
  ck_assert_uint_eq(s.lens[2], 100);
  ck_assert_int_eq(memcmp(s.bytes + 104, big, 100), 0);
  ck_assert_ptr_null(f.held);
}
END_TEST

static int count_only(void *ctx, const char *pkt, size_t len) {
  size_t *sum = ctx;
  *sum += len;
  return 0;
}

START_TEST(test_framing_largest_u16_packet) {
  static char big[65535];
  size_t sum = 0;
  framer f = {0};

  put_packet(big, 0, 65535, 1);
  ck_assert_int_eq(framing_feed(&f, 65535, big, 1, count_only, &sum), 0);
  ck_assert_int_eq(framing_feed(&f, 65535, big + 1, 60000, count_only, &sum), 0);
  ck_assert_uint_eq(sum, 0);
  ck_assert_uint_eq(framing_held(&f), 60001);
  ck_assert_int_eq(framing_feed(&f, 65535, big + 60001, 65535 - 60001, count_only, &sum), 0);
  ck_assert_uint_eq(sum, 65535);
  ck_assert_ptr_null(f.held);
}
END_TEST

int main(void) {
  Suite *s = suite_create("framing");
  TCase *tc = tcase_create("framing");

  tcase_add_test(tc, test_framing_whole_packets_from_one_buffer);
  tcase_add_test(tc, test_framing_one_byte_at_a_time);
  tcase_add_test(tc, test_framing_every_split_point);
  tcase_add_test(tc, test_framing_size_below_header_is_eproto);
  tcase_add_test(tc, test_framing_size_above_max_is_emsgsize);
  tcase_add_test(tc, test_framing_callback_stop_drops_rest);
  tcase_add_test(tc, test_framing_callback_stop_on_completed_partial);
  tcase_add_test(tc, test_framing_partial_storage_freed_on_completion);
  tcase_add_test(tc, test_framing_empty_body_and_exact_max_accepted);
  tcase_add_test(tc, test_framing_largest_u16_packet);
  suite_add_tcase(s, tc);
  return test_run(s);
}
