/* Linux: the backends (io_uring, else epoll) and the eventfd both wait on
 * for io_post's wake-ups. */
#include <errno.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "base/log.h"
#include "io/io_platform.h"

const char io_backend_names[] = "auto, io_uring or epoll";

const io_backend *io_backend_pick(const char *name, char *why, size_t len) {
  if (why && len)
    why[0] = '\0';
  if (strcmp(name, "io_uring") == 0)
    return &io_uring_backend;
  if (strcmp(name, "epoll") == 0)
    return &io_epoll_backend;
  if (strcmp(name, "auto") == 0) {
    if (io_uring_probe(why, len) == 0)
      return &io_uring_backend;
    return &io_epoll_backend;
  }
  return NULL;
}

int io_wake_open(io_loop *loop) {
  loop->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  return loop->wake_fd < 0 ? -errno : 0;
}

void io_wake_close(io_loop *loop) {
  if (loop->wake_fd >= 0)
    close(loop->wake_fd);
  loop->wake_fd = -1;
}

void io_eventfd_wake(io_loop *loop) {
  uint64_t one = 1;
  if (write(loop->wake_fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
    log_error("io: eventfd write failed: %s", os_strerror(errno));
}

void io_loop_drain_wake(io_loop *loop) {
  uint64_t v;
  while (read(loop->wake_fd, &v, sizeof(v)) > 0) {
  }
}
