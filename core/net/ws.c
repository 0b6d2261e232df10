/* WebSocket frames on wslay's codec; see ws.h.
 *
 * wslay_frame_recv pulls input through a callback into the context's own
 * 4 KiB buffer and returns one piece of one frame's payload per call. We
 * count the bytes handed to a context and the bytes of the frames it has
 * finished (header + payload; wslay refuses non-minimal lengths, so a
 * header's size follows from the payload length and the mask bit): when
 * they are equal and wslay wants more input, the context holds nothing and
 * goes back to the pool. */
#include "net/ws.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <wslay/wslay.h>

#include "os/os.h"

#define POOL_MAX 16

typedef struct ws_dec {
  wslay_frame_context_ptr fc;
  const char *in; /* the bytes being fed */
  size_t in_len;
  uint64_t fed;   /* bytes given to fc since it was last empty */
  uint64_t done;  /* bytes of the frames it finished since then */
  uint64_t got;   /* payload bytes of the current frame so far */
  uint8_t started; /* the current frame's first piece was seen */
  uint8_t op, fin;
  uint8_t ctrl_len;
  char ctrl[125]; /* a control frame's payload */
  struct ws_dec *next;
} ws_dec;

/* Per thread: pooled decoders. */
typedef struct ws_tls {
  ws_dec *pool;
  unsigned npool;
  int registered;
} ws_tls;

static _Thread_local ws_tls tl;
static os_key tl_key;
static os_once_t tl_once = OS_ONCE_INIT;

static void dec_destroy(ws_dec *d) {
  wslay_frame_context_free(d->fc);
  free(d);
}

static void trim(ws_tls *t) {
  while (t->pool) {
    ws_dec *d = t->pool;
    t->pool = d->next;
    dec_destroy(d);
  }
  t->npool = 0;
}

static void tl_exit(void *arg) { trim(arg); }
static void make_key(void) { (void)os_key_create(&tl_key, tl_exit); }

static void tl_register(void) {
  if (!tl.registered) {
    os_once(&tl_once, make_key);
    os_key_set(tl_key, &tl);
    tl.registered = 1;
  }
}

void ws_pool_trim(void) { trim(&tl); }

/* ---- wslay callbacks ---- */

static ssize_t dec_recv(uint8_t *buf, size_t len, int flags, void *user) {
  ws_dec *d = user;
  size_t n = d->in_len < len ? d->in_len : len;
  if (n == 0)
    return 0; /* wslay_frame_recv then returns WSLAY_ERR_WANT_READ */
  memcpy(buf, d->in, n);
  d->in += n;
  d->in_len -= n;
  d->fed += n;
  return (ssize_t)n;
}

static ws_dec *dec_get(void) {
  ws_dec *d = tl.pool;
  if (d) {
    tl.pool = d->next;
    tl.npool--;
  } else {
    struct wslay_frame_callbacks cb = {.recv_callback = dec_recv};
    d = calloc(1, sizeof(*d));
    if (!d)
      return NULL;
    if (wslay_frame_context_init(&d->fc, &cb, d) != 0) {
      free(d);
      return NULL;
    }
  }
  d->fed = d->done = d->got = 0;
  d->started = 0;
  d->ctrl_len = 0;
  d->next = NULL;
  return d;
}

/* Returns an empty decoder to the pool. */
static void dec_put(ws_dec *d) {
  tl_register();
  if (tl.npool >= POOL_MAX) {
    dec_destroy(d);
    return;
  }
  d->next = tl.pool;
  tl.pool = d;
  tl.npool++;
}

/* ---- UTF-8 ---- */

/* State: 0 at a character boundary; else (bytes still needed << 16) |
 * (lowest allowed next byte << 8) | highest. Overlong forms, surrogates
 * and code points past U+10FFFF are refused by the ranges of the second
 * byte. */
#define UTF8_BAD 0xffffffffu

static uint32_t utf8_more(unsigned need, unsigned lo, unsigned hi) {
  return (uint32_t)(need << 16 | lo << 8 | hi);
}

static uint32_t utf8_step(uint32_t st, uint8_t b) {
  if (st == 0) {
    if (b < 0x80)
      return 0;
    if (b >= 0xc2 && b <= 0xdf)
      return utf8_more(1, 0x80, 0xbf);
    if (b == 0xe0)
      return utf8_more(2, 0xa0, 0xbf);
    if ((b >= 0xe1 && b <= 0xec) || b == 0xee || b == 0xef)
      return utf8_more(2, 0x80, 0xbf);
    if (b == 0xed)
      return utf8_more(2, 0x80, 0x9f);
    if (b == 0xf0)
      return utf8_more(3, 0x90, 0xbf);
    if (b >= 0xf1 && b <= 0xf3)
      return utf8_more(3, 0x80, 0xbf);
    if (b == 0xf4)
      return utf8_more(3, 0x80, 0x8f);
    return UTF8_BAD;
  }
  if (b < ((st >> 8) & 0xff) || b > (st & 0xff))
    return UTF8_BAD;
  return (st >> 16) == 1 ? 0 : utf8_more((st >> 16) - 1, 0x80, 0xbf);
}

static uint32_t utf8_run(uint32_t st, const char *p, size_t n) {
  const uint8_t *s = (const uint8_t *)p, *end = s + n;
  while (s < end) {
    if (st == 0) { /* ASCII runs, eight bytes at a time */
      while (end - s >= 8) {
        uint64_t w;
        memcpy(&w, s, 8);
        if (w & 0x8080808080808080ull)
          break;
        s += 8;
      }
      if (s == end)
        break;
    }
    st = utf8_step(st, *s++);
    if (st == UTF8_BAD)
      return UTF8_BAD;
  }
  return st;
}

int ws_utf8_valid(const char *buf, size_t len) { return utf8_run(0, buf, len) == 0; }

/* ---- encoding ----
 *
 * Server frames are written directly: a 2-10 byte header (RFC 6455 5.2,
 * unmasked). wslay 1.1.1's frame API has no call that writes into memory
 * (wslay_frame_write came later) and its send path would pass every
 * payload through a callback, where pier wants the payload to stay in the
 * shared buffer it already is in. */

size_t ws_frame_header(char out[WS_HEADER_MAX], int opcode, size_t len) {
  out[0] = (char)(0x80 | (opcode & 0xf));
  if (len < 126) {
    out[1] = (char)len;
    return 2;
  }
  if (len < 65536) {
    out[1] = 126;
    out[2] = (char)(len >> 8);
    out[3] = (char)len;
    return 4;
  }
  out[1] = 127;
  for (int i = 0; i < 8; i++)
    out[2 + i] = (char)((uint64_t)len >> (56 - 8 * i));
  return 10;
}

size_t ws_close_payload(char out[125], unsigned code, const char *reason) {
  size_t n = reason ? strlen(reason) : 0;
  if (n > 123) {
    n = 123;
    while (n > 0 && ((uint8_t)reason[n] & 0xc0) == 0x80) /* not inside a character */
      n--;
  }
  out[0] = (char)(code >> 8);
  out[1] = (char)code;
  if (n)
    memcpy(out + 2, reason, n);
  return n + 2;
}

/* ---- decoding ---- */

static size_t header_len(uint64_t payload, int mask) {
  return 2 + (payload >= 65536 ? 8 : payload >= 126 ? 2 : 0) + (mask ? 4 : 0);
}

static int is_control(int op) { return op >= 0x8; }

static int fail(unsigned *code, const char **why, unsigned c, const char *text, int err) {
  *code = c;
  *why = text;
  return err;
}

static int valid_close_code(unsigned c) {
  return (c >= 1000 && c <= 1003) || (c >= 1007 && c <= 1014) || (c >= 3000 && c <= 4999);
}

/* Appends a piece of a fragmented message. */
static int msg_append(ws_conn *c, const char *p, size_t n, size_t max_msg) {
  if (c->msg_len + n > c->msg_cap) {
    size_t cap = c->msg_cap ? c->msg_cap : 1024;
    char *m;
    while (cap < c->msg_len + n)
      cap *= 2;
    if (cap > max_msg)
      cap = max_msg;
    m = realloc(c->msg, cap);
    if (!m)
      return -ENOMEM;
    c->msg = m;
    c->msg_cap = (uint32_t)cap;
  }
  memcpy(c->msg + c->msg_len, p, n);
  c->msg_len += (uint32_t)n;
  return 0;
}

static void msg_free(ws_conn *c) {
  free(c->msg);
  c->msg = NULL;
  c->msg_len = c->msg_cap = 0;
  c->msg_op = 0;
  c->utf8 = 0;
}

/* The first piece of a frame: its header's rules. */
static int frame_begin(ws_conn *c, ws_dec *d, const struct wslay_frame_iocb *io, size_t max_msg,
                       unsigned *code, const char **why) {
  if (!io->mask)
    return fail(code, why, WS_CLOSE_PROTOCOL, "unmasked frame from the client", -EPROTO);
  if (io->rsv)
    return fail(code, why, WS_CLOSE_PROTOCOL, "reserved bits set (no extension was agreed)",
                -EPROTO);
  switch (io->opcode) {
  case WS_OP_CONT:
    if (!c->msg_op)
      return fail(code, why, WS_CLOSE_PROTOCOL, "continuation frame with no message", -EPROTO);
    break;
  case WS_OP_TEXT:
  case WS_OP_BINARY:
    if (c->msg_op)
      return fail(code, why, WS_CLOSE_PROTOCOL, "new message inside a fragmented one", -EPROTO);
    break;
  case WS_OP_CLOSE:
  case WS_OP_PING:
  case WS_OP_PONG:
    break; /* wslay checked fin and the 125-byte limit */
  default:
    return fail(code, why, WS_CLOSE_PROTOCOL, "reserved opcode", -EPROTO);
  }
  if (!is_control(io->opcode) && (uint64_t)c->msg_len + io->payload_length > max_msg)
    return fail(code, why, WS_CLOSE_TOO_BIG, "message over max_packet_size", -EMSGSIZE);
  d->started = 1;
  d->op = io->opcode;
  d->fin = io->fin;
  d->got = 0;
  d->ctrl_len = 0;
  if (io->opcode == WS_OP_TEXT || io->opcode == WS_OP_BINARY)
    c->utf8 = 0;
  return 0;
}

/* A control frame is whole. */
static int control_end(ws_conn *c, ws_dec *d, const ws_sink *sink, unsigned *code,
                       const char **why) {
  if (d->op != WS_OP_CLOSE)
    return sink->control(sink->ctx, d->op, d->ctrl, d->ctrl_len) ? 1 : 0;
  c->closed = 1;
  if (d->ctrl_len == 1)
    return fail(code, why, WS_CLOSE_PROTOCOL, "close frame with a 1-byte payload", -EPROTO);
  if (d->ctrl_len == 0)
    return sink->close(sink->ctx, 0, "", 0) ? 1 : 0;
  unsigned cc = (unsigned)(uint8_t)d->ctrl[0] << 8 | (uint8_t)d->ctrl[1];
  if (!valid_close_code(cc))
    return fail(code, why, WS_CLOSE_PROTOCOL, "invalid close code", -EPROTO);
  if (!ws_utf8_valid(d->ctrl + 2, d->ctrl_len - 2u))
    return fail(code, why, WS_CLOSE_INVALID_DATA, "invalid UTF-8 in the close reason", -EILSEQ);
  return sink->close(sink->ctx, cc, d->ctrl + 2, d->ctrl_len - 2u) ? 1 : 0;
}

/* One piece of payload (data, n) of the current frame. */
static int frame_piece(ws_conn *c, ws_dec *d, const struct wslay_frame_iocb *io, size_t max_msg,
                       const ws_sink *sink, unsigned *code, const char **why) {
  const char *p = (const char *)io->data;
  size_t n = io->data_length;
  int whole = d->got == 0 && n == io->payload_length; /* the frame in one piece */
  int text;

  d->got += n;
  if (is_control(d->op)) {
    memcpy(d->ctrl + d->ctrl_len, p, n); /* payload_length <= 125 */
    d->ctrl_len = (uint8_t)(d->ctrl_len + n);
    return d->got == io->payload_length ? control_end(c, d, sink, code, why) : 0;
  }
  text = d->op == WS_OP_TEXT || (d->op == WS_OP_CONT && c->msg_op == WS_OP_TEXT);
  if (text && n && (c->utf8 = utf8_run(c->utf8, p, n)) == UTF8_BAD)
    return fail(code, why, WS_CLOSE_INVALID_DATA, "invalid UTF-8 in a text message", -EILSEQ);
  if (whole && d->fin && d->op != WS_OP_CONT) { /* the common case: no copy */
    if (text && c->utf8 != 0)
      return fail(code, why, WS_CLOSE_INVALID_DATA, "invalid UTF-8: a text message ends inside a character",
                  -EILSEQ);
    return sink->message(sink->ctx, p, n, text) ? 1 : 0;
  }
  if (d->op != WS_OP_CONT && !c->msg_op)
    c->msg_op = d->op;
  if (n && msg_append(c, p, n, max_msg) < 0)
    return fail(code, why, WS_CLOSE_INTERNAL, "out of memory", -ENOMEM);
  if (d->got == io->payload_length && d->fin) {
    int rc;
    if (text && c->utf8 != 0)
      return fail(code, why, WS_CLOSE_INVALID_DATA, "invalid UTF-8: a text message ends inside a character",
                  -EILSEQ);
    rc = sink->message(sink->ctx, c->msg ? c->msg : "", c->msg_len, text);
    msg_free(c);
    return rc ? 1 : 0;
  }
  return 0;
}

int ws_feed(ws_conn *c, const char *data, size_t len, size_t max_msg, const ws_sink *sink,
            unsigned *code, const char **why) {
  ws_dec *d = c->dec;
  int rc = 0;

  if (c->closed || len == 0)
    return 0;
  if (!d && !(d = c->dec = dec_get()))
    return fail(code, why, WS_CLOSE_INTERNAL, "out of memory", -ENOMEM);
  d->in = data;
  d->in_len = len;
  for (;;) {
    struct wslay_frame_iocb io;
    ssize_t r = wslay_frame_recv(d->fc, &io);
    if (r == WSLAY_ERR_WANT_READ)
      break;
    if (r < 0) { /* wslay's own header checks */
      rc = fail(code, why, WS_CLOSE_PROTOCOL,
                "bad frame header (a control frame over 125 bytes or fragmented, or a length "
                "not in its shortest form)",
                -EPROTO);
      break;
    }
    if (!d->started && (rc = frame_begin(c, d, &io, max_msg, code, why)) != 0)
      break;
    rc = frame_piece(c, d, &io, max_msg, sink, code, why);
    if (d->got == io.payload_length) { /* the frame is done */
      d->done += header_len(io.payload_length, io.mask) + io.payload_length;
      d->started = 0;
    }
    if (rc != 0 || c->closed)
      break;
  }
  d->in = NULL;
  d->in_len = 0;
  if (rc < 0 || c->closed) {
    c->closed = 1;
    dec_destroy(d);
    c->dec = NULL;
  } else if (rc == 0 && d->fed == d->done && !d->started) {
    c->dec = NULL; /* between frames with nothing buffered */
    dec_put(d);
  }
  /* rc == 1: stopped mid-input by the owner (closing); c->dec is freed by
   * ws_conn_reset with the session. */
  return rc;
}

size_t ws_held(const ws_conn *c) {
  const ws_dec *d = c->dec;
  /* The decoder's bytes since the last whole frame (the current frame's
   * header and payload) and the message's earlier fragments; the current
   * data frame's payload is in both, once. */
  size_t dup = d && d->started && !is_control(d->op) ? (size_t)d->got : 0;
  return c->msg_len + (d ? (size_t)(d->fed - d->done) : 0) - dup;
}

void ws_conn_reset(ws_conn *c) {
  if (c->dec)
    dec_destroy(c->dec);
  c->dec = NULL;
  msg_free(c);
  c->closed = 0;
}
