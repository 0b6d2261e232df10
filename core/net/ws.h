/* The WebSocket (RFC 6455) session state machine, server side, on wslay's
 * frame decoder (wslay_frame_recv; wslay does no I/O here: it reads from
 * the bytes being fed, and unmasks them). Pure code, no sockets: the fuzz
 * target drives it directly.
 *
 * Memory: wslay's frame context carries a 4 KiB input buffer, so a session
 * holds one only while a frame is partly received; between frames it goes
 * back to a small per-thread pool. A fragmented message is reassembled in a
 * buffer that exists only until the message completes. An idle session
 * holds just the ws_conn below. */
#ifndef PIER_NET_WS_H
#define PIER_NET_WS_H

#include <stddef.h>
#include <stdint.h>

enum {
  WS_OP_CONT = 0x0,
  WS_OP_TEXT = 0x1,
  WS_OP_BINARY = 0x2,
  WS_OP_CLOSE = 0x8,
  WS_OP_PING = 0x9,
  WS_OP_PONG = 0xa
};

/* Close codes pier sends. */
enum {
  WS_CLOSE_NORMAL = 1000,
  WS_CLOSE_GOING_AWAY = 1001,
  WS_CLOSE_PROTOCOL = 1002,
  WS_CLOSE_INVALID_DATA = 1007,
  WS_CLOSE_POLICY = 1008,
  WS_CLOSE_TOO_BIG = 1009,
  WS_CLOSE_INTERNAL = 1011
};

/* Largest frame header: 2 + 8 (64-bit length), server frames unmasked. */
#define WS_HEADER_MAX 10

struct ws_dec;

typedef struct ws_conn {
  struct ws_dec *dec; /* a frame is partly received; NULL between frames */
  char *msg;          /* a fragmented message so far; NULL when none */
  uint32_t msg_len, msg_cap;
  uint32_t utf8;      /* UTF-8 check state across a text message */
  uint8_t msg_op;     /* WS_OP_TEXT / WS_OP_BINARY while fragmented, else 0 */
  uint8_t closed;     /* a close frame came: the rest of the input is ignored */
} ws_conn;

typedef struct ws_sink {
  /* One whole message (text is valid UTF-8). Non-zero stops the feed. */
  int (*message)(void *ctx, const char *data, size_t len, int text);
  /* A ping (answer with a pong of the same payload) or a pong. */
  int (*control)(void *ctx, int opcode, const char *data, size_t len);
  /* The peer's close frame: code 0 when it had none (reason then empty);
   * code and UTF-8 reason already checked. */
  int (*close)(void *ctx, unsigned code, const char *reason, size_t len);
  void *ctx;
} ws_sink;

/* Feeds bytes from the client. Returns 0 (all consumed), 1 when a callback
 * stopped it, or a negative errno and *code, *why (a static text for the
 * log) for the close to send: -EPROTO (1002: an unmasked frame, reserved
 * bits or opcode, a bad control frame, a continuation with no message, a
 * data frame inside a fragmented one, a bad close payload), -EILSEQ (1007:
 * invalid UTF-8 in a text message or close reason), -EMSGSIZE (1009: a
 * message over max_msg), -ENOMEM (1011). After an error or a close frame
 * the connection takes no more input. */
int ws_feed(ws_conn *c, const char *data, size_t len, size_t max_msg, const ws_sink *sink,
            unsigned *code, const char **why);
/* Whether part of a frame or message is held (for packet_timeout_ms). */
static inline int ws_partial(const ws_conn *c) { return c->dec != NULL || c->msg_op != 0; }
/* Frees what c holds (it may be fed again afterwards, from scratch). */
void ws_conn_reset(ws_conn *c);

/* Writes the header of one unmasked, final server frame with a payload of
 * len bytes into out; returns its length (2, 4 or 10). Written directly
 * (see ws.c), not through wslay. */
size_t ws_frame_header(char out[WS_HEADER_MAX], int opcode, size_t len);
/* A close frame's payload: the code (big-endian) and reason (cut to fit
 * 125 bytes at a UTF-8 boundary); returns its length. */
size_t ws_close_payload(char out[125], unsigned code, const char *reason);
/* Whether buf[0..len) is valid UTF-8 on its own. */
int ws_utf8_valid(const char *buf, size_t len);
/* Frees this thread's pooled frame contexts. */
void ws_pool_trim(void);

#endif
