/* engine: memoisation of pure processes. A hit returns (and commits) the
 * earlier run's outputs without running; a changed input value, argument or
 * heavy array (a new publication) misses; per contract or per engine; effect
 * processes refused; a map memoises per slice; the cache is bounded (LRU). */
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "theus/engine.h"

static const char *const x_in[] = {"domain.x", NULL};
static const char *const y_out[] = {"domain.y", NULL};
static const char *const d_in[] = {"heavy.data", NULL};
static const char *const d_out[] = {"heavy.out", NULL};

static atomic_int calls; /* local runs of double_x and publish */

/* y = 2 * x + args.k; returns y */
static int double_x(theus_ctx *ctx) {
  atomic_fetch_add(&calls, 1);
  json_int_t y = 2 * json_integer_value(theus_ctx_get(ctx, "domain.x")) +
                 json_integer_value(json_object_get(theus_ctx_args(ctx), "k"));
  theus_ctx_return(ctx, json_integer(y));
  return theus_ctx_set(ctx, "domain.y", json_integer(y));
}

/* the sum of the slice's rows of heavy.data, in a worker */
static int slice_sum(theus_ctx *ctx) {
  theus_array_info a;
  int rc = theus_ctx_heavy(ctx, "data", &a);
  if (rc) return rc;
  uint64_t lo = 0, hi = a.shape[0];
  uint32_t i, n;
  theus_ctx_slice(ctx, &lo, &hi, &i, &n);
  double s = 0;
  for (uint64_t k = lo; k < hi; k++) s += ((const double *)a.data)[k];
  theus_ctx_return(ctx, json_real(s));
  return 0;
}

/* publishes heavy.out: never memoised */
static int publish(theus_ctx *ctx) {
  atomic_fetch_add(&calls, 1);
  void *p;
  uint64_t shape[1] = {2};
  return theus_ctx_heavy_alloc(ctx, "out", THEUS_DTYPE_F64, 1, shape, &p);
}

static theus_engine *open_engine(int memo_all, unsigned capacity) {
  theus_engine_config cfg;
  theus_engine_config_init(&cfg);
  cfg.workers = 2;
  cfg.memo = memo_all;
  cfg.memo_capacity = capacity;
  json_t *dom = json_pack("{s:i}", "x", 1);
  cfg.domain = dom;
  theus_engine *e;
  assert_int_equal(theus_engine_open(&cfg, &e), 0);
  json_decref(dom);
  const theus_contract cs[] = {
      {.name = "double_memo", .fn = double_x, .inputs = x_in, .outputs = y_out, .memo = 1},
      {.name = "double_default", .fn = double_x, .inputs = x_in, .outputs = y_out},
      {.name = "double_never", .fn = double_x, .inputs = x_in, .outputs = y_out, .memo = -1},
      {.name = "slice_sum", .fn = slice_sum, .inputs = d_in, .parallel = 1, .memo = 1},
      {.name = "publish", .fn = publish, .outputs = d_out, .memo = 1},
  };
  for (size_t i = 0; i < sizeof cs / sizeof cs[0]; i++) assert_int_equal(theus_engine_register(e, &cs[i]), 0);
  atomic_store(&calls, 0);
  return e;
}

static json_int_t memo_stat(theus_engine *e, const char *key) {
  json_t *st = theus_engine_stats(e);
  json_int_t v = json_integer_value(json_object_get(json_object_get(st, "memo"), key));
  json_decref(st);
  return v;
}

static json_int_t exec_y(theus_engine *e, const char *name, int k) {
  json_t *args = json_pack("{s:i}", "k", k), *res = NULL;
  assert_int_equal(theus_engine_execute(e, name, args, &res), 0);
  json_int_t y = json_integer_value(res);
  json_decref(res);
  json_decref(args);
  return y;
}

static void publish_data(theus_engine *e, double fill) {
  double *d;
  uint64_t shape[1] = {8};
  assert_int_equal(theus_engine_heavy_alloc(e, "data", THEUS_DTYPE_F64, 1, shape, (void **)&d), 0);
  for (int i = 0; i < 8; i++) d[i] = fill;
  json_t *hp = json_pack("{s:b}", "data", 1);
  assert_int_equal(theus_engine_cas(e, theus_engine_version(e), NULL, hp, NULL), 0);
  json_decref(hp);
}

static void test_hit_then_miss_on_change(void **state) {
  (void)state;
  theus_engine *e = open_engine(0, 0);
  assert_int_equal(exec_y(e, "double_memo", 0), 2);
  uint64_t v1 = theus_engine_version(e);
  assert_int_equal(exec_y(e, "double_memo", 0), 2); /* same x, same args: a hit */
  assert_int_equal(atomic_load(&calls), 1);
  assert_int_equal(theus_engine_version(e), v1 + 1); /* the hit commits like a run */
  assert_int_equal(memo_stat(e, "hits"), 1);
  assert_int_equal(memo_stat(e, "misses"), 1);
  assert_int_equal(exec_y(e, "double_memo", 1), 3); /* an argument changed */
  assert_int_equal(atomic_load(&calls), 2);
  assert_int_equal(theus_engine_set(e, "domain.x", json_integer(5)), 0);
  assert_int_equal(exec_y(e, "double_memo", 0), 10); /* an input changed */
  assert_int_equal(atomic_load(&calls), 3);
  assert_int_equal(theus_engine_set(e, "domain.x", json_integer(1)), 0);
  assert_int_equal(exec_y(e, "double_memo", 0), 2); /* a state revisited: a hit again */
  assert_int_equal(atomic_load(&calls), 3);
  assert_int_equal(memo_stat(e, "hits"), 2);
  assert_int_equal(memo_stat(e, "misses"), 3);
  theus_engine_close(e);
}

/* A hit hands out its own copy of the return value and commits the cached
 * patch without the cache changing: a caller that changes what it got, and
 * hits committed over each other, leave the next hit as the first run was. */
static void test_hits_do_not_change_the_cache(void **state) {
  (void)state;
  theus_engine *e = open_engine(0, 0);
  assert_int_equal(exec_y(e, "double_memo", 0), 2);
  json_t *k0 = json_pack("{s:i}", "k", 0);
  for (int i = 0; i < 3; i++) {
    json_t *res = NULL;
    assert_int_equal(theus_engine_execute(e, "double_memo", k0, &res), 0); /* a hit */
    assert_int_equal(json_integer_value(res), 2);
    assert_int_equal(json_integer_set(res, 999), 0); /* the caller's to change */
    json_decref(res);
    json_t *y = theus_engine_get(e, "domain.y");
    assert_int_equal(json_integer_value(y), 2);
    json_decref(y);
  }
  json_decref(k0);
  assert_int_equal(atomic_load(&calls), 1);
  assert_int_equal(memo_stat(e, "hits"), 3);
  theus_engine_close(e);
}

static void test_per_contract_and_per_engine(void **state) {
  (void)state;
  theus_engine *e = open_engine(0, 0); /* engine default off: only memo 1 */
  exec_y(e, "double_default", 0);
  exec_y(e, "double_default", 0);
  assert_int_equal(atomic_load(&calls), 2);
  theus_engine_close(e);
  e = open_engine(1, 0); /* engine memo on: every pure process but memo -1 */
  exec_y(e, "double_default", 0);
  exec_y(e, "double_default", 0);
  assert_int_equal(atomic_load(&calls), 1);
  exec_y(e, "double_never", 0);
  exec_y(e, "double_never", 0);
  assert_int_equal(atomic_load(&calls), 3);
  const theus_contract eff = {.name = "eff", .fn = double_x, .outputs = y_out, .semantic = THEUS_EFFECT, .memo = 1};
  assert_int_equal(theus_engine_register(e, &eff), THEUS_EINVAL);
  assert_non_null(strstr(theus_engine_errmsg(e), "an effect process is never memoised"));
  theus_engine_close(e);
}

static void test_heavy_outputs_not_memoised(void **state) {
  (void)state;
  theus_engine *e = open_engine(0, 0);
  assert_int_equal(theus_engine_execute(e, "publish", NULL, NULL), 0);
  assert_int_equal(theus_engine_execute(e, "publish", NULL, NULL), 0);
  assert_int_equal(atomic_load(&calls), 2);
  assert_int_equal(memo_stat(e, "entries"), 0);
  theus_engine_close(e);
}

static double map_sum(theus_engine *e) {
  json_t *res = NULL;
  assert_int_equal(theus_engine_map(e, "slice_sum", "data", 4, "sum", NULL, &res), 0);
  double s = json_number_value(res);
  json_decref(res);
  return s;
}

/* A map memoises per slice, keyed by the array's identity: a new publication
 * (even of equal bytes) misses. A parallel execute of it hits too. */
static void test_map_per_slice(void **state) {
  (void)state;
  theus_engine *e = open_engine(0, 0);
  publish_data(e, 1.0);
  assert_float_equal(map_sum(e), 8.0, 0);
  assert_int_equal(memo_stat(e, "misses"), 4);
  assert_float_equal(map_sum(e), 8.0, 0);
  assert_int_equal(memo_stat(e, "hits"), 4);
  assert_int_equal(memo_stat(e, "misses"), 4);
  publish_data(e, 1.0);
  assert_float_equal(map_sum(e), 8.0, 0);
  assert_int_equal(memo_stat(e, "misses"), 8);
  json_t *res = NULL;
  assert_int_equal(theus_engine_execute(e, "slice_sum", NULL, &res), 0); /* a whole-array run: its own key */
  json_decref(res);
  assert_int_equal(theus_engine_execute(e, "slice_sum", NULL, &res), 0);
  assert_float_equal(json_number_value(res), 8.0, 0);
  json_decref(res);
  assert_int_equal(memo_stat(e, "misses"), 9);
  assert_int_equal(memo_stat(e, "hits"), 5);
  theus_engine_close(e);
}

static void test_bounded_lru(void **state) {
  (void)state;
  theus_engine *e = open_engine(0, 2);
  exec_y(e, "double_memo", 1);
  exec_y(e, "double_memo", 2);
  exec_y(e, "double_memo", 1); /* a hit: k=1 becomes the most recent */
  exec_y(e, "double_memo", 3); /* evicts k=2 */
  assert_int_equal(memo_stat(e, "entries"), 2);
  assert_int_equal(memo_stat(e, "evictions"), 1);
  assert_int_equal(atomic_load(&calls), 3);
  exec_y(e, "double_memo", 1); /* still there */
  assert_int_equal(atomic_load(&calls), 3);
  exec_y(e, "double_memo", 2); /* evicted: runs again */
  assert_int_equal(atomic_load(&calls), 4);
  theus_engine_close(e);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_hit_then_miss_on_change),
      cmocka_unit_test(test_hits_do_not_change_the_cache),
      cmocka_unit_test(test_per_contract_and_per_engine),
      cmocka_unit_test(test_heavy_outputs_not_memoised),
      cmocka_unit_test(test_map_per_slice),
      cmocka_unit_test(test_bounded_lru),
  };
  return cmocka_run_group_tests_name("memo", tests, NULL, NULL);
}
