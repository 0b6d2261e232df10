/* The optional layers pier-bench puts between a connection and its workload:
 * TLS (an OpenSSL client over memory BIOs), the WebSocket client side
 * (RFC 6455: the Upgrade handshake, masked frames out, frames decoded in),
 * and Colyseus's room protocol on top of WebSocket (a matchmaking request
 * per client, the JOIN_ROOM exchange, ROOM_DATA_BYTES messages). The
 * connection itself stays on pier's client service with raw framing: this
 * layer turns the bytes it receives into the workload's packets or stream
 * and the workload's sends into the bytes it sends. Plain TCP runs without
 * it. Built on Linux only (wire_none.c stands in elsewhere). */
#ifndef PIER_BENCH_WIRE_H
#define PIER_BENCH_WIRE_H

#include <stddef.h>

#include "net/addr.h"
#include "net/net.h"

typedef struct wire wire;
typedef struct wire_conn wire_conn;

typedef struct wire_opts {
  int tls;               /* TLS first (before the Upgrade or the plain traffic) */
  const char *ca;        /* PEM file to verify the server against; NULL: no verification */
  const char *ws_path;   /* WebSocket request target; NULL: no WebSocket */
  const char *origin;    /* Origin header; NULL: none sent */
  const char *host;      /* Host header and certificate name, e.g. "127.0.0.1:7780" */
  const char *colyseus;  /* Colyseus room name (implies WebSocket); NULL: off */
  int packets;           /* 1: one message is one u16_size_id packet; 0: a byte stream */
  size_t max_message;    /* largest message (or packet) accepted from the server */
  size_t max_send;       /* largest single send of the workload */
  unsigned workers;      /* the client's worker threads (scratch buffers per worker) */
} wire_opts;

/* Upcalls to the workload, on the connection's worker. After fail nothing
 * more comes for the connection (the layer has asked the network to abort
 * it; on_disconnected follows as usual). */
typedef struct wire_handler {
  void (*up)(void *ctx);                               /* every handshake done */
  void (*data)(void *ctx, const char *data, size_t len); /* a packet, or stream bytes */
  void (*fail)(void *ctx, const char *why);
} wire_handler;

/* Whether this build has the layers (0 where wire_none.c is built). */
extern const int wire_available;

/* The shared state (the TLS context, scratch buffers). Returns 0 or a
 * negative errno, after printing why on stderr. */
int wire_create(const wire_opts *o, const wire_handler *h, net *n, wire **out);
/* Colyseus only (otherwise returns 0 at once): reserves a seat for each of
 * `conns` clients with one matchmaking request each (POST
 * /matchmake/joinOrCreate/<room>, blocking, from the calling thread) and
 * keeps the WebSocket target each is to connect to. Returns 0 or a negative
 * errno, after printing why. */
int wire_prepare(wire *w, const net_addr *addr, unsigned conns, volatile int *stop);
void wire_destroy(wire *w);

/* Per connection; idx picks the seat wire_prepare reserved. NULL on ENOMEM. */
wire_conn *wire_conn_new(wire *w, void *ctx, unsigned idx);
void wire_conn_free(wire_conn *c);
/* The TCP connection is up (session sid): starts the handshakes. */
void wire_connected(wire_conn *c, pier_sid sid);
/* Bytes the TCP connection received. */
void wire_recv(wire_conn *c, const char *data, size_t len);
/* The workload's send: a whole u16_size_id packet (packets) or stream
 * bytes; one WebSocket message either way. Returns 0 or a negative errno
 * (-ENOTCONN before up or after fail; net_send's errors). */
int wire_send(wire_conn *c, const void *data, size_t len);

#endif
