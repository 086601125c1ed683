/* Independent oracles for the C hosts: what the bytes and the model's
 * results should be, computed with plain pread, never through the library. */
#ifndef OM_TEST_ORACLE_H
#define OM_TEST_ORACLE_H

#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "byte_order.h"

/* The results of c_tests/model_compute.ll for the constants file at
 * `constants`: 0, or -1 if it cannot be read. */
static inline int oracle_expected(const char *constants, int64_t out[2]) {
  int64_t a[1024], b[512], c[512];
  uint64_t sum = 0, dot = 0;
  int i, fd = open(constants, O_RDONLY);
  if (fd < 0) return -1;
  if (pread(fd, a, sizeof a, 0) != (ssize_t)sizeof a ||
      pread(fd, b, sizeof b, 8192) != (ssize_t)sizeof b ||
      pread(fd, c, sizeof c, 4294967296LL) != (ssize_t)sizeof c) {
    close(fd);
    return -1;
  }
  close(fd);
  for (i = 0; i < 1024; i++) sum += (uint64_t)a[i];
  for (i = 0; i < 512; i++) dot += (uint64_t)b[i] * (uint64_t)c[i];
  out[0] = (int64_t)sum;
  out[1] = (int64_t)dot;
  return 0;
}

/* 0 when the `len` bytes at `mem` are the first `len` bytes of `path`. */
static inline int oracle_check_pattern(const char *path, const void *mem, int64_t len) {
  unsigned char buf[65536];
  int64_t at = 0;
  int fd = open(path, O_RDONLY);
  if (fd < 0) return -1;
  while (at < len) {
    size_t want = (size_t)(len - at < (int64_t)sizeof buf ? len - at : (int64_t)sizeof buf);
    if (pread(fd, buf, want, at) != (ssize_t)want || memcmp(buf, (const char *)mem + at, want) != 0) {
      close(fd);
      return -1;
    }
    at += (int64_t)want;
  }
  close(fd);
  return 0;
}

#endif
