/* Private structures of core/net shared by session.c and net.c. */
#ifndef PIER_NET_INTERNAL_H
#define PIER_NET_INTERNAL_H

#include "os/os.h"
#include <stdatomic.h>
#include <stddef.h>

#include "base/log.h"
#include "io/io.h"
#include "net/framing.h"
#include "net/net.h"
#include "net/sendq.h"
#include "net/sid.h"

#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

typedef struct net_worker net_worker;

typedef enum { SS_FREE, SS_CONNECTING, SS_OPEN, SS_CLOSING, SS_CLOSED } session_state;

/* What a session needs only while it is busy: the send in flight (or the
 * connect of a client session) and its queue, its place on the flush list,
 * the send deadline, and input deferred while reading is held back. Made on
 * demand and freed once none of it is in use (ext_release), so an idle
 * session holds none. The first SESSION_RING entries of the queue live here;
 * a longer queue allocates its own ring until it drains. */
#define SESSION_RING 4
typedef struct session_ext {
  io_ev ev_send;        /* also the connect of a client session */
  sendq q;
  union {
    session *next_flush;
    struct session_ext *next_free; /* in its worker's cache of unused exts */
  };
  char *defer;          /* received while congested or paused, not yet delivered */
  uint32_t defer_len, defer_cap;
  uint32_t inflight;    /* bytes in the send in flight, 0 if none */
  uint32_t last_tx;     /* loop time (ms, mod 2^32) a send was last submitted */
  uint8_t flush_queued;
  uint8_t send_timing;  /* send_timeout_ms runs (from a flush until it lapses) */
  uint8_t parked;       /* on its worker's parked list (see ext_release) */
  uint32_t parked_at;   /* the worker's trim tick when it was last let go */
  struct session_ext *next_parked;
  session *owner;       /* NULL once its session let go of it while parked */
  sendq_entry ring[SESSION_RING];
} session_ext;

/* The session itself: 192 bytes (session.c asserts it). One timer serves
 * the four deadlines (close, send, packet, idle): it is due at the earliest,
 * and each is worked out again from its own start time when it fires, so
 * pushing a deadline back costs nothing but a store. Times are the loop
 * clock in ms, kept mod 2^32: every difference taken is under 49 days. */
struct session {
  /* What a read and its reply touch, in the first two cache lines (the
   * sessions array starts on a line, net.c). */
  io_fd iofd;
  io_ev ev_recv;
  net_worker *w;
  const net_endpoint *ep;
  pier_sid sid;
  session_ext *ext;    /* NULL while idle */
  framer fr;
  struct xport *xp;    /* TLS / WebSocket state; NULL for plain TCP */
  uint32_t last_rx;    /* loop time of the last data received (idle_timeout_ms) */
  uint16_t refs;       /* open state + each armed op + flush list + the stage */
  uint8_t reason : 6;  /* a pier_reason (NET_REASON_COUNT <= 64, asserted) */
  uint8_t rel_tick : 2; /* trim tick (mod 4) its ext was last let go (ext_release) */
  uint8_t state : 3;   /* a session_state */
  uint8_t notified : 1;    /* on_connected ran: on_disconnected is owed */
  uint8_t accepted : 1;    /* counts against max_sessions */
  uint8_t read_paused : 1; /* the owner's backlog stopped reading; resume pending */
  uint8_t congested : 1;   /* its send queue is over half of max_send_queue: not read */
  uint8_t eof_pending : 1; /* the peer's FIN came while input was deferred */
  /* The deadlines and the peer's address, in the third. */
  io_timer timer;
  net_addr peer;
  union {
    uint32_t partial_since; /* OPEN: when the held partial packet began, 0 if none */
    uint32_t close_since;   /* CLOSING: when the graceful close began */
  } t;
};

static inline uint32_t session_inflight(const session *s) {
  return s->ext ? s->ext->inflight : 0;
}
/* The session's ext, made if it has none; NULL when out of memory. */
session_ext *session_ext_get(session *s);
/* Frees the ext and what it holds (queued buffers, deferred input); the
 * ext itself goes to its worker's cache for reuse (at most EXT_CACHE). */
void session_ext_free(session *s);
/* Frees the worker's cache of unused exts (its quiet-spell trim, the end). */
void session_ext_cache_trim(net_worker *w);
/* Takes the exts back that their sessions have not used since the last
 * tick (all of them that are unused with all set), then starts a new tick. */
void session_ext_sweep(net_worker *w, int all);

/* The most a worker stages for one session's reply; a longer one is queued. */
#define NET_STAGE_MAX 4096

typedef struct net_counters {
  _Atomic uint64_t accepted, refused_full, connected_out, disconnects, bytes_in, bytes_out,
      send_queue_full, bad_packets, idle_timeouts, packet_timeouts, refused_per_ip,
      send_timeouts, read_pauses, handshakes, handshake_failures, handshake_timeouts, http_files,
      ws_protocol_errors, ping_timeouts, messages_in, messages_out;
  _Atomic uint64_t closed_by_reason[NET_REASON_COUNT];
  _Atomic uint64_t send_queue_bytes; /* a gauge: its sessions' send queues (sendq.gauge) */
} net_counters;

/* A worker's counters are written by its own thread only, so a relaxed load
 * and store do (no locked add on the hot path); net_get_stats on another
 * thread reads each whole, a moment late at worst. */
#define STAT_ADD(w, field, v)                                                              \
  atomic_store_explicit(&(w)->stats.field,                                               \
                        atomic_load_explicit(&(w)->stats.field, memory_order_relaxed) +  \
                            (uint64_t)(v),                                               \
                        memory_order_relaxed)

typedef struct listen_ep {
  io_fd fd;
  io_ev ev;
  io_timer retry;
  net_worker *w;
  net_listener *l;
  uint8_t closed;
} listen_ep;

struct net_listener {
  net *n;
  int fd;
  net_addr addr;
  net_endpoint ep;
  listen_ep *eps; /* one per worker */
  net_listener *next;
};

struct net_worker {
  net *n;
  unsigned id;
  io_loop loop;
  os_thread thread;
  int thread_started;
  sid_table sids;
  session *sessions; /* sids.cap slots, from a cache line's start */
  void *sessions_mem; /* what was allocated for them */
  uint32_t nsessions;
  _Atomic int load;  /* sessions plus connections handed to it, for balancing */
  session *flush_head, *flush_tail; /* sessions to flush, in the order they asked */
  /* The staged reply (session.c, "the staged reply"): bytes written to one
   * session with nothing else to send, held in stage (at the end) instead of
   * in its queue until the worker's next flush. */
  session *staged;        /* whose bytes stage holds (with a reference), or NULL */
  uint32_t staged_len;
  uint8_t flushing;       /* worker_flush runs: nothing is staged meanwhile */
  int stopping;
  int dead; /* loop torn down: queued jobs only free themselves */
  net_counters stats;
  io_timer trim;          /* gives memory back once the worker has been quiet */
  struct session_ext *ext_free; /* unused exts kept for reuse (session.c) */
  unsigned ext_nfree;
  struct session_ext *parked;   /* exts let go by their sessions, taken back a tick later */
  uint32_t tick;                /* trim ticks so far */
  uint64_t trim_seen;     /* loop completions at the last look */
  int trimmed;            /* nothing came since the last give-back */
  log_rate rl_packet, rl_full, rl_accept, rl_idle, rl_ip, rl_send, rl_hs;
  char stage[NET_STAGE_MAX];
};

struct net {
  net_opts opts;
  const io_backend *be;
  net_worker *workers;
  unsigned nworkers;
  net_listener *listeners;
  _Atomic unsigned accepted_open; /* accepted sessions open now, for max_sessions */
  _Atomic unsigned rr;            /* next worker for an outgoing connection */
  int has_ws;                     /* a WebSocket listener exists: broadcasts share a frame */
  _Atomic int accept_off;         /* net_stop_accepting: connections are refused */
  os_mutex ip_mu;          /* open accepted sessions per remote address */
  struct ip_count **ip_table;
  size_t ip_buckets;
  int started, stopped;
};

/* Bytes queued and in flight, with any staged for it (0 while the session has
 * no ext and nothing staged). */
static inline size_t session_qbytes(const session *s) {
  return (s->ext ? s->ext->q.bytes : 0) + (s->w->staged == s ? s->w->staged_len : 0);
}

extern _Thread_local net_worker *net_tls_worker;

/* net.c: max_conns_per_ip accounting. */
int net_ip_acquire(net *n, const net_addr *peer);
void net_ip_release(net *n, const net_addr *peer);

/* session.c */
session *session_new(net_worker *w, int fd, const net_endpoint *ep, const net_addr *peer);
void session_start(session *s);
int session_connect(session *s, const net_addr *addr);
int session_write(session *s, const void *data, size_t len);
int session_write_buf(session *s, sbuf *b);
void session_close(session *s, pier_reason reason, int abortive);
/* Counts, logs (rate-limited) and disconnects s with SEND_QUEUE_FULL for a
 * send of len bytes that did not fit; returns -ENOBUFS. */
int session_queue_full(session *s, size_t len);
/* The same for a send from another thread (cost: its bytes and its job's
 * bookkeeping) refused behind posted bytes of such sends not yet run. */
int session_posted_full(session *s, size_t cost, size_t posted);
/* Runs the resume posted by net_backlog_done: reading restarts unless the
 * backlog is over recv_backlog again (then it stays paused). */
void session_resume_reading(session *s);
session *session_lookup(net_worker *w, pier_sid sid);
/* For the transport stack (xport.c): */
/* Application bytes (after TLS and WebSocket) into framing and on_recv. */
void session_app_input(session *s, const char *data, size_t len);
/* The handshakes are done: on_connected. */
void session_ready(session *s);
/* s has something to send: flush it at the end of this loop iteration.
 * Returns 0, or -ENOMEM when there is no memory for its send state (the
 * session is then closed with NO_MEMORY). */
int session_want_flush(session *s);
/* Whether a partial packet or message is held (starts/ends packet_timeout_ms). */
void session_partial(session *s, int holding);
void worker_flush(io_loop *loop);
void worker_maybe_finish(net_worker *w);

#endif
