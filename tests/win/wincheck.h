/* The check counter of the Windows test programs in tests/win (plain
 * programs, run under wine by tests/win/run): CHECK counts, reports a
 * failure with its place and a message, and goes on; main returns fails. */
#ifndef PIER_TESTS_WINCHECK_H
#define PIER_TESTS_WINCHECK_H

#include <stdio.h>

static int checks, fails;

#define CHECK(cond, ...)                                              \
  do {                                                                \
    checks++;                                                         \
    if (!(cond)) {                                                    \
      fails++;                                                        \
      fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
      fprintf(stderr, __VA_ARGS__);                                   \
      fputc('\n', stderr);                                            \
    }                                                                 \
  } while (0)

#endif
