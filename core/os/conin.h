/* The daemon's stdin console as a wait item: a console, a pipe (tests drive
 * pierd through one), a file, or nothing. On POSIX stdin is polled directly.
 * On Windows a console or pipe handle cannot be waited on for input, so a
 * small reader thread reads it and hands each chunk to the main loop through
 * a single slot: it waits until the main loop has taken the chunk before it
 * reads again, so at most one chunk is ever held. */
#ifndef PIER_OS_CONIN_H
#define PIER_OS_CONIN_H

#include <stddef.h>

#include "os/wait.h"

/* The most bytes one os_conin_read returns. */
#define OS_CONIN_CHUNK 1024

typedef struct os_conin os_conin;

/* Starts reading stdin. Returns 0 and sets *out, or a negative errno
 * (-ENODEV when the process has no stdin at all). */
int os_conin_open(os_conin **out);
void os_conin_item(os_conin *c, os_wait_item *item);
/* Returns the bytes now available (at most cap), 0 at the end of input (or
 * on a read error), or -EAGAIN when there is nothing yet. Main thread. */
long os_conin_read(os_conin *c, char *buf, size_t cap);
/* Stops the reader. NULL is ignored. */
void os_conin_close(os_conin *c);

#endif
