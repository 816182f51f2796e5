/* theus_engine_map_part and theus_engine_reduce (the pieces the cluster layer
 * spreads a map with): parts of a map run in the pool give the whole map's
 * slice values, with the whole map's bounds and indices, and folding them
 * gives theus_engine_map's result exactly; ranges, failures and reducer
 * errors are refused with a message. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "theus/engine.h"

/* The slice's bounds and 0.1 x the sum of its rows of heavy.x. */
static int slice_sum(theus_ctx *ctx, uint32_t *i, uint32_t *n, uint64_t *lo, uint64_t *hi, double *s) {
  theus_array_info a;
  if (theus_ctx_slice(ctx, lo, hi, i, n) || theus_ctx_heavy(ctx, "x", &a))
    return theus_ctx_fail(ctx, "not in a map");
  *s = 0;
  for (uint64_t r = *lo; r < *hi; r++)
    *s += ((const double *)a.data)[r] * 0.1;
  return 0;
}

/* Returns {"i": index, "n": count, "lo": lo, "hi": hi, "s": the sum}; fails
 * on slice args.fail_at. */
static int part(theus_ctx *ctx) {
  uint32_t i, n;
  uint64_t lo, hi;
  double s;
  int rc = slice_sum(ctx, &i, &n, &lo, &hi, &s);
  if (rc)
    return rc;
  const json_t *f = json_object_get(theus_ctx_args(ctx), "fail_at");
  if (f && json_integer_value(f) == (json_int_t)i)
    return theus_ctx_fail(ctx, "slice %u fails on purpose", i);
  theus_ctx_return(ctx, json_pack("{s:i, s:i, s:I, s:I, s:f}", "i", (int)i, "n", (int)n, "lo", (json_int_t)lo, "hi",
                                  (json_int_t)hi, "s", s));
  return 0;
}

/* The sum alone, for the sum reducer. */
static int part_sum(theus_ctx *ctx) {
  uint32_t i, n;
  uint64_t lo, hi;
  double s;
  int rc = slice_sum(ctx, &i, &n, &lo, &hi, &s);
  if (!rc)
    theus_ctx_return(ctx, json_real(s));
  return rc;
}

static int setup(void **state) {
  theus_engine_config cfg;
  theus_engine_config_init(&cfg);
  cfg.workers = 2;
  theus_engine *e;
  if (theus_engine_open(&cfg, &e)) return -1;
  static const char *const in[] = {"heavy.x", NULL};
  theus_contract c1 = {.name = "part", .fn = part, .inputs = in, .parallel = 1, .semantic = THEUS_PURE};
  theus_contract c2 = {.name = "part_sum", .fn = part_sum, .inputs = in, .parallel = 1, .semantic = THEUS_PURE};
  uint64_t shape[1] = {1000};
  void *data;
  json_t *pub = json_pack("{s:b}", "x", 1);
  int rc = theus_engine_register(e, &c1) || theus_engine_register(e, &c2) ||
           theus_engine_heavy_alloc(e, "x", THEUS_DTYPE_F64, 1, shape, &data);
  for (unsigned r = 0; !rc && r < shape[0]; r++)
    ((double *)data)[r] = r * 1.37;
  rc = rc || theus_engine_cas(e, theus_engine_version(e), NULL, pub, NULL);
  json_decref(pub);
  *state = e;
  return rc ? -1 : 0;
}

static int teardown(void **state) {
  theus_engine_close(*state);
  return 0;
}

static json_t *part_of(theus_engine *e, const char *name, uint32_t slices, uint32_t first, uint32_t count) {
  json_t *items = NULL;
  int rc = theus_engine_map_part(e, name, "x", slices, first, count, NULL, &items);
  if (rc) fail_msg("map_part [%u, +%u) of %u: %s", first, count, slices, theus_engine_errmsg(e));
  return items;
}

/* Parts in any split concatenate to the whole map's slice values, with the
 * whole map's indices and bounds. */
static void test_parts_are_the_whole(void **state) {
  theus_engine *e = *state;
  json_t *whole = part_of(e, "part", 7, 0, 7);
  assert_int_equal(json_array_size(whole), 7);
  json_t *a = part_of(e, "part", 7, 0, 3), *b = part_of(e, "part", 7, 3, 2), *c = part_of(e, "part", 7, 5, 2);
  json_t *cat = json_array();
  json_array_extend(cat, a);
  json_array_extend(cat, b);
  json_array_extend(cat, c);
  assert_true(json_equal(cat, whole));
  const json_t *s3 = json_array_get(b, 0);
  assert_int_equal(json_integer_value(json_object_get(s3, "i")), 3);
  assert_int_equal(json_integer_value(json_object_get(s3, "n")), 7);
  assert_int_equal(json_integer_value(json_object_get(s3, "lo")), 1000 * 3 / 7);
  assert_int_equal(json_integer_value(json_object_get(s3, "hi")), 1000 * 4 / 7);
  json_t *none = part_of(e, "part", 7, 7, 0);
  assert_int_equal(json_array_size(none), 0);
  json_decref(none);
  json_decref(cat);
  json_decref(a);
  json_decref(b);
  json_decref(c);
  json_decref(whole);
}

/* Folding the parts' values gives theus_engine_map's result, bit for bit. */
static void test_reduce_equals_map(void **state) {
  theus_engine *e = *state;
  json_t *want = NULL, *got = NULL;
  assert_int_equal(theus_engine_map(e, "part_sum", "x", 9, "sum", NULL, &want), 0);
  json_t *a = part_of(e, "part_sum", 9, 0, 4), *b = part_of(e, "part_sum", 9, 4, 5);
  json_array_extend(a, b);
  assert_int_equal(theus_engine_reduce(e, "sum", a, &got), 0);
  assert_true(json_is_real(got));
  assert_true(json_real_value(got) == json_real_value(want));
  json_decref(got);
  /* null entries (slices that returned nothing) are skipped */
  json_array_insert_new(a, 2, json_null());
  assert_int_equal(theus_engine_reduce(e, "sum", a, &got), 0);
  assert_true(json_real_value(got) == json_real_value(want));
  json_decref(got);
  json_decref(a);
  json_decref(b);
  json_decref(want);
}

/* Slices beyond the map, a failing slice and bad reductions are refused. */
static void test_refusals(void **state) {
  theus_engine *e = *state;
  json_t *items = (json_t *)1, *out = (json_t *)1;
  /* 2000 slices of 1000 rows: the map has 1000, so [1000, 1001) leaves it */
  assert_int_equal(theus_engine_map_part(e, "part", "x", 2000, 1000, 1, NULL, &items), THEUS_EINVAL);
  assert_null(items);
  assert_non_null(strstr(theus_engine_errmsg(e), "leave the map's 1000 slices"));
  assert_int_equal(theus_engine_map_part(e, "nope", "x", 4, 0, 1, NULL, &items), THEUS_ENOTFOUND);
  assert_int_equal(theus_engine_map_part(e, "part", "missing", 4, 0, 1, NULL, &items), THEUS_ENOTFOUND);
  json_t *args = json_pack("{s:i}", "fail_at", 4);
  assert_int_equal(theus_engine_map_part(e, "part", "x", 7, 3, 3, args, &items), THEUS_EPROCESS);
  assert_non_null(strstr(theus_engine_errmsg(e), "slice 4/7"));
  assert_non_null(strstr(theus_engine_errmsg(e), "fails on purpose"));
  json_decref(args);
  json_t *mixed = json_pack("[i, s]", 1, "two");
  assert_int_equal(theus_engine_reduce(e, "sum", mixed, &out), THEUS_EINVAL);
  assert_null(out);
  assert_non_null(strstr(theus_engine_errmsg(e), "item 1"));
  assert_int_equal(theus_engine_reduce(e, "nope", mixed, &out), THEUS_EINVAL);
  assert_non_null(strstr(theus_engine_errmsg(e), "unknown reducer 'nope'"));
  assert_int_equal(theus_engine_reduce(e, "sum", json_object_get(mixed, "x"), &out), THEUS_EINVAL);
  json_decref(mixed);
  json_t *empty = json_array();
  assert_int_equal(theus_engine_reduce(e, "concat", empty, &out), 0);
  assert_true(json_is_null(out));
  json_decref(out);
  json_decref(empty);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_parts_are_the_whole),
      cmocka_unit_test(test_reduce_equals_map),
      cmocka_unit_test(test_refusals),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
