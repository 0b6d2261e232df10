/* How server.json problems are reported: each one is recorded against the
 * JSON node it is about, the first CFG_MAX_ERRORS in file order are kept and
 * written out sorted, with values described and quoted for the message, the
 * JSON path of the value being checked, and key suggestions by edit distance.
 * config.c and config_entries.c call it through config_internal.h. */
#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif

#include "host/config_internal.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- messages ---------------------------------------------------------- */

int cfgr_first(int rc, int r) { return rc ? rc : r; }

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
int cfgr_add_error(ctx *c, int rc, const char *text) {
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

/* Records "<name>: <path>: <message>" (or "<name>: <message>" at the top
 * level) and returns rc. */
int cfgr_fail(ctx *c, int rc, const char *fmt, ...) {
  char msg[640], line[CFG_ERR_LINE];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (c->plen)
    snprintf(line, sizeof line, "%s: %s: %s", c->name, c->path, msg);
  else
    snprintf(line, sizeof line, "%s: %s", c->name, msg);
  return cfgr_add_error(c, rc, line);
}

/* Out of memory ends the whole check: nothing else is reported. */
int cfgr_oom(ctx *c) {
  c->oom = 1;
  return -ENOMEM;
}

/* Writes what was found to err (see cfg_load_file) and returns the code of
 * the first problem in file order, or 0 when there was none. */
int cfgr_finish(ctx *c, char *err, size_t errlen) {
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
size_t cfgr_cut_len(const char *s, size_t slen, size_t max) {
  if (slen <= max)
    return slen;
  size_t k = max;
  while (k > 0 && ((unsigned char)s[k] & 0xC0) == 0x80)
    k--;
  return k;
}

/* Writes s as a quoted, escaped string, cut after max bytes with "...". */
void cfgr_quote(const char *s, char *out, size_t n, size_t max) {
  size_t slen = strlen(s), show = cfgr_cut_len(s, slen, max), len = 0;
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
    cfgr_quote(v->valuestring ? v->valuestring : "", out, n, GOT_STRING_BYTES);
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

/* Fails with "expected <fmt...>, got <v>". */
int cfgr_expect(ctx *c, const cJSON *v, const char *fmt, ...) {
  char want[256], got[256];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(want, sizeof want, fmt, ap);
  va_end(ap);
  describe(v, got, sizeof got);
  return cfgr_fail(c, -EINVAL, "expected %s, got %s", want, got);
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

/* The first member called key of obj, or NULL. */
const cJSON *cfgr_member(const cJSON *obj, const char *key) {
  if (!cJSON_IsObject(obj))
    return NULL;
  for (const cJSON *it = obj->child; it; it = it->next)
    if (it->string && strcmp(it->string, key) == 0)
      return it;
  return NULL;
}

/* Extends the path by a key whose value is node (NULL when absent); returns
 * what path_pop restores. */
mark cfgr_path_node(ctx *c, const char *key, const cJSON *node) {
  mark save = {c->plen, c->at};
  if (!key)
    key = "";
  if (plain_key(key)) {
    if (c->plen)
      path_append(c, ".");
    path_append(c, key);
  } else {
    char q[128];
    cfgr_quote(key, q, sizeof q, 24);
    path_append(c, "[");
    path_append(c, q);
    path_append(c, "]");
  }
  if (node)
    c->at = node;
  return save;
}

/* The same for the first member called key of the current object. */
mark cfgr_path_key(ctx *c, const char *key) {
  return cfgr_path_node(c, key, cfgr_member(c->at, key));
}

mark cfgr_path_index(ctx *c, size_t i, const cJSON *node) {
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
mark cfgr_path_root(ctx *c) {
  mark save = {c->plen, c->at};
  c->plen = 0;
  c->path[0] = '\0';
  c->at = c->root;
  return save;
}

void cfgr_path_pop(ctx *c, mark save) {
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
int cfgr_match_keys(ctx *c, const cJSON *obj, const char *const *keys,
                    size_t n, const cJSON **found) {
  int rc = 0;
  for (size_t k = 0; k < n; k++)
    found[k] = NULL;
  for (const cJSON *it = obj->child; it; it = it->next) {
    const char *key = it->string ? it->string : "";
    size_t k = 0;
    while (k < n && strcmp(key, keys[k]) != 0)
      k++;
    mark save = cfgr_path_node(c, key, it);
    if (k == n) {
      size_t best = 3, bi = n;
      for (size_t j = 0; j < n; j++) {
        size_t dist = edit_distance(key, keys[j]);
        if (dist < best)
          best = dist, bi = j;
      }
      if (bi < n)
        rc = cfgr_first(rc, cfgr_fail(c, -EINVAL, "unknown key (did you mean \"%s\"?)", keys[bi]));
      else
        rc = cfgr_first(rc, cfgr_fail(c, -EINVAL, "unknown key"));
    } else if (found[k]) {
      rc = cfgr_first(rc, cfgr_fail(c, -EINVAL, "duplicate key"));
    } else {
      found[k] = it;
    }
    cfgr_path_pop(c, save);
  }
  return rc;
}

int cfgr_require(ctx *c, const cJSON **found, const char *const *keys,
                 size_t k) {
  if (found[k])
    return 0;
  return cfgr_fail(c, -EINVAL, "missing required key \"%s\"", keys[k]);
}
