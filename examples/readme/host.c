/* README example 3: a host program embedding the engine. It registers the
 * process of README example 1 (compiled in), publishes a 64 MiB float32
 * array and sums it on every worker. Exit status 0 when the sum is right. */
#include <stdio.h>

#include <theus/theus.h>

static int slice_sum(theus_ctx *ctx) {
  theus_array_info a;
  uint64_t lo, hi;
  if (theus_ctx_heavy(ctx, "signal", &a) || theus_ctx_slice(ctx, &lo, &hi, NULL, NULL))
    return theus_ctx_fail(ctx, "slice_sum: run me as a map over heavy.signal");
  const float *x = a.data;
  double s = 0;
  for (uint64_t i = lo; i < hi; i++) s += x[i];
  theus_ctx_return(ctx, json_real(s));
  return 0;
}

static void fill(float *x, uint64_t n) {
  for (uint64_t i = 0; i < n; i++) x[i] = (float)(i % 4);
}

static int run(theus_engine *e) {
  static const char *const in[] = {"heavy.signal", NULL};
  theus_contract slice_sum_contract = {.name = "slice_sum", .fn = slice_sum, .inputs = in, .parallel = 1};
  /* readme:begin host */
  if (theus_engine_register(e, &slice_sum_contract))
    return -1;
  float *x;
  uint64_t n = 16u << 20;                       /* 64 MiB: one array may use the whole budget */
  if (theus_engine_heavy_alloc(e, "signal", THEUS_DTYPE_F32, 1, &n, (void **)&x))
    return -1;                                  /* a writable draft */
  fill(x, n);
  json_t *publish = json_pack("{s:b}", "signal", 1);
  int rc = theus_engine_cas(e, theus_engine_version(e), NULL, publish, NULL);  /* now immutable, shared */
  json_decref(publish);
  json_t *sum = NULL;
  if (rc || theus_engine_map(e, "slice_sum", "signal", 8, "sum", NULL, &sum))
    return -1;
  printf("sum %.0f\n", json_number_value(sum));
  return theus_engine_set(e, "domain.total", sum);  /* committed as version+1 by CAS */
  /* readme:end host */
}

int main(void) {
  /* readme:begin host-open */
  theus_engine *e;
  if (theus_engine_open(NULL, &e)) {              /* forks the worker pool's fork server */
    fprintf(stderr, "%s\n", theus_engine_errmsg(e));
    theus_engine_close(e);
    return 1;
  }
  /* readme:end host-open */
  int rc = run(e);
  if (rc)
    fprintf(stderr, "host: %s\n", theus_engine_errmsg(e));
  json_t *total = theus_engine_get(e, "domain.total");
  int ok = !rc && json_number_value(total) == 1.5 * (double)(16u << 20);
  json_decref(total);
  theus_engine_close(e);
  return ok ? 0 : 1;
}
