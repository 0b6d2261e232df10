/* The network service: worker threads, each with its own event loop;
 * listeners (server side) and outgoing connections (client side); sessions
 * named by pier_sid. Callbacks of one session run on its worker, in order,
 * never concurrently. The calls marked "any thread" may be made from any
 * thread, including other workers: work for another worker travels through
 * its inbox. */
#ifndef PIER_NET_NET_H
#define PIER_NET_NET_H

#include <stddef.h>
#include <stdint.h>

#include "io/io.h"
#include "net/addr.h"
#include "net/sbuf.h"
#include "pier/types.h"

typedef struct net net;
typedef struct session session;
typedef struct net_listener net_listener;

typedef enum { NET_FRAMING_RAW, NET_FRAMING_U16_SIZE_ID } net_framing;
typedef enum { NET_TRANSPORT_TCP, NET_TRANSPORT_WEBSOCKET } net_transport;
typedef struct xport_site xport_site;

/* Upcalls from the network to its user (the plugin host, a test, a tool).
 * All run on the session's worker. on_disconnected comes exactly once for
 * every session on_connected saw, after its last send completion. */
typedef struct net_handler {
  void (*on_connected)(void *ctx, session *s);
  /* One whole packet (header included) with framing, else the bytes as read. */
  void (*on_recv)(void *ctx, session *s, const char *data, size_t len);
  void (*on_send)(void *ctx, session *s, size_t bytes);
  void (*on_disconnected)(void *ctx, session *s, pier_reason reason);
  /* Client side: the connection could not be made (err is a negative errno). */
  void (*on_connect_failed)(void *ctx, const net_addr *addr, int err);
} net_handler;

/* A listener's transport stack (server side only): socket -> [TLS] ->
 * [WebSocket] -> framing -> handler. A session of a listener with TLS or
 * WebSocket reaches on_connected only once its handshakes are done; before
 * that the handler sees nothing of it (a static file request never reaches
 * it at all). */
typedef struct net_endpoint {
  const net_handler *handler;
  void *ctx;
  net_framing framing;
  /* u16_size_id: the largest packet, 4..65535; WebSocket: the largest
   * message (one packet on u16_size_id). */
  unsigned max_packet_size;
  net_transport transport;
  const char *tls_cert, *tls_key; /* PEM files; both set: TLS */
  unsigned handshake_timeout_ms;  /* TLS and WebSocket handshakes; 0 = 10000 */
  /* WebSocket only. */
  const char *ws_path;                /* NULL = "/" */
  const char *const *ws_origins;      /* allowed Origin values; none = any */
  size_t ws_norigins;
  const char *ws_static_root;         /* absolute, links resolved; NULL = none */
  unsigned ws_ping_interval_ms;       /* 0 = no keepalive */
  xport_site *site; /* set by net_listen (its copy); callers leave it NULL */
} net_endpoint;

typedef struct net_opts {
  unsigned workers;          /* 1..64 */
  const char *backend;       /* "auto" | "io_uring" | "epoll" */
  unsigned max_sessions;     /* accepted sessions, all workers together */
  size_t max_send_queue;     /* bytes queued per session */
  unsigned close_timeout_ms; /* graceful close: how long pending data may take */
  unsigned idle_timeout_ms;  /* close sessions that send nothing this long; 0 = never */
  unsigned packet_timeout_ms; /* a partial framed packet must complete in this; 0 = never */
  unsigned max_conns_per_ip;  /* accepted sessions per remote address; 0 = no cap */
  /* With data to send (queued or in flight), a send must complete within
   * this of the last one; else the session is reset (SEND_TIMEOUT), like
   * nginx's send_timeout: a peer that stops reading is cut off in bounded
   * time even when what it does not read sits in kernel buffers. 0 = off. */
  unsigned send_timeout_ms;
  /* Bytes the owner may hold for a session (session_backlog_add) before the
   * session stops being read; 0 = 65536. */
  size_t recv_backlog;
  unsigned buf_count, buf_size; /* receive buffers per worker (0 = defaults) */
} net_opts;

/* How many pier_reason values there are (one past the largest). */
#define NET_REASON_COUNT (PIER_REASON_HANDSHAKE_TIMEOUT + 1)

typedef struct net_stats {
  uint64_t sessions;       /* open now */
  uint64_t accepted;
  uint64_t refused_full;   /* connections closed at once: max_sessions reached */
  uint64_t connected_out;
  uint64_t disconnects;
  uint64_t bytes_in, bytes_out;
  uint64_t send_queue_full;
  uint64_t bad_packets;
  uint64_t idle_timeouts;
  uint64_t packet_timeouts;   /* partial packets not completed in time */
  uint64_t refused_per_ip;    /* connections over max_conns_per_ip */
  uint64_t send_timeouts;     /* sessions reset for no send progress (send_timeout_ms) */
  uint64_t read_pauses;       /* times a session stopped being read for its owner's backlog */
  uint64_t handshakes;        /* TLS or WebSocket sessions that reached on_connected */
  uint64_t handshake_failures; /* refused upgrades, TLS handshakes that failed */
  uint64_t handshake_timeouts; /* not done within handshake_timeout_ms */
  uint64_t http_files;        /* static files served by WebSocket listeners */
  uint64_t ws_protocol_errors; /* WebSocket sessions closed for a protocol violation */
  uint64_t ping_timeouts;     /* WebSocket peers that answered no keepalive ping */
  /* Sessions that ended, by the reason on_disconnected got (index: pier_reason). */
  uint64_t closed_by_reason[NET_REASON_COUNT];
  uint64_t messages_in;       /* packets (framed) or reads (raw) delivered to on_recv */
  uint64_t messages_out;      /* net_send/net_send_buf calls that queued bytes (a broadcast
                               * counts per recipient) */
  uint64_t send_queue_bytes;  /* bytes queued now, all sessions together (a gauge): not yet
                               * confirmed sent, TLS plaintext not yet sealed included */
  /* The workers' io loops (io_stats summed). io_waits: the times they asked
   * the kernel for events (epoll_wait, io_uring_enter, GetQueuedCompletionStatusEx). */
  uint64_t io_cq_overflows, io_enobufs, io_rearms, io_waits;
} net_stats;

/* Creates the workers' loops (no threads yet). Logs which backend was chosen,
 * and why "auto" fell back to epoll. Returns 0 or a negative errno. */
int net_create(const net_opts *opts, net **out);
/* Binds and listens (before net_start). *out stays owned by n. With TLS the
 * certificate and key are loaded here; a failure is logged, naming the
 * file. */
int net_listen(net *n, const net_addr *addr, const net_endpoint *ep, net_listener **out);
/* Any thread. Re-reads a TLS listener's certificate and key (a rotation):
 * sessions opened from now on use the new ones, open sessions keep theirs.
 * On failure nothing changes and err says why, naming the file. -EINVAL
 * when l has no TLS. */
int net_listener_reload_tls(net_listener *l, const char *cert, const char *key, char *err,
                            size_t errlen);
/* Whether this build has the transport: 0, or -ENOTSUP with why (e.g. "this
 * build of pierd has no WebSocket support"). */
int net_transport_available(net_transport t, int tls, char *why, size_t len);
/* Checks that a certificate and key load and match (--check): 0 or a
 * negative errno with one line in err naming the file. */
int net_tls_check(const char *cert, const char *key, char *err, size_t errlen);
uint16_t net_listener_port(const net_listener *l);
/* Starts the worker threads; listeners begin accepting. */
int net_start(net *n);
/* Gracefully closes every session (reason SHUTDOWN; pending sends get up to
 * close_timeout_ms), stops accepting, and joins the workers. Idempotent. */
void net_stop(net *n);
/* Main thread, started net. Refuses every new connection from now on, for
 * good (a drain before net_stop): the listening sockets stop listening, so
 * the kernel answers an RST; where it cannot (Windows), each connection is
 * accepted and reset. Open sessions are untouched. Returns 0 or a negative
 * errno (a listener that could not be shut still refuses, by reset). */
int net_stop_accepting(net *n);
void net_destroy(net *n);

/* Any thread. Connects to addr on some worker; the endpoint's handler gets
 * on_connected or on_connect_failed. Returns 0 or a negative errno. */
int net_connect(net *n, const net_addr *addr, const net_endpoint *ep);

/* Any thread. Copies data into the session's send queue. Returns 0,
 * -ENOTCONN for a stale or closing session, or -ENOBUFS when the queue would
 * exceed max_send_queue (the session is then disconnected with
 * SEND_QUEUE_FULL). From a thread other than the session's worker the
 * staleness check is made at once and the rest happens on the worker; a
 * session that closes in between drops the data. Such sends wait in the
 * worker's inbox, and those are capped too, by the memory they hold: each
 * counts its bytes and its job's bookkeeping (about 180 bytes). When len
 * alone exceeds max_send_queue, or sends posted to the session and not yet
 * run are waiting and their memory plus this one's would exceed it, the
 * call returns -ENOBUFS and the session is disconnected with
 * SEND_QUEUE_FULL in the same way. A send with nothing waiting before it
 * fits whenever its bytes do, as on the session's worker. */
int net_send(net *n, pier_sid sid, const void *data, size_t len);
/* Any thread. Queues a reference to b (the caller keeps its own). */
int net_send_buf(net *n, pier_sid sid, sbuf *b);
/* Any thread. One shared buffer for all recipients; returns how many ids
 * were live and got the data queued. */
size_t net_broadcast(net *n, const pier_sid *sids, size_t count, const void *data, size_t len);
/* Any thread. Graceful: pending data is flushed, then FIN. */
int net_close(net *n, pier_sid sid, pier_reason reason);
/* Any thread. Abortive: pending data is dropped, the peer gets RST. */
int net_abort(net *n, pier_sid sid, pier_reason reason);

/* Any thread. A pointer kept with the session for its owner (the plugin
 * host); readable until on_disconnected returns. set: 0 or -ENOTCONN. A
 * stale id never reaches another session, even one that takes its slot
 * meanwhile: the access is made under the slot's lock (see sid.h). */
int net_set_user(net *n, pier_sid sid, void *user);
void *net_get_user(net *n, pier_sid sid);
/* Any thread. The session's peer address; 0 or -ENOTCONN (never the address
 * of a newer session in the slot). */
int net_peer(net *n, pier_sid sid, net_addr *out);
/* Any thread. Runs job on worker `worker`'s thread (index modulo workers). */
void net_post(net *n, unsigned worker, io_job *job);
/* The index of the worker whose thread this is, or -1. */
int net_current_worker(const net *n);

/* Worker i's loop, for timers that belong on it (loop thread only). */
io_loop *net_loop(net *n, unsigned i);
/* Human-readable text of a disconnect reason. */
const char *net_reason_text(pier_reason reason);
/* The enum name in lowercase without its prefix ("peer_closed",
 * "handshake_timeout"): the reason label of pier_sessions_closed_total. "?"
 * for a value outside the enum. */
const char *net_reason_label(pier_reason reason);

const char *net_backend_name(const net *n);
unsigned net_workers(const net *n);
/* Sums the workers' counters. Any thread; the values are a moment's view;
 * it never blocks a worker (each worker's counters are its own relaxed
 * atomics). */
void net_get_stats(net *n, net_stats *out);

/* Read backpressure. The owner (the plugin host) tells the network how much
 * it holds on behalf of each session; a session whose owner is behind stops
 * being read, so the kernel's receive buffer and TCP flow control hold the
 * rest instead of pier's memory.
 *
 * Session's worker only (inside a net_handler callback). The owner holds
 * `bytes` more on behalf of s (events not yet delivered). When s's backlog
 * then exceeds net_opts.recv_backlog, or when pause_now is set, s stops being
 * read: its recv is cancelled and not re-armed; data already received is
 * still delivered through on_recv (nothing is lost or reordered), and the
 * kernel's receive buffer and TCP flow control hold the rest. What on_recv
 * can still deliver after the pause is what the kernel had handed over
 * before the cancel took effect: on epoll at most the chunk being read (one
 * buf_size); on io_uring the completions already posted, at most one per
 * provided buffer (buf_count x buf_size), in practice a few. While paused
 * the idle and packet timers do not close s; they restart on resume. */
void session_backlog_add(session *s, size_t bytes, int pause_now);
/* Any thread. The owner delivered or dropped `bytes` of what it held for
 * sid. A stale sid is ignored. When the backlog reaches 0 and the session's
 * reading is paused, reading resumes (on the session's worker, through its
 * inbox; one resume job at most per pause). */
void net_backlog_done(net *n, pier_sid sid, size_t bytes);

/* Session accessors: on the session's worker only (inside callbacks). */
pier_sid session_sid(const session *s);
const net_addr *session_peer(const session *s);
void *session_user(const session *s);
void session_set_user(session *s, void *user);
size_t session_queued(const session *s);

#endif
