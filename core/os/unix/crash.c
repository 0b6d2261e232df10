/* os/crash.h on POSIX. The handler only uses write(2), backtrace() (primed
 * at install, so it does not load libgcc in the handler), snprintf of
 * numbers, a note formatted beforehand and the plugins' code ranges found
 * beforehand (dl_iterate_phdr takes the loader's lock: not in a handler). */
#include "os/crash.h"

#include <execinfo.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static char note[OS_CRASH_NOTE_MAX];
static char prog_name[32] = "pierd";
static void put(const char *s) {
  if (write(STDERR_FILENO, s, strlen(s)) < 0) {
  }
}

static os_crash_module modules[2][OS_CRASH_MODULES_MAX];
static size_t nmodules[2];
static _Atomic int live; /* the table the handler reads */

/* Frames inside a plugin: its own file and the address in it. The copy it
 * was loaded from is gone (unlinked at load), and the backtrace above names
 * that copy. */
static void put_plugin_frames(void *const *frames, int n) {
  int t = atomic_load(&live), header = 0;
  char line[1280];
  for (int i = 0; i < n; i++) {
    uintptr_t pc = (uintptr_t)frames[i];
    for (size_t k = 0; k < nmodules[t]; k++) {
      const os_crash_module *m = &modules[t][k];
      if (pc < m->start || pc >= m->end)
        continue;
      if (!header++)
        put("plugin frames (the plugin's own file, address in it):\n");
      snprintf(line, sizeof(line), "  #%d plugin %s: %s 0x%lx; resolve with: addr2line -f -e %s 0x%lx\n",
               i, m->name, m->file, (unsigned long)(pc - m->bias), m->file,
               (unsigned long)(pc - m->bias));
      put(line);
      break;
    }
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
  put_plugin_frames(frames, n);
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

void os_crash_set_modules(const os_crash_module *m, size_t n) {
  int w = !atomic_load(&live);
  if (n > OS_CRASH_MODULES_MAX)
    n = OS_CRASH_MODULES_MAX;
  memcpy(modules[w], m, n * sizeof(*m));
  nmodules[w] = n;
  atomic_store(&live, w);
}
