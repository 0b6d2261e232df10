/* File paths as the config handles them: absolute or not, where the directory
 * part ends, joining, the link-free absolute form (realpath), and whether one
 * path lies in a directory. POSIX paths use '/'; Windows paths accept '/' and
 * '\\', start with a drive ("C:\\") or a UNC prefix ("\\\\server\\share"), and
 * pier joins them with '\\'. Paths are UTF-8 on both (converted to UTF-16 for
 * Windows calls). */
#ifndef PIER_OS_PATH_H
#define PIER_OS_PATH_H

#include <stddef.h>

/* Room for any path pier handles (Linux's PATH_MAX). */
#define OS_PATH_MAX 4096

/* The separator pier writes when it joins paths ("/" or "\\"). */
extern const char os_path_sep[];

/* Whether ch separates path components ('/'; on Windows '/' or '\\'). */
int os_path_is_sep(char ch);
/* Whether p does not depend on the current directory for its meaning
 * (POSIX: starts with '/'; Windows: a drive letter and ':' or a
 * separator), so it is never joined to a base directory. */
int os_path_is_absolute(const char *p);
/* Whether p has a separator at all. */
int os_path_has_sep(const char *p);
/* The last component of p (after its last separator; p when none). */
const char *os_path_base(const char *p);
/* The length of p's directory part, without trailing separators but keeping
 * a root ("/", "C:\\"): "/a/b" -> 2, "/b" -> 1, "a//b" -> 1; 0 when p has no
 * directory part (it is relative to ".") */
size_t os_path_dir_len(const char *p);
/* The length of p's root ("/" = 1, "C:\\" = 3), 0 for a relative path. A
 * trailing separator inside the root is never stripped. */
size_t os_path_root_len(const char *p);

/* Rewrites p's separators in place to os_path_sep ('/' -> '\\' on Windows;
 * nothing on POSIX), so joined paths read consistently in messages. */
void os_path_normalize(char *p);

/* The absolute path with every link and "." / ".." resolved, as realpath(3):
 * 0 with it in out (n bytes), or a negative errno (-ENOENT when p or a
 * directory on the way does not exist, -ENAMETOOLONG when out is too small). */
int os_realpath(const char *p, char *out, size_t n);
/* Whether path (absolute, link-free, as os_realpath gives) is dir (same
 * form) or lies below it. On Windows the comparison ignores ASCII case, as
 * the file system does. */
int os_path_inside(const char *path, const char *dir);

/* Reads the whole file at p into buf (at most cap bytes; *len gets how many
 * were read, cap meaning there may be more). Returns 0, or a negative errno
 * (-ENOENT, -EACCES, -EISDIR, ...) with nothing read. */
int os_read_file(const char *p, char *buf, size_t cap, size_t *len);

#endif
