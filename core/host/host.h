/* The plugin host: turns a validated config into a running service. It loads
 * every plugin, calls on_load, binds each listener to its plugin and framing,
 * and routes session events to plugin callbacks (directly on the session's
 * worker, or through the plugin's strand for "serial" plugins). It fills the
 * pier_host function table plugins call back through, including timers. */
#ifndef PIER_HOST_HOST_H
#define PIER_HOST_HOST_H

#include <stdio.h>

#include "host/config.h"
#include "net/net.h"

typedef struct host host;

/* Loads and checks every plugin and creates the network (not started).
 * With check_only, on_load is not called and nothing listens. Returns 0 or a
 * negative errno; the reason is logged. */
int host_create(const cfg_server *cfg, const char *backend_override, int check_only,
                host **out);
/* Calls each plugin's on_load, binds the listeners and starts the workers.
 * On failure everything loaded is unloaded again and the reason is logged. */
int host_start(host *h);
/* Stops accepting, closes every session (each gets on_disconnected), runs
 * what the plugins still had queued, calls on_unload and unloads. */
void host_stop(host *h);
void host_destroy(host *h);

net *host_net(host *h);

/* Console/admin commands write their answer to out. */
void host_print_status(host *h, FILE *out);
void host_print_sessions(host *h, FILE *out);
void host_print_plugins(host *h, FILE *out);
/* Returns 0, or -ENOTCONN if no such session. */
int host_kick(host *h, pier_sid sid);

#endif
