/* The packed-weights cache from C, across processes.
 *
 *   cache build PATH ID N        ensure entries w0..w(N-1) exist, packing
 *                                (a transpose stand-in) only the missing
 *                                ones; commit; check every entry; print
 *                                "packed=K persistent=P"
 *   cache crash PATH ID          reserve and pack two entries, then die by
 *                                SIGKILL before committing
 *   cache readonly DIR ID        as nobody, in a folder it cannot write:
 *                                still works, from the heap
 *   cache args DIR               bad arguments, misaligned out-pointers and
 *                                a FIFO as the cache: each refused
 *   cache hold PATH ID           reserve and pack two entries, print
 *                                "reserved", wait for the end of input,
 *                                then commit (a builder that takes a while,
 *                                run in another pid namespace by the test)
 *   cache writer PATH ID         commit while a thread still writes the
 *                                region (a broken contract; see writer())
 * Exit 0 when every check passes. */
#define _GNU_SOURCE
#include "om_constants.h"

#include <grp.h>
#include <pthread.h>
#include <sys/stat.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define ROWS 64
#define COLS 48
#define ENTRY (ROWS * COLS * 4)

/* The source weights of matrix i, row-major, and its packed form: the
 * transpose, column-major. */
static float source(int i, int r, int c) { return (float)(i * 1000 + r * COLS + c); }

static void pack(int i, float *out) {
  int r, c;
  for (c = 0; c < COLS; c++)
    for (r = 0; r < ROWS; r++) out[c * ROWS + r] = source(i, r, c);
}

static int check(int i, const float *p) {
  int r, c;
  for (c = 0; c < COLS; c++)
    for (r = 0; r < ROWS; r++)
      if (p[c * ROWS + r] != source(i, r, c)) return 0;
  return 1;
}

static int fail(const char *what) {
  const char *e = om_constants_last_error();
  fprintf(stderr, "FAIL %s: %s\n", what, e ? e : "");
  printf("0 passed, 1 failed\n");
  return 1;
}

/* Builds entries w0..w(n-1). Where the folder cannot hold the cache
 * (`persist` 0), commit reports it (false, "not persisted") and the entries
 * still work. */
static int build_in(const char *path, const char *id, int n, int persist) {
  struct om_cache *c = NULL;
  int i, packed = 0;
  char name[32];
  if (!om_cache_open(path, id, &c)) return fail("open");
  for (i = 0; i < n; i++) {
    const void *data;
    uint64_t size;
    bool found;
    snprintf(name, sizeof name, "w%d", i);
    if (!om_cache_lookup(c, name, &data, &size, &found)) return fail("lookup");
    if (!found) {
      void *dst;
      if (!om_cache_reserve(c, name, ENTRY, 64, &dst)) return fail("reserve");
      pack(i, dst);
      packed++;
    }
  }
  if (persist && !om_cache_commit(c)) return fail("commit");
  if (!persist) {
    const char *e;
    if (om_cache_commit(c)) return fail("commit said it persisted where it cannot");
    e = om_constants_last_error();
    if (!e || !strstr(e, "not persisted")) return fail("commit's message");
  }
  for (i = 0; i < n; i++) {
    const void *data;
    uint64_t size;
    bool found;
    snprintf(name, sizeof name, "w%d", i);
    if (!om_cache_lookup(c, name, &data, &size, &found) || !found || size != ENTRY || !check(i, data))
      return fail("entry after commit");
  }
  if (!om_cache_close(c)) return fail("close");
  printf("packed=%d\n1 passed, 0 failed\n", packed);
  return 0;
}

static int build(const char *path, const char *id, int n) { return build_in(path, id, n, 1); }

static int hold(const char *path, const char *id) {
  struct om_cache *c = NULL;
  void *dst;
  char line[64];
  int i;
  if (!om_cache_open(path, id, &c)) return fail("open");
  for (i = 0; i < 2; i++) {
    char name[32];
    snprintf(name, sizeof name, "w%d", i);
    if (!om_cache_reserve(c, name, ENTRY, 64, &dst)) return fail("reserve");
    pack(i, dst);
  }
  printf("reserved\n");
  fflush(stdout);
  while (fgets(line, sizeof line, stdin)) {
  }
  if (!om_cache_commit(c)) return fail("commit");
  if (!om_cache_close(c)) return fail("close");
  printf("1 passed, 0 failed\n");
  return 0;
}

static int crash(const char *path, const char *id) {
  struct om_cache *c = NULL;
  void *dst;
  if (!om_cache_open(path, id, &c)) return fail("open");
  /* Even if the cache is valid, build under another identity. */
  if (!om_cache_reserve(c, "w0", ENTRY, 64, &dst)) return fail("reserve");
  pack(0, dst);
  if (!om_cache_reserve(c, "w1", ENTRY, 64, &dst)) return fail("reserve");
  pack(1, dst);
  fflush(stdout);
  kill(getpid(), SIGKILL);
  return 1;
}

static int readonly(const char *dir, const char *id) {
  char path[4096];
  int r;
  snprintf(path, sizeof path, "%s/w.cache", dir);
  if (geteuid() == 0 && (setgroups(0, NULL) != 0 || setgid(65534) != 0 || setuid(65534) != 0)) {
    perror("dropping privileges");
    return 2;
  }
  if (access(dir, W_OK) == 0) {
    fprintf(stderr, "FAIL setup: %s is writable; the test would prove nothing\n", dir);
    return 1;
  }
  r = build_in(path, id, 3, 0);
  if (r == 0 && access(path, F_OK) == 0) return fail("a file appeared in a read-only folder");
  return r;
}

/* Bad arguments: each call returns false with a message, nothing crashes. */
static int args(const char *dir) {
  char path[4096];
  struct om_cache *c = NULL;
  const void *data;
  void *dst;
  uint64_t size;
  bool found;
  int bad = 0;
  snprintf(path, sizeof path, "%s/args.cache", dir);
#define REFUSED(call)                                                        \
  do {                                                                       \
    const char *e;                                                           \
    if ((call) || !(e = om_constants_last_error()) || !*e) {                 \
      fprintf(stderr, "FAIL not refused: %s\n", #call);                      \
      bad++;                                                                 \
    }                                                                        \
  } while (0)
  REFUSED(om_cache_open(NULL, "id", &c));
  REFUSED(om_cache_open(path, NULL, &c));
  REFUSED(om_cache_open(path, "id", NULL));
  REFUSED(om_cache_lookup(NULL, "a", &data, &size, &found));
  REFUSED(om_cache_reserve(NULL, "a", 8, 8, &dst));
  REFUSED(om_cache_commit(NULL));
  if (!om_cache_open(path, "id", &c) || !c) return fail("open");
  REFUSED(om_cache_lookup(c, NULL, &data, &size, &found));
  REFUSED(om_cache_lookup(c, "a", NULL, &size, &found));
  REFUSED(om_cache_reserve(c, "a", 0, 8, &dst));
  REFUSED(om_cache_reserve(c, "a", 8, 3, &dst));
  REFUSED(om_cache_reserve(c, "a", 8, 8, NULL));
  {
    /* Misaligned out-pointers are refused, and nothing is written. */
    uint64_t cells[3] = {0, 0, 0};
    char *raw = (char *)cells;
    REFUSED(om_cache_reserve(c, "m", 8, 8, (void **)(raw + 1)));
    REFUSED(om_cache_lookup(c, "a", (const void **)(raw + 3), &size, &found));
    REFUSED(om_cache_lookup(c, "a", &data, (uint64_t *)(raw + 4), &found));
    REFUSED(om_cache_open(path, "id", (struct om_cache **)(raw + 2)));
    if (cells[0] || cells[1] || cells[2]) {
      fprintf(stderr, "FAIL a misaligned out-pointer was written\n");
      bad++;
    }
  }
  if (!om_cache_reserve(c, "a", 8, 8, &dst)) return fail("reserve");
  REFUSED(om_cache_reserve(c, "a", 8, 8, &dst));
  if (!om_cache_close(c) || !om_cache_close(NULL)) return fail("close");
  {
    /* A FIFO where the cache should be: refused at once, never blocking. */
    char fifo[4096];
    snprintf(fifo, sizeof fifo, "%s/fifo.cache", dir);
    if (mkfifo(fifo, 0600) != 0) return fail("mkfifo");
    alarm(10);
    REFUSED(om_cache_open(fifo, "id", &c));
    alarm(0);
    if (bad == 0 && !strstr(om_constants_last_error(), "FIFO")) {
      fprintf(stderr, "FAIL the FIFO is not named: %s\n", om_constants_last_error());
      bad++;
    }
  }
  printf("%d passed, %d failed\n", bad ? 0 : 1, bad ? 1 : 0);
  return bad ? 1 : 0;
}

/* Breaks the contract on purpose: a thread keeps writing into a reserved
 * region while the main thread commits. The process is expected to die of
 * the writer's fault once the region is read-only; whatever it leaves on
 * disk must be a valid cache or none (the test opens it afterwards). */
static volatile uint32_t *scribble_at;
static size_t scribble_words;
static void *scribble(void *arg) {
  uint32_t n = 0;
  size_t i;
  (void)arg;
  for (;;)
    for (i = 0; i < scribble_words; i++) scribble_at[i] = n++;
  return NULL;
}

static int writer(const char *path, const char *id) {
  struct om_cache *c;
  void *dst;
  pthread_t t;
  size_t len = 8 << 20;
  if (!om_cache_open(path, id, &c) || !om_cache_reserve(c, "w", len, 64, &dst)) return fail("open/reserve");
  memset(dst, 1, len);
  scribble_at = dst;
  scribble_words = len / 4;
  pthread_create(&t, NULL, scribble, NULL);
  usleep(20 * 1000);
  om_cache_commit(c);
  /* Only reached if the writer never faulted. */
  printf("committed while written\n");
  return 0;
}

int main(int argc, char **argv) {
  if (argc == 4 && strcmp(argv[1], "writer") == 0) return writer(argv[2], argv[3]);
  if (argc == 3 && strcmp(argv[1], "args") == 0) return args(argv[2]);
  if (argc == 5 && strcmp(argv[1], "build") == 0) return build(argv[2], argv[3], atoi(argv[4]));
  if (argc == 4 && strcmp(argv[1], "crash") == 0) return crash(argv[2], argv[3]);
  if (argc == 4 && strcmp(argv[1], "hold") == 0) return hold(argv[2], argv[3]);
  if (argc == 4 && strcmp(argv[1], "readonly") == 0) return readonly(argv[2], argv[3]);
  fprintf(stderr, "usage: cache build PATH ID N | crash PATH ID | readonly DIR ID\n");
  return 2;
}
