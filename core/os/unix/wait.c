/* os_wait on POSIX: poll. */
#include "os/wait.h"

#include <errno.h>

int os_wait(os_wait_item *items, int n, int timeout_ms) {
  int r;
  if (n < 0 || n > OS_WAIT_MAX)
    return -EINVAL;
  r = poll(items, (nfds_t)n, timeout_ms);
  return r < 0 ? -errno : r;
}

int os_wait_ready(const os_wait_item *item) { return item->fd >= 0 && item->revents != 0; }

void os_wait_none(os_wait_item *item) { *item = (struct pollfd){.fd = -1}; }
