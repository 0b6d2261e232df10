/* Room registry of the chat plugin: rooms by name with their member sids, the
 * room of every session by sid, and the versioned blob that carries all of it
 * from one version of the plugin to the next on a hot reload. Plain data: no
 * locking and no host calls; chat.c holds its mutex around every call. */
#ifndef PIER_CHAT_ROOMS_H
#define PIER_CHAT_ROOMS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pier/plugin.h"

#define CHAT_ROOM_NAME_MAX 32

typedef struct chat_room {
  char name[CHAT_ROOM_NAME_MAX];
  size_t name_len;
  pier_sid *members; /* unordered */
  size_t n, cap;
  struct chat_room *prev, *next;
} chat_room;

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
  chat_member *tab; /* open addressing, capacity a power of two */
  size_t cap, n;
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

/* 1 if s[0..len) is well-formed UTF-8 (no overlong forms, surrogates or code
 * points above U+10FFFF). */
bool chat_utf8_valid(const void *s, size_t len);

/* Serializes every room and its members into a malloc'd blob:
 *   "PCHT" | u32 version (1) | u32 room count |
 *   per room: u8 name length | name | u32 member count | u64 sid * count
 * all little-endian. Returns 0, or -ENOMEM. */
int chat_rooms_save(const chat_rooms *r, void **out, size_t *out_len);
/* Rebuilds rooms and members (flagged CHAT_MEMBER_RESTORED) from a blob made
 * by chat_rooms_save into the empty registry r. On a malformed blob returns
 * -EINVAL with *why saying what is wrong and leaves r empty; -ENOMEM likewise
 * when memory runs out. */
int chat_rooms_load(chat_rooms *r, const void *blob, size_t len, const char **why);

#endif
