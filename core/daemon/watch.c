/* inotify on the directory of each watched plugin file (a rename replaces the
 * file's inode, so watching the file itself would lose track). */
#include "daemon/watch.h"

#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <unistd.h>

#include "base/log.h"

#define DEBOUNCE_MS 200

typedef struct watched {
  const cfg_plugin *plugin;
  int wd;
  char base[NAME_MAX + 1];
  uint64_t due; /* 0 = nothing pending */
} watched;

struct watch {
  int fd;
  watched *items;
  size_t n;
};

int watch_open(const cfg_server *cfg, watch **out) {
  watch *w;
  size_t count = 0;

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
  w->fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  if (w->fd < 0) {
    int rc = -errno;
    free(w->items);
    free(w);
    return rc;
  }
  for (size_t i = 0; i < cfg->nplugins; i++) {
    const cfg_plugin *p = &cfg->plugins[i];
    char dir[PATH_MAX], base[PATH_MAX];
    watched *it;
    if (!p->watch)
      continue;
    snprintf(dir, sizeof(dir), "%s", p->resolved_path);
    snprintf(base, sizeof(base), "%s", p->resolved_path);
    it = &w->items[w->n++];
    it->plugin = p;
    snprintf(it->base, sizeof(it->base), "%s", basename(base));
    it->wd = inotify_add_watch(w->fd, dirname(dir), IN_CLOSE_WRITE | IN_MOVED_TO);
    if (it->wd < 0)
      log_error("watch: cannot watch %s for plugin \"%s\": %s", dir, p->name, strerror(errno));
    else
      log_info("watch: plugin \"%s\" reloads when %s is replaced", p->name, p->resolved_path);
  }
  *out = w;
  return 0;
}

int watch_fd(const watch *w) { return w ? w->fd : -1; }

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

void watch_read(watch *w) {
  char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
  ssize_t n;
  while ((n = read(w->fd, buf, sizeof(buf))) > 0) {
    for (char *p = buf; p < buf + n;) {
      struct inotify_event *ev = (struct inotify_event *)p;
      for (size_t i = 0; i < w->n; i++)
        if (ev->wd == w->items[i].wd && ev->len && strcmp(ev->name, w->items[i].base) == 0)
          w->items[i].due = clock_ms() + DEBOUNCE_MS; /* restart the delay on every write */
      p += sizeof(*ev) + ev->len;
    }
  }
}

void watch_run_due(watch *w, host *h) {
  uint64_t now = clock_ms();
  char msg[1536];
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
  close(w->fd);
  free(w->items);
  free(w);
}
