/* Console control events on Windows. The system runs the handler on a thread
 * of its own; the handler only records the event and sets a manual-reset
 * event that the main loop waits on. For a console close, logoff or
 * shutdown the process is ended as soon as the handler returns, so there the
 * handler waits (up to the 5 s the system allows) until the main loop has
 * finished stopping and calls os_signals_close. There is no SIGHUP: nothing
 * asks for a reconfig. */
#include "os/signals.h"

#include <errno.h>

#define CLOSE_WAIT_MS 4500 /* the system ends the process after 5 s */

static HANDLE quit_ev, done_ev;
static volatile LONG last_type = -1;
static void (*stop_fn)(void);

static BOOL WINAPI on_ctrl(DWORD type) {
  InterlockedExchange(&last_type, (LONG)type);
  if (stop_fn)
    stop_fn();
  if (quit_ev)
    SetEvent(quit_ev);
  if ((type == CTRL_CLOSE_EVENT || type == CTRL_LOGOFF_EVENT || type == CTRL_SHUTDOWN_EVENT) &&
      done_ev)
    WaitForSingleObject(done_ev, CLOSE_WAIT_MS);
  return TRUE;
}

static void close_events(void) {
  if (quit_ev)
    CloseHandle(quit_ev);
  if (done_ev)
    CloseHandle(done_ev);
  quit_ev = done_ev = NULL;
}

int os_signals_open(void) {
  int rc;
  quit_ev = CreateEventW(NULL, TRUE, FALSE, NULL);
  done_ev = CreateEventW(NULL, TRUE, FALSE, NULL);
  if (quit_ev && done_ev && SetConsoleCtrlHandler(on_ctrl, TRUE))
    return 0;
  rc = -os_win_errno(GetLastError());
  close_events(); /* as before the call: no events, no handler */
  return rc;
}

void os_signals_item(os_wait_item *item) {
  item->h = quit_ev;
  item->ready = 0;
}

int os_signals_take(const char **name) {
  LONG type;
  /* Reset before taking the type: an event that comes in between sets both
   * again and is seen by the next wait. */
  if (quit_ev)
    ResetEvent(quit_ev);
  type = InterlockedExchange(&last_type, -1);
  *name = "";
  switch (type) {
  case -1:
    return OS_SIG_NONE;
  case CTRL_C_EVENT:
    *name = "Ctrl+C";
    break;
  case CTRL_BREAK_EVENT:
    *name = "Ctrl+Break";
    break;
  case CTRL_CLOSE_EVENT:
    *name = "console close";
    break;
  case CTRL_LOGOFF_EVENT:
    *name = "logoff";
    break;
  default:
    *name = "shutdown";
    break;
  }
  return OS_SIG_QUIT;
}

void os_signals_close(void) {
  if (done_ev)
    SetEvent(done_ev);
}

int os_interrupt_install(void (*on_stop)(void)) {
  stop_fn = on_stop;
  return SetConsoleCtrlHandler(on_ctrl, TRUE) ? 0 : -os_win_errno(GetLastError());
}

void os_interrupt_hold(void) {}

void os_interrupt_release(void) {}
