/* Waiting on several sources at once, for pierd's main loop: the signal or
 * console-control source, stdin, the file watch and the admin channel each
 * hand out items, and os_wait sleeps until one of them is ready or a timeout
 * passes. On POSIX an item is a pollfd (a descriptor and the readiness
 * wanted); on Windows it is a manual-reset event that a completion or another
 * thread sets, so readiness is not consumed by looking at it. */
#ifndef PIER_OS_WAIT_H
#define PIER_OS_WAIT_H

#ifdef _WIN32
#include "os/os_win.h"
typedef struct os_wait_item {
  HANDLE h; /* NULL: nothing to wait for */
  int ready;
} os_wait_item;
#define OS_WAIT_CALL "WaitForMultipleObjects"
#else
#include <poll.h>
typedef struct pollfd os_wait_item; /* fd -1: nothing to wait for */
#define OS_WAIT_CALL "poll"
#endif

/* Most items one os_wait takes (WaitForMultipleObjects' limit). */
#define OS_WAIT_MAX 64

/* Sleeps until at least one of the n items is ready or timeout_ms passes
 * (-1: no limit), then marks every ready item. Returns how many are ready
 * (0 on timeout), -EINTR when a signal interrupted the wait (call again), or
 * another negative errno (-EINVAL for more than OS_WAIT_MAX items). */
int os_wait(os_wait_item *items, int n, int timeout_ms);
/* Whether os_wait marked the item ready. */
int os_wait_ready(const os_wait_item *item);
/* An item that never becomes ready. */
void os_wait_none(os_wait_item *item);

#endif
