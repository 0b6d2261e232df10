/* Loopback integration tests of core/net: real sockets, real worker threads,
 * every case once per backend (io_uring and epoll on Linux, iocp on
 * Windows). Sockets, threads and clocks go through core/os and testlib, so
 * the one source runs on both. */
#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "net/framing.h"
#include "net/net_internal.h"
#ifndef _WIN32
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#endif
#include "testlib.h"

enum { MODE_ECHO, MODE_RELAY, MODE_FLOOD, MODE_SILENT, MODE_STREAM, MODE_PINGPONG, MODE_FANOUT,
       MODE_REPLY };

#define MAX_TRACK 1024

typedef struct srv {
  net *n;
  uint16_t port;
  int mode;
  net_endpoint ep;
  _Atomic int connected, disconnected, recvs, sends;
  _Atomic size_t send_bytes; /* what on_send reported */
  size_t streamed;           /* MODE_STREAM, MODE_PINGPONG: bytes handed to net_send (the worker's) */
  _Atomic size_t progress;   /* the same, for the test's thread */
  _Atomic int reasons[32];
  _Atomic int flood_rc;
  _Atomic size_t flood_queued;
  os_mutex mu;
  pier_sid sids[MAX_TRACK]; /* by connection order (echo) or client index (relay) */
  int nsids;
  _Atomic int registered;
  _Atomic int cross_worker;
  _Atomic int per_sid_disconnects[MAX_TRACK];
  pier_sid sent_to[MAX_TRACK]; /* MODE_FANOUT: the sessions on_send named, in order */
  int nsent_to;
  _Atomic size_t queued_seen[5]; /* MODE_REPLY 'o': session_queued after each write */
  _Atomic int reply_rc[2];       /* MODE_REPLY 'q': what the two writes returned */
  uint32_t replies;      /* MODE_REPLY 'r': replies made */
  int sndbuf;            /* MODE_REPLY: the sessions' SO_SNDBUF, if not 0 */
  int relay_pending;     /* MODE_REPLY 'p': the reply's on_send writes to the second session */
  _Atomic int relayed, relayed_in_pass; /* its on_sends, and those inside the flush pass */
} srv;

/* MODE_STREAM: STREAM_TOTAL bytes of test_pattern(7, ·) to the first
 * session, in pieces of STREAM_PIECE, each sent from the on_send of the one
 * before; others echo. MODE_PINGPONG: as many bytes of 'p' between the
 * second and third sessions, each one's on_send sending the next piece to
 * the other; the first echoes. */
#define STREAM_PIECE 64
#define STREAM_TOTAL (8u << 20)

/* The next piece to `to`; fill 0: the pattern, else that byte. */
static void stream_next(srv *v, pier_sid to, char fill) {
  char piece[STREAM_PIECE];
  if (v->streamed >= STREAM_TOTAL)
    return;
  for (size_t k = 0; k < sizeof(piece); k++)
    piece[k] = fill ? fill : (char)test_pattern(7, v->streamed + k);
  v->streamed += sizeof(piece);
  atomic_store(&v->progress, v->streamed);
  ck_assert_int_eq(net_send(v->n, to, piece, sizeof(piece)), 0);
}

static void on_connected(void *ctx, session *s) {
  srv *v = ctx;
  if (v->mode == MODE_REPLY && v->sndbuf)
    ck_assert_int_eq(test_sock_sndbuf(s->iofd.fd, v->sndbuf), 0);
  if (v->mode == MODE_STREAM && atomic_load(&v->connected) == 0)
    stream_next(v, session_sid(s), 0); /* the first session gets the stream */
  os_mutex_lock(&v->mu);
  if (v->mode != MODE_RELAY && v->nsids < MAX_TRACK)
    v->sids[v->nsids++] = session_sid(s);
  os_mutex_unlock(&v->mu);
  atomic_fetch_add(&v->connected, 1);
  if (v->mode == MODE_PINGPONG && v->nsids == 3 && session_sid(s) == v->sids[2])
    stream_next(v, v->sids[1], 'p');
}

static void relay(srv *v, session *s, const char *pkt, size_t len) {
  uint16_t id = frame_u16(pkt + 2);
  if (id & 0x8000) { /* hello: register this session as client (id & 0x7fff) */
    os_mutex_lock(&v->mu);
    v->sids[id & 0x7fff] = session_sid(s);
    os_mutex_unlock(&v->mu);
    atomic_fetch_add(&v->registered, 1);
    return;
  }
  os_mutex_lock(&v->mu);
  pier_sid to = v->sids[id];
  os_mutex_unlock(&v->mu);
  if (PIER_SID_WORKER(to) != PIER_SID_WORKER(session_sid(s)))
    atomic_fetch_add(&v->cross_worker, 1);
  ck_assert_int_eq(net_send(v->n, to, pkt, len), 0);
}

/* MODE_REPLY: what one callback writes back for a command byte, each a
 * reply its worker may stage or has to queue (session.c, "the staged
 * reply"). */
#define REPLY_PIECE 1000
#define R_REPLY 4000
static void reply(srv *v, session *s, char cmd) {
  pier_sid sid = session_sid(s);
  char piece[R_REPLY];
  sbuf *b;

  switch (cmd) {
  case 'o': /* five writes of 1000 bytes: past the 4096 a stage holds */
    for (int i = 0; i < 5; i++) {
      memset(piece, 'a' + i, REPLY_PIECE);
      ck_assert_int_eq(net_send(v->n, sid, piece, REPLY_PIECE), 0);
      atomic_store(&v->queued_seen[i], session_queued(s));
    }
    break;
  case 'b': /* a write, a shared buffer, a write */
    ck_assert_int_eq(net_send(v->n, sid, "x1", 2), 0);
    ck_assert_ptr_nonnull(b = sbuf_from("--shared--", 10));
    ck_assert_int_eq(net_send_buf(v->n, sid, b), 0);
    sbuf_release(b);
    ck_assert_int_eq(net_send(v->n, sid, "y2", 2), 0);
    break;
  case 'c':
    ck_assert_int_eq(net_send(v->n, sid, "bye", 3), 0);
    ck_assert_int_eq(net_close(v->n, sid, PIER_REASON_CLOSED), 0);
    break;
  case 'a':
    ck_assert_int_eq(net_send(v->n, sid, "lost", 4), 0);
    ck_assert_int_eq(net_abort(v->n, sid, PIER_REASON_KICKED), 0);
    break;
  case 'q': /* 600 + 600 bytes against a max_send_queue of 1000 */
    memset(piece, 'q', 600);
    atomic_store(&v->reply_rc[0], net_send(v->n, sid, piece, 600));
    atomic_store(&v->reply_rc[1], net_send(v->n, sid, piece, 600));
    break;
  case 'p': /* a reply whose on_send writes to the second session */
    v->relay_pending = 1;
    ck_assert_int_eq(net_send(v->n, sid, "1", 1), 0);
    break;
  case 'r': /* R_REPLY bytes of pattern, numbered */
    for (size_t k = 0; k < R_REPLY; k++)
      piece[k] = (char)test_pattern(v->replies, k);
    v->replies++;
    ck_assert_int_eq(net_send(v->n, sid, piece, R_REPLY), 0);
    break;
  default:
    break;
  }
}

static void on_recv(void *ctx, session *s, const char *data, size_t len) {
  srv *v = ctx;
  if (v->mode == MODE_REPLY) {
    for (size_t i = 0; i < len; i++)
      reply(v, s, data[i]);
    atomic_fetch_add(&v->recvs, 1);
    return;
  }
  atomic_fetch_add(&v->recvs, 1);
  if (v->mode == MODE_ECHO || v->mode == MODE_STREAM || v->mode == MODE_PINGPONG) {
    net_send(v->n, session_sid(s), data, len);
  } else if (v->mode == MODE_RELAY) {
    relay(v, s, data, len);
  } else if (v->mode == MODE_FANOUT) { /* a byte to every session, in connection order */
    os_mutex_lock(&v->mu);
    int n = v->nsids;
    os_mutex_unlock(&v->mu);
    for (int i = 0; i < n; i++)
      ck_assert_int_eq(net_send(v->n, v->sids[i], "x", 1), 0);
  } else if (v->mode == MODE_FLOOD) {
    /* Queue 64 KiB blocks until the cap refuses one. */
    static char block[65536];
    int rc = 0;
    for (int i = 0; i < 1024 && rc == 0; i++) {
      atomic_store(&v->flood_queued, session_queued(s));
      rc = net_send(v->n, session_sid(s), block, sizeof(block));
    }
    atomic_store(&v->flood_rc, rc);
  }
}

static void on_send(void *ctx, session *s, size_t bytes) {
  srv *v = ctx;
  atomic_fetch_add(&v->sends, 1);
  atomic_fetch_add(&v->send_bytes, bytes);
  if (v->mode == MODE_REPLY && session_sid(s) == v->sids[0] && v->relay_pending) {
    v->relay_pending = 0;
    ck_assert_int_eq(net_send(v->n, v->sids[1], "2", 1), 0);
  } else if (v->mode == MODE_REPLY && session_sid(s) == v->sids[1]) {
    if (s->w->flushing)
      atomic_fetch_add(&v->relayed_in_pass, 1);
    atomic_fetch_add(&v->relayed, 1);
  }
  if (v->mode == MODE_FANOUT) {
    os_mutex_lock(&v->mu);
    if (v->nsent_to < MAX_TRACK)
      v->sent_to[v->nsent_to++] = session_sid(s);
    os_mutex_unlock(&v->mu);
  }
  if (v->mode == MODE_STREAM && session_sid(s) == v->sids[0])
    stream_next(v, session_sid(s), 0);
  if (v->mode == MODE_PINGPONG && v->nsids == 3 &&
      (session_sid(s) == v->sids[1] || session_sid(s) == v->sids[2]))
    stream_next(v, session_sid(s) == v->sids[1] ? v->sids[2] : v->sids[1], 'p');
}

static void on_disconnected(void *ctx, session *s, pier_reason reason) {
  srv *v = ctx;
  atomic_fetch_add(&v->reasons[reason], 1);
  atomic_fetch_add(&v->disconnected, 1);
  os_mutex_lock(&v->mu);
  for (int i = 0; i < v->nsids; i++)
    if (v->sids[i] == session_sid(s))
      atomic_fetch_add(&v->per_sid_disconnects[i], 1);
  os_mutex_unlock(&v->mu);
}

static const net_handler srv_handler = {on_connected, on_recv, on_send, on_disconnected, NULL};

/* Creates a server with opts o (backend and the rest) on one raw or framed
 * listener; net_start is left to the caller. */
static srv *srv_create_o(const net_opts *o, int mode, net_framing framing) {
  srv *v = calloc(1, sizeof(*v));
  net_addr a;
  net_listener *l;

  os_mutex_init(&v->mu);
  v->mode = mode;
  v->ep = (net_endpoint){.handler = &srv_handler, .ctx = v,
      .framing = framing, .max_packet_size = 1024};
  ck_assert_int_eq(net_create(o, &v->n), 0);
  ck_assert_str_eq(net_backend_name(v->n), o->backend);
  ck_assert_int_eq(net_addr_parse("127.0.0.1", 0, &a), 0);
  ck_assert_int_eq(net_listen(v->n, &a, &v->ep, &l), 0);
  v->port = net_listener_port(l);
  ck_assert_int_gt(v->port, 0);
  return v;
}

static srv *srv_start_o(const net_opts *o, int mode, net_framing framing) {
  srv *v = srv_create_o(o, mode, framing);
  ck_assert_int_eq(net_start(v->n), 0);
  return v;
}

static srv *srv_start(const char *backend, int mode, unsigned workers, unsigned max_sessions,
                      size_t max_send_queue, net_framing framing) {
  net_opts o = {.workers = workers,
                .backend = backend,
                .max_sessions = max_sessions,
                .max_send_queue = max_send_queue,
                .close_timeout_ms = 3000};
  return srv_start_o(&o, mode, framing);
}

static void srv_free(srv *v) {
  net_destroy(v->n);
  os_mutex_destroy(&v->mu);
  free(v);
}

typedef struct wait_int {
  _Atomic int *p;
  int want;
} wait_int;

static int cond_int(void *arg) {
  wait_int *w = arg;
  return atomic_load(w->p) >= w->want;
}

static int wait_for(_Atomic int *p, int want) {
  wait_int w = {p, want};
  return test_wait(cond_int, &w, 10000);
}

typedef struct wait_bytes {
  srv *v;
  size_t want;
} wait_bytes;

static int cond_send_bytes(void *arg) {
  wait_bytes *w = arg;
  return atomic_load(&w->v->send_bytes) >= w->want;
}

/* Until on_send has reported `want` bytes in all. */
static int wait_send_bytes(srv *v, size_t want) {
  wait_bytes w = {v, want};
  return test_wait(cond_send_bytes, &w, 10000);
}

/* ---- 100 sessions each echo 1 MiB byte-exact ---- */

#define ECHO_CONNS 100
#define ECHO_BYTES (1u << 20)

START_TEST(test_net_echo_100_sessions_1mib) {
  srv *v = srv_start(test_backend(_i), MODE_ECHO, 1, 1000, 4u << 20, NET_FRAMING_RAW);
  struct pollfd pfd[ECHO_CONNS];
  size_t sent[ECHO_CONNS] = {0}, got[ECHO_CONNS] = {0};
  char buf[65536];
  int done = 0;
  time_t deadline = time(NULL) + 120;

  for (int i = 0; i < ECHO_CONNS; i++) {
    pfd[i].fd = test_connect(v->port);
    ck_assert_int_eq(test_sock_nonblock(pfd[i].fd), 0);
  }
  while (done < ECHO_CONNS) {
    ck_assert_msg(time(NULL) < deadline, "echo timed out: %d of %d done", done, ECHO_CONNS);
    for (int i = 0; i < ECHO_CONNS; i++)
      pfd[i].events = (got[i] < ECHO_BYTES ? POLLIN : 0) | (sent[i] < ECHO_BYTES ? POLLOUT : 0);
    ck_assert_int_ge(test_poll(pfd, ECHO_CONNS, 1000), 0);
    for (int i = 0; i < ECHO_CONNS; i++) {
      if ((pfd[i].revents & POLLOUT) && sent[i] < ECHO_BYTES) {
        size_t n = ECHO_BYTES - sent[i] < sizeof(buf) ? ECHO_BYTES - sent[i] : sizeof(buf);
        for (size_t k = 0; k < n; k++)
          buf[k] = (char)test_pattern((uint32_t)i, sent[i] + k);
        long w = test_sock_send(pfd[i].fd, buf, n);
        if (w > 0)
          sent[i] += (size_t)w;
      }
      if (pfd[i].revents & (POLLIN | POLLERR | POLLHUP)) {
        long r = test_sock_recv(pfd[i].fd, buf, sizeof(buf));
        ck_assert_msg(r > 0 || r == -EAGAIN, "conn %d: recv %ld (%s)", i, r,
                      r < 0 ? os_strerror((int)-r) : "EOF");
        /* Check's assertions log each pass: compare first, assert on a miss. */
        for (long k = 0; k < r; k++)
          if ((uint8_t)buf[k] != test_pattern((uint32_t)i, got[i] + (size_t)k))
            ck_abort_msg("conn %d: byte %zu differs", i, got[i] + (size_t)k);
        if (r > 0) {
          got[i] += (size_t)r;
          if (got[i] == ECHO_BYTES)
            done++;
        }
      }
    }
  }
  for (int i = 0; i < ECHO_CONNS; i++)
    os_sock_close(pfd[i].fd);
  ck_assert(wait_for(&v->disconnected, ECHO_CONNS));
  ck_assert_int_eq(atomic_load(&v->connected), ECHO_CONNS);
  ck_assert_int_eq(atomic_load(&v->reasons[PIER_REASON_PEER_CLOSED]), ECHO_CONNS);
  net_stats st;
  net_get_stats(v->n, &st);
  ck_assert_uint_eq(st.bytes_in, (uint64_t)ECHO_CONNS * ECHO_BYTES);
  ck_assert_uint_eq(st.bytes_out, (uint64_t)ECHO_CONNS * ECHO_BYTES);
  srv_free(v);
}
END_TEST

/* ---- disconnect notifications ---- */

START_TEST(test_net_server_close_notifies_once) {
  srv *v = srv_start(test_backend(_i), MODE_ECHO, 1, 100, 1u << 20, NET_FRAMING_RAW);
  int fd = test_connect(v->port);
  char c;
  size_t got = 0;

  ck_assert(wait_for(&v->connected, 1));
  ck_assert_int_eq(net_close(v->n, v->sids[0], PIER_REASON_KICKED), 0);
  /* The client sees a clean EOF. */
  ck_assert_int_eq(test_recv_until_close(fd, &got), 0);
  ck_assert_uint_eq(got, 0);
  ck_assert(wait_for(&v->disconnected, 1));
  /* A second close of the same id is refused, and nothing more is notified. */
  ck_assert_int_eq(net_close(v->n, v->sids[0], PIER_REASON_KICKED), -ENOTCONN);
  os_sock_close(fd);
  os_sleep_ms(50);
  ck_assert_int_eq(atomic_load(&v->disconnected), 1);
  ck_assert_int_eq(atomic_load(&v->per_sid_disconnects[0]), 1);
  ck_assert_int_eq(atomic_load(&v->reasons[PIER_REASON_KICKED]), 1);
  (void)c;
  srv_free(v);
}
END_TEST

START_TEST(test_net_client_close_notifies_once) {
  srv *v = srv_start(test_backend(_i), MODE_ECHO, 1, 100, 1u << 20, NET_FRAMING_RAW);
  int fd = test_connect(v->port);
  char buf[5];

  test_send_all(fd, "hello", 5);
  ck_assert_int_eq(test_recv_exact(fd, buf, 5), 0);
  ck_assert_int_eq(memcmp(buf, "hello", 5), 0);
  os_sock_close(fd);
  ck_assert(wait_for(&v->disconnected, 1));
  os_sleep_ms(50);
  ck_assert_int_eq(atomic_load(&v->disconnected), 1);
  ck_assert_int_eq(atomic_load(&v->reasons[PIER_REASON_PEER_CLOSED]), 1);
  /* Shutdown notifies nobody twice. */
  net_stop(v->n);
  ck_assert_int_eq(atomic_load(&v->disconnected), 1);
  srv_free(v);
}
END_TEST

START_TEST(test_net_reset_mid_stream_notifies_once) {
  srv *v = srv_start(test_backend(_i), MODE_ECHO, 1, 100, 1u << 20, NET_FRAMING_RAW);
  int fd = test_connect(v->port);
  char buf[3];

  test_send_all(fd, "abc", 3);
  ck_assert_int_eq(test_recv_exact(fd, buf, 3), 0);
  os_sock_abort(fd); /* RST */
  ck_assert(wait_for(&v->disconnected, 1));
  os_sleep_ms(50);
  ck_assert_int_eq(atomic_load(&v->disconnected), 1);
  ck_assert_int_eq(atomic_load(&v->reasons[PIER_REASON_PEER_RESET]), 1);
  srv_free(v);
}
END_TEST

/* ---- graceful vs abortive close, half-close ---- */

START_TEST(test_net_graceful_close_flushes_then_fin) {
  srv *v = srv_start(test_backend(_i), MODE_SILENT, 1, 100, 8u << 20, NET_FRAMING_RAW);
  int fd = test_connect(v->port);
  static char big[2u << 20];
  size_t got = 0;

  ck_assert(wait_for(&v->connected, 1));
  memset(big, 'x', sizeof(big));
  ck_assert_int_eq(net_send(v->n, v->sids[0], big, sizeof(big)), 0);
  ck_assert_int_eq(net_close(v->n, v->sids[0], PIER_REASON_CLOSED), 0);
  /* Sends after close are refused; what was queued before arrives in full. */
  ck_assert_int_eq(net_send(v->n, v->sids[0], "late", 4), -ENOTCONN);
  ck_assert_int_eq(test_recv_until_close(fd, &got), 0);
  ck_assert_uint_eq(got, sizeof(big));
  ck_assert(wait_for(&v->disconnected, 1));
  ck_assert_int_eq(atomic_load(&v->reasons[PIER_REASON_CLOSED]), 1);
  os_sock_close(fd);
  srv_free(v);
}
END_TEST

/* A plugin that sends its next piece from each on_send: on epoll a send
 * mostly goes out at once, and its on_send then comes before the flush has
 * returned. The stream arrives whole and in order, on_send reports every
 * byte (the flush does not recurse once per piece), and another session is
 * echoed mid-stream. */
START_TEST(test_net_stream_sent_from_on_send_arrives_in_order) {
  srv *v = srv_start(test_backend(_i), MODE_STREAM, 1, 100, 1u << 20, NET_FRAMING_RAW);
  int fd = test_connect(v->port), other;
  static char buf[65536];
  size_t got = 0;
  int echoes = 0;
  time_t deadline = time(NULL) + 120;

  ck_assert(wait_for(&v->connected, 1));
  other = test_connect(v->port);
  ck_assert(wait_for(&v->connected, 2));
  ck_assert_int_eq(test_sock_nonblock(fd), 0);
  while (got < STREAM_TOTAL) {
    long r;
    ck_assert_msg(time(NULL) < deadline, "stream timed out at %zu of %u bytes", got,
                  STREAM_TOTAL);
    if (echoes < 3 && got >= (size_t)(echoes + 1) * (STREAM_TOTAL / 4)) {
      /* Mid-stream, the other session is still answered. */
      char reply[4];
      ck_assert_int_eq(test_sock_send(other, "ping", 4), 4);
      ck_assert_int_eq(test_recv_exact(other, reply, 4), 0);
      ck_assert_int_eq(memcmp(reply, "ping", 4), 0);
      echoes++;
    }
    r = test_sock_recv(fd, buf, sizeof(buf));
    if (r == -EAGAIN) {
      struct pollfd p = {.fd = fd, .events = POLLIN};
      ck_assert_int_ge(test_poll(&p, 1, 1000), 0);
      continue;
    }
    ck_assert_msg(r > 0, "recv %ld at %zu bytes", r, got);
    for (long k = 0; k < r; k++)
      if ((uint8_t)buf[k] != test_pattern(7, got + (size_t)k))
        ck_abort_msg("byte %zu differs", got + (size_t)k);
    got += (size_t)r;
  }
  ck_assert_int_eq(echoes, 3);
  ck_assert_uint_eq(got, STREAM_TOTAL);
  os_sock_close(fd);
  os_sock_close(other);
  ck_assert(wait_for(&v->disconnected, 2));
  /* Every byte on_send reported is the stream's, or the other's 12 echoed. */
  ck_assert_uint_eq(atomic_load(&v->send_bytes), (size_t)STREAM_TOTAL + 12);
  srv_free(v);
}
END_TEST

/* Two sessions whose on_send each sends the next piece to the other, with
 * peers that keep reading: the worker still answers a third session while
 * they go on. A ping sent once the pieces flow is echoed before half of the
 * stream has been handed over, not after the whole of it. */
START_TEST(test_net_sessions_sending_to_each_other_from_on_send_share_the_worker) {
  srv *v = srv_start(test_backend(_i), MODE_PINGPONG, 1, 100, 1u << 20, NET_FRAMING_RAW);
  int c = test_connect(v->port), a, b;
  static char buf[65536];
  size_t got = 0, at_ping = 0, at_echo = 0;
  time_t deadline = time(NULL) + 120;

  ck_assert(wait_for(&v->connected, 1));
  a = test_connect(v->port);
  ck_assert(wait_for(&v->connected, 2));
  b = test_connect(v->port); /* its on_connected starts the pieces, to a */
  ck_assert_int_eq(test_sock_nonblock(a), 0);
  ck_assert_int_eq(test_sock_nonblock(b), 0);
  ck_assert_int_eq(test_sock_nonblock(c), 0);
  while (got < STREAM_TOTAL || !at_echo) {
    struct pollfd p[3] = {{.fd = a, .events = POLLIN}, {.fd = b, .events = POLLIN},
                          {.fd = c, .events = POLLIN}};
    ck_assert_msg(time(NULL) < deadline, "stalled at %zu of %u bytes", got, STREAM_TOTAL);
    ck_assert_int_ge(test_poll(p, 3, 100), 0);
    for (int k = 0; k < 2; k++) {
      long r = test_sock_recv(p[k].fd, buf, sizeof(buf));
      ck_assert_msg(r > 0 || r == -EAGAIN, "recv %ld at %zu bytes", r, got);
      for (long i = 0; i < r; i++)
        if (buf[i] != 'p')
          ck_abort_msg("byte %zu is not the stream's", got + (size_t)i);
      if (r > 0)
        got += (size_t)r;
    }
    if (!at_ping && got > 0) {
      at_ping = atomic_load(&v->progress);
      ck_assert_int_eq(test_sock_send(c, "ping", 4), 4);
    } else if (at_ping && !at_echo) {
      char reply[4];
      long r = test_sock_recv(c, reply, sizeof(reply));
      ck_assert_msg(r == 4 || r == -EAGAIN, "echo recv %ld", r);
      if (r == 4) {
        ck_assert_int_eq(memcmp(reply, "ping", 4), 0);
        at_echo = atomic_load(&v->progress);
      }
    }
  }
  ck_assert_msg(at_echo - at_ping < STREAM_TOTAL / 2,
                "the echo came after %zu of the stream's %u bytes", at_echo - at_ping, STREAM_TOTAL);
  ck_assert_uint_eq(got, STREAM_TOTAL);
  os_sock_close(a);
  os_sock_close(b);
  os_sock_close(c);
  ck_assert(wait_for(&v->disconnected, 3));
  srv_free(v);
}
END_TEST

#define FANOUT_CONNS 16

/* FANOUT_CONNS clients, one at a time, so that sids[] is in their order. */
static void fanout_open(srv *v, int *fd) {
  for (int i = 0; i < FANOUT_CONNS; i++) {
    fd[i] = test_connect(v->port);
    ck_assert(wait_for(&v->connected, i + 1));
  }
}

static void fanout_close(srv *v, const int *fd) {
  for (int i = 0; i < FANOUT_CONNS; i++)
    os_sock_close(fd[i]);
  ck_assert(wait_for(&v->disconnected, FANOUT_CONNS));
  srv_free(v);
}

/* Sends a callback makes to many sessions go out in the order it made them:
 * the first session it answered does not wait for all the others. */
START_TEST(test_net_sends_to_many_sessions_leave_in_the_order_made) {
  srv *v = srv_start(test_backend(_i), MODE_FANOUT, 1, 100, 1u << 20, NET_FRAMING_RAW);
  int fd[FANOUT_CONNS];
  char c;

  fanout_open(v, fd);
  ck_assert_int_eq(test_sock_send(fd[FANOUT_CONNS - 1], "g", 1), 1);
  for (int i = 0; i < FANOUT_CONNS; i++) {
    ck_assert_int_eq(test_sock_recv(fd[i], &c, 1), 1);
    ck_assert_int_eq(c, 'x');
  }
  ck_assert(wait_for(&v->sends, FANOUT_CONNS));
  os_mutex_lock(&v->mu);
  ck_assert_int_eq(v->nsent_to, FANOUT_CONNS);
  for (int i = 0; i < FANOUT_CONNS; i++) {
    int at = 0;
    while (at < FANOUT_CONNS && v->sent_to[at] != v->sids[i])
      at++;
    ck_assert_msg(at == i, "send %d of the callback went out as number %d", i, at);
  }
  os_mutex_unlock(&v->mu);
  fanout_close(v, fd);
}
END_TEST

/* One client, one request at a time: on the backends that can send at once
 * (epoll, and io_uring when only one session has something to send) the
 * reply goes out in the same loop iteration as its request came in, so a
 * round trip costs the worker one wait for events, not a second one for the
 * send's completion. Every reply comes back whole. */
#define ROUND_TRIPS 2000
START_TEST(test_net_a_lone_round_trip_costs_one_wait) {
  srv *v = srv_start(test_backend(_i), MODE_ECHO, 1, 100, 1u << 20, NET_FRAMING_RAW);
  int fd = test_connect(v->port);
  char req[64], rep[64];
  net_stats before, after;
  uint64_t waits;

  for (int r = 0; r <= ROUND_TRIPS; r++) {
    size_t got = 0;
    if (r == 1)
      net_get_stats(v->n, &before); /* the connection and a first echo are done */
    for (size_t k = 0; k < sizeof(req); k++)
      req[k] = (char)test_pattern((uint32_t)r, k);
    ck_assert_int_eq(test_sock_send(fd, req, sizeof(req)), (long)sizeof(req));
    while (got < sizeof(rep)) {
      long n = test_sock_recv(fd, rep + got, sizeof(rep) - got);
      ck_assert_msg(n > 0, "round trip %d: recv %ld after %zu bytes", r, n, got);
      got += (size_t)n;
    }
    ck_assert_msg(memcmp(req, rep, sizeof(req)) == 0, "round trip %d: the reply differs", r);
  }
  net_get_stats(v->n, &after);
  waits = after.io_waits - before.io_waits;
  if (strcmp(test_backend(_i), "epoll") == 0 || strcmp(test_backend(_i), "io_uring") == 0)
    ck_assert_msg(waits <= ROUND_TRIPS + ROUND_TRIPS / 4, "%llu waits for %d round trips",
                  (unsigned long long)waits, ROUND_TRIPS);
  ck_assert_uint_ge(waits, ROUND_TRIPS / 2); /* the worker did wait for the requests */
  os_sock_close(fd);
  ck_assert(wait_for(&v->disconnected, 1));
  srv_free(v);
}
END_TEST

/* A callback that sends to many sessions: on io_uring those sends go as
 * SQEs submitted together in the loop's next enter, which then returns with
 * their completions (two waits for each trigger); epoll sends each at once
 * (one wait). Every session gets every byte either way. */
#define FANOUT_TRIGGERS 200
START_TEST(test_net_sends_to_many_sessions_ride_the_ring_on_io_uring) {
  srv *v = srv_start(test_backend(_i), MODE_FANOUT, 1, 100, 1u << 20, NET_FRAMING_RAW);
  int fd[FANOUT_CONNS];
  net_stats before, after;
  uint64_t waits;
  size_t sent0;
  char c;

  fanout_open(v, fd);
  sent0 = atomic_load(&v->send_bytes);
  net_get_stats(v->n, &before);
  for (int r = 0; r < FANOUT_TRIGGERS; r++) {
    ck_assert_int_eq(test_sock_send(fd[r % FANOUT_CONNS], "g", 1), 1);
    for (int i = 0; i < FANOUT_CONNS; i++) {
      ck_assert_int_eq(test_sock_recv(fd[i], &c, 1), 1);
      ck_assert_int_eq(c, 'x');
    }
  }
  net_get_stats(v->n, &after);
  waits = after.io_waits - before.io_waits;
  if (strcmp(test_backend(_i), "io_uring") == 0)
    ck_assert_msg(waits >= 2 * FANOUT_TRIGGERS - FANOUT_TRIGGERS / 4,
                  "%llu waits for %d triggers: the sends did not ride the ring",
                  (unsigned long long)waits, FANOUT_TRIGGERS);
  else if (strcmp(test_backend(_i), "epoll") == 0)
    ck_assert_msg(waits <= FANOUT_TRIGGERS + FANOUT_TRIGGERS / 4, "%llu waits for %d triggers",
                  (unsigned long long)waits, FANOUT_TRIGGERS);
  /* Every byte is reported sent, perhaps a moment after the client read it. */
  ck_assert(wait_send_bytes(v, sent0 + (size_t)FANOUT_TRIGGERS * FANOUT_CONNS));
  fanout_close(v, fd);
}
END_TEST

/* ---- the staged reply ----
 * A reply a worker holds in its stage instead of the session's queue is
 * the same to the peer and to the plugin as one queued. */

/* Writes from one callback arrive whole and in order, past the stage's
 * 4096 bytes and around a shared buffer, and count as queued until sent. */
START_TEST(test_net_a_reply_of_many_writes_arrives_in_order) {
  srv *v = srv_start(test_backend(_i), MODE_REPLY, 1, 100, 1u << 20, NET_FRAMING_RAW);
  int fd = test_connect(v->port);
  char buf[3 * 5 * REPLY_PIECE];
  net_stats st;

  ck_assert_int_eq(test_sock_send(fd, "o", 1), 1);
  ck_assert_int_eq(test_recv_exact(fd, buf, 5 * REPLY_PIECE), 0);
  for (int i = 0; i < 5 * REPLY_PIECE; i++)
    ck_assert_msg(buf[i] == 'a' + i / REPLY_PIECE, "byte %d is %c", i, buf[i]);
  for (int i = 0; i < 5; i++)
    ck_assert_uint_eq(atomic_load(&v->queued_seen[i]), (size_t)(i + 1) * REPLY_PIECE);
  ck_assert(wait_send_bytes(v, 5 * REPLY_PIECE));
  ck_assert_int_eq(test_sock_send(fd, "b", 1), 1);
  ck_assert_int_eq(test_recv_exact(fd, buf, 14), 0);
  ck_assert_int_eq(memcmp(buf, "x1--shared--y2", 14), 0);
  ck_assert_int_eq(test_sock_send(fd, "ooo", 3), 3);
  ck_assert_int_eq(test_recv_exact(fd, buf, sizeof(buf)), 0);
  for (size_t i = 0; i < sizeof(buf); i++)
    ck_assert_msg(buf[i] == 'a' + (char)(i % (5 * REPLY_PIECE) / REPLY_PIECE), "byte %zu is %c",
                  i, buf[i]);
  ck_assert(wait_send_bytes(v, 5 * REPLY_PIECE + 14 + sizeof(buf)));
  net_get_stats(v->n, &st); /* every write counted once, every byte once */
  ck_assert_uint_eq(st.messages_out, 5 + 3 + 15);
  ck_assert_uint_eq(st.bytes_out, 5 * REPLY_PIECE + 14 + sizeof(buf));
  os_sock_close(fd);
  ck_assert(wait_for(&v->disconnected, 1));
  srv_free(v);
}
END_TEST

/* A graceful close in the callback that wrote the reply sends it, then FIN;
 * an abort drops it and resets the peer. */
START_TEST(test_net_a_close_after_a_reply_sends_it_and_an_abort_drops_it) {
  srv *v = srv_start(test_backend(_i), MODE_REPLY, 1, 100, 1u << 20, NET_FRAMING_RAW);
  int fd = test_connect(v->port), fd2;
  char buf[3];
  size_t got = 0;

  ck_assert_int_eq(test_sock_send(fd, "c", 1), 1);
  ck_assert_int_eq(test_recv_exact(fd, buf, 3), 0);
  ck_assert_int_eq(memcmp(buf, "bye", 3), 0);
  ck_assert_int_eq(test_recv_until_close(fd, &got), 0);
  ck_assert_uint_eq(got, 0);
  ck_assert(wait_for(&v->disconnected, 1));
  ck_assert_int_eq(atomic_load(&v->reasons[PIER_REASON_CLOSED]), 1);
  os_sock_close(fd);

  fd2 = test_connect(v->port);
  ck_assert_int_eq(test_sock_send(fd2, "a", 1), 1);
  test_assert_reset(test_recv_until_close(fd2, &got));
  ck_assert_uint_eq(got, 0);
  ck_assert(wait_for(&v->disconnected, 2));
  ck_assert_int_eq(atomic_load(&v->reasons[PIER_REASON_KICKED]), 1);
  os_sock_close(fd2);
  srv_free(v);
}
END_TEST

/* A session written to from the on_send of a staged reply joins the flush
 * pass that sent it, and goes, as any session joining a pass does, as a send
 * with a completion: its on_send comes after the pass, not inside it. */
START_TEST(test_net_a_session_sent_to_from_a_staged_replys_on_send_waits_its_turn) {
  srv *v = srv_start(test_backend(_i), MODE_REPLY, 1, 100, 1u << 20, NET_FRAMING_RAW);
  int fa = test_connect(v->port), fb;
  char c;

  ck_assert(wait_for(&v->connected, 1));
  fb = test_connect(v->port);
  ck_assert(wait_for(&v->connected, 2));
  ck_assert_int_eq(test_sock_send(fa, "p", 1), 1);
  ck_assert_int_eq(test_recv_exact(fa, &c, 1), 0);
  ck_assert_int_eq(c, '1');
  ck_assert_int_eq(test_recv_exact(fb, &c, 1), 0);
  ck_assert_int_eq(c, '2');
  ck_assert(wait_for(&v->relayed, 1));
  ck_assert_int_eq(atomic_load(&v->relayed_in_pass), 0);
  os_sock_close(fa);
  os_sock_close(fb);
  ck_assert(wait_for(&v->disconnected, 2));
  srv_free(v);
}
END_TEST

/* max_send_queue counts what is staged: a second write that would pass it
 * is refused and the session disconnected, as for bytes in the queue. */
START_TEST(test_net_staged_bytes_count_against_max_send_queue) {
  srv *v = srv_start(test_backend(_i), MODE_REPLY, 1, 100, 1000, NET_FRAMING_RAW);
  int fd = test_connect(v->port);
  size_t got = 0;

  ck_assert_int_eq(test_sock_send(fd, "q", 1), 1);
  test_assert_reset(test_recv_until_close(fd, &got));
  ck_assert(wait_for(&v->disconnected, 1));
  ck_assert_int_eq(atomic_load(&v->reply_rc[0]), 0);
  ck_assert_int_eq(atomic_load(&v->reply_rc[1]), -ENOBUFS);
  ck_assert_int_eq(atomic_load(&v->reasons[PIER_REASON_SEND_QUEUE_FULL]), 1);
  ck_assert_uint_eq(got, 0);
  os_sock_close(fd);
  srv_free(v);
}
END_TEST

/* A peer that does not read: once its socket is full a reply goes out in
 * part or not at once, and the queue takes the rest; every byte of every
 * reply arrives in order when the peer reads again, and on_send and the
 * byte count report each byte once. */
#define R_COUNT 200
START_TEST(test_net_replies_the_socket_cannot_take_whole_arrive_in_order) {
  net_opts o = {.workers = 1, .backend = test_backend(_i), .max_sessions = 8,
                .max_send_queue = 8u << 20, .close_timeout_ms = 3000};
  srv *v = srv_create_o(&o, MODE_REPLY, NET_FRAMING_RAW);
  int fd;
  static char buf[R_REPLY];
  net_stats st;

  v->sndbuf = 4096; /* full after a reply or two */
  ck_assert_int_eq(net_start(v->n), 0);
  fd = test_connect_rcvbuf(v->port, 4096);

  for (int i = 0; i < R_COUNT; i++) { /* one callback each, mostly: each reply is staged */
    ck_assert_int_eq(test_sock_send(fd, "r", 1), 1);
    os_sleep_ms(1);
  }
  for (uint32_t r = 0; r < R_COUNT; r++) {
    ck_assert_msg(test_recv_exact(fd, buf, R_REPLY) == 0, "reply %u did not arrive", r);
    for (size_t k = 0; k < R_REPLY; k++)
      ck_assert_msg((uint8_t)buf[k] == test_pattern(r, k), "reply %u, byte %zu differs", r, k);
  }
  ck_assert(wait_send_bytes(v, (size_t)R_COUNT * R_REPLY));
  net_get_stats(v->n, &st); /* the part of a reply sent at once and the rest, once each */
  ck_assert_uint_eq(st.bytes_out, (size_t)R_COUNT * R_REPLY);
  os_sock_close(fd);
  ck_assert(wait_for(&v->disconnected, 1));
  srv_free(v);
}
END_TEST

START_TEST(test_net_abort_resets_peer) {
  srv *v = srv_start(test_backend(_i), MODE_SILENT, 1, 100, 1u << 20, NET_FRAMING_RAW);
  int fd = test_connect(v->port);

  ck_assert(wait_for(&v->connected, 1));
  ck_assert_int_eq(net_abort(v->n, v->sids[0], PIER_REASON_KICKED), 0);
  test_assert_reset(test_recv_until_close(fd, NULL));
  ck_assert(wait_for(&v->disconnected, 1));
  ck_assert_int_eq(atomic_load(&v->reasons[PIER_REASON_KICKED]), 1);
  os_sock_close(fd);
  srv_free(v);
}
END_TEST

START_TEST(test_net_half_close_still_gets_echo) {
  srv *v = srv_start(test_backend(_i), MODE_ECHO, 1, 100, 1u << 20, NET_FRAMING_RAW);
  int fd = test_connect(v->port);
  char buf[64];
  size_t got = 0;

  test_send_all(fd, "last words", 10);
  ck_assert_int_eq(os_sock_shutdown_wr(fd), 0);
  ck_assert_int_eq(test_recv_exact(fd, buf, 10), 0);
  ck_assert_int_eq(memcmp(buf, "last words", 10), 0);
  ck_assert_int_eq(test_recv_until_close(fd, &got), 0);
  ck_assert_uint_eq(got, 0);
  ck_assert(wait_for(&v->disconnected, 1));
  ck_assert_int_eq(atomic_load(&v->reasons[PIER_REASON_PEER_CLOSED]), 1);
  os_sock_close(fd);
  srv_free(v);
}
END_TEST

/* A graceful close whose data the peer never reads ends at the close
 * deadline with FLUSH_TIMEOUT (not the reason the close was asked with),
 * abortively: the peer gets RST. */
START_TEST(test_net_close_deadline_reports_flush_timeout) {
  net_opts o = {.workers = 1, .backend = test_backend(_i), .max_sessions = 8,
                .max_send_queue = 8u << 20, .close_timeout_ms = 300};
  srv *v = srv_start_o(&o, MODE_SILENT, NET_FRAMING_RAW);
  int fd = test_connect(v->port);
  static char big[4u << 20];

  ck_assert_int_eq(test_sock_rcvbuf(fd, 4096), 0);
  ck_assert(wait_for(&v->connected, 1));
  ck_assert_int_eq(net_send(v->n, v->sids[0], big, sizeof(big)), 0);
  ck_assert_int_eq(net_close(v->n, v->sids[0], PIER_REASON_CLOSED), 0);
  ck_assert(wait_for(&v->disconnected, 1));
  os_sleep_ms(50);
  ck_assert_int_eq(atomic_load(&v->disconnected), 1);
  ck_assert_int_eq(atomic_load(&v->reasons[PIER_REASON_FLUSH_TIMEOUT]), 1);
  ck_assert_int_eq(atomic_load(&v->reasons[PIER_REASON_CLOSED]), 0);
  test_assert_reset(test_recv_until_close(fd, NULL));
  os_sock_close(fd);
  srv_free(v);
}
END_TEST

/* ---- limits ---- */

START_TEST(test_net_max_sessions_refuses_extra) {
  srv *v = srv_start(test_backend(_i), MODE_ECHO, 1, 3, 1u << 20, NET_FRAMING_RAW);
  int fd[4];
  char buf[8];
  size_t got = 0;
  net_stats st;

  for (int i = 0; i < 3; i++)
    fd[i] = test_connect(v->port);
  ck_assert(wait_for(&v->connected, 3));
  fd[3] = test_connect(v->port); /* the kernel accepts; pier closes it at once */
  int rc = test_recv_until_close(fd[3], &got);
  ck_assert_msg(rc == 0 || rc == -ECONNRESET, "extra connection: %s", os_strerror(-rc));
  ck_assert_uint_eq(got, 0);
  for (int i = 0; i < 3; i++) {
    test_send_all(fd[i], "ping", 4);
    ck_assert_int_eq(test_recv_exact(fd[i], buf, 4), 0);
    ck_assert_int_eq(memcmp(buf, "ping", 4), 0);
  }
  net_get_stats(v->n, &st);
  ck_assert_uint_eq(st.refused_full, 1);
  ck_assert_uint_eq(st.accepted, 3);
  ck_assert_int_eq(atomic_load(&v->connected), 3);
  /* A slot freed is a slot available again. */
  os_sock_close(fd[0]);
  ck_assert(wait_for(&v->disconnected, 1));
  fd[0] = test_connect(v->port);
  test_send_all(fd[0], "pong", 4);
  ck_assert_int_eq(test_recv_exact(fd[0], buf, 4), 0);
  for (int i = 0; i < 4; i++)
    os_sock_close(fd[i]);
  srv_free(v);
}
END_TEST

START_TEST(test_net_send_cap_disconnects_non_reader) {
  const size_t cap = 256u << 10;
  srv *v = srv_start(test_backend(_i), MODE_FLOOD, 1, 100, cap, NET_FRAMING_RAW);
  int fd = test_connect(v->port);
  long before = test_rss_kib();

  ck_assert_int_ge(before, 0);
  ck_assert_int_eq(test_sock_rcvbuf(fd, 4096), 0);
  test_send_all(fd, "go", 2); /* then never read */
  ck_assert(wait_for(&v->disconnected, 1));
  ck_assert_int_eq(atomic_load(&v->reasons[PIER_REASON_SEND_QUEUE_FULL]), 1);
  ck_assert_int_eq(atomic_load(&v->flood_rc), -ENOBUFS);
  /* The queue never held more than the cap, though 64 MiB were offered. */
  ck_assert_uint_le(atomic_load(&v->flood_queued), cap);
  ck_assert_int_lt(test_rss_kib() - before, 16 * 1024);
  net_stats st;
  net_get_stats(v->n, &st);
  ck_assert_uint_eq(st.send_queue_full, 1);
  os_sock_close(fd);
  srv_free(v);
}
END_TEST

/* Not on Windows: there is no per-process descriptor limit to exhaust
 * (RLIMIT_NOFILE, dup), and AcceptEx on IOCP has no EMFILE to back off
 * from; the case is not added there (see main). */
#ifndef _WIN32
#include <sys/resource.h>
#include <sys/time.h>
#include <unistd.h>

/* CPU time (user + system) of this process so far, in ms. */
static long cpu_ms(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000L +
         (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1000L;
}

/* Out of file descriptors with connections waiting: the worker backs off
 * (100 ms between accepts) without spinning, and serves the waiting
 * clients once descriptors are free again. */
START_TEST(test_net_emfile_backoff_does_not_spin) {
  net_opts o = {.workers = 1, .backend = test_backend(_i), .max_sessions = 100};
  srv *v = srv_create_o(&o, MODE_ECHO, NET_FRAMING_RAW);
  struct rlimit old, low;
  int cli[4], filler[256], nfill = 0, fd;
  long cpu0, cpu;
  char buf[4];

  for (int i = 0; i < 4; i++)
    cli[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  /* Take every descriptor the lowered limit leaves, so accept gets EMFILE.
   * The workers start after: io_uring reads the limit when an accept is
   * submitted. */
  getrlimit(RLIMIT_NOFILE, &old);
  low = old;
  low.rlim_cur = (rlim_t)cli[3] + 64;
  ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &low), 0);
  while (nfill < 256 && (fd = dup(0)) >= 0)
    filler[nfill++] = fd;
  ck_assert_int_eq(errno, EMFILE);
  ck_assert_int_eq(net_start(v->n), 0);
  for (int i = 0; i < 4; i++) {
    struct sockaddr_in in = {.sin_family = AF_INET, .sin_port = htons(v->port)};
    in.sin_addr.s_addr = htonl(0x7f000001);
    ck_assert_int_eq(connect(cli[i], (struct sockaddr *)&in, sizeof(in)), 0);
  }
  os_sleep_ms(100); /* the worker has met EMFILE and is backing off */
  cpu0 = cpu_ms();
  os_sleep_ms(500);
  cpu = cpu_ms() - cpu0;
  ck_assert_int_eq(atomic_load(&v->connected), 0);
  /* A spinning epoll_wait burns the whole 500 ms; backing off costs a few. */
  ck_assert_msg(cpu < 100, "%ld ms of CPU in 500 ms of EMFILE backoff", cpu);
  for (int i = 0; i < nfill; i++)
    close(filler[i]);
  ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &old), 0);
  ck_assert(wait_for(&v->connected, 4));
  for (int i = 0; i < 4; i++) {
    struct timeval tv = {10, 0};
    setsockopt(cli[i], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    test_send_all(cli[i], "back", 4);
    ck_assert_int_eq(test_recv_exact(cli[i], buf, 4), 0);
    ck_assert_int_eq(memcmp(buf, "back", 4), 0);
    close(cli[i]);
  }
  srv_free(v);
}
END_TEST
#endif

/* From a thread other than the session's worker (here the test's own), a
 * send larger than max_send_queue is refused and the session disconnected,
 * as on the worker. */
START_TEST(test_net_cross_thread_oversize_send_disconnects) {
  const size_t cap = 64u << 10;
  srv *v = srv_start(test_backend(_i), MODE_SILENT, 1, 100, cap, NET_FRAMING_RAW);
  int fd = test_connect(v->port);
  static char big[(64u << 10) + 1];
  net_stats st;

  ck_assert(wait_for(&v->connected, 1));
  ck_assert_int_eq(net_send(v->n, v->sids[0], big, sizeof(big)), -ENOBUFS);
  ck_assert(wait_for(&v->disconnected, 1));
  ck_assert_int_eq(atomic_load(&v->reasons[PIER_REASON_SEND_QUEUE_FULL]), 1);
  ck_assert_int_eq(net_send(v->n, v->sids[0], "x", 1), -ENOTCONN);
  test_assert_reset(test_recv_until_close(fd, NULL));
  net_get_stats(v->n, &st);
  ck_assert_uint_eq(st.send_queue_full, 1);
  os_sock_close(fd);
  srv_free(v);
}
END_TEST

typedef struct blocker {
  io_job job;
  _Atomic int running, release;
} blocker;

static void block_worker(io_job *job) {
  blocker *b = (blocker *)job;
  atomic_store(&b->running, 1);
  while (!atomic_load(&b->release))
    os_sleep_ms(1);
}

/* Lets worker 0 go again and expects the session to end as send_queue_full. */
static void release_and_expect_queue_full(srv *v, blocker *b, int fd) {
  atomic_store(&b->release, 1);
  ck_assert(wait_for(&v->disconnected, 1));
  ck_assert_int_eq(atomic_load(&v->reasons[PIER_REASON_SEND_QUEUE_FULL]), 1);
  os_sock_close(fd);
  srv_free(v);
}

/* Keeps worker 0 busy in a job until b->release is set. */
static void block_worker_0(srv *v, blocker *b) {
  memset(b, 0, sizeof(*b));
  b->job.fn = block_worker;
  net_post(v->n, 0, &b->job);
  ck_assert(wait_for(&b->running, 1));
}

/* A job that holds worker 0 like block_worker, then closes sid there. */
typedef struct closer {
  blocker b; /* first: the job block_worker sees */
  net *n;
  pier_sid sid;
  _Atomic int rc;
} closer;

static void block_then_close(io_job *job) {
  closer *c = (closer *)job;
  block_worker(job);
  atomic_store(&c->rc, net_close(c->n, c->sid, PIER_REASON_CLOSED));
}

/* A send from another thread is accepted (0) while the session's worker is
 * busy, and the worker then closes the session gracefully: the send, still
 * in the inbox when the close was called, arrives before the FIN. */
START_TEST(test_net_close_on_the_worker_flushes_sends_from_other_threads) {
  srv *v = srv_start(test_backend(_i), MODE_SILENT, 1, 100, 1u << 20, NET_FRAMING_RAW);
  int fd = test_connect(v->port);
  char got[8] = {0};
  size_t more = 1;
  closer c;

  ck_assert(wait_for(&v->connected, 1));
  memset(&c, 0, sizeof(c));
  c.b.job.fn = block_then_close;
  c.n = v->n;
  c.sid = v->sids[0];
  atomic_store(&c.rc, 99);
  net_post(v->n, 0, &c.b.job);
  ck_assert(wait_for(&c.b.running, 1));
  ck_assert_int_eq(net_send(v->n, c.sid, "bye\n", 4), 0);
  atomic_store(&c.b.release, 1);
  ck_assert_int_eq(test_recv_exact(fd, got, 4), 0);
  ck_assert_str_eq(got, "bye\n");
  ck_assert_int_eq(test_recv_until_close(fd, &more), 0);
  ck_assert_uint_eq(more, 0);
  ck_assert_int_eq(atomic_load(&c.rc), 0);
  ck_assert(wait_for(&v->disconnected, 1));
  ck_assert_int_eq(atomic_load(&v->reasons[PIER_REASON_CLOSED]), 1);
  ck_assert_int_eq(net_send(v->n, c.sid, "late", 4), -ENOTCONN);
  os_sock_close(fd);
  srv_free(v);
}
END_TEST

/* A send and a graceful close made at once from two threads other than the
 * session's worker. */
typedef struct racer {
  net *n;
  pier_sid sid;
  _Atomic int go, ready;
  int rc;
} racer;

static void race_start(racer *r) {
  atomic_fetch_add(&r->ready, 1);
  while (!atomic_load(&r->go)) {
  }
}

static void *race_send(void *arg) {
  racer *r = arg;
  race_start(r);
  r->rc = net_send(r->n, r->sid, "bye\n", 4);
  return NULL;
}

static void *race_close(void *arg) {
  racer *r = arg;
  race_start(r);
  ck_assert_int_eq(net_close(r->n, r->sid, PIER_REASON_CLOSED), 0);
  return NULL;
}

/* Whatever order they land in, a send that returned 0 arrives before the
 * FIN, and one refused (-ENOTCONN) sends nothing: never accepted and lost. */
START_TEST(test_net_send_racing_a_close_is_sent_or_refused) {
  srv *v = srv_start(test_backend(_i), MODE_SILENT, 1, 100, 1u << 20, NET_FRAMING_RAW);
  int sent = 0, refused = 0;

  for (int round = 0; round < 300; round++) {
    int fd = test_connect(v->port);
    racer r;
    os_thread a, b;
    char got[8] = {0};
    size_t rest = 1;

    ck_assert(wait_for(&v->connected, round + 1));
    memset(&r, 0, sizeof(r));
    r.n = v->n;
    os_mutex_lock(&v->mu);
    r.sid = v->sids[round];
    os_mutex_unlock(&v->mu);
    ck_assert_int_eq(os_thread_create(&a, race_send, &r), 0);
    ck_assert_int_eq(os_thread_create(&b, race_close, &r), 0);
    while (atomic_load(&r.ready) < 2) {
    }
    atomic_store(&r.go, 1);
    os_thread_join(a);
    os_thread_join(b);
    if (r.rc == 0) {
      sent++;
      ck_assert_msg(test_recv_exact(fd, got, 4) == 0, "round %d: a send that returned 0 was lost",
                    round);
      ck_assert_str_eq(got, "bye\n");
    } else {
      refused++;
      ck_assert_int_eq(r.rc, -ENOTCONN);
    }
    ck_assert_int_eq(test_recv_until_close(fd, &rest), 0);
    ck_assert_uint_eq(rest, 0);
    ck_assert(wait_for(&v->disconnected, round + 1));
    os_sock_close(fd);
  }
  ck_assert_int_eq(sent + refused, 300);
  ck_assert_int_eq(atomic_load(&v->reasons[PIER_REASON_CLOSED]), 300);
  srv_free(v);
}
END_TEST

/* While the worker is busy, sends from another thread wait in its inbox:
 * no more than max_send_queue of memory per session, their bytes and each
 * job's own. The one that would pass the cap is refused and the session
 * disconnected; what was accepted before it is still what the session had
 * queued. */
START_TEST(test_net_cross_thread_inbox_capped_per_session) {
  const size_t cap = 64u << 10;
  srv *v = srv_start(test_backend(_i), MODE_SILENT, 1, 100, cap, NET_FRAMING_RAW);
  int fd = test_connect(v->port), rc = 0;
  static char chunk[4096];
  blocker b;
  size_t accepted = 0;

  ck_assert(wait_for(&v->connected, 1));
  block_worker_0(v, &b);
  for (int i = 0; i < 1000 && rc == 0; i++) {
    rc = net_send(v->n, v->sids[0], chunk, sizeof(chunk));
    if (rc == 0)
      accepted += sizeof(chunk);
  }
  ck_assert_int_eq(rc, -ENOBUFS);
  /* Each send's job counts too: all but the last chunk or two fit. */
  ck_assert_msg(accepted <= cap && accepted >= cap - 2 * sizeof(chunk),
                "accepted %zu bytes of sends under a cap of %zu", accepted, cap);
  ck_assert_int_eq(net_send(v->n, v->sids[0], "x", 1), -ENOTCONN);
  release_and_expect_queue_full(v, &b, fd);
}
END_TEST

/* One-byte sends from another thread cost a job each: the cap holds the
 * memory they take, not only their bytes, so a plugin thread cannot queue a
 * million of them under a 64 KiB cap. */
START_TEST(test_net_cross_thread_tiny_sends_capped_by_memory) {
  const size_t cap = 64u << 10;
  srv *v = srv_start(test_backend(_i), MODE_SILENT, 1, 100, cap, NET_FRAMING_RAW);
  int fd = test_connect(v->port), rc = 0;
  blocker b;
  size_t sends = 0;

  ck_assert(wait_for(&v->connected, 1));
  block_worker_0(v, &b);
  for (size_t i = 0; i < cap && rc == 0; i++) {
    rc = net_send(v->n, v->sids[0], "x", 1);
    if (rc == 0)
      sends++;
  }
  ck_assert_int_eq(rc, -ENOBUFS);
  ck_assert_msg(sends > 0 && sends <= cap / 64, "%zu one-byte sends accepted under a cap of %zu",
                sends, cap);
  release_and_expect_queue_full(v, &b, fd);
}
END_TEST

/* A send from another thread with nothing waiting before it fits whenever
 * its bytes do, as on the session's worker: max_send_queue bytes at once
 * arrive whole and the session stays. Behind it, while the worker is busy,
 * even one more byte would pass the cap: refused, and the session ends. */
START_TEST(test_net_cross_thread_send_of_the_whole_cap_fits) {
  const size_t cap = 64u << 10;
  srv *v = srv_start(test_backend(_i), MODE_SILENT, 1, 100, cap, NET_FRAMING_RAW);
  int fd = test_connect(v->port);
  static char data[64u << 10], got[64u << 10];
  blocker b;

  for (size_t k = 0; k < cap; k++)
    data[k] = (char)(k * 7 + 3);
  ck_assert(wait_for(&v->connected, 1));
  ck_assert_int_eq(net_send(v->n, v->sids[0], data, cap), 0);
  ck_assert_int_eq(test_recv_exact(fd, got, cap), 0);
  ck_assert_int_eq(memcmp(got, data, cap), 0);
  ck_assert_int_eq(atomic_load(&v->disconnected), 0);

  block_worker_0(v, &b);
  ck_assert_int_eq(net_send(v->n, v->sids[0], data, cap), 0);
  ck_assert_int_eq(net_send(v->n, v->sids[0], "x", 1), -ENOBUFS);
  release_and_expect_queue_full(v, &b, fd);
}
END_TEST

/* A peer that stops reading while data is on its way to it is reset once no
 * send has completed for send_timeout_ms, though everything fits in the
 * send queue; a peer that reads slowly but steadily over a much longer
 * transfer is not. */
START_TEST(test_net_send_timeout_resets_non_reader) {
  net_opts o = {.workers = 1, .backend = test_backend(_i), .max_sessions = 8,
                .max_send_queue = 32u << 20, .close_timeout_ms = 3000,
                .send_timeout_ms = 300};
  srv *v = srv_start_o(&o, MODE_SILENT, NET_FRAMING_RAW);
  int hog = test_connect_rcvbuf(v->port, 4096), slow;
  static char big[16u << 20], buf[32768];
  size_t got = 0;
  uint64_t t0, took;
  net_stats st;

  ck_assert(wait_for(&v->connected, 1));
  t0 = os_clock_ms();
  ck_assert_int_eq(net_send(v->n, v->sids[0], big, sizeof(big)), 0);
  ck_assert(wait_for(&v->disconnected, 1));
  took = os_clock_ms() - t0;
  ck_assert_int_eq(atomic_load(&v->reasons[PIER_REASON_SEND_TIMEOUT]), 1);
  ck_assert_uint_ge(took, 300);
  ck_assert_uint_lt(took, 3000);
  test_assert_reset(test_recv_until_close(hog, NULL));
  os_sock_close(hog);
  ck_assert_str_eq(net_reason_text(PIER_REASON_SEND_TIMEOUT),
                   "no send progress within send_timeout_ms (peer not reading)");

  /* 1 MiB read 32 KiB every 50 ms: about 1.6 s, each step well inside 300 ms. */
  slow = test_connect_rcvbuf(v->port, 4096);
  ck_assert(wait_for(&v->connected, 2));
  ck_assert_int_eq(net_send(v->n, v->sids[1], big, 1u << 20), 0);
  while (got < (1u << 20)) {
    ck_assert_int_eq(test_recv_exact(slow, buf, sizeof(buf)), 0);
    got += sizeof(buf);
    os_sleep_ms(50);
  }
  ck_assert_int_eq(atomic_load(&v->disconnected), 1);
  net_get_stats(v->n, &st);
  ck_assert_uint_eq(st.send_timeouts, 1);
  os_sock_close(slow);
  srv_free(v);
}
END_TEST

/* A session whose peer was slow once (a send waited for room, and the send
 * deadline started) and then keeps up: its replies, now sent at once on
 * epoll, are progress too, and it is never reset for want of it however
 * long it goes on after the last send that had to wait. */
START_TEST(test_net_send_timeout_spares_a_peer_that_caught_up) {
  net_opts o = {.workers = 1, .backend = test_backend(_i), .max_sessions = 8,
                .max_send_queue = 32u << 20, .close_timeout_ms = 3000,
                .send_timeout_ms = 300};
  srv *v = srv_start_o(&o, MODE_ECHO, NET_FRAMING_RAW);
  int fd = test_connect_rcvbuf(v->port, 4096);
  static char out[65536], in[65536];
  const size_t burst = 8u << 20;
  size_t sent = 0, got = 0;
  uint64_t end, now, talk_until = 0;
  net_stats st;

  ck_assert(wait_for(&v->connected, 1));
  ck_assert_int_eq(test_sock_nonblock(fd), 0);
  /* 8 MiB sent without reading for 200 ms: the echo fills the socket. */
  end = os_clock_ms() + 200;
  while (sent < burst || os_clock_ms() < end) {
    struct pollfd p = {.fd = fd, .events = POLLOUT};
    size_t n = burst - sent < sizeof(out) ? burst - sent : sizeof(out);
    long w;
    if (sent == burst) {
      os_sleep_ms(10);
      continue;
    }
    for (size_t k = 0; k < n; k++)
      out[k] = (char)test_pattern(3, sent + k);
    w = test_sock_send(fd, out, n);
    if (w > 0)
      sent += (size_t)w;
    else
      ck_assert_int_ge(test_poll(&p, 1, 100), 0);
  }
  /* Then it reads all of it back while it goes on sending, pipelined, until
   * 1.5 s (five send deadlines) after it has caught up: the server always
   * has input, so at any moment a reply is likely queued behind it. */
  end = os_clock_ms() + 60000;
  for (;;) {
    struct pollfd p = {.fd = fd, .events = POLLIN | (sent - got < (256u << 10) ? POLLOUT : 0)};
    long r;
    now = os_clock_ms();
    ck_assert_msg(now < end, "echo stalled at %zu of %zu bytes", got, sent);
    if (!talk_until && got >= burst)
      talk_until = now + 1500;
    if (talk_until && now >= talk_until && got == sent)
      break;
    ck_assert_int_ge(test_poll(&p, 1, 100), 0);
    if ((p.revents & POLLOUT) && (!talk_until || now < talk_until)) {
      size_t n = 8192; /* the server always has input, so replies queue behind it */
      for (size_t k = 0; k < n; k++)
        out[k] = (char)test_pattern(3, sent + k);
      long w = test_sock_send(fd, out, n);
      if (w > 0)
        sent += (size_t)w;
    }
    r = test_sock_recv(fd, in, sizeof(in));
    ck_assert_msg(r > 0 || r == -EAGAIN, "recv %ld at %zu of %zu bytes (%d disconnects)", r, got,
                  sent, atomic_load(&v->disconnected));
    for (long k = 0; k < r; k++)
      if ((uint8_t)in[k] != test_pattern(3, got + (size_t)k))
        ck_abort_msg("byte %zu differs", got + (size_t)k);
    if (r > 0)
      got += (size_t)r;
  }
  ck_assert_uint_gt(sent, burst);
  ck_assert_int_eq(atomic_load(&v->disconnected), 0);
  net_get_stats(v->n, &st);
  ck_assert_uint_eq(st.send_timeouts, 0);
  os_sock_close(fd);
  ck_assert(wait_for(&v->disconnected, 1));
  ck_assert_int_eq(atomic_load(&v->reasons[PIER_REASON_PEER_CLOSED]), 1);
  srv_free(v);
}
END_TEST

/* ---- read backpressure ---- */

#define BP_LIMIT (16u << 10)   /* recv_backlog */
#define BP_BUFS 16u             /* provided buffers (io_uring) */
#define BP_BUF_SIZE 2048u
/* What may still arrive once a pause is asked (net.h): on io_uring the
 * completions already posted, one per provided buffer at most; on epoll one
 * buffer. Plus the chunk that crossed the limit. */
#define BP_BOUND (BP_LIMIT + BP_BUFS * BP_BUF_SIZE + BP_BUF_SIZE)
/* On IOCP a read goes into the loop's scratch buffer of at least 64 KiB
 * (io_iocp.c): the chunk being read when the pause is asked, plus the one
 * that crossed the limit. */
#define BP_IOCP_CHUNK (64u << 10)
#define BP_BOUND_IOCP (BP_LIMIT + 2 * BP_IOCP_CHUNK)

static size_t bp_bound(const char *backend) {
  return strcmp(backend, "iocp") == 0 ? BP_BOUND_IOCP : BP_BOUND;
}
#define BP_STREAM (4u << 20)
#define BP_PRIMER (BP_LIMIT + BP_BUF_SIZE)
#define BP_TAIL (64u << 10)

typedef struct bp {
  net *n;
  os_mutex mu;
  pier_sid stream;   /* the first session: held by the owner */
  size_t got, held, max_held, got_at_disconnect;
  long bad_at;       /* first byte out of order, -1 if none */
  _Atomic int connected, disconnected, stream_disconnects, echo_recvs;
  _Atomic int reasons[32];
  _Atomic int hold_all, stop;
} bp;

static void bp_connected(void *ctx, session *s) {
  bp *b = ctx;
  os_mutex_lock(&b->mu);
  if (!b->stream)
    b->stream = session_sid(s);
  os_mutex_unlock(&b->mu);
  atomic_fetch_add(&b->connected, 1);
}

static void bp_recv(void *ctx, session *s, const char *data, size_t len) {
  bp *b = ctx;
  os_mutex_lock(&b->mu);
  if (session_sid(s) != b->stream) {
    os_mutex_unlock(&b->mu);
    atomic_fetch_add(&b->echo_recvs, 1);
    net_send(b->n, session_sid(s), data, len);
    return;
  }
  for (size_t k = 0; k < len && b->bad_at < 0; k++)
    if ((uint8_t)data[k] != test_pattern(7, b->got + k))
      b->bad_at = (long)(b->got + k);
  b->got += len;
  b->held += len;
  if (b->held > b->max_held)
    b->max_held = b->held;
  os_mutex_unlock(&b->mu);
  session_backlog_add(s, len, 0);
}

static void bp_disconnected(void *ctx, session *s, pier_reason r) {
  bp *b = ctx;
  atomic_fetch_add(&b->reasons[r], 1);
  os_mutex_lock(&b->mu);
  if (session_sid(s) == b->stream) {
    b->got_at_disconnect = b->got;
    atomic_fetch_add(&b->stream_disconnects, 1);
  }
  os_mutex_unlock(&b->mu);
  atomic_fetch_add(&b->disconnected, 1);
}

static const net_handler bp_handler = {bp_connected, bp_recv, NULL, bp_disconnected, NULL};

/* The owner's other thread: delivers what it holds in bursts, every 5 ms,
 * in two halves, unless told to hold everything. */
static void *bp_releaser(void *arg) {
  bp *b = arg;
  while (!atomic_load(&b->stop)) {
    os_sleep_ms(5);
    if (atomic_load(&b->hold_all))
      continue;
    os_mutex_lock(&b->mu);
    size_t n = b->held;
    pier_sid sid = b->stream;
    b->held = 0;
    os_mutex_unlock(&b->mu);
    if (n) {
      net_backlog_done(b->n, sid, n / 2);
      net_backlog_done(b->n, sid, n - n / 2);
    }
  }
  return NULL;
}

typedef struct streamer {
  int fd;
  size_t from, len;
} streamer;

static void *bp_stream(void *arg) {
  streamer *st = arg;
  static char buf[65536];
  for (size_t off = 0; off < st->len;) {
    size_t n = st->len - off < sizeof(buf) ? st->len - off : sizeof(buf);
    for (size_t k = 0; k < n; k++)
      buf[k] = (char)test_pattern(7, st->from + off + k);
    test_send_all(st->fd, buf, n);
    off += n;
  }
  return NULL;
}

static size_t bp_got(bp *b) {
  os_mutex_lock(&b->mu);
  size_t g = b->got;
  os_mutex_unlock(&b->mu);
  return g;
}

static int bp_got_all(void *arg) {
  bp *b = arg;
  return bp_got(b) >= BP_STREAM;
}

/* An owner that holds every chunk and releases it later from another thread
 * makes the session stop being read: nothing is lost or reordered, the owner
 * never holds more than recv_backlog plus the documented bound, another
 * session on the same worker is served meanwhile, and a peer that closes
 * during a pause is heard once, after the data it sent. */
START_TEST(test_net_read_backpressure_pauses_and_resumes) {
  net_opts o = {.workers = 1, .backend = test_backend(_i), .max_sessions = 8,
                .max_send_queue = 1u << 20, .recv_backlog = BP_LIMIT,
                .buf_count = BP_BUFS, .buf_size = BP_BUF_SIZE,
                .idle_timeout_ms = 200, .packet_timeout_ms = 200};
  static bp b;
  net_endpoint ep = {.handler = &bp_handler, .ctx = &b,
      .framing = NET_FRAMING_RAW, .max_packet_size = 0};
  net_addr a;
  net_listener *l;
  os_thread rel, str;
  streamer st;
  net_stats ns;
  char buf[4];
  int fd, idle;
  size_t got0;
  uint64_t pauses;

  memset(&b, 0, sizeof(b));
  os_mutex_init(&b.mu);
  b.bad_at = -1;
  atomic_store(&b.hold_all, 1);
  ck_assert_int_eq(net_create(&o, &b.n), 0);
  net_addr_parse("127.0.0.1", 0, &a);
  ck_assert_int_eq(net_listen(b.n, &a, &ep, &l), 0);
  ck_assert_int_eq(net_start(b.n), 0);
  ck_assert_int_eq(os_thread_create(&rel, bp_releaser, &b), 0);

  fd = test_connect(net_listener_port(l));
  ck_assert(wait_for(&b.connected, 1));
  st = (streamer){fd, 0, BP_STREAM};
  ck_assert_int_eq(os_thread_create(&str, bp_stream, &st), 0);

  /* Held, not released: the session pauses, and stays paused (no reads, and
   * neither the idle nor the packet timer of 200 ms closes it). */
  for (int i = 0; i < 5000; i++) {
    net_get_stats(b.n, &ns);
    if (ns.read_pauses > 0)
      break;
    os_sleep_ms(1);
  }
  ck_assert_uint_gt(ns.read_pauses, 0);
  os_sleep_ms(50);
  got0 = bp_got(&b);
  os_sleep_ms(400);
  ck_assert_uint_eq(bp_got(&b), got0);
  ck_assert_uint_le(got0, bp_bound(o.backend));
  ck_assert_int_eq(atomic_load(&b.disconnected), 0);
  /* Another session on the worker is served while this one is paused. */
  idle = test_connect(net_listener_port(l));
  ck_assert(wait_for(&b.connected, 2));
  test_send_all(idle, "ping", 4);
  ck_assert_int_eq(test_recv_exact(idle, buf, 4), 0);
  ck_assert_int_eq(memcmp(buf, "ping", 4), 0);

  /* Released in bursts: the whole stream arrives once and in order. */
  atomic_store(&b.hold_all, 0);
  ck_assert(test_wait(bp_got_all, &b, 60000));
  os_thread_join(str);
  os_mutex_lock(&b.mu);
  ck_assert_msg(b.bad_at < 0, "byte %ld out of order", b.bad_at);
  ck_assert_uint_eq(b.got, BP_STREAM);
  ck_assert_msg(b.max_held <= bp_bound(o.backend), "held %zu > %zu", b.max_held,
                bp_bound(o.backend));
  os_mutex_unlock(&b.mu);
  net_get_stats(b.n, &ns);
  ck_assert_uint_gt(ns.read_pauses, 1);

  /* Paused again, the peer sends 64 KiB more and closes: nothing until the
   * owner releases, then the rest of the data and one PEER_CLOSED. A primer
   * just past recv_backlog makes the pause take effect first: a backend that
   * reads 64 KiB at a time (IOCP) could otherwise take in the whole tail
   * with the read that crosses the limit. */
  os_sleep_ms(20);
  atomic_store(&b.hold_all, 1);
  os_sleep_ms(20);
  net_get_stats(b.n, &ns);
  pauses = ns.read_pauses;
  st = (streamer){fd, BP_STREAM, BP_PRIMER};
  bp_stream(&st);
  for (int i = 0; i < 5000 && ns.read_pauses == pauses; i++) {
    os_sleep_ms(1);
    net_get_stats(b.n, &ns);
  }
  ck_assert_uint_gt(ns.read_pauses, pauses);
  os_sleep_ms(20);
  st = (streamer){fd, BP_STREAM + BP_PRIMER, BP_TAIL};
  bp_stream(&st);
  os_sock_close(fd);
  os_sleep_ms(300);
  ck_assert_int_eq(atomic_load(&b.stream_disconnects), 0);
  ck_assert_uint_lt(bp_got(&b), BP_STREAM + BP_PRIMER + BP_TAIL);
  atomic_store(&b.hold_all, 0);
  ck_assert(wait_for(&b.stream_disconnects, 1));
  os_sleep_ms(50);
  ck_assert_int_eq(atomic_load(&b.stream_disconnects), 1);
  ck_assert_int_eq(atomic_load(&b.reasons[PIER_REASON_PEER_CLOSED]), 1);
  os_mutex_lock(&b.mu);
  ck_assert_uint_eq(b.got_at_disconnect, BP_STREAM + BP_PRIMER + BP_TAIL);
  ck_assert_msg(b.bad_at < 0, "byte %ld out of order", b.bad_at);
  os_mutex_unlock(&b.mu);

  atomic_store(&b.stop, 1);
  os_thread_join(rel);
  os_sock_close(idle);
  net_destroy(b.n);
  os_mutex_destroy(&b.mu);
}
END_TEST

/* A release meant for an earlier session of the slot (a job that outlived
 * it) never touches the count of the session that has the slot now; a
 * session closed while paused closes normally. */
START_TEST(test_net_backlog_stale_release_ignored_close_while_paused) {
  net_opts o = {.workers = 1, .backend = test_backend(_i), .max_sessions = 1,
                .recv_backlog = BP_LIMIT};
  static bp b;
  net_endpoint ep = {.handler = &bp_handler, .ctx = &b,
      .framing = NET_FRAMING_RAW, .max_packet_size = 0};
  net_addr a;
  net_listener *l;
  net_stats ns;
  pier_sid old;
  int fd;
  static char chunk[8192];

  memset(&b, 0, sizeof(b));
  os_mutex_init(&b.mu);
  b.bad_at = -1;
  ck_assert_int_eq(net_create(&o, &b.n), 0);
  net_addr_parse("127.0.0.1", 0, &a);
  ck_assert_int_eq(net_listen(b.n, &a, &ep, &l), 0);
  ck_assert_int_eq(net_start(b.n), 0);
  fd = test_connect(net_listener_port(l));
  ck_assert(wait_for(&b.connected, 1));
  old = b.stream;
  os_sock_close(fd);
  ck_assert(wait_for(&b.disconnected, 1));
  os_sleep_ms(20);
  /* The same slot, a new session, fed past recv_backlog: it pauses. */
  os_mutex_lock(&b.mu);
  b.stream = 0;
  b.got = b.held = 0;
  os_mutex_unlock(&b.mu);
  fd = test_connect(net_listener_port(l));
  ck_assert(wait_for(&b.connected, 2));
  ck_assert_uint_eq(PIER_SID_SLOT(b.stream), PIER_SID_SLOT(old));
  for (size_t k = 0; k < sizeof(chunk); k++)
    chunk[k] = (char)test_pattern(7, k);
  test_send_all(fd, chunk, sizeof(chunk));
  for (size_t k = 0; k < sizeof(chunk); k++)
    chunk[k] = (char)test_pattern(7, sizeof(chunk) + k);
  test_send_all(fd, chunk, sizeof(chunk));
  for (size_t k = 0; k < sizeof(chunk); k++)
    chunk[k] = (char)test_pattern(7, 2 * sizeof(chunk) + k);
  test_send_all(fd, chunk, sizeof(chunk));
  for (int i = 0; i < 5000; i++) {
    net_get_stats(b.n, &ns);
    if (ns.read_pauses > 0)
      break;
    os_sleep_ms(1);
  }
  ck_assert_uint_eq(ns.read_pauses, 1);
  /* Releases by the old id do nothing: still paused. */
  net_backlog_done(b.n, old, 1u << 30);
  net_backlog_done(b.n, old, 1u << 30);
  os_sleep_ms(100);
  size_t got0 = bp_got(&b);
  test_send_all(fd, chunk, 16);
  os_sleep_ms(100);
  ck_assert_uint_eq(bp_got(&b), got0);
  /* Released by its own id, it reads again. */
  os_mutex_lock(&b.mu);
  size_t held = b.held;
  b.held = 0;
  os_mutex_unlock(&b.mu);
  net_backlog_done(b.n, b.stream, held);
  for (int i = 0; i < 5000 && bp_got(&b) < got0 + 16; i++)
    os_sleep_ms(1);
  ck_assert_uint_ge(bp_got(&b), got0 + 16);
  /* Paused again and closed by the server meanwhile: one on_disconnected,
   * with the reason given, and the peer gets its FIN. */
  for (int i = 0; i < 3; i++)
    test_send_all(fd, chunk, sizeof(chunk));
  for (int i = 0; i < 5000; i++) {
    net_get_stats(b.n, &ns);
    if (ns.read_pauses > 1)
      break;
    os_sleep_ms(1);
  }
  ck_assert_uint_eq(ns.read_pauses, 2);
  ck_assert_int_eq(net_close(b.n, b.stream, PIER_REASON_KICKED), 0);
  ck_assert_int_eq(test_recv_until_close(fd, NULL), 0);
  ck_assert(wait_for(&b.disconnected, 2));
  os_sleep_ms(50);
  ck_assert_int_eq(atomic_load(&b.disconnected), 2);
  ck_assert_int_eq(atomic_load(&b.reasons[PIER_REASON_KICKED]), 1);
  os_sock_close(fd);
  net_destroy(b.n);
  os_mutex_destroy(&b.mu);
}
END_TEST

/* ---- stale ids ---- */

START_TEST(test_net_stale_sid_fails_cleanly) {
  srv *v = srv_start(test_backend(_i), MODE_ECHO, 1, 4, 1u << 20, NET_FRAMING_RAW);
  int fd = test_connect(v->port), more[4];
  pier_sid old;
  char buf[4];

  ck_assert(wait_for(&v->connected, 1));
  old = v->sids[0];
  os_sock_close(fd);
  ck_assert(wait_for(&v->disconnected, 1));
  ck_assert_int_eq(net_send(v->n, old, "x", 1), -ENOTCONN);
  ck_assert_int_eq(net_close(v->n, old, PIER_REASON_KICKED), -ENOTCONN);
  /* Slots are reused first in, first out: the fourth session after it gets
   * the old slot under a new generation. The old id still fails and the new
   * player gets nothing meant for the old one. */
  for (int i = 0; i < 4; i++) {
    more[i] = test_connect(v->port);
    ck_assert(wait_for(&v->connected, 2 + i));
  }
  ck_assert_uint_eq(PIER_SID_SLOT(v->sids[4]), PIER_SID_SLOT(old));
  ck_assert_uint_ne(v->sids[4], old);
  ck_assert_int_eq(net_send(v->n, old, "x", 1), -ENOTCONN);
  ck_assert_int_eq(net_send(v->n, 0, "x", 1), -ENOTCONN);
  ck_assert_int_eq(net_send(v->n, PIER_SID_MAKE(9, 1, 0), "x", 1), -ENOTCONN);
  ck_assert_int_eq(net_send(v->n, PIER_SID_MAKE(0, 1, 999999), "x", 1), -ENOTCONN);
  test_send_all(more[3], "abc", 3);
  ck_assert_int_eq(test_recv_exact(more[3], buf, 3), 0);
  ck_assert_int_eq(memcmp(buf, "abc", 3), 0);
  for (int i = 0; i < 4; i++)
    os_sock_close(more[i]);
  srv_free(v);
}
END_TEST

/* ---- 2 workers x 500 sessions, cross-worker sends ---- */

#define RELAY_CONNS 500
#define RELAY_PACKETS 20
#define RELAY_BODY 60

static void relay_packet(char *p, uint16_t to, uint32_t from, uint32_t seq) {
  uint16_t size = 4 + RELAY_BODY;
  p[0] = (char)(size & 0xff);
  p[1] = (char)(size >> 8);
  p[2] = (char)(to & 0xff);
  p[3] = (char)(to >> 8);
  for (int k = 0; k < RELAY_BODY; k++)
    p[4 + k] = (char)test_pattern(from * 1000 + seq, (size_t)k);
}

START_TEST(test_net_two_workers_cross_sends) {
  srv *v = srv_start(test_backend(_i), MODE_RELAY, 2, 4096, 1u << 20, NET_FRAMING_U16_SIZE_ID);
  int fd[RELAY_CONNS];
  char pkt[4 + RELAY_BODY], want[4 + RELAY_BODY];

  for (int i = 0; i < RELAY_CONNS; i++) {
    fd[i] = test_connect(v->port);
    char hello[4] = {4, 0, (char)(i & 0xff), (char)(0x80 | (i >> 8))};
    test_send_all(fd[i], hello, 4);
  }
  ck_assert(wait_for(&v->registered, RELAY_CONNS));
  /* Client i sends to client i+1; everything goes through the server. */
  for (uint32_t seq = 0; seq < RELAY_PACKETS; seq++)
    for (int i = 0; i < RELAY_CONNS; i++) {
      relay_packet(pkt, (uint16_t)((i + 1) % RELAY_CONNS), (uint32_t)i, seq);
      test_send_all(fd[i], pkt, sizeof(pkt));
    }
  for (int i = 0; i < RELAY_CONNS; i++) {
    int from = (i + RELAY_CONNS - 1) % RELAY_CONNS;
    for (uint32_t seq = 0; seq < RELAY_PACKETS; seq++) {
      ck_assert_int_eq(test_recv_exact(fd[i], pkt, sizeof(pkt)), 0);
      relay_packet(want, (uint16_t)i, (uint32_t)from, seq);
      ck_assert_msg(memcmp(pkt, want, sizeof(pkt)) == 0, "client %d packet %u differs", i, seq);
    }
  }
  /* Both workers served sessions, and sends crossed between them. */
  int on0 = 0;
  for (int i = 0; i < RELAY_CONNS; i++)
    on0 += PIER_SID_WORKER(v->sids[i]) == 0;
  ck_assert_int_gt(on0, 0);
  ck_assert_int_lt(on0, RELAY_CONNS);
  ck_assert_int_gt(atomic_load(&v->cross_worker), 0);
  for (int i = 0; i < RELAY_CONNS; i++)
    os_sock_close(fd[i]);
  ck_assert(wait_for(&v->disconnected, RELAY_CONNS));
  srv_free(v);
}
END_TEST

/* ---- client service ---- */

typedef struct cli {
  net *n;
  _Atomic int connected, failed, disconnected, last_err;
  _Atomic int got;
  _Atomic pier_sid sid;
  char buf[64];
} cli;

static void cli_connected(void *ctx, session *s) {
  cli *c = ctx;
  atomic_store(&c->sid, session_sid(s));
  atomic_fetch_add(&c->connected, 1);
  net_send(c->n, session_sid(s), "hi there", 8);
}

static void cli_recv(void *ctx, session *s, const char *data, size_t len) {
  cli *c = ctx;
  int got = atomic_load(&c->got);
  if ((size_t)got + len <= sizeof(c->buf))
    memcpy(c->buf + got, data, len);
  atomic_fetch_add(&c->got, (int)len);
}

static void cli_disconnected(void *ctx, session *s, pier_reason r) {
  cli *c = ctx;
  atomic_fetch_add(&c->disconnected, 1);
}

static void cli_failed(void *ctx, const net_addr *a, int err) {
  cli *c = ctx;
  atomic_store(&c->last_err, err);
  atomic_fetch_add(&c->failed, 1);
}

static const net_handler cli_handler = {cli_connected, cli_recv, NULL, cli_disconnected,
                                        cli_failed};

START_TEST(test_net_client_service_connects_and_reports_errors) {
  srv *v = srv_start(test_backend(_i), MODE_ECHO, 1, 100, 1u << 20, NET_FRAMING_RAW);
  cli c;
  net_opts o = {.workers = 1, .backend = test_backend(_i), .max_sessions = 16};
  net_endpoint ep = {.handler = &cli_handler, .ctx = &c,
      .framing = NET_FRAMING_RAW, .max_packet_size = 0};
  net_addr a;
  int closed_port;

  memset(&c, 0, sizeof(c));
  ck_assert_int_eq(net_create(&o, &c.n), 0);
  ck_assert_int_eq(net_start(c.n), 0);
  ck_assert_int_eq(net_addr_parse("127.0.0.1", v->port, &a), 0);
  ck_assert_int_eq(net_connect(c.n, &a, &ep), 0);
  ck_assert(wait_for(&c.got, 8));
  ck_assert_int_eq(memcmp(c.buf, "hi there", 8), 0);
  ck_assert_int_eq(atomic_load(&c.connected), 1);

  /* The server side closes: the client side hears it exactly once. */
  ck_assert(wait_for(&v->connected, 1));
  ck_assert_int_eq(net_close(v->n, v->sids[0], PIER_REASON_KICKED), 0);
  ck_assert(wait_for(&c.disconnected, 1));

  /* A port nobody listens on: the error reaches the owner. */
  closed_port = test_unused_port();
  ck_assert_int_eq(net_addr_parse("127.0.0.1", (uint16_t)closed_port, &a), 0);
  ck_assert_int_eq(net_connect(c.n, &a, &ep), 0);
  ck_assert(wait_for(&c.failed, 1));
  ck_assert_int_eq(atomic_load(&c.last_err), -ECONNREFUSED);
  ck_assert_int_eq(atomic_load(&c.connected), 1);
  net_destroy(c.n);
  ck_assert_int_eq(atomic_load(&c.disconnected), 1);
  srv_free(v);
}
END_TEST

START_TEST(test_net_ipv6_echo) {
  srv *v = calloc(1, sizeof(*v));
  net_opts o = {.workers = 1, .backend = test_backend(_i), .max_sessions = 8};
  net_addr a;
  net_listener *l;
  char buf[4], text[NET_ADDR_STRLEN];

  os_mutex_init(&v->mu);
  v->mode = MODE_ECHO;
  v->ep = (net_endpoint){.handler = &srv_handler, .ctx = v,
      .framing = NET_FRAMING_RAW, .max_packet_size = 0};
  ck_assert_int_eq(net_create(&o, &v->n), 0);
  ck_assert_int_eq(net_addr_parse("::1", 0, &a), 0);
  ck_assert_int_eq(net_listen(v->n, &a, &v->ep, &l), 0);
  ck_assert_int_eq(net_start(v->n), 0);
  int fd = test_connect6(net_listener_port(l));
  test_send_all(fd, "six!", 4);
  ck_assert_int_eq(test_recv_exact(fd, buf, 4), 0);
  ck_assert_int_eq(memcmp(buf, "six!", 4), 0);
  ck_assert(wait_for(&v->connected, 1));
  os_sock_close(fd);
  ck_assert(wait_for(&v->disconnected, 1));
  snprintf(text, sizeof(text), "[::1]:%u", net_listener_port(l));
  (void)text;
  srv_free(v);
}
END_TEST

/* ---- framing ---- */

START_TEST(test_net_bad_packet_size_closes_only_that_session) {
  srv *v = srv_start(test_backend(_i), MODE_ECHO, 1, 100, 1u << 20, NET_FRAMING_U16_SIZE_ID);
  int good = test_connect(v->port), small = test_connect(v->port), big = test_connect(v->port);
  const char ok[6] = {6, 0, 7, 0, 'h', 'i'};
  char buf[6];
  size_t got;

  test_send_all(small, "\x03\x00\x01\x00", 4);
  test_send_all(big, "\x01\x04\x01\x00", 4); /* 1025 > 1024 */
  test_assert_reset(test_recv_until_close(small, &got));
  test_assert_reset(test_recv_until_close(big, &got));
  ck_assert(wait_for(&v->disconnected, 2));
  ck_assert_int_eq(atomic_load(&v->reasons[PIER_REASON_PACKET_TOO_SMALL]), 1);
  ck_assert_int_eq(atomic_load(&v->reasons[PIER_REASON_PACKET_TOO_LARGE]), 1);
  /* The well-behaved player is still served, packet by packet, even when a
   * packet arrives in pieces. */
  test_send_all(good, ok, 3);
  os_sleep_ms(20);
  test_send_all(good, ok + 3, 3);
  ck_assert_int_eq(test_recv_exact(good, buf, 6), 0);
  ck_assert_int_eq(memcmp(buf, ok, 6), 0);
  os_sock_close(good);
  os_sock_close(small);
  os_sock_close(big);
  srv_free(v);
}
END_TEST

/* ---- idle timeout ---- */

START_TEST(test_net_idle_timeout_closes_only_quiet_sessions) {
  srv *v = calloc(1, sizeof(*v));
  net_opts o = {.workers = 1, .backend = test_backend(_i), .max_sessions = 8,
                .idle_timeout_ms = 300};
  net_addr a;
  net_listener *l;
  char buf[2];
  size_t got;
  net_stats st;

  os_mutex_init(&v->mu);
  v->mode = MODE_ECHO;
  v->ep = (net_endpoint){.handler = &srv_handler, .ctx = v,
      .framing = NET_FRAMING_RAW, .max_packet_size = 0};
  ck_assert_int_eq(net_create(&o, &v->n), 0);
  net_addr_parse("127.0.0.1", 0, &a);
  ck_assert_int_eq(net_listen(v->n, &a, &v->ep, &l), 0);
  ck_assert_int_eq(net_start(v->n), 0);
  int quiet = test_connect(net_listener_port(l)), busy = test_connect(net_listener_port(l));
  /* The busy client talks every 100 ms for 900 ms: three idle periods. */
  for (int i = 0; i < 9; i++) {
    test_send_all(busy, "k", 1);
    ck_assert_int_eq(test_recv_exact(busy, buf, 1), 0);
    os_sleep_ms(100);
  }
  ck_assert_int_eq(atomic_load(&v->reasons[PIER_REASON_IDLE_TIMEOUT]), 1);
  ck_assert_int_eq(test_recv_until_close(quiet, &got), 0);
  test_send_all(busy, "k", 1);
  ck_assert_int_eq(test_recv_exact(busy, buf, 1), 0);
  net_get_stats(v->n, &st);
  ck_assert_uint_eq(st.idle_timeouts, 1);
  os_sock_close(quiet);
  os_sock_close(busy);
  srv_free(v);
}
END_TEST

/* ---- both backends, one transcript ---- */

typedef struct transcript {
  net *n;
  char log[512];
  os_mutex mu;
  _Atomic int done;
} transcript;

static void tr_add(transcript *t, const char *fmt, ...) TEST_PRINTF(2, 3);
static void tr_add(transcript *t, const char *fmt, ...) {
  va_list ap;
  size_t n;
  os_mutex_lock(&t->mu);
  n = strlen(t->log);
  va_start(ap, fmt);
  vsnprintf(t->log + n, sizeof(t->log) - n, fmt, ap);
  va_end(ap);
  os_mutex_unlock(&t->mu);
}

static void tr_connected(void *ctx, session *s) { tr_add(ctx, "C;"); }
static void tr_recv(void *ctx, session *s, const char *d, size_t len) {
  tr_add(ctx, "R%u:%zu;", frame_u16(d + 2), len);
  if (frame_u16(d + 2) == 3)
    net_close(((transcript *)ctx)->n, session_sid(s), PIER_REASON_CLOSED);
}
static void tr_disconnected(void *ctx, session *s, pier_reason r) {
  transcript *t = ctx;
  tr_add(t, "D%d;", (int)r);
  atomic_store(&t->done, 1);
}
static const net_handler tr_handler = {tr_connected, tr_recv, NULL, tr_disconnected, NULL};

static void run_transcript(const char *backend, transcript *t) {
  net *n;
  net_opts o = {.workers = 1, .backend = backend, .max_sessions = 4};
  net_endpoint ep = {.handler = &tr_handler, .ctx = t,
      .framing = NET_FRAMING_U16_SIZE_ID, .max_packet_size = 100};
  net_addr a;
  net_listener *l;
  const char pkts[] = "\x04\x00\x01\x00"
                      "\x06\x00\x02\x00xy"
                      "\x05\x00\x03\x00z"
                      "\x04\x00\x04\x00";
  size_t got;

  memset(t->log, 0, sizeof(t->log));
  os_mutex_init(&t->mu);
  atomic_store(&t->done, 0);
  ck_assert_int_eq(net_create(&o, &n), 0);
  t->n = n;
  net_addr_parse("127.0.0.1", 0, &a);
  ck_assert_int_eq(net_listen(n, &a, &ep, &l), 0);
  ck_assert_int_eq(net_start(n), 0);
  int fd = test_connect(net_listener_port(l));
  test_send_all(fd, pkts, sizeof(pkts) - 1);
  ck_assert_int_eq(test_recv_until_close(fd, &got), 0);
  ck_assert(wait_for(&t->done, 1));
  os_sock_close(fd);
  net_destroy(n);
  os_mutex_destroy(&t->mu);
}

/* ---- the numbers /metrics shows ---- */

typedef struct wait_stat {
  net *n;
  int field; /* 0: send_queue_bytes, 1: messages_out */
  uint64_t want;
  int above; /* wait for > want instead of == want */
} wait_stat;

static uint64_t stat_of(net *n, int field) {
  net_stats st;
  net_get_stats(n, &st);
  return field == 0 ? st.send_queue_bytes : st.messages_out;
}

static int cond_stat(void *arg) {
  wait_stat *w = arg;
  uint64_t v = stat_of(w->n, w->field);
  return w->above ? v > w->want : v == w->want;
}

static int wait_stat_eq(net *n, int field, uint64_t want) {
  wait_stat w = {n, field, want, 0};
  return test_wait(cond_stat, &w, 10000);
}

/* Packets in and out are counted per packet, and every session that ends is
 * counted once under the reason its owner was told, on every worker. */
START_TEST(test_net_stats_count_messages_and_closes) {
  srv *v = srv_start(test_backend(_i), MODE_ECHO, 2, 100, 1u << 20, NET_FRAMING_U16_SIZE_ID);
  /* Two 6-byte packets (size 6 little-endian, id 7 / 8, two bytes of data). */
  static const char pkts[] = "\x06\x00\x07\x00hi\x06\x00\x08\x00yo";
  char buf[12];
  int fd[3];
  net_stats st;
  uint64_t total = 0;

  for (int i = 0; i < 3; i++) {
    fd[i] = test_connect(v->port);
    ck_assert(wait_for(&v->connected, i + 1)); /* v->sids[i] is fd[i]'s */
    test_send_all(fd[i], pkts, 12);
    ck_assert_int_eq(test_recv_exact(fd[i], buf, 12), 0);
    ck_assert_int_eq(memcmp(buf, pkts, 12), 0);
  }
  net_get_stats(v->n, &st);
  ck_assert_uint_eq(st.messages_in, 6);
  ck_assert_uint_eq(st.messages_out, 6);
  ck_assert_uint_eq(st.bytes_in, 36);
  /* Echoed in full: nothing is left queued once the sends completed. */
  ck_assert(wait_stat_eq(v->n, 0, 0));

  os_sock_close(fd[0]);
  ck_assert(wait_for(&v->disconnected, 1));
  ck_assert_int_eq(net_close(v->n, v->sids[1], PIER_REASON_KICKED), 0);
  ck_assert(wait_for(&v->disconnected, 2));
  os_sock_abort(fd[2]);
  ck_assert(wait_for(&v->disconnected, 3));
  net_get_stats(v->n, &st);
  ck_assert_uint_eq(st.closed_by_reason[PIER_REASON_PEER_CLOSED], 1);
  ck_assert_uint_eq(st.closed_by_reason[PIER_REASON_KICKED], 1);
  ck_assert_uint_eq(st.closed_by_reason[PIER_REASON_PEER_RESET], 1);
  for (unsigned r = 0; r < NET_REASON_COUNT; r++)
    total += st.closed_by_reason[r];
  ck_assert_uint_eq(total, 3);
  ck_assert_uint_eq(st.disconnects, 3);
  ck_assert_uint_eq(st.sessions, 0);
  /* A send that queues nothing is no message. */
  ck_assert_uint_eq(st.messages_out, 6);
  os_sock_close(fd[1]);
  srv_free(v);
}
END_TEST

/* send_queue_bytes follows the bytes a peer has not taken yet: up while it
 * does not read, back to 0 when the queue drains (graceful close) and when
 * it is dropped (abortive close). */
START_TEST(test_net_stats_send_queue_gauge_follows_queue) {
  srv *v = srv_start(test_backend(_i), MODE_SILENT, 1, 100, 64u << 20, NET_FRAMING_RAW);
  static char big[8u << 20];
  wait_stat above = {v->n, 0, 0, 1};
  int fd = test_connect_rcvbuf(v->port, 4096), fd2;
  size_t got = 0;
  uint64_t q;

  ck_assert(wait_for(&v->connected, 1));
  memset(big, 'q', sizeof(big));
  ck_assert_int_eq(net_send(v->n, v->sids[0], big, sizeof(big)), 0);
  ck_assert(test_wait(cond_stat, &above, 10000));
  q = stat_of(v->n, 0);
  ck_assert_uint_le(q, sizeof(big));
  ck_assert_uint_eq(stat_of(v->n, 1), 1);
  /* Dropped by an abortive close: the gauge gives the bytes back. */
  ck_assert_int_eq(net_abort(v->n, v->sids[0], PIER_REASON_KICKED), 0);
  ck_assert(wait_for(&v->disconnected, 1));
  ck_assert_uint_eq(stat_of(v->n, 0), 0);
  os_sock_close(fd);

  /* Sent in full by a graceful close: back to 0 once the peer took it. */
  fd2 = test_connect(v->port);
  ck_assert(wait_for(&v->connected, 2));
  ck_assert_int_eq(net_send(v->n, v->sids[1], big, 1u << 20), 0);
  ck_assert_int_eq(net_close(v->n, v->sids[1], PIER_REASON_CLOSED), 0);
  ck_assert_int_eq(test_recv_until_close(fd2, &got), 0);
  ck_assert_uint_eq(got, 1u << 20);
  ck_assert(wait_for(&v->disconnected, 2));
  ck_assert_uint_eq(stat_of(v->n, 0), 0);
  ck_assert_uint_eq(stat_of(v->n, 1), 2);
  os_sock_close(fd2);
  srv_free(v);
}
END_TEST

/* The io loops' own counters reach net_get_stats: a ring of four 64-byte
 * buffers runs dry under a stream on io_uring (the epoll and IOCP backends
 * read into one scratch buffer and have nothing to run out of). */
START_TEST(test_net_stats_io_counters_reach_net) {
  net_opts o = {.workers = 1, .backend = test_backend(_i), .max_sessions = 8,
                .max_send_queue = 4u << 20, .buf_count = 4, .buf_size = 64};
  srv *v = srv_start_o(&o, MODE_ECHO, NET_FRAMING_RAW);
  static char data[256u << 10], back[256u << 10];
  int fd = test_connect(v->port);
  net_stats st;

  for (size_t k = 0; k < sizeof(data); k++)
    data[k] = (char)test_pattern(1, k);
  test_send_all(fd, data, sizeof(data));
  ck_assert_int_eq(test_recv_exact(fd, back, sizeof(back)), 0);
  ck_assert_int_eq(memcmp(data, back, sizeof(data)), 0);
  net_get_stats(v->n, &st);
  if (strcmp(test_backend(_i), "io_uring") == 0)
    ck_assert_msg(st.io_enobufs > 0, "io_enobufs %llu io_rearms %llu",
                  (unsigned long long)st.io_enobufs, (unsigned long long)st.io_rearms);
  else
    ck_assert_uint_eq(st.io_enobufs, 0);
  ck_assert_uint_eq(st.messages_in, st.messages_out); /* raw: one echo per read */
  os_sock_close(fd);
  srv_free(v);
}
END_TEST

#ifndef _WIN32 /* no TLS in the Windows build (xport_none.c) */
/* A self-signed P-256 certificate and its key, as PEM files in dir. */
static void tls_files(const char *dir, char *cert, char *key, size_t len) {
  EVP_PKEY *k = EVP_EC_gen("P-256");
  X509 *x = X509_new();
  X509_NAME *name = X509_NAME_new();
  FILE *f;

  ck_assert_ptr_nonnull(k);
  X509_set_version(x, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
  X509_gmtime_adj(X509_getm_notBefore(x), -3600);
  X509_gmtime_adj(X509_getm_notAfter(x), 24 * 3600);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"pier", -1, -1, 0);
  X509_set_subject_name(x, name);
  X509_set_issuer_name(x, name);
  X509_set_pubkey(x, k);
  ck_assert_int_gt(X509_sign(x, k, EVP_sha256()), 0);
  snprintf(cert, len, "%s/c.crt", dir);
  snprintf(key, len, "%s/c.key", dir);
  ck_assert_ptr_nonnull(f = fopen(cert, "wb"));
  ck_assert(PEM_write_X509(f, x));
  fclose(f);
  ck_assert_ptr_nonnull(f = fopen(key, "wb"));
  ck_assert(PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL));
  fclose(f);
  X509_NAME_free(name);
  X509_free(x);
  EVP_PKEY_free(k);
}

/* With TLS the plaintext waiting to be sealed counts as queued too: the
 * gauge rises while the peer does not read and comes back to 0 when the
 * session is dropped with both queues full, and when it drains. */
START_TEST(test_net_stats_send_queue_gauge_counts_tls) {
  static char big[32u << 20];
  char dir[256], cert[300], key[300], buf[4096];
  net_opts o = {.workers = 1, .backend = test_backend(_i), .max_sessions = 8,
                .max_send_queue = 64u << 20, .close_timeout_ms = 3000};
  srv *v;
  wait_stat above;
  SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
  SSL *ssl[2];
  int fd[2];
  size_t got = 0;

  test_mkdtemp(dir, sizeof(dir), "pier-net-tls-");
  tls_files(dir, cert, key, sizeof(cert));
  v = calloc(1, sizeof(*v));
  os_mutex_init(&v->mu);
  v->mode = MODE_SILENT;
  v->ep = (net_endpoint){.handler = &srv_handler, .ctx = v, .framing = NET_FRAMING_RAW,
                         .tls_cert = cert, .tls_key = key};
  ck_assert_int_eq(net_create(&o, &v->n), 0);
  {
    net_addr a;
    net_listener *l;
    ck_assert_int_eq(net_addr_parse("127.0.0.1", 0, &a), 0);
    ck_assert_int_eq(net_listen(v->n, &a, &v->ep, &l), 0);
    v->port = net_listener_port(l);
  }
  ck_assert_int_eq(net_start(v->n), 0);
  above = (wait_stat){v->n, 0, 0, 1};
  for (int i = 0; i < 2; i++) {
    fd[i] = i == 0 ? test_connect_rcvbuf(v->port, 4096) : test_connect(v->port);
    ssl[i] = SSL_new(ctx);
    SSL_set_fd(ssl[i], fd[i]);
    ck_assert_int_eq(SSL_connect(ssl[i]), 1);
    ck_assert(wait_for(&v->connected, i + 1));
  }
  memset(big, 't', sizeof(big));

  ck_assert_int_eq(net_send(v->n, v->sids[0], big, sizeof(big)), 0);
  ck_assert(test_wait(cond_stat, &above, 10000));
  /* Sealed into the socket's queue 64 KiB at a time: most of it is still
   * plaintext, and the kernel (a send buffer of a few MiB at most, a 4 KiB
   * window) can have taken little of it. */
  ck_assert_uint_ge(stat_of(v->n, 0), 16u << 20);
  ck_assert_int_eq(net_abort(v->n, v->sids[0], PIER_REASON_KICKED), 0);
  ck_assert(wait_for(&v->disconnected, 1));
  ck_assert_uint_eq(stat_of(v->n, 0), 0);

  ck_assert_int_eq(net_send(v->n, v->sids[1], big, 1u << 20), 0);
  ck_assert_int_eq(net_close(v->n, v->sids[1], PIER_REASON_CLOSED), 0);
  for (;;) {
    int r = SSL_read(ssl[1], buf, sizeof(buf));
    if (r <= 0)
      break;
    got += (size_t)r;
  }
  ck_assert_uint_eq(got, 1u << 20);
  ck_assert(wait_for(&v->disconnected, 2));
  ck_assert_uint_eq(stat_of(v->n, 0), 0);
  for (int i = 0; i < 2; i++) {
    SSL_free(ssl[i]);
    os_sock_close(fd[i]);
  }
  SSL_CTX_free(ctx);
  srv_free(v);
  test_rm_rf(dir);
}
END_TEST
#endif

/* Each reason's label is its PIER_REASON_MAP name in lowercase, so a new
 * reason cannot go out under another's label. */
START_TEST(test_net_reason_labels_follow_enum) {
  static const struct {
    pier_reason r;
    const char *name;
  } map[] = {
#define XX(name, value, text) {PIER_REASON_##name, #name},
      PIER_REASON_MAP(XX)
#undef XX
  };
  ck_assert_uint_eq(sizeof(map) / sizeof(map[0]), NET_REASON_COUNT);
  for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++) {
    char want[64];
    size_t k = 0;
    for (; map[i].name[k] && k < sizeof(want) - 1; k++)
      want[k] = (char)(map[i].name[k] >= 'A' && map[i].name[k] <= 'Z' ? map[i].name[k] + 32
                                                                       : map[i].name[k]);
    want[k] = '\0';
    ck_assert_str_eq(net_reason_label(map[i].r), want);
  }
  ck_assert_str_eq(net_reason_label((pier_reason)NET_REASON_COUNT), "?");
}
END_TEST

START_TEST(test_net_backends_give_identical_results) {
  transcript t;
  for (int i = 0; i < TEST_NBACKENDS; i++) {
    run_transcript(test_backend(i), &t);
    ck_assert_msg(strcmp(t.log, "C;R1:4;R2:6;R3:5;D4;") == 0, "%s: %s", test_backend(i), t.log);
  }
}
END_TEST

int main(void) {
  Suite *s = suite_create("net");
  TCase *tc = tcase_create("loopback");

  test_raise_fd_limit();
  tcase_set_timeout(tc, 240);
  tcase_add_loop_test(tc, test_net_echo_100_sessions_1mib, 0, TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_net_server_close_notifies_once, 0, TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_net_client_close_notifies_once, 0, TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_net_reset_mid_stream_notifies_once, 0, TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_net_graceful_close_flushes_then_fin, 0, TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_net_stream_sent_from_on_send_arrives_in_order, 0,
                      TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_net_sessions_sending_to_each_other_from_on_send_share_the_worker,
                      0, TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_net_sends_to_many_sessions_leave_in_the_order_made, 0,
                      TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_net_a_lone_round_trip_costs_one_wait, 0, TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_net_sends_to_many_sessions_ride_the_ring_on_io_uring, 0,
                      TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_net_a_reply_of_many_writes_arrives_in_order, 0, TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_net_a_close_after_a_reply_sends_it_and_an_abort_drops_it, 0,
                      TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_net_a_session_sent_to_from_a_staged_replys_on_send_waits_its_turn,
                      0, TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_net_staged_bytes_count_against_max_send_queue, 0,
                      TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_net_replies_the_socket_cannot_take_whole_arrive_in_order, 0,
                      TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_net_abort_resets_peer, 0, TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_net_half_close_still_gets_echo, 0, TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_net_close_deadline_reports_flush_timeout, 0, TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_net_max_sessions_refuses_extra, 0, TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_net_send_cap_disconnects_non_reader, 0, TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_net_cross_thread_oversize_send_disconnects, 0, TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_net_close_on_the_worker_flushes_sends_from_other_threads, 0,
                      TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_net_send_racing_a_close_is_sent_or_refused, 0, TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_net_cross_thread_inbox_capped_per_session, 0, TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_net_cross_thread_tiny_sends_capped_by_memory, 0, TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_net_cross_thread_send_of_the_whole_cap_fits, 0, TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_net_send_timeout_resets_non_reader, 0, TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_net_send_timeout_spares_a_peer_that_caught_up, 0, TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_net_read_backpressure_pauses_and_resumes, 0, TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_net_backlog_stale_release_ignored_close_while_paused, 0, TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_net_stale_sid_fails_cleanly, 0, TEST_NBACKENDS);
#ifndef _WIN32 /* no descriptor limit on Windows: see the case */
  tcase_add_loop_test(tc, test_net_emfile_backoff_does_not_spin, 0, TEST_NBACKENDS);
#endif
  tcase_add_loop_test(tc, test_net_two_workers_cross_sends, 0, TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_net_client_service_connects_and_reports_errors, 0,
                      TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_net_ipv6_echo, 0, TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_net_bad_packet_size_closes_only_that_session, 0,
                      TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_net_idle_timeout_closes_only_quiet_sessions, 0, TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_net_stats_count_messages_and_closes, 0, TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_net_stats_send_queue_gauge_follows_queue, 0, TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_net_stats_io_counters_reach_net, 0, TEST_NBACKENDS);
#ifndef _WIN32
  tcase_add_loop_test(tc, test_net_stats_send_queue_gauge_counts_tls, 0, TEST_NBACKENDS);
#endif
  tcase_add_test(tc, test_net_reason_labels_follow_enum);
  tcase_add_test(tc, test_net_backends_give_identical_results);
  suite_add_tcase(s, tc);
  return test_run(s);
}
