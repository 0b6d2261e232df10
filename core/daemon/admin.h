/* The admin channel: a unix stream socket (a named pipe on Windows, see
 * os/ipc.h) on which pierctl (or any local client of the socket's owner)
 * sends one console command line per connection and reads back the command's
 * output followed by a final "OK" or "ERR" line. Everything runs on pierd's
 * main thread from its wait loop and never blocks. */
#ifndef PIER_DAEMON_ADMIN_H
#define PIER_DAEMON_ADMIN_H

#include <stddef.h>
#include <stdio.h>

#include "os/wait.h"

/* Longest command line a client may send, its newline included. */
#define ADMIN_MAX_LINE 1024
/* A client must send its whole line within this time after connecting. */
#define ADMIN_READ_TIMEOUT_MS 2000
/* And must take its answer within this time once it is ready. */
#define ADMIN_WRITE_TIMEOUT_MS 5000
/* Clients served at once; further ones wait in the listen backlog. */
#define ADMIN_MAX_CLIENTS 16
/* Items admin_wait_items fills at most: the listener, the clients. */
#define ADMIN_MAX_WAIT_ITEMS (1 + ADMIN_MAX_CLIENTS)

typedef struct admin admin;

/* Creates the socket at path (on Windows the pipe os_ipc_name derives from
 * it; "admin pipe NAME is in use by a running pierd" there): makes the
 * parent directory (mode 0700) if missing, refuses if another live daemon answers on it ("admin socket %s is
 * in use by a running pierd"), removes a stale socket file left by a dead one
 * (but never a file that is not a socket), binds with a restrictive umask so
 * the file is never reachable by others, chmods it 0600 and listens.
 * Returns 0 and sets *out, or a negative errno (-EADDRINUSE when in use,
 * -EEXIST when path is not a socket, -ENAMETOOLONG, ...) with one line
 * without a newline in err (when errlen > 0). */
int admin_open(const char *path, admin **out, char *err, size_t errlen);

/* Fills up to max wait items and returns how many: the listener while a
 * client slot is free, and each client (its input while reading its line,
 * its output while its answer is pending). Call it before every os_wait and
 * wait on the items as filled, no longer than admin_timeout_ms;
 * admin_handle_ready then takes the same items. Returns 0 when max <= 0. */
int admin_wait_items(admin *a, os_wait_item *items, int max);

/* How long the wait may last before a client deadline passes (-1: none). */
int admin_timeout_ms(const admin *a);

/* Handles readiness of the items admin_wait_items filled (n of them, after
 * os_wait marked them), and the deadlines that passed: accepts clients (nonblocking), reads one command
 * line per client (at most ADMIN_MAX_LINE bytes within ADMIN_READ_TIMEOUT_MS;
 * longer or slower clients get an "error: ..." line and "ERR" and are
 * closed), runs exec(ctx, line, out) with out a memory stream, and writes
 * back the output followed by a final line "OK" (exec returned >= 0) or
 * "ERR" (exec returned < 0), then closes the connection. When exec returns
 * CONSOLE_QUIT the client gets "OK", its connection stays open until
 * admin_close (so it sees the daemon finish), and this returns CONSOLE_QUIT
 * at once; otherwise it returns 0. Never waits on a client. */
int admin_handle_ready(admin *a, const os_wait_item *items, int n,
                       int (*exec)(void *ctx, const char *line, FILE *out), void *ctx);

/* Stops listening, unlinks the socket file (if it is still the one this
 * admin created; on Windows the pipe goes away with its handles), then
 * closes every client. NULL is ignored. */
void admin_close(admin *a);

#endif
