/* The file watch on POSIX: one inotify descriptor, a watch on the directory
 * of each file (inotify hands the same descriptor back for a directory
 * watched twice), and events filtered by the file's name. */
#include "os/fswatch.h"

#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <unistd.h>

const char os_fswatch_name[] = "inotify";

typedef struct entry {
  int wd, id;
  char base[NAME_MAX + 1];
} entry;

struct os_fswatch {
  int fd;
  entry *e;
  size_t n, cap;
};

int os_fswatch_open(os_fswatch **out) {
  os_fswatch *w = calloc(1, sizeof(*w));
  *out = NULL;
  if (!w)
    return -ENOMEM;
  w->fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  if (w->fd < 0) {
    int rc = -errno;
    free(w);
    return rc;
  }
  *out = w;
  return 0;
}

int os_fswatch_add(os_fswatch *w, const char *path, int id, char *dir, size_t dirlen) {
  char d[PATH_MAX], b[PATH_MAX];
  entry *e;
  int wd;

  snprintf(d, sizeof(d), "%s", path);
  snprintf(b, sizeof(b), "%s", path);
  snprintf(dir, dirlen, "%s", dirname(d));
  if (w->n == w->cap) {
    size_t cap = w->cap ? w->cap * 2 : 4;
    entry *bigger = realloc(w->e, cap * sizeof(*bigger));
    if (!bigger)
      return -ENOMEM;
    w->e = bigger;
    w->cap = cap;
  }
  wd = inotify_add_watch(w->fd, dir, IN_CLOSE_WRITE | IN_MOVED_TO);
  if (wd < 0)
    return -errno;
  e = &w->e[w->n++];
  e->wd = wd;
  e->id = id;
  snprintf(e->base, sizeof(e->base), "%s", basename(b));
  return 0;
}

int os_fswatch_items(os_fswatch *w, os_wait_item *items, int max) {
  if (!w || max <= 0)
    return 0;
  items[0] = (struct pollfd){.fd = w->fd, .events = POLLIN};
  return 1;
}

void os_fswatch_read(os_fswatch *w, void (*changed)(void *ctx, int id), void *ctx) {
  char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
  ssize_t n;
  if (!w)
    return;
  while ((n = read(w->fd, buf, sizeof(buf))) > 0) {
    for (char *p = buf; p < buf + n;) {
      struct inotify_event *ev = (struct inotify_event *)p;
      for (size_t i = 0; i < w->n; i++)
        if (ev->wd == w->e[i].wd && ev->len && strcmp(ev->name, w->e[i].base) == 0)
          changed(ctx, w->e[i].id);
      p += sizeof(*ev) + ev->len;
    }
  }
}

void os_fswatch_close(os_fswatch *w) {
  if (!w)
    return;
  close(w->fd);
  free(w->e);
  free(w);
}
