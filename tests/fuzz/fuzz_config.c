/* Fuzz target for server.json loading (core/host/config.c): the input is the
 * file's text, loaded with cfg_load_text. Nothing is read from disk.
 *
 * On failure: a negative code, no configuration, and 1..CFG_MAX_ERRORS
 * non-empty error lines, each naming the file, plus at most one "... and N
 * more" line; the same call with a small error buffer must stay inside it
 * and give a prefix of the same report. On success: every documented range and cross reference holds,
 * each plugin's config is JSON text of an object, and cfg_free releases
 * everything (LeakSanitizer checks). */
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "host/config.h"

#define NAME "fuzz.json"

static int plugin_name_ok(const char *s) {
  size_t n = strlen(s);
  if (n < 1 || n > 32)
    return 0;
  for (size_t i = 0; i < n; i++) {
    char ch = s[i];
    if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
          ch == '_' || ch == '-'))
      return 0;
  }
  return 1;
}

static void check_config(const cfg_server *cfg) {
  FUZZ_CHECK(cfg->path && strcmp(cfg->path, NAME) == 0, "path \"%s\"",
             cfg->path ? cfg->path : "(null)");
  FUZZ_CHECK(cfg->base_dir != NULL, "no base_dir");
  FUZZ_CHECK(cfg->workers >= 1 && cfg->workers <= 64, "workers %u", cfg->workers);
  FUZZ_CHECK(cfg->max_sessions >= 1 && cfg->max_sessions <= 1000000, "max_sessions %u",
             cfg->max_sessions);
  FUZZ_CHECK(strcmp(cfg_backend_name(cfg->io_backend), "unknown") != 0, "io_backend %d",
             (int)cfg->io_backend);
  FUZZ_CHECK(strcmp(cfg_log_level_name(cfg->log_level), "unknown") != 0, "log_level %d",
             (int)cfg->log_level);
  FUZZ_CHECK(cfg->admin_socket && *cfg->admin_socket, "no admin_socket");
  FUZZ_CHECK(cfg->limits.max_packet_size >= 4 && cfg->limits.max_packet_size <= 65535,
             "max_packet_size %u", cfg->limits.max_packet_size);
  FUZZ_CHECK(cfg->limits.max_send_queue >= 1024 && cfg->limits.max_send_queue <= 1073741824,
             "max_send_queue %zu", cfg->limits.max_send_queue);
  FUZZ_CHECK(cfg->limits.idle_timeout_ms == 0 ||
                 (cfg->limits.idle_timeout_ms >= 100 && cfg->limits.idle_timeout_ms <= 86400000),
             "idle_timeout_ms %u", cfg->limits.idle_timeout_ms);
  FUZZ_CHECK(cfg->nplugins == 0 || cfg->plugins, "%zu plugins, no array", cfg->nplugins);
  FUZZ_CHECK(cfg->nlisteners == 0 || cfg->listeners, "%zu listeners, no array",
             cfg->nlisteners);

  for (size_t i = 0; i < cfg->nplugins; i++) {
    const cfg_plugin *p = &cfg->plugins[i];
    FUZZ_CHECK(p->name && plugin_name_ok(p->name), "plugins[%zu].name", i);
    for (size_t k = 0; k < i; k++)
      FUZZ_CHECK(strcmp(cfg->plugins[k].name, p->name) != 0,
                 "plugins[%zu] and plugins[%zu] are both \"%s\"", k, i, p->name);
    FUZZ_CHECK(p->path && *p->path, "plugins[%zu].path empty", i);
    FUZZ_CHECK(p->resolved_path && strchr(p->resolved_path, '/'),
               "plugins[%zu].resolved_path \"%s\" has no '/'", i,
               p->resolved_path ? p->resolved_path : "(null)");
    FUZZ_CHECK(strcmp(cfg_threading_name(p->threading), "unknown") != 0,
               "plugins[%zu].threading %d", i, (int)p->threading);
    FUZZ_CHECK(p->tick_ms <= 3600000, "plugins[%zu].tick_ms %u", i, p->tick_ms);
    FUZZ_CHECK(p->watch == 0 || p->watch == 1, "plugins[%zu].watch %d", i, p->watch);
    FUZZ_CHECK(p->config_json != NULL, "plugins[%zu].config_json is NULL", i);
    cJSON *j = cJSON_Parse(p->config_json);
    FUZZ_CHECK(j && cJSON_IsObject(j), "plugins[%zu].config_json is not an object: %s", i,
               p->config_json);
    cJSON_Delete(j);
  }
  for (size_t i = 0; i < cfg->nlisteners; i++) {
    const cfg_listener *l = &cfg->listeners[i];
    FUZZ_CHECK(l->address && *l->address, "listeners[%zu].address", i);
    FUZZ_CHECK(l->port <= 65535, "listeners[%zu].port %u", i, l->port);
    FUZZ_CHECK(l->plugin_index < cfg->nplugins, "listeners[%zu].plugin_index %zu of %zu", i,
               l->plugin_index, cfg->nplugins);
    FUZZ_CHECK(l->plugin && strcmp(l->plugin, cfg->plugins[l->plugin_index].name) == 0,
               "listeners[%zu].plugin \"%s\" is not plugins[%zu]", i,
               l->plugin ? l->plugin : "(null)", l->plugin_index);
    FUZZ_CHECK(strcmp(cfg_framing_name(l->framing), "unknown") != 0,
               "listeners[%zu].framing %d", i, (int)l->framing);
  }
}

int FUZZ_ENTRY(const uint8_t *data, size_t size) {
  static char err[CFG_ERR_LEN];
  cfg_server *cfg = NULL;
  const char *text = (const char *)data;
  int rc;

  memset(err, 'x', sizeof(err));
  rc = cfg_load_text(text, size, NAME, "/fuzz/base", &cfg, err, sizeof(err));
  if (rc == 0) {
    FUZZ_CHECK(cfg != NULL, "success without a configuration");
    check_config(cfg);
    cfg_free(cfg);
    return 0;
  }

  FUZZ_CHECK(rc < 0, "returned %d", rc);
  FUZZ_CHECK(cfg == NULL, "failure (%d) left a configuration", rc);
  FUZZ_CHECK(rc != -ENOMEM, "out of memory: %s", err);
  FUZZ_CHECK(memchr(err, '\0', sizeof(err)) != NULL, "error line not terminated");
  FUZZ_CHECK(err[0] != '\0', "no error line for %d", rc);
  FUZZ_CHECK(strchr(err, '\r') == NULL, "carriage return in the report: %s", err);
  size_t lines = 0, more = 0;
  for (const char *line = err, *nl; line; line = nl ? nl + 1 : NULL) {
    nl = strchr(line, '\n');
    size_t n = nl ? (size_t)(nl - line) : strlen(line);
    FUZZ_CHECK(n > strlen(NAME ":") && strncmp(line, NAME ":", strlen(NAME ":")) == 0,
               "error line %zu does not name the file: %s", lines, err);
    FUZZ_CHECK(n < CFG_ERR_LINE, "error line %zu is %zu bytes", lines, n);
    FUZZ_CHECK(!more, "a line after \"... and N more\": %s", err);
    if (strncmp(line, NAME ": ... and ", strlen(NAME ": ... and ")) == 0)
      more = 1;
    lines++;
  }
  FUZZ_CHECK(lines - more >= 1 && lines - more <= CFG_MAX_ERRORS, "%zu error lines", lines);
  FUZZ_CHECK(!more || lines == CFG_MAX_ERRORS + 1, "\"... and N more\" after %zu lines",
             lines - 1);

  /* Again into an error buffer of 1..64 bytes allocated to size: a message
   * is cut, never written past the end. */
  size_t small = 1 + (size_t)(fuzz_hash(data, size) % 64);
  char *e2 = malloc(small);
  FUZZ_CHECK(e2 != NULL, "out of memory");
  int rc2 = cfg_load_text(text, size, NAME, "/fuzz/base", &cfg, e2, small);
  FUZZ_CHECK(rc2 == rc && cfg == NULL, "second load returned %d, first %d", rc2, rc);
  FUZZ_CHECK(memchr(e2, '\0', small) != NULL, "cut error line not terminated");
  FUZZ_CHECK(strncmp(e2, err, strlen(e2)) == 0, "cut error \"%s\" is not a prefix of \"%s\"",
             e2, err);
  free(e2);
  return 0;
}
