/* Console commands, read line by line from stdin (a descriptor, or the bytes
 * a platform's reader hands over) and answered on a stream: help, status,
 * sessions, kick SID, plugins, metrics, reload NAME, quit. The same parser serves the
 * admin socket. */
#ifndef PIER_DAEMON_CONSOLE_H
#define PIER_DAEMON_CONSOLE_H

#include <stdio.h>

#include "host/host.h"

#define CONSOLE_OK 0
#define CONSOLE_EOF 1
#define CONSOLE_QUIT 2

typedef struct console {
  host *h;
  char buf[1024];
  size_t len;
  int discarding; /* inside a line longer than buf */
} console;

void console_init(console *c, host *h);
/* Reads what fd has and runs each complete line. Returns CONSOLE_OK,
 * CONSOLE_EOF when fd is closed, or CONSOLE_QUIT after `quit`. */
int console_read(console *c, int fd, FILE *out);
/* Takes n more bytes of input (n > 0) and runs each line they complete, as
 * console_read does with what it reads. Returns CONSOLE_OK or CONSOLE_QUIT
 * (the bytes after the `quit` line are dropped). */
int console_feed(console *c, const char *data, size_t n, FILE *out);
/* Runs one command line (no newline). Returns 0, CONSOLE_QUIT, or -1 for an
 * unknown or malformed command (an error line is written to out). */
int console_exec(console *c, const char *line, FILE *out);

#endif
