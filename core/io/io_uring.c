/* io_uring backend. One ring per loop, a CQ eight times the SQ, and one
 * provided-buffer ring (registered with io_uring_register_buf_ring, the
 * liburing 2.3 API) that every multishot recv of the loop draws from, so an
 * idle session holds no receive buffer. Multishot accept/recv that end without
 * IORING_CQE_F_MORE while their owner still wants them (-ENOBUFS, CQ overflow)
 * are re-armed here, invisibly to the owner. iovecs, msghdrs and addresses live
 * in a per-loop arena until the SQEs that point at them are submitted
 * (IORING_FEAT_SUBMIT_STABLE: the kernel has consumed them by then). */
#include <errno.h>
#include <liburing.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "base/log.h"
#include "io/io.h"
#include "io/io_sock_linux.h"

#define BUF_GROUP 1
#define WAKE_TAG 1u /* user_data of the eventfd poll; 0 marks CQEs to ignore */
#define ARENA_SIZE (64 * 1024)
#define BATCH 256

/* Linux 6.15: a wait entered with NO_IOWAIT does not count as waiting on
 * I/O. liburing 2.3's headers predate both names. */
#ifndef IORING_FEAT_NO_IOWAIT
#define IORING_FEAT_NO_IOWAIT (1U << 17)
#endif
#ifndef IORING_ENTER_NO_IOWAIT
#define IORING_ENTER_NO_IOWAIT (1U << 7)
#endif

typedef struct uring_impl {
  struct io_uring ring;
  struct io_uring_buf_ring *br;
  size_t br_bytes;
  char *bufs;
  size_t bufs_bytes;
  unsigned buf_count, buf_size, mask;
  char *arena;
  size_t arena_len;
  io_ev *starved; /* recvs that ran out of buffers, re-armed after the batch */
  int sends_queued; /* a send SQE made since the last poll's enter */
  int disabled;   /* created IORING_SETUP_R_DISABLED: enabled by the first enter */
  int deferred;   /* DEFER_TASKRUN: the kernel fills buffers only inside our enter */
  unsigned enter_flags; /* of every wait's io_uring_enter: GETEVENTS | EXT_ARG [| NO_IOWAIT] */
} uring_impl;

/* A loop's ring has one thread, the loop's: IORING_SETUP_SINGLE_ISSUER |
 * DEFER_TASKRUN (Linux 6.1) let the kernel run completion work in batches
 * when that thread enters the ring, instead of interrupting it. The loop is
 * made on another thread than the one that runs it, so the ring starts
 * disabled (R_DISABLED) and the thread that first submits or waits, the
 * loop's, enables it and becomes its issuer. Older kernels get the
 * cooperative flags, or none. */
static int setup_ring(struct io_uring *ring, unsigned entries, int *disabled) {
  struct io_uring_params p;
  int rc;

  memset(&p, 0, sizeof(p));
  p.flags = IORING_SETUP_CQSIZE | IORING_SETUP_SUBMIT_ALL | IORING_SETUP_SINGLE_ISSUER |
            IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_R_DISABLED;
  p.cq_entries = entries * 8;
  rc = io_uring_queue_init_params(entries, ring, &p);
  *disabled = rc == 0;
  if (rc == -EINVAL) { /* before Linux 6.1 */
    memset(&p, 0, sizeof(p));
    p.flags = IORING_SETUP_CQSIZE | IORING_SETUP_SUBMIT_ALL | IORING_SETUP_COOP_TASKRUN;
    p.cq_entries = entries * 8;
    rc = io_uring_queue_init_params(entries, ring, &p);
  }
  if (rc == -EINVAL) { /* kernels before 5.19 lack COOP_TASKRUN / SUBMIT_ALL */
    memset(&p, 0, sizeof(p));
    p.flags = IORING_SETUP_CQSIZE;
    p.cq_entries = entries * 8;
    rc = io_uring_queue_init_params(entries, ring, &p);
  }
  if (rc < 0)
    return rc;
  if (!(p.features & IORING_FEAT_NODROP) || !(p.features & IORING_FEAT_SUBMIT_STABLE) ||
      !(p.features & IORING_FEAT_EXT_ARG)) {
    io_uring_queue_exit(ring);
    return -ENOTSUP;
  }
  return 0;
}

/* A loop waits on sockets, not on a disk: the kernel (6.5 on, and stable
 * kernels that took the change; since 6.15 it can be asked not to) would
 * otherwise count every wait with a recv in flight as I/O wait, so
 * an idle pierd with players connected showed its CPUs 100 % in iowait
 * (top's "wa") and raised the system's I/O pressure (/proc/pressure/io),
 * which monitors and systemd-oomd read as a stalled disk. */
static unsigned uring_enter_flags(unsigned features) {
  unsigned f = IORING_ENTER_GETEVENTS | IORING_ENTER_EXT_ARG;
  if (features & IORING_FEAT_NO_IOWAIT)
    f |= IORING_ENTER_NO_IOWAIT;
  return f;
}

static int setup_bufs(uring_impl *u, unsigned count, unsigned size) {
  struct io_uring_buf_reg reg;
  int rc;

  u->buf_count = count;
  u->buf_size = size;
  u->mask = (unsigned)io_uring_buf_ring_mask(count);
  u->br_bytes = count * sizeof(struct io_uring_buf);
  u->br = mmap(NULL, u->br_bytes, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
  if (u->br == MAP_FAILED) {
    u->br = NULL;
    return -errno;
  }
  memset(&reg, 0, sizeof(reg));
  reg.ring_addr = (unsigned long)u->br;
  reg.ring_entries = count;
  reg.bgid = BUF_GROUP;
  rc = io_uring_register_buf_ring(&u->ring, &reg, 0);
  if (rc < 0)
    return rc;
  /* Its own mapping, so that uring_trim can give its pages back. */
  u->bufs_bytes = (size_t)count * size;
  u->bufs = mmap(NULL, u->bufs_bytes, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
  if (u->bufs == MAP_FAILED) {
    u->bufs = NULL;
    return -errno;
  }
  io_uring_buf_ring_init(u->br);
  for (unsigned i = 0; i < count; i++)
    io_uring_buf_ring_add(u->br, u->bufs + (size_t)i * size, size, (unsigned short)i, u->mask,
                          (int)i);
  io_uring_buf_ring_advance(u->br, (int)count);
  return 0;
}

static void recycle(uring_impl *u, unsigned bid) {
  io_uring_buf_ring_add(u->br, u->bufs + (size_t)bid * u->buf_size, u->buf_size,
                        (unsigned short)bid, u->mask, 0);
  io_uring_buf_ring_advance(u->br, 1);
}

/* Makes the calling thread the ring's issuer, once (see setup_ring). */
static int enable(uring_impl *u) {
  int rc;
  if (!u->disabled)
    return 0;
  /* io_uring_enable_rings is declared by liburing 2.3 but not exported. */
  rc = (int)syscall(__NR_io_uring_register, u->ring.ring_fd, IORING_REGISTER_ENABLE_RINGS, NULL, 0);
  if (rc < 0)
    return -errno;
  u->disabled = 0;
  return 0;
}

static int submit(uring_impl *u) {
  int rc = enable(u);
  return rc < 0 ? rc : io_uring_submit(&u->ring);
}

/* An SQE, submitting what is queued first if the SQ is full; NULL if even
 * that fails (the caller's op then fails to submit). */
static struct io_uring_sqe *get_sqe(uring_impl *u) {
  struct io_uring_sqe *sqe = io_uring_get_sqe(&u->ring);
  if (!sqe) {
    submit(u);
    sqe = io_uring_get_sqe(&u->ring);
  }
  return sqe;
}

static void *arena_alloc(uring_impl *u, size_t n) {
  void *p;
  n = (n + 15) & ~(size_t)15;
  if (n > ARENA_SIZE)
    return NULL;
  if (u->arena_len + n > ARENA_SIZE) {
    submit(u);
    if (io_uring_sq_ready(&u->ring) != 0)
      return NULL;
    u->arena_len = 0;
  }
  p = u->arena + u->arena_len;
  u->arena_len += n;
  return p;
}

static int arm_wake(io_loop *loop) {
  uring_impl *u = loop->impl;
  struct io_uring_sqe *sqe = get_sqe(u);
  if (!sqe)
    return -EBUSY;
  io_uring_prep_poll_multishot(sqe, loop->wake_fd, POLLIN);
  io_uring_sqe_set_data64(sqe, WAKE_TAG);
  return 0;
}

static void uring_done(io_loop *loop) {
  uring_impl *u = loop->impl;
  if (!u)
    return;
  io_uring_queue_exit(&u->ring);
  if (u->br)
    munmap(u->br, u->br_bytes);
  if (u->bufs)
    munmap(u->bufs, u->bufs_bytes);
  free(u->arena);
  free(u);
  loop->impl = NULL;
}

static int uring_init(io_loop *loop, const io_opts *opts) {
  uring_impl *u = calloc(1, sizeof(*u));
  int rc;

  if (!u)
    return -ENOMEM;
  loop->impl = u;
  rc = setup_ring(&u->ring, opts->entries, &u->disabled);
  u->deferred = u->disabled;
  if (rc < 0) {
    free(u);
    loop->impl = NULL;
    return rc;
  }
  u->enter_flags = uring_enter_flags(u->ring.features);
  u->arena = malloc(ARENA_SIZE);
  rc = u->arena ? setup_bufs(u, opts->buf_count, opts->buf_size) : -ENOMEM;
  if (rc == 0)
    rc = arm_wake(loop);
  if (rc < 0)
    uring_done(loop);
  return rc;
}

static int prep_accept(uring_impl *u, io_ev *ev) {
  struct io_uring_sqe *sqe = get_sqe(u);
  if (!sqe)
    return -EBUSY;
  io_uring_prep_multishot_accept(sqe, ev->fd->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
  io_uring_sqe_set_data(sqe, ev);
  return 0;
}

static int prep_recv(uring_impl *u, io_ev *ev) {
  struct io_uring_sqe *sqe = get_sqe(u);
  if (!sqe)
    return -EBUSY;
  io_uring_prep_recv_multishot(sqe, ev->fd->fd, NULL, 0, 0);
  sqe->flags |= IOSQE_BUFFER_SELECT;
  sqe->buf_group = BUF_GROUP;
  io_uring_sqe_set_data(sqe, ev);
  return 0;
}

static int uring_accept(io_loop *loop, io_ev *ev) { return prep_accept(loop->impl, ev); }

static int uring_recv(io_loop *loop, io_ev *ev) { return prep_recv(loop->impl, ev); }

static int uring_send(io_loop *loop, io_ev *ev, const struct iovec *iov, int iovcnt) {
  uring_impl *u = loop->impl;
  struct io_uring_sqe *sqe;

  if (iovcnt == 1) {
    sqe = get_sqe(u);
    if (!sqe)
      return -EBUSY;
    io_uring_prep_send(sqe, ev->fd->fd, iov[0].iov_base, iov[0].iov_len, MSG_NOSIGNAL);
  } else {
    struct msghdr *msg = arena_alloc(u, sizeof(*msg) + (size_t)iovcnt * sizeof(*iov));
    if (!msg)
      return -ENOBUFS;
    memset(msg, 0, sizeof(*msg));
    msg->msg_iov = (struct iovec *)(msg + 1);
    msg->msg_iovlen = (size_t)iovcnt;
    memcpy(msg->msg_iov, iov, (size_t)iovcnt * sizeof(*iov));
    sqe = get_sqe(u);
    if (!sqe)
      return -EBUSY;
    io_uring_prep_sendmsg(sqe, ev->fd->fd, msg, MSG_NOSIGNAL);
  }
  io_uring_sqe_set_data(sqe, ev);
  u->sends_queued = 1;
  return 0;
}

/* A send made at once, outside the ring (see io_backend.try_send_lone):
 * alone, it costs one system call either way, and needs no completion (nor
 * a second pass of the loop for it). With a send SQE already made for the
 * loop's next enter, that enter returns at once with its completion anyway:
 * -EBUSY then, and this send goes with it. */
static int uring_try_send(io_loop *loop, io_fd *fd, const struct iovec *iov, int iovcnt) {
  if (((uring_impl *)loop->impl)->sends_queued)
    return -EBUSY;
  return io_sock_try_send(fd->fd, iov, iovcnt);
}

static int uring_connect(io_loop *loop, io_ev *ev, const struct sockaddr *sa, socklen_t len) {
  uring_impl *u = loop->impl;
  struct io_uring_sqe *sqe;
  void *copy = arena_alloc(u, len);

  if (!copy)
    return -ENOBUFS;
  memcpy(copy, sa, len);
  sqe = get_sqe(u);
  if (!sqe)
    return -EBUSY;
  io_uring_prep_connect(sqe, ev->fd->fd, copy, len);
  io_uring_sqe_set_data(sqe, ev);
  return 0;
}

static int uring_cancel(io_loop *loop, io_ev *ev) {
  struct io_uring_sqe *sqe = get_sqe(loop->impl);
  if (!sqe)
    return -EBUSY;
  io_uring_prep_cancel(sqe, ev, 0);
  io_uring_sqe_set_data64(sqe, 0);
  sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
  return 0;
}

static void uring_close_fd(io_loop *loop, io_fd *fd) {}

/* Gives the receive buffers' pages back (MADV_DONTNEED: the next write into
 * one maps a fresh zeroed page). Only when none holds data not yet handled
 * and none can be filled meanwhile: with DEFER_TASKRUN the kernel copies
 * received bytes into a provided buffer only while this thread is inside
 * io_uring_enter (the recvs are on sockets, which are driven by poll and
 * their task work, never handed to io-wq's threads: no SQE here is
 * IOSQE_ASYNC); a handled completion's buffer is back in the ring by now;
 * and a completion not yet read (checked here) names a buffer with data. */
static int uring_trim(io_loop *loop) {
  uring_impl *u = loop->impl;
  if (!u->deferred || u->disabled || io_uring_cq_ready(&u->ring) ||
      io_uring_cq_has_overflow(&u->ring))
    return 0;
  return madvise(u->bufs, u->bufs_bytes, MADV_DONTNEED) == 0;
}

static int uring_submit(io_loop *loop) {
  int rc = submit(loop->impl);
  return rc < 0 ? rc : 0;
}

static void dispatch(io_loop *loop, uint64_t ud, int res, unsigned cflags) {
  uring_impl *u = loop->impl;
  io_ev *ev = (io_ev *)(uintptr_t)ud;
  unsigned more = (cflags & IORING_CQE_F_MORE) ? IO_F_MORE : 0;
  char *data = NULL;
  int bid = -1;

  if (ud == 0)
    return;
  if (ud == WAKE_TAG) {
    io_loop_drain_wake(loop);
    if (!more && arm_wake(loop) < 0)
      log_error("io_uring: cannot re-arm the wake-up poll");
    return;
  }
  loop->stats.completions++;
  if (cflags & IORING_CQE_F_BUFFER) {
    bid = (int)(cflags >> IORING_CQE_BUFFER_SHIFT);
    data = u->bufs + (size_t)bid * u->buf_size;
  }
  if (!more && !ev->canceled && ev->op == IO_OP_RECV && res == -ENOBUFS) {
    /* Out of provided buffers: re-arming now would fail again, as the
     * buffers of this batch are still being handled. Re-arm after it. */
    loop->stats.enobufs++;
    ev->next = u->starved;
    u->starved = ev;
    return;
  }
  if (!more && !ev->canceled &&
      ((ev->op == IO_OP_RECV && res > 0) || (ev->op == IO_OP_ACCEPT && res >= 0))) {
    /* The multishot ended though its owner still wants it (the CQ
     * overflowed): re-arm before delivering. */
    if ((ev->op == IO_OP_RECV ? prep_recv(u, ev) : prep_accept(u, ev)) == 0)
      more = IO_F_MORE;
    loop->stats.rearms++;
  }
  io_complete(ev, res, more, data);
  if (bid >= 0)
    recycle(u, (unsigned)bid);
}

/* Re-arms the recvs that ran out of buffers, now that the batch's buffers
 * are back in the ring. One cancelled meanwhile has nothing left in the
 * kernel to complete it: its final completion is delivered here. */
static void rearm_starved(io_loop *loop) {
  uring_impl *u = loop->impl;
  io_ev *ev = u->starved;
  u->starved = NULL;
  while (ev) {
    io_ev *next = ev->next;
    if (ev->canceled)
      io_complete(ev, -ECANCELED, 0, NULL);
    else if (prep_recv(u, ev) < 0)
      io_complete(ev, -ENOBUFS, 0, NULL);
    ev = next;
  }
}

/* Submits what is queued and waits until wait_nr completions are there, or
 * ts has passed (NULL: no limit): one io_uring_enter. liburing's wait calls
 * peek the CQ before and after entering, which uring_poll does anyway.
 * Entering with GETEVENTS also runs the completion work DEFER_TASKRUN keeps
 * for this thread, so it enters even with nothing to submit or wait for. */
static int enter(uring_impl *u, unsigned wait_nr, const struct __kernel_timespec *ts) {
  struct io_uring_sq *sq = &u->ring.sq;
  struct io_uring_getevents_arg arg;
  unsigned tail = sq->sqe_tail;
  long rc;

  if (sq->sqe_head != tail) { /* publish the SQEs queued since the last enter */
    sq->sqe_head = tail;
    io_uring_smp_store_release(sq->ktail, tail);
  }
  memset(&arg, 0, sizeof(arg));
  arg.ts = (uint64_t)(uintptr_t)ts;
  rc = syscall(__NR_io_uring_enter, u->ring.ring_fd, tail - *sq->khead, wait_nr, u->enter_flags,
               &arg, sizeof(arg));
  return rc < 0 ? -errno : 0;
}

static int uring_poll(io_loop *loop, int timeout_ms) {
  uring_impl *u = loop->impl;
  struct {
    uint64_t ud;
    int res;
    unsigned flags;
  } batch[BATCH];
  unsigned total = 0;
  int rc = enable(u);

  if (rc == 0) {
    struct __kernel_timespec ts;
    if (timeout_ms > 0) {
      ts.tv_sec = timeout_ms / 1000;
      ts.tv_nsec = (long long)(timeout_ms % 1000) * 1000000;
    }
    IO_STAT_BUMP(loop, waits);
    rc = enter(u, timeout_ms == 0 ? 0 : 1, timeout_ms > 0 ? &ts : NULL);
  }
  if (rc < 0 && rc != -ETIME && rc != -EINTR && rc != -EBUSY && rc != -EAGAIN)
    return rc;
  loop->now = clock_ms(); /* timers set by the callbacks below count from now */
  if (io_uring_sq_ready(&u->ring) == 0) {
    u->arena_len = 0;
    u->sends_queued = 0;
  }

  for (;;) {
    struct io_uring_cqe *cqe;
    unsigned head, n = 0;
    /* Copy out and release the CQ slots before running callbacks, which may
     * submit and so produce more completions. */
    io_uring_for_each_cqe(&u->ring, head, cqe) {
      batch[n].ud = cqe->user_data;
      batch[n].res = cqe->res;
      batch[n].flags = cqe->flags;
      if (++n == BATCH)
        break;
    }
    if (n == 0) {
      if (!io_uring_cq_has_overflow(&u->ring))
        break;
      /* CQEs wait in the kernel's overflow list: flush them into the CQ. */
      loop->stats.cq_overflows++;
      io_uring_get_events(&u->ring);
      continue;
    }
    io_uring_cq_advance(&u->ring, n);
    for (unsigned i = 0; i < n; i++)
      dispatch(loop, batch[i].ud, batch[i].res, batch[i].flags);
    rearm_starved(loop);
    total += n;
    if (total >= 8 * BATCH)
      break; /* let timers and posted jobs run; the rest comes next time */
  }
  return 0;
}

static int probe(char *why, size_t whylen);

typedef struct probe_args {
  char *why;
  size_t whylen;
  int rc;
} probe_args;

static void *probe_thread(void *arg) {
  probe_args *a = arg;
  a->rc = probe(a->why, a->whylen);
  return NULL;
}

/* The probe runs on a thread of its own: tearing its ring down queues work
 * to the task that submitted on it, which would interrupt that thread's next
 * blocking call with EINTR. */
int io_uring_probe(char *why, size_t whylen) {
  probe_args a = {why, whylen, -EAGAIN};
  pthread_t t;
  if (pthread_create(&t, NULL, probe_thread, &a) != 0)
    return probe(why, whylen);
  pthread_join(t, NULL);
  return a.rc;
}

static int probe(char *why, size_t whylen) {
  struct io_uring ring;
  struct io_uring_cqe *cqe;
  int sv[2] = {-1, -1}, rc;
  uring_impl u;
  unsigned saw_more = 0;

  memset(&u, 0, sizeof(u));
  rc = setup_ring(&u.ring, 8, &u.disabled);
  if (rc < 0) {
    snprintf(why, whylen, "io_uring_queue_init: %s", strerror(-rc));
    return rc;
  }
  rc = setup_bufs(&u, 4, 64);
  if (rc < 0) {
    snprintf(why, whylen, "io_uring_register_buf_ring: %s", strerror(-rc));
    goto out;
  }
  /* Multishot recv with provided buffers needs Linux 6.0: try one for real. */
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv) < 0) {
    rc = -errno;
    snprintf(why, whylen, "socketpair: %s", strerror(errno));
    goto out;
  }
  {
    struct io_uring_sqe *sqe = io_uring_get_sqe(&u.ring);
    io_uring_prep_recv_multishot(sqe, sv[0], NULL, 0, 0);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = BUF_GROUP;
    io_uring_sqe_set_data64(sqe, 42);
  }
  rc = submit(&u);
  if (rc < 0) {
    snprintf(why, whylen, "io_uring_submit: %s", strerror(-rc));
    goto out;
  }
  if (write(sv[1], "x", 1) != 1) {
    rc = -EIO;
    snprintf(why, whylen, "probe write failed");
    goto out;
  }
  {
    struct __kernel_timespec ts = {.tv_sec = 1, .tv_nsec = 0};
    rc = io_uring_wait_cqe_timeout(&u.ring, &cqe, &ts);
  }
  if (rc < 0) {
    snprintf(why, whylen, "multishot recv probe: %s", strerror(-rc));
    goto out;
  }
  saw_more = cqe->flags & IORING_CQE_F_MORE;
  if (cqe->res != 1 || !saw_more) {
    rc = -ENOTSUP;
    snprintf(why, whylen, "multishot recv with provided buffers unsupported (res %d)", cqe->res);
  }
  io_uring_cqe_seen(&u.ring, cqe);
out:
  if (sv[0] >= 0) {
    close(sv[0]);
    close(sv[1]);
  }
  ring = u.ring;
  io_uring_queue_exit(&ring);
  if (u.br)
    munmap(u.br, u.br_bytes);
  if (u.bufs)
    munmap(u.bufs, u.bufs_bytes);
  return rc < 0 ? rc : 0;
}

const io_backend io_uring_backend = {
    .name = "io_uring",
    .shared_accept = 1,
    .init = uring_init,
    .done = uring_done,
    .accept = uring_accept,
    .recv = uring_recv,
    .send = uring_send,
    .try_send = uring_try_send,
    .try_send_lone = 1,
    .connect = uring_connect,
    .cancel = uring_cancel,
    .close_fd = uring_close_fd,
    .poll = uring_poll,
    .submit = uring_submit,
    .wake = io_eventfd_wake,
    .probe = io_uring_probe,
    .trim = uring_trim,
};
