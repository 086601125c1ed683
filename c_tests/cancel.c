/* A host cancels a thread that is blocked inside a load (pthread_cancel, the
 * default deferred kind), as a server does when a request times out
 * (tests/c_abi.rs, with a load the fault-injection build slows down):
 *
 *   cancel FILE BYTES
 *
 * The library's calls are not cancellation points: the load runs to its end,
 * and the thread is cancelled at its next cancellation point after the call
 * (here pthread_testcancel). Prints "cancelled=C loaded=L" and exits 0; a
 * cancellation that unwound through the library would abort the process. */
#define _POSIX_C_SOURCE 200809L
#include "om_constants.h"
#include "byte_order.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static void *slot = NULL;
static const char *path;
static int64_t size;

static void *loader(void *arg) {
  (void)arg;
  om_load_constants_from_file(&slot, path, size, HOST_IS_LE);
  pthread_testcancel();
  return NULL;
}

int main(int argc, char **argv) {
  pthread_t t;
  void *res = NULL;
  struct timespec wait = {0, 100 * 1000 * 1000};
  if (argc != 3) {
    fprintf(stderr, "usage: cancel FILE BYTES\n");
    return 2;
  }
  path = argv[1];
  size = (int64_t)atoll(argv[2]);
  if (pthread_create(&t, NULL, loader, NULL) != 0) return 2;
  nanosleep(&wait, NULL); /* the loader is inside the (slowed) load now */
  pthread_cancel(t);
  pthread_join(t, &res);
  printf("cancelled=%d loaded=%d\n", res == PTHREAD_CANCELED, slot != NULL);
  if (slot != NULL && !om_free_constant_buffer(&slot)) {
    fprintf(stderr, "free: %s\n", om_constants_last_error());
    return 1;
  }
  return 0;
}
