/* Typed arrays: dtype, shape and strides kept in the shared slot, so any
 * process that maps the arena can interpret an array from its handle. */
#include <inttypes.h>
#include <string.h>

#include "arena_int.h"

static const struct {
  const char *name;
  size_t size;
} dtypes[] = {
    [THEUS_DTYPE_U8] = {"u8", 1},   [THEUS_DTYPE_U16] = {"u16", 2}, [THEUS_DTYPE_U32] = {"u32", 4},
    [THEUS_DTYPE_U64] = {"u64", 8}, [THEUS_DTYPE_I8] = {"i8", 1},   [THEUS_DTYPE_I16] = {"i16", 2},
    [THEUS_DTYPE_I32] = {"i32", 4}, [THEUS_DTYPE_I64] = {"i64", 8}, [THEUS_DTYPE_F32] = {"f32", 4},
    [THEUS_DTYPE_F64] = {"f64", 8},
};

#define NDTYPES (sizeof dtypes / sizeof dtypes[0])

size_t theus_dtype_size(theus_dtype t) {
  return (unsigned)t < NDTYPES ? dtypes[t].size : 0;
}

const char *theus_dtype_name(theus_dtype t) {
  return (unsigned)t < NDTYPES ? dtypes[t].name : NULL;
}

theus_dtype theus_dtype_parse(const char *name) {
  for (unsigned i = 1; name && i < NDTYPES; i++)
    if (strcmp(name, dtypes[i].name) == 0) return (theus_dtype)i;
  return (theus_dtype)0;
}

int theus_array_alloc(theus_arena *a, theus_dtype dtype, unsigned ndim, const uint64_t *shape,
                      theus_handle *out, void **data) {
  THEUS__ARENA_ARG(a, "theus_array_alloc");
  THEUS__ARG_NONNULL(a, out, "theus_array_alloc");
  THEUS__ARG_NONNULL(a, shape, "theus_array_alloc");
  size_t item = theus_dtype_size(dtype);
  if (item == 0) return theus__arena_fail(a, THEUS_EINVAL, "theus_array_alloc: unknown dtype %d", (int)dtype);
  if (ndim < 1 || ndim > THEUS_MAX_DIMS)
    return theus__arena_fail(a, THEUS_EINVAL, "theus_array_alloc: ndim %u must be 1..%d", ndim, THEUS_MAX_DIMS);
  uint64_t n = item;
  for (unsigned i = 0; i < ndim; i++) {
    if (shape[i] == 0)
      return theus__arena_fail(a, THEUS_EINVAL, "theus_array_alloc: dimension %u is 0 (empty arrays are not stored)", i);
    if (__builtin_mul_overflow(n, shape[i], &n))
      return theus__arena_fail(a, THEUS_ETOOBIG, "theus_array_alloc: shape overflows 64 bits at dimension %u", i);
  }
  return theus__arena_alloc_typed(a, n, (uint8_t)dtype, ndim, shape, out, data);
}

int theus_array_info_get(const theus_arena *a, theus_handle h, theus_array_info *o) {
  THEUS__ARENA_ARG(a, "theus_array_info_get");
  THEUS__ARG_NONNULL(a, o, "theus_array_info_get");
  theus__slot s;
  int rc = theus__arena_resolve(a, h, &s);
  if (rc) return rc;
  memset(o, 0, sizeof *o);
  o->handle = h;
  o->dtype = (theus_dtype)s.dtype;
  o->ndim = s.ndim;
  o->itemsize = s.dtype ? theus_dtype_size(o->dtype) : 1;
  o->nbytes = s.size;
  o->data = a->data + s.offset;
  uint64_t stride = o->itemsize;
  for (unsigned i = o->ndim; i-- > 0;) { /* C order: last dimension is contiguous */
    o->shape[i] = s.shape[i];
    o->strides[i] = stride;
    stride *= s.shape[i];
  }
  return 0;
}
