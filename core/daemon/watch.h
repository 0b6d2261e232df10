/* Watches the files of plugins configured with "watch": true and reloads a
 * plugin once a new file has been written completely: a file closed after
 * writing (cp) or renamed into place (mv, the atomic way). Events are
 * debounced, and the loader refuses a file that is not a complete plugin,
 * so a half-written file never replaces the running version. The platform's
 * notification is os/fswatch.h (inotify; ReadDirectoryChangesW on Windows). */
#ifndef PIER_DAEMON_WATCH_H
#define PIER_DAEMON_WATCH_H

#include <stdint.h>

#include "host/config.h"
#include "host/host.h"
#include "os/wait.h"

typedef struct watch watch;

/* Returns 0 with *out NULL when no plugin asks to be watched. */
int watch_open(const cfg_server *cfg, watch **out);
/* Fills up to max items to wait on (returns how many), and how long the
 * wait may last (-1 = no reload pending). */
int watch_wait_items(watch *w, os_wait_item *items, int max);
int watch_timeout_ms(const watch *w);
/* Takes the notifications; call after a wait in which an item was ready. */
void watch_read(watch *w);
/* Reloads plugins whose debounce delay has passed. */
void watch_run_due(watch *w, host *h);
void watch_close(watch *w);

#endif
