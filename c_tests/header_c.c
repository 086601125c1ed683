/* The header alone compiles cleanly as C99 (see tests/header.rs). */
#include "om_constants.h"
int main(void) {
  struct om_constants_stats st;
  st.size = sizeof st;
  return om_constants_stats(&st) ? 0 : 1;
}
