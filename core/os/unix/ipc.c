/* The admin channel on POSIX: a unix stream socket at a path, mode 0600 in a
 * directory created 0700. The server side is nonblocking and polled. */
#include "base/log.h"
#include "os/ipc.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define DRAIN_MAX 65536 /* unread input discarded before a close */

const char os_ipc_noun[] = "admin socket";

struct os_ipc_server {
  int lfd;
  char *path;
  dev_t dev; /* identity of the socket file this server bound */
  ino_t ino;
};

struct os_ipc_conn {
  int fd;
};

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(LOG_PRINTF, 3, 4)));
static void set_err(char *err, size_t errlen, const char *fmt, ...) {
  va_list ap;
  if (!err || errlen == 0)
    return;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
}

int os_ipc_name(const char *path, char *name, size_t len) {
  struct sockaddr_un sa;
  if (strlen(path) >= sizeof(sa.sun_path) || strlen(path) >= len)
    return -ENAMETOOLONG;
  memcpy(name, path, strlen(path) + 1);
  return 0;
}

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
 * (removed, with a note in err), a live one (-EADDRINUSE) or something else
 * (-EEXIST). */
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
  set_err(err, errlen, "admin socket %s: removed a stale socket left by a stopped pierd", path);
  return 0;
}

int os_ipc_listen(const char *path, int backlog, os_ipc_server **out, char *err,
                  size_t errlen) {
  struct sockaddr_un sa;
  struct stat st;
  os_ipc_server *s;
  mode_t old_mask;
  int rc, e;

  *out = NULL;
  if (strlen(path) >= sizeof(sa.sun_path)) {
    set_err(err, errlen, "admin socket %s: path too long for a unix socket (at most %zu bytes)",
            path, sizeof(sa.sun_path) - 1);
    return -ENAMETOOLONG;
  }
  if ((rc = make_parent(path, err, errlen)) < 0)
    return rc;
  if ((rc = clear_stale(path, err, errlen)) < 0)
    return rc;

  s = calloc(1, sizeof(*s));
  if (!s || !(s->path = strdup(path))) {
    free(s);
    set_err(err, errlen, "admin socket %s: out of memory", path);
    return -ENOMEM;
  }
  s->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (s->lfd < 0) {
    e = errno;
    set_err(err, errlen, "admin socket %s: socket: %s", path, strerror(e));
    goto fail;
  }
  /* The file bind creates takes the socket inode's mode minus the umask:
   * both are narrowed so it is never open to others, even briefly. */
  (void)fchmod(s->lfd, 0600);
  fill_addr(&sa, path);
  old_mask = umask(0077);
  rc = bind(s->lfd, (struct sockaddr *)&sa, sizeof(sa));
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
  s->dev = st.st_dev;
  s->ino = st.st_ino;
  if (listen(s->lfd, backlog) < 0) {
    e = errno;
    set_err(err, errlen, "admin socket %s: listen: %s", path, strerror(e));
    unlink(path);
    goto fail;
  }
  *out = s;
  return 0;

fail:
  if (s->lfd >= 0)
    close(s->lfd);
  free(s->path);
  free(s);
  return -e;
}

const char *os_ipc_server_name(const os_ipc_server *s) { return s->path; }

int os_ipc_server_item(os_ipc_server *s, os_wait_item *item) {
  *item = (struct pollfd){.fd = s->lfd, .events = POLLIN};
  return 0;
}

int os_ipc_accept(os_ipc_server *s, os_ipc_conn **out) {
  os_ipc_conn *c;
  int fd = accept4(s->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
  *out = NULL;
  if (fd < 0)
    return errno == EWOULDBLOCK ? -EAGAIN : -errno;
  c = malloc(sizeof(*c));
  if (!c) {
    close(fd);
    return -ENOMEM;
  }
  c->fd = fd;
  *out = c;
  return 0;
}

void os_ipc_server_close(os_ipc_server *s) {
  struct stat st;
  if (!s)
    return;
  close(s->lfd);
  if (lstat(s->path, &st) == 0 && st.st_dev == s->dev && st.st_ino == s->ino)
    unlink(s->path);
  free(s->path);
  free(s);
}

long os_ipc_read(os_ipc_conn *c, void *buf, size_t cap) {
  for (;;) {
    ssize_t n = recv(c->fd, buf, cap, MSG_DONTWAIT);
    if (n >= 0)
      return (long)n;
    if (errno != EINTR)
      return errno == EWOULDBLOCK ? -EAGAIN : -errno;
  }
}

long os_ipc_write(os_ipc_conn *c, const void *buf, size_t n) {
  for (;;) {
    ssize_t k = send(c->fd, buf, n, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (k > 0)
      return (long)k;
    if (k == 0)
      return -EPIPE;
    if (errno != EINTR)
      return errno == EWOULDBLOCK ? -EAGAIN : -errno;
  }
}

void os_ipc_conn_item(os_ipc_conn *c, int want_write, os_wait_item *item) {
  *item = (struct pollfd){.fd = c->fd, .events = want_write ? POLLOUT : POLLIN};
}

void os_ipc_conn_close(os_ipc_conn *c) {
  char sink[4096];
  size_t drained = 0;
  ssize_t n;

  if (!c)
    return;
  /* Closing with unread input would make the peer's next read fail with
   * ECONNRESET; discard what is queued (bounded) so it sees a plain EOF. */
  while (drained < DRAIN_MAX && (n = recv(c->fd, sink, sizeof(sink), MSG_DONTWAIT)) > 0)
    drained += (size_t)n;
  close(c->fd);
  free(c);
}

/* ---- client ---- */

int os_ipc_dial(const char *path, int timeout_ms, os_ipc_conn **out, int *at) {
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
  os_ipc_conn *c;
  int fd, e;

  *out = NULL;
  if (strlen(path) >= sizeof(sa.sun_path)) {
    *at = OS_IPC_AT_NAME;
    return -ENAMETOOLONG;
  }
  memcpy(sa.sun_path, path, strlen(path) + 1);
  fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    *at = OS_IPC_AT_SOCKET;
    return -errno;
  }
  /* connect and send honour the send timeout on unix sockets. */
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
    e = errno;
    close(fd);
    *at = OS_IPC_AT_CONNECT;
    return -e;
  }
  c = malloc(sizeof(*c));
  if (!c) {
    close(fd);
    *at = OS_IPC_AT_SOCKET;
    return -ENOMEM;
  }
  c->fd = fd;
  *out = c;
  return 0;
}

int os_ipc_send_all(os_ipc_conn *c, const void *buf, size_t n) {
  for (size_t off = 0; off < n;) {
    ssize_t w = send(c->fd, (const char *)buf + off, n - off, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR)
      continue;
    if (w <= 0)
      return w < 0 ? -errno : -EPIPE;
    off += (size_t)w;
  }
  return 0;
}

long os_ipc_recv(os_ipc_conn *c, void *buf, size_t cap, int timeout_ms) {
  struct pollfd p = {.fd = c->fd, .events = POLLIN};
  ssize_t n;
  int r = poll(&p, 1, timeout_ms);
  if (r < 0)
    return -errno;
  if (r == 0)
    return -ETIMEDOUT;
  n = recv(c->fd, buf, cap, 0);
  return n < 0 ? -errno : (long)n;
}
