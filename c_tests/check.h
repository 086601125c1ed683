/* The C hosts' checks: CHECK(cond, printf-args) counts a check and prints
 * a FAIL line when it does not hold; report() prints the plain closing
 * line "N passed, M failed" and returns the exit code. */
#ifndef OM_TEST_CHECK_H
#define OM_TEST_CHECK_H

#include <stdio.h>

static int failures = 0, checks = 0;

#define CHECK(cond, ...)                                   \
  do {                                                     \
    checks++;                                              \
    if (!(cond)) {                                         \
      failures++;                                          \
      fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
      fprintf(stderr, __VA_ARGS__);                        \
      fputc('\n', stderr);                                 \
    }                                                      \
  } while (0)

static inline int report(void) {
  printf("%d passed, %d failed\n", checks - failures, failures);
  return failures ? 1 : 0;
}

#endif
