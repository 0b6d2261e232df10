/* Latency histogram for pier-bench: log-linear buckets (32 per power of two,
 * so any value is known to within about 3%) over nanoseconds. One thread
 * records into a histogram while another may read it: every bucket is an
 * atomic with a single writer, so recording costs no locked instruction. */
#ifndef PIER_BENCH_HIST_H
#define PIER_BENCH_HIST_H

#include <stdatomic.h>
#include <stdint.h>

#define HIST_SUB_BITS 5
#define HIST_BUCKETS ((64 - HIST_SUB_BITS + 1) << HIST_SUB_BITS)

typedef struct hist {
  _Atomic uint64_t b[HIST_BUCKETS];
} hist;

/* A plain copy, for arithmetic on snapshots. */
typedef struct hist_snap {
  uint64_t b[HIST_BUCKETS];
} hist_snap;

unsigned hist_index(uint64_t v);
/* The middle of bucket i: the value reported for everything in it. */
uint64_t hist_value(unsigned i);

/* Single writer per histogram. */
static inline void hist_record(hist *h, uint64_t v) {
  _Atomic uint64_t *c = &h->b[hist_index(v)];
  atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + 1,
                        memory_order_relaxed);
}

/* out += h (any thread). */
void hist_add_to(const hist *h, hist_snap *out);
/* out = a - b, bucket by bucket (a taken after b). */
void hist_diff(const hist_snap *a, const hist_snap *b, hist_snap *out);
uint64_t hist_count(const hist_snap *s);
/* The value at quantile q (0..1), 0 for an empty histogram. */
uint64_t hist_quantile(const hist_snap *s, double q);
uint64_t hist_min(const hist_snap *s);
uint64_t hist_max(const hist_snap *s);
double hist_mean(const hist_snap *s);

#endif
