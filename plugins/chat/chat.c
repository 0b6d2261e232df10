/* chat: chat rooms over u16_size_id packets. A client joins one room at a
 * time (rooms are made on demand and vanish with their last member) and its
 * text goes to everyone in that room; the protocol is in README.md. With a
 * cluster bus (ABI 1.3, server.json "cluster") a room is the same room on
 * every node: the code below tells the other nodes what happens here and
 * applies what they say (README.md, "Across nodes"). */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pier/plugin.h"
#include "rooms.h"
#include "wire.h"

/* Threading: correct under "serial" and "session" threading alike. All room
 * state sits behind one mutex; a callback decides what to send while holding
 * it, collects the packets in an outbox, and hands them to the host only
 * after unlocking, so no host function is ever called under the lock.
 *
 * Hot reload: on_unload hands the rooms and their members (remote ones
 * too) to the next version as a versioned blob (rooms.h), which on_load
 * validates and restores.
 *
 * Bus: what other nodes must learn is encoded under the mutex, in the order
 * the state changed, into one FIFO (g_bus); after unlocking, whichever
 * thread finds nobody draining it publishes everything queued, one message
 * at a time and without the lock. So the bus sees this node's changes in the
 * order they happened even under "session" threading (a snapshot can never
 * overtake or be overtaken by a join), and no host call is made under the
 * mutex. Local delivery is decided and sent before, and never waits for, the
 * bus. */

enum { C_JOIN = 1, C_CHAT = 2, S_CHAT = 101, S_SYSTEM = 102, S_CHAT_REMOTE = 103 };

#define TEXT_MAX 512
#define NOTICE_MAX 96 /* "<node>/<u64 decimal> joined <32-byte room>" and the like */
/* Bytes of bus messages queued at most; past it messages are dropped (and
 * counted as publish failures) rather than held without bound. */
#define BUS_QUEUE_MAX (64u << 20)
#define LOG_EVERY_MS 1000

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

/* ---- cluster state ---- */

/* This node's name; set by on_load before any other callback, only when the
 * host has a bus and a node name (else g_clustered stays false and nothing
 * below runs). */
static bool g_clustered;
static char g_node[CHAT_NODE_NAME_MAX];
static size_t g_node_len;

/* One message waiting to be published. */
typedef struct bus_msg {
  struct bus_msg *next;
  char subject[WIRE_SUBJECT_MAX];
  size_t len;
  uint8_t data[];
} bus_msg;

/* The FIFO of messages to publish (g_mu). */
static struct {
  bus_msg *head, *tail;
  size_t bytes;
  bool draining;      /* a thread is publishing what is queued */
  uint64_t dropped;   /* not queued (memory, BUS_QUEUE_MAX) since last drained */
  bool answer_posted; /* a snapshot answer job is pending */
  uint32_t snap_id;
} g_bus;

/* At most one log line a second per kind; what was held back is counted
 * into the next line. */
typedef struct ratelog {
  _Atomic uint64_t last_ms;
  _Atomic uint64_t held;
} ratelog;
static ratelog g_rl_reject, g_rl_publish, g_rl_refuse;

/* chat_bus_*_total, when the host has metrics and a cluster. */
enum { B_REJECTED, B_PUBLISH_FAILED, B_REFUSED, B_COUNT };
static pier_series *g_busm[B_COUNT];

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

/* ---- the bus queue (README.md, "Across nodes") ---- */

/* Appends a message of len bytes for subject (made by fill into its data)
 * to the FIFO; g_mu held. Without a cluster it does nothing. Returns the
 * message's data to fill, or NULL (counted in g_bus.dropped). */
static uint8_t *bus_queue_locked(const char *subject, size_t len) {
  bus_msg *msg;
  if (!g_clustered)
    return NULL;
  if (g_bus.bytes + len > BUS_QUEUE_MAX || !(msg = malloc(sizeof(*msg) + len))) {
    g_bus.dropped++;
    return NULL;
  }
  msg->next = NULL;
  snprintf(msg->subject, sizeof(msg->subject), "%s", subject);
  msg->len = len;
  if (g_bus.tail)
    g_bus.tail->next = msg;
  else
    g_bus.head = msg;
  g_bus.tail = msg;
  g_bus.bytes += len;
  return msg->data;
}

/* Trims the last queued message to len bytes (it was sized for the most). */
static void bus_trim_locked(size_t len) {
  g_bus.bytes -= g_bus.tail->len - len;
  g_bus.tail->len = len;
}

/* Tells the other nodes that local session sid joined or left room. */
static void bus_member_locked(wire_type type, pier_sid sid, const chat_room *room) {
  char subject[WIRE_SUBJECT_MAX];
  uint8_t *p;
  if (!g_clustered)
    return;
  wire_subject(subject, room->name, room->name_len);
  if ((p = bus_queue_locked(subject, WIRE_MSG_MAX)))
    bus_trim_locked(wire_encode_member(p, type, g_node, g_node_len, sid, room->name,
                                       room->name_len));
}

/* Tells the other nodes what local session sid said in room. */
static void bus_chat_locked(pier_sid sid, const chat_room *room, const char *text, size_t len) {
  char subject[WIRE_SUBJECT_MAX];
  uint8_t *p;
  if (!g_clustered)
    return;
  wire_subject(subject, room->name, room->name_len);
  if ((p = bus_queue_locked(subject, WIRE_MSG_MAX)))
    bus_trim_locked(wire_encode_chat(p, g_node, g_node_len, sid, room->name, room->name_len,
                                     text, len));
}

/* Queues this node's membership (every local member and its room) as one
 * snapshot, cut into chunks of at most WIRE_SNAP_CHUNK_BYTES; flags go on
 * the last chunk. A chunk that cannot be queued ends the snapshot there:
 * the receivers never see its last chunk, so they drop nobody. */
static void bus_snapshot_locked(unsigned flags) {
  uint32_t id = ++g_bus.snap_id, chunk = 0;
  wire_snap snap;
  uint8_t *p;
  if (!g_clustered || !(p = bus_queue_locked(WIRE_SUBJECT_SNAP, WIRE_SNAP_CHUNK_BYTES)))
    return;
  wire_snap_begin(&snap, p, g_node, g_node_len, id, chunk);
  for (const chat_room *room = g_rooms.head; room; room = room->next) {
    for (size_t i = 0; i < room->n; i++) {
      if (wire_snap_add(&snap, room->members[i], room->name, room->name_len) == 0)
        continue;
      bus_trim_locked(wire_snap_end(&snap, 0));
      if (!(p = bus_queue_locked(WIRE_SUBJECT_SNAP, WIRE_SNAP_CHUNK_BYTES)))
        return;
      wire_snap_begin(&snap, p, g_node, g_node_len, id, ++chunk);
      (void)wire_snap_add(&snap, room->members[i], room->name, room->name_len);
    }
  }
  bus_trim_locked(wire_snap_end(&snap, flags | WIRE_SNAP_LAST));
}

/* 1 if a line of this kind may be logged now; *held gets how many were held
 * back since the last one. */
static bool ratelog_ok(const pier_host *h, ratelog *rl, uint64_t *held) {
  uint64_t now = HOST_HAS(h, now) ? h->now(h) : 0, last = atomic_load(&rl->last_ms);
  if ((last != 0 && now - last < LOG_EVERY_MS) ||
      !atomic_compare_exchange_strong(&rl->last_ms, &last, now ? now : 1)) {
    atomic_fetch_add(&rl->held, 1);
    return false;
  }
  *held = atomic_exchange(&rl->held, 0);
  return true;
}

/* " (N more since the last line)" when lines were held back, else "". */
static const char *held_text(char *buf, size_t size, uint64_t held) {
  if (!held)
    return "";
  snprintf(buf, size, " (%" PRIu64 " more since the last line)", held);
  return buf;
}

static void bus_count(const pier_host *h, int which, double n) {
  if (g_busm[which] && n > 0)
    h->metric_add(h, g_busm[which], n);
}

/* Publishes everything queued, in order, unless another thread already is
 * (it will publish what we queued too). Must be called without g_mu held.
 * A failed publish is counted and logged (rate-limited), never retried: the
 * next snapshot repairs what the other nodes missed. */
static void bus_drain(const pier_host *h) {
  uint64_t dropped, held;
  char hb[64];
  pthread_mutex_lock(&g_mu);
  if (g_bus.draining || (!g_bus.head && !g_bus.dropped)) {
    pthread_mutex_unlock(&g_mu);
    return;
  }
  g_bus.draining = true;
  for (;;) {
    bus_msg *msg = g_bus.head;
    int rc;
    dropped = g_bus.dropped;
    g_bus.dropped = 0;
    if (msg) {
      g_bus.head = msg->next;
      if (!g_bus.head)
        g_bus.tail = NULL;
      g_bus.bytes -= msg->len;
    } else {
      g_bus.draining = false;
    }
    pthread_mutex_unlock(&g_mu);
    if (dropped) {
      bus_count(h, B_PUBLISH_FAILED, (double)dropped);
      if (ratelog_ok(h, &g_rl_publish, &held))
        h->log(h, PIER_LOG_WARN,
               "bus: %" PRIu64 " messages not published (out of memory or over %u bytes "
               "queued): other nodes miss them until the next snapshot%s",
               dropped, BUS_QUEUE_MAX, held_text(hb, sizeof(hb), held));
    }
    if (!msg)
      return;
    rc = h->publish(h, msg->subject, msg->data, msg->len);
    if (rc < 0) {
      bus_count(h, B_PUBLISH_FAILED, 1);
      if (ratelog_ok(h, &g_rl_publish, &held))
        h->log(h, PIER_LOG_WARN,
               "bus: publish of %zu bytes to \"%s\" failed (%d): other nodes miss it%s",
               msg->len, msg->subject, rc, held_text(hb, sizeof(hb), held));
    }
    free(msg);
    pthread_mutex_lock(&g_mu);
  }
}

/* Frees whatever is still queued (on_unload: nobody is draining then). */
static void bus_discard_locked(void) {
  while (g_bus.head) {
    bus_msg *msg = g_bus.head;
    g_bus.head = msg->next;
    free(msg);
  }
  memset(&g_bus, 0, sizeof(g_bus));
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
  bus_member_locked(WIRE_LEAVE, sid, room);
  if (room->n == 0 && room->nremote == 0)
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
    bus_member_locked(WIRE_LEAVE, sid, old);
    if (old->n == 0 && old->nremote == 0)
      chat_room_destroy(&g_rooms, old);
    else
      notify_left(ob, sid, old);
  }
  bus_member_locked(WIRE_JOIN, sid, room);
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
  bus_chat_locked(m->sid, m->room, text, len);
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
  if (g_clustered)
    bus_drain(h);
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
  if (g_clustered)
    bus_drain(h);
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
  if (g_clustered)
    bus_drain(h);
  if (!stale)
    h->log(h, PIER_LOG_WARN, "out of memory: restored rooms not checked for ended sessions");
  else if (nstale)
    h->log(h, PIER_LOG_INFO, "sessions that ended during the reload left their rooms: %zu",
           nstale);
  free(stale);
  free(live);
}

/* ---- members on other nodes (g_mu held) ---- */

/* What went wrong while applying a bus message, to log after unlocking. */
typedef struct bus_note {
  const char *refused; /* why a remote member was refused, or NULL */
  size_t nrefused;
  const char *bad;     /* why a message was ignored, or NULL */
  bool answer;         /* the sender asked for our snapshot */
} bus_note;

/* Writes "<node>/<sid> <verb> <room>" into buf (NOTICE_MAX bytes). */
static size_t remote_notice_text(char *buf, const chat_node *n, pier_sid sid, const char *verb,
                                 const chat_room *room) {
  int k = snprintf(buf, NOTICE_MAX - CHAT_ROOM_NAME_MAX, "%.*s/%" PRIu64 " %s ", (int)n->len,
                   n->name, sid, verb);
  memcpy(buf + k, room->name, room->name_len);
  return (size_t)k + room->name_len;
}

/* Takes remote member e out of its room, with a leave notice to the local
 * members there. */
static void remote_leave_locked(outbox *ob, chat_remote *e) {
  chat_room *room = e->room;
  const chat_node *n = &g_rooms.nodes[e->node];
  pier_sid sid = e->sid;
  char text[NOTICE_MAX];
  size_t len;
  chat_remote_remove(&g_rooms, e);
  if (room->n == 0 && room->nremote == 0) {
    chat_room_destroy(&g_rooms, room);
    return;
  }
  len = remote_notice_text(text, n, sid, "left", room);
  outbox_system(ob, room->members, room->n, text, len);
}

/* Puts (node, sid) into the room named name: a member already there is only
 * marked as current; one in another room moves (leave notice there, join
 * notice here). Past the bounds of rooms.h it is refused (noted in *note). */
static void remote_join_locked(outbox *ob, bus_note *note, uint32_t node, pier_sid sid,
                               const char *name, size_t len) {
  chat_remote *e = chat_remote_find(&g_rooms, node, sid);
  chat_room *room;
  char text[NOTICE_MAX];
  size_t tlen;
  int rc;

  if (e && e->room->name_len == len && memcmp(e->room->name, name, len) == 0) {
    e->mark = g_rooms.nodes[node].gen;
    return;
  }
  if (e)
    remote_leave_locked(ob, e);
  room = chat_room_find(&g_rooms, name, len);
  if (!room) {
    if (g_rooms.nrooms >= CHAT_ROOMS_MAX) {
      note->refused = "too many rooms";
      note->nrefused++;
      return;
    }
    if (!(room = chat_room_create(&g_rooms, name, len))) {
      note->refused = "out of memory";
      note->nrefused++;
      return;
    }
  }
  if ((rc = chat_remote_add(&g_rooms, node, sid, room)) < 0) {
    note->refused = rc == -ENOSPC ? "too many remote members" : "out of memory";
    note->nrefused++;
    if (room->n == 0 && room->nremote == 0)
      chat_room_destroy(&g_rooms, room);
    return;
  }
  tlen = remote_notice_text(text, &g_rooms.nodes[node], sid, "joined", room);
  outbox_system(ob, room->members, room->n, text, tlen);
}

/* Every member of node leaves its room; the node is forgotten. */
static void remote_node_gone_locked(outbox *ob, uint32_t node) {
  chat_node *n = &g_rooms.nodes[node];
  for (uint32_t k = n->head; k != CHAT_NONE;) {
    uint32_t next = g_rooms.slab[k].next;
    remote_leave_locked(ob, &g_rooms.slab[k]);
    k = next;
  }
  n->snap_open = false;
  chat_node_release(&g_rooms, node);
}

/* A remote chat line: S_CHAT_REMOTE to the local members of the room. */
static void remote_chat_locked(outbox *ob, const wire_msg *m) {
  chat_room *room = chat_room_find(&g_rooms, m->room, m->room_len);
  uint8_t from[1 + CHAT_NODE_NAME_MAX + 8];
  size_t n = 0;
  if (!room || room->n == 0)
    return;
  from[n++] = (uint8_t)m->node_len;
  memcpy(from + n, m->node, m->node_len);
  n += m->node_len;
  for (int i = 0; i < 8; i++)
    from[n++] = (uint8_t)(m->sid >> (8 * i));
  outbox_packet(ob, room->members, room->n, S_CHAT_REMOTE, from, n, m->text, m->text_len);
}

/* One snapshot chunk from node: chunk 0 opens a snapshot (a new mark), the
 * next chunks must follow in order, and the last one drops every member of
 * node that no chunk listed and that did not join since it opened. A chunk
 * out of sequence (one was lost) closes the snapshot without dropping
 * anybody. */
static void remote_snapshot_locked(outbox *ob, bus_note *note, uint32_t node,
                                   const wire_msg *m) {
  chat_node *n = &g_rooms.nodes[node];
  size_t pos = 0, room_len;
  const char *room;
  pier_sid sid;

  if (m->chunk == 0) {
    n->gen++;
    n->snap_open = true;
    n->snap_id = m->snap_id;
  } else if (!n->snap_open || n->snap_id != m->snap_id || n->snap_next != m->chunk) {
    n->snap_open = false;
    note->bad = "snapshot chunk out of sequence";
    return;
  }
  n->snap_next = m->chunk + 1;
  while (wire_snap_next(m, &pos, &sid, &room, &room_len))
    remote_join_locked(ob, note, node, sid, room, room_len);
  if (m->flags & WIRE_SNAP_LAST) {
    n->snap_open = false;
    for (uint32_t k = n->head; k != CHAT_NONE;) {
      uint32_t next = g_rooms.slab[k].next;
      if (g_rooms.slab[k].mark != n->gen)
        remote_leave_locked(ob, &g_rooms.slab[k]);
      k = next;
    }
  }
  note->answer = (m->flags & WIRE_SNAP_ANSWER) != 0;
}

/* Applies one decoded message from another node. */
static void remote_apply_locked(outbox *ob, bus_note *note, const wire_msg *m) {
  int node = chat_node_get(&g_rooms, m->node, m->node_len, m->type != WIRE_LEAVE);
  chat_remote *e;
  if (node == -ENOENT)
    return; /* a leave from a node we hold nobody of */
  if (node < 0) {
    note->refused = node == -ENOSPC ? "too many nodes" : "out of memory";
    note->nrefused++;
    return;
  }
  switch (m->type) {
  case WIRE_JOIN:
    remote_join_locked(ob, note, (uint32_t)node, m->sid, m->room, m->room_len);
    break;
  case WIRE_LEAVE:
    if ((e = chat_remote_find(&g_rooms, (uint32_t)node, m->sid)))
      remote_leave_locked(ob, e);
    break;
  case WIRE_CHAT:
    remote_chat_locked(ob, m);
    break;
  case WIRE_SNAPSHOT:
    remote_snapshot_locked(ob, note, (uint32_t)node, m);
    break;
  }
  chat_node_release(&g_rooms, (uint32_t)node);
}

/* ---- cluster callbacks ---- */

/* Runs once after snapshots that asked for an answer came in: publishes
 * this node's snapshot (one for the whole burst). */
static void answer_job(void *arg) {
  const pier_host *h = g_host;
  (void)arg;
  if (!h || !g_clustered)
    return;
  pthread_mutex_lock(&g_mu);
  g_bus.answer_posted = false;
  bus_snapshot_locked(0);
  pthread_mutex_unlock(&g_mu);
  bus_drain(h);
}

/* Logs (rate-limited) and counts what note says went wrong. */
static void bus_report(const pier_host *h, const bus_note *note, const wire_msg *m) {
  uint64_t held;
  char hb[64];
  if (note->bad) {
    bus_count(h, B_REJECTED, 1);
    if (ratelog_ok(h, &g_rl_reject, &held))
      h->log(h, PIER_LOG_WARN, "bus: ignored a message from node \"%.*s\": %s%s",
             (int)m->node_len, m->node, note->bad, held_text(hb, sizeof(hb), held));
  }
  if (note->nrefused) {
    bus_count(h, B_REFUSED, (double)note->nrefused);
    if (ratelog_ok(h, &g_rl_refuse, &held))
      h->log(h, PIER_LOG_WARN, "bus: refused %zu members of node \"%.*s\": %s%s",
             note->nrefused, (int)m->node_len, m->node, note->refused,
             held_text(hb, sizeof(hb), held));
  }
}

/* A bus message on "room.*": decoded strictly; a payload that fails, or
 * whose subject is not the one its content belongs on, is counted and
 * logged (at most a line a second) and otherwise ignored. Our own messages
 * come back from the bus and are skipped. */
static void chat_message(const char *subject, const void *data, size_t len,
                         const char *reply_to) {
  const pier_host *h = g_host;
  char expect[WIRE_SUBJECT_MAX];
  bus_note note = {0};
  outbox ob = {0};
  const char *why;
  wire_msg m;
  bool post = false;

  (void)reply_to;
  if (!h || !g_clustered)
    return;
  if (wire_decode(data, len, &m, &why) < 0) {
    uint64_t held;
  char hb[64];
    bus_count(h, B_REJECTED, 1);
    if (ratelog_ok(h, &g_rl_reject, &held))
      h->log(h, PIER_LOG_WARN, "bus: ignored %zu bytes on \"%s\": %s%s", len,
             subject ? subject : "", why, held_text(hb, sizeof(hb), held));
    return;
  }
  if (m.node_len == g_node_len && memcmp(m.node, g_node, g_node_len) == 0)
    return;
  if (m.type == WIRE_SNAPSHOT)
    snprintf(expect, sizeof(expect), "%s", WIRE_SUBJECT_SNAP);
  else
    wire_subject(expect, m.room, m.room_len);
  if (!subject || strcmp(subject, expect) != 0) {
    note.bad = "subject does not match the room";
    bus_report(h, &note, &m);
    return;
  }
  pthread_mutex_lock(&g_mu);
  remote_apply_locked(&ob, &note, &m);
  if (note.answer && !g_bus.answer_posted)
    g_bus.answer_posted = post = true;
  pthread_mutex_unlock(&g_mu);
  outbox_flush(h, &ob);
  bus_report(h, &note, &m);
  if (post && (!HOST_HAS(h, post) || h->post(h, answer_job, NULL) < 0))
    answer_job(NULL);
}

/* A node went: its members leave every room here. A node came: it gets our
 * snapshot, and is asked for its own (it may have been gone only to us). */
static void chat_node_event(const char *node, int up) {
  const pier_host *h = g_host;
  outbox ob = {0};
  int idx;
  if (!h || !g_clustered || !node || !wire_node_ok(node, strlen(node)) ||
      (strlen(node) == g_node_len && memcmp(node, g_node, g_node_len) == 0))
    return;
  pthread_mutex_lock(&g_mu);
  if (up) {
    bus_snapshot_locked(WIRE_SNAP_ANSWER);
  } else if ((idx = chat_node_get(&g_rooms, node, strlen(node), false)) >= 0) {
    remote_node_gone_locked(&ob, (uint32_t)idx);
  }
  pthread_mutex_unlock(&g_mu);
  outbox_flush(h, &ob);
  bus_drain(h);
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

/* chat_bus_rejected_total, chat_bus_publish_failed_total and
 * chat_remote_refused_total, declared only on a node with a cluster (so a
 * node without one shows exactly the metrics it did). */
static void declare_bus_metrics(const pier_host *h) {
  static const char *const names[B_COUNT] = {"bus_rejected_total", "bus_publish_failed_total",
                                             "remote_refused_total"};
  static const char *const help[B_COUNT] = {
      "Bus messages from other nodes ignored: undecodable, wrong subject, out of sequence.",
      "Bus messages this node could not publish (bus full or disconnected, out of memory).",
      "Remote members refused for the bounds on nodes, members and rooms."};
  if (!HOST_HAS(h, metric_observe))
    return;
  for (int k = 0; k < B_COUNT; k++) {
    pier_metric_spec spec = {.size = sizeof(spec), .type = PIER_METRIC_COUNTER,
                             .name = names[k], .help = help[k]};
    pier_metric *m;
    if (h->metric_declare(h, &spec, &m) == 0)
      (void)h->metric_series(h, m, NULL, &g_busm[k]);
  }
}

/* Joins the cluster if the host has a bus and a node name: subscribes to
 * every room's subject (a no-op after a reload: the subscription stayed)
 * and publishes this node's snapshot, asking the others for theirs when we
 * know of no remote member (a first start). Otherwise the plugin runs
 * alone, as without a cluster. */
static void cluster_start(const pier_host *h) {
  const char *node;
  size_t len;
  int rc;
  if (!HOST_HAS(h, respond) || !HOST_HAS(h, node) || !HOST_HAS(h, publish) ||
      !HOST_HAS(h, subscribe) || !(node = h->node(h)))
    return;
  len = strlen(node);
  if (!wire_node_ok(node, len)) {
    h->log(h, PIER_LOG_WARN, "cluster node name \"%s\" is not 1..32 of [A-Za-z0-9_-]: "
                             "rooms stay on this node", node);
    return;
  }
  memcpy(g_node, node, len);
  g_node_len = len;
  declare_bus_metrics(h);
  if ((rc = h->subscribe(h, WIRE_SUBJECT_ALL)) < 0)
    h->log(h, PIER_LOG_WARN, "bus: subscribing to \"%s\" failed (%d): this node will not "
                             "hear other nodes' rooms", WIRE_SUBJECT_ALL, rc);
  pthread_mutex_lock(&g_mu);
  g_clustered = true;
  bus_snapshot_locked(g_rooms.nremote ? 0 : WIRE_SNAP_ANSWER);
  pthread_mutex_unlock(&g_mu);
  bus_drain(h);
}

/* Rebuilds the previous version's rooms from its blob; one that does not
 * validate is logged and ignored. */
static void restore(const pier_host *h, const pier_load_args *args) {
  chat_rooms restored;
  const char *why;
  size_t members, remote;
  int rc;

  chat_rooms_init(&restored);
  rc = chat_rooms_load(&restored, args->state, args->state_len, &why);
  if (rc < 0) {
    h->log(h, PIER_LOG_WARN, "previous state ignored (%s, %zu bytes): starting with no rooms",
           why, args->state_len);
    return;
  }
  members = restored.n;
  remote = restored.nremote;
  pthread_mutex_lock(&g_mu);
  chat_rooms_free(&g_rooms);
  g_rooms = restored;
  pthread_mutex_unlock(&g_mu);
  if (remote)
    h->log(h, PIER_LOG_INFO, "restored %zu rooms with %zu members and %zu members on other "
                             "nodes", restored.nrooms, members, remote);
  else
    h->log(h, PIER_LOG_INFO, "restored %zu rooms with %zu members", restored.nrooms, members);
  if (members && HOST_HAS(h, sessions) && HOST_HAS(h, post))
    (void)h->post(h, prune_job, NULL);
}

/* Takes the host table and, after a reload, the previous version's rooms,
 * then joins the cluster if there is one. Refuses (-ENOTSUP) a host lacking
 * send, broadcast, close or log. A state blob that does not validate is
 * logged and ignored: the plugin then starts with no rooms. */
static int chat_load(const pier_load_args *args) {
  const pier_host *h = args ? args->host : NULL;

  if (!h || h->abi_major != PIER_ABI_MAJOR || !HOST_HAS(h, send) || !HOST_HAS(h, broadcast) ||
      !HOST_HAS(h, close) || !HOST_HAS(h, log))
    return -ENOTSUP;
  g_host = h;
  declare_metrics(h);
  if (args->size >= offsetof(pier_load_args, state_len) + sizeof(args->state_len) &&
      args->state)
    restore(h, args);
  cluster_start(h);
  return 0;
}

/* Hands the rooms to the next version (the host frees the blob) and frees
 * everything. If the blob cannot be made the next version starts empty.
 * The bus subscription stays (the host keeps it for the next version). */
static void chat_unload(pier_state *out) {
  const pier_host *h = g_host;
  void *blob = NULL;
  size_t len = 0;
  int rc;

  pthread_mutex_lock(&g_mu);
  rc = chat_rooms_save(&g_rooms, &blob, &len);
  chat_rooms_free(&g_rooms);
  bus_discard_locked();
  g_clustered = false;
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

PIER_PLUGIN("chat", "1.1.0", .on_load = chat_load, .on_unload = chat_unload,
            .on_recv = chat_recv, .on_disconnected = chat_disconnected,
            .on_message = chat_message, .on_node = chat_node_event);
