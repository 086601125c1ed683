/* 64 threads race to acquire one slot, through the C ABI, with the strategy
 * from OM_CONSTANT_LOAD. Usage: race FILE SIZE. Proves: one load, one
 * buffer, for `read` exactly SIZE bytes read; after 64 releases nothing is
 * left. Exit 0 on success. */
#define _POSIX_C_SOURCE 200809L
#include "om_constants.h"
#include "byte_order.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define THREADS 64

static void *slot = NULL;
static const char *path;
static int64_t size;
static pthread_barrier_t barrier;
static void *seen[THREADS];

static void *acquire(void *arg) {
  size_t i = (size_t)arg;
  pthread_barrier_wait(&barrier);
  if (!om_load_constants_from_file(&slot, path, size, LE)) {
    fprintf(stderr, "thread %zu: %s\n", i, om_constants_last_error());
    return (void *)1;
  }
  seen[i] = slot;
  return NULL;
}

static void *release(void *arg) {
  (void)arg;
  pthread_barrier_wait(&barrier);
  return om_free_constant_buffer(&slot) ? NULL : (void *)1;
}

static int run(void *(*fn)(void *)) {
  pthread_t t[THREADS];
  size_t i;
  int bad = 0;
  pthread_barrier_init(&barrier, NULL, THREADS);
  for (i = 0; i < THREADS; i++) pthread_create(&t[i], NULL, fn, (void *)i);
  for (i = 0; i < THREADS; i++) {
    void *r;
    pthread_join(t[i], &r);
    bad += r != NULL;
  }
  pthread_barrier_destroy(&barrier);
  return bad;
}

int main(int argc, char **argv) {
  struct om_constants_stats st;
  st.size = sizeof st;
  const char *strategy = getenv("OM_CONSTANT_LOAD");
  int is_read = strategy && strcmp(strategy, "read") == 0;
  int fail = 0, i;
  if (argc != 3) {
    fprintf(stderr, "usage: race FILE SIZE\n");
    return 2;
  }
  path = argv[1];
  size = strtoll(argv[2], NULL, 10);

  fail += run(acquire) != 0;
  for (i = 1; i < THREADS; i++) fail += seen[i] != seen[0];
  om_constants_stats(&st);
  printf("strategy=%s loads=%llu waits=%llu references=%llu bytes_read=%llu bytes_mapped=%llu\n",
         strategy ? strategy : "auto", (unsigned long long)st.loads, (unsigned long long)st.waits,
         (unsigned long long)st.references, (unsigned long long)st.bytes_read,
         (unsigned long long)st.bytes_mapped);
  fail += st.loads != 1;
  fail += st.references != THREADS;
  fail += is_read ? st.bytes_read != (uint64_t)size || st.read.loads != 1
                  : st.bytes_mapped != (uint64_t)size || st.mmap.loads != 1;

  fail += run(release) != 0;
  om_constants_stats(&st);
  printf("after release: live_buffers=%llu references=%llu frees=%llu slot=%p\n",
         (unsigned long long)st.live_buffers, (unsigned long long)st.references,
         (unsigned long long)st.frees, slot);
  fail += st.live_buffers != 0 || st.references != 0 || st.frees != 1 || slot != NULL;
  printf("%d passed, %d failed\n", fail ? 0 : 1, fail ? 1 : 0);
  return fail ? 1 : 0;
}
