/* Unit tests for the event loop, every case once per backend of the
 * platform (io_uring and epoll on Linux, IOCP on Windows): timers,
 * cross-thread posts, multishot recv and accept, cancel, scatter-gather send,
 * the one-op-per-direction rule, and teardown with ops in flight. Sockets and
 * threads go through core/os (os.h) and the few wrappers below, so the same
 * cases run on Windows (under Wine, with CK_FORK=no). */
#include <errno.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backends.h"
#include "io/io.h"
#include "testlib.h"

#ifdef _WIN32
#define MSG_NOSIGNAL 0
#else
#include <fcntl.h>
#include <liburing.h>
#include <sched.h>
#include <sys/utsname.h>
#include <unistd.h>
#endif

#define DEADLINE_MS 5000

/* iovec fields by name: Windows orders them as WSABUF does. */
#define IOV(base, len) {.iov_base = (void *)(base), .iov_len = (len)}

static uint64_t now_ms(void) { return os_clock_ms(); }

static void sleep_ms(int ms) { os_sleep_ms((unsigned)ms); }

/* ---- test-local socket wrappers ---- */

static void tclose(int fd) { os_sock_close(fd); }

static int tsend(int fd, const void *buf, size_t len) {
  return (int)send(fd, buf, (int)len, MSG_NOSIGNAL);
}

static int trecv(int fd, void *buf, size_t len) { return (int)recv(fd, buf, (int)len, 0); }

/* A send on a nonblocking socket: bytes, or -errno (-EAGAIN when full). */
static int tsend_nb(int fd, const void *buf, size_t len) {
  int n = tsend(fd, buf, len);
  return n < 0 ? -os_sock_errno() : n;
}

/* A recv on a nonblocking socket: bytes, 0 at EOF, or -errno (-EAGAIN). */
static int trecv_nb(int fd, void *buf, size_t len) {
  int n = trecv(fd, buf, len);
  return n < 0 ? -os_sock_errno() : n;
}

static void set_mode(int fd, int nonblocking) {
#ifdef _WIN32
  u_long on = (u_long)nonblocking;
  ck_assert_int_eq(ioctlsocket((SOCKET)fd, FIONBIO, &on), 0);
#else
  int fl = fcntl(fd, F_GETFL);
  ck_assert_int_ge(fl, 0);
  ck_assert_int_eq(fcntl(fd, F_SETFL, nonblocking ? fl | O_NONBLOCK : fl & ~O_NONBLOCK), 0);
#endif
}

static void set_blocking(int fd) { set_mode(fd, 0); }

static uint16_t local_port(int fd) {
  struct sockaddr_in in;
  socklen_t len = sizeof(in);
  ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&in, &len), 0);
  return ntohs(in.sin_port);
}

static uint16_t peer_port(int fd) {
  struct sockaddr_in in;
  socklen_t len = sizeof(in);
  ck_assert_int_eq(getpeername(fd, (struct sockaddr *)&in, &len), 0);
  return ntohs(in.sin_port);
}

/* A loopback listener on an ephemeral port, nonblocking as pier's are. */
static int tlisten(int backlog) {
  struct sockaddr_in in = {.sin_family = AF_INET};
  int s = os_sock_stream(AF_INET);
  ck_assert_int_ge(s, 0);
  os_sock_reuse(s);
  in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ck_assert_int_eq(bind(s, (struct sockaddr *)&in, sizeof(in)), 0);
  ck_assert_int_eq(listen(s, backlog), 0);
  return s;
}

/* A blocking client connected to 127.0.0.1:port, or -errno; *me gets its
 * own port. Any thread: no ck_assert. */
static int tdial(uint16_t port, uint16_t *me) {
  struct sockaddr_in in = {.sin_family = AF_INET, .sin_port = htons(port)};
  struct sockaddr_in self;
  socklen_t len = sizeof(self);
  int fd = os_sock_stream(AF_INET), rc;
#ifdef _WIN32
  u_long off = 0;
#endif

  if (fd < 0)
    return fd;
  in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
#ifdef _WIN32
  ioctlsocket((SOCKET)fd, FIONBIO, &off);
#else
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
#endif
  if (connect(fd, (struct sockaddr *)&in, sizeof(in)) < 0 ||
      getsockname(fd, (struct sockaddr *)&self, &len) < 0) {
    rc = os_sock_errno();
    tclose(fd);
    return rc ? -rc : -EIO;
  }
  if (me)
    *me = ntohs(self.sin_port);
  return fd;
}

/* A connected stream pair over TCP loopback, both ends nonblocking,
 * TCP_NODELAY: sv[0] for the loop (on Windows an overlapped socket, as IOCP
 * needs), sv[1] for the test. TCP, as pier's sessions are, and not an
 * AF_UNIX socketpair: with one, io_uring's multishot recv now and then
 * never completes with the EOF of a peer's shutdown (the recv stays in the
 * ring's poll list while the socket reads as at EOF), and AF_UNIX raises
 * EPOLLOUT on each read the peer makes. */
static void make_pair(int sv[2]) {
  int l = tlisten(1), a;
  uint16_t port = local_port(l);
  a = tdial(port, NULL);
  ck_assert_int_ge(a, 0);
  set_blocking(l);
#ifdef _WIN32
  sv[0] = (int)accept((SOCKET)l, NULL, NULL);
#else
  sv[0] = accept(l, NULL, NULL);
#endif
  ck_assert_int_ge(sv[0], 0);
  tclose(l);
  sv[1] = a;
  set_mode(sv[0], 1);
  set_mode(sv[1], 1);
  os_sock_nodelay(sv[0]);
  os_sock_nodelay(sv[1]);
}

static void loop_setup(io_loop *loop, int i, const io_opts *opts) {
  char why[256];
  io_opts none = {0};
  const io_backend *be = io_backend_pick(test_io_backend(i), why, sizeof why);
  int rc;

  ck_assert_ptr_nonnull(be);
  ck_assert_str_eq(be->name, test_io_backend(i));
  rc = io_loop_init(loop, be, opts ? opts : &none);
  ck_assert_msg(rc == 0, "io_loop_init(%s): %s", test_io_backend(i), strerror(-rc));
}

/* Runs the loop in 100 ms steps until *flag is non-zero or 5 s pass. */
static int run_until(io_loop *loop, const int *flag) {
  uint64_t end = now_ms() + DEADLINE_MS;
  while (!*flag && now_ms() < end)
    io_loop_once(loop, 100);
  return *flag != 0;
}

/* Runs the loop for about ms milliseconds. */
static void run_for(io_loop *loop, int ms) {
  uint64_t end = now_ms() + (uint64_t)ms;
  while (now_ms() < end)
    io_loop_once(loop, 10);
}

/* ---- timers ---- */

typedef struct ttimer {
  io_timer t; /* first: the callback gets &t */
  int id;
  int fired;
  uint64_t fired_at;
} ttimer;

static struct {
  io_loop *loop;
  int order[16];
  int norder;
  int stop_after; /* repeating timer stops itself after this many */
} tstate;

static void on_timer(io_timer *t) {
  ttimer *tt = (ttimer *)t;
  tt->fired++;
  tt->fired_at = tstate.loop->now;
  if (tstate.norder < 16)
    tstate.order[tstate.norder] = tt->id;
  tstate.norder++;
  if (tstate.stop_after && tt->fired >= tstate.stop_after)
    io_timer_stop(tstate.loop, t);
}

START_TEST(test_io_timers_fire_in_due_order) {
  io_loop loop;
  ttimer t[3];
  const int after[3] = {30, 10, 20};
  uint64_t t0;
  int three = 0;

  loop_setup(&loop, _i, NULL);
  memset(&tstate, 0, sizeof(tstate));
  tstate.loop = &loop;
  io_loop_once(&loop, 0);
  t0 = loop.now;
  for (int k = 0; k < 3; k++) {
    io_timer_init(&t[k].t, on_timer);
    ck_assert(!io_timer_active(&t[k].t));
    t[k].id = after[k];
    t[k].fired = 0;
    io_timer_start(&loop, &t[k].t, (uint64_t)after[k], 0);
    ck_assert(io_timer_active(&t[k].t));
  }
  {
    uint64_t end = now_ms() + DEADLINE_MS;
    while (tstate.norder < 3 && now_ms() < end)
      io_loop_once(&loop, 100);
    three = tstate.norder == 3;
  }
  ck_assert_msg(three, "%d of 3 timers fired", tstate.norder);
  ck_assert_int_eq(tstate.order[0], 10);
  ck_assert_int_eq(tstate.order[1], 20);
  ck_assert_int_eq(tstate.order[2], 30);
  for (int k = 0; k < 3; k++) {
    ck_assert_int_eq(t[k].fired, 1);
    ck_assert_uint_ge(t[k].fired_at, t0 + (uint64_t)after[k]);
    ck_assert(!io_timer_active(&t[k].t));
  }
  /* One-shot: nothing more. */
  run_for(&loop, 50);
  ck_assert_int_eq(tstate.norder, 3);
  io_loop_done(&loop);
}
END_TEST

START_TEST(test_io_stopped_timer_never_fires) {
  io_loop loop;
  ttimer t[5];
  const int after[5] = {40, 10, 30, 20, 50};
  const int want[4] = {10, 20, 40, 50};

  loop_setup(&loop, _i, NULL);
  memset(&tstate, 0, sizeof(tstate));
  tstate.loop = &loop;
  for (int k = 0; k < 5; k++) {
    io_timer_init(&t[k].t, on_timer);
    t[k].id = after[k];
    t[k].fired = 0;
    io_timer_start(&loop, &t[k].t, (uint64_t)after[k], 0);
  }
  /* Stop one in the middle of the heap; the others keep their order. */
  io_timer_stop(&loop, &t[2].t);
  ck_assert(!io_timer_active(&t[2].t));
  io_timer_stop(&loop, &t[2].t); /* stopping twice is harmless */
  {
    uint64_t end = now_ms() + DEADLINE_MS;
    while (tstate.norder < 4 && now_ms() < end)
      io_loop_once(&loop, 100);
  }
  run_for(&loop, 60);
  ck_assert_int_eq(tstate.norder, 4);
  for (int k = 0; k < 4; k++)
    ck_assert_int_eq(tstate.order[k], want[k]);
  ck_assert_int_eq(t[2].fired, 0);
  io_loop_done(&loop);
}
END_TEST

START_TEST(test_io_timer_restart_moves_due_time) {
  io_loop loop;
  ttimer a, b;

  loop_setup(&loop, _i, NULL);
  memset(&tstate, 0, sizeof(tstate));
  tstate.loop = &loop;
  io_timer_init(&a.t, on_timer);
  io_timer_init(&b.t, on_timer);
  a.id = 1;
  b.id = 2;
  a.fired = b.fired = 0;
  io_timer_start(&loop, &a.t, 10, 0);
  io_timer_start(&loop, &b.t, 30, 0);
  io_timer_start(&loop, &a.t, 60, 0); /* restart: now after b, and only once */
  {
    uint64_t end = now_ms() + DEADLINE_MS;
    while (tstate.norder < 2 && now_ms() < end)
      io_loop_once(&loop, 100);
  }
  run_for(&loop, 30);
  ck_assert_int_eq(tstate.norder, 2);
  ck_assert_int_eq(tstate.order[0], 2);
  ck_assert_int_eq(tstate.order[1], 1);
  ck_assert_int_eq(a.fired, 1);
  io_loop_done(&loop);
}
END_TEST

START_TEST(test_io_repeating_timer_fires_until_stopped) {
  io_loop loop;
  ttimer r;
  uint64_t t0;

  loop_setup(&loop, _i, NULL);
  memset(&tstate, 0, sizeof(tstate));
  tstate.loop = &loop;
  tstate.stop_after = 5;
  io_loop_once(&loop, 0);
  t0 = loop.now;
  io_timer_init(&r.t, on_timer);
  r.id = 7;
  r.fired = 0;
  io_timer_start(&loop, &r.t, 5, 5);
  {
    uint64_t end = now_ms() + DEADLINE_MS;
    while (r.fired < 5 && now_ms() < end)
      io_loop_once(&loop, 100);
  }
  ck_assert_int_eq(r.fired, 5);
  ck_assert(!io_timer_active(&r.t));
  ck_assert_uint_ge(r.fired_at, t0 + 25);
  run_for(&loop, 50);
  ck_assert_int_eq(r.fired, 5);
  io_loop_done(&loop);
}
END_TEST

/* A delay too large to add to the clock means "never", not "at once": the
 * due time saturates instead of wrapping, for the first delay and for the
 * repeat alike. */
START_TEST(test_io_huge_timer_delay_never_fires) {
  io_loop loop;
  ttimer never, wrap, rep, ref;

  loop_setup(&loop, _i, NULL);
  memset(&tstate, 0, sizeof(tstate));
  tstate.loop = &loop;
  io_loop_once(&loop, 0);
  io_timer_init(&never.t, on_timer);
  io_timer_init(&wrap.t, on_timer);
  io_timer_init(&rep.t, on_timer);
  io_timer_init(&ref.t, on_timer);
  never.id = 1;
  wrap.id = 2;
  rep.id = 3;
  ref.id = 4;
  never.fired = wrap.fired = rep.fired = ref.fired = 0;
  io_timer_start(&loop, &never.t, UINT64_MAX, 0);
  /* now + this is exactly 2^64: due time 0 if it wrapped. */
  io_timer_start(&loop, &wrap.t, UINT64_MAX - loop.now + 1, 0);
  io_timer_start(&loop, &rep.t, 5, UINT64_MAX); /* once, then never again */
  io_timer_start(&loop, &ref.t, 40, 0);
  ck_assert(run_until(&loop, &ref.fired));
  run_for(&loop, 30);
  ck_assert_int_eq(never.fired, 0);
  ck_assert_int_eq(wrap.fired, 0);
  ck_assert_int_eq(rep.fired, 1);
  ck_assert(io_timer_active(&never.t));
  ck_assert(io_timer_active(&wrap.t));
  ck_assert(io_timer_active(&rep.t));
  /* The loop still sleeps rather than spinning on them: one wait of 50 ms
   * takes about that long. */
  {
    uint64_t t0 = now_ms();
    io_timer_stop(&loop, &ref.t);
    io_loop_once(&loop, 50);
    ck_assert_uint_ge(now_ms() - t0, 40);
  }
  io_loop_done(&loop);
}
END_TEST

/* ---- io_post ---- */

typedef struct pjob {
  io_job job; /* first */
  os_thread ran_on;
  _Atomic int ran;
  int order; /* how many jobs of the test ran before this one */
} pjob;

static void on_job(io_job *job) {
  pjob *p = (pjob *)job;
  p->ran_on = os_thread_self();
  atomic_fetch_add(&p->ran, 1);
}

typedef struct poster {
  io_loop *loop;
  pjob *job;
  _Atomic int rescued; /* the post did not wake the loop */
} poster;

static void *post_thread(void *arg) {
  poster *p = arg;
  uint64_t end = now_ms() + DEADLINE_MS;

  /* Wait until the loop is blocked. */
  while (!atomic_load(&p->loop->sleeping) && now_ms() < end)
    sleep_ms(1);
  sleep_ms(30);
  io_post(p->loop, &p->job->job);
  end = now_ms() + 3000;
  while (!atomic_load(&p->job->ran) && now_ms() < end)
    sleep_ms(1);
  if (!atomic_load(&p->job->ran)) {
    /* Unblock the loop so the test fails instead of hanging. */
    atomic_store(&p->rescued, 1);
    io_loop_wake(p->loop);
  }
  return NULL;
}

START_TEST(test_io_post_wakes_blocked_loop) {
  io_loop loop;
  pjob job = {0};
  poster p = {0};
  os_thread th;
  uint64_t end;

  loop_setup(&loop, _i, NULL);
  io_loop_once(&loop, 0);
  p.loop = &loop;
  p.job = &job;
  job.job.fn = on_job;
  ck_assert_int_eq(os_thread_create(&th, post_thread, &p), 0);
  end = now_ms() + DEADLINE_MS;
  while (!atomic_load(&job.ran) && now_ms() < end)
    io_loop_once(&loop, -1);
  os_thread_join(th);
  ck_assert_msg(!atomic_load(&p.rescued), "io_post did not wake the loop");
  ck_assert_int_eq(atomic_load(&job.ran), 1);
  ck_assert(os_thread_equal(job.ran_on, os_thread_self()));
  ck_assert(!os_thread_equal(job.ran_on, th));
  io_loop_done(&loop);
}
END_TEST

#define POSTERS 4
#define POSTS_PER_THREAD 10000

typedef struct burst {
  io_loop *loop;
  pjob *jobs;
} burst;

static _Atomic int burst_ran;
static os_thread burst_loop_thread;
static _Atomic int burst_wrong_thread;

static void on_burst_job(io_job *job) {
  pjob *p = (pjob *)job;
  if (!os_thread_equal(os_thread_self(), burst_loop_thread))
    atomic_store(&burst_wrong_thread, 1);
  atomic_fetch_add(&p->ran, 1);
  p->order = atomic_fetch_add(&burst_ran, 1);
}

static void *burst_thread(void *arg) {
  burst *b = arg;
  for (int k = 0; k < POSTS_PER_THREAD; k++) {
    b->jobs[k].job.fn = on_burst_job;
    io_post(b->loop, &b->jobs[k].job);
    if (k % 97 == 0)
      sleep_ms(0);
  }
  return NULL;
}

typedef struct watchdog {
  io_loop *loop;
  _Atomic int done;
  _Atomic int stuck;
} watchdog;

/* If the loop stops making progress while jobs are outstanding, records it
 * and wakes the loop by hand. */
static void *watchdog_thread(void *arg) {
  watchdog *w = arg;
  int last = -1;
  uint64_t since = now_ms();
  while (!atomic_load(&w->done)) {
    int cur = atomic_load(&burst_ran);
    if (cur != last) {
      last = cur;
      since = now_ms();
    } else if (now_ms() - since > 2000) {
      atomic_store(&w->stuck, 1);
      io_loop_wake(w->loop);
      since = now_ms();
    }
    sleep_ms(5);
  }
  return NULL;
}

START_TEST(test_io_post_from_many_threads_runs_each_once) {
  static pjob jobs[POSTERS][POSTS_PER_THREAD];
  io_loop loop;
  burst b[POSTERS];
  os_thread th[POSTERS], wd;
  watchdog w = {0};
  uint64_t end;
  int bad = -1;

  memset(jobs, 0, sizeof(jobs));
  atomic_store(&burst_ran, 0);
  atomic_store(&burst_wrong_thread, 0);
  burst_loop_thread = os_thread_self();
  loop_setup(&loop, _i, NULL);
  w.loop = &loop;
  ck_assert_int_eq(os_thread_create(&wd, watchdog_thread, &w), 0);
  for (int t = 0; t < POSTERS; t++) {
    b[t].loop = &loop;
    b[t].jobs = jobs[t];
    ck_assert_int_eq(os_thread_create(&th[t], burst_thread, &b[t]), 0);
  }
  end = now_ms() + 20000;
  while (atomic_load(&burst_ran) < POSTERS * POSTS_PER_THREAD && now_ms() < end)
    io_loop_once(&loop, -1);
  for (int t = 0; t < POSTERS; t++)
    os_thread_join(th[t]);
  atomic_store(&w.done, 1);
  os_thread_join(wd);
  ck_assert_int_eq(atomic_load(&burst_ran), POSTERS * POSTS_PER_THREAD);
  for (int t = 0; t < POSTERS; t++)
    for (int k = 0; k < POSTS_PER_THREAD; k++)
      if (atomic_load(&jobs[t][k].ran) != 1 && bad < 0)
        bad = t * POSTS_PER_THREAD + k;
  ck_assert_msg(bad < 0, "job %d ran %d times", bad,
                bad < 0 ? 1 : atomic_load(&jobs[bad / POSTS_PER_THREAD][bad % POSTS_PER_THREAD].ran));
  /* Each thread's jobs ran in the order it posted them. */
  for (int t = 0; t < POSTERS; t++)
    for (int k = 1; k < POSTS_PER_THREAD; k++)
      ck_assert_msg(jobs[t][k - 1].order < jobs[t][k].order,
                    "thread %d: job %d ran as number %d, before job %d (number %d)", t, k,
                    jobs[t][k].order, k - 1, jobs[t][k - 1].order);
  ck_assert(!atomic_load(&burst_wrong_thread));
  ck_assert_msg(!atomic_load(&w.stuck), "a post was not noticed by the blocked loop");
  io_loop_done(&loop);
}
END_TEST

static int ordered_ran;

static void on_ordered_job(io_job *job) {
  pjob *p = (pjob *)job;
  atomic_fetch_add(&p->ran, 1);
  p->order = ordered_ran++;
}

START_TEST(test_io_loop_done_runs_unrun_jobs) {
  io_loop loop;
  pjob a = {0}, b = {0};

  loop_setup(&loop, _i, NULL);
  ordered_ran = 0;
  a.job.fn = b.job.fn = on_ordered_job;
  io_post(&loop, &a.job);
  io_post(&loop, &b.job);
  io_loop_done(&loop);
  ck_assert_int_eq(atomic_load(&a.ran), 1);
  ck_assert_int_eq(atomic_load(&b.ran), 1);
  ck_assert_msg(a.order == 0 && b.order == 1, "ran out of posting order: a %d, b %d", a.order,
                b.order);
}
END_TEST

/* ---- request and response ---- */

#define ROUNDS 300

/* One end of a request-response exchange the way core/net drives it: the
 * reply to what was received is sent from the loop's prepare hook (the
 * owner's flush), not from the receive callback. */
typedef struct pong {
  io_loop *loop;
  io_fd fd;
  io_ev rx, tx;
  char pending[64], out[64];
  size_t npending;
  int replies, bad;
} pong;

static pong *the_pong;

static void on_pong_rx(io_ev *ev, int res, unsigned flags, char *data) {
  pong *p = the_pong;
  (void)ev;
  (void)flags;
  if (res > 0 && p->npending + (size_t)res <= sizeof(p->pending)) {
    memcpy(p->pending + p->npending, data, (size_t)res);
    p->npending += (size_t)res;
  } else if (res > 0) {
    p->bad = 1;
  }
}

static void on_pong_tx(io_ev *ev, int res, unsigned flags, char *data) {
  (void)ev;
  (void)flags;
  (void)data;
  if (res <= 0)
    the_pong->bad = 1;
  else
    the_pong->replies++;
}

static void pong_flush(io_loop *loop) {
  pong *p = the_pong;
  struct iovec iov;
  (void)loop;
  if (!p->npending || p->tx.armed)
    return;
  memcpy(p->out, p->pending, p->npending);
  iov.iov_base = p->out;
  iov.iov_len = p->npending;
  p->npending = 0;
  if (io_send(p->loop, &p->tx, &p->fd, &iov, 1, on_pong_tx) < 0)
    p->bad = 1;
}

typedef struct pinger {
  int fd;
  _Atomic int done, err;
} pinger;

static void *pinger_thread(void *arg) {
  pinger *g = arg;
  for (int k = 0; k < ROUNDS; k++) {
    char msg[8], got[8];
    size_t have = 0;
    snprintf(msg, sizeof(msg), "%07d", k);
    if (tsend(g->fd, msg, sizeof(msg)) != (int)sizeof(msg)) {
      atomic_store(&g->err, 1);
      break;
    }
    while (have < sizeof(got)) {
      int n = trecv(g->fd, got + have, sizeof(got) - have);
      if (n <= 0) {
        atomic_store(&g->err, 2);
        goto out;
      }
      have += (size_t)n;
    }
    if (memcmp(got, msg, sizeof(msg)) != 0) {
      atomic_store(&g->err, 3);
      break;
    }
  }
out:
  atomic_store(&g->done, 1);
  return NULL;
}

/* Every reply comes back, and on epoll a reply that went out at once costs
 * no second epoll_wait: about one wait per round trip, not two. */
START_TEST(test_io_request_response_one_wait_per_round_trip) {
  io_loop loop;
  pong p;
  pinger g = {0};
  os_thread th;
  int sv[2];
  uint64_t waits, end;

  loop_setup(&loop, _i, NULL);
  make_pair(sv);
  set_blocking(sv[1]);
  memset(&p, 0, sizeof(p));
  p.loop = &loop;
  p.fd.fd = sv[0];
  the_pong = &p;
  loop.prepare = pong_flush;
  ck_assert_int_eq(io_recv(&loop, &p.rx, &p.fd, on_pong_rx), 0);
  io_loop_once(&loop, 0); /* arm */
  g.fd = sv[1];
  waits = loop.stats.waits;
  ck_assert_int_eq(os_thread_create(&th, pinger_thread, &g), 0);
  end = now_ms() + 20000;
  while (!atomic_load(&g.done) && now_ms() < end)
    io_loop_once(&loop, 100);
  if (!atomic_load(&g.done))
    shutdown(sv[0], 2);
  os_thread_join(th);
  waits = loop.stats.waits - waits;
  ck_assert_int_eq(atomic_load(&g.err), 0);
  ck_assert_int_eq(p.bad, 0);
  ck_assert_int_eq(p.replies, ROUNDS);
  if (strcmp(loop.be->name, "epoll") == 0)
    ck_assert_msg(waits <= ROUNDS + ROUNDS / 4, "%llu epoll_waits for %d round trips",
                  (unsigned long long)waits, ROUNDS);
  io_cancel(&loop, &p.rx);
  run_for(&loop, 20);
  io_close_fd(&loop, &p.fd);
  tclose(sv[1]);
  io_loop_done(&loop);
}
END_TEST

/* ---- multishot recv ---- */

#define STREAM_BYTES (256u * 1024u)

typedef struct rx {
  io_ev ev;
  io_fd fd;
  char *buf;
  size_t cap, got;
  int data_cbs;     /* completions carrying bytes */
  int more_cbs;     /* completions flagged IO_F_MORE */
  int finals;       /* completions without IO_F_MORE */
  int final_res;
  int after_final;  /* completions delivered after the final one */
  int bad;          /* res > 0 without data, overflow, or res <= 0 with IO_F_MORE */
} rx;

static void on_rx(io_ev *ev, int res, unsigned flags, char *data) {
  rx *r = (rx *)((char *)ev - offsetof(rx, ev));
  if (r->finals)
    r->after_final++;
  if (flags & IO_F_MORE) {
    r->more_cbs++;
    if (res <= 0) {
      r->bad = 1;
      return;
    }
  }
  if (res > 0) {
    if (!data || r->got + (size_t)res > r->cap) {
      r->bad = 1;
    } else {
      memcpy(r->buf + r->got, data, (size_t)res);
      r->got += (size_t)res;
    }
    r->data_cbs++;
  }
  if (!(flags & IO_F_MORE)) {
    r->finals++;
    r->final_res = res;
  }
}

/* A loop of backend i and a connected pair, with r ready to receive 64-byte
 * reads on sv[0] (not yet armed). */
static void rx_setup(io_loop *loop, int i, rx *r, int sv[2]) {
  loop_setup(loop, i, NULL);
  make_pair(sv);
  memset(r, 0, sizeof(*r));
  r->fd.fd = sv[0];
  r->cap = 64;
  r->buf = calloc(1, r->cap);
  ck_assert_ptr_nonnull(r->buf);
}

typedef struct writer {
  int fd;
  size_t total;
  uint32_t seed;
  int chunks;
  _Atomic int err;
} writer;

/* Writes the pattern in pseudo-random chunks of 1..4096 bytes, then
 * half-closes. */
static void *writer_thread(void *arg) {
  writer *w = arg;
  static _Thread_local char chunk[4096];
  uint32_t x = w->seed;
  size_t off = 0;

  while (off < w->total) {
    size_t n;
    x = x * 1103515245u + 12345u;
    n = 1 + (x >> 8) % sizeof(chunk);
    if (n > w->total - off)
      n = w->total - off;
    for (size_t k = 0; k < n; k++)
      chunk[k] = (char)test_pattern(w->seed, off + k);
    for (size_t done = 0; done < n;) {
      int s = tsend(w->fd, chunk + done, n - done);
      if (s <= 0) {
        atomic_store(&w->err, os_sock_errno() ? os_sock_errno() : EIO);
        return NULL;
      }
      done += (size_t)s;
    }
    off += n;
    w->chunks++;
  }
  os_sock_shutdown_wr(w->fd);
  return NULL;
}

/* Streams STREAM_BYTES through a recv on a loop of backend i (or on *on,
 * which is left open) and checks every byte. */
static void recv_stream_on(io_loop *on, int i, const io_opts *opts, io_stats *stats_out,
                           int *callbacks) {
  io_loop own, *lp = on ? on : &own;
  rx r;
  writer w = {0};
  os_thread th;
  int sv[2];
  size_t bad_at = SIZE_MAX;

  if (!on)
    loop_setup(&own, i, opts);
#define loop (*lp)
  make_pair(sv);
  set_blocking(sv[1]);
  memset(&r, 0, sizeof(r));
  r.fd.fd = sv[0];
  r.cap = STREAM_BYTES;
  r.buf = malloc(r.cap);
  ck_assert_ptr_nonnull(r.buf);
  ck_assert_int_eq(io_recv(&loop, &r.ev, &r.fd, on_rx), 0);
  ck_assert(r.ev.armed);

  w.fd = sv[1];
  w.total = STREAM_BYTES;
  w.seed = 0x5eed + (uint32_t)i;
  ck_assert_int_eq(os_thread_create(&th, writer_thread, &w), 0);
  run_until(&loop, &r.finals);
  if (!r.finals) {
    /* Unblock a stuck writer before failing. */
    shutdown(sv[0], 2); /* SHUT_RDWR, SD_BOTH */
  }
  os_thread_join(th);
  ck_assert_int_eq(atomic_load(&w.err), 0);
  ck_assert_msg(r.finals == 1, "no final completion; got %zu of %u bytes", r.got, STREAM_BYTES);
  ck_assert_int_eq(r.final_res, 0); /* EOF */
  ck_assert_int_eq(r.bad, 0);
  ck_assert_uint_eq(r.got, STREAM_BYTES);
  for (size_t k = 0; k < r.got && bad_at == SIZE_MAX; k++)
    if ((uint8_t)r.buf[k] != test_pattern(w.seed, k))
      bad_at = k;
  ck_assert_msg(bad_at == SIZE_MAX, "byte %zu differs", bad_at);
  ck_assert_int_eq(r.more_cbs, r.data_cbs);
  ck_assert(!r.ev.armed);
  ck_assert_ptr_null(r.fd.rd);
  if (stats_out)
    *stats_out = loop.stats;
  if (callbacks)
    *callbacks = r.data_cbs + r.finals;
  io_close_fd(&loop, &r.fd);
  tclose(sv[1]);
  free(r.buf);
  if (!on)
    io_loop_done(&loop);
#undef loop
}

static void recv_stream(int i, const io_opts *opts, io_stats *stats_out, int *callbacks) {
  recv_stream_on(NULL, i, opts, stats_out, callbacks);
}

/* Resident memory in KiB; -1 where /proc is not there (Windows, whose
 * backend has nothing to trim). */
static long rss_kib(void) {
#ifdef _WIN32
  return -1;
#else
  long pages = -1, res = -1;
  FILE *f = fopen("/proc/self/statm", "r");
  if (f) {
    if (fscanf(f, "%ld %ld", &pages, &res) != 2)
      res = -1;
    fclose(f);
  }
  return res < 0 ? -1 : res * (sysconf(_SC_PAGESIZE) / 1024);
#endif
}

/* A quiet loop's trim gives the receive buffers' pages back (io_uring: 1024
 * x 2 KiB, all touched by the stream), and receiving works as before. */
/* Linux only: is the running kernel at least major.minor? */
static int kernel_at_least(int major, int minor) {
#ifdef _WIN32
  (void)major;
  (void)minor;
  return 0;
#else
  struct utsname u;
  int ma = 0, mi = 0;
  if (uname(&u) != 0 || sscanf(u.release, "%d.%d", &ma, &mi) != 2)
    return 0;
  return ma > major || (ma == major && mi >= minor);
#endif
}

START_TEST(test_io_trim_gives_back_receive_buffers) {
  io_loop loop;
  long before, after;
  int gave;

  loop_setup(&loop, _i, NULL);
  for (int k = 0; k < 8; k++) /* 2 MiB in 1..4096-byte writes: each buffer of the ring used */
    recv_stream_on(&loop, _i, NULL, NULL, NULL);
  run_for(&loop, 20);
  before = rss_kib();
  gave = io_loop_trim(&loop);
  after = rss_kib();
  if (strcmp(test_io_backend(_i), "io_uring") == 0 && kernel_at_least(6, 1))
    ck_assert_msg(gave == 1, "io_loop_trim gave nothing back on a DEFER_TASKRUN kernel");
  if (gave && before > 0)
    ck_assert_msg(before - after >= 1536, "resident %ld KiB before the trim, %ld after", before,
                  after);
  recv_stream_on(&loop, _i, NULL, NULL, NULL); /* byte for byte after the trim */
  io_loop_done(&loop);
}
END_TEST

START_TEST(test_io_recv_multishot_delivers_stream_in_order) {
  recv_stream(_i, NULL, NULL, NULL);
}
END_TEST

START_TEST(test_io_stats_count_every_completion) {
  io_opts o = {.buf_count = 16, .buf_size = 1024};
  io_stats st;
  int callbacks = 0;

  /* Data completions (IO_F_MORE) are completions too: the counter covers at
   * least every callback the loop made. */
  recv_stream(_i, &o, &st, &callbacks);
  ck_assert_int_gt(callbacks, 2);
  ck_assert_msg(st.completions >= (uint64_t)callbacks, "%s: stats.completions %llu, callbacks %d",
                test_io_backend(_i), (unsigned long long)st.completions, callbacks);
}
END_TEST

START_TEST(test_io_recv_tiny_buffer_ring_rearms) {
  io_opts o = {.buf_count = 4, .buf_size = 64};
  io_stats st;

  recv_stream(_i, &o, &st, NULL);
  /* io_uring: 4 x 64 B runs dry; the recv re-arms invisibly. (The other
   * backends read into one scratch buffer: nothing to run out of.) */
  if (strcmp(test_io_backend(_i), "io_uring") == 0)
    ck_assert_msg(st.enobufs > 0, "enobufs %llu rearms %llu", (unsigned long long)st.enobufs,
                  (unsigned long long)st.rearms);
}
END_TEST

START_TEST(test_io_recv_data_before_arm_is_delivered) {
  io_loop loop;
  rx r;
  int sv[2];

  rx_setup(&loop, _i, &r, sv);
  ck_assert_int_eq(tsend(sv[1], "early", 5), 5);
  ck_assert_int_eq(io_recv(&loop, &r.ev, &r.fd, on_rx), 0);
  {
    uint64_t end = now_ms() + DEADLINE_MS;
    while (r.got < 5 && now_ms() < end)
      io_loop_once(&loop, 100);
  }
  ck_assert_uint_eq(r.got, 5);
  ck_assert_int_eq(memcmp(r.buf, "early", 5), 0);
  ck_assert_int_eq(r.finals, 0);
  ck_assert(r.ev.armed);
  /* The peer closing ends the recv with 0. */
  tclose(sv[1]);
  ck_assert(run_until(&loop, &r.finals));
  ck_assert_int_eq(r.finals, 1);
  ck_assert_int_eq(r.final_res, 0);
  ck_assert_int_eq(r.bad, 0);
  io_close_fd(&loop, &r.fd);
  free(r.buf);
  io_loop_done(&loop);
}
END_TEST

/* ---- cancel ---- */

static void cancel_case(int i, int data_first) {
  io_loop loop;
  rx r;
  int sv[2];

  rx_setup(&loop, i, &r, sv);
  ck_assert_int_eq(io_recv(&loop, &r.ev, &r.fd, on_rx), 0);
  if (data_first) {
    uint64_t end = now_ms() + DEADLINE_MS;
    ck_assert_int_eq(tsend(sv[1], "abc", 3), 3);
    while (r.got < 3 && now_ms() < end)
      io_loop_once(&loop, 100);
    ck_assert_uint_eq(r.got, 3);
  } else {
    io_loop_once(&loop, 0); /* submitted / registered */
  }
  ck_assert_int_eq(io_cancel(&loop, &r.ev), 0);
  ck_assert(r.ev.canceled);
  ck_assert_int_eq(io_cancel(&loop, &r.ev), 0); /* still armed: asking again is fine */
  /* Data arriving after the cancel must not be delivered after the final. */
  ck_assert_int_eq(tsend(sv[1], "late", 4), 4);
  ck_assert(run_until(&loop, &r.finals));
  ck_assert_msg(r.final_res == -ECANCELED || r.final_res == 0, "final res %d", r.final_res);
  run_for(&loop, 100);
  ck_assert_int_eq(tsend(sv[1], "later", 5), 5);
  run_for(&loop, 100);
  ck_assert_int_eq(r.finals, 1);
  ck_assert_int_eq(r.after_final, 0);
  ck_assert_int_eq(r.bad, 0);
  ck_assert(!r.ev.armed);
  ck_assert_ptr_null(r.fd.rd);
  ck_assert_int_eq(io_cancel(&loop, &r.ev), -EALREADY);
  io_close_fd(&loop, &r.fd);
  tclose(sv[1]);
  free(r.buf);
  io_loop_done(&loop);
}

START_TEST(test_io_cancel_recv_one_final_completion) {
  cancel_case(_i, 0);
}
END_TEST

START_TEST(test_io_cancel_recv_after_data_one_final_completion) {
  cancel_case(_i, 1);
}
END_TEST

START_TEST(test_io_cancel_before_first_poll) {
  io_loop loop;
  rx r;
  int sv[2];

  rx_setup(&loop, _i, &r, sv);
  ck_assert_int_eq(io_recv(&loop, &r.ev, &r.fd, on_rx), 0);
  ck_assert_int_eq(io_cancel(&loop, &r.ev), 0);
  ck_assert(run_until(&loop, &r.finals));
  ck_assert_int_eq(tsend(sv[1], "x", 1), 1);
  run_for(&loop, 100);
  ck_assert_int_eq(r.finals, 1);
  ck_assert_msg(r.final_res == -ECANCELED || r.final_res == 0, "final res %d", r.final_res);
  ck_assert_int_eq(r.after_final, 0);
  ck_assert_uint_eq(r.got, 0);
  /* The fd can carry a new recv once the old one ended. */
  ck_assert_int_eq(io_recv(&loop, &r.ev, &r.fd, on_rx), 0);
  {
    uint64_t end = now_ms() + DEADLINE_MS;
    while (r.got < 1 && now_ms() < end)
      io_loop_once(&loop, 100);
  }
  ck_assert_uint_eq(r.got, 1);
  ck_assert_int_eq(r.buf[0], 'x');
  ck_assert_int_eq(io_cancel(&loop, &r.ev), 0);
  {
    uint64_t end = now_ms() + DEADLINE_MS;
    while (r.finals < 2 && now_ms() < end)
      io_loop_once(&loop, 100);
  }
  ck_assert_int_eq(r.finals, 2);
  io_close_fd(&loop, &r.fd);
  tclose(sv[1]);
  free(r.buf);
  io_loop_done(&loop);
}
END_TEST

/* ---- send ---- */

typedef struct tx {
  io_ev ev;
  int calls;
  int res;
  unsigned flags;
} tx;

static void on_tx(io_ev *ev, int res, unsigned flags, char *data) {
  tx *t = (tx *)ev;
  t->calls++;
  t->res = res;
  t->flags = flags;
}

START_TEST(test_io_send_three_iovecs_one_completion) {
  io_loop loop;
  io_fd fd = {0};
  tx t = {0};
  int sv[2];
  char a[] = "hello ", b[] = "pier ", c[] = "world";
  struct iovec iov[3] = {IOV(a, 6), IOV(b, 5), IOV(c, 5)};
  char got[32] = {0};
  int done = 0;

  loop_setup(&loop, _i, NULL);
  make_pair(sv);
  fd.fd = sv[0];
  ck_assert_int_eq(io_send(&loop, &t.ev, &fd, iov, 3, on_tx), 0);
  {
    uint64_t end = now_ms() + DEADLINE_MS;
    while (t.calls == 0 && now_ms() < end)
      io_loop_once(&loop, 100);
  }
  run_for(&loop, 30);
  done = t.calls;
  ck_assert_int_eq(done, 1);
  ck_assert_int_eq(t.res, 16);
  ck_assert_uint_eq(t.flags & IO_F_MORE, 0);
  ck_assert(!t.ev.armed);
  ck_assert_ptr_null(fd.wr);
  ck_assert_int_eq(trecv(sv[1], got, sizeof(got)), 16);
  ck_assert_str_eq(got, "hello pier world");

  /* One iovec takes the same path to the peer. */
  iov[0].iov_base = (void *)"single";
  iov[0].iov_len = 6;
  ck_assert_int_eq(io_send(&loop, &t.ev, &fd, iov, 1, on_tx), 0);
  {
    uint64_t end = now_ms() + DEADLINE_MS;
    while (t.calls < 2 && now_ms() < end)
      io_loop_once(&loop, 100);
  }
  ck_assert_int_eq(t.calls, 2);
  ck_assert_int_eq(t.res, 6);
  memset(got, 0, sizeof(got));
  ck_assert_int_eq(trecv(sv[1], got, sizeof(got)), 6);
  ck_assert_str_eq(got, "single");
  io_close_fd(&loop, &fd);
  tclose(sv[1]);
  io_loop_done(&loop);
}
END_TEST

/* io_try_send on epoll and io_uring: the bytes go out at once, no callback
 * follows, and the send counts as a completion; on a full socket -EAGAIN,
 * and while a send is armed -EBUSY (bytes sent now would overtake it).
 * io_uring says it is worth it only for a lone send (try_send_lone), epoll
 * for any. Where there is no such send (IOCP) it says -ENOTSUP and sends
 * nothing. */
START_TEST(test_io_try_send_sends_at_once_or_says_why_not) {
  io_loop loop;
  io_fd fd = {0};
  tx t = {0};
  int sv[2], rc;
  char a[] = "hello ", b[] = "pier ", c[] = "world", got[32] = {0};
  struct iovec iov[3] = {IOV(a, 6), IOV(b, 5), IOV(c, 5)};
  static char filler[4096];
  struct iovec fill = IOV(filler, sizeof(filler));
  uint64_t before, end;
  size_t filled = 0;

  loop_setup(&loop, _i, NULL);
  make_pair(sv);
  fd.fd = sv[0];
  before = loop.stats.completions;
  rc = io_try_send(&loop, &fd, iov, 3);
  ck_assert_int_eq(loop.be->try_send_lone, strcmp(test_io_backend(_i), "io_uring") == 0);
  if (!loop.be->try_send) { /* IOCP */
    ck_assert_int_eq(rc, -ENOTSUP);
    ck_assert_uint_eq(loop.stats.completions, before);
    ck_assert_int_eq(trecv_nb(sv[1], got, sizeof(got)), -EAGAIN);
    goto out;
  }
  ck_assert_int_eq(rc, 16);
  ck_assert_uint_eq(loop.stats.completions - before, 1);
  ck_assert_int_eq(trecv(sv[1], got, sizeof(got)), 16);
  ck_assert_str_eq(got, "hello pier world");

  memset(filler, 'f', sizeof(filler));
  while ((rc = io_try_send(&loop, &fd, &fill, 1)) > 0 && filled < (64u << 20))
    filled += (size_t)rc;
  ck_assert_int_eq(rc, -EAGAIN);
  ck_assert_uint_gt(filled, 0);
  ck_assert_int_eq(io_send(&loop, &t.ev, &fd, iov, 3, on_tx), 0);
  ck_assert_int_eq(io_try_send(&loop, &fd, iov, 3), -EBUSY);
  /* The peer drains the filler; the armed send then completes, whole. */
  end = now_ms() + DEADLINE_MS;
  while (filled > 0 && now_ms() < end) {
    int n = trecv_nb(sv[1], filler, filled < sizeof(filler) ? filled : sizeof(filler));
    if (n > 0)
      filled -= (size_t)n;
    else
      io_loop_once(&loop, 10);
  }
  ck_assert_uint_eq(filled, 0);
  end = now_ms() + DEADLINE_MS;
  while (t.calls == 0 && now_ms() < end)
    io_loop_once(&loop, 10);
  ck_assert_int_eq(t.calls, 1);
  ck_assert_int_eq(t.res, 16);
  memset(got, 0, sizeof(got));
  ck_assert_int_eq(trecv(sv[1], got, 16), 16);
  ck_assert_str_eq(got, "hello pier world");

  /* A connect armed on an fd holds its write side the same way. */
  {
    int l = tlisten(1), cs = os_sock_stream(AF_INET);
    struct sockaddr_in in = {.sin_family = AF_INET, .sin_port = htons(local_port(l))};
    io_fd cfd = {0};
    tx ct = {0};
    ck_assert_int_ge(cs, 0);
    set_mode(cs, 1);
    in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cfd.fd = cs;
    ck_assert_int_eq(io_connect(&loop, &ct.ev, &cfd, (struct sockaddr *)&in, sizeof(in), on_tx), 0);
    ck_assert_int_eq(io_try_send(&loop, &cfd, iov, 3), -EBUSY);
    end = now_ms() + DEADLINE_MS;
    while (ct.calls == 0 && now_ms() < end)
      io_loop_once(&loop, 10);
    ck_assert_int_eq(ct.calls, 1);
    ck_assert_int_eq(ct.res, 0);
    ck_assert_int_eq(io_try_send(&loop, &cfd, iov, 3), 16); /* connected: it goes */
    io_close_fd(&loop, &cfd);
    tclose(cs);
    tclose(l);
  }
out:
  io_close_fd(&loop, &fd);
  tclose(sv[1]);
  io_loop_done(&loop);
}
END_TEST

/* On io_uring a send made at once has to be the only one: while another
 * fd's send waits in the ring for the loop's next enter (which will return
 * at once with its completion anyway), io_try_send says -EBUSY and sends
 * nothing; once the loop has entered, it sends. epoll sends a queued send
 * when it is made, so there the second send goes at once either way. */
START_TEST(test_io_try_send_waits_behind_a_queued_send_on_io_uring) {
  io_loop loop;
  io_fd fa = {0}, fb = {0};
  tx t = {0};
  int a[2], b[2];
  char x[] = "queued", y[] = "at once", got[16] = {0};
  struct iovec ix = IOV(x, 6), iy = IOV(y, 7);
  int uring = strcmp(test_io_backend(_i), "io_uring") == 0;
  uint64_t end;

  loop_setup(&loop, _i, NULL);
  if (!loop.be->try_send) { /* IOCP: no send at once */
    io_loop_done(&loop);
    return;
  }
  make_pair(a);
  make_pair(b);
  fa.fd = a[0];
  fb.fd = b[0];
  ck_assert_int_eq(io_send(&loop, &t.ev, &fa, &ix, 1, on_tx), 0);
  if (uring) {
    ck_assert_int_eq(io_try_send(&loop, &fb, &iy, 1), -EBUSY);
    ck_assert_int_eq(trecv_nb(b[1], got, sizeof(got)), -EAGAIN);
  } else {
    ck_assert_int_eq(io_try_send(&loop, &fb, &iy, 1), 7);
  }
  end = now_ms() + DEADLINE_MS;
  while (t.calls == 0 && now_ms() < end)
    io_loop_once(&loop, 10);
  ck_assert_int_eq(t.calls, 1);
  ck_assert_int_eq(t.res, 6);
  ck_assert_int_eq(trecv(a[1], got, 6), 6);
  ck_assert(memcmp(got, "queued", 6) == 0);
  if (uring) /* the enter is behind it now */
    ck_assert_int_eq(io_try_send(&loop, &fb, &iy, 1), 7);
  memset(got, 0, sizeof(got));
  ck_assert_int_eq(trecv(b[1], got, 7), 7);
  ck_assert_str_eq(got, "at once");
  io_close_fd(&loop, &fa);
  io_close_fd(&loop, &fb);
  tclose(a[1]);
  tclose(b[1]);
  io_loop_done(&loop);
}
END_TEST

START_TEST(test_io_send_on_full_socket_completes_when_drained) {
  io_loop loop;
  io_fd fd = {0};
  tx t = {0};
  int sv[2];
  static char filler[4096];
  char a[10], b[10], c[10], want[30], got[64];
  struct iovec iov[3] = {IOV(a, 10), IOV(b, 10), IOV(c, 10)};
  size_t filled = 0, drained = 0, tail = 0;
  uint64_t end;
  int bad = 0;

  loop_setup(&loop, _i, NULL);
  make_pair(sv);
  fd.fd = sv[0];
  for (int k = 0; k < 10; k++) {
    a[k] = (char)('a' + k);
    b[k] = (char)('A' + k);
    c[k] = (char)('0' + k);
  }
  memcpy(want, a, 10);
  memcpy(want + 10, b, 10);
  memcpy(want + 20, c, 10);
  memset(filler, 'f', sizeof(filler));
  for (;;) {
    int n = tsend_nb(sv[0], filler, sizeof(filler));
    if (n < 0) {
      ck_assert_int_eq(n, -EAGAIN);
      break;
    }
    filled += (size_t)n;
  }
  ck_assert_uint_gt(filled, 0);

  /* The socket is full: the send waits, it does not fail with EAGAIN. */
  ck_assert_int_eq(io_send(&loop, &t.ev, &fd, iov, 3, on_tx), 0);
  run_for(&loop, 50);
  ck_assert_msg(t.calls == 0, "completed on a full socket with %d", t.res);
  ck_assert(t.ev.armed);

  /* The peer reads everything queued; the send then completes once. */
  end = now_ms() + DEADLINE_MS;
  while ((drained < filled || t.calls == 0) && now_ms() < end) {
    int n = trecv(sv[1], filler, sizeof(filler));
    if (n > 0) {
      size_t f = (size_t)n;
      /* Filler first, then the sent bytes. */
      for (size_t k = 0; k < f; k++) {
        if (drained < filled) {
          if (filler[k] != 'f')
            bad = 1;
          drained++;
        } else if (tail < sizeof(got)) {
          got[tail++] = filler[k];
        } else {
          bad = 1;
        }
      }
    } else {
      io_loop_once(&loop, 10);
    }
  }
  run_for(&loop, 30);
  ck_assert_int_eq(t.calls, 1);
  ck_assert_int_eq(t.res, 30);
  while (tail < 30) {
    int n = trecv(sv[1], got + tail, sizeof(got) - tail);
    if (n <= 0)
      break;
    tail += (size_t)n;
  }
  ck_assert_int_eq(bad, 0);
  ck_assert_uint_eq(drained, filled);
  ck_assert_uint_eq(tail, 30);
  ck_assert_int_eq(memcmp(got, want, 30), 0);
  io_close_fd(&loop, &fd);
  tclose(sv[1]);
  io_loop_done(&loop);
}
END_TEST

START_TEST(test_io_send_while_send_armed_is_ebusy) {
  io_loop loop;
  io_fd fd = {0};
  tx t1 = {0}, t2 = {0};
  int sv[2];
  struct iovec iov1 = IOV("first", 5), iov2 = IOV("second", 6);
  char got[32] = {0};

  loop_setup(&loop, _i, NULL);
  make_pair(sv);
  fd.fd = sv[0];
  ck_assert_int_eq(io_send(&loop, &t1.ev, &fd, &iov1, 1, on_tx), 0);
  ck_assert_int_eq(io_send(&loop, &t2.ev, &fd, &iov2, 1, on_tx), -EBUSY);
  ck_assert_int_eq(io_send(&loop, &t1.ev, &fd, &iov2, 1, on_tx), -EBUSY);
  ck_assert_ptr_eq(fd.wr, &t1.ev);
  ck_assert(!t2.ev.armed);
  {
    uint64_t end = now_ms() + DEADLINE_MS;
    while (t1.calls == 0 && now_ms() < end)
      io_loop_once(&loop, 100);
  }
  run_for(&loop, 50);
  ck_assert_int_eq(t1.calls, 1);
  ck_assert_int_eq(t1.res, 5);
  ck_assert_int_eq(t2.calls, 0);
  ck_assert_int_eq(trecv(sv[1], got, sizeof(got)), 5);
  ck_assert_str_eq(got, "first");

  /* The write side is free again. */
  ck_assert_int_eq(io_send(&loop, &t2.ev, &fd, &iov2, 1, on_tx), 0);
  {
    uint64_t end = now_ms() + DEADLINE_MS;
    while (t2.calls == 0 && now_ms() < end)
      io_loop_once(&loop, 100);
  }
  ck_assert_int_eq(t2.calls, 1);
  ck_assert_int_eq(t2.res, 6);
  ck_assert_int_eq(t1.calls, 1);
  io_close_fd(&loop, &fd);
  tclose(sv[1]);
  io_loop_done(&loop);
}
END_TEST

START_TEST(test_io_second_recv_on_fd_is_ebusy) {
  io_loop loop;
  rx r1, r2;
  int sv[2];

  loop_setup(&loop, _i, NULL);
  make_pair(sv);
  memset(&r1, 0, sizeof(r1));
  memset(&r2, 0, sizeof(r2));
  r1.fd.fd = sv[0];
  r1.cap = r2.cap = 16;
  r1.buf = calloc(1, 16);
  r2.buf = calloc(1, 16);
  ck_assert_int_eq(io_recv(&loop, &r1.ev, &r1.fd, on_rx), 0);
  ck_assert_int_eq(io_recv(&loop, &r2.ev, &r1.fd, on_rx), -EBUSY);
  ck_assert_int_eq(io_accept(&loop, &r2.ev, &r1.fd, on_rx), -EBUSY);
  ck_assert_int_eq(tsend(sv[1], "q", 1), 1);
  {
    uint64_t end = now_ms() + DEADLINE_MS;
    while (r1.got == 0 && now_ms() < end)
      io_loop_once(&loop, 100);
  }
  ck_assert_uint_eq(r1.got, 1);
  ck_assert_int_eq(r2.data_cbs + r2.finals, 0);
  ck_assert_int_eq(io_cancel(&loop, &r1.ev), 0);
  ck_assert(run_until(&loop, &r1.finals));
  ck_assert_int_eq(r2.data_cbs + r2.finals, 0);
  io_close_fd(&loop, &r1.fd);
  tclose(sv[1]);
  free(r1.buf);
  free(r2.buf);
  io_loop_done(&loop);
}
END_TEST

/* ---- accept ---- */

typedef struct acc {
  io_ev ev;
  int fds[8];
  int n;
  int finals;
  int final_res;
  int bad;
} acc;

static void on_acc(io_ev *ev, int res, unsigned flags, char *data) {
  acc *a = (acc *)ev;
  if (!(flags & IO_F_MORE)) {
    a->finals++;
    a->final_res = res;
    if (res >= 0)
      tclose(res);
    return;
  }
  if (res < 0 || a->n >= 8) {
    a->bad = 1;
    if (res >= 0)
      tclose(res);
    return;
  }
  a->fds[a->n++] = res;
}

/* Clients connect from their own thread: a blocking call on the thread that
 * owns an io_uring may return EINTR when completion work is queued to it. */
typedef struct dialer {
  uint16_t port;
  int fds[3];
  uint16_t ports[3];
  _Atomic int connected;
  _Atomic int go_on; /* set once the first connection was accepted */
  _Atomic int err;
} dialer;

static int dial(dialer *d, int k) {
  int fd = tdial(d->port, &d->ports[k]);
  if (fd < 0) {
    atomic_store(&d->err, -fd);
    return -1;
  }
  d->fds[k] = fd;
  atomic_fetch_add(&d->connected, 1);
  return 0;
}

static void *dial_thread(void *arg) {
  dialer *d = arg;
  uint64_t end = now_ms() + DEADLINE_MS;

  if (dial(d, 0) < 0)
    return NULL;
  /* One accepted while the loop waits, the other two while it is busy. */
  while (!atomic_load(&d->go_on) && now_ms() < end)
    sleep_ms(1);
  if (dial(d, 1) == 0)
    dial(d, 2);
  return NULL;
}

START_TEST(test_io_accept_multishot_three_connects) {
  io_loop loop;
  io_fd lfd = {0};
  acc a = {0};
  dialer d = {0};
  os_thread th;
  int s;

  loop_setup(&loop, _i, NULL);
  s = tlisten(16);
  d.port = local_port(s);
  lfd.fd = s;
  ck_assert_int_eq(io_accept(&loop, &a.ev, &lfd, on_acc), 0);
  io_loop_once(&loop, 0);

  ck_assert_int_eq(os_thread_create(&th, dial_thread, &d), 0);
  {
    uint64_t end = now_ms() + DEADLINE_MS;
    while (a.n < 1 && now_ms() < end)
      io_loop_once(&loop, 100);
  }
  ck_assert_int_eq(a.n, 1);
  atomic_store(&d.go_on, 1);
  {
    uint64_t end = now_ms() + DEADLINE_MS;
    while (a.n < 3 && now_ms() < end)
      io_loop_once(&loop, 100);
  }
  os_thread_join(th);
  ck_assert_int_eq(atomic_load(&d.err), 0);
  ck_assert_int_eq(atomic_load(&d.connected), 3);
  run_for(&loop, 50);
  ck_assert_int_eq(a.bad, 0);
  ck_assert_int_eq(a.n, 3);
  ck_assert_int_eq(a.finals, 0);
  ck_assert(a.ev.armed);
  /* Each accepted fd is the server end of one of the clients, in order. */
  for (int k = 0; k < 3; k++) {
    ck_assert_int_ge(a.fds[k], 0);
    ck_assert_uint_eq(peer_port(a.fds[k]), d.ports[k]);
  }

  ck_assert_int_eq(io_cancel(&loop, &a.ev), 0);
  ck_assert(run_until(&loop, &a.finals));
  run_for(&loop, 50);
  ck_assert_int_eq(a.finals, 1);
  ck_assert_msg(a.final_res == -ECANCELED || a.final_res == 0, "final res %d", a.final_res);
  ck_assert_int_eq(a.n, 3);
  io_close_fd(&loop, &lfd);
  for (int k = 0; k < 3; k++) {
    tclose(a.fds[k]);
    tclose(d.fds[k]);
  }
  io_loop_done(&loop);
}
END_TEST

/* ---- bursts, big sends, teardown ---- */

#define BURST_CONNS 200

typedef struct burst_acc {
  io_ev ev;
  int fds[BURST_CONNS];
  int n;
  int finals;
  int extra; /* accepted beyond BURST_CONNS, or res < 0 with IO_F_MORE */
} burst_acc;

static void on_burst_acc(io_ev *ev, int res, unsigned flags, char *data) {
  burst_acc *a = (burst_acc *)ev;
  if (!(flags & IO_F_MORE)) {
    a->finals++;
    if (res >= 0)
      tclose(res);
    return;
  }
  if (res < 0 || a->n >= BURST_CONNS) {
    a->extra++;
    if (res >= 0)
      tclose(res);
    return;
  }
  a->fds[a->n++] = res;
}

typedef struct burst_dialer {
  uint16_t port;
  int fds[BURST_CONNS];
  uint16_t ports[BURST_CONNS];
  _Atomic int connected;
  _Atomic int err;
} burst_dialer;

static void *burst_dial_thread(void *arg) {
  burst_dialer *d = arg;
  for (int k = 0; k < BURST_CONNS; k++) {
    int fd = tdial(d->port, &d->ports[k]);
    if (fd < 0) {
      atomic_store(&d->err, -fd);
      return NULL;
    }
    d->fds[k] = fd;
    atomic_fetch_add(&d->connected, 1);
  }
  return NULL;
}

/* 200 connections as fast as one thread can make them: every one is
 * accepted exactly once (IOCP: with 8 AcceptEx calls outstanding, re-posted
 * as each completes), and each accepted socket is the server end of one of
 * them (getpeername works on it: SO_UPDATE_ACCEPT_CONTEXT). */
START_TEST(test_io_accept_burst_of_200_connects) {
  static burst_acc a;
  static burst_dialer d;
  io_loop loop;
  io_fd lfd = {0};
  os_thread th;
  uint64_t end;
  int s, missing = 0;

  memset(&a, 0, sizeof(a));
  memset(&d, 0, sizeof(d));
  loop_setup(&loop, _i, NULL);
  s = tlisten(BURST_CONNS);
  d.port = local_port(s);
  lfd.fd = s;
  ck_assert_int_eq(io_accept(&loop, &a.ev, &lfd, on_burst_acc), 0);
  io_loop_once(&loop, 0);
  ck_assert_int_eq(os_thread_create(&th, burst_dial_thread, &d), 0);
  end = now_ms() + 4 * DEADLINE_MS;
  while (a.n < BURST_CONNS && now_ms() < end)
    io_loop_once(&loop, 50);
  os_thread_join(th);
  ck_assert_int_eq(atomic_load(&d.err), 0);
  ck_assert_int_eq(atomic_load(&d.connected), BURST_CONNS);
  run_for(&loop, 50);
  ck_assert_int_eq(a.n, BURST_CONNS);
  ck_assert_int_eq(a.extra, 0);
  ck_assert_int_eq(a.finals, 0);
  /* The same set of ports, whatever the order. */
  for (int k = 0; k < BURST_CONNS; k++) {
    uint16_t p = peer_port(a.fds[k]);
    int found = 0;
    for (int j = 0; j < BURST_CONNS && !found; j++)
      found = d.ports[j] == p;
    missing += !found;
  }
  ck_assert_int_eq(missing, 0);
  ck_assert_int_eq(io_cancel(&loop, &a.ev), 0);
  ck_assert(run_until(&loop, &a.finals));
  run_for(&loop, 30);
  ck_assert_int_eq(a.finals, 1);
  io_close_fd(&loop, &lfd);
  for (int k = 0; k < BURST_CONNS; k++) {
    tclose(a.fds[k]);
    tclose(d.fds[k]);
  }
  io_loop_done(&loop);
}
END_TEST

#define RESET_CONNS 500

typedef struct reset_acc {
  io_ev ev;
  int n;
  int finals;
  int final_res;
  int errors; /* res < 0 with IO_F_MORE */
  _Atomic int good_port; /* the well-behaved client's port, once dialled */
  /* Peer ports of what was accepted: the good client may be accepted
   * before its dialler has stored good_port. */
  uint16_t ports[RESET_CONNS + 1];
  int nports;
} reset_acc;

static int good_accepted(reset_acc *a) {
  int port = atomic_load(&a->good_port);
  for (int k = 0; port && k < a->nports; k++)
    if (a->ports[k] == port)
      return 1;
  return 0;
}

static void on_reset_acc(io_ev *ev, int res, unsigned flags, char *data) {
  reset_acc *a = (reset_acc *)ev;
  struct sockaddr_in in;
  socklen_t len = sizeof(in);
  if (!(flags & IO_F_MORE)) {
    a->finals++;
    a->final_res = res;
  }
  if (res < 0) {
    a->errors += (flags & IO_F_MORE) != 0;
    return;
  }
  a->n++;
  /* A reset connection may have no peer any more: no ck_assert here. */
  if (getpeername(res, (struct sockaddr *)&in, &len) == 0 && a->nports < RESET_CONNS + 1)
    a->ports[a->nports++] = ntohs(in.sin_port);
  tclose(res);
}

typedef struct reset_dialer {
  uint16_t port;
  reset_acc *a;
  int good;
  _Atomic int done;
  _Atomic int err;
} reset_dialer;

/* RESET_CONNS clients that connect and reset at once (SO_LINGER 0), then
 * one that connects and stays. */
static void *reset_dial_thread(void *arg) {
  reset_dialer *d = arg;
  uint16_t me;
  for (int k = 0; k < RESET_CONNS; k++) {
    int fd = tdial(d->port, NULL);
    if (fd < 0) {
      atomic_store(&d->err, -fd);
      atomic_store(&d->done, 1);
      return NULL;
    }
    os_sock_abort(fd);
  }
  d->good = tdial(d->port, &me);
  if (d->good < 0)
    atomic_store(&d->err, -d->good);
  else
    atomic_store(&d->a->good_port, me);
  atomic_store(&d->done, 1);
  return NULL;
}

/* Clients that reset their connection before it is taken cost the listener
 * nothing: the accept stays armed (no final completion, no error delivered)
 * and the next well-behaved client is accepted. IOCP: the reset AcceptEx
 * completes with WSAECONNRESET on Windows, WSAENOTCONN under Wine; either
 * one re-posts that AcceptEx alone. */
START_TEST(test_io_accept_survives_clients_that_reset) {
  static reset_acc a;
  static reset_dialer d;
  io_loop loop;
  io_fd lfd = {0};
  os_thread th;
  uint64_t end;
  int s;

  memset(&a, 0, sizeof(a));
  memset(&d, 0, sizeof(d));
  loop_setup(&loop, _i, NULL);
  s = tlisten(RESET_CONNS + 1);
  d.port = local_port(s);
  d.a = &a;
  lfd.fd = s;
  ck_assert_int_eq(io_accept(&loop, &a.ev, &lfd, on_reset_acc), 0);
  io_loop_once(&loop, 0);
  ck_assert_int_eq(os_thread_create(&th, reset_dial_thread, &d), 0);
  end = now_ms() + 4 * DEADLINE_MS;
  while ((!atomic_load(&d.done) || !good_accepted(&a)) && !a.finals && now_ms() < end)
    io_loop_once(&loop, 50);
  os_thread_join(th);
  ck_assert_int_eq(atomic_load(&d.err), 0);
  ck_assert_msg(a.finals == 0, "the accept ended: %d (%s) after %d accepted", a.final_res,
                os_strerror(-a.final_res), a.n);
  ck_assert_int_eq(a.errors, 0);
  ck_assert(a.ev.armed);
  ck_assert_msg(good_accepted(&a), "the client after the resets was not accepted (%d accepted)",
                a.n);
  ck_assert_int_eq(io_cancel(&loop, &a.ev), 0);
  ck_assert(run_until(&loop, &a.finals));
  ck_assert_int_eq(a.finals, 1);
  io_close_fd(&loop, &lfd);
  tclose(d.good);
  io_loop_done(&loop);
}
END_TEST

/* A recv waiting for data (IOCP: a zero-byte WSARecv with the kernel) that
 * is cancelled ends with exactly one final completion, -ECANCELED. */
START_TEST(test_io_cancel_waiting_recv_ends_with_ecanceled) {
  io_loop loop;
  rx r;
  int sv[2];

  rx_setup(&loop, _i, &r, sv);
  ck_assert_int_eq(io_recv(&loop, &r.ev, &r.fd, on_rx), 0);
  run_for(&loop, 30); /* waiting, no data */
  ck_assert_int_eq(r.finals + r.data_cbs, 0);
  ck_assert_int_eq(io_cancel(&loop, &r.ev), 0);
  ck_assert(run_until(&loop, &r.finals));
  ck_assert_int_eq(tsend(sv[1], "late", 4), 4);
  run_for(&loop, 100);
  ck_assert_int_eq(r.finals, 1);
  ck_assert_int_eq(r.final_res, -ECANCELED);
  ck_assert_int_eq(r.after_final, 0);
  ck_assert_uint_eq(r.got, 0);
  ck_assert(!r.ev.armed);
  io_close_fd(&loop, &r.fd);
  tclose(sv[1]);
  free(r.buf);
  io_loop_done(&loop);
}
END_TEST

#ifndef _WIN32
/* CPU cpu's idle and iowait times from /proc/stat, in clock ticks (what top
 * shows as "id" and "wa"). 0 on success. */
static int cpu_idle_iowait(int cpu, unsigned long long *idle, unsigned long long *iowait) {
  char want[32], line[512];
  FILE *f = fopen("/proc/stat", "r");
  int found = 0;

  if (!f)
    return -1;
  snprintf(want, sizeof want, "cpu%d ", cpu);
  while (!found && fgets(line, sizeof line, f))
    found = strncmp(line, want, strlen(want)) == 0 &&
            sscanf(line + strlen(want), "%*u %*u %*u %llu %llu", idle, iowait) == 2;
  fclose(f);
  return found ? 0 : -1;
}

/* The microseconds some task has been stalled on I/O since boot, from
 * /proc/pressure/io's "some" line; -1 where the kernel has no PSI. */
static long long io_pressure_us(void) {
  char line[256];
  long long total = -1;
  FILE *f = fopen("/proc/pressure/io", "r");

  if (!f)
    return -1;
  while (fgets(line, sizeof line, f))
    if (strncmp(line, "some ", 5) == 0) {
      const char *t = strstr(line, "total=");
      if (t)
        total = atoll(t + 6);
    }
  fclose(f);
  return total;
}

/* Whether this kernel's rings can be asked not to count a wait as I/O wait
 * (IORING_FEAT_NO_IOWAIT, Linux 6.15; liburing 2.3 does not name it). */
static int ring_can_skip_iowait(void) {
  struct io_uring ring;
  int can;

  if (io_uring_queue_init(2, &ring, 0) < 0)
    return 0;
  can = (ring.features & (1U << 17)) != 0;
  io_uring_queue_exit(&ring);
  return can;
}

/* What CPU cpu and the system's I/O pressure did over one span. */
typedef struct cpu_span {
  unsigned long long idle, iowait; /* ticks */
  long long psi_us;                /* -1: no PSI */
  uint64_t ms;
} cpu_span;

/* One second of CPU cpu: the loop waiting in io_loop_once (with nothing to
 * come), or, loop NULL, this thread asleep. 0 on success. */
static int measure_second(int cpu, io_loop *loop, cpu_span *sp) {
  unsigned long long idle0, wa0;
  long long psi0 = io_pressure_us();
  uint64_t t0;

  if (cpu_idle_iowait(cpu, &idle0, &wa0) != 0)
    return -1;
  t0 = now_ms();
  for (;;) {
    int64_t left = 1000 - (int64_t)(now_ms() - t0);
    if (left <= 0)
      break;
    if (loop)
      io_loop_once(loop, (int)left);
    else
      sleep_ms((int)left);
  }
  sp->ms = now_ms() - t0;
  if (cpu_idle_iowait(cpu, &sp->idle, &sp->iowait) != 0)
    return -1;
  sp->idle -= idle0;
  sp->iowait -= wa0;
  sp->psi_us = io_pressure_us();
  sp->psi_us = psi0 >= 0 && sp->psi_us >= 0 ? sp->psi_us - psi0 : -1;
  return 0;
}

/* A loop blocked with a recv in flight and no data is an idle server, and
 * the CPU it waits on reads as idle, not as waiting for I/O, nor as I/O
 * pressure: io_uring would otherwise count every such wait as iowait
 * (Linux 6.5 to 6.14, and stable kernels that took the same change, cannot
 * be asked not to). The thread is pinned so the wait is accounted to one
 * known CPU, and the same CPU asleep for a second first is the baseline
 * that other tasks' I/O waits show in too. The readings are checked after
 * the affinity is restored and the loop is gone (CK_FORK=no shares the
 * process with the cases after). */
START_TEST(test_io_a_loop_waiting_on_a_socket_leaves_its_cpu_idle_not_in_iowait) {
  io_loop loop;
  rx r;
  int sv[2], cpu = sched_getcpu(), pinned, got_base = -1, got_wait = -1, finals;
  int must = strcmp(test_io_backend(_i), "io_uring") != 0 || ring_can_skip_iowait();
  cpu_set_t was, one;
  cpu_span base = {0}, wait = {0};
  long hz = sysconf(_SC_CLK_TCK);
  unsigned long long ticks, idle0, wa0;

  ck_assert_int_ge(cpu, 0);
  if (cpu_idle_iowait(cpu, &idle0, &wa0) != 0) {
    fprintf(stderr, "no /proc/stat line for CPU %d here: the idle-wait case is not run\n", cpu);
    return;
  }
  ck_assert_int_gt(hz, 0);
  ck_assert_int_eq(sched_getaffinity(0, sizeof was, &was), 0);
  CPU_ZERO(&one);
  CPU_SET(cpu, &one);
  pinned = sched_setaffinity(0, sizeof one, &one);
  rx_setup(&loop, _i, &r, sv);
  if (pinned == 0 && io_recv(&loop, &r.ev, &r.fd, on_rx) == 0) {
    run_for(&loop, 30); /* armed and in flight */
    got_base = measure_second(cpu, NULL, &base);
    got_wait = measure_second(cpu, &loop, &wait);
  }
  finals = r.data_cbs + r.finals;
  if (r.ev.armed && io_cancel(&loop, &r.ev) == 0)
    run_until(&loop, &r.finals);
  io_close_fd(&loop, &r.fd);
  tclose(sv[1]);
  free(r.buf);
  io_loop_done(&loop);
  ck_assert_int_eq(sched_setaffinity(0, sizeof was, &was), 0);

  ck_assert_int_eq(pinned, 0);
  ck_assert_int_eq(got_base, 0);
  ck_assert_int_eq(got_wait, 0);
  ck_assert_int_eq(finals, 0);
  ticks = wait.ms * (uint64_t)hz / 1000;
  ck_assert_msg(wait.idle + wait.iowait >= ticks / 2,
                "CPU %d was idle for %llu ticks of the %llu the loop waited: something else ran",
                cpu, wait.idle + wait.iowait, ticks);
  if (!must)
    return;
  ck_assert_msg(wait.iowait <= base.iowait + ticks / 20,
                "%s: CPU %d was in iowait for %llu of the %llu ticks the loop waited (idle %llu; "
                "%llu while asleep)",
                test_io_backend(_i), cpu, wait.iowait, ticks, wait.idle, base.iowait);
  /* I/O pressure is the whole system's: a wait counted as a stall adds its
   * full second; allow others' I/O half of it beyond the baseline's. */
  if (wait.psi_us >= 0 && base.psi_us >= 0)
    ck_assert_msg(wait.psi_us < base.psi_us + (long long)wait.ms * 500,
                  "%s: /proc/pressure/io rose by %lld us while the loop waited %llu ms "
                  "(%lld us while asleep)",
                  test_io_backend(_i), wait.psi_us, (unsigned long long)wait.ms, base.psi_us);
}
END_TEST
#endif

/* Fills an owner with a byte so a later write into it (a completion
 * reaching memory its owner has given up) is seen. */
#define POISON 0xa5

static int poisoned(const void *p, size_t len) {
  const unsigned char *b = p;
  for (size_t k = 0; k < len; k++)
    if (b[k] != POISON)
      return 0;
  return 1;
}

/* io_close_fd while a recv waits: one final completion, and after it
 * nothing touches the owner, which is then poisoned as if freed. With
 * cancel_first the recv is cancelled just before (every backend); without,
 * io_close_fd alone must end it (IOCP: it cancels the zero-byte WSARecv
 * before closesocket). */
static void close_waiting_recv(int i, int cancel_first) {
  io_loop loop;
  rx *r = calloc(1, sizeof(*r));
  int sv[2];

  ck_assert_ptr_nonnull(r);
  loop_setup(&loop, i, NULL);
  make_pair(sv);
  r->fd.fd = sv[0];
  r->cap = 64;
  r->buf = calloc(1, r->cap);
  ck_assert_int_eq(io_recv(&loop, &r->ev, &r->fd, on_rx), 0);
  run_for(&loop, 30);
  if (cancel_first)
    ck_assert_int_eq(io_cancel(&loop, &r->ev), 0);
  io_close_fd(&loop, &r->fd);
  ck_assert_int_eq(r->fd.fd, -1);
  ck_assert(run_until(&loop, &r->finals));
  ck_assert_int_eq(r->finals, 1);
  ck_assert_int_eq(r->final_res, -ECANCELED);
  ck_assert(!r->ev.armed);
  free(r->buf);
  memset(r, POISON, sizeof(*r));
  tsend(sv[1], "after", 5); /* the peer may see a reset: any result will do */
  run_for(&loop, 100);
  io_loop_done(&loop);
  ck_assert_msg(poisoned(r, sizeof(*r)), "the owner was written after its final completion");
  free(r);
  tclose(sv[1]);
}

START_TEST(test_io_cancel_and_close_fd_leave_owner_alone) {
  close_waiting_recv(_i, 1);
}
END_TEST

START_TEST(test_io_close_fd_alone_ends_waiting_recv) {
  /* io_uring and epoll take io.h's rule (no op armed at io_close_fd) as
   * given: there the fd's recv outlives the close. */
  if (strcmp(test_io_backend(_i), "iocp") != 0)
    return;
  close_waiting_recv(_i, 0);
}
END_TEST

/* io_loop_done with a recv waiting, a send blocked on a full socket and an
 * accept armed: no callback runs, and once it returns nothing writes into
 * the owners (IOCP: every OVERLAPPED was cancelled and dequeued). */
START_TEST(test_io_loop_done_with_ops_in_flight) {
  static char filler[65536];
  io_loop loop;
  struct owners {
    rx r;
    tx t;
    acc a;
    io_fd wfd, lfd;
  } *o = calloc(1, sizeof(*o));
  int rsv[2], wsv[2], l;
  struct iovec iov = IOV(filler, sizeof(filler));

  ck_assert_ptr_nonnull(o);
  loop_setup(&loop, _i, NULL);
  make_pair(rsv);
  make_pair(wsv);
  l = tlisten(4);
  o->r.fd.fd = rsv[0];
  o->r.cap = 16;
  o->r.buf = calloc(1, 16);
  o->wfd.fd = wsv[0];
  o->lfd.fd = l;
  while (tsend_nb(wsv[0], filler, sizeof(filler)) > 0) {
  }
  ck_assert_int_eq(io_recv(&loop, &o->r.ev, &o->r.fd, on_rx), 0);
  ck_assert_int_eq(io_send(&loop, &o->t.ev, &o->wfd, &iov, 1, on_tx), 0);
  ck_assert_int_eq(io_accept(&loop, &o->a.ev, &o->lfd, on_acc), 0);
  run_for(&loop, 30);
  ck_assert_int_eq(o->r.finals + o->r.data_cbs + o->t.calls + o->a.n + o->a.finals, 0);
  io_loop_done(&loop);
  ck_assert_int_eq(o->r.finals + o->r.data_cbs + o->t.calls + o->a.n + o->a.finals, 0);
  free(o->r.buf);
  memset(o, POISON, sizeof(*o));
  /* Let the peers go away too: anything still queued would land now. */
  tclose(rsv[1]);
  tclose(wsv[1]);
  sleep_ms(50);
  ck_assert_msg(poisoned(o, sizeof(*o)), "an owner was written after io_loop_done");
  tclose(rsv[0]);
  tclose(wsv[0]);
  tclose(l);
  free(o);
}
END_TEST

#define BIG_PARTS 64
#define BIG_BYTES (4u << 20)

typedef struct big_reader {
  int fd;
  unsigned char *got;
  size_t len;
  _Atomic int done;
  _Atomic int err;
} big_reader;

static void *big_read_thread(void *arg) {
  big_reader *b = arg;
  while (b->len < BIG_BYTES) {
    int n = trecv(b->fd, b->got + b->len, BIG_BYTES - b->len);
    if (n <= 0) {
      atomic_store(&b->err, n == 0 ? EPIPE : os_sock_errno());
      break;
    }
    b->len += (size_t)n;
  }
  atomic_store(&b->done, 1);
  return NULL;
}

/* 4 MiB in 64 iovecs, far more than the socket buffer: resubmitted from
 * where each completion left off (as the session's send queue does), it
 * arrives byte for byte. */
START_TEST(test_io_send_4mib_in_64_iovecs_arrives_exact) {
  io_loop loop;
  io_fd fd = {0};
  tx t = {0};
  big_reader br = {0};
  os_thread th;
  unsigned char *src = malloc(BIG_BYTES);
  struct iovec iov[BIG_PARTS];
  size_t sent = 0, part = BIG_BYTES / BIG_PARTS, bad_at = SIZE_MAX;
  int sv[2], sends = 0;
  uint64_t end;

  ck_assert_ptr_nonnull(src);
  br.got = malloc(BIG_BYTES);
  ck_assert_ptr_nonnull(br.got);
  for (size_t k = 0; k < BIG_BYTES; k++)
    src[k] = test_pattern(77, k);
  loop_setup(&loop, _i, NULL);
  make_pair(sv);
  set_blocking(sv[1]);
  fd.fd = sv[0];
  br.fd = sv[1];
  ck_assert_int_eq(os_thread_create(&th, big_read_thread, &br), 0);
  end = now_ms() + 4 * DEADLINE_MS;
  while (sent < BIG_BYTES && now_ms() < end) {
    int n = 0;
    /* The iovecs of what is left, from the first unsent byte. */
    for (size_t off = sent; off < BIG_BYTES && n < BIG_PARTS; n++) {
      size_t stop = (off / part + 1) * part;
      iov[n].iov_base = src + off;
      iov[n].iov_len = (unsigned long)(stop - off);
      off = stop;
    }
    t.calls = 0;
    ck_assert_int_eq(io_send(&loop, &t.ev, &fd, iov, n, on_tx), 0);
    sends++;
    while (t.calls == 0 && now_ms() < end)
      io_loop_once(&loop, 50);
    ck_assert_int_eq(t.calls, 1);
    ck_assert_msg(t.res > 0, "send %d: %d", sends, t.res);
    sent += (size_t)t.res;
  }
  ck_assert_uint_eq(sent, BIG_BYTES);
  end = now_ms() + DEADLINE_MS;
  while (!atomic_load(&br.done) && now_ms() < end)
    sleep_ms(5);
  if (!atomic_load(&br.done))
    shutdown(sv[1], 2);
  os_thread_join(th);
  ck_assert_int_eq(atomic_load(&br.err), 0);
  ck_assert_uint_eq(br.len, BIG_BYTES);
  for (size_t k = 0; k < BIG_BYTES && bad_at == SIZE_MAX; k++)
    if (br.got[k] != src[k])
      bad_at = k;
  ck_assert_msg(bad_at == SIZE_MAX, "byte %zu differs", bad_at);
  io_close_fd(&loop, &fd);
  tclose(sv[1]);
  io_loop_done(&loop);
  free(src);
  free(br.got);
}
END_TEST

/* A listener whose backend ties a socket to one loop (shared_accept 0,
 * IOCP) cannot accept on a second loop: -EINVAL, and no callback. Where
 * loops may share it, both accept. */
START_TEST(test_io_second_loop_accept_follows_shared_accept) {
  io_loop l1, l2;
  io_fd f1 = {0}, f2 = {0};
  acc a1 = {0}, a2 = {0};
  int s, rc;

  loop_setup(&l1, _i, NULL);
  loop_setup(&l2, _i, NULL);
  s = tlisten(4);
  f1.fd = f2.fd = s;
  f1.shared = f2.shared = 1;
  ck_assert_int_eq(io_accept(&l1, &a1.ev, &f1, on_acc), 0);
  rc = io_accept(&l2, &a2.ev, &f2, on_acc);
  if (l2.be->shared_accept) {
    ck_assert_int_eq(rc, 0);
    ck_assert_int_eq(io_cancel(&l2, &a2.ev), 0);
    ck_assert(run_until(&l2, &a2.finals));
  } else {
    ck_assert_int_eq(rc, -EINVAL);
    ck_assert(!a2.ev.armed);
    ck_assert_ptr_null(f2.rd);
    run_for(&l2, 30);
    ck_assert_int_eq(a2.finals + a2.n, 0);
  }
  ck_assert_int_eq(io_cancel(&l1, &a1.ev), 0);
  ck_assert(run_until(&l1, &a1.finals));
  io_close_fd(&l1, &f1);
  io_close_fd(&l2, &f2);
  tclose(s);
  io_loop_done(&l1);
  io_loop_done(&l2);
}
END_TEST

/* A recv that hits the per-wake-up read cap keeps its place while a send
 * on the same fd completes: all of a 64 KiB backlog arrives. */
typedef struct echo_rx {
  rx r;
  tx t;
  int sends;
} echo_rx;

static io_loop *echo_loop;

static void on_echo_rx(io_ev *ev, int res, unsigned flags, char *data) {
  echo_rx *e = (echo_rx *)((char *)ev - offsetof(echo_rx, r.ev));
  static struct iovec iov = IOV("k", 1);
  on_rx(ev, res, flags, data);
  if (res > 0 && !e->t.ev.armed && io_send(echo_loop, &e->t.ev, &e->r.fd, &iov, 1, on_tx) == 0)
    e->sends++;
}

START_TEST(test_io_recv_backlog_survives_sends_on_same_fd) {
  io_opts o = {.buf_count = 16, .buf_size = 1024};
  static char chunk[65536];
  io_loop loop;
  echo_rx *e = calloc(1, sizeof(*e));
  int sv[2], put = 0;
  uint64_t end;

  ck_assert_ptr_nonnull(e);
  loop_setup(&loop, _i, &o);
  echo_loop = &loop;
  make_pair(sv);
  for (size_t k = 0; k < sizeof(chunk); k++)
    chunk[k] = (char)test_pattern(9, k);
  while (put < (int)sizeof(chunk)) {
    int n = tsend_nb(sv[1], chunk + put, sizeof(chunk) - (size_t)put);
    ck_assert_int_gt(n, 0);
    put += n;
  }
  e->r.fd.fd = sv[0];
  e->r.cap = sizeof(chunk);
  e->r.buf = malloc(e->r.cap);
  ck_assert_int_eq(io_recv(&loop, &e->r.ev, &e->r.fd, on_echo_rx), 0);
  end = now_ms() + DEADLINE_MS;
  while (e->r.got < sizeof(chunk) && now_ms() < end)
    io_loop_once(&loop, 50);
  ck_assert_uint_eq(e->r.got, sizeof(chunk));
  ck_assert_int_eq(memcmp(e->r.buf, chunk, sizeof(chunk)), 0);
  ck_assert_int_gt(e->sends, 1);
  ck_assert_int_eq(e->r.finals, 0);
  ck_assert_int_eq(io_cancel(&loop, &e->r.ev), 0);
  ck_assert(run_until(&loop, &e->r.finals));
  end = now_ms() + DEADLINE_MS;
  while (e->t.ev.armed && now_ms() < end)
    io_loop_once(&loop, 50);
  io_close_fd(&loop, &e->r.fd);
  tclose(sv[1]);
  free(e->r.buf);
  free(e);
  io_loop_done(&loop);
}
END_TEST

int main(void) {
  Suite *s = suite_create("io");
  TCase *tc = tcase_create("loop");

  tcase_set_timeout(tc, 120);
  tcase_add_loop_test(tc, test_io_timers_fire_in_due_order, 0, TEST_IO_NBACKENDS);
  tcase_add_loop_test(tc, test_io_stopped_timer_never_fires, 0, TEST_IO_NBACKENDS);
  tcase_add_loop_test(tc, test_io_timer_restart_moves_due_time, 0, TEST_IO_NBACKENDS);
  tcase_add_loop_test(tc, test_io_repeating_timer_fires_until_stopped, 0, TEST_IO_NBACKENDS);
  tcase_add_loop_test(tc, test_io_huge_timer_delay_never_fires, 0, TEST_IO_NBACKENDS);
  tcase_add_loop_test(tc, test_io_post_wakes_blocked_loop, 0, TEST_IO_NBACKENDS);
  tcase_add_loop_test(tc, test_io_post_from_many_threads_runs_each_once, 0, TEST_IO_NBACKENDS);
  tcase_add_loop_test(tc, test_io_request_response_one_wait_per_round_trip, 0,
                      TEST_IO_NBACKENDS);
  tcase_add_loop_test(tc, test_io_trim_gives_back_receive_buffers, 0, TEST_IO_NBACKENDS);
  tcase_add_loop_test(tc, test_io_loop_done_runs_unrun_jobs, 0, TEST_IO_NBACKENDS);
  tcase_add_loop_test(tc, test_io_recv_multishot_delivers_stream_in_order, 0, TEST_IO_NBACKENDS);
  tcase_add_loop_test(tc, test_io_recv_tiny_buffer_ring_rearms, 0, TEST_IO_NBACKENDS);
  tcase_add_loop_test(tc, test_io_stats_count_every_completion, 0, TEST_IO_NBACKENDS);
  tcase_add_loop_test(tc, test_io_recv_data_before_arm_is_delivered, 0, TEST_IO_NBACKENDS);
  tcase_add_loop_test(tc, test_io_cancel_recv_one_final_completion, 0, TEST_IO_NBACKENDS);
  tcase_add_loop_test(tc, test_io_cancel_recv_after_data_one_final_completion, 0,
                      TEST_IO_NBACKENDS);
  tcase_add_loop_test(tc, test_io_cancel_before_first_poll, 0, TEST_IO_NBACKENDS);
  tcase_add_loop_test(tc, test_io_send_three_iovecs_one_completion, 0, TEST_IO_NBACKENDS);
  tcase_add_loop_test(tc, test_io_try_send_sends_at_once_or_says_why_not, 0, TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_io_try_send_waits_behind_a_queued_send_on_io_uring, 0,
                      TEST_NBACKENDS);
  tcase_add_loop_test(tc, test_io_send_on_full_socket_completes_when_drained, 0,
                      TEST_IO_NBACKENDS);
  tcase_add_loop_test(tc, test_io_send_while_send_armed_is_ebusy, 0, TEST_IO_NBACKENDS);
  tcase_add_loop_test(tc, test_io_second_recv_on_fd_is_ebusy, 0, TEST_IO_NBACKENDS);
  tcase_add_loop_test(tc, test_io_accept_multishot_three_connects, 0, TEST_IO_NBACKENDS);
  tcase_add_loop_test(tc, test_io_recv_backlog_survives_sends_on_same_fd, 0, TEST_IO_NBACKENDS);
  tcase_add_loop_test(tc, test_io_accept_burst_of_200_connects, 0, TEST_IO_NBACKENDS);
  tcase_add_loop_test(tc, test_io_accept_survives_clients_that_reset, 0, TEST_IO_NBACKENDS);
  tcase_add_loop_test(tc, test_io_cancel_waiting_recv_ends_with_ecanceled, 0, TEST_IO_NBACKENDS);
#ifndef _WIN32
  tcase_add_loop_test(tc, test_io_a_loop_waiting_on_a_socket_leaves_its_cpu_idle_not_in_iowait, 0,
                      TEST_IO_NBACKENDS);
#endif
  tcase_add_loop_test(tc, test_io_cancel_and_close_fd_leave_owner_alone, 0, TEST_IO_NBACKENDS);
  tcase_add_loop_test(tc, test_io_close_fd_alone_ends_waiting_recv, 0, TEST_IO_NBACKENDS);
  tcase_add_loop_test(tc, test_io_loop_done_with_ops_in_flight, 0, TEST_IO_NBACKENDS);
  tcase_add_loop_test(tc, test_io_send_4mib_in_64_iovecs_arrives_exact, 0, TEST_IO_NBACKENDS);
  tcase_add_loop_test(tc, test_io_second_loop_accept_follows_shared_accept, 0,
                      TEST_IO_NBACKENDS);
  suite_add_tcase(s, tc);
  return test_run(s);
}
