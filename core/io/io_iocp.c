/* IOCP backend (Windows). One completion port per loop; a socket is
 * associated with the port of the loop that first submits on it, with
 * FILE_SKIP_COMPLETION_PORT_ON_SUCCESS: an op that completes at once queues
 * no packet, so its result goes on the loop's own lists and is delivered
 * from there at the next poll, never from inside the submit call (an error
 * now means no callback, and a callback inside io_recv() would break its
 * caller).
 *
 *   accept   ACCEPTS_POSTED AcceptEx calls outstanding per armed accept, each
 *            re-posted when its socket has been delivered (IO_F_MORE). The
 *            contexts (OVERLAPPED, socket, address space) are the backend's
 *            and live until their completions are dequeued. A listening
 *            socket belongs to one port: shared_accept is 0.
 *   recv     a zero-byte WSARecv waits for data without holding a buffer;
 *            when it completes, one recv() into the loop's scratch buffer
 *            (READS_PER_WAKE x buf_size); a full read puts the fd on the
 *            ready list for the next iteration, a short one or
 *            WSAEWOULDBLOCK posts the zero-byte WSARecv again.
 *   send     one WSASend of the iovec array (its layout is WSABUF's).
 *   connect  ConnectEx after binding the wildcard address.
 *   cancel   CancelIoEx of the op's OVERLAPPED; the aborted op's completion
 *            is its final one (-ECANCELED).
 *
 * Every OVERLAPPED lives in an io_ev (its owner frees it only after the
 * final completion) or in an accept context (freed only when none of its
 * AcceptEx calls is still with the kernel). io_loop_done cancels what is
 * still in flight and drains the port before anything is freed. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "io/io.h"

#define BATCH 128          /* entries per GetQueuedCompletionStatusEx */
#define ROUNDS 8           /* full batches per poll before timers and jobs run */
#define READS_PER_WAKE 16  /* buf_size chunks read per fd per wake-up */
#define ACCEPTS_POSTED 8   /* AcceptEx calls outstanding per armed accept */
#define ACCEPT_RETRIES 4   /* re-posts of one context after a reset connection */
#define DRAIN_MS 2000      /* io_loop_done's wait for cancelled ops */
#define ADDR_SPACE (sizeof(SOCKADDR_STORAGE) + 16)

#define KEY_SOCK 1   /* a connected socket: OVERLAPPEDs inside io_evs */
#define KEY_LISTEN 2 /* a listening socket: OVERLAPPEDs inside accept_ctxs */
#define KEY_WAKE 3   /* io_post's wake-up: no OVERLAPPED */

/* The iovec of os_win.h has WSABUF's layout, so an array goes to WSASend
 * unchanged. */
_Static_assert(sizeof(struct iovec) == sizeof(WSABUF), "iovec is not a WSABUF");
_Static_assert(offsetof(struct iovec, iov_len) == offsetof(WSABUF, len), "iovec is not a WSABUF");
_Static_assert(offsetof(struct iovec, iov_base) == offsetof(WSABUF, buf), "iovec is not a WSABUF");

typedef struct accept_set accept_set;

typedef struct accept_ctx {
  OVERLAPPED ov; /* first: the dequeued pointer is the context's */
  accept_set *set;
  SOCKET sock;   /* the socket AcceptEx fills; INVALID_SOCKET when idle */
  uint8_t busy;  /* AcceptEx with the kernel */
  uint8_t ready; /* completed at once: on the loop's accept-ready list */
  struct accept_ctx *next_ready;
  char addrs[2 * ADDR_SPACE];
} accept_ctx;

struct accept_set {
  io_ev *ev; /* NULL once the final completion is queued */
  SOCKET listener;
  int family;
  int busy;     /* contexts with the kernel */
  int ready;    /* contexts on the accept-ready list */
  int active;   /* contexts being handled (a callback may cancel meanwhile) */
  int err;      /* the error that ends the accept, or 0 */
  accept_set *prev, *next;
  accept_ctx ctx[ACCEPTS_POSTED];
};

typedef struct iocp_impl {
  HANDLE port;
  char *scratch;
  size_t scratch_size;
  io_ev *done_head, *done_tail;   /* results to deliver at the next poll */
  io_fd *ready_head;              /* recvs with data left to read */
  accept_ctx *acc_ready;          /* AcceptEx calls that completed at once */
  io_ev *inflight;                /* ops with the kernel (for io_loop_done) */
  accept_set *sets;               /* every accept set not yet freed */
  size_t kernel_ops;              /* OVERLAPPEDs with the kernel */
} iocp_impl;

/* ---- extension functions, fetched once ---- */

static os_once_t ext_once = OS_ONCE_INIT;
static LPFN_ACCEPTEX p_acceptex;
static LPFN_CONNECTEX p_connectex;
static int ext_err;

static int ext_get(SOCKET s, GUID guid, void *out, size_t len) {
  DWORD bytes = 0;
  if (WSAIoctl(s, SIO_GET_EXTENSION_FUNCTION_POINTER, &guid, sizeof(guid), out, (DWORD)len, &bytes,
               NULL, NULL) != 0)
    return -os_sock_errno();
  return 0;
}

static void ext_load(void) {
  int s = os_sock_stream(AF_INET);
  if (s < 0) {
    ext_err = s;
    return;
  }
  ext_err = ext_get((SOCKET)s, (GUID)WSAID_ACCEPTEX, &p_acceptex, sizeof(p_acceptex));
  if (ext_err == 0)
    ext_err = ext_get((SOCKET)s, (GUID)WSAID_CONNECTEX, &p_connectex, sizeof(p_connectex));
  os_sock_close(s);
}

/* ---- bookkeeping ---- */

static void push_done(iocp_impl *c, io_ev *ev, int res) {
  ev->pending = 1;
  ev->pending_res = res;
  ev->next = NULL;
  if (c->done_tail)
    c->done_tail->next = ev;
  else
    c->done_head = ev;
  c->done_tail = ev;
}

static void mark_ready(iocp_impl *c, io_fd *fd) {
  if (fd->ready)
    return;
  fd->ready = 1;
  fd->next_ready = c->ready_head;
  c->ready_head = fd;
}

static void unready(iocp_impl *c, io_fd *fd) {
  io_fd **p = &c->ready_head;
  if (!fd->ready)
    return;
  while (*p && *p != fd)
    p = &(*p)->next_ready;
  if (*p)
    *p = fd->next_ready;
  fd->ready = 0;
}

/* The op was handed to the kernel and its completion will be dequeued. */
static void kernel_took(iocp_impl *c, io_ev *ev) {
  ev->ov_busy = 1;
  ev->ov_prev = NULL;
  ev->ov_next = c->inflight;
  if (c->inflight)
    c->inflight->ov_prev = ev;
  c->inflight = ev;
  c->kernel_ops++;
}

static void kernel_gave_back(iocp_impl *c, io_ev *ev) {
  ev->ov_busy = 0;
  if (ev->ov_prev)
    ev->ov_prev->ov_next = ev->ov_next;
  else
    c->inflight = ev->ov_next;
  if (ev->ov_next)
    ev->ov_next->ov_prev = ev->ov_prev;
  ev->ov_prev = ev->ov_next = NULL;
  c->kernel_ops--;
}

static int busy(io_ev *ev) { return !ev || ev->canceled || ev->pending || ev->ov_busy; }

static int associate(iocp_impl *c, io_fd *fd, ULONG_PTR key) {
  HANDLE h = (HANDLE)(uintptr_t)fd->fd;
  if (fd->registered)
    return 0;
  if (!CreateIoCompletionPort(h, c->port, key, 0))
    return -os_win_errno(GetLastError());
  /* Vista and later: no packet for an op that completes at once (its result
   * is handled where it was submitted) and no event signalled per op. */
  if (!SetFileCompletionNotificationModes(
          h, FILE_SKIP_COMPLETION_PORT_ON_SUCCESS | FILE_SKIP_SET_EVENT_ON_HANDLE))
    return -os_win_errno(GetLastError());
  fd->registered = 1;
  return 0;
}

/* The error of a dequeued op that did not succeed. */
static int op_error(io_fd *fd, OVERLAPPED *ov) {
  DWORD bytes = 0, flags = 0;
  if (fd->fd < 0)
    return -ECANCELED;
  if (WSAGetOverlappedResult((SOCKET)fd->fd, ov, &bytes, FALSE, &flags))
    return 0;
  return -os_sock_errno();
}

/* ---- loop ---- */

static void iocp_done(io_loop *loop);

static int iocp_init(io_loop *loop, const io_opts *opts) {
  iocp_impl *c;
  int rc = os_net_init();

  if (rc < 0)
    return rc;
  os_once(&ext_once, ext_load);
  if (ext_err < 0)
    return ext_err;
  c = calloc(1, sizeof(*c));
  if (!c)
    return -ENOMEM;
  loop->impl = c;
  c->port = CreateIoCompletionPort(INVALID_HANDLE_VALUE, NULL, 0, 1);
  if (!c->port) {
    rc = -os_win_errno(GetLastError());
    free(c);
    loop->impl = NULL;
    return rc;
  }
  /* One scratch buffer per loop, not per session, so it can be large: a
   * wake-up's whole read budget in one recv() rather than READS_PER_WAKE
   * calls of buf_size, since every call is a system call (under Wine a
   * server round trip: 64 KiB per call moved 61 MB/s of 64 KiB echoes there
   * where 2 KiB moved 9). */
  c->scratch_size = (size_t)opts->buf_size * READS_PER_WAKE;
  c->scratch = malloc(c->scratch_size);
  if (!c->scratch) {
    iocp_done(loop);
    return -ENOMEM;
  }
  return 0;
}

static void iocp_wake(io_loop *loop) {
  iocp_impl *c = loop->impl;
  if (!PostQueuedCompletionStatus(c->port, 0, KEY_WAKE, NULL))
    log_error("iocp: PostQueuedCompletionStatus failed: %s",
              os_strerror(os_win_errno(GetLastError())));
}

/* ---- accept ---- */

static void set_unlink_free(iocp_impl *c, accept_set *set) {
  for (int i = 0; i < ACCEPTS_POSTED; i++)
    if (set->ctx[i].sock != INVALID_SOCKET)
      closesocket(set->ctx[i].sock);
  if (set->prev)
    set->prev->next = set->next;
  else
    c->sets = set->next;
  if (set->next)
    set->next->prev = set->prev;
  free(set);
}

/* Queues the final completion once no context is with the kernel, waiting
 * or being handled; the contexts are freed then. */
static void set_maybe_final(iocp_impl *c, accept_set *set) {
  io_ev *ev = set->ev;
  if (set->busy || set->ready || set->active || !ev)
    return;
  set->ev = NULL;
  ev->be_ctx = NULL;
  push_done(c, ev, set->err ? set->err : -ECANCELED);
  set_unlink_free(c, set);
}

/* Posts one AcceptEx. Returns 0 (with the kernel, or on the ready list) or
 * a negative errno (the context stays idle). */
static int post_accept(iocp_impl *c, accept_ctx *x) {
  accept_set *set = x->set;
  for (int tries = 0; tries < ACCEPT_RETRIES; tries++) {
    DWORD bytes = 0;
    int s = os_sock_stream(set->family), err;
    if (s < 0)
      return s;
    x->sock = (SOCKET)s;
    memset(&x->ov, 0, sizeof(x->ov));
    if (p_acceptex(set->listener, x->sock, x->addrs, 0, ADDR_SPACE, ADDR_SPACE, &bytes, &x->ov)) {
      x->ready = 1;
      x->next_ready = c->acc_ready;
      c->acc_ready = x;
      set->ready++;
      return 0;
    }
    err = WSAGetLastError();
    if (err == WSA_IO_PENDING || err == ERROR_IO_PENDING) {
      x->busy = 1;
      set->busy++;
      c->kernel_ops++;
      return 0;
    }
    closesocket(x->sock);
    x->sock = INVALID_SOCKET;
    if (err != WSAECONNRESET)
      return -os_win_errno((unsigned long)err);
  }
  return -ECONNRESET;
}

static void set_cancel(accept_set *set) {
  for (int i = 0; i < ACCEPTS_POSTED; i++)
    if (set->ctx[i].busy)
      CancelIoEx((HANDLE)set->listener, &set->ctx[i].ov);
}

/* Errors that end one connection, not the accept: the peer reset or gave
 * up before its connection was taken. Windows reports a reset as
 * WSAECONNRESET, Wine as WSAENOTCONN; either way a client must not be able
 * to stop the listener by resetting. */
static int peer_gone(int rc) {
  return rc == -ECONNRESET || rc == -ECONNABORTED || rc == -ENOTCONN || rc == -ETIMEDOUT;
}

/* Ends the accept with rc (the first error wins: the cancelled AcceptEx
 * calls that follow must not turn EMFILE into ECANCELED). */
static void set_end(iocp_impl *c, accept_set *set, int rc) {
  if (!set->err)
    set->err = rc;
  set_cancel(set);
  set_maybe_final(c, set);
}

/* One AcceptEx ended: ok, or err (a positive Winsock error). */
static void accept_finish(io_loop *loop, accept_ctx *x, int ok, int err) {
  iocp_impl *c = loop->impl;
  accept_set *set = x->set;
  io_ev *ev = set->ev;
  SOCKET s = x->sock;
  int rc;

  x->sock = INVALID_SOCKET;
  if (!ev || ev->canceled) {
    closesocket(s);
    set_maybe_final(c, set);
    return;
  }
  if (ok && setsockopt(s, SOL_SOCKET, SO_UPDATE_ACCEPT_CONTEXT, (const char *)&set->listener,
                       sizeof(set->listener)) != 0) {
    ok = 0;
    err = WSAGetLastError();
  }
  if (!ok) {
    closesocket(s);
    rc = -os_win_errno((unsigned long)err);
    if (!peer_gone(rc)) {
      /* EMFILE and the like: the accept ends and its owner decides. */
      set_end(c, set, rc);
      return;
    }
  } else {
    u_long on = 1;
    ioctlsocket(s, FIONBIO, &on); /* do_read's recv() must never block */
    set->active++;
    loop->stats.completions++;
    io_complete(ev, (int)s, IO_F_MORE, NULL);
    set->active--;
  }
  /* An accept that is ending (cancelled, or another context failed) posts
   * no more AcceptEx calls: one posted now would keep it from ending until
   * a client came. */
  if (!set->ev || set->ev->canceled || set->err) {
    set_maybe_final(c, set);
    return;
  }
  rc = post_accept(c, x);
  if (rc < 0)
    set_end(c, set, rc);
}

static int iocp_accept(io_loop *loop, io_ev *ev) {
  iocp_impl *c = loop->impl;
  io_fd *fd = ev->fd;
  accept_set *set;
  SOCKADDR_STORAGE ss;
  int len = sizeof(ss), rc, posted = 0;

  rc = associate(c, fd, KEY_LISTEN);
  if (rc < 0)
    return rc;
  if (getsockname((SOCKET)fd->fd, (struct sockaddr *)&ss, &len) != 0)
    return -os_sock_errno();
  set = calloc(1, sizeof(*set));
  if (!set)
    return -ENOMEM;
  set->ev = ev;
  set->listener = (SOCKET)fd->fd;
  set->family = ss.ss_family;
  for (int i = 0; i < ACCEPTS_POSTED; i++) {
    set->ctx[i].set = set;
    set->ctx[i].sock = INVALID_SOCKET;
  }
  for (int i = 0; i < ACCEPTS_POSTED; i++) {
    rc = post_accept(c, &set->ctx[i]);
    if (rc < 0)
      break; /* fewer in flight; the first must go, or the accept fails */
    posted++;
  }
  if (posted == 0) {
    free(set);
    return rc;
  }
  set->next = c->sets;
  if (c->sets)
    c->sets->prev = set;
  c->sets = set;
  ev->be_ctx = set;
  return 0;
}

static void run_accept_ready(io_loop *loop) {
  iocp_impl *c = loop->impl;
  accept_ctx *x = c->acc_ready;
  c->acc_ready = NULL;
  while (x) {
    accept_ctx *next = x->next_ready;
    x->ready = 0;
    x->set->ready--;
    accept_finish(loop, x, 1, 0);
    x = next;
  }
}

/* ---- recv ---- */

/* Posts the zero-byte WSARecv that waits for data. Data already there (it
 * completed at once) puts the fd on the ready list; an error becomes the
 * final completion. */
static void post_zero_recv(iocp_impl *c, io_ev *ev) {
  WSABUF wb = {0, NULL};
  DWORD bytes = 0, flags = 0;
  int err;

  memset(&ev->ov, 0, sizeof(ev->ov));
  if (WSARecv((SOCKET)ev->fd->fd, &wb, 1, &bytes, &flags, &ev->ov, NULL) == 0) {
    mark_ready(c, ev->fd);
    return;
  }
  err = WSAGetLastError();
  if (err == WSA_IO_PENDING) {
    kernel_took(c, ev);
    return;
  }
  push_done(c, ev, -os_win_errno((unsigned long)err));
}

static int iocp_recv(io_loop *loop, io_ev *ev) {
  iocp_impl *c = loop->impl;
  int rc = associate(c, ev->fd, KEY_SOCK);
  if (rc < 0)
    return rc;
  post_zero_recv(c, ev);
  return 0;
}

/* Reads what the socket holds, one scratch buffer (READS_PER_WAKE x
 * buf_size) at most per wake-up, so one fast sender cannot starve the
 * others. */
static void do_read(io_loop *loop, io_ev *ev) {
  iocp_impl *c = loop->impl;
  io_fd *fd = ev->fd;

  for (;;) {
    int n = recv((SOCKET)fd->fd, c->scratch, (int)c->scratch_size, 0), err;
    if (n > 0) {
      loop->stats.completions++;
      io_complete(ev, n, IO_F_MORE, c->scratch);
      if (busy(fd->rd) || fd->rd != ev)
        return;
      if ((size_t)n < c->scratch_size) {
        /* Drained, most likely: wait again (at once ready if not). */
        post_zero_recv(c, ev);
        return;
      }
      break;
    }
    if (n == 0) {
      push_done(c, ev, 0);
      return;
    }
    err = os_sock_errno();
    if (err == EAGAIN) {
      post_zero_recv(c, ev);
      return;
    }
    if (err == EINTR)
      continue;
    push_done(c, ev, -err);
    return;
  }
  mark_ready(c, fd); /* more may be waiting; give other fds a turn first */
}

/* ---- send, connect ---- */

static int iocp_send(io_loop *loop, io_ev *ev, const struct iovec *iov, int iovcnt) {
  iocp_impl *c = loop->impl;
  DWORD sent = 0;
  int err, rc = associate(c, ev->fd, KEY_SOCK);

  if (rc < 0)
    return rc;
  memset(&ev->ov, 0, sizeof(ev->ov));
  /* WSASend captures the WSABUF array before it returns; the bytes stay
   * the owner's until the completion. */
  if (WSASend((SOCKET)ev->fd->fd, (WSABUF *)iov, (DWORD)iovcnt, &sent, 0, &ev->ov, NULL) == 0) {
    push_done(c, ev, (int)sent);
    return 0;
  }
  err = WSAGetLastError();
  if (err == WSA_IO_PENDING) {
    kernel_took(c, ev);
    return 0;
  }
  push_done(c, ev, -os_win_errno((unsigned long)err));
  return 0;
}

static int bind_any(SOCKET s, int family) {
  SOCKADDR_STORAGE ss;
  int len;
  memset(&ss, 0, sizeof(ss));
  ss.ss_family = (ADDRESS_FAMILY)family;
  len = family == AF_INET6 ? (int)sizeof(struct sockaddr_in6) : (int)sizeof(struct sockaddr_in);
  if (bind(s, (struct sockaddr *)&ss, len) == 0)
    return 0;
  /* Already bound by its owner: ConnectEx needs no more. */
  return WSAGetLastError() == WSAEINVAL ? 0 : -os_sock_errno();
}

static int connected(io_ev *ev) {
  if (setsockopt((SOCKET)ev->fd->fd, SOL_SOCKET, SO_UPDATE_CONNECT_CONTEXT, NULL, 0) != 0)
    return -os_sock_errno();
  return 0;
}

static int iocp_connect(io_loop *loop, io_ev *ev, const struct sockaddr *sa, socklen_t len) {
  iocp_impl *c = loop->impl;
  SOCKET s = (SOCKET)ev->fd->fd;
  int err, rc = associate(c, ev->fd, KEY_SOCK);

  if (rc == 0)
    rc = bind_any(s, sa->sa_family);
  if (rc < 0)
    return rc;
  memset(&ev->ov, 0, sizeof(ev->ov));
  if (p_connectex(s, sa, (int)len, NULL, 0, NULL, &ev->ov)) {
    push_done(c, ev, connected(ev));
    return 0;
  }
  err = WSAGetLastError();
  if (err == WSA_IO_PENDING || err == ERROR_IO_PENDING) {
    kernel_took(c, ev);
    return 0;
  }
  push_done(c, ev, -os_win_errno((unsigned long)err));
  return 0;
}

/* ---- cancel, close ---- */

static int iocp_cancel(io_loop *loop, io_ev *ev) {
  iocp_impl *c = loop->impl;
  if (ev->op == IO_OP_ACCEPT && ev->be_ctx) {
    accept_set *set = ev->be_ctx;
    set_cancel(set);
    set_maybe_final(c, set);
    return 0;
  }
  if (ev->ov_busy) {
    /* ERROR_NOT_FOUND: it completed already and its packet is queued; the
     * dispatch sees `canceled`. */
    CancelIoEx((HANDLE)(uintptr_t)ev->fd->fd, &ev->ov);
    return 0;
  }
  if (!ev->pending)
    push_done(c, ev, -ECANCELED);
  return 0;
}

/* Cancels what is still armed before the socket is closed: closing with a
 * WSARecv pending completes it with a status other than
 * ERROR_OPERATION_ABORTED on some systems (Wine: 676), and every OVERLAPPED
 * must still be dequeued before its owner may go. */
static void iocp_close_fd(io_loop *loop, io_fd *fd) {
  iocp_impl *c = loop->impl;
  io_ev *evs[2] = {fd->rd, fd->wr};
  for (int i = 0; i < 2; i++) {
    io_ev *ev = evs[i];
    if (!ev || !ev->armed)
      continue;
    if (!ev->canceled) {
      ev->canceled = 1;
      iocp_cancel(loop, ev);
    }
  }
  unready(c, fd);
  fd->registered = 0;
}

/* ---- poll ---- */

static void dispatch_sock(io_loop *loop, OVERLAPPED_ENTRY *e) {
  iocp_impl *c = loop->impl;
  io_ev *ev = (io_ev *)((char *)e->lpOverlapped - offsetof(io_ev, ov));
  int ok = ev->ov.Internal == 0, res;

  kernel_gave_back(c, ev);
  if (!ok)
    res = ev->canceled ? -ECANCELED : op_error(ev->fd, &ev->ov);
  else
    res = (int)e->dwNumberOfBytesTransferred;
  if (ok && res == 0 && ev->op == IO_OP_RECV) {
    if (ev->canceled)
      push_done(c, ev, -ECANCELED);
    else
      do_read(loop, ev);
    return;
  }
  if (ok && ev->op == IO_OP_CONNECT)
    res = ev->canceled ? -ECANCELED : connected(ev);
  if (!ok && res == 0)
    res = -EIO;
  push_done(c, ev, res);
}

static void dispatch_accept(io_loop *loop, OVERLAPPED_ENTRY *e) {
  iocp_impl *c = loop->impl;
  accept_ctx *x = (accept_ctx *)e->lpOverlapped;
  int ok = x->ov.Internal == 0, err = 0;

  x->busy = 0;
  x->set->busy--;
  c->kernel_ops--;
  if (!ok) {
    DWORD bytes = 0, flags = 0;
    if (!WSAGetOverlappedResult(x->set->listener, &x->ov, &bytes, FALSE, &flags))
      err = WSAGetLastError();
    ok = err == 0;
  }
  accept_finish(loop, x, ok, err);
}

static void run_ready(io_loop *loop) {
  iocp_impl *c = loop->impl;
  io_fd *ready = c->ready_head;
  c->ready_head = NULL;
  while (ready) {
    io_fd *fd = ready;
    ready = fd->next_ready;
    fd->ready = 0;
    if (!busy(fd->rd) && fd->rd->op == IO_OP_RECV)
      do_read(loop, fd->rd);
  }
}

/* Delivers the results queued before this pass; those queued by its
 * callbacks wait for the next poll, so a send that completes at once again
 * and again cannot keep the loop here. */
static void run_done(io_loop *loop) {
  iocp_impl *c = loop->impl;
  io_ev *ev = c->done_head, *last = c->done_tail;
  if (!ev)
    return;
  c->done_head = c->done_tail = NULL;
  for (;;) {
    io_ev *next = ev->next;
    int stop = ev == last;
    ev->pending = 0;
    if (ev->op == IO_OP_RECV)
      unready(c, ev->fd); /* its owner may free the io_fd after this */
    loop->stats.completions++;
    io_complete(ev, ev->pending_res, 0, NULL);
    if (stop)
      break;
    ev = next;
  }
}

static int iocp_poll(io_loop *loop, int timeout_ms) {
  iocp_impl *c = loop->impl;
  OVERLAPPED_ENTRY entries[BATCH];
  DWORD wait = timeout_ms < 0 ? INFINITE : (DWORD)timeout_ms;

  if (c->done_head || c->ready_head || c->acc_ready)
    wait = 0;
  for (int round = 0; round < ROUNDS; round++) {
    ULONG n = 0;
    IO_STAT_BUMP(loop, waits);
    if (!GetQueuedCompletionStatusEx(c->port, entries, BATCH, &n, wait, FALSE)) {
      DWORD err = GetLastError();
      if (err != WAIT_TIMEOUT)
        return -os_win_errno(err);
      n = 0;
    }
    loop->now = clock_ms(); /* timers set by the callbacks below count from now */
    for (ULONG i = 0; i < n; i++) {
      if (entries[i].lpCompletionKey == KEY_WAKE)
        continue;
      if (entries[i].lpCompletionKey == KEY_LISTEN)
        dispatch_accept(loop, &entries[i]);
      else
        dispatch_sock(loop, &entries[i]);
    }
    if (n < BATCH)
      break;
    wait = 0;
  }
  run_accept_ready(loop);
  run_ready(loop);
  run_done(loop);
  return 0;
}

/* ---- teardown ---- */

/* Cancels every op still with the kernel and waits until the port has given
 * back each OVERLAPPED, without callbacks (as the other backends drop what
 * is in flight): only then may the io_evs' owners and the accept contexts
 * be freed. */
static void drain(iocp_impl *c) {
  OVERLAPPED_ENTRY entries[BATCH];
  uint64_t end = clock_ms() + DRAIN_MS;

  for (io_ev *ev = c->inflight; ev; ev = ev->ov_next)
    if (ev->fd && ev->fd->fd >= 0)
      CancelIoEx((HANDLE)(uintptr_t)ev->fd->fd, &ev->ov);
  for (accept_set *set = c->sets; set; set = set->next)
    set_cancel(set);
  while (c->kernel_ops > 0 && clock_ms() < end) {
    ULONG n = 0;
    if (!GetQueuedCompletionStatusEx(c->port, entries, BATCH, &n, 100, FALSE))
      continue;
    for (ULONG i = 0; i < n; i++) {
      if (entries[i].lpCompletionKey == KEY_LISTEN) {
        accept_ctx *x = (accept_ctx *)entries[i].lpOverlapped;
        x->busy = 0;
        x->set->busy--;
        c->kernel_ops--;
      } else if (entries[i].lpCompletionKey == KEY_SOCK) {
        kernel_gave_back(c, (io_ev *)((char *)entries[i].lpOverlapped - offsetof(io_ev, ov)));
      }
    }
  }
  if (c->kernel_ops > 0)
    log_error("iocp: %u operations still in flight after %d ms at loop teardown; their "
              "accept contexts are left allocated",
              (unsigned)c->kernel_ops, DRAIN_MS);
}

static void iocp_done(io_loop *loop) {
  iocp_impl *c = loop->impl;
  if (!c)
    return;
  drain(c);
  /* An accept context the kernel still holds (the drain timed out) is left
   * allocated on purpose: its AcceptEx will still write into it. */
  for (accept_set *set = c->sets, *next; set; set = next) {
    next = set->next;
    if (set->busy == 0)
      set_unlink_free(c, set);
  }
  CloseHandle(c->port);
  free(c->scratch);
  free(c);
  loop->impl = NULL;
}

const io_backend io_iocp_backend = {
    .name = "iocp",
    .shared_accept = 0,
    .init = iocp_init,
    .done = iocp_done,
    .accept = iocp_accept,
    .recv = iocp_recv,
    .send = iocp_send,
    .connect = iocp_connect,
    .cancel = iocp_cancel,
    .close_fd = iocp_close_fd,
    .poll = iocp_poll,
    .wake = iocp_wake,
};
