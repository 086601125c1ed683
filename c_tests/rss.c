/* Memory given back: a server loads and frees weights from many threads
 * (OM_CONSTANT_LOAD=read, OM_CONSTANT_KEEP=1, trims in between), then
 * releases everything (tests/c_abi.rs):
 *
 *   rss ROUNDS FILE...
 *
 * 16 threads, 4 slots each, load files of several sizes in turn for ROUNDS
 * rounds; then every buffer is freed and trimmed and glibc's own free
 * memory is returned (malloc_trim). Prints "rss_kb BEFORE -> AFTER" (VmRSS
 * before the first load and at the end) and the library's live buffers. */
#define _GNU_SOURCE
#include "om_constants.h"
#include "byte_order.h"

#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define THREADS 16
#define SLOTS 4

static int rounds, nfiles;
static char **files;
static int64_t sizes[64];

static long rss_kb(void) {
  char line[256];
  long kb = -1;
  FILE *f = fopen("/proc/self/status", "r");
  if (!f) return -1;
  while (fgets(line, sizeof line, f)) {
    if (strncmp(line, "VmRSS:", 6) == 0) kb = atol(line + 6);
  }
  fclose(f);
  return kb;
}

static void *worker(void *arg) {
  long t = (long)arg;
  void *slots[SLOTS] = {0};
  int r, s;
  for (r = 0; r < rounds; r++) {
    for (s = 0; s < SLOTS; s++) {
      int k = (int)((t + r * SLOTS + s) % nfiles);
      if (!om_load_constants_from_file(&slots[s], files[k], sizes[k], HOST_IS_LE)) {
        fprintf(stderr, "load %s: %s\n", files[k], om_constants_last_error());
        exit(1);
      }
    }
    for (s = 0; s < SLOTS; s++) {
      if (!om_free_constant_buffer(&slots[s])) exit(1);
    }
    if (r % 4 == 3) om_constants_trim();
  }
  return NULL;
}

int main(int argc, char **argv) {
  pthread_t th[THREADS];
  struct om_constants_stats st;
  long before, i;
  struct stat sb;
  if (argc < 3 || argc - 2 > 64) {
    fprintf(stderr, "usage: rss ROUNDS FILE...\n");
    return 2;
  }
  rounds = atoi(argv[1]);
  nfiles = argc - 2;
  files = argv + 2;
  for (i = 0; i < nfiles; i++) {
    if (stat(files[i], &sb) != 0) return 2;
    sizes[i] = (int64_t)sb.st_size;
  }
  before = rss_kb();
  for (i = 0; i < THREADS; i++) pthread_create(&th[i], NULL, worker, (void *)i);
  for (i = 0; i < THREADS; i++) pthread_join(th[i], NULL);
  om_constants_trim();
  malloc_trim(0);
  st.size = sizeof st;
  if (!om_constants_stats(&st)) return 1;
  printf("rss_kb %ld -> %ld live=%llu loads=%llu frees=%llu\n", before, rss_kb(),
         (unsigned long long)st.live_buffers, (unsigned long long)st.loads,
         (unsigned long long)st.frees);
  return 0;
}
