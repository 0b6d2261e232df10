/* The traffic side of pier-bench: connections made with pier's own client
 * service (net_connect), the echo, chat and idle workloads that run on its
 * worker threads, byte-exact verification of everything that comes back, and
 * counters the main thread reads while the workers write them. */
#ifndef PIER_BENCH_LOAD_H
#define PIER_BENCH_LOAD_H

#include "base/log.h"
#include <stdint.h>

#include "hist.h"
#include "net/addr.h"
#include "wire.h"

/* MODE_CHURN runs on its own sockets (churn.h), not through load. */
typedef enum { MODE_ECHO, MODE_CHAT, MODE_IDLE, MODE_CHURN } bench_mode;

/* PH_JOIN: chat connections are joining rooms; PH_RUN: traffic flows;
 * PH_DRAIN: no new messages, the ones in flight still count; PH_STOP: the
 * run is over and disconnects are expected. */
typedef enum { PH_CONNECT, PH_JOIN, PH_RUN, PH_DRAIN, PH_STOP } load_phase;

#define LOAD_MAX_TARGETS 16

typedef struct load_opts {
  bench_mode mode;
  net_addr addr;    /* the first target: connection i goes to targets[i % ntargets] */
  net_addr targets[LOAD_MAX_TARGETS];
  unsigned ntargets; /* 0 is taken as 1 (addr) */
  /* chat: the cluster node name of each target (cluster.node of the pierd
   * behind it), so S_CHAT_REMOTE packets are matched to their senders;
   * NULL entries (or none given): remote senders are not this run's. */
  const char *nodes[LOAD_MAX_TARGETS];
  unsigned conns;
  unsigned size;    /* echo: message bytes; chat: text bytes */
  unsigned depth;   /* closed loop: in flight per connection */
  unsigned cap;     /* most messages in flight per connection (>= depth) */
  unsigned rooms;   /* chat */
  unsigned workers; /* pier worker threads of the client */
  double rate;      /* total messages per second; 0 = closed loop */
  const char *backend;
  /* TLS, WebSocket or Colyseus between the connections and the workload
   * (host, packets, max_* and workers are filled in by load_create); NULL:
   * plain TCP, which runs without that layer. */
  const wire_opts *wire;
} load_opts;

typedef struct load_totals {
  uint64_t msgs;       /* completed: echoed in full, or a chat sender's own echo */
  uint64_t bytes;      /* payload bytes of the completed messages */
  uint64_t sent;       /* messages sent */
  uint64_t deliveries; /* chat: S_CHAT and S_CHAT_REMOTE packets received, every sender */
  uint64_t remote;     /* chat: of those, S_CHAT_REMOTE (a sender on another node) */
  uint64_t notices;    /* chat: S_SYSTEM packets after the join */
  uint64_t foreign;    /* chat: S_CHAT from senders that are not ours */
  uint64_t mismatched; /* bytes that differ from what was sent, or extra */
  uint64_t lost;       /* in flight on a connection that closed */
  hist_snap lat;       /* latency of completed messages, ns */
  /* chat, text of 24 bytes or more (it carries the send time): from the
   * send (or scheduled) time to the delivery at every other member, by
   * whether the member is on the sender's node (target) or another one. */
  hist_snap lat_same, lat_other;
} load_totals;

typedef struct load load;

/* Creates the client network (no connections yet). Returns 0 or a negative
 * errno, after printing why. */
int load_create(const load_opts *o, load **out);
/* Opens every connection, at most `window` connects pending at once (with
 * TLS or WebSocket, a connection is open once its handshakes are done;
 * Colyseus seats are reserved first). Returns 0 when all are open; a negative errno (reasons printed) on a failed
 * connection, a stop request (*stop non-zero) or the timeout. */
int load_connect_all(load *l, unsigned window, double timeout_s, volatile int *stop);
/* Chat: sends every C_JOIN (done at connect) and waits for each connection's
 * own join notice, which carries its session id. 0, or a negative errno. */
int load_wait_joined(load *l, double timeout_s, volatile int *stop);
/* Begins traffic: the first `depth` messages of every connection (closed
 * loop), or the send schedule (open loop); idle mode sends one each. */
void load_start(load *l);
void load_set_phase(load *l, load_phase ph);
/* Sums of every worker's counters at this moment. */
void load_totals_get(load *l, load_totals *out);
/* Messages sent and neither completed nor lost. */
uint64_t load_outstanding(load *l);
unsigned load_open(load *l);
/* Errors so far: failed connections, unexpected disconnects or packets,
 * mismatches (counted once per bad receive), timeouts. */
uint64_t load_errors(load *l);
/* Reports an error (counted; the first few are printed on stderr). */
void load_error(load *l, const char *fmt, ...) __attribute__((format(LOG_PRINTF, 2, 3)));
const char *load_backend(load *l);
/* Closes every connection and joins the workers. */
void load_stop(load *l);
void load_destroy(load *l);

#endif
