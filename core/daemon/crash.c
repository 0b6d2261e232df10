/* The handler only uses write(2), backtrace() (primed at install, so it does
 * not load libgcc in the handler) and a plugin list formatted beforehand. */
#include "daemon/crash.h"

#include <execinfo.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static char plugins_text[8192] = "  (none loaded yet)\n";

static void put(const char *s) {
  if (write(STDERR_FILENO, s, strlen(s)) < 0) {
  }
}

static void on_fatal(int sig, siginfo_t *si, void *uc) {
  char line[160];
  void *frames[64];
  int n;
  (void)uc;
  snprintf(line, sizeof(line), "\npierd: fatal signal %d (SIG%s) at address %p; crash report:\n",
           sig, sigabbrev_np(sig) ? sigabbrev_np(sig) : "?", si ? si->si_addr : NULL);
  put(line);
  put("backtrace:\n");
  n = backtrace(frames, 64);
  backtrace_symbols_fd(frames, n, STDERR_FILENO);
  put("plugins loaded:\n");
  put(plugins_text);
  signal(sig, SIG_DFL);
  raise(sig);
}

void crash_install(void) {
  static const int sigs[] = {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT};
  struct sigaction sa;
  void *prime[2];
  backtrace(prime, 2);
  memset(&sa, 0, sizeof(sa));
  sa.sa_sigaction = on_fatal;
  sa.sa_flags = SA_SIGINFO | SA_RESETHAND;
  sigemptyset(&sa.sa_mask);
  for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
    sigaction(sigs[i], &sa, NULL);
}

void crash_note_plugins(host *h) {
  char buf[sizeof(plugins_text)];
  FILE *f = fmemopen(buf, sizeof(buf) - 1, "w");
  size_t n;
  if (!f)
    return;
  host_print_plugins(h, f);
  n = (size_t)ftell(f);
  fclose(f);
  buf[n < sizeof(buf) - 1 ? n : sizeof(buf) - 1] = '\0';
  memcpy(plugins_text, buf, sizeof(buf));
}
