/* epoll backend: emulates completions on readiness. Sockets are registered
 * once, edge-triggered for reads and writes (listening sockets shared by
 * several loops: level-triggered with EPOLLEXCLUSIVE); when an armed op's fd
 * becomes ready the syscall runs here and its result is delivered as a
 * completion. Data completions (IO_F_MORE) are delivered at once from the
 * scratch buffer; every final completion goes through a list drained after
 * the ready events, so an owner is only ever freed outside the loop that
 * walks the epoll result array and its io_fd pointers. A listening socket
 * is in the epoll set only while an accept is armed on it. */
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "base/log.h"
#include "io/io.h"
#include "io/io_sock_linux.h"

#define MAX_EVENTS 256
#define READS_PER_WAKE 16
#define ACCEPTS_PER_WAKE 64

/* A blocked send's copy of its iovec, on the loop's list so that a loop
 * torn down with sends still blocked frees them. */
typedef struct blocked_send {
  struct blocked_send *prev, *next;
  struct iovec iov[];
} blocked_send;

typedef struct epoll_impl {
  int epfd;
  blocked_send *blocked;
  char *scratch;
  size_t scratch_size;
  io_ev *done_head, *done_tail;
  io_fd *ready_head;
  io_fd wake;
  int waited; /* the last epoll_poll called epoll_wait */
} epoll_impl;

static void push_done(epoll_impl *e, io_ev *ev, int res) {
  ev->pending = 1;
  ev->pending_res = res;
  ev->next = NULL;
  if (e->done_tail)
    e->done_tail->next = ev;
  else
    e->done_head = ev;
  e->done_tail = ev;
}

static int ensure_registered(epoll_impl *e, io_fd *fd) {
  struct epoll_event ee;
  if (fd->registered)
    return 0;
  memset(&ee, 0, sizeof(ee));
  ee.events = fd->shared ? (EPOLLIN | EPOLLEXCLUSIVE) : (EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET);
  ee.data.ptr = fd;
  if (epoll_ctl(e->epfd, EPOLL_CTL_ADD, fd->fd, &ee) < 0)
    return -errno;
  fd->registered = 1;
  return 0;
}

static void mark_ready(epoll_impl *e, io_fd *fd) {
  if (fd->ready)
    return;
  fd->ready = 1;
  fd->next_ready = e->ready_head;
  e->ready_head = fd;
}

static void free_blocked(epoll_impl *e, io_ev *ev) {
  blocked_send *b;
  if (!ev->iov)
    return;
  b = (blocked_send *)((char *)ev->iov - offsetof(blocked_send, iov));
  if (b->prev)
    b->prev->next = b->next;
  else
    e->blocked = b->next;
  if (b->next)
    b->next->prev = b->prev;
  free(b);
  ev->iov = NULL;
}

static void epoll_done(io_loop *loop) {
  epoll_impl *e = loop->impl;
  if (!e)
    return;
  while (e->blocked) {
    blocked_send *b = e->blocked;
    e->blocked = b->next;
    free(b);
  }
  close(e->epfd);
  free(e->scratch);
  free(e);
  loop->impl = NULL;
}

static int epoll_init(io_loop *loop, const io_opts *opts) {
  epoll_impl *e = calloc(1, sizeof(*e));
  int rc;
  if (!e)
    return -ENOMEM;
  loop->impl = e;
  e->epfd = epoll_create1(EPOLL_CLOEXEC);
  if (e->epfd < 0) {
    rc = -errno;
    free(e);
    loop->impl = NULL;
    return rc;
  }
  e->scratch_size = opts->buf_size;
  e->scratch = malloc(e->scratch_size);
  e->wake.fd = loop->wake_fd;
  e->wake.shared = 0;
  rc = e->scratch ? 0 : -ENOMEM;
  if (rc == 0) {
    struct epoll_event ee = {.events = EPOLLIN, .data.ptr = &e->wake};
    if (epoll_ctl(e->epfd, EPOLL_CTL_ADD, loop->wake_fd, &ee) < 0)
      rc = -errno;
  }
  if (rc < 0)
    epoll_done(loop);
  return rc;
}

static int epoll_accept(io_loop *loop, io_ev *ev) {
  epoll_impl *e = loop->impl;
  int rc = ensure_registered(e, ev->fd);
  if (rc == 0)
    mark_ready(e, ev->fd); /* connections may already be waiting */
  return rc;
}

static int epoll_recv(io_loop *loop, io_ev *ev) {
  epoll_impl *e = loop->impl;
  int rc = ensure_registered(e, ev->fd);
  /* An edge that came while no recv was armed is gone: try once now. */
  if (rc == 0)
    mark_ready(e, ev->fd);
  return rc;
}

static int epoll_send(io_loop *loop, io_ev *ev, const struct iovec *iov, int iovcnt) {
  epoll_impl *e = loop->impl;
  blocked_send *b;
  int rc = io_sock_try_send(ev->fd->fd, iov, iovcnt);
  if (rc != -EAGAIN) {
    push_done(e, ev, rc);
    return 0;
  }
  rc = ensure_registered(e, ev->fd);
  if (rc < 0)
    return rc;
  /* Blocked: keep a copy of the iovec until the socket is writable. */
  b = malloc(sizeof(*b) + (size_t)iovcnt * sizeof(*iov));
  if (!b)
    return -ENOMEM;
  memcpy(b->iov, iov, (size_t)iovcnt * sizeof(*iov));
  b->prev = NULL;
  b->next = e->blocked;
  if (e->blocked)
    e->blocked->prev = b;
  e->blocked = b;
  ev->iov = b->iov;
  ev->iovcnt = iovcnt;
  return 0;
}

/* A send that goes out at once needs no completion. A socket that was
 * never registered (no recv armed on it) is registered on the first
 * -EAGAIN, by the io_send that follows. */
static int epoll_try_send(io_loop *loop, io_fd *fd, const struct iovec *iov, int iovcnt) {
  (void)loop;
  return io_sock_try_send(fd->fd, iov, iovcnt);
}

static int epoll_connect(io_loop *loop, io_ev *ev, const struct sockaddr *sa, socklen_t len) {
  epoll_impl *e = loop->impl;
  int rc = ensure_registered(e, ev->fd);
  if (rc < 0)
    return rc;
  if (connect(ev->fd->fd, sa, len) == 0) {
    push_done(e, ev, 0);
    return 0;
  }
  if (errno == EINPROGRESS)
    return 0;
  push_done(e, ev, -errno);
  return 0;
}

static int epoll_cancel(io_loop *loop, io_ev *ev) {
  if (!ev->pending)
    push_done(loop->impl, ev, -ECANCELED);
  return 0;
}

static void epoll_close_fd(io_loop *loop, io_fd *fd) {
  epoll_impl *e = loop->impl;
  if (fd->ready) {
    io_fd **p = &e->ready_head;
    while (*p && *p != fd)
      p = &(*p)->next_ready;
    if (*p)
      *p = fd->next_ready;
    fd->ready = 0;
  }
  if (fd->registered) {
    /* A shared listening fd stays open for other loops: remove it here. */
    epoll_ctl(e->epfd, EPOLL_CTL_DEL, fd->fd, NULL);
    fd->registered = 0;
  }
}

static int busy(io_ev *ev) { return !ev || ev->canceled || ev->pending; }

static void do_accept(io_loop *loop, epoll_impl *e, io_fd *fd) {
  io_ev *ev = fd->rd;
  for (int i = 0; i < ACCEPTS_PER_WAKE; i++) {
    int nfd = accept4(fd->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (nfd >= 0) {
      loop->stats.completions++;
      io_complete(ev, nfd, IO_F_MORE, NULL);
      if (busy(fd->rd) || fd->rd != ev)
        return;
      continue;
    }
    if (errno == EAGAIN)
      return;
    if (errno == EINTR || errno == ECONNABORTED)
      continue;
    push_done(e, ev, -errno); /* EMFILE and the like: the owner decides */
    return;
  }
  mark_ready(e, fd);
}

/* `more` is 0 when the socket is known to have had no FIN or error pending
 * at the last wake-up: then a short read means its buffer was drained, and
 * new data will raise a new edge, so the extra recv() that would only return
 * EAGAIN is skipped (as nginx does with EPOLLRDHUP). */
static void do_read(io_loop *loop, epoll_impl *e, io_fd *fd, int more) {
  io_ev *ev = fd->rd;
  for (int i = 0; i < READS_PER_WAKE; i++) {
    ssize_t n = sys_recv(fd->fd, e->scratch, e->scratch_size);
    if (n > 0) {
      loop->stats.completions++;
      io_complete(ev, (int)n, IO_F_MORE, e->scratch);
      if (busy(fd->rd) || fd->rd != ev)
        return;
      if ((size_t)n < e->scratch_size && !more)
        return;
      continue;
    }
    if (n == 0) {
      push_done(e, ev, 0);
      return;
    }
    if (errno == EAGAIN)
      return;
    if (errno == EINTR)
      continue;
    push_done(e, ev, -errno);
    return;
  }
  mark_ready(e, fd); /* more may be waiting; give other fds a turn first */
}

static void do_write(epoll_impl *e, io_fd *fd) {
  io_ev *ev = fd->wr;
  int rc;
  if (ev->op == IO_OP_CONNECT) {
    int err = 0;
    socklen_t len = sizeof(err);
    if (getsockopt(fd->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
      err = errno;
    if (err == EINPROGRESS || err == EALREADY)
      return;
    push_done(e, ev, -err);
    return;
  }
  rc = io_sock_try_send(fd->fd, ev->iov, ev->iovcnt);
  if (rc == -EAGAIN)
    return;
  push_done(e, ev, rc);
}

static void handle(io_loop *loop, epoll_impl *e, io_fd *fd, uint32_t events) {
  if ((events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) && !busy(fd->wr)) {
    /* A blocked send or a pending connect. */
    if (fd->wr->op == IO_OP_CONNECT || fd->wr->iov)
      do_write(e, fd);
  }
  if ((events & (EPOLLIN | EPOLLRDHUP | EPOLLERR | EPOLLHUP)) && !busy(fd->rd)) {
    if (fd->rd->op == IO_OP_ACCEPT)
      do_accept(loop, e, fd);
    else
      do_read(loop, e, fd, (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0);
  }
}

/* A shared listening socket is level-triggered: while connections wait and
 * no accept is armed on it (an owner backing off after EMFILE, say),
 * epoll_wait would return at once, again and again, and spin a core. So once
 * its accept has ended the fd leaves the epoll set; the next accept adds it
 * back (EPOLLEXCLUSIVE rules out EPOLL_CTL_MOD, hence DEL and ADD). */
static void unwatch_listener(epoll_impl *e, io_fd *fd) {
  if (!fd->shared || !fd->registered)
    return;
  if (epoll_ctl(e->epfd, EPOLL_CTL_DEL, fd->fd, NULL) < 0)
    log_error("epoll: epoll_ctl(DEL) of listener %d failed: %s", fd->fd, strerror(errno));
  fd->registered = 0;
}

static void run_done(io_loop *loop, epoll_impl *e) {
  io_ev *ev;
  while ((ev = e->done_head)) {
    e->done_head = ev->next;
    if (!e->done_head)
      e->done_tail = NULL;
    ev->pending = 0;
    free_blocked(e, ev);
    if (ev->op == IO_OP_ACCEPT)
      unwatch_listener(e, ev->fd);
    loop->stats.completions++;
    io_complete(ev, ev->pending_res, 0, NULL);
  }
}

static int epoll_poll(io_loop *loop, int timeout_ms) {
  epoll_impl *e = loop->impl;
  struct epoll_event events[MAX_EVENTS];
  io_fd *ready;
  int n;

  /* Completions are already waiting (sends that went out at once in the
   * owner's flush, say): delivering them needs no epoll_wait, and a
   * non-blocking one before each would double the system calls of a
   * request-response session. So after a call that waited, the next one only
   * runs them; the loop comes straight back, and waits again the time after,
   * so sockets that became readable meanwhile wait one iteration at most. */
  if (e->done_head && !e->ready_head && e->waited) {
    e->waited = 0;
    run_done(loop, e);
    return 0;
  }
  if (e->done_head || e->ready_head)
    timeout_ms = 0;
  e->waited = 1;
  IO_STAT_BUMP(loop, waits);
  n = epoll_wait(e->epfd, events, MAX_EVENTS, timeout_ms);
  loop->now = clock_ms(); /* timers set by the callbacks below count from now */
  if (n < 0) {
    if (errno != EINTR)
      return -errno;
    n = 0;
  }
  for (int i = 0; i < n; i++) {
    io_fd *fd = events[i].data.ptr;
    if (fd == &e->wake) {
      io_loop_drain_wake(loop);
      continue;
    }
    /* Reads of an fd on the ready list are served from that list below. */
    handle(loop, e, fd, fd->ready ? (events[i].events & EPOLLOUT) : events[i].events);
  }
  ready = e->ready_head;
  e->ready_head = NULL;
  while (ready) {
    io_fd *fd = ready;
    ready = fd->next_ready;
    fd->ready = 0;
    if (!busy(fd->rd))
      handle(loop, e, fd, EPOLLIN | EPOLLRDHUP); /* no edge info: read to EAGAIN */
  }
  run_done(loop, e);
  return 0;
}

const io_backend io_epoll_backend = {
    .name = "epoll",
    .shared_accept = 1,
    .init = epoll_init,
    .done = epoll_done,
    .accept = epoll_accept,
    .recv = epoll_recv,
    .send = epoll_send,
    .try_send = epoll_try_send,
    .connect = epoll_connect,
    .cancel = epoll_cancel,
    .close_fd = epoll_close_fd,
    .poll = epoll_poll,
    .wake = io_eventfd_wake,
};
