/*
 * The loaded fast path of om_mmap_binary_file as a C model calls it, beside
 * onnx-mlir's own check (`if (constAddr[0]) return true;`, onnx_mlir_check.c)
 * at the same call distance. Run by scripts/bench-fast-path.sh; prints ns
 * per call (best of LOOPS loops of CALLS calls, the functions alternating
 * loop by loop so that both see the same machine).
 *
 * Two builds of this file:
 *   - dynamic (default): libom_constants.so and a shared library holding
 *     onnx_mlir_check are both dlopen()ed, so each call crosses into another
 *     module, as a model calls a separately shipped runtime;
 *   - -DOM_STATIC: the program links libom_constants.a and onnx_mlir_check.c
 *     into itself, as onnx-mlir links its runtime into the model.
 *
 * usage: fast_path FILE [LIB.so CHECK.so]   (FILE: any non-empty file)
 * Exits non-zero if a load fails or any timed call returns false.
 */
#include <dlfcn.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>

typedef bool (*ensure_fn)(void **, const char *, int64_t, int64_t);

enum { CALLS = 2000000, LOOPS = 40 };

#ifdef OM_STATIC
#include "om_constants.h"
bool onnx_mlir_check(void **, const char *, int64_t, int64_t);
#endif

static void *slot;

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

/* ns per call of one loop; -1 if a call returned false. */
static double time_loop(ensure_fn f, const char *name, int64_t size) {
  /* Read through a volatile so the compiler cannot see (or inline) the
   * callee; the arguments stay in registers like a model's constants. */
  ensure_fn volatile opaque = f;
  ensure_fn g = opaque;
  uint64_t ok = 0;
  double t = now();
  for (long i = 0; i < CALLS; i++)
    ok += g(&slot, name, size, 1);
  double ns = (now() - t) * 1e9 / CALLS;
  return ok == CALLS ? ns : -1;
}

#ifndef OM_STATIC
static void *symbol(const char *lib, const char *name) {
  void *h = dlopen(lib, RTLD_NOW | RTLD_LOCAL);
  if (!h) {
    fprintf(stderr, "fast_path: cannot dlopen %s: %s\n", lib, dlerror());
    exit(2);
  }
  void *s = dlsym(h, name);
  if (!s) {
    fprintf(stderr, "fast_path: %s has no %s: %s\n", lib, name, dlerror());
    exit(2);
  }
  return s;
}
#endif

int main(int argc, char **argv) {
#ifdef OM_STATIC
  if (argc != 2) {
    fprintf(stderr, "usage: %s FILE\n", argv[0]);
    return 2;
  }
  ensure_fn om = om_mmap_binary_file, check = onnx_mlir_check;
  const char *how = "linked into the program (static)";
#else
  if (argc != 4) {
    fprintf(stderr, "usage: %s FILE LIB.so CHECK.so\n", argv[0]);
    return 2;
  }
  ensure_fn om = (ensure_fn)symbol(argv[2], "om_mmap_binary_file");
  ensure_fn check = (ensure_fn)symbol(argv[3], "onnx_mlir_check");
  const char *how = "in shared libraries (dlopen)";
#endif
  struct stat st;
  if (stat(argv[1], &st) != 0 || st.st_size <= 0) {
    fprintf(stderr, "fast_path: %s: not a non-empty file\n", argv[1]);
    return 2;
  }
  if (!om(&slot, argv[1], st.st_size, 1)) {
    fprintf(stderr, "fast_path: loading %s failed\n", argv[1]);
    return 1;
  }
  double best_om = 1e9, best_check = 1e9;
  for (int i = 0; i < LOOPS; i++) {
    double a = time_loop(om, argv[1], st.st_size);
    double b = time_loop(check, argv[1], st.st_size);
    if (a < 0 || b < 0) {
      fprintf(stderr, "fast_path: a call on a loaded slot returned false\n");
      return 1;
    }
    best_om = a < best_om ? a : best_om;
    best_check = b < best_check ? b : best_check;
  }
  printf("fast path, %-34s om_mmap_binary_file %.2f ns/call, onnx-mlir's check %.2f "
         "ns/call, ratio %.3f\n",
         how, best_om, best_check, best_om / best_check);
  return 0;
}
