/* Crash report: on a fatal signal (SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT;
 * on Windows an unhandled exception or abort()) pierd writes to stderr what
 * happened, a backtrace and the plugins that were loaded (with versions and
 * generations) — most crashes in a plugin host are a plugin's — then dies of
 * the same signal (exception), so core dumps still work. */
#ifndef PIER_DAEMON_CRASH_H
#define PIER_DAEMON_CRASH_H

#include "host/host.h"

/* Installs the handlers. Call once, early, from main. */
void crash_install(void);
/* Refreshes the plugin list the report shows (main thread, after loads and
 * reloads). */
void crash_note_plugins(host *h);

#endif
