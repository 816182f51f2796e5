/* host_sum: a host program embedding theus-c.
 *
 * Allocates a 256 MiB float32 array in the engine's arena, publishes it by
 * CAS, sums it with a parallel `map` over every worker (each worker reads its
 * slice through a read-only, zero-copy mapping), checks the answer, commits
 * it, and prints the engine stats. Exit status 0 when the sum is right. */
#include <stdio.h>
#include <stdlib.h>

#include <theus/theus.h>

#define N (64ull * 1024 * 1024) /* 64 Mi floats = 256 MiB */

/* The process: sum of its slice of heavy.frame, in double. */
static int slice_sum(theus_ctx *ctx) {
  uint64_t lo, hi;
  theus_array_info frame;
  if (theus_ctx_slice(ctx, &lo, &hi, NULL, NULL) || theus_ctx_heavy(ctx, "frame", &frame))
    return theus_ctx_fail(ctx, "slice_sum needs a map over heavy.frame");
  const float *x = frame.data;
  double s = 0;
  for (uint64_t i = lo; i < hi; i++)
    s += x[i];
  theus_ctx_return(ctx, json_real(s));
  return 0;
}

static int run(theus_engine *e) {
  static const char *const inputs[] = {"heavy.frame", NULL};
  theus_contract c = {.name = "sum", .fn = slice_sum, .inputs = inputs, .parallel = 1};
  if (theus_engine_register(e, &c))
    return 1;
  float *data;
  uint64_t shape[1] = {N};
  if (theus_engine_heavy_alloc(e, "frame", THEUS_DTYPE_F32, 1, shape, (void **)&data))
    return 1;
  double expect = 0;
  for (uint64_t i = 0; i < N; i++) {
    data[i] = (float)(i % 1000);
    expect += (double)(i % 1000);
  }
  json_t *publish = json_pack("{s:b}", "frame", 1);
  int rc = theus_engine_cas(e, theus_engine_version(e), NULL, publish, NULL);
  json_decref(publish);
  if (rc)
    return 1;
  json_t *stats = theus_engine_stats(e);
  json_int_t workers = json_integer_value(json_object_get(json_object_get(stats, "pool"), "workers"));
  json_decref(stats);
  json_t *sum = NULL;
  if (theus_engine_map(e, "sum", "frame", (uint32_t)(workers > 0 ? workers * 4 : 4), "sum", NULL, &sum))
    return 1;
  double got = json_number_value(sum);
  printf("sum of %llu floats over %lld workers: %.0f (expected %.0f)\n", (unsigned long long)N,
         (long long)workers, got, expect);
  if (theus_engine_set(e, "domain.total", sum)) /* the reference goes to the engine */
    return 1;
  stats = theus_engine_stats(e);
  char *text = json_dumps(stats, JSON_INDENT(2) | JSON_SORT_KEYS);
  printf("%s\n", text);
  free(text);
  json_decref(stats);
  return got == expect ? 0 : 2;
}

int main(void) {
  theus_arena_config ac;
  theus_arena_config_init(&ac);
  ac.hard_limit = 512ull << 20;
  ac.single_limit = 300ull << 20;
  theus_engine_config cfg;
  theus_engine_config_init(&cfg);
  cfg.arena = &ac;
  theus_engine *e;
  if (theus_engine_open(&cfg, &e)) {
    fprintf(stderr, "host_sum: cannot open the engine: %s\n", theus_engine_errmsg(e));
    theus_engine_close(e);
    return 1;
  }
  int rc = run(e);
  if (rc)
    fprintf(stderr, "host_sum: %s\n", rc == 2 ? "wrong sum" : theus_engine_errmsg(e));
  theus_engine_close(e);
  return rc;
}
