/* The is_le a model compiled for this machine passes to the library: 1 on a
 * little-endian host, 0 on a big-endian one (s390x). Tests never hard-code
 * 1, so that they pass on both; c_tests/hostile.c checks that the other
 * order is refused. */
#ifndef OM_TEST_BYTE_ORDER_H
#define OM_TEST_BYTE_ORDER_H

#include <stdint.h>

#define HOST_IS_LE ((int64_t)(*(const unsigned char *)&(const uint16_t){1}))
#define WRONG_IS_LE (1 - HOST_IS_LE)
#define LE HOST_IS_LE

#endif
