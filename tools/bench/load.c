/* pier-bench workloads on pier's client service. Each connection has its own
 * net_endpoint whose ctx is the connection, and sends bytes from a pattern
 * table at an offset fixed by the connection and the stream position, so
 * whatever returns is checked with memcmp. Counters and histograms live per
 * worker, each with a single writer, and the main thread sums them. */
#include "load.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "net/net.h"
#include "procstat.h"

#define BENCH_CONTAINER_OF(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

#define PERIOD 8191u        /* pattern period (prime), bytes */
#define MAX_PRINTED_ERRORS 10
#define ROOM_PREFIX "bench-"
#define WIRE_STREAM_MAX (4u << 20) /* largest WebSocket message taken in echo/idle */

enum { C_JOIN = 1, C_CHAT = 2, S_CHAT = 101, S_SYSTEM = 102, S_CHAT_REMOTE = 103 };

/* Chat text of at least SEQ_MIN bytes starts with the message's sequence
 * number (8 hex digits), then, from STAMP_MIN on, the time it was actually
 * sent (16 hex digits of now_ns(); in open loop that is up to a timer tick
 * after its scheduled time): every member can time its delivery, also in
 * another process, since the clock is the machine's monotonic one. */
#define SEQ_MIN 8
#define STAMP_MIN 24

typedef struct conn {
  load *l;
  unsigned idx;
  int worker;          /* -1 until connected */
  unsigned target;     /* index into load_opts.targets */
  uint8_t open;
  uint8_t joined;      /* chat: own join notice seen */
  uint8_t failed;      /* with a wire: its handshake or protocol failed (reported) */
  pier_sid sid;        /* client-side session */
  uint64_t server_sid; /* chat: our id at the server */
  uint32_t seed;       /* pattern offset of stream byte 0 */
  uint64_t sent, done; /* messages */
  uint64_t rx_off;     /* echo: bytes received */
  uint64_t next_ns;    /* open loop: next scheduled send */
  uint64_t *ts;        /* cap entries: send time (or scheduled time) by message */
  wire_conn *w;        /* TLS/WebSocket layer, NULL for plain TCP */
  net_endpoint ep;
} conn;

typedef struct wstate {
  _Alignas(64) _Atomic uint64_t msgs, bytes, sent, deliveries, remote, notices, foreign,
      mismatched, lost;
  hist lat, lat_same, lat_other;
  load *l;
  unsigned id;
  conn **mine; /* this worker's connections, set by load_start */
  size_t nmine;
  char *scratch; /* chat: a packet being built */
  io_job job;
  io_timer tick;
} wstate;

/* A session id is one pierd's: with several targets, (target, sid) names a
 * sender. */
typedef struct sid_entry {
  uint64_t sid;
  unsigned target;
  unsigned idx;
} sid_entry;

struct load {
  load_opts o;
  net *n;
  conn *conns;
  wstate *ws;
  unsigned nworkers;
  char *pat; /* PERIOD + max(size, PERIOD) bytes */
  uint64_t interval_ns, start_ns;
  sid_entry *sidmap; /* chat: sorted by sid, read-only once traffic starts */
  _Atomic int phase;
  _Atomic unsigned established, failed, open, joined;
  _Atomic uint64_t errors;
  net_handler handler;
  wire_opts wo;
  wire *wire; /* NULL: plain TCP */
  char wire_host[NET_ADDR_STRLEN];
};

static inline void bump(_Atomic uint64_t *a, uint64_t v) {
  atomic_store_explicit(a, atomic_load_explicit(a, memory_order_relaxed) + v,
                        memory_order_relaxed);
}

static inline int phase(const load *l) {
  return atomic_load_explicit(&((load *)l)->phase, memory_order_acquire);
}

void load_error(load *l, const char *fmt, ...) {
  uint64_t n = atomic_fetch_add(&l->errors, 1) + 1;
  va_list ap;
  char buf[512];
  if (n > MAX_PRINTED_ERRORS)
    return;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof(buf), fmt, ap);
  va_end(ap);
  fprintf(stderr, "pier-bench: error: %s%s\n", buf,
          n == MAX_PRINTED_ERRORS ? " (further errors are counted, not printed)" : "");
}

static wstate *cur_ws(load *l) {
  int w = net_current_worker(l->n);
  return &l->ws[w < 0 ? 0 : w];
}

/* ---- pattern ---- */

static void make_pattern(load *l) {
  size_t len = PERIOD + (l->o.size > PERIOD ? l->o.size : PERIOD);
  uint64_t x = 0x9e3779b97f4a7c15ull;
  for (size_t i = 0; i < len; i++) {
    size_t k = i % PERIOD;
    uint8_t v;
    if (k == 0)
      x = 0x9e3779b97f4a7c15ull;
    x ^= x << 13; /* xorshift64: a fixed pseudo-random sequence */
    x ^= x >> 7;
    x ^= x << 17;
    v = (uint8_t)(x >> 24);
    /* Chat text must be valid UTF-8: printable ASCII only. */
    l->pat[i] = (char)(l->o.mode == MODE_CHAT ? 0x21 + v % 94 : v);
  }
}

static uint32_t conn_seed(unsigned idx) { return (uint32_t)((idx * 2654435761u) % PERIOD); }

/* ---- sending ---- */

static int send_bytes(load *l, conn *c, const void *data, size_t len) {
  int rc = c->w ? wire_send(c->w, data, len) : net_send(l->n, c->sid, data, len);
  if (rc < 0)
    load_error(l, "connection %u: send failed: %s", c->idx, strerror(-rc));
  return rc;
}

/* The text of connection idx's message seq, sent (or scheduled) at t. */
static void chat_text(const load *l, unsigned idx, uint64_t seq, uint64_t t, char *out) {
  static const char hex[] = "0123456789abcdef";
  size_t n = l->o.size, j = 0;
  size_t base = (conn_seed(idx) + seq * n) % PERIOD;
  if (n >= SEQ_MIN) {
    for (int i = 0; i < 8; i++)
      out[i] = hex[(seq >> (28 - 4 * i)) & 0xf];
    j = SEQ_MIN;
  }
  if (n >= STAMP_MIN) {
    for (int i = 0; i < 16; i++)
      out[SEQ_MIN + i] = hex[(t >> (60 - 4 * i)) & 0xf];
    j = STAMP_MIN;
  }
  memcpy(out + j, l->pat + base + j, n - j);
}

/* One message; t is its send (or scheduled) time. Returns 0 or the send's
 * negative errno (already reported). */
static int send_one(load *l, wstate *ws, conn *c, uint64_t t) {
  size_t size = l->o.size;
  c->ts[c->sent % l->o.cap] = t;
  if (l->o.mode == MODE_CHAT) {
    char *p = ws->scratch;
    size_t len = size + 4;
    p[0] = (char)(len & 0xff);
    p[1] = (char)(len >> 8);
    p[2] = C_CHAT;
    p[3] = 0;
    chat_text(l, c->idx, c->sent, now_ns(), p + 4);
    if (send_bytes(l, c, p, len) < 0)
      return -EIO;
  } else {
    size_t off = (c->seed + c->sent * size) % PERIOD;
    if (send_bytes(l, c, l->pat + off, size) < 0)
      return -EIO;
  }
  c->sent++;
  bump(&ws->sent, 1);
  return 0;
}

/* Sends what the loop discipline allows now. */
static void refill(load *l, wstate *ws, conn *c, uint64_t now) {
  if (!c->open || phase(l) != PH_RUN || l->o.mode == MODE_IDLE)
    return;
  if (l->o.rate > 0) {
    while (c->next_ns <= now && c->sent - c->done < l->o.cap) {
      if (send_one(l, ws, c, c->next_ns) < 0)
        return;
      c->next_ns += l->interval_ns;
    }
  } else {
    while (c->sent - c->done < l->o.depth)
      if (send_one(l, ws, c, now) < 0)
        return;
  }
}

static void complete(load *l, wstate *ws, conn *c, uint64_t now) {
  uint64_t t = c->ts[c->done % l->o.cap];
  hist_record(&ws->lat, now > t ? now - t : 0);
  c->done++;
  bump(&ws->msgs, 1);
  bump(&ws->bytes, l->o.size);
}

/* ---- echo ---- */

static void mismatch(load *l, wstate *ws, conn *c, uint64_t off, const char *got,
                     const char *want, size_t n) {
  uint64_t bad = 0;
  size_t first = n;
  for (size_t i = 0; i < n; i++) {
    if (got[i] != want[i]) {
      bad++;
      if (first == n)
        first = i;
    }
  }
  bump(&ws->mismatched, bad);
  load_error(l, "connection %u: %" PRIu64 " bytes differ from what was sent, first at stream "
             "offset %" PRIu64 " (got 0x%02x, expected 0x%02x)",
             c->idx, bad, off + first, (unsigned char)got[first], (unsigned char)want[first]);
}

static void echo_recv(load *l, wstate *ws, conn *c, const char *data, size_t len) {
  uint64_t limit = c->sent * l->o.size, off = c->rx_off, now;
  const char *p = data;
  size_t left;

  if (off + len > limit) {
    bump(&ws->mismatched, off + len - limit);
    load_error(l, "connection %u: %" PRIu64 " bytes more came back than were sent", c->idx,
               off + len - limit);
    len = (size_t)(limit - off);
  }
  for (left = len; left > 0;) {
    size_t base = (c->seed + off) % PERIOD, n = left < PERIOD ? left : PERIOD;
    if (memcmp(p, l->pat + base, n) != 0)
      mismatch(l, ws, c, off, p, l->pat + base, n);
    p += n;
    off += n;
    left -= n;
  }
  c->rx_off = off;
  if (off < (c->done + 1) * l->o.size)
    return;
  now = now_ns();
  while (c->done < c->sent && off >= (c->done + 1) * l->o.size)
    complete(l, ws, c, now);
  refill(l, ws, c, now);
}

/* ---- chat ---- */

static uint64_t u64le(const unsigned char *p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--)
    v = v << 8 | p[i];
  return v;
}

static int room_of(const load *l, unsigned idx, char *out, size_t len) {
  return snprintf(out, len, ROOM_PREFIX "%u", idx % l->o.rooms);
}

static void send_join(load *l, conn *c) {
  char pkt[64];
  int n = room_of(l, c->idx, pkt + 4, sizeof(pkt) - 4);
  pkt[0] = (char)(n + 4);
  pkt[1] = 0;
  pkt[2] = C_JOIN;
  pkt[3] = 0;
  send_bytes(l, c, pkt, (size_t)n + 4);
}

/* The first notice a member gets is its own "<sid> joined <room>". */
static void own_join(load *l, conn *c, const char *text, size_t len) {
  char buf[128], room[48], *end;
  unsigned long long sid;
  int rn = room_of(l, c->idx, room, sizeof(room));

  if (len >= sizeof(buf))
    len = sizeof(buf) - 1;
  memcpy(buf, text, len);
  buf[len] = '\0';
  errno = 0;
  sid = strtoull(buf, &end, 10);
  if (errno || end == buf || strncmp(end, " joined ", 8) != 0 ||
      strlen(end + 8) != (size_t)rn || memcmp(end + 8, room, (size_t)rn) != 0) {
    load_error(l, "connection %u: expected its join notice, got \"%s\"", c->idx, buf);
    return;
  }
  c->server_sid = sid;
  c->joined = 1;
  atomic_fetch_add(&l->joined, 1);
}

static int sid_less(const sid_entry *e, unsigned target, uint64_t sid) {
  return e->sid < sid || (e->sid == sid && e->target < target);
}

static const sid_entry *find_sender(const load *l, unsigned target, uint64_t sid) {
  size_t lo = 0, hi = l->o.conns;
  if (!l->sidmap)
    return NULL;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (sid_less(&l->sidmap[mid], target, sid))
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo < l->o.conns && l->sidmap[lo].sid == sid && l->sidmap[lo].target == target
             ? &l->sidmap[lo]
             : NULL;
}

/* The target whose node is named node[0..len), or -1. */
static int target_of_node(const load *l, const char *node, size_t len) {
  for (unsigned i = 0; i < l->o.ntargets; i++) {
    const char *n = l->o.nodes[i];
    if (n && strlen(n) == len && memcmp(n, node, len) == 0)
      return (int)i;
  }
  return -1;
}

static uint64_t parse_hex(const char *p, int digits, int *ok) {
  uint64_t v = 0;
  *ok = 1;
  for (int i = 0; i < digits; i++) {
    char ch = p[i];
    unsigned d = ch >= '0' && ch <= '9' ? (unsigned)(ch - '0')
                 : ch >= 'a' && ch <= 'f' ? (unsigned)(ch - 'a' + 10)
                                          : 16u;
    if (d == 16u)
      *ok = 0;
    v = v << 4 | (d & 0xf);
  }
  return v;
}

/* Another member's message (sender: session id at target's pierd): checked
 * against what that connection sent, and timed when it carries its send
 * time. remote: it came as S_CHAT_REMOTE, from another node. */
static void member_msg(load *l, wstate *ws, conn *c, unsigned target, uint64_t sender,
                       const char *text, size_t tlen, int remote) {
  const sid_entry *e = find_sender(l, target, sender);
  char *want = ws->scratch + 4;
  size_t size = l->o.size;
  uint64_t seq, t = 0, now;
  int ok = 1;

  if (!e) {
    bump(&ws->foreign, 1);
    return;
  }
  if (size < SEQ_MIN)
    return; /* no sequence number in the text: only own echoes are checked */
  seq = tlen == size ? parse_hex(text, 8, &ok) : (ok = 0, 0);
  if (ok && size >= STAMP_MIN)
    t = parse_hex(text + SEQ_MIN, 16, &ok);
  if (!ok) {
    load_error(l, "connection %u: malformed message from connection %u (%zu bytes)", c->idx,
               e->idx, tlen);
    return;
  }
  chat_text(l, e->idx, seq, t, want);
  if (memcmp(text, want, size) != 0) {
    mismatch(l, ws, c, seq * size, text, want, size);
    return;
  }
  if (size >= STAMP_MIN) {
    now = now_ns();
    hist_record(remote ? &ws->lat_other : &ws->lat_same, now > t ? now - t : 0);
  }
}

static void chat_recv(load *l, wstate *ws, conn *c, const char *data, size_t len) {
  unsigned id = len >= 4 ? (unsigned char)data[2] | (unsigned)(unsigned char)data[3] << 8 : 0;
  const unsigned char *body = (const unsigned char *)data + 4;
  size_t size = l->o.size;
  char *want = ws->scratch + 4;

  if (id == S_SYSTEM) {
    if (!c->joined)
      own_join(l, c, data + 4, len - 4);
    else
      bump(&ws->notices, 1);
    return;
  }
  if (id == S_CHAT_REMOTE && len >= 5 && len >= 13 + (size_t)body[0]) {
    /* u8 node_len | node | u64 sid | text */
    int t = target_of_node(l, (const char *)body + 1, body[0]);
    bump(&ws->deliveries, 1);
    bump(&ws->remote, 1);
    if (t < 0)
      bump(&ws->foreign, 1);
    else
      member_msg(l, ws, c, (unsigned)t, u64le(body + 1 + body[0]),
                 (const char *)body + 9 + body[0], len - 13 - body[0], 1);
    return;
  }
  if (id != S_CHAT || len < 12) {
    load_error(l, "connection %u: unexpected packet id %u, %zu bytes", c->idx, id, len);
    return;
  }
  /* u64 sid | text */
  bump(&ws->deliveries, 1);
  if (u64le(body) != c->server_sid) {
    member_msg(l, ws, c, c->target, u64le(body), data + 12, len - 12, 0);
    return;
  }
  {
    uint64_t now = now_ns(), stamp = 0;
    int ok = 1;
    if (c->done >= c->sent) {
      load_error(l, "connection %u: its own message came back more often than it was sent",
                 c->idx);
      return;
    }
    if (size >= STAMP_MIN && len - 12 == size)
      stamp = parse_hex(data + 12 + SEQ_MIN, 16, &ok);
    if (!ok || stamp > now)
      stamp = 0; /* a damaged stamp: the comparison below reports it */
    chat_text(l, c->idx, c->done, stamp, want);
    if (len - 12 != size)
      load_error(l, "connection %u: own message %" PRIu64 " came back with %zu bytes, sent %zu",
                 c->idx, c->done, len - 12, size);
    else if (memcmp(data + 12, want, size) != 0)
      mismatch(l, ws, c, c->done * size, data + 12, want, size);
    complete(l, ws, c, now);
    refill(l, ws, c, now);
  }
}

/* ---- net callbacks ---- */

/* The connection is ready for the workload. */
static void conn_up(conn *c) {
  load *l = c->l;
  c->open = 1;
  if (l->o.mode == MODE_CHAT)
    send_join(l, c);
  atomic_fetch_add(&l->open, 1);
  atomic_fetch_add(&l->established, 1);
}

static void on_connected(void *ctx, session *s) {
  conn *c = ctx;
  c->sid = session_sid(s);
  c->worker = net_current_worker(c->l->n);
  conn_up(c);
}

static void on_recv(void *ctx, session *s, const char *data, size_t len) {
  conn *c = ctx;
  load *l = c->l;
  if (l->o.mode == MODE_CHAT)
    chat_recv(l, cur_ws(l), c, data, len);
  else
    echo_recv(l, cur_ws(l), c, data, len);
}

/* ---- through the wire layer (TLS, WebSocket, Colyseus) ---- */

static void on_connected_wire(void *ctx, session *s) {
  conn *c = ctx;
  c->sid = session_sid(s);
  c->worker = net_current_worker(c->l->n);
  wire_connected(c->w, c->sid);
}

static void on_recv_wire(void *ctx, session *s, const char *data, size_t len) {
  conn *c = ctx;
  wire_recv(c->w, data, len);
}

static void wire_up(void *ctx) { conn_up(ctx); }

static void wire_data(void *ctx, const char *data, size_t len) { on_recv(ctx, NULL, data, len); }

static void wire_fail(void *ctx, const char *why) {
  conn *c = ctx;
  load *l = c->l;
  if (c->failed)
    return;
  c->failed = 1;
  if (!c->open) {
    atomic_fetch_add(&l->failed, 1);
    load_error(l, "connection %u: %s", c->idx, why);
  } else if (phase(l) < PH_STOP) {
    load_error(l, "connection %u: %s", c->idx, why);
  }
}

static void on_disconnected(void *ctx, session *s, pier_reason reason) {
  conn *c = ctx;
  load *l = c->l;
  wstate *ws = cur_ws(l);
  if (!c->open) { /* with a wire: before its handshakes were done */
    if (!c->failed) {
      c->failed = 1;
      atomic_fetch_add(&l->failed, 1);
      load_error(l, "connection %u: disconnected during the handshake: %s", c->idx,
                 net_reason_text(reason));
    }
    return;
  }
  c->open = 0;
  atomic_fetch_sub(&l->open, 1);
  bump(&ws->lost, c->sent - c->done);
  if (phase(l) < PH_STOP && !c->failed)
    load_error(l, "connection %u: disconnected during the run: %s", c->idx,
               net_reason_text(reason));
}

static void on_connect_failed(void *ctx, const net_addr *addr, int err) {
  conn *c = ctx;
  load *l = c->l;
  char text[NET_ADDR_STRLEN];
  atomic_fetch_add(&l->failed, 1);
  load_error(l, "connection %u: connect to %s failed: %s", c->idx,
             net_addr_format(addr, text, sizeof(text)), strerror(-err));
}

/* ---- lifecycle ---- */

int load_create(const load_opts *o, load **out) {
  load *l = calloc(1, sizeof(*l));
  size_t qmax;
  int rc;

  *out = NULL;
  if (!l)
    return -ENOMEM;
  l->o = *o;
  if (l->o.ntargets == 0) {
    l->o.targets[0] = o->addr;
    l->o.ntargets = 1;
  }
  l->nworkers = o->workers;
  l->handler = o->wire ? (net_handler){on_connected_wire, on_recv_wire, NULL, on_disconnected,
                                        on_connect_failed}
                       : (net_handler){on_connected, on_recv, NULL, on_disconnected,
                                       on_connect_failed};
  l->conns = calloc(o->conns, sizeof(*l->conns));
  l->ws = os_aligned_alloc(64, sizeof(wstate) * o->workers);
  l->pat = malloc(PERIOD + (o->size > PERIOD ? o->size : PERIOD));
  if (!l->conns || !l->ws || !l->pat) {
    load_destroy(l);
    return -ENOMEM;
  }
  memset(l->ws, 0, sizeof(wstate) * o->workers);
  make_pattern(l);
  for (unsigned i = 0; i < o->workers; i++) {
    l->ws[i].l = l;
    l->ws[i].id = i;
    l->ws[i].scratch = malloc(o->size + 16);
    if (!l->ws[i].scratch) {
      load_destroy(l);
      return -ENOMEM;
    }
  }
  for (unsigned i = 0; i < o->conns; i++) {
    conn *c = &l->conns[i];
    c->l = l;
    c->idx = i;
    c->worker = -1;
    c->seed = conn_seed(i);
    c->target = i % l->o.ntargets;
    c->ts = calloc(o->cap, sizeof(*c->ts));
    if (!c->ts) {
      load_destroy(l);
      return -ENOMEM;
    }
    c->ep.handler = &l->handler;
    c->ep.ctx = c;
    c->ep.framing = o->mode == MODE_CHAT && !o->wire ? NET_FRAMING_U16_SIZE_ID : NET_FRAMING_RAW;
    c->ep.max_packet_size = 65535;
  }
  if (o->rate > 0)
    l->interval_ns = (uint64_t)((double)o->conns * 1e9 / o->rate);
  qmax = ((size_t)o->cap + 2) * ((size_t)o->size + 4) * 2;
  {
    net_opts no = {.workers = o->workers,
                   .backend = o->backend,
                   .max_sessions = o->conns + 16,
                   .max_send_queue = qmax < (1u << 20) ? (1u << 20) : qmax,
                   .close_timeout_ms = 1000};
    rc = net_create(&no, &l->n);
  }
  if (rc < 0) {
    fprintf(stderr, "pier-bench: cannot create the client network: %s\n", strerror(-rc));
    load_destroy(l);
    return rc;
  }
  if (o->wire) {
    static const wire_handler wh = {wire_up, wire_data, wire_fail};
    l->wo = *o->wire;
    l->wo.host = net_addr_format(&o->addr, l->wire_host, sizeof(l->wire_host));
    l->wo.packets = o->mode == MODE_CHAT;
    l->wo.max_message = o->mode == MODE_CHAT ? 65535 : (o->size > WIRE_STREAM_MAX ? o->size
                                                                                 : WIRE_STREAM_MAX);
    l->wo.max_send = o->size + 64;
    l->wo.workers = o->workers;
    rc = wire_create(&l->wo, &wh, l->n, &l->wire);
    if (rc < 0) {
      load_destroy(l);
      return rc;
    }
    for (unsigned i = 0; i < o->conns; i++)
      if (!(l->conns[i].w = wire_conn_new(l->wire, &l->conns[i], i))) {
        load_destroy(l);
        return -ENOMEM;
      }
  }
  rc = net_start(l->n);
  if (rc < 0) {
    fprintf(stderr, "pier-bench: cannot start the client workers: %s\n", strerror(-rc));
    load_destroy(l);
    return rc;
  }
  *out = l;
  return 0;
}

static void sleep_ms(unsigned ms) { os_sleep_ms(ms); }

int load_connect_all(load *l, unsigned window, double timeout_s, volatile int *stop) {
  uint64_t deadline;
  unsigned issued = 0;
  char text[NET_ADDR_STRLEN];

  if (l->wire) {
    int rc = wire_prepare(l->wire, &l->o.addr, l->o.conns, stop);
    if (rc < 0)
      return rc;
  }
  deadline = now_ns() + (uint64_t)(timeout_s * 1e9);

  for (;;) {
    unsigned est = atomic_load(&l->established), failed = atomic_load(&l->failed);
    if (failed > 0)
      return -ECONNREFUSED;
    if (est == l->o.conns)
      return 0;
    if (*stop)
      return -EINTR;
    if (now_ns() > deadline) {
      load_error(l, "only %u of %u connections to %s were established within %.0f s", est,
                 l->o.conns, net_addr_format(&l->o.addr, text, sizeof(text)), timeout_s);
      return -ETIMEDOUT;
    }
    if (issued < l->o.conns && issued - est - failed < window) {
      int rc = net_connect(l->n, &l->o.targets[issued % l->o.ntargets], &l->conns[issued].ep);
      if (rc < 0) {
        load_error(l, "connection %u: cannot start connecting: %s", issued, strerror(-rc));
        return rc;
      }
      issued++;
      continue;
    }
    sleep_ms(1);
  }
}

static int cmp_sid(const void *a, const void *b) {
  const sid_entry *x = a, *y = b;
  return sid_less(x, y->target, y->sid) ? -1 : sid_less(y, x->target, x->sid);
}

int load_wait_joined(load *l, double timeout_s, volatile int *stop) {
  uint64_t deadline = now_ns() + (uint64_t)(timeout_s * 1e9);
  load_set_phase(l, PH_JOIN);
  while (atomic_load(&l->joined) < l->o.conns) {
    if (*stop)
      return -EINTR;
    if (load_errors(l) > 0)
      return -EPROTO;
    if (now_ns() > deadline) {
      load_error(l, "only %u of %u connections got their join notice within %.0f s",
                 atomic_load(&l->joined), l->o.conns, timeout_s);
      return -ETIMEDOUT;
    }
    sleep_ms(2);
  }
  l->sidmap = malloc(l->o.conns * sizeof(*l->sidmap));
  if (!l->sidmap)
    return -ENOMEM;
  for (unsigned i = 0; i < l->o.conns; i++)
    l->sidmap[i] = (sid_entry){l->conns[i].server_sid, l->conns[i].target, i};
  qsort(l->sidmap, l->o.conns, sizeof(*l->sidmap), cmp_sid);
  return 0;
}

static void on_tick(io_timer *t) {
  wstate *ws = BENCH_CONTAINER_OF(t, wstate, tick);
  load *l = ws->l;
  uint64_t now = now_ns();
  if (phase(l) != PH_RUN) {
    io_timer_stop(net_loop(l->n, ws->id), t);
    return;
  }
  for (size_t i = 0; i < ws->nmine; i++)
    refill(l, ws, ws->mine[i], now);
}

/* Runs on worker ws->id: the first messages of its connections. */
static void start_job(io_job *job) {
  wstate *ws = BENCH_CONTAINER_OF(job, wstate, job);
  load *l = ws->l;
  uint64_t now = now_ns();

  for (size_t i = 0; i < ws->nmine; i++) {
    conn *c = ws->mine[i];
    if (!c->open)
      continue;
    if (l->o.mode == MODE_IDLE)
      (void)send_one(l, ws, c, now);
    else if (l->o.rate > 0)
      c->next_ns = l->start_ns + (uint64_t)((double)c->idx * 1e9 / l->o.rate);
    else
      refill(l, ws, c, now);
  }
  if (l->o.rate > 0 && l->o.mode != MODE_IDLE) {
    io_timer_init(&ws->tick, on_tick);
    io_timer_start(net_loop(l->n, ws->id), &ws->tick, 1, 1);
    on_tick(&ws->tick);
  }
}

void load_start(load *l) {
  for (unsigned w = 0; w < l->nworkers; w++) {
    free(l->ws[w].mine);
    l->ws[w].mine = calloc(l->o.conns, sizeof(conn *));
    l->ws[w].nmine = 0;
  }
  for (unsigned i = 0; i < l->o.conns; i++) {
    conn *c = &l->conns[i];
    if (c->worker >= 0 && (unsigned)c->worker < l->nworkers && l->ws[c->worker].mine)
      l->ws[c->worker].mine[l->ws[c->worker].nmine++] = c;
  }
  l->start_ns = now_ns();
  load_set_phase(l, PH_RUN);
  for (unsigned w = 0; w < l->nworkers; w++) {
    l->ws[w].job.fn = start_job;
    net_post(l->n, w, &l->ws[w].job);
  }
}

void load_set_phase(load *l, load_phase ph) {
  atomic_store_explicit(&l->phase, (int)ph, memory_order_release);
}

void load_totals_get(load *l, load_totals *out) {
  memset(out, 0, sizeof(*out));
  for (unsigned w = 0; w < l->nworkers; w++) {
    wstate *ws = &l->ws[w];
#define SUM(f) out->f += atomic_load_explicit(&ws->f, memory_order_relaxed)
    SUM(msgs);
    SUM(bytes);
    SUM(sent);
    SUM(deliveries);
    SUM(remote);
    SUM(notices);
    SUM(foreign);
    SUM(mismatched);
    SUM(lost);
#undef SUM
    hist_add_to(&ws->lat, &out->lat);
    hist_add_to(&ws->lat_same, &out->lat_same);
    hist_add_to(&ws->lat_other, &out->lat_other);
  }
}

uint64_t load_outstanding(load *l) {
  load_totals t;
  load_totals_get(l, &t);
  return t.sent - t.msgs - (t.lost < t.sent - t.msgs ? t.lost : t.sent - t.msgs);
}

unsigned load_open(load *l) { return atomic_load(&l->open); }

uint64_t load_errors(load *l) { return atomic_load(&l->errors); }

const char *load_backend(load *l) { return net_backend_name(l->n); }

void load_stop(load *l) {
  load_set_phase(l, PH_STOP);
  if (l->n)
    net_stop(l->n);
}

void load_destroy(load *l) {
  if (!l)
    return;
  if (l->n) {
    load_set_phase(l, PH_STOP);
    net_destroy(l->n);
  }
  if (l->conns)
    for (unsigned i = 0; i < l->o.conns; i++) {
      free(l->conns[i].ts);
      wire_conn_free(l->conns[i].w);
    }
  wire_destroy(l->wire);
  if (l->ws)
    for (unsigned i = 0; i < l->nworkers; i++) {
      free(l->ws[i].scratch);
      free(l->ws[i].mine);
    }
  free(l->conns);
  os_aligned_free(l->ws);
  free(l->pat);
  free(l->sidmap);
  free(l);
}
