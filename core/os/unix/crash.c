/* os/crash.h on POSIX. The handler only uses write(2), backtrace() (primed
 * at install, so it does not load libgcc in the handler) and a note
 * formatted beforehand. */
#include "os/crash.h"

#include <execinfo.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static char note[OS_CRASH_NOTE_MAX];
static char prog_name[32] = "pierd";

static void put(const char *s) {
  if (write(STDERR_FILENO, s, strlen(s)) < 0) {
  }
}

static void on_fatal(int sig, siginfo_t *si, void *uc) {
  char line[160];
  void *frames[64];
  int n;
  (void)uc;
  snprintf(line, sizeof(line), "\n%s: fatal signal %d (SIG%s) at address %p; crash report:\n",
           prog_name, sig, sigabbrev_np(sig) ? sigabbrev_np(sig) : "?", si ? si->si_addr : NULL);
  put(line);
  put("backtrace:\n");
  n = backtrace(frames, 64);
  backtrace_symbols_fd(frames, n, STDERR_FILENO);
  put(note);
  signal(sig, SIG_DFL);
  raise(sig);
}

void os_crash_install(const char *prog) {
  static const int sigs[] = {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT};
  struct sigaction sa;
  void *prime[2];
  snprintf(prog_name, sizeof(prog_name), "%s", prog);
  backtrace(prime, 2);
  memset(&sa, 0, sizeof(sa));
  sa.sa_sigaction = on_fatal;
  sa.sa_flags = SA_SIGINFO | SA_RESETHAND;
  sigemptyset(&sa.sa_mask);
  for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
    sigaction(sigs[i], &sa, NULL);
}

void os_crash_set_note(const char *text) {
  char buf[sizeof(note)];
  snprintf(buf, sizeof(buf), "%s", text);
  memcpy(note, buf, sizeof(buf));
}
