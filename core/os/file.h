/* Identity of a file on disk, to tell whether the file at a path is still
 * the one a plugin was loaded from: the same file (device and inode, or
 * volume and file index on Windows), size and modification time. And the
 * log file's opening. */
#ifndef PIER_OS_FILE_H
#define PIER_OS_FILE_H

#include <stdint.h>

typedef struct os_file_id {
  uint64_t dev, ino, size;
  int64_t mtime_ns;
} os_file_id;

/* Fills *out for the file at path (UTF-8). Returns 0 or a negative errno;
 * *out is all zero on failure. */
int os_file_id_get(const char *path, os_file_id *out);
int os_file_id_equal(const os_file_id *a, const os_file_id *b);

/* Opens path (UTF-8) to append to, creating it (0644 on POSIX); not
 * inherited by child processes. On Windows the file is shared for reading,
 * writing and deleting, so it can be renamed while pierd writes to it, as
 * on POSIX (a rotation). Returns a C runtime descriptor, or a negative
 * errno. */
int os_file_open_append(const char *path);

#endif
