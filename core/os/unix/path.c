/* os/path.h on POSIX: '/' is the only separator and the only root. */
#include "os/path.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

const char os_path_sep[] = "/";

int os_path_is_sep(char ch) { return ch == '/'; }

int os_path_is_absolute(const char *p) { return p[0] == '/'; }

int os_path_has_sep(const char *p) { return strchr(p, '/') != NULL; }

const char *os_path_base(const char *p) {
  const char *slash = strrchr(p, '/');
  return slash ? slash + 1 : p;
}

size_t os_path_root_len(const char *p) { return p[0] == '/' ? 1 : 0; }

size_t os_path_dir_len(const char *p) {
  const char *slash = strrchr(p, '/');
  size_t n;
  if (!slash)
    return 0;
  n = (size_t)(slash - p);
  while (n > 0 && p[n - 1] == '/')
    n--;
  return n ? n : 1;
}

void os_path_normalize(char *p) { (void)p; }

int os_realpath(const char *p, char *out, size_t n) {
  char *r = realpath(p, NULL);
  size_t len;
  if (!r)
    return -errno;
  len = strlen(r);
  if (len >= n) {
    free(r);
    return -ENAMETOOLONG;
  }
  memcpy(out, r, len + 1);
  free(r);
  return 0;
}

int os_path_inside(const char *path, const char *dir) {
  size_t n = strlen(dir);
  if (n == 1 && dir[0] == '/')
    return path[0] == '/';
  return strncmp(path, dir, n) == 0 && (path[n] == '/' || path[n] == '\0');
}

int os_read_file(const char *p, char *buf, size_t cap, size_t *len) {
  struct stat st;
  int fd = open(p, O_RDONLY | O_CLOEXEC), rc = 0;
  *len = 0;
  if (fd < 0)
    return -errno;
  if (fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
    close(fd);
    return -EISDIR;
  }
  while (*len < cap) {
    ssize_t r = read(fd, buf + *len, cap - *len);
    if (r < 0 && errno == EINTR)
      continue;
    if (r < 0) {
      rc = -errno;
      break;
    }
    if (r == 0)
      break;
    *len += (size_t)r;
  }
  close(fd);
  if (rc < 0)
    *len = 0;
  return rc;
}
