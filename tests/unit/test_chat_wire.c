/* Unit tests for the chat plugin's bus protocol (plugins/chat/wire.c) and
 * the hand-over blob's remote members (plugins/chat/rooms.c): round trips,
 * snapshot chunking, and malformed payloads and blobs refused with their
 * reason. Every payload is decoded from a heap copy of exactly its length,
 * so an overread shows under ASan. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "rooms.h"
#include "testlib.h"
#include "wire.h"

/* Decodes a heap copy of data[0..len) of exactly len bytes. The copy (which
 * *m points into) lives until the next call. */
static void *g_copy;

static int decode_copy(const void *data, size_t len, wire_msg *m, const char **why) {
  int rc;
  free(g_copy);
  g_copy = malloc(len ? len : 1);
  ck_assert_ptr_nonnull(g_copy);
  if (len)
    memcpy(g_copy, data, len);
  *why = NULL;
  rc = wire_decode(g_copy, len, m, why);
  if (rc < 0)
    ck_assert_ptr_nonnull(*why);
  return rc;
}

START_TEST(test_chat_wire_member_round_trip) {
  uint8_t buf[WIRE_MSG_MAX];
  wire_msg m;
  const char *why;
  size_t len = wire_encode_member(buf, WIRE_JOIN, "eu-1", 4, 0x0100000100000001ull, "red", 3);
  const uint8_t expect[] = {1, 1, 4, 'e', 'u', '-', '1', 1, 0, 0, 0, 1, 0, 0, 1, 3, 'r', 'e', 'd'};

  ck_assert_uint_eq(len, sizeof(expect));
  ck_assert_mem_eq(buf, expect, sizeof(expect));
  ck_assert_int_eq(decode_copy(buf, len, &m, &why), 0);
  ck_assert_int_eq(m.type, WIRE_JOIN);
  ck_assert_uint_eq(m.node_len, 4);
  ck_assert_uint_eq(m.sid, 0x0100000100000001ull);
  ck_assert_uint_eq(m.room_len, 3);

  len = wire_encode_member(buf, WIRE_LEAVE, "n", 1, 7, "\xc3\xa9t\xc3\xa9", 6);
  ck_assert_int_eq(wire_decode(buf, len, &m, &why), 0);
  ck_assert_int_eq(m.type, WIRE_LEAVE);
  ck_assert_uint_eq(m.sid, 7);
  ck_assert_uint_eq(m.room_len, 6);
  ck_assert_int_eq(memcmp(m.room, "\xc3\xa9t\xc3\xa9", 6), 0);
}
END_TEST

START_TEST(test_chat_wire_chat_round_trip_at_limits) {
  uint8_t buf[WIRE_MSG_MAX];
  char node[WIRE_NODE_MAX], room[WIRE_ROOM_MAX], text[WIRE_TEXT_MAX];
  wire_msg m;
  const char *why;
  size_t len;

  memset(node, 'Z', sizeof(node));
  memset(room, 'r', sizeof(room));
  memset(text, 'x', sizeof(text));
  len = wire_encode_chat(buf, node, sizeof(node), UINT64_MAX, room, sizeof(room), text,
                         sizeof(text));
  ck_assert_uint_le(len, WIRE_MSG_MAX);
  ck_assert_int_eq(decode_copy(buf, len, &m, &why), 0);
  ck_assert_int_eq(m.type, WIRE_CHAT);
  ck_assert_uint_eq(m.node_len, WIRE_NODE_MAX);
  ck_assert_uint_eq(m.sid, UINT64_MAX);
  ck_assert_uint_eq(m.room_len, WIRE_ROOM_MAX);
  ck_assert_uint_eq(m.text_len, WIRE_TEXT_MAX);
  ck_assert_int_eq(memcmp(m.text, text, sizeof(text)), 0);
}
END_TEST

START_TEST(test_chat_wire_subject_is_hex) {
  char s[WIRE_SUBJECT_MAX];
  char room[WIRE_ROOM_MAX];
  wire_subject(s, "red", 3);
  ck_assert_str_eq(s, "room.726564");
  wire_subject(s, "a.b *>", 6);
  ck_assert_str_eq(s, "room.612e62202a3e");
  memset(room, 0xff, sizeof(room));
  wire_subject(s, room, sizeof(room));
  ck_assert_uint_eq(strlen(s), WIRE_SUBJECT_MAX - 1);
}
END_TEST

/* Members in chunks: none passes WIRE_SNAP_CHUNK_BYTES, each decodes, and
 * reading them back gives every member once, in order. */
START_TEST(test_chat_wire_snapshot_chunks) {
  enum { N = 5000 };
  uint8_t *buf = malloc(WIRE_SNAP_CHUNK_BYTES);
  wire_snap s;
  wire_msg m;
  const char *why;
  uint32_t chunk = 0;
  uint64_t next_sid = 1, read_sid = 1;
  char room[WIRE_ROOM_MAX];

  memset(room, 'q', sizeof(room));
  ck_assert_ptr_nonnull(buf);
  for (;;) {
    size_t len, pos = 0, rl;
    uint64_t sid;
    const char *r;
    bool last;
    wire_snap_begin(&s, buf, "eu-2", 4, 77, chunk);
    while (next_sid <= N && wire_snap_add(&s, next_sid, room, sizeof(room)) == 0)
      next_sid++;
    last = next_sid > N;
    len = wire_snap_end(&s, last ? WIRE_SNAP_LAST | WIRE_SNAP_ANSWER : 0);
    ck_assert_uint_le(len, WIRE_SNAP_CHUNK_BYTES);
    ck_assert_int_eq(decode_copy(buf, len, &m, &why), 0);
    ck_assert_int_eq(m.type, WIRE_SNAPSHOT);
    ck_assert_uint_eq(m.snap_id, 77);
    ck_assert_uint_eq(m.chunk, chunk);
    ck_assert_uint_eq(m.flags, last ? WIRE_SNAP_LAST | WIRE_SNAP_ANSWER : 0);
    while (wire_snap_next(&m, &pos, &sid, &r, &rl)) {
      ck_assert_uint_eq(sid, read_sid++);
      ck_assert_uint_eq(rl, sizeof(room));
    }
    chunk++;
    if (last)
      break;
  }
  ck_assert_uint_eq(read_sid, N + 1);
  ck_assert_uint_gt(chunk, 2);

  /* An empty snapshot is one valid chunk. */
  wire_snap_begin(&s, buf, "eu-2", 4, 78, 0);
  ck_assert_int_eq(decode_copy(buf, wire_snap_end(&s, WIRE_SNAP_LAST), &m, &why), 0);
  ck_assert_uint_eq(m.count, 0);
  free(buf);
}
END_TEST

/* Every prefix of a valid payload is refused, as is the payload with a byte
 * more. */
static void check_prefixes(const uint8_t *buf, size_t len) {
  wire_msg m;
  const char *why;
  uint8_t *more = malloc(len + 1);
  for (size_t k = 0; k < len; k++)
    ck_assert_msg(decode_copy(buf, k, &m, &why) == -EINVAL, "prefix of %zu of %zu bytes", k,
                  len);
  ck_assert_int_eq(decode_copy(buf, len, &m, &why), 0);
  ck_assert_ptr_nonnull(more);
  memcpy(more, buf, len);
  more[len] = 0;
  ck_assert_int_eq(decode_copy(more, len + 1, &m, &why), -EINVAL);
  ck_assert_str_eq(why, "trailing bytes");
  free(more);
}

START_TEST(test_chat_wire_truncated_at_every_byte) {
  uint8_t buf[WIRE_SNAP_CHUNK_BYTES];
  wire_snap s;
  check_prefixes(buf, wire_encode_member(buf, WIRE_JOIN, "eu-1", 4, 42, "red", 3));
  check_prefixes(buf, wire_encode_member(buf, WIRE_LEAVE, "eu-1", 4, 42, "red", 3));
  check_prefixes(buf, wire_encode_chat(buf, "eu-1", 4, 42, "red", 3, "hello", 5));
  wire_snap_begin(&s, buf, "eu-1", 4, 1, 0);
  ck_assert_int_eq(wire_snap_add(&s, 5, "red", 3), 0);
  ck_assert_int_eq(wire_snap_add(&s, 6, "blue", 4), 0);
  check_prefixes(buf, wire_snap_end(&s, WIRE_SNAP_LAST));
}
END_TEST

/* Hand-made payloads, each refused for its reason. */
typedef struct bad_case {
  const char *name;
  const char *bytes;
  size_t len;
  const char *why;
} bad_case;

#define B(s) s, sizeof(s) - 1
/* header: version 1, type, node "n" */
#define JOIN_N "\x01\x01\x01n"
#define CHAT_N "\x01\x03\x01n"
#define SNAP_N "\x01\x04\x01n"
#define SID1 "\x01\x00\x00\x00\x00\x00\x00\x00"

static const bad_case bad_cases[] = {
    {"empty", B(""), "shorter than its header"},
    {"version 0", B("\x00\x01\x01n" SID1 "\x01r"), "unsupported version"},
    {"version 2", B("\x02\x01\x01n" SID1 "\x01r"), "unsupported version"},
    {"type 0", B("\x01\x00\x01n" SID1 "\x01r"), "unknown message type"},
    {"type 5", B("\x01\x05\x01n" SID1 "\x01r"), "unknown message type"},
    {"node length 0", B("\x01\x01\x00" SID1 "\x01r"), "node name not 1..32 of [A-Za-z0-9_-]"},
    {"node length 33", B("\x01\x01\x21nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn" SID1 "\x01r"),
     "node name not 1..32 of [A-Za-z0-9_-]"},
    {"node length past the end", B("\x01\x01\xffnn"), "truncated node name"},
    {"node with a dot", B("\x01\x01\x03" "a.b" SID1 "\x01r"),
     "node name not 1..32 of [A-Za-z0-9_-]"},
    {"node with a space", B("\x01\x01\x03" "a b" SID1 "\x01r"),
     "node name not 1..32 of [A-Za-z0-9_-]"},
    {"node with NUL", B("\x01\x01\x03" "a\0b" SID1 "\x01r"),
     "node name not 1..32 of [A-Za-z0-9_-]"},
    {"node not ascii", B("\x01\x01\x02\xc3\xa9" SID1 "\x01r"),
     "node name not 1..32 of [A-Za-z0-9_-]"},
    {"sid 0", B(JOIN_N "\x00\x00\x00\x00\x00\x00\x00\x00\x01r"), "sid 0"},
    {"room length 0", B(JOIN_N SID1 "\x00"), "room name not 1..32 bytes"},
    {"room length 33", B(JOIN_N SID1 "\x21rrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrr"),
     "room name not 1..32 bytes"},
    {"room length past the end", B(JOIN_N SID1 "\x05red"), "truncated room name"},
    {"room bad utf-8", B(JOIN_N SID1 "\x02\xc3\x28"), "room name not valid utf-8"},
    {"room overlong", B(JOIN_N SID1 "\x02\xc0\xaf"), "room name not valid utf-8"},
    {"room surrogate", B(JOIN_N SID1 "\x03\xed\xa0\x80"), "room name not valid utf-8"},
    {"room above U+10FFFF", B(JOIN_N SID1 "\x04\xf4\x90\x80\x80"), "room name not valid utf-8"},
    {"join trailing", B(JOIN_N SID1 "\x01r!"), "trailing bytes"},
    {"chat text length 0", B(CHAT_N SID1 "\x01r\x00\x00"), "text not 1..512 bytes"},
    {"chat text length 513", B(CHAT_N SID1 "\x01r\x01\x02"), "text not 1..512 bytes"},
    {"chat text length 65535", B(CHAT_N SID1 "\x01r\xff\xff"), "text not 1..512 bytes"},
    {"chat text past the end", B(CHAT_N SID1 "\x01r\x03\x00hi"), "truncated text"},
    {"chat text bad utf-8", B(CHAT_N SID1 "\x01r\x02\x00\xff\xfe"), "text not valid utf-8"},
    {"chat text cut utf-8", B(CHAT_N SID1 "\x01r\x02\x00h\xe2"), "text not valid utf-8"},
    {"chat trailing", B(CHAT_N SID1 "\x01r\x02\x00hi\x00"), "trailing bytes"},
    {"chat no text length", B(CHAT_N SID1 "\x01r\x02"), "truncated text length"},
    {"snapshot header cut", B(SNAP_N "\x01\x00\x00\x00\x00\x00\x00\x00\x01"),
     "truncated snapshot header"},
    {"snapshot unknown flag", B(SNAP_N "\x01\x00\x00\x00\x00\x00\x00\x00\x04\x00\x00\x00\x00"),
     "unknown snapshot flags"},
    {"snapshot huge count",
     B(SNAP_N "\x01\x00\x00\x00\x00\x00\x00\x00\x01\xff\xff\xff\xff" SID1 "\x01r"),
     "snapshot entry count too large"},
    {"snapshot count over the bytes",
     B(SNAP_N "\x01\x00\x00\x00\x00\x00\x00\x00\x01\x02\x00\x00\x00" SID1 "\x01r"),
     "snapshot entry count too large"},
    {"snapshot count over the max",
     B(SNAP_N "\x01\x00\x00\x00\x00\x00\x00\x00\x01\x01\x20\x00\x00" SID1 "\x01r"),
     "snapshot entry count too large"},
    {"snapshot entry sid 0",
     B(SNAP_N "\x01\x00\x00\x00\x00\x00\x00\x00\x01\x01\x00\x00\x00"
              "\x00\x00\x00\x00\x00\x00\x00\x00\x01r"),
     "sid 0"},
    {"snapshot entry bad room",
     B(SNAP_N "\x01\x00\x00\x00\x00\x00\x00\x00\x01\x01\x00\x00\x00" SID1 "\x01\x80"),
     "room name not valid utf-8"},
    {"snapshot entry room too long",
     B(SNAP_N "\x01\x00\x00\x00\x00\x00\x00\x00\x01\x01\x00\x00\x00" SID1
              "\x28rrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrr"),
     "room name not 1..32 bytes"},
    {"snapshot trailing",
     B(SNAP_N "\x01\x00\x00\x00\x00\x00\x00\x00\x01\x01\x00\x00\x00" SID1 "\x01r\x00"),
     "trailing bytes"},
    {"snapshot count 0 with an entry",
     B(SNAP_N "\x01\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x00" SID1 "\x01r"),
     "trailing bytes"},
};

START_TEST(test_chat_wire_malformed_refused) {
  const bad_case *c = &bad_cases[_i];
  wire_msg m;
  const char *why;
  ck_assert_msg(decode_copy(c->bytes, c->len, &m, &why) == -EINVAL, "%s: accepted", c->name);
  ck_assert_msg(strcmp(why, c->why) == 0, "%s: \"%s\", not \"%s\"", c->name, why, c->why);
}
END_TEST

START_TEST(test_chat_wire_null_refused) {
  wire_msg m;
  const char *why = NULL;
  ck_assert_int_eq(wire_decode(NULL, 10, &m, &why), -EINVAL);
  ck_assert_str_eq(why, "no data");
}
END_TEST

/* Random changes to valid payloads: the decoder says yes or no, never reads
 * outside, and what it accepts reads back within its bounds. */
START_TEST(test_chat_wire_mutations_never_crash) {
  uint8_t base[3][WIRE_MSG_MAX], buf[WIRE_MSG_MAX + 8];
  size_t blen[3];
  wire_snap s;
  uint64_t x = 0x9e3779b97f4a7c15ull;

  blen[0] = wire_encode_member(base[0], WIRE_JOIN, "eu-1", 4, 42, "red", 3);
  blen[1] = wire_encode_chat(base[1], "eu-1", 4, 42, "red", 3, "h\xc3\xa9llo", 6);
  wire_snap_begin(&s, base[2], "eu-1", 4, 1, 0);
  (void)wire_snap_add(&s, 5, "red", 3);
  (void)wire_snap_add(&s, 6, "blue", 4);
  blen[2] = wire_snap_end(&s, WIRE_SNAP_LAST);
  for (int round = 0; round < 20000; round++) {
    int which = round % 3, nflip;
    size_t len = blen[which];
    wire_msg m;
    const char *why;
    memcpy(buf, base[which], len);
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    nflip = 1 + (int)(x % 3);
    for (int f = 0; f < nflip; f++) {
      x ^= x << 13, x ^= x >> 7, x ^= x << 17;
      buf[x % len] = (uint8_t)(x >> 32);
    }
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    if (x % 4 == 0)
      len = (size_t)(x >> 40) % (len + 8);
    uint8_t *copy = malloc(len ? len : 1);
    ck_assert_ptr_nonnull(copy);
    memcpy(copy, buf, len);
    if (wire_decode(copy, len, &m, &why) == 0 && m.type == WIRE_SNAPSHOT) {
      size_t pos = 0, rl, n = 0;
      uint64_t sid;
      const char *r;
      while (wire_snap_next(&m, &pos, &sid, &r, &rl)) {
        ck_assert_uint_ne(sid, 0);
        ck_assert(rl >= 1 && rl <= WIRE_ROOM_MAX);
        n++;
      }
      ck_assert_uint_eq(n, m.count);
    }
    free(copy);
  }
}
END_TEST

/* ---- the hand-over blob ---- */

/* A v1 blob as chat 1.0.0 writes it: room "red" with sids 5 and 6. */
static const uint8_t blob_v1[] = {'P', 'C', 'H', 'T', 1, 0, 0, 0, 1, 0, 0, 0, 3, 'r', 'e', 'd',
                                  2, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 6, 0, 0, 0, 0, 0, 0, 0};

START_TEST(test_chat_wire_blob_v1_accepted_and_written) {
  chat_rooms r;
  const char *why;
  void *out;
  size_t len;
  chat_rooms_init(&r);
  ck_assert_int_eq(chat_rooms_load(&r, blob_v1, sizeof(blob_v1), &why), 0);
  ck_assert_uint_eq(r.nrooms, 1);
  ck_assert_uint_eq(r.n, 2);
  ck_assert_uint_eq(r.nremote, 0);
  ck_assert_ptr_nonnull(chat_room_find(&r, "red", 3));
  ck_assert_uint_eq(chat_member_find(&r, 5)->flags, CHAT_MEMBER_RESTORED);
  /* Without remote members the blob is version 1, byte for byte. */
  ck_assert_int_eq(chat_rooms_save(&r, &out, &len), 0);
  ck_assert_uint_eq(len, sizeof(blob_v1));
  ck_assert_mem_eq(out, blob_v1, len);
  free(out);
  chat_rooms_free(&r);
}
END_TEST

/* Local and remote members, a room with remote members only, then save and
 * load: everything comes back. */
START_TEST(test_chat_wire_blob_v2_round_trip) {
  chat_rooms r, back;
  chat_room *red, *blue;
  const char *why;
  void *out;
  size_t len;
  int n1, n2;

  chat_rooms_init(&r);
  red = chat_room_create(&r, "red", 3);
  ck_assert_int_eq(chat_room_add(red, 5), 0);
  chat_member_get(&r, 5)->room = red;
  blue = chat_room_create(&r, "blue", 4);
  n1 = chat_node_get(&r, "eu-2", 4, true);
  n2 = chat_node_get(&r, "us_1", 4, true);
  ck_assert_int_ge(n1, 0);
  ck_assert_int_ge(n2, 0);
  ck_assert_int_eq(chat_node_get(&r, "eu-2", 4, false), n1);
  ck_assert_int_eq(chat_remote_add(&r, (uint32_t)n1, 5, red), 0); /* same sid, other node */
  ck_assert_int_eq(chat_remote_add(&r, (uint32_t)n1, 9, blue), 0);
  ck_assert_int_eq(chat_remote_add(&r, (uint32_t)n2, 9, blue), 0);
  ck_assert_uint_eq(red->nremote, 1);
  ck_assert_uint_eq(blue->nremote, 2);
  ck_assert_int_eq(chat_rooms_save(&r, &out, &len), 0);
  ck_assert_uint_eq(((uint8_t *)out)[4], 2);

  chat_rooms_init(&back);
  ck_assert_int_eq(chat_rooms_load(&back, out, len, &why), 0);
  ck_assert_uint_eq(back.nrooms, 2);
  ck_assert_uint_eq(back.n, 1);
  ck_assert_uint_eq(back.nremote, 3);
  n1 = chat_node_get(&back, "eu-2", 4, false);
  n2 = chat_node_get(&back, "us_1", 4, false);
  ck_assert_int_ge(n1, 0);
  ck_assert_int_ge(n2, 0);
  ck_assert_str_eq(chat_remote_find(&back, (uint32_t)n1, 5)->room->name, "red");
  ck_assert_uint_eq(chat_room_find(&back, "blue", 4)->n, 0);
  ck_assert_uint_eq(chat_room_find(&back, "blue", 4)->nremote, 2);
  ck_assert_ptr_null(chat_remote_find(&back, (uint32_t)n2, 5));

  /* Every cut and a byte more are refused, and leave nothing behind. */
  for (size_t k = 0; k < len; k++) {
    chat_rooms t;
    uint8_t *cut = malloc(k ? k : 1);
    memcpy(cut, out, k);
    chat_rooms_init(&t);
    ck_assert_msg(chat_rooms_load(&t, cut, k, &why) == -EINVAL, "cut at %zu", k);
    ck_assert_uint_eq(t.nrooms + t.n + t.nremote, 0);
    free(cut);
  }
  chat_rooms_free(&back);
  free(out);
  chat_rooms_free(&r);
}
END_TEST

/* A v2 blob: "PCHT" 2, no local rooms, then the nodes part. */
static size_t blob_v2(uint8_t *buf, const uint8_t *nodes, size_t len) {
  static const uint8_t head[] = {'P', 'C', 'H', 'T', 2, 0, 0, 0, 0, 0, 0, 0};
  memcpy(buf, head, sizeof(head));
  memcpy(buf + sizeof(head), nodes, len);
  return sizeof(head) + len;
}

#define NODES(s) (const uint8_t *)s, sizeof(s) - 1

START_TEST(test_chat_wire_blob_v2_malformed) {
  static const struct {
    const uint8_t *nodes;
    size_t len;
    const char *why;
  } cases[] = {
      {NODES(""), "truncated node count"},
      {NODES("\x01\x00\x00"), "truncated node count"},
      {NODES("\x01\x04\x00\x00"), "too many nodes"},
      {NODES("\x01\x00\x00\x00\x03" "a.b\x01\x00\x00\x00" SID1 "\x01r"), "bad node name"},
      {NODES("\x01\x00\x00\x00\x00\x01\x00\x00\x00" SID1 "\x01r"), "bad node name"},
      {NODES("\x01\x00\x00\x00\x01n\x00\x00\x00\x00"), "bad remote member count"},
      {NODES("\x01\x00\x00\x00\x01n\xff\xff\xff\xff" SID1 "\x01r"), "bad remote member count"},
      {NODES("\x01\x00\x00\x00\x01n\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01r"),
       "zero or repeated remote member sid"},
      {NODES("\x01\x00\x00\x00\x01n\x02\x00\x00\x00" SID1 "\x01r" SID1 "\x01s"),
       "zero or repeated remote member sid"},
      {NODES("\x01\x00\x00\x00\x01n\x01\x00\x00\x00" SID1 "\x02\xc3\x28"),
       "bad remote member room name"},
      {NODES("\x01\x00\x00\x00\x01n\x01\x00\x00\x00" SID1 "\x00"),
       "bad remote member count"},
      {NODES("\x02\x00\x00\x00\x01n\x01\x00\x00\x00" SID1 "\x01r\x01n\x01\x00\x00\x00" SID1
             "\x01r"),
       "repeated node"},
      {NODES("\x01\x00\x00\x00\x01n\x01\x00\x00\x00" SID1 "\x01r!"), "trailing bytes"},
  };
  uint8_t buf[256];
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    chat_rooms r;
    const char *why;
    size_t len = blob_v2(buf, cases[i].nodes, cases[i].len);
    chat_rooms_init(&r);
    ck_assert_msg(chat_rooms_load(&r, buf, len, &why) == -EINVAL, "case %zu accepted", i);
    ck_assert_msg(strcmp(why, cases[i].why) == 0, "case %zu: \"%s\", not \"%s\"", i, why,
                  cases[i].why);
    ck_assert_uint_eq(r.nrooms + r.n + r.nremote, 0);
  }
  /* And the good one those were made from. */
  {
    chat_rooms r;
    const char *why;
    size_t len = blob_v2(buf, NODES("\x01\x00\x00\x00\x01n\x01\x00\x00\x00" SID1 "\x01r"));
    chat_rooms_init(&r);
    ck_assert_int_eq(chat_rooms_load(&r, buf, len, &why), 0);
    ck_assert_uint_eq(r.nremote, 1);
    chat_rooms_free(&r);
  }
}
END_TEST

/* Many remote members added and removed in a mixed order: the index, the
 * per-node lists and the counts stay right; an empty node's slot frees. */
START_TEST(test_chat_wire_remote_members_index) {
  enum { N = 20000 };
  chat_rooms r = {0}; /* zeroed, as the plugin's static registry starts */
  chat_room *room;
  int a, b;
  size_t left = 0;

  room = chat_room_create(&r, "x", 1);
  a = chat_node_get(&r, "a", 1, true);
  b = chat_node_get(&r, "b", 1, true);
  for (pier_sid sid = 1; sid <= N; sid++) {
    ck_assert_int_eq(chat_remote_add(&r, (uint32_t)a, sid, room), 0);
    ck_assert_int_eq(chat_remote_add(&r, (uint32_t)b, sid, room), 0);
  }
  ck_assert_uint_eq(r.nremote, 2 * N);
  for (pier_sid sid = 1; sid <= N; sid += 3)
    chat_remote_remove(&r, chat_remote_find(&r, (uint32_t)a, sid));
  for (pier_sid sid = 1; sid <= N; sid++) {
    bool gone = (sid - 1) % 3 == 0;
    ck_assert((chat_remote_find(&r, (uint32_t)a, sid) == NULL) == gone);
    ck_assert_ptr_nonnull(chat_remote_find(&r, (uint32_t)b, sid));
  }
  for (uint32_t k = r.nodes[a].head; k != CHAT_NONE; k = r.slab[k].next)
    left++;
  ck_assert_uint_eq(left, r.nodes[a].n);
  ck_assert_uint_eq(room->nremote, r.nremote);
  /* Empty node b: its slot frees, and the name is unknown again. */
  while (r.nodes[b].head != CHAT_NONE)
    chat_remote_remove(&r, &r.slab[r.nodes[b].head]);
  chat_node_release(&r, (uint32_t)b);
  ck_assert_int_eq(chat_node_get(&r, "b", 1, false), -ENOENT);
  ck_assert_int_eq(chat_node_get(&r, "a", 1, false), a);
  chat_rooms_free(&r);
}
END_TEST

START_TEST(test_chat_wire_node_table_bounded) {
  chat_rooms r;
  char name[8];
  chat_rooms_init(&r);
  for (int i = 0; i < CHAT_NODES_MAX; i++) {
    int n = snprintf(name, sizeof(name), "n%d", i);
    ck_assert_int_eq(chat_node_get(&r, name, (size_t)n, true), i);
  }
  ck_assert_int_eq(chat_node_get(&r, "late", 4, true), -ENOSPC);
  chat_rooms_free(&r);
}
END_TEST

int main(void) {
  Suite *s = suite_create("chat_wire");
  TCase *tc = tcase_create("chat_wire");

  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, test_chat_wire_member_round_trip);
  tcase_add_test(tc, test_chat_wire_chat_round_trip_at_limits);
  tcase_add_test(tc, test_chat_wire_subject_is_hex);
  tcase_add_test(tc, test_chat_wire_snapshot_chunks);
  tcase_add_test(tc, test_chat_wire_truncated_at_every_byte);
  tcase_add_loop_test(tc, test_chat_wire_malformed_refused, 0,
                      (int)(sizeof(bad_cases) / sizeof(bad_cases[0])));
  tcase_add_test(tc, test_chat_wire_null_refused);
  tcase_add_test(tc, test_chat_wire_mutations_never_crash);
  tcase_add_test(tc, test_chat_wire_blob_v1_accepted_and_written);
  tcase_add_test(tc, test_chat_wire_blob_v2_round_trip);
  tcase_add_test(tc, test_chat_wire_blob_v2_malformed);
  tcase_add_test(tc, test_chat_wire_remote_members_index);
  tcase_add_test(tc, test_chat_wire_node_table_bounded);
  suite_add_tcase(s, tc);
  return test_run(s);
}
