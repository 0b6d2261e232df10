/* sd_notify without libsystemd: the protocol is one AF_UNIX datagram of
 * "KEY=VALUE\n" lines to $NOTIFY_SOCKET (systemd's sd_notify(3), "Notes"
 * describe it as a stable interface). */
#include "os/notify.h"

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static int notify_fd = -1;
static struct sockaddr_un notify_addr;
static socklen_t notify_len;
static unsigned watchdog_ms;

static void read_watchdog(void) {
  const char *usec = getenv("WATCHDOG_USEC"), *pid = getenv("WATCHDOG_PID");
  char *end;
  unsigned long long us;
  if (!usec)
    return;
  /* WATCHDOG_PID names the process meant; a pierd started by one that was
   * meant is not. */
  if (pid && strtol(pid, NULL, 10) != (long)getpid())
    return;
  errno = 0;
  us = strtoull(usec, &end, 10);
  if (errno || *end || us == 0)
    return;
  us /= 2000; /* half the interval, in ms */
  watchdog_ms = us == 0 ? 1 : us > 0xffffffffu ? 0xffffffffu : (unsigned)us;
}

int os_notify_open(void) {
  const char *path = getenv("NOTIFY_SOCKET");
  size_t n;

  read_watchdog();
  unsetenv("WATCHDOG_USEC");
  unsetenv("WATCHDOG_PID");
  if (!path || (path[0] != '/' && path[0] != '@') || (n = strlen(path)) >= sizeof(notify_addr.sun_path)) {
    unsetenv("NOTIFY_SOCKET");
    watchdog_ms = 0;
    return 0;
  }
  memset(&notify_addr, 0, sizeof(notify_addr));
  notify_addr.sun_family = AF_UNIX;
  memcpy(notify_addr.sun_path, path, n);
  if (path[0] == '@')
    notify_addr.sun_path[0] = '\0'; /* abstract: the length counts, no terminator */
  else
    n++;
  notify_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
  unsetenv("NOTIFY_SOCKET");
  notify_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (notify_fd < 0) {
    watchdog_ms = 0;
    return 0;
  }
  return 1;
}

int os_notify(const char *state) {
  if (notify_fd < 0)
    return 0;
  if (sendto(notify_fd, state, strlen(state), MSG_NOSIGNAL, (struct sockaddr *)&notify_addr,
             notify_len) < 0)
    return -errno;
  return 0;
}

unsigned os_notify_watchdog_ms(void) { return notify_fd < 0 ? 0 : watchdog_ms; }

void os_notify_close(void) {
  if (notify_fd >= 0)
    close(notify_fd);
  notify_fd = -1;
}
