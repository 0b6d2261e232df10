/* Size classes of 256 B, 2 KiB, 16 KiB and 64 KiB; larger blocks are plain
 * malloc. Each thread caches freed blocks per class, up to a byte budget, in
 * a free list; a block freed on another thread than the one that made it
 * simply joins that thread's cache. A thread key (os_key) frees a cache when its
 * thread exits. */
#include "net/sbuf.h"

#include "os/os.h"
#include <stdlib.h>

static const uint32_t class_size[] = {256, 2048, 16384, 65536};
#define NCLASS (sizeof(class_size) / sizeof(class_size[0]))
#define CACHE_BYTES_PER_CLASS (1u << 20)

typedef struct sbuf_cache {
  sbuf *head[NCLASS];
  uint32_t count[NCLASS];
  int registered;
} sbuf_cache;

static _Thread_local sbuf_cache cache;
static os_key cache_key;
static os_once_t cache_once = OS_ONCE_INIT;

static void trim(sbuf_cache *c) {
  for (unsigned i = 0; i < NCLASS; i++) {
    while (c->head[i]) {
      sbuf *b = c->head[i];
      c->head[i] = b->next_free;
      free(b);
    }
    c->count[i] = 0;
  }
}

static void cache_exit(void *arg) { trim(arg); }

static void make_key(void) { (void)os_key_create(&cache_key, cache_exit); }

void sbuf_cache_trim(void) { trim(&cache); }

size_t sbuf_cache_count(void) {
  size_t n = 0;
  for (unsigned i = 0; i < NCLASS; i++)
    n += cache.count[i];
  return n;
}

sbuf *sbuf_alloc(size_t cap) {
  sbuf *b;
  unsigned cls;

  if (cap > SBUF_MAX)
    return NULL;
  for (cls = 0; cls < NCLASS && class_size[cls] < cap; cls++) {
  }
  if (cls < NCLASS && cache.head[cls]) {
    b = cache.head[cls];
    cache.head[cls] = b->next_free;
    cache.count[cls]--;
  } else {
    size_t size = cls < NCLASS ? class_size[cls] : cap;
    b = malloc(sizeof(*b) + size);
    if (!b)
      return NULL;
    b->cls = cls < NCLASS ? (uint8_t)cls : SBUF_UNPOOLED;
    b->cap = (uint32_t)size;
  }
  atomic_init(&b->refs, 1);
  b->len = 0;
  b->appendable = 0;
  b->off = 0;
  b->ws_hlen = 0;
  b->next_free = NULL;
  return b;
}

sbuf *sbuf_from(const void *data, size_t len) {
  sbuf *b = sbuf_alloc(len);
  if (!b)
    return NULL;
  if (len)
    __builtin_memcpy(b->data, data, len);
  b->len = (uint32_t)len;
  return b;
}

void sbuf_release(sbuf *b) {
  /* The last reference (the common case: a queue's own buffer) needs no
   * locked decrement: no other holder is left to take one concurrently. */
  if (atomic_load_explicit(&b->refs, memory_order_acquire) != 1 &&
      atomic_fetch_sub_explicit(&b->refs, 1, memory_order_acq_rel) != 1)
    return;
  if (b->cls == SBUF_UNPOOLED ||
      (cache.count[b->cls] + 1) * class_size[b->cls] > CACHE_BYTES_PER_CLASS) {
    free(b);
    return;
  }
  if (!cache.registered) {
    os_once(&cache_once, make_key);
    os_key_set(cache_key, &cache);
    cache.registered = 1;
  }
  b->next_free = cache.head[b->cls];
  cache.head[b->cls] = b;
  cache.count[b->cls]++;
}
