/* Loading of server.json: cJSON checks the syntax, this file the schema. Each
 * object's keys are matched against a fixed list first (unknown and duplicate
 * keys), then every value is converted with its type and range checked, then
 * cross references (listener -> plugin, uniqueness) are resolved. The first
 * problem found becomes the single error line. */
#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif

#include "host/config.h"

#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_PATH_LEN 4096   /* longest plugin path after resolving */
#define MAX_SOCKET_PATH 107 /* sun_path holds 108 bytes with the NUL */
#define MAX_SYMBOL_LEN 128
#define MAX_NAME_LEN 32
#define GOT_STRING_BYTES 40 /* longer strings are cut with "..." */
#define SNIPPET_BYTES 16    /* bytes shown after "syntax error near" */

#define ENUM_NAME(id, str) [id] = str,
static const char *const backend_names[] = {CFG_BACKEND_MAP(ENUM_NAME)};
static const char *const framing_names[] = {CFG_FRAMING_MAP(ENUM_NAME)};
static const char *const threading_names[] = {CFG_THREADING_MAP(ENUM_NAME)};
static const char *const log_level_names[] = {CFG_LOG_LEVEL_MAP(ENUM_NAME)};
#undef ENUM_NAME
#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* Where we are in the document, for error messages. */
typedef struct ctx {
  const char *name; /* file name shown first in every message */
  const char *base_dir;
  char *err;
  size_t errlen;
  char path[256]; /* JSON path of the value being checked, e.g. plugins[0].name */
  size_t plen;
} ctx;

/* ---- messages ---------------------------------------------------------- */

static int fail(ctx *c, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Writes "<name>: <path>: <message>" (or "<name>: <message>" at the top
 * level) to the caller's buffer and returns rc. */
static int fail(ctx *c, int rc, const char *fmt, ...) {
  char msg[640];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (c->err && c->errlen) {
    if (c->plen)
      snprintf(c->err, c->errlen, "%s: %s: %s", c->name, c->path, msg);
    else
      snprintf(c->err, c->errlen, "%s: %s", c->name, msg);
  }
  return rc;
}

static int oom(ctx *c) { return fail(c, -ENOMEM, "out of memory"); }

/* Appends the byte c to out (capacity n, *len used) as it would appear inside
 * a double-quoted JSON string. */
static void put_escaped(char *out, size_t n, size_t *len, unsigned char ch) {
  char tmp[8];
  switch (ch) {
  case '"': strcpy(tmp, "\\\""); break;
  case '\\': strcpy(tmp, "\\\\"); break;
  case '\n': strcpy(tmp, "\\n"); break;
  case '\r': strcpy(tmp, "\\r"); break;
  case '\t': strcpy(tmp, "\\t"); break;
  default:
    if (ch < 0x20 || ch == 0x7f)
      snprintf(tmp, sizeof tmp, "\\u%04x", ch);
    else
      tmp[0] = (char)ch, tmp[1] = '\0';
  }
  size_t tl = strlen(tmp);
  if (*len + tl < n) {
    memcpy(out + *len, tmp, tl + 1);
    *len += tl;
  }
}

/* Number of bytes to show of s (length slen) when at most max are allowed,
 * without cutting a UTF-8 sequence in half. */
static size_t cut_len(const char *s, size_t slen, size_t max) {
  if (slen <= max)
    return slen;
  size_t k = max;
  while (k > 0 && ((unsigned char)s[k] & 0xC0) == 0x80)
    k--;
  return k;
}

/* Writes s as a quoted, escaped string, cut after max bytes with "...". */
static void quote(const char *s, char *out, size_t n, size_t max) {
  size_t slen = strlen(s), show = cut_len(s, slen, max), len = 0;
  out[len++] = '"';
  out[len] = '\0';
  for (size_t i = 0; i < show; i++)
    put_escaped(out, n, &len, (unsigned char)s[i]);
  if (show < slen && len + 3 < n) {
    memcpy(out + len, "...", 4);
    len += 3;
  }
  if (len + 1 < n) {
    out[len++] = '"';
    out[len] = '\0';
  }
}

static void fmt_number(double d, char *out, size_t n) {
  snprintf(out, n, "%.15g", d);
  if (strtod(out, NULL) != d)
    snprintf(out, n, "%.17g", d);
}

/* What a value is, for the "got ..." part of a message. */
static void describe(const cJSON *v, char *out, size_t n) {
  if (!v)
    snprintf(out, n, "nothing");
  else if (cJSON_IsString(v))
    quote(v->valuestring ? v->valuestring : "", out, n, GOT_STRING_BYTES);
  else if (cJSON_IsNumber(v) && isfinite(v->valuedouble))
    fmt_number(v->valuedouble, out, n);
  else if (cJSON_IsNumber(v))
    snprintf(out, n, "a number out of range");
  else if (cJSON_IsTrue(v))
    snprintf(out, n, "true");
  else if (cJSON_IsFalse(v))
    snprintf(out, n, "false");
  else if (cJSON_IsNull(v))
    snprintf(out, n, "null");
  else if (cJSON_IsObject(v))
    snprintf(out, n, "an object");
  else if (cJSON_IsArray(v))
    snprintf(out, n, v->child ? "an array" : "an empty array");
  else
    snprintf(out, n, "nothing");
}

static int expect(ctx *c, const cJSON *v, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Fails with "expected <fmt...>, got <v>". */
static int expect(ctx *c, const cJSON *v, const char *fmt, ...) {
  char want[256], got[256];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(want, sizeof want, fmt, ap);
  va_end(ap);
  describe(v, got, sizeof got);
  return fail(c, -EINVAL, "expected %s, got %s", want, got);
}

/* ---- JSON paths -------------------------------------------------------- */

static void path_append(ctx *c, const char *s) {
  size_t l = strlen(s), room = sizeof c->path - 1 - c->plen;
  if (l > room)
    l = room;
  memcpy(c->path + c->plen, s, l);
  c->plen += l;
  c->path[c->plen] = '\0';
}

static int plain_key(const char *k) {
  size_t n = strlen(k);
  if (n == 0 || n > 48)
    return 0;
  for (size_t i = 0; i < n; i++) {
    unsigned char ch = (unsigned char)k[i];
    if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
          (ch >= '0' && ch <= '9') || ch == '_' || ch == '-' || ch == '$'))
      return 0;
  }
  return 1;
}

/* Extends the path by a key; returns the length to restore with path_pop. */
static size_t path_key(ctx *c, const char *key) {
  size_t save = c->plen;
  if (!key)
    key = "";
  if (plain_key(key)) {
    if (c->plen)
      path_append(c, ".");
    path_append(c, key);
  } else {
    char q[128];
    quote(key, q, sizeof q, 24);
    path_append(c, "[");
    path_append(c, q);
    path_append(c, "]");
  }
  return save;
}

static size_t path_index(ctx *c, size_t i) {
  size_t save = c->plen;
  char b[32];
  snprintf(b, sizeof b, "[%zu]", i);
  path_append(c, b);
  return save;
}

static void path_pop(ctx *c, size_t save) {
  c->plen = save;
  c->path[save] = '\0';
}

/* ---- keys -------------------------------------------------------------- */

/* Optimal string alignment distance (edits incl. transpositions), or a large
 * value when either string is too long to bother. */
static size_t edit_distance(const char *a, const char *b) {
  size_t la = strlen(a), lb = strlen(b);
  if (la > 48 || lb > 48)
    return 100;
  unsigned char d[49][49];
  for (size_t i = 0; i <= la; i++)
    d[i][0] = (unsigned char)i;
  for (size_t j = 0; j <= lb; j++)
    d[0][j] = (unsigned char)j;
  for (size_t i = 1; i <= la; i++)
    for (size_t j = 1; j <= lb; j++) {
      unsigned v = d[i - 1][j] + 1u, cost = a[i - 1] != b[j - 1];
      if (d[i][j - 1] + 1u < v)
        v = d[i][j - 1] + 1u;
      if (d[i - 1][j - 1] + cost < v)
        v = d[i - 1][j - 1] + cost;
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] &&
          d[i - 2][j - 2] + 1u < v)
        v = d[i - 2][j - 2] + 1u;
      d[i][j] = (unsigned char)v;
    }
  return d[la][lb];
}

/* Matches obj's keys against keys[0..n): found[k] gets the member for keys[k]
 * (NULL when absent). Unknown and repeated keys are errors. */
static int match_keys(ctx *c, const cJSON *obj, const char *const *keys,
                      size_t n, const cJSON **found) {
  for (size_t k = 0; k < n; k++)
    found[k] = NULL;
  for (const cJSON *it = obj->child; it; it = it->next) {
    const char *key = it->string ? it->string : "";
    size_t k = 0;
    while (k < n && strcmp(key, keys[k]) != 0)
      k++;
    size_t save = path_key(c, key);
    if (k == n) {
      size_t best = 3, bi = n;
      for (size_t j = 0; j < n; j++) {
        size_t dist = edit_distance(key, keys[j]);
        if (dist < best)
          best = dist, bi = j;
      }
      if (bi < n)
        return fail(c, -EINVAL, "unknown key (did you mean \"%s\"?)", keys[bi]);
      return fail(c, -EINVAL, "unknown key");
    }
    if (found[k])
      return fail(c, -EINVAL, "duplicate key");
    found[k] = it;
    path_pop(c, save);
  }
  return 0;
}

static int require(ctx *c, const cJSON **found, const char *const *keys,
                   size_t k) {
  if (found[k])
    return 0;
  return fail(c, -EINVAL, "missing required key \"%s\"", keys[k]);
}

/* ---- typed values ------------------------------------------------------ */
/* Each getter checks the value at the current path; absent values (NULL)
 * leave *out at its default. */

static int get_uint(ctx *c, const cJSON *v, unsigned long long lo,
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
    return expect(c, v, "0 or an integer %llu..%llu", lo, hi);
  return expect(c, v, "an integer %llu..%llu", lo, hi);
}

static int get_unsigned(ctx *c, const cJSON *v, unsigned lo, unsigned hi,
                        int zero_ok, unsigned *out) {
  unsigned long long x = *out;
  int rc = get_uint(c, v, lo, hi, zero_ok, &x);
  if (rc == 0)
    *out = (unsigned)x;
  return rc;
}

static int get_bool(ctx *c, const cJSON *v, int *out) {
  if (!v)
    return 0;
  if (!cJSON_IsBool(v))
    return expect(c, v, "true or false");
  *out = cJSON_IsTrue(v) ? 1 : 0;
  return 0;
}

static int get_enum(ctx *c, const cJSON *v, const char *const *names,
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
  return expect(c, v, "one of %s", list);
}

/* A string value, copied into *out. `what` describes it after "a string". */
static int get_string(ctx *c, const cJSON *v, const char *what, char **out) {
  if (!v)
    return 0;
  if (!cJSON_IsString(v) || !v->valuestring || !v->valuestring[0])
    return expect(c, v, "a non-empty string (%s)", what);
  char *s = strdup(v->valuestring);
  if (!s)
    return oom(c);
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
 * paths are copied. Result always contains a '/', so dlopen never searches
 * the library path for it. Returns NULL when out of memory. */
static char *resolve(const char *base, const char *p) {
  size_t bl = strlen(base), pl = strlen(p);
  while (bl > 1 && base[bl - 1] == '/')
    bl--;
  if (p[0] == '/')
    return strdup(p);
  if (bl == 1 && base[0] == '.') {
    if (strchr(p, '/'))
      return strdup(p);
    base = ".";
  }
  char *r = malloc(bl + pl + 2);
  if (!r)
    return NULL;
  memcpy(r, base, bl);
  size_t k = bl;
  if (!(bl == 1 && base[0] == '/'))
    r[k++] = '/';
  memcpy(r + k, p, pl + 1);
  return r;
}

/* ---- plugin "config": any JSON, but no duplicate keys or non-finite
 * numbers, since the plugin parses the text again. ---------------------- */

typedef struct keyref {
  const char *key;
  size_t index;
} keyref;

static int keyref_cmp(const void *a, const void *b) {
  const keyref *x = a, *y = b;
  int r = strcmp(x->key, y->key);
  if (r)
    return r;
  return x->index < y->index ? -1 : x->index > y->index;
}

static int check_unique_keys(ctx *c, const cJSON *obj) {
  size_t n = 0;
  for (const cJSON *it = obj->child; it; it = it->next)
    n++;
  if (n < 2)
    return 0;
  keyref *refs = malloc(n * sizeof *refs);
  if (!refs)
    return oom(c);
  size_t i = 0;
  for (const cJSON *it = obj->child; it; it = it->next, i++)
    refs[i] = (keyref){it->string ? it->string : "", i};
  qsort(refs, n, sizeof *refs, keyref_cmp);
  const char *dup = NULL;
  size_t first_dup = n;
  for (i = 1; i < n; i++)
    if (strcmp(refs[i].key, refs[i - 1].key) == 0 && refs[i].index < first_dup)
      first_dup = refs[i].index, dup = refs[i].key;
  int rc = 0;
  if (dup) {
    path_key(c, dup);
    rc = fail(c, -EINVAL, "duplicate key");
  }
  free(refs);
  return rc;
}

static int check_any(ctx *c, const cJSON *v) {
  if (cJSON_IsNumber(v) && !isfinite(v->valuedouble))
    return expect(c, v, "a finite number");
  if (!cJSON_IsArray(v) && !cJSON_IsObject(v))
    return 0;
  if (cJSON_IsObject(v)) {
    int rc = check_unique_keys(c, v);
    if (rc)
      return rc;
  }
  size_t i = 0;
  for (const cJSON *it = v->child; it; it = it->next, i++) {
    size_t save = cJSON_IsObject(v) ? path_key(c, it->string) : path_index(c, i);
    int rc = check_any(c, it);
    if (rc)
      return rc;
    path_pop(c, save);
  }
  return 0;
}

/* ---- plugins ----------------------------------------------------------- */

static const char *const callback_keys[] = {
    "on_load", "on_unload", "on_connected", "on_recv",
    "on_send", "on_disconnected", "on_tick"};

static char **callback_slot(cfg_callbacks *cb, size_t k) {
  char **slots[] = {&cb->on_load, &cb->on_unload, &cb->on_connected,
                    &cb->on_recv, &cb->on_send, &cb->on_disconnected,
                    &cb->on_tick};
  return slots[k];
}

static int parse_callbacks(ctx *c, const cJSON *v, cfg_callbacks *cb) {
  const cJSON *f[COUNT(callback_keys)];
  if (!cJSON_IsObject(v))
    return expect(c, v, "an object");
  int rc = match_keys(c, v, callback_keys, COUNT(callback_keys), f);
  for (size_t k = 0; rc == 0 && k < COUNT(callback_keys); k++) {
    if (!f[k])
      continue;
    size_t save = path_key(c, callback_keys[k]);
    if (!cJSON_IsString(f[k]) || !f[k]->valuestring)
      return expect(c, f[k], "a string (exported symbol name)");
    if (!is_symbol(f[k]->valuestring))
      return expect(c, f[k], "a C identifier of at most %d characters "
                    "(exported symbol name)", MAX_SYMBOL_LEN);
    if (!(*callback_slot(cb, k) = strdup(f[k]->valuestring)))
      return oom(c);
    path_pop(c, save);
  }
  return rc;
}

enum { P_NAME, P_PATH, P_CALLBACKS, P_CONFIG, P_THREADING, P_TICK, P_WATCH, P_N };
static const char *const plugin_keys[P_N] = {
    "name", "path", "callbacks", "config", "threading", "tick_ms", "watch"};

static int parse_plugin(ctx *c, const cJSON *v, cfg_plugin *p) {
  const cJSON *f[P_N];
  int rc, e = CFG_THREADING_SESSION;
  size_t save;
  if (!cJSON_IsObject(v))
    return expect(c, v, "an object");
  if ((rc = match_keys(c, v, plugin_keys, P_N, f)) ||
      (rc = require(c, f, plugin_keys, P_NAME)) ||
      (rc = require(c, f, plugin_keys, P_PATH)))
    return rc;

  save = path_key(c, "name");
  if (!cJSON_IsString(f[P_NAME]) || !f[P_NAME]->valuestring ||
      !is_plugin_name(f[P_NAME]->valuestring))
    return expect(c, f[P_NAME], "a name of 1..%d characters from [A-Za-z0-9_-]",
                  MAX_NAME_LEN);
  if (!(p->name = strdup(f[P_NAME]->valuestring)))
    return oom(c);
  path_pop(c, save);

  save = path_key(c, "path");
  if ((rc = get_string(c, f[P_PATH], "path to the plugin's shared object",
                       &p->path)))
    return rc;
  if (!(p->resolved_path = resolve(c->base_dir, p->path)))
    return oom(c);
  if (strlen(p->resolved_path) >= MAX_PATH_LEN)
    return fail(c, -ENAMETOOLONG, "path too long (more than %d bytes)",
                MAX_PATH_LEN - 1);
  path_pop(c, save);

  if (f[P_CALLBACKS]) {
    save = path_key(c, "callbacks");
    if ((rc = parse_callbacks(c, f[P_CALLBACKS], &p->callbacks)))
      return rc;
    path_pop(c, save);
  }

  save = path_key(c, "config");
  if (f[P_CONFIG]) {
    if (!cJSON_IsObject(f[P_CONFIG]))
      return expect(c, f[P_CONFIG], "an object");
    if ((rc = check_any(c, f[P_CONFIG])))
      return rc;
    p->config_json = cJSON_PrintUnformatted(f[P_CONFIG]);
  } else {
    p->config_json = strdup("{}");
  }
  if (!p->config_json)
    return oom(c);
  path_pop(c, save);

  save = path_key(c, "threading");
  if ((rc = get_enum(c, f[P_THREADING], threading_names,
                     COUNT(threading_names), &e)))
    return rc;
  p->threading = (cfg_threading)e;
  path_pop(c, save);

  save = path_key(c, "tick_ms");
  if ((rc = get_unsigned(c, f[P_TICK], 0, 3600000, 0, &p->tick_ms)))
    return rc;
  path_pop(c, save);

  save = path_key(c, "watch");
  if ((rc = get_bool(c, f[P_WATCH], &p->watch)))
    return rc;
  path_pop(c, save);
  return 0;
}

/* ---- uniqueness -------------------------------------------------------- */

/* A fixed-size sort key (zero padded) and the array index it came from. */
typedef struct uref {
  unsigned char key[MAX_NAME_LEN + 8]; /* a plugin name, or family+addr+port */
  size_t index;
} uref;

static int uref_cmp(const void *a, const void *b) {
  const uref *x = a, *y = b;
  int r = memcmp(x->key, y->key, sizeof x->key);
  if (r)
    return r;
  return x->index < y->index ? -1 : x->index > y->index;
}

/* Sorts refs (key order, then index) and finds the repeated key whose later
 * occurrence comes first in the file: *later and *earlier get their indices.
 * Returns 1 when there is such a pair. */
static int find_repeat(uref *refs, size_t n, size_t *later, size_t *earlier) {
  int found = 0;
  qsort(refs, n, sizeof *refs, uref_cmp);
  for (size_t i = 1, start = 0; i < n; i++) {
    if (memcmp(refs[i].key, refs[start].key, sizeof refs[i].key) != 0) {
      start = i;
      continue;
    }
    if (i == start + 1 && (!found || refs[i].index < *later)) {
      *later = refs[i].index;
      *earlier = refs[start].index;
      found = 1;
    }
  }
  return found;
}

/* Plugin names as refs sorted by name (NULL when out of memory). */
static uref *plugin_refs(const cfg_server *cfg) {
  uref *refs = calloc(cfg->nplugins, sizeof *refs);
  if (!refs)
    return NULL;
  for (size_t i = 0; i < cfg->nplugins; i++) {
    memcpy(refs[i].key, cfg->plugins[i].name, strlen(cfg->plugins[i].name));
    refs[i].index = i;
  }
  qsort(refs, cfg->nplugins, sizeof *refs, uref_cmp);
  return refs;
}

static int check_plugin_names(ctx *c, cfg_server *cfg) {
  uref *refs = plugin_refs(cfg);
  size_t later = 0, earlier = 0;
  if (!refs)
    return oom(c);
  int rc = 0;
  if (find_repeat(refs, cfg->nplugins, &later, &earlier)) {
    char b[64];
    snprintf(b, sizeof b, "plugins[%zu].name", later);
    path_append(c, b);
    rc = fail(c, -EINVAL, "duplicate plugin name \"%s\" (same as plugins[%zu])",
              cfg->plugins[later].name, earlier);
  }
  free(refs);
  return rc;
}

static int uref_key_cmp(const void *key, const void *elem) {
  return memcmp(key, ((const uref *)elem)->key, sizeof ((const uref *)elem)->key);
}

/* Index of the plugin called name in the sorted, duplicate-free refs, or
 * nplugins when there is none. */
static size_t plugin_index(const cfg_server *cfg, const uref *names,
                           const char *name) {
  unsigned char key[sizeof names->key] = {0};
  size_t n = strlen(name);
  if (n > MAX_NAME_LEN)
    return cfg->nplugins;
  memcpy(key, name, n);
  const uref *r = bsearch(key, names, cfg->nplugins, sizeof *names, uref_key_cmp);
  return r ? r->index : cfg->nplugins;
}

/* ---- listeners --------------------------------------------------------- */

enum { L_ADDRESS, L_PORT, L_PLUGIN, L_FRAMING, L_N };
static const char *const listener_keys[L_N] = {"address", "port", "plugin",
                                               "framing"};

static int no_such_plugin(ctx *c, const cfg_server *cfg, const char *name) {
  char q[256], list[256];
  size_t len = 0;
  list[0] = '\0';
  for (size_t i = 0; i < cfg->nplugins; i++) {
    const char *sep = i ? ", " : "";
    size_t need = strlen(sep) + strlen(cfg->plugins[i].name);
    if (len + need + 5 >= sizeof list) {
      snprintf(list + len, sizeof list - len, ", ...");
      break;
    }
    len += (size_t)snprintf(list + len, sizeof list - len, "%s%s", sep,
                            cfg->plugins[i].name);
  }
  quote(name, q, sizeof q, GOT_STRING_BYTES);
  return fail(c, -EINVAL, "no plugin named %s (plugins: %s)", q, list);
}

static int parse_listener(ctx *c, const cJSON *v, cfg_server *cfg,
                          const uref *names, cfg_listener *l, uref *ref) {
  const cJSON *f[L_N];
  int rc, e = CFG_FRAMING_RAW;
  size_t save;
  if (!cJSON_IsObject(v))
    return expect(c, v, "an object");
  if ((rc = match_keys(c, v, listener_keys, L_N, f)) ||
      (rc = require(c, f, listener_keys, L_PORT)) ||
      (rc = require(c, f, listener_keys, L_PLUGIN)))
    return rc;

  save = path_key(c, "address");
  if (f[L_ADDRESS]) {
    const char *a = cJSON_IsString(f[L_ADDRESS]) ? f[L_ADDRESS]->valuestring : NULL;
    if (!a || (inet_pton(AF_INET, a, ref->key + 1) != 1 &&
               inet_pton(AF_INET6, a, ref->key + 1) != 1))
      return expect(c, f[L_ADDRESS], "an IPv4 or IPv6 address literal");
    ref->key[0] = strchr(a, ':') ? 6 : 4;
    l->address = strdup(a);
  } else {
    ref->key[0] = 4;
    inet_pton(AF_INET, "127.0.0.1", ref->key + 1);
    l->address = strdup("127.0.0.1");
  }
  if (!l->address)
    return oom(c);
  path_pop(c, save);

  save = path_key(c, "port");
  if ((rc = get_unsigned(c, f[L_PORT], 0, 65535, 0, &l->port)))
    return rc;
  ref->key[17] = (unsigned char)(l->port >> 8);
  ref->key[18] = (unsigned char)l->port;
  path_pop(c, save);

  save = path_key(c, "plugin");
  if (!cJSON_IsString(f[L_PLUGIN]) || !f[L_PLUGIN]->valuestring)
    return expect(c, f[L_PLUGIN], "a string (plugin name)");
  l->plugin_index = plugin_index(cfg, names, f[L_PLUGIN]->valuestring);
  if (l->plugin_index == cfg->nplugins)
    return no_such_plugin(c, cfg, f[L_PLUGIN]->valuestring);
  if (!(l->plugin = strdup(f[L_PLUGIN]->valuestring)))
    return oom(c);
  path_pop(c, save);

  save = path_key(c, "framing");
  if ((rc = get_enum(c, f[L_FRAMING], framing_names, COUNT(framing_names), &e)))
    return rc;
  l->framing = (cfg_framing)e;
  path_pop(c, save);
  return 0;
}

static int check_listener_addresses(ctx *c, cfg_server *cfg, uref *refs) {
  size_t n = 0, later = 0, earlier = 0;
  for (size_t i = 0; i < cfg->nlisteners; i++)
    if (cfg->listeners[i].port != 0)
      refs[n++] = refs[i]; /* n <= i: compacting in place is safe */
  if (!find_repeat(refs, n, &later, &earlier))
    return 0;
  const cfg_listener *l = &cfg->listeners[later];
  int v6 = strchr(l->address, ':') != NULL;
  path_key(c, "listeners");
  path_index(c, later);
  return fail(c, -EINVAL, "duplicate listener %s%s%s:%u (same as listeners[%zu])",
              v6 ? "[" : "", l->address, v6 ? "]" : "", l->port, earlier);
}

/* ---- top level --------------------------------------------------------- */

/* A non-empty array at key `key`, its length in *n. */
static int get_array(ctx *c, const cJSON *v, const char *key, size_t *n) {
  size_t save = path_key(c, key);
  if (!cJSON_IsArray(v) || !v->child)
    return expect(c, v, "a non-empty array");
  path_pop(c, save);
  *n = 0;
  for (const cJSON *it = v->child; it; it = it->next)
    (*n)++;
  return 0;
}

static int parse_limits(ctx *c, const cJSON *v, cfg_limits *lim) {
  static const char *const keys[] = {"max_packet_size",   "max_send_queue",
                                     "idle_timeout_ms",   "packet_timeout_ms",
                                     "max_conns_per_ip",  "slow_callback_ms",
                                     "quarantine_after",  "send_timeout_ms",
                                     "recv_backlog",      "plugin_backlog"};
  const cJSON *f[COUNT(keys)];
  unsigned long long q = lim->max_send_queue, rb = lim->recv_backlog,
                     pb = lim->plugin_backlog;
  size_t save;
  int rc;
  if (!cJSON_IsObject(v))
    return expect(c, v, "an object");
  if ((rc = match_keys(c, v, keys, COUNT(keys), f)))
    return rc;
  save = path_key(c, keys[0]);
  if ((rc = get_unsigned(c, f[0], 4, 65535, 0, &lim->max_packet_size)))
    return rc;
  path_pop(c, save);
  save = path_key(c, keys[1]);
  if ((rc = get_uint(c, f[1], 1024, 1073741824, 0, &q)))
    return rc;
  lim->max_send_queue = (size_t)q;
  path_pop(c, save);
  save = path_key(c, keys[2]);
  if ((rc = get_unsigned(c, f[2], 100, 86400000, 1, &lim->idle_timeout_ms)))
    return rc;
  path_pop(c, save);
  save = path_key(c, keys[3]);
  if ((rc = get_unsigned(c, f[3], 100, 3600000, 1, &lim->packet_timeout_ms)))
    return rc;
  path_pop(c, save);
  save = path_key(c, keys[4]);
  if ((rc = get_unsigned(c, f[4], 1, 1000000, 1, &lim->max_conns_per_ip)))
    return rc;
  path_pop(c, save);
  save = path_key(c, keys[5]);
  if ((rc = get_unsigned(c, f[5], 1, 600000, 1, &lim->slow_callback_ms)))
    return rc;
  path_pop(c, save);
  save = path_key(c, keys[6]);
  if ((rc = get_unsigned(c, f[6], 1, 1000000, 1, &lim->quarantine_after)))
    return rc;
  path_pop(c, save);
  save = path_key(c, keys[7]);
  if ((rc = get_unsigned(c, f[7], 100, 3600000, 1, &lim->send_timeout_ms)))
    return rc;
  path_pop(c, save);
  save = path_key(c, keys[8]);
  if ((rc = get_uint(c, f[8], 4096, 16777216, 0, &rb)))
    return rc;
  lim->recv_backlog = (size_t)rb;
  path_pop(c, save);
  save = path_key(c, keys[9]);
  if ((rc = get_uint(c, f[9], 65536, 1073741824, 0, &pb)))
    return rc;
  lim->plugin_backlog = (size_t)pb;
  path_pop(c, save);
  return 0;
}

enum { S_WORKERS, S_BACKEND, S_SESSIONS, S_LOG, S_ADMIN, S_LIMITS, S_PLUGINS,
       S_LISTENERS, S_PLUGIN_DIR, S_N };
static const char *const server_keys[S_N] = {
    "workers", "io_backend", "max_sessions", "log_level",
    "admin_socket", "limits", "plugins", "listeners", "plugin_dir"};

static const char *printable(const char *in, char *out, size_t len) {
  size_t k = 0;
  for (; *in && k + 1 < len; in++)
    out[k++] = (unsigned char)*in < 0x20 || *in == 0x7f ? '?' : *in;
  out[k] = '\0';
  return out;
}

/* Whether the absolute, link-free path lies in dir (also link-free). */
static int inside(const char *path, const char *dir) {
  size_t n = strlen(dir);
  if (n == 1 && dir[0] == '/')
    return path[0] == '/';
  return strncmp(path, dir, n) == 0 && (path[n] == '/' || path[n] == '\0');
}

/* With plugin_dir set, each plugin file must lie in that directory or below
 * it once every symbolic link and ".." is resolved: the file's own path when
 * it exists (a link to a file elsewhere is refused, a link that stays inside
 * is fine), else its directory's (the file may not exist yet; the loader
 * checks again what it opens). */
static int check_plugin_dir(ctx *c, cfg_server *cfg) {
  char dir[PATH_MAX], real[PATH_MAX], tmp[PATH_MAX], shown[PATH_MAX], where[PATH_MAX];
  size_t save;
  if (!cfg->plugin_dir)
    return 0;
  save = path_key(c, "plugin_dir");
  if (!realpath(cfg->plugin_dir, dir))
    return fail(c, -ENOENT, "directory %s: %s", printable(cfg->plugin_dir, shown, sizeof(shown)),
                strerror(errno));
  path_pop(c, save);
  if (!(cfg->plugin_dir_real = strdup(dir)))
    return oom(c);
  for (size_t i = 0; i < cfg->nplugins; i++) {
    cfg_plugin *p = &cfg->plugins[i];
    p->confine_dir = cfg->plugin_dir_real;
    save = path_key(c, "plugins");
    path_index(c, i);
    path_key(c, "path");
    int exists = realpath(p->resolved_path, real) != NULL;
    if (!exists) {
      char *slash;
      if (errno != ENOENT)
        return fail(c, -errno, "cannot resolve %s: %s",
                    printable(p->resolved_path, shown, sizeof(shown)), strerror(errno));
      snprintf(tmp, sizeof(tmp), "%s", p->resolved_path);
      slash = strrchr(tmp, '/');
      if (slash == tmp)
        slash[1] = '\0';
      else if (slash)
        *slash = '\0';
      if (!realpath(slash ? tmp : ".", real))
        return fail(c, -ENOENT, "directory of %s: %s",
                    printable(p->resolved_path, shown, sizeof(shown)), strerror(errno));
    }
    if (!inside(real, dir))
      return fail(c, -EPERM, "\"%s\" %s %s, outside plugin_dir (%s)",
                  printable(p->path, shown, sizeof(shown)), exists ? "resolves to" : "is in",
                  printable(real, tmp, sizeof(tmp)), printable(dir, where, sizeof(where)));
    path_pop(c, save);
  }
  return 0;
}

static int parse_server(ctx *c, const cJSON *root, cfg_server *cfg) {
  const cJSON *f[S_N];
  int rc, e;
  size_t save, i;
  const cJSON *it;
  if (!cJSON_IsObject(root))
    return expect(c, root, "an object at the top level");
  if ((rc = match_keys(c, root, server_keys, S_N, f)) ||
      (rc = require(c, f, server_keys, S_PLUGINS)) ||
      (rc = require(c, f, server_keys, S_LISTENERS)))
    return rc;

  save = path_key(c, "workers");
  if ((rc = get_unsigned(c, f[S_WORKERS], 1, 64, 0, &cfg->workers)))
    return rc;
  path_pop(c, save);

  save = path_key(c, "io_backend");
  e = (int)cfg->io_backend;
  if ((rc = get_enum(c, f[S_BACKEND], backend_names, COUNT(backend_names), &e)))
    return rc;
  cfg->io_backend = (cfg_backend)e;
  path_pop(c, save);

  save = path_key(c, "max_sessions");
  if ((rc = get_unsigned(c, f[S_SESSIONS], 1, 1000000, 0, &cfg->max_sessions)))
    return rc;
  path_pop(c, save);

  save = path_key(c, "log_level");
  e = (int)cfg->log_level;
  if ((rc = get_enum(c, f[S_LOG], log_level_names, COUNT(log_level_names), &e)))
    return rc;
  cfg->log_level = (cfg_log_level)e;
  path_pop(c, save);

  save = path_key(c, "admin_socket");
  char *sock = NULL;
  if ((rc = get_string(c, f[S_ADMIN], "unix socket path", &sock)))
    return rc;
  cfg->admin_socket = resolve(c->base_dir, sock ? sock : "run/pierd.sock");
  free(sock);
  if (!cfg->admin_socket)
    return oom(c);
  if (strlen(cfg->admin_socket) > MAX_SOCKET_PATH)
    return fail(c, -ENAMETOOLONG,
                "path too long for a unix socket once resolved "
                "(%zu bytes, at most %d)", strlen(cfg->admin_socket),
                MAX_SOCKET_PATH);
  path_pop(c, save);

  save = path_key(c, "plugin_dir");
  char *pdir = NULL;
  if ((rc = get_string(c, f[S_PLUGIN_DIR], "directory path", &pdir)))
    return rc;
  if (pdir) {
    cfg->plugin_dir = resolve(c->base_dir, pdir);
    free(pdir);
    if (!cfg->plugin_dir)
      return oom(c);
  }
  path_pop(c, save);

  if (f[S_LIMITS]) {
    save = path_key(c, "limits");
    if ((rc = parse_limits(c, f[S_LIMITS], &cfg->limits)))
      return rc;
    path_pop(c, save);
  }

  if ((rc = get_array(c, f[S_PLUGINS], "plugins", &cfg->nplugins)))
    return rc;
  if (!(cfg->plugins = calloc(cfg->nplugins, sizeof *cfg->plugins)))
    return oom(c);
  for (i = 0, it = f[S_PLUGINS]->child; it; it = it->next, i++) {
    cfg_plugin *p = &cfg->plugins[i];
    p->threading = CFG_THREADING_SESSION;
    save = path_key(c, "plugins");
    path_index(c, i);
    if ((rc = parse_plugin(c, it, p)))
      return rc;
    path_pop(c, save);
  }
  if ((rc = check_plugin_names(c, cfg)) || (rc = check_plugin_dir(c, cfg)))
    return rc;

  size_t nl = 0;
  if ((rc = get_array(c, f[S_LISTENERS], "listeners", &nl)))
    return rc;
  if (!(cfg->listeners = calloc(nl, sizeof *cfg->listeners)))
    return oom(c);
  uref *refs = calloc(nl, sizeof *refs), *names = plugin_refs(cfg);
  if (!refs || !names) {
    free(refs);
    free(names);
    return oom(c);
  }
  for (i = 0, it = f[S_LISTENERS]->child; it; it = it->next, i++) {
    cfg->nlisteners = i + 1;
    cfg->listeners[i].framing = CFG_FRAMING_RAW;
    refs[i].index = i;
    save = path_key(c, "listeners");
    path_index(c, i);
    if ((rc = parse_listener(c, it, cfg, names, &cfg->listeners[i], &refs[i])))
      break;
    path_pop(c, save);
  }
  if (rc == 0)
    rc = check_listener_addresses(c, cfg, refs);
  free(refs);
  free(names);
  return rc;
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
  char msg[256];
  snprintf(msg, sizeof msg, "%zu:%zu: %s", line, pos - bol + 1, what);
  if (c->err && c->errlen)
    snprintf(c->err, c->errlen, "%s:%s", c->name, msg);
  return -EINVAL;
}

static int syntax_error(ctx *c, const char *text, size_t len, size_t skip,
                        size_t pos) {
  char near[128], what[160];
  size_t n = 0, show = cut_len(text + pos, len - pos, SNIPPET_BYTES);
  near[0] = '\0';
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
    if (n + tl >= sizeof near)
      break;
    memcpy(near + n, tmp, tl + 1);
    n += tl;
  }
  if (pos >= len)
    snprintf(what, sizeof what, "syntax error at end of file");
  else
    snprintf(what, sizeof what, "syntax error near '%s'", near);
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
    return fail(c, -EINVAL, "empty file");

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
    for (size_t k = 0; k < COUNT(callback_keys); k++)
      free(*callback_slot(&p->callbacks, k));
    free(p->config_json); /* cJSON's default allocator is malloc */
  }
  for (size_t i = 0; i < cfg->nlisteners && cfg->listeners; i++) {
    free(cfg->listeners[i].address);
    free(cfg->listeners[i].plugin);
  }
  free(cfg->plugins);
  free(cfg->listeners);
  free(cfg->path);
  free(cfg->base_dir);
  free(cfg->admin_socket);
  free(cfg->plugin_dir);
  free(cfg->plugin_dir_real);
  free(cfg);
}

int cfg_load_text(const char *text, size_t len, const char *name,
                  const char *base_dir, cfg_server **out, char *err,
                  size_t errlen) {
  ctx c = {.name = name ? name : "config",
           .base_dir = base_dir && *base_dir ? base_dir : ".",
           .err = err,
           .errlen = errlen};
  if (err && errlen)
    err[0] = '\0';
  if (!out || (!text && len))
    return fail(&c, -EINVAL, "invalid arguments");
  *out = NULL;

  char *buf = malloc(len + 1);
  if (!buf)
    return oom(&c);
  if (len)
    memcpy(buf, text, len);
  buf[len] = '\0';

  cJSON *root = NULL;
  cfg_server *cfg = calloc(1, sizeof *cfg);
  int rc = cfg ? parse_json(&c, buf, len, &root) : oom(&c);
  if (rc == 0) {
    cfg->workers = 1;
    cfg->io_backend = CFG_BACKEND_AUTO;
    cfg->max_sessions = 10000;
    cfg->log_level = CFG_LOG_INFO;
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
    rc = cfg->path && cfg->base_dir ? parse_server(&c, root, cfg) : oom(&c);
  }
  cJSON_Delete(root);
  free(buf);
  if (rc) {
    cfg_free(cfg);
    return rc;
  }
  *out = cfg;
  return 0;
}

/* Directory part of path: "." when it has none, "/" for a file in the root. */
static char *dir_of(const char *path) {
  const char *slash = strrchr(path, '/');
  if (!slash)
    return strdup(".");
  size_t n = (size_t)(slash - path);
  while (n > 0 && path[n - 1] == '/')
    n--;
  if (n == 0)
    return strdup("/");
  char *d = malloc(n + 1);
  if (d) {
    memcpy(d, path, n);
    d[n] = '\0';
  }
  return d;
}

int cfg_load_file(const char *path, cfg_server **out, char *err,
                  size_t errlen) {
  ctx c = {.name = path ? path : "(null)", .err = err, .errlen = errlen};
  if (err && errlen)
    err[0] = '\0';
  if (!out || !path)
    return fail(&c, -EINVAL, "invalid arguments");
  *out = NULL;

  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int e = errno;
    return fail(&c, -e, "cannot read: %s", strerror(e));
  }
  struct stat st;
  if (fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
    close(fd);
    return fail(&c, -EISDIR, "cannot read: %s", strerror(EISDIR));
  }
  char *buf = malloc(CFG_MAX_FILE_SIZE + 1);
  if (!buf) {
    close(fd);
    return oom(&c);
  }
  size_t len = 0;
  int rc = 0;
  while (len <= CFG_MAX_FILE_SIZE) {
    ssize_t r = read(fd, buf + len, CFG_MAX_FILE_SIZE + 1 - len);
    if (r < 0 && errno == EINTR)
      continue;
    if (r < 0) {
      int e = errno;
      rc = fail(&c, -e, "cannot read: %s", strerror(e));
      break;
    }
    if (r == 0)
      break;
    len += (size_t)r;
  }
  close(fd);
  if (rc == 0 && len > CFG_MAX_FILE_SIZE)
    rc = fail(&c, -EFBIG, "file too large (more than %d bytes)",
              CFG_MAX_FILE_SIZE);
  if (rc == 0) {
    char *dir = dir_of(path);
    rc = dir ? cfg_load_text(buf, len, path, dir, out, err, errlen) : oom(&c);
    free(dir);
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
  return i < COUNT(framing_names) ? framing_names[i] : "unknown";
}

const char *cfg_threading_name(cfg_threading threading) {
  size_t i = (size_t)threading;
  return i < COUNT(threading_names) ? threading_names[i] : "unknown";
}

const char *cfg_log_level_name(cfg_log_level level) {
  size_t i = (size_t)level;
  return i < COUNT(log_level_names) ? log_level_names[i] : "unknown";
}
