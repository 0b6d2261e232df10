/* Windows has no NOTIFY_SOCKET: a service there reports through the
 * service control manager, which pierd.exe does not speak (yet). */
#include "os/notify.h"

int os_notify_open(void) { return 0; }
int os_notify(const char *state) {
  (void)state;
  return 0;
}
unsigned os_notify_watchdog_ms(void) { return 0; }
void os_notify_close(void) {}
