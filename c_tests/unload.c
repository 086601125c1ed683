/* Unloading, from a host that does not link the library: it only
 * dlopens the library or a model that links it, so dlclose can really
 * unload the library (docs/SEMANTICS.md, "The host's whole life").
 *
 *   unload library LIB.so FILE SIZE
 *       dlopen the library, ensure-load FILE with a slot of the host's on
 *       a worker thread (OM_CONSTANT_PREFETCH=background starts a helper
 *       thread), dlclose the library, and keep running while the helper
 *       would still run.
 *   unload model MODEL.so
 *       dlopen a model that links the library, run one inference on a
 *       worker thread, dlclose the model, keep running.
 *   unload reload LIB.so FILE SIZE CYCLES
 *       CYCLES times: dlopen the library, acquire and release FILE from a
 *       short-lived thread, dlclose it (run under valgrind for leaks).
 *
 * Prints "N passed, M failed"; exit 0 when every check passes. */
#define _GNU_SOURCE
#include "check.h"
#include "oracle.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>



static const char *g_file;
static int64_t g_size;

/* The library's functions, from a dlopen'ed copy. */
struct lib {
  void *handle;
  bool (*ensure)(void **, const char *, int64_t, int64_t);
  bool (*acquire)(void **, const char *, int64_t, int64_t);
  bool (*release)(void **);
  const char *(*last_error)(void);
};

static int open_lib(const char *path, struct lib *l) {
  l->handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (!l->handle) {
    fprintf(stderr, "dlopen %s: %s\n", path, dlerror());
    return -1;
  }
  *(void **)&l->ensure = dlsym(l->handle, "om_mmap_binary_file");
  *(void **)&l->acquire = dlsym(l->handle, "om_load_constants_from_file");
  *(void **)&l->release = dlsym(l->handle, "om_free_constant_buffer");
  *(void **)&l->last_error = dlsym(l->handle, "om_constants_last_error");
  return (l->ensure && l->acquire && l->release && l->last_error) ? 0 : -1;
}

/* ---- unload ---------------------------------------------------------- */

static void *host_slot = NULL;
static struct lib unload_lib;
static bool unload_ok;

/* On a worker thread, as a server's request thread would: its exit ends
 * whatever the thread itself held of the library (thread-locals). */
static void *ensure_on_worker(void *arg) {
  (void)arg;
  unload_ok = unload_lib.ensure(&host_slot, g_file, g_size, LE);
  if (!unload_ok) fprintf(stderr, "ensure-load: %s\n", unload_lib.last_error());
  return NULL;
}

static int unload_library(const char *lib_path) {
  pthread_t t;
  CHECK(open_lib(lib_path, &unload_lib) == 0, "open %s", lib_path);
  if (failures) return report();
  pthread_create(&t, NULL, ensure_on_worker, NULL);
  pthread_join(t, NULL);
  CHECK(unload_ok, "ensure-load failed");
  CHECK(dlclose(unload_lib.handle) == 0, "dlclose");
  /* The helper touches pages for seconds; if its code were unmapped the
   * process would die here. */
  usleep(1500 * 1000); /* the test: this process is still alive */
  return report();
}

struct model {
  bool (*run)(int64_t *out);
  int64_t got[2];
  bool ok;
};

static void *run_model(void *arg) {
  struct model *m = arg;
  m->ok = m->run(m->got);
  return NULL;
}

static int unload_model(const char *model_path) {
  struct model m;
  pthread_t t;
  void *h = dlopen(model_path, RTLD_NOW | RTLD_LOCAL);
  CHECK(h != NULL, "dlopen %s: %s", model_path, h ? "" : dlerror());
  if (!h) return report();
  memset(&m, 0, sizeof m);
  *(void **)&m.run = dlsym(h, "run_main_graph");
  CHECK(m.run != NULL, "no run_main_graph");
  if (failures) return report();
  pthread_create(&t, NULL, run_model, &m);
  pthread_join(t, NULL);
  CHECK(m.ok, "the inference failed");
  CHECK(dlclose(h) == 0, "dlclose");
  usleep(1500 * 1000); /* the test: this process is still alive */
  return report();
}

/* ---- reload ---------------------------------------------------------- */

struct use {
  struct lib *l;
  const char *file;
  int64_t size;
  bool ok;
};

static void *use_once(void *arg) {
  struct use *u = arg;
  void *slot = NULL;
  u->ok = u->l->acquire(&slot, u->file, u->size, LE) && u->l->release(&slot);
  /* A failed call leaves a last error in this thread. */
  u->l->release(&slot);
  return NULL;
}

static int reload(const char *lib_path, const char *file, int64_t size, int cycles) {
  int i;
  for (i = 0; i < cycles; i++) {
    struct lib l;
    struct use u;
    pthread_t t;
    CHECK(open_lib(lib_path, &l) == 0, "open %s", lib_path);
    if (failures) break;
    u.l = &l;
    u.file = file;
    u.size = size;
    u.ok = false;
    pthread_create(&t, NULL, use_once, &u);
    pthread_join(t, NULL);
    CHECK(u.ok, "cycle %d: acquire/release failed", i);
    CHECK(dlclose(l.handle) == 0, "dlclose");
  }
  return report();
}

int main(int argc, char **argv) {
  const char *cmd = argc > 1 ? argv[1] : "";
  if (argc == 5 && strcmp(cmd, "library") == 0) {
    g_file = argv[3];
    g_size = atoll(argv[4]);
    return unload_library(argv[2]);
  }
  if (argc == 3 && strcmp(cmd, "model") == 0) return unload_model(argv[2]);
  if (argc == 6 && strcmp(cmd, "reload") == 0) return reload(argv[2], argv[3], atoll(argv[4]), atoi(argv[5]));
  fprintf(stderr, "usage: see the comment at the top of c_tests/unload.c\n");
  return 2;
}
