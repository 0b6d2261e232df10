/* The chat plugin's bus protocol: what one node's chat tells the others
 * (joins, leaves, chat lines and membership snapshots), as compact binary
 * payloads. Encoders write into a caller's buffer; the decoder checks a
 * payload completely (every length, every name, no trailing bytes) before
 * anything of it is used, and never allocates. Plain data: no host calls,
 * no state, any thread. The layout is in README.md ("Across nodes"). */
#ifndef PIER_CHAT_WIRE_H
#define PIER_CHAT_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define WIRE_VERSION 1
#define WIRE_NODE_MAX 32  /* bytes of a node name: [A-Za-z0-9_-] */
#define WIRE_ROOM_MAX 32  /* bytes of a room name: UTF-8 */
#define WIRE_TEXT_MAX 512 /* bytes of a chat line: UTF-8 */
/* A snapshot chunk is cut before it passes this many bytes (64 KiB, well
 * below the bus's 1 MiB and NATS's default max_payload); a decoder refuses
 * chunks that claim more entries than WIRE_SNAP_ENTRIES_MAX. */
#define WIRE_SNAP_CHUNK_BYTES 65536
#define WIRE_SNAP_ENTRIES_MAX 8192
/* Largest join, leave or chat payload. */
#define WIRE_MSG_MAX (4 + WIRE_NODE_MAX + 8 + 1 + WIRE_ROOM_MAX + 2 + WIRE_TEXT_MAX)

typedef enum wire_type {
  WIRE_JOIN = 1,
  WIRE_LEAVE = 2,
  WIRE_CHAT = 3,
  WIRE_SNAPSHOT = 4
} wire_type;

/* Snapshot flags. */
#define WIRE_SNAP_LAST 1u   /* the last chunk: what it did not list is gone */
#define WIRE_SNAP_ANSWER 2u /* the sender asks every node for its own snapshot */

/* A decoded payload. Pointers point into the payload given to wire_decode. */
typedef struct wire_msg {
  wire_type type;
  const char *node; /* the sending node */
  size_t node_len;
  uint64_t sid;     /* join, leave, chat */
  const char *room; /* join, leave, chat */
  size_t room_len;
  const char *text; /* chat */
  size_t text_len;
  uint32_t snap_id; /* snapshot: the sender's number for this snapshot */
  uint32_t chunk;   /* snapshot: 0, 1, ... within it */
  unsigned flags;   /* snapshot: WIRE_SNAP_* */
  uint32_t count;   /* snapshot: entries in this chunk */
  const uint8_t *entries; /* snapshot: count checked entries, for wire_snap_next */
  size_t entries_len;
} wire_msg;

/* 1 if s[0..len) is 1..WIRE_NODE_MAX bytes of [A-Za-z0-9_-]. */
bool wire_node_ok(const char *s, size_t len);
/* 1 if s[0..len) is well-formed UTF-8 (no overlong forms, surrogates or code
 * points above U+10FFFF). */
bool wire_utf8_ok(const void *s, size_t len);

/* Checks data[0..len) and fills *m: 0, or -EINVAL with *why naming what is
 * wrong (a static string). Node names, room names and text are checked as
 * the limits above say; sids are non-zero. */
int wire_decode(const void *data, size_t len, wire_msg *m, const char **why);
/* The next entry of a decoded snapshot: *pos (a byte offset) starts at 0.
 * Returns false after the last. */
bool wire_snap_next(const wire_msg *m, size_t *pos, uint64_t *sid, const char **room,
                    size_t *room_len);

/* A join, leave (type) or chat (text non-NULL) into buf, which has room for
 * WIRE_MSG_MAX bytes; returns its length. Arguments are trusted (the caller
 * checked them). */
size_t wire_encode_member(uint8_t *buf, wire_type type, const char *node, size_t node_len,
                          uint64_t sid, const char *room, size_t room_len);
size_t wire_encode_chat(uint8_t *buf, const char *node, size_t node_len, uint64_t sid,
                        const char *room, size_t room_len, const char *text, size_t text_len);

/* Builds one snapshot chunk in a WIRE_SNAP_CHUNK_BYTES buffer: begin writes
 * the header, add appends an entry (-ENOSPC when it would pass
 * WIRE_SNAP_CHUNK_BYTES or WIRE_SNAP_ENTRIES_MAX: send this chunk and begin
 * the next), end sets the flags and returns the length. */
typedef struct wire_snap {
  uint8_t *buf;
  size_t len;
  uint32_t count;
  size_t count_at; /* offset of the count field */
  size_t flags_at;
} wire_snap;
void wire_snap_begin(wire_snap *s, uint8_t *buf, const char *node, size_t node_len,
                     uint32_t snap_id, uint32_t chunk);
int wire_snap_add(wire_snap *s, uint64_t sid, const char *room, size_t room_len);
size_t wire_snap_end(wire_snap *s, unsigned flags);

/* The subject of a room's messages, "room.<name in lowercase hex>", into out
 * (WIRE_SUBJECT_MAX bytes, NUL-terminated). Snapshots go to WIRE_SUBJECT_SNAP;
 * one subscription, WIRE_SUBJECT_ALL, takes both. */
#define WIRE_SUBJECT_MAX (5 + 2 * WIRE_ROOM_MAX + 1)
#define WIRE_SUBJECT_SNAP "room.snapshot"
#define WIRE_SUBJECT_ALL "room.*"
void wire_subject(char *out, const char *room, size_t room_len);

#endif
