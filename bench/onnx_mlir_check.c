/* onnx-mlir's loaded fast path, the baseline of fast_path.c: its runtime
 * returns at once when the slot already holds the constants. */
#include <stdbool.h>
#include <stdint.h>

bool onnx_mlir_check(void **const_addr, const char *fname, int64_t size, int64_t is_le) {
  (void)fname;
  (void)size;
  (void)is_le;
  return *(void *volatile *)const_addr != 0;
}
