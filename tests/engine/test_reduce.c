/* Map reducers on array-shaped results: sum, min and max combine JSON arrays
 * element by element (nested to any depth, inside objects too); arrays of
 * different lengths are refused with a message. Runs without a pool (the
 * reducers are the same for local and pooled maps). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "theus/engine.h"

/* Slice i returns {"v": [i, [10*i, -i]], "n": 1}; slice 2 of a "ragged" run
 * returns a shorter array. */
static int shaped(theus_ctx *ctx) {
  uint32_t i, n;
  uint64_t lo, hi;
  if (theus_ctx_slice(ctx, &lo, &hi, &i, &n))
    return theus_ctx_fail(ctx, "not in a map");
  int ragged = json_is_true(json_object_get(theus_ctx_args(ctx), "ragged"));
  json_t *v = ragged && i == 2 ? json_pack("[i]", (int)i) : json_pack("[i,[i,i]]", (int)i, 10 * (int)i, -(int)i);
  theus_ctx_return(ctx, json_pack("{s:o, s:i}", "v", v, "n", 1));
  return 0;
}

/* Returns what theus_engine_progress_get says while this slice runs (the
 * engine is the contract's userdata): [done, total]. */
static int watch(theus_ctx *ctx) {
  theus_engine_progress ep;
  theus_engine_progress_get(theus_ctx_userdata(ctx), &ep);
  theus_ctx_return(ctx, json_pack("[[I,I]]", (json_int_t)ep.map_done, (json_int_t)ep.map_total));
  return 0;
}

static int setup(void **state) {
  theus_engine_config cfg;
  theus_engine_config_init(&cfg);
  cfg.workers = -1;
  theus_engine *e;
  if (theus_engine_open(&cfg, &e)) return -1;
  static const char *const in[] = {"heavy.rows", NULL};
  theus_contract c = {.name = "shaped", .fn = shaped, .inputs = in};
  uint64_t shape[1] = {4};
  void *data;
  json_t *pub = json_pack("{s:b}", "rows", 1);
  theus_contract w = {.name = "watch", .fn = watch, .inputs = in, .userdata = e};
  int rc = theus_engine_register(e, &c) || theus_engine_register(e, &w) || theus_engine_heavy_alloc(e, "rows", THEUS_DTYPE_U8, 1, shape, &data) ||
           theus_engine_cas(e, theus_engine_version(e), NULL, pub, NULL);
  json_decref(pub);
  *state = e;
  return rc ? -1 : 0;
}

static int teardown(void **state) {
  theus_engine_close(*state);
  return 0;
}

static json_t *map(theus_engine *e, const char *reducer, const json_t *args) {
  json_t *out = NULL;
  int rc = theus_engine_map(e, "shaped", "rows", 4, reducer, args, &out);
  if (rc) fail_msg("map %s: %s", reducer, theus_engine_errmsg(e));
  return out;
}

static void expect(json_t *got, const char *want_text) {
  json_t *want = json_loads(want_text, 0, NULL);
  if (!json_equal(got, want)) {
    char *g = json_dumps(got, JSON_COMPACT);
    fail_msg("got %s, want %s", g, want_text);
  }
  json_decref(want);
  json_decref(got);
}

static void test_sum_min_max_elementwise(void **state) {
  theus_engine *e = *state;
  expect(map(e, "sum", NULL), "{\"v\": [6, [60, -6]], \"n\": 4}");
  expect(map(e, "min", NULL), "{\"v\": [0, [0, -3]], \"n\": 1}");
  expect(map(e, "max", NULL), "{\"v\": [3, [30, 0]], \"n\": 1}");
}

static void test_ragged_arrays_refused(void **state) {
  theus_engine *e = *state;
  json_t *args = json_pack("{s:b}", "ragged", 1), *out = NULL;
  uint64_t v0 = theus_engine_version(e);
  assert_int_equal(theus_engine_map(e, "shaped", "rows", 4, "sum", args, &out), THEUS_EINVAL);
  assert_null(out);
  assert_non_null(strstr(theus_engine_errmsg(e), "reducer 'sum' cannot combine the result of slice 2"));
  assert_int_equal(theus_engine_version(e), v0);
  json_decref(args);
}

/* Issue 15 item 3: the map counters a progress display reads. Local slices
 * run one after another, so slice i sees exactly i done of 4. */
static void test_progress_counters(void **state) {
  theus_engine *e = *state;
  theus_engine_progress ep;
  theus_engine_progress_get(e, &ep);
  assert_int_equal(ep.map_total, 0);
  uint64_t before = ep.slices;
  json_t *out = NULL;
  assert_int_equal(theus_engine_map(e, "watch", "rows", 4, "concat", NULL, &out), 0);
  expect(out, "[[0, 4], [1, 4], [2, 4], [3, 4]]");
  theus_engine_progress_get(e, &ep);
  assert_int_equal(ep.map_done, 0);
  assert_int_equal(ep.map_total, 0);
  assert_int_equal(ep.slices, before + 4);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_sum_min_max_elementwise),
      cmocka_unit_test(test_ragged_arrays_refused),
      cmocka_unit_test(test_progress_counters),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
