/* engine in the pool: parallel execute, heavy views in workers, crashes,
 * undeclared writes, timeouts, map with reducers. One engine per group;
 * the group teardown closes it (and reaps the workers) even on failure. */
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
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

/* Returns [key, rows of the slice] for the array it maps, whatever its key. */
static int which_key(theus_ctx *ctx) {
  const char *key = theus_ctx_map_key(ctx);
  theus_array_info ai;
  if (!key)
    return theus_ctx_fail(ctx, "no map key");
  if (theus_ctx_heavy(ctx, key, &ai))
    return theus_ctx_fail(ctx, "cannot read the mapped key '%s'", key);
  uint64_t lo, hi;
  theus_ctx_slice(ctx, &lo, &hi, NULL, NULL);
  theus_ctx_return(ctx, json_pack("[s, I]", key, (json_int_t)(hi - lo)));
  return 0;
}

/* Outside a map there is no key. */
static int no_key(theus_ctx *ctx) {
  theus_ctx_return(ctx, json_boolean(theus_ctx_map_key(ctx) == NULL));
  return 0;
}

static const char *const c_io[] = {"domain.c", NULL};
static const char *const n_out[] = {"domain.n", NULL};

/* c += 1, in a worker: concurrent jobs conflict and are re-submitted. */
static int pinc(theus_ctx *ctx) {
  return theus_ctx_set(ctx, "domain.c", json_integer(json_integer_value(theus_ctx_get(ctx, "domain.c")) + 1));
}

/* Naps 30 ms, then writes n (the value of args.n). */
static int nap_set(theus_ctx *ctx) {
  usleep(30000);
  return theus_ctx_set(ctx, "domain.n", json_integer(json_integer_value(json_object_get(theus_ctx_args(ctx), "n"))));
}

static int nothing(theus_ctx *ctx) {
  (void)ctx;
  return 0;
}

static theus_engine *E;
#define N 1000

static int setup(void **state) {
  (void)state;
  theus_engine_config cfg;
  theus_engine_config_init(&cfg);
  cfg.workers = 2;
  json_t *d = json_pack("{s:i, s:i}", "k", 2, "c", 0);
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
  const char *const in_any[] = {"heavy.*", NULL};
  theus_contract cs[] = {
      {.name = "scaled_sum", .fn = scaled_sum, .inputs = k_in, .outputs = y_out, .parallel = 1},
      {.name = "sneaky", .fn = sneaky, .outputs = y_out, .parallel = 1},
      {.name = "crasher", .fn = crasher, .outputs = y_out, .parallel = 1},
      {.name = "scribbler", .fn = scribbler, .inputs = in_data, .parallel = 1},
      {.name = "sleeper", .fn = sleeper, .parallel = 1, .timeout_ms = 200},
      {.name = "slice_sum", .fn = slice_sum, .inputs = in_data, .parallel = 1},
      {.name = "pinc", .fn = pinc, .inputs = c_io, .outputs = c_io, .parallel = 1},
      {.name = "nap_set", .fn = nap_set, .outputs = n_out, .parallel = 1},
      {.name = "nothing", .fn = nothing, .parallel = 1},
      {.name = "which_key", .fn = which_key, .inputs = in_any, .parallel = 1},
      {.name = "which_key_local", .fn = which_key, .inputs = in_any},
      {.name = "no_key", .fn = no_key, .parallel = 1},
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

/* theus_ctx_map_key names the mapped array, in workers and locally, for a
 * contract declaring `heavy.*`. */
static void test_map_key(void **state) {
  (void)state;
  const char *names[] = {"which_key", "which_key_local"};
  for (int i = 0; i < 2; i++) {
    json_t *r = NULL;
    if (theus_engine_map(E, names[i], "data", 2, "concat", NULL, &r))
      fail_msg("map %s: %s", names[i], theus_engine_errmsg(E));
    json_t *want = json_pack("[s,i,s,i]", "data", N / 2, "data", N - N / 2); /* concat flattens */
    assert_true(json_equal(r, want));
    json_decref(want);
    json_decref(r);
  }
  json_t *r = NULL;
  assert_int_equal(theus_engine_execute(E, "no_key", NULL, &r), 0);
  assert_true(json_is_true(r));
  json_decref(r);
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
  assert_false(theus_engine_has_reducer(E, "count"));
  assert_int_equal(theus_engine_register_reducer(E, "count", count_items, &calls), 0);
  assert_true(theus_engine_has_reducer(E, "count"));
  assert_true(theus_engine_has_reducer(E, "concat")); /* built-in */
  assert_false(theus_engine_has_reducer(E, "average"));
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

/* ---- jobs on pool tickets, the worker registry ------------------------ */

/* A job released before it finished still commits (the reaper collects it). */
static void test_job_released_unfinished_commits(void **state) {
  (void)state;
  uint64_t v0 = theus_engine_version(E), now = 0;
  json_t *a = json_pack("{s:i}", "n", 41);
  theus_job *j = NULL;
  assert_int_equal(theus_engine_submit(E, "nap_set", a, &j), 0);
  json_decref(a);
  theus_job_release(j);
  assert_int_equal(theus_engine_wait_version(E, v0, 10000, &now), 0);
  assert_true(now > v0);
  json_t *n = theus_engine_get(E, "domain.n");
  assert_int_equal(json_integer_value(n), 41);
  json_decref(n);
}

/* A timed-out wait leaves the job running; the next wait collects it; a
 * second waiter sees the same outcome. */
static void test_job_wait_timeout_then_again(void **state) {
  (void)state;
  json_t *a = json_pack("{s:i}", "n", 7), *r = (json_t *)1;
  theus_job *j = NULL;
  assert_int_equal(theus_engine_submit(E, "nap_set", a, &j), 0);
  json_decref(a);
  assert_int_equal(theus_job_wait(j, 0, &r), THEUS_ETIMEDOUT);
  assert_null(r);
  assert_string_equal(theus_job_errmsg(j), "");
  assert_int_equal(theus_job_wait(j, -1, NULL), 0);
  assert_int_equal(theus_job_wait(j, 0, NULL), 0);
  assert_true(theus_job_version(j) > 0);
  theus_job_release(j);
}

typedef struct jobs_arg {
  int n, failed;
} jobs_arg;

static void *submit_many(void *v) {
  jobs_arg *a = v;
  for (int i = 0; i < a->n; i++) {
    theus_job *j = NULL;
    if (theus_engine_submit(E, i % 3 ? "pinc" : "nothing", NULL, &j) || theus_job_wait(j, -1, NULL))
      a->failed++;
    theus_job_release(j);
  }
  return NULL;
}

/* Concurrent submitters: every increment lands once (conflicts re-submit). */
static void test_concurrent_pool_jobs(void **state) {
  (void)state;
  json_t *c0 = theus_engine_get(E, "domain.c");
  json_int_t before = json_integer_value(c0);
  json_decref(c0);
  enum { T = 4, PER = 60 };
  pthread_t th[T];
  jobs_arg a[T];
  for (int i = 0; i < T; i++) {
    a[i] = (jobs_arg){PER, 0};
    assert_int_equal(pthread_create(&th[i], NULL, submit_many, &a[i]), 0);
  }
  for (int i = 0; i < T; i++) {
    pthread_join(th[i], NULL);
    assert_int_equal(a[i].failed, 0);
  }
  json_t *c1 = theus_engine_get(E, "domain.c");
  int incs = 0;
  for (int i = 0; i < PER; i++)
    incs += i % 3 != 0;
  assert_int_equal(json_integer_value(c1), before + T * incs);
  json_decref(c1);
}

/* Close finishes a pool job nobody waited for, and the job stays readable. */
static void test_close_finishes_unwaited_jobs(void **state) {
  (void)state;
  theus_engine_config cfg;
  theus_engine_config_init(&cfg);
  cfg.workers = 1;
  theus_engine *e = NULL;
  assert_int_equal(theus_engine_open(&cfg, &e), 0);
  theus_contract c = {.name = "nap_set", .fn = nap_set, .outputs = n_out, .parallel = 1};
  theus_contract l = {.name = "local_nap", .fn = nap_set, .outputs = n_out, .semantic = THEUS_EFFECT};
  theus_contract z = {.name = "nap0", .fn = nothing, .parallel = 1};
  if (theus_engine_register(e, &c) || theus_engine_register(e, &l) || theus_engine_register(e, &z)) {
    theus_engine_close(e);
    fail_msg("register failed");
  }
  theus_job *j = NULL, *k = NULL;
  json_t *a = json_pack("{s:i}", "n", 3);
  int rc = theus_engine_submit(e, "nap_set", a, &j);
  int rc2 = theus_engine_submit(e, "local_nap", a, &k);
  json_decref(a);
  /* more pool jobs than the rings hold (1 x 256), none waited: close must
   * collect queued ones so the deferred ones can be queued, then finish them */
  enum { M = 300 };
  theus_job *many[M];
  int rcs = 0;
  for (int i = 0; i < M; i++)
    rcs |= theus_engine_submit(e, "nap0", NULL, &many[i]);
  theus_engine_close(e);
  assert_int_equal(rc, 0);
  assert_int_equal(rc2, 0);
  assert_int_equal(rcs, 0);
  for (int i = 0; i < M; i++) {
    assert_int_equal(theus_job_wait(many[i], 0, NULL), 0);
    theus_job_release(many[i]);
  }
  assert_int_equal(theus_job_wait(j, 0, NULL), 0);
  assert_int_equal(theus_job_wait(k, 0, NULL), 0);
  assert_true(theus_job_version(j) > 0 && theus_job_version(k) > 0);
  theus_job_release(j);
  theus_job_release(k);
}

static const char *const nested_in[] = {"domain.q.c.f", "domain.q.a.b", "domain.q.c.d.e", "domain.q.g.*",
                                         "domain.q.h", "domain.q.c.d", "domain.q.missing.x", "domain.q.a.b", NULL};

static int echo_nested(theus_ctx *ctx) {
  const char *p[] = {"domain.q.a.b", "domain.q.c.d.e", "domain.q.c.f", "domain.q.g.z", "domain.q.h", "domain.q.c.d.y"};
  json_t *r = json_array();
  for (size_t i = 0; i < 6; i++) {
    const json_t *v = theus_ctx_get(ctx, p[i]);
    json_array_append_new(r, v ? json_deep_copy(v) : json_null());
  }
  theus_ctx_return(ctx, r);
  return 0;
}

/* Nested, overlapping, duplicated and missing domain inputs reach a worker as
 * a local run sees them. */
static void test_nested_inputs_shipped(void **state) {
  (void)state;
  theus_contract c = {.name = "echo_nested", .fn = echo_nested, .inputs = nested_in, .parallel = 1};
  assert_int_equal(theus_engine_register(E, &c), 0);
  json_t *q = json_loads("{\"a\":{\"b\":1,\"x\":2},\"c\":{\"d\":{\"e\":3,\"y\":5},\"f\":[4]},"
                         "\"g\":{\"z\":{\"k\":\"v\"}},\"h\":\"s\"}", 0, NULL);
  assert_non_null(q);
  assert_int_equal(theus_engine_set(E, "domain.q", q), 0);
  json_t *r = NULL;
  assert_int_equal(theus_engine_execute(E, "echo_nested", NULL, &r), 0);
  json_t *want = json_loads("[1, 3, [4], {\"k\":\"v\"}, \"s\", 5]", 0, NULL);
  assert_true(json_equal(r, want));
  json_decref(r);
  json_decref(want);
}

static const char *const deep_out[] = {"domain.out.*", NULL};

/* Writes domain.out.a.b (declared by the pattern) and, with args "long": N,
 * domain.long.<N x's>.leaf (not declared). */
static int deep_writer(theus_ctx *ctx) {
  int rc = theus_ctx_set(ctx, "domain.out.a.b", json_integer(7));
  json_int_t n = json_integer_value(json_object_get(theus_ctx_args(ctx), "long"));
  if (!rc && n > 0 && n < 4000) {
    char path[4100] = "domain.long.";
    memset(path + strlen(path), 'x', (size_t)n);
    strcpy(path + strlen("domain.long.") + n, ".leaf");
    rc = theus_ctx_set(ctx, path, json_true());
  }
  return rc;
}

/* A worker's patch is checked leaf by leaf against the outputs, whatever its
 * depth and however long its paths (past the checker's 2 KiB stack buffer). */
static void test_nested_outputs_checked(void **state) {
  (void)state;
  theus_contract c = {.name = "deep_writer", .fn = deep_writer, .outputs = deep_out, .parallel = 1};
  assert_int_equal(theus_engine_register(E, &c), 0);
  assert_int_equal(theus_engine_execute(E, "deep_writer", NULL, NULL), 0);
  json_t *b = theus_engine_get(E, "domain.out.a.b");
  assert_int_equal(json_integer_value(b), 7);
  json_decref(b);
  uint64_t v = theus_engine_version(E);
  for (int n = 300; n <= 3000; n *= 10) { /* the longer path outgrows the checker's stack buffer */
    json_t *a = json_pack("{s:i}", "long", n);
    assert_int_equal(theus_engine_execute(E, "deep_writer", a, NULL), THEUS_ECONTRACT);
    json_decref(a);
    const char *m = theus_engine_errmsg(E);
    assert_non_null(strstr(m, "undeclared output 'domain.long.xxxxxxxx"));
    if (n == 300) /* the whole path fits the message */
      assert_non_null(strstr(m, "xxx.leaf'"));
    assert_int_equal(theus_engine_version(E), v);
  }
}

/* One thread submits more pool jobs than the rings hold (2 x 256) before
 * waiting for any, then waits for them in order; some are released unwaited. */
static void test_more_jobs_than_ring_slots(void **state) {
  (void)state;
  enum { M = 700 };
  theus_job **j = calloc(M, sizeof *j);
  assert_non_null(j);
  for (int i = 0; i < M; i++)
    assert_int_equal(theus_engine_submit(E, "nothing", NULL, &j[i]), 0);
  for (int i = 0; i < M; i++) {
    if (i % 5 == 4) {
      theus_job_release(j[i]); /* released unfinished (or not yet queued) */
      continue;
    }
    assert_int_equal(theus_job_wait(j[i], -1, NULL), 0);
    theus_job_release(j[i]);
  }
  free(j);
  assert_int_equal(theus_engine_execute(E, "nothing", NULL, NULL), 0);
}

/* The registry's fixed limits give a clear error at registration. */
static void test_registry_limits(void **state) {
  (void)state;
  enum { M = 70 };
  char names[M][24];
  const char *in[M + 1];
  for (int i = 0; i < M; i++) {
    snprintf(names[i], sizeof names[i], "domain.in%d", i);
    in[i] = names[i];
  }
  in[M] = NULL;
  theus_contract c = {.name = "wide", .fn = nothing, .inputs = in, .parallel = 1};
  assert_int_equal(theus_engine_register(E, &c), THEUS_ELIMIT);
  assert_non_null(strstr(theus_engine_errmsg(E), "'wide'"));
  assert_non_null(strstr(theus_engine_errmsg(E), "at most 64"));
  assert_null(theus_engine_contract(E, "wide"));
  in[60] = NULL; /* within the limits: accepted, and runs */
  assert_int_equal(theus_engine_register(E, &c), 0);
  assert_int_equal(theus_engine_execute(E, "wide", NULL, NULL), 0);
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
      cmocka_unit_test(test_map_key),
      cmocka_unit_test(test_job_released_unfinished_commits),
      cmocka_unit_test(test_job_wait_timeout_then_again),
      cmocka_unit_test(test_concurrent_pool_jobs),
      cmocka_unit_test(test_registry_limits),
      cmocka_unit_test(test_more_jobs_than_ring_slots),
      cmocka_unit_test(test_nested_inputs_shipped),
      cmocka_unit_test(test_nested_outputs_checked),
      cmocka_unit_test(test_close_finishes_unwaited_jobs),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
