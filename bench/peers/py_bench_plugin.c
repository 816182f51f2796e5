/* A plugin for bench/peers/py_bench.py: `sum_f32`, the sum (in double) of the
 * slice of heavy.signal a map hands it -- the same work numpy's
 * x.sum(dtype=np.float64) does for the Python peers. py_bench.py compiles it
 * at run time (cc -O2 -shared -fPIC); theus and jansson symbols resolve
 * against the libtheus the Python package already loaded. */
#include <stdint.h>

#include <theus/engine.h>
#include <theus/pipeline.h>

static int sum_f32(theus_ctx *ctx) {
  theus_array_info a;
  int rc = theus_ctx_heavy(ctx, "signal", &a);
  if (rc) return rc;
  if (a.dtype != THEUS_DTYPE_F32 || a.ndim != 1) return theus_ctx_fail(ctx, "sum_f32: heavy.signal must be 1-D f32");
  uint64_t lo = 0, hi = a.shape[0];
  uint32_t idx, cnt;
  theus_ctx_slice(ctx, &lo, &hi, &idx, &cnt); /* whole array outside a map */
  const float *x = (const float *)a.data;
  double s[8] = {0};
  uint64_t i = lo;
  for (; i + 8 <= hi; i += 8) /* eight chains: the adds do not wait on each other */
    for (int k = 0; k < 8; k++) s[k] += x[i + k];
  for (; i < hi; i++) s[0] += x[i];
  theus_ctx_return(ctx, json_real(((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]))));
  return 0;
}

THEUS_PLUGIN_EXPORT int theus_plugin_register(theus_engine *e) {
  static const char *const in[] = {"heavy.signal", NULL};
  theus_contract c = {.name = "sum_f32", .fn = sum_f32, .inputs = in, .parallel = 1};
  return theus_engine_register(e, &c);
}
