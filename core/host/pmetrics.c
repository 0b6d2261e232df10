/* Plugin metrics: see host.h. */
#include "host/host_internal.h"

void host_render_plugin_metrics(host *h, FILE *out) {
  (void)h;
  (void)out;
}
