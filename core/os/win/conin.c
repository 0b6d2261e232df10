/* The stdin console on Windows. Neither a console nor an anonymous pipe can
 * be waited on for "input is there", so a reader thread does the blocking
 * ReadFile and hands each chunk over through one slot: it sets `ready` and
 * waits for `taken` before reading again, so no more than one chunk is ever
 * held. The end of input (or a read error) is handed over as an empty chunk,
 * after which the thread ends. */
#include "os/conin.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define STOP_WAIT_MS 200 /* for the reader at close; the process is ending */

struct os_conin {
  HANDLE in, thread;
  HANDLE ready; /* manual-reset: a chunk (or the end) is in buf */
  HANDLE taken; /* auto-reset: the main loop emptied buf */
  volatile LONG stop;
  DWORD len;
  int eof;
  char buf[OS_CONIN_CHUNK];
};

static DWORD WINAPI reader(void *arg) {
  os_conin *c = arg;
  for (;;) {
    DWORD n = 0;
    BOOL ok = ReadFile(c->in, c->buf, sizeof(c->buf), &n, NULL);
    if (c->stop)
      return 0;
    /* Ctrl+C on a console aborts the pending read; that is the control
     * handler's business, not the end of input. */
    if (!ok && GetLastError() == ERROR_OPERATION_ABORTED)
      continue;
    c->len = ok ? n : 0;
    c->eof = c->len == 0;
    SetEvent(c->ready);
    if (c->eof)
      return 0;
    WaitForSingleObject(c->taken, INFINITE);
    if (c->stop)
      return 0;
  }
}

static void release(os_conin *c) {
  if (c->ready)
    CloseHandle(c->ready);
  if (c->taken)
    CloseHandle(c->taken);
  free(c);
}

int os_conin_open(os_conin **out) {
  HANDLE in = GetStdHandle(STD_INPUT_HANDLE);
  os_conin *c;
  int rc;

  *out = NULL;
  if (in == NULL || in == INVALID_HANDLE_VALUE)
    return -ENODEV;
  c = calloc(1, sizeof(*c));
  if (!c)
    return -ENOMEM;
  c->in = in;
  c->ready = CreateEventW(NULL, TRUE, FALSE, NULL);
  c->taken = CreateEventW(NULL, FALSE, FALSE, NULL);
  if (!c->ready || !c->taken) {
    rc = -os_win_errno(GetLastError());
    release(c);
    return rc;
  }
  c->thread = CreateThread(NULL, 64 * 1024, reader, c, 0, NULL);
  if (!c->thread) {
    rc = -os_win_errno(GetLastError());
    release(c);
    return rc;
  }
  *out = c;
  return 0;
}

void os_conin_item(os_conin *c, os_wait_item *item) {
  item->h = c->ready;
  item->ready = 0;
}

long os_conin_read(os_conin *c, char *buf, size_t cap) {
  DWORD n;
  if (WaitForSingleObject(c->ready, 0) != WAIT_OBJECT_0)
    return -EAGAIN;
  if (c->eof)
    return 0;
  n = c->len < cap ? c->len : (DWORD)cap;
  memcpy(buf, c->buf, n);
  if (n < c->len) { /* a smaller buffer than a chunk: keep the rest */
    memmove(c->buf, c->buf + n, c->len - n);
    c->len -= n;
    return (long)n;
  }
  ResetEvent(c->ready);
  SetEvent(c->taken);
  return (long)n;
}

void os_conin_close(os_conin *c) {
  if (!c)
    return;
  InterlockedExchange(&c->stop, 1);
  SetEvent(c->taken);
  CancelSynchronousIo(c->thread);
  if (WaitForSingleObject(c->thread, STOP_WAIT_MS) != WAIT_OBJECT_0) {
    /* Still blocked in a read nothing could cancel: leave it to the end of
     * the process, with what it uses. */
    CloseHandle(c->thread);
    return;
  }
  CloseHandle(c->thread);
  release(c);
}
