/* Notification that a file has been replaced: written and closed (cp) or
 * renamed into place (mv). The directory holding each file is watched, not
 * the file itself: a rename replaces the file's inode, so a watch on the file
 * would lose track. POSIX uses inotify (IN_CLOSE_WRITE | IN_MOVED_TO);
 * Windows ReadDirectoryChangesW (last write and file name changes), which
 * cannot tell a finished write from a partial one: the caller debounces. */
#ifndef PIER_OS_FSWATCH_H
#define PIER_OS_FSWATCH_H

#include <stddef.h>

#include "os/wait.h"

/* Directories watched at most on Windows, one wait item each (the rest of
 * the main loop's OS_WAIT_MAX items belong to the other sources). */
#define OS_FSWATCH_MAX_DIRS 32

typedef struct os_fswatch os_fswatch;

/* The mechanism, for messages: "inotify" or "ReadDirectoryChangesW". */
extern const char os_fswatch_name[];

/* Returns 0 and sets *out, or a negative errno. */
int os_fswatch_open(os_fswatch **out);
/* Reports id (>= 0, the caller's) whenever the file at path is replaced.
 * dir receives the watched directory, for messages. Returns 0 or a negative
 * errno (nothing is watched for this path then). */
int os_fswatch_add(os_fswatch *w, const char *path, int id, char *dir, size_t dirlen);
/* Fills up to max items to wait on; returns how many. */
int os_fswatch_items(os_fswatch *w, os_wait_item *items, int max);
/* Takes what happened (call when an item was ready; harmless otherwise) and
 * calls changed(ctx, id) for each affected file, possibly more than once. */
void os_fswatch_read(os_fswatch *w, void (*changed)(void *ctx, int id), void *ctx);
/* NULL is ignored. */
void os_fswatch_close(os_fswatch *w);

#endif
