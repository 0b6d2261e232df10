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

struct session {
  io_fd iofd;
  io_ev ev_recv;
  io_ev ev_send; /* also the connect of a client session */
  net_worker *w;
  const net_endpoint *ep;
  pier_sid sid;
  sendq q;
  framer fr;
  io_timer close_timer; /* graceful close deadline */
  io_timer idle_timer;  /* idle_timeout_ms; re-armed lazily from last_rx */
  io_timer packet_timer; /* packet_timeout_ms; re-armed lazily from partial_since */
  io_timer send_timer;   /* send_timeout_ms; re-armed lazily from last_tx */
  uint64_t partial_since; /* loop time the held partial packet began, 0 if none */
  uint64_t last_tx;     /* loop time a send was last submitted (after progress) */
  uint64_t last_rx;     /* loop time of the last data received */
  net_addr peer;
  session *next_flush;
  uint32_t inflight;  /* bytes in the send in flight, 0 if none */
  uint16_t refs;      /* open state + each armed op + flush list */
  uint8_t state;
  uint8_t notified;   /* on_connected ran: on_disconnected is owed */
  uint8_t flush_queued;
  uint8_t accepted;   /* counts against max_sessions */
  uint8_t reason;
  uint8_t read_paused; /* the owner's backlog stopped reading; resume pending */
  uint8_t congested;   /* its send queue is over half of max_send_queue: not read */
  uint8_t eof_pending; /* the peer's FIN came while input was deferred */
  uint32_t defer_len, defer_cap;
  char *defer;         /* received while congested, not yet delivered */
  struct xport *xp;    /* TLS / WebSocket state; NULL for plain TCP */
};

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
  session *sessions; /* sids.cap slots */
  uint32_t nsessions;
  _Atomic int load;  /* sessions plus connections handed to it, for balancing */
  session *flush_head;
  int stopping;
  int dead; /* loop torn down: queued jobs only free themselves */
  net_counters stats;
  log_rate rl_packet, rl_full, rl_accept, rl_idle, rl_ip, rl_send, rl_hs;
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
  os_mutex ip_mu;          /* open accepted sessions per remote address */
  struct ip_count **ip_table;
  size_t ip_buckets;
  int started, stopped;
};

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
/* Runs the resume posted by net_backlog_done: reading restarts unless the
 * backlog is over recv_backlog again (then it stays paused). */
void session_resume_reading(session *s);
session *session_lookup(net_worker *w, pier_sid sid);
/* For the transport stack (xport.c): */
/* Application bytes (after TLS and WebSocket) into framing and on_recv. */
void session_app_input(session *s, const char *data, size_t len);
/* The handshakes are done: on_connected. */
void session_ready(session *s);
/* s has something to send: flush it at the end of this loop iteration. */
void session_want_flush(session *s);
/* Whether a partial packet or message is held (starts/ends packet_timeout_ms). */
void session_partial(session *s, int holding);
void worker_flush(io_loop *loop);
void worker_maybe_finish(net_worker *w);

#endif
