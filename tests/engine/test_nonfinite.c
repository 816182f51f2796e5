/* engine: no silent wrong result from a non-finite number (issue 15 item 4).
 * json_real(NAN) and json_real(INFINITY) are NULL in jansson; a process that
 * hands such a value to theus_ctx_set or theus_ctx_return fails, with its
 * name and the path, locally and in a worker, and commits nothing. A sum
 * reducer whose total overflows fails, naming the map and the slice. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "theus/engine.h"

static const char *const y_out[] = {"domain.y", NULL};
static const char *const rows_in[] = {"heavy.rows", NULL};

/* Ignores theus_ctx_set's code, as a careless process would. */
static int sets_nan(theus_ctx *ctx) {
  theus_ctx_set(ctx, "domain.y", json_real(NAN));
  return 0;
}

static int returns_inf(theus_ctx *ctx) {
  theus_ctx_return(ctx, json_real(INFINITY));
  return 0;
}

static int returns_huge(theus_ctx *ctx) {
  theus_ctx_return(ctx, json_real(1e308));
  return 0;
}

/* workers -1: local runs; 1: the worker path (parallel processes). */
static theus_engine *open_engine(int workers) {
  theus_engine_config cfg;
  theus_engine_config_init(&cfg);
  cfg.workers = workers;
  json_t *d = json_pack("{s:i}", "y", 1);
  cfg.domain = d;
  theus_engine *e;
  if (theus_engine_open(&cfg, &e)) fail_msg("engine open: %s", theus_engine_errmsg(e));
  json_decref(d);
  int par = workers > 0;
  theus_contract cs[] = {
      {.name = "sets_nan", .fn = sets_nan, .outputs = y_out, .parallel = par},
      {.name = "returns_inf", .fn = returns_inf, .parallel = par},
      {.name = "returns_huge", .fn = returns_huge, .inputs = rows_in, .parallel = par},
  };
  for (size_t i = 0; i < sizeof cs / sizeof cs[0]; i++) assert_int_equal(theus_engine_register(e, &cs[i]), 0);
  uint64_t shape[1] = {4};
  void *data;
  json_t *pub = json_pack("{s:b}", "rows", 1);
  assert_int_equal(theus_engine_heavy_alloc(e, "rows", THEUS_DTYPE_U8, 1, shape, &data), 0);
  assert_int_equal(theus_engine_cas(e, theus_engine_version(e), NULL, pub, NULL), 0);
  json_decref(pub);
  return e;
}

static void expect_msg(theus_engine *e, const char *a, const char *b) {
  const char *m = theus_engine_errmsg(e);
  if (!strstr(m, a) || !strstr(m, b)) fail_msg("message \"%s\" lacks \"%s\" or \"%s\"", m, a, b);
}

static void check_engine(int workers) {
  theus_engine *e = open_engine(workers);
  uint64_t v = theus_engine_version(e);
  assert_int_equal(theus_engine_execute(e, "sets_nan", NULL, NULL), THEUS_EINVAL);
  expect_msg(e, "process 'sets_nan'", "'domain.y'");
  expect_msg(e, "NaN", "non-finite");
  assert_int_equal(theus_engine_version(e), v); /* nothing committed */
  json_t *y = theus_engine_get(e, "domain.y");
  assert_int_equal(json_integer_value(y), 1);
  json_decref(y);
  json_t *res = NULL;
  assert_int_equal(theus_engine_execute(e, "returns_inf", NULL, &res), THEUS_EINVAL);
  assert_null(res);
  expect_msg(e, "process 'returns_inf'", "ctx_return");
  assert_int_equal(theus_engine_map(e, "returns_huge", "rows", 4, "sum", NULL, &res), THEUS_EINVAL);
  assert_null(res);
  expect_msg(e, "map 'returns_huge'", "slice 1");
  expect_msg(e, "reducer 'sum'", "1e+308 + 1e+308 is not a finite number");
  /* the largest finite sum still works */
  assert_int_equal(theus_engine_map(e, "returns_huge", "rows", 4, "max", NULL, &res), 0);
  assert_true(json_real_value(res) == 1e308);
  json_decref(res);
  theus_engine_close(e);
}

static void test_local(void **state) {
  (void)state;
  check_engine(-1);
}

static void test_worker(void **state) {
  (void)state;
  check_engine(1);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_local),
      cmocka_unit_test(test_worker),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
