/* The daemon's crash report: the platform part (os/crash.h) writes what
 * happened and a backtrace; this file keeps the plugin list it ends with
 * and the plugins' code ranges (to name each plugin frame by the plugin's
 * own file) up to date, found beforehand, since the handler must not take
 * the host's or the dynamic loader's locks. */
#include "daemon/crash.h"

#include <stdlib.h>

#include "os/crash.h"
#include "os/memout.h"

void crash_install(void) {
  os_crash_install("pierd");
  os_crash_set_note("plugins loaded:\n  (none loaded yet)\n");
}

void crash_note_plugins(host *h) {
  static os_crash_module mods[OS_CRASH_MODULES_MAX]; /* main thread */
  size_t n = host_crash_modules(h, mods, OS_CRASH_MODULES_MAX);
  os_memout mo;
  char *text;
  size_t len;
  FILE *f;

  os_crash_set_modules(mods, n);
  f = os_memout_open(&mo);
  if (!f)
    return;
  fputs("plugins loaded:\n", f);
  host_print_plugins(h, f);
  if (os_memout_close(&mo, &text, &len) < 0)
    return;
  os_crash_set_note(text); /* cut to OS_CRASH_NOTE_MAX - 1 bytes, as before */
  free(text);
}
