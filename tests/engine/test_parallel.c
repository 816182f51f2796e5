/* engine in the pool: parallel execute, heavy views in workers, crashes,
 * undeclared writes, timeouts, map with reducers. One engine per group;
 * the group teardown closes it (and reaps the workers) even on failure. */
#include <dlfcn.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "theus/engine.h"

static const char *const k_in[] = {"domain.k", "heavy.data", NULL};
static const char *const y_out[] = {"domain.y", NULL};

/* y = k * (sum of data) computed in a worker; returns the worker id. */
static int scaled_sum(theus_ctx *ctx) {
  theus_array_info ai;
  int rc = theus_ctx_heavy(ctx, "data", &ai);
  if (rc)
    return theus_ctx_fail(ctx, "no data: %s", theus_strerror(rc));
  const double *d = ai.data;
  double s = 0;
  for (uint64_t i = 0; i < ai.shape[0]; i++)
    s += d[i];
  theus_ctx_set(ctx, "domain.y", json_real(s * json_number_value(theus_ctx_get(ctx, "domain.k"))));
  theus_ctx_return(ctx, json_pack("{s:i, s:I}", "worker", theus_ctx_worker(ctx), "pid", (json_int_t)getpid()));
  return 0;
}

static int sneaky(theus_ctx *ctx) {
  theus_ctx_set(ctx, "domain.y", json_integer(1));
  return theus_ctx_set(ctx, "domain.z", json_integer(1));
}

static int crasher(theus_ctx *ctx) {
  if (json_is_true(json_object_get(theus_ctx_args(ctx), "crash")))
    raise(SIGSEGV);
  return theus_ctx_set(ctx, "domain.y", json_integer(7));
}

static int scribbler(theus_ctx *ctx) {
  theus_array_info ai;
  if (theus_ctx_heavy(ctx, "data", &ai))
    return theus_ctx_fail(ctx, "no data");
  ((volatile double *)(uintptr_t)ai.data)[0] = 1.0; /* must fault: read-only mapping */
  return 0;
}

static int sleeper(theus_ctx *ctx) {
  (void)ctx;
  sleep(30);
  return 0;
}

/* Sum (or min/max) of a slice, returned for the reducer. */
static int slice_sum(theus_ctx *ctx) {
  uint64_t lo, hi;
  uint32_t idx, cnt;
  if (theus_ctx_slice(ctx, &lo, &hi, &idx, &cnt))
    return theus_ctx_fail(ctx, "not in a map");
  theus_array_info ai;
  theus_ctx_heavy(ctx, "data", &ai);
  const double *d = ai.data;
  double s = 0, mn = d[lo], mx = d[lo];
  for (uint64_t i = lo; i < hi; i++) {
    s += d[i];
    mn = d[i] < mn ? d[i] : mn;
    mx = d[i] > mx ? d[i] : mx;
  }
  const char *what = json_string_value(json_object_get(theus_ctx_args(ctx), "what"));
  json_t *r = !what ? json_real(s)
              : !strcmp(what, "min") ? json_real(mn)
              : !strcmp(what, "max") ? json_real(mx)
              : !strcmp(what, "idx") ? json_pack("[i]", (int)idx)
                                     : json_pack("{s:f, s:I}", "sum", s, "n", (json_int_t)(hi - lo));
  theus_ctx_return(ctx, r);
  return 0;
}

static theus_engine *E;
#define N 1000

static int setup(void **state) {
  (void)state;
  theus_engine_config cfg;
  theus_engine_config_init(&cfg);
  cfg.workers = 2;
  json_t *d = json_pack("{s:i}", "k", 2);
  cfg.domain = d;
  int rc = theus_engine_open(&cfg, &E);
  json_decref(d);
  if (rc) {
    print_error("engine open: %s\n", theus_engine_errmsg(E));
    theus_engine_close(E);
    E = NULL;
    return -1;
  }
  const char *const in_data[] = {"heavy.data", NULL};
  theus_contract cs[] = {
      {.name = "scaled_sum", .fn = scaled_sum, .inputs = k_in, .outputs = y_out, .parallel = 1},
      {.name = "sneaky", .fn = sneaky, .outputs = y_out, .parallel = 1},
      {.name = "crasher", .fn = crasher, .outputs = y_out, .parallel = 1},
      {.name = "scribbler", .fn = scribbler, .inputs = in_data, .parallel = 1},
      {.name = "sleeper", .fn = sleeper, .parallel = 1, .timeout_ms = 200},
      {.name = "slice_sum", .fn = slice_sum, .inputs = in_data, .parallel = 1},
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
  json_t *hp = json_pack("{s:b}", "data", 1);
  rc = theus_engine_cas(E, theus_engine_version(E), NULL, hp, NULL);
  json_decref(hp);
  return rc;
}

static int teardown(void **state) {
  (void)state;
  theus_engine_close(E);
  return 0;
}

static void test_parallel_execute_in_worker(void **state) {
  (void)state;
  json_t *r = NULL;
  assert_int_equal(theus_engine_execute(E, "scaled_sum", NULL, &r), 0);
  assert_true(json_integer_value(json_object_get(r, "worker")) >= 0);
  assert_true(json_integer_value(json_object_get(r, "pid")) != getpid());
  json_decref(r);
  json_t *y = theus_engine_get(E, "domain.y");
  assert_true(json_number_value(y) == 2.0 * N * (N + 1) / 2);
  json_decref(y);
}

static void test_parallel_undeclared_write_rejected(void **state) {
  (void)state;
  uint64_t v = theus_engine_version(E);
  json_t *y0 = theus_engine_get(E, "domain.y");
  assert_int_equal(theus_engine_execute(E, "sneaky", NULL, NULL), THEUS_ECONTRACT);
  assert_non_null(strstr(theus_engine_errmsg(E), "domain.z"));
  assert_int_equal(theus_engine_version(E), v);
  json_t *y1 = theus_engine_get(E, "domain.y");
  assert_true(json_equal(y0, y1));
  json_decref(y0);
  json_decref(y1);
}

static void test_worker_crash_then_next_works(void **state) {
  (void)state;
  uint64_t v = theus_engine_version(E);
  json_t *a = json_pack("{s:b}", "crash", 1);
  assert_int_equal(theus_engine_execute(E, "crasher", a, NULL), THEUS_ECRASH);
  json_decref(a);
  assert_non_null(strstr(theus_engine_errmsg(E), "SIGSEGV"));
  assert_int_equal(theus_engine_version(E), v);
  assert_int_equal(theus_engine_execute(E, "crasher", NULL, NULL), 0);
  assert_int_equal(theus_engine_version(E), v + 1);
}

static void test_write_into_heavy_is_a_contract_violation(void **state) {
  (void)state;
  uint64_t v = theus_engine_version(E);
  assert_int_equal(theus_engine_execute(E, "scribbler", NULL, NULL), THEUS_ECONTRACT);
  assert_non_null(strstr(theus_engine_errmsg(E), "read-only"));
  assert_int_equal(theus_engine_version(E), v);
  theus_snapshot *s;
  theus_engine_snapshot(E, &s);
  theus_array_info ai;
  assert_int_equal(theus_snapshot_heavy(s, "data", &ai), 0);
  assert_true(((const double *)ai.data)[0] == 1.0);
  theus_snapshot_release(s);
}

static void test_timeout(void **state) {
  (void)state;
  assert_int_equal(theus_engine_execute(E, "sleeper", NULL, NULL), THEUS_ETIMEDOUT);
  assert_int_equal(theus_engine_execute(E, "crasher", NULL, NULL), 0);
}

static void test_map_reducers(void **state) {
  (void)state;
  json_t *r = NULL;
  int mrc = theus_engine_map(E, "slice_sum", "data", 7, "sum", NULL, &r);
  if (mrc)
    fail_msg("map: %s", theus_engine_errmsg(E));
  assert_true(json_number_value(r) == (double)N * (N + 1) / 2);
  json_decref(r);
  json_t *a = json_pack("{s:s}", "what", "min");
  assert_int_equal(theus_engine_map(E, "slice_sum", "data", 4, "min", a, &r), 0);
  assert_true(json_number_value(r) == 1.0);
  json_decref(r);
  json_decref(a);
  a = json_pack("{s:s}", "what", "max");
  assert_int_equal(theus_engine_map(E, "slice_sum", "data", 4, "max", a, &r), 0);
  assert_true(json_number_value(r) == (double)N);
  json_decref(r);
  json_decref(a);
  a = json_pack("{s:s}", "what", "idx");
  assert_int_equal(theus_engine_map(E, "slice_sum", "data", 5, "concat", a, &r), 0);
  json_t *want = json_pack("[i,i,i,i,i]", 0, 1, 2, 3, 4);
  assert_true(json_equal(r, want));
  json_decref(want);
  json_decref(r);
  json_decref(a);
  a = json_pack("{s:s}", "what", "obj");
  assert_int_equal(theus_engine_map(E, "slice_sum", "data", 3, "sum", a, &r), 0);
  assert_int_equal(json_integer_value(json_object_get(r, "n")), N);
  json_decref(r);
  json_decref(a);
  /* more slices than the pool's rings hold at once */
  assert_int_equal(theus_engine_map(E, "slice_sum", "data", 5000, "sum", NULL, &r), 0);
  assert_true(json_number_value(r) == (double)N * (N + 1) / 2);
  json_decref(r);
  assert_int_equal(theus_engine_map(E, "slice_sum", "data", 3, "nope", NULL, &r), THEUS_EINVAL);
  assert_int_equal(theus_engine_map(E, "slice_sum", "missing", 3, "sum", NULL, &r), THEUS_ENOTFOUND);
}

static json_t *count_items(json_t *acc, const json_t *item, void *ud) {
  (void)item;
  ++*(int *)ud;
  json_int_t n = acc ? json_integer_value(acc) : 0;
  json_decref(acc);
  return json_integer(n + 1);
}

static void test_map_registered_reducer(void **state) {
  (void)state;
  int calls = 0;
  assert_int_equal(theus_engine_register_reducer(E, "count", count_items, &calls), 0);
  json_t *r = NULL;
  assert_int_equal(theus_engine_map(E, "slice_sum", "data", 6, "count", NULL, &r), 0);
  assert_int_equal(json_integer_value(r), 6);
  assert_int_equal(calls, 6);
  json_decref(r);
}

/* A plugin dlopen()ed after the engine opened is not in the workers' image:
 * registering its parallel process must fail, not crash a worker later. */
static void test_plugin_loaded_after_open_is_refused(void **state) {
  (void)state;
  const char *path = getenv("THEUS_TEST_PLUGIN");
  assert_non_null(path); /* set by tests/engine/meson.build */
  void *so = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  assert_non_null(so);
  int (*reg)(theus_engine *) = (int (*)(theus_engine *))dlsym(so, "theus_plugin_register");
  assert_non_null(reg);
  assert_int_equal(reg(E), THEUS_EINVAL);
  assert_non_null(strstr(theus_engine_errmsg(E), "before theus_engine_open"));
  assert_null(theus_engine_contract(E, "moments"));
  dlclose(so);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_plugin_loaded_after_open_is_refused),
      cmocka_unit_test(test_parallel_execute_in_worker),
      cmocka_unit_test(test_parallel_undeclared_write_rejected),
      cmocka_unit_test(test_worker_crash_then_next_works),
      cmocka_unit_test(test_write_into_heavy_is_a_contract_violation),
      cmocka_unit_test(test_timeout),
      cmocka_unit_test(test_map_reducers),
      cmocka_unit_test(test_map_registered_reducer),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
