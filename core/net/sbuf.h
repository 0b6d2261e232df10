/* Send buffers: refcounted byte blocks that a send queue holds until the
 * kernel has taken the bytes. One buffer may sit in many queues at once (a
 * broadcast). Blocks come from per-thread caches in a few size classes, so
 * sending allocates nothing in the steady state. */
#ifndef PIER_NET_SBUF_H
#define PIER_NET_SBUF_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

typedef struct sbuf {
  _Atomic uint32_t refs;
  uint32_t len;  /* bytes of data in use */
  uint32_t cap;  /* bytes of data available */
  uint8_t cls;   /* size class, or SBUF_UNPOOLED */
  uint8_t appendable; /* made by a send queue for its own small writes */
  /* data[off..len) is what a send delivers. A shared WebSocket frame keeps
   * the frame's header in the ws_hlen bytes just before off, so a WebSocket
   * session sends data[off - ws_hlen..len) of the same buffer that a TCP
   * session sends data[off..len) of (net_broadcast). Both 0 otherwise. */
  uint8_t off;
  uint8_t ws_hlen;
  struct sbuf *next_free;
  char data[];
} sbuf;

#define SBUF_UNPOOLED 0xff

/* A buffer with room for cap bytes, len 0, one reference. NULL on ENOMEM or
 * when cap exceeds SBUF_MAX. Any thread. */
sbuf *sbuf_alloc(size_t cap);
/* A buffer holding a copy of data. */
sbuf *sbuf_from(const void *data, size_t len);
static inline sbuf *sbuf_ref(sbuf *b) {
  atomic_fetch_add_explicit(&b->refs, 1, memory_order_relaxed);
  return b;
}
/* Drops one reference; the last returns the block to this thread's cache. */
void sbuf_release(sbuf *b);
/* Frees this thread's cached blocks. */
void sbuf_cache_trim(void);
/* Blocks in this thread's cache, over all classes (for tests and stats). */
size_t sbuf_cache_count(void);

#define SBUF_MAX (64u * 1024u * 1024u)

#endif
