/* echo: the smallest useful pier plugin. On a raw listener it sends every
 * byte a client sends straight back to that client, in order, and keeps no
 * state besides the host table it is given at load time. */
#include <errno.h>
#include <stddef.h>

#include "pier/plugin.h"

/* Set once by on_load, before any session callback runs; read-only after. */
static const pier_host *g_host;

/* Takes the host table; refuses (-ENOTSUP) a host without a send function. */
static int echo_load(const pier_load_args *args) {
  const pier_host *h = args->host;
  if (!h || h->abi_major != PIER_ABI_MAJOR ||
      h->size < offsetof(pier_host, send) + sizeof(h->send) || !h->send)
    return -ENOTSUP;
  g_host = h;
  return 0;
}

/* Queues the received bytes back to their sender. A failed send means the
 * session is already going away, so there is nothing left to do. */
static void echo_recv(pier_sid sid, const void *data, size_t len) {
  const pier_host *h = g_host;
  if (h && len > 0)
    (void)h->send(h, sid, data, len);
}

PIER_PLUGIN("echo", "1.0.0", .on_load = echo_load, .on_recv = echo_recv);
