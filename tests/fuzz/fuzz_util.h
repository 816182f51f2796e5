/* theus-c — helpers shared by the libFuzzer harnesses (tests/fuzz). */
#ifndef THEUS_FUZZ_UTIL_H
#define THEUS_FUZZ_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The input as a NUL-terminated string (the parsers take C strings; an
 * embedded NUL simply ends the text early, as it would for a real caller). */
static inline char *fuzz_cstr(const uint8_t *data, size_t size) {
  char *s = malloc(size + 1);
  if (!s) abort();
  memcpy(s, data, size);
  s[size] = '\0';
  return s;
}

/* A broken invariant is a finding: report it and abort, so libFuzzer keeps
 * the input as a crash artifact. */
#define FUZZ_ASSERT(cond)                                                              \
  do {                                                                                 \
    if (!(cond)) {                                                                     \
      fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond);    \
      abort();                                                                         \
    }                                                                                  \
  } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#endif
