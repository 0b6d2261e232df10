/* Private to the server.json loader, shared by its files: config.c (walking
 * the document, the public API), config_entries.c (plugin and listener
 * entries and their cross checks) and config_report.c (collecting and
 * formatting problems, JSON paths). Nothing else includes it. */
#ifndef PIER_HOST_CONFIG_INTERNAL_H
#define PIER_HOST_CONFIG_INTERNAL_H

#include "base/log.h"
#include <cjson/cJSON.h>
#include <stddef.h>

#include "host/config.h"

#define MAX_NAME_LEN 32
#define GOT_STRING_BYTES 40 /* longer strings are cut with "..." */

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* Name tables of the enums parsed in more than one file (config.c). */
#define CFG_ENUM_ONE(id, str) +1
extern const char *const cfg_framing_names[0 CFG_FRAMING_MAP(CFG_ENUM_ONE)];
extern const char *const cfg_threading_names[0 CFG_THREADING_MAP(CFG_ENUM_ONE)];
extern const char *const cfg_transport_names[0 CFG_TRANSPORT_MAP(CFG_ENUM_ONE)];
#undef CFG_ENUM_ONE

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

/* What cfgr_path_pop restores. */
typedef struct mark {
  size_t plen;
  const cJSON *at;
} mark;

/* ---- config_report.c: messages ------------------------------------------ */

/* rc when it is set (the first problem's code), else r. */
int cfgr_first(int rc, int r);
/* Records one problem about c->at; keeps it if it is among the first
 * CFG_MAX_ERRORS in file order. Returns rc. */
int cfgr_add_error(ctx *c, int rc, const char *text);
/* Records "<name>: <path>: <message>" (or "<name>: <message>" at the top
 * level) and returns rc. */
int cfgr_fail(ctx *c, int rc, const char *fmt, ...) __attribute__((format(LOG_PRINTF, 3, 4)));
/* Out of memory ends the whole check: nothing else is reported. Returns
 * -ENOMEM. */
int cfgr_oom(ctx *c);
/* Writes what was found to err (see cfg_load_file) and returns the code of
 * the first problem in file order, or 0 when there was none. */
int cfgr_finish(ctx *c, char *err, size_t errlen);
/* Number of bytes to show of s (length slen) when at most max are allowed,
 * without cutting a UTF-8 sequence in half. */
size_t cfgr_cut_len(const char *s, size_t slen, size_t max);
/* Writes s as a quoted, escaped string, cut after max bytes with "...". */
void cfgr_quote(const char *s, char *out, size_t n, size_t max);
/* Fails with "expected <fmt...>, got <v>". */
int cfgr_expect(ctx *c, const cJSON *v, const char *fmt, ...)
    __attribute__((format(LOG_PRINTF, 3, 4)));

/* ---- config_report.c: JSON paths ---------------------------------------- */

/* The first member called key of obj, or NULL. */
const cJSON *cfgr_member(const cJSON *obj, const char *key);
/* Extends the path by a key whose value is node (NULL when absent); returns
 * what cfgr_path_pop restores. */
mark cfgr_path_node(ctx *c, const char *key, const cJSON *node);
/* The same for the first member called key of the current object. */
mark cfgr_path_key(ctx *c, const char *key);
mark cfgr_path_index(ctx *c, size_t i, const cJSON *node);
/* Goes back to the top of the document, for a check that runs after the
 * values it compares were read. */
mark cfgr_path_root(ctx *c);
void cfgr_path_pop(ctx *c, mark save);

/* ---- config_report.c: keys ---------------------------------------------- */

/* Matches obj's keys against keys[0..n): found[k] gets the member for keys[k]
 * (NULL when absent; the first one when repeated). Every unknown and every
 * repeated key is reported; returns the first code. */
int cfgr_match_keys(ctx *c, const cJSON *obj, const char *const *keys, size_t n,
                    const cJSON **found);
/* Reports keys[k] missing when found[k] is NULL; returns the code or 0. */
int cfgr_require(ctx *c, const cJSON **found, const char *const *keys, size_t k);

/* ---- config_entries.c: typed values ------------------------------------- */
/* Each getter checks the value at the current path; absent values (NULL)
 * leave *out at its default. They return 0 or the code reported. */

int cfge_get_uint(ctx *c, const cJSON *v, unsigned long long lo, unsigned long long hi,
                  int zero_ok, unsigned long long *out);
int cfge_get_unsigned(ctx *c, const cJSON *v, unsigned lo, unsigned hi, int zero_ok,
                      unsigned *out);
int cfge_get_enum(ctx *c, const cJSON *v, const char *const *names, size_t n, int *out);
/* A string value, copied into *out. `what` describes it after "a string". */
int cfge_get_string(ctx *c, const cJSON *v, const char *what, char **out);
/* Joins a relative path to base ("." keeps it relative to the cwd); absolute
 * paths are copied. Result always contains a '/', so dlopen never searches
 * the library path for it. Returns NULL when out of memory. */
char *cfge_resolve(const char *base, const char *p);

/* ---- config_entries.c: plugins ------------------------------------------ */

#define CFGE_NCALLBACKS 9
/* The keys of a plugin's "callbacks", and the cfg_callbacks field of each. */
extern const char *const cfge_callback_keys[CFGE_NCALLBACKS];
char **cfge_callback_slot(cfg_callbacks *cb, size_t k);
/* Fills p from v. p->name stays NULL when the name is missing or bad, and
 * p->resolved_path when the path is: the cross checks skip those. */
int cfge_parse_plugin(ctx *c, const cJSON *v, cfg_plugin *p);

/* ---- config_entries.c: uniqueness and listeners ------------------------- */

/* A fixed-size sort key (zero padded) and the array index it came from. */
typedef struct uref {
  unsigned char key[MAX_NAME_LEN + 8]; /* a plugin name, or family+addr+port */
  size_t index;
} uref;

/* The plugin names a listener may refer to: nnames sorted refs; names_known
 * is 0 when some plugin has no usable name (then an unknown name is not
 * reported: it may be that one). */
typedef struct plugin_names {
  const uref *refs;
  size_t n;
  int known;
} plugin_names;

/* The names of the plugins that have one, as refs sorted by name (then by
 * index); their number in *n. NULL when out of memory; the caller frees. */
uref *cfge_plugin_refs(const cfg_server *cfg, size_t *n);
/* Every plugin whose name an earlier one has. nodes[i] is plugins[i]'s
 * object, arr the array. */
int cfge_check_plugin_names(ctx *c, const cfg_server *cfg, const cJSON *arr,
                            const cJSON *const *nodes);
/* Fills l from v. *addr_ok is set when its address and port are valid, so
 * that ref can take part in the duplicate check. */
int cfge_parse_listener(ctx *c, const cJSON *v, cfg_server *cfg, const plugin_names *names,
                        cfg_listener *l, uref *ref, int *addr_ok);
/* Every listener whose address and port an earlier one has (port 0 never
 * conflicts). refs[0..n) are the listeners with a valid address and port;
 * they are reordered. */
int cfge_check_listener_addresses(ctx *c, const cfg_server *cfg, uref *refs, size_t n,
                                  const cJSON *arr, const cJSON *const *nodes);

#endif
