/* Room registry of the chat plugin (see rooms.h): a doubly linked list of
 * rooms, an open-addressing table from sid to member entry, UTF-8 checking,
 * and the state blob handed across hot reloads. */
#include "rooms.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define STATE_MAGIC "PCHT"
#define STATE_VERSION 1u
#define TAB_MIN_CAP 64

void chat_rooms_init(chat_rooms *r) { memset(r, 0, sizeof(*r)); }

void chat_rooms_free(chat_rooms *r) {
  chat_room *room = r->head;
  while (room) {
    chat_room *next = room->next;
    free(room->members);
    free(room);
    room = next;
  }
  free(r->tab);
  chat_rooms_init(r);
}

/* ---- rooms ---- */

chat_room *chat_room_find(const chat_rooms *r, const char *name, size_t len) {
  for (chat_room *room = r->head; room; room = room->next)
    if (room->name_len == len && memcmp(room->name, name, len) == 0)
      return room;
  return NULL;
}

chat_room *chat_room_create(chat_rooms *r, const char *name, size_t len) {
  chat_room *room;
  if (len == 0 || len > CHAT_ROOM_NAME_MAX)
    return NULL;
  room = calloc(1, sizeof(*room));
  if (!room)
    return NULL;
  memcpy(room->name, name, len);
  room->name_len = len;
  room->next = r->head;
  if (r->head)
    r->head->prev = room;
  r->head = room;
  r->nrooms++;
  return room;
}

int chat_room_add(chat_room *room, pier_sid sid) {
  if (room->n == room->cap) {
    size_t cap = room->cap ? room->cap * 2 : 4;
    pier_sid *m = realloc(room->members, cap * sizeof(*m));
    if (!m)
      return -ENOMEM;
    room->members = m;
    room->cap = cap;
  }
  room->members[room->n++] = sid;
  return 0;
}

void chat_room_remove(chat_room *room, pier_sid sid) {
  for (size_t i = 0; i < room->n; i++) {
    if (room->members[i] == sid) {
      room->members[i] = room->members[--room->n];
      return;
    }
  }
}

void chat_room_destroy(chat_rooms *r, chat_room *room) {
  if (room->prev)
    room->prev->next = room->next;
  else
    r->head = room->next;
  if (room->next)
    room->next->prev = room->prev;
  r->nrooms--;
  free(room->members);
  free(room);
}

/* ---- sid table ---- */

/* Mixes all 64 bits of a sid into a table index. */
static size_t sid_hash(pier_sid sid) {
  uint64_t x = sid;
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebull;
  x ^= x >> 31;
  return (size_t)x;
}

chat_member *chat_member_find(const chat_rooms *r, pier_sid sid) {
  if (!r->tab || sid == 0)
    return NULL;
  for (size_t i = sid_hash(sid) & (r->cap - 1);; i = (i + 1) & (r->cap - 1)) {
    if (r->tab[i].sid == sid)
      return &r->tab[i];
    if (r->tab[i].sid == 0)
      return NULL;
  }
}

/* Places e into tab (which has a free slot and does not hold e->sid). */
static chat_member *tab_put(chat_member *tab, size_t cap, const chat_member *e) {
  size_t i = sid_hash(e->sid) & (cap - 1);
  while (tab[i].sid != 0)
    i = (i + 1) & (cap - 1);
  tab[i] = *e;
  return &tab[i];
}

/* Grows the table to keep it at most half full: 0, or -ENOMEM. */
static int tab_reserve(chat_rooms *r, size_t n) {
  size_t cap = r->cap ? r->cap : TAB_MIN_CAP;
  chat_member *tab;
  while (n * 2 > cap) {
    if (cap > SIZE_MAX / 2 / sizeof(*tab))
      return -ENOMEM;
    cap *= 2;
  }
  if (cap == r->cap)
    return 0;
  tab = calloc(cap, sizeof(*tab));
  if (!tab)
    return -ENOMEM;
  for (size_t i = 0; i < r->cap; i++)
    if (r->tab[i].sid != 0)
      tab_put(tab, cap, &r->tab[i]);
  free(r->tab);
  r->tab = tab;
  r->cap = cap;
  return 0;
}

chat_member *chat_member_get(chat_rooms *r, pier_sid sid) {
  chat_member *m = chat_member_find(r, sid);
  chat_member e = {.sid = sid};
  if (m || sid == 0)
    return m;
  if (tab_reserve(r, r->n + 1) < 0)
    return NULL;
  r->n++;
  return tab_put(r->tab, r->cap, &e);
}

void chat_member_remove(chat_rooms *r, pier_sid sid) {
  chat_member *m = chat_member_find(r, sid);
  size_t mask = r->cap - 1, hole, j;
  if (!m)
    return;
  /* Backward-shift deletion: pull later entries of the probe run into the
   * hole when their home slot does not lie between the hole and them. */
  hole = (size_t)(m - r->tab);
  r->tab[hole].sid = 0;
  r->n--;
  for (j = (hole + 1) & mask; r->tab[j].sid != 0; j = (j + 1) & mask) {
    size_t home = sid_hash(r->tab[j].sid) & mask;
    if (((j - home) & mask) >= ((j - hole) & mask)) {
      r->tab[hole] = r->tab[j];
      r->tab[j].sid = 0;
      hole = j;
    }
  }
}

/* ---- UTF-8 ---- */

bool chat_utf8_valid(const void *s, size_t len) {
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

/* ---- state blob ---- */

static void put_u32(uint8_t **p, uint32_t v) {
  for (int i = 0; i < 4; i++)
    *(*p)++ = (uint8_t)(v >> (8 * i));
}

static void put_u64(uint8_t **p, uint64_t v) {
  for (int i = 0; i < 8; i++)
    *(*p)++ = (uint8_t)(v >> (8 * i));
}

static uint32_t get_u32(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get_u64(const uint8_t *p) {
  return (uint64_t)get_u32(p) | (uint64_t)get_u32(p + 4) << 32;
}

int chat_rooms_save(const chat_rooms *r, void **out, size_t *out_len) {
  size_t len = 12;
  uint8_t *blob, *p;
  for (const chat_room *room = r->head; room; room = room->next)
    len += 1 + room->name_len + 4 + room->n * 8;
  blob = malloc(len);
  if (!blob)
    return -ENOMEM;
  p = blob;
  memcpy(p, STATE_MAGIC, 4);
  p += 4;
  put_u32(&p, STATE_VERSION);
  put_u32(&p, (uint32_t)r->nrooms);
  for (const chat_room *room = r->head; room; room = room->next) {
    *p++ = (uint8_t)room->name_len;
    memcpy(p, room->name, room->name_len);
    p += room->name_len;
    put_u32(&p, (uint32_t)room->n);
    for (size_t i = 0; i < room->n; i++)
      put_u64(&p, room->members[i]);
  }
  *out = blob;
  *out_len = len;
  return 0;
}

/* Parses the blob into r (empty on entry); see chat_rooms_load. */
static int load_into(chat_rooms *r, const uint8_t *p, size_t len, const char **why) {
  const uint8_t *end = p + len;
  uint32_t nrooms;
  if (len < 12) {
    *why = "shorter than its header";
    return -EINVAL;
  }
  if (memcmp(p, STATE_MAGIC, 4) != 0) {
    *why = "bad magic";
    return -EINVAL;
  }
  if (get_u32(p + 4) != STATE_VERSION) {
    *why = "unsupported version";
    return -EINVAL;
  }
  nrooms = get_u32(p + 8);
  p += 12;
  for (uint32_t k = 0; k < nrooms; k++) {
    size_t name_len;
    const char *name;
    uint32_t nmembers;
    chat_room *room;
    if (end - p < 1) {
      *why = "truncated room";
      return -EINVAL;
    }
    name_len = *p++;
    name = (const char *)p;
    if (name_len == 0 || name_len > CHAT_ROOM_NAME_MAX || (size_t)(end - p) < name_len + 4) {
      *why = "bad room name length";
      return -EINVAL;
    }
    if (!chat_utf8_valid(name, name_len) || chat_room_find(r, name, name_len)) {
      *why = "bad or repeated room name";
      return -EINVAL;
    }
    p += name_len;
    nmembers = get_u32(p);
    p += 4;
    if (nmembers == 0 || nmembers > (size_t)(end - p) / 8) {
      *why = "bad member count";
      return -EINVAL;
    }
    room = chat_room_create(r, name, name_len);
    if (!room)
      return -ENOMEM;
    for (uint32_t i = 0; i < nmembers; i++, p += 8) {
      pier_sid sid = get_u64(p);
      chat_member *m;
      if (sid == 0 || chat_member_find(r, sid)) {
        *why = "zero or repeated member sid";
        return -EINVAL;
      }
      m = chat_member_get(r, sid);
      if (!m || chat_room_add(room, sid) < 0)
        return -ENOMEM;
      m->room = room;
      m->flags = CHAT_MEMBER_RESTORED;
    }
  }
  if (p != end) {
    *why = "trailing bytes";
    return -EINVAL;
  }
  return 0;
}

int chat_rooms_load(chat_rooms *r, const void *blob, size_t len, const char **why) {
  int rc;
  *why = "out of memory";
  if (!blob) {
    *why = "no data";
    return -EINVAL;
  }
  rc = load_into(r, blob, len, why);
  if (rc < 0)
    chat_rooms_free(r);
  return rc;
}
