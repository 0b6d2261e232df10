/* A C version of cppprobe (same descriptor name) that keeps a per-session user pointer (into its
 * own image: it dangles once the image is unloaded). A reload into the C++
 * layer (cppprobe) must adopt its sessions without ever using that pointer.
 * OnConnected sends "c hello\n"; every message comes back as it came. */
#include <stddef.h>
#include <string.h>

#include "pier/plugin.h"

static const pier_host *g_host;
static unsigned char g_users[64][16];
static unsigned g_next;

static int cu_load(const pier_load_args *a) {
  g_host = a->host;
  memset(g_users, 0xab, sizeof(g_users));
  return 0;
}

static void cu_connected(pier_sid sid, const char *peer) {
  (void)peer;
  g_host->set_user(g_host, sid, g_users[g_next++ % 64]);
  g_host->send(g_host, sid, "c hello\n", 8);
}

static void cu_recv(pier_sid sid, const void *data, size_t len) {
  g_host->send(g_host, sid, data, len);
}

PIER_PLUGIN("cppprobe", "0.9.0", .on_load = cu_load, .on_connected = cu_connected,
            .on_recv = cu_recv);
