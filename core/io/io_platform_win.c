/* Windows: one backend, IOCP, whose completion port is also the loop's
 * wake-up (io_post posts a completion to it), so there is no wake fd. */
#include <string.h>

#include "io/io_platform.h"

const char io_backend_names[] = "auto or iocp";

const io_backend *io_backend_pick(const char *name, char *why, size_t len) {
  if (why && len)
    why[0] = '\0';
  if (strcmp(name, "iocp") == 0 || strcmp(name, "auto") == 0)
    return &io_iocp_backend;
  return NULL;
}

int io_wake_open(io_loop *loop) {
  loop->wake_fd = -1;
  return 0;
}

void io_wake_close(io_loop *loop) { (void)loop; }
