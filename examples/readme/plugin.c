/* README example 1: a plugin with one parallel process (theus-run loads it,
 * or a host dlopen()s it before opening the engine). Built out of tree by
 * tests/install with `cc -shared -fPIC plugin.c $(pkg-config --cflags --libs theus)`. */
#include <theus/theus.h>

/* readme:begin plugin */
/* Sum of one slice of heavy.signal; runs in a worker, reads a zero-copy view. */
static int slice_sum(theus_ctx *ctx) {
  theus_array_info a;
  uint64_t lo, hi;
  if (theus_ctx_heavy(ctx, "signal", &a) || theus_ctx_slice(ctx, &lo, &hi, NULL, NULL))
    return theus_ctx_fail(ctx, "slice_sum: run me as a map over heavy.signal");
  const float *x = a.data;              /* const: a write would be a contract violation */
  double s = 0;
  for (uint64_t i = lo; i < hi; i++) s += x[i];
  theus_ctx_return(ctx, json_real(s));
  return 0;
}

THEUS_PLUGIN_EXPORT int theus_plugin_register(theus_engine *e) {
  static const char *const in[] = {"heavy.signal", NULL};
  theus_contract c = {.name = "slice_sum", .fn = slice_sum, .inputs = in, .parallel = 1};
  return theus_engine_register(e, &c);  /* contradictions are refused here, with the field named */
}
/* readme:end plugin */
