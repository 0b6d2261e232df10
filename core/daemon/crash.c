/* The daemon's crash report: the platform part (os/crash.h) writes what
 * happened and a backtrace; this file keeps the plugin list it ends with
 * up to date, formatted beforehand, since the handler must not take the
 * host's locks. */
#include "daemon/crash.h"

#include <stdlib.h>

#include "os/crash.h"
#include "os/memout.h"

void crash_install(void) {
  os_crash_install("pierd");
  os_crash_set_note("plugins loaded:\n  (none loaded yet)\n");
}

void crash_note_plugins(host *h) {
  os_memout mo;
  char *text;
  size_t len;
  FILE *f = os_memout_open(&mo);
  if (!f)
    return;
  fputs("plugins loaded:\n", f);
  host_print_plugins(h, f);
  if (os_memout_close(&mo, &text, &len) < 0)
    return;
  os_crash_set_note(text); /* cut to OS_CRASH_NOTE_MAX - 1 bytes, as before */
  free(text);
}
