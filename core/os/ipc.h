/* The local channel between pierd and pierctl. On POSIX a unix stream socket
 * at a path (mode 0600 in a 0700 directory); on Windows a named pipe whose
 * name is derived from the same path (see os_ipc_name), with a DACL that
 * grants access to the current user only and remote clients rejected. The
 * server side never blocks: reads and writes either make progress or return
 * -EAGAIN, and the wait items say when to try again. The client side
 * (pierctl) blocks with deadlines. */
#ifndef PIER_OS_IPC_H
#define PIER_OS_IPC_H

#include <stddef.h>

#include "os/wait.h"

typedef struct os_ipc_server os_ipc_server;
typedef struct os_ipc_conn os_ipc_conn;

/* What the channel is called in messages: "admin socket" or "admin pipe". */
extern const char os_ipc_noun[];

/* The name the channel for admin_socket path has: the path itself on POSIX;
 * on Windows path when it is already a pipe name (\\.\pipe\...), else
 * \\.\pipe\pier- followed by the absolute path with \, / and : turned into
 * '-' and letters in lower case. Returns 0 or a negative errno
 * (-ENAMETOOLONG when it does not fit len bytes or the platform's limit). */
int os_ipc_name(const char *path, char *name, size_t len);

/* Creates the channel for path and starts listening, with room for backlog
 * clients waiting to be accepted. Refuses when a live daemon serves it
 * (-EADDRINUSE, "<noun> <name> is in use by a running pierd"); on POSIX also
 * creates the parent directory (0700) and removes a stale socket (never a
 * file that is not a socket: -EEXIST). Returns 0 and sets *out, or a
 * negative errno with one line in err (no newline). On success err holds a
 * line worth logging (a stale socket removed) or is empty. */
int os_ipc_listen(const char *path, int backlog, os_ipc_server **out, char *err, size_t errlen);
/* The channel's name for messages. */
const char *os_ipc_server_name(const os_ipc_server *s);
/* The item that becomes ready when a client may be waiting. Returns 0 or a
 * negative errno (then the item never becomes ready; try again later). */
int os_ipc_server_item(os_ipc_server *s, os_wait_item *item);
/* Takes a waiting client. Returns 0 and sets *out, -EAGAIN when none waits,
 * -ECONNABORTED or -EINTR (try again at once), or another negative errno
 * (-EMFILE, -ENOMEM...: pause before trying again). */
int os_ipc_accept(os_ipc_server *s, os_ipc_conn **out);
/* Stops listening and removes the channel (on POSIX the socket file, if it
 * is still the one this server created). Open connections stay usable.
 * NULL is ignored. */
void os_ipc_server_close(os_ipc_server *s);

/* Server side, never blocking: bytes read (> 0), 0 when the peer has
 * finished sending, -EAGAIN or another negative errno. After -EAGAIN, call
 * again with the same buffer once the item (want_write 0) is ready. */
long os_ipc_read(os_ipc_conn *c, void *buf, size_t cap);
/* Bytes written (> 0), -EAGAIN or another negative errno (-EPIPE: the peer
 * left). After -EAGAIN, call again with the same bytes once the item
 * (want_write 1) is ready; the buffer must stay valid until then. */
long os_ipc_write(os_ipc_conn *c, const void *buf, size_t n);
void os_ipc_conn_item(os_ipc_conn *c, int want_write, os_wait_item *item);
/* On a socket, discards unread input (at most 64 KiB) so the peer sees an
 * orderly end rather than a reset (a named pipe has no such reset: what
 * was written stays readable after the close); then cancels what is
 * pending and closes. NULL is ignored. */
void os_ipc_conn_close(os_ipc_conn *c);

/* Client side (pierctl), blocking with deadlines. */
#define OS_IPC_AT_NAME 0    /* the path does not make a channel name */
#define OS_IPC_AT_SOCKET 1  /* no socket could be made */
#define OS_IPC_AT_CONNECT 2 /* nobody answered */
/* Connects to the channel of path, waiting at most timeout_ms for a busy
 * server. Returns 0 and sets *out, or a negative errno and sets *at. */
int os_ipc_dial(const char *path, int timeout_ms, os_ipc_conn **out, int *at);
/* Sends all n bytes (within the dial timeout). Returns 0 or a negative
 * errno. */
int os_ipc_send_all(os_ipc_conn *c, const void *buf, size_t n);
/* Waits at most timeout_ms for input: bytes read (> 0), 0 at the end,
 * -ETIMEDOUT, -EINTR (call again) or another negative errno. */
long os_ipc_recv(os_ipc_conn *c, void *buf, size_t cap, int timeout_ms);

#endif
