/* Fuzz target for the WebSocket session state machine (core/net/ws.c).
 *
 * Input: byte 0 picks max_msg (4..65535), byte 1 how the stream is cut
 * into reads (low 2 bits: at most 1, 7, 300 bytes or all per read; the rest
 * seeds the cuts). The remaining bytes are what a client sent after the
 * handshake.
 *
 * The stream is fed twice, once whole and once in pieces (each copied into
 * a buffer of exactly its size, so a read past it is caught by ASan), and
 * both runs must see the same events (messages, pings, pongs, close) in the
 * same order and end the same way (result and close code): how TCP cuts the
 * bytes never changes what the plugin sees. Every message fits max_msg;
 * every text message is valid UTF-8; a control payload is at most 125 bytes;
 * a close code is one a client may send; after an error or a close nothing
 * more is delivered; between frames no decoder is held. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "net/ws.h"

#define MAX_EVENTS 512

typedef struct run {
  uint64_t ev[MAX_EVENTS]; /* kind, length and a hash of each event */
  size_t nev;
  size_t max;
  int done; /* an error or a close came: no more events */
} run;

static uint64_t event(int kind, const char *data, size_t len) {
  return fuzz_hash((const uint8_t *)data, len) ^ ((uint64_t)kind << 56) ^ ((uint64_t)len << 32);
}

static void record(run *r, uint64_t e) {
  FUZZ_CHECK(!r->done, "an event after the connection ended");
  if (r->nev < MAX_EVENTS)
    r->ev[r->nev] = e;
  r->nev++;
}

static int on_message(void *ctx, const char *data, size_t len, int text) {
  run *r = ctx;
  FUZZ_CHECK(len <= r->max, "message of %zu bytes, max %zu", len, r->max);
  if (text)
    FUZZ_CHECK(ws_utf8_valid(data, len), "text message of %zu bytes is not UTF-8", len);
  record(r, event(text ? 1 : 2, data, len));
  return 0;
}

static int on_control(void *ctx, int op, const char *data, size_t len) {
  run *r = ctx;
  FUZZ_CHECK(op == WS_OP_PING || op == WS_OP_PONG, "control opcode %d", op);
  FUZZ_CHECK(len <= 125, "control payload of %zu bytes", len);
  record(r, event(op, data, len));
  return 0;
}

static int on_close(void *ctx, unsigned code, const char *reason, size_t len) {
  run *r = ctx;
  FUZZ_CHECK(code == 0 || (code >= 1000 && code <= 4999), "close code %u", code);
  FUZZ_CHECK(ws_utf8_valid(reason, len), "close reason is not UTF-8");
  record(r, event(8, reason, len) ^ code);
  r->done = 1;
  return 1;
}

/* Feeds stream[0..len) in reads cut by mode; returns the first non-zero
 * result and its code. */
static int feed(run *r, const uint8_t *stream, size_t len, unsigned mode, uint64_t seed,
                unsigned *code) {
  static const size_t most[4] = {1, 7, 300, (size_t)-1};
  ws_sink sink = {.message = on_message, .control = on_control, .close = on_close, .ctx = r};
  ws_conn c = {0};
  const char *why = NULL;
  size_t off = 0;
  int rc = 0;

  *code = 0;
  while (off < len) {
    size_t n = len - off;
    if (most[mode] != (size_t)-1) {
      size_t cap = 1 + fuzz_rand(&seed) % most[mode];
      n = n < cap ? n : cap;
    }
    char *piece = malloc(n);
    FUZZ_CHECK(piece, "out of memory");
    memcpy(piece, stream + off, n);
    rc = ws_feed(&c, piece, n, r->max, &sink, code, &why);
    free(piece);
    off += n;
    if (rc < 0) {
      FUZZ_CHECK(*code == 1002 || *code == 1007 || *code == 1009 || *code == 1011,
                 "error %d with close code %u", rc, *code);
      FUZZ_CHECK(why && *why, "error %d without a reason", rc);
      FUZZ_CHECK(c.closed && c.dec == NULL, "error leaves a decoder");
      r->done = 1;
      /* Nothing more is taken. */
      FUZZ_CHECK(ws_feed(&c, (const char *)stream, len, r->max, &sink, code, &why) == 0,
                 "input taken after an error");
      break;
    }
    if (rc == 1)
      break;
    if (!ws_partial(&c))
      FUZZ_CHECK(c.dec == NULL && c.msg == NULL, "nothing partial, yet storage is held");
  }
  ws_conn_reset(&c);
  return rc;
}

int FUZZ_ENTRY(const uint8_t *data, size_t size) {
  static run whole, cut;
  unsigned code_whole, code_cut;
  int rc_whole, rc_cut;
  size_t max;

  if (size < 2)
    return 0;
  max = 4 + (size_t)data[0] * 257 % 65532;
  memset(&whole, 0, sizeof(whole));
  memset(&cut, 0, sizeof(cut));
  whole.max = cut.max = max;
  rc_whole = feed(&whole, data + 2, size - 2, 3, 0, &code_whole);
  rc_cut = feed(&cut, data + 2, size - 2, data[1] & 3, fuzz_hash(data, size) ^ (data[1] >> 2),
                &code_cut);
  FUZZ_CHECK(rc_whole == rc_cut, "whole: %d, cut: %d", rc_whole, rc_cut);
  FUZZ_CHECK(code_whole == code_cut, "whole: close %u, cut: close %u", code_whole, code_cut);
  FUZZ_CHECK(whole.nev == cut.nev, "whole: %zu events, cut: %zu", whole.nev, cut.nev);
  for (size_t i = 0; i < whole.nev && i < MAX_EVENTS; i++)
    FUZZ_CHECK(whole.ev[i] == cut.ev[i], "event %zu differs", i);
  return 0;
}
