/* A session's send queue: a ring of (buffer, offset, length) entries over
 * refcounted sbufs, the byte count that max_send_queue caps, and the iovec
 * view that one scatter-gather send takes. The ring's storage is allocated on
 * first use and freed again whenever the queue drains, so a queue with
 * nothing to send holds none; a queue given fixed storage of its owner's
 * (sendq_init) uses that until it outgrows it, and returns to it on drain. */
#ifndef PIER_NET_SENDQ_H
#define PIER_NET_SENDQ_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include "os/os.h"

#include "net/sbuf.h"

typedef struct sendq_entry {
  sbuf *buf;
  uint32_t off; /* next byte to send */
  uint32_t end; /* one past the last byte to send */
} sendq_entry;

typedef struct sendq {
  sendq_entry *ring;         /* NULL while empty, unless fixed storage was given */
  uint32_t head, count, cap; /* cap is a power of two, 0 while ring is NULL */
  uint32_t fixed_cap;        /* entries at fixed, 0 if none */
  sendq_entry *fixed;        /* the owner's storage (sendq_init), never freed here */
  size_t bytes;              /* queued, not yet confirmed sent */
  /* Where the queue's bytes are also summed with other queues' (its worker's
   * send_queue_bytes), or NULL. Only the thread that owns the queue writes
   * it, so it is kept with a relaxed load and store, not a locked add. */
  _Atomic uint64_t *gauge;
} sendq;

#define SENDQ_IOV_MAX 64

/* Sets up an empty queue on storage for cap entries (a power of two) that
 * the caller owns and keeps for the queue's life; gauge may be NULL. A
 * zeroed sendq is a valid queue without fixed storage. */
void sendq_init(sendq *q, sendq_entry *fixed, uint32_t cap, _Atomic uint64_t *gauge);

/* Queues bytes [off, off+len) of b, taking a reference. Returns 0, -ENOBUFS
 * when that would put more than limit bytes in the queue (nothing queued), or
 * -ENOMEM. */
int sendq_push(sendq *q, sbuf *b, uint32_t off, uint32_t len, size_t limit);
/* Queues a copy of data: appended to the tail buffer when this queue holds its
 * only reference and it has room, else into a new buffer. Same returns as
 * sendq_push. */
int sendq_write(sendq *q, const void *data, size_t len, size_t limit);
/* Fills up to max iovecs from the head of the queue; returns how many. */
int sendq_iov(const sendq *q, struct iovec *iov, int max);
/* Marks n bytes from the head as sent, releasing buffers sent in full; a
 * queue that empties frees its ring. */
void sendq_consume(sendq *q, size_t n);
/* Releases every queued buffer and the ring (the gauge and fixed storage
 * stay). */
void sendq_clear(sendq *q);
/* Whether the queue holds ring storage of its own (allocated, not fixed). */
static inline int sendq_owns_ring(const sendq *q) { return q->ring && q->ring != q->fixed; }

#endif
