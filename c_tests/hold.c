/* Loads a constants file through the library, reads every page of it, and
 * holds it until its standard input closes, so that a test can look at the
 * process's mapping in /proc (tests/huge_pages.rs):
 *
 *   hold FILE BYTES [until-huge]
 *
 * prints "ready ADDRESS HUGE_BYTES" (the buffer's address, and the library's
 * count of its bytes in 2 MiB pages) once the buffer is read (with
 * `until-huge`, once at least 90% of it is in 2 MiB pages, which the
 * library's helper thread brings about after the load returns, or after a
 * minute), then waits;
 * on end of input it releases the buffer and exits 0. */
#define _POSIX_C_SOURCE 200809L
#include "om_constants.h"
#include "byte_order.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void *slot = NULL;

int main(int argc, char **argv) {
  struct om_constants_stats s;
  volatile const unsigned char *p;
  int64_t size, i;
  unsigned long sum = 0;
  int tries;
  struct timespec tick = {0, 10 * 1000 * 1000};
  if (argc < 3 || argc > 4 || (argc == 4 && strcmp(argv[3], "until-huge") != 0)) {
    fprintf(stderr, "usage: hold FILE BYTES [until-huge]\n");
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
  for (tries = 0; argc == 4 && s.huge_page_bytes * 10 < (uint64_t)size * 9 && tries < 6000; tries++) {
    nanosleep(&tick, NULL);
    if (!om_constants_stats(&s)) return 1;
  }
  printf("ready %p %llu %lu\n", slot, (unsigned long long)s.huge_page_bytes, sum & 1);
  fflush(stdout);
  while (getchar() != EOF) {
  }
  return om_free_constant_buffer(&slot) ? 0 : 1;
}
