/* chat: chat rooms over u16_size_id packets. A client joins one room at a
 * time (rooms are made on demand and vanish with their last member) and its
 * text goes to everyone in that room; the protocol is in README.md. */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pier/plugin.h"
#include "rooms.h"

/* Threading: correct under "serial" and "session" threading alike. All room
 * state sits behind one mutex; a callback decides what to send while holding
 * it, collects the packets in an outbox, and hands them to the host only
 * after unlocking, so no host function is ever called under the lock.
 *
 * Hot reload: on_unload hands the rooms and their members to the next
 * version as a versioned blob (rooms.h), which on_load validates and
 * restores. */

enum { C_JOIN = 1, C_CHAT = 2, S_CHAT = 101, S_SYSTEM = 102 };

#define TEXT_MAX 512
#define NOTICE_MAX 96 /* "<u64 decimal> joined <32-byte room>" and the like */

/* Whether the host table h has a usable entry fn. */
#define HOST_HAS(h, fn) ((h)->size >= offsetof(pier_host, fn) + sizeof((h)->fn) && (h)->fn)

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static chat_rooms g_rooms; /* guarded by g_mu */
/* Set by on_load before any other callback runs, cleared by on_unload. */
static const pier_host *g_host;

/* Packets received, by kind (ABI 1.2 metrics; NULL on an older host). The
 * host keeps them across a reload, so the count goes on. */
enum { K_JOIN, K_CHAT, K_OTHER, K_COUNT };
static pier_series *g_packets[K_COUNT];

/* ---- outbox: packets decided under the lock, sent after it ---- */

typedef struct out_msg {
  pier_sid one;  /* the recipient when nto == 1 */
  pier_sid *to;  /* malloc'd recipients when nto > 1 */
  size_t nto;
  uint8_t *pkt;  /* malloc'd whole packet, header included */
  size_t len;
} out_msg;

typedef struct outbox {
  out_msg *v;
  size_t n, cap;
  pier_sid close_sid; /* non-zero: close this session after sending */
  pier_reason close_reason;
  size_t dropped; /* packets lost to a failed allocation */
} outbox;

/* Queues one packet with body a[0..alen) b[0..blen) for the nto sessions in
 * to (copied). Counts a failed allocation in ob->dropped instead. */
static void outbox_packet(outbox *ob, const pier_sid *to, size_t nto, uint16_t id,
                          const void *a, size_t alen, const void *b, size_t blen) {
  size_t len = 4 + alen + blen;
  out_msg msg = {.nto = nto, .len = len};
  if (nto == 0)
    return;
  if (len > UINT16_MAX) {
    ob->dropped++;
    return;
  }
  if (ob->n == ob->cap) {
    size_t cap = ob->cap ? ob->cap * 2 : 4;
    out_msg *v = realloc(ob->v, cap * sizeof(*v));
    if (!v) {
      ob->dropped++;
      return;
    }
    ob->v = v;
    ob->cap = cap;
  }
  msg.pkt = malloc(len);
  if (nto == 1) {
    msg.one = to[0];
  } else {
    msg.to = malloc(nto * sizeof(*to));
    if (msg.to)
      memcpy(msg.to, to, nto * sizeof(*to));
  }
  if (!msg.pkt || (nto > 1 && !msg.to)) {
    free(msg.pkt);
    free(msg.to);
    ob->dropped++;
    return;
  }
  msg.pkt[0] = (uint8_t)len;
  msg.pkt[1] = (uint8_t)(len >> 8);
  msg.pkt[2] = (uint8_t)id;
  msg.pkt[3] = (uint8_t)(id >> 8);
  if (alen)
    memcpy(msg.pkt + 4, a, alen);
  if (blen)
    memcpy(msg.pkt + 4 + alen, b, blen);
  ob->v[ob->n++] = msg;
}

/* Queues an S_SYSTEM notice with text[0..len) for the nto sessions in to. */
static void outbox_system(outbox *ob, const pier_sid *to, size_t nto, const char *text,
                          size_t len) {
  outbox_packet(ob, to, nto, S_SYSTEM, text, len, NULL, 0);
}

/* Queues an S_SYSTEM notice with a C string for sid alone. */
static void outbox_reply(outbox *ob, pier_sid sid, const char *text) {
  outbox_system(ob, &sid, 1, text, strlen(text));
}

/* Sends everything queued, in order, then performs the requested close, then
 * frees the outbox. Must be called without g_mu held. */
static void outbox_flush(const pier_host *h, outbox *ob) {
  for (size_t i = 0; i < ob->n; i++) {
    out_msg *msg = &ob->v[i];
    if (msg->nto == 1)
      (void)h->send(h, msg->one, msg->pkt, msg->len);
    else
      (void)h->broadcast(h, msg->to, msg->nto, msg->pkt, msg->len);
    free(msg->pkt);
    free(msg->to);
  }
  free(ob->v);
  if (ob->close_sid)
    (void)h->close(h, ob->close_sid, ob->close_reason);
  if (ob->dropped)
    h->log(h, PIER_LOG_WARN, "out of memory: %zu packets not sent", ob->dropped);
  memset(ob, 0, sizeof(*ob));
}

/* ---- room events (g_mu held) ---- */

/* Writes "<sid> <verb> <room>" into buf (NOTICE_MAX bytes); returns its
 * length. */
static size_t notice_text(char *buf, pier_sid sid, const char *verb, const chat_room *room) {
  int n = snprintf(buf, NOTICE_MAX - CHAT_ROOM_NAME_MAX, "%" PRIu64 " %s ", sid, verb);
  memcpy(buf + n, room->name, room->name_len);
  return (size_t)n + room->name_len;
}

/* Tells room's members that sid (already removed) left it. */
static void notify_left(outbox *ob, pier_sid sid, const chat_room *room) {
  char text[NOTICE_MAX];
  size_t len = notice_text(text, sid, "left", room);
  outbox_system(ob, room->members, room->n, text, len);
}

/* Takes sid out of its room (if any) with a leave notice to the rest, and
 * forgets the session. */
static void leave_locked(outbox *ob, pier_sid sid) {
  chat_member *m = chat_member_find(&g_rooms, sid);
  chat_room *room;
  if (!m)
    return;
  room = m->room;
  chat_member_remove(&g_rooms, sid);
  if (!room)
    return;
  chat_room_remove(room, sid);
  if (room->n == 0)
    chat_room_destroy(&g_rooms, room);
  else
    notify_left(ob, sid, room);
}

/* C_JOIN: moves m into the room named by body, making it if needed. */
static void join_locked(outbox *ob, chat_member *m, const char *name, size_t len) {
  pier_sid sid = m->sid;
  chat_room *room, *old = m->room;
  bool made = false;
  char text[NOTICE_MAX];
  size_t tlen;

  if (len == 0 || len > CHAT_ROOM_NAME_MAX) {
    outbox_reply(ob, sid, "room name must be 1..32 bytes");
    return;
  }
  if (!chat_utf8_valid(name, len)) {
    outbox_reply(ob, sid, "room name must be valid utf-8");
    return;
  }
  if (old && old->name_len == len && memcmp(old->name, name, len) == 0) {
    tlen = (size_t)snprintf(text, sizeof(text), "already in ");
    memcpy(text + tlen, name, len);
    outbox_system(ob, &sid, 1, text, tlen + len);
    return;
  }
  room = chat_room_find(&g_rooms, name, len);
  if (!room) {
    room = chat_room_create(&g_rooms, name, len);
    made = true;
  }
  if (!room || chat_room_add(room, sid) < 0) {
    if (room && made)
      chat_room_destroy(&g_rooms, room);
    outbox_reply(ob, sid, "server is out of memory, try again later");
    return;
  }
  m->room = room;
  if (old) {
    chat_room_remove(old, sid);
    if (old->n == 0)
      chat_room_destroy(&g_rooms, old);
    else
      notify_left(ob, sid, old);
  }
  tlen = notice_text(text, sid, "joined", room);
  outbox_system(ob, room->members, room->n, text, tlen);
}

/* C_CHAT: relays the text to every member of m's room, m included. */
static void chat_locked(outbox *ob, chat_member *m, const char *text, size_t len) {
  uint8_t from[8];
  if (!m->room) {
    outbox_reply(ob, m->sid, "join a room first");
    return;
  }
  if (len == 0 || len > TEXT_MAX) {
    outbox_reply(ob, m->sid, "message must be 1..512 bytes");
    return;
  }
  if (!chat_utf8_valid(text, len)) {
    outbox_reply(ob, m->sid, "message must be valid utf-8");
    return;
  }
  for (int i = 0; i < 8; i++)
    from[i] = (uint8_t)(m->sid >> (8 * i));
  outbox_packet(ob, m->room->members, m->room->n, S_CHAT, from, sizeof(from), text, len);
}

/* ---- callbacks ---- */

/* Handles one whole packet. A session the plugin has asked to close gets no
 * further answers. */
static void chat_recv(pier_sid sid, const void *data, size_t len) {
  const pier_host *h = g_host;
  outbox ob = {0};
  chat_member *m;
  const char *body;
  uint16_t id;
  int kind = K_OTHER;

  if (!h)
    return;
  pthread_mutex_lock(&g_mu);
  m = chat_member_get(&g_rooms, sid);
  if (!m) {
    ob.dropped++;
    goto out;
  }
  if (m->flags & CHAT_MEMBER_CLOSING)
    goto out;
  m->flags &= ~CHAT_MEMBER_RESTORED;
  if (len < 4 || pier_packet_size(data) != len) {
    /* Not u16_size_id framing: nothing here can be trusted. */
    m->flags |= CHAT_MEMBER_CLOSING;
    ob.close_sid = sid;
    ob.close_reason = PIER_REASON_CLOSED;
    goto out;
  }
  id = pier_packet_id(data);
  body = (const char *)data + 4;
  switch (id) {
  case C_JOIN:
    kind = K_JOIN;
    join_locked(&ob, m, body, len - 4);
    break;
  case C_CHAT:
    kind = K_CHAT;
    chat_locked(&ob, m, body, len - 4);
    break;
  default: {
    char text[32];
    int n = snprintf(text, sizeof(text), "unknown packet id %u", (unsigned)id);
    outbox_system(&ob, &sid, 1, text, (size_t)n);
    m->flags |= CHAT_MEMBER_CLOSING;
    ob.close_sid = sid;
    ob.close_reason = PIER_REASON_CLOSED;
    break;
  }
  }
out:
  pthread_mutex_unlock(&g_mu);
  if (g_packets[kind])
    h->metric_add(h, g_packets[kind], 1);
  outbox_flush(h, &ob);
}

/* A session ended: leave notice to its room, if it was in one. */
static void chat_disconnected(pier_sid sid, pier_reason reason) {
  const pier_host *h = g_host;
  outbox ob = {0};
  if (!h)
    return;
  pthread_mutex_lock(&g_mu);
  leave_locked(&ob, sid);
  pthread_mutex_unlock(&g_mu);
  outbox_flush(h, &ob);
}

static int cmp_sid(const void *a, const void *b) {
  pier_sid x = *(const pier_sid *)a, y = *(const pier_sid *)b;
  return (x > y) - (x < y);
}

/* Runs once after a restore: members carried over from the previous version
 * whose sessions ended in between (and so will never be reported to this
 * version) leave their rooms, with the usual notice. */
static void prune_job(void *arg) {
  const pier_host *h = g_host;
  pier_sid *live = NULL, *stale = NULL;
  size_t cap = 256, total, nstale = 0;
  outbox ob = {0};

  if (!h)
    return;
  for (;;) {
    pier_sid *p = realloc(live, cap * sizeof(*p));
    if (!p) {
      free(live);
      h->log(h, PIER_LOG_WARN, "out of memory: restored rooms not checked for ended sessions");
      return;
    }
    live = p;
    total = h->sessions(h, live, cap);
    if (total <= cap)
      break;
    cap = total + total / 4 + 16;
  }
  qsort(live, total, sizeof(*live), cmp_sid);

  pthread_mutex_lock(&g_mu);
  stale = malloc((g_rooms.n ? g_rooms.n : 1) * sizeof(*stale));
  for (size_t i = 0; stale && i < g_rooms.cap; i++) {
    chat_member *m = &g_rooms.tab[i];
    if (m->sid == 0 || !(m->flags & CHAT_MEMBER_RESTORED))
      continue;
    m->flags &= ~CHAT_MEMBER_RESTORED;
    if (!bsearch(&m->sid, live, total, sizeof(*live), cmp_sid))
      stale[nstale++] = m->sid;
  }
  for (size_t i = 0; i < nstale; i++)
    leave_locked(&ob, stale[i]);
  pthread_mutex_unlock(&g_mu);

  outbox_flush(h, &ob);
  if (!stale)
    h->log(h, PIER_LOG_WARN, "out of memory: restored rooms not checked for ended sessions");
  else if (nstale)
    h->log(h, PIER_LOG_INFO, "sessions that ended during the reload left their rooms: %zu",
           nstale);
  free(stale);
  free(live);
}

/* chat_packets_total{kind}, when the host has metrics. A failure only
 * leaves the packets uncounted (the host logged why). */
static void declare_metrics(const pier_host *h) {
  static const char *const label[] = {"kind"};
  static const char *const kinds[K_COUNT][1] = {{"join"}, {"chat"}, {"other"}};
  pier_metric_spec spec = {.size = sizeof(spec), .type = PIER_METRIC_COUNTER,
                           .name = "packets_total", .help = "Packets received, by kind.",
                           .labels = label, .nlabels = 1};
  pier_metric *m;
  if (!HOST_HAS(h, metric_observe) || h->metric_declare(h, &spec, &m) < 0)
    return;
  for (int k = 0; k < K_COUNT; k++)
    (void)h->metric_series(h, m, kinds[k], &g_packets[k]);
}

/* Takes the host table and, after a reload, the previous version's rooms.
 * Refuses (-ENOTSUP) a host lacking send, broadcast, close or log. A state
 * blob that does not validate is logged and ignored: the plugin then starts
 * with no rooms. */
static int chat_load(const pier_load_args *args) {
  const pier_host *h = args ? args->host : NULL;
  chat_rooms restored;
  const char *why;
  size_t members;
  int rc;

  if (!h || h->abi_major != PIER_ABI_MAJOR || !HOST_HAS(h, send) || !HOST_HAS(h, broadcast) ||
      !HOST_HAS(h, close) || !HOST_HAS(h, log))
    return -ENOTSUP;
  g_host = h;
  declare_metrics(h);
  if (args->size < offsetof(pier_load_args, state_len) + sizeof(args->state_len) ||
      !args->state)
    return 0;

  chat_rooms_init(&restored);
  rc = chat_rooms_load(&restored, args->state, args->state_len, &why);
  if (rc < 0) {
    h->log(h, PIER_LOG_WARN, "previous state ignored (%s, %zu bytes): starting with no rooms",
           why, args->state_len);
    return 0;
  }
  members = restored.n;
  pthread_mutex_lock(&g_mu);
  chat_rooms_free(&g_rooms);
  g_rooms = restored;
  pthread_mutex_unlock(&g_mu);
  h->log(h, PIER_LOG_INFO, "restored %zu rooms with %zu members", restored.nrooms, members);
  if (members && HOST_HAS(h, sessions) && HOST_HAS(h, post))
    (void)h->post(h, prune_job, NULL);
  return 0;
}

/* Hands the rooms to the next version (the host frees the blob) and frees
 * everything. If the blob cannot be made the next version starts empty. */
static void chat_unload(pier_state *out) {
  const pier_host *h = g_host;
  void *blob = NULL;
  size_t len = 0;
  int rc;

  pthread_mutex_lock(&g_mu);
  rc = chat_rooms_save(&g_rooms, &blob, &len);
  chat_rooms_free(&g_rooms);
  pthread_mutex_unlock(&g_mu);
  if (rc < 0 && h)
    h->log(h, PIER_LOG_WARN, "out of memory: rooms not handed over, the next version starts "
                             "with none");
  if (rc == 0 && out) {
    out->data = blob;
    out->len = len;
  } else {
    free(blob);
  }
  g_host = NULL;
}

PIER_PLUGIN("chat", "1.0.0", .on_load = chat_load, .on_unload = chat_unload,
            .on_recv = chat_recv, .on_disconnected = chat_disconnected);
