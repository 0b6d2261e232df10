/* Console commands, read line by line from stdin (a descriptor, or the bytes
 * a platform's reader hands over) and answered on a stream: help, status,
 * sessions, kick SID, plugins, metrics, reload NAME, reopen-log, quit
 * (status, sessions and plugins also as JSON, with --json). The same parser serves the
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
  const char *source; /* who typed the commands, for the log: "console", "pierctl" */
  char buf[1024];
  size_t len;
  int discarding; /* inside a line longer than buf */
} console;

/* source names where the lines come from in the log lines of operator
 * actions (kick, reload, reopen-log): "kick 00..01 (pierctl): done". */
void console_init(console *c, host *h, const char *source);
/* Reopens the log file (log_reopen) and logs the outcome, naming who asked
 * ("SIGUSR1", "console"...). Returns 0 or a negative errno. Main thread. */
int console_reopen_log(const char *source);
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
