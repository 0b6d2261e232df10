/* Loading of server.json: cJSON checks the syntax, this file the schema. Each
 * object's keys are matched against a fixed list first (unknown and duplicate
 * keys), then every value is converted with its type and range checked, then
 * cross references (listener -> plugin, uniqueness, plugin_dir) are resolved.
 * A problem does not stop the check: like a compiler, it goes on with what
 * is left (a bad value keeps its default, a bad entry is skipped by the
 * checks that need it) and reports up to CFG_MAX_ERRORS problems, sorted into
 * the order their values appear in the file. */
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
#include <stddef.h>
#include <stdarg.h>
#include <stdint.h>
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

/* One problem found, and where its value sits in the document. */
typedef struct error_rec {
  size_t ord;   /* pre-order number of the JSON node it is about */
  size_t seq;   /* order found, among problems about one node */
  int rc;
  char text[CFG_ERR_LINE];
} error_rec;

typedef struct node_ord {
  const cJSON *node;
  size_t ord;
} node_ord;

/* Where we are in the document, and what was found so far. */
typedef struct ctx {
  const char *name; /* file name shown first in every message */
  const char *base_dir;
  const cJSON *root;
  char path[256]; /* JSON path of the value being checked, e.g. plugins[0].name */
  size_t plen;
  const cJSON *at; /* the node the path names, or its nearest present parent */
  int oom;
  size_t nerr;  /* problems found */
  size_t nkept; /* of which kept: the first CFG_MAX_ERRORS in file order */
  error_rec kept[CFG_MAX_ERRORS];
  node_ord *order; /* every node's pre-order number, sorted by address; built
                      at the first problem */
  size_t norder;
  int order_tried;
} ctx;

/* ---- messages ---------------------------------------------------------- */

static int first(int rc, int r) { return rc ? rc : r; }

static size_t count_nodes(const cJSON *v) {
  size_t n = 0;
  for (const cJSON *it = v; it; it = it->next)
    n += 1 + count_nodes(it->child);
  return n;
}

/* Siblings in a loop, children by recursion: depth is bounded by cJSON's
 * nesting limit, width is not. */
static void number_nodes(const cJSON *v, node_ord *out, size_t *n) {
  for (const cJSON *it = v; it; it = it->next) {
    out[*n].node = it;
    out[*n].ord = *n;
    (*n)++;
    number_nodes(it->child, out, n);
  }
}

static int node_ord_cmp(const void *a, const void *b) {
  uintptr_t x = (uintptr_t)((const node_ord *)a)->node, y = (uintptr_t)((const node_ord *)b)->node;
  return x < y ? -1 : x > y;
}

/* Document order of node: its pre-order number (0 for none, or when there
 * is no memory for the table: then problems keep the order they were found). */
static size_t ord_of(ctx *c, const cJSON *node) {
  if (!node || !c->root)
    return 0;
  if (!c->order_tried) {
    c->order_tried = 1;
    size_t n = count_nodes(c->root);
    if ((c->order = malloc(n * sizeof *c->order))) {
      c->norder = 0;
      number_nodes(c->root, c->order, &c->norder);
      qsort(c->order, c->norder, sizeof *c->order, node_ord_cmp);
    }
  }
  if (!c->order)
    return 0;
  node_ord key = {.node = node};
  const node_ord *r = bsearch(&key, c->order, c->norder, sizeof *c->order, node_ord_cmp);
  return r ? r->ord : 0;
}

static int rec_before(const error_rec *a, const error_rec *b) {
  return a->ord < b->ord || (a->ord == b->ord && a->seq < b->seq);
}

static int rec_cmp(const void *a, const void *b) {
  const error_rec *x = a, *y = b;
  return rec_before(x, y) ? -1 : rec_before(y, x);
}

/* Records one problem about c->at; keeps it if it is among the first
 * CFG_MAX_ERRORS in file order. Returns rc. */
static int add_error(ctx *c, int rc, const char *text) {
  error_rec r = {.ord = ord_of(c, c->at), .seq = c->nerr++, .rc = rc};
  size_t worst = 0;
  if (c->nkept < CFG_MAX_ERRORS) {
    worst = c->nkept++;
  } else {
    for (size_t i = 1; i < c->nkept; i++)
      if (rec_before(&c->kept[worst], &c->kept[i]))
        worst = i;
    if (!rec_before(&r, &c->kept[worst]))
      return rc;
  }
  snprintf(r.text, sizeof r.text, "%s", text);
  c->kept[worst] = r;
  return rc;
}

static int fail(ctx *c, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Records "<name>: <path>: <message>" (or "<name>: <message>" at the top
 * level) and returns rc. */
static int fail(ctx *c, int rc, const char *fmt, ...) {
  char msg[640], line[CFG_ERR_LINE];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (c->plen)
    snprintf(line, sizeof line, "%s: %s: %s", c->name, c->path, msg);
  else
    snprintf(line, sizeof line, "%s: %s", c->name, msg);
  return add_error(c, rc, line);
}

/* Out of memory ends the whole check: nothing else is reported. */
static int oom(ctx *c) {
  c->oom = 1;
  return -ENOMEM;
}

/* Writes what was found to err (see cfg_load_file) and returns the code of
 * the first problem in file order, or 0 when there was none. */
static int finish(ctx *c, char *err, size_t errlen) {
  size_t len = 0;
  int rc;
  free(c->order);
  c->order = NULL;
  if (err && errlen)
    err[0] = '\0';
  if (c->oom) {
    if (err && errlen)
      snprintf(err, errlen, "%s: out of memory", c->name);
    return -ENOMEM;
  }
  if (c->nkept == 0)
    return 0;
  qsort(c->kept, c->nkept, sizeof c->kept[0], rec_cmp);
  rc = c->kept[0].rc;
  for (size_t i = 0; i <= c->nkept && err && len + 1 < errlen; i++) {
    char more[CFG_ERR_LINE];
    const char *line = more;
    if (i < c->nkept)
      line = c->kept[i].text;
    else if (c->nerr > c->nkept)
      snprintf(more, sizeof more, "%s: ... and %zu more error%s", c->name, c->nerr - c->nkept,
               c->nerr - c->nkept == 1 ? "" : "s");
    else
      break;
    int n = snprintf(err + len, errlen - len, "%s%s", i ? "\n" : "", line);
    if (n < 0 || (size_t)n >= errlen - len)
      break; /* cut; still terminated */
    len += (size_t)n;
  }
  return rc;
}

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

/* What path_pop restores. */
typedef struct mark {
  size_t plen;
  const cJSON *at;
} mark;

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

/* The first member called key of obj, or NULL. */
static const cJSON *member(const cJSON *obj, const char *key) {
  if (!cJSON_IsObject(obj))
    return NULL;
  for (const cJSON *it = obj->child; it; it = it->next)
    if (it->string && strcmp(it->string, key) == 0)
      return it;
  return NULL;
}

/* Extends the path by a key whose value is node (NULL when absent); returns
 * what path_pop restores. */
static mark path_node(ctx *c, const char *key, const cJSON *node) {
  mark save = {c->plen, c->at};
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
  if (node)
    c->at = node;
  return save;
}

/* The same for the first member called key of the current object. */
static mark path_key(ctx *c, const char *key) { return path_node(c, key, member(c->at, key)); }

static mark path_index(ctx *c, size_t i, const cJSON *node) {
  mark save = {c->plen, c->at};
  char b[32];
  snprintf(b, sizeof b, "[%zu]", i);
  path_append(c, b);
  if (node)
    c->at = node;
  return save;
}

/* Goes back to the top of the document, for a check that runs after the
 * values it compares were read. */
static mark path_root(ctx *c) {
  mark save = {c->plen, c->at};
  c->plen = 0;
  c->path[0] = '\0';
  c->at = c->root;
  return save;
}

static void path_pop(ctx *c, mark save) {
  c->plen = save.plen;
  c->path[save.plen] = '\0';
  c->at = save.at;
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
 * (NULL when absent; the first one when repeated). Every unknown and every
 * repeated key is reported; returns the first code. */
static int match_keys(ctx *c, const cJSON *obj, const char *const *keys,
                      size_t n, const cJSON **found) {
  int rc = 0;
  for (size_t k = 0; k < n; k++)
    found[k] = NULL;
  for (const cJSON *it = obj->child; it; it = it->next) {
    const char *key = it->string ? it->string : "";
    size_t k = 0;
    while (k < n && strcmp(key, keys[k]) != 0)
      k++;
    mark save = path_node(c, key, it);
    if (k == n) {
      size_t best = 3, bi = n;
      for (size_t j = 0; j < n; j++) {
        size_t dist = edit_distance(key, keys[j]);
        if (dist < best)
          best = dist, bi = j;
      }
      if (bi < n)
        rc = first(rc, fail(c, -EINVAL, "unknown key (did you mean \"%s\"?)", keys[bi]));
      else
        rc = first(rc, fail(c, -EINVAL, "unknown key"));
    } else if (found[k]) {
      rc = first(rc, fail(c, -EINVAL, "duplicate key"));
    } else {
      found[k] = it;
    }
    path_pop(c, save);
  }
  return rc;
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
    return oom(c);
  size_t i = 0;
  for (const cJSON *it = obj->child; it; it = it->next, i++)
    refs[i] = (keyref){it->string ? it->string : "", i, it};
  qsort(refs, n, sizeof *refs, keyref_cmp);
  int rc = 0;
  for (i = 1; i < n; i++)
    if (strcmp(refs[i].key, refs[i - 1].key) == 0) {
      mark save = path_node(c, refs[i].key, refs[i].node);
      rc = first(rc, fail(c, -EINVAL, "duplicate key"));
      path_pop(c, save);
    }
  free(refs);
  return rc;
}

static int check_any(ctx *c, const cJSON *v) {
  if (cJSON_IsNumber(v) && !isfinite(v->valuedouble))
    return expect(c, v, "a finite number");
  if (!cJSON_IsArray(v) && !cJSON_IsObject(v))
    return 0;
  int rc = 0;
  if (cJSON_IsObject(v))
    rc = check_unique_keys(c, v);
  size_t i = 0;
  for (const cJSON *it = v->child; it && !c->oom; it = it->next, i++) {
    mark save = cJSON_IsObject(v) ? path_node(c, it->string, it) : path_index(c, i, it);
    rc = first(rc, check_any(c, it));
    path_pop(c, save);
  }
  return c->oom ? -ENOMEM : rc;
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
  for (size_t k = 0; k < COUNT(callback_keys); k++) {
    if (!f[k])
      continue;
    mark save = path_node(c, callback_keys[k], f[k]);
    if (!cJSON_IsString(f[k]) || !f[k]->valuestring)
      rc = first(rc, expect(c, f[k], "a string (exported symbol name)"));
    else if (!is_symbol(f[k]->valuestring))
      rc = first(rc, expect(c, f[k], "a C identifier of at most %d characters "
                            "(exported symbol name)", MAX_SYMBOL_LEN));
    else if (!(*callback_slot(cb, k) = strdup(f[k]->valuestring)))
      return oom(c);
    path_pop(c, save);
  }
  return rc;
}

enum { P_NAME, P_PATH, P_CALLBACKS, P_CONFIG, P_THREADING, P_TICK, P_WATCH, P_N };
static const char *const plugin_keys[P_N] = {
    "name", "path", "callbacks", "config", "threading", "tick_ms", "watch"};

/* Fills p from v. p->name stays NULL when the name is missing or bad, and
 * p->resolved_path when the path is: the cross checks skip those. */
static int parse_plugin(ctx *c, const cJSON *v, cfg_plugin *p) {
  const cJSON *f[P_N];
  int rc, r, e = CFG_THREADING_SESSION;
  mark save;
  if (!cJSON_IsObject(v))
    return expect(c, v, "an object");
  rc = match_keys(c, v, plugin_keys, P_N, f);
  rc = first(rc, require(c, f, plugin_keys, P_NAME));
  rc = first(rc, require(c, f, plugin_keys, P_PATH));

  if (f[P_NAME]) {
    save = path_node(c, "name", f[P_NAME]);
    if (!cJSON_IsString(f[P_NAME]) || !f[P_NAME]->valuestring ||
        !is_plugin_name(f[P_NAME]->valuestring))
      rc = first(rc, expect(c, f[P_NAME], "a name of 1..%d characters from [A-Za-z0-9_-]",
                            MAX_NAME_LEN));
    else if (!(p->name = strdup(f[P_NAME]->valuestring)))
      return oom(c);
    path_pop(c, save);
  }

  if (f[P_PATH]) {
    save = path_node(c, "path", f[P_PATH]);
    r = get_string(c, f[P_PATH], "path to the plugin's shared object", &p->path);
    if (c->oom)
      return -ENOMEM;
    rc = first(rc, r);
    if (p->path) {
      char *full = resolve(c->base_dir, p->path);
      if (!full)
        return oom(c);
      if (strlen(full) >= MAX_PATH_LEN) {
        rc = first(rc, fail(c, -ENAMETOOLONG, "path too long (more than %d bytes)",
                            MAX_PATH_LEN - 1));
        free(full);
      } else {
        p->resolved_path = full;
      }
    }
    path_pop(c, save);
  }

  if (f[P_CALLBACKS]) {
    save = path_node(c, "callbacks", f[P_CALLBACKS]);
    rc = first(rc, parse_callbacks(c, f[P_CALLBACKS], &p->callbacks));
    path_pop(c, save);
    if (c->oom)
      return -ENOMEM;
  }

  save = path_node(c, "config", f[P_CONFIG]);
  if (f[P_CONFIG]) {
    if (!cJSON_IsObject(f[P_CONFIG])) {
      rc = first(rc, expect(c, f[P_CONFIG], "an object"));
    } else if ((r = check_any(c, f[P_CONFIG]))) {
      if (c->oom)
        return -ENOMEM;
      rc = first(rc, r);
    } else if (!(p->config_json = cJSON_PrintUnformatted(f[P_CONFIG]))) {
      return oom(c);
    }
  } else if (!(p->config_json = strdup("{}"))) {
    return oom(c);
  }
  path_pop(c, save);

  save = path_node(c, "threading", f[P_THREADING]);
  rc = first(rc, get_enum(c, f[P_THREADING], threading_names, COUNT(threading_names), &e));
  p->threading = (cfg_threading)e;
  path_pop(c, save);

  save = path_node(c, "tick_ms", f[P_TICK]);
  rc = first(rc, get_unsigned(c, f[P_TICK], 0, 3600000, 0, &p->tick_ms));
  path_pop(c, save);

  save = path_node(c, "watch", f[P_WATCH]);
  rc = first(rc, get_bool(c, f[P_WATCH], &p->watch));
  path_pop(c, save);
  return rc;
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

/* The names of the plugins that have one, as refs sorted by name (then by
 * index); their number in *n. NULL when out of memory. */
static uref *plugin_refs(const cfg_server *cfg, size_t *n) {
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
static int check_plugin_names(ctx *c, const cfg_server *cfg, const cJSON *arr,
                              const cJSON *const *nodes) {
  size_t n, start = 0;
  uref *refs = plugin_refs(cfg, &n);
  int rc = 0;
  if (!refs)
    return oom(c);
  for (size_t i = 1; i < n; i++) {
    if (memcmp(refs[i].key, refs[start].key, sizeof refs[i].key) != 0) {
      start = i;
      continue;
    }
    size_t k = refs[i].index;
    mark save = path_root(c);
    path_node(c, "plugins", arr);
    path_index(c, k, nodes[k]);
    path_node(c, "name", member(nodes[k], "name"));
    rc = first(rc, fail(c, -EINVAL, "duplicate plugin name \"%s\" (same as plugins[%zu])",
                        cfg->plugins[k].name, refs[start].index));
    path_pop(c, save);
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

enum { L_ADDRESS, L_PORT, L_PLUGIN, L_FRAMING, L_N };
static const char *const listener_keys[L_N] = {"address", "port", "plugin",
                                               "framing"};

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
  quote(name, q, sizeof q, GOT_STRING_BYTES);
  return fail(c, -EINVAL, "no plugin named %s (plugins: %s)", q, list);
}

/* The plugin names a listener may refer to: nnames sorted refs; names_known
 * is 0 when some plugin has no usable name (then an unknown name is not
 * reported: it may be that one). */
typedef struct plugin_names {
  const uref *refs;
  size_t n;
  int known;
} plugin_names;

/* Fills l from v. *addr_ok is set when its address and port are valid, so
 * that ref can take part in the duplicate check. */
static int parse_listener(ctx *c, const cJSON *v, cfg_server *cfg, const plugin_names *names,
                          cfg_listener *l, uref *ref, int *addr_ok) {
  const cJSON *f[L_N];
  int rc, e = CFG_FRAMING_RAW, a_ok = 0, p_ok = 0;
  mark save;
  *addr_ok = 0;
  if (!cJSON_IsObject(v))
    return expect(c, v, "an object");
  rc = match_keys(c, v, listener_keys, L_N, f);
  rc = first(rc, require(c, f, listener_keys, L_PORT));
  rc = first(rc, require(c, f, listener_keys, L_PLUGIN));

  save = path_node(c, "address", f[L_ADDRESS]);
  if (f[L_ADDRESS]) {
    const char *a = cJSON_IsString(f[L_ADDRESS]) ? f[L_ADDRESS]->valuestring : NULL;
    if (!a || (inet_pton(AF_INET, a, ref->key + 1) != 1 &&
               inet_pton(AF_INET6, a, ref->key + 1) != 1)) {
      rc = first(rc, expect(c, f[L_ADDRESS], "an IPv4 or IPv6 address literal"));
    } else {
      ref->key[0] = strchr(a, ':') ? 6 : 4;
      if (!(l->address = strdup(a)))
        return oom(c);
      a_ok = 1;
    }
  } else {
    ref->key[0] = 4;
    inet_pton(AF_INET, "127.0.0.1", ref->key + 1);
    if (!(l->address = strdup("127.0.0.1")))
      return oom(c);
    a_ok = 1;
  }
  path_pop(c, save);

  if (f[L_PORT]) {
    save = path_node(c, "port", f[L_PORT]);
    int r = get_unsigned(c, f[L_PORT], 0, 65535, 0, &l->port);
    rc = first(rc, r);
    if (r == 0) {
      ref->key[17] = (unsigned char)(l->port >> 8);
      ref->key[18] = (unsigned char)l->port;
      p_ok = 1;
    }
    path_pop(c, save);
  }

  if (f[L_PLUGIN]) {
    save = path_node(c, "plugin", f[L_PLUGIN]);
    if (!cJSON_IsString(f[L_PLUGIN]) || !f[L_PLUGIN]->valuestring) {
      rc = first(rc, expect(c, f[L_PLUGIN], "a string (plugin name)"));
    } else {
      l->plugin_index = plugin_index(cfg, names->refs, names->n, f[L_PLUGIN]->valuestring);
      if (l->plugin_index == cfg->nplugins) {
        if (names->known) /* else that plugin's bad name was reported */
          rc = first(rc, no_such_plugin(c, cfg, f[L_PLUGIN]->valuestring));
      } else if (!(l->plugin = strdup(f[L_PLUGIN]->valuestring))) {
        return oom(c);
      }
    }
    path_pop(c, save);
  }

  save = path_node(c, "framing", f[L_FRAMING]);
  rc = first(rc, get_enum(c, f[L_FRAMING], framing_names, COUNT(framing_names), &e));
  l->framing = (cfg_framing)e;
  path_pop(c, save);
  *addr_ok = a_ok && p_ok;
  return rc;
}

/* Every listener whose address and port an earlier one has (port 0 never
 * conflicts). refs[0..n) are the listeners with a valid address and port. */
static int check_listener_addresses(ctx *c, const cfg_server *cfg, uref *refs, size_t n,
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
    mark save = path_root(c);
    path_node(c, "listeners", arr);
    path_index(c, k, nodes[k]);
    rc = first(rc, fail(c, -EINVAL, "duplicate listener %s%s%s:%u (same as listeners[%zu])",
                        v6 ? "[" : "", l->address, v6 ? "]" : "", l->port, refs[start].index));
    path_pop(c, save);
  }
  return rc;
}

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
    return expect(c, v, "an object");
  for (size_t k = 0; k < COUNT(limits); k++)
    keys[k] = limits[k].key;
  rc = match_keys(c, v, keys, COUNT(keys), f);
  for (size_t k = 0; k < COUNT(limits); k++) {
    unsigned long long x;
    if (!f[k])
      continue;
    mark save = path_node(c, limits[k].key, f[k]);
    int r = get_uint(c, f[k], limits[k].lo, limits[k].hi, limits[k].zero_ok, &x);
    rc = first(rc, r);
    if (r == 0 && limits[k].u)
      *limits[k].u = (unsigned)x;
    else if (r == 0)
      *limits[k].z = (size_t)x;
    path_pop(c, save);
  }
  return rc;
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
 * checks again what it opens). nodes[i] is plugins[i]'s object. */
static int check_plugin_dir(ctx *c, cfg_server *cfg, const cJSON *arr,
                            const cJSON *const *nodes) {
  char dir[PATH_MAX], real[PATH_MAX], tmp[PATH_MAX], shown[PATH_MAX], where[PATH_MAX];
  int rc = 0;
  mark save;
  if (!cfg->plugin_dir)
    return 0;
  if (!realpath(cfg->plugin_dir, dir)) {
    int e = errno;
    save = path_root(c);
    path_key(c, "plugin_dir");
    rc = fail(c, -ENOENT, "directory %s: %s", printable(cfg->plugin_dir, shown, sizeof(shown)),
              strerror(e));
    path_pop(c, save);
    return rc;
  }
  if (!(cfg->plugin_dir_real = strdup(dir)))
    return oom(c);
  for (size_t i = 0; i < cfg->nplugins; i++) {
    cfg_plugin *p = &cfg->plugins[i];
    p->confine_dir = cfg->plugin_dir_real;
    if (!p->resolved_path)
      continue; /* its path was reported */
    save = path_root(c);
    path_node(c, "plugins", arr);
    path_index(c, i, nodes[i]);
    path_node(c, "path", member(nodes[i], "path"));
    int exists = realpath(p->resolved_path, real) != NULL, e = errno;
    if (!exists && e != ENOENT) {
      rc = first(rc, fail(c, -e, "cannot resolve %s: %s",
                          printable(p->resolved_path, shown, sizeof(shown)), strerror(e)));
    } else {
      char *slash = NULL;
      if (!exists) {
        snprintf(tmp, sizeof(tmp), "%s", p->resolved_path);
        slash = strrchr(tmp, '/');
        if (slash == tmp)
          slash[1] = '\0';
        else if (slash)
          *slash = '\0';
      }
      if (!exists && !realpath(slash ? tmp : ".", real))
        rc = first(rc, fail(c, -ENOENT, "directory of %s: %s",
                            printable(p->resolved_path, shown, sizeof(shown)), strerror(errno)));
      else if (!inside(real, dir))
        rc = first(rc, fail(c, -EPERM, "\"%s\" %s %s, outside plugin_dir (%s)",
                            printable(p->path, shown, sizeof(shown)),
                            exists ? "resolves to" : "is in", printable(real, tmp, sizeof(tmp)),
                            printable(dir, where, sizeof(where))));
    }
    path_pop(c, save);
  }
  return rc;
}

/* A non-empty array, its length in *n; reported otherwise. */
static int get_array(ctx *c, const cJSON *v, size_t *n) {
  *n = 0;
  if (!cJSON_IsArray(v) || !v->child)
    return expect(c, v, "a non-empty array");
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
    return oom(c);
  }
  cfg->nplugins = n;
  *names_known = 1;
  for (i = 0, it = arr->child; it && !c->oom; it = it->next, i++) {
    cfg_plugin *p = &cfg->plugins[i];
    p->threading = CFG_THREADING_SESSION;
    nodes[i] = it;
    mark save = path_index(c, i, it);
    rc = first(rc, parse_plugin(c, it, p));
    path_pop(c, save);
    if (!p->name)
      *names_known = 0;
  }
  if (!c->oom)
    rc = first(rc, check_plugin_names(c, cfg, arr, nodes));
  if (!c->oom)
    rc = first(rc, check_plugin_dir(c, cfg, arr, nodes));
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
  pnames = plugin_refs(cfg, &names.n);
  names.refs = pnames;
  if (!cfg->listeners || !refs || !nodes || !pnames) {
    free(refs);
    free(nodes);
    free(pnames);
    return oom(c);
  }
  for (i = 0, it = arr->child; it && !c->oom; it = it->next, i++) {
    int ok;
    cfg->nlisteners = i + 1;
    cfg->listeners[i].framing = CFG_FRAMING_RAW;
    nodes[i] = it;
    refs[nok].index = i;
    mark save = path_index(c, i, it);
    rc = first(rc, parse_listener(c, it, cfg, &names, &cfg->listeners[i], &refs[nok], &ok));
    path_pop(c, save);
    if (ok)
      nok++;
    else
      memset(&refs[nok], 0, sizeof refs[nok]);
  }
  if (!c->oom)
    rc = first(rc, check_listener_addresses(c, cfg, refs, nok, arr, nodes));
  free(refs);
  free(nodes);
  free(pnames);
  return c->oom ? -ENOMEM : rc;
}

static int parse_server(ctx *c, const cJSON *root, cfg_server *cfg) {
  const cJSON *f[S_N];
  int rc, r, e, names_known = 0;
  mark save;
  if (!cJSON_IsObject(root))
    return expect(c, root, "an object at the top level");
  rc = match_keys(c, root, server_keys, S_N, f);
  rc = first(rc, require(c, f, server_keys, S_PLUGINS));
  rc = first(rc, require(c, f, server_keys, S_LISTENERS));

  save = path_node(c, "workers", f[S_WORKERS]);
  rc = first(rc, get_unsigned(c, f[S_WORKERS], 1, 64, 0, &cfg->workers));
  path_pop(c, save);

  save = path_node(c, "io_backend", f[S_BACKEND]);
  e = (int)cfg->io_backend;
  rc = first(rc, get_enum(c, f[S_BACKEND], backend_names, COUNT(backend_names), &e));
  cfg->io_backend = (cfg_backend)e;
  path_pop(c, save);

  save = path_node(c, "max_sessions", f[S_SESSIONS]);
  rc = first(rc, get_unsigned(c, f[S_SESSIONS], 1, 1000000, 0, &cfg->max_sessions));
  path_pop(c, save);

  save = path_node(c, "log_level", f[S_LOG]);
  e = (int)cfg->log_level;
  rc = first(rc, get_enum(c, f[S_LOG], log_level_names, COUNT(log_level_names), &e));
  cfg->log_level = (cfg_log_level)e;
  path_pop(c, save);

  save = path_node(c, "admin_socket", f[S_ADMIN]);
  char *sock = NULL;
  r = get_string(c, f[S_ADMIN], "unix socket path", &sock);
  if (c->oom)
    return -ENOMEM;
  rc = first(rc, r);
  if (r == 0) {
    cfg->admin_socket = resolve(c->base_dir, sock ? sock : "run/pierd.sock");
    free(sock);
    if (!cfg->admin_socket)
      return oom(c);
    if (strlen(cfg->admin_socket) > MAX_SOCKET_PATH)
      rc = first(rc, fail(c, -ENAMETOOLONG,
                          "path too long for a unix socket once resolved "
                          "(%zu bytes, at most %d)", strlen(cfg->admin_socket),
                          MAX_SOCKET_PATH));
  }
  path_pop(c, save);

  save = path_node(c, "plugin_dir", f[S_PLUGIN_DIR]);
  char *pdir = NULL;
  r = get_string(c, f[S_PLUGIN_DIR], "directory path", &pdir);
  if (c->oom)
    return -ENOMEM;
  rc = first(rc, r);
  if (pdir) {
    cfg->plugin_dir = resolve(c->base_dir, pdir);
    free(pdir);
    if (!cfg->plugin_dir)
      return oom(c);
  }
  path_pop(c, save);

  if (f[S_LIMITS]) {
    save = path_node(c, "limits", f[S_LIMITS]);
    rc = first(rc, parse_limits(c, f[S_LIMITS], &cfg->limits));
    path_pop(c, save);
  }

  if (f[S_PLUGINS]) {
    save = path_node(c, "plugins", f[S_PLUGINS]);
    rc = first(rc, parse_plugins(c, f[S_PLUGINS], cfg, &names_known));
    path_pop(c, save);
  } else if (cfg->plugin_dir) {
    rc = first(rc, check_plugin_dir(c, cfg, NULL, NULL)); /* is the directory there? */
  }
  if (c->oom)
    return -ENOMEM;

  if (f[S_LISTENERS]) {
    save = path_node(c, "listeners", f[S_LISTENERS]);
    rc = first(rc, parse_listeners(c, f[S_LISTENERS], cfg, names_known));
    path_pop(c, save);
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
  return add_error(c, -EINVAL, msg);
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
           .base_dir = base_dir && *base_dir ? base_dir : "."};
  if (!out || (!text && len)) {
    fail(&c, -EINVAL, "invalid arguments");
    return finish(&c, err, errlen);
  }
  *out = NULL;

  char *buf = malloc(len + 1);
  if (!buf) {
    oom(&c);
    return finish(&c, err, errlen);
  }
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
    c.root = root;
    c.at = root;
    rc = cfg->path && cfg->base_dir ? parse_server(&c, root, cfg) : oom(&c);
  }
  int frc = finish(&c, err, errlen);
  if (frc == 0 && rc != 0) { /* a broken invariant: never accept what failed */
    frc = rc;
    if (err && errlen)
      snprintf(err, errlen, "%s: invalid (%s)", c.name, strerror(-rc));
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
  ctx c = {.name = path ? path : "(null)"};
  if (!out || !path) {
    fail(&c, -EINVAL, "invalid arguments");
    return finish(&c, err, errlen);
  }
  *out = NULL;

  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int e = errno;
    fail(&c, -e, "cannot read: %s", strerror(e));
    return finish(&c, err, errlen);
  }
  struct stat st;
  if (fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
    close(fd);
    fail(&c, -EISDIR, "cannot read: %s", strerror(EISDIR));
    return finish(&c, err, errlen);
  }
  char *buf = malloc(CFG_MAX_FILE_SIZE + 1);
  if (!buf) {
    close(fd);
    oom(&c);
    return finish(&c, err, errlen);
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
    if (dir)
      rc = cfg_load_text(buf, len, path, dir, out, err, errlen);
    else
      rc = finish((oom(&c), &c), err, errlen);
    free(dir);
  } else {
    rc = finish(&c, err, errlen);
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

