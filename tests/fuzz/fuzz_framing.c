/* Fuzz target for the u16_size_id decoder (core/net/framing.c).
 *
 * Input: byte 0 picks max_packet, byte 1 how the stream is cut into reads
 * (low 2 bits: at most 1, 7, 64 or all bytes per read; the rest seeds the
 * cuts), byte 2 whether the callback asks to stop (below 0x40: after packet
 * byte2+1). The remaining bytes are the received stream.
 *
 * Each read is copied into a buffer of exactly its size, so reading past it
 * is caught by ASan. A reference parse of the whole stream predicts every
 * packet and the error: each delivered packet must be the next expected one
 * (same bytes, size == its header, 4 <= size <= max), delivered in the call
 * that supplied its last byte; after a call without error or stop, bytes
 * delivered + bytes held == bytes fed; an error (-EPROTO for a size below 4,
 * -EMSGSIZE above max) comes in the call that supplied the size's second
 * byte and leaves nothing held; a stop leaves nothing held. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "net/framing.h"

typedef struct model {
  const uint8_t *stream;
  size_t len;
  unsigned max;
  size_t fed;       /* stream bytes given to framing_feed so far */
  size_t delivered; /* stream offset of the next expected packet */
  size_t npackets;
  size_t stop_at; /* stop after this many packets; 0 = never */
  int stopped;
  /* reference parse */
  size_t err_at; /* offset of the byte that completes a bad size; len = none */
  int err;
} model;

static void reference(model *m) {
  size_t pos = 0;
  m->err_at = m->len;
  m->err = 0;
  while (m->len - pos >= 2) {
    unsigned size = frame_u16((const char *)m->stream + pos);
    if (size < FRAME_HEADER || size > m->max) {
      m->err_at = pos + 1;
      m->err = size < FRAME_HEADER ? -EPROTO : -EMSGSIZE;
      return;
    }
    if (m->len - pos < size)
      return;
    pos += size;
  }
}

/* End of the last whole packet within the first `end` stream bytes, before
 * any error. */
static size_t whole_until(const model *m, size_t end) {
  size_t pos = 0;
  while (end - pos >= 2 && pos + 1 < m->err_at) {
    unsigned size = frame_u16((const char *)m->stream + pos);
    if (end - pos < size)
      break;
    pos += size;
  }
  return pos;
}

static int on_packet(void *ctx, const char *packet, size_t len) {
  model *m = ctx;
  FUZZ_CHECK(!m->stopped, "packet after the callback asked to stop");
  FUZZ_CHECK(len >= FRAME_HEADER && len <= m->max, "packet of %zu bytes, max_packet %u", len,
             m->max);
  FUZZ_CHECK(len == frame_u16(packet), "packet of %zu bytes says %u", len, frame_u16(packet));
  FUZZ_CHECK(m->delivered + len <= m->fed, "packet [%zu, %zu) not yet fed (fed %zu)",
             m->delivered, m->delivered + len, m->fed);
  FUZZ_CHECK(memcmp(packet, m->stream + m->delivered, len) == 0,
             "packet at stream offset %zu differs from the stream", m->delivered);
  m->delivered += len;
  m->npackets++;
  if (m->stop_at && m->npackets == m->stop_at) {
    m->stopped = 1;
    return 1;
  }
  return 0;
}

int FUZZ_ENTRY(const uint8_t *data, size_t size) {
  model m;
  framer f = {0};
  uint64_t rng;
  size_t maxpiece;
  static const size_t pieces[4] = {1, 7, 64, (size_t)-1};

  if (size < 3)
    return 0;
  memset(&m, 0, sizeof(m));
  m.max = data[0] < 0x80 ? 4u + data[0] : 4u + (unsigned)(data[0] - 0x80) * 517u;
  if (m.max > 65535)
    m.max = 65535;
  maxpiece = pieces[data[1] & 3];
  rng = (uint64_t)(data[1] >> 2) * 0x9E3779B97F4A7C15ull + size;
  m.stop_at = data[2] < 0x40 ? (size_t)data[2] + 1 : 0;
  m.stream = data + 3;
  m.len = size - 3;
  reference(&m);

  while (m.fed < m.len) {
    size_t left = m.len - m.fed, n;
    uint32_t r = fuzz_rand(&rng);
    if ((r & 31) == 0)
      n = 0; /* an empty read now and then */
    else if (maxpiece == (size_t)-1)
      n = left;
    else
      n = 1 + (size_t)(r >> 5) % maxpiece;
    if (n > left)
      n = left;
    char *piece = malloc(n ? n : 1);
    FUZZ_CHECK(piece != NULL, "out of memory");
    memcpy(piece, m.stream + m.fed, n);
    size_t before = m.fed;
    m.fed += n;
    int rc = framing_feed(&f, m.max, piece, n, on_packet, &m);
    free(piece);

    if (m.stopped) {
      FUZZ_CHECK(rc == 0, "framing_feed returned %d after a stop", rc);
      FUZZ_CHECK(f.held == NULL, "framer holds %u bytes after a stop", framing_held(&f));
      break;
    }
    if (m.err && m.err_at < m.fed) {
      FUZZ_CHECK(rc == m.err, "framing_feed returned %d, expected %d (bad size at offset %zu, "
                 "read [%zu, %zu))", rc, m.err, m.err_at - 1, before, m.fed);
      FUZZ_CHECK(m.delivered == whole_until(&m, m.fed), "delivered %zu bytes, expected %zu",
                 m.delivered, whole_until(&m, m.fed));
      FUZZ_CHECK(f.held == NULL, "framer holds %u bytes after an error", framing_held(&f));
      break;
    }
    FUZZ_CHECK(rc == 0, "framing_feed returned %d for read [%zu, %zu)", rc, before, m.fed);
    FUZZ_CHECK(m.delivered == whole_until(&m, m.fed),
               "after read [%zu, %zu): delivered %zu bytes, expected %zu", before, m.fed,
               m.delivered, whole_until(&m, m.fed));
    FUZZ_CHECK(m.delivered + framing_held(&f) == m.fed, "delivered %zu + held %u != fed %zu",
               m.delivered, framing_held(&f), m.fed);
    /* Nothing held means nothing allocated. */
    FUZZ_CHECK(!f.held || (f.held->len > 0 && f.held->len <= f.held->cap), "held %u, cap %u",
               framing_held(&f), f.held ? f.held->cap : 0);
    if (f.held)
      FUZZ_CHECK(memcmp(f.held->data, m.stream + m.delivered, f.held->len) == 0,
                 "held bytes differ from the stream at offset %zu", m.delivered);
  }
  framing_reset(&f);
  return 0;
}
