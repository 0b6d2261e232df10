/* SIGHUP: re-read server.json, validate it completely, apply what can change
 * while running (log_level; a plugin's "config" and a changed plugin file,
 * both by hot reload) and refuse, with one log line each, what needs a
 * restart. An invalid file changes nothing. */
#ifndef PIER_DAEMON_RECONFIG_H
#define PIER_DAEMON_RECONFIG_H

#include "host/config.h"
#include "host/host.h"

/* Returns 0 when the new file was valid (whatever was applied), else a
 * negative errno. */
int reconfig_apply(host *h, const cfg_server *running);

#endif
