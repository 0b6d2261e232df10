/* Watches the files of plugins configured with "watch": true and reloads a
 * plugin once a new file has been written completely: a file closed after
 * writing (cp) or renamed into place (mv, the atomic way). Events are
 * debounced, and the loader refuses a file that is not a complete plugin,
 * so a half-written file never replaces the running version. */
#ifndef PIER_DAEMON_WATCH_H
#define PIER_DAEMON_WATCH_H

#include <stdint.h>

#include "host/config.h"
#include "host/host.h"

typedef struct watch watch;

/* Returns 0 with *out NULL when no plugin asks to be watched. */
int watch_open(const cfg_server *cfg, watch **out);
/* The inotify fd to poll (or -1), and how long poll may sleep (-1 = no
 * reload pending). */
int watch_fd(const watch *w);
int watch_timeout_ms(const watch *w);
/* Reads inotify events; call when watch_fd is readable. */
void watch_read(watch *w);
/* Reloads plugins whose debounce delay has passed. */
void watch_run_due(watch *w, host *h);
void watch_close(watch *w);

#endif
