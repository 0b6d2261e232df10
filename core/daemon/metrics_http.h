/* The metrics HTTP listener ("metrics" in server.json): GET or HEAD of
 * /metrics (metrics.h), /healthz (200 "ok") and /readyz (200 "ready", or 503
 * "starting" / "draining"); 404 for any other path, 405 for other methods.
 * It runs on libmicrohttpd's threads (one listening, one per connection),
 * never on a worker; the
 * Windows build has no HTTP server (metrics_http_none.c). */
#ifndef PIER_DAEMON_METRICS_HTTP_H
#define PIER_DAEMON_METRICS_HTTP_H

#include "host/host.h"

typedef struct metrics_http metrics_http;

/* Connections served at once; one more is closed as soon as it is accepted
 * (logged, at most 10 lines a second). */
#define METRICS_HTTP_MAX_CONNS 16
/* Of those, from one address: one host cannot hold every slot. */
#define METRICS_HTTP_MAX_CONNS_PER_IP 4
/* A connection idle this long (nothing received or sent) is dropped. */
#define METRICS_HTTP_TIMEOUT_S 10

/* Main thread, after host_start. Binds address:port (port 0: any free one),
 * starts serving and logs "metrics on http://ADDR:PORT/metrics". Returns 0
 * and *out, or a negative errno with the reason logged (*out NULL); without
 * an HTTP server in the build it logs that and returns -ENOTSUP. */
int metrics_http_start(host *h, const char *address, unsigned port, metrics_http **out);
/* Main thread. Stops serving (requests in progress finish first) and frees
 * m; NULL is ignored. Call before host_stop. */
void metrics_http_stop(metrics_http *m);

#endif
