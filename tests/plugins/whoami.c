/* Test plugin for the privilege drop: on_load logs the real and effective
 * user and group ids it runs with ("whoami uid=U euid=E gid=G egid=G"), so
 * a test sees what plugin code would get; on_recv echoes (raw listeners). */
#include <unistd.h>

#include "pier/plugin.h"

static const pier_host *host;

static int whoami_load(const pier_load_args *a) {
  host = a->host;
  host->log(host, PIER_LOG_INFO, "whoami uid=%u euid=%u gid=%u egid=%u", (unsigned)getuid(),
            (unsigned)geteuid(), (unsigned)getgid(), (unsigned)getegid());
  return 0;
}

static void whoami_recv(pier_sid sid, const void *data, size_t len) {
  host->send(host, sid, data, len);
}

PIER_PLUGIN("whoami", "1.0.0", .on_load = whoami_load, .on_recv = whoami_recv);
