/* 1,000 load/free cycles through the C ABI: after the last release, the
 * process's RSS and its number of mappings (/proc/self/maps) are back to
 * their starting values; under a mapping strategy, no thread starts after
 * the warm-up (a helper thread started per load would: their stacks and
 * the exiting ones pile up). Usage: cycle FILE SIZE (strategy from the
 * environment). Exit 0 on success. */
#define _POSIX_C_SOURCE 200809L
#include "om_constants.h"
#include "byte_order.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>

static long rss_kb(void) {
  char line[256];
  long kb = -1;
  FILE *f = fopen("/proc/self/status", "r");
  if (!f) return -1;
  while (fgets(line, sizeof line, f))
    if (strncmp(line, "VmRSS:", 6) == 0) kb = strtol(line + 6, NULL, 10);
  fclose(f);
  return kb;
}

/* The ids of this process's threads (/proc/self/task), up to MAX_TIDS. */
#define MAX_TIDS 64
static int thread_ids(long *ids) {
  int n = 0;
  struct dirent *e;
  DIR *d = opendir("/proc/self/task");
  if (!d) return -1;
  while ((e = readdir(d)) != NULL && n < MAX_TIDS)
    if (e->d_name[0] != '.') ids[n++] = strtol(e->d_name, NULL, 10);
  closedir(d);
  return n;
}

/* How many of `ids` (n of them) are not among `known` (k of them). */
static int new_ids(const long *ids, int n, const long *known, int k) {
  int i, j, fresh = 0;
  for (i = 0; i < n; i++) {
    for (j = 0; j < k && known[j] != ids[i]; j++)
      ;
    fresh += j == k;
  }
  return fresh;
}

static long mappings(void) {
  int c;
  long n = 0;
  FILE *f = fopen("/proc/self/maps", "r");
  if (!f) return -1;
  while ((c = fgetc(f)) != EOF) n += c == '\n';
  fclose(f);
  return n;
}

static int cycle(const char *path, int64_t size) {
  void *slot = NULL;
  if (!om_load_constants_from_file(&slot, path, size, LE)) {
    fprintf(stderr, "load: %s\n", om_constants_last_error());
    return 1;
  }
  /* Touch every page, as a model's first inference does. */
  {
    volatile const unsigned char *p = slot;
    unsigned sum = 0;
    int64_t i;
    for (i = 0; i < size; i += 4096) sum += p[i];
    (void)sum;
  }
  if (!om_free_constant_buffer(&slot) || slot != NULL) {
    fprintf(stderr, "release: %s\n", om_constants_last_error());
    return 1;
  }
  return 0;
}

int main(int argc, char **argv) {
  struct om_constants_stats st;
  st.size = sizeof st;
  long rss0, maps0, rss1, maps1, tids0[MAX_TIDS], tids[MAX_TIDS], slack_kb = 1024, slack_maps = 0;
  int64_t size;
  int i, ntids0, started = 0;
  /* `read` starts its reading threads per load, by design, and joins them. */
  const char *load = getenv("OM_CONSTANT_LOAD");
  int mapping = !load || strstr(load, "mmap") != NULL;
  if (argc != 3) {
    fprintf(stderr, "usage: cycle FILE SIZE\n");
    return 2;
  }
  size = strtoll(argv[2], NULL, 10);
  /* Under an emulator, its own code cache counts in the RSS too. */
  if (getenv("CYCLE_RSS_SLACK_KB")) slack_kb = strtol(getenv("CYCLE_RSS_SLACK_KB"), NULL, 10);
  /* Under a sanitizer, its allocator maps regions of its own as it grows. */
  if (getenv("CYCLE_MAPS_SLACK")) slack_maps = strtol(getenv("CYCLE_MAPS_SLACK"), NULL, 10);
  /* Warm-up: the first cycle creates what the process keeps for reuse
   * (malloc arenas, cached thread stacks); those are not leaks. */
  if (cycle(argv[1], size) || cycle(argv[1], size)) return 1;
  rss0 = rss_kb();
  maps0 = mappings();
  ntids0 = thread_ids(tids0);
  for (i = 0; i < 1000; i++) {
    int n;
    if (cycle(argv[1], size)) return 1;
    n = thread_ids(tids);
    if (n < 0 || ntids0 < 0) {
      fprintf(stderr, "cannot list /proc/self/task\n");
      return 1;
    }
    started += new_ids(tids, n, tids0, ntids0);
  }
  rss1 = rss_kb();
  maps1 = mappings();
  om_constants_stats(&st);
  printf("strategy=%s rss_kb %ld -> %ld, mappings %ld -> %ld, threads after warm-up %d, "
         "new ones seen after cycles %d, loads=%llu frees=%llu live=%llu\n",
         getenv("OM_CONSTANT_LOAD") ? getenv("OM_CONSTANT_LOAD") : "auto", rss0, rss1, maps0, maps1,
         ntids0, started,
         (unsigned long long)st.loads, (unsigned long long)st.frees, (unsigned long long)st.live_buffers);
  /* RSS may move by a few pages (stdio, page tables); a leaked buffer of
   * SIZE bytes per cycle would move it by GiB. */
  if (maps1 - maps0 > slack_maps || maps1 < maps0 || (mapping && started > 0) || rss1 - rss0 > slack_kb || st.live_buffers != 0 || st.loads != st.frees) {
    printf("0 passed, 1 failed\n");
    return 1;
  }
  printf("1 passed, 0 failed\n");
  return 0;
}
