/* A stdio stream that collects what is written to it in memory, for the
 * answer of an admin command (console_exec writes to a FILE). POSIX has
 * open_memstream; Windows has no memory stream, so there it is a temporary
 * file that the system deletes on close and is read back at the end. */
#ifndef PIER_OS_MEMOUT_H
#define PIER_OS_MEMOUT_H

#include <stddef.h>
#include <stdio.h>

typedef struct os_memout {
  FILE *f;
  char *text;
  size_t len;
} os_memout;

/* Returns the stream to write to, or NULL (out of memory or no temporary
 * file). */
FILE *os_memout_open(os_memout *m);
/* Closes the stream and hands out what was written, NUL-terminated, in
 * *text (free it) and *len. Returns 0, or a negative errno when something
 * could not be written or read back (nothing is handed out then). */
int os_memout_close(os_memout *m, char **text, size_t *len);

#endif
