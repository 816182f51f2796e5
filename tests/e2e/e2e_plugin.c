/* Plugin for the theus-run end-to-end tests: one process per behaviour. */
#include <signal.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <theus/engine.h>
#include <theus/pipeline.h>

/* ---- typed (libffi) functions: every scalar type, and arrays ---------------- */

#define E2E_INC(T, name) \
  THEUS_PLUGIN_EXPORT T name(T x) { return (T)(x + 1); }
E2E_INC(uint8_t, e2e_inc_u8)
E2E_INC(uint16_t, e2e_inc_u16)
E2E_INC(uint32_t, e2e_inc_u32)
E2E_INC(uint64_t, e2e_inc_u64)
E2E_INC(int8_t, e2e_inc_i8)
E2E_INC(int16_t, e2e_inc_i16)
E2E_INC(int32_t, e2e_inc_i32)
E2E_INC(int64_t, e2e_inc_i64)
E2E_INC(float, e2e_inc_f32)
E2E_INC(double, e2e_inc_f64)

THEUS_PLUGIN_EXPORT double e2e_sum_f64(const double *x, uint64_t n) {
  double s = 0;
  for (uint64_t i = 0; i < n; i++) s += x[i];
  return s;
}

THEUS_PLUGIN_EXPORT int64_t e2e_sum_i16(const int16_t *x, uint32_t n) {
  int64_t s = 0;
  for (uint32_t i = 0; i < n; i++) s += x[i];
  return s;
}

THEUS_PLUGIN_EXPORT uint64_t e2e_sum_u8(const uint8_t *x, uint64_t n) {
  uint64_t s = 0;
  for (uint64_t i = 0; i < n; i++) s += x[i];
  return s;
}

THEUS_PLUGIN_EXPORT int64_t e2e_sum_i32(const int32_t *x, uint64_t n) {
  int64_t s = 0;
  for (uint64_t i = 0; i < n; i++) s += x[i];
  return s;
}

/* Writes an output array: x[i] = x[i] * k. */
THEUS_PLUGIN_EXPORT void e2e_scale_i32(int32_t *x, uint64_t n, int32_t k) {
  for (uint64_t i = 0; i < n; i++) x[i] *= k;
}

/* ---- ctx processes ------------------------------------------------------------------- */

/* domain.counter += args.by (default 1). */
static int add(theus_ctx *ctx) {
  const json_t *by = json_object_get(theus_ctx_args(ctx), "by");
  json_int_t n = json_integer_value(theus_ctx_get(ctx, "domain.counter"));
  theus_ctx_return(ctx, json_integer(n + (by ? json_integer_value(by) : 1)));
  return theus_ctx_set(ctx, "domain.counter", json_integer(n + (by ? json_integer_value(by) : 1)));
}

/* In a worker: domain.<args.key> = args.value, and returns the worker id. */
static int put(theus_ctx *ctx) {
  const json_t *a = theus_ctx_args(ctx);
  char path[128];
  snprintf(path, sizeof path, "domain.%s", json_string_value(json_object_get(a, "key")));
  theus_ctx_return(ctx, json_integer(theus_ctx_worker(ctx)));
  return theus_ctx_set(ctx, path, json_deep_copy(json_object_get(a, "value")));
}

/* Sum of the f64 rows of heavy.values this slice covers. */
static int slice_sum(theus_ctx *ctx) {
  theus_array_info a;
  int rc = theus_ctx_heavy(ctx, "values", &a);
  if (rc) return rc;
  uint64_t lo = 0, hi = a.shape[0];
  uint32_t i, n;
  theus_ctx_slice(ctx, &lo, &hi, &i, &n);
  double s = 0;
  for (uint64_t k = lo; k < hi; k++) s += ((const double *)a.data)[k];
  theus_ctx_return(ctx, json_real(s));
  return 0;
}

/* Into its map's output: every element of output row i is args.k times
 * input row i (f64 in and out); returns the rows it wrote. */
static int scale(theus_ctx *ctx) {
  theus_array_info in, out;
  double *o;
  uint64_t lo, hi;
  if (theus_ctx_slice(ctx, &lo, &hi, NULL, NULL) || theus_ctx_heavy(ctx, theus_ctx_map_key(ctx), &in) ||
      theus_ctx_map_out(ctx, &out, (void **)&o))
    return theus_ctx_fail(ctx, "scale runs in a map into a heavy output");
  double k = json_number_value(json_object_get(theus_ctx_args(ctx), "k"));
  uint64_t cols = out.nbytes / sizeof(double) / out.shape[0];
  for (uint64_t i = lo; i < hi; i++)
    for (uint64_t c = 0; c < cols; c++) o[i * cols + c] = k * ((const double *)in.data)[i];
  theus_ctx_return(ctx, json_integer((json_int_t)(hi - lo)));
  return 0;
}

/* Sum of every f64 element in the rows of whatever array the map runs over. */
static int sum_rows(theus_ctx *ctx) {
  theus_array_info a;
  uint64_t lo, hi;
  if (theus_ctx_slice(ctx, &lo, &hi, NULL, NULL) || theus_ctx_heavy(ctx, theus_ctx_map_key(ctx), &a))
    return theus_ctx_fail(ctx, "sum_rows runs in a map");
  uint64_t cols = a.nbytes / sizeof(double) / a.shape[0];
  double s = 0;
  for (uint64_t k = lo * cols; k < hi * cols; k++) s += ((const double *)a.data)[k];
  theus_ctx_return(ctx, json_real(s));
  return 0;
}

/* Into its partial (f64 [4]): bin i % 4 adds row i of the mapped array. */
static int bin4(theus_ctx *ctx) {
  theus_array_info in, part;
  double *p;
  uint64_t lo, hi;
  if (theus_ctx_slice(ctx, &lo, &hi, NULL, NULL) || theus_ctx_heavy(ctx, theus_ctx_map_key(ctx), &in) ||
      theus_ctx_map_out(ctx, &part, (void **)&p) || part.nbytes != 4 * sizeof(double))
    return theus_ctx_fail(ctx, "bin4 runs in a map into f64 [4] partials");
  for (uint64_t i = lo; i < hi; i++) p[i % 4] += ((const double *)in.data)[i];
  return 0;
}

/* Fills its rows of the output (f64, any row width) with the row index. */
static int ramp(theus_ctx *ctx) {
  theus_array_info out;
  double *o;
  uint64_t lo, hi;
  if (theus_ctx_slice(ctx, &lo, &hi, NULL, NULL) || theus_ctx_map_out(ctx, &out, (void **)&o) ||
      theus_ctx_map_key(ctx))
    return theus_ctx_fail(ctx, "ramp fills a new array, with no input");
  uint64_t cols = out.nbytes / sizeof(double) / out.shape[0];
  for (uint64_t i = lo * cols; i < hi * cols; i++) o[i] = (double)(i / cols);
  return 0;
}

static int crash(theus_ctx *ctx) {
  (void)ctx;
  raise(SIGSEGV);
  return 0;
}

/* Issue 15: prints args.lines lines of args.width bytes to stdout (printf,
 * so stdio buffering is what it is when stdout is not a terminal), one line
 * to stderr, and args.partial without a newline. */
static int chatty(theus_ctx *ctx) {
  const json_t *a = theus_ctx_args(ctx);
  json_int_t lines = json_integer_value(json_object_get(a, "lines"));
  json_int_t width = json_integer_value(json_object_get(a, "width"));
  const char *partial = json_string_value(json_object_get(a, "partial"));
  for (json_int_t i = 0; i < lines; i++) {
    int n = printf("chatty %lld ", (long long)i);
    for (json_int_t k = n; k < width; k++) putchar('x');
    putchar('\n');
  }
  fprintf(stderr, "chatty on stderr\n");
  if (partial) fputs(partial, stdout);
  return 0;
}

/* Sleeps args.ms milliseconds per slice (for the trace test); with
 * args.say, prints a line first (for the progress test). */
static int nap(theus_ctx *ctx) {
  json_int_t ms = json_integer_value(json_object_get(theus_ctx_args(ctx), "ms"));
  uint32_t index = 0;
  theus_ctx_slice(ctx, NULL, NULL, &index, NULL);
  if (json_is_true(json_object_get(theus_ctx_args(ctx), "say"))) printf("nap of slice %u begins\n", index);
  struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0) {
  }
  theus_ctx_return(ctx, json_integer(1));
  return 0;
}

/* Appends "<pid>\n" to the file args.mark, then sleeps args.ms: the signal
 * test knows from the file that the map is running, and which workers ran it.
 * Unsandboxed (it writes a file). */
static int nap_mark(theus_ctx *ctx) {
  FILE *f = fopen(json_string_value(json_object_get(theus_ctx_args(ctx), "mark")), "a");
  if (!f) return theus_ctx_fail(ctx, "cannot open args.mark");
  fprintf(f, "%d\n", (int)getpid());
  fclose(f);
  return nap(ctx);
}

static int refuse(theus_ctx *ctx) { return theus_ctx_fail(ctx, "refused on purpose: the input is not ready"); }

THEUS_PLUGIN_EXPORT int theus_plugin_register(theus_engine *e) {
  /* Issue 15 item 7: a registration failing on its own, without an engine
   * call failing (so with no engine message). */
  const char *fail = getenv("E2E_REGISTER_FAIL");
  if (fail) return atoi(fail);
  static const char *const counter[] = {"domain.counter", NULL};
  static const char *const any[] = {"domain.*", NULL};
  static const char *const values[] = {"heavy.values", NULL};
  static const char *const heavy_any[] = {"heavy.*", NULL};
  const theus_contract cs[] = {
      {.name = "add", .fn = add, .inputs = counter, .outputs = counter},
      {.name = "put", .fn = put, .outputs = any, .parallel = 1},
      {.name = "slice_sum", .fn = slice_sum, .inputs = values, .parallel = 1},
      {.name = "crash", .fn = crash, .parallel = 1},
      {.name = "nap", .fn = nap, .inputs = values, .parallel = 1},
      {.name = "nap_mark", .fn = nap_mark, .inputs = values, .parallel = 1, .sandbox = THEUS_SANDBOX_OFF},
      {.name = "refuse", .fn = refuse},
      {.name = "chatty", .fn = chatty, .parallel = 1},
      {.name = "scale", .fn = scale, .inputs = heavy_any, .outputs = heavy_any, .parallel = 1},
      {.name = "sum_rows", .fn = sum_rows, .inputs = heavy_any, .parallel = 1},
      {.name = "bin4", .fn = bin4, .inputs = heavy_any, .outputs = heavy_any, .parallel = 1},
      {.name = "ramp", .fn = ramp, .outputs = heavy_any, .parallel = 1},
  };
  for (size_t i = 0; i < sizeof cs / sizeof cs[0]; i++) {
    int rc = theus_engine_register(e, &cs[i]);
    if (rc) return rc;
  }
  return 0;
}
