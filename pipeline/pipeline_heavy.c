/* theus-c — filling the heavy arrays a pipeline declares. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "pipeline_internal.h"

/* splitmix64: tiny, seedable, and the same sequence on every platform, so a
 * pipeline's random array (and its checked result) is reproducible. */
static uint64_t splitmix64(uint64_t *s) {
  uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

/* Stores v into element i of an array of dtype t, clamped to the type's range
 * (a range fill may run past it: it saturates rather than wrapping). */
static void put(theus_dtype t, void *data, uint64_t i, double v) {
#define PUT(T, lo, hi) ((T *)data)[i] = (T)(v < (double)(lo) ? (lo) : v > (double)(hi) ? (hi) : v)
  switch (t) {
  case THEUS_DTYPE_U8: PUT(uint8_t, 0, UINT8_MAX); break;
  case THEUS_DTYPE_U16: PUT(uint16_t, 0, UINT16_MAX); break;
  case THEUS_DTYPE_U32: PUT(uint32_t, 0, UINT32_MAX); break;
  case THEUS_DTYPE_U64: ((uint64_t *)data)[i] = v <= 0 ? 0 : v >= 18446744073709551615.0 ? UINT64_MAX : (uint64_t)v; break;
  case THEUS_DTYPE_I8: PUT(int8_t, INT8_MIN, INT8_MAX); break;
  case THEUS_DTYPE_I16: PUT(int16_t, INT16_MIN, INT16_MAX); break;
  case THEUS_DTYPE_I32: PUT(int32_t, INT32_MIN, INT32_MAX); break;
  case THEUS_DTYPE_I64: ((int64_t *)data)[i] = v <= -9223372036854775808.0 ? INT64_MIN
                                              : v >= 9223372036854775807.0 ? INT64_MAX : (int64_t)v; break;
  case THEUS_DTYPE_F32: ((float *)data)[i] = (float)v; break;
  default: ((double *)data)[i] = v; break;
  }
#undef PUT
}

static int fill_file(theus_pipeline *p, const heavy_spec *h, void *data, uint64_t nbytes) {
  FILE *f = fopen(h->file, "rb");
  size_t got = f ? fread(data, 1, nbytes, f) : 0;
  int err = errno;
  if (f) fclose(f);
  if (got == nbytes) return 0;
  return theus__pipe_err_at(p, h->ptr, 0, THEUS_ESYS, "heavy.%s: read %zu of %llu bytes from %s (%s)", h->key, got,
                            (unsigned long long)nbytes, h->file, f ? "file changed size?" : strerror(err));
}

int theus__pipe_fill(theus_pipeline *p, const heavy_spec *h, void *data) {
  uint64_t n = 1;
  for (unsigned d = 0; d < h->ndim; d++) n *= h->shape[d];
  size_t item = theus_dtype_size(h->dtype);
  bool integer = h->dtype != THEUS_DTYPE_F32 && h->dtype != THEUS_DTYPE_F64;
  uint64_t state = h->seed;
  switch (h->fill) {
  case FILL_FILE: return fill_file(p, h, data, n * item);
  case FILL_RANGE:
    for (uint64_t i = 0; i < n; i++) put(h->dtype, data, i, h->a + h->b * (double)i);
    return 0;
  case FILL_RANDOM:
    for (uint64_t i = 0; i < n; i++) {
      double u = (double)(splitmix64(&state) >> 11) * 0x1.0p-53; /* uniform in [0, 1) */
      double v = h->a + u * (h->b - h->a);
      put(h->dtype, data, i, integer ? floor(v) : v);
    }
    return 0;
  default:
    memset(data, 0, n * item);
    return 0;
  }
}
