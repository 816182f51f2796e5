/* The plugin of tests/fault/pipeline.json: plain C functions bound with
 * libffi, and a registration function that registers nothing. It calls no
 * libtheus function, so it needs no copy of the library of its own. */
#include <stdint.h>

#include <theus/pipeline.h>

THEUS_PLUGIN_EXPORT int64_t fault_inc(int64_t x) { return x + 1; }

THEUS_PLUGIN_EXPORT double fault_sum(const double *x, uint64_t n) {
  double s = 0;
  for (uint64_t i = 0; i < n; i++) s += x[i];
  return s;
}

THEUS_PLUGIN_EXPORT int theus_plugin_register(theus_engine *e) {
  (void)e;
  return 0;
}
