/* A deployer rewrites a constants file in place (`cp new.bin model.constants.bin`:
 * truncate, then write) while the host loads it, again and again
 * (tests/file_changes.rs):
 *
 *   rewrite FILE BYTES LOADS
 *
 * A writer thread rewrites FILE for as long as the loads run, alternating two
 * versions: every byte 0x11, then every byte 0x22, in 1 MiB pieces. The main
 * thread loads and frees FILE LOADS times with the options of its
 * environment. A load must either succeed with the bytes of one version
 * (checked only when the buffer is a copy, OM_CONSTANT_LOAD=read: a mapping
 * follows the file by design) or fail with a message and leave the slot NULL;
 * no library call may die of SIGBUS. Prints
 *
 *   loads=N failed=F mixed=M
 *
 * and the first failure's message, and exits 0 unless a load broke those
 * rules (a SIGBUS ends the process, which the test sees). */
#define _POSIX_C_SOURCE 200809L
#include "om_constants.h"
#include "byte_order.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char *path;
static int64_t size;
static int stop; /* read and written with __atomic builtins */

static void *writer(void *arg) {
  static unsigned char piece[1 << 20];
  unsigned char v = 0x11;
  (void)arg;
  while (!__atomic_load_n(&stop, __ATOMIC_ACQUIRE)) {
    int64_t left = size;
    int fd = open(path, O_WRONLY | O_TRUNC);
    if (fd < 0) return NULL;
    memset(piece, v, sizeof piece);
    while (left > 0) {
      size_t n = left < (int64_t)sizeof piece ? (size_t)left : sizeof piece;
      if (write(fd, piece, n) != (ssize_t)n) break;
      left -= (int64_t)n;
    }
    close(fd);
    v = v == 0x11 ? 0x22 : 0x11;
    {
      /* whole for a moment, so that some loads find one version */
      struct timespec t = {0, 5 * 1000 * 1000};
      nanosleep(&t, NULL);
    }
  }
  return NULL;
}

int main(int argc, char **argv) {
  pthread_t w;
  long loads, i, failed = 0, mixed = 0;
  int copy;
  char first[512] = "";
  const char *mode = getenv("OM_CONSTANT_LOAD");
  if (argc != 4) {
    fprintf(stderr, "usage: rewrite FILE BYTES LOADS\n");
    return 2;
  }
  path = argv[1];
  size = (int64_t)atoll(argv[2]);
  loads = atol(argv[3]);
  copy = mode && strcmp(mode, "read") == 0;
  if (pthread_create(&w, NULL, writer, NULL) != 0) return 2;
  for (i = 0; i < loads; i++) {
    void *slot = NULL;
    if (!om_load_constants_from_file(&slot, path, size, HOST_IS_LE)) {
      if (slot != NULL) {
        fprintf(stderr, "a failed load left the slot %p\n", slot);
        return 1;
      }
      if (!first[0]) snprintf(first, sizeof first, "%s", om_constants_last_error());
      failed++;
      {
        /* a host retries after a while, not in a tight loop */
        struct timespec t = {0, 1000 * 1000};
        nanosleep(&t, NULL);
      }
      continue;
    }
    if (copy) {
      const unsigned char *p = slot;
      int64_t k;
      for (k = 1; k < size; k++) {
        if (p[k] != p[0]) {
          mixed++;
          break;
        }
      }
    }
    if (!om_free_constant_buffer(&slot)) {
      fprintf(stderr, "free: %s\n", om_constants_last_error());
      return 1;
    }
  }
  __atomic_store_n(&stop, 1, __ATOMIC_RELEASE);
  pthread_join(w, NULL);
  printf("loads=%ld failed=%ld mixed=%ld\n%s\n", loads, failed, mixed, first);
  return mixed ? 1 : 0;
}
