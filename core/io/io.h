/* The completion core: one event loop per worker thread, behind one small
 * backend interface (io_uring.c and io_epoll.c on Linux, io_iocp.c on
 * Windows). Every operation is submitted with
 * an io_ev that names its completion callback; the completion is delivered to
 * exactly that callback with the result (bytes, a file descriptor, or a
 * negative errno). A submit that fails returns the error and never completes
 * later. Multishot operations (accept, recv) deliver completions flagged
 * IO_F_MORE until one final completion without it. The loop also runs timers
 * and jobs posted from other threads. Nothing here knows what a session is. */
#ifndef PIER_IO_IO_H
#define PIER_IO_IO_H

#include "os/os.h"
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

typedef struct io_loop io_loop;
typedef struct io_ev io_ev;
typedef struct io_fd io_fd;
typedef struct io_timer io_timer;
typedef struct io_job io_job;
typedef struct io_backend io_backend;

#define IO_F_MORE 1u /* the multishot operation stays armed */

/* `data` is set for recv completions only: `res` bytes valid until the
 * callback returns (a provided buffer or the worker's scratch buffer). */
typedef void (*io_cb)(io_ev *ev, int res, unsigned flags, char *data);

/* What an io_ev carries for the platform's backend: on Windows the OVERLAPPED
 * of the op in flight, which must live as long as the io_ev does (io_iocp.c). */
#ifdef _WIN32
#define IO_EV_OS_FIELDS                                                        \
  OVERLAPPED ov;       /* iocp: the kernel op in flight */                      \
  uint8_t ov_busy;     /* iocp: ov is with the kernel (not yet dequeued) */     \
  io_ev *ov_prev;      /* iocp: the loop's list of ops with the kernel */      \
  io_ev *ov_next;                                                              \
  void *be_ctx;        /* iocp: an armed accept's AcceptEx contexts */
#else
#define IO_EV_OS_FIELDS
#endif

#define IO_OP_MAP(XX) \
  XX(NONE, "none")    \
  XX(ACCEPT, "accept") \
  XX(RECV, "recv")    \
  XX(SEND, "send")    \
  XX(CONNECT, "connect")

typedef enum {
#define XX(name, str) IO_OP_##name,
  IO_OP_MAP(XX)
#undef XX
} io_op;

/* Every session embeds one (its recv) and holds another while it sends,
 * so the flags and the iovec count share one word: 40 bytes on Linux. */
struct io_ev {
  io_cb cb;
  io_fd *fd;
  unsigned op : 4;       /* an io_op */
  unsigned armed : 1;    /* submitted, final completion not yet delivered */
  unsigned canceled : 1; /* io_cancel() was called on it */
  unsigned pending : 1;  /* epoll, iocp: on the loop's completion list */
  unsigned iovcnt : 16;  /* epoll: entries of iov (at most IOV_MAX, 1024) */
  int pending_res;       /* epoll, iocp: result to deliver */
  io_ev *next;           /* epoll, iocp: completion list link; io_uring: starved list */
  struct iovec *iov;     /* epoll: a blocked send's copy of its iovec */
  IO_EV_OS_FIELDS
};

/* One file descriptor as the loop sees it; embedded in its owner. An fd may
 * carry one read-side op (accept or recv) and one write-side op (send or
 * connect) at a time. */
struct io_fd {
  int fd;
  uint8_t registered; /* epoll: added to the epoll set; iocp: associated with the port */
  uint8_t ready;      /* epoll, iocp: on the loop's ready list (more to read) */
  uint8_t shared;     /* a listening socket several loops wait on */
  io_ev *rd, *wr;
  io_fd *next_ready;
};

struct io_timer {
  uint64_t due;    /* loop clock, ms */
  uint64_t repeat; /* 0 = once */
  size_t index;    /* position in the heap, SIZE_MAX when not running */
  void (*cb)(io_timer *t);
};

struct io_job {
  io_job *next;
  void (*fn)(io_job *job); /* runs on the loop's thread; owns the job */
};

typedef struct io_opts {
  unsigned entries;     /* io_uring SQ size (CQ is 8x) */
  unsigned buf_count;   /* provided receive buffers per loop (power of 2) */
  unsigned buf_size;    /* bytes each; also the epoll and iocp scratch buffer size */
} io_opts;

/* Written by the loop's thread. The rare-event counters and waits are
 * atomics because net_get_stats reads them from other threads; waits is
 * bumped with a relaxed load and store (IO_STAT_BUMP: no locked add), as only
 * its loop writes it. completions, bumped on every completion, is for the
 * loop's own thread only. */
typedef struct io_stats {
  _Atomic uint64_t cq_overflows; /* times the CQ overflowed and was flushed */
  _Atomic uint64_t enobufs;      /* multishot recvs re-armed after running out of buffers */
  _Atomic uint64_t rearms;       /* multishot ops re-armed after ending without F_MORE */
  uint64_t completions;
  _Atomic uint64_t waits; /* calls asking the kernel for events: epoll_wait, io_uring_enter,
                           * GQCSEx */
} io_stats;

#define IO_STAT_BUMP(loop, field)                                                      \
  atomic_store_explicit(&(loop)->stats.field,                                          \
                        atomic_load_explicit(&(loop)->stats.field, memory_order_relaxed) + 1, \
                        memory_order_relaxed)

struct io_backend {
  const char *name;
  /* 1 when accepts may be armed on one listening socket from several loops
   * at once (io_uring, epoll). 0 on IOCP: a socket is tied to one completion
   * port for good, so only one loop may accept on a listener (a second
   * io_accept fails with -EINVAL) and the owner hands accepted sockets to
   * the other loops itself (net.c: worker 0 accepts, post_adopt spreads). */
  uint8_t shared_accept;
  int (*init)(io_loop *loop, const io_opts *opts);
  void (*done)(io_loop *loop);
  int (*accept)(io_loop *loop, io_ev *ev);  /* multishot */
  int (*recv)(io_loop *loop, io_ev *ev);    /* multishot, loop-owned buffers */
  int (*send)(io_loop *loop, io_ev *ev, const struct iovec *iov, int iovcnt);
  /* Sends what the socket takes now, without blocking and without a
   * completion (see io_try_send); NULL where sends are better left to the
   * queue (IOCP). */
  int (*try_send)(io_loop *loop, io_fd *fd, const struct iovec *iov, int iovcnt);
  /* 1 when try_send pays only for a lone send: io_uring submits many sends
   * in the one system call it waits in, so there a send is made at once
   * only when it would be the only one (net's flush with one session, and
   * no send SQE already waiting: try_send says -EBUSY then). */
  uint8_t try_send_lone;
  int (*connect)(io_loop *loop, io_ev *ev, const struct sockaddr *sa, socklen_t len);
  int (*cancel)(io_loop *loop, io_ev *ev);
  void (*close_fd)(io_loop *loop, io_fd *fd);
  /* Submit what is queued, wait up to timeout_ms (-1 = forever) for
   * completions and dispatch them. */
  int (*poll)(io_loop *loop, int timeout_ms);
  /* Hands queued operations to the kernel now rather than at the next
   * poll; NULL where ops take effect when made (epoll). */
  int (*submit)(io_loop *loop);
  /* Any thread: makes a poll that is blocked (or about to block) return. */
  void (*wake)(io_loop *loop);
  /* Returns 0 when the backend can run on this system, else a negative
   * errno and a reason in why; NULL when it always can. */
  int (*probe)(char *why, size_t whylen);
  /* Gives memory the loop keeps for traffic back to the system (it is made
   * again on use): 1 if it did, 0 if it could not now; NULL where there is
   * none. */
  int (*trim)(io_loop *loop);
};

struct io_loop {
  const io_backend *be;
  void *impl;
  io_opts opts;
  io_stats stats;
  int wake_fd;           /* Linux: eventfd written by io_post from other threads; else -1 */
  _Atomic int sleeping;  /* the loop is (about to be) blocked in poll */
  int stop;
  uint64_t now;          /* ms: read before the wait and by the backend after it */
  /* Jobs posted from other threads, newest first (a lock-free stack: a push
   * is one compare-and-swap, the loop takes them all with one exchange and
   * runs them oldest first). Checking it costs the loop one load. */
  _Atomic(io_job *) inbox;
  io_timer **heap;
  size_t heap_len, heap_cap;
  void *data;            /* owner's pointer */
  /* Called at the start of each iteration, before the backend submits and
   * waits: the owner's chance to batch work queued during the last one. */
  void (*prepare)(io_loop *loop);
};

/* Linux (io_uring.c, io_epoll.c). */
extern const io_backend io_uring_backend;
extern const io_backend io_epoll_backend;
/* Windows (io_iocp.c). */
extern const io_backend io_iocp_backend;

/* Returns 0 when io_uring can run pier's operations on this kernel, else a
 * negative errno and a reason in why. Linux only. */
int io_uring_probe(char *why, size_t whylen);

/* Picks a backend of this platform by name. Linux: "io_uring", "epoll" or
 * "auto" (io_uring when the probe passes, else epoll; *fallback_why says
 * why). Windows: "iocp" or "auto" (iocp; *fallback_why stays empty).
 * Returns NULL for a name this platform does not have (io_platform_*.c). */
const io_backend *io_backend_pick(const char *name, char *fallback_why, size_t len);
/* The names io_backend_pick takes here, for messages: "auto, io_uring or
 * epoll" on Linux. */
extern const char io_backend_names[];
/* 1 when io_backend_pick takes name on this platform (without probing). */
int io_backend_known(const char *name);

/* Creates the loop's backend state. Any thread; the loop then belongs to the
 * thread that runs it. Returns 0 or a negative errno. */
int io_loop_init(io_loop *loop, const io_backend *be, const io_opts *opts);
void io_loop_done(io_loop *loop);
/* Runs until io_loop_stop() is called on the loop's thread. */
int io_loop_run(io_loop *loop);
/* One iteration: poll (waiting at most timeout_ms, fewer if a timer is due),
 * then posted jobs and due timers. */
int io_loop_once(io_loop *loop, int timeout_ms);
void io_loop_stop(io_loop *loop);

/* Operations (loop thread only). Each returns 0 once submitted, or a negative
 * errno, in which case the callback will not be called. */
int io_accept(io_loop *loop, io_ev *ev, io_fd *fd, io_cb cb);
int io_recv(io_loop *loop, io_ev *ev, io_fd *fd, io_cb cb);
int io_send(io_loop *loop, io_ev *ev, io_fd *fd, const struct iovec *iov, int iovcnt, io_cb cb);
int io_connect(io_loop *loop, io_ev *ev, io_fd *fd, const struct sockaddr *sa, socklen_t len, io_cb cb);
/* Sends what the socket takes at once, outside the completion model: no
 * callback follows. Returns the bytes sent (perhaps fewer than given),
 * -EAGAIN when the socket takes nothing now, another negative errno when the
 * send failed, -EBUSY while a send or connect is armed on fd (or, on
 * io_uring, while a send of any fd waits in the ring for the loop's next
 * enter, which will return at once with it), or -ENOTSUP where the backend
 * has no such send (IOCP): then, as after -EAGAIN or a short count, io_send
 * is the way for the rest. A send that went out counts as a completion in
 * the loop's stats. */
int io_try_send(io_loop *loop, io_fd *fd, const struct iovec *iov, int iovcnt);
/* Asks an armed operation to end; its final completion (often -ECANCELED)
 * still arrives later. Returns 0, or -EALREADY if it is not armed. */
int io_cancel(io_loop *loop, io_ev *ev);
/* Makes what was just asked (a cancel, say) reach the kernel now, not when
 * the loop next waits: io_uring queues SQEs until then, and a cancel meant
 * to stop a multishot recv at once must not wait for the rest of the batch.
 * One syscall on io_uring; nothing on epoll. Loop thread only; returns 0 or
 * a negative errno (the ops stay queued and go at the next poll). */
int io_submit_now(io_loop *loop);

/* For a loop that has been quiet a while: gives back the pages of memory it
 * keeps for traffic (io_uring: the provided receive buffers, on a
 * DEFER_TASKRUN ring with no completion unread, so that none can be written
 * meanwhile). Returns 1 if it gave any back. Loop thread only. */
int io_loop_trim(io_loop *loop);
/* Forgets the fd (no op may be armed on it) and closes it. */
void io_close_fd(io_loop *loop, io_fd *fd);

/* Timers (loop thread only). A timer fires after_ms from the loop's clock,
 * then every repeat_ms if that is non-zero. Due times saturate: a delay
 * that would pass UINT64_MAX means "never" rather than wrapping into the
 * past. */
void io_timer_init(io_timer *t, void (*cb)(io_timer *t));
void io_timer_start(io_loop *loop, io_timer *t, uint64_t after_ms, uint64_t repeat_ms);
void io_timer_stop(io_loop *loop, io_timer *t);
static inline int io_timer_active(const io_timer *t) { return t->index != SIZE_MAX; }

/* Queues job to run on the loop's thread and wakes it. Any thread. */
void io_post(io_loop *loop, io_job *job);
/* Makes the loop's current or next wait return at once. Any thread. */
void io_loop_wake(io_loop *loop);

/* Backend helpers shared by io_uring.c and io_epoll.c (Linux: the eventfd
 * wake-up, io_platform_linux.c). */
void io_loop_drain_wake(io_loop *loop);
void io_eventfd_wake(io_loop *loop);
/* Delivers a completion. On the final one the op is disarmed first, so the
 * callback may re-arm it or free its owner; ev is not touched afterwards. */
static inline void io_complete(io_ev *ev, int res, unsigned flags, char *data) {
  if (!(flags & IO_F_MORE)) {
    ev->armed = 0;
    if (ev->fd->rd == ev)
      ev->fd->rd = NULL;
    else if (ev->fd->wr == ev)
      ev->fd->wr = NULL;
  }
  ev->cb(ev, res, flags, data);
}

#endif
