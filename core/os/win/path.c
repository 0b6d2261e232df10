/* os/path.h on Windows: '/' and '\\' both separate, a root is a drive
 * ("C:\\", or "C:" alone, relative to that drive's current directory), a
 * separator ("\\", the current drive's root) or a UNC share
 * ("\\\\server\\share\\"). realpath is asked of an open handle
 * (GetFinalPathNameByHandleW), which resolves links and junctions as
 * realpath(3) does, not of the string (GetFullPathNameW would only fold
 * "." and ".."). */
#include "os/path.h"

#include <errno.h>
#include <string.h>

#include "os/win/wutil.h"

const char os_path_sep[] = "\\";

int os_path_is_sep(char ch) { return ch == '/' || ch == '\\'; }

static int is_drive(const char *p) {
  return ((p[0] >= 'A' && p[0] <= 'Z') || (p[0] >= 'a' && p[0] <= 'z')) && p[1] == ':';
}

/* The end of the component starting at p[i]. */
static size_t skip_component(const char *p, size_t i) {
  while (p[i] && !os_path_is_sep(p[i]))
    i++;
  return i;
}

size_t os_path_root_len(const char *p) {
  if (os_path_is_sep(p[0]) && os_path_is_sep(p[1])) {
    size_t i = skip_component(p, 2); /* server */
    if (p[i])
      i = skip_component(p, i + 1); /* share */
    return p[i] ? i + 1 : i;
  }
  if (is_drive(p))
    return os_path_is_sep(p[2]) ? 3 : 2;
  return os_path_is_sep(p[0]) ? 1 : 0;
}

int os_path_is_absolute(const char *p) { return os_path_root_len(p) > 0; }

int os_path_has_sep(const char *p) { return strpbrk(p, "/\\") != NULL; }

static const char *last_sep(const char *p) {
  const char *a = strrchr(p, '/'), *b = strrchr(p, '\\');
  return a > b ? a : b;
}

const char *os_path_base(const char *p) {
  const char *s = last_sep(p);
  if (s)
    return s + 1;
  return is_drive(p) ? p + 2 : p;
}

size_t os_path_dir_len(const char *p) {
  size_t root = os_path_root_len(p), n;
  const char *s = last_sep(p);
  if (!s || (size_t)(s - p) < root)
    return root;
  n = (size_t)(s - p);
  while (n > root && os_path_is_sep(p[n - 1]))
    n--;
  return n > root ? n : root;
}

void os_path_normalize(char *p) {
  for (; *p; p++)
    if (*p == '/')
      *p = '\\';
}

int os_realpath(const char *p, char *out, size_t n) {
  wchar_t w[OS_PATH_MAX];
  HANDLE h;
  int rc = os_win_widen(p, w, OS_PATH_MAX);
  if (rc < 0)
    return rc;
  /* No access asked, and FILE_FLAG_BACKUP_SEMANTICS: directories open too,
   * and nobody's sharing mode is in the way. */
  h = CreateFileW(w, 0, FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE, NULL,
                  OPEN_EXISTING, FILE_FLAG_BACKUP_SEMANTICS, NULL);
  if (h == INVALID_HANDLE_VALUE)
    return -os_win_errno(GetLastError());
  rc = os_win_final_path(h, out, n);
  CloseHandle(h);
  return rc;
}

static char lower(char ch) { return ch >= 'A' && ch <= 'Z' ? (char)(ch - 'A' + 'a') : ch; }

int os_path_inside(const char *path, const char *dir) {
  size_t n = strlen(dir);
  for (size_t i = 0; i < n; i++) {
    if (os_path_is_sep(dir[i]) ? !os_path_is_sep(path[i]) : lower(dir[i]) != lower(path[i]))
      return 0;
  }
  /* A root ("C:\\") ends in its separator; any other dir is followed by one. */
  return (n > 0 && os_path_is_sep(dir[n - 1])) || os_path_is_sep(path[n]) || path[n] == '\0';
}

int os_read_file(const char *p, char *buf, size_t cap, size_t *len) {
  wchar_t w[OS_PATH_MAX];
  BY_HANDLE_FILE_INFORMATION info;
  HANDLE h;
  int rc = os_win_widen(p, w, OS_PATH_MAX);
  *len = 0;
  if (rc < 0)
    return rc;
  h = CreateFileW(w, GENERIC_READ, FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE, NULL,
                  OPEN_EXISTING, FILE_FLAG_BACKUP_SEMANTICS | FILE_FLAG_SEQUENTIAL_SCAN, NULL);
  if (h == INVALID_HANDLE_VALUE)
    return -os_win_errno(GetLastError());
  if (GetFileInformationByHandle(h, &info) &&
      (info.dwFileAttributes & FILE_ATTRIBUTE_DIRECTORY)) {
    CloseHandle(h);
    return -EISDIR;
  }
  while (*len < cap) {
    DWORD want = cap - *len > 1u << 20 ? 1u << 20 : (DWORD)(cap - *len), got = 0;
    if (!ReadFile(h, buf + *len, want, &got, NULL)) {
      rc = -os_win_errno(GetLastError());
      break;
    }
    if (got == 0)
      break;
    *len += got;
  }
  CloseHandle(h);
  if (rc < 0)
    *len = 0;
  return rc;
}
