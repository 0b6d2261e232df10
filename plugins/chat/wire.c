/* The chat plugin's bus payloads (wire.h): encoders and the strict decoder.
 * Every payload starts with u8 version | u8 type | u8 node length | node;
 * integers are little-endian. A decoder reads nothing it has not bounded
 * first, so a hostile or truncated payload is refused, never overread. */
#include "wire.h"

#include <errno.h>
#include <string.h>

#define SNAP_ENTRY_MIN (8 + 1 + 1) /* sid, room length, one byte of room */

bool wire_node_ok(const char *s, size_t len) {
  if (len == 0 || len > WIRE_NODE_MAX)
    return false;
  for (size_t i = 0; i < len; i++) {
    char c = s[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
          c == '_' || c == '-'))
      return false;
  }
  return true;
}

bool wire_utf8_ok(const void *s, size_t len) {
  const uint8_t *p = s, *end = p + len;
  while (p < end) {
    uint8_t c = *p++;
    size_t more;
    uint32_t cp, min;
    if (c < 0x80)
      continue;
    if ((c & 0xe0) == 0xc0) {
      more = 1, cp = c & 0x1f, min = 0x80;
    } else if ((c & 0xf0) == 0xe0) {
      more = 2, cp = c & 0x0f, min = 0x800;
    } else if ((c & 0xf8) == 0xf0) {
      more = 3, cp = c & 0x07, min = 0x10000;
    } else {
      return false;
    }
    if ((size_t)(end - p) < more)
      return false;
    while (more--) {
      if ((*p & 0xc0) != 0x80)
        return false;
      cp = (cp << 6) | (*p++ & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
      return false;
  }
  return true;
}

/* ---- reading ---- */

/* A cursor over a payload: take() hands out n bytes or NULL when fewer are
 * left, so every read is bounded by construction. */
typedef struct reader {
  const uint8_t *p, *end;
} reader;

static const uint8_t *take(reader *r, size_t n) {
  const uint8_t *at = r->p;
  if ((size_t)(r->end - r->p) < n)
    return NULL;
  r->p += n;
  return at;
}

static uint64_t le(const uint8_t *p, int n) {
  uint64_t v = 0;
  for (int i = n - 1; i >= 0; i--)
    v = v << 8 | p[i];
  return v;
}

/* A u8 length then that many bytes of room name (1..32, UTF-8). */
static int read_room(reader *r, const char **room, size_t *len, const char **why) {
  const uint8_t *b = take(r, 1);
  if (!b) {
    *why = "truncated room name length";
    return -EINVAL;
  }
  *len = *b;
  if (*len == 0 || *len > WIRE_ROOM_MAX) {
    *why = "room name not 1..32 bytes";
    return -EINVAL;
  }
  if (!(b = take(r, *len))) {
    *why = "truncated room name";
    return -EINVAL;
  }
  if (!wire_utf8_ok(b, *len)) {
    *why = "room name not valid utf-8";
    return -EINVAL;
  }
  *room = (const char *)b;
  return 0;
}

static int read_sid(reader *r, uint64_t *sid, const char **why) {
  const uint8_t *b = take(r, 8);
  if (!b) {
    *why = "truncated sid";
    return -EINVAL;
  }
  *sid = le(b, 8);
  if (*sid == 0) {
    *why = "sid 0";
    return -EINVAL;
  }
  return 0;
}

static int decode(reader *r, wire_msg *m, const char **why) {
  const uint8_t *b;
  if (!(b = take(r, 3))) {
    *why = "shorter than its header";
    return -EINVAL;
  }
  if (b[0] != WIRE_VERSION) {
    *why = "unsupported version";
    return -EINVAL;
  }
  m->type = (wire_type)b[1];
  m->node_len = b[2];
  if (!(b = take(r, m->node_len))) {
    *why = "truncated node name";
    return -EINVAL;
  }
  m->node = (const char *)b;
  if (!wire_node_ok(m->node, m->node_len)) {
    *why = "node name not 1..32 of [A-Za-z0-9_-]";
    return -EINVAL;
  }
  switch (m->type) {
  case WIRE_JOIN:
  case WIRE_LEAVE:
    if (read_sid(r, &m->sid, why) < 0 || read_room(r, &m->room, &m->room_len, why) < 0)
      return -EINVAL;
    break;
  case WIRE_CHAT:
    if (read_sid(r, &m->sid, why) < 0 || read_room(r, &m->room, &m->room_len, why) < 0)
      return -EINVAL;
    if (!(b = take(r, 2))) {
      *why = "truncated text length";
      return -EINVAL;
    }
    m->text_len = (size_t)le(b, 2);
    if (m->text_len == 0 || m->text_len > WIRE_TEXT_MAX) {
      *why = "text not 1..512 bytes";
      return -EINVAL;
    }
    if (!(b = take(r, m->text_len))) {
      *why = "truncated text";
      return -EINVAL;
    }
    if (!wire_utf8_ok(b, m->text_len)) {
      *why = "text not valid utf-8";
      return -EINVAL;
    }
    m->text = (const char *)b;
    break;
  case WIRE_SNAPSHOT:
    if (!(b = take(r, 13))) {
      *why = "truncated snapshot header";
      return -EINVAL;
    }
    m->snap_id = (uint32_t)le(b, 4);
    m->chunk = (uint32_t)le(b + 4, 4);
    m->flags = b[8];
    m->count = (uint32_t)le(b + 9, 4);
    if (m->flags & ~(WIRE_SNAP_LAST | WIRE_SNAP_ANSWER)) {
      *why = "unknown snapshot flags";
      return -EINVAL;
    }
    /* Refused before any entry is read: a count the bytes left cannot hold
     * is a lie, whatever follows. */
    if (m->count > WIRE_SNAP_ENTRIES_MAX ||
        m->count > (size_t)(r->end - r->p) / SNAP_ENTRY_MIN) {
      *why = "snapshot entry count too large";
      return -EINVAL;
    }
    m->entries = r->p;
    for (uint32_t i = 0; i < m->count; i++) {
      uint64_t sid;
      const char *room;
      size_t room_len;
      if (read_sid(r, &sid, why) < 0 || read_room(r, &room, &room_len, why) < 0)
        return -EINVAL;
    }
    m->entries_len = (size_t)(r->p - m->entries);
    break;
  default:
    *why = "unknown message type";
    return -EINVAL;
  }
  if (r->p != r->end) {
    *why = "trailing bytes";
    return -EINVAL;
  }
  return 0;
}

int wire_decode(const void *data, size_t len, wire_msg *m, const char **why) {
  reader r = {.p = data, .end = (const uint8_t *)data + len};
  memset(m, 0, sizeof(*m));
  if (!data) {
    *why = "no data";
    return -EINVAL;
  }
  return decode(&r, m, why);
}

bool wire_snap_next(const wire_msg *m, size_t *pos, uint64_t *sid, const char **room,
                    size_t *room_len) {
  /* wire_decode checked every entry in entries[0..entries_len), so a read
   * that starts below entries_len stays inside them. */
  const uint8_t *p;
  if (m->type != WIRE_SNAPSHOT || *pos >= m->entries_len)
    return false;
  p = m->entries + *pos;
  *sid = le(p, 8);
  *room_len = p[8];
  *room = (const char *)p + 9;
  *pos += 9 + *room_len;
  return true;
}

/* ---- writing ---- */

static uint8_t *put(uint8_t *p, uint64_t v, int n) {
  for (int i = 0; i < n; i++)
    *p++ = (uint8_t)(v >> (8 * i));
  return p;
}

static uint8_t *put_head(uint8_t *p, wire_type type, const char *node, size_t node_len) {
  *p++ = WIRE_VERSION;
  *p++ = (uint8_t)type;
  *p++ = (uint8_t)node_len;
  memcpy(p, node, node_len);
  return p + node_len;
}

static uint8_t *put_room(uint8_t *p, const char *room, size_t room_len) {
  *p++ = (uint8_t)room_len;
  memcpy(p, room, room_len);
  return p + room_len;
}

size_t wire_encode_member(uint8_t *buf, wire_type type, const char *node, size_t node_len,
                          uint64_t sid, const char *room, size_t room_len) {
  uint8_t *p = put_head(buf, type, node, node_len);
  p = put(p, sid, 8);
  p = put_room(p, room, room_len);
  return (size_t)(p - buf);
}

size_t wire_encode_chat(uint8_t *buf, const char *node, size_t node_len, uint64_t sid,
                        const char *room, size_t room_len, const char *text, size_t text_len) {
  uint8_t *p = put_head(buf, WIRE_CHAT, node, node_len);
  p = put(p, sid, 8);
  p = put_room(p, room, room_len);
  p = put(p, text_len, 2);
  memcpy(p, text, text_len);
  return (size_t)(p + text_len - buf);
}

void wire_snap_begin(wire_snap *s, uint8_t *buf, const char *node, size_t node_len,
                     uint32_t snap_id, uint32_t chunk) {
  uint8_t *p = put_head(buf, WIRE_SNAPSHOT, node, node_len);
  p = put(p, snap_id, 4);
  p = put(p, chunk, 4);
  s->buf = buf;
  s->flags_at = (size_t)(p - buf);
  *p++ = 0;
  s->count_at = (size_t)(p - buf);
  p = put(p, 0, 4);
  s->len = (size_t)(p - buf);
  s->count = 0;
}

int wire_snap_add(wire_snap *s, uint64_t sid, const char *room, size_t room_len) {
  if (s->count == WIRE_SNAP_ENTRIES_MAX || s->len + 9 + room_len > WIRE_SNAP_CHUNK_BYTES)
    return -ENOSPC;
  put_room(put(s->buf + s->len, sid, 8), room, room_len);
  s->len += 9 + room_len;
  s->count++;
  return 0;
}

size_t wire_snap_end(wire_snap *s, unsigned flags) {
  s->buf[s->flags_at] = (uint8_t)flags;
  put(s->buf + s->count_at, s->count, 4);
  return s->len;
}

void wire_subject(char *out, const char *room, size_t room_len) {
  static const char hex[] = "0123456789abcdef";
  memcpy(out, "room.", 5);
  out += 5;
  for (size_t i = 0; i < room_len; i++) {
    uint8_t c = (uint8_t)room[i];
    *out++ = hex[c >> 4];
    *out++ = hex[c & 15];
  }
  *out = '\0';
}
