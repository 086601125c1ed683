/* A model DLL as a compiler would emit it for Windows: it holds its slot
 * and names its constants file by a bare name, which the library must find
 * beside this DLL (not in the host's current directory). The ctor-style
 * entry point also loads from DllMain, under the loader lock, as a model
 * with a global constructor does. Built by c_tests/windows/run.sh. */
#include <windows.h>

#include "om_constants.h"
#include "../byte_order.h"

#define MODEL_API __declspec(dllexport)

static void *slot;

/* The size the host says the file has (set before model_load). */
static int64_t model_size;

MODEL_API void model_set_size(int64_t size) { model_size = size; }

/* One reference, onnx-mlir's way: true on success. */
MODEL_API int model_load(void) {
  return omLoadConstantData(&slot, "model.constants.bin", model_size, LE);
}

MODEL_API int model_unload(void) { return omUnloadConstantData(&slot, model_size); }

/* The loaded bytes, for the host to compare with its own read. */
MODEL_API const unsigned char *model_bytes(void) { return (const unsigned char *)slot; }

/* With OM_TEST_LOAD_IN_DLLMAIN set, loads in DLL_PROCESS_ATTACH (the size
 * comes from OM_TEST_MODEL_SIZE) and keeps the reference until detach. */
static int loaded_in_dllmain;

BOOL WINAPI DllMain(HINSTANCE instance, DWORD reason, LPVOID reserved) {
  char size[32];
  (void)instance;
  (void)reserved;
  if (reason == DLL_PROCESS_ATTACH && GetEnvironmentVariableA("OM_TEST_LOAD_IN_DLLMAIN", size, sizeof size) > 0) {
    model_size = _atoi64(size);
    if (!model_load()) return FALSE;
    loaded_in_dllmain = 1;
  }
  if (reason == DLL_PROCESS_DETACH && loaded_in_dllmain) {
    model_unload();
  }
  return TRUE;
}
