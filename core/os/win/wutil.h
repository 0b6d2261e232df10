/* Helpers shared by the Windows files of the platform layer (not part of
 * any os/ header): UTF-8 <-> UTF-16 for paths, the path a handle
 * really points at, and the text of a Win32 error. */
#ifndef PIER_OS_WIN_WUTIL_H
#define PIER_OS_WIN_WUTIL_H

#include <stddef.h>

#include "os/os.h"

/* UTF-8 s as UTF-16 in out (n wide characters). Returns 0, -ENAMETOOLONG
 * when it does not fit, -EILSEQ when s is not UTF-8. */
int os_win_widen(const char *s, wchar_t *out, size_t n);
/* UTF-16 s as UTF-8 in out (n bytes). Returns 0 or -ENAMETOOLONG. */
int os_win_narrow(const wchar_t *s, char *out, size_t n);
/* Where the file or directory open as h lies, every link resolved, as
 * GetFinalPathNameByHandleW tells, without its "\\?\" prefix ("\\?\UNC\"
 * becomes "\\"). Returns 0 or a negative errno. */
int os_win_final_path(HANDLE h, char *out, size_t n);
/* The system's text for a Win32 error, one line without a final period or
 * newline, with the code: "The specified module could not be found (error
 * 126)". */
void os_win_message(unsigned long err, char *out, size_t n);
/* Text for a Win32 error where POSIX code shows os_strerror: the errno text
 * when os_win_errno knows the error, the system's text otherwise. */
void os_win_errtext(unsigned long err, char *out, size_t n);

#endif
