/* The service manager's readiness protocol: systemd's sd_notify(3), spoken
 * directly (one datagram per state change to the unix socket named by
 * NOTIFY_SOCKET, "@name" meaning the abstract namespace) so pierd needs no
 * libsystemd. Without NOTIFY_SOCKET, and on Windows, every call does
 * nothing. Main thread only. */
#ifndef PIER_OS_NOTIFY_H
#define PIER_OS_NOTIFY_H

#include <stdint.h>

/* Reads NOTIFY_SOCKET and WATCHDOG_USEC (honouring WATCHDOG_PID) and removes
 * them from the environment, so plugins and their children never talk to
 * the manager on pierd's behalf. Returns 1 when a manager listens, else 0. */
int os_notify_open(void);
/* Sends state ("READY=1", "STOPPING=1", "WATCHDOG=1", "STATUS=...", lines
 * joined by '\n'). Returns 0, or a negative errno (nothing is retried: a
 * manager that misses one message sees the next). */
int os_notify(const char *state);
/* How often the manager wants WATCHDOG=1, in ms (half its WATCHDOG_USEC,
 * as sd_watchdog_enabled(3) advises), or 0 when it does not. */
unsigned os_notify_watchdog_ms(void);
void os_notify_close(void);

#endif
