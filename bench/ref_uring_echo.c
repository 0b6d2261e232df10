/* ref_uring_echo: the floor of an io_uring echo server, for bench/floor to
 * set beside the epoll reference (ref_echo.c) and pier's io_uring backend:
 * what io_uring itself costs per message, with no layer over it. One
 * thread; the ring set up as pier's is (SINGLE_ISSUER, DEFER_TASKRUN,
 * SUBMIT_ALL), a multishot accept, a multishot recv per connection into a
 * ring of provided buffers, and a send SQE per received chunk, from a copy
 * of it in a per-connection buffer; what arrives while that send is in
 * flight waits in a second buffer and goes next (reading pauses while more
 * than CAP bytes wait, as ref_echo stops reading while a write is pending).
 * Each loop iteration submits what is queued and waits for one completion,
 * as pier does. Usage: ref_uring_echo PORT (0 = any free port). */
#define _GNU_SOURCE
#include <errno.h>
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#define NBUFS 4096 /* provided buffers (a power of two) */
#define BUF_SIZE 16384
#define GROUP 1
#define MAX_FD (1 << 16)

enum { ACCEPT = 1, RECV, SEND };

#define CAP (256 * 1024)

typedef struct {
  char *buf;
  size_t len, cap;
} chunk;

typedef struct {
  chunk out, next; /* being sent (from off), and what came meanwhile */
  size_t off;
  int sending, armed, paused, closing;
} conn;

static struct io_uring ring;
static struct io_uring_buf_ring *br;
static char *bufs;
static conn *conns;

static struct io_uring_sqe *sqe_for(int kind, int fd) {
  struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
  if (!sqe) { /* full: hand what is queued to the kernel first */
    io_uring_submit(&ring);
    sqe = io_uring_get_sqe(&ring);
  }
  if (!sqe)
    fprintf(stderr, "ref_uring_echo: the submission queue stays full\n"), exit(1);
  io_uring_sqe_set_data64(sqe, ((uint64_t)kind << 32) | (uint32_t)fd);
  return sqe;
}

static void arm_recv(int fd) {
  struct io_uring_sqe *sqe = sqe_for(RECV, fd);
  io_uring_prep_recv_multishot(sqe, fd, NULL, 0, 0);
  sqe->flags |= IOSQE_BUFFER_SELECT;
  sqe->buf_group = GROUP;
  conns[fd].armed = 1;
}

static void send_rest(int fd) {
  conn *c = &conns[fd];
  io_uring_prep_send(sqe_for(SEND, fd), fd, c->out.buf + c->off, c->out.len - c->off,
                     MSG_NOSIGNAL);
  c->sending = 1;
}

static void append(chunk *k, const char *data, size_t len) {
  if (k->len + len > k->cap) {
    size_t cap = k->cap ? k->cap : BUF_SIZE;
    while (cap < k->len + len)
      cap *= 2;
    if (!(k->buf = realloc(k->buf, cap)))
      perror("ref_uring_echo"), exit(1);
    k->cap = cap;
  }
  memcpy(k->buf + k->len, data, len);
  k->len += len;
}

/* Closes a dropped connection once nothing of it is left in the kernel. */
static void settle(int fd) {
  conn *c = &conns[fd];
  if (c->closing && !c->armed && !c->sending) {
    close(fd);
    c->closing = 0;
  }
}

static void drop(int fd) {
  conns[fd].closing = 1;
  shutdown(fd, SHUT_RDWR); /* ends what is armed on it */
  settle(fd);
}

static void give_back(unsigned bid) {
  io_uring_buf_ring_add(br, bufs + (size_t)bid * BUF_SIZE, BUF_SIZE, (unsigned short)bid,
                        io_uring_buf_ring_mask(NBUFS), 0);
  io_uring_buf_ring_advance(br, 1);
}

static void on_recv(conn *c, int fd, const struct io_uring_cqe *cqe) {
  if (cqe->res > 0 && !c->closing) {
    unsigned bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
    append(c->sending ? &c->next : &c->out, bufs + (size_t)bid * BUF_SIZE, (size_t)cqe->res);
    give_back(bid);
    if (!c->sending)
      send_rest(fd);
    else if (c->next.len > CAP && !c->paused && (cqe->flags & IORING_CQE_F_MORE)) {
      c->paused = 1; /* re-armed once what waits is out */
      io_uring_prep_cancel64(sqe_for(0, fd), cqe->user_data, 0);
    }
  } else if (cqe->res > 0) {
    give_back(cqe->flags >> IORING_CQE_BUFFER_SHIFT);
  }
  if (cqe->flags & IORING_CQE_F_MORE)
    return;
  c->armed = 0;
  if (c->closing || cqe->res == 0 ||
      (cqe->res < 0 && cqe->res != -ECANCELED && cqe->res != -ENOBUFS))
    drop(fd);
  else if (c->next.len > CAP)
    c->paused = 1; /* re-armed once what waits is out */
  else if (!c->paused)
    arm_recv(fd); /* out of buffers, or the multishot ended */
}

static void on_send(conn *c, int fd, int res) {
  chunk t;
  c->sending = 0;
  if (res <= 0 || c->closing) {
    drop(fd);
    return;
  }
  c->off += (size_t)res;
  if (c->off < c->out.len) {
    send_rest(fd);
    return;
  }
  t = c->out; /* all out: what came meanwhile goes next */
  c->out = c->next;
  c->next = t;
  c->next.len = c->off = 0;
  if (c->out.len)
    send_rest(fd);
  else if (c->paused && !c->armed) {
    c->paused = 0;
    arm_recv(fd);
  }
}

static void on_cqe(const struct io_uring_cqe *cqe, int lfd) {
  int kind = (int)(cqe->user_data >> 32), fd = (int)(uint32_t)cqe->user_data, one = 1;

  if (kind == ACCEPT) {
    if (cqe->res >= MAX_FD) {
      close(cqe->res);
    } else if (cqe->res >= 0) {
      conn *c = &conns[cqe->res];
      setsockopt(cqe->res, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
      c->out.len = c->next.len = c->off = 0;
      c->sending = c->paused = c->closing = 0;
      arm_recv(cqe->res);
    }
    if (!(cqe->flags & IORING_CQE_F_MORE))
      io_uring_prep_multishot_accept(sqe_for(ACCEPT, lfd), lfd, NULL, NULL, 0);
  } else if (kind == RECV) {
    on_recv(&conns[fd], fd, cqe);
    settle(fd);
  } else if (kind == SEND) {
    on_send(&conns[fd], fd, cqe->res);
    settle(fd);
  }
}

int main(int argc, char **argv) {
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  struct io_uring_params p;
  struct io_uring_buf_reg reg;
  socklen_t sl = sizeof(sa);
  int one = 1, lfd;

  if (argc != 2)
    return fprintf(stderr, "usage: ref_uring_echo PORT\n"), 2;
  memset(&p, 0, sizeof(p));
  p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_SUBMIT_ALL |
            IORING_SETUP_CQSIZE;
  p.cq_entries = 65536;
  if (io_uring_queue_init_params(4096, &ring, &p) < 0)
    return fprintf(stderr, "ref_uring_echo: io_uring setup failed\n"), 1;
  br = mmap(NULL, NBUFS * sizeof(struct io_uring_buf), PROT_READ | PROT_WRITE,
            MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
  bufs = malloc((size_t)NBUFS * BUF_SIZE);
  conns = calloc(MAX_FD, sizeof(*conns));
  if (br == MAP_FAILED || !bufs || !conns)
    return perror("ref_uring_echo"), 1;
  io_uring_buf_ring_init(br);
  memset(&reg, 0, sizeof(reg));
  reg.ring_addr = (unsigned long)br;
  reg.ring_entries = NBUFS;
  reg.bgid = GROUP;
  if (io_uring_register_buf_ring(&ring, &reg, 0) < 0)
    return fprintf(stderr, "ref_uring_echo: cannot register the buffer ring\n"), 1;
  for (unsigned i = 0; i < NBUFS; i++)
    io_uring_buf_ring_add(br, bufs + (size_t)i * BUF_SIZE, BUF_SIZE, (unsigned short)i,
                          io_uring_buf_ring_mask(NBUFS), (int)i);
  io_uring_buf_ring_advance(br, NBUFS);

  signal(SIGPIPE, SIG_IGN);
  sa.sin_port = htons((unsigned short)atoi(argv[1]));
  lfd = socket(AF_INET, SOCK_STREAM, 0);
  setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(lfd, 4096) < 0 ||
      getsockname(lfd, (struct sockaddr *)&sa, &sl) < 0)
    return perror("ref_uring_echo: listen"), 1;
  fprintf(stderr, "ref_echo listening on 127.0.0.1:%u\n", ntohs(sa.sin_port));
  io_uring_prep_multishot_accept(sqe_for(ACCEPT, lfd), lfd, NULL, NULL, 0);

  for (;;) {
    struct io_uring_cqe *cqe;
    unsigned head, n = 0;
    int rc = io_uring_submit_and_wait(&ring, 1);
    if (rc < 0 && rc != -EINTR && rc != -ETIME)
      return fprintf(stderr, "ref_uring_echo: io_uring_enter: %s\n", strerror(-rc)), 1;
    io_uring_for_each_cqe(&ring, head, cqe) {
      on_cqe(cqe, lfd);
      n++;
    }
    io_uring_cq_advance(&ring, n);
  }
}
