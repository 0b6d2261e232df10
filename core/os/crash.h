/* Crash report, the platform part. On a fatal fault (POSIX: SIGSEGV, SIGBUS,
 * SIGILL, SIGFPE, SIGABRT; Windows: an exception nothing handled, or
 * abort()) the handler writes to stderr what happened, a backtrace and the
 * note last set (daemon/crash.c puts the plugin list there), then lets the
 * process die as it would have: of the same signal, so core dumps still
 * work; with the same exception code, so Windows Error Reporting still sees
 * it. The handler formats nothing it was not given beforehand besides the
 * fault itself. */
#ifndef PIER_OS_CRASH_H
#define PIER_OS_CRASH_H

#include <stddef.h>

/* Longest note, with its NUL. */
#define OS_CRASH_NOTE_MAX 8192

/* Installs the handler; `prog` starts the report's first line ("pierd:
 * fatal ..."). Call once, early, from main. */
void os_crash_install(const char *prog);
/* Replaces the note the report ends with (copied, cut to
 * OS_CRASH_NOTE_MAX - 1 bytes). Main thread. */
void os_crash_set_note(const char *text);

#endif
