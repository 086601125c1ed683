/* The C hosts' checks: CHECK(cond, printf-args) counts a check and prints
 * a FAIL line when it does not hold; report() prints the plain closing
 * line "N passed, M failed" and returns the exit code. The counts are
 * atomic: hosts check from several threads (ThreadSanitizer saw it). */
#ifndef OM_TEST_CHECK_H
#define OM_TEST_CHECK_H

#include <stdio.h>

static int failures = 0, checks = 0;

#define CHECK(cond, ...)                                   \
  do {                                                     \
    __atomic_fetch_add(&checks, 1, __ATOMIC_RELAXED);      \
    if (!(cond)) {                                         \
      __atomic_fetch_add(&failures, 1, __ATOMIC_RELAXED);  \
      fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
      fprintf(stderr, __VA_ARGS__);                        \
      fputc('\n', stderr);                                 \
    }                                                      \
  } while (0)

static inline int report(void) {
  int c = __atomic_load_n(&checks, __ATOMIC_RELAXED);
  int f = __atomic_load_n(&failures, __ATOMIC_RELAXED);
  printf("%d passed, %d failed\n", c - f, f);
  return f ? 1 : 0;
}

#endif
