/* Console commands, read line by line from a file descriptor (stdin) and
 * answered on a stream: help, status, sessions, kick SID, plugins, quit. The
 * same parser serves the admin socket. */
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
/* Runs one command line (no newline). Returns 0, CONSOLE_QUIT, or -1 for an
 * unknown or malformed command (an error line is written to out). */
int console_exec(console *c, const char *line, FILE *out);

#endif
