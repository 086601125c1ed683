/* A stand-in for Windows 10's bcryptprimitives.dll, for wine 8 only:
 * Rust's standard library imports ProcessPrng from it, which Debian's
 * wine 8 lacks, so every Rust program would die at start. This exports
 * ProcessPrng on top of RtlGenRandom (advapi32's SystemFunction036).
 * scripts/test-windows.sh builds it and puts it beside the test programs;
 * it is never shipped, and real Windows needs none of it. */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len) {
  while (len > 0) {
    ULONG chunk = len > 0x10000000 ? 0x10000000 : (ULONG)len;
    if (!SystemFunction036(data, chunk)) return FALSE;
    data += chunk;
    len -= chunk;
  }
  return TRUE;
}
