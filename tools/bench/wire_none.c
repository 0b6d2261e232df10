/* Where pier-bench is built without OpenSSL (the Windows cross-build), its
 * TLS, WebSocket and Colyseus client layers are absent: these stand-ins
 * keep load.c the same and refuse the options that need them. */
#include "wire.h"

#include <errno.h>
#include <stdio.h>

const int wire_available = 0;

int wire_create(const wire_opts *o, const wire_handler *h, net *n, wire **out) {
  (void)o, (void)h, (void)n;
  *out = NULL;
  fprintf(stderr, "pier-bench: --ws, --tls and --colyseus are not available in this build "
                  "(they need OpenSSL; pier-bench has them on Linux)\n");
  return -ENOTSUP;
}

int wire_prepare(wire *w, const net_addr *addr, unsigned conns, volatile int *stop) {
  (void)w, (void)addr, (void)conns, (void)stop;
  return -ENOTSUP;
}

void wire_destroy(wire *w) { (void)w; }

wire_conn *wire_conn_new(wire *w, void *ctx, unsigned idx) {
  (void)w, (void)ctx, (void)idx;
  return NULL;
}

void wire_conn_free(wire_conn *c) { (void)c; }

void wire_connected(wire_conn *c, pier_sid sid) { (void)c, (void)sid; }

void wire_recv(wire_conn *c, const char *data, size_t len) { (void)c, (void)data, (void)len; }

int wire_send(wire_conn *c, const void *data, size_t len) {
  (void)c, (void)data, (void)len;
  return -ENOTSUP;
}
