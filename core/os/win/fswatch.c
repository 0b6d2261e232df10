/* The file watch on Windows: ReadDirectoryChangesW, overlapped with one
 * manual-reset event, on the directory of each watched file (two files in
 * one directory share it). A write or a rename into place reports the file
 * by name; names compare without case, as the file system does. When the
 * system's buffer overflowed (zero bytes reported), every file of that
 * directory counts as changed: the caller reloads only what really did. */
#include "os/fswatch.h"
#include "os/win/wutil.h"
#include "os/os.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <wchar.h>

#define NOTIFY_BUF 16384
#define NAME_MAX_W 260

const char os_fswatch_name[] = "ReadDirectoryChangesW";

typedef struct wdir {
  wchar_t path[NAME_MAX_W * 2];
  HANDLE h, ev;
  OVERLAPPED ov;
  int pending;
  DWORD buf[NOTIFY_BUF / sizeof(DWORD)]; /* FILE_NOTIFY_INFORMATION is DWORD-aligned */
} wdir;

typedef struct entry {
  int dir, id;
  wchar_t base[NAME_MAX_W];
} entry;

struct os_fswatch {
  wdir *d[OS_FSWATCH_MAX_DIRS];
  int nd;
  entry *e;
  size_t n, cap;
};

int os_fswatch_open(os_fswatch **out) {
  *out = calloc(1, sizeof(**out));
  return *out ? 0 : -ENOMEM;
}

/* Posts the next read of d's changes. */
static int arm(wdir *d) {
  ResetEvent(d->ev);
  memset(&d->ov, 0, sizeof(d->ov));
  d->ov.hEvent = d->ev;
  if (!ReadDirectoryChangesW(d->h, d->buf, sizeof(d->buf), FALSE,
                             FILE_NOTIFY_CHANGE_LAST_WRITE | FILE_NOTIFY_CHANGE_FILE_NAME, NULL,
                             &d->ov, NULL)) {
    d->pending = 0;
    return -os_win_errno(GetLastError());
  }
  d->pending = 1;
  return 0;
}

static void dir_close(wdir *d) {
  if (d->pending) {
    DWORD n;
    CancelIoEx(d->h, &d->ov);
    GetOverlappedResult(d->h, &d->ov, &n, TRUE);
  }
  if (d->h && d->h != INVALID_HANDLE_VALUE)
    CloseHandle(d->h);
  if (d->ev)
    CloseHandle(d->ev);
  free(d);
}

/* Splits path (UTF-8, / or \ separated) into its directory and base name. */
static int split(const char *path, wchar_t *dir, size_t dirlen, wchar_t *base, size_t baselen) {
  wchar_t w[NAME_MAX_W * 2], *slash;
  if (os_win_widen(path, w, sizeof(w) / sizeof(w[0])) < 0)
    return -ENAMETOOLONG;
  slash = wcsrchr(w, L'\\');
  if (!slash || (wcsrchr(w, L'/') && wcsrchr(w, L'/') > slash))
    slash = wcsrchr(w, L'/');
  if (!slash) {
    wcscpy(dir, L".");
    slash = w - 1;
  } else if (slash == w || (slash == w + 2 && w[1] == L':')) {
    if ((size_t)(slash - w) + 2 > dirlen)
      return -ENAMETOOLONG;
    wcsncpy(dir, w, (size_t)(slash - w) + 1); /* the root: keep its separator */
    dir[slash - w + 1] = 0;
  } else {
    if ((size_t)(slash - w) + 1 > dirlen)
      return -ENAMETOOLONG;
    wcsncpy(dir, w, (size_t)(slash - w));
    dir[slash - w] = 0;
  }
  if (wcslen(slash + 1) + 1 > baselen)
    return -ENAMETOOLONG;
  wcscpy(base, slash + 1);
  return 0;
}

/* The watched directory for path, opened and armed if new. */
static int find_dir(os_fswatch *w, const wchar_t *path) {
  wdir *d;
  int rc;
  for (int i = 0; i < w->nd; i++)
    if (CompareStringOrdinal(w->d[i]->path, -1, path, -1, TRUE) == CSTR_EQUAL)
      return i;
  if (w->nd == OS_FSWATCH_MAX_DIRS)
    return -EMFILE;
  d = calloc(1, sizeof(*d));
  if (!d)
    return -ENOMEM;
  wcscpy(d->path, path);
  d->ev = CreateEventW(NULL, TRUE, FALSE, NULL);
  d->h = CreateFileW(path, FILE_LIST_DIRECTORY,
                     FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE, NULL, OPEN_EXISTING,
                     FILE_FLAG_BACKUP_SEMANTICS | FILE_FLAG_OVERLAPPED, NULL);
  if (!d->ev || d->h == INVALID_HANDLE_VALUE) {
    rc = -os_win_errno(GetLastError());
    dir_close(d);
    return rc;
  }
  if ((rc = arm(d)) < 0) {
    dir_close(d);
    return rc;
  }
  w->d[w->nd] = d;
  return w->nd++;
}

int os_fswatch_add(os_fswatch *w, const char *path, int id, char *dir, size_t dirlen) {
  wchar_t wd[NAME_MAX_W * 2], base[NAME_MAX_W];
  entry *e;
  int rc, di;

  if (dirlen)
    dir[0] = '\0';
  if ((rc = split(path, wd, sizeof(wd) / 2, base, NAME_MAX_W)) < 0)
    return rc;
  if (dirlen)
    WideCharToMultiByte(CP_UTF8, 0, wd, -1, dir, (int)dirlen, NULL, NULL);
  if (w->n == w->cap) {
    size_t cap = w->cap ? w->cap * 2 : 4;
    entry *bigger = realloc(w->e, cap * sizeof(*bigger));
    if (!bigger)
      return -ENOMEM;
    w->e = bigger;
    w->cap = cap;
  }
  if ((di = find_dir(w, wd)) < 0)
    return di;
  e = &w->e[w->n++];
  e->dir = di;
  e->id = id;
  wcscpy(e->base, base);
  return 0;
}

int os_fswatch_items(os_fswatch *w, os_wait_item *items, int max) {
  int n = 0;
  if (!w)
    return 0;
  for (int i = 0; i < w->nd && n < max; i++) {
    if (!w->d[i]->pending && arm(w->d[i]) < 0)
      continue;
    items[n].h = w->d[i]->ev;
    items[n++].ready = 0;
  }
  return n;
}

static void report(os_fswatch *w, int di, const wchar_t *name, size_t len,
                   void (*changed)(void *, int), void *ctx) {
  for (size_t i = 0; i < w->n; i++)
    if (w->e[i].dir == di &&
        (!name || CompareStringOrdinal(w->e[i].base, -1, name, (int)len, TRUE) == CSTR_EQUAL))
      changed(ctx, w->e[i].id);
}

void os_fswatch_read(os_fswatch *w, void (*changed)(void *ctx, int id), void *ctx) {
  if (!w)
    return;
  for (int i = 0; i < w->nd; i++) {
    wdir *d = w->d[i];
    DWORD n = 0;
    if (!d->pending || WaitForSingleObject(d->ev, 0) != WAIT_OBJECT_0)
      continue;
    d->pending = 0;
    if (!GetOverlappedResult(d->h, &d->ov, &n, FALSE)) {
      if (GetLastError() == ERROR_NOTIFY_ENUM_DIR)
        report(w, i, NULL, 0, changed, ctx);
    } else if (n == 0) {
      report(w, i, NULL, 0, changed, ctx); /* overflow: anything may have changed */
    } else {
      const char *p = (const char *)d->buf;
      for (;;) {
        const FILE_NOTIFY_INFORMATION *fi = (const FILE_NOTIFY_INFORMATION *)p;
        if (fi->Action == FILE_ACTION_ADDED || fi->Action == FILE_ACTION_MODIFIED ||
            fi->Action == FILE_ACTION_RENAMED_NEW_NAME)
          report(w, i, fi->FileName, fi->FileNameLength / sizeof(WCHAR), changed, ctx);
        if (!fi->NextEntryOffset)
          break;
        p += fi->NextEntryOffset;
      }
    }
    arm(d); /* on failure the next os_fswatch_items tries again */
  }
}

void os_fswatch_close(os_fswatch *w) {
  if (!w)
    return;
  for (int i = 0; i < w->nd; i++)
    dir_close(w->d[i]);
  free(w->e);
  free(w);
}
