/* Checks of the values inside one plugin or listener entry of server.json:
 * typed getters, path resolving, the plugin's free-form "config", and the
 * cross checks over all entries (duplicate plugin names and listener
 * addresses, listener -> plugin references). config.c walks the document and
 * calls these; problems go to config_report.c. */
#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif

#include "host/config_internal.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "os/dl.h"
#include "os/os.h"
#include "os/path.h"
#include "net/net.h"

#define MAX_PATH_LEN 4096   /* longest plugin path after resolving */
#define MAX_SYMBOL_LEN 128

/* ---- typed values ------------------------------------------------------ */
/* Each getter checks the value at the current path; absent values (NULL)
 * leave *out at its default. */

int cfge_get_uint(ctx *c, const cJSON *v, unsigned long long lo,
                  unsigned long long hi, int zero_ok,
                  unsigned long long *out) {
  if (!v)
    return 0;
  if (cJSON_IsNumber(v)) {
    double d = v->valuedouble;
    if (isfinite(d) && d == floor(d) &&
        ((zero_ok && d == 0) || (d >= (double)lo && d <= (double)hi))) {
      *out = (unsigned long long)d;
      return 0;
    }
  }
  if (zero_ok && lo > 1)
    return cfgr_expect(c, v, "0 or an integer %llu..%llu", lo, hi);
  return cfgr_expect(c, v, "an integer %llu..%llu", lo, hi);
}

int cfge_get_unsigned(ctx *c, const cJSON *v, unsigned lo, unsigned hi,
                      int zero_ok, unsigned *out) {
  unsigned long long x = *out;
  int rc = cfge_get_uint(c, v, lo, hi, zero_ok, &x);
  if (rc == 0)
    *out = (unsigned)x;
  return rc;
}

static int get_bool(ctx *c, const cJSON *v, int *out) {
  if (!v)
    return 0;
  if (!cJSON_IsBool(v))
    return cfgr_expect(c, v, "true or false");
  *out = cJSON_IsTrue(v) ? 1 : 0;
  return 0;
}

int cfge_get_enum(ctx *c, const cJSON *v, const char *const *names,
                  size_t n, int *out) {
  if (!v)
    return 0;
  if (cJSON_IsString(v) && v->valuestring)
    for (size_t i = 0; i < n; i++)
      if (strcmp(v->valuestring, names[i]) == 0) {
        *out = (int)i;
        return 0;
      }
  char list[256];
  size_t len = 0;
  list[0] = '\0';
  for (size_t i = 0; i < n && len < sizeof list; i++)
    len += (size_t)snprintf(list + len, sizeof list - len, "%s\"%s\"",
                            i ? ", " : "", names[i]);
  return cfgr_expect(c, v, "one of %s", list);
}

/* A string value, copied into *out. `what` describes it after "a string". */
int cfge_get_string(ctx *c, const cJSON *v, const char *what, char **out) {
  if (!v)
    return 0;
  if (!cJSON_IsString(v) || !v->valuestring || !v->valuestring[0])
    return cfgr_expect(c, v, "a non-empty string (%s)", what);
  char *s = strdup(v->valuestring);
  if (!s)
    return cfgr_oom(c);
  free(*out);
  *out = s;
  return 0;
}

static int is_symbol(const char *s) {
  size_t n = strlen(s);
  if (n == 0 || n > MAX_SYMBOL_LEN || (s[0] >= '0' && s[0] <= '9'))
    return 0;
  for (size_t i = 0; i < n; i++) {
    unsigned char ch = (unsigned char)s[i];
    if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
          (ch >= '0' && ch <= '9') || ch == '_'))
      return 0;
  }
  return 1;
}

static int is_plugin_name(const char *s) {
  size_t n = strlen(s);
  if (n == 0 || n > MAX_NAME_LEN)
    return 0;
  for (size_t i = 0; i < n; i++) {
    unsigned char ch = (unsigned char)s[i];
    if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
          (ch >= '0' && ch <= '9') || ch == '_' || ch == '-'))
      return 0;
  }
  return 1;
}

/* Joins a relative path to base ("." keeps it relative to the cwd); absolute
 * paths are copied. Result always contains a separator, so the system loader
 * never searches its library path for it, and has the platform's separators
 * (os_path_normalize). Returns NULL when out of memory. */
static char *join_path(const char *base, const char *p);

char *cfge_resolve(const char *base, const char *p) {
  char *r = join_path(base, p);
  if (r)
    os_path_normalize(r);
  return r;
}

static char *join_path(const char *base, const char *p) {
  size_t bl = strlen(base), pl = strlen(p), root = os_path_root_len(base);
  while (bl > 1 && bl > root && os_path_is_sep(base[bl - 1]))
    bl--;
  if (os_path_is_absolute(p))
    return strdup(p);
  if (bl == 1 && base[0] == '.') {
    if (os_path_has_sep(p))
      return strdup(p);
    base = ".";
  }
  char *r = malloc(bl + pl + 2);
  if (!r)
    return NULL;
  memcpy(r, base, bl);
  size_t k = bl;
  if (!(bl == root && os_path_is_sep(base[bl - 1])))
    r[k++] = os_path_sep[0];
  memcpy(r + k, p, pl + 1);
  return r;
}

/* A plugin path whose last component has no '.' names the platform's
 * library file: "plugins/echo" is plugins/echo.so on POSIX and
 * plugins\echo.dll on Windows, so one server.json serves both. Returns
 * path (not copied), or a new string with the extension (NULL when out of
 * memory). */
static char *with_platform_ext(char *path) {
  size_t n = strlen(path), e = strlen(os_dl_ext);
  const char *base = os_path_base(path);
  if (!*base || strchr(base, '.'))
    return path;
  char *r = malloc(n + e + 1);
  if (r) {
    memcpy(r, path, n);
    memcpy(r + n, os_dl_ext, e + 1);
  }
  return r;
}

/* ---- plugin "config": any JSON, but no duplicate keys or non-finite
 * numbers, since the plugin parses the text again. ---------------------- */

typedef struct keyref {
  const char *key;
  size_t index;
  const cJSON *node;
} keyref;

static int keyref_cmp(const void *a, const void *b) {
  const keyref *x = a, *y = b;
  int r = strcmp(x->key, y->key);
  if (r)
    return r;
  return x->index < y->index ? -1 : x->index > y->index;
}

/* Reports every repeat of a key after its first occurrence. */
static int check_unique_keys(ctx *c, const cJSON *obj) {
  size_t n = 0;
  for (const cJSON *it = obj->child; it; it = it->next)
    n++;
  if (n < 2)
    return 0;
  keyref *refs = malloc(n * sizeof *refs);
  if (!refs)
    return cfgr_oom(c);
  size_t i = 0;
  for (const cJSON *it = obj->child; it; it = it->next, i++)
    refs[i] = (keyref){it->string ? it->string : "", i, it};
  qsort(refs, n, sizeof *refs, keyref_cmp);
  int rc = 0;
  for (i = 1; i < n; i++)
    if (strcmp(refs[i].key, refs[i - 1].key) == 0) {
      mark save = cfgr_path_node(c, refs[i].key, refs[i].node);
      rc = cfgr_first(rc, cfgr_fail(c, -EINVAL, "duplicate key"));
      cfgr_path_pop(c, save);
    }
  free(refs);
  return rc;
}

static int check_any(ctx *c, const cJSON *v) {
  if (cJSON_IsNumber(v) && !isfinite(v->valuedouble))
    return cfgr_expect(c, v, "a finite number");
  if (!cJSON_IsArray(v) && !cJSON_IsObject(v))
    return 0;
  int rc = 0;
  if (cJSON_IsObject(v))
    rc = check_unique_keys(c, v);
  size_t i = 0;
  for (const cJSON *it = v->child; it && !c->oom; it = it->next, i++) {
    mark save = cJSON_IsObject(v) ? cfgr_path_node(c, it->string, it) : cfgr_path_index(c, i, it);
    rc = cfgr_first(rc, check_any(c, it));
    cfgr_path_pop(c, save);
  }
  return c->oom ? -ENOMEM : rc;
}

/* ---- plugins ----------------------------------------------------------- */

const char *const cfge_callback_keys[CFGE_NCALLBACKS] = {
    "on_load", "on_unload", "on_connected", "on_recv",
    "on_send", "on_disconnected", "on_tick", "on_message", "on_node"};

char **cfge_callback_slot(cfg_callbacks *cb, size_t k) {
  char **slots[] = {&cb->on_load, &cb->on_unload, &cb->on_connected,
                    &cb->on_recv, &cb->on_send, &cb->on_disconnected,
                    &cb->on_tick, &cb->on_message, &cb->on_node};
  return slots[k];
}

static int parse_callbacks(ctx *c, const cJSON *v, cfg_callbacks *cb) {
  const cJSON *f[COUNT(cfge_callback_keys)];
  if (!cJSON_IsObject(v))
    return cfgr_expect(c, v, "an object");
  int rc = cfgr_match_keys(c, v, cfge_callback_keys, COUNT(cfge_callback_keys), f);
  for (size_t k = 0; k < COUNT(cfge_callback_keys); k++) {
    if (!f[k])
      continue;
    mark save = cfgr_path_node(c, cfge_callback_keys[k], f[k]);
    if (!cJSON_IsString(f[k]) || !f[k]->valuestring)
      rc = cfgr_first(rc, cfgr_expect(c, f[k], "a string (exported symbol name)"));
    else if (!is_symbol(f[k]->valuestring))
      rc = cfgr_first(rc, cfgr_expect(c, f[k], "a C identifier of at most %d characters "
                                      "(exported symbol name)", MAX_SYMBOL_LEN));
    else if (!(*cfge_callback_slot(cb, k) = strdup(f[k]->valuestring)))
      return cfgr_oom(c);
    cfgr_path_pop(c, save);
  }
  return rc;
}

enum { P_NAME, P_PATH, P_CALLBACKS, P_CONFIG, P_THREADING, P_TICK, P_WATCH, P_N };
static const char *const plugin_keys[P_N] = {
    "name", "path", "callbacks", "config", "threading", "tick_ms", "watch"};

/* Fills p from v. p->name stays NULL when the name is missing or bad, and
 * p->resolved_path when the path is: the cross checks skip those. */
int cfge_parse_plugin(ctx *c, const cJSON *v, cfg_plugin *p) {
  const cJSON *f[P_N];
  int rc, r, e = CFG_THREADING_SESSION;
  mark save;
  if (!cJSON_IsObject(v))
    return cfgr_expect(c, v, "an object");
  rc = cfgr_match_keys(c, v, plugin_keys, P_N, f);
  rc = cfgr_first(rc, cfgr_require(c, f, plugin_keys, P_NAME));
  rc = cfgr_first(rc, cfgr_require(c, f, plugin_keys, P_PATH));

  if (f[P_NAME]) {
    save = cfgr_path_node(c, "name", f[P_NAME]);
    if (!cJSON_IsString(f[P_NAME]) || !f[P_NAME]->valuestring ||
        !is_plugin_name(f[P_NAME]->valuestring))
      rc = cfgr_first(rc, cfgr_expect(c, f[P_NAME], "a name of 1..%d characters from [A-Za-z0-9_-]",
                                      MAX_NAME_LEN));
    else if (!(p->name = strdup(f[P_NAME]->valuestring)))
      return cfgr_oom(c);
    cfgr_path_pop(c, save);
  }

  if (f[P_PATH]) {
    save = cfgr_path_node(c, "path", f[P_PATH]);
    r = cfge_get_string(c, f[P_PATH], "path to the plugin's shared object", &p->path);
    if (c->oom)
      return -ENOMEM;
    rc = cfgr_first(rc, r);
    if (p->path) {
      char *full = cfge_resolve(c->base_dir, p->path), *ext = full ? with_platform_ext(full) : NULL;
      if (ext != full)
        free(full);
      if (!(full = ext))
        return cfgr_oom(c);
      if (strlen(full) >= MAX_PATH_LEN) {
        rc = cfgr_first(rc, cfgr_fail(c, -ENAMETOOLONG, "path too long (more than %d bytes)",
                                      MAX_PATH_LEN - 1));
        free(full);
      } else {
        p->resolved_path = full;
      }
    }
    cfgr_path_pop(c, save);
  }

  if (f[P_CALLBACKS]) {
    save = cfgr_path_node(c, "callbacks", f[P_CALLBACKS]);
    rc = cfgr_first(rc, parse_callbacks(c, f[P_CALLBACKS], &p->callbacks));
    cfgr_path_pop(c, save);
    if (c->oom)
      return -ENOMEM;
  }

  save = cfgr_path_node(c, "config", f[P_CONFIG]);
  if (f[P_CONFIG]) {
    if (!cJSON_IsObject(f[P_CONFIG])) {
      rc = cfgr_first(rc, cfgr_expect(c, f[P_CONFIG], "an object"));
    } else if ((r = check_any(c, f[P_CONFIG]))) {
      if (c->oom)
        return -ENOMEM;
      rc = cfgr_first(rc, r);
    } else if (!(p->config_json = cJSON_PrintUnformatted(f[P_CONFIG]))) {
      return cfgr_oom(c);
    }
  } else if (!(p->config_json = strdup("{}"))) {
    return cfgr_oom(c);
  }
  cfgr_path_pop(c, save);

  save = cfgr_path_node(c, "threading", f[P_THREADING]);
  rc = cfgr_first(rc, cfge_get_enum(c, f[P_THREADING], cfg_threading_names,
                                    COUNT(cfg_threading_names), &e));
  p->threading = (cfg_threading)e;
  cfgr_path_pop(c, save);

  save = cfgr_path_node(c, "tick_ms", f[P_TICK]);
  rc = cfgr_first(rc, cfge_get_unsigned(c, f[P_TICK], 0, 3600000, 0, &p->tick_ms));
  cfgr_path_pop(c, save);

  save = cfgr_path_node(c, "watch", f[P_WATCH]);
  rc = cfgr_first(rc, get_bool(c, f[P_WATCH], &p->watch));
  cfgr_path_pop(c, save);
  return rc;
}

/* ---- uniqueness -------------------------------------------------------- */

static int uref_cmp(const void *a, const void *b) {
  const uref *x = a, *y = b;
  int r = memcmp(x->key, y->key, sizeof x->key);
  if (r)
    return r;
  return x->index < y->index ? -1 : x->index > y->index;
}

/* The names of the plugins that have one, as refs sorted by name (then by
 * index); their number in *n. NULL when out of memory. */
uref *cfge_plugin_refs(const cfg_server *cfg, size_t *n) {
  uref *refs = calloc(cfg->nplugins ? cfg->nplugins : 1, sizeof *refs);
  *n = 0;
  if (!refs)
    return NULL;
  for (size_t i = 0; i < cfg->nplugins; i++) {
    if (!cfg->plugins[i].name)
      continue;
    memcpy(refs[*n].key, cfg->plugins[i].name, strlen(cfg->plugins[i].name));
    refs[(*n)++].index = i;
  }
  qsort(refs, *n, sizeof *refs, uref_cmp);
  return refs;
}

/* Every plugin whose name an earlier one has. nodes[i] is plugins[i]'s
 * object, arr the array. */
int cfge_check_plugin_names(ctx *c, const cfg_server *cfg, const cJSON *arr,
                            const cJSON *const *nodes) {
  size_t n, start = 0;
  uref *refs = cfge_plugin_refs(cfg, &n);
  int rc = 0;
  if (!refs)
    return cfgr_oom(c);
  for (size_t i = 1; i < n; i++) {
    if (memcmp(refs[i].key, refs[start].key, sizeof refs[i].key) != 0) {
      start = i;
      continue;
    }
    size_t k = refs[i].index;
    mark save = cfgr_path_root(c);
    cfgr_path_node(c, "plugins", arr);
    cfgr_path_index(c, k, nodes[k]);
    cfgr_path_node(c, "name", cfgr_member(nodes[k], "name"));
    rc = cfgr_first(rc, cfgr_fail(c, -EINVAL, "duplicate plugin name \"%s\" (same as plugins[%zu])",
                                  cfg->plugins[k].name, refs[start].index));
    cfgr_path_pop(c, save);
  }
  free(refs);
  return rc;
}

static int uref_key_cmp(const void *key, const void *elem) {
  return memcmp(key, ((const uref *)elem)->key, sizeof ((const uref *)elem)->key);
}

/* Index of a plugin called name among the n sorted refs, or nplugins when
 * there is none. */
static size_t plugin_index(const cfg_server *cfg, const uref *names, size_t n,
                           const char *name) {
  unsigned char key[sizeof names->key] = {0};
  size_t len = strlen(name);
  if (len > MAX_NAME_LEN)
    return cfg->nplugins;
  memcpy(key, name, len);
  const uref *r = bsearch(key, names, n, sizeof *names, uref_key_cmp);
  return r ? r->index : cfg->nplugins;
}

/* ---- listeners --------------------------------------------------------- */

enum {
  L_ADDRESS, L_PORT, L_PLUGIN, L_FRAMING, L_TRANSPORT, L_TLS, L_HANDSHAKE, L_PATH, L_ORIGINS,
  L_STATIC, L_PING, L_N
};
static const char *const listener_keys[L_N] = {
    "address", "port", "plugin", "framing", "transport", "tls", "handshake_timeout_ms",
    "path", "origins", "static", "ping_interval_ms"};

/* A string of visible ASCII (no blank, no control byte), 1..max bytes. */
static int visible_ascii(const char *s, size_t max) {
  size_t n = strlen(s);
  if (n == 0 || n > max)
    return 0;
  for (size_t i = 0; i < n; i++)
    if ((unsigned char)s[i] <= 0x20 || (unsigned char)s[i] >= 0x7f)
      return 0;
  return 1;
}

/* "tls": {"cert": PATH, "key": PATH}: both files load and match. */
static int parse_tls(ctx *c, const cJSON *v, cfg_listener *l) {
  static const char *const keys[] = {"cert", "key"};
  const cJSON *f[2];
  char err[768];
  mark save;
  int rc, r;

  if (!cJSON_IsObject(v))
    return cfgr_expect(c, v, "an object {\"cert\": PATH, \"key\": PATH}");
  rc = cfgr_match_keys(c, v, keys, 2, f);
  rc = cfgr_first(rc, cfgr_require(c, f, keys, 0));
  rc = cfgr_first(rc, cfgr_require(c, f, keys, 1));
  for (int k = 0; k < 2; k++) {
    char *raw = NULL, **slot = k == 0 ? &l->tls_cert : &l->tls_key;
    save = cfgr_path_node(c, keys[k], f[k]);
    r = cfge_get_string(c, f[k], k == 0 ? "a PEM certificate file" : "a PEM key file", &raw);
    rc = cfgr_first(rc, r);
    if (raw && !(*slot = cfge_resolve(c->base_dir, raw))) {
      free(raw);
      return cfgr_oom(c);
    }
    free(raw);
    cfgr_path_pop(c, save);
  }
  if (rc == 0 && l->tls_cert && l->tls_key) {
    r = net_tls_check(l->tls_cert, l->tls_key, err, sizeof(err));
    if (r < 0)
      rc = cfgr_fail(c, r, "%s", err);
  }
  return rc;
}

/* "origins": a non-empty array of Origin values. */
static int parse_origins(ctx *c, const cJSON *v, cfg_listener *l) {
  const cJSON *it;
  size_t n = 0, i = 0;
  int rc = 0;

  if (cJSON_IsArray(v))
    n = (size_t)cJSON_GetArraySize(v);
  if (!cJSON_IsArray(v) || n == 0 || n > 64)
    return cfgr_expect(c, v, "an array of 1 to 64 origins, e.g. [\"https://example.com\"] "
                             "(leave it out to allow any)");
  if (!(l->origins = calloc(n, sizeof(char *))))
    return cfgr_oom(c);
  for (it = v->child; it; it = it->next, i++) {
    mark save = cfgr_path_index(c, i, it);
    if (!cJSON_IsString(it) || !it->valuestring || !visible_ascii(it->valuestring, 255)) {
      rc = cfgr_first(rc, cfgr_expect(c, it, "an origin: scheme://host[:port], visible ASCII"));
    } else if (!(l->origins[l->norigins++] = strdup(it->valuestring))) {
      return cfgr_oom(c);
    }
    cfgr_path_pop(c, save);
  }
  return rc;
}

/* "static": a directory, kept with every link resolved. */
static int parse_static(ctx *c, const cJSON *v, cfg_listener *l) {
  char *raw = NULL, real[4096], shown[256];
  struct stat st;
  int r = cfge_get_string(c, v, "a directory of files to serve", &raw);

  if (r < 0 || !raw)
    return r;
  l->static_dir = cfge_resolve(c->base_dir, raw);
  free(raw);
  if (!l->static_dir)
    return cfgr_oom(c);
  cfgr_quote(l->static_dir, shown, sizeof(shown), 200);
  r = os_realpath(l->static_dir, real, sizeof(real));
  if (r < 0)
    return cfgr_fail(c, r, "cannot use %s as the static directory: %s", shown, os_strerror(-r));
  if (stat(real, &st) != 0 || !S_ISDIR(st.st_mode))
    return cfgr_fail(c, -ENOTDIR, "cannot use %s as the static directory: not a directory",
                     shown);
  if (!(l->static_root = strdup(real)))
    return cfgr_oom(c);
  return 0;
}

/* The transport keys of a listener entry. */
static int parse_transport(ctx *c, const cJSON *const *f, cfg_listener *l) {
  char why[160];
  int rc = 0, e = CFG_TRANSPORT_TCP, ws;
  mark save = cfgr_path_node(c, "transport", f[L_TRANSPORT]);

  rc = cfge_get_enum(c, f[L_TRANSPORT], cfg_transport_names, COUNT(cfg_transport_names), &e);
  l->transport = (cfg_transport)e;
  ws = rc == 0 && l->transport == CFG_TRANSPORT_WEBSOCKET;
  if (ws && net_transport_available(NET_TRANSPORT_WEBSOCKET, 0, why, sizeof(why)) < 0)
    rc = cfgr_fail(c, -ENOTSUP, "%s", why);
  cfgr_path_pop(c, save);

  if (f[L_TLS]) {
    save = cfgr_path_node(c, "tls", f[L_TLS]);
    if (net_transport_available(NET_TRANSPORT_TCP, 1, why, sizeof(why)) < 0)
      rc = cfgr_first(rc, cfgr_fail(c, -ENOTSUP, "%s", why));
    else
      rc = cfgr_first(rc, parse_tls(c, f[L_TLS], l));
    cfgr_path_pop(c, save);
  }
  save = cfgr_path_node(c, "handshake_timeout_ms", f[L_HANDSHAKE]);
  if (f[L_HANDSHAKE] && !ws && !f[L_TLS] && l->transport == CFG_TRANSPORT_TCP)
    rc = cfgr_first(rc, cfgr_fail(c, -EINVAL, "only for TLS or WebSocket listeners"));
  else
    rc = cfgr_first(rc, cfge_get_unsigned(c, f[L_HANDSHAKE], 1, 600000, 0,
                                          &l->handshake_timeout_ms));
  cfgr_path_pop(c, save);

  /* The WebSocket keys, refused on a TCP listener. */
  for (int k = L_PATH; k <= L_PING; k++) {
    if (!f[k] || l->transport != CFG_TRANSPORT_TCP)
      continue;
    save = cfgr_path_node(c, listener_keys[k], f[k]);
    rc = cfgr_first(rc, cfgr_fail(c, -EINVAL, "only for \"transport\": \"websocket\""));
    cfgr_path_pop(c, save);
  }
  if (!ws)
    return rc;
  save = cfgr_path_node(c, "path", f[L_PATH]);
  if (f[L_PATH]) {
    const char *p = cJSON_IsString(f[L_PATH]) ? f[L_PATH]->valuestring : NULL;
    if (!p || p[0] != '/' || !visible_ascii(p, 255) || strpbrk(p, "?#"))
      rc = cfgr_first(rc, cfgr_expect(c, f[L_PATH], "a path starting with \"/\" (visible "
                                                    "ASCII, no '?' or '#', up to 255 bytes)"));
    else if (!(l->ws_path = strdup(p)))
      return cfgr_oom(c);
  } else if (!(l->ws_path = strdup("/"))) {
    return cfgr_oom(c);
  }
  cfgr_path_pop(c, save);
  if (f[L_ORIGINS]) {
    save = cfgr_path_node(c, "origins", f[L_ORIGINS]);
    rc = cfgr_first(rc, parse_origins(c, f[L_ORIGINS], l));
    cfgr_path_pop(c, save);
  }
  if (f[L_STATIC]) {
    save = cfgr_path_node(c, "static", f[L_STATIC]);
    rc = cfgr_first(rc, parse_static(c, f[L_STATIC], l));
    cfgr_path_pop(c, save);
  }
  save = cfgr_path_node(c, "ping_interval_ms", f[L_PING]);
  if (f[L_PING]) {
    int r = cfge_get_unsigned(c, f[L_PING], 0, 3600000, 1, &l->ping_interval_ms);
    if (r == 0 && l->ping_interval_ms && l->ping_interval_ms < 100)
      r = cfgr_expect(c, f[L_PING], "0 (off) or 100..3600000");
    rc = cfgr_first(rc, r);
  }
  cfgr_path_pop(c, save);
  return rc;
}

static int no_such_plugin(ctx *c, const cfg_server *cfg, const char *name) {
  char q[256], list[256];
  size_t len = 0;
  list[0] = '\0';
  for (size_t i = 0; i < cfg->nplugins; i++) {
    const char *sep = len ? ", " : "";
    if (!cfg->plugins[i].name)
      continue;
    size_t need = strlen(sep) + strlen(cfg->plugins[i].name);
    if (len + need + 5 >= sizeof list) {
      snprintf(list + len, sizeof list - len, ", ...");
      break;
    }
    len += (size_t)snprintf(list + len, sizeof list - len, "%s%s", sep,
                            cfg->plugins[i].name);
  }
  cfgr_quote(name, q, sizeof q, GOT_STRING_BYTES);
  return cfgr_fail(c, -EINVAL, "no plugin named %s (plugins: %s)", q, list);
}

/* Fills l from v. *addr_ok is set when its address and port are valid, so
 * that ref can take part in the duplicate check. */
int cfge_parse_listener(ctx *c, const cJSON *v, cfg_server *cfg, const plugin_names *names,
                        cfg_listener *l, uref *ref, int *addr_ok) {
  const cJSON *f[L_N];
  int rc, e = CFG_FRAMING_RAW, a_ok = 0, p_ok = 0;
  mark save;
  *addr_ok = 0;
  if (!cJSON_IsObject(v))
    return cfgr_expect(c, v, "an object");
  rc = cfgr_match_keys(c, v, listener_keys, L_N, f);
  rc = cfgr_first(rc, cfgr_require(c, f, listener_keys, L_PORT));
  rc = cfgr_first(rc, cfgr_require(c, f, listener_keys, L_PLUGIN));

  save = cfgr_path_node(c, "address", f[L_ADDRESS]);
  if (f[L_ADDRESS]) {
    const char *a = cJSON_IsString(f[L_ADDRESS]) ? f[L_ADDRESS]->valuestring : NULL;
    if (!a || (inet_pton(AF_INET, a, ref->key + 1) != 1 &&
               inet_pton(AF_INET6, a, ref->key + 1) != 1)) {
      rc = cfgr_first(rc, cfgr_expect(c, f[L_ADDRESS], "an IPv4 or IPv6 address literal"));
    } else {
      ref->key[0] = strchr(a, ':') ? 6 : 4;
      if (!(l->address = strdup(a)))
        return cfgr_oom(c);
      a_ok = 1;
    }
  } else {
    ref->key[0] = 4;
    inet_pton(AF_INET, "127.0.0.1", ref->key + 1);
    if (!(l->address = strdup("127.0.0.1")))
      return cfgr_oom(c);
    a_ok = 1;
  }
  cfgr_path_pop(c, save);

  if (f[L_PORT]) {
    save = cfgr_path_node(c, "port", f[L_PORT]);
    int r = cfge_get_unsigned(c, f[L_PORT], 0, 65535, 0, &l->port);
    rc = cfgr_first(rc, r);
    if (r == 0) {
      ref->key[17] = (unsigned char)(l->port >> 8);
      ref->key[18] = (unsigned char)l->port;
      p_ok = 1;
    }
    cfgr_path_pop(c, save);
  }

  if (f[L_PLUGIN]) {
    save = cfgr_path_node(c, "plugin", f[L_PLUGIN]);
    if (!cJSON_IsString(f[L_PLUGIN]) || !f[L_PLUGIN]->valuestring) {
      rc = cfgr_first(rc, cfgr_expect(c, f[L_PLUGIN], "a string (plugin name)"));
    } else {
      l->plugin_index = plugin_index(cfg, names->refs, names->n, f[L_PLUGIN]->valuestring);
      if (l->plugin_index == cfg->nplugins) {
        if (names->known) /* else that plugin's bad name was reported */
          rc = cfgr_first(rc, no_such_plugin(c, cfg, f[L_PLUGIN]->valuestring));
      } else if (!(l->plugin = strdup(f[L_PLUGIN]->valuestring))) {
        return cfgr_oom(c);
      }
    }
    cfgr_path_pop(c, save);
  }

  save = cfgr_path_node(c, "framing", f[L_FRAMING]);
  rc = cfgr_first(rc, cfge_get_enum(c, f[L_FRAMING], cfg_framing_names,
                                    COUNT(cfg_framing_names), &e));
  l->framing = (cfg_framing)e;
  cfgr_path_pop(c, save);
  rc = cfgr_first(rc, parse_transport(c, f, l));
  if (c->oom)
    return -ENOMEM;
  *addr_ok = a_ok && p_ok;
  return rc;
}

/* Every listener whose address and port an earlier one has (port 0 never
 * conflicts). refs[0..n) are the listeners with a valid address and port. */
int cfge_check_listener_addresses(ctx *c, const cfg_server *cfg, uref *refs, size_t n,
                                  const cJSON *arr, const cJSON *const *nodes) {
  size_t m = 0, start = 0;
  int rc = 0;
  for (size_t i = 0; i < n; i++)
    if (cfg->listeners[refs[i].index].port != 0)
      refs[m++] = refs[i]; /* m <= i: compacting in place is safe */
  qsort(refs, m, sizeof *refs, uref_cmp);
  for (size_t i = 1; i < m; i++) {
    if (memcmp(refs[i].key, refs[start].key, sizeof refs[i].key) != 0) {
      start = i;
      continue;
    }
    size_t k = refs[i].index;
    const cfg_listener *l = &cfg->listeners[k];
    int v6 = strchr(l->address, ':') != NULL;
    mark save = cfgr_path_root(c);
    cfgr_path_node(c, "listeners", arr);
    cfgr_path_index(c, k, nodes[k]);
    rc = cfgr_first(rc, cfgr_fail(c, -EINVAL,
                                  "duplicate listener %s%s%s:%u (same as listeners[%zu])",
                                  v6 ? "[" : "", l->address, v6 ? "]" : "", l->port,
                                  refs[start].index));
    cfgr_path_pop(c, save);
  }
  return rc;
}
