/* Plugin metrics (ABI 1.2): the registry behind pier_host's metric_*
 * entries and host_render_plugin_metrics. It lives in host_plugin, not in
 * the plugin's image, so a reload that declares the same metrics finds them
 * again with their values. Declaring and creating series take the host's
 * metrics_mu (and its one log_rate); updating a series is a few relaxed
 * atomics; rendering takes no lock at all: every metric and series is
 * complete before the count that publishes it is stored (release), and none
 * is freed before host_destroy, but for those a failed reload made: hidden
 * by lowering the counts, they are freed once no rendering is under way (a
 * rendering that starts later reads the lower counts). */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/promtext.h"
#include "host/host_internal.h"

#define PLUGIN(api) container_of(api, host_plugin, api)
#define FAMILY_MAX (2 * PIER_METRIC_NAME_MAX + 2)
#define OWNED_MAX (FAMILY_MAX + sizeof("_bucket"))

struct pier_series {
  const pier_metric *m;
  pier_series *dead_next; /* on host.dead_series */
  /* counter, gauge: the value; histogram: the sum. Bits of a double. */
  _Atomic uint64_t value;
  const char *values[PIER_METRIC_LABELS_MAX]; /* into the same block */
  _Atomic uint64_t bucket[];                  /* histogram: nbounds + 1 (+Inf) */
};

struct pier_metric {
  pier_metric_type type;
  char name[PIER_METRIC_NAME_MAX + 1];
  char family[FAMILY_MAX];
  char help[PIER_METRIC_HELP_MAX + 1];
  size_t nlabels;
  char label[PIER_METRIC_LABELS_MAX][PIER_METRIC_NAME_MAX + 1];
  size_t nbounds;
  double bounds[PIER_METRIC_BOUNDS_MAX];
  _Atomic size_t nseries;
  pier_series *series[PIER_METRIC_SERIES_MAX];
  pier_metric *dead_next; /* on host.dead_metrics */
};

static const char *const type_name[] = {"counter", "gauge", "histogram"};

/* ---- validation ---- */

static int valid_utf8(const char *s) {
  const unsigned char *p = (const unsigned char *)s;
  while (*p) {
    size_t n;
    uint32_t c;
    if (*p < 0x80) {
      p++;
      continue;
    }
    if ((*p & 0xe0) == 0xc0)
      n = 1, c = *p & 0x1f;
    else if ((*p & 0xf0) == 0xe0)
      n = 2, c = *p & 0x0f;
    else if ((*p & 0xf8) == 0xf0)
      n = 3, c = *p & 0x07;
    else
      return 0;
    for (size_t i = 1; i <= n; i++) {
      if ((p[i] & 0xc0) != 0x80)
        return 0;
      c = (c << 6) | (p[i] & 0x3f);
    }
    /* overlong forms, surrogates and code points past U+10FFFF */
    if ((n == 1 && c < 0x80) || (n == 2 && c < 0x800) || (n == 3 && c < 0x10000) ||
        (c >= 0xd800 && c <= 0xdfff) || c > 0x10ffff)
      return 0;
    p += n + 1;
  }
  return 1;
}

/* [a-zA-Z_][a-zA-Z0-9_]*: a metric name without the colons Prometheus keeps
 * for recording rules. */
static int valid_name(const char *s) {
  size_t n = s ? strlen(s) : 0;
  if (n == 0 || n > PIER_METRIC_NAME_MAX || !prom_valid_name(s))
    return 0;
  return strchr(s, ':') == NULL;
}

/* "<plugin>_<name>", '-' as '_', '_' before a leading digit. */
static void family_name(const char *plugin, const char *name, char *out, size_t cap) {
  size_t k = 0;
  if (*plugin >= '0' && *plugin <= '9')
    out[k++] = '_';
  for (; *plugin && k + 1 < cap; plugin++)
    out[k++] = *plugin == '-' ? '_' : *plugin;
  out[k] = '\0';
  snprintf(out + k, cap - k, "_%s", name);
}

/* Logs why p's declaration of name was refused and returns rc. Under
 * metrics_mu (its log_rate is the host's one). */
static int refuse(host_plugin *p, const char *name, int rc, const char *why) {
  log_limited(&p->h->metrics_rl, LOG_ERROR, "plugin \"%s\": metric \"%.*s\": %s", p->cfg->name,
              PIER_METRIC_NAME_MAX, name ? name : "(null)", why);
  return rc;
}

/* Logs why p's call to entry was refused before any metric is known (a NULL
 * argument, a spec from another header) and returns rc. Takes metrics_mu
 * for the log_rate. */
static int refuse_call(host_plugin *p, const char *entry, int rc, const char *why) {
  os_mutex_lock(&p->h->metrics_mu);
  log_limited(&p->h->metrics_rl, LOG_ERROR, "plugin \"%s\": %s: %s", p->cfg->name, entry, why);
  os_mutex_unlock(&p->h->metrics_mu);
  return rc;
}

static int check_spec(host_plugin *p, const pier_metric_spec *s) {
  char why[160];
  if (!valid_name(s->name))
    return refuse(p, s->name, -EINVAL, "the name must match [a-zA-Z_][a-zA-Z0-9_]* (1..64 bytes)");
  if ((unsigned)s->type > PIER_METRIC_HISTOGRAM)
    return refuse(p, s->name, -EINVAL, "unknown type (counter, gauge or histogram)");
  if (s->help && (strlen(s->help) > PIER_METRIC_HELP_MAX || !valid_utf8(s->help)))
    return refuse(p, s->name, -EINVAL, "help must be UTF-8 of at most 256 bytes");
  if (s->nlabels > PIER_METRIC_LABELS_MAX)
    return refuse(p, s->name, -EINVAL, "more than 8 labels (PIER_METRIC_LABELS_MAX)");
  if (s->nlabels && !s->labels) {
    snprintf(why, sizeof(why), "%zu labels but no label names (labels is NULL)", s->nlabels);
    return refuse(p, s->name, -EINVAL, why);
  }
  for (size_t i = 0; i < s->nlabels; i++) {
    const char *l = s->labels[i];
    if (!valid_name(l) || !prom_valid_label(l) || strcmp(l, "plugin") == 0 ||
        (s->type == PIER_METRIC_HISTOGRAM && strcmp(l, "le") == 0)) {
      snprintf(why, sizeof(why), "label %zu: \"%.64s\" is not a label name of its own", i,
               l ? l : "(null)");
      return refuse(p, s->name, -EINVAL, why);
    }
    for (size_t k = 0; k < i; k++)
      if (strcmp(s->labels[k], l) == 0) {
        snprintf(why, sizeof(why), "label \"%s\" given twice", l);
        return refuse(p, s->name, -EINVAL, why);
      }
  }
  if (s->type != PIER_METRIC_HISTOGRAM)
    return 0;
  if (s->nbounds == 0 || s->nbounds > PIER_METRIC_BOUNDS_MAX || !s->bounds)
    return refuse(p, s->name, -EINVAL, "a histogram needs 1..32 bucket bounds");
  for (size_t i = 0; i < s->nbounds; i++)
    if (!isfinite(s->bounds[i]) || (i && !(s->bounds[i] > s->bounds[i - 1])))
      return refuse(p, s->name, -EINVAL, "bucket bounds must be finite and strictly ascending");
  return 0;
}

/* Whether m is what s declares (the help text may differ: the first stays). */
static int same_shape(const pier_metric *m, const pier_metric_spec *s) {
  if (m->type != s->type || m->nlabels != s->nlabels)
    return 0;
  for (size_t i = 0; i < s->nlabels; i++)
    if (strcmp(m->label[i], s->labels[i]) != 0)
      return 0;
  if (s->type != PIER_METRIC_HISTOGRAM)
    return 1;
  return m->nbounds == s->nbounds &&
         memcmp(m->bounds, s->bounds, s->nbounds * sizeof(*s->bounds)) == 0;
}

/* The names a family writes its samples under: the family itself, and for
 * a histogram also <family>_bucket, _sum and _count. Returns how many. */
static size_t owned_names(const char *family, pier_metric_type type, char out[4][OWNED_MAX]) {
  static const char *const suffix[] = {"_bucket", "_sum", "_count"};
  snprintf(out[0], OWNED_MAX, "%s", family);
  if (type != PIER_METRIC_HISTOGRAM)
    return 1;
  for (size_t i = 0; i < 3; i++)
    snprintf(out[i + 1], OWNED_MAX, "%s%s", family, suffix[i]);
  return 4;
}

/* Whether the family of m writes a sample named name. */
static int writes_name(const pier_metric *m, const char *name) {
  char own[4][OWNED_MAX];
  size_t n = owned_names(m->family, m->type, own);
  for (size_t i = 0; i < n; i++)
    if (strcmp(own[i], name) == 0)
      return 1;
  return 0;
}

/* A declared metric (of any plugin, p's included) whose sample names meet
 * those a new family of that type would write, or NULL; *clash gets the
 * name both would write. Two families must never share a sample name: a
 * gauge x_sum beside a histogram x would make /metrics ambiguous. Under
 * metrics_mu. */
static const pier_metric *find_clash(host *h, const char *family, pier_metric_type type,
                                     const host_plugin **owner, char clash[OWNED_MAX]) {
  char own[4][OWNED_MAX];
  size_t nown = owned_names(family, type, own);
  for (size_t i = 0; i < h->nplugins; i++) {
    const host_plugin *q = &h->plugins[i];
    size_t n = atomic_load_explicit(&q->nmetrics, memory_order_acquire);
    for (size_t k = 0; k < n; k++)
      for (size_t j = 0; j < nown; j++)
        if (writes_name(q->metrics[k], own[j])) {
          *owner = q;
          memcpy(clash, own[j], OWNED_MAX); /* both OWNED_MAX */
          return q->metrics[k];
        }
  }
  return NULL;
}

/* Sample lines one series of m renders: a histogram's buckets (+Inf too),
 * its _sum and its _count. */
static size_t series_samples(const pier_metric *m) {
  return m->type == PIER_METRIC_HISTOGRAM ? m->nbounds + 3 : 1;
}

/* Sample lines all of p's series render. Under metrics_mu. */
static size_t plugin_samples(const host_plugin *p) {
  size_t n = atomic_load_explicit(&p->nmetrics, memory_order_relaxed), total = 0;
  for (size_t k = 0; k < n; k++)
    total += atomic_load_explicit(&p->metrics[k]->nseries, memory_order_relaxed) *
             series_samples(p->metrics[k]);
  return total;
}

/* ---- series ---- */

/* A new series of m at 0 with its own copy of values; NULL without memory. */
static pier_series *series_new(const pier_metric *m, const char *const *values) {
  size_t nb = m->type == PIER_METRIC_HISTOGRAM ? m->nbounds + 1 : 0;
  size_t head = sizeof(pier_series) + nb * sizeof(_Atomic uint64_t), len = head;
  pier_series *s;
  char *text;
  for (size_t i = 0; i < m->nlabels; i++)
    len += strlen(values[i]) + 1;
  if (!(s = calloc(1, len)))
    return NULL;
  s->m = m;
  text = (char *)s + head;
  for (size_t i = 0; i < m->nlabels; i++) {
    size_t n = strlen(values[i]) + 1;
    memcpy(text, values[i], n);
    s->values[i] = text;
    text += n;
  }
  return s;
}

/* Finds or creates m's series for values. Under metrics_mu. */
static int series_get(host_plugin *p, pier_metric *m, const char *const *values,
                      pier_series **out) {
  size_t n = atomic_load_explicit(&m->nseries, memory_order_relaxed);
  char why[200];
  for (size_t i = 0; i < m->nlabels; i++)
    if (!values || !values[i] || strlen(values[i]) > PIER_METRIC_VALUE_MAX ||
        !valid_utf8(values[i])) {
      snprintf(why, sizeof(why), "label \"%s\": the value must be UTF-8 of at most 128 bytes",
               m->label[i]);
      return refuse(p, m->name, -EINVAL, why);
    }
  for (size_t k = 0; k < n; k++) {
    size_t i = 0;
    while (i < m->nlabels && strcmp(m->series[k]->values[i], values[i]) == 0)
      i++;
    if (i == m->nlabels) {
      *out = m->series[k];
      return 0;
    }
  }
  if (n == PIER_METRIC_SERIES_MAX)
    return refuse(p, m->name, -ENOSPC,
                  "more than 256 series (PIER_METRIC_SERIES_MAX); the new one is refused");
  /* m may not be in p->metrics yet (declare_locked makes the first series
   * of a metric without labels before publishing it): its lines are added
   * here rather than counted twice. */
  if (plugin_samples(p) + series_samples(m) > PIER_METRIC_SAMPLES_MAX)
    return refuse(p, m->name, -ENOSPC,
                  "the plugin's metrics would render more than 8192 samples "
                  "(PIER_METRIC_SAMPLES_MAX); the new series is refused");
  if (!(m->series[n] = series_new(m, values)))
    return refuse(p, m->name, -ENOMEM, "out of memory for a new series");
  atomic_store_explicit(&m->nseries, n + 1, memory_order_release);
  *out = m->series[n];
  return 0;
}

/* ---- the pier_host entries ---- */

static pier_metric *metric_new(host_plugin *p, const pier_metric_spec *s, const char *family) {
  pier_metric *m = calloc(1, sizeof(*m));
  if (!m)
    return NULL;
  m->type = s->type;
  snprintf(m->name, sizeof(m->name), "%s", s->name);
  snprintf(m->family, sizeof(m->family), "%s", family);
  if (s->help && *s->help)
    snprintf(m->help, sizeof(m->help), "%s", s->help);
  else
    snprintf(m->help, sizeof(m->help), "Declared by plugin %s without help.", p->cfg->name);
  m->nlabels = s->nlabels;
  for (size_t i = 0; i < s->nlabels; i++)
    snprintf(m->label[i], sizeof(m->label[i]), "%s", s->labels[i]);
  if (s->type == PIER_METRIC_HISTOGRAM) {
    m->nbounds = s->nbounds;
    memcpy(m->bounds, s->bounds, s->nbounds * sizeof(*s->bounds));
  }
  return m;
}

/* Frees what failed reloads hid, unless a rendering is under way (it may
 * have read the counts from before). Under metrics_mu, after the counts
 * were lowered: a rendering that begins after the check reads them lower
 * (both sides are sequentially consistent). */
static void sweep_dead(host *h) {
  if (atomic_load(&h->metrics_renders) != 0)
    return;
  while (h->dead_series) {
    pier_series *s = h->dead_series;
    h->dead_series = s->dead_next;
    free(s);
  }
  while (h->dead_metrics) {
    pier_metric *m = h->dead_metrics;
    h->dead_metrics = m->dead_next;
    free(m);
  }
}

void pmetrics_mark_take(host_plugin *p, pmetrics_mark *mk) {
  os_mutex_lock(&p->h->metrics_mu);
  mk->nmetrics = atomic_load(&p->nmetrics);
  for (size_t k = 0; k < mk->nmetrics; k++)
    mk->nseries[k] = atomic_load(&p->metrics[k]->nseries);
  os_mutex_unlock(&p->h->metrics_mu);
}

static void bury_series(host *h, pier_metric *m, size_t from) {
  size_t n = atomic_load(&m->nseries);
  atomic_store(&m->nseries, from);
  for (size_t j = from; j < n; j++) {
    m->series[j]->dead_next = h->dead_series;
    h->dead_series = m->series[j];
  }
}

void pmetrics_rollback(host_plugin *p, const pmetrics_mark *mk) {
  host *h = p->h;
  size_t n;
  os_mutex_lock(&h->metrics_mu);
  n = atomic_load(&p->nmetrics);
  atomic_store(&p->nmetrics, mk->nmetrics);
  for (size_t k = 0; k < mk->nmetrics; k++)
    bury_series(h, p->metrics[k], mk->nseries[k]);
  for (size_t k = mk->nmetrics; k < n; k++) {
    bury_series(h, p->metrics[k], 0);
    p->metrics[k]->dead_next = h->dead_metrics;
    h->dead_metrics = p->metrics[k];
  }
  sweep_dead(h);
  os_mutex_unlock(&h->metrics_mu);
}

static int declare_locked(host_plugin *p, const pier_metric_spec *s, pier_metric **out) {
  size_t n = atomic_load_explicit(&p->nmetrics, memory_order_relaxed);
  char family[FAMILY_MAX], clash[OWNED_MAX], why[1024];
  const host_plugin *q;
  const pier_metric *other;
  pier_metric *m;
  pier_series *unused;
  int rc;

  sweep_dead(p->h);
  if ((rc = check_spec(p, s)) < 0)
    return rc;
  for (size_t i = 0; i < n; i++) {
    if (strcmp(p->metrics[i]->name, s->name) != 0)
      continue;
    if (!same_shape(p->metrics[i], s))
      return refuse(p, s->name, -EEXIST,
                    "declared before with another type, labels or bounds; it keeps those");
    *out = p->metrics[i];
    return 0;
  }
  family_name(p->cfg->name, s->name, family, sizeof(family));
  if (strncmp(family, "pier_", 5) == 0 || strncmp(family, "process_", 8) == 0) {
    snprintf(why, sizeof(why), "its family %s would be among pierd's own metrics", family);
    return refuse(p, s->name, -EINVAL, why);
  }
  if ((other = find_clash(p->h, family, s->type, &q, clash)) != NULL) {
    if (strcmp(other->family, family) == 0)
      snprintf(why, sizeof(why), "its family %s is plugin \"%s\"'s", family, q->cfg->name);
    else
      snprintf(why, sizeof(why),
               "%s %s would write %s, as does the %s %s of plugin \"%s\" (a histogram F "
               "also writes F_bucket, F_sum and F_count)",
               type_name[s->type], family, clash, type_name[other->type], other->family,
               q->cfg->name);
    return refuse(p, s->name, -EEXIST, why);
  }
  if (n == PIER_METRICS_MAX)
    return refuse(p, s->name, -ENOSPC, "more than 64 metrics (PIER_METRICS_MAX); refused");
  if (!(m = metric_new(p, s, family)))
    return refuse(p, s->name, -ENOMEM, "out of memory");
  /* Without labels the one series exists at once, so it shows as 0. */
  if (m->nlabels == 0 && (rc = series_get(p, m, NULL, &unused)) < 0) {
    free(m);
    return rc;
  }
  p->metrics[n] = m;
  atomic_store_explicit(&p->nmetrics, n + 1, memory_order_release);
  *out = m;
  return 0;
}

int pmetrics_declare(const pier_host *api, const pier_metric_spec *spec, pier_metric **out) {
  host_plugin *p = PLUGIN(api);
  int rc;
  char why[120];
  if (!spec || !out)
    return refuse_call(p, "metric_declare", -EINVAL, !spec ? "spec is NULL" : "out is NULL");
  *out = NULL;
  if (spec->size < sizeof(pier_metric_spec)) { /* its other fields may not be there */
    snprintf(why, sizeof(why), "spec->size is %u, less than sizeof(pier_metric_spec) (%zu)",
             spec->size, sizeof(pier_metric_spec));
    return refuse_call(p, "metric_declare", -EINVAL, why);
  }
  os_mutex_lock(&p->h->metrics_mu);
  rc = declare_locked(p, spec, out);
  os_mutex_unlock(&p->h->metrics_mu);
  return rc;
}

int pmetrics_series(const pier_host *api, pier_metric *m, const char *const *values,
                    pier_series **out) {
  host_plugin *p = PLUGIN(api);
  int rc;
  if (!m || !out)
    return refuse_call(p, "metric_series", -EINVAL, !m ? "the metric is NULL" : "out is NULL");
  *out = NULL;
  os_mutex_lock(&p->h->metrics_mu);
  rc = series_get(p, m, values, out);
  os_mutex_unlock(&p->h->metrics_mu);
  return rc;
}

static double bits_double(uint64_t b) {
  double d;
  memcpy(&d, &b, sizeof(d));
  return d;
}

static uint64_t double_bits(double d) {
  uint64_t b;
  memcpy(&b, &d, sizeof(b));
  return b;
}

/* A lock-free add to a double kept as bits. */
static void add_double(_Atomic uint64_t *a, double v) {
  uint64_t old = atomic_load_explicit(a, memory_order_relaxed);
  while (!atomic_compare_exchange_weak_explicit(a, &old, double_bits(bits_double(old) + v),
                                                memory_order_relaxed, memory_order_relaxed)) {
  }
}

int pmetrics_add(const pier_host *api, pier_series *s, double v) {
  (void)api;
  if (!s || s->m->type == PIER_METRIC_HISTOGRAM ||
      (s->m->type == PIER_METRIC_COUNTER && !(v >= 0)))
    return -EINVAL;
  add_double(&s->value, v);
  return 0;
}

int pmetrics_set(const pier_host *api, pier_series *s, double v) {
  (void)api;
  if (!s || s->m->type != PIER_METRIC_GAUGE)
    return -EINVAL;
  atomic_store_explicit(&s->value, double_bits(v), memory_order_relaxed);
  return 0;
}

int pmetrics_observe(const pier_host *api, pier_series *s, double v) {
  const pier_metric *m;
  size_t i = 0;
  (void)api;
  if (!s || s->m->type != PIER_METRIC_HISTOGRAM || isnan(v))
    return -EINVAL;
  m = s->m;
  while (i < m->nbounds && v > m->bounds[i]) /* le: a value on a bound is in its bucket */
    i++;
  atomic_fetch_add_explicit(&s->bucket[i], 1, memory_order_relaxed);
  add_double(&s->value, v);
  return 0;
}

/* ---- rendering and teardown ---- */

static void render_series(FILE *out, const host_plugin *p, const pier_metric *m,
                          const pier_series *s) {
  const char *labels[2 * (PIER_METRIC_LABELS_MAX + 1)];
  uint64_t cum[PIER_METRIC_BOUNDS_MAX], total = 0;
  labels[0] = "plugin";
  labels[1] = p->cfg->name;
  for (size_t i = 0; i < m->nlabels; i++) {
    labels[2 * i + 2] = m->label[i];
    labels[2 * i + 3] = s->values[i];
  }
  if (m->type != PIER_METRIC_HISTOGRAM) {
    prom_sample(out, m->family, labels, m->nlabels + 1,
                bits_double(atomic_load_explicit(&s->value, memory_order_relaxed)));
    return;
  }
  /* The count is the sum of the buckets read, so the series is consistent
   * even while observations land (the sum may be a few behind or ahead). */
  for (size_t i = 0; i <= m->nbounds; i++) {
    total += atomic_load_explicit(&s->bucket[i], memory_order_relaxed);
    if (i < m->nbounds)
      cum[i] = total;
  }
  prom_histogram(out, m->family, labels, m->nlabels + 1, m->bounds, cum, m->nbounds,
                 bits_double(atomic_load_explicit(&s->value, memory_order_relaxed)), total);
}

void host_render_plugin_metrics(host *h, FILE *out) {
  atomic_fetch_add(&h->metrics_renders, 1); /* before the counts are read: see sweep_dead */
  for (size_t i = 0; i < h->nplugins; i++) {
    const host_plugin *p = &h->plugins[i];
    size_t n = atomic_load(&p->nmetrics);
    for (size_t k = 0; k < n; k++) {
      const pier_metric *m = p->metrics[k];
      size_t ns = atomic_load(&m->nseries);
      prom_family(out, m->family, type_name[m->type], m->help);
      for (size_t j = 0; j < ns; j++)
        render_series(out, p, m, m->series[j]);
    }
  }
  atomic_fetch_sub_explicit(&h->metrics_renders, 1, memory_order_release);
}

void pmetrics_free(host_plugin *p) {
  size_t n = atomic_load(&p->nmetrics);
  sweep_dead(p->h); /* host_destroy: nothing renders any more */
  for (size_t k = 0; k < n; k++) {
    pier_metric *m = p->metrics[k];
    size_t ns = atomic_load(&m->nseries);
    for (size_t j = 0; j < ns; j++)
      free(m->series[j]);
    free(m);
  }
  atomic_store(&p->nmetrics, 0);
}
