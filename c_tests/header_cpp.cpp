// The header alone compiles cleanly as C++11 and links with C linkage.
// As with POSIX `struct stat` and `stat()`, the struct shares its name with
// the function, so C++ code names it with the `struct` keyword.
#include "om_constants.h"
int main() {
  struct om_constants_stats st;
  st.size = sizeof st;
  return om_constants_stats(&st) ? 0 : 1;
}
