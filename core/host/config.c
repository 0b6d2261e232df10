/* Loading of server.json: cJSON checks the syntax, this file walks the
 * document section by section and holds the public API. Each object's keys are
 * matched against a fixed list, then every value is checked for type and range,
 * then cross references (listener -> plugin, uniqueness, plugin_dir) are
 * resolved; a problem does not stop the check, which goes on like a compiler
 * with what is left (a bad value keeps its default, a bad entry is skipped by
 * the checks that need it). config_entries.c checks the plugin and listener
 * entries, config_report.c collects the problems and reports up to
 * CFG_MAX_ERRORS of them in the order their values appear in the file. */
#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif

#include "host/config_internal.h"

#include <cjson/cJSON.h>
#include <errno.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/bus.h"
#include "os/os.h"
#include "os/path.h"

#define MAX_SOCKET_PATH 107 /* sun_path holds 108 bytes with the NUL */
#define SNIPPET_BYTES 16    /* bytes shown after "syntax error near" */

#define ENUM_NAME(id, str) [id] = str,
static const char *const backend_names[] = {CFG_BACKEND_MAP(ENUM_NAME)};
const char *const cfg_framing_names[] = {CFG_FRAMING_MAP(ENUM_NAME)};
const char *const cfg_transport_names[] = {CFG_TRANSPORT_MAP(ENUM_NAME)};
const char *const cfg_threading_names[] = {CFG_THREADING_MAP(ENUM_NAME)};
static const char *const log_level_names[] = {CFG_LOG_LEVEL_MAP(ENUM_NAME)};
static const char *const log_format_names[] = {CFG_LOG_FORMAT_MAP(ENUM_NAME)};
#undef ENUM_NAME

/* ---- top level --------------------------------------------------------- */

static int parse_limits(ctx *c, const cJSON *v, cfg_limits *lim) {
  /* Every limit: key, range, whether 0 (off) is allowed besides, and its
   * field (an unsigned or a size_t). */
  const struct {
    const char *key;
    unsigned long long lo, hi;
    int zero_ok;
    unsigned *u;
    size_t *z;
  } limits[] = {
      {"max_packet_size", 4, 65535, 0, &lim->max_packet_size, NULL},
      {"max_send_queue", 1024, 1073741824, 0, NULL, &lim->max_send_queue},
      {"idle_timeout_ms", 100, 86400000, 1, &lim->idle_timeout_ms, NULL},
      {"packet_timeout_ms", 100, 3600000, 1, &lim->packet_timeout_ms, NULL},
      {"max_conns_per_ip", 1, 1000000, 1, &lim->max_conns_per_ip, NULL},
      {"slow_callback_ms", 1, 600000, 1, &lim->slow_callback_ms, NULL},
      {"quarantine_after", 1, 1000000, 1, &lim->quarantine_after, NULL},
      {"send_timeout_ms", 100, 3600000, 1, &lim->send_timeout_ms, NULL},
      {"recv_backlog", 4096, 16777216, 0, NULL, &lim->recv_backlog},
      {"plugin_backlog", 65536, 1073741824, 0, NULL, &lim->plugin_backlog},
  };
  const char *keys[COUNT(limits)];
  const cJSON *f[COUNT(limits)];
  int rc;
  if (!cJSON_IsObject(v))
    return cfgr_expect(c, v, "an object");
  for (size_t k = 0; k < COUNT(limits); k++)
    keys[k] = limits[k].key;
  rc = cfgr_match_keys(c, v, keys, COUNT(keys), f);
  for (size_t k = 0; k < COUNT(limits); k++) {
    unsigned long long x;
    if (!f[k])
      continue;
    mark save = cfgr_path_node(c, limits[k].key, f[k]);
    int r = cfge_get_uint(c, f[k], limits[k].lo, limits[k].hi, limits[k].zero_ok, &x);
    rc = cfgr_first(rc, r);
    if (r == 0 && limits[k].u)
      *limits[k].u = (unsigned)x;
    else if (r == 0)
      *limits[k].z = (size_t)x;
    cfgr_path_pop(c, save);
  }
  return rc;
}

enum { S_WORKERS, S_BACKEND, S_SESSIONS, S_LOG, S_ADMIN, S_LIMITS, S_PLUGINS,
       S_LISTENERS, S_PLUGIN_DIR, S_METRICS, S_LOG_FILE, S_LOG_FORMAT, S_USER, S_GROUP,
       S_DRAIN, S_CLUSTER, S_N };
static const char *const server_keys[S_N] = {
    "workers", "io_backend", "max_sessions", "log_level",
    "admin_socket", "limits", "plugins", "listeners", "plugin_dir", "metrics",
    "log_file", "log_format", "user", "group", "drain_timeout_ms", "cluster"};

/* "metrics": {"address": "127.0.0.1", "port": 9100}; both keys optional. */
static int parse_metrics(ctx *c, const cJSON *v, cfg_server *cfg) {
  static const char *const keys[] = {"address", "port"};
  const cJSON *f[COUNT(keys)];
  const char *a = "127.0.0.1";
  unsigned char bin[16];
  int rc;
  mark save;
  if (!cJSON_IsObject(v))
    return cfgr_expect(c, v, "an object");
  rc = cfgr_match_keys(c, v, keys, COUNT(keys), f);
  save = cfgr_path_node(c, "address", f[0]);
  if (f[0]) {
    a = cJSON_IsString(f[0]) ? f[0]->valuestring : NULL;
    if (!a || (inet_pton(AF_INET, a, bin) != 1 && inet_pton(AF_INET6, a, bin) != 1)) {
      rc = cfgr_first(rc, cfgr_expect(c, f[0], "an IPv4 or IPv6 address literal"));
      a = "127.0.0.1";
    }
  }
  cfgr_path_pop(c, save);
  if (!(cfg->metrics_address = strdup(a)))
    return cfgr_oom(c);
  save = cfgr_path_node(c, "port", f[1]);
  rc = cfgr_first(rc, cfge_get_unsigned(c, f[1], 0, 65535, 0, &cfg->metrics_port));
  cfgr_path_pop(c, save);
  return rc;
}

/* ---- "cluster" ---- */

static int name_char(char ch) {
  return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
         ch == '_' || ch == '-';
}

/* [A-Za-z0-9_-]{1,max} tokens, joined by '.' when dots is set. */
static int is_token_list(const char *s, size_t max, int dots) {
  size_t n = strlen(s), tok = 0;
  if (n == 0 || n > max)
    return 0;
  for (size_t i = 0; i < n; i++) {
    if (dots && s[i] == '.') {
      if (tok == 0)
        return 0;
      tok = 0;
    } else if (name_char(s[i])) {
      tok++;
    } else {
      return 0;
    }
  }
  return tok > 0;
}

/* nats://host[:port] with a host of letters, digits, '.', '-', '_', or an
 * IPv6 literal in brackets; at most 256 bytes. */
static int is_nats_url(const char *s) {
  const char *h, *end;
  if (strlen(s) > 256 || strncmp(s, "nats://", 7) != 0)
    return 0;
  h = s + 7;
  if (*h == '[') {
    end = strchr(h, ']');
    if (!end || end == h + 1)
      return 0;
    for (const char *q = h + 1; q < end; q++)
      if (!(*q == ':' || *q == '.' || (*q >= '0' && *q <= '9') || (*q >= 'a' && *q <= 'f') ||
            (*q >= 'A' && *q <= 'F')))
        return 0;
    end++;
  } else {
    end = h;
    while (*end && (name_char(*end) || *end == '.'))
      end++;
    if (end == h)
      return 0;
  }
  if (*end == ':') {
    unsigned long port = 0;
    const char *d = end + 1;
    if (!*d)
      return 0;
    for (; *d >= '0' && *d <= '9' && port <= 65535; d++)
      port = port * 10 + (unsigned long)(*d - '0');
    return *d == '\0' && port >= 1 && port <= 65535;
  }
  return *end == '\0';
}

static int parse_cluster(ctx *c, const cJSON *v, cfg_server *cfg) {
  enum { K_NATS, K_NODE, K_PREFIX, K_HEARTBEAT, K_TIMEOUT, K_PENDING, K_PENDING_BYTES,
         K_RECONNECT, K_N };
  static const char *const keys[K_N] = {"nats", "node", "subject_prefix", "heartbeat_ms",
                                         "node_timeout_ms", "max_pending", "max_pending_bytes",
                                         "reconnect_buffer"};
  const cJSON *f[K_N];
  cfg_cluster *cl;
  unsigned long long big;
  int rc;
  mark save;

  if (!cJSON_IsObject(v))
    return cfgr_expect(c, v, "an object");
  if (!bus_available())
    return cfgr_fail(c, -ENOTSUP, "this pierd was built without a NATS client");
  if (!(cl = calloc(1, sizeof(*cl))))
    return cfgr_oom(c);
  cfg->cluster = cl;
  cl->heartbeat_ms = 1000;
  cl->node_timeout_ms = 3000;
  cl->max_pending = 65536;
  cl->max_pending_bytes = 67108864;
  cl->reconnect_buffer = 8388608;
  rc = cfgr_match_keys(c, v, keys, K_N, f);
  rc = cfgr_first(rc, cfgr_require(c, f, keys, K_NATS));
  rc = cfgr_first(rc, cfgr_require(c, f, keys, K_NODE));

  save = cfgr_path_node(c, "nats", f[K_NATS]);
  if (f[K_NATS]) {
    int n = cJSON_IsArray(f[K_NATS]) ? cJSON_GetArraySize(f[K_NATS]) : -1;
    if (n < 1 || n > 16) {
      rc = cfgr_first(rc, cfgr_expect(c, f[K_NATS], "an array of 1..16 \"nats://host:port\" URLs"));
    } else if (!(cl->nats = calloc((size_t)n, sizeof(char *)))) {
      cfgr_path_pop(c, save);
      return cfgr_oom(c);
    } else {
      for (int i = 0; i < n; i++) {
        const cJSON *u = cJSON_GetArrayItem(f[K_NATS], i);
        mark s2 = cfgr_path_index(c, (size_t)i, u);
        if (!cJSON_IsString(u) || !u->valuestring || !is_nats_url(u->valuestring)) {
          rc = cfgr_first(rc, cfgr_expect(c, u, "a URL \"nats://host:port\""));
        } else if (!(cl->nats[cl->nnats++] = strdup(u->valuestring))) {
          cfgr_path_pop(c, s2);
          cfgr_path_pop(c, save);
          return cfgr_oom(c);
        }
        cfgr_path_pop(c, s2);
      }
    }
  }
  cfgr_path_pop(c, save);

  save = cfgr_path_node(c, "node", f[K_NODE]);
  if (f[K_NODE]) {
    if (!cJSON_IsString(f[K_NODE]) || !f[K_NODE]->valuestring ||
        !is_token_list(f[K_NODE]->valuestring, 32, 0))
      rc = cfgr_first(rc, cfgr_expect(c, f[K_NODE], "a node name of 1..32 characters "
                                                     "[A-Za-z0-9_-]"));
    else if (!(cl->node = strdup(f[K_NODE]->valuestring)))
      rc = cfgr_oom(c);
  }
  cfgr_path_pop(c, save);

  save = cfgr_path_node(c, "subject_prefix", f[K_PREFIX]);
  if (f[K_PREFIX] && (!cJSON_IsString(f[K_PREFIX]) || !f[K_PREFIX]->valuestring ||
                      !is_token_list(f[K_PREFIX]->valuestring, 64, 1)))
    rc = cfgr_first(rc, cfgr_expect(c, f[K_PREFIX], "1..64 characters: tokens of "
                                                     "[A-Za-z0-9_-] joined by '.'"));
  else if (!(cl->subject_prefix = strdup(f[K_PREFIX] ? f[K_PREFIX]->valuestring : "pier")))
    rc = cfgr_oom(c);
  cfgr_path_pop(c, save);

  save = cfgr_path_node(c, "heartbeat_ms", f[K_HEARTBEAT]);
  rc = cfgr_first(rc, cfge_get_unsigned(c, f[K_HEARTBEAT], 50, 60000, 0, &cl->heartbeat_ms));
  cfgr_path_pop(c, save);
  save = cfgr_path_node(c, "node_timeout_ms", f[K_TIMEOUT]);
  rc = cfgr_first(rc, cfge_get_unsigned(c, f[K_TIMEOUT], cl->heartbeat_ms + 1, 600000, 0,
                                        &cl->node_timeout_ms));
  if (!f[K_TIMEOUT] && cl->node_timeout_ms <= cl->heartbeat_ms)
    cl->node_timeout_ms = cl->heartbeat_ms * 3;
  cfgr_path_pop(c, save);
  save = cfgr_path_node(c, "max_pending", f[K_PENDING]);
  rc = cfgr_first(rc, cfge_get_unsigned(c, f[K_PENDING], 1, 10000000, 0, &cl->max_pending));
  cfgr_path_pop(c, save);
  save = cfgr_path_node(c, "max_pending_bytes", f[K_PENDING_BYTES]);
  big = cl->max_pending_bytes;
  rc = cfgr_first(rc, cfge_get_uint(c, f[K_PENDING_BYTES], 1024, 1073741824, 0, &big));
  cl->max_pending_bytes = (size_t)big;
  cfgr_path_pop(c, save);
  save = cfgr_path_node(c, "reconnect_buffer", f[K_RECONNECT]);
  big = cl->reconnect_buffer;
  rc = cfgr_first(rc, cfge_get_uint(c, f[K_RECONNECT], 1024, 1073741824, 0, &big));
  cl->reconnect_buffer = (size_t)big;
  cfgr_path_pop(c, save);
  return c->oom ? -ENOMEM : rc;
}

static const char *printable(const char *in, char *out, size_t len) {
  size_t k = 0;
  for (; *in && k + 1 < len; in++)
    out[k++] = (unsigned char)*in < 0x20 || *in == 0x7f ? '?' : *in;
  out[k] = '\0';
  return out;
}

/* With plugin_dir set, each plugin file must lie in that directory or below
 * it once every symbolic link and ".." is resolved: the file's own path when
 * it exists (a link to a file elsewhere is refused, a link that stays inside
 * is fine), else its directory's (the file may not exist yet; the loader
 * checks again what it opens). nodes[i] is plugins[i]'s object. */
static int check_plugin_dir(ctx *c, cfg_server *cfg, const cJSON *arr,
                            const cJSON *const *nodes) {
  char dir[OS_PATH_MAX], real[OS_PATH_MAX], tmp[OS_PATH_MAX], shown[OS_PATH_MAX],
      where[OS_PATH_MAX];
  int rc = 0;
  mark save;
  if (!cfg->plugin_dir)
    return 0;
  int e = -os_realpath(cfg->plugin_dir, dir, sizeof(dir));
  if (e) {
    save = cfgr_path_root(c);
    cfgr_path_key(c, "plugin_dir");
    rc = cfgr_fail(c, -ENOENT, "directory %s: %s", printable(cfg->plugin_dir, shown, sizeof(shown)),
                   os_strerror(e));
    cfgr_path_pop(c, save);
    return rc;
  }
  if (!(cfg->plugin_dir_real = strdup(dir)))
    return cfgr_oom(c);
  for (size_t i = 0; i < cfg->nplugins; i++) {
    cfg_plugin *p = &cfg->plugins[i];
    p->confine_dir = cfg->plugin_dir_real;
    if (!p->resolved_path)
      continue; /* its path was reported */
    save = cfgr_path_root(c);
    cfgr_path_node(c, "plugins", arr);
    cfgr_path_index(c, i, nodes[i]);
    cfgr_path_node(c, "path", cfgr_member(nodes[i], "path"));
    e = -os_realpath(p->resolved_path, real, sizeof(real));
    int exists = e == 0;
    if (!exists && e != ENOENT) {
      rc = cfgr_first(rc, cfgr_fail(c, -e, "cannot resolve %s: %s",
                                    printable(p->resolved_path, shown, sizeof(shown)),
                                    os_strerror(e)));
    } else {
      if (!exists) {
        size_t n = os_path_dir_len(p->resolved_path);
        snprintf(tmp, sizeof(tmp), "%.*s", (int)n, n ? p->resolved_path : ".");
        e = -os_realpath(tmp, real, sizeof(real));
      }
      if (!exists && e)
        rc = cfgr_first(rc, cfgr_fail(c, -ENOENT, "directory of %s: %s",
                                      printable(p->resolved_path, shown, sizeof(shown)),
                                      os_strerror(e)));
      else if (!os_path_inside(real, dir))
        rc = cfgr_first(rc, cfgr_fail(c, -EPERM, "\"%s\" %s %s, outside plugin_dir (%s)",
                                      printable(p->path, shown, sizeof(shown)),
                                      exists ? "resolves to" : "is in",
                                      printable(real, tmp, sizeof(tmp)),
                                      printable(dir, where, sizeof(where))));
    }
    cfgr_path_pop(c, save);
  }
  return rc;
}

/* A non-empty array, its length in *n; reported otherwise. */
static int get_array(ctx *c, const cJSON *v, size_t *n) {
  *n = 0;
  if (!cJSON_IsArray(v) || !v->child)
    return cfgr_expect(c, v, "a non-empty array");
  for (const cJSON *it = v->child; it; it = it->next)
    (*n)++;
  return 0;
}

static int parse_plugins(ctx *c, const cJSON *arr, cfg_server *cfg, int *names_known) {
  const cJSON **nodes;
  size_t i, n;
  int rc;
  const cJSON *it;
  *names_known = 0;
  if ((rc = get_array(c, arr, &n)))
    return rc;
  cfg->plugins = calloc(n, sizeof *cfg->plugins);
  nodes = calloc(n, sizeof *nodes);
  if (!cfg->plugins || !nodes) {
    free(nodes);
    return cfgr_oom(c);
  }
  cfg->nplugins = n;
  *names_known = 1;
  for (i = 0, it = arr->child; it && !c->oom; it = it->next, i++) {
    cfg_plugin *p = &cfg->plugins[i];
    p->threading = CFG_THREADING_SESSION;
    nodes[i] = it;
    mark save = cfgr_path_index(c, i, it);
    rc = cfgr_first(rc, cfge_parse_plugin(c, it, p));
    cfgr_path_pop(c, save);
    if (!p->name)
      *names_known = 0;
  }
  if (!c->oom)
    rc = cfgr_first(rc, cfge_check_plugin_names(c, cfg, arr, nodes));
  if (!c->oom)
    rc = cfgr_first(rc, check_plugin_dir(c, cfg, arr, nodes));
  free(nodes);
  return c->oom ? -ENOMEM : rc;
}

static int parse_listeners(ctx *c, const cJSON *arr, cfg_server *cfg, int names_known) {
  const cJSON **nodes;
  plugin_names names = {.known = names_known};
  uref *refs, *pnames;
  size_t i, n, nok = 0;
  int rc;
  const cJSON *it;
  if ((rc = get_array(c, arr, &n)))
    return rc;
  cfg->listeners = calloc(n, sizeof *cfg->listeners);
  refs = calloc(n, sizeof *refs);
  nodes = calloc(n, sizeof *nodes);
  pnames = cfge_plugin_refs(cfg, &names.n);
  names.refs = pnames;
  if (!cfg->listeners || !refs || !nodes || !pnames) {
    free(refs);
    free(nodes);
    free(pnames);
    return cfgr_oom(c);
  }
  for (i = 0, it = arr->child; it && !c->oom; it = it->next, i++) {
    int ok;
    cfg->nlisteners = i + 1;
    cfg->listeners[i].framing = CFG_FRAMING_RAW;
    cfg->listeners[i].handshake_timeout_ms = 10000;
    cfg->listeners[i].ping_interval_ms = 30000;
    nodes[i] = it;
    refs[nok].index = i;
    mark save = cfgr_path_index(c, i, it);
    rc = cfgr_first(rc, cfge_parse_listener(c, it, cfg, &names, &cfg->listeners[i], &refs[nok],
                                            &ok));
    cfgr_path_pop(c, save);
    if (ok)
      nok++;
    else
      memset(&refs[nok], 0, sizeof refs[nok]);
  }
  if (!c->oom)
    rc = cfgr_first(rc, cfge_check_listener_addresses(c, cfg, refs, nok, arr, nodes));
  free(refs);
  free(nodes);
  free(pnames);
  return c->oom ? -ENOMEM : rc;
}

/* "user" / "group": an account name, looked up when pierd starts (the
 * config is checked on machines that may not have it). Windows has no such
 * switch for a running process, so the keys are refused there. */
static int parse_account(ctx *c, const cJSON *v, const char *key, const char *what,
                         char **out) {
  mark save = cfgr_path_node(c, key, v);
  int rc;
#ifdef _WIN32
  rc = v ? cfgr_fail(c, -EINVAL, "not supported on Windows (run pierd.exe under the "
                                 "account it should use)")
         : 0;
  (void)what;
  (void)out;
#else
  rc = cfge_get_string(c, v, what, out);
#endif
  cfgr_path_pop(c, save);
  return rc;
}

/* A path value (or dflt when absent; NULL: none) joined to the config file's
 * directory into *out. Returns the check's result; c->oom when out of memory. */
static int get_path(ctx *c, const cJSON *v, const char *what, const char *dflt, char **out) {
  char *raw = NULL;
  int r = cfge_get_string(c, v, what, &raw);
  if (r < 0 || c->oom || (!raw && !dflt))
    return r;
  *out = cfge_resolve(c->base_dir, raw ? raw : dflt);
  free(raw);
  return *out ? 0 : cfgr_oom(c);
}

static int parse_server(ctx *c, const cJSON *root, cfg_server *cfg) {
  const cJSON *f[S_N];
  int rc, r, e, names_known = 0;
  mark save;
  if (!cJSON_IsObject(root))
    return cfgr_expect(c, root, "an object at the top level");
  rc = cfgr_match_keys(c, root, server_keys, S_N, f);
  rc = cfgr_first(rc, cfgr_require(c, f, server_keys, S_PLUGINS));
  rc = cfgr_first(rc, cfgr_require(c, f, server_keys, S_LISTENERS));

  save = cfgr_path_node(c, "workers", f[S_WORKERS]);
  rc = cfgr_first(rc, cfge_get_unsigned(c, f[S_WORKERS], 1, 64, 0, &cfg->workers));
  cfgr_path_pop(c, save);

  save = cfgr_path_node(c, "io_backend", f[S_BACKEND]);
  e = (int)cfg->io_backend;
  rc = cfgr_first(rc, cfge_get_enum(c, f[S_BACKEND], backend_names, COUNT(backend_names), &e));
  cfg->io_backend = (cfg_backend)e;
  cfgr_path_pop(c, save);

  save = cfgr_path_node(c, "max_sessions", f[S_SESSIONS]);
  rc = cfgr_first(rc, cfge_get_unsigned(c, f[S_SESSIONS], 1, 1000000, 0, &cfg->max_sessions));
  cfgr_path_pop(c, save);

  save = cfgr_path_node(c, "log_level", f[S_LOG]);
  e = (int)cfg->log_level;
  rc = cfgr_first(rc, cfge_get_enum(c, f[S_LOG], log_level_names, COUNT(log_level_names), &e));
  cfg->log_level = (cfg_log_level)e;
  cfgr_path_pop(c, save);

  save = cfgr_path_node(c, "log_format", f[S_LOG_FORMAT]);
  e = (int)cfg->log_format;
  rc = cfgr_first(rc, cfge_get_enum(c, f[S_LOG_FORMAT], log_format_names,
                                    COUNT(log_format_names), &e));
  cfg->log_format = (cfg_log_format)e;
  cfgr_path_pop(c, save);

  save = cfgr_path_node(c, "log_file", f[S_LOG_FILE]);
  r = get_path(c, f[S_LOG_FILE], "file path", NULL, &cfg->log_file);
  if (c->oom)
    return -ENOMEM;
  rc = cfgr_first(rc, r);
  cfgr_path_pop(c, save);

  save = cfgr_path_node(c, "admin_socket", f[S_ADMIN]);
  r = get_path(c, f[S_ADMIN], "unix socket path", "run/pierd.sock", &cfg->admin_socket);
  if (c->oom)
    return -ENOMEM;
  rc = cfgr_first(rc, r);
  if (r == 0) {
    if (strlen(cfg->admin_socket) > MAX_SOCKET_PATH)
      rc = cfgr_first(rc, cfgr_fail(c, -ENAMETOOLONG,
                                    "path too long for a unix socket once resolved "
                                    "(%zu bytes, at most %d)", strlen(cfg->admin_socket),
                                    MAX_SOCKET_PATH));
  }
  cfgr_path_pop(c, save);

  save = cfgr_path_node(c, "plugin_dir", f[S_PLUGIN_DIR]);
  r = get_path(c, f[S_PLUGIN_DIR], "directory path", NULL, &cfg->plugin_dir);
  if (c->oom)
    return -ENOMEM;
  rc = cfgr_first(rc, r);
  cfgr_path_pop(c, save);

  save = cfgr_path_node(c, "drain_timeout_ms", f[S_DRAIN]);
  rc = cfgr_first(rc, cfge_get_unsigned(c, f[S_DRAIN], 0, 3600000, 1, &cfg->drain_timeout_ms));
  cfgr_path_pop(c, save);

  rc = cfgr_first(rc, parse_account(c, f[S_USER], "user", "user name", &cfg->user));
  rc = cfgr_first(rc, parse_account(c, f[S_GROUP], "group", "group name", &cfg->group));
  if (c->oom)
    return -ENOMEM;

  if (f[S_LIMITS]) {
    save = cfgr_path_node(c, "limits", f[S_LIMITS]);
    rc = cfgr_first(rc, parse_limits(c, f[S_LIMITS], &cfg->limits));
    cfgr_path_pop(c, save);
  }

  if (f[S_METRICS]) {
    save = cfgr_path_node(c, "metrics", f[S_METRICS]);
    rc = cfgr_first(rc, parse_metrics(c, f[S_METRICS], cfg));
    cfgr_path_pop(c, save);
    if (c->oom)
      return -ENOMEM;
  }

  if (f[S_CLUSTER]) {
    save = cfgr_path_node(c, "cluster", f[S_CLUSTER]);
    rc = cfgr_first(rc, parse_cluster(c, f[S_CLUSTER], cfg));
    cfgr_path_pop(c, save);
    if (c->oom)
      return -ENOMEM;
  }

  if (f[S_PLUGINS]) {
    save = cfgr_path_node(c, "plugins", f[S_PLUGINS]);
    rc = cfgr_first(rc, parse_plugins(c, f[S_PLUGINS], cfg, &names_known));
    cfgr_path_pop(c, save);
  } else if (cfg->plugin_dir) {
    rc = cfgr_first(rc, check_plugin_dir(c, cfg, NULL, NULL)); /* is the directory there? */
  }
  if (c->oom)
    return -ENOMEM;

  if (f[S_LISTENERS]) {
    save = cfgr_path_node(c, "listeners", f[S_LISTENERS]);
    rc = cfgr_first(rc, parse_listeners(c, f[S_LISTENERS], cfg, names_known));
    cfgr_path_pop(c, save);
  }
  return c->oom ? -ENOMEM : rc;
}

/* ---- text -------------------------------------------------------------- */

static int is_ws(char ch) {
  return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r';
}

/* Reports a problem at byte pos of text as "<name>:<line>:<col>: <what>". */
static int fail_at(ctx *c, const char *text, size_t len, size_t skip,
                   size_t pos, const char *what) {
  size_t line = 1, bol = skip;
  for (size_t i = 0; i < pos && i < len; i++)
    if (text[i] == '\n')
      line++, bol = i + 1;
  char msg[CFG_ERR_LINE];
  snprintf(msg, sizeof msg, "%s:%zu:%zu: %s", c->name, line, pos - bol + 1, what);
  c->at = NULL; /* before everything else in the file */
  return cfgr_add_error(c, -EINVAL, msg);
}

static int syntax_error(ctx *c, const char *text, size_t len, size_t skip,
                        size_t pos) {
  char snippet[128], what[160];
  size_t n = 0, show = cfgr_cut_len(text + pos, len - pos, SNIPPET_BYTES);
  snippet[0] = '\0';
  for (size_t i = 0; i < show; i++) {
    unsigned char ch = (unsigned char)text[pos + i];
    char tmp[8];
    if (ch == '\n') strcpy(tmp, "\\n");
    else if (ch == '\r') strcpy(tmp, "\\r");
    else if (ch == '\t') strcpy(tmp, "\\t");
    else if (ch == '\0') strcpy(tmp, "\\0");
    else if (ch < 0x20 || ch == 0x7f) snprintf(tmp, sizeof tmp, "\\x%02x", ch);
    else tmp[0] = (char)ch, tmp[1] = '\0';
    size_t tl = strlen(tmp);
    if (n + tl >= sizeof snippet)
      break;
    memcpy(snippet + n, tmp, tl + 1);
    n += tl;
  }
  if (pos >= len)
    snprintf(what, sizeof what, "syntax error at end of file");
  else
    snprintf(what, sizeof what, "syntax error near '%s'", snippet);
  return fail_at(c, text, len, skip, pos, what);
}

/* Parses text (NUL-terminated at len) into *root, rejecting what cJSON lets
 * through: trailing content, NUL bytes and "\u0000" escapes. */
static int parse_json(ctx *c, const char *text, size_t len, cJSON **root) {
  size_t skip = 0, pos;
  if (len >= 3 && memcmp(text, "\xEF\xBB\xBF", 3) == 0)
    skip = 3; /* UTF-8 byte order mark */
  for (pos = skip; pos < len && is_ws(text[pos]); pos++)
    ;
  if (pos == len)
    return cfgr_fail(c, -EINVAL, "empty file");

  const char *nulp = memchr(text, '\0', len);
  size_t nul = nulp ? (size_t)(nulp - text) : len;
  const char *end = NULL;
  *root = cJSON_ParseWithLengthOpts(text + skip, len - skip, &end, 0);
  pos = end ? (size_t)(end - text) : skip;
  if (pos > len)
    pos = len;
  if (!*root)
    return syntax_error(c, text, len, skip, nul < pos ? nul : pos);
  while (pos < len && is_ws(text[pos]))
    pos++;
  if (nul < pos)
    pos = nul;
  if (pos < len)
    return syntax_error(c, text, len, skip, pos);
  /* The document is valid JSON, so every backslash starts an escape in a
   * string. */
  for (size_t i = skip; i + 1 < len; i++) {
    if (text[i] != '\\')
      continue;
    if (i + 5 < len && memcmp(text + i + 1, "u0000", 5) == 0)
      return fail_at(c, text, len, skip, i,
                     "\"\\u0000\" (NUL) is not allowed in strings");
    i++;
  }
  return 0;
}

/* ---- public ------------------------------------------------------------ */

void cfg_free(cfg_server *cfg) {
  if (!cfg)
    return;
  for (size_t i = 0; i < cfg->nplugins && cfg->plugins; i++) {
    cfg_plugin *p = &cfg->plugins[i];
    free(p->name);
    free(p->path);
    free(p->resolved_path);
    for (size_t k = 0; k < COUNT(cfge_callback_keys); k++)
      free(*cfge_callback_slot(&p->callbacks, k));
    free(p->config_json); /* cJSON's default allocator is malloc */
  }
  for (size_t i = 0; i < cfg->nlisteners && cfg->listeners; i++) {
    cfg_listener *l = &cfg->listeners[i];
    free(l->address);
    free(l->plugin);
    free(l->tls_cert);
    free(l->tls_key);
    free(l->ws_path);
    for (size_t k = 0; k < l->norigins; k++)
      free(l->origins[k]);
    free(l->origins);
    free(l->static_dir);
    free(l->static_root);
  }
  free(cfg->plugins);
  free(cfg->listeners);
  free(cfg->path);
  free(cfg->base_dir);
  free(cfg->admin_socket);
  free(cfg->user);
  free(cfg->group);
  free(cfg->log_file);
  free(cfg->metrics_address);
  free(cfg->plugin_dir);
  free(cfg->plugin_dir_real);
  if (cfg->cluster) {
    for (size_t i = 0; i < cfg->cluster->nnats; i++)
      free(cfg->cluster->nats[i]);
    free(cfg->cluster->nats);
    free(cfg->cluster->node);
    free(cfg->cluster->subject_prefix);
    free(cfg->cluster);
  }
  free(cfg);
}

int cfg_load_text(const char *text, size_t len, const char *name,
                  const char *base_dir, cfg_server **out, char *err,
                  size_t errlen) {
  ctx c = {.name = name ? name : "config",
           .base_dir = base_dir && *base_dir ? base_dir : "."};
  if (!out || (!text && len)) {
    cfgr_fail(&c, -EINVAL, "invalid arguments");
    return cfgr_finish(&c, err, errlen);
  }
  *out = NULL;

  char *buf = malloc(len + 1);
  if (!buf) {
    cfgr_oom(&c);
    return cfgr_finish(&c, err, errlen);
  }
  if (len)
    memcpy(buf, text, len);
  buf[len] = '\0';

  cJSON *root = NULL;
  cfg_server *cfg = calloc(1, sizeof *cfg);
  int rc = cfg ? parse_json(&c, buf, len, &root) : cfgr_oom(&c);
  if (rc == 0) {
    cfg->workers = 1;
    cfg->io_backend = CFG_BACKEND_AUTO;
    cfg->max_sessions = 10000;
    cfg->log_level = CFG_LOG_INFO;
    cfg->metrics_port = 9100;
    cfg->limits.max_packet_size = 16384;
    cfg->limits.max_send_queue = 1048576;
    cfg->limits.idle_timeout_ms = 0;
    cfg->limits.packet_timeout_ms = 10000;
    cfg->limits.max_conns_per_ip = 0;
    cfg->limits.slow_callback_ms = 100;
    cfg->limits.send_timeout_ms = 30000;
    cfg->limits.recv_backlog = 65536;
    cfg->limits.plugin_backlog = 16777216;
    cfg->path = strdup(c.name);
    cfg->base_dir = strdup(c.base_dir);
    c.root = root;
    c.at = root;
    rc = cfg->path && cfg->base_dir ? parse_server(&c, root, cfg) : cfgr_oom(&c);
  }
  int frc = cfgr_finish(&c, err, errlen);
  if (frc == 0 && rc != 0) { /* a broken invariant: never accept what failed */
    frc = rc;
    if (err && errlen)
      snprintf(err, errlen, "%s: invalid (%s)", c.name, os_strerror(-rc));
  }
  cJSON_Delete(root);
  free(buf);
  if (frc) {
    cfg_free(cfg);
    return frc;
  }
  *out = cfg;
  return 0;
}

/* Directory part of path: "." when it has none, the root for a file in the
 * root. */
static char *dir_of(const char *path) {
  size_t n = os_path_dir_len(path);
  if (n == 0)
    return strdup(".");
  char *d = malloc(n + 1);
  if (d) {
    memcpy(d, path, n);
    d[n] = '\0';
  }
  return d;
}

int cfg_load_file(const char *path, cfg_server **out, char *err,
                  size_t errlen) {
  ctx c = {.name = path ? path : "(null)"};
  if (!out || !path) {
    cfgr_fail(&c, -EINVAL, "invalid arguments");
    return cfgr_finish(&c, err, errlen);
  }
  *out = NULL;

  char *buf = malloc(CFG_MAX_FILE_SIZE + 1);
  if (!buf) {
    cfgr_oom(&c);
    return cfgr_finish(&c, err, errlen);
  }
  size_t len = 0;
  int rc = os_read_file(path, buf, CFG_MAX_FILE_SIZE + 1, &len);
  if (rc < 0)
    rc = cfgr_fail(&c, rc, "cannot read: %s", os_strerror(-rc));
  if (rc == 0 && len > CFG_MAX_FILE_SIZE)
    rc = cfgr_fail(&c, -EFBIG, "file too large (more than %d bytes)",
                   CFG_MAX_FILE_SIZE);
  if (rc == 0) {
    char *dir = dir_of(path);
    if (dir)
      rc = cfg_load_text(buf, len, path, dir, out, err, errlen);
    else
      rc = cfgr_finish((cfgr_oom(&c), &c), err, errlen);
    free(dir);
  } else {
    rc = cfgr_finish(&c, err, errlen);
  }
  free(buf);
  return rc;
}

const char *cfg_backend_name(cfg_backend backend) {
  size_t i = (size_t)backend;
  return i < COUNT(backend_names) ? backend_names[i] : "unknown";
}

const char *cfg_framing_name(cfg_framing framing) {
  size_t i = (size_t)framing;
  return i < COUNT(cfg_framing_names) ? cfg_framing_names[i] : "unknown";
}

const char *cfg_threading_name(cfg_threading threading) {
  size_t i = (size_t)threading;
  return i < COUNT(cfg_threading_names) ? cfg_threading_names[i] : "unknown";
}

const char *cfg_log_level_name(cfg_log_level level) {
  size_t i = (size_t)level;
  return i < COUNT(log_level_names) ? log_level_names[i] : "unknown";
}


const char *cfg_transport_name(cfg_transport transport) {
  size_t i = (size_t)transport;
  return i < COUNT(cfg_transport_names) ? cfg_transport_names[i] : "unknown";
}
