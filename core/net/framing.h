/* Packet framing for u16_size_id listeners: each packet starts with a
 * little-endian u16 size (including the 4-byte header) and a little-endian
 * u16 id. The decoder hands out whole packets straight from the receive
 * buffer and copies only a trailing partial packet into per-session storage,
 * which it frees as soon as that packet completes. Pure code, no I/O: the
 * fuzz target drives it directly. */
#ifndef PIER_NET_FRAMING_H
#define PIER_NET_FRAMING_H

#include <stddef.h>
#include <stdint.h>

#define FRAME_HEADER 4u

/* The partial packet: one allocation, its sizes in front of the bytes. */
typedef struct frame_held {
  uint32_t len; /* bytes held */
  uint32_t cap;
  char data[];
} frame_held;

/* One pointer, so that a session holding no partial packet pays 8 bytes. */
typedef struct framer {
  frame_held *held; /* NULL when no partial packet is held */
} framer;

/* Called once per whole packet (header included). Return non-zero to stop
 * decoding (the session is closing); the rest of the input is dropped. */
typedef int (*frame_cb)(void *ctx, const char *packet, size_t len);

/* Feeds received bytes. Returns 0, -EPROTO for a size below the header,
 * -EMSGSIZE for a size above max_packet, -ENOMEM; after an error the framer
 * holds nothing and the session should be closed. */
int framing_feed(framer *f, unsigned max_packet, const char *data, size_t len, frame_cb cb,
                 void *ctx);
void framing_reset(framer *f);
/* Bytes of the partial packet held, 0 if none. */
static inline uint32_t framing_held(const framer *f) { return f->held ? f->held->len : 0; }

static inline uint16_t frame_u16(const char *p) {
  return (uint16_t)((uint8_t)p[0] | ((uint16_t)(uint8_t)p[1] << 8));
}

#endif
