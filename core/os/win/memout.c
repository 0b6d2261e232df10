/* os_memout on Windows, which has no memory stream: a temporary file that
 * the system deletes when it is closed (FILE_FLAG_DELETE_ON_CLOSE, mostly
 * kept in memory by FILE_ATTRIBUTE_TEMPORARY), read back at the end. */
#include "os/memout.h"

#include <errno.h>
#include <fcntl.h>
#include <io.h>
#include <stdlib.h>

#include "os/os.h"

#define MEMOUT_MAX (64u << 20) /* an answer larger than this is refused */

FILE *os_memout_open(os_memout *m) {
  wchar_t dir[MAX_PATH + 1], path[MAX_PATH + 1];
  HANDLE h;
  int fd;

  m->f = NULL;
  m->text = NULL;
  m->len = 0;
  if (!GetTempPathW(MAX_PATH + 1, dir) || !GetTempFileNameW(dir, L"pie", 0, path))
    return NULL;
  h = CreateFileW(path, GENERIC_READ | GENERIC_WRITE, 0, NULL, CREATE_ALWAYS,
                  FILE_ATTRIBUTE_TEMPORARY | FILE_FLAG_DELETE_ON_CLOSE, NULL);
  if (h == INVALID_HANDLE_VALUE) {
    DeleteFileW(path);
    return NULL;
  }
  fd = _open_osfhandle((intptr_t)h, _O_RDWR | _O_BINARY);
  if (fd < 0) {
    CloseHandle(h);
    return NULL;
  }
  m->f = _fdopen(fd, "w+b");
  if (!m->f)
    _close(fd);
  return m->f;
}

int os_memout_close(os_memout *m, char **text, size_t *len) {
  long size;
  char *t;
  int bad = fflush(m->f) != 0;

  if (!bad && fseek(m->f, 0, SEEK_END) == 0 && (size = ftell(m->f)) >= 0 &&
      (unsigned long)size <= MEMOUT_MAX && fseek(m->f, 0, SEEK_SET) == 0 &&
      (t = malloc((size_t)size + 1))) {
    if (fread(t, 1, (size_t)size, m->f) == (size_t)size) {
      t[size] = '\0';
      fclose(m->f);
      *text = t;
      *len = (size_t)size;
      return 0;
    }
    free(t);
  }
  fclose(m->f);
  return -ENOMEM;
}
