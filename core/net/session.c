/* A session's life on its worker: start (on_connected, then the first
 * multishot recv), framing of what arrives, the send queue and its one
 * scatter-gather send in flight, its deadlines, and close. A session is held
 * by references: one while it is open, one per armed operation, one while it
 * waits on the flush list, one while its worker's stage holds its reply. It
 * is finished (fd closed, on_disconnected, slot released) only when the last
 * reference drops, so no completion can reach a reused slot. What it needs
 * only while busy (the send and its queue, input held back) lives in a
 * session_ext made on demand and freed when idle. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "net/net_internal.h"
#include "net/xport.h"

static const char *const reason_text[] = {
#define XX(name, value, text) [value] = text,
    PIER_REASON_MAP(XX)
#undef XX
};

/* By hand (the preprocessor cannot lowercase): test_net checks each against
 * its PIER_REASON_MAP name. */
static const char *const reason_label[] = {
    "none", "peer_closed", "peer_reset", "io_error", "closed", "kicked", "send_queue_full",
    "packet_too_small", "packet_too_large", "idle_timeout", "shutdown", "no_memory",
    "flush_timeout", "plugin_error", "packet_timeout", "send_timeout", "protocol_error",
    "invalid_text", "ping_timeout", "tls_error", "handshake_failed", "handshake_timeout",
};

_Static_assert(NET_REASON_COUNT <= 64, "session.reason is 6 bits");
_Static_assert(sizeof(reason_text) / sizeof(reason_text[0]) == NET_REASON_COUNT,
               "NET_REASON_COUNT must follow PIER_REASON_MAP");
_Static_assert(sizeof(reason_label) / sizeof(reason_label[0]) == NET_REASON_COUNT,
               "a reason without its label");

/* An idle session costs this plus its slot's share of the tables (sid.c,
 * the host's), which must stay within 256 bytes (docs/DESIGN.md). On
 * Windows its io_ev carries an OVERLAPPED as well. */
#ifndef _WIN32
_Static_assert(sizeof(void *) != 8 || sizeof(session) <= 192, "struct session grew past 192 bytes");
_Static_assert(sizeof(void *) != 8 || offsetof(session, timer) == 128,
               "what a read touches grew past the session's first two cache lines");
#endif

const char *net_reason_label(pier_reason reason) {
  unsigned r = (unsigned)reason;
  return r < NET_REASON_COUNT ? reason_label[r] : "?";
}

const char *net_reason_text(pier_reason reason) {
  unsigned r = (unsigned)reason;
  return r < sizeof(reason_text) / sizeof(reason_text[0]) && reason_text[r] ? reason_text[r] : "?";
}

/* ---- the session's ext ---- */

/* Exts a worker keeps for reuse: a busy session makes one per send and lets
 * it go when the send completes, which must not cost a malloc and a free
 * each time. The cache is bounded, and freed when the worker is quiet. */
#define EXT_CACHE 1024

session_ext *session_ext_get(session *s) {
  net_worker *w = s->w;
  session_ext *x = s->ext;
  if (x)
    return x;
  if (w->ext_free) {
    x = w->ext_free;
    w->ext_free = x->next_free;
    w->ext_nfree--;
  } else if (!(x = malloc(sizeof(*x)))) {
    return NULL;
  }
  memset(x, 0, offsetof(session_ext, ring));
  sendq_init(&x->q, x->ring, SESSION_RING, &s->w->stats.send_queue_bytes);
  x->owner = s;
  s->ext = x;
  return x;
}

/* An ext no session holds goes to the worker's cache, or is freed. */
static void ext_recycle(net_worker *w, session_ext *x) {
  if (w->ext_nfree < EXT_CACHE) {
    x->next_free = w->ext_free;
    w->ext_free = x;
    w->ext_nfree++;
  } else {
    free(x);
  }
}

static void ext_clear(session_ext *x) {
  sendq_clear(&x->q);
  free(x->defer);
  x->defer = NULL;
  x->defer_len = x->defer_cap = 0;
}

void session_ext_free(session *s) {
  session_ext *x = s->ext;
  if (!x)
    return;
  ext_clear(x);
  s->ext = NULL;
  if (x->parked) /* the sweep takes it off the parked list */
    x->owner = NULL;
  else
    ext_recycle(s->w, x);
}

void session_ext_cache_trim(net_worker *w) {
  while (w->ext_free) {
    session_ext *x = w->ext_free;
    w->ext_free = x->next_free;
    free(x);
  }
  w->ext_nfree = 0;
}

static int ext_unused(const session_ext *x) {
  return !x->ev_send.armed && !x->inflight && !x->q.count && !x->flush_queued && !x->defer;
}

void session_ext_sweep(net_worker *w, int all) {
  session_ext **pp = &w->parked;
  while (*pp) {
    session_ext *x = *pp;
    int unused = x->owner && ext_unused(x);
    if (unused && !all && x->parked_at == w->tick) {
      pp = &x->next_parked; /* let go during this tick: it may well be used again */
      continue;
    }
    *pp = x->next_parked;
    x->parked = 0;
    if (!x->owner) {
      ext_recycle(w, x);
    } else if (unused) {
      x->owner->ext = NULL;
      ext_clear(x);
      ext_recycle(w, x);
    } /* else in use again: ext_release parks it anew when it is let go */
  }
  w->tick++;
}

/* Lets the ext go once nothing in it is in use: no send or connect armed,
 * nothing queued or in flight, not on the flush list, no deferred input.
 * A session that let one go in this trim tick or the last (a busy one, that
 * sends on every message) keeps it, parked, until a tick passes without its
 * use (session_ext_sweep), instead of making it anew each time; any other
 * gives it back at once, so a burst of sessions that each sent once leaves
 * nothing behind. Called where none of it is referenced further up the
 * stack. */
static void ext_release(session *s) {
  session_ext *x = s->ext;
  unsigned now;
  if (!x || !ext_unused(x))
    return;
  now = s->w->tick & 3u;
  if (!x->parked && s->rel_tick != now && s->rel_tick != ((now - 1u) & 3u)) {
    s->rel_tick = now & 3u;
    session_ext_free(s);
    return;
  }
  s->rel_tick = now & 3u;
  x->parked_at = s->w->tick;
  if (!x->parked) {
    x->parked = 1;
    x->next_parked = s->w->parked;
    s->w->parked = x;
  }
}

static int deferred(const session *s) { return s->ext && s->ext->defer_len; }

static void finish(session *s) {
  net_worker *w = s->w;
  const net_endpoint *ep = s->ep;

  io_timer_stop(&w->loop, &s->timer);
  io_close_fd(&w->loop, &s->iofd);
  if (s->xp)
    xport_free(s);
  session_ext_free(s);
  framing_reset(&s->fr);
  if (s->notified || s->accepted) { /* every session counted as open */
    STAT_ADD(w, disconnects, 1);
    STAT_ADD(w, closed_by_reason[s->reason < NET_REASON_COUNT ? s->reason : PIER_REASON_IO_ERROR],
             1);
  }
  if (s->notified) {
    if (ep->handler->on_disconnected)
      ep->handler->on_disconnected(ep->ctx, s, (pier_reason)s->reason);
  }
  if (s->accepted) {
    atomic_fetch_sub(&w->n->accepted_open, 1);
    net_ip_release(w->n, &s->peer);
  }
  atomic_fetch_sub_explicit(&w->load, 1, memory_order_relaxed);
  sid_release(&w->sids, s->sid);
  s->state = SS_FREE;
  s->sid = 0;
  w->nsessions--;
  worker_maybe_finish(w);
}

static void unref(session *s) {
  if (--s->refs == 0)
    finish(s);
}

static int stage_to_flush(session *s);

/* ---- deadlines ----
 *
 * close_timeout_ms from a graceful close, send_timeout_ms from the last send
 * submitted while one is in flight or queued, packet_timeout_ms from the
 * first byte of a held partial packet, idle_timeout_ms from the last data
 * received. Each keeps its own start time; the session's one timer is due at
 * the earliest of those that apply, and when it fires the one due is handled
 * and the timer set again for the rest. Moving a start time later (data came,
 * a send made progress) leaves the timer early, which only costs a look. */

enum { D_NONE, D_CLOSE, D_SEND, D_PACKET, D_IDLE };

static uint32_t now32(const session *s) { return (uint32_t)s->w->loop.now; }

/* A start time that is never 0 (0 means "no partial packet"). */
static uint32_t stamp(const session *s) { return now32(s) ? now32(s) : 1; }

static uint64_t ms_left(const session *s, uint32_t since, unsigned limit) {
  uint32_t gone = now32(s) - since;
  return gone < limit ? limit - gone : 0;
}

/* The deadline that comes first (ties: close, send, packet, idle) and the
 * ms until it, or D_NONE. A send deadline with nothing left to send lapses
 * here; the next flush starts it again. */
static int next_deadline(session *s, uint64_t *ms) {
  const net_opts *o = &s->w->n->opts;
  session_ext *x = s->ext;
  uint64_t m;
  int which = D_NONE;

  *ms = UINT64_MAX;
  if (s->state == SS_CLOSING) {
    *ms = ms_left(s, s->t.close_since, o->close_timeout_ms);
    which = D_CLOSE;
  }
  if (x && x->send_timing && (s->state == SS_OPEN || s->state == SS_CLOSING)) {
    if (!x->inflight && !x->q.bytes) {
      x->send_timing = 0;
    } else if ((m = ms_left(s, x->last_tx, o->send_timeout_ms)) < *ms) {
      *ms = m;
      which = D_SEND;
    }
  }
  /* Held back by pier (paused or congested), a session is neither idle nor
   * slow to finish a packet: both clocks start again when it is read again. */
  if (s->state != SS_OPEN || s->read_paused || s->congested)
    return which;
  if (o->packet_timeout_ms && s->t.partial_since &&
      (m = ms_left(s, s->t.partial_since, o->packet_timeout_ms)) < *ms) {
    *ms = m;
    which = D_PACKET;
  }
  if (o->idle_timeout_ms && (m = ms_left(s, s->last_rx, o->idle_timeout_ms)) < *ms) {
    *ms = m;
    which = D_IDLE;
  }
  return which;
}

/* A deadline now ms away has begun: the timer is due by then. */
static void deadline_within(session *s, uint64_t ms) {
  io_loop *loop = &s->w->loop;
  if (io_timer_active(&s->timer) && s->timer.due <= loop->now + ms)
    return;
  io_timer_start(loop, &s->timer, ms, 0);
}

static void close_deadline(session *s) {
  char peer[NET_ADDR_STRLEN];
  log_info("session %016llx %s: %zu bytes not sent before the close deadline; resetting",
           (unsigned long long)s->sid, net_addr_format(&s->peer, peer, sizeof(peer)),
           session_qbytes(s));
  /* The session is CLOSING with the reason the close was asked with; what
   * ends it now is the deadline, and that is what its owner is told. */
  s->reason = PIER_REASON_FLUSH_TIMEOUT;
  session_close(s, PIER_REASON_FLUSH_TIMEOUT, 1);
}

static void send_deadline(session *s) {
  char peer[NET_ADDR_STRLEN];
  STAT_ADD(s->w, send_timeouts, 1);
  log_limited(&s->w->rl_send, LOG_WARN,
              "session %016llx %s: no send progress for %llu ms (send_timeout_ms), %zu bytes "
              "queued; resetting",
              (unsigned long long)s->sid, net_addr_format(&s->peer, peer, sizeof(peer)),
              (unsigned long long)(uint32_t)(now32(s) - s->ext->last_tx), session_qbytes(s));
  s->reason = PIER_REASON_SEND_TIMEOUT; /* also over a graceful close's reason */
  session_close(s, PIER_REASON_SEND_TIMEOUT, 1);
}

static void packet_deadline(session *s) {
  char peer[NET_ADDR_STRLEN];
  STAT_ADD(s->w, packet_timeouts, 1);
  log_limited(&s->w->rl_packet, LOG_WARN,
              "session %016llx %s: %zu of a packet's bytes held for %llu ms (packet_timeout_ms); "
              "closing",
              (unsigned long long)s->sid, net_addr_format(&s->peer, peer, sizeof(peer)),
              s->xp ? xport_held(s) : (size_t)framing_held(&s->fr),
              (unsigned long long)(uint32_t)(now32(s) - s->t.partial_since));
  /* A WebSocket client is told why (close 1008); a TCP one is reset. */
  session_close(s, PIER_REASON_PACKET_TIMEOUT, s->xp == NULL);
}

static void idle_deadline(session *s) {
  char peer[NET_ADDR_STRLEN];
  STAT_ADD(s->w, idle_timeouts, 1);
  log_limited(&s->w->rl_idle, LOG_INFO, "session %016llx %s: idle for %llu ms; closing",
              (unsigned long long)s->sid, net_addr_format(&s->peer, peer, sizeof(peer)),
              (unsigned long long)(uint32_t)(now32(s) - s->last_rx));
  session_close(s, PIER_REASON_IDLE_TIMEOUT, 0);
}

static void on_timer(io_timer *t) {
  session *s = container_of(t, session, timer);
  uint64_t ms;
  int which = next_deadline(s, &ms);

  if (which != D_NONE && ms == 0) {
    switch (which) {
    case D_CLOSE:
      close_deadline(s);
      break;
    case D_SEND:
      send_deadline(s);
      break;
    case D_PACKET:
      packet_deadline(s);
      break;
    default:
      idle_deadline(s);
      break;
    }
  }
  /* What is left (a graceful close just begun, say) sets the timer again;
   * another deadline already due runs in this same pass of the timers. */
  if ((s->state == SS_OPEN || s->state == SS_CLOSING) && next_deadline(s, &ms) != D_NONE)
    io_timer_start(&s->w->loop, &s->timer, ms, 0);
}

session *session_new(net_worker *w, int fd, const net_endpoint *ep, const net_addr *peer) {
  pier_sid sid = sid_take(&w->sids);
  session *s;

  if (sid == 0)
    return NULL;
  s = &w->sessions[PIER_SID_SLOT(sid)];
  memset(s, 0, sizeof(*s));
  s->iofd.fd = fd;
  s->w = w;
  s->rel_tick = (w->tick + 2u) & 3u; /* not recent: its first ext goes back at once */
  s->ep = ep;
  s->sid = sid;
  s->refs = 1;
  s->state = SS_OPEN;
  io_timer_init(&s->timer, on_timer);
  s->last_rx = now32(s);
  if (peer)
    s->peer = *peer;
  sid_publish(&w->sids, sid); /* from here other threads may read the peer */
  w->nsessions++;
  atomic_fetch_add_explicit(&w->load, 1, memory_order_relaxed);
  return s;
}

session *session_lookup(net_worker *w, pier_sid sid) {
  uint32_t slot = PIER_SID_SLOT(sid);
  session *s;
  if (slot >= w->sids.cap)
    return NULL;
  s = &w->sessions[slot];
  return s->state != SS_FREE && s->sid == sid ? s : NULL;
}

/* Closing for good: FIN (graceful) or RST (abortive), and cancel what is
 * armed; the final completions drop the remaining references. */
static void enter_closed(session *s, int abortive) {
  uint8_t prev = s->state;
  io_loop *loop = &s->w->loop;

  s->state = SS_CLOSED;
  io_timer_stop(loop, &s->timer);
  if (abortive) {
    os_sock_linger0(s->iofd.fd);
    if (s->ext)
      io_cancel(loop, &s->ext->ev_send);
  } else if (prev != SS_CONNECTING) {
    os_sock_shutdown_wr(s->iofd.fd);
  }
  if (prev == SS_CONNECTING && s->ext)
    io_cancel(loop, &s->ext->ev_send);
  io_cancel(loop, &s->ev_recv);
  unref(s); /* the open reference */
}

void session_close(session *s, pier_reason reason, int abortive) {
  switch (s->state) {
  case SS_FREE:
  case SS_CLOSED:
    return;
  case SS_CLOSING:
    if (abortive)
      enter_closed(s, 1);
    return;
  case SS_CONNECTING:
    s->reason = (unsigned)reason & 63u;
    sid_mark_closing(&s->w->sids, s->sid);
    enter_closed(s, 1);
    return;
  default:
    break;
  }
  if (s->w->staged == s) { /* what is staged goes out first, or, in an abort, nowhere */
    if (abortive)
      s->w->staged_len = 0;
    else if (stage_to_flush(s) < 0)
      return; /* closed for want of memory */
  }
  s->reason = (unsigned)reason & 63u;
  sid_mark_closing(&s->w->sids, s->sid);
  if (s->xp && !abortive)
    xport_close(s, reason); /* a close frame, close_notify */
  if (s->state != SS_OPEN)
    return; /* closed by what the close frame's queueing ran into */
  if (abortive ||
      (session_qbytes(s) == 0 && !session_inflight(s) && !(s->xp && xport_pending(s)))) {
    enter_closed(s, abortive);
    return;
  }
  s->state = SS_CLOSING;
  s->t.close_since = now32(s); /* no partial packet is timed from here on */
  deadline_within(s, s->w->n->opts.close_timeout_ms);
}

/* ---- receive ---- */

static int on_packet(void *ctx, const char *packet, size_t len) {
  session *s = ctx;
  STAT_ADD(s->w, messages_in, 1);
  s->ep->handler->on_recv(s->ep->ctx, s, packet, len);
  return s->state != SS_OPEN;
}

void session_partial(session *s, int holding) {
  if (!s->w->n->opts.packet_timeout_ms || s->state != SS_OPEN)
    return;
  /* Timed from the first byte of the packet now held, if any. */
  if (!holding) {
    s->t.partial_since = 0;
  } else if (!s->t.partial_since) {
    s->t.partial_since = stamp(s);
    deadline_within(s, s->w->n->opts.packet_timeout_ms);
  }
}

void session_app_input(session *s, const char *data, size_t len) {
  const net_endpoint *ep = s->ep;
  int rc;

  if (ep->framing == NET_FRAMING_RAW) {
    STAT_ADD(s->w, messages_in, 1);
    ep->handler->on_recv(ep->ctx, s, data, len);
    return;
  }
  rc = framing_feed(&s->fr, ep->max_packet_size, data, len, on_packet, s);
  if (rc == 0)
    session_partial(s, s->fr.held != NULL);
  if (rc < 0) {
    char peer[NET_ADDR_STRLEN];
    pier_reason r = rc == -EPROTO    ? PIER_REASON_PACKET_TOO_SMALL
                    : rc == -EMSGSIZE ? PIER_REASON_PACKET_TOO_LARGE
                                      : PIER_REASON_NO_MEMORY;
    STAT_ADD(s->w, bad_packets, 1);
    log_limited(&s->w->rl_packet, LOG_WARN, "session %016llx %s: %s (max_packet_size %u); closing",
                (unsigned long long)s->sid, net_addr_format(&s->peer, peer, sizeof(peer)),
                net_reason_text(r), ep->max_packet_size);
    session_close(s, r, 1);
  }
}

/* Bytes from the socket: through the transport stack, if any. */
static void deliver(session *s, const char *data, size_t len) {
  STAT_ADD(s->w, bytes_in, len);
  if (s->xp)
    xport_input(s, data, len);
  else
    session_app_input(s, data, len);
}

static int arm_recv(session *s);

/* The recv ended while reading was paused for the owner (the cancel took
 * effect, or it ended with data or out of buffers after the cancel was
 * asked): if the owner resumed meanwhile, read again. */
static void recv_paused_end(session *s) {
  if (!s->read_paused && !s->congested && !deferred(s))
    arm_recv(s);
}

/* ---- output congestion ----
 *
 * A session whose requests produce more output than its peer takes in
 * would reach max_send_queue and be cut off, though it reads: one batch of
 * completions can carry more than max_send_queue for one session (io_uring:
 * up to the whole buffer ring). So past half of max_send_queue the session
 * is no longer read; what was already received waits in ext->defer (at most
 * one buffer ring's worth) and is delivered, in order, once the queue is
 * below a quarter; then reading resumes, and the deferred buffer is freed.
 * A peer that does not read at all stays congested until send_timeout_ms
 * cuts it off (with send_timeout_ms 0, it keeps its queue and what was
 * deferred, both bounded, until it reads or closes). */

static size_t defer_cap_max(const session *s) {
  const io_opts *o = &s->w->loop.opts;
  return (size_t)o->buf_count * o->buf_size + o->buf_size;
}

/* Keeps data for later; 0, or -ENOMEM (then the session is closed). */
static int defer_input(session *s, const char *data, size_t len) {
  session_ext *x = session_ext_get(s);
  if (x && x->defer_len + len > x->defer_cap) {
    size_t cap = x->defer_cap ? x->defer_cap : 4096;
    char *n;
    while (cap < x->defer_len + len)
      cap *= 2;
    if (cap > defer_cap_max(s))
      cap = defer_cap_max(s);
    n = x->defer_len + len <= cap ? realloc(x->defer, cap) : NULL;
    if (!n)
      x = NULL;
    else {
      x->defer = n;
      x->defer_cap = (uint32_t)cap;
    }
  }
  if (!x) {
    log_error("session %016llx: %zu bytes received while its send queue was full do not fit "
              "in %zu; closing",
              (unsigned long long)s->sid,
              (size_t)(s->ext ? s->ext->defer_len : 0) + len, defer_cap_max(s));
    session_close(s, PIER_REASON_NO_MEMORY, 1);
    return -ENOMEM;
  }
  memcpy(x->defer + x->defer_len, data, len);
  x->defer_len += (uint32_t)len;
  return 0;
}

/* What waits to go out to s: its queue, the send in flight, and sends from
 * other threads still in the worker's inbox. */
static size_t outgoing(const session *s) {
  return session_qbytes(s) + session_inflight(s) + (s->xp ? xport_pending(s) : 0) +
         atomic_load_explicit(&s->w->sids.xsend[PIER_SID_SLOT(s->sid)], memory_order_relaxed);
}

static void check_congestion(session *s) {
  if (s->congested || s->state != SS_OPEN || outgoing(s) < s->w->n->opts.max_send_queue / 2)
    return;
  s->congested = 1;
  if (s->ev_recv.armed && io_cancel(&s->w->loop, &s->ev_recv) == 0)
    io_submit_now(&s->w->loop);
}

/* Delivers what was deferred, in order, until it is all out or the session
 * is paused or congested again; then reads again if nothing holds it. The
 * ext stays (its defer is set until the end), and is left for the caller to
 * release. */
static void replay_deferred(session *s) {
  size_t off = 0, chunk = s->w->loop.opts.buf_size;
  const net_opts *o = &s->w->n->opts;
  session_ext *x = s->ext;

  while (x && off < x->defer_len && !s->congested && !s->read_paused && s->state == SS_OPEN) {
    size_t n = x->defer_len - off < chunk ? x->defer_len - off : chunk;
    deliver(s, x->defer + off, n);
    off += n;
    check_congestion(s);
  }
  if (s->state != SS_OPEN)
    return;
  if (off) {
    memmove(x->defer, x->defer + off, x->defer_len - off);
    x->defer_len -= (uint32_t)off;
  }
  if (x && !x->defer_len && x->defer) { /* a quiet session keeps no buffer */
    free(x->defer);
    x->defer = NULL;
    x->defer_cap = 0;
  }
  if (!deferred(s) && s->eof_pending) { /* the peer's FIN came after all of it */
    session_close(s, PIER_REASON_PEER_CLOSED, 0);
    return;
  }
  if (s->congested || s->read_paused || deferred(s))
    return;
  /* Held back by pier, the session was neither idle nor slow: its clocks
   * start again now. */
  if (o->idle_timeout_ms) {
    s->last_rx = now32(s);
    deadline_within(s, o->idle_timeout_ms);
  }
  if (s->t.partial_since && o->packet_timeout_ms) {
    s->t.partial_since = stamp(s);
    deadline_within(s, o->packet_timeout_ms);
  }
  /* A recv whose cancel has not completed yet re-arms from its final
   * completion; otherwise arm it now (on epoll this tries a read at once,
   * as the edge that came meanwhile is gone). */
  if (!s->ev_recv.armed)
    arm_recv(s);
}

/* After a send completion: below a quarter of max_send_queue, what was
 * deferred goes on (it may congest the session again) and reading resumes. */
static void relieve_congestion(session *s) {
  if (!s->congested || s->state != SS_OPEN || outgoing(s) > s->w->n->opts.max_send_queue / 4)
    return;
  s->congested = 0;
  replay_deferred(s);
}

static void on_recv_done(io_ev *ev, int res, unsigned flags, char *data) {
  session *s = container_of(ev, session, ev_recv);

  /* Data that came after a pause was asked but before the cancel took
   * effect is delivered like any other. */
  if (res > 0 && s->state == SS_OPEN) {
    s->last_rx = now32(s);
    /* Paused or congested: what the kernel had already handed over waits
     * here, so the owner never holds more than its limit for a session. */
    if (s->congested || s->read_paused || deferred(s))
      defer_input(s, data, (size_t)res);
    else
      deliver(s, data, (size_t)res);
    check_congestion(s);
  }
  if (flags & IO_F_MORE)
    return;
  if (ev->canceled && s->state == SS_OPEN &&
      (res > 0 || res == -ECANCELED || res == -ENOBUFS))
    recv_paused_end(s); /* only a pause cancels the recv of an open session */
  else if (res == 0 && deferred(s) && s->state == SS_OPEN)
    s->eof_pending = 1; /* closed once what was deferred is delivered */
  else if (res == 0)
    session_close(s, PIER_REASON_PEER_CLOSED, 0); /* half-close: flush, then FIN */
  else if (res == -ECONNRESET || res == -EPIPE)
    session_close(s, PIER_REASON_PEER_RESET, 1);
  else if (res != -ECANCELED)
    session_close(s, PIER_REASON_IO_ERROR, 1);
  unref(s);
}

/* Arms the session's multishot recv, which holds a reference. */
static int arm_recv(session *s) {
  int rc = io_recv(&s->w->loop, &s->ev_recv, &s->iofd, on_recv_done);
  if (rc < 0) {
    log_error("session %016llx: cannot arm recv: %s", (unsigned long long)s->sid, os_strerror(-rc));
    session_close(s, PIER_REASON_IO_ERROR, 1);
    return rc;
  }
  s->refs++;
  return 0;
}

/* A TLS or WebSocket session: the plugin meets it once the handshakes are
 * done (session_ready); until then only the transport reads it. */
static void start_transport(session *s) {
  if (xport_attach(s) < 0) {
    log_error("session %016llx: out of memory for its transport state; closing",
              (unsigned long long)s->sid);
    session_close(s, PIER_REASON_NO_MEMORY, 1);
    return;
  }
  xport_start(s);
  if (s->w->n->opts.idle_timeout_ms) {
    s->last_rx = now32(s);
    deadline_within(s, s->w->n->opts.idle_timeout_ms);
  }
  arm_recv(s);
}

void session_ready(session *s) {
  s->notified = 1;
  if (s->ep->handler->on_connected)
    s->ep->handler->on_connected(s->ep->ctx, s);
}

void session_start(session *s) {
  s->state = SS_OPEN;
  if (s->ep->site) {
    start_transport(s);
    return;
  }
  s->notified = 1;
  s->refs++; /* a close inside on_connected must not finish the session under it */
  if (s->ep->handler->on_connected)
    s->ep->handler->on_connected(s->ep->ctx, s);
  if (s->state != SS_OPEN) {
    unref(s);
    return;
  }
  s->refs--;
  if (s->w->n->opts.idle_timeout_ms) {
    s->last_rx = now32(s);
    deadline_within(s, s->w->n->opts.idle_timeout_ms);
  }
  if (!s->read_paused && !s->congested) /* on_connected may have paused it already */
    arm_recv(s);
}
/* ---- read backpressure ---- */

/* Stops reading s: the recv is cancelled (its final completion re-arms it
 * if the owner has resumed by then) and the cancel is submitted now, so a
 * multishot recv stops filling buffers without waiting for the loop's next
 * wait. */
static void pause_reading(session *s) {
  io_loop *loop = &s->w->loop;
  s->read_paused = 1;
  STAT_ADD(s->w, read_pauses, 1);
  if (s->ev_recv.armed && io_cancel(loop, &s->ev_recv) == 0)
    io_submit_now(loop);
}

void session_backlog_add(session *s, size_t bytes, int pause_now) {
  _Atomic uint64_t *word = &s->w->sids.backlog[PIER_SID_SLOT(s->sid)];
  uint64_t v, nv, held;
  int pause;

  if (bytes == 0 && !pause_now)
    return;
  v = atomic_load_explicit(word, memory_order_relaxed);
  do {
    held = (v & SID_BL_BYTES) + bytes;
    if (held > SID_BL_BYTES)
      held = SID_BL_BYTES;
    /* Never pause with nothing held: no net_backlog_done would resume it. */
    pause = !s->read_paused && s->state == SS_OPEN && held > 0 &&
            (pause_now || held > s->w->n->opts.recv_backlog);
    nv = (v & ~SID_BL_BYTES) | held | (pause ? SID_BL_PAUSED : 0);
  } while (!atomic_compare_exchange_weak_explicit(word, &v, nv, memory_order_acq_rel,
                                                  memory_order_relaxed));
  if (pause)
    pause_reading(s);
}

void session_resume_reading(session *s) {
  _Atomic uint64_t *word = &s->w->sids.backlog[PIER_SID_SLOT(s->sid)];
  const net_opts *o = &s->w->n->opts;
  uint64_t v, held;

  if (!s->read_paused || s->state != SS_OPEN)
    return;
  /* The owner may have taken on more since the backlog reached 0: over the
   * limit again, stay paused (the bit makes a later net_backlog_done post
   * the resume). */
  v = atomic_load_explicit(word, memory_order_relaxed);
  do {
    held = v & SID_BL_BYTES;
    if (held <= o->recv_backlog)
      break;
  } while (!atomic_compare_exchange_weak_explicit(word, &v, v | SID_BL_PAUSED,
                                                  memory_order_acq_rel, memory_order_relaxed));
  if (held > o->recv_backlog)
    return;
  s->read_paused = 0;
  /* From a job: no armed op holds s, and what is replayed may close it. */
  s->refs++;
  replay_deferred(s);
  ext_release(s);
  unref(s);
}

/* ---- send ---- */

static void on_send_done(io_ev *ev, int res, unsigned flags, char *data);
static void send_done(session *s, int res, int at_once);

/* Why a session whose send failed with res is closed. */
static pier_reason send_failure(int res) {
  return res == -ECONNRESET || res == -EPIPE ? PIER_REASON_PEER_RESET : PIER_REASON_IO_ERROR;
}

/* What waits in s's queue goes out: at once where the backend can send
 * without a completion (epoll, and io_uring for a flush of one session: the
 * send a completion would only report later, a loop iteration and another
 * pass over the session on), else, or for what the socket did not take, as
 * a send whose completion follows. With `now` 0 it is the latter in any
 * case (see send_done and worker_flush). */
static void flush_now(session *s, int now) {
  struct iovec iov[SENDQ_IOV_MAX];
  session_ext *x = s->ext;
  size_t bytes = 0;
  int n, rc;

  if (!x || x->inflight || (s->state != SS_OPEN && s->state != SS_CLOSING))
    return;
  if (s->xp) { /* TLS seals what waits into the queue */
    xport_pre_flush(s);
    if (s->state != SS_OPEN && s->state != SS_CLOSING)
      return;
  }
  if (x->q.bytes == 0)
    return;
  n = sendq_iov(&x->q, iov, SENDQ_IOV_MAX);
  for (int i = 0; i < n; i++)
    bytes += iov[i].iov_len;
  if (now && s->w->loop.be->try_send && /* else io_try_send says -ENOTSUP: no call */
      (rc = io_try_send(&s->w->loop, &s->iofd, iov, n)) != -EAGAIN && rc != -EBUSY) {
    /* Done as a completion would be: send_done drops this reference and
     * may let the ext go; x is not used after it. Bytes out are progress
     * for a send deadline that a send which had to wait started. */
    if (rc > 0 && x->send_timing)
      x->last_tx = now32(s);
    x->inflight = (uint32_t)bytes;
    s->refs++;
    send_done(s, rc, 1);
    return;
  }
  rc = io_send(&s->w->loop, &x->ev_send, &s->iofd, iov, n, on_send_done);
  if (rc < 0) {
    log_error("session %016llx: cannot submit send: %s", (unsigned long long)s->sid,
              os_strerror(-rc));
    session_close(s, PIER_REASON_IO_ERROR, 1);
    return;
  }
  x->inflight = (uint32_t)bytes;
  s->refs++;
  if (s->w->n->opts.send_timeout_ms) {
    /* Submitted now, at the start or right after a completion: progress. */
    x->last_tx = now32(s);
    if (!x->send_timing) {
      x->send_timing = 1;
      deadline_within(s, s->w->n->opts.send_timeout_ms);
    }
  }
}

/* res bytes of s went out: its plugin hears of them (through a transport,
 * of its own bytes once they are all out) and its congestion may ease. */
static void report_sent(session *s, size_t res) {
  if (s->notified && s->ep->handler->on_send) {
    size_t app = s->xp ? xport_sent(s) : res;
    if (app)
      s->ep->handler->on_send(s->ep->ctx, s, app);
  }
  relieve_congestion(s);
}

/* A send of x->inflight bytes ended with res: from its completion, or
 * at_once in flush_now. Drops the send's reference. What was queued
 * meanwhile (by on_send, say) goes out next; after a send made at once, or
 * a short one, as a send with a completion, so that a plugin sending again
 * from each on_send neither recurses once per send the socket takes nor
 * holds the worker for as long as the socket keeps taking them. On io_uring
 * (try_send_lone) after any completion too: completions come in batches,
 * and their sends cost one enter together where at once they would cost a
 * system call each. */
static void send_done(session *s, int res, int at_once) {
  int whole = res > 0 && (uint32_t)res == s->ext->inflight;

  s->ext->inflight = 0;
  if (res > 0) {
    sendq_consume(&s->ext->q, (size_t)res);
    STAT_ADD(s->w, bytes_out, res);
    report_sent(s, (size_t)res);
  } else if (res != -ECANCELED) {
    session_close(s, send_failure(res), 1);
  }
  if (s->state == SS_OPEN || s->state == SS_CLOSING) {
    if (session_qbytes(s) || (s->xp && xport_pending(s)))
      flush_now(s, whole && !at_once && !s->w->loop.be->try_send_lone);
    if (s->state == SS_CLOSING && !session_inflight(s) && !session_qbytes(s) &&
        !(s->xp && xport_pending(s)))
      enter_closed(s, 0);
  }
  ext_release(s);
  unref(s);
}

static void on_send_done(io_ev *ev, int res, unsigned flags, char *data) {
  /* The ext holding ev may be freed in send_done: only s is used. */
  send_done(container_of(ev->fd, session, iofd), res, 0);
}

/* ---- the staged reply ----
 *
 * A write to a session with nothing queued, in flight or on the flush list,
 * while no other session waits for the flush and the backend can send at
 * once, is copied into its worker's stage (w->stage, NET_STAGE_MAX bytes)
 * instead of its queue: the usual reply to a request, one write or a few
 * from one callback. The flush sends it with one system call and reports it
 * (on_send) without the queue's buffer, ring and ext. Whatever could see the
 * stage behind the queue's back moves it into the queue first: a write that
 * does not fit, a shared buffer, a graceful close, other sessions in an
 * io_uring flush (their sends go together as SQEs), a send the socket does
 * not take whole. Staged bytes count in session_queued and against
 * max_send_queue as queued ones do; the send_queue_bytes gauge, which they
 * leave within the loop iteration, does not hold them. */

static int queue_no_memory(session *s, size_t len);

/* The stage holds nothing for anyone. */
static void stage_clear(net_worker *w) {
  w->staged = NULL;
  w->staged_len = 0;
}

static int stage_idle(const session *s) {
  const session_ext *x = s->ext;
  return !x || (!x->q.count && !x->inflight && !x->flush_queued);
}

/* Appends data to the stage, s's already or taken now (with a reference)
 * if it may be; 1 if it did, 0 if the write is for the queue. */
static int stage_write(session *s, const void *data, size_t len) {
  net_worker *w = s->w;
  int take = w->staged != s;
  size_t have = take ? 0 : w->staged_len;

  if (take && (w->staged || w->flush_head || w->flushing || !w->loop.be->try_send ||
               !stage_idle(s)))
    return 0;
  if (have + len > NET_STAGE_MAX || have + len > w->n->opts.max_send_queue)
    return 0;
  if (take) {
    w->staged = s;
    s->refs++;
  }
  memcpy(w->stage + have, data, len);
  w->staged_len = (uint32_t)(have + len);
  return 1;
}

/* Moves what is staged for s from byte off on into its queue. Returns 0,
 * the stage free again and its reference now the caller's; or -ENOMEM with
 * s closed for want of memory and the stage left s's but empty, holding the
 * reference for the flush to drop. */
static int stage_spill(session *s, uint32_t off) {
  net_worker *w = s->w;
  size_t len = w->staged_len - off;
  session_ext *x = session_ext_get(s);

  if (!x || sendq_write(&x->q, w->stage + off, len, SIZE_MAX) < 0) {
    w->staged_len = 0;
    ext_release(s);
    return queue_no_memory(s, len);
  }
  stage_clear(w);
  return 0;
}

/* Puts s, with its queue, at the head of a flush list (first at *head),
 * which takes the stage's reference: s joined no list while staged, and it
 * was staged while the list was empty, so its bytes still go out before
 * those of any session there. */
static void stage_join(session *s, session **head) {
  session_ext *x = s->ext;
  x->flush_queued = 1;
  x->next_flush = *head;
  *head = s;
}

/* What is staged for s goes into its queue and s to the head of the flush
 * list: a write that would pass the stage, a shared buffer, a graceful
 * close. */
static int stage_to_flush(session *s) {
  net_worker *w = s->w;

  if (stage_spill(s, 0) < 0)
    return -ENOMEM;
  stage_join(s, &w->flush_head);
  if (!w->flush_tail)
    w->flush_tail = s;
  return 0;
}

/* The stage goes out at the start of a flush pass, whose sessions (those on
 * the list when it began) are *batch: with them as SQEs on io_uring, when
 * there are any (s then heads the batch); else at once, as flush_now sends
 * (see there), what the socket does not take as a send with a completion. */
static void flush_staged(net_worker *w, session **batch) {
  session *s = w->staged;
  uint32_t len = w->staged_len, sent;
  struct iovec iov;
  int rc;

  if (s->state != SS_OPEN || !len) { /* aborted meanwhile: nothing to send */
    stage_clear(w);
    unref(s);
    return;
  }
  if (*batch && w->loop.be->try_send_lone) {
    if (stage_spill(s, 0) < 0) {
      stage_clear(w);
      unref(s);
    } else {
      stage_join(s, batch);
    }
    return;
  }
  iov.iov_base = w->stage;
  iov.iov_len = len;
  rc = io_try_send(&w->loop, &s->iofd, &iov, 1);
  if (rc < 0 && rc != -EAGAIN && rc != -EBUSY) { /* a send that failed: nothing to queue */
    stage_clear(w);
    session_close(s, send_failure(rc), 1);
    unref(s);
    return;
  }
  sent = rc > 0 ? (uint32_t)rc : 0;
  if (sent) { /* out: counted, and progress for a send deadline */
    STAT_ADD(w, bytes_out, sent);
    if (s->ext && s->ext->send_timing)
      s->ext->last_tx = now32(s);
  }
  if (sent == len || stage_spill(s, sent) < 0) /* else the rest is queued, and sent below */
    stage_clear(w); /* after a failed spill s is closed; what went out is still reported */
  if (sent)
    report_sent(s, sent);
  if (session_qbytes(s))
    flush_now(s, 0);
  ext_release(s);
  unref(s);
}

/* The sessions on the list when the pass begins are sent at once where the
 * backend can; those that join it during the pass (from an on_send such a
 * send called, for another session, say) go as sends with completions, so
 * sessions that send to each other from on_send take turns with the rest
 * of the loop instead of holding it for as long as their sockets take.
 * Either way in the order the sessions joined the list: replies leave in
 * the order their requests were read, and none waits for all the others.
 * On io_uring only a pass of one session sends at once (more go as sends
 * submitted together, in the system call the loop waits in). A staged reply
 * goes first: it was made before any session joined the list. */
void worker_flush(io_loop *loop) {
  net_worker *w = loop->data;
  session *s, *batch = w->flush_head, *tail = w->flush_tail;
  int now;

  w->flush_head = w->flush_tail = NULL;
  w->flushing = 1;
  if (w->staged)
    flush_staged(w, &batch);
  now = !loop->be->try_send_lone || batch == tail;
  for (;;) {
    session_ext *x;
    if (!batch) {
      if (!(batch = w->flush_head))
        break;
      w->flush_head = w->flush_tail = NULL;
      now = 0;
    }
    s = batch;
    x = s->ext; /* a session on the list keeps its ext */
    batch = x->next_flush;
    x->flush_queued = 0;
    flush_now(s, now);
    ext_release(s);
    unref(s);
  }
  w->flushing = 0;
}

int session_want_flush(session *s) {
  session_ext *x = session_ext_get(s);
  if (!x) {
    log_limited(&s->w->rl_full, LOG_ERROR, "session %016llx: out of memory for its send state; "
                "closing", (unsigned long long)s->sid);
    session_close(s, PIER_REASON_NO_MEMORY, 1);
    return -ENOMEM;
  }
  if (x->flush_queued || x->inflight)
    return 0;
  x->flush_queued = 1;
  s->refs++;
  x->next_flush = NULL;
  if (s->w->flush_head) /* a session on the list keeps its ext */
    s->w->flush_tail->ext->next_flush = s;
  else
    s->w->flush_head = s;
  s->w->flush_tail = s;
  return 0;
}

/* Counts and disconnects s once its refusal is logged. */
static int disconnect_full(session *s) {
  STAT_ADD(s->w, send_queue_full, 1);
  session_close(s, PIER_REASON_SEND_QUEUE_FULL, 1);
  return -ENOBUFS;
}

int session_queue_full(session *s, size_t len) {
  char peer[NET_ADDR_STRLEN];
  log_limited(&s->w->rl_full, LOG_WARN,
              "session %016llx %s: send queue full (%zu queued + %zu > max_send_queue %zu); "
              "disconnecting",
              (unsigned long long)s->sid, net_addr_format(&s->peer, peer, sizeof(peer)),
              session_qbytes(s), len, s->w->n->opts.max_send_queue);
  return disconnect_full(s);
}

int session_posted_full(session *s, size_t cost, size_t posted) {
  char peer[NET_ADDR_STRLEN];
  log_limited(&s->w->rl_full, LOG_WARN,
              "session %016llx %s: send queue full (sends from other threads waiting for the "
              "worker: %zu bytes with their bookkeeping + %zu > max_send_queue %zu); "
              "disconnecting",
              (unsigned long long)s->sid, net_addr_format(&s->peer, peer, sizeof(peer)), posted,
              cost, s->w->n->opts.max_send_queue);
  return disconnect_full(s);
}

/* A send that could not be queued for want of memory (the queue's state,
 * its ring, the buffer): nothing of it is queued, and the session is closed
 * rather than left with a hole in its stream. Returns -ENOMEM. */
static int queue_no_memory(session *s, size_t len) {
  log_limited(&s->w->rl_full, LOG_ERROR,
              "session %016llx: out of memory queueing %zu bytes; closing",
              (unsigned long long)s->sid, len);
  session_close(s, PIER_REASON_NO_MEMORY, 1);
  return -ENOMEM;
}

/* A send that was queued (bytes, not a no-op) counts as one message out. */
static int sent_one(session *s, size_t len, int rc) {
  if (rc == 0 && len)
    STAT_ADD(s->w, messages_out, 1);
  return rc;
}

/* What sendq_write or sendq_push returned, for a session without transport. */
static int queued(session *s, size_t len, int rc) {
  if (rc == 0 && len) {
    if (session_want_flush(s) < 0)
      return -ENOMEM; /* closed */
  } else
    ext_release(s); /* made for this send, perhaps, and still empty */
  if (rc == -ENOBUFS)
    return session_queue_full(s, len);
  if (rc == -ENOMEM)
    return queue_no_memory(s, len);
  return sent_one(s, len, rc);
}

int session_write(session *s, const void *data, size_t len) {
  session_ext *x;
  if (s->state != SS_OPEN)
    return -ENOTCONN;
  if (s->xp)
    return sent_one(s, len, xport_write(s, data, len));
  if (len == 0)
    return 0;
  if (stage_write(s, data, len))
    return sent_one(s, len, 0);
  if (s->w->staged == s && stage_to_flush(s) < 0)
    return -ENOMEM;
  if (!(x = session_ext_get(s)))
    return queue_no_memory(s, len);
  return queued(s, len, sendq_write(&x->q, data, len, s->w->n->opts.max_send_queue));
}

int session_write_buf(session *s, sbuf *b) {
  size_t len = b->len - b->off;
  session_ext *x;
  if (s->state != SS_OPEN)
    return -ENOTCONN;
  if (s->xp)
    return sent_one(s, len, xport_write_buf(s, b));
  if (len == 0)
    return 0;
  if (s->w->staged == s && stage_to_flush(s) < 0)
    return -ENOMEM;
  if (!(x = session_ext_get(s)))
    return queue_no_memory(s, len);
  return queued(s, len, sendq_push(&x->q, b, b->off, (uint32_t)len, s->w->n->opts.max_send_queue));
}

/* ---- client side ---- */

static void on_connect_done(io_ev *ev, int res, unsigned flags, char *data) {
  session *s = container_of(ev->fd, session, iofd); /* ev is in s->ext */
  const net_endpoint *ep = s->ep;

  if (res == 0 && s->state == SS_CONNECTING) {
    os_sock_nodelay(s->iofd.fd);
    STAT_ADD(s->w, connected_out, 1);
    session_start(s);
  } else {
    if (ep->handler->on_connect_failed)
      ep->handler->on_connect_failed(ep->ctx, &s->peer, res < 0 ? res : -ECANCELED);
    if (s->state == SS_CONNECTING) {
      s->state = SS_CLOSED;
      unref(s); /* the open reference */
    }
  }
  ext_release(s);
  unref(s);
}

int session_connect(session *s, const net_addr *addr) {
  session_ext *x = session_ext_get(s);
  int rc;
  s->state = SS_CONNECTING;
  if (!x)
    return -ENOMEM;
  rc = io_connect(&s->w->loop, &x->ev_send, &s->iofd, &addr->u.sa, net_addr_len(addr),
                  on_connect_done);
  if (rc < 0)
    return rc;
  s->refs++;
  return 0;
}

pier_sid session_sid(const session *s) { return s->sid; }
const net_addr *session_peer(const session *s) { return &s->peer; }
void *session_user(const session *s) {
  return atomic_load_explicit(&s->w->sids.user[PIER_SID_SLOT(s->sid)], memory_order_relaxed);
}
void session_set_user(session *s, void *user) {
  atomic_store_explicit(&s->w->sids.user[PIER_SID_SLOT(s->sid)], user, memory_order_relaxed);
}
size_t session_queued(const session *s) { return session_qbytes(s); }
