/* The bus where pier is built without a NATS client (Windows: Debian has no
 * libnats for mingw-w64). The config loader refuses "cluster" there, so
 * nothing reaches these but bus_available. */
#include <errno.h>
#include <stdio.h>

#include "cluster/bus.h"

int bus_available(void) { return 0; }

int bus_open(const bus_opts *o, bus **out, char *err, size_t errlen) {
  (void)o;
  *out = NULL;
  snprintf(err, errlen, "cluster: this pierd was built without a NATS client");
  return -ENOTSUP;
}

int bus_connected(bus *b) { return b != NULL && 0; }

void bus_url(bus *b, char *buf, size_t len) {
  (void)b;
  if (len)
    buf[0] = '\0';
}

size_t bus_max_payload(bus *b) { return b != NULL && 0; }

int bus_new_inbox(bus *b, char *buf, size_t len) {
  (void)b, (void)buf, (void)len;
  return -ENOTSUP;
}

int bus_publish(bus *b, const char *subject, const char *reply, const void *data, size_t len) {
  (void)b, (void)subject, (void)reply, (void)data, (void)len;
  return -ENOTSUP;
}

int bus_subscribe(bus *b, const char *subject, bus_msg_cb cb, bus_done_cb done, void *arg,
                  bus_sub **out) {
  (void)b, (void)subject, (void)cb, (void)done, (void)arg;
  *out = NULL;
  return -ENOTSUP;
}

void bus_unsubscribe(bus_sub *s) { (void)s; }

int bus_request(bus *b, const char *subject, const void *data, size_t len, unsigned timeout_ms,
                char *buf, size_t *n) {
  (void)b, (void)subject, (void)data, (void)len, (void)timeout_ms, (void)buf, (void)n;
  return -ENOTSUP;
}

void bus_close(bus *b, unsigned timeout_ms) { (void)b, (void)timeout_ms; }
