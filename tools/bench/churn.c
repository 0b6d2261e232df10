/* The churn workload (churn.h): a fixed set of churner slots, each one
 * session at a time through connect, write, read the echo, shutdown(SHUT_WR),
 * read the server's EOF, close. Waiting for the server's EOF before the
 * close is what lets a session count as ended on both sides; on the wire it
 * is the same as a plain close(), the client's FIN first.
 *
 * The client closes first, so TIME_WAIT is on its side: one per session,
 * for 60 s, each holding a (source address, port) pair towards the server.
 * Linux reuses a loopback TIME_WAIT pair for a new connection once it is a
 * second old (net.ipv4.tcp_tw_reuse = 2, the default since 4.13, with TCP
 * timestamps on), so 28,000 ephemeral ports carry up to ~28,000 sessions a
 * second; past that, or with tcp_tw_reuse = 0, connect() fails with
 * EADDRNOTAVAIL. --sources N spreads the connections over 127.0.0.1 ..
 * 127.0.0.N with IP_BIND_ADDRESS_NO_PORT, which multiplies the pairs by N
 * and costs one bind() per session. Either way it is the client's choice
 * and the same for every server. */
#include "churn.h"

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "hist.h"
#include "jsonout.h"
#include "procstat.h"

#ifdef __linux__

#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

#define PERIOD 8191u /* pattern period (prime), bytes */
#define MAX_PRINTED_ERRORS 10
#define EVENTS 256

const int churn_available = 1;

enum { S_FREE, S_CONNECT, S_ECHO, S_CLOSE };

typedef struct slot {
  int fd;
  uint8_t state;
  uint32_t rx;  /* echo bytes back so far */
  uint64_t seq; /* session number: where in the pattern its bytes start */
  uint64_t t0;  /* connect() called */
} slot;

typedef struct churn {
  const churn_opts *o;
  int ep;
  slot *slots;
  char *pat, *buf;
  size_t buflen;
  uint64_t started, done, errors, active;
  int recording;         /* in the measured window */
  hist lat, life;        /* connect to echo; connect to the server's EOF */
  int refill;            /* new sessions may start */
} churn;

typedef struct csample {
  uint64_t t_ns, done;
  double client_cpu, server_cpu; /* server: -1 unknown */
} csample;

static void cerror(churn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void cerror(churn *c, const char *fmt, ...) {
  va_list ap;
  char text[512];
  if (++c->errors > MAX_PRINTED_ERRORS)
    return;
  va_start(ap, fmt);
  vsnprintf(text, sizeof(text), fmt, ap);
  va_end(ap);
  fprintf(stderr, "pier-bench: error: %s%s\n", text,
          c->errors == MAX_PRINTED_ERRORS ? " (further errors are counted, not printed)" : "");
}

static void make_pattern(char *p, size_t len) {
  uint64_t x = 0x9e3779b97f4a7c15ull;
  for (size_t i = 0; i < len; i++) {
    x ^= x << 13; /* xorshift64: a fixed pseudo-random sequence */
    x ^= x >> 7;
    x ^= x << 17;
    p[i] = (char)(x >> 24);
  }
}

static const char *expect(const churn *c, const slot *s) {
  return c->pat + (s->seq * 2654435761u) % PERIOD;
}

static void take(const churn *c, csample *s) {
  s->t_ns = now_ns();
  s->done = c->done;
  s->client_cpu = self_cpu_seconds();
  s->server_cpu = -1;
  if (c->o->server_pid)
    (void)proc_cpu_seconds((pid_t)c->o->server_pid, &s->server_cpu);
}

static void start(churn *c, slot *s);

/* Ends the slot's session (close() also takes the fd out of the epoll set)
 * and, after a good one and while new sessions may start, begins the next.
 * A failed session leaves its slot empty: the run has failed already, and
 * retrying at once could fail again and again (EMFILE) without end. */

static void finish(churn *c, slot *s, int ok) {
  if (s->fd >= 0)
    close(s->fd);
  s->fd = -1;
  s->state = S_FREE;
  c->active--;
  if (ok) {
    c->done++;
    if (c->recording)
      hist_record(&c->life, now_ns() - s->t0);
  }
  if (ok && c->refill)
    start(c, s);
}

static void start(churn *c, slot *s) {
  const churn_opts *o = c->o;
  struct epoll_event ev;
  int fd = socket(o->addr.u.sa.sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int one = 1;
  ssize_t w;

  s->seq = c->started++;
  s->rx = 0;
  s->fd = fd;
  c->active++;
  if (fd < 0) {
    cerror(c, "socket: %s", strerror(errno));
    finish(c, s, 0);
    return;
  }
  /* What a game client sets; the servers set it on their side too. */
  (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  if (o->sources > 1) {
    struct sockaddr_in src = {.sin_family = AF_INET,
                              .sin_addr.s_addr = htonl(0x7f000001u + (uint32_t)(s->seq %
                                                                                 o->sources))};
    if (setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one)) < 0 ||
        bind(fd, (struct sockaddr *)&src, sizeof(src)) < 0) {
      cerror(c, "binding the source address: %s", strerror(errno));
      finish(c, s, 0);
      return;
    }
  }
  s->t0 = now_ns();
  if (connect(fd, &o->addr.u.sa, net_addr_len(&o->addr)) < 0 && errno != EINPROGRESS) {
    cerror(c, "connect: %s", strerror(errno));
    finish(c, s, 0);
    return;
  }
  /* On loopback the handshake is usually done by now: write at once and
   * wait for writability only when it was not. */
  w = write(fd, expect(c, s), o->size);
  if (w == (ssize_t)o->size) {
    s->state = S_ECHO;
    ev = (struct epoll_event){.events = EPOLLIN, .data.ptr = s};
  } else if (w < 0 && errno == EAGAIN) {
    s->state = S_CONNECT;
    ev = (struct epoll_event){.events = EPOLLOUT, .data.ptr = s};
  } else {
    cerror(c, "session %" PRIu64 ": connect or write failed: %s", s->seq,
           w < 0 ? strerror(errno) : "short write");
    finish(c, s, 0);
    return;
  }
  if (epoll_ctl(c->ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
    cerror(c, "epoll_ctl: %s", strerror(errno));
    finish(c, s, 0);
  }
}

static void on_writable(churn *c, slot *s) {
  struct epoll_event ev = {.events = EPOLLIN, .data.ptr = s};
  ssize_t w = write(s->fd, expect(c, s), c->o->size);
  if (w < 0 && errno == EAGAIN)
    return;
  if (w != (ssize_t)c->o->size) {
    int err = 0;
    socklen_t len = sizeof(err);
    (void)getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &len);
    cerror(c, "session %" PRIu64 ": connect or write failed: %s", s->seq,
           w < 0 ? strerror(err ? err : errno) : "short write");
    finish(c, s, 0);
    return;
  }
  s->state = S_ECHO;
  if (epoll_ctl(c->ep, EPOLL_CTL_MOD, s->fd, &ev) < 0) {
    cerror(c, "epoll_ctl: %s", strerror(errno));
    finish(c, s, 0);
  }
}

static void on_readable(churn *c, slot *s) {
  unsigned size = c->o->size;
  for (;;) {
    ssize_t r = read(s->fd, c->buf, c->buflen);
    if (r < 0 && errno == EAGAIN)
      return;
    if (r < 0) {
      cerror(c, "session %" PRIu64 ": read: %s", s->seq, strerror(errno));
      finish(c, s, 0);
      return;
    }
    if (r == 0) {
      if (s->state == S_CLOSE)
        finish(c, s, 1);
      else {
        cerror(c, "session %" PRIu64 ": the server closed it after %u of %u echoed bytes",
               s->seq, s->rx, size);
        finish(c, s, 0);
      }
      return;
    }
    if (s->state != S_ECHO || s->rx + (size_t)r > size) {
      cerror(c, "session %" PRIu64 ": %zd bytes more came back than were sent", s->seq,
             (ssize_t)(s->rx + (size_t)r - size));
      finish(c, s, 0);
      return;
    }
    if (memcmp(c->buf, expect(c, s) + s->rx, (size_t)r) != 0) {
      cerror(c, "session %" PRIu64 ": the echo differs from what was sent", s->seq);
      finish(c, s, 0);
      return;
    }
    s->rx += (uint32_t)r;
    if (s->rx == size) {
      if (c->recording)
        hist_record(&c->lat, now_ns() - s->t0);
      if (shutdown(s->fd, SHUT_WR) < 0) {
        cerror(c, "session %" PRIu64 ": shutdown: %s", s->seq, strerror(errno));
        finish(c, s, 0);
        return;
      }
      s->state = S_CLOSE;
      return; /* the server's FIN is a round trip away */
    }
  }
}

/* Runs the event loop until `until` (ns). */
static void run_until(churn *c, uint64_t until) {
  struct epoll_event evs[EVENTS];
  for (;;) {
    uint64_t now = now_ns();
    int n, ms;
    if (now >= until || *c->o->stop || (!c->refill && c->active == 0))
      return;
    ms = (int)((until - now + 999999) / 1000000);
    n = epoll_wait(c->ep, evs, EVENTS, ms > 100 ? 100 : ms);
    if (n < 0 && errno != EINTR) {
      cerror(c, "epoll_wait: %s", strerror(errno));
      return;
    }
    for (int i = 0; i < n; i++) {
      slot *s = evs[i].data.ptr;
      if (s->state == S_CONNECT)
        on_writable(c, s);
      else
        on_readable(c, s);
    }
  }
}

static double us(uint64_t ns) { return (double)ns / 1000.0; }

static void json_hist(FILE *f, const char *key, const hist *h) {
  hist_snap s;
  memset(&s, 0, sizeof(s));
  hist_add_to(h, &s);
  fprintf(f, "\"%s\": {", key);
  json_num(f, "p50", hist_count(&s) ? us(hist_quantile(&s, 0.5)) : -1, 0);
  json_num(f, "p90", hist_count(&s) ? us(hist_quantile(&s, 0.9)) : -1, 0);
  json_num(f, "p99", hist_count(&s) ? us(hist_quantile(&s, 0.99)) : -1, 0);
  json_num(f, "p999", hist_count(&s) ? us(hist_quantile(&s, 0.999)) : -1, 0);
  json_num(f, "max", hist_count(&s) ? us(hist_max(&s)) : -1, 1);
  fprintf(f, "}, ");
}

static void report(const churn *c, const csample *a, const csample *b, int ok) {
  const churn_opts *o = c->o;
  double dt = (double)(b->t_ns - a->t_ns) / 1e9;
  uint64_t n = b->done - a->done;
  double ccpu = b->client_cpu - a->client_cpu;
  double scpu = a->server_cpu >= 0 && b->server_cpu >= 0 ? b->server_cpu - a->server_cpu : -1;
  hist_snap lat;

  if (dt <= 0)
    dt = 1e-9;
  if (o->json) {
    FILE *f = stdout;
    fprintf(f, "{\"mode\": \"churn\", \"target\": \"%s\", \"transport\": \"tcp\", ", o->target);
    fprintf(f, "\"client_backend\": \"sockets\", \"conns\": %u, \"size\": %u, \"sources\": %u, ",
            o->conns, o->size, o->sources);
    json_num(f, "warmup_s", o->warmup, 0);
    json_num(f, "duration_s", dt, 0);
    fprintf(f, "\"sessions\": %" PRIu64 ", ", n);
    json_num(f, "sessions_per_s", (double)n / dt, 0);
    fprintf(f, "\"sessions_total\": %" PRIu64 ", \"sessions_started\": %" PRIu64 ", ", c->done,
            c->started);
    json_hist(f, "latency_us", &c->lat);
    json_hist(f, "session_us", &c->life);
    fprintf(f, "\"errors\": %" PRIu64 ", ", c->errors);
    json_cpu(f, ccpu, o->server_pid, scpu, dt);
    json_num(f, "server_cpu_us_per_session", scpu >= 0 && n ? scpu * 1e6 / (double)n : -1, 0);
    fprintf(f, "\"ok\": %s}\n", ok ? "true" : "false");
    return;
  }
  memset(&lat, 0, sizeof(lat));
  hist_add_to(&c->lat, &lat);
  printf("churn %s (sockets client): %u churners, %u B, %.2f s: %.0f sessions/s (%" PRIu64
         " in all); connect to echo us p50 %.1f p99 %.1f p99.9 %.1f; errors %" PRIu64
         "; client cpu %.0f%%",
         o->target, o->conns, o->size, dt, (double)n / dt, c->done, us(hist_quantile(&lat, 0.5)),
         us(hist_quantile(&lat, 0.99)), us(hist_quantile(&lat, 0.999)), c->errors,
         100.0 * ccpu / dt);
  if (scpu >= 0) {
    printf("; server cpu %.0f%%", 100.0 * scpu / dt);
    if (n)
      printf(", %.2f us/session", scpu * 1e6 / (double)n);
  }
  printf("; %s\n", ok ? "ok" : "FAILED");
}

int churn_run(const churn_opts *o) {
  churn c;
  csample a, b, prev, cur;
  uint64_t t0, t_meas, t_end, next;
  int ok;

  memset(&c, 0, sizeof(c));
  c.o = o;
  c.ep = epoll_create1(EPOLL_CLOEXEC);
  c.slots = calloc(o->conns, sizeof(*c.slots));
  c.pat = malloc(PERIOD + o->size);
  c.buflen = o->size + 64;
  c.buf = malloc(c.buflen);
  if (c.ep < 0 || !c.slots || !c.pat || !c.buf) {
    fprintf(stderr, "pier-bench: churn: out of memory or descriptors\n");
    return 1;
  }
  make_pattern(c.pat, PERIOD + o->size);
  c.refill = 1;
  t0 = now_ns();
  for (unsigned i = 0; i < o->conns; i++) {
    c.slots[i].fd = -1;
    start(&c, &c.slots[i]);
  }
  t_meas = t0 + (uint64_t)(o->warmup * 1e9);
  if (o->warmup > 0)
    run_until(&c, t_meas);
  take(&c, &a);
  prev = a;
  c.recording = 1;
  t_end = a.t_ns + (uint64_t)(o->duration * 1e9);
  /* A line a second on stderr, as the other modes print. */
  for (next = a.t_ns + 1000000000ull; !*o->stop && next < t_end + 1000000000ull;
       next += 1000000000ull) {
    run_until(&c, next < t_end ? next : t_end);
    take(&c, &cur);
    if (cur.t_ns - prev.t_ns >= 250000000ull)
      fprintf(stderr, "t=%.0fs sessions/s=%.0f active=%" PRIu64 " errors=%" PRIu64 "\n",
              (double)(cur.t_ns - t0) / 1e9,
              (double)(cur.done - prev.done) / ((double)(cur.t_ns - prev.t_ns) / 1e9), c.active,
              c.errors);
    prev = cur;
    if (cur.t_ns >= t_end)
      break;
  }
  take(&c, &b);
  c.recording = 0;
  c.refill = 0;
  run_until(&c, now_ns() + (uint64_t)(o->drain * 1e9));
  if (c.active && !*o->stop)
    cerror(&c, "%" PRIu64 " sessions did not finish within %.0f s after the run", c.active,
           o->drain);
  for (unsigned i = 0; i < o->conns; i++)
    if (c.slots[i].fd >= 0)
      close(c.slots[i].fd);
  if (b.done == a.done)
    cerror(&c, "nothing was measured: no session completed in the measured interval");
  if (*o->stop)
    fprintf(stderr, "pier-bench: interrupted\n");
  ok = c.errors == 0 && !*o->stop;
  report(&c, &a, &b, ok);
  close(c.ep);
  free(c.slots);
  free(c.pat);
  free(c.buf);
  return ok ? 0 : 1;
}

#else /* !__linux__ */

const int churn_available = 0;

int churn_run(const churn_opts *o) {
  (void)o;
  fprintf(stderr, "pier-bench: churn mode is available on Linux only\n");
  return 2;
}

#endif
