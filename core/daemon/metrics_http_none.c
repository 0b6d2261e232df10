/* metrics_http.h where libmicrohttpd is missing (Windows: Debian ships it
 * for Linux only): nothing is served over HTTP, and pierd says so at start
 * when server.json asks for it. The `metrics` console command still works. */
#include "daemon/metrics_http.h"

#include <errno.h>

#include "base/log.h"

int metrics_http_start(host *h, const char *address, unsigned port, metrics_http **out) {
  (void)h;
  *out = NULL;
  log_warn("metrics: this build of pierd has no HTTP server (built without libmicrohttpd): "
           "%s:%u is not served; `pierctl metrics` prints the same numbers",
           address, port);
  return -ENOTSUP;
}

void metrics_http_stop(metrics_http *m) { (void)m; }
