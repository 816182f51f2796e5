/* theus-bench arrays [MiB]: maps that fill heavy outputs (issue 11).
 *
 * map_out_1GiB_vs_memcpy: normalising a 1 GiB f32 array into a new heavy
 * array on every worker (theus_engine_map_into: write windows, commit)
 * against one memcpy of the same bytes into a fresh arena array on one core,
 * same run, medians of 3 (memcpy_warm: the same memcpy again into pages
 * already faulted in, which shows what the page faults cost). map_slice_overhead_us: the cost per slice of a map
 * of an empty process, from 4096 against 64 slices; map_into_slice_overhead_us
 * the same for a map into an output (each slice a page of it). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench.h"
#include "theus/engine.h"

static const char *const any[] = {"heavy.*", NULL};

/* out = (x - mean) * scale over the slice's rows (f32). */
static int normalise(theus_ctx *ctx) {
  theus_array_info in, out;
  float *o;
  uint64_t lo, hi;
  if (theus_ctx_slice(ctx, &lo, &hi, NULL, NULL) || theus_ctx_heavy(ctx, theus_ctx_map_key(ctx), &in) ||
      theus_ctx_map_out(ctx, &out, (void **)&o))
    return theus_ctx_fail(ctx, "normalise runs in a map into an output");
  const json_t *a = theus_ctx_args(ctx);
  float mean = (float)json_number_value(json_object_get(a, "mean"));
  float scale = (float)json_number_value(json_object_get(a, "scale"));
  uint64_t cols = in.nbytes / sizeof(float) / in.shape[0];
  const float *x = in.data;
  for (uint64_t i = lo * cols; i < hi * cols; i++) o[i] = (x[i] - mean) * scale;
  return 0;
}

static int empty(theus_ctx *ctx) {
  (void)ctx;
  return 0;
}

static theus_engine *open_engine(uint64_t budget) {
  theus_arena_config ac = {.hard_limit = budget, .single_limit = budget / 2};
  theus_engine_config cfg;
  theus_engine_config_init(&cfg);
  cfg.arena = &ac;
  theus_engine *e = NULL;
  if (theus_engine_open(&cfg, &e)) {
    fprintf(stderr, "theus-bench arrays: engine open: %s\n", theus_engine_errmsg(e));
    theus_engine_close(e);
    return NULL;
  }
  theus_contract cs[] = {
      {.name = "normalise", .fn = normalise, .inputs = any, .outputs = any, .parallel = 1},
      {.name = "empty", .fn = empty, .inputs = any, .outputs = any, .parallel = 1},
  };
  for (size_t i = 0; i < 2; i++)
    if (theus_engine_register(e, &cs[i])) {
      fprintf(stderr, "theus-bench arrays: register: %s\n", theus_engine_errmsg(e));
      theus_engine_close(e);
      return NULL;
    }
  return e;
}

/* Publishes an array of `rows` x `cols` f32 under key (filled with i % 1000). */
static int publish(theus_engine *e, const char *key, uint64_t rows, uint64_t cols) {
  float *d;
  uint64_t shape[2] = {rows, cols};
  if (theus_engine_heavy_alloc(e, key, THEUS_DTYPE_F32, 2, shape, (void **)&d)) return -1;
  for (uint64_t i = 0; i < rows * cols; i++) d[i] = (float)(i % 1000);
  json_t *hp = json_pack("{s:b}", key, 1);
  int rc = theus_engine_cas(e, theus_engine_version(e), NULL, hp, NULL);
  json_decref(hp);
  return rc;
}

static double map_out_ms(theus_engine *e, uint32_t slices) {
  json_t *args = json_pack("{s:f, s:f}", "mean", 499.5, "scale", 1.0 / 288.7);
  theus_map_out out = {.key = "norm"};
  uint64_t t0 = bench_now_ns();
  int rc = theus_engine_map_into(e, "normalise", "x", slices, "concat", args, &out, NULL, NULL);
  uint64_t t1 = bench_now_ns();
  json_decref(args);
  if (rc) fprintf(stderr, "theus-bench arrays: map_into: %s\n", theus_engine_errmsg(e));
  return rc ? -1 : (double)(t1 - t0) / 1e6;
}

/* One memcpy of the input into a fresh arena array (then discarded). */
static double memcpy_ms(theus_engine *e, uint64_t rows, uint64_t cols, double *warm_ms) {
  theus_snapshot *s;
  theus_array_info in;
  if (theus_engine_snapshot(e, &s) || theus_snapshot_heavy(s, "x", &in)) return -1;
  void *dst;
  uint64_t shape[2] = {rows, cols};
  if (theus_engine_heavy_alloc(e, "copy", THEUS_DTYPE_F32, 2, shape, &dst)) {
    theus_snapshot_release(s);
    return -1;
  }
  uint64_t t0 = bench_now_ns();
  memcpy(dst, in.data, in.nbytes);
  uint64_t t1 = bench_now_ns();
  bench_sink(dst);
  memcpy(dst, in.data, in.nbytes); /* again, into pages now faulted in: what the faults cost */
  *warm_ms = (double)(bench_now_ns() - t1) / 1e6;
  bench_sink(dst);
  theus_engine_heavy_discard(e, "copy");
  theus_snapshot_release(s);
  return (double)(t1 - t0) / 1e6;
}

static double slices_ms(theus_engine *e, uint32_t slices, int into) {
  theus_map_out out = {.key = "empty_out"};
  uint64_t t0 = bench_now_ns();
  int rc = into ? theus_engine_map_into(e, "empty", "pages", slices, "sum", NULL, &out, NULL, NULL)
                : theus_engine_map(e, "empty", "pages", slices, "sum", NULL, NULL);
  uint64_t t1 = bench_now_ns();
  if (rc) fprintf(stderr, "theus-bench arrays: map: %s\n", theus_engine_errmsg(e));
  return rc ? -1 : (double)(t1 - t0) / 1e6;
}

/* Per-slice cost: (time of 4096 slices - time of 64) / 4032, medians of 5. */
static double slice_overhead_us(theus_engine *e, int into) {
  double a[5], b[5];
  slices_ms(e, 64, into); /* warm the workers */
  for (int r = 0; r < 5; r++) {
    a[r] = slices_ms(e, 4096, into);
    b[r] = slices_ms(e, 64, into);
  }
  double ma = bench_median(a, 5), mb = bench_median(b, 5);
  fprintf(stderr, "%s map of an empty process: 4096 slices %.2f ms, 64 slices %.2f ms\n",
          into ? "into-output" : "plain", ma, mb);
  return (ma - mb) * 1000.0 / (4096 - 64);
}

int theus_bench_arrays(int argc, char **argv) {
  uint64_t mib = argc > 1 ? strtoull(argv[1], NULL, 10) : 1024;
  if (!mib) mib = 1024;
  uint64_t cols = 256, rows = mib * 1024 * 1024 / (cols * sizeof(float));
  /* input, output and the memcpy target live at once, with room to spare */
  theus_engine *e = open_engine(4 * mib * 1024 * 1024 + (64u << 20));
  if (!e) return 1;
  if (publish(e, "x", rows, cols) || publish(e, "pages", 4096, 1024)) {
    fprintf(stderr, "theus-bench arrays: publish: %s\n", theus_engine_errmsg(e));
    theus_engine_close(e);
    return 1;
  }
  uint32_t slices = 4 * (uint32_t)sysconf(_SC_NPROCESSORS_ONLN); /* the pool has one worker per core */
  double m[3], c[3], w[3];
  for (int r = 0; r < 3; r++) {
    m[r] = map_out_ms(e, slices);
    c[r] = memcpy_ms(e, rows, cols, &w[r]);
    if (m[r] < 0 || c[r] < 0) {
      theus_engine_close(e);
      return 1;
    }
  }
  double mm = bench_median(m, 3), mc = bench_median(c, 3), mw = bench_median(w, 3);
  fprintf(stderr, "normalise %llu MiB into a new array, %u slices on every worker: %.1f ms; memcpy on one core: "
          "%.1f ms into fresh arena pages, %.1f ms into the same pages again\n", (unsigned long long)mib, slices, mm,
          mc, mw);
  char name[64];
  snprintf(name, sizeof name, "map_out_%lluMiB_ms", (unsigned long long)mib);
  bench_report(name, mm, "ms");
  snprintf(name, sizeof name, "memcpy_%lluMiB_ms", (unsigned long long)mib);
  bench_report(name, mc, "ms");
  snprintf(name, sizeof name, "memcpy_warm_%lluMiB_ms", (unsigned long long)mib);
  bench_report(name, mw, "ms");
  snprintf(name, sizeof name, mib == 1024 ? "map_out_1GiB_vs_memcpy" : "map_out_%lluMiB_vs_memcpy",
           (unsigned long long)mib);
  bench_report(name, mm / mc, "x");
  bench_report("map_slice_overhead_us", slice_overhead_us(e, 0), "us");
  bench_report("map_into_slice_overhead_us", slice_overhead_us(e, 1), "us");
  theus_engine_close(e);
  return 0;
}
