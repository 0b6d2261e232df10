/* The admin socket: a nonblocking unix stream listener served from pierd's
 * poll loop. Each client sends one command line and gets the command's output
 * plus a final "OK" or "ERR" line; deadlines are kept by a timerfd polled
 * with the sockets, so a silent or stuck client costs a slot, never a wait. */
#include "daemon/admin.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "base/log.h"
#include "daemon/console.h"

#define ACCEPT_PAUSE_MS 100 /* after running out of descriptors */
#define DRAIN_MAX 65536     /* unread input discarded before a close */

typedef enum {
  C_FREE = 0,
  C_READING, /* waiting for the command line */
  C_WRITING, /* answer pending */
  C_HELD     /* answered `quit`: kept open until admin_close */
} client_state;

typedef struct client {
  int fd;
  client_state state;
  int hold;          /* move to C_HELD instead of closing once written */
  uint64_t deadline; /* monotonic ms: end of the read or of the write */
  size_t len;        /* bytes in buf */
  char buf[ADMIN_MAX_LINE + 1];
  char *out; /* answer (malloc'd) */
  size_t outlen, outoff;
} client;

struct admin {
  int lfd, tfd;
  char *path;
  dev_t dev; /* identity of the socket file this admin bound */
  ino_t ino;
  uint64_t accept_pause_until;
  log_rate rate;
  client c[ADMIN_MAX_CLIENTS];
};

static uint64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_err(char *err, size_t errlen, const char *fmt, ...) {
  va_list ap;
  if (!err || errlen == 0)
    return;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
}

/* ---- admin_open ---- */

/* Makes dir and any missing ancestors with mode 0700; existing directories
 * are left as they are. Returns 0 or a negative errno (-ENOTDIR when a
 * component is not a directory). */
static int make_dirs(const char *dir) {
  struct stat st;
  char *parent, *slash;
  int rc;

  if (stat(dir, &st) == 0)
    return S_ISDIR(st.st_mode) ? 0 : -ENOTDIR;
  if (errno != ENOENT)
    return -errno;
  parent = strdup(dir);
  if (!parent)
    return -ENOMEM;
  slash = strrchr(parent, '/');
  while (slash && slash > parent && slash[1] == '\0') { /* trailing slashes */
    *slash = '\0';
    slash = strrchr(parent, '/');
  }
  rc = 0;
  if (slash && slash > parent) {
    *slash = '\0';
    rc = make_dirs(parent);
  }
  free(parent);
  if (rc < 0)
    return rc;
  if (mkdir(dir, 0700) == 0)
    return chmod(dir, 0700) == 0 ? 0 : -errno;
  if (errno == EEXIST && stat(dir, &st) == 0)
    return S_ISDIR(st.st_mode) ? 0 : -ENOTDIR;
  return -errno;
}

/* Creates the directory that will hold path. */
static int make_parent(const char *path, char *err, size_t errlen) {
  const char *slash = strrchr(path, '/');
  char *dir;
  int rc;

  if (!slash || slash == path)
    return 0; /* the current directory or / */
  dir = strndup(path, (size_t)(slash - path));
  if (!dir) {
    set_err(err, errlen, "admin socket %s: out of memory", path);
    return -ENOMEM;
  }
  rc = make_dirs(dir);
  if (rc < 0)
    set_err(err, errlen, "admin socket %s: cannot create directory %s: %s", path, dir,
            strerror(-rc));
  free(dir);
  return rc;
}

static void fill_addr(struct sockaddr_un *sa, const char *path) {
  memset(sa, 0, sizeof(*sa));
  sa->sun_family = AF_UNIX;
  memcpy(sa->sun_path, path, strlen(path) + 1);
}

/* Deals with whatever already exists at path: nothing, a stale socket
 * (removed), a live one (-EADDRINUSE) or something else (-EEXIST). */
static int clear_stale(const char *path, char *err, size_t errlen) {
  struct sockaddr_un sa;
  struct stat st;
  int fd, rc, e;

  if (lstat(path, &st) < 0) {
    if (errno == ENOENT)
      return 0;
    e = errno;
    set_err(err, errlen, "admin socket %s: %s", path, strerror(e));
    return -e;
  }
  if (!S_ISSOCK(st.st_mode)) {
    set_err(err, errlen,
            "admin socket %s: the path exists and is not a socket; remove it or set "
            "another admin_socket",
            path);
    return -EEXIST;
  }
  fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    e = errno;
    set_err(err, errlen, "admin socket %s: socket: %s", path, strerror(e));
    return -e;
  }
  fill_addr(&sa, path);
  rc = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
  e = errno;
  close(fd);
  if (rc == 0 || e == EAGAIN || e == EINPROGRESS) {
    set_err(err, errlen, "admin socket %s is in use by a running pierd", path);
    return -EADDRINUSE;
  }
  if (e != ECONNREFUSED) {
    set_err(err, errlen, "admin socket %s: cannot tell whether a daemon uses it: %s", path,
            strerror(e));
    return -e;
  }
  /* Nobody listens: a dead daemon's leftover. */
  if (unlink(path) < 0 && errno != ENOENT) {
    e = errno;
    set_err(err, errlen, "admin socket %s: cannot remove the stale socket: %s", path,
            strerror(e));
    return -e;
  }
  log_info("admin socket %s: removed a stale socket left by a stopped pierd", path);
  return 0;
}

int admin_open(const char *path, admin **out, char *err, size_t errlen) {
  struct sockaddr_un sa;
  struct stat st;
  admin *a;
  mode_t old_mask;
  int rc, e;

  if (err && errlen)
    err[0] = '\0';
  if (!out)
    return -EINVAL;
  *out = NULL;
  if (!path || !*path) {
    set_err(err, errlen, "admin socket: empty path");
    return -EINVAL;
  }
  if (strlen(path) >= sizeof(sa.sun_path)) {
    set_err(err, errlen, "admin socket %s: path too long for a unix socket (at most %zu bytes)",
            path, sizeof(sa.sun_path) - 1);
    return -ENAMETOOLONG;
  }
  if ((rc = make_parent(path, err, errlen)) < 0)
    return rc;
  if ((rc = clear_stale(path, err, errlen)) < 0)
    return rc;

  a = calloc(1, sizeof(*a));
  if (!a || !(a->path = strdup(path))) {
    free(a);
    set_err(err, errlen, "admin socket %s: out of memory", path);
    return -ENOMEM;
  }
  a->tfd = -1;
  for (int i = 0; i < ADMIN_MAX_CLIENTS; i++)
    a->c[i].fd = -1;
  a->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (a->lfd < 0) {
    e = errno;
    set_err(err, errlen, "admin socket %s: socket: %s", path, strerror(e));
    goto fail;
  }
  /* The file bind creates takes the socket inode's mode minus the umask:
   * both are narrowed so it is never open to others, even briefly. */
  (void)fchmod(a->lfd, 0600);
  fill_addr(&sa, path);
  old_mask = umask(0077);
  rc = bind(a->lfd, (struct sockaddr *)&sa, sizeof(sa));
  e = errno;
  umask(old_mask);
  if (rc < 0) {
    if (e == EADDRINUSE)
      set_err(err, errlen, "admin socket %s is in use by a running pierd", path);
    else
      set_err(err, errlen, "admin socket %s: cannot bind: %s", path, strerror(e));
    goto fail;
  }
  if (chmod(path, 0600) < 0 || lstat(path, &st) < 0) {
    e = errno;
    set_err(err, errlen, "admin socket %s: %s", path, strerror(e));
    unlink(path);
    goto fail;
  }
  a->dev = st.st_dev;
  a->ino = st.st_ino;
  if (listen(a->lfd, ADMIN_MAX_CLIENTS) < 0) {
    e = errno;
    set_err(err, errlen, "admin socket %s: listen: %s", path, strerror(e));
    unlink(path);
    goto fail;
  }
  a->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
  if (a->tfd < 0) {
    e = errno;
    set_err(err, errlen, "admin socket %s: timerfd: %s", path, strerror(e));
    unlink(path);
    goto fail;
  }
  log_info("admin socket %s ready (pierctl)", path);
  *out = a;
  return 0;

fail:
  if (a->lfd >= 0)
    close(a->lfd);
  free(a->path);
  free(a);
  return -e;
}

/* ---- clients ---- */

static void client_close(client *c) {
  char sink[4096];
  size_t drained = 0;
  ssize_t n;

  /* Closing with unread input would make the peer's next read fail with
   * ECONNRESET; discard what is queued (bounded) so it sees a plain EOF. */
  while (drained < DRAIN_MAX && (n = recv(c->fd, sink, sizeof(sink), MSG_DONTWAIT)) > 0)
    drained += (size_t)n;
  close(c->fd);
  free(c->out);
  memset(c, 0, sizeof(*c));
  c->fd = -1;
}

/* Sends what it can of the pending answer without waiting; closes (or holds)
 * the client once it is all out, or on an error. */
static void client_write(client *c) {
  while (c->outoff < c->outlen) {
    ssize_t n = send(c->fd, c->out + c->outoff, c->outlen - c->outoff,
                     MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      c->outoff += (size_t)n;
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      return;
    } else {
      client_close(c); /* the peer went away */
      return;
    }
  }
  if (c->hold) {
    c->state = C_HELD;
    free(c->out);
    c->out = NULL;
    c->outlen = c->outoff = 0;
  } else {
    client_close(c);
  }
}

/* Queues text as the answer and starts sending it; takes ownership. */
static void client_answer(client *c, char *text, size_t len, uint64_t now) {
  c->out = text;
  c->outlen = len;
  c->outoff = 0;
  c->state = C_WRITING;
  c->deadline = now + ADMIN_WRITE_TIMEOUT_MS;
  client_write(c);
}

/* Answers with one error line and "ERR", then closes. */
static void client_fail(client *c, const char *msg, uint64_t now) {
  char *text = NULL;
  int len = asprintf(&text, "error: %s\nERR\n", msg);
  if (len < 0) {
    client_close(c);
    return;
  }
  client_answer(c, text, (size_t)len, now);
}

/* Runs the command line in c->buf and queues its answer. Returns exec's
 * result, or -1 when the answer could not be built. */
static int client_exec(client *c, int (*exec)(void *, const char *, FILE *),
                       void *ctx, uint64_t now) {
  char *text = NULL;
  size_t len = 0;
  int rc, bad;
  FILE *m = open_memstream(&text, &len);

  if (!m) {
    client_fail(c, "out of memory", now);
    return -1;
  }
  rc = exec(ctx, c->buf, m);
  bad = fflush(m) != 0;
  if (!bad && len > 0 && text[len - 1] != '\n')
    bad = fputc('\n', m) == EOF;
  if (!bad)
    bad = fputs(rc < 0 ? "ERR\n" : "OK\n", m) == EOF;
  if (fclose(m) != 0 || bad) {
    free(text);
    client_fail(c, "out of memory", now);
    return -1; /* reported as failed, so not acted on */
  }
  log_debug("admin: \"%s\": %s", c->buf, rc < 0 ? "ERR" : "OK");
  if (rc == CONSOLE_QUIT)
    c->hold = 1;
  client_answer(c, text, len, now);
  return rc;
}

/* Reads what the client has sent; runs the line once it is complete.
 * Returns CONSOLE_QUIT when the command was `quit`, else 0. */
static int client_read(admin *a, client *c, int (*exec)(void *, const char *, FILE *),
                       void *ctx, uint64_t now) {
  for (;;) {
    ssize_t n = recv(c->fd, c->buf + c->len, ADMIN_MAX_LINE - c->len, MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK)
        client_close(c);
      return 0;
    }
    if (n == 0) {
      if (c->len == 0)
        client_close(c); /* connected and left: a liveness probe */
      else
        client_fail(c, "connection closed before the end of the command line", now);
      return 0;
    }
    char *nl = memchr(c->buf + c->len, '\n', (size_t)n);
    c->len += (size_t)n;
    if (nl) {
      size_t linelen = (size_t)(nl - c->buf);
      *nl = '\0';
      if (linelen > 0 && c->buf[linelen - 1] == '\r')
        c->buf[--linelen] = '\0';
      if (strlen(c->buf) != linelen) {
        client_fail(c, "the command line contains a NUL byte", now);
        return 0;
      }
      c->len = 0; /* anything after the newline is ignored */
      return client_exec(c, exec, ctx, now) == CONSOLE_QUIT ? CONSOLE_QUIT : 0;
    }
    if (c->len >= ADMIN_MAX_LINE) {
      log_limited(&a->rate, LOG_WARN, "admin socket: command line longer than %d bytes; closed",
                  ADMIN_MAX_LINE);
      client_fail(c, "command line too long (at most 1024 bytes with its newline)", now);
      return 0;
    }
  }
}

static client *find_client(admin *a, int fd) {
  for (int i = 0; i < ADMIN_MAX_CLIENTS; i++)
    if (a->c[i].fd == fd && (a->c[i].state == C_READING || a->c[i].state == C_WRITING))
      return &a->c[i];
  return NULL;
}

static client *free_slot(admin *a) {
  for (int i = 0; i < ADMIN_MAX_CLIENTS; i++)
    if (a->c[i].state == C_FREE)
      return &a->c[i];
  return NULL;
}

/* Ends clients whose deadline passed. */
static void expire(admin *a, uint64_t now) {
  for (int i = 0; i < ADMIN_MAX_CLIENTS; i++) {
    client *c = &a->c[i];
    if (c->state == C_READING && now >= c->deadline) {
      log_limited(&a->rate, LOG_WARN,
                  "admin socket: client sent no complete command line within %d ms; closed",
                  ADMIN_READ_TIMEOUT_MS);
      client_fail(c, "no complete command line within 2 s", now);
      if (c->state == C_WRITING) /* one try only for a slow client */
        client_close(c);
    } else if (c->state == C_WRITING && now >= c->deadline) {
      log_limited(&a->rate, LOG_WARN,
                  "admin socket: client did not take its answer within %d ms; closed",
                  ADMIN_WRITE_TIMEOUT_MS);
      client_close(c);
    }
  }
}

/* Accepts waiting clients while slots are free; each is read at once in case
 * its line is already there. */
static int accept_clients(admin *a, int (*exec)(void *, const char *, FILE *), void *ctx,
                          uint64_t now) {
  client *c;
  while ((c = free_slot(a))) {
    int fd = accept4(a->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED)
        continue;
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
        log_limited(&a->rate, LOG_WARN, "admin socket: accept: %s; pausing", strerror(errno));
        a->accept_pause_until = now + ACCEPT_PAUSE_MS;
      } else if (errno != EAGAIN && errno != EWOULDBLOCK) {
        log_limited(&a->rate, LOG_WARN, "admin socket: accept: %s", strerror(errno));
      }
      return 0;
    }
    memset(c, 0, sizeof(*c));
    c->fd = fd;
    c->state = C_READING;
    c->deadline = now + ADMIN_READ_TIMEOUT_MS;
    if (client_read(a, c, exec, ctx, now) == CONSOLE_QUIT)
      return CONSOLE_QUIT;
  }
  return 0;
}

/* ---- the poll loop's side ---- */

int admin_pollfds(admin *a, struct pollfd *fds, int max) {
  struct itimerspec its;
  uint64_t next = 0, now = now_ms();
  int n = 0, slot = 0;

  if (!a || !fds || max <= 0)
    return 0;
  for (int i = 0; i < ADMIN_MAX_CLIENTS; i++) {
    client *c = &a->c[i];
    if ((c->state == C_READING || c->state == C_WRITING) && (!next || c->deadline < next))
      next = c->deadline;
    if (c->state == C_FREE)
      slot = 1;
  }
  if (a->accept_pause_until > now && (!next || a->accept_pause_until < next))
    next = a->accept_pause_until;
  memset(&its, 0, sizeof(its));
  if (next) {
    its.it_value.tv_sec = (time_t)(next / 1000);
    its.it_value.tv_nsec = (long)(next % 1000) * 1000000L;
  }
  timerfd_settime(a->tfd, next ? TFD_TIMER_ABSTIME : 0, &its, NULL);

  fds[n++] = (struct pollfd){.fd = a->tfd, .events = POLLIN};
  if (n < max && slot && a->accept_pause_until <= now)
    fds[n++] = (struct pollfd){.fd = a->lfd, .events = POLLIN};
  for (int i = 0; i < ADMIN_MAX_CLIENTS && n < max; i++) {
    client *c = &a->c[i];
    if (c->state == C_READING)
      fds[n++] = (struct pollfd){.fd = c->fd, .events = POLLIN};
    else if (c->state == C_WRITING)
      fds[n++] = (struct pollfd){.fd = c->fd, .events = POLLOUT};
  }
  return n;
}

int admin_handle_ready(admin *a, const struct pollfd *fds, int n,
                       int (*exec)(void *ctx, const char *line, FILE *out), void *ctx) {
  uint64_t now = now_ms();
  int want_accept = 0;

  if (!a || !exec)
    return 0;
  for (int i = 0; fds && i < n; i++) {
    client *c;
    if (!fds[i].revents || fds[i].fd < 0)
      continue;
    if (fds[i].fd == a->tfd) {
      uint64_t ticks;
      if (read(a->tfd, &ticks, sizeof(ticks)) < 0) {
      } /* drained; deadlines are checked below either way */
    } else if (fds[i].fd == a->lfd) {
      want_accept = 1;
    } else if ((c = find_client(a, fds[i].fd))) {
      if (c->state == C_READING) {
        if (client_read(a, c, exec, ctx, now) == CONSOLE_QUIT)
          return CONSOLE_QUIT;
      } else if (fds[i].revents & (POLLERR | POLLHUP) && !(fds[i].revents & POLLOUT)) {
        client_close(c);
      } else {
        client_write(c);
      }
    }
  }
  expire(a, now);
  /* Last, so a descriptor number reused by a new client is not taken for an
   * entry of this round. */
  if (want_accept)
    return accept_clients(a, exec, ctx, now);
  return 0;
}

void admin_close(admin *a) {
  struct stat st;

  if (!a)
    return;
  close(a->lfd);
  if (a->tfd >= 0)
    close(a->tfd);
  if (lstat(a->path, &st) == 0 && st.st_dev == a->dev && st.st_ino == a->ino)
    unlink(a->path);
  for (int i = 0; i < ADMIN_MAX_CLIENTS; i++) {
    client *c = &a->c[i];
    if (c->state == C_WRITING && c->hold)
      client_write(c); /* a last try for the `quit` answer */
    if (c->state != C_FREE && c->fd >= 0)
      client_close(c);
  }
  free(a->path);
  free(a);
}
