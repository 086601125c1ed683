/* Loads a constants file through the library, reads every page of it, and
 * holds it until its standard input closes, so that a test can look at the
 * process's mapping in /proc (tests/huge_pages.rs):
 *
 *   hold FILE BYTES
 *
 * prints "ready ADDRESS HUGE_BYTES" (the buffer's address, and the library's
 * count of its bytes in 2 MiB pages) once the buffer is read, then waits;
 * on end of input it releases the buffer and exits 0. */
#include "om_constants.h"
#include "byte_order.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

static void *slot = NULL;

int main(int argc, char **argv) {
  struct om_constants_stats s;
  volatile const unsigned char *p;
  int64_t size, i;
  unsigned long sum = 0;
  if (argc != 3) {
    fprintf(stderr, "usage: hold FILE BYTES\n");
    return 2;
  }
  size = (int64_t)atoll(argv[2]);
  if (!om_load_constants_from_file(&slot, argv[1], size, HOST_IS_LE)) {
    fprintf(stderr, "hold: %s\n", om_constants_last_error());
    return 1;
  }
  p = slot;
  for (i = 0; i < size; i += 4096) sum += p[i];
  s.size = sizeof s;
  if (!om_constants_stats(&s)) return 1;
  printf("ready %p %llu %lu\n", slot, (unsigned long long)s.huge_page_bytes, sum & 1);
  fflush(stdout);
  while (getchar() != EOF) {
  }
  return om_free_constant_buffer(&slot) ? 0 : 1;
}
