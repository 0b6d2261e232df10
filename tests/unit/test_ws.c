/* Unit tests for the WebSocket frame state machine (core/net/ws.c): client
 * frames in one piece and split at every byte, fragmented messages with
 * control frames between the pieces, every protocol rule with the close
 * code it maps to, UTF-8 across fragments, the message cap, and that a
 * session between frames holds no decoder. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "net/ws.h"
#include "testlib.h"

typedef struct got {
  char msgs[70000]; /* messages back to back */
  size_t nbytes;
  size_t lens[32];
  int text[32];
  int n;
  int pings, pongs;
  char ping_data[125];
  size_t ping_len;
  unsigned close_code;
  int closes;
  char close_reason[125];
  int stop_after; /* stop the feed after this many messages (0: never) */
} got;

static int on_message(void *ctx, const char *data, size_t len, int text) {
  got *g = ctx;
  ck_assert_int_lt(g->n, 32);
  ck_assert_uint_le(g->nbytes + len, sizeof(g->msgs));
  memcpy(g->msgs + g->nbytes, data, len);
  g->nbytes += len;
  g->lens[g->n] = len;
  g->text[g->n++] = text;
  return g->stop_after && g->n >= g->stop_after;
}

static int on_control(void *ctx, int op, const char *data, size_t len) {
  got *g = ctx;
  if (op == WS_OP_PING) {
    g->pings++;
    memcpy(g->ping_data, data, len);
    g->ping_len = len;
  } else {
    g->pongs++;
  }
  return 0;
}

static int on_close(void *ctx, unsigned code, const char *reason, size_t len) {
  got *g = ctx;
  g->closes++;
  g->close_code = code;
  memcpy(g->close_reason, reason, len);
  g->close_reason[len] = '\0';
  return 1;
}

/* A client frame: fin, rsv bits, opcode, masked (or not), payload. */
static size_t frame(char *out, int fin, int rsv, int op, int masked, const void *payload,
                    size_t len) {
  static const uint8_t key[4] = {0x37, 0xfa, 0x21, 0x3d};
  size_t n = 0;
  out[n++] = (char)((fin ? 0x80 : 0) | (rsv << 4) | op);
  if (len < 126) {
    out[n++] = (char)((masked ? 0x80 : 0) | len);
  } else if (len < 65536) {
    out[n++] = (char)((masked ? 0x80 : 0) | 126);
    out[n++] = (char)(len >> 8);
    out[n++] = (char)len;
  } else {
    out[n++] = (char)((masked ? 0x80 : 0) | 127);
    for (int i = 0; i < 8; i++)
      out[n++] = (char)((uint64_t)len >> (56 - 8 * i));
  }
  if (masked) {
    memcpy(out + n, key, 4);
    n += 4;
  }
  for (size_t i = 0; i < len; i++)
    out[n + i] = (char)(((const uint8_t *)payload)[i] ^ (masked ? key[i % 4] : 0));
  return n + len;
}

static ws_sink sink_for(got *g) {
  ws_sink s = {.message = on_message, .control = on_control, .close = on_close, .ctx = g};
  return s;
}

/* Feeds in pieces of `step` bytes (0: all at once); returns the first
 * non-zero result. */
static int feed(ws_conn *c, const char *data, size_t len, size_t step, size_t max, got *g,
                unsigned *code, const char **why) {
  ws_sink s = sink_for(g);
  if (!step)
    return ws_feed(c, data, len, max, &s, code, why);
  for (size_t off = 0; off < len; off += step) {
    size_t n = len - off < step ? len - off : step;
    int rc = ws_feed(c, data + off, n, max, &s, code, why);
    if (rc)
      return rc;
  }
  return 0;
}

START_TEST(test_ws_messages_whole_and_split_at_every_size) {
  static char big[20000], buf[30000];
  for (size_t i = 0; i < sizeof(big); i++)
    big[i] = (char)test_pattern(7, i);
  for (size_t step = 0; step <= 17; step++) {
    ws_conn c = {0};
    got g = {0};
    unsigned code = 0;
    const char *why = NULL;
    size_t n = frame(buf, 1, 0, WS_OP_BINARY, 1, "\x05\x00\x01\x00z", 5);
    n += frame(buf + n, 1, 0, WS_OP_TEXT, 1, "h\xc3\xa9llo", 6);
    n += frame(buf + n, 1, 0, WS_OP_BINARY, 1, big, 300);          /* 16-bit length */
    n += frame(buf + n, 1, 0, WS_OP_BINARY, 1, "", 0);            /* empty message */
    n += frame(buf + n, 1, 0, WS_OP_BINARY, 1, big, sizeof(big)); /* 16-bit, > 4 KiB */
    ck_assert_int_eq(feed(&c, buf, n, step, 65535, &g, &code, &why), 0);
    ck_assert_int_eq(g.n, 5);
    ck_assert_uint_eq(g.lens[0], 5);
    ck_assert_uint_eq(g.lens[1], 6);
    ck_assert_int_eq(g.text[1], 1);
    ck_assert_int_eq(g.text[0], 0);
    ck_assert_uint_eq(g.lens[2], 300);
    ck_assert_uint_eq(g.lens[3], 0);
    ck_assert_uint_eq(g.lens[4], sizeof(big));
    ck_assert_mem_eq(g.msgs, "\x05\x00\x01\x00zh\xc3\xa9llo", 11);
    ck_assert_mem_eq(g.msgs + 11, big, 300);
    ck_assert_mem_eq(g.msgs + 311, big, sizeof(big));
    /* Between frames nothing is held. */
    ck_assert_ptr_null(c.dec);
    ck_assert_ptr_null(c.msg);
    ck_assert_int_eq(ws_partial(&c), 0);
    ws_conn_reset(&c);
  }
}
END_TEST

START_TEST(test_ws_64bit_length) {
  static char big[70000], buf[70100];
  ws_conn c = {0};
  got g = {0};
  unsigned code = 0;
  const char *why = NULL;
  size_t n;
  memset(big, 'q', sizeof(big));
  n = frame(buf, 1, 0, WS_OP_BINARY, 1, big, 66000);
  ck_assert_int_eq(feed(&c, buf, n, 1000, 66000, &g, &code, &why), 0);
  ck_assert_int_eq(g.n, 1);
  ck_assert_uint_eq(g.lens[0], 66000);
  ws_conn_reset(&c);
}
END_TEST

START_TEST(test_ws_partial_frame_holds_then_releases) {
  char buf[64];
  ws_conn c = {0};
  got g = {0};
  unsigned code = 0;
  const char *why = NULL;
  ws_sink s = sink_for(&g);
  size_t n = frame(buf, 1, 0, WS_OP_BINARY, 1, "abcdef", 6);
  ck_assert_int_eq(ws_feed(&c, buf, 1, 100, &s, &code, &why), 0);
  ck_assert_int_eq(ws_partial(&c), 1);
  ck_assert_int_eq(ws_feed(&c, buf + 1, n - 2, 100, &s, &code, &why), 0);
  ck_assert_int_eq(ws_partial(&c), 1);
  ck_assert_int_eq(g.n, 0);
  ck_assert_int_eq(ws_feed(&c, buf + n - 1, 1, 100, &s, &code, &why), 0);
  ck_assert_int_eq(g.n, 1);
  ck_assert_int_eq(ws_partial(&c), 0);
  ck_assert_ptr_null(c.dec);
  ws_conn_reset(&c);
}
END_TEST

START_TEST(test_ws_fragments_with_control_frames_between) {
  char buf[256];
  for (size_t step = 0; step <= 5; step++) {
    ws_conn c = {0};
    got g = {0};
    unsigned code = 0;
    const char *why = NULL;
    size_t n = frame(buf, 0, 0, WS_OP_TEXT, 1, "he", 2);
    n += frame(buf + n, 1, 0, WS_OP_PING, 1, "pp", 2);
    n += frame(buf + n, 0, 0, WS_OP_CONT, 1, "\xc3", 1); /* a character split across frames */
    n += frame(buf + n, 1, 0, WS_OP_PONG, 1, "", 0);
    n += frame(buf + n, 1, 0, WS_OP_CONT, 1, "\xa9!", 2);
    ck_assert_int_eq(feed(&c, buf, n, step, 100, &g, &code, &why), 0);
    ck_assert_int_eq(g.n, 1);
    ck_assert_uint_eq(g.lens[0], 5);
    ck_assert_mem_eq(g.msgs, "he\xc3\xa9!", 5);
    ck_assert_int_eq(g.text[0], 1);
    ck_assert_int_eq(g.pings, 1);
    ck_assert_uint_eq(g.ping_len, 2);
    ck_assert_mem_eq(g.ping_data, "pp", 2);
    ck_assert_int_eq(g.pongs, 1);
    ck_assert_ptr_null(c.msg); /* freed with the message */
    ws_conn_reset(&c);
  }
}
END_TEST

/* One bad input: the result, the close code and that no message came. */
static void expect_error(const char *buf, size_t n, size_t max, int err, unsigned want_code,
                         const char *why_part) {
  for (size_t step = 0; step <= 3; step++) {
    ws_conn c = {0};
    got g = {0};
    unsigned code = 0;
    const char *why = NULL;
    ck_assert_int_eq(feed(&c, buf, n, step, max, &g, &code, &why), err);
    ck_assert_uint_eq(code, want_code);
    ck_assert_ptr_nonnull(why);
    ck_assert_msg(strstr(why, why_part), "why: %s", why);
    ck_assert_int_eq(c.closed, 1);
    ws_sink s = sink_for(&g);
    /* Nothing more is taken. */
    ck_assert_int_eq(ws_feed(&c, buf, n, max, &s, &code, &why), 0);
    ws_conn_reset(&c);
  }
}

START_TEST(test_ws_protocol_errors) {
  char buf[512], pl[200];
  size_t n;
  memset(pl, 'x', sizeof(pl));
  n = frame(buf, 1, 0, WS_OP_BINARY, 0, "abc", 3);
  expect_error(buf, n, 100, -EPROTO, 1002, "unmasked");
  n = frame(buf, 1, 4, WS_OP_BINARY, 1, "abc", 3);
  expect_error(buf, n, 100, -EPROTO, 1002, "reserved bits");
  n = frame(buf, 1, 0, 0x3, 1, "abc", 3);
  expect_error(buf, n, 100, -EPROTO, 1002, "reserved opcode");
  n = frame(buf, 1, 0, 0xb, 1, "", 0);
  expect_error(buf, n, 100, -EPROTO, 1002, "reserved opcode");
  n = frame(buf, 1, 0, WS_OP_PING, 1, pl, 126);
  expect_error(buf, n, 1000, -EPROTO, 1002, "control frame");
  n = frame(buf, 0, 0, WS_OP_PING, 1, "a", 1);
  expect_error(buf, n, 100, -EPROTO, 1002, "fragmented");
  n = frame(buf, 1, 0, WS_OP_CONT, 1, "a", 1);
  expect_error(buf, n, 100, -EPROTO, 1002, "continuation");
  n = frame(buf, 0, 0, WS_OP_BINARY, 1, "a", 1);
  n += frame(buf + n, 1, 0, WS_OP_TEXT, 1, "b", 1);
  expect_error(buf, n, 100, -EPROTO, 1002, "inside a fragmented");
  n = frame(buf, 1, 0, WS_OP_CLOSE, 1, "\x03", 1);
  expect_error(buf, n, 100, -EPROTO, 1002, "1-byte");
  n = frame(buf, 1, 0, WS_OP_CLOSE, 1, "\x03\xed", 2); /* 1005 may not be sent */
  expect_error(buf, n, 100, -EPROTO, 1002, "close code");
  n = frame(buf, 1, 0, WS_OP_CLOSE, 1, "\x03\xe8\xff", 3);
  expect_error(buf, n, 100, -EILSEQ, 1007, "close reason");
  /* A 16-bit length used for 5 bytes is not the shortest form. */
  memcpy(buf, "\x82\xfe\x00\x05\x00\x00\x00\x00hello", 13);
  expect_error(buf, 13, 100, -EPROTO, 1002, "shortest form");
}
END_TEST

START_TEST(test_ws_utf8) {
  static const char *const bad[] = {"\xff", "\xc0\x80", "\xe0\x80\x80", "\xed\xa0\x80",
                                    "\xf4\x90\x80\x80", "\xc3", "a\x80"};
  char buf[64];
  size_t n;
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    n = frame(buf, 1, 0, WS_OP_TEXT, 1, bad[i], strlen(bad[i]));
    expect_error(buf, n, 100, -EILSEQ, 1007, "UTF-8");
  }
  /* Invalid in the second fragment. */
  n = frame(buf, 0, 0, WS_OP_TEXT, 1, "ok", 2);
  n += frame(buf + n, 1, 0, WS_OP_CONT, 1, "\xfe", 1);
  expect_error(buf, n, 100, -EILSEQ, 1007, "UTF-8");
  /* Valid: 2, 3 and 4-byte characters; binary is never checked. */
  ck_assert(ws_utf8_valid("\xc2\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 plain ascii text", 27));
  ck_assert(!ws_utf8_valid("\xf0\x9f\x98", 3));
  {
    ws_conn c = {0};
    got g = {0};
    unsigned code = 0;
    const char *why = NULL;
    n = frame(buf, 1, 0, WS_OP_BINARY, 1, "\xff\xfe", 2);
    ck_assert_int_eq(feed(&c, buf, n, 0, 100, &g, &code, &why), 0);
    ck_assert_int_eq(g.n, 1);
    ws_conn_reset(&c);
  }
}
END_TEST

START_TEST(test_ws_message_cap) {
  static char pl[300], buf[700];
  size_t n;
  memset(pl, 'm', sizeof(pl));
  /* One frame over the cap; the same size in two fragments. */
  n = frame(buf, 1, 0, WS_OP_BINARY, 1, pl, 101);
  expect_error(buf, n, 100, -EMSGSIZE, 1009, "max_packet_size");
  n = frame(buf, 0, 0, WS_OP_BINARY, 1, pl, 60);
  n += frame(buf + n, 1, 0, WS_OP_CONT, 1, pl, 41);
  expect_error(buf, n, 100, -EMSGSIZE, 1009, "max_packet_size");
  /* Exactly the cap in three fragments is one message. */
  {
    ws_conn c = {0};
    got g = {0};
    unsigned code = 0;
    const char *why = NULL;
    n = frame(buf, 0, 0, WS_OP_BINARY, 1, pl, 40);
    n += frame(buf + n, 0, 0, WS_OP_CONT, 1, pl, 40);
    n += frame(buf + n, 1, 0, WS_OP_CONT, 1, pl, 20);
    ck_assert_int_eq(feed(&c, buf, n, 7, 100, &g, &code, &why), 0);
    ck_assert_int_eq(g.n, 1);
    ck_assert_uint_eq(g.lens[0], 100);
    ck_assert_uint_le(c.msg_cap, 100);
    ws_conn_reset(&c);
  }
}
END_TEST

START_TEST(test_ws_close_frames) {
  char buf[64];
  ws_conn c = {0};
  got g = {0};
  unsigned code = 0;
  const char *why = NULL;
  size_t n = frame(buf, 1, 0, WS_OP_CLOSE, 1, "\x03\xe8" "bye", 5);
  n += frame(buf + n, 1, 0, WS_OP_BINARY, 1, "after", 5); /* ignored */
  ck_assert_int_eq(feed(&c, buf, n, 0, 100, &g, &code, &why), 1);
  ck_assert_int_eq(g.closes, 1);
  ck_assert_uint_eq(g.close_code, 1000);
  ck_assert_str_eq(g.close_reason, "bye");
  ck_assert_int_eq(g.n, 0);
  ck_assert_int_eq(c.closed, 1);
  ws_conn_reset(&c);

  memset(&g, 0, sizeof(g));
  n = frame(buf, 1, 0, WS_OP_CLOSE, 1, "", 0);
  ck_assert_int_eq(feed(&c, buf, n, 0, 100, &g, &code, &why), 1);
  ck_assert_uint_eq(g.close_code, 0);
  ws_conn_reset(&c);
}
END_TEST

START_TEST(test_ws_stop_from_callback) {
  char buf[64];
  ws_conn c = {0};
  got g = {.stop_after = 1};
  unsigned code = 0;
  const char *why = NULL;
  size_t n = frame(buf, 1, 0, WS_OP_BINARY, 1, "one", 3);
  n += frame(buf + n, 1, 0, WS_OP_BINARY, 1, "two", 3);
  ck_assert_int_eq(feed(&c, buf, n, 0, 100, &g, &code, &why), 1);
  ck_assert_int_eq(g.n, 1);
  ws_conn_reset(&c);
  ck_assert_ptr_null(c.dec);
}
END_TEST

START_TEST(test_ws_encoders) {
  char h[WS_HEADER_MAX], pl[125];
  ck_assert_uint_eq(ws_frame_header(h, WS_OP_BINARY, 5), 2);
  ck_assert_mem_eq(h, "\x82\x05", 2);
  ck_assert_uint_eq(ws_frame_header(h, WS_OP_BINARY, 126), 4);
  ck_assert_mem_eq(h, "\x82\x7e\x00\x7e", 4);
  ck_assert_uint_eq(ws_frame_header(h, WS_OP_BINARY, 65535), 4);
  ck_assert_mem_eq(h, "\x82\x7e\xff\xff", 4);
  ck_assert_uint_eq(ws_frame_header(h, WS_OP_PONG, 65536), 10);
  ck_assert_mem_eq(h, "\x8a\x7f\x00\x00\x00\x00\x00\x01\x00\x00", 10);
  ck_assert_uint_eq(ws_close_payload(pl, 1009, "too big"), 9);
  ck_assert_mem_eq(pl, "\x03\xf1too big", 9);
  {
    /* A long reason is cut at a character boundary within 125 bytes. */
    char reason[200];
    for (int i = 0; i < 198; i += 2)
      memcpy(reason + i, "\xc3\xa9", 2);
    reason[198] = '\0';
    size_t n = ws_close_payload(pl, 1000, reason);
    ck_assert_uint_le(n, 125);
    ck_assert(ws_utf8_valid(pl + 2, n - 2));
  }
}
END_TEST

int main(void) {
  Suite *s = suite_create("ws");
  TCase *tc = tcase_create("ws");
  tcase_add_test(tc, test_ws_messages_whole_and_split_at_every_size);
  tcase_add_test(tc, test_ws_64bit_length);
  tcase_add_test(tc, test_ws_partial_frame_holds_then_releases);
  tcase_add_test(tc, test_ws_fragments_with_control_frames_between);
  tcase_add_test(tc, test_ws_protocol_errors);
  tcase_add_test(tc, test_ws_utf8);
  tcase_add_test(tc, test_ws_message_cap);
  tcase_add_test(tc, test_ws_close_frames);
  tcase_add_test(tc, test_ws_stop_from_callback);
  tcase_add_test(tc, test_ws_encoders);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  ws_pool_trim();
  return failed ? 1 : 0;
}
