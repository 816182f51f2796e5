/* engine: maps into a heavy output (theus_engine_map_into) — in workers
 * through write windows and locally; published when every slice succeeded,
 * discarded (arena bytes back) when one failed or wrote outside its rows. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "theus/theus.h"

#define N 6000 /* rows of the input: not a multiple of a page's worth of doubles */

/* out[i] = 2 * data[i] (f64 -> f64, or into column 0 of an f64 [N, 3]);
 * args.fail = slice index fails, args.stray = that slice writes a row past
 * its own. Returns [lo, hi] of its slice. */
static int twice(theus_ctx *ctx) {
  theus_array_info in, out;
  double *o;
  uint64_t lo, hi;
  uint32_t idx;
  if (theus_ctx_slice(ctx, &lo, &hi, &idx, NULL) || theus_ctx_heavy(ctx, theus_ctx_map_key(ctx), &in) ||
      theus_ctx_map_out(ctx, &out, (void **)&o))
    return theus_ctx_fail(ctx, "not a map into an output");
  const json_t *a = theus_ctx_args(ctx);
  json_t *f = json_object_get(a, "fail"), *s = json_object_get(a, "stray");
  if (f && json_integer_value(f) == idx)
    return theus_ctx_fail(ctx, "slice %u fails on purpose", idx);
  const double *d = in.data;
  uint64_t cols = out.ndim > 1 ? out.shape[1] : 1;
  if (s && json_integer_value(s) == idx)
    o[hi * cols] = -1; /* the next slice's first row */
  for (uint64_t i = lo; i < hi; i++)
    o[i * cols] = 2 * d[i];
  theus_ctx_return(ctx, json_pack("[I, I]", (json_int_t)lo, (json_int_t)hi));
  return 0;
}

/* Into its partial (f64 [4]): bin i % 4 gets data[i] for "sum"; for "min" /
 * "max" every bin gets the slice's min / max (args.op). */
static int bins(theus_ctx *ctx) {
  theus_array_info in, part;
  double *p;
  uint64_t lo, hi;
  if (theus_ctx_slice(ctx, &lo, &hi, NULL, NULL) || theus_ctx_heavy(ctx, "data", &in) ||
      theus_ctx_map_out(ctx, &part, (void **)&p) || part.ndim != 1 || part.shape[0] != 4)
    return theus_ctx_fail(ctx, "not a map into partials of f64 [4]");
  const char *op = json_string_value(json_object_get(theus_ctx_args(ctx), "op"));
  const double *d = in.data;
  for (int b = 0; b < 4; b++)
    if (p[b] != 0)
      return theus_ctx_fail(ctx, "partial not zeroed"); /* partials start zeroed */
  for (uint64_t i = lo; i < hi; i++) {
    if (!strcmp(op, "sum"))
      p[i % 4] += d[i];
    else
      for (int b = 0; b < 4; b++)
        p[b] = i == lo ? d[i] : !strcmp(op, "min") ? (d[i] < p[b] ? d[i] : p[b]) : (d[i] > p[b] ? d[i] : p[b]);
  }
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

static theus_engine *E;

static int setup(void **state) {
  (void)state;
  theus_engine_config cfg;
  theus_engine_config_init(&cfg);
  cfg.workers = 2;
  if (theus_engine_open(&cfg, &E)) {
    print_error("engine open: %s\n", theus_engine_errmsg(E));
    theus_engine_close(E);
    E = NULL;
    return -1;
  }
  const char *const in[] = {"heavy.*", NULL};
  const char *const out[] = {"heavy.out", "heavy.wide", "heavy.tiny", NULL};
  theus_contract cs[] = {
      {.name = "twice", .fn = twice, .inputs = in, .outputs = out, .parallel = 1},
      {.name = "twice_local", .fn = twice, .inputs = in, .outputs = out},
      {.name = "undeclared", .fn = twice, .inputs = in, .parallel = 1},
      {.name = "bins", .fn = bins, .inputs = in, .outputs = out, .parallel = 1},
      {.name = "bins_local", .fn = bins, .inputs = in, .outputs = out},
      {.name = "ramp", .fn = ramp, .outputs = out, .parallel = 1},
  };
  for (size_t i = 0; i < sizeof cs / sizeof cs[0]; i++)
    if (theus_engine_register(E, &cs[i]))
      return -1;
  double *data;
  uint64_t shape[1] = {N};
  if (theus_engine_heavy_alloc(E, "data", THEUS_DTYPE_F64, 1, shape, (void **)&data))
    return -1;
  for (int i = 0; i < N; i++)
    data[i] = i + 1;
  uint64_t few[1] = {100};
  if (theus_engine_heavy_alloc(E, "few", THEUS_DTYPE_F64, 1, few, (void **)&data))
    return -1;
  json_t *hp = json_pack("{s:b, s:b}", "data", 1, "few", 1);
  int rc = theus_engine_cas(E, theus_engine_version(E), NULL, hp, NULL);
  json_decref(hp);
  return rc;
}

static int teardown(void **state) {
  (void)state;
  theus_engine_close(E);
  return 0;
}

static uint64_t live_bytes(void) {
  theus_arena_stats st;
  theus_arena_stats_get(theus_engine_arena(E), &st);
  return st.bytes_live;
}

/* The output is published under its key in the returned version; every
 * slice starts on a page of the output. */
static void check_published(const char *key, uint64_t version, uint64_t cols, const json_t *bounds) {
  theus_snapshot *s;
  assert_int_equal(theus_engine_snapshot(E, &s), 0);
  assert_int_equal(theus_snapshot_version(s), version);
  theus_array_info ai;
  assert_int_equal(theus_snapshot_heavy(s, key, &ai), 0);
  assert_int_equal(ai.shape[0], N);
  const double *o = ai.data;
  for (uint64_t i = 0; i < N; i++)
    assert_true(o[i * cols] == 2.0 * (double)(i + 1));
  theus_snapshot_release(s);
  size_t page = (size_t)sysconf(_SC_PAGESIZE);
  for (size_t i = 0; i < json_array_size(bounds); i += 2) {
    json_int_t lo = json_integer_value(json_array_get(bounds, i));
    assert_int_equal((lo * (json_int_t)(cols * sizeof(double))) % (json_int_t)page, 0);
  }
}

static void test_map_into_new_array(void **state) {
  (void)state;
  const char *procs[] = {"twice", "twice_local"};
  for (int k = 0; k < 2; k++) {
    theus_map_out out = {.key = "out"};
    json_t *r = NULL;
    uint64_t v = 0;
    if (theus_engine_map_into(E, procs[k], "data", 4, "concat", NULL, &out, &r, &v))
      fail_msg("map_into %s: %s", procs[k], theus_engine_errmsg(E));
    assert_int_equal(v, theus_engine_version(E));
    assert_true(json_array_size(r) >= 2 && json_array_size(r) <= 8);
    assert_int_equal(json_integer_value(json_array_get(r, json_array_size(r) - 1)), N);
    check_published("out", v, 1, r);
    json_decref(r);
  }
}

static void test_map_into_other_shape(void **state) {
  (void)state;
  theus_map_out out = {.key = "wide", .dtype = THEUS_DTYPE_F64, .ndim = 2, .shape = {N, 3}};
  json_t *r = NULL;
  uint64_t v = 0;
  if (theus_engine_map_into(E, "twice", "data", 8, "concat", NULL, &out, &r, &v))
    fail_msg("map_into: %s", theus_engine_errmsg(E));
  check_published("wide", v, 3, r);
  json_decref(r);
  out.shape[0] = N - 1;
  assert_int_equal(theus_engine_map_into(E, "twice", "data", 8, "concat", NULL, &out, NULL, NULL), THEUS_EINVAL);
}

static void test_failed_slice_discards(void **state) {
  (void)state;
  uint64_t before = live_bytes(), v0 = theus_engine_version(E);
  const char *procs[] = {"twice", "twice_local"};
  for (int k = 0; k < 2; k++) {
    theus_map_out out = {.key = "tiny"}; /* a key no version binds yet */
    json_t *a = json_pack("{s:i}", "fail", 1);
    assert_int_equal(theus_engine_map_into(E, procs[k], "data", 4, "concat", a, &out, NULL, NULL), THEUS_EPROCESS);
    assert_non_null(strstr(theus_engine_errmsg(E), "slice 1 fails on purpose"));
    json_decref(a);
  }
  /* a slice that writes the next slice's row faults in its worker */
  theus_map_out out = {.key = "tiny"};
  json_t *a = json_pack("{s:i}", "stray", 0);
  assert_int_equal(theus_engine_map_into(E, "twice", "data", 4, "concat", a, &out, NULL, NULL), THEUS_ECONTRACT);
  assert_non_null(strstr(theus_engine_errmsg(E), "contract violation: write at byte"));
  json_decref(a);
  assert_int_equal(theus_engine_version(E), v0);
  assert_int_equal(live_bytes(), before);
  theus_snapshot *s;
  theus_array_info ai;
  assert_int_equal(theus_engine_snapshot(E, &s), 0);
  assert_int_equal(theus_snapshot_heavy(s, "tiny", &ai), THEUS_ENOTFOUND);
  theus_snapshot_release(s);
}

static void test_refusals(void **state) {
  (void)state;
  uint64_t before = live_bytes(), v0 = theus_engine_version(E);
  theus_map_out out = {.key = "out"};
  assert_int_equal(theus_engine_map_into(E, "undeclared", "data", 2, "concat", NULL, &out, NULL, NULL),
                   THEUS_ECONTRACT);
  assert_non_null(strstr(theus_engine_errmsg(E), "does not declare output 'heavy.out'"));
  theus_map_out tiny = {.key = "tiny"}; /* 100 doubles: under a page */
  assert_int_equal(theus_engine_map_into(E, "twice", "few", 2, "concat", NULL, &tiny, NULL, NULL), THEUS_EINVAL);
  assert_non_null(strstr(theus_engine_errmsg(E), "under a page"));
  assert_int_equal(theus_engine_map_into(E, "twice", "data", 2, "concat", NULL, NULL, NULL, NULL), THEUS_EINVAL);
  assert_int_equal(live_bytes(), before);
  assert_int_equal(theus_engine_version(E), v0);
}

/* Each slice fills a partial; the engine combines them in the arena. */
static void test_partials(void **state) {
  (void)state;
  uint64_t before = live_bytes();
  const char *procs[] = {"bins", "bins_local"}, *ops[] = {"sum", "min", "max"};
  for (int k = 0; k < 2; k++)
    for (int o = 0; o < 3; o++) {
      theus_map_out out = {.key = "out", .dtype = THEUS_DTYPE_F64, .ndim = 1, .shape = {4}, .partials = ops[o]};
      json_t *a = json_pack("{s:s}", "op", ops[o]);
      uint64_t v = 0;
      if (theus_engine_map_into(E, procs[k], "data", 7, "concat", a, &out, NULL, &v))
        fail_msg("map_into %s %s: %s", procs[k], ops[o], theus_engine_errmsg(E));
      json_decref(a);
      theus_snapshot *s;
      theus_array_info ai;
      assert_int_equal(theus_engine_snapshot(E, &s), 0);
      assert_int_equal(theus_snapshot_heavy(s, "out", &ai), 0);
      assert_int_equal(ai.ndim, 1);
      assert_int_equal(ai.shape[0], 4);
      const double *r = ai.data;
      for (int b = 0; b < 4; b++) {
        double want = 0;
        for (int i = b; i < N; i += 4)
          want += i + 1;
        want = o == 0 ? want : o == 1 ? 1 : N;
        assert_true(r[b] == want);
      }
      theus_snapshot_release(s);
    }
  /* bad partials: unknown op, no shape */
  theus_map_out bad = {.key = "out", .ndim = 1, .shape = {4}, .partials = "mean"};
  assert_int_equal(theus_engine_map_into(E, "bins", "data", 2, "concat", NULL, &bad, NULL, NULL), THEUS_EINVAL);
  bad.partials = "sum";
  bad.ndim = 0;
  assert_int_equal(theus_engine_map_into(E, "bins", "data", 2, "concat", NULL, &bad, NULL, NULL), THEUS_EINVAL);
  /* the scratch partials are freed: only the published 32-byte output (replacing the former one) stays */
  assert_true(live_bytes() <= before + 4096);
}

/* No input array: a parallel process fills a new one (one slice or several). */
static void test_fill_without_input(void **state) {
  (void)state;
  for (uint32_t slices = 1; slices <= 3; slices += 2) {
    theus_map_out out = {.key = "wide", .dtype = THEUS_DTYPE_F64, .ndim = 2, .shape = {1000, 4}};
    uint64_t v = 0;
    if (theus_engine_map_into(E, "ramp", NULL, slices, "concat", NULL, &out, NULL, &v))
      fail_msg("map_into without input: %s", theus_engine_errmsg(E));
    theus_snapshot *s;
    theus_array_info ai;
    assert_int_equal(theus_engine_snapshot(E, &s), 0);
    assert_int_equal(theus_snapshot_heavy(s, "wide", &ai), 0);
    for (uint64_t i = 0; i < 4000; i++)
      assert_true(((const double *)ai.data)[i] == (double)(i / 4));
    theus_snapshot_release(s);
  }
  theus_map_out nodtype = {.key = "wide", .ndim = 1, .shape = {1000}};
  assert_int_equal(theus_engine_map_into(E, "ramp", NULL, 1, "concat", NULL, &nodtype, NULL, NULL), THEUS_EINVAL);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_map_into_new_array),
      cmocka_unit_test(test_map_into_other_shape),
      cmocka_unit_test(test_failed_slice_discards),
      cmocka_unit_test(test_refusals),
      cmocka_unit_test(test_partials),
      cmocka_unit_test(test_fill_without_input),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
