/* Writer for the Prometheus text exposition format (version 0.0.4): one
 * "# HELP" and "# TYPE" line per family, then its samples, label values
 * escaped (backslash, double quote, newline) and numbers in the format's
 * spelling (+Inf, -Inf, NaN). Used by /metrics, `pierctl metrics` and the
 * plugins' own metrics. Writes to a stdio stream; no allocation. */
#ifndef PIER_BASE_PROMTEXT_H
#define PIER_BASE_PROMTEXT_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* type: "counter", "gauge", "histogram", "untyped". help may hold any text
 * (backslash and newline are escaped). */
void prom_family(FILE *out, const char *name, const char *type, const char *help);
/* One sample: name{k1="v1",...} value. labels holds nlabels name/value
 * pairs: labels[2*i] a name, labels[2*i+1] its value (escaped here). */
void prom_sample(FILE *out, const char *name, const char *const *labels, size_t nlabels,
                 double value);
void prom_sample_u64(FILE *out, const char *name, const char *const *labels, size_t nlabels,
                     uint64_t value);
/* A histogram's series: name_bucket{...,le="b"} for each upper bound in
 * bounds (ascending) with the cumulative counts in cum, then le="+Inf"
 * (count), name_sum and name_count. */
void prom_histogram(FILE *out, const char *name, const char *const *labels, size_t nlabels,
                    const double *bounds, const uint64_t *cum, size_t nbounds, double sum,
                    uint64_t count);
/* Whether s is a valid metric name ([a-zA-Z_:][a-zA-Z0-9_:]*) / label name
 * ([a-zA-Z_][a-zA-Z0-9_]*, not starting with "__"). */
int prom_valid_name(const char *s);
int prom_valid_label(const char *s);

#endif
