/* The bus on libnats (the NATS C client, Debian's libnats-dev): one
 * connection per pierd, reconnecting forever across every configured server
 * (and the ones the cluster tells it about), with its messages handed out by
 * the library's shared delivery thread, so a thousand subscriptions do not
 * make a thousand threads. */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nats/nats.h>

#include "base/log.h"
#include "cluster/bus.h"
#include "os/os.h"

struct bus {
  natsConnection *nc;
  natsOptions *opts;
  bus_event_cb on_event;
  void *arg;
  _Atomic int connected;
  _Atomic int up_said; /* BUS_UP was reported (the first connect) */
  _Atomic int closing;
  _Atomic unsigned live_subs; /* subscriptions whose done callback has not run */
  char last_url[256]; /* the server of the last connect, for the disconnect line (the
                         client calls the connection callbacks one at a time) */
  _Atomic int closed;         /* the closed callback ran */
};

struct bus_sub {
  bus *b;
  natsSubscription *sub;
  bus_msg_cb cb;
  bus_done_cb done;
  void *arg;
};

int bus_available(void) { return 1; }

static int status_errno(natsStatus s) {
  switch (s) {
  case NATS_OK:
    return 0;
  case NATS_INSUFFICIENT_BUFFER:
    return -ENOBUFS;
  case NATS_MAX_PAYLOAD:
    return -EMSGSIZE;
  case NATS_CONNECTION_CLOSED:
  case NATS_INVALID_SUBSCRIPTION:
    return -ECANCELED;
  case NATS_TIMEOUT:
    return -ETIMEDOUT;
  case NATS_NO_RESPONDERS:
    return -EHOSTUNREACH;
  case NATS_NO_MEMORY:
    return -ENOMEM;
  case NATS_INVALID_SUBJECT:
  case NATS_INVALID_ARG:
    return -EINVAL;
  default:
    return -EIO;
  }
}

static void say(bus *b, bus_event ev, natsConnection *nc) {
  char url[256] = "";
  if (atomic_load(&b->closing))
    return;
  if (ev == BUS_DOWN)
    memcpy(url, b->last_url, sizeof(url));
  else if (nc && natsConnection_GetConnectedUrl(nc, url, sizeof(url)) == NATS_OK)
    memcpy(b->last_url, url, sizeof(url));
  if (b->on_event)
    b->on_event(b->arg, ev, url);
}

static void connected_cb(natsConnection *nc, void *closure) {
  bus *b = closure;
  atomic_store(&b->connected, 1);
  if (!atomic_exchange(&b->up_said, 1))
    say(b, BUS_UP, nc);
}

static void disconnected_cb(natsConnection *nc, void *closure) {
  bus *b = closure;
  if (atomic_exchange(&b->connected, 0))
    say(b, BUS_DOWN, nc);
}

static void reconnected_cb(natsConnection *nc, void *closure) {
  bus *b = closure;
  atomic_store(&b->connected, 1);
  if (!atomic_exchange(&b->up_said, 1))
    say(b, BUS_UP, nc);
  else
    say(b, BUS_BACK, nc);
}

static void closed_cb(natsConnection *nc, void *closure) {
  bus *b = closure;
  (void)nc;
  atomic_store(&b->connected, 0);
  atomic_store(&b->closed, 1);
}

/* Slow consumers are counted above this layer (cluster.max_pending); the
 * client's own queue of one subscription is a safety net far above that (see
 * bus_subscribe), and the one library error said at warn is that it dropped. */
#define BUS_CLIENT_PENDING_MSGS (1 << 20)
#define BUS_CLIENT_PENDING_BYTES (256 << 20)

static void error_cb(natsConnection *nc, natsSubscription *sub, natsStatus err, void *closure) {
  (void)nc, (void)sub, (void)closure;
  /* The client reports a slow consumer once until its queue drains again. */
  if (err == NATS_SLOW_CONSUMER)
    log_warn("cluster: bus client: a subscription's queue reached %d messages or %d MiB; "
             "dropping what comes until it drains",
             BUS_CLIENT_PENDING_MSGS, BUS_CLIENT_PENDING_BYTES >> 20);
  else
    log_debug("cluster: bus client: %s", natsStatus_GetText(err));
}

int bus_open(const bus_opts *o, bus **out, char *err, size_t errlen) {
  bus *b = calloc(1, sizeof(*b));
  natsStatus s;

  *out = NULL;
  if (!b)
    return -ENOMEM;
  b->on_event = o->on_event;
  b->arg = o->arg;
  /* One shared delivery thread for every subscription: messages of one
   * subscription stay in order, and the callbacks only copy and post. */
  (void)nats_SetMessageDeliveryPoolSize(1);
  s = natsOptions_Create(&b->opts);
  if (s == NATS_OK)
    s = natsOptions_SetServers(b->opts, (const char **)o->urls, (int)o->nurls);
  if (s == NATS_OK && o->name)
    s = natsOptions_SetName(b->opts, o->name);
  if (s == NATS_OK)
    s = natsOptions_SetMaxReconnect(b->opts, -1);
  if (s == NATS_OK)
    s = natsOptions_SetReconnectWait(b->opts, 250);
  if (s == NATS_OK)
    s = natsOptions_SetReconnectJitter(b->opts, 100, 100);
  if (s == NATS_OK)
    s = natsOptions_SetTimeout(b->opts, 1000);
  if (s == NATS_OK)
    s = natsOptions_SetPingInterval(b->opts, 1000);
  if (s == NATS_OK)
    s = natsOptions_SetMaxPingsOut(b->opts, 2);
  if (s == NATS_OK)
    s = natsOptions_SetReconnectBufSize(
        b->opts, o->reconnect_buffer > (size_t)INT32_MAX ? INT32_MAX : (int)o->reconnect_buffer);
  if (s == NATS_OK)
    s = natsOptions_UseGlobalMessageDelivery(b->opts, true);
  /* Send at once rather than batching in a flusher thread: game traffic
   * wants latency, and each publish is one small write. */
  if (s == NATS_OK)
    s = natsOptions_SetSendAsap(b->opts, true);
  if (s == NATS_OK)
    s = natsOptions_SetRetryOnFailedConnect(b->opts, true, connected_cb, b);
  if (s == NATS_OK)
    s = natsOptions_SetDisconnectedCB(b->opts, disconnected_cb, b);
  if (s == NATS_OK)
    s = natsOptions_SetReconnectedCB(b->opts, reconnected_cb, b);
  if (s == NATS_OK)
    s = natsOptions_SetClosedCB(b->opts, closed_cb, b);
  if (s == NATS_OK)
    s = natsOptions_SetErrorHandler(b->opts, error_cb, b);
  if (s != NATS_OK) {
    snprintf(err, errlen, "cluster: bus options: %s", natsStatus_GetText(s));
    goto fail;
  }
  s = natsConnection_Connect(&b->nc, b->opts);
  if (s == NATS_OK) {
    atomic_store(&b->connected, 1);
    atomic_store(&b->up_said, 1); /* the caller says it: no callback comes for this one */
    (void)natsConnection_GetConnectedUrl(b->nc, b->last_url, sizeof(b->last_url));
  } else if (s != NATS_NOT_YET_CONNECTED) {
    snprintf(err, errlen, "cluster: cannot connect to the bus: %s", natsStatus_GetText(s));
    goto fail;
  }
  *out = b;
  return 0;
fail:
  if (b->nc)
    natsConnection_Destroy(b->nc);
  natsOptions_Destroy(b->opts);
  free(b);
  return -EIO;
}

int bus_connected(bus *b) { return b && atomic_load(&b->connected); }

void bus_url(bus *b, char *buf, size_t len) {
  if (len)
    buf[0] = '\0';
  if (b && atomic_load(&b->connected) &&
      natsConnection_GetConnectedUrl(b->nc, buf, len) != NATS_OK && len)
    buf[0] = '\0';
}

size_t bus_max_payload(bus *b) {
  int64_t n = b ? natsConnection_GetMaxPayload(b->nc) : 0;
  return n > 0 ? (size_t)n : 0;
}

int bus_new_inbox(bus *b, char *buf, size_t len) {
  natsInbox *in = NULL;
  int rc;
  (void)b;
  if (natsInbox_Create(&in) != NATS_OK)
    return -ENOMEM;
  rc = snprintf(buf, len, "%s", (const char *)in) < (int)len ? 0 : -ENAMETOOLONG;
  natsInbox_Destroy(in);
  return rc;
}

int bus_publish(bus *b, const char *subject, const char *reply, const void *data, size_t len) {
  natsStatus s;
  if (atomic_load(&b->closing))
    return -ECANCELED;
  if (len > (size_t)INT32_MAX)
    return -EMSGSIZE;
  s = reply ? natsConnection_PublishRequest(b->nc, subject, reply, data, (int)len)
            : natsConnection_Publish(b->nc, subject, data, (int)len);
  return status_errno(s);
}

static void sub_msg(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure) {
  bus_sub *s = closure;
  bus_msg m = {.subject = natsMsg_GetSubject(msg),
               .reply = natsMsg_GetReply(msg),
               .data = natsMsg_GetData(msg),
               .len = (size_t)natsMsg_GetDataLength(msg),
               .no_responders = natsMsg_IsNoResponders(msg)};
  (void)nc, (void)sub;
  if (m.reply && !m.reply[0])
    m.reply = NULL;
  s->cb(s->arg, &m);
  natsMsg_Destroy(msg);
}

static void sub_done(void *closure) {
  bus_sub *s = closure;
  bus *b = s->b;
  if (s->done)
    s->done(s->arg);
  natsSubscription_Destroy(s->sub);
  free(s);
  atomic_fetch_sub(&b->live_subs, 1);
}

int bus_subscribe(bus *b, const char *subject, bus_msg_cb cb, bus_done_cb done, void *arg,
                  bus_sub **out) {
  bus_sub *s;
  natsStatus st;
  if (atomic_load(&b->closing))
    return -ECANCELED;
  s = calloc(1, sizeof(*s));
  if (!s)
    return -ENOMEM;
  s->b = b;
  s->cb = cb;
  s->done = done;
  s->arg = arg;
  st = natsConnection_Subscribe(&s->sub, b->nc, subject, sub_msg, s);
  /* pier counts and caps what waits for a plugin (cluster.max_pending); the
   * client's queue only has to hold what arrives while the delivery thread
   * copies. Its own limit is a safety net far above that, for a delivery
   * thread held up (a peer flooding the name claim): beyond it the client
   * drops, and error_cb says so. */
  if (st == NATS_OK)
    st = natsSubscription_SetPendingLimits(s->sub, BUS_CLIENT_PENDING_MSGS,
                                           BUS_CLIENT_PENDING_BYTES);
  if (st == NATS_OK)
    st = natsSubscription_SetOnCompleteCB(s->sub, sub_done, s);
  if (st != NATS_OK) {
    if (s->sub) {
      (void)natsSubscription_Unsubscribe(s->sub);
      natsSubscription_Destroy(s->sub);
    }
    free(s);
    return status_errno(st);
  }
  atomic_fetch_add(&b->live_subs, 1);
  *out = s;
  return 0;
}

void bus_unsubscribe(bus_sub *s) {
  if (s)
    (void)natsSubscription_Unsubscribe(s->sub);
}

int bus_request(bus *b, const char *subject, const void *data, size_t len, unsigned timeout_ms,
                char *buf, size_t *n) {
  natsMsg *reply = NULL;
  natsStatus s = natsConnection_Request(&reply, b->nc, subject, data, (int)len, timeout_ms);
  int rc = status_errno(s);
  if (rc == 0) {
    size_t got = (size_t)natsMsg_GetDataLength(reply);
    if (natsMsg_IsNoResponders(reply)) {
      rc = -EHOSTUNREACH;
    } else {
      if (got > *n)
        got = *n;
      memcpy(buf, natsMsg_GetData(reply), got);
      *n = got;
    }
    natsMsg_Destroy(reply);
  }
  return rc;
}

void bus_close(bus *b, unsigned timeout_ms) {
  uint64_t deadline = os_clock_ms() + timeout_ms;
  unsigned left;
  if (!b)
    return;
  if (atomic_load(&b->connected))
    (void)natsConnection_FlushTimeout(b->nc, timeout_ms / 2 ? timeout_ms / 2 : 1);
  atomic_store(&b->closing, 1);
  natsConnection_Close(b->nc); /* ends every subscription: their done callbacks follow */
  /* A shutdown path: polling a few times is simpler than a condition
   * variable the platform layer does not have. */
  while ((atomic_load(&b->live_subs) || !atomic_load(&b->closed)) && os_clock_ms() < deadline)
    os_sleep_ms(2);
  left = atomic_load(&b->live_subs);
  if (left)
    log_warn("cluster: %u bus subscriptions did not end within %u ms", left, timeout_ms);
  natsConnection_Destroy(b->nc);
  natsOptions_Destroy(b->opts);
  /* Done callbacks that did not come in time still point at b: it is left
   * allocated rather than freed under them. */
  if (!left && atomic_load(&b->closed))
    free(b);
}
