/* The host's whole life (docs/SEMANTICS.md, "The host's whole life"): fork, directory
 * changes and a blocked stderr, each a scenario of its own (unloading is
 * c_tests/unload.c, a host that does not link the library).
 *
 *   lifecycle fork-traffic FILE SIZE FORKS
 *       4 threads acquire and release two slots while the main thread
 *       forks FORKS children; each child acquires, checks, releases and
 *       trims within 10 s or counts as hung.
 *   lifecycle fork-loading FILE SIZE
 *       fork while another thread is loading FILE into a slot; the child
 *       acquires that slot and a second slot on the same file.
 *   lifecycle chdir HOME OTHER
 *       chdir HOME, dlopen ./models/libmodel.so (relative), chdir OTHER
 *       (which holds a decoy OTHER/models/model.constants.bin), run the
 *       model: it must use HOME's constants.
 *   lifecycle fork-during-init
 *       a thread makes the first call (the library makes its registry,
 *       slowed by OM_CONSTANT_FAULTS=init_delay_ms in the fault-injection
 *       build) while the main thread forks: the child's first call must
 *       return within 10 s.
 *   lifecycle fork-while-recording FILE SIZE
 *       slot X holds FILE; a thread acquires slot Y on FILE, which shares
 *       X's buffer and then pauses (OM_CONSTANT_FAULTS=record_delay_ms, the
 *       fault-injection build) before Y is recorded as holding it; the main
 *       thread forks then. The child acquires and releases Y, releases X,
 *       and must then hold no buffer at all.
 *   lifecycle blocked-stderr-init
 *       with a bad option (OM_CONSTANT_LOAD=bogus) and stderr a full pipe,
 *       a thread's first call blocks writing the "ignoring" line; stats on
 *       the main thread must still complete.
 *   lifecycle blocked-stderr-waiters FILE SIZE
 *       with OM_CONSTANT_LOG=info: stderr is a full pipe while a thread
 *       loads FILE into a slot (its log lines block); a second acquire of
 *       that slot, an acquire of another slot on FILE, and stats must
 *       complete: no line is written while others wait on the load.
 *   lifecycle blocked-stderr FILE_A FILE_B
 *       with OM_CONSTANT_LOG=info: stderr is a full pipe, so the log line
 *       of a load of FILE_A blocks; stats and a release on another slot
 *       must still complete.
 *
 * Prints "N passed, M failed"; exit 0 when every check passes. */
#define _GNU_SOURCE
#include "om_constants.h"
#include "check.h"
#include "oracle.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>



/* The constants file and size most scenarios use (argv[2], argv[3]). */
static const char *g_file;
static int64_t g_size;


/* ---- fork ------------------------------------------------------------ */

static void *traffic_slots[2];
static int stop_traffic = 0; /* set once by the main thread, atomically */

static void *traffic(void *arg) {
  long k = (long)arg;
  while (!__atomic_load_n(&stop_traffic, __ATOMIC_RELAXED)) {
    void **s = &traffic_slots[k % 2];
    if (om_load_constants_from_file(s, g_file, g_size, LE)) om_free_constant_buffer(s);
  }
  return NULL;
}

/* In a child: acquire `slot`, check the bytes, release, trim. */
static int child_work(void **slot) {
  alarm(10);
  if (!om_load_constants_from_file(slot, g_file, g_size, LE)) {
    fprintf(stderr, "child: acquire failed: %s\n", om_constants_last_error());
    return 3;
  }
  if (oracle_check_pattern(g_file, *slot, g_size) != 0) return 4;
  if (!om_free_constant_buffer(slot)) return 5;
  om_constants_trim();
  return 0;
}

/* Waits for a child: 0 when it exited 0; reports how it ended otherwise. */
static int reap(pid_t pid, const char *what) {
  int st = 0;
  waitpid(pid, &st, 0);
  if (WIFEXITED(st) && WEXITSTATUS(st) == 0) return 0;
  if (WIFSIGNALED(st))
    fprintf(stderr, "%s: child killed by signal %d%s\n", what, WTERMSIG(st),
            WTERMSIG(st) == SIGALRM ? " (hung)" : "");
  else
    fprintf(stderr, "%s: child exited %d\n", what, WEXITSTATUS(st));
  return -1;
}

static int fork_traffic(int forks) {
  pthread_t t[4];
  long k;
  int i, bad = 0;
  for (k = 0; k < 4; k++) pthread_create(&t[k], NULL, traffic, (void *)k);
  for (i = 0; i < forks; i++) {
    pid_t pid = fork();
    if (pid == 0) _exit(child_work(&traffic_slots[i % 2]));
    if (pid < 0 || reap(pid, "fork-traffic") != 0) bad++;
  }
  __atomic_store_n(&stop_traffic, 1, __ATOMIC_RELAXED);
  for (k = 0; k < 4; k++) pthread_join(t[k], NULL);
  CHECK(bad == 0, "%d of %d children failed or hung", bad, forks);
  printf("fork-traffic: %d children, %d failed\n", forks, bad);
  return report();
}

static void *loading_slot = NULL;
static int loader_done = 0;
static void *load_it(void *arg) {
  (void)arg;
  if (om_load_constants_from_file(&loading_slot, g_file, g_size, LE)) om_free_constant_buffer(&loading_slot);
  __atomic_store_n(&loader_done, 1, __ATOMIC_RELEASE);
  return NULL;
}

static int fork_loading(void) {
  pthread_t t;
  pid_t pid;
  int attempt, seen = 0;
  /* Start a load and catch it LOADING; should it finish before this thread
   * looks (a busy machine), start another. */
  for (attempt = 0; attempt < 50 && !seen; attempt++) {
    __atomic_store_n(&loader_done, 0, __ATOMIC_RELEASE);
    pthread_create(&t, NULL, load_it, NULL);
    while (!(seen = __atomic_load_n(&loading_slot, __ATOMIC_ACQUIRE) == (void *)OM_CONSTANTS_LOADING) &&
           !__atomic_load_n(&loader_done, __ATOMIC_ACQUIRE)) {
    }
    if (!seen) pthread_join(t, NULL);
  }
  CHECK(seen, "never saw the slot LOADING in %d loads", attempt);
  if (!seen) return report();
  pid = fork();
  if (pid == 0) {
    /* Nothing is loading in this process: both acquires load for
     * themselves; neither waits for the parent's load (which would end in
     * OM_CONSTANT_WAIT_TIMEOUT's error). */
    void *other = NULL;
    struct om_constants_stats before, after;
    int rc;
    before.size = sizeof before;
    after.size = sizeof after;
    om_constants_stats(&before);
    rc = child_work(&loading_slot);
    if (rc == 0) rc = child_work(&other);
    om_constants_stats(&after);
    if (rc == 0 && (after.waits != before.waits || after.timeouts != before.timeouts)) {
      fprintf(stderr, "child: waited for a load of the parent's\n");
      rc = 6;
    }
    _exit(rc);
  }
  CHECK(pid > 0 && reap(pid, "fork-loading") == 0, "the child forked mid-load failed");
  pthread_join(t, NULL);
  return report();
}

/* ---- chdir ----------------------------------------------------------- */

static int chdir_after_dlopen(const char *home, const char *other) {
  bool (*run)(int64_t *out) = NULL;
  int64_t got[2] = {0, 0}, want[2] = {0, 0};
  bool ok;
  char constants[4096];
  void *h;
  snprintf(constants, sizeof constants, "%s/models/model.constants.bin", home);
  CHECK(oracle_expected(constants, want) == 0, "cannot read %s", constants);
  CHECK(chdir(home) == 0, "chdir %s", home);
  h = dlopen("./models/libmodel.so", RTLD_NOW | RTLD_LOCAL);
  CHECK(h != NULL, "dlopen ./models/libmodel.so: %s", h ? "" : dlerror());
  if (failures) return report();
  CHECK(chdir(other) == 0, "chdir %s", other);
  *(void **)&run = dlsym(h, "run_main_graph");
  ok = run && run(got);
  CHECK(ok, "the inference failed: %s", om_constants_last_error());
  CHECK(got[0] == want[0] && got[1] == want[1],
        "the model used other constants: got %lld %lld, want %lld %lld", (long long)got[0],
        (long long)got[1], (long long)want[0], (long long)want[1]);
  dlclose(h);
  return report();
}

/* ---- blocked stderr -------------------------------------------------- */

static void *slot_a = NULL, *slot_b = NULL;
static void *load_a(void *arg) {
  CHECK(om_load_constants_from_file(&slot_a, (const char *)arg, 4096, LE), "load A");
  return NULL;
}

static void *drain(void *arg) {
  char buf[4096];
  int fd = *(int *)arg;
  while (read(fd, buf, sizeof buf) > 0) {
  }
  return NULL;
}

static void on_alarm(int sig) {
  static const char msg[] = "FAIL: stats or release blocked behind a blocked stderr\n";
  (void)sig;
  (void)!write(1, msg, sizeof msg - 1);
  _exit(7);
}

/* Points stderr at a pipe filled to the brim, so that the next write to
 * stderr blocks; returns the old stderr, for unblock_stderr. */
static int block_stderr(int p[2]) {
  int flags, saved;
  char junk[4096];
  CHECK(pipe(p) == 0, "pipe");
  flags = fcntl(p[1], F_GETFL);
  fcntl(p[1], F_SETFL, flags | O_NONBLOCK);
  memset(junk, 'x', sizeof junk);
  while (write(p[1], junk, sizeof junk) > 0) {
  }
  fcntl(p[1], F_SETFL, flags);
  saved = dup(2);
  dup2(p[1], 2);
  return saved;
}

/* Drains the pipe until `blocked` (the thread whose write blocked) ends,
 * then puts stderr back. */
static void unblock_stderr(int p[2], int saved, pthread_t blocked) {
  pthread_t drainer;
  pthread_create(&drainer, NULL, drain, &p[0]);
  pthread_join(blocked, NULL);
  dup2(saved, 2);
  close(p[1]);
  pthread_join(drainer, NULL);
}

static int blocked_stderr(const char *a, const char *b) {
  int p[2], saved;
  pthread_t loader;
  struct om_constants_stats st;
  CHECK(om_load_constants_from_file(&slot_b, b, 4096, LE), "load B");
  saved = block_stderr(p);
  pthread_create(&loader, NULL, load_a, (void *)a);
  usleep(300 * 1000); /* the loader is now blocked writing its log line */
  signal(SIGALRM, on_alarm);
  alarm(10);
  st.size = sizeof st;
  CHECK(om_constants_stats(&st), "stats");
  CHECK(om_free_constant_buffer(&slot_b), "release B");
  alarm(0);
  unblock_stderr(p, saved, loader);
  CHECK(om_free_constant_buffer(&slot_a), "release A");
  return report();
}

/* ---- the first call --------------------------------------------------- */

static void *first_call(void *arg) {
  (void)arg;
  om_constants_trim();
  return NULL;
}

static int fork_during_init(void) {
  pthread_t t;
  pid_t pid;
  pthread_create(&t, NULL, first_call, NULL);
  usleep(100 * 1000); /* the thread is making the registry (init_delay_ms) */
  pid = fork();
  if (pid == 0) {
    struct om_constants_stats s;
    alarm(10);
    s.size = sizeof s;
    _exit(om_constants_stats(&s) ? 0 : 3);
  }
  CHECK(pid > 0 && reap(pid, "fork-during-init") == 0,
        "the child of a fork during the registry's making did not get its first call through");
  pthread_join(t, NULL);
  return report();
}

static void *slot_r = NULL, *slot_s = NULL;
static void *acquire_s(void *arg) {
  (void)arg;
  CHECK(om_load_constants_from_file(&slot_s, g_file, g_size, LE), "acquire Y");
  return NULL;
}

static int fork_while_recording(void) {
  pthread_t t;
  pid_t pid;
  CHECK(om_load_constants_from_file(&slot_r, g_file, g_size, LE), "acquire X");
  pthread_create(&t, NULL, acquire_s, NULL);
  usleep(150 * 1000); /* Y counts as a user of X's buffer, not yet recorded */
  pid = fork();
  if (pid == 0) {
    struct om_constants_stats s;
    int ok;
    alarm(10);
    ok = om_load_constants_from_file(&slot_s, g_file, g_size, LE) && om_free_constant_buffer(&slot_s) &&
         om_free_constant_buffer(&slot_r);
    s.size = sizeof s;
    ok = ok && om_constants_stats(&s);
    if (ok && s.live_buffers != 0) fprintf(stderr, "child: %llu buffers live after every release\n",
                                           (unsigned long long)s.live_buffers);
    _exit(!ok ? 3 : s.live_buffers != 0 ? 4 : 0);
  }
  CHECK(pid > 0 && reap(pid, "fork-while-recording") == 0,
        "the child of a fork between a use's count and its record did not free everything");
  pthread_join(t, NULL);
  CHECK(om_free_constant_buffer(&slot_s) && om_free_constant_buffer(&slot_r), "release X and Y");
  return report();
}

static int blocked_stderr_init(void) {
  int p[2], saved;
  pthread_t first;
  struct om_constants_stats st;
  saved = block_stderr(p);
  pthread_create(&first, NULL, first_call, NULL);
  usleep(300 * 1000); /* the first call is now blocked writing "ignoring ..." */
  signal(SIGALRM, on_alarm);
  alarm(10);
  st.size = sizeof st;
  CHECK(om_constants_stats(&st), "stats");
  alarm(0);
  unblock_stderr(p, saved, first);
  return report();
}

static void *slot_x = NULL, *slot_y = NULL;
static void *load_x(void *arg) {
  (void)arg;
  CHECK(om_load_constants_from_file(&slot_x, g_file, g_size, LE), "load X");
  return NULL;
}

static int blocked_stderr_waiters(void) {
  int p[2], saved;
  pthread_t loader;
  struct om_constants_stats st;
  saved = block_stderr(p);
  pthread_create(&loader, NULL, load_x, NULL);
  usleep(300 * 1000); /* the loader is now blocked writing a line of its load */
  signal(SIGALRM, on_alarm);
  alarm(10);
  CHECK(om_load_constants_from_file(&slot_x, g_file, g_size, LE), "second acquire of the slot");
  CHECK(om_load_constants_from_file(&slot_y, g_file, g_size, LE), "acquire of another slot");
  st.size = sizeof st;
  CHECK(om_constants_stats(&st) && st.loads == 1, "stats: one load");
  alarm(0);
  unblock_stderr(p, saved, loader);
  CHECK(om_free_constant_buffer(&slot_x) && om_free_constant_buffer(&slot_x), "release X twice");
  CHECK(om_free_constant_buffer(&slot_y), "release Y");
  return report();
}

int main(int argc, char **argv) {
  const char *cmd = argc > 1 ? argv[1] : "";
  if (argc > 3) {
    g_file = argv[2];
    g_size = atoll(argv[3]);
  }
  if (argc == 5 && strcmp(cmd, "fork-traffic") == 0) return fork_traffic(atoi(argv[4]));
  if (argc == 4 && strcmp(cmd, "fork-loading") == 0) return fork_loading();
  if (argc == 4 && strcmp(cmd, "chdir") == 0) return chdir_after_dlopen(argv[2], argv[3]);
  if (argc == 4 && strcmp(cmd, "blocked-stderr") == 0) return blocked_stderr(argv[2], argv[3]);
  if (argc == 2 && strcmp(cmd, "fork-during-init") == 0) return fork_during_init();
  if (argc == 4 && strcmp(cmd, "blocked-stderr-waiters") == 0) return blocked_stderr_waiters();
  if (argc == 4 && strcmp(cmd, "fork-while-recording") == 0) return fork_while_recording();
  if (argc == 2 && strcmp(cmd, "blocked-stderr-init") == 0) return blocked_stderr_init();
  fprintf(stderr, "usage: see the comment at the top of c_tests/lifecycle.c\n");
  return 2;
}
