/* Socket calls on the per-message path of the Linux backends: epoll's
 * reads and sends, and the sends io_uring makes at once (see
 * io_backend.try_send). A send takes what the socket has room for now and
 * never blocks or raises SIGPIPE; it returns the bytes taken or a negative
 * errno (-EAGAIN: none). */
#ifndef PIER_IO_IO_SOCK_LINUX_H
#define PIER_IO_IO_SOCK_LINUX_H

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

/* The per-message system calls go through syscall(), not libc's recv, send
 * and sendmsg: in a process with more than one thread each of those is a
 * cancellation point, which marks the thread cancellable before the call and
 * not after it, two atomic read-modify-writes per call (glibc 2.36). pier
 * cancels no thread. Sanitizer builds keep libc's calls, which the
 * sanitizers intercept to check the buffers. */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define PIER_LIBC_SOCKET_CALLS 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || \
    __has_feature(memory_sanitizer)
#define PIER_LIBC_SOCKET_CALLS 1
#endif
#endif

#ifdef PIER_LIBC_SOCKET_CALLS
static inline ssize_t sys_recv(int fd, void *buf, size_t len) { return recv(fd, buf, len, 0); }

static inline ssize_t sys_send(int fd, const void *buf, size_t len, int flags) {
  return send(fd, buf, len, flags);
}

static inline ssize_t sys_sendmsg(int fd, const struct msghdr *msg, int flags) {
  return sendmsg(fd, msg, flags);
}
#else
static inline ssize_t sys_recv(int fd, void *buf, size_t len) {
  return syscall(SYS_recvfrom, fd, buf, len, 0, NULL, NULL);
}

static inline ssize_t sys_send(int fd, const void *buf, size_t len, int flags) {
  return syscall(SYS_sendto, fd, buf, len, flags, NULL, 0);
}

static inline ssize_t sys_sendmsg(int fd, const struct msghdr *msg, int flags) {
  return syscall(SYS_sendmsg, fd, msg, flags);
}
#endif

static inline int io_sock_try_send(int fd, const struct iovec *iov, int iovcnt) {
  struct msghdr msg;
  ssize_t n;
  if (iovcnt == 1) { /* the common case: send() skips the msghdr and iovec import */
    do {
      n = sys_send(fd, iov[0].iov_base, iov[0].iov_len, MSG_NOSIGNAL | MSG_DONTWAIT);
    } while (n < 0 && errno == EINTR);
    return n < 0 ? -errno : (int)n;
  }
  memset(&msg, 0, sizeof(msg));
  msg.msg_iov = (struct iovec *)iov;
  msg.msg_iovlen = (size_t)iovcnt;
  do {
    n = sys_sendmsg(fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
  } while (n < 0 && errno == EINTR);
  return n < 0 ? -errno : (int)n;
}

#endif
