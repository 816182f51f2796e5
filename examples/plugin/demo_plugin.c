/* theus-c demo plugin: statistics of a float32 signal, computed in parallel.
 *
 * Loaded by theus-run (see examples/pipelines/demo.json). It shows both kinds
 * of process a plugin can bring:
 *   - ctx processes registered from theus_plugin_register (moments, finish, noop);
 *   - plain C functions (demo_normalize_f32, demo_count_below_f32) that the
 *     pipeline declares with a libffi signature: no theus code in them at all.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include <theus/engine.h>
#include <theus/pipeline.h>

/* ---- plain C functions, called through libffi ------------------------------ */

/* x = (x - mean) / std, in place (theus gives it a private draft copy). */
THEUS_PLUGIN_EXPORT void demo_normalize_f32(float *x, uint64_t n, double mean, double std) {
  const double inv = 1.0 / std;
  for (uint64_t i = 0; i < n; i++) x[i] = (float)((x[i] - mean) * inv);
}

/* How many elements are below t (one slice of the array inside a map). */
THEUS_PLUGIN_EXPORT uint64_t demo_count_below_f32(const float *x, uint64_t n, double t) {
  uint64_t c = 0;
  for (uint64_t i = 0; i < n; i++) c += x[i] < t;
  return c;
}

/* Deliberately crashes: the e2e tests use it to check that a dying worker
 * gives exit status 1 and a message naming the signal. */
THEUS_PLUGIN_EXPORT int64_t demo_crash(int64_t x) {
  volatile int *p = NULL;
  return x + *p;
}

/* ---- ctx processes ---------------------------------------------------------------- */

/* Moments of (one slice of) heavy.signal. */
static int moments(theus_ctx *ctx) {
  theus_array_info a;
  int rc = theus_ctx_heavy(ctx, "signal", &a);
  if (rc) return rc;
  if (a.dtype != THEUS_DTYPE_F32) return theus_ctx_fail(ctx, "moments: the array must be f32");
  uint64_t lo = 0, hi = a.shape[0];
  uint32_t idx, cnt;
  theus_ctx_slice(ctx, &lo, &hi, &idx, &cnt); /* whole array outside a map */
  const float *x = (const float *)a.data;
  double sum = 0, sumsq = 0, mn = INFINITY, mx = -INFINITY;
  for (uint64_t i = lo; i < hi; i++) {
    double v = x[i];
    sum += v;
    sumsq += v * v;
    mn = v < mn ? v : mn;
    mx = v > mx ? v : mx;
  }
  theus_ctx_return(ctx, json_pack("{s:I, s:f, s:f, s:f, s:f}", "n", (json_int_t)(hi - lo), "sum", sum, "sumsq",
                                  sumsq, "min", mn, "max", mx));
  return 0;
}

/* The "moments" reducer: sums n, sum, sumsq; keeps the extreme min and max. */
static json_t *reduce_moments(json_t *acc, const json_t *item, void *ud) {
  (void)ud;
  if (!acc) return json_deep_copy(item);
  static const char *const sums[] = {"n", "sum", "sumsq"};
  for (int i = 0; i < 3; i++) {
    const json_t *a = json_object_get(acc, sums[i]), *b = json_object_get(item, sums[i]);
    json_object_set_new(acc, sums[i], json_is_integer(a) && json_is_integer(b)
                                           ? json_integer(json_integer_value(a) + json_integer_value(b))
                                           : json_real(json_number_value(a) + json_number_value(b)));
  }
  double mn = json_number_value(json_object_get(item, "min")), mx = json_number_value(json_object_get(item, "max"));
  if (mn < json_number_value(json_object_get(acc, "min"))) json_object_set_new(acc, "min", json_real(mn));
  if (mx > json_number_value(json_object_get(acc, "max"))) json_object_set_new(acc, "max", json_real(mx));
  return acc;
}

/* Does nothing: the benchmarks time an empty parallel task round trip with it. */
static int noop(theus_ctx *ctx) {
  (void)ctx;
  return 0;
}

/* domain.<args.into> = {mean, std, min, max} from domain.<args.from> moments. */
static int finish(theus_ctx *ctx) {
  const json_t *args = theus_ctx_args(ctx);
  const char *from = json_string_value(json_object_get(args, "from"));
  const char *into = json_string_value(json_object_get(args, "into"));
  if (!from || !into) return theus_ctx_fail(ctx, "finish: args need \"from\" and \"into\" domain paths");
  const json_t *m = theus_ctx_get(ctx, from);
  if (!json_is_object(m)) return theus_ctx_fail(ctx, "finish: %s holds no moments; run the map first", from);
  double n = json_number_value(json_object_get(m, "n"));
  double mean = json_number_value(json_object_get(m, "sum")) / n;
  double var = json_number_value(json_object_get(m, "sumsq")) / n - mean * mean;
  return theus_ctx_set(ctx, into,
                       json_pack("{s:f, s:f, s:O, s:O}", "mean", mean, "std", sqrt(var > 0 ? var : 0), "min",
                                 json_object_get(m, "min"), "max", json_object_get(m, "max")));
}

THEUS_PLUGIN_EXPORT int theus_plugin_register(theus_engine *e) {
  static const char *const moments_in[] = {"heavy.signal", NULL};
  static const char *const finish_io[] = {"domain.*", NULL};
  theus_contract cm = {.name = "moments", .fn = moments, .inputs = moments_in, .parallel = 1};
  theus_contract cf = {.name = "finish", .fn = finish, .inputs = finish_io, .outputs = finish_io};
  theus_contract cn = {.name = "noop", .fn = noop, .parallel = 1};
  int rc = theus_engine_register(e, &cm);
  if (!rc) rc = theus_engine_register(e, &cf);
  if (!rc) rc = theus_engine_register(e, &cn);
  if (!rc) rc = theus_engine_register_reducer(e, "moments", reduce_moments, NULL);
  return rc;
}
