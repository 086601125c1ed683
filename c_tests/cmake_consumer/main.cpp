// Loads a constants file through the installed library and checks its
// bytes. Usage: consumer FILE SIZE. Exit 0 on success.
#include <om_constants.h>

#include <cstdio>
#include <cstdlib>

int main(int argc, char **argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: consumer FILE SIZE\n");
    return 2;
  }
  const long long size = std::atoll(argv[2]);
  void *slot = nullptr;
  if (!om_load_constants_from_file(&slot, argv[1], size, 1)) {
    std::fprintf(stderr, "load failed: %s\n", om_constants_last_error());
    return 1;
  }
  const unsigned char *bytes = static_cast<const unsigned char *>(slot);
  for (long long i = 0; i < size; i++) {
    if (bytes[i] != static_cast<unsigned char>(i % 251)) {
      std::fprintf(stderr, "byte %lld differs\n", i);
      return 1;
    }
  }
  struct om_constants_stats st;
  st.size = sizeof st;
  om_constants_stats(&st);
  bool ok = om_free_constant_buffer(&slot) && slot == nullptr && st.loads == 1;
  om_constants_stats(&st);
  ok = ok && st.live_buffers == 0;
  std::printf("om-constants %s: loaded %lld bytes, freed: %s\n", om_constants_version(), size,
              ok ? "ok" : "FAILED");
  return ok ? 0 : 1;
}
