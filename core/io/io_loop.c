/* The backend-independent half of an event loop: the iteration (poll, posted
 * jobs, due timers), the timer heap, the cross-thread inbox (its wake-up is
 * the backend's: an eventfd on Linux, a posted completion on Windows), and
 * the op wrappers that keep io_ev/io_fd bookkeeping in one place so every
 * backend sees the same invariants. What differs by platform (which backends
 * exist, the eventfd) is in io_platform_<os>.c. */
#include "io/io.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "io/io_platform.h"

int io_loop_init(io_loop *loop, const io_backend *be, const io_opts *opts) {
  int rc;

  memset(loop, 0, sizeof(*loop));
  loop->be = be;
  loop->opts = *opts;
  if (loop->opts.entries == 0)
    loop->opts.entries = 1024;
  /* Many small buffers: with a thousand sessions each receiving a small
   * packet per round trip, every completion takes one buffer until it is
   * handled, and an empty ring costs a -ENOBUFS completion and a re-arm. */
  if (loop->opts.buf_count == 0)
    loop->opts.buf_count = 1024;
  if (loop->opts.buf_size == 0)
    loop->opts.buf_size = 2048;
  loop->now = clock_ms();
  rc = io_wake_open(loop);
  if (rc < 0)
    return rc;
  rc = be->init(loop, &loop->opts);
  if (rc < 0) {
    io_wake_close(loop);
    return rc;
  }
  return 0;
}

static int run_inbox(io_loop *loop);

void io_loop_done(io_loop *loop) {
  loop->be->done(loop);
  io_wake_close(loop);
  /* Jobs nobody will run still own memory: run them so they can free it. */
  run_inbox(loop);
  free(loop->heap);
}

/* ---- timers: a binary min-heap on due time ---- */

static int timer_before(const io_timer *a, const io_timer *b) { return a->due < b->due; }

static void heap_swap(io_loop *loop, size_t i, size_t j) {
  io_timer *t = loop->heap[i];
  loop->heap[i] = loop->heap[j];
  loop->heap[j] = t;
  loop->heap[i]->index = i;
  loop->heap[j]->index = j;
}

static void heap_up(io_loop *loop, size_t i) {
  while (i > 0) {
    size_t parent = (i - 1) / 2;
    if (!timer_before(loop->heap[i], loop->heap[parent]))
      break;
    heap_swap(loop, i, parent);
    i = parent;
  }
}

static void heap_down(io_loop *loop, size_t i) {
  for (;;) {
    size_t l = 2 * i + 1, r = l + 1, m = i;
    if (l < loop->heap_len && timer_before(loop->heap[l], loop->heap[m]))
      m = l;
    if (r < loop->heap_len && timer_before(loop->heap[r], loop->heap[m]))
      m = r;
    if (m == i)
      break;
    heap_swap(loop, i, m);
    i = m;
  }
}

void io_timer_init(io_timer *t, void (*cb)(io_timer *t)) {
  memset(t, 0, sizeof(*t));
  t->index = SIZE_MAX;
  t->cb = cb;
}

void io_timer_stop(io_loop *loop, io_timer *t) {
  size_t i = t->index;
  if (i == SIZE_MAX)
    return;
  t->index = SIZE_MAX;
  loop->heap_len--;
  if (i == loop->heap_len)
    return;
  loop->heap[i] = loop->heap[loop->heap_len];
  loop->heap[i]->index = i;
  heap_up(loop, i);
  heap_down(loop, loop->heap[i]->index);
}

/* now + after_ms, saturated: a delay too large to add (UINT64_MAX as
 * "practically never") must not wrap to a due time in the past. */
static uint64_t due_after(uint64_t now, uint64_t after_ms) {
  return after_ms > UINT64_MAX - now ? UINT64_MAX : now + after_ms;
}

void io_timer_start(io_loop *loop, io_timer *t, uint64_t after_ms, uint64_t repeat_ms) {
  io_timer_stop(loop, t);
  if (loop->heap_len == loop->heap_cap) {
    size_t cap = loop->heap_cap ? loop->heap_cap * 2 : 64;
    io_timer **heap = realloc(loop->heap, cap * sizeof(*heap));
    if (!heap)
      abort(); /* a timer that silently never fires is worse than a clean stop */
    loop->heap = heap;
    loop->heap_cap = cap;
  }
  t->due = due_after(loop->now, after_ms);
  t->repeat = repeat_ms;
  t->index = loop->heap_len;
  loop->heap[loop->heap_len++] = t;
  heap_up(loop, t->index);
}

static void run_timers(io_loop *loop) {
  while (loop->heap_len > 0 && loop->heap[0]->due <= loop->now) {
    io_timer *t = loop->heap[0];
    io_timer_stop(loop, t);
    if (t->repeat)
      io_timer_start(loop, t, t->repeat, t->repeat);
    t->cb(t);
  }
}

/* ---- cross-thread inbox ---- */

void io_post(io_loop *loop, io_job *job) {
  io_job *old = atomic_load_explicit(&loop->inbox, memory_order_relaxed);
  do
    job->next = old;
  while (!atomic_compare_exchange_weak(&loop->inbox, &old, job));
  /* Only the post that makes the inbox non-empty needs to wake the loop: it
   * takes the whole inbox each iteration. The push and this load are
   * sequentially consistent, as are the loop's store to `sleeping` and its
   * load of the inbox: one of the two sides sees the other. */
  if (!old && atomic_load(&loop->sleeping))
    loop->be->wake(loop);
}

void io_loop_wake(io_loop *loop) { loop->be->wake(loop); }

static int run_inbox(io_loop *loop) {
  io_job *job, *next, *fifo = NULL;
  int n = 0;
  if (!atomic_load_explicit(&loop->inbox, memory_order_relaxed))
    return 0;
  /* Acquire: the jobs' contents, written before their push, are visible. */
  job = atomic_exchange_explicit(&loop->inbox, NULL, memory_order_acquire);
  for (; job; job = next) { /* newest first: reverse into posting order */
    next = job->next;
    job->next = fifo;
    fifo = job;
  }
  for (job = fifo; job; job = next) {
    next = job->next;
    job->fn(job);
    n++;
  }
  return n;
}

/* ---- the iteration ---- */

int io_loop_once(io_loop *loop, int timeout_ms) {
  int rc;

  if (loop->prepare)
    loop->prepare(loop);
  loop->now = clock_ms();
  if (loop->heap_len > 0) {
    uint64_t due = loop->heap[0]->due;
    int until = due <= loop->now ? 0 : (int)(due - loop->now > 60000 ? 60000 : due - loop->now);
    if (timeout_ms < 0 || until < timeout_ms)
      timeout_ms = until;
  }
  if (timeout_ms != 0) {
    /* Announce the sleep before the last inbox check, so a post that lands
     * in between sees `sleeping` and writes the eventfd. */
    atomic_store(&loop->sleeping, 1);
    if (atomic_load(&loop->inbox))
      timeout_ms = 0;
  }
  rc = loop->be->poll(loop, timeout_ms);
  /* The backend refreshed loop->now after its wait. */
  atomic_store_explicit(&loop->sleeping, 0, memory_order_relaxed);
  run_inbox(loop);
  run_timers(loop);
  return rc;
}

int io_loop_run(io_loop *loop) {
  int rc = 0;
  loop->stop = 0;
  while (!loop->stop) {
    rc = io_loop_once(loop, -1);
    if (rc < 0 && rc != -EINTR && rc != -ETIME && rc != -EAGAIN) {
      log_error("io: %s loop failed: %s", loop->be->name, os_strerror(-rc));
      return rc;
    }
  }
  return 0;
}

void io_loop_stop(io_loop *loop) { loop->stop = 1; }

/* ---- operations ---- */

static int arm(io_ev *ev, io_fd *fd, io_cb cb, io_op op, io_ev **slot) {
  if (ev->armed || *slot)
    return -EBUSY;
  ev->cb = cb;
  ev->fd = fd;
  ev->op = (uint8_t)op;
  ev->canceled = 0;
  ev->armed = 1;
  *slot = ev;
  return 0;
}

static int disarm_on_error(io_ev *ev, io_ev **slot, int rc) {
  if (rc < 0) {
    ev->armed = 0;
    *slot = NULL;
  }
  return rc;
}

int io_accept(io_loop *loop, io_ev *ev, io_fd *fd, io_cb cb) {
  int rc = arm(ev, fd, cb, IO_OP_ACCEPT, &fd->rd);
  return rc < 0 ? rc : disarm_on_error(ev, &fd->rd, loop->be->accept(loop, ev));
}

int io_recv(io_loop *loop, io_ev *ev, io_fd *fd, io_cb cb) {
  int rc = arm(ev, fd, cb, IO_OP_RECV, &fd->rd);
  return rc < 0 ? rc : disarm_on_error(ev, &fd->rd, loop->be->recv(loop, ev));
}

int io_send(io_loop *loop, io_ev *ev, io_fd *fd, const struct iovec *iov, int iovcnt, io_cb cb) {
  int rc = arm(ev, fd, cb, IO_OP_SEND, &fd->wr);
  return rc < 0 ? rc : disarm_on_error(ev, &fd->wr, loop->be->send(loop, ev, iov, iovcnt));
}

int io_try_send(io_loop *loop, io_fd *fd, const struct iovec *iov, int iovcnt) {
  int rc;
  if (!loop->be->try_send)
    return -ENOTSUP;
  if (fd->wr)
    return -EBUSY; /* bytes sent now would overtake the armed send's */
  rc = loop->be->try_send(loop, fd, iov, iovcnt);
  if (rc >= 0)
    loop->stats.completions++;
  return rc;
}

int io_connect(io_loop *loop, io_ev *ev, io_fd *fd, const struct sockaddr *sa, socklen_t len,
               io_cb cb) {
  int rc = arm(ev, fd, cb, IO_OP_CONNECT, &fd->wr);
  return rc < 0 ? rc : disarm_on_error(ev, &fd->wr, loop->be->connect(loop, ev, sa, len));
}

int io_cancel(io_loop *loop, io_ev *ev) {
  if (!ev->armed)
    return -EALREADY;
  if (ev->canceled)
    return 0;
  ev->canceled = 1;
  return loop->be->cancel(loop, ev);
}

int io_submit_now(io_loop *loop) { return loop->be->submit ? loop->be->submit(loop) : 0; }

int io_loop_trim(io_loop *loop) { return loop->be->trim ? loop->be->trim(loop) : 0; }

void io_close_fd(io_loop *loop, io_fd *fd) {
  if (fd->fd < 0)
    return;
  loop->be->close_fd(loop, fd);
  if (!fd->shared)
    os_sock_close(fd->fd);
  fd->fd = -1;
}
