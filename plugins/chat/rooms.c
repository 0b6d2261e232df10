/* Room registry of the chat plugin (see rooms.h): a doubly linked list of
 * rooms with a hash index by name, an open-addressing table from sid to
 * member entry, the remote members (a slab of entries indexed by (node,
 * sid), chained per node), UTF-8 checking, and the state blob handed across
 * hot reloads. */
#include "rooms.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "wire.h"

#define STATE_MAGIC "PCHT"
#define STATE_V1 1u
#define STATE_V2 2u
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
  free(r->rooms_tab);
  free(r->tab);
  free(r->nodes);
  free(r->slab);
  free(r->remote_tab);
  chat_rooms_init(r);
}

/* ---- rooms ---- */

/* FNV-1a: room names are short, and any bytes. */
static size_t name_hash(const char *name, size_t len) {
  uint64_t x = 0xcbf29ce484222325ull;
  for (size_t i = 0; i < len; i++)
    x = (x ^ (uint8_t)name[i]) * 0x100000001b3ull;
  return (size_t)(x ^ (x >> 32));
}

chat_room *chat_room_find(const chat_rooms *r, const char *name, size_t len) {
  size_t mask = r->rooms_cap - 1;
  if (!r->rooms_tab)
    return NULL;
  for (size_t i = name_hash(name, len) & mask; r->rooms_tab[i]; i = (i + 1) & mask) {
    chat_room *room = r->rooms_tab[i];
    if (room->name_len == len && memcmp(room->name, name, len) == 0)
      return room;
  }
  return NULL;
}

static void rooms_tab_put(chat_room **tab, size_t cap, chat_room *room) {
  size_t i = name_hash(room->name, room->name_len) & (cap - 1);
  while (tab[i])
    i = (i + 1) & (cap - 1);
  tab[i] = room;
}

/* Keeps the name index at most half full with n rooms: 0, or -ENOMEM. */
static int rooms_tab_reserve(chat_rooms *r, size_t n) {
  size_t cap = r->rooms_cap ? r->rooms_cap : TAB_MIN_CAP;
  chat_room **tab;
  while (n * 2 > cap)
    cap *= 2;
  if (cap == r->rooms_cap)
    return 0;
  if (!(tab = calloc(cap, sizeof(*tab))))
    return -ENOMEM;
  for (chat_room *room = r->head; room; room = room->next)
    rooms_tab_put(tab, cap, room);
  free(r->rooms_tab);
  r->rooms_tab = tab;
  r->rooms_cap = cap;
  return 0;
}

/* Takes room out of the name index (backward-shift deletion, as for sids). */
static void rooms_tab_del(chat_rooms *r, chat_room *room) {
  size_t mask = r->rooms_cap - 1, hole, j;
  for (hole = name_hash(room->name, room->name_len) & mask; r->rooms_tab[hole] != room;
       hole = (hole + 1) & mask)
    ;
  r->rooms_tab[hole] = NULL;
  for (j = (hole + 1) & mask; r->rooms_tab[j]; j = (j + 1) & mask) {
    chat_room *e = r->rooms_tab[j];
    size_t home = name_hash(e->name, e->name_len) & mask;
    if (((j - home) & mask) >= ((j - hole) & mask)) {
      r->rooms_tab[hole] = e;
      r->rooms_tab[j] = NULL;
      hole = j;
    }
  }
}

chat_room *chat_room_create(chat_rooms *r, const char *name, size_t len) {
  chat_room *room;
  if (len == 0 || len > CHAT_ROOM_NAME_MAX)
    return NULL;
  if (rooms_tab_reserve(r, r->nrooms + 1) < 0)
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
  rooms_tab_put(r->rooms_tab, r->rooms_cap, room);
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
  rooms_tab_del(r, room);
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

/* ---- remote members ---- */

int chat_node_get(chat_rooms *r, const char *name, size_t len, bool create) {
  size_t free_slot = SIZE_MAX;
  chat_node *n;
  for (size_t i = 0; i < r->nnodes; i++) {
    if (r->nodes[i].len == len && memcmp(r->nodes[i].name, name, len) == 0)
      return (int)i;
    if (r->nodes[i].len == 0 && free_slot == SIZE_MAX)
      free_slot = i;
  }
  if (!create)
    return -ENOENT;
  if (len == 0 || len > CHAT_NODE_NAME_MAX)
    return -EINVAL;
  if (free_slot == SIZE_MAX) {
    if (r->nnodes == CHAT_NODES_MAX)
      return -ENOSPC;
    if (!r->nodes) {
      /* All CHAT_NODES_MAX slots at once (about 80 KB): node indices must
       * not move, and the table is small. */
      if (!(r->nodes = calloc(CHAT_NODES_MAX, sizeof(*r->nodes))))
        return -ENOMEM;
    }
    free_slot = r->nnodes++;
  }
  n = &r->nodes[free_slot];
  memset(n, 0, sizeof(*n));
  memcpy(n->name, name, len);
  n->len = len;
  n->head = CHAT_NONE;
  return (int)free_slot;
}

void chat_node_release(chat_rooms *r, uint32_t node) {
  chat_node *n = &r->nodes[node];
  if (n->len == 0 || n->n != 0 || n->snap_open)
    return;
  n->len = 0;
  while (r->nnodes && r->nodes[r->nnodes - 1].len == 0)
    r->nnodes--;
}

static size_t remote_hash(uint32_t node, pier_sid sid) {
  return sid_hash(sid ^ ((uint64_t)node * 0x9e3779b97f4a7c15ull));
}

chat_remote *chat_remote_find(const chat_rooms *r, uint32_t node, pier_sid sid) {
  size_t mask = r->remote_cap - 1;
  if (!r->remote_tab || sid == 0)
    return NULL;
  for (size_t i = remote_hash(node, sid) & mask; r->remote_tab[i]; i = (i + 1) & mask) {
    chat_remote *e = &r->slab[r->remote_tab[i] - 1];
    if (e->sid == sid && e->node == node)
      return e;
  }
  return NULL;
}

/* Grows the (node, sid) index to stay at most half full with n entries. */
static int remote_tab_reserve(chat_rooms *r, size_t n) {
  size_t cap = r->remote_cap ? r->remote_cap : TAB_MIN_CAP;
  uint32_t *tab;
  while (n * 2 > cap)
    cap *= 2;
  if (cap == r->remote_cap)
    return 0;
  if (!(tab = calloc(cap, sizeof(*tab))))
    return -ENOMEM;
  for (size_t i = 0; i < r->remote_cap; i++) {
    uint32_t v = r->remote_tab[i];
    size_t j;
    if (!v)
      continue;
    for (j = remote_hash(r->slab[v - 1].node, r->slab[v - 1].sid) & (cap - 1); tab[j];
         j = (j + 1) & (cap - 1))
      ;
    tab[j] = v;
  }
  free(r->remote_tab);
  r->remote_tab = tab;
  r->remote_cap = cap;
  return 0;
}

int chat_remote_add(chat_rooms *r, uint32_t node, pier_sid sid, chat_room *room) {
  chat_node *n = &r->nodes[node];
  uint32_t idx;
  chat_remote *e;
  size_t j, mask;
  if (r->nremote >= CHAT_REMOTE_MAX)
    return -ENOSPC;
  if (remote_tab_reserve(r, r->nremote + 1) < 0)
    return -ENOMEM;
  if (r->free_head) {
    idx = r->free_head - 1;
    r->free_head = r->slab[idx].next;
  } else {
    if (r->slab_len == r->slab_cap) {
      size_t cap = r->slab_cap ? r->slab_cap * 2 : 64;
      chat_remote *v;
      if (cap > CHAT_REMOTE_MAX)
        cap = CHAT_REMOTE_MAX;
      if (!(v = realloc(r->slab, cap * sizeof(*v))))
        return -ENOMEM;
      r->slab = v;
      r->slab_cap = cap;
    }
    idx = (uint32_t)r->slab_len++;
  }
  e = &r->slab[idx];
  *e = (chat_remote){.sid = sid, .room = room, .node = node, .mark = n->gen,
                     .prev = CHAT_NONE, .next = n->head};
  if (n->head != CHAT_NONE)
    r->slab[n->head].prev = idx;
  n->head = idx;
  n->n++;
  room->nremote++;
  r->nremote++;
  mask = r->remote_cap - 1;
  for (j = remote_hash(node, sid) & mask; r->remote_tab[j]; j = (j + 1) & mask)
    ;
  r->remote_tab[j] = idx + 1;
  return 0;
}

void chat_remote_remove(chat_rooms *r, chat_remote *e) {
  uint32_t idx = (uint32_t)(e - r->slab);
  chat_node *n = &r->nodes[e->node];
  size_t mask = r->remote_cap - 1, hole, j;

  for (hole = remote_hash(e->node, e->sid) & mask; r->remote_tab[hole] != idx + 1;
       hole = (hole + 1) & mask)
    ;
  r->remote_tab[hole] = 0;
  for (j = (hole + 1) & mask; r->remote_tab[j]; j = (j + 1) & mask) {
    chat_remote *o = &r->slab[r->remote_tab[j] - 1];
    size_t home = remote_hash(o->node, o->sid) & mask;
    if (((j - home) & mask) >= ((j - hole) & mask)) {
      r->remote_tab[hole] = r->remote_tab[j];
      r->remote_tab[j] = 0;
      hole = j;
    }
  }
  if (e->prev != CHAT_NONE)
    r->slab[e->prev].next = e->next;
  else
    n->head = e->next;
  if (e->next != CHAT_NONE)
    r->slab[e->next].prev = e->prev;
  n->n--;
  e->room->nremote--;
  r->nremote--;
  e->sid = 0;
  e->room = NULL;
  e->next = r->free_head;
  r->free_head = idx + 1;
}

/* ---- UTF-8 ---- */

bool chat_utf8_valid(const void *s, size_t len) { return wire_utf8_ok(s, len); }

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
  size_t len = 12, nrooms = 0, nnodes = 0;
  bool v2 = r->nremote > 0;
  uint8_t *blob, *p;
  for (const chat_room *room = r->head; room; room = room->next)
    if (room->n) {
      len += 1 + room->name_len + 4 + room->n * 8;
      nrooms++;
    }
  if (v2) {
    len += 4;
    for (size_t i = 0; i < r->nnodes; i++) {
      const chat_node *n = &r->nodes[i];
      if (n->len == 0 || n->n == 0)
        continue;
      nnodes++;
      len += 1 + n->len + 4;
      for (uint32_t k = n->head; k != CHAT_NONE; k = r->slab[k].next)
        len += 8 + 1 + r->slab[k].room->name_len;
    }
  }
  blob = malloc(len);
  if (!blob)
    return -ENOMEM;
  p = blob;
  memcpy(p, STATE_MAGIC, 4);
  p += 4;
  put_u32(&p, v2 ? STATE_V2 : STATE_V1);
  put_u32(&p, (uint32_t)nrooms);
  for (const chat_room *room = r->head; room; room = room->next) {
    if (!room->n)
      continue;
    *p++ = (uint8_t)room->name_len;
    memcpy(p, room->name, room->name_len);
    p += room->name_len;
    put_u32(&p, (uint32_t)room->n);
    for (size_t i = 0; i < room->n; i++)
      put_u64(&p, room->members[i]);
  }
  if (v2) {
    put_u32(&p, (uint32_t)nnodes);
    for (size_t i = 0; i < r->nnodes; i++) {
      const chat_node *n = &r->nodes[i];
      if (n->len == 0 || n->n == 0)
        continue;
      *p++ = (uint8_t)n->len;
      memcpy(p, n->name, n->len);
      p += n->len;
      put_u32(&p, (uint32_t)n->n);
      for (uint32_t k = n->head; k != CHAT_NONE; k = r->slab[k].next) {
        const chat_remote *e = &r->slab[k];
        put_u64(&p, e->sid);
        *p++ = (uint8_t)e->room->name_len;
        memcpy(p, e->room->name, e->room->name_len);
        p += e->room->name_len;
      }
    }
  }
  *out = blob;
  *out_len = len;
  return 0;
}

/* Version 2's remote members, from p to end; see chat_rooms_load. */
static int load_remote(chat_rooms *r, const uint8_t *p, const uint8_t *end, const char **why) {
  uint32_t nnodes;
  if (end - p < 4) {
    *why = "truncated node count";
    return -EINVAL;
  }
  nnodes = get_u32(p);
  p += 4;
  if (nnodes > CHAT_NODES_MAX) {
    *why = "too many nodes";
    return -EINVAL;
  }
  for (uint32_t k = 0; k < nnodes; k++) {
    size_t name_len;
    const char *name;
    uint32_t nmembers;
    int node;
    if (end - p < 1) {
      *why = "truncated node";
      return -EINVAL;
    }
    name_len = *p++;
    name = (const char *)p;
    if ((size_t)(end - p) < name_len + 4 || !wire_node_ok(name, name_len)) {
      *why = "bad node name";
      return -EINVAL;
    }
    if (chat_node_get(r, name, name_len, false) >= 0) {
      *why = "repeated node";
      return -EINVAL;
    }
    /* nnodes <= CHAT_NODES_MAX: only memory can fail here. */
    if ((node = chat_node_get(r, name, name_len, true)) < 0)
      return -ENOMEM;
    p += name_len;
    nmembers = get_u32(p);
    p += 4;
    /* At least 10 bytes a member: sid, room name length, one byte of name. */
    if (nmembers == 0 || nmembers > (size_t)(end - p) / 10 ||
        nmembers > CHAT_REMOTE_MAX - r->nremote) {
      *why = "bad remote member count";
      return -EINVAL;
    }
    for (uint32_t i = 0; i < nmembers; i++) {
      pier_sid sid;
      size_t room_len;
      const char *room_name;
      chat_room *room;
      if (end - p < 9) {
        *why = "truncated remote member";
        return -EINVAL;
      }
      sid = get_u64(p);
      room_len = p[8];
      p += 9;
      room_name = (const char *)p;
      if (room_len == 0 || room_len > CHAT_ROOM_NAME_MAX || (size_t)(end - p) < room_len ||
          !chat_utf8_valid(room_name, room_len)) {
        *why = "bad remote member room name";
        return -EINVAL;
      }
      p += room_len;
      if (sid == 0 || chat_remote_find(r, (uint32_t)node, sid)) {
        *why = "zero or repeated remote member sid";
        return -EINVAL;
      }
      if (!(room = chat_room_find(r, room_name, room_len))) {
        if (r->nrooms >= CHAT_ROOMS_MAX) {
          *why = "too many rooms";
          return -EINVAL;
        }
        if (!(room = chat_room_create(r, room_name, room_len)))
          return -ENOMEM;
      }
      if (chat_remote_add(r, (uint32_t)node, sid, room) < 0)
        return -ENOMEM;
    }
  }
  if (p != end) {
    *why = "trailing bytes";
    return -EINVAL;
  }
  return 0;
}

/* Parses the blob into r (empty on entry); see chat_rooms_load. */
static int load_into(chat_rooms *r, const uint8_t *p, size_t len, const char **why) {
  const uint8_t *end = p + len;
  uint32_t nrooms, version;
  if (len < 12) {
    *why = "shorter than its header";
    return -EINVAL;
  }
  if (memcmp(p, STATE_MAGIC, 4) != 0) {
    *why = "bad magic";
    return -EINVAL;
  }
  version = get_u32(p + 4);
  if (version != STATE_V1 && version != STATE_V2) {
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
  if (version == STATE_V2)
    return load_remote(r, p, end, why);
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
