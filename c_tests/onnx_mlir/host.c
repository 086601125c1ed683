/* A host that runs models which carry their own copy of onnx-mlir's loader
 * (linked with c_tests/onnx_mlir/standin_cruntime.c the way onnx-mlir's
 * driver links libcruntime.a), in each way om-constants can be put in front
 * of that copy without rebuilding the model (docs/ONNX-MLIR.md):
 *
 *   host WAY LIB MODEL.so [MODEL.so ...]
 *
 *   linked          the host links libom_constants (built by the command of
 *                   docs/ONNX-MLIR.md, "The host links it"; it calls nothing
 *                   of the library)
 *   preload         the host does not; the test starts it with LD_PRELOAD=LIB
 *   dlopen-global   dlopen(LIB, RTLD_NOW | RTLD_GLOBAL) before any model
 *   session-v05     as dlopen-global, and each model opened as one release
 *   session-released  line of onnx-mlir's ExecutionSession (C++, behind
 *   session-newest  PyRuntime) opens it, OM_CONSTANT_PATH included (below)
 *   late            the model first (its own loader runs), then LIB with
 *                   RTLD_GLOBAL, then dlclose(model): om-constants gets a
 *                   release of a slot it never loaded
 *   none            om-constants is not put in front (LIB unused)
 *
 * The weights a model should get are those beside it, or in
 * $HOST_ORACLE_DIR when that is set. $HOST_PATH_BEFORE_LIB, when set, is
 * put in OM_CONSTANT_PATH before LIB is loaded.
 *
 * LIB "-" loads no library (a session over models that carry om-constants'
 * archive, or onnx-mlir's loader alone). A WAY ending in "+threads" opens
 * the models two at a time, each pair from two threads released together,
 * runs both and closes both before the next pair: two sessions at once.
 *
 * ExecutionSession's handling of OM_CONSTANT_PATH, per release line
 * (onnx-mlir's Runtime/ExecutionSession.cpp; `base` is the model path up to its
 * last '/', and the variable is set only when there is one):
 *
 *   v05       tags v0.5.0.x and main before 0c3b3db22 (2026-03-27):
 *             dlopen(RTLD_LAZY | RTLD_GLOBAL), then
 *             setenv("OM_CONSTANT_PATH", base, 0); never unset
 *   released  0c3b3db22 to 2026-06-29: setenv(base, 0) before dlopen;
 *             never unset
 *   newest    b48e07fa5 (2026-06-30) on: if getenv() is NULL,
 *             setenv(base, 0) before dlopen and unsetenv() after it
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
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef bool (*entry_fn)(int64_t *out);
typedef bool (*stats_fn)(uint64_t *out);

enum session { NOT_A_SESSION, V05, RELEASED, NEWEST };

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

/* `path` up to its last '/' (ExecutionSession's basePath), or 0 if none. */
static int base_of(const char *path, char *out, size_t cap) {
  const char *slash = strrchr(path, '/');
  if (!slash) return 0;
  snprintf(out, cap, "%.*s", (int)(slash - path), path);
  return 1;
}

/* Opens `model` as the release line `s` of ExecutionSession does. */
static void *open_session(const char *model, enum session s) {
  char base[4096];
  int has_base = base_of(model, base, sizeof base), set_here = 0;
  void *h;
  if (s == RELEASED && has_base) setenv("OM_CONSTANT_PATH", base, 0);
  if (s == NEWEST && !getenv("OM_CONSTANT_PATH") && has_base) {
    setenv("OM_CONSTANT_PATH", base, 0);
    set_here = 1;
  }
  h = dlopen(model, RTLD_LAZY | RTLD_GLOBAL);
  if (s == V05 && has_base) setenv("OM_CONSTANT_PATH", base, 0);
  if (set_here) unsetenv("OM_CONSTANT_PATH");
  return h;
}

static void *open_model(const char *model, enum session s) {
  if (s != NOT_A_SESSION) return open_session(model, s);
  return dlopen(model, RTLD_LAZY | RTLD_LOCAL);
}

/* Runs model `i` and prints its line. */
static void run_model(int i, const char *model, void *handle) {
  char dir[4096], constants[4200];
  int64_t out[2] = {0, 0}, want[2] = {1, 1};
  entry_fn run;
  int *standin;
  bool ok;
  const char *oracle_dir = getenv("HOST_ORACLE_DIR");
  folder_of(model, dir, sizeof dir);
  snprintf(constants, sizeof constants, "%s/model.constants.bin", oracle_dir ? oracle_dir : dir);
  CHECK(oracle_expected(constants, want) == 0, "cannot read %s", constants);
  *(void **)&run = dlsym(handle, "run_main_graph");
  standin = (int *)dlsym(handle, "om_standin_loads");
  CHECK(run != NULL, "%s has no run_main_graph", model);
  if (!run) return;
  ok = run(out);
  printf("model=%d ok=%d match=%d standin_loads=%d\n", i, ok ? 1 : 0,
         ok && out[0] == want[0] && out[1] == want[1] ? 1 : 0, standin ? *standin : -1);
}

/* One of two sessions opened at once. */
struct opener {
  const char *model;
  enum session s;
  pthread_barrier_t *start;
  void *handle;
};

static void *open_after_barrier(void *arg) {
  struct opener *o = arg;
  pthread_barrier_wait(o->start);
  o->handle = open_model(o->model, o->s);
  return NULL;
}

int main(int argc, char **argv) {
  const char *lib;
  char way[64];
  void **handles, *scope = RTLD_DEFAULT;
  enum session s = NOT_A_SESSION;
  int n, i, threads = 0;
  char *plus;
  if (argc < 4) {
    fprintf(stderr, "usage: host WAY LIB MODEL.so [MODEL.so ...]\n");
    return 2;
  }
  snprintf(way, sizeof way, "%s", argv[1]);
  if ((plus = strstr(way, "+threads")) != NULL) {
    *plus = '\0';
    threads = 1;
  }
  if (!strcmp(way, "session-v05")) s = V05;
  if (!strcmp(way, "session-released")) s = RELEASED;
  if (!strcmp(way, "session-newest")) s = NEWEST;
  lib = argv[2];
  n = argc - 3;
  handles = calloc((size_t)n, sizeof *handles);
  if (!handles) return 2;
  if (!strcmp(way, "linked") || !strcmp(way, "preload"))
    CHECK(dlsym(RTLD_DEFAULT, "om_constants_stats") != NULL, "om-constants is in the global scope");
  /* A deployer's OM_CONSTANT_PATH set in the host before it loads LIB. */
  if (getenv("HOST_PATH_BEFORE_LIB")) setenv("OM_CONSTANT_PATH", getenv("HOST_PATH_BEFORE_LIB"), 1);
  if (strcmp(lib, "-") && (!strcmp(way, "dlopen-global") || s != NOT_A_SESSION)) {
    CHECK(dlopen(lib, RTLD_NOW | RTLD_GLOBAL) != NULL, "dlopen %s: %s", lib, dlerror());
  }
  if (threads) {
    pthread_barrier_t start;
    CHECK(n % 2 == 0, "+threads takes models in pairs");
    pthread_barrier_init(&start, NULL, 2);
    for (i = 0; i + 1 < n; i += 2) {
      struct opener o[2] = {{argv[3 + i], s, &start, NULL}, {argv[4 + i], s, &start, NULL}};
      pthread_t t[2];
      int k;
      for (k = 0; k < 2; k++) CHECK(pthread_create(&t[k], NULL, open_after_barrier, &o[k]) == 0, "thread");
      for (k = 0; k < 2; k++) pthread_join(t[k], NULL);
      for (k = 0; k < 2; k++) {
        CHECK(o[k].handle != NULL, "dlopen %s: %s", o[k].model, dlerror());
        if (o[k].handle) run_model(i + k, o[k].model, o[k].handle);
      }
      for (k = 0; k < 2; k++)
        if (o[k].handle) CHECK(dlclose(o[k].handle) == 0, "dlclose %s", o[k].model);
    }
    pthread_barrier_destroy(&start);
    printf("om_loads=%lld om_live_open=%lld\n", om_stat(scope, 6), om_stat(scope, 1));
    free(handles);
    return report();
  }
  for (i = 0; i < n; i++) {
    handles[i] = open_model(argv[3 + i], s);
    if (!handles[i]) {
      fprintf(stderr, "dlopen %s: %s\n", argv[3 + i], dlerror());
      return 1;
    }
  }
  if (!strcmp(way, "late")) {
    CHECK(dlopen(lib, RTLD_NOW | RTLD_GLOBAL) != NULL, "dlopen %s: %s", lib, dlerror());
  }
  /* With no om-constants in front, a model that links it still has it. */
  if (!strcmp(way, "none")) scope = handles[0];
  for (i = 0; i < n; i++) run_model(i, argv[3 + i], handles[i]);
  printf("om_loads=%lld om_live_open=%lld\n", om_stat(scope, 6), om_stat(scope, 1));
  fflush(stdout);
  for (i = 0; i < n; i++) CHECK(dlclose(handles[i]) == 0, "dlclose %s", argv[3 + i]);
  if (!strcmp(way, "none")) scope = RTLD_DEFAULT; /* the model, and so the library, may be gone */
  printf("om_live_closed=%lld\n", om_stat(scope, 1));
  free(handles);
  return report();
}
