/* A model that carries om-constants' static library (libom_constants.a
 * linked into model.so: it loads in its constructor, releases in its
 * destructor), opened on a short-lived thread and closed on the main
 * thread; then a fork whose child exits normally, and the process exits.
 * Any thread-local destructor the library registered on the main thread
 * during the release would point into the model's unmapped code, and
 * exit (the child's and the parent's) would jump into it.
 *
 *   static_exit MODEL.so
 *
 * Prints the plain closing line of its checks. */
#define _GNU_SOURCE
#include "../check.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

typedef bool (*entry_fn)(int64_t *out);

static void *opened;

static void *open_model(void *path) {
  opened = dlopen((const char *)path, RTLD_NOW | RTLD_LOCAL);
  return NULL;
}

int main(int argc, char **argv) {
  pthread_t t;
  entry_fn run;
  int64_t out[2];
  int status = 0;
  pid_t pid;
  if (argc != 2) {
    fprintf(stderr, "usage: static_exit MODEL.so\n");
    return 2;
  }
  CHECK(pthread_create(&t, NULL, open_model, argv[1]) == 0, "pthread_create");
  pthread_join(t, NULL);
  CHECK(opened != NULL, "dlopen %s: %s", argv[1], dlerror());
  if (!opened) return report();
  *(void **)&run = dlsym(opened, "run_main_graph");
  CHECK(run != NULL && run(out), "the model loaded its constants");
  CHECK(dlclose(opened) == 0, "dlclose");
  fflush(stdout);
  fflush(stderr);
  pid = fork();
  if (pid == 0) exit(0); /* runs the child's exit handlers */
  CHECK(pid > 0 && waitpid(pid, &status, 0) == pid, "fork and wait");
  CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the child exited normally (status %d)", status);
  return report(); /* and the parent's exit handlers run */
}
