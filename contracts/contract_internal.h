/* contracts: internal helpers shared by the contracts' files (not installed,
 * never included from another folder). */
#ifndef THEUS_CONTRACT_INTERNAL_H
#define THEUS_CONTRACT_INTERNAL_H

#include "theus/contract.h"

/* Formats a message into err (if err and errlen) and returns code: the
 * shared shape of every "fill the caller's buffer and fail" path. */
int theus__errf(char *err, size_t errlen, int code, const char *fmt, ...) __attribute__((format(printf, 4, 5)));

#endif
