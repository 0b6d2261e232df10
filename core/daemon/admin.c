/* The admin channel's protocol, the same on every platform: each client
 * sends one command line and gets the command's output plus a final "OK" or
 * "ERR" line. The transport (a unix socket, a named pipe on Windows) is
 * os/ipc.h; everything here runs from pierd's wait loop, and deadlines are
 * kept by the loop's timeout, so a silent or stuck client costs a slot,
 * never a wait. */
#include "daemon/admin.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "daemon/console.h"
#include "os/ipc.h"
#include "os/memout.h"
#include "os/os.h"

#define ACCEPT_PAUSE_MS 100 /* after running out of descriptors */

typedef enum {
  C_FREE = 0,
  C_READING, /* waiting for the command line */
  C_WRITING, /* answer pending */
  C_HELD     /* answered `quit`: kept open until admin_close */
} client_state;

typedef struct client {
  os_ipc_conn *conn;
  client_state state;
  int hold;          /* move to C_HELD instead of closing once written */
  uint64_t deadline; /* monotonic ms: end of the read or of the write */
  size_t len;        /* bytes in buf */
  char buf[ADMIN_MAX_LINE + 1];
  char *out; /* answer (malloc'd) */
  size_t outlen, outoff;
} client;

/* What each item of the last admin_wait_items stands for. */
#define ITEM_LISTENER (-1)

struct admin {
  os_ipc_server *srv;
  uint64_t accept_pause_until;
  log_rate rate;
  int item_of[ADMIN_MAX_WAIT_ITEMS]; /* ITEM_LISTENER or a client index */
  client c[ADMIN_MAX_CLIENTS];
};

int admin_open(const char *path, admin **out, char *err, size_t errlen) {
  char note[512];
  admin *a;
  int rc;

  if (err && errlen)
    err[0] = '\0';
  if (!out)
    return -EINVAL;
  *out = NULL;
  if (!path || !*path) {
    if (err && errlen)
      snprintf(err, errlen, "admin socket: empty path");
    return -EINVAL;
  }
  a = calloc(1, sizeof(*a));
  if (!a) {
    if (err && errlen)
      snprintf(err, errlen, "%s %s: out of memory", os_ipc_noun, path);
    return -ENOMEM;
  }
  note[0] = '\0';
  rc = os_ipc_listen(path, ADMIN_MAX_CLIENTS, &a->srv, note, sizeof(note));
  if (rc < 0) {
    if (err && errlen)
      snprintf(err, errlen, "%s", note);
    free(a);
    return rc;
  }
  if (note[0])
    log_info("%s", note);
  log_info("%s %s ready (pierctl)", os_ipc_noun, os_ipc_server_name(a->srv));
  *out = a;
  return 0;
}

/* ---- clients ---- */

static void client_close(client *c) {
  os_ipc_conn_close(c->conn);
  free(c->out);
  memset(c, 0, sizeof(*c));
}

/* Sends what it can of the pending answer without waiting; closes (or holds)
 * the client once it is all out, or on an error. */
static void client_write(client *c) {
  while (c->outoff < c->outlen) {
    long n = os_ipc_write(c->conn, c->out + c->outoff, c->outlen - c->outoff);
    if (n > 0) {
      c->outoff += (size_t)n;
    } else if (n == -EAGAIN) {
      return;
    } else {
      client_close(c); /* the peer went away */
      return;
    }
  }
  if (c->hold) {
    c->state = C_HELD;
    free(c->out);
    c->out = NULL;
    c->outlen = c->outoff = 0;
  } else {
    client_close(c);
  }
}

/* Queues text as the answer and starts sending it; takes ownership. */
static void client_answer(client *c, char *text, size_t len, uint64_t now) {
  c->out = text;
  c->outlen = len;
  c->outoff = 0;
  c->state = C_WRITING;
  c->deadline = now + ADMIN_WRITE_TIMEOUT_MS;
  client_write(c);
}

/* Answers with one error line and "ERR", then closes. */
static void client_fail(client *c, const char *msg, uint64_t now) {
  size_t len = strlen("error: ") + strlen(msg) + strlen("\nERR\n");
  char *text = malloc(len + 1);
  if (!text) {
    client_close(c);
    return;
  }
  snprintf(text, len + 1, "error: %s\nERR\n", msg);
  client_answer(c, text, len, now);
}

/* Ends text (len bytes, malloc'd) with a newline if it has none and the
 * final line. Returns the new text, or NULL (text freed). */
static char *add_final(char *text, size_t *len, int ok) {
  const char *fin = ok ? "OK\n" : "ERR\n";
  int nl = *len > 0 && text[*len - 1] != '\n';
  char *bigger = realloc(text, *len + (size_t)nl + strlen(fin) + 1);
  if (!bigger) {
    free(text);
    return NULL;
  }
  if (nl)
    bigger[(*len)++] = '\n';
  memcpy(bigger + *len, fin, strlen(fin) + 1);
  *len += strlen(fin);
  return bigger;
}

/* Runs the command line in c->buf and queues its answer. Returns exec's
 * result, or -1 when the answer could not be built. */
static int client_exec(client *c, int (*exec)(void *, const char *, FILE *),
                       void *ctx, uint64_t now) {
  os_memout mo;
  char *text = NULL;
  size_t len = 0;
  int rc;
  FILE *m = os_memout_open(&mo);

  if (!m) {
    client_fail(c, "out of memory", now);
    return -1;
  }
  rc = exec(ctx, c->buf, m);
  if (os_memout_close(&mo, &text, &len) < 0 || !(text = add_final(text, &len, rc >= 0))) {
    client_fail(c, "out of memory", now);
    return -1; /* reported as failed, so not acted on */
  }
  log_debug("admin: \"%s\": %s", c->buf, rc < 0 ? "ERR" : "OK");
  if (rc == CONSOLE_QUIT)
    c->hold = 1;
  client_answer(c, text, len, now);
  return rc;
}

/* Reads what the client has sent; runs the line once it is complete.
 * Returns CONSOLE_QUIT when the command was `quit`, else 0. */
static int client_read(admin *a, client *c, int (*exec)(void *, const char *, FILE *),
                       void *ctx, uint64_t now) {
  for (;;) {
    long n = os_ipc_read(c->conn, c->buf + c->len, ADMIN_MAX_LINE - c->len);
    if (n < 0) {
      if (n != -EAGAIN)
        client_close(c);
      return 0;
    }
    if (n == 0) {
      if (c->len == 0)
        client_close(c); /* connected and left: a liveness probe */
      else
        client_fail(c, "connection closed before the end of the command line", now);
      return 0;
    }
    char *nl = memchr(c->buf + c->len, '\n', (size_t)n);
    c->len += (size_t)n;
    if (nl) {
      size_t linelen = (size_t)(nl - c->buf);
      *nl = '\0';
      if (linelen > 0 && c->buf[linelen - 1] == '\r')
        c->buf[--linelen] = '\0';
      if (strlen(c->buf) != linelen) {
        client_fail(c, "the command line contains a NUL byte", now);
        return 0;
      }
      c->len = 0; /* anything after the newline is ignored */
      return client_exec(c, exec, ctx, now) == CONSOLE_QUIT ? CONSOLE_QUIT : 0;
    }
    if (c->len >= ADMIN_MAX_LINE) {
      log_limited(&a->rate, LOG_WARN, "%s: command line longer than %d bytes; closed",
                  os_ipc_noun, ADMIN_MAX_LINE);
      client_fail(c, "command line too long (at most 1024 bytes with its newline)", now);
      return 0;
    }
  }
}

static client *free_slot(admin *a) {
  for (int i = 0; i < ADMIN_MAX_CLIENTS; i++)
    if (a->c[i].state == C_FREE)
      return &a->c[i];
  return NULL;
}

/* Ends clients whose deadline passed. */
static void expire(admin *a, uint64_t now) {
  for (int i = 0; i < ADMIN_MAX_CLIENTS; i++) {
    client *c = &a->c[i];
    if (c->state == C_READING && now >= c->deadline) {
      log_limited(&a->rate, LOG_WARN,
                  "%s: client sent no complete command line within %d ms; closed",
                  os_ipc_noun, ADMIN_READ_TIMEOUT_MS);
      client_fail(c, "no complete command line within 2 s", now);
      if (c->state == C_WRITING) /* one try only for a slow client */
        client_close(c);
    } else if (c->state == C_WRITING && now >= c->deadline) {
      log_limited(&a->rate, LOG_WARN, "%s: client did not take its answer within %d ms; closed",
                  os_ipc_noun, ADMIN_WRITE_TIMEOUT_MS);
      client_close(c);
    }
  }
}

/* Accepts waiting clients while slots are free; each is read at once in case
 * its line is already there. */
static int accept_clients(admin *a, int (*exec)(void *, const char *, FILE *), void *ctx,
                          uint64_t now) {
  client *c;
  while ((c = free_slot(a))) {
    os_ipc_conn *conn;
    int rc = os_ipc_accept(a->srv, &conn);
    if (rc < 0) {
      if (rc == -EINTR || rc == -ECONNABORTED)
        continue;
      if (rc == -EMFILE || rc == -ENFILE || rc == -ENOBUFS || rc == -ENOMEM) {
        log_limited(&a->rate, LOG_WARN, "%s: accept: %s; pausing", os_ipc_noun,
                    os_strerror(-rc));
        a->accept_pause_until = now + ACCEPT_PAUSE_MS;
      } else if (rc != -EAGAIN) {
        log_limited(&a->rate, LOG_WARN, "%s: accept: %s", os_ipc_noun, os_strerror(-rc));
      }
      return 0;
    }
    memset(c, 0, sizeof(*c));
    c->conn = conn;
    c->state = C_READING;
    c->deadline = now + ADMIN_READ_TIMEOUT_MS;
    if (client_read(a, c, exec, ctx, now) == CONSOLE_QUIT)
      return CONSOLE_QUIT;
  }
  return 0;
}

/* ---- the wait loop's side ---- */

int admin_timeout_ms(const admin *a) {
  uint64_t next = 0, now = os_clock_ms();

  if (!a)
    return -1;
  for (int i = 0; i < ADMIN_MAX_CLIENTS; i++) {
    const client *c = &a->c[i];
    if ((c->state == C_READING || c->state == C_WRITING) && (!next || c->deadline < next))
      next = c->deadline;
  }
  if (a->accept_pause_until > now && (!next || a->accept_pause_until < next))
    next = a->accept_pause_until;
  if (!next)
    return -1;
  return next <= now ? 0 : next - now > 60000 ? 60000 : (int)(next - now);
}

int admin_wait_items(admin *a, os_wait_item *items, int max) {
  uint64_t now = os_clock_ms();
  int n = 0;

  if (!a || !items || max <= 0)
    return 0;
  if (free_slot(a) && a->accept_pause_until <= now) {
    int rc = os_ipc_server_item(a->srv, &items[n]);
    if (rc == 0) {
      a->item_of[n++] = ITEM_LISTENER;
    } else {
      log_limited(&a->rate, LOG_WARN, "%s: cannot wait for clients: %s; pausing", os_ipc_noun,
                  os_strerror(-rc));
      a->accept_pause_until = now + ACCEPT_PAUSE_MS;
    }
  }
  for (int i = 0; i < ADMIN_MAX_CLIENTS && n < max; i++) {
    client *c = &a->c[i];
    if (c->state == C_READING || c->state == C_WRITING) {
      os_ipc_conn_item(c->conn, c->state == C_WRITING, &items[n]);
      a->item_of[n++] = i;
    }
  }
  return n;
}

int admin_handle_ready(admin *a, const os_wait_item *items, int n,
                       int (*exec)(void *ctx, const char *line, FILE *out), void *ctx) {
  uint64_t now = os_clock_ms();
  int want_accept = 0;

  if (!a || !exec)
    return 0;
  for (int i = 0; items && i < n && i < ADMIN_MAX_WAIT_ITEMS; i++) {
    client *c;
    if (!os_wait_ready(&items[i]))
      continue;
    if (a->item_of[i] == ITEM_LISTENER) {
      want_accept = 1;
      continue;
    }
    c = &a->c[a->item_of[i]];
    if (c->state == C_READING) {
      if (client_read(a, c, exec, ctx, now) == CONSOLE_QUIT)
        return CONSOLE_QUIT;
    } else if (c->state == C_WRITING) {
      client_write(c);
    }
  }
  expire(a, now);
  /* Last, so a slot freed and taken by a new client in this round is not
   * taken for the old client's item. */
  if (want_accept)
    return accept_clients(a, exec, ctx, now);
  return 0;
}

void admin_close(admin *a) {
  if (!a)
    return;
  os_ipc_server_close(a->srv);
  for (int i = 0; i < ADMIN_MAX_CLIENTS; i++) {
    client *c = &a->c[i];
    if (c->state == C_WRITING && c->hold)
      client_write(c); /* a last try for the `quit` answer */
    if (c->state != C_FREE)
      client_close(c);
  }
  free(a);
}
