/* Bucket arithmetic of the latency histogram: values below 64 have a bucket
 * each; above, every power of two [2^e, 2^(e+1)) is cut into 32 equal
 * buckets. Quantiles walk the buckets and answer with a bucket's middle. */
#include "hist.h"


#define SUB (1u << HIST_SUB_BITS)

unsigned hist_index(uint64_t v) {
  unsigned e, shift;
  if (v < 2 * SUB)
    return (unsigned)v;
  e = 63u - (unsigned)__builtin_clzll(v);
  shift = e - HIST_SUB_BITS;
  return shift * SUB + (unsigned)(v >> shift);
}

uint64_t hist_value(unsigned i) {
  unsigned q, shift;
  uint64_t low;
  if (i < 2 * SUB)
    return i;
  q = i / SUB;          /* = shift + 1 */
  shift = q - 1;
  low = (uint64_t)(i % SUB + SUB) << shift;
  return low + ((1ull << shift) >> 1);
}

void hist_add_to(const hist *h, hist_snap *out) {
  for (unsigned i = 0; i < HIST_BUCKETS; i++)
    out->b[i] += atomic_load_explicit(&h->b[i], memory_order_relaxed);
}

void hist_diff(const hist_snap *a, const hist_snap *b, hist_snap *out) {
  for (unsigned i = 0; i < HIST_BUCKETS; i++)
    out->b[i] = a->b[i] - b->b[i];
}

uint64_t hist_count(const hist_snap *s) {
  uint64_t n = 0;
  for (unsigned i = 0; i < HIST_BUCKETS; i++)
    n += s->b[i];
  return n;
}

uint64_t hist_quantile(const hist_snap *s, double q) {
  uint64_t total = hist_count(s), want, seen = 0;
  if (total == 0)
    return 0;
  if (q < 0)
    q = 0;
  if (q > 1)
    q = 1;
  want = (uint64_t)(q * (double)total + 0.5);
  if (want < 1)
    want = 1;
  for (unsigned i = 0; i < HIST_BUCKETS; i++) {
    seen += s->b[i];
    if (seen >= want)
      return hist_value(i);
  }
  return hist_value(HIST_BUCKETS - 1);
}

uint64_t hist_min(const hist_snap *s) {
  for (unsigned i = 0; i < HIST_BUCKETS; i++)
    if (s->b[i])
      return hist_value(i);
  return 0;
}

uint64_t hist_max(const hist_snap *s) {
  for (unsigned i = HIST_BUCKETS; i-- > 0;)
    if (s->b[i])
      return hist_value(i);
  return 0;
}

double hist_mean(const hist_snap *s) {
  double sum = 0;
  uint64_t n = 0;
  for (unsigned i = 0; i < HIST_BUCKETS; i++) {
    sum += (double)s->b[i] * (double)hist_value(i);
    n += s->b[i];
  }
  return n ? sum / (double)n : 0;
}
