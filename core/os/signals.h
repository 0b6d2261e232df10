/* The stop and reconfig requests a console daemon gets from outside: on
 * POSIX SIGINT and SIGTERM (stop), SIGHUP (re-read the config) and SIGUSR1
 * (reopen the log file), taken
 * through a signalfd by the main loop so no other thread ever sees them; on
 * Windows Ctrl+C, Ctrl+Break and closing the console window (stop), taken by
 * a handler on the console's own thread that only sets an event for the
 * main loop. Windows has no equivalent of SIGHUP or SIGUSR1, so
 * OS_SIG_RECONFIG and OS_SIG_REOPEN never come there. One set per process: the functions use process state. */
#ifndef PIER_OS_SIGNALS_H
#define PIER_OS_SIGNALS_H

#include "os/wait.h"

#define OS_SIG_NONE 0
#define OS_SIG_QUIT 1
#define OS_SIG_RECONFIG 2
#define OS_SIG_REOPEN 3 /* POSIX SIGUSR1: reopen the log file (never on Windows) */

/* Takes the requests away from their default action (which would kill the
 * process) and from threads created afterwards; on POSIX also ignores
 * SIGPIPE. Call before starting any thread. A failure to set up the waiting
 * side is not fatal: the item then never becomes ready. Returns 0 or a
 * negative errno. */
int os_signals_open(void);
/* The item to wait on. */
void os_signals_item(os_wait_item *item);
/* After the item was ready: the request (OS_SIG_*) and its name for the log
 * ("SIGINT", "SIGTERM", "SIGHUP", "SIGUSR1", "Ctrl+C", "Ctrl+Break", "console close"). */
int os_signals_take(const char **name);
/* Call last, when the process is about to exit: on Windows the console
 * close handler waits for it (the system ends the process when the handler
 * returns). */
void os_signals_close(void);

/* For simple programs (pier-bench) that poll a flag instead. on_stop runs
 * on SIGINT/SIGTERM or Ctrl+C/Ctrl+Break/console close, in a signal handler
 * on POSIX and on the console's thread on Windows: it may only set a flag.
 * Also ignores SIGPIPE on POSIX. Returns 0 or a negative errno. */
int os_interrupt_install(void (*on_stop)(void));
/* Between hold and release, threads created by this thread do not take the
 * signals (POSIX; nothing to do on Windows, where no thread ever runs a
 * signal handler by surprise). */
void os_interrupt_hold(void);
void os_interrupt_release(void);

#endif
