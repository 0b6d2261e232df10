/* The plugin host: turns a validated config into a running service. It loads
 * every plugin, calls on_load, binds each listener to its plugin and framing,
 * and routes session events to plugin callbacks (directly on the session's
 * worker, or through the plugin's strand for "serial" plugins). It fills the
 * pier_host function table plugins call back through, including timers. */
#ifndef PIER_HOST_HOST_H
#define PIER_HOST_HOST_H

#include <stdio.h>

#include "os/crash.h"

#include "host/config.h"
#include "net/net.h"

typedef struct host host;

/* Loads and checks every plugin and creates the network (not started).
 * With check_only, on_load is not called and nothing listens. Returns 0 or a
 * negative errno; the reason is logged. */
int host_create(const cfg_server *cfg, const char *backend_override, int check_only,
                host **out);
/* Binds the listeners, runs the bound hook (if set), calls each plugin's
 * on_load and starts the workers. On failure everything loaded is unloaded
 * again and the reason is logged. */
int host_start(host *h);
/* Called by host_start once every listener is bound and before any plugin's
 * on_load (pierd drops root there, so no plugin code runs with it). A
 * non-zero return (a negative errno, already logged) makes host_start fail
 * with it. */
typedef int (*host_bound_cb)(void *arg);
void host_set_bound_hook(host *h, host_bound_cb cb, void *arg);
/* Stops accepting, closes every session (each gets on_disconnected), runs
 * what the plugins still had queued, calls on_unload and unloads. */
void host_stop(host *h);
void host_destroy(host *h);

net *host_net(host *h);

/* Console/admin commands write their answer to out. */
void host_print_status(host *h, FILE *out);
void host_print_sessions(host *h, FILE *out);
void host_print_plugins(host *h, FILE *out);
/* The same as one line of JSON each (`status --json` etc.), for scripts:
 * status {"version","uptime_s","backend","workers","ready","draining",
 * "sessions":{open, accepted, refused_full, refused_per_ip, ...},
 * "listeners":[...], "plugins":[...]}; plugins [{"name","image","version",
 * "generation","threading","file","quarantined","failures","slow_callbacks",
 * "backlog_bytes","last_failure"}]; sessions [{"sid" (hex string),"plugin",
 * "peer"}]. Returns 0, or -ENOMEM (then nothing was written). */
int host_print_status_json(host *h, FILE *out);
int host_print_sessions_json(host *h, FILE *out);
int host_print_plugins_json(host *h, FILE *out);
/* Fills m with the code range of each loaded plugin and its own file (the
 * path server.json resolves to), for the crash report; returns how many
 * (at most max). Main thread. */
size_t host_crash_modules(host *h, os_crash_module *m, size_t max);
/* Hot reload: loads the plugin's file again, checks it, quiesces the running
 * version at a callback boundary (events that arrive are held, in order),
 * hands the old version's on_unload state to the new version's on_load, and
 * lets the held events through to the new version. Timers and posted jobs of
 * the old version are cancelled; per-session user data stays. On any failure
 * the old version keeps serving. config_json (or NULL to keep it) is what
 * the new on_load gets. One line for the operator goes to msg. Main thread;
 * one reload at a time. Returns 0 or a negative errno. */
int host_reload(host *h, const char *name, const char *config_json, char *msg, size_t len);
/* Room for any line host_reload writes to msg (the reason names the
 * plugin's path): what callers give it, and what `plugins` keeps of the
 * last failure. */
#define HOST_MSG_MAX 1536
/* Whether the plugin's file on disk differs from the one loaded. */
int host_plugin_file_changed(host *h, const char *name);
/* Main thread, started host. Re-reads the certificate and key of listener
 * i (a TLS one) from cert and key: new sessions use them, open ones keep
 * theirs; on failure nothing changes and msg says why, naming the file. */
int host_reload_tls(host *h, size_t i, const char *cert, const char *key, char *msg, size_t len);
const char *host_plugin_config_json(host *h, const char *name);

/* Returns 0, or -ENOTCONN if no such session. */
int host_kick(host *h, pier_sid sid);

/* ---- numbers for /metrics and `status --json` (stats.c) ----
 * Any thread; reading never blocks a worker: each value is a relaxed atomic
 * (per worker where workers write it), summed here. */

/* The callbacks timed per plugin, in this order (host_ev_callback names). */
#define HOST_CB_TYPES 10
/* Upper bounds of the latency histogram buckets, in seconds, ascending
 * (a last bucket, +Inf, is implied). */
#define HOST_LAT_BUCKETS 14
extern const double host_lat_bounds[HOST_LAT_BUCKETS];
/* "on_connected", "on_recv", "on_send", "on_disconnected", "on_tick",
 * "timer", "post", "on_message", "reply", "on_node": the callback label of
 * the latency histogram. */
const char *host_cb_label(unsigned type);

typedef struct host_latency {
  uint64_t bucket[HOST_LAT_BUCKETS + 1]; /* per bucket (not cumulative); last: +Inf */
  uint64_t count;
  uint64_t sum_ns;
} host_latency;

typedef struct host_plugin_stats {
  const char *name;     /* server.json name; valid while h lives */
  char version[64];     /* of the version serving now */
  char file[1024];      /* the plugin's own file (resolved path) */
  unsigned generation;
  int quarantined;
  unsigned failures, slow_calls;
  size_t backlog;       /* bytes of events held or queued for it */
  uint64_t sessions;    /* open now, all its listeners */
  host_latency latency[HOST_CB_TYPES];
  uint64_t reloads_ok, reloads_failed; /* failed: the old version kept serving */
  uint64_t reloads_rolled_back;        /* new on_load failed, old version restored */
  uint64_t reloads_quarantined;        /* the restore failed too */
  host_latency reload_pause;           /* how long events were held per reload */
} host_plugin_stats;

typedef struct host_listener_stats {
  char address[NET_ADDR_STRLEN]; /* "127.0.0.1:7777" as bound */
  const char *plugin;
  const char *transport;         /* "tcp", "websocket", "tls", "websocket+tls" */
  const char *framing;
  long open;                     /* sessions open now */
  uint64_t accepted;             /* that reached on_connected */
} host_listener_stats;

size_t host_plugin_count(const host *h);
size_t host_listener_count(const host *h);
void host_get_plugin_stats(host *h, size_t i, host_plugin_stats *out);
void host_get_listener_stats(host *h, size_t i, host_listener_stats *out);
/* Seconds since host_start. */
uint64_t host_uptime_s(host *h);

/* Readiness (/readyz): set once every listener is open (host_start), cleared
 * for good by host_set_draining (a stop request began). */
int host_ready(host *h);
void host_set_draining(host *h);
int host_draining(host *h);

/* Plugin metrics (pmetrics.c): every metric the plugins declared, in the
 * exposition format. */
void host_render_plugin_metrics(host *h, FILE *out);

#endif
