/* Send queue ring. Small writes are the common case in a game (many small
 * packets per tick), so sendq_write appends into the tail buffer when that
 * buffer is one sendq_write made for this queue, the queue holds its only
 * reference and it has room, instead of adding an entry: fewer iovecs per
 * send and fewer buffers in flight. Buffers made elsewhere (broadcasts, sends
 * from other threads) are never written into. */
#include "net/sendq.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* Single writer (the queue's owner): a plain add, visible whole to readers. */
static void gauge_add(sendq *q, size_t n, int sign) {
  uint64_t v;
  if (!q->gauge)
    return;
  v = atomic_load_explicit(q->gauge, memory_order_relaxed);
  atomic_store_explicit(q->gauge, sign > 0 ? v + n : v - n, memory_order_relaxed);
}

void sendq_init(sendq *q, sendq_entry *fixed, uint32_t cap, _Atomic uint64_t *gauge) {
  memset(q, 0, sizeof(*q));
  q->fixed = fixed;
  q->fixed_cap = fixed ? cap : 0;
  q->ring = fixed;
  q->cap = q->fixed_cap;
  q->gauge = gauge;
}

/* Empty again: back to the fixed storage, or to none. */
static void drained(sendq *q) {
  if (sendq_owns_ring(q))
    free(q->ring);
  q->ring = q->fixed;
  q->cap = q->fixed_cap;
  q->head = 0;
}

/* Fails with nothing changed. */
static int grow(sendq *q) {
  uint32_t cap = q->cap ? q->cap * 2 : 8;
  sendq_entry *ring = malloc(cap * sizeof(*ring));
  if (!ring)
    return -ENOMEM;
  for (uint32_t i = 0; i < q->count; i++)
    ring[i] = q->ring[(q->head + i) & (q->cap - 1)];
  if (sendq_owns_ring(q))
    free(q->ring);
  q->ring = ring;
  q->cap = cap;
  q->head = 0;
  return 0;
}

/* Appends an entry that takes over one reference to b; fails with nothing
 * changed. */
static int push_owned(sendq *q, sbuf *b, uint32_t off, uint32_t len) {
  sendq_entry *e;
  if (q->count == q->cap && grow(q) < 0)
    return -ENOMEM;
  e = &q->ring[(q->head + q->count) & (q->cap - 1)];
  e->buf = b;
  e->off = off;
  e->end = off + len;
  q->count++;
  q->bytes += len;
  gauge_add(q, len, 1);
  return 0;
}

int sendq_push(sendq *q, sbuf *b, uint32_t off, uint32_t len, size_t limit) {
  int rc;
  if (q->bytes + len > limit)
    return -ENOBUFS;
  if (len == 0)
    return 0;
  rc = push_owned(q, sbuf_ref(b), off, len);
  if (rc < 0)
    sbuf_release(b);
  return rc;
}

int sendq_write(sendq *q, const void *data, size_t len, size_t limit) {
  sbuf *b;
  int rc;

  if (q->bytes + len > limit)
    return -ENOBUFS;
  if (len == 0)
    return 0;
  if (q->count > 0) {
    sendq_entry *e = &q->ring[(q->head + q->count - 1) & (q->cap - 1)];
    b = e->buf;
    /* The bytes appended lie past any range a send in flight reads. */
    if (b->appendable && e->end == b->len && b->cap - b->len >= len &&
        atomic_load_explicit(&b->refs, memory_order_acquire) == 1) {
      memcpy(b->data + b->len, data, len);
      b->len += (uint32_t)len;
      e->end += (uint32_t)len;
      q->bytes += len;
      gauge_add(q, len, 1);
      return 0;
    }
  }
  b = sbuf_alloc(len); /* the smallest class that fits: later small writes may still append */
  if (!b)
    return -ENOMEM;
  memcpy(b->data, data, len);
  b->len = (uint32_t)len;
  b->appendable = 1;
  rc = push_owned(q, b, 0, (uint32_t)len); /* the queue keeps the one reference */
  if (rc < 0)
    sbuf_release(b);
  return rc;
}

int sendq_iov(const sendq *q, struct iovec *iov, int max) {
  int n = 0;
  for (uint32_t i = 0; i < q->count && n < max; i++, n++) {
    const sendq_entry *e = &q->ring[(q->head + i) & (q->cap - 1)];
    iov[n].iov_base = e->buf->data + e->off;
    iov[n].iov_len = e->end - e->off;
  }
  return n;
}

void sendq_consume(sendq *q, size_t n) {
  q->bytes -= n;
  gauge_add(q, n, -1);
  while (n > 0 && q->count > 0) {
    sendq_entry *e = &q->ring[q->head];
    size_t avail = e->end - e->off;
    if (n < avail) {
      e->off += (uint32_t)n;
      return;
    }
    n -= avail;
    sbuf_release(e->buf);
    q->head = (q->head + 1) & (q->cap - 1);
    q->count--;
  }
  if (q->count == 0)
    drained(q);
}

void sendq_clear(sendq *q) {
  gauge_add(q, q->bytes, -1);
  while (q->count > 0) {
    sbuf_release(q->ring[q->head].buf);
    q->head = (q->head + 1) & (q->cap - 1);
    q->count--;
  }
  q->bytes = 0;
  drained(q);
}
