/* The daemon's crash report: the platform part (os/crash.h) writes what
 * happened and a backtrace; this file keeps the plugin list it ends with
 * up to date, formatted beforehand, since the handler must not take the
 * host's locks. */
#include "daemon/crash.h"

#include "os/crash.h"

void crash_install(void) {
  os_crash_install("pierd");
  os_crash_set_note("plugins loaded:\n  (none loaded yet)\n");
}

void crash_note_plugins(host *h) {
  char buf[OS_CRASH_NOTE_MAX];
  FILE *f = os_memstream_open(buf, sizeof(buf));
  if (!f)
    return;
  fputs("plugins loaded:\n", f);
  host_print_plugins(h, f);
  os_crash_set_note((os_memstream_close(f, buf, sizeof(buf)), buf));
}
