/* Room registry of the chat plugin: rooms by name with their member sids, the
 * room of every session by sid, the members other nodes of a cluster have in
 * each room (keyed by node and sid), and the versioned blob that carries all
 * of it from one version of the plugin to the next on a hot reload. Plain
 * data: no locking and no host calls; chat.c holds its mutex around every
 * call. */
#ifndef PIER_CHAT_ROOMS_H
#define PIER_CHAT_ROOMS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pier/plugin.h"

#define CHAT_ROOM_NAME_MAX 32
#define CHAT_NODE_NAME_MAX 32

/* Bounds on what other nodes can make this one hold, so that a buggy or
 * hostile node cannot make it grow without end: remote members in all
 * (about 48 bytes each, so 1,000,000 is about 48 MB: a cluster of 16 nodes
 * with 60,000 players each), distinct remote nodes (pierd itself knows at
 * most 1024), and rooms (a room made for a remote member is refused past
 * CHAT_ROOMS_MAX; local players may always make one, as without a cluster). */
#define CHAT_REMOTE_MAX 1000000
#define CHAT_NODES_MAX 1024
#define CHAT_ROOMS_MAX 100000
#define CHAT_NONE UINT32_MAX

typedef struct chat_room {
  char name[CHAT_ROOM_NAME_MAX];
  size_t name_len;
  pier_sid *members; /* local sessions, unordered */
  size_t n, cap;
  size_t nremote;    /* remote members in it (chat_remote.room) */
  struct chat_room *prev, *next;
} chat_room;

/* Another node, as far as its members go. len 0: a free slot. */
typedef struct chat_node {
  char name[CHAT_NODE_NAME_MAX];
  size_t len;
  uint32_t head;     /* its first member (chat_rooms.slab index), or CHAT_NONE */
  size_t n;          /* its members */
  /* A snapshot being received (chat.c): gen marks the members it listed. */
  uint32_t gen, snap_id, snap_next;
  bool snap_open;
} chat_node;

/* A member on another node. sid 0: a free slab entry. Pointers to entries
 * are valid only until the next chat_remote_add; indices stay valid until
 * the entry is removed. */
typedef struct chat_remote {
  pier_sid sid;
  chat_room *room;
  uint32_t node;       /* chat_rooms.nodes index */
  uint32_t mark;       /* the node's gen when last listed or joined */
  uint32_t prev, next; /* the node's members (CHAT_NONE ends); a free entry's
                          next is the next free one + 1 */
} chat_remote;

/* Member flags. */
#define CHAT_MEMBER_CLOSING 1u  /* the plugin asked the host to close it */
#define CHAT_MEMBER_RESTORED 2u /* came from a state blob, not yet seen live */

/* A session the plugin knows about. Pointers to entries are valid only until
 * the next chat_member_get or chat_member_remove. */
typedef struct chat_member {
  pier_sid sid; /* 0: empty slot */
  chat_room *room;
  unsigned flags;
} chat_member;

typedef struct chat_rooms {
  chat_room *head;
  size_t nrooms;
  chat_room **rooms_tab; /* rooms by name: open addressing, power-of-two capacity */
  size_t rooms_cap;
  chat_member *tab; /* open addressing, capacity a power of two */
  size_t cap, n;
  /* Remote members (rooms.c "remote members"). */
  chat_node *nodes;
  size_t nnodes;        /* slots in use or freed: nodes[0..nnodes) */
  chat_remote *slab;
  size_t slab_len, slab_cap;
  uint32_t free_head;   /* first free slab entry + 1 (0: none), so that a
                           zeroed registry is an empty one */
  uint32_t *remote_tab; /* (node, sid) -> slab index + 1; 0 empty */
  size_t remote_cap;
  size_t nremote;
} chat_rooms;

/* Empty registry. */
void chat_rooms_init(chat_rooms *r);
/* Frees every room and member; r is empty afterwards. */
void chat_rooms_free(chat_rooms *r);

/* The room named exactly name[0..len), or NULL. */
chat_room *chat_room_find(const chat_rooms *r, const char *name, size_t len);
/* A new empty room (len 1..CHAT_ROOM_NAME_MAX, not already present); NULL if
 * out of memory. */
chat_room *chat_room_create(chat_rooms *r, const char *name, size_t len);
/* Adds sid to room's members: 0, or -ENOMEM. Does not touch the sid table. */
int chat_room_add(chat_room *room, pier_sid sid);
/* Drops sid from room's members if present. */
void chat_room_remove(chat_room *room, pier_sid sid);
/* Unlinks and frees room; members' entries must no longer point at it. */
void chat_room_destroy(chat_rooms *r, chat_room *room);

/* The entry for sid, or NULL. */
chat_member *chat_member_find(const chat_rooms *r, pier_sid sid);
/* The entry for sid, made (no room, no flags) if missing; NULL if out of
 * memory or sid is 0. */
chat_member *chat_member_get(chat_rooms *r, pier_sid sid);
/* Forgets sid's entry (its room is not touched). */
void chat_member_remove(chat_rooms *r, pier_sid sid);

/* ---- remote members ---- */

/* The index of the node named name[0..len) (valid node name), made if
 * create and missing: >= 0, -ENOENT (missing, !create), -ENOSPC (past
 * CHAT_NODES_MAX), -ENOMEM. */
int chat_node_get(chat_rooms *r, const char *name, size_t len, bool create);
/* Frees node's slot if it has no members and no snapshot open. */
void chat_node_release(chat_rooms *r, uint32_t node);
/* The entry of (node, sid), or NULL. */
chat_remote *chat_remote_find(const chat_rooms *r, uint32_t node, pier_sid sid);
/* Adds (node, sid), not present yet, to room, marked with the node's gen:
 * 0, -ENOSPC (past CHAT_REMOTE_MAX), -ENOMEM. */
int chat_remote_add(chat_rooms *r, uint32_t node, pier_sid sid, chat_room *room);
/* Forgets the entry (room->nremote drops; the room itself is not freed). */
void chat_remote_remove(chat_rooms *r, chat_remote *e);

/* 1 if s[0..len) is well-formed UTF-8 (no overlong forms, surrogates or code
 * points above U+10FFFF). */
bool chat_utf8_valid(const void *s, size_t len);

/* Serializes every room and its members into a malloc'd blob:
 *   "PCHT" | u32 version | u32 room count |
 *   per room: u8 name length | name | u32 member count | u64 sid * count
 * then, in version 2 only:
 *   u32 node count | per node: u8 name length | name | u32 member count |
 *     per member: u64 sid | u8 room name length | room name
 * all little-endian. Rooms list local members only (rooms with none are
 * left out); version 1 is written when there are no remote members, so a
 * node without a cluster hands over exactly what 1.0.0 did. Returns 0, or
 * -ENOMEM. */
int chat_rooms_save(const chat_rooms *r, void **out, size_t *out_len);
/* Rebuilds rooms and members (flagged CHAT_MEMBER_RESTORED), and remote
 * members, from a blob of version 1 or 2 made by chat_rooms_save into the
 * empty registry r. On a malformed blob returns
 * -EINVAL with *why saying what is wrong and leaves r empty; -ENOMEM likewise
 * when memory runs out. */
int chat_rooms_load(chat_rooms *r, const void *blob, size_t len, const char **why);

#endif
