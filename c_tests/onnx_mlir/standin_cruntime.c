/* A stand-in for onnx-mlir's runtime library (libcruntime.a), written for
 * the tests: onnx-mlir's driver links every model with it
 * (`c++ model.o -o model.so -shared -fPIC -L<lib> -lcruntime`, then the
 * user's -l libraries), so a stock model defines the loader functions
 * itself, with default visibility. Compiled once per release line, as
 * tests/onnx_mlir.rs archives it, each defining only what that line's
 * Runtime/OMExternalConstant.{c,inc} in onnx-mlir defines, behaving as it does:
 *
 *   -DOM_RUNTIME_V05   tags v0.5.0.0 and v0.5.0.1, and main before commit
 *                      0c3b3db22 (2026-03-27): omMMapBinaryFile (called at
 *                      every inference) and omGetExternalConstantAddr; the
 *                      byte order is not checked (checkEndianness exists
 *                      but is never called); the fd is closed after mmap;
 *                      a compare-and-swap publishes the mapping.
 *   -DOM_RUNTIME_CTOR  main since commit e8564b895 (2026-03-31), unchanged
 *                      to the newest: omLoadConstantData (from the model's
 *                      constructor), omUnloadConstantData(addr, size) (from
 *                      its destructor) and omGetExternalConstantAddr; a
 *                      byte-order mismatch returns false; no reference
 *                      count: a loaded slot is "already loaded", and unload
 *                      unmaps whatever the slot holds.
 *
 * Both open exactly $OM_CONSTANT_PATH/fname (the variable read at each
 * load), else fname relative to the current directory (never the model's
 * folder), and print onnx-mlir's messages. The only additions are two call
 * counters, om_standin_loads and om_standin_unloads, so that a host can
 * see which loader served a model. */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#if defined(OM_RUNTIME_V05) == defined(OM_RUNTIME_CTOR)
#error "compile with exactly one of -DOM_RUNTIME_V05 and -DOM_RUNTIME_CTOR"
#endif

int om_standin_loads = 0;
int om_standin_unloads = 0;

/* $OM_CONSTANT_PATH/fname, or fname: onnx-mlir's path, in `out`. */
static const char *constants_path(char *out, size_t cap, const char *fname) {
  const char *base = getenv("OM_CONSTANT_PATH");
  if (!base) return fname;
  snprintf(out, cap, "%s/%s", base, fname);
  return out;
}

#ifdef OM_RUNTIME_V05
bool omMMapBinaryFile(void **constAddr, char *fname, int64_t size, int64_t isLE) {
  char buf[4096];
  const char *filePath;
  void *tempAddr;
  int fd;
  (void)isLE; /* not checked in this release line */
  if (constAddr == NULL) {
    fprintf(stderr, "Error: null pointer.");
    return false;
  }
  if (constAddr[0] != NULL) return true;
  __atomic_fetch_add(&om_standin_loads, 1, __ATOMIC_RELAXED);
  filePath = constants_path(buf, sizeof buf, fname);
  fd = open(filePath, O_RDONLY);
  if (fd < 0) {
    fprintf(stderr, "Error while opening %s: %s\n", filePath, strerror(errno));
    return false;
  }
  tempAddr = mmap(0, (size_t)size, PROT_READ, MAP_SHARED, fd, 0);
  if (tempAddr == MAP_FAILED) {
    fprintf(stderr, "Error while mmapping %s: %s\n", fname, strerror(errno));
    close(fd);
    return false;
  }
  if (!__sync_bool_compare_and_swap(&constAddr[0], NULL, tempAddr)) munmap(tempAddr, (size_t)size);
  close(fd);
  return true;
}
#endif

#ifdef OM_RUNTIME_CTOR
static bool checkEndianness(const char constPackIsLE) {
  const int one = 1;
  bool systemIsLE = *(const char *)&one != 0;
  return !systemIsLE == !constPackIsLE;
}

bool omLoadConstantData(void **constAddr, char *fname, int64_t size, int64_t isLE) {
  char buf[4096];
  const char *filePath;
  void *p;
  int fd;
  if (constAddr == NULL) {
    fprintf(stderr, "Error: null pointer.\n");
    return false;
  }
  if (size <= 0) {
    fprintf(stderr, "File size is zero.\n");
    return false;
  }
  if (constAddr[0] != NULL) return true;
  if (!checkEndianness((char)isLE)) {
    fprintf(stderr, "Constant pack is stored in a byte order that is not "
                    "native to this current system.\n");
    return false;
  }
  __atomic_fetch_add(&om_standin_loads, 1, __ATOMIC_RELAXED);
  filePath = constants_path(buf, sizeof buf, fname);
  fd = open(filePath, O_RDONLY);
  if (fd < 0) {
    fprintf(stderr,
            "Error while opening %s: %s. Please set OM_CONSTANT_PATH to the folder "
            "that contains %s.\n",
            filePath, strerror(errno), fname);
    return false;
  }
  p = mmap(NULL, (size_t)size, PROT_READ, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) {
    fprintf(stderr, "Error while loading the constant file %s\n", filePath);
    close(fd);
    return false;
  }
  constAddr[0] = p;
  close(fd);
  return true;
}

bool omUnloadConstantData(void **constAddr, int64_t size) {
  if (constAddr == NULL) return false;
  if (constAddr[0] == NULL) return false;
  __atomic_fetch_add(&om_standin_unloads, 1, __ATOMIC_RELAXED);
  munmap(constAddr[0], (size_t)size);
  return true;
}
#endif

void omGetExternalConstantAddr(void **outputAddr, void **baseAddr, int64_t offset) {
  if (outputAddr == NULL || baseAddr == NULL) {
    fprintf(stderr, "Error: null pointer.\n");
    return;
  }
  if (outputAddr[0]) return;
  outputAddr[0] = (char *)baseAddr[0] + offset;
}
