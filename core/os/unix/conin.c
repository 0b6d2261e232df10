/* The stdin console on POSIX: descriptor 0, polled directly. */
#include "os/conin.h"

#include <errno.h>
#include <unistd.h>

struct os_conin {
  int fd;
};

static os_conin the_stdin = {0};

int os_conin_open(os_conin **out) {
  *out = &the_stdin;
  return 0;
}

void os_conin_item(os_conin *c, os_wait_item *item) {
  *item = (struct pollfd){.fd = c->fd, .events = POLLIN};
}

long os_conin_read(os_conin *c, char *buf, size_t cap) {
  ssize_t n = read(c->fd, buf, cap < OS_CONIN_CHUNK ? cap : OS_CONIN_CHUNK);
  if (n < 0)
    return errno == EAGAIN || errno == EINTR ? -EAGAIN : 0;
  return (long)n;
}

void os_conin_close(os_conin *c) { (void)c; }
