/* os_wait on Windows: WaitForMultipleObjects on manual-reset events, then a
 * zero-timeout look at each to mark every one that is set (the call itself
 * names only the first). */
#include "os/wait.h"

#include <errno.h>

int os_wait(os_wait_item *items, int n, int timeout_ms) {
  HANDLE h[OS_WAIT_MAX];
  DWORD k = 0, r;
  int ready = 0;

  if (n < 0 || n > OS_WAIT_MAX)
    return -EINVAL;
  for (int i = 0; i < n; i++) {
    items[i].ready = 0;
    if (items[i].h)
      h[k++] = items[i].h;
  }
  if (k == 0) {
    Sleep(timeout_ms < 0 ? INFINITE : (DWORD)timeout_ms);
    return 0;
  }
  r = WaitForMultipleObjects(k, h, FALSE, timeout_ms < 0 ? INFINITE : (DWORD)timeout_ms);
  if (r == WAIT_TIMEOUT)
    return 0;
  if (r == WAIT_FAILED)
    return -os_win_errno(GetLastError());
  for (int i = 0; i < n; i++)
    if (items[i].h && WaitForSingleObject(items[i].h, 0) == WAIT_OBJECT_0) {
      items[i].ready = 1;
      ready++;
    }
  return ready;
}

int os_wait_ready(const os_wait_item *item) { return item->h && item->ready; }

void os_wait_none(os_wait_item *item) {
  item->h = NULL;
  item->ready = 0;
}
