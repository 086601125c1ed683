/* A host that runs compiled models (c_tests/model_*.ll) from 8 threads.
 *
 *   host LIVE_OPEN LIVE_CLOSED MODEL.so [MODEL.so ...]
 *       dlopen every model (its constants file sits beside it, found by the
 *       library through dladdr), run each from 8 threads, check each result
 *       against values computed here from the file, check that
 *       om_constants_stats shows LIVE_OPEN live buffers, dlclose them all,
 *       and check LIVE_CLOSED live buffers remain.
 *
 * Built with -DOM_STATIC_MODEL, the model is linked into this executable
 * (with libom_constants.a) and the constants file sits beside the
 * executable: `host_static LIVE_OPEN`.
 *
 * Exit 0 when every check passes. */
#define _GNU_SOURCE
#include "om_constants.h"
#include "check.h"
#include "oracle.h"

#include <dlfcn.h>
#include <fcntl.h>
#include <libgen.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define THREADS 8
#define RUNS 50
#define MAX_MODELS 4

typedef bool (*entry_fn)(int64_t *out);

struct model {
  const char *path;
  void *handle;
  entry_fn run;
  int64_t expect[2];
  int bad; /* results that did not match, over all threads */
};


static void *worker(void *arg) {
  struct model *m = arg;
  int r;
  for (r = 0; r < RUNS; r++) {
    int64_t out[2] = {0, 0};
    if (!m->run(out) || out[0] != m->expect[0] || out[1] != m->expect[1]) {
      __atomic_add_fetch(&m->bad, 1, __ATOMIC_RELAXED);
      if (r == 0) {
        const char *e = om_constants_last_error();
        fprintf(stderr, "%s: got %lld %lld, want %lld %lld (%s)\n", m->path, (long long)out[0],
                (long long)out[1], (long long)m->expect[0], (long long)m->expect[1], e ? e : "");
      }
    }
  }
  return NULL;
}

static void run_threads(struct model *models, int n) {
  pthread_t t[MAX_MODELS][THREADS];
  int i, k;
  for (i = 0; i < n; i++)
    for (k = 0; k < THREADS; k++) pthread_create(&t[i][k], NULL, worker, &models[i]);
  for (i = 0; i < n; i++)
    for (k = 0; k < THREADS; k++) pthread_join(t[i][k], NULL);
  for (i = 0; i < n; i++)
    CHECK(models[i].bad == 0, "%s: %d of %d runs wrong", models[i].path, models[i].bad, THREADS * RUNS);
}

static struct om_constants_stats stats(const char *when) {
  struct om_constants_stats s;
  s.size = sizeof s;
  om_constants_stats(&s);
  printf("%-14s live_buffers=%llu references=%llu live_slots=%llu loads=%llu shared=%llu "
         "bytes_read=%llu bytes_mapped=%llu frees=%llu\n",
         when, (unsigned long long)s.live_buffers, (unsigned long long)s.references,
         (unsigned long long)s.live_slots, (unsigned long long)s.loads,
         (unsigned long long)s.shared, (unsigned long long)s.bytes_read,
         (unsigned long long)s.bytes_mapped, (unsigned long long)s.frees);
  return s;
}

static void constants_beside(const char *object, char *out, size_t cap) {
  char copy[4096];
  snprintf(copy, sizeof copy, "%s", object);
  snprintf(out, cap, "%s/model.constants.bin", dirname(copy));
}

#ifdef OM_STATIC_MODEL
bool run_main_graph(int64_t *out);

int main(int argc, char **argv) {
  struct model m;
  char exe[4096], constants[4096];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (argc != 2 || n <= 0) {
    fprintf(stderr, "usage: host_static LIVE_OPEN\n");
    return 2;
  }
  exe[n] = '\0';
  memset(&m, 0, sizeof m);
  m.path = exe;
  m.run = run_main_graph;
  constants_beside(exe, constants, sizeof constants);
  CHECK(oracle_expected(constants, m.expect) == 0, "cannot read %s", constants);
  run_threads(&m, 1);
  CHECK(stats("after runs").live_buffers == strtoull(argv[1], NULL, 10), "live buffers");
  return report();
}
#else
int main(int argc, char **argv) {
  struct model models[MAX_MODELS];
  unsigned long long live_open, live_closed;
  int n, i;
  if (argc < 4 || argc - 3 > MAX_MODELS) {
    fprintf(stderr, "usage: host LIVE_OPEN LIVE_CLOSED MODEL.so [MODEL.so ...]\n");
    return 2;
  }
  live_open = strtoull(argv[1], NULL, 10);
  live_closed = strtoull(argv[2], NULL, 10);
  n = argc - 3;
  memset(models, 0, sizeof models);
  stats("start");
  for (i = 0; i < n; i++) {
    char constants[4096];
    struct model *m = &models[i];
    m->path = argv[3 + i];
    m->handle = dlopen(m->path, RTLD_NOW | RTLD_LOCAL);
    if (!m->handle) {
      fprintf(stderr, "dlopen %s: %s\n", m->path, dlerror());
      return 1;
    }
    *(void **)&m->run = dlsym(m->handle, "run_main_graph");
    CHECK(m->run != NULL, "%s has no run_main_graph", m->path);
    constants_beside(m->path, constants, sizeof constants);
    CHECK(oracle_expected(constants, m->expect) == 0, "cannot read %s", constants);
  }
  if (failures) return 1;
  run_threads(models, n);
  CHECK(stats("models open").live_buffers == live_open, "live buffers while open, want %llu", live_open);
  for (i = 0; i < n; i++) CHECK(dlclose(models[i].handle) == 0, "dlclose %s", models[i].path);
  CHECK(stats("models closed").live_buffers == live_closed, "live buffers after dlclose, want %llu", live_closed);
  return report();
}
#endif
