/* Windows helpers for the platform layer's own files: see wutil.h. */
#include "os/win/wutil.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

int os_win_widen(const char *s, wchar_t *out, size_t n) {
  int r;
  if (n == 0 || n > 0x7fffffff)
    return -ENAMETOOLONG;
  r = MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, s, -1, out, (int)n);
  if (r > 0)
    return 0;
  return GetLastError() == ERROR_INSUFFICIENT_BUFFER ? -ENAMETOOLONG : -EILSEQ;
}

int os_win_narrow(const wchar_t *s, char *out, size_t n) {
  int r;
  if (n == 0 || n > 0x7fffffff)
    return -ENAMETOOLONG;
  r = WideCharToMultiByte(CP_UTF8, 0, s, -1, out, (int)n, NULL, NULL);
  if (r > 0)
    return 0;
  out[0] = '\0';
  return GetLastError() == ERROR_INSUFFICIENT_BUFFER ? -ENAMETOOLONG : -EILSEQ;
}

int os_win_final_path(HANDLE h, char *out, size_t n) {
  wchar_t w[4096 + 8];
  const wchar_t *p = w;
  DWORD len = GetFinalPathNameByHandleW(h, w, sizeof(w) / sizeof(w[0]),
                                        FILE_NAME_NORMALIZED | VOLUME_NAME_DOS);
  if (len == 0)
    return -os_win_errno(GetLastError());
  if (len >= sizeof(w) / sizeof(w[0]))
    return -ENAMETOOLONG;
  if (wcsncmp(w, L"\\\\?\\UNC\\", 8) == 0) {
    w[6] = L'\\'; /* "\\?\UNC\server" -> "\\server" */
    p = w + 6;
  } else if (wcsncmp(w, L"\\\\?\\", 4) == 0) {
    p = w + 4;
  }
  return os_win_narrow(p, out, n);
}

void os_win_message(unsigned long err, char *out, size_t n) {
  wchar_t w[512];
  char text[1024];
  size_t len;
  DWORD r = FormatMessageW(FORMAT_MESSAGE_FROM_SYSTEM | FORMAT_MESSAGE_IGNORE_INSERTS, NULL,
                           (DWORD)err, MAKELANGID(LANG_NEUTRAL, SUBLANG_DEFAULT), w,
                           sizeof(w) / sizeof(w[0]), NULL);
  if (r == 0 || os_win_narrow(w, text, sizeof(text)) < 0) {
    snprintf(out, n, "error %lu", err);
    return;
  }
  len = strlen(text);
  while (len > 0 && (text[len - 1] == '\n' || text[len - 1] == '\r' || text[len - 1] == ' ' ||
                     text[len - 1] == '.'))
    text[--len] = '\0';
  snprintf(out, n, "%s (error %lu)", text, err);
}

void os_win_errtext(unsigned long err, char *out, size_t n) {
  int e = os_win_errno(err);
  if (e != EIO || err == ERROR_IO_DEVICE)
    snprintf(out, n, "%s", os_strerror(e));
  else
    os_win_message(err, out, n);
}
