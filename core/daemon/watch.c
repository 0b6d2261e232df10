/* The debounce and the reload; which files changed comes from os/fswatch.h,
 * which watches each plugin file's directory. */
#include "daemon/watch.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "os/fswatch.h"
#include "os/os.h"

#define DEBOUNCE_MS 200

typedef struct watched {
  const cfg_plugin *plugin;
  uint64_t due; /* 0 = nothing pending */
} watched;

struct watch {
  os_fswatch *fs;
  watched *items;
  size_t n;
};

int watch_open(const cfg_server *cfg, watch **out) {
  watch *w;
  size_t count = 0;
  int rc;

  *out = NULL;
  for (size_t i = 0; i < cfg->nplugins; i++)
    count += cfg->plugins[i].watch != 0;
  if (count == 0)
    return 0;
  w = calloc(1, sizeof(*w));
  if (!w || !(w->items = calloc(count, sizeof(*w->items)))) {
    free(w);
    return -ENOMEM;
  }
  rc = os_fswatch_open(&w->fs);
  if (rc < 0) {
    free(w->items);
    free(w);
    return rc;
  }
  for (size_t i = 0; i < cfg->nplugins; i++) {
    const cfg_plugin *p = &cfg->plugins[i];
    char dir[4096];
    if (!p->watch)
      continue;
    w->items[w->n].plugin = p;
    rc = os_fswatch_add(w->fs, p->resolved_path, (int)w->n, dir, sizeof(dir));
    w->n++;
    if (rc < 0)
      log_error("watch: cannot watch %s for plugin \"%s\": %s", dir, p->name, os_strerror(-rc));
    else
      log_info("watch: plugin \"%s\" reloads when %s is replaced", p->name, p->resolved_path);
  }
  *out = w;
  return 0;
}

int watch_wait_items(watch *w, os_wait_item *items, int max) {
  return w ? os_fswatch_items(w->fs, items, max) : 0;
}

int watch_timeout_ms(const watch *w) {
  uint64_t now = clock_ms(), best = 0;
  if (!w)
    return -1;
  for (size_t i = 0; i < w->n; i++)
    if (w->items[i].due && (!best || w->items[i].due < best))
      best = w->items[i].due;
  if (!best)
    return -1;
  return best <= now ? 0 : (int)(best - now);
}

static void changed(void *ctx, int id) {
  watch *w = ctx;
  if (id >= 0 && (size_t)id < w->n)
    w->items[id].due = clock_ms() + DEBOUNCE_MS; /* restart the delay on every write */
}

void watch_read(watch *w) {
  if (w)
    os_fswatch_read(w->fs, changed, w);
}

void watch_run_due(watch *w, host *h) {
  uint64_t now = clock_ms();
  char msg[HOST_MSG_MAX];
  if (!w)
    return;
  for (size_t i = 0; i < w->n; i++) {
    watched *it = &w->items[i];
    if (!it->due || it->due > now)
      continue;
    it->due = 0;
    if (!host_plugin_file_changed(h, it->plugin->name))
      continue;
    if (host_reload(h, it->plugin->name, NULL, msg, sizeof(msg)) == 0)
      log_info("watch: %s", msg);
    else
      log_error("watch: %s", msg);
  }
}

void watch_close(watch *w) {
  if (!w)
    return;
  os_fswatch_close(w->fs);
  free(w->items);
  free(w);
}
