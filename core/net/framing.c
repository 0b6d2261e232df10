/* u16_size_id decoder. */
#include "net/framing.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

void framing_reset(framer *f) {
  free(f->held);
  f->held = NULL;
}

static int check_size(unsigned size, unsigned max_packet) {
  if (size < FRAME_HEADER)
    return -EPROTO;
  if (size > max_packet)
    return -EMSGSIZE;
  return 0;
}

static int hold(framer *f, const char *data, size_t len, uint32_t need) {
  frame_held *h = f->held;
  if (!h || h->cap < need) {
    h = realloc(h, sizeof(*h) + need);
    if (!h)
      return -ENOMEM;
    if (!f->held)
      h->len = 0;
    h->cap = need;
    f->held = h;
  }
  memcpy(h->data + h->len, data, len);
  h->len += (uint32_t)len;
  return 0;
}

int framing_feed(framer *f, unsigned max_packet, const char *data, size_t len, frame_cb cb,
                 void *ctx) {
  int rc;

  /* First complete a packet started by an earlier read. */
  while (f->held && len > 0) {
    uint32_t want;
    if (f->held->len < 2) {
      rc = hold(f, data, 1, FRAME_HEADER);
      if (rc < 0)
        goto fail;
      data++;
      len--;
      continue;
    }
    want = frame_u16(f->held->data);
    if ((rc = check_size(want, max_packet)) < 0)
      goto fail;
    {
      size_t take = want - f->held->len < len ? want - f->held->len : len;
      if ((rc = hold(f, data, take, want)) < 0)
        goto fail;
      data += take;
      len -= take;
    }
    if (f->held->len == want) {
      int stop = cb(ctx, f->held->data, want);
      framing_reset(f);
      if (stop)
        return 0;
    }
  }
  if (f->held && f->held->len == 1)
    return 0;
  if (f->held) {
    if ((rc = check_size(frame_u16(f->held->data), max_packet)) < 0)
      goto fail;
    return 0;
  }
  /* Whole packets straight from the receive buffer. */
  while (len >= 2) {
    uint32_t size = frame_u16(data);
    if ((rc = check_size(size, max_packet)) < 0)
      goto fail;
    if (len < size)
      break;
    if (cb(ctx, data, size))
      return 0;
    data += size;
    len -= size;
  }
  if (len > 0) {
    uint32_t need = len >= 2 ? frame_u16(data) : FRAME_HEADER;
    if ((rc = hold(f, data, len, need)) < 0)
      goto fail;
  }
  return 0;
fail:
  framing_reset(f);
  return rc;
}
