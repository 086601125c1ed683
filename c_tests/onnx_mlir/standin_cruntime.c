/* A stand-in for onnx-mlir's runtime library (libcruntime.a), written for
 * the tests: onnx-mlir's driver links every model with it
 * (`c++ model.o -o model.so -shared -fPIC -L<lib> -lcruntime`, then the
 * user's -l libraries), so a stock model defines the loader functions
 * itself, with default visibility. These behave as onnx-mlir's loader
 * does where a test can tell them apart from om-constants:
 *
 *   - the file is exactly $OM_CONSTANT_PATH/fname, else fname relative to
 *     the current directory (never the model's folder);
 *   - no reference count: a loaded slot is "already loaded", and unload
 *     unmaps whatever the slot holds;
 *
 * and they count their calls in om_standin_loads / om_standin_unloads, so a
 * host can see which loader served a model. Compiled with -fPIC and archived
 * as libstandin_cruntime.a by tests/onnx_mlir.rs. */
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int om_standin_loads = 0;
int om_standin_unloads = 0;

bool omLoadConstantData(void **const_addr, char *fname, int64_t size, int64_t is_le) {
  char path[4096];
  const char *base = getenv("OM_CONSTANT_PATH");
  void *p;
  int fd;
  (void)is_le;
  if (const_addr == NULL || size <= 0) return false;
  if (*const_addr != NULL) return true;
  om_standin_loads++;
  if (base)
    snprintf(path, sizeof path, "%s/%s", base, fname);
  else
    snprintf(path, sizeof path, "%s", fname);
  fd = open(path, O_RDONLY);
  if (fd < 0) {
    fprintf(stderr, "standin-cruntime: Error while opening %s\n", path);
    return false;
  }
  p = mmap(NULL, (size_t)size, PROT_READ, MAP_SHARED, fd, 0);
  close(fd);
  if (p == MAP_FAILED) return false;
  *const_addr = p;
  return true;
}

/* onnx-mlir before the constructor style: called at every inference. */
bool omMMapBinaryFile(void **const_addr, char *fname, int64_t size, int64_t is_le) {
  return omLoadConstantData(const_addr, fname, size, is_le);
}

void omGetExternalConstantAddr(void **output_addr, void **base_addr, int64_t offset) {
  if (output_addr == NULL || base_addr == NULL) return;
  if (*output_addr) return;
  *output_addr = (char *)*base_addr + offset;
}

bool omUnloadConstantData(void **const_addr, int64_t size) {
  if (const_addr == NULL || *const_addr == NULL) return false;
  om_standin_unloads++;
  munmap(*const_addr, (size_t)size);
  return true;
}
