/* A host that runs models which carry their own copy of onnx-mlir's loader
 * (linked with c_tests/onnx_mlir/standin_cruntime.c the way onnx-mlir's
 * driver links libcruntime.a), in each way om-constants can be put in front
 * of that copy without rebuilding the model (docs/ONNX-MLIR.md):
 *
 *   host WAY LIB MODEL.so [MODEL.so ...]
 *
 *   linked         the host links libom_constants (built with -DOM_LINKED)
 *   preload        the host does not; the test starts it with LD_PRELOAD=LIB
 *   dlopen-global  dlopen(LIB, RTLD_NOW | RTLD_GLOBAL) before any model
 *   session        as dlopen-global, and each model is opened the way
 *                  onnx-mlir's ExecutionSession opens it: OM_CONSTANT_PATH
 *                  set to the model's folder around
 *                  dlopen(RTLD_LAZY | RTLD_GLOBAL), unset right after
 *   late           the model first (its own loader runs), then LIB with
 *                  RTLD_GLOBAL, then dlclose(model): om-constants gets a
 *                  release of a slot it never loaded
 *   none           om-constants is not put in front (LIB unused)
 *
 * It prints what happened, one `key=value` line each, for tests/onnx_mlir.rs
 * to judge: per model `model=I ok=0|1 match=0|1 standin_loads=N`, then
 * `om_loads=N om_live_open=N om_live_closed=N` (-1 where om-constants is not
 * in the process), and the plain closing line of its own checks (dlopen,
 * dlsym, dlclose). */
#define _GNU_SOURCE
#include "../check.h"
#include "../oracle.h"

#include <dlfcn.h>
#include <libgen.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef OM_LINKED
#include "om_constants.h"
#endif

#define MAX_MODELS 4

typedef bool (*entry_fn)(int64_t *out);
typedef bool (*stats_fn)(uint64_t *out);

/* om_constants_stats through the dynamic loader: the host may not link it.
 * Fields by index: size, live_buffers, kept, references, live_slots,
 * live_bytes, loads (include/om_constants.h). */
static long long om_stat(void *scope, int field) {
  uint64_t s[64];
  stats_fn f;
  *(void **)&f = dlsym(scope, "om_constants_stats");
  if (!f) return -1;
  memset(s, 0, sizeof s);
  s[0] = sizeof s;
  if (!f(s)) return -1;
  return (long long)s[field];
}

static void folder_of(const char *path, char *out, size_t cap) {
  char copy[4096];
  snprintf(copy, sizeof copy, "%s", path);
  snprintf(out, cap, "%s", dirname(copy));
}

int main(int argc, char **argv) {
  const char *way, *lib;
  void *handles[MAX_MODELS], *scope = RTLD_DEFAULT;
  int n, i;
  if (argc < 4 || argc - 3 > MAX_MODELS) {
    fprintf(stderr, "usage: host WAY LIB MODEL.so [MODEL.so ...]\n");
    return 2;
  }
  way = argv[1];
  lib = argv[2];
  n = argc - 3;
#ifdef OM_LINKED
  CHECK(om_constants_version() != NULL, "linked library answers");
#endif
  if (!strcmp(way, "dlopen-global") || !strcmp(way, "session")) {
    CHECK(dlopen(lib, RTLD_NOW | RTLD_GLOBAL) != NULL, "dlopen %s: %s", lib, dlerror());
  }
  for (i = 0; i < n; i++) {
    const char *model = argv[3 + i];
    int flags = RTLD_LAZY | RTLD_LOCAL;
    if (!strcmp(way, "session")) {
      char dir[4096];
      folder_of(model, dir, sizeof dir);
      setenv("OM_CONSTANT_PATH", dir, 1);
      flags = RTLD_LAZY | RTLD_GLOBAL;
    }
    handles[i] = dlopen(model, flags);
    if (!strcmp(way, "session")) unsetenv("OM_CONSTANT_PATH");
    if (!handles[i]) {
      fprintf(stderr, "dlopen %s: %s\n", model, dlerror());
      return 1;
    }
  }
  if (!strcmp(way, "late")) {
    CHECK(dlopen(lib, RTLD_NOW | RTLD_GLOBAL) != NULL, "dlopen %s: %s", lib, dlerror());
  }
  /* With no om-constants in front, a model that links it still has it. */
  if (!strcmp(way, "none")) scope = handles[0];
  for (i = 0; i < n; i++) {
    const char *model = argv[3 + i];
    char dir[4096], constants[4200];
    int64_t out[2] = {0, 0}, want[2] = {1, 1};
    entry_fn run;
    int *standin;
    bool ok;
    folder_of(model, dir, sizeof dir);
    snprintf(constants, sizeof constants, "%s/model.constants.bin", dir);
    CHECK(oracle_expected(constants, want) == 0, "cannot read %s", constants);
    *(void **)&run = dlsym(handles[i], "run_main_graph");
    standin = (int *)dlsym(handles[i], "om_standin_loads");
    CHECK(run != NULL, "%s has no run_main_graph", model);
    if (!run) continue;
    ok = run(out);
    printf("model=%d ok=%d match=%d standin_loads=%d\n", i, ok ? 1 : 0,
           ok && out[0] == want[0] && out[1] == want[1] ? 1 : 0, standin ? *standin : -1);
  }
  printf("om_loads=%lld om_live_open=%lld\n", om_stat(scope, 6), om_stat(scope, 1));
  fflush(stdout);
  for (i = 0; i < n; i++) CHECK(dlclose(handles[i]) == 0, "dlclose %s", argv[3 + i]);
  if (!strcmp(way, "none")) scope = RTLD_DEFAULT; /* the model, and so the library, may be gone */
  printf("om_live_closed=%lld\n", om_stat(scope, 1));
  return report();
}
