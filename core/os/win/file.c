/* os/file.h on Windows: the volume serial number and file index identify a
 * file as device and inode do on POSIX. */
#include "os/file.h"

#include <errno.h>
#include <fcntl.h>
#include <io.h>
#include <string.h>

#include "os/os.h"
#include "os/win/wutil.h"

int os_file_id_get(const char *path, os_file_id *out) {
  BY_HANDLE_FILE_INFORMATION fi;
  wchar_t wpath[MAX_PATH * 4];
  HANDLE f;
  int rc = 0;

  memset(out, 0, sizeof(*out));
  if (os_win_widen(path, wpath, sizeof(wpath) / sizeof(wpath[0])) < 0)
    return -EINVAL;
  /* Attributes only, shared every way: never in the way of an operator
   * replacing the file. */
  f = CreateFileW(wpath, FILE_READ_ATTRIBUTES, FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE,
                  NULL, OPEN_EXISTING, FILE_FLAG_BACKUP_SEMANTICS, NULL);
  if (f == INVALID_HANDLE_VALUE)
    return -os_win_errno(GetLastError());
  if (GetFileInformationByHandle(f, &fi)) {
    out->dev = fi.dwVolumeSerialNumber;
    out->ino = (uint64_t)fi.nFileIndexHigh << 32 | fi.nFileIndexLow;
    out->size = (uint64_t)fi.nFileSizeHigh << 32 | fi.nFileSizeLow;
    /* 100 ns units; only compared, so the epoch does not matter. */
    out->mtime_ns = (int64_t)((uint64_t)fi.ftLastWriteTime.dwHighDateTime << 32 |
                              fi.ftLastWriteTime.dwLowDateTime) * 100;
  } else {
    rc = -os_win_errno(GetLastError());
  }
  CloseHandle(f);
  return rc;
}

int os_file_id_equal(const os_file_id *a, const os_file_id *b) {
  return a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
         a->mtime_ns == b->mtime_ns;
}

int os_file_open_append(const char *path) {
  wchar_t wpath[MAX_PATH * 4];
  HANDLE f;
  int fd;
  if (os_win_widen(path, wpath, sizeof(wpath) / sizeof(wpath[0])) < 0)
    return -ENAMETOOLONG;
  /* FILE_APPEND_DATA alone: every write goes to the end, as O_APPEND. The C
   * runtime's open() would not share for deleting, and a rename would fail. */
  f = CreateFileW(wpath, FILE_APPEND_DATA, FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE,
                  NULL, OPEN_ALWAYS, FILE_ATTRIBUTE_NORMAL, NULL);
  if (f == INVALID_HANDLE_VALUE)
    return -os_win_errno(GetLastError());
  fd = _open_osfhandle((intptr_t)f, _O_APPEND | _O_BINARY);
  if (fd < 0) {
    CloseHandle(f);
    return -EMFILE;
  }
  return fd;
}
