/* Shared by the fuzz targets. Each target defines FUZZ_ENTRY, which is
 * LLVMFuzzerTestOneInput in a libFuzzer build; the replay test compiles all
 * targets into one program and gives each entry its own name. A broken
 * invariant prints what was expected and aborts, which libFuzzer records as a
 * crash and the replay test reports as a failure. */
#ifndef PIER_FUZZ_H
#define PIER_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#ifndef FUZZ_ENTRY
#define FUZZ_ENTRY LLVMFuzzerTestOneInput
#endif

int FUZZ_ENTRY(const uint8_t *data, size_t size);

#define FUZZ_CHECK(cond, ...)                                                   \
  do {                                                                          \
    if (!(cond)) {                                                              \
      fprintf(stderr, "%s:%d: invariant failed: %s: ", __FILE__, __LINE__, #cond); \
      fprintf(stderr, __VA_ARGS__);                                             \
      fputc('\n', stderr);                                                      \
      fflush(stderr);                                                           \
      abort();                                                                  \
    }                                                                           \
  } while (0)

/* Small deterministic generator for piece sizes. */
static inline uint32_t fuzz_rand(uint64_t *state) {
  uint64_t x = *state ? *state : 0x9E3779B97F4A7C15ull;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  *state = x;
  return (uint32_t)(x >> 32);
}

/* FNV-1a of the input: seeds the generator where the input carries no
 * explicit seed, so every mutation also varies how the input is cut. */
static inline uint64_t fuzz_hash(const uint8_t *data, size_t size) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (size_t i = 0; i < size; i++)
    h = (h ^ data[i]) * 0x100000001b3ull;
  return h;
}

#endif
