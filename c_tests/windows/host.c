/* The C host for Windows: the DLL, its import library and the generated
 * header, as a Windows program uses them. Run by c_tests/windows/run.sh
 * under wine, once per strategy (OM_CONSTANT_LOAD, named in argv[2]).
 *
 *   host.exe WORK STRATEGY
 *
 * WORK is a folder holding model\model.dll (c_tests/windows/model.c). The
 * host writes the constants, then checks: the model's bare file name is
 * found beside model.dll, not in the current directory (which holds a
 * decoy); eight threads racing on one slot load the file once, with the
 * right bytes, by the strategy asked for; the model DLL can be unloaded
 * and loaded again; a model that loads inside DllMain (under the loader
 * lock, with the loader's worker threads) does not hang; a UTF-8 file name
 * reaches the file of that wide name; bad input gets a clear error; and
 * the cache commits, reopens and replaces its file while another handle
 * has the old one mapped. Prints "N passed, M failed"; exit 0 if all
 * passed. */
#include <windows.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <wchar.h>

#include "om_constants.h"
#include "../byte_order.h"
#include "../check.h"

/* Files from 16 MiB up are read by several threads. */
#define SIZE ((int64_t)20 << 20)
#define BIG ((int64_t)512 << 20)
#define RACERS 8

static unsigned char pattern(int64_t i, unsigned seed) {
  uint64_t x = (uint64_t)i * 0x9E3779B97F4A7C15ull + seed;
  return (unsigned char)(x >> 29);
}

static int write_file(const wchar_t *path, int64_t size, unsigned seed) {
  static unsigned char buf[1 << 16];
  int64_t at = 0;
  FILE *f = _wfopen(path, L"wb");
  if (!f) return 0;
  while (at < size) {
    size_t n = (size_t)(size - at < (int64_t)sizeof buf ? size - at : (int64_t)sizeof buf);
    size_t k;
    for (k = 0; k < n; k++) buf[k] = pattern(at + (int64_t)k, seed);
    if (fwrite(buf, 1, n, f) != n) {
      fclose(f);
      return 0;
    }
    at += (int64_t)n;
  }
  return fclose(f) == 0;
}

static int holds(const void *p, int64_t size, unsigned seed) {
  const unsigned char *b = (const unsigned char *)p;
  int64_t i;
  if (!p) return 0;
  for (i = 0; i < size; i++)
    if (b[i] != pattern(i, seed)) return 0;
  return 1;
}

static int says(const char *needle) {
  const char *m = om_constants_last_error();
  return m && strstr(m, needle) != NULL;
}

static struct om_constants_stats stats(void) {
  struct om_constants_stats s;
  memset(&s, 0, sizeof s);
  s.size = sizeof s;
  om_constants_stats(&s);
  return s;
}

typedef int (*fn_int)(void);
typedef void (*fn_size)(int64_t);
typedef const unsigned char *(*fn_bytes)(void);

struct model {
  HMODULE dll;
  fn_int load, unload;
  fn_size set_size;
  fn_bytes bytes;
};

static int open_model(struct model *m, const wchar_t *path) {
  m->dll = LoadLibraryW(path);
  if (!m->dll) return 0;
  m->load = (fn_int)(void (*)(void))GetProcAddress(m->dll, "model_load");
  m->unload = (fn_int)(void (*)(void))GetProcAddress(m->dll, "model_unload");
  m->set_size = (fn_size)(void (*)(void))GetProcAddress(m->dll, "model_set_size");
  m->bytes = (fn_bytes)(void (*)(void))GetProcAddress(m->dll, "model_bytes");
  return m->load && m->unload && m->set_size && m->bytes;
}

static DWORD WINAPI racer(LPVOID arg) {
  struct model *m = (struct model *)arg;
  return m->load() ? 0 : 1;
}

/* Loads the file named by `arg` (UTF-8, BIG bytes) through a slot of its
 * own: the load a model's DllMain then waits for (models_and_unload). */
static void *big_slot;
static DWORD WINAPI load_big(LPVOID arg) {
  return om_load_constants_from_file(&big_slot, (const char *)arg, BIG, LE) ? 0 : 1;
}

/* A hang is a failure, not a stuck CI job. */
static DWORD WINAPI watchdog(LPVOID arg) {
  (void)arg;
  Sleep(120 * 1000);
  fprintf(stderr, "FAIL: the host hung for 120 s\n");
  fflush(stderr);
  TerminateProcess(GetCurrentProcess(), 3); /* ExitProcess would wait for the loader lock */
  return 0;
}

static const struct om_constants_strategy_stats *used(const struct om_constants_stats *s, const char *strategy) {
  if (strcmp(strategy, "read") == 0) return &s->read;
  if (strcmp(strategy, "chunked-mmap") == 0) return &s->chunked_mmap;
  return &s->mmap; /* mmap, and auto for files this size */
}

static void models(const wchar_t *work, const char *strategy) {
  wchar_t dll[MAX_PATH], constants[MAX_PATH];
  struct model m;
  struct om_constants_stats before, after;
  HANDLE threads[RACERS];
  DWORD code;
  int i, ok;

  swprintf(constants, MAX_PATH, L"%ls\\model\\model.constants.bin", work);
  swprintf(dll, MAX_PATH, L"%ls\\model\\model.dll", work);
  CHECK(write_file(constants, SIZE, 1), "write %ls", constants);

  CHECK(open_model(&m, dll), "LoadLibrary model.dll: error %lu", GetLastError());
  if (!m.dll) return;
  m.set_size(SIZE);
  before = stats();
  for (i = 0; i < RACERS; i++) threads[i] = CreateThread(NULL, 0, racer, &m, 0, NULL);
  ok = 1;
  for (i = 0; i < RACERS; i++) {
    WaitForSingleObject(threads[i], INFINITE);
    GetExitCodeThread(threads[i], &code);
    CloseHandle(threads[i]);
    ok &= code == 0;
  }
  after = stats();
  CHECK(ok, "every racer loaded: %s", om_constants_last_error());
  CHECK(holds(m.bytes(), SIZE, 1), "the bytes of model\\model.constants.bin (beside the DLL), not the decoy");
  CHECK(after.loads - before.loads == 1, "one load for %d racers, got %llu", RACERS,
        (unsigned long long)(after.loads - before.loads));
  CHECK(used(&after, strategy)->loads - used(&before, strategy)->loads == 1, "loaded by %s", strategy);
  CHECK(after.references == RACERS, "%d references, got %llu", RACERS, (unsigned long long)after.references);
  for (i = 0; i < RACERS; i++) m.unload();
  CHECK(stats().live_buffers == 0, "the last unload frees the buffer");

  /* Unload the model DLL and load it again. */
  CHECK(FreeLibrary(m.dll), "FreeLibrary model.dll");
  CHECK(open_model(&m, dll), "LoadLibrary model.dll again");
  if (m.dll) {
    m.set_size(SIZE);
    CHECK(m.load() && holds(m.bytes(), SIZE, 1), "loads again after FreeLibrary: %s", om_constants_last_error());
    m.unload();
    FreeLibrary(m.dll);
  }

  /* A model that loads in DllMain, under the loader lock. */
  SetEnvironmentVariableA("OM_TEST_LOAD_IN_DLLMAIN", "20971520");
  m.dll = LoadLibraryW(dll);
  SetEnvironmentVariableA("OM_TEST_LOAD_IN_DLLMAIN", NULL);
  CHECK(m.dll != NULL, "a model loading in DllMain loads (error %lu): %s", GetLastError(),
        om_constants_last_error());
  if (m.dll) {
    fn_bytes bytes = (fn_bytes)(void (*)(void))GetProcAddress(m.dll, "model_bytes");
    CHECK(bytes && holds(bytes(), SIZE, 1), "its bytes");
    FreeLibrary(m.dll);
    CHECK(stats().live_buffers == 0, "DLL_PROCESS_DETACH released it");
  }

  /* The same with a 512 MiB file, unloaded at once: with
   * OM_CONSTANT_PREFETCH=background its helper thread is still touching
   * pages when DLL_PROCESS_DETACH releases the buffer under the loader
   * lock, which the thread's exit needs: FreeLibrary must not wait for it
   * (it once hung for ever; the watchdog fails the host). */
  {
    HANDLE f = CreateFileW(constants, GENERIC_WRITE, 0, NULL, OPEN_EXISTING, FILE_ATTRIBUTE_NORMAL, NULL);
    LARGE_INTEGER end;
    end.QuadPart = BIG;
    CHECK(f != INVALID_HANDLE_VALUE && SetFilePointerEx(f, end, NULL, FILE_BEGIN) && SetEndOfFile(f),
          "grow %ls to 512 MiB", constants);
    if (f != INVALID_HANDLE_VALUE) CloseHandle(f);
    SetEnvironmentVariableA("OM_TEST_LOAD_IN_DLLMAIN", "536870912");
    m.dll = LoadLibraryW(dll);
    SetEnvironmentVariableA("OM_TEST_LOAD_IN_DLLMAIN", NULL);
    CHECK(m.dll != NULL, "a model loading 512 MiB in DllMain loads (error %lu): %s", GetLastError(),
          om_constants_last_error());
    if (m.dll) {
      CHECK(FreeLibrary(m.dll), "FreeLibrary right after LoadLibrary");
      CHECK(stats().live_buffers == 0, "DLL_PROCESS_DETACH released the 512 MiB buffer");
    }
  }

  /* Another thread loads the 512 MiB file (with `read`, by worker threads)
   * and a model's DllMain, under the loader lock, waits for that load. The
   * workers started before the lock was taken, and their exit needs it: the
   * load must not wait for them to exit, only for their work (it once did,
   * and the two threads waited on each other until the watchdog). */
  {
    char path[4 * MAX_PATH];
    HANDLE loader;
    DWORD code = 1;
    WideCharToMultiByte(CP_UTF8, 0, constants, -1, path, sizeof path, NULL, NULL);
    loader = CreateThread(NULL, 0, load_big, path, 0, NULL);
    CHECK(loader != NULL, "start the loading thread");
    Sleep(5); /* its workers are running */
    SetEnvironmentVariableA("OM_TEST_LOAD_IN_DLLMAIN", "536870912");
    m.dll = LoadLibraryW(dll);
    SetEnvironmentVariableA("OM_TEST_LOAD_IN_DLLMAIN", NULL);
    CHECK(m.dll != NULL, "a DllMain waiting for another thread's load loads (error %lu): %s", GetLastError(),
          om_constants_last_error());
    if (loader) {
      WaitForSingleObject(loader, INFINITE);
      GetExitCodeThread(loader, &code);
      CloseHandle(loader);
    }
    CHECK(code == 0, "the other thread's load succeeded");
    if (m.dll) FreeLibrary(m.dll);
    CHECK(om_free_constant_buffer(&big_slot), "release the other thread's reference");
    CHECK(stats().live_buffers == 0, "both released");
  }
}

static void names_and_errors(const wchar_t *work) {
  /* "données-été.bin": a UTF-8 char * reaches the file of that wide name. */
  wchar_t wide[MAX_PATH];
  char utf8[4 * MAX_PATH], dir[4 * MAX_PATH];
  void *slot = NULL, *other = NULL;
  const int64_t small = 1 << 20;

  swprintf(wide, MAX_PATH, L"%ls\\donn\x00e9" L"es-\x00e9t\x00e9.bin", work);
  CHECK(write_file(wide, small, 2), "write the UTF-8-named file");
  WideCharToMultiByte(CP_UTF8, 0, wide, -1, utf8, sizeof utf8, NULL, NULL);
  WideCharToMultiByte(CP_UTF8, 0, work, -1, dir, sizeof dir, NULL, NULL);
  CHECK(om_load_constants_from_file(&slot, utf8, small, LE) && holds(slot, small, 2),
        "a UTF-8 name with accents: %s", om_constants_last_error());

  /* The same slot with another size: refused, naming both. */
  CHECK(!om_load_constants_from_file(&slot, utf8, small / 2, LE) && says("524288"),
        "another size on a loaded slot is refused: %s", om_constants_last_error());
  CHECK(om_free_constant_buffer(&slot) && slot == NULL, "release");

  CHECK(!om_load_constants_from_file(&other, "\xff\xfe.bin", 8, LE) && says("UTF-8"),
        "a name that is not UTF-8 is refused: %s", om_constants_last_error());
  CHECK(!om_load_constants_from_file(&other, utf8, 8, WRONG_IS_LE) && says("this machine is little-endian"),
        "the other byte order is refused: %s", om_constants_last_error());
  CHECK(!om_load_constants_from_file(&other, "no-such-constants.bin", 8, LE) && says("not found") &&
            says("current directory"),
        "a missing file names the places tried: %s", om_constants_last_error());
  CHECK(!om_load_constants_from_file(&other, dir, 8, LE) && says("a directory"),
        "a folder is refused as one: %s", om_constants_last_error());
  CHECK(other == NULL, "failed calls leave the slot NULL");
}

static void cache(const wchar_t *work) {
  wchar_t wpath[MAX_PATH];
  char path[4 * MAX_PATH];
  struct om_cache *a = NULL, *b = NULL, *c = NULL;
  void *region = NULL;
  const void *data = NULL;
  uint64_t size = 0;
  bool found = false;

  swprintf(wpath, MAX_PATH, L"%ls\\packed.cache", work);
  WideCharToMultiByte(CP_UTF8, 0, wpath, -1, path, sizeof path, NULL, NULL);
  DeleteFileW(wpath);

  CHECK(om_cache_open(path, "v1", &a), "open a new cache: %s", om_constants_last_error());
  CHECK(om_cache_reserve(a, "w", 8192, 64, &region), "reserve: %s", om_constants_last_error());
  if (region) memset(region, 0x5A, 8192);
  CHECK(om_cache_commit(a), "commit: %s", om_constants_last_error());
  CHECK(om_cache_close(a), "close");

  /* b maps the committed file; c replaces it meanwhile. */
  CHECK(om_cache_open(path, "v1", &b), "reopen: %s", om_constants_last_error());
  CHECK(om_cache_lookup(b, "w", &data, &size, &found) && found && size == 8192 &&
            ((const unsigned char *)data)[8191] == 0x5A,
        "the committed entry is found after reopening");
  CHECK(om_cache_open(path, "v2", &c), "open for another identity: %s", om_constants_last_error());
  region = NULL;
  CHECK(om_cache_reserve(c, "w2", 4096, 64, &region), "reserve v2: %s", om_constants_last_error());
  if (region) memset(region, 0xA5, 4096);
  /* Windows refuses to replace a file that is open or mapped (wine does;
   * Windows 10's POSIX-semantics rename may not): then the commit fails
   * with an error that says so, and nothing is lost. */
  if (om_cache_commit(c)) {
    printf("  the commit replaced a cache file another handle has mapped\n");
  } else {
    CHECK(says("renaming") && says("close the other handles"),
          "a refused replacement says why and what to do: %s", om_constants_last_error());
  }
  CHECK(om_cache_lookup(c, "w2", &data, &size, &found) && found && ((const unsigned char *)data)[0] == 0xA5,
        "the committing handle reads its entry");
  CHECK(om_cache_lookup(b, "w", &data, &size, &found) && found && ((const unsigned char *)data)[0] == 0x5A,
        "the old handle still reads its entries");
  om_cache_close(b);
  om_cache_close(c);
  c = NULL;
  /* Nothing holds the file now: a new handle builds and persists it. */
  CHECK(om_cache_open(path, "v2", &c), "open v2 again: %s", om_constants_last_error());
  found = false;
  if (c && om_cache_lookup(c, "w2", &data, &size, &found) && !found) {
    region = NULL;
    CHECK(om_cache_reserve(c, "w2", 4096, 64, &region) && region, "reserve v2 again");
    if (region) memset(region, 0xA5, 4096);
    CHECK(om_cache_commit(c), "commit with no other handle open: %s", om_constants_last_error());
  }
  om_cache_close(c);
  c = NULL;
  CHECK(om_cache_open(path, "v2", &c) && om_cache_lookup(c, "w2", &data, &size, &found) && found && size == 4096,
        "the replacement is the cache now: %s", om_constants_last_error());
  om_cache_close(c);
}

int main(int argc, char **argv) {
  wchar_t work[MAX_PATH], elsewhere[MAX_PATH], decoy[MAX_PATH];
  if (argc != 3) {
    fprintf(stderr, "usage: host.exe WORK STRATEGY\n");
    return 2;
  }
  CreateThread(NULL, 0, watchdog, NULL, 0, NULL);
  MultiByteToWideChar(CP_UTF8, 0, argv[1], -1, work, MAX_PATH);

  /* The current directory holds a decoy of the model's file name. */
  swprintf(elsewhere, MAX_PATH, L"%ls\\elsewhere", work);
  CreateDirectoryW(elsewhere, NULL);
  CHECK(SetCurrentDirectoryW(elsewhere), "chdir");
  swprintf(decoy, MAX_PATH, L"%ls\\model.constants.bin", elsewhere);
  CHECK(write_file(decoy, SIZE, 99), "write the decoy");

  printf("Windows host, strategy %s, library %s:\n", argv[2], om_constants_version());
  models(work, argv[2]);
  names_and_errors(work);
  cache(work);
  return report();
}
