/* pierd's numbers in the Prometheus text format (version 0.0.4): the built-in
 * pier_ and process_ families (README "Operating pier" lists them), then
 * every plugin's own metrics. The same text is served on /metrics
 * (metrics_http.h) and printed by the `metrics` console command. */
#ifndef PIER_DAEMON_METRICS_H
#define PIER_DAEMON_METRICS_H

#include <stdio.h>

#include "host/host.h"

/* The Content-Type of what metrics_render writes. */
#define METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/* Writes the whole exposition to out. Any thread, while h is started: it
 * reads counters the workers update with relaxed atomics and takes no lock
 * a worker waits on, so a scrape never stalls a session. */
void metrics_render(host *h, FILE *out);

#endif
