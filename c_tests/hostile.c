/* Hostile inputs through the C ABI (issue: reliability). Each must return
 * false with a message naming the problem, leave the slot NULL, and crash
 * nothing.
 *
 *   hostile inputs DIR    every bad input below; run as root, it drops to
 *                         nobody first so that permissions really apply
 *   hostile garbage DIR   loads DIR/ok.bin; the caller sets garbage in every
 *                         OM_CONSTANT_* variable and checks each is reported
 *                         once and ignored
 *   hostile misuse DIR    calls that break the contract on a loaded slot or a
 *                         struct: each returns false with a message naming
 *                         both sides, and changes nothing
 *
 * Out of scope, as docs/SEMANTICS.md says: a slot pointer into read-only memory
 * (the library must write the slot; that is the caller's contract). */
#define _GNU_SOURCE
#include "om_constants.h"
#include "byte_order.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int failures = 0, checks = 0;

static void expect(bool ok, void *slot, const char *what, const char *needle) {
  const char *err = om_constants_last_error();
  checks++;
  if (ok || slot != NULL || !err || !*err || (needle && !strstr(err, needle))) {
    failures++;
    fprintf(stderr, "FAIL %s: ok=%d slot=%p error=%s (wanted '%s')\n", what, ok, slot,
            err ? err : "(null)", needle ? needle : "");
    return;
  }
  printf("  %-28s -> %.160s\n", what, err);
}

/* Clears this thread's last error: any successful call does. */
static void clear_last_error(void) {
  struct om_constants_stats st;
  st.size = sizeof st;
  if (!om_constants_stats(&st) || om_constants_last_error() != NULL) {
    fprintf(stderr, "FAIL setup: a successful call did not clear the last error\n");
    exit(1);
  }
}

static void write_file(const char *path, size_t len, mode_t mode) {
  FILE *f = fopen(path, "wb");
  size_t i;
  if (!f) {
    perror(path);
    exit(2);
  }
  for (i = 0; i < len; i++) fputc((int)(i % 251), f);
  fclose(f);
  chmod(path, mode);
}

static void drop_privileges(void) {
  if (geteuid() != 0) return;
  if (setgroups(0, NULL) != 0 || setgid(65534) != 0 || setuid(65534) != 0) {
    perror("dropping privileges");
    exit(2);
  }
}

static int inputs(const char *dir) {
  char ok[4096], noperm[4096], loop1[4096], loop2[4096], notadir[4096];
  char *longname;
  void *slot = NULL;
  void *cells[2] = {NULL, NULL};
  snprintf(ok, sizeof ok, "%s/ok.bin", dir);
  snprintf(noperm, sizeof noperm, "%s/noperm.bin", dir);
  snprintf(loop1, sizeof loop1, "%s/loop1", dir);
  snprintf(loop2, sizeof loop2, "%s/loop2", dir);
  snprintf(notadir, sizeof notadir, "%s/notadir", dir);
  write_file(ok, 8192, 0644);
  write_file(noperm, 8192, 0000);
  write_file(notadir, 10, 0644);
  if (symlink(loop2, loop1) != 0 || symlink(loop1, loop2) != 0) {
    perror("symlink");
    return 2;
  }
  /* Read at each load: a file where a folder should be. Set after the
   * process started, it is a hint searched after the model's folder
   * (docs/SEMANTICS.md, "Where the file is found"). */
  setenv("OM_CONSTANT_PATH", notadir, 1);
  drop_privileges();
  if (open(noperm, O_RDONLY) >= 0 || errno != EACCES) {
    fprintf(stderr, "FAIL setup: %s is readable; the permission test would prove nothing\n", noperm);
    return 1;
  }

  longname = malloc(PATH_MAX + 100);
  memset(longname, 'a', PATH_MAX + 99);
  longname[0] = '/';
  longname[PATH_MAX + 99] = '\0';
  printf("hostile inputs (uid %d):\n", (int)getuid());
  expect(om_load_constants_from_file(&slot, longname, 8, LE), slot, "path longer than PATH_MAX", "PATH_MAX");
  expect(om_load_constants_from_file(&slot, "no-such-constants.bin", 8, LE), slot,
         "no file, no folder", "OM_CONSTANT_PATH was set after the process started");
  expect(om_load_constants_from_file(&slot, "ok.bin", 8, LE), slot, "OM_CONSTANT_PATH is a file",
         "Not a directory");
  expect(om_load_constants_from_file(&slot, loop1, 8, LE), slot, "symlink loop", "symbolic links");
  expect(om_load_constants_from_file(&slot, noperm, 8, LE), slot, "no read permission", "ermission denied");
  expect(om_load_constants_from_file(&slot, ok, 8193, LE), slot, "size larger than the file",
         "has 8192 bytes but the model needs 8193");
  expect(om_load_constants_from_file(&slot, ok, INT64_MAX, LE), slot, "size near INT64_MAX", "8192 bytes");
  expect(om_mmap_binary_file(&slot, ok, INT64_MAX - 1, LE), slot, "ensure, size INT64_MAX-1", "8192 bytes");
  expect(om_load_constants_from_file((void **)((char *)cells + 1), ok, 8, LE), NULL,
         "misaligned slot pointer", "aligned");
  expect(om_free_constant_buffer((void **)((char *)cells + 3)), NULL, "release, misaligned slot", "aligned");
  /* The per-inference fast paths read the slot before anything else. A
   * misaligned view of non-zero memory must not pass for a loaded slot, nor
   * a set address: each call must report the pointer. The last error is
   * cleared first (a successful call), so a silent return cannot pass on a
   * stale message. */
  cells[0] = cells[1] = (void *)~(uintptr_t)0;
  clear_last_error();
  expect(om_mmap_binary_file(NULL, ok, 8, LE), NULL, "ensure, NULL slot", "NULL");
  clear_last_error();
  expect(om_mmap_binary_file((void **)((char *)cells + 1), ok, 8, LE), NULL,
         "ensure, misaligned slot", "aligned");
  clear_last_error();
  expect(omMMapBinaryFile((void **)((char *)cells + 4), ok, 8, LE), NULL,
         "legacy ensure, misaligned slot", "aligned");
  clear_last_error();
  om_get_external_constant_addr((void **)((char *)cells + 2), &slot, 0);
  expect(false, NULL, "address, misaligned output", "aligned");
  clear_last_error();
  om_get_external_constant_addr(NULL, &slot, 0);
  expect(false, NULL, "address, NULL output", "NULL");
  cells[0] = cells[1] = NULL;
  expect(om_load_constants_from_file(&slot, "", 8, LE), slot, "empty file name", "empty");
  expect(om_load_constants_from_file(&slot, ok, INT64_MIN, LE), slot, "size INT64_MIN", "size");
  /* A model compiled for the other byte order: refused on every platform,
   * the message naming this machine's order (big-endian on s390x). */
  expect(om_load_constants_from_file(&slot, ok, 8, WRONG_IS_LE), slot, "the other byte order",
         HOST_IS_LE ? "this machine is little-endian" : "this machine is big-endian");
  /* After all that, a good load still works and nothing is left. */
  if (!om_load_constants_from_file(&slot, ok, 8192, LE) || !om_free_constant_buffer(&slot)) {
    fprintf(stderr, "FAIL good load after hostile ones: %s\n", om_constants_last_error());
    failures++;
  }
  {
    struct om_constants_stats st;
    st.size = sizeof st;
    om_constants_stats(&st);
    checks++;
    if (st.live_buffers != 0 || st.references != 0) {
      failures++;
      fprintf(stderr, "FAIL something is left: %llu buffers\n", (unsigned long long)st.live_buffers);
    }
  }
  free(longname);
  printf("%d passed, %d failed\n", checks - failures, failures);
  return failures ? 1 : 0;
}

static int garbage(const char *dir) {
  char ok[4096];
  void *slot = NULL;
  snprintf(ok, sizeof ok, "%s/ok.bin", dir);
  write_file(ok, 8192, 0644);
  if (!om_load_constants_from_file(&slot, ok, 8192, LE) || !om_load_constants_from_file(&slot, ok, 8192, LE) ||
      !om_free_constant_buffer(&slot) || !om_free_constant_buffer(&slot) || slot != NULL) {
    fprintf(stderr, "FAIL loads with garbage options: %s\n", om_constants_last_error());
    return 1;
  }
  printf("1 passed, 0 failed\n");
  return 0;
}

/* The caller sets OM_CONSTANT_FAULTS=panic: the library's loader panics.
 * The call must return false with a message, and this process goes on. */
static int panics(const char *dir) {
  char ok[4096];
  void *slot = NULL;
  struct om_constants_stats st;
  st.size = sizeof st;
  snprintf(ok, sizeof ok, "%s/ok.bin", dir);
  write_file(ok, 8192, 0644);
  expect(om_load_constants_from_file(&slot, ok, 8192, LE), slot, "loader panics", "internal error");
  expect(om_mmap_binary_file(&slot, ok, 8192, LE), slot, "loader panics again", "internal error");
  om_constants_stats(&st);
  checks++;
  if (st.live_buffers != 0 || st.failures != 2) {
    failures++;
    fprintf(stderr, "FAIL after panics: %llu buffers, %llu failures\n",
            (unsigned long long)st.live_buffers, (unsigned long long)st.failures);
  }
  printf("%d passed, %d failed\n", checks - failures, failures);
  return failures ? 1 : 0;
}

/* Checks that a call returned false, left `*cell` at `before`, and set a
 * last error containing each of the needles. */
static void refused(bool ok, void *cell, void *before, const char *what, const char *n1, const char *n2) {
  const char *err = om_constants_last_error();
  checks++;
  if (ok || cell != before || !err || !strstr(err, n1) || (n2 && !strstr(err, n2))) {
    failures++;
    fprintf(stderr, "FAIL %s: ok=%d cell=%p (was %p) error=%s (wanted '%s' and '%s')\n", what, ok, cell,
            before, err ? err : "(null)", n1, n2 ? n2 : "");
    return;
  }
  printf("  %-28s -> %.200s\n", what, err);
}

static int misuse(const char *dir) {
  char small[4096], other[4096], shown[64];
  void *slot = NULL, *marker = (void *)OM_CONSTANTS_LOADING, *foreign, *out = NULL, *loaded;
  static uint64_t host_memory[8];
  unsigned char raw[sizeof(struct om_constants_stats) + 64];
  struct om_constants_stats *st = (struct om_constants_stats *)(void *)raw;
  size_t i;
  snprintf(small, sizeof small, "%s/small.bin", dir);
  snprintf(other, sizeof other, "%s/other.bin", dir);
  write_file(small, 1 << 20, 0644);
  write_file(other, 1 << 20, 0644);
  alarm(60); /* a hang is a failure (SIGALRM), not a stuck test */
  printf("misuse:\n");

  /* A loaded slot asked for another size, or another file. */
  if (!om_load_constants_from_file(&slot, small, 4096, LE)) {
    fprintf(stderr, "FAIL setup: %s\n", om_constants_last_error());
    return 1;
  }
  loaded = slot;
  refused(om_load_constants_from_file(&slot, small, 64 << 20, LE), slot, loaded, "acquire, other size", "4096",
          "67108864");
  refused(om_load_constants_from_file(&slot, other, 4096, LE), slot, loaded, "acquire, other file", "small.bin",
          "other.bin");
  refused(omLoadConstantData(&slot, small, 8192, LE), slot, loaded, "onnx-mlir acquire, other size", "4096",
          "8192");
  checks++;
  if (!om_free_constant_buffer(&slot) || slot != NULL) {
    failures++;
    fprintf(stderr, "FAIL the refused calls took references: %s\n", om_constants_last_error());
  }

  /* The LOADING marker (OM_CONSTANTS_LOADING) with no load in flight: an error, at once. */
  refused(om_load_constants_from_file(&marker, small, 4096, LE), marker, (void *)OM_CONSTANTS_LOADING, "slot holds LOADING",
          "no load of this slot is in flight", NULL);
  refused(om_mmap_binary_file(&marker, small, 4096, LE), marker, (void *)OM_CONSTANTS_LOADING, "ensure, slot holds LOADING",
          "no load of this slot is in flight", NULL);

  /* A value the library did not write: refused, and left as it was, with
   * a good file and with a missing one (the header's promise). */
  foreign = (void *)(uintptr_t)0x12345000;
  refused(om_load_constants_from_file(&foreign, small, 4096, LE), foreign, (void *)(uintptr_t)0x12345000,
          "acquire, foreign value, good file", "did not put there", NULL);
  refused(om_load_constants_from_file(&foreign, "no-such-file.bin", 4096, LE), foreign,
          (void *)(uintptr_t)0x12345000, "acquire, foreign value, no file", "did not put there", NULL);

  /* A constant address from a base slot this library did not load. */
  foreign = host_memory;
  snprintf(shown, sizeof shown, "%p", foreign);
  clear_last_error();
  om_get_external_constant_addr(&out, &foreign, (int64_t)1 << 40);
  refused(false, out, NULL, "address, foreign base, far offset", "did not give it", shown);
  om_get_external_constant_addr(&out, &foreign, 0);
  refused(false, out, NULL, "address, foreign base, offset 0", "did not give it", NULL);

  /* Stats: an unset size is refused; a short struct is not written past. */
  memset(raw, 0xAB, sizeof raw);
  st->size = 0;
  refused(om_constants_stats(st), NULL, NULL, "stats, size unset", "out->size is 0", NULL);
  st->size = 16; /* an old host that knows two fields */
  checks++;
  if (!om_constants_stats(st) || st->size != 16) {
    failures++;
    fprintf(stderr, "FAIL stats with size 16: %s, size %llu\n", om_constants_last_error(),
            (unsigned long long)st->size);
  }
  for (i = 16; i < sizeof raw; i++) {
    if (raw[i] != 0xAB) {
      checks++;
      failures++;
      fprintf(stderr, "FAIL stats wrote byte %zu of a 16-byte struct\n", i);
      break;
    }
  }
  memset(raw, 0xAB, sizeof raw);
  st->size = sizeof raw; /* a newer host's longer struct */
  checks++;
  if (!om_constants_stats(st) || st->size != sizeof(struct om_constants_stats) ||
      raw[sizeof(struct om_constants_stats)] != 0xAB) {
    failures++;
    fprintf(stderr, "FAIL stats with a longer struct: size %llu\n", (unsigned long long)st->size);
  }
  printf("%d passed, %d failed\n", checks - failures, failures);
  return failures ? 1 : 0;
}

int main(int argc, char **argv) {
  if (argc == 3 && strcmp(argv[1], "misuse") == 0) return misuse(argv[2]);
  if (argc == 3 && strcmp(argv[1], "inputs") == 0) return inputs(argv[2]);
  if (argc == 3 && strcmp(argv[1], "panic") == 0) return panics(argv[2]);
  if (argc == 3 && strcmp(argv[1], "garbage") == 0) return garbage(argv[2]);
  fprintf(stderr, "usage: hostile inputs|garbage|misuse|panic DIR\n");
  return 2;
}
