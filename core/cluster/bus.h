/* The message bus between pierd nodes: a thin layer over a NATS client
 * (libnats, bus_nats.c; bus_none.c where pier is built without it). It knows
 * subjects and payloads, not plugins: core/host/cluster.c builds the plugin
 * API, presence and delivery on it.
 *
 * Threads: every function may be called from any thread. Message and event
 * callbacks run on the client's own threads and must not block for long nor
 * call plugin code; one subscription's messages come in order, one at a
 * time. */
#ifndef PIER_CLUSTER_BUS_H
#define PIER_CLUSTER_BUS_H

#include <stddef.h>
#include <stdint.h>

typedef struct bus bus;
typedef struct bus_sub bus_sub;

typedef struct bus_msg {
  const char *subject;
  const char *reply; /* NULL when none */
  const void *data;
  size_t len;
  int no_responders; /* the server's answer to a request nobody subscribes to */
} bus_msg;

/* A message on sub's subject (client thread). */
typedef void (*bus_msg_cb)(void *arg, const bus_msg *m);
/* sub will never call its bus_msg_cb again (client thread, once). */
typedef void (*bus_done_cb)(void *arg);

typedef enum {
  BUS_UP,           /* connected (the first time) */
  BUS_DOWN,         /* connection lost; reconnecting */
  BUS_BACK,         /* reconnected (possibly to another server) */
} bus_event;
typedef void (*bus_event_cb)(void *arg, bus_event ev, const char *url);

typedef struct bus_opts {
  const char *const *urls;
  size_t nurls;
  const char *name;        /* the connection's name, as the server shows it */
  size_t reconnect_buffer; /* bytes published while disconnected, sent on reconnect */
  bus_event_cb on_event;
  void *arg;
} bus_opts;

/* Whether this build has a bus client at all. */
int bus_available(void);
/* Connects. If no server answers it keeps trying in the background and
 * returns 0 all the same (bus_connected says which); on_event says BUS_UP
 * when it gets there. -ENOTSUP without a client, other errors with why. */
int bus_open(const bus_opts *o, bus **out, char *err, size_t errlen);
int bus_connected(bus *b);
/* The server connected to now ("" when none). */
void bus_url(bus *b, char *buf, size_t len);
/* The largest payload the server takes (0 when not known yet). */
size_t bus_max_payload(bus *b);
/* A fresh unique inbox subject ("_INBOX.<id>") into buf. */
int bus_new_inbox(bus *b, char *buf, size_t len);
/* 0, -ENOBUFS (disconnected and the reconnect buffer is full), -EMSGSIZE,
 * -ECANCELED (closed), -EIO. */
int bus_publish(bus *b, const char *subject, const char *reply, const void *data, size_t len);
/* max_msgs / max_bytes: the client's own queue for it (it drops past them). */
int bus_subscribe(bus *b, const char *subject, bus_msg_cb cb, bus_done_cb done, void *arg,
                  bus_sub **out);
/* Ends sub: done(arg) follows once no callback of it runs or will run. */
void bus_unsubscribe(bus_sub *s);
/* A blocking request (not for plugin use): 0 with the reply copied into buf
 * (*n its length), -EHOSTUNREACH (no subscriber), -ETIMEDOUT, other errors. */
int bus_request(bus *b, const char *subject, const void *data, size_t len, unsigned timeout_ms,
                char *buf, size_t *n);
/* Flushes what is buffered (up to timeout_ms), ends every subscription
 * (waiting for their done callbacks) and closes. No callback runs after it
 * returns. */
void bus_close(bus *b, unsigned timeout_ms);

#endif
