/* Test plugin for the privilege drop and the service manager: on_load logs
 * the real and effective user and group ids it runs with ("whoami uid=U
 * euid=E gid=G egid=G") and the manager's variables it can see ("whoami env
 * NOTIFY_SOCKET=... WATCHDOG_USEC=...", "-" when unset), so a test sees what
 * plugin code gets; on_recv echoes (raw listeners). */
#include <stdlib.h>
#include <unistd.h>

#include "pier/plugin.h"

static const pier_host *host;

static int whoami_load(const pier_load_args *a) {
  host = a->host;
  host->log(host, PIER_LOG_INFO, "whoami uid=%u euid=%u gid=%u egid=%u", (unsigned)getuid(),
            (unsigned)geteuid(), (unsigned)getgid(), (unsigned)getegid());
  host->log(host, PIER_LOG_INFO, "whoami env NOTIFY_SOCKET=%s WATCHDOG_USEC=%s",
            getenv("NOTIFY_SOCKET") ? getenv("NOTIFY_SOCKET") : "-",
            getenv("WATCHDOG_USEC") ? getenv("WATCHDOG_USEC") : "-");
  return 0;
}

static void whoami_recv(pier_sid sid, const void *data, size_t len) {
  host->send(host, sid, data, len);
}

PIER_PLUGIN("whoami", "1.0.0", .on_load = whoami_load, .on_recv = whoami_recv);
