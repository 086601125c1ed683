/* Every function of the C ABI from C, including every bad input of
 * docs/SEMANTICS.md. Usage: abi_test SCRATCH_DIR. Exit 0 when all checks pass. */
#define _POSIX_C_SOURCE 200809L
#include "om_constants.h"
#include "byte_order.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int failures = 0;
static int checks = 0;

#define CHECK(cond, what)                                                     \
  do {                                                                        \
    checks++;                                                                 \
    if (!(cond)) {                                                            \
      failures++;                                                             \
      fprintf(stderr, "FAIL %s:%d: %s (%s)\n", __FILE__, __LINE__, what,      \
              #cond);                                                         \
    }                                                                         \
  } while (0)


static unsigned char pattern(size_t i) { return (unsigned char)((i * 131 + i / 4099) % 251); }

static void write_file(const char *path, size_t len) {
  FILE *f = fopen(path, "wb");
  size_t i;
  if (!f) {
    perror(path);
    exit(2);
  }
  for (i = 0; i < len; i++) fputc(pattern(i), f);
  fclose(f);
}

/* A failed call: returns false, sets a non-empty message, leaves the slot. */
static void expect_failure(bool ok, void *slot_after, const char *what, const char *needle) {
  const char *err = om_constants_last_error();
  CHECK(!ok, what);
  CHECK(err != NULL && err[0] != '\0', what);
  CHECK(slot_after == NULL, what);
  if (err && needle && !strstr(err, needle)) {
    failures++;
    fprintf(stderr, "FAIL %s: message lacks '%s': %s\n", what, needle, err);
  }
  if (err) printf("  %-22s -> %s\n", what, err);
}

int main(int argc, char **argv) {
  char ok_path[4096], short_path[4096], fifo_path[4096], missing[4096];
  struct om_constants_stats st;
  st.size = sizeof st;
  void *slot = NULL, *c0 = NULL, *c1 = NULL, *legacy = NULL, *lc = NULL;
  const size_t size = 3 * 4096 + 17;
  size_t i;
  bool ok;

  if (argc != 2) {
    fprintf(stderr, "usage: abi_test SCRATCH_DIR\n");
    return 2;
  }
  snprintf(ok_path, sizeof ok_path, "%s/ok.bin", argv[1]);
  snprintf(short_path, sizeof short_path, "%s/short.bin", argv[1]);
  snprintf(fifo_path, sizeof fifo_path, "%s/fifo.bin", argv[1]);
  snprintf(missing, sizeof missing, "%s/missing.bin", argv[1]);
  write_file(ok_path, size);
  write_file(short_path, 100);
  if (mkfifo(fifo_path, 0600) != 0) {
    perror("mkfifo");
    return 2;
  }

  CHECK(om_constants_version() != NULL && strlen(om_constants_version()) >= 5, "version");
  CHECK(!om_constants_stats(NULL), "stats(NULL) fails");
  CHECK(om_constants_last_error() != NULL, "stats(NULL) says why");

  printf("bad inputs:\n");
  expect_failure(om_load_constants_from_file(NULL, ok_path, (int64_t)size, LE), NULL, "NULL slot", "NULL");
  expect_failure(om_load_constants_from_file(&slot, NULL, (int64_t)size, LE), slot, "NULL name", "NULL");
  expect_failure(om_load_constants_from_file(&slot, ok_path, 0, LE), slot, "size 0", "size");
  expect_failure(om_load_constants_from_file(&slot, ok_path, -8, LE), slot, "negative size", "size");
  expect_failure(om_load_constants_from_file(&slot, missing, 8, LE), slot, "missing file", "missing.bin");
  expect_failure(om_load_constants_from_file(&slot, argv[1], 8, LE), slot, "directory", "directory");
  expect_failure(om_load_constants_from_file(&slot, fifo_path, 8, LE), slot, "FIFO", "FIFO");
  expect_failure(om_load_constants_from_file(&slot, short_path, 101, LE), slot, "short file", "100 bytes");
  expect_failure(om_load_constants_from_file(&slot, ok_path, (int64_t)size, WRONG_IS_LE), slot, "wrong byte order", "byte order");
  expect_failure(om_mmap_binary_file(&slot, missing, 8, LE), slot, "ensure: missing file", "missing.bin");
  expect_failure(om_free_constant_buffer(NULL), NULL, "release NULL slot", "NULL");
  expect_failure(om_free_constant_buffer(&slot), slot, "release empty slot", "no reference");
  om_get_external_constant_addr(&c0, &slot, 0);
  expect_failure(false, c0, "address, unloaded base", "holds no buffer");
  om_get_external_constant_addr(NULL, &slot, 0);
  expect_failure(false, NULL, "address, NULL output", "NULL");

  printf("acquire / release:\n");
  ok = om_load_constants_from_file(&slot, ok_path, (int64_t)size, LE);
  CHECK(ok && slot != NULL, "acquire loads");
  CHECK(om_constants_last_error() == NULL, "success clears the last error");
  CHECK(om_load_constants_from_file(&slot, ok_path, (int64_t)size, LE), "second acquire");
  for (i = 0; i < size; i++) {
    if (((unsigned char *)slot)[i] != pattern(i)) {
      CHECK(0, "buffer holds the file's bytes");
      break;
    }
  }
  om_get_external_constant_addr(&c0, &slot, 4096);
  CHECK(c0 == (char *)slot + 4096, "constant address");
  om_get_external_constant_addr(&c0, &slot, 8192);
  CHECK(c0 == (char *)slot + 4096, "constant address is set once");
  om_get_external_constant_addr(&c1, &slot, (int64_t)size + 1);
  CHECK(c1 == NULL && om_constants_last_error() != NULL, "offset past the buffer is refused");
  CHECK(om_constants_stats(&st), "stats");
  CHECK(st.loads == 1 && st.references == 2 && st.live_buffers == 1, "stats after 2 acquires");
  CHECK(st.live_bytes == size, "live bytes");
  CHECK(om_free_constant_buffer(&slot) && slot != NULL, "first release keeps the buffer");
  CHECK(om_free_constant_buffer(&slot) && slot == NULL, "last release empties the slot");
  expect_failure(om_free_constant_buffer(&slot), slot, "double release", "no reference");
  CHECK(om_constants_stats(&st) && st.live_buffers == 0 && st.frees == 1, "freed exactly once");

  printf("onnx-mlir names:\n");
  CHECK(omMMapBinaryFile(&legacy, ok_path, (int64_t)size, LE), "omMMapBinaryFile loads");
  CHECK(omMMapBinaryFile(&legacy, ok_path, (int64_t)size, LE), "omMMapBinaryFile again");
  omGetExternalConstantAddr(&lc, &legacy, 17);
  CHECK(lc == (char *)legacy + 17 && *(unsigned char *)lc == pattern(17), "omGetExternalConstantAddr");
  CHECK(om_constants_stats(&st) && st.loads == 2 && st.references == 1, "ensure holds one reference");
  CHECK(omLoadConstantData(&legacy, ok_path, (int64_t)size, LE), "omLoadConstantData acquires");
  CHECK(omUnloadConstantData(&legacy, (int64_t)size), "omUnloadConstantData releases");
  CHECK(omUnloadConstantData(&legacy, (int64_t)size) && legacy == NULL, "last unload frees");
  CHECK(!omUnloadConstantData(&legacy, (int64_t)size), "unload of an empty slot fails");
  CHECK(om_constants_trim() == 0, "nothing to trim");
  CHECK(om_constants_stats(&st) && st.live_buffers == 0 && st.references == 0, "nothing leaked");
  CHECK(st.failures == 5, "the 5 failed loads (missing x2, directory, FIFO, short) are counted");

  unlink(ok_path);
  unlink(short_path);
  unlink(fifo_path);
  printf("%d passed, %d failed\n", checks - failures, failures);
  return failures == 0 ? 0 : 1;
}
