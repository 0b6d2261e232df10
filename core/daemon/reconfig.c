/* Comparison of the running config with the file on disk, key by key. What
 * applies live is compared with what is in force now (the process's log
 * level, each plugin's running config text and loaded file), so every SIGHUP
 * starts from the last one's outcome and a failed plugin reload is tried
 * again; what needs a restart is compared with the start-up config. */
#include "daemon/reconfig.h"

#include <string.h>

#include "base/log.h"

static int same_str(const char *a, const char *b) {
  return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

static int same_callbacks(const cfg_callbacks *a, const cfg_callbacks *b) {
  return same_str(a->on_load, b->on_load) && same_str(a->on_unload, b->on_unload) &&
         same_str(a->on_connected, b->on_connected) && same_str(a->on_recv, b->on_recv) &&
         same_str(a->on_send, b->on_send) && same_str(a->on_disconnected, b->on_disconnected) &&
         same_str(a->on_tick, b->on_tick) && same_str(a->on_message, b->on_message) &&
         same_str(a->on_node, b->on_node);
}

static int same_cluster(const cfg_cluster *a, const cfg_cluster *b) {
  if (!a || !b)
    return !a && !b;
  if (a->nnats != b->nnats || !same_str(a->node, b->node) ||
      !same_str(a->subject_prefix, b->subject_prefix) || a->heartbeat_ms != b->heartbeat_ms ||
      a->node_timeout_ms != b->node_timeout_ms || a->max_pending != b->max_pending ||
      a->max_pending_bytes != b->max_pending_bytes || a->reconnect_buffer != b->reconnect_buffer)
    return 0;
  for (size_t i = 0; i < a->nnats; i++)
    if (!same_str(a->nats[i], b->nats[i]))
      return 0;
  return 1;
}

/* Whether two listener entries are the same but for their TLS files (a
 * rotation, applied live). */
static int same_listener(const cfg_listener *a, const cfg_listener *b) {
  if (!same_str(a->address, b->address) || a->port != b->port ||
      !same_str(a->plugin, b->plugin) || a->framing != b->framing ||
      a->transport != b->transport || !a->tls_cert != !b->tls_cert ||
      a->handshake_timeout_ms != b->handshake_timeout_ms || !same_str(a->ws_path, b->ws_path) ||
      !same_str(a->static_root, b->static_root) || a->ping_interval_ms != b->ping_interval_ms ||
      a->norigins != b->norigins)
    return 0;
  for (size_t i = 0; i < a->norigins; i++)
    if (!same_str(a->origins[i], b->origins[i]))
      return 0;
  return 1;
}

static void refuse(const char *what) {
  log_warn("SIGHUP: %s changed: needs a restart; not applied", what);
}

int reconfig_apply(host *h, const cfg_server *cur) {
  cfg_server *nc;
  static char err[CFG_ERR_LEN]; /* main thread only */
  char msg[HOST_MSG_MAX];
  int rc = cfg_load_file(cur->path, &nc, err, sizeof(err));
  int plugins_same, listeners_same;

  log_info("SIGHUP: re-reading configuration %s", cur->path);
  if (rc < 0) {
    for (const char *line = err, *nl; *line; line = nl ? nl + 1 : "") {
      nl = strchr(line, '\n');
      log_error("SIGHUP: %.*s", nl ? (int)(nl - line) : (int)strlen(line), line);
    }
    log_error("SIGHUP: configuration %s is invalid; keeping the running configuration", cur->path);
    return rc;
  }
  listeners_same = nc->nlisteners == cur->nlisteners;
  if (nc->workers != cur->workers)
    refuse("workers");
  if (nc->io_backend != cur->io_backend)
    refuse("io_backend");
  if (nc->max_sessions != cur->max_sessions)
    refuse("max_sessions");
  if (!same_str(nc->admin_socket, cur->admin_socket))
    refuse("admin_socket");
  if (!same_str(nc->plugin_dir, cur->plugin_dir))
    refuse("plugin_dir");
  if (!same_str(nc->log_file, cur->log_file))
    refuse("log_file");
  if (nc->log_format != cur->log_format)
    refuse("log_format");
  if (!same_str(nc->metrics_address, cur->metrics_address) ||
      nc->metrics_port != cur->metrics_port)
    refuse("metrics");
  if (memcmp(&nc->limits, &cur->limits, sizeof(nc->limits)) != 0)
    refuse("limits");
  if (nc->drain_timeout_ms != cur->drain_timeout_ms)
    refuse("drain_timeout_ms");
  if (!same_str(nc->user, cur->user) || !same_str(nc->group, cur->group))
    refuse("user or group");
  if (!same_cluster(nc->cluster, cur->cluster))
    refuse("cluster");
  if (nc->nlisteners != cur->nlisteners) {
    refuse("listeners");
  } else {
    for (size_t i = 0; i < nc->nlisteners; i++) {
      const cfg_listener *a = &nc->listeners[i], *b = &cur->listeners[i];
      if (!same_listener(a, b)) {
        refuse("listeners");
        listeners_same = 0;
        break;
      }
    }
  }
  /* TLS listeners: the certificate and key are read again (a rotation),
   * unless the listeners changed otherwise (then nothing of them applies). */
  for (size_t i = 0; listeners_same && i < nc->nlisteners; i++) {
    const cfg_listener *a = &nc->listeners[i];
    if (!a->tls_cert)
      continue;
    if (host_reload_tls(h, i, a->tls_cert, a->tls_key, msg, sizeof(msg)) == 0)
      log_info("SIGHUP: listeners[%zu] %s:%u: certificate %s and key %s re-read", i,
               a->address, a->port, a->tls_cert, a->tls_key);
    else
      log_error("SIGHUP: listeners[%zu] %s:%u: %s; keeping the certificate in use", i,
                a->address, a->port, msg);
  }
  plugins_same = nc->nplugins == cur->nplugins;
  for (size_t i = 0; plugins_same && i < nc->nplugins; i++) {
    const cfg_plugin *a = &nc->plugins[i], *b = &cur->plugins[i];
    plugins_same = same_str(a->name, b->name) && same_str(a->resolved_path, b->resolved_path) &&
                   a->threading == b->threading && a->tick_ms == b->tick_ms &&
                   a->watch == b->watch && same_callbacks(&a->callbacks, &b->callbacks);
  }
  if (!plugins_same)
    refuse("the plugin list (names, paths, threading, callbacks, tick_ms or watch)");
  {
    log_level lvl, was = log_get_level();
    if (log_level_parse(cfg_log_level_name(nc->log_level), &lvl) == 0 && lvl != was) {
      /* Louder: switch first; quieter: say so, then switch. Either way the
       * line shows when info lines do before or after. */
      if (lvl > was)
        log_set_level(lvl);
      log_info("SIGHUP: log_level is now %s", cfg_log_level_name(nc->log_level));
      log_set_level(lvl);
    }
  }
  /* Plugins: a new file or a new "config" object is applied by reload. */
  for (size_t i = 0; plugins_same && i < nc->nplugins; i++) {
    const cfg_plugin *a = &nc->plugins[i];
    const char *running = host_plugin_config_json(h, a->name);
    int config_changed = running && strcmp(running, a->config_json) != 0;
    if (!config_changed && !host_plugin_file_changed(h, a->name))
      continue;
    if (host_reload(h, a->name, a->config_json, msg, sizeof(msg)) == 0)
      log_info("SIGHUP: %s", msg);
    else
      log_error("SIGHUP: %s", msg);
  }
  log_info("SIGHUP: configuration %s re-read", cur->path);
  cfg_free(nc);
  return 0;
}
