/* Prometheus text exposition: see promtext.h. */
#include "base/promtext.h"

#include <inttypes.h>
#include <math.h>
#include <string.h>

static void put_escaped(FILE *out, const char *s, int quote) {
  for (; *s; s++) {
    if (*s == '\\')
      fputs("\\\\", out);
    else if (*s == '\n')
      fputs("\\n", out);
    else if (quote && *s == '"')
      fputs("\\\"", out);
    else
      fputc(*s, out);
  }
}

static void put_value(FILE *out, double v) {
  if (isnan(v))
    fputs("NaN", out);
  else if (isinf(v))
    fputs(v > 0 ? "+Inf" : "-Inf", out);
  else
    fprintf(out, "%.17g", v);
}

void prom_family(FILE *out, const char *name, const char *type, const char *help) {
  fprintf(out, "# HELP %s ", name);
  put_escaped(out, help, 0);
  fprintf(out, "\n# TYPE %s %s\n", name, type);
}

/* name{labels[,extra_k="extra_v"]} */
static void put_series(FILE *out, const char *name, const char *suffix,
                       const char *const *labels, size_t nlabels, const char *extra_k,
                       const char *extra_v) {
  fputs(name, out);
  fputs(suffix, out);
  if (nlabels == 0 && !extra_k)
    return;
  fputc('{', out);
  for (size_t i = 0; i < nlabels; i++) {
    fprintf(out, "%s%s=\"", i ? "," : "", labels[2 * i]);
    put_escaped(out, labels[2 * i + 1], 1);
    fputc('"', out);
  }
  if (extra_k)
    fprintf(out, "%s%s=\"%s\"", nlabels ? "," : "", extra_k, extra_v);
  fputc('}', out);
}

void prom_sample(FILE *out, const char *name, const char *const *labels, size_t nlabels,
                 double value) {
  put_series(out, name, "", labels, nlabels, NULL, NULL);
  fputc(' ', out);
  put_value(out, value);
  fputc('\n', out);
}

void prom_sample_u64(FILE *out, const char *name, const char *const *labels, size_t nlabels,
                     uint64_t value) {
  put_series(out, name, "", labels, nlabels, NULL, NULL);
  fprintf(out, " %" PRIu64 "\n", value);
}

void prom_histogram(FILE *out, const char *name, const char *const *labels, size_t nlabels,
                    const double *bounds, const uint64_t *cum, size_t nbounds, double sum,
                    uint64_t count) {
  char le[40];
  for (size_t i = 0; i < nbounds; i++) {
    snprintf(le, sizeof(le), "%.17g", bounds[i]);
    put_series(out, name, "_bucket", labels, nlabels, "le", le);
    fprintf(out, " %" PRIu64 "\n", cum[i]);
  }
  put_series(out, name, "_bucket", labels, nlabels, "le", "+Inf");
  fprintf(out, " %" PRIu64 "\n", count);
  put_series(out, name, "_sum", labels, nlabels, NULL, NULL);
  fputc(' ', out);
  put_value(out, sum);
  fputc('\n', out);
  put_series(out, name, "_count", labels, nlabels, NULL, NULL);
  fprintf(out, " %" PRIu64 "\n", count);
}

static int name_char(char c, int first, int colon) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (colon && c == ':') ||
         (!first && c >= '0' && c <= '9');
}

int prom_valid_name(const char *s) {
  if (!s || !*s)
    return 0;
  for (size_t i = 0; s[i]; i++)
    if (!name_char(s[i], i == 0, 1))
      return 0;
  return 1;
}

int prom_valid_label(const char *s) {
  if (!s || !*s || strncmp(s, "__", 2) == 0)
    return 0;
  for (size_t i = 0; s[i]; i++)
    if (!name_char(s[i], i == 0, 0))
      return 0;
  return 1;
}
