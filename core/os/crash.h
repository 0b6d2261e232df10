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
#include <stdint.h>

/* Longest note, with its NUL. */
#define OS_CRASH_NOTE_MAX 8192

/* Installs the handler; `prog` starts the report's first line ("pierd:
 * fatal ..."). Call once, early, from main. */
void os_crash_install(const char *prog);
/* Replaces the note the report ends with (copied, cut to
 * OS_CRASH_NOTE_MAX - 1 bytes). Main thread. */
void os_crash_set_note(const char *text);

/* A plugin's code, for the report: each backtrace frame in [start, end) is
 * also printed as the plugin's own file (not the private copy it was loaded
 * from) and the address in that file, pc - bias, with the addr2line command
 * that turns it into a function and line. */
#define OS_CRASH_MODULES_MAX 64
typedef struct os_crash_module {
  uintptr_t start, end, bias;
  char name[64];
  char file[448];
} os_crash_module;
/* Replaces the table (copied; at most OS_CRASH_MODULES_MAX entries). The
 * handler reads the copy not being written, so a crash while the table is
 * replaced sees the old one or the new one whole. Main thread. */
void os_crash_set_modules(const os_crash_module *m, size_t n);

#endif
