/* The transport stack of TLS and WebSocket listeners; see xport.h.
 *
 * A session of such a listener goes through phases: XP_TLS (the TLS
 * handshake), XP_HTTP (the request head: an upgrade, a static file or an
 * error), XP_REPLY (a response is on its way, then the connection closes)
 * and XP_OPEN (on_connected has run; WebSocket messages or, with TLS alone,
 * the byte stream). One timer per session bounds the handshakes
 * (handshake_timeout_ms) and then sends the keepalive pings. */
#include "net/xport.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "net/net_internal.h"
#include "net/tls.h"
#include "net/ws.h"
#include "net/ws_http.h"

/* TLS seals at most this much plaintext into the send queue at a time, and
 * only while the queue holds less: what waits is the plaintext, shared
 * broadcast buffers and all, not its encrypted copy. */
#define SEAL_STEP (64u * 1024u)

struct xport_site {
  int websocket;
  tls_server *tls;
  ws_http_site http;
  char *path, *static_root;
  char **origins;
  unsigned handshake_ms, ping_ms;
};

enum { XP_TLS, XP_HTTP, XP_REPLY, XP_OPEN };

/* TLS state, only on TLS listeners. */
typedef struct xtls {
  tls_conn *conn;
  sendq pq;           /* plaintext not yet sealed into the session's queue */
  uint8_t shut_owed;  /* close_notify goes out once pq is empty */
  uint8_t shut_done;
  uint8_t sealing;    /* inside xport_pre_flush: the flush is already running */
  uint8_t dead;       /* failed, or the peer sent close_notify: nothing more is sealed */
} xtls;

/* Kept small: an idle WebSocket session holds this and nothing else. */
typedef struct xport {
  session *s;
  xtls *tls;          /* NULL without TLS */
  char *head;         /* the HTTP request head so far, while incomplete */
  const char *close_why; /* the text of our close frame, when not the reason's */
  io_timer timer;     /* handshake deadline, then keepalive */
  ws_conn ws;
  uint32_t unreported; /* plugin bytes queued and not yet told to on_send */
  uint16_t head_len;
  uint16_t peer_code; /* the peer's close code, echoed in ours */
  uint8_t phase;
  uint8_t ping_out;   /* a keepalive ping is unanswered */
  uint8_t close_sent; /* our close frame is queued */
} xport;

#define SITE(s) ((const xport_site *)(s)->ep->site)

/* ---- site ---- */

void xport_site_free(xport_site *x) {
  if (!x)
    return;
  if (x->tls)
    tls_server_free(x->tls);
  for (size_t i = 0; i < x->http.norigins; i++)
    free(x->origins[i]);
  free(x->origins);
  free(x->path);
  free(x->static_root);
  free(x);
}

int xport_site_new(const net_endpoint *ep, xport_site **out) {
  char err[512];
  xport_site *x;
  int rc;

  *out = NULL;
  if (ep->transport == NET_TRANSPORT_TCP && !ep->tls_cert)
    return 0;
  if (!(x = calloc(1, sizeof(*x))))
    return -ENOMEM;
  x->websocket = ep->transport == NET_TRANSPORT_WEBSOCKET;
  x->handshake_ms = ep->handshake_timeout_ms ? ep->handshake_timeout_ms : 10000;
  x->ping_ms = ep->ws_ping_interval_ms;
  if (x->websocket) {
    if (!(x->path = strdup(ep->ws_path ? ep->ws_path : "/")) ||
        (ep->ws_static_root && !(x->static_root = strdup(ep->ws_static_root))) ||
        (ep->ws_norigins && !(x->origins = calloc(ep->ws_norigins, sizeof(char *))))) {
      xport_site_free(x);
      return -ENOMEM;
    }
    for (size_t i = 0; i < ep->ws_norigins; i++, x->http.norigins++)
      if (!(x->origins[i] = strdup(ep->ws_origins[i]))) {
        xport_site_free(x);
        return -ENOMEM;
      }
    x->http.path = x->path;
    x->http.origins = (const char *const *)x->origins;
    x->http.static_root = x->static_root;
  }
  if (ep->tls_cert) {
    rc = tls_server_new(ep->tls_cert, ep->tls_key, &x->tls, err, sizeof(err));
    if (rc < 0) {
      log_error("%s", err);
      xport_site_free(x);
      return rc;
    }
  }
  *out = x;
  return 0;
}

int xport_site_reload_tls(xport_site *x, const char *cert, const char *key, char *err,
                          size_t errlen) {
  if (!x || !x->tls) {
    snprintf(err, errlen, "the listener has no TLS");
    return -EINVAL;
  }
  return tls_server_reload(x->tls, cert, key, err, errlen);
}

int net_transport_available(net_transport t, int tls, char *why, size_t len) {
  if (len)
    why[0] = '\0';
  return 0;
}

int net_tls_check(const char *cert, const char *key, char *err, size_t errlen) {
  return tls_check_files(cert, key, err, errlen);
}

/* ---- output ---- */

/* Where the plugin's bytes queue: ahead of TLS, or the session's own queue
 * (made on demand: NULL when out of memory). */
static sendq *plain_q(session *s) {
  session_ext *x;
  if (s->xp->tls)
    return &s->xp->tls->pq;
  x = session_ext_get(s);
  return x ? &x->q : NULL;
}

/* The limit for q such that everything s has queued stays within
 * max_send_queue (with TLS, plaintext and sealed bytes together). */
static size_t q_limit(session *s, const sendq *q) {
  size_t max = s->w->n->opts.max_send_queue,
         other = session_qbytes(s) + (s->xp->tls ? s->xp->tls->pq.bytes : 0) - q->bytes;
  return other >= max ? 0 : max - other;
}

/* Queues bytes ahead of TLS: 0, -ENOBUFS over the limit, -ENOMEM. */
static int put(session *s, const void *data, size_t len, size_t limit) {
  sendq *q = plain_q(s);
  int rc = q ? sendq_write(q, data, len, limit) : -ENOMEM;
  if (rc == 0)
    rc = session_want_flush(s);
  return rc;
}

/* A control frame (pong, close, ping): small, and not refused for a full
 * queue (the session stops being read long before one could pile up). One
 * allocation at most, so a failure queues nothing. */
static int put_frame(session *s, int op, const char *payload, size_t len) {
  char f[WS_HEADER_MAX + 125];
  size_t hl = ws_frame_header(f, op, len);
  if (len) /* <= 125 */
    memcpy(f + hl, payload, len);
  return put(s, f, hl + len, SIZE_MAX);
}

static int put_control(session *s, int op, const char *payload, size_t len) {
  int rc = put_frame(s, op, payload, len);
  if (rc < 0)
    session_close(s, PIER_REASON_NO_MEMORY, 1);
  return rc;
}

/* Out of memory for the queue itself: closed, as when a buffer fails. */
static int no_queue(session *s) {
  session_close(s, PIER_REASON_NO_MEMORY, 1);
  return -ENOMEM;
}

int xport_write(session *s, const void *data, size_t len) {
  xport *xp = s->xp;
  sendq *q;
  char h[WS_HEADER_MAX];
  size_t hl = 0, limit;
  int rc;

  if (xp->phase != XP_OPEN || xp->close_sent)
    return -ENOTCONN;
  if (len == 0)
    return 0;
  if (!(q = plain_q(s)))
    return no_queue(s);
  if (SITE(s)->websocket)
    hl = ws_frame_header(h, WS_OP_BINARY, len);
  limit = q_limit(s, q);
  if (q->bytes + hl + len > limit)
    return session_queue_full(s, hl + len);
  rc = hl ? sendq_write(q, h, hl, limit) : 0;
  if (rc == 0)
    rc = sendq_write(q, data, len, limit);
  if (rc < 0) { /* -ENOMEM: a header without its payload cannot stay */
    session_close(s, PIER_REASON_NO_MEMORY, 1);
    return rc;
  }
  xp->unreported += len;
  return session_want_flush(s); /* -ENOMEM: closed */
}

int xport_write_buf(session *s, sbuf *b) {
  xport *xp = s->xp;
  sendq *q;
  size_t len = b->len - b->off, hl = 0, limit;
  char h[WS_HEADER_MAX];
  int rc = 0;

  if (xp->phase != XP_OPEN || xp->close_sent)
    return -ENOTCONN;
  if (len == 0)
    return 0;
  if (!(q = plain_q(s)))
    return no_queue(s);
  limit = q_limit(s, q);
  if (SITE(s)->websocket && b->ws_hlen) { /* the frame shared by a broadcast */
    hl = b->ws_hlen;
    if (q->bytes + hl + len > limit)
      return session_queue_full(s, hl + len);
    rc = sendq_push(q, b, b->off - b->ws_hlen, (uint32_t)(hl + len), limit);
  } else {
    if (SITE(s)->websocket)
      hl = ws_frame_header(h, WS_OP_BINARY, len);
    if (q->bytes + hl + len > limit)
      return session_queue_full(s, hl + len);
    if (hl)
      rc = sendq_write(q, h, hl, limit);
    if (rc == 0)
      rc = sendq_push(q, b, b->off, (uint32_t)len, limit);
  }
  if (rc < 0) {
    session_close(s, PIER_REASON_NO_MEMORY, 1);
    return rc;
  }
  xp->unreported += len;
  return session_want_flush(s); /* -ENOMEM: closed */
}

size_t xport_sent(session *s) {
  xport *xp = s->xp;
  size_t n = xp->unreported;
  if (session_qbytes(s) || (xp->tls && xp->tls->pq.bytes) || session_inflight(s))
    return 0;
  xp->unreported = 0;
  return n;
}

size_t xport_held(const session *s) {
  const xport *xp = s->xp;
  return xp->head_len + ws_held(&xp->ws) + framing_held(&s->fr) +
         (xp->tls ? tls_conn_held(xp->tls->conn) : 0);
}

sbuf *xport_shared_frame(const void *data, size_t len) {
  char h[WS_HEADER_MAX];
  size_t hl = ws_frame_header(h, WS_OP_BINARY, len);
  sbuf *b = len <= SBUF_MAX - WS_HEADER_MAX ? sbuf_alloc(len + WS_HEADER_MAX) : NULL;
  if (!b)
    return NULL;
  memcpy(b->data + WS_HEADER_MAX - hl, h, hl);
  if (len)
    memcpy(b->data + WS_HEADER_MAX, data, len);
  b->off = WS_HEADER_MAX;
  b->ws_hlen = (uint8_t)hl;
  b->len = (uint32_t)(WS_HEADER_MAX + len);
  return b;
}

/* ---- TLS ---- */

static int tls_wire(void *ctx, const char *data, size_t len) {
  session *s = ctx;
  session_ext *x = session_ext_get(s);
  /* Not capped here: TLS writes in answer to input (handshake, alerts,
   * key updates) or to plaintext already counted in pq, and a session
   * whose queue is over half of max_send_queue is no longer read. */
  if (!x || sendq_write(&x->q, data, len, SIZE_MAX) < 0) {
    session_close(s, PIER_REASON_NO_MEMORY, 1);
    return 1;
  }
  if (!s->xp->tls->sealing && session_want_flush(s) < 0)
    return 1; /* closed */
  return 0;
}

static void stack_input(session *s, const char *data, size_t len);

/* The handshakes are done: the plugin meets the session. */
static void opened(session *s) {
  xport *xp = s->xp;
  io_loop *loop = &s->w->loop;
  xp->phase = XP_OPEN;
  STAT_ADD(s->w, handshakes, 1);
  io_timer_stop(loop, &xp->timer);
  if (SITE(s)->websocket && SITE(s)->ping_ms) {
    s->last_rx = (uint32_t)loop->now;
    io_timer_start(loop, &xp->timer, SITE(s)->ping_ms, 0);
  }
  session_ready(s);
}

static void tls_established(session *s) {
  if (SITE(s)->websocket)
    s->xp->phase = XP_HTTP;
  else
    opened(s);
}

static int tls_plain(void *ctx, const char *data, size_t len) {
  session *s = ctx;
  if (s->xp->phase == XP_TLS)
    tls_established(s);
  if (s->state == SS_OPEN)
    stack_input(s, data, len);
  return s->state != SS_OPEN;
}

/* TLS is over (a failure, or the peer's close_notify): what waits to be
 * sealed is dropped, and no WebSocket close frame is owed. After a failure
 * nothing more is sealed at all; after close_notify ours still goes. */
static void tls_over(session *s, int failed) {
  xtls *t = s->xp->tls;
  t->dead = (uint8_t)failed;
  sendq_clear(&t->pq);
  s->xp->close_sent = 1;
}

static void tls_failed(session *s) {
  xport *xp = s->xp;
  char peer[NET_ADDR_STRLEN];
  const char *why = tls_conn_error(xp->tls->conn);

  tls_over(s, 1);
  net_addr_format(&s->peer, peer, sizeof(peer));
  if (xp->phase == XP_TLS) {
    STAT_ADD(s->w, handshake_failures, 1);
    log_limited(&s->w->rl_hs, LOG_INFO, "session %016llx %s: TLS handshake failed: %s; closing",
                (unsigned long long)s->sid, peer, why);
    session_close(s, PIER_REASON_HANDSHAKE_FAILED, 0); /* the alert goes out */
    return;
  }
  log_limited(&s->w->rl_packet, LOG_WARN, "session %016llx %s: TLS error: %s; closing",
              (unsigned long long)s->sid, peer, why);
  session_close(s, PIER_REASON_TLS_ERROR, 0);
}

void xport_pre_flush(session *s) {
  xtls *t = s->xp->tls;
  tls_io io = {.wire = tls_wire, .ctx = s};
  int rc = 0;

  if (!t || t->dead || !tls_conn_ready(t->conn))
    return;
  t->sealing = 1;
  while (t->pq.bytes && session_qbytes(s) < SEAL_STEP && rc == 0) {
    struct iovec iov[SENDQ_IOV_MAX];
    int n = sendq_iov(&t->pq, iov, SENDQ_IOV_MAX), k = 0;
    size_t total = 0;
    while (k < n && total < SEAL_STEP) {
      if (total + iov[k].iov_len > SEAL_STEP)
        iov[k].iov_len = SEAL_STEP - total;
      total += iov[k++].iov_len;
    }
    rc = tls_conn_write(t->conn, iov, k, &io);
    if (rc == 0)
      sendq_consume(&t->pq, total);
  }
  if (rc == 0 && t->shut_owed && !t->pq.bytes && !t->shut_done) {
    t->shut_done = 1;
    rc = tls_conn_shutdown(t->conn, &io);
  }
  t->sealing = 0;
  if (rc < 0 && s->state != SS_CLOSED) {
    log_error("session %016llx: TLS: cannot encrypt: %s", (unsigned long long)s->sid,
              tls_conn_error(t->conn));
    session_close(s, PIER_REASON_TLS_ERROR, 1);
  }
}

size_t xport_pending(const session *s) {
  const xtls *t = s->xp->tls;
  return t && !t->dead ? t->pq.bytes + (t->shut_owed && !t->shut_done ? 1 : 0) : 0;
}

/* ---- WebSocket ---- */

static unsigned close_code(pier_reason r) {
  switch (r) {
  case PIER_REASON_SHUTDOWN:
  case PIER_REASON_IDLE_TIMEOUT:
    return WS_CLOSE_GOING_AWAY;
  case PIER_REASON_PROTOCOL_ERROR:
  case PIER_REASON_PACKET_TOO_SMALL:
    return WS_CLOSE_PROTOCOL;
  case PIER_REASON_INVALID_TEXT:
    return WS_CLOSE_INVALID_DATA;
  case PIER_REASON_PACKET_TOO_LARGE:
    return WS_CLOSE_TOO_BIG;
  case PIER_REASON_KICKED:
  case PIER_REASON_PACKET_TIMEOUT:
    return WS_CLOSE_POLICY;
  case PIER_REASON_PLUGIN_ERROR:
  case PIER_REASON_NO_MEMORY:
    return WS_CLOSE_INTERNAL;
  default:
    return WS_CLOSE_NORMAL;
  }
}

/* One WebSocket message for the plugin: on u16_size_id exactly one packet,
 * on raw a piece of the stream. */
static int ws_on_message(void *ctx, const char *data, size_t len, int text) {
  session *s = ctx;
  char peer[NET_ADDR_STRLEN];
  const char *why = NULL;
  pier_reason r = PIER_REASON_PROTOCOL_ERROR;

  if (s->ep->framing == NET_FRAMING_RAW) {
    session_app_input(s, data, len);
    return s->state != SS_OPEN;
  }
  if (len < FRAME_HEADER) {
    why = "message shorter than the 4-byte packet header";
    r = PIER_REASON_PACKET_TOO_SMALL;
  } else if (frame_u16(data) != len) {
    why = "packet size field does not match the message length";
  }
  if (why) {
    STAT_ADD(s->w, bad_packets, 1);
    log_limited(&s->w->rl_packet, LOG_WARN,
                "session %016llx %s: WebSocket: %s (%zu bytes, size field %u); closing",
                (unsigned long long)s->sid, net_addr_format(&s->peer, peer, sizeof(peer)), why,
                len, len >= 2 ? frame_u16(data) : 0);
    s->xp->close_why = why;
    session_close(s, r, 0);
    return 1;
  }
  STAT_ADD(s->w, messages_in, 1);
  s->ep->handler->on_recv(s->ep->ctx, s, data, len);
  return s->state != SS_OPEN;
}

static int ws_on_control(void *ctx, int op, const char *data, size_t len) {
  session *s = ctx;
  if (op == WS_OP_PING && !s->xp->close_sent)
    put_control(s, WS_OP_PONG, data, len);
  else if (op == WS_OP_PONG)
    s->xp->ping_out = 0;
  return s->state != SS_OPEN;
}

static int ws_on_close(void *ctx, unsigned code, const char *reason, size_t len) {
  session *s = ctx;
  s->xp->peer_code = (uint16_t)(code ? code : WS_CLOSE_NORMAL);
  session_close(s, PIER_REASON_PEER_CLOSED, 0);
  return 1;
}

static void ws_input(session *s, const char *data, size_t len) {
  xport *xp = s->xp;
  ws_sink sink = {.message = ws_on_message, .control = ws_on_control, .close = ws_on_close,
                  .ctx = s};
  const char *why = "";
  unsigned code = 0;
  int rc = ws_feed(&xp->ws, data, len, s->ep->max_packet_size, &sink, &code, &why);

  if (rc < 0) {
    char peer[NET_ADDR_STRLEN];
    pier_reason r = rc == -EMSGSIZE ? PIER_REASON_PACKET_TOO_LARGE
                    : rc == -EILSEQ ? PIER_REASON_INVALID_TEXT
                    : rc == -ENOMEM ? PIER_REASON_NO_MEMORY
                                    : PIER_REASON_PROTOCOL_ERROR;
    char cap[16] = ""; /* the cap a message went over */
    if (rc != -ENOMEM)
      STAT_ADD(s->w, ws_protocol_errors, 1);
    if (rc == -EMSGSIZE)
      snprintf(cap, sizeof(cap), " %u", s->ep->max_packet_size);
    log_limited(&s->w->rl_packet, LOG_WARN, "session %016llx %s: WebSocket: %s%s; closing with %u",
                (unsigned long long)s->sid, net_addr_format(&s->peer, peer, sizeof(peer)), why,
                cap, code);
    xp->close_why = why;
    session_close(s, r, 0);
  }
}

/* ---- HTTP ---- */

/* Sends a whole response and closes once it is out. */
static void reply(session *s, const char *head, size_t head_len, const char *body,
                  size_t body_len, pier_reason reason) {
  s->xp->phase = XP_REPLY;
  if (put(s, head, head_len, SIZE_MAX) < 0 || (body_len && put(s, body, body_len, SIZE_MAX) < 0)) {
    session_close(s, PIER_REASON_NO_MEMORY, 1);
    return;
  }
  session_close(s, reason, 0);
}

static void reply_error(session *s, int status, const char *why) {
  char out[512], peer[NET_ADDR_STRLEN];
  size_t n = ws_http_write_error(status, out, sizeof(out));
  STAT_ADD(s->w, handshake_failures, 1);
  log_limited(&s->w->rl_hs, LOG_INFO, "session %016llx %s: HTTP %d: %s", (unsigned long long)s->sid,
              net_addr_format(&s->peer, peer, sizeof(peer)), status, why);
  reply(s, out, n, NULL, 0, PIER_REASON_HANDSHAKE_FAILED);
}

static void route(session *s, const ws_http_req *req) {
  size_t max_file = s->w->n->opts.max_send_queue;
  ws_http_reply rep;
  char out[1024];
  size_t n;

  max_file = max_file > WS_HTTP_FILE_MAX + 1024 ? WS_HTTP_FILE_MAX : max_file - 1024;
  if (ws_http_route(&SITE(s)->http, req, max_file, &rep) < 0) {
    reply_error(s, 500, "out of memory");
    return;
  }
  switch (rep.action) {
  case WS_HTTP_UPGRADE:
    n = ws_http_write_upgrade(req, out, sizeof(out));
    if (!n || put(s, out, n, SIZE_MAX) < 0) {
      session_close(s, PIER_REASON_NO_MEMORY, 1);
      break;
    }
    opened(s);
    break;
  case WS_HTTP_FILE:
    n = ws_http_write_file_head(rep.content_type, rep.body_len, out, sizeof(out));
    STAT_ADD(s->w, http_files, 1);
    reply(s, out, n, rep.body, rep.head_only ? 0 : rep.body_len, PIER_REASON_CLOSED);
    break;
  default:
    reply_error(s, rep.status, rep.why ? rep.why : "refused");
    break;
  }
  ws_http_reply_free(&rep);
}

/* Takes bytes of the request head; returns how many of data it used (the
 * rest, sent right after the head, is WebSocket input). */
static size_t http_input(session *s, const char *data, size_t len) {
  xport *xp = s->xp;
  const char *buf = data;
  size_t have = len, take = len, before = xp->head_len;
  ws_http_req req;
  int n;

  if (before) {
    take = len < WS_HTTP_HEAD_MAX - before ? len : WS_HTTP_HEAD_MAX - before;
    memcpy(xp->head + before, data, take);
    xp->head_len = (uint16_t)(before + take);
    buf = xp->head;
    have = xp->head_len;
    /* A head ends with a line: a client sending a byte at a time gets a
     * parse per line, not one per byte. */
    if (!memchr(data, '\n', take) && have < WS_HTTP_HEAD_MAX)
      return len;
  }
  n = ws_http_parse(buf, have, &req);
  if (n == 0) {
    if (!before) { /* keep it: at most WS_HTTP_HEAD_MAX - 1 bytes */
      if (!xp->head && !(xp->head = malloc(WS_HTTP_HEAD_MAX))) {
        session_close(s, PIER_REASON_NO_MEMORY, 1);
        return len;
      }
      memcpy(xp->head, data, len);
      xp->head_len = (uint16_t)len;
    }
    return len; /* handshake_timeout_ms bounds the wait */
  }
  if (n < 0) {
    reply_error(s, n == -EMSGSIZE ? 431 : 400,
                n == -EMSGSIZE ? "request head over 8 KiB" : "malformed request head");
    return len;
  }
  route(s, &req);
  free(xp->head);
  xp->head = NULL;
  xp->head_len = 0;
  return (size_t)n - before;
}

static void stack_input(session *s, const char *data, size_t len) {
  xport *xp = s->xp;
  if (xp->phase == XP_HTTP) {
    size_t used = http_input(s, data, len);
    data += used;
    len -= used;
  }
  if (xp->phase != XP_OPEN || s->state != SS_OPEN || len == 0)
    return;
  if (SITE(s)->websocket)
    ws_input(s, data, len);
  else
    session_app_input(s, data, len);
}

static void tls_input(session *s, const char *data, size_t len) {
  xport *xp = s->xp;
  tls_io io = {.wire = tls_wire, .plain = tls_plain, .ctx = s};
  int rc = tls_conn_feed(xp->tls->conn, data, len, &io);

  if (s->state != SS_OPEN)
    return;
  if (rc == -ESHUTDOWN) { /* answered with close_notify at once (RFC 5246 7.2.1) */
    tls_over(s, 0);
    session_close(s, PIER_REASON_PEER_CLOSED, 0);
  } else if (rc < 0) {
    tls_failed(s);
  } else if (xp->phase == XP_TLS && tls_conn_ready(xp->tls->conn)) {
    tls_established(s); /* done, and the client waits for the server */
  }
}

void xport_input(session *s, const char *data, size_t len) {
  xport *xp = s->xp;
  if (xp->tls)
    tls_input(s, data, len);
  else
    stack_input(s, data, len);
  /* A record, frame, message or packet started and not finished. */
  if (s->state == SS_OPEN && xp->phase == XP_OPEN)
    session_partial(s, (xp->tls && tls_conn_partial(xp->tls->conn)) || ws_partial(&xp->ws) ||
                           s->fr.held != NULL);
}

/* ---- session life ---- */

static void on_timer(io_timer *t) {
  xport *xp = container_of(t, xport, timer);
  session *s = xp->s;
  io_loop *loop = &s->w->loop;
  char peer[NET_ADDR_STRLEN];
  uint64_t iv = SITE(s)->ping_ms, quiet;

  if (s->state != SS_OPEN)
    return;
  if (xp->phase != XP_OPEN) {
    STAT_ADD(s->w, handshake_timeouts, 1);
    log_limited(&s->w->rl_hs, LOG_INFO,
                "session %016llx %s: handshake not completed within %u ms "
                "(handshake_timeout_ms); closing",
                (unsigned long long)s->sid, net_addr_format(&s->peer, peer, sizeof(peer)),
                SITE(s)->handshake_ms);
    session_close(s, PIER_REASON_HANDSHAKE_TIMEOUT, 1);
    return;
  }
  quiet = (uint32_t)((uint32_t)loop->now - s->last_rx); /* session times are mod 2^32 */
  if (s->read_paused || s->congested) { /* not read by pier: no answer can come */
    xp->ping_out = 0;
    io_timer_start(loop, &xp->timer, iv, 0);
    return;
  }
  if (quiet < iv) {
    xp->ping_out = 0;
    io_timer_start(loop, &xp->timer, iv - quiet, 0);
    return;
  }
  if (!xp->ping_out) {
    xp->ping_out = 1;
    if (put_control(s, WS_OP_PING, NULL, 0) == 0)
      io_timer_start(loop, &xp->timer, iv, 0);
    return;
  }
  STAT_ADD(s->w, ping_timeouts, 1);
  log_limited(&s->w->rl_idle, LOG_INFO,
              "session %016llx %s: no answer to a keepalive ping within %llu ms; closing",
              (unsigned long long)s->sid, net_addr_format(&s->peer, peer, sizeof(peer)),
              (unsigned long long)iv);
  session_close(s, PIER_REASON_PING_TIMEOUT, 1);
}

int xport_attach(session *s) {
  const xport_site *site = s->ep->site;
  xport *xp = calloc(1, sizeof(*xp));
  if (!xp)
    return -ENOMEM;
  xp->s = s;
  io_timer_init(&xp->timer, on_timer);
  if (site->tls) {
    if (!(xp->tls = calloc(1, sizeof(*xp->tls))) || !(xp->tls->conn = tls_conn_new(site->tls))) {
      free(xp->tls);
      free(xp);
      return -ENOMEM;
    }
    xp->tls->pq.gauge = &s->w->stats.send_queue_bytes; /* plaintext waiting counts as queued too */
  }
  xp->phase = xp->tls ? XP_TLS : site->websocket ? XP_HTTP : XP_OPEN;
  s->xp = xp;
  return 0;
}

void xport_start(session *s) {
  s->last_rx = (uint32_t)s->w->loop.now;
  io_timer_start(&s->w->loop, &s->xp->timer, SITE(s)->handshake_ms, 0);
}

void xport_close(session *s, pier_reason reason) {
  xport *xp = s->xp;
  if (SITE(s)->websocket && xp->phase == XP_OPEN && !xp->close_sent) {
    char pl[125];
    unsigned code = xp->peer_code ? xp->peer_code : close_code(reason);
    const char *text = xp->close_why ? xp->close_why : xp->peer_code ? "" : net_reason_text(reason);
    size_t n = ws_close_payload(pl, code, text);
    /* Inside session_close: on ENOMEM the close goes on without the frame. */
    xp->close_sent = 1;
    (void)put_frame(s, WS_OP_CLOSE, pl, n);
  }
  if (xp->tls && tls_conn_ready(xp->tls->conn) && !xp->tls->shut_done) {
    xp->tls->shut_owed = 1;
    (void)session_want_flush(s); /* inside session_close: it goes on either way */
  }
}

void xport_free(session *s) {
  xport *xp = s->xp;
  io_timer_stop(&s->w->loop, &xp->timer);
  if (xp->tls) {
    tls_conn_free(xp->tls->conn);
    sendq_clear(&xp->tls->pq);
    free(xp->tls);
  }
  ws_conn_reset(&xp->ws);
  free(xp->head);
  free(xp);
  s->xp = NULL;
}
