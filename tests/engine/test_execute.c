/* engine/execute (local runs): registry, ctx rules, failures commit nothing,
 * concurrent counters, jobs, trace hook. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "theus/engine.h"

static const char *const counter_io[] = {"domain.counter", NULL};

static int inc(theus_ctx *ctx) {
  const json_t *v = theus_ctx_get(ctx, "domain.counter");
  return theus_ctx_set(ctx, "domain.counter", json_integer(json_integer_value(v) + 1));
}

static int fails_after_write(theus_ctx *ctx) {
  theus_ctx_set(ctx, "domain.counter", json_integer(999));
  return theus_ctx_fail(ctx, "disk on fire (code %d)", 7);
}

static int returns_nonzero(theus_ctx *ctx) {
  theus_ctx_set(ctx, "domain.counter", json_integer(999));
  return 5;
}

static int reads_secret(theus_ctx *ctx) {
  const json_t *s = theus_ctx_get(ctx, "domain.secret");
  theus_ctx_set(ctx, "domain.counter", json_integer(s ? 1 : 2));
  return 0;
}

static int writes_undeclared(theus_ctx *ctx) {
  theus_ctx_set(ctx, "domain.counter", json_integer(1));
  theus_ctx_set(ctx, "domain.other", json_integer(1));
  return 0;
}

static int raises(theus_ctx *ctx) {
  const json_t *which = json_object_get(theus_ctx_args(ctx), "name");
  return theus_ctx_raise(ctx, json_string_value(which), "value %d out of range", 42);
}

static int echo(theus_ctx *ctx) {
  theus_ctx_return(ctx, json_deep_copy(theus_ctx_args(ctx)));
  return 0;
}

static int make_array(theus_ctx *ctx) {
  uint64_t shape[1] = {256};
  uint8_t *d;
  int rc = theus_ctx_heavy_alloc(ctx, "made", THEUS_DTYPE_U8, 1, shape, (void **)&d);
  if (rc)
    return rc;
  memset(d, 7, 256);
  if (json_is_true(json_object_get(theus_ctx_args(ctx), "fail")))
    return theus_ctx_fail(ctx, "asked to fail");
  return 0;
}

static int write_a(theus_ctx *ctx) { return theus_ctx_set(ctx, "domain.a", json_integer(1)); }
static int write_b(theus_ctx *ctx) { return theus_ctx_set(ctx, "domain.b", json_integer(2)); }

static theus_engine *open_engine(int strict) {
  theus_engine_config cfg;
  theus_engine_config_init(&cfg);
  cfg.workers = -1;
  cfg.strict = strict;
  json_t *d = json_pack("{s:i, s:s}", "counter", 0, "secret", "s3cr3t");
  cfg.domain = d;
  theus_engine *e;
  assert_int_equal(theus_engine_open(&cfg, &e), 0);
  json_decref(d);
  static const char *const none[] = {NULL};
  static const char *const errs[] = {"E_RANGE", NULL};
  static const char *const ab_out[] = {"domain.a", "domain.b", NULL};
  static const char *const made[] = {"heavy.made", NULL};
  theus_contract cs[] = {
      {.name = "inc", .fn = inc, .inputs = counter_io, .outputs = counter_io},
      {.name = "fail", .fn = fails_after_write, .outputs = counter_io, .semantic = THEUS_EFFECT},
      {.name = "nonzero", .fn = returns_nonzero, .outputs = counter_io},
      {.name = "peek", .fn = reads_secret, .inputs = counter_io, .outputs = counter_io},
      {.name = "peek_effect", .fn = reads_secret, .outputs = counter_io, .semantic = THEUS_EFFECT},
      {.name = "sneaky", .fn = writes_undeclared, .outputs = counter_io},
      {.name = "raises", .fn = raises, .errors = errs, .inputs = none},
      {.name = "echo", .fn = echo},
      {.name = "make", .fn = make_array, .outputs = made, .semantic = THEUS_EFFECT},
      {.name = "write_a", .fn = write_a, .outputs = ab_out},
      {.name = "write_b", .fn = write_b, .outputs = ab_out},
  };
  for (size_t i = 0; i < sizeof cs / sizeof cs[0]; i++)
    assert_int_equal(theus_engine_register(e, &cs[i]), 0);
  return e;
}

static json_int_t counter(theus_engine *e) {
  json_t *v = theus_engine_get(e, "domain.counter");
  json_int_t x = json_integer_value(v);
  json_decref(v);
  return x;
}

static void test_registry(void **state) {
  (void)state;
  theus_engine *e = open_engine(0);
  theus_contract dup = {.name = "inc", .fn = inc};
  assert_int_equal(theus_engine_register(e, &dup), THEUS_EEXIST);
  assert_non_null(strstr(theus_engine_errmsg(e), "'inc'"));
  const char *bad[] = {"domain.ok", "nodomain", NULL};
  theus_contract b = {.name = "bad", .fn = inc, .outputs = bad};
  assert_int_equal(theus_engine_register(e, &b), THEUS_EINVAL);
  assert_non_null(strstr(theus_engine_errmsg(e), "outputs[1]"));
  assert_int_equal(theus_engine_register_json(e, "{\"name\": \"j\", \"inputs\": [\"domain.x\"]}", "j.json", NULL,
                                              NULL),
                   THEUS_EINVAL); /* no fn */
  assert_non_null(theus_engine_contract(e, "inc"));
  assert_null(theus_engine_contract(e, "nope"));
  assert_int_equal(theus_engine_execute(e, "nope", NULL, NULL), THEUS_ENOTFOUND);
  assert_non_null(strstr(theus_engine_errmsg(e), "'nope'"));
  assert_null(strstr(theus_engine_errmsg(e), "did you mean")); /* nothing close */
  /* "did you mean" (issue 15 item 7): the closest registered name, if close */
  assert_string_equal(theus_engine_process_near(e, "ehco"), "echo");
  assert_string_equal(theus_engine_process_near(e, "WRITE_A"), "write_a");
  assert_string_equal(theus_engine_process_near(e, "peek_efect"), "peek_effect");
  assert_null(theus_engine_process_near(e, "echo")); /* registered */
  assert_null(theus_engine_process_near(e, "zzzzzz"));
  assert_null(theus_engine_process_near(e, NULL));
  assert_int_equal(theus_engine_execute(e, "inc_", NULL, NULL), THEUS_ENOTFOUND);
  assert_non_null(strstr(theus_engine_errmsg(e), "no process named 'inc_' is registered; did you mean 'inc'?"));
  theus_engine_close(e);
}

static void test_execute_commits(void **state) {
  (void)state;
  theus_engine *e = open_engine(0);
  assert_int_equal(theus_engine_execute(e, "inc", NULL, NULL), 0);
  assert_int_equal(theus_engine_execute(e, "inc", NULL, NULL), 0);
  assert_int_equal(counter(e), 2);
  assert_int_equal(theus_engine_version(e), 3);
  json_t *args = json_pack("{s:i}", "k", 5), *res = NULL;
  assert_int_equal(theus_engine_execute(e, "echo", args, &res), 0);
  assert_true(json_equal(args, res));
  assert_int_equal(theus_engine_version(e), 3); /* nothing written, no version */
  json_decref(args);
  json_decref(res);
  theus_engine_close(e);
}

static void test_failure_commits_nothing(void **state) {
  (void)state;
  theus_engine *e = open_engine(0);
  assert_int_equal(theus_engine_execute(e, "inc", NULL, NULL), 0);
  theus_snapshot *before;
  theus_engine_snapshot(e, &before);
  char *dump = json_dumps(theus_snapshot_domain(before), JSON_SORT_KEYS);
  assert_int_equal(theus_engine_execute(e, "fail", NULL, NULL), THEUS_EPROCESS);
  assert_non_null(strstr(theus_engine_errmsg(e), "disk on fire (code 7)"));
  assert_int_equal(theus_engine_execute(e, "nonzero", NULL, NULL), THEUS_EPROCESS);
  assert_non_null(strstr(theus_engine_errmsg(e), "returned 5"));
  assert_int_equal(theus_engine_version(e), theus_snapshot_version(before));
  theus_snapshot *after;
  theus_engine_snapshot(e, &after);
  char *dump2 = json_dumps(theus_snapshot_domain(after), JSON_SORT_KEYS);
  assert_string_equal(dump, dump2);
  free(dump);
  free(dump2);
  theus_snapshot_release(before);
  theus_snapshot_release(after);
  theus_engine_close(e);
}

static void test_contract_rules(void **state) {
  (void)state;
  theus_engine *e = open_engine(0);
  uint64_t v = theus_engine_version(e);
  assert_int_equal(theus_engine_execute(e, "peek", NULL, NULL), THEUS_ECONTRACT);
  assert_non_null(strstr(theus_engine_errmsg(e), "undeclared input 'domain.secret'"));
  assert_int_equal(theus_engine_execute(e, "sneaky", NULL, NULL), THEUS_ECONTRACT);
  assert_non_null(strstr(theus_engine_errmsg(e), "domain.other"));
  assert_int_equal(theus_engine_version(e), v);
  assert_int_equal(counter(e), 0);
  /* an effect process may read what it did not declare */
  assert_int_equal(theus_engine_execute(e, "peek_effect", NULL, NULL), 0);
  assert_int_equal(counter(e), 1);
  json_t *a = json_pack("{s:s}", "name", "E_RANGE");
  assert_int_equal(theus_engine_execute(e, "raises", a, NULL), THEUS_EPROCESS);
  assert_non_null(strstr(theus_engine_errmsg(e), "E_RANGE: value 42 out of range"));
  json_decref(a);
  a = json_pack("{s:s}", "name", "E_OTHER");
  assert_int_equal(theus_engine_execute(e, "raises", a, NULL), THEUS_ECONTRACT);
  json_decref(a);
  theus_engine_close(e);
}

static void test_ctx_heavy_output(void **state) {
  (void)state;
  theus_engine *e = open_engine(0);
  theus_arena_stats st0, st1;
  theus_arena_stats_get(theus_engine_arena(e), &st0);
  json_t *fail = json_pack("{s:b}", "fail", 1);
  assert_int_equal(theus_engine_execute(e, "make", fail, NULL), THEUS_EPROCESS);
  json_decref(fail);
  theus_arena_stats_get(theus_engine_arena(e), &st1);
  assert_int_equal(st1.bytes_live, st0.bytes_live); /* the draft was freed */
  assert_int_equal(theus_engine_execute(e, "make", NULL, NULL), 0);
  theus_snapshot *s;
  theus_engine_snapshot(e, &s);
  theus_array_info ai;
  assert_int_equal(theus_snapshot_heavy(s, "made", &ai), 0);
  assert_int_equal(((const uint8_t *)ai.data)[255], 7);
  theus_snapshot_release(s);
  theus_engine_close(e);
}

typedef struct worker_arg {
  theus_engine *e;
  int rc;
} worker_arg;

static void *run_inc(void *p) {
  worker_arg *w = p;
  w->rc = theus_engine_execute(w->e, "inc", NULL, NULL);
  return NULL;
}

static void test_concurrent_counter(void **state) {
  (void)state;
  const int ns[] = {2, 3, 16};
  for (int strict = 0; strict <= 1; strict++)
    for (size_t k = 0; k < 3; k++) {
      theus_engine *e = open_engine(strict);
      pthread_t th[16];
      worker_arg wa[16];
      for (int i = 0; i < ns[k]; i++) {
        wa[i] = (worker_arg){e, -1};
        assert_int_equal(pthread_create(&th[i], NULL, run_inc, &wa[i]), 0);
      }
      for (int i = 0; i < ns[k]; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(wa[i].rc, 0);
      }
      assert_int_equal(counter(e), ns[k]);
      assert_int_equal(theus_engine_version(e), 1 + (uint64_t)ns[k]);
      theus_engine_close(e);
    }
}

static void test_disjoint_processes_both_survive(void **state) {
  (void)state;
  theus_engine *e = open_engine(0);
  theus_job *a, *b;
  uint64_t v0 = theus_engine_version(e);
  assert_int_equal(theus_engine_submit(e, "write_a", NULL, &a), 0);
  assert_int_equal(theus_engine_submit(e, "write_b", NULL, &b), 0);
  assert_int_equal(theus_job_wait(a, -1, NULL), 0);
  assert_int_equal(theus_job_wait(b, 5000, NULL), 0);
  assert_true(theus_job_version(a) > v0);
  theus_job_release(a);
  theus_job_release(b);
  assert_int_equal(theus_engine_version(e), v0 + 2);
  json_t *va = theus_engine_get(e, "domain.a"), *vb = theus_engine_get(e, "domain.b");
  assert_int_equal(json_integer_value(va), 1);
  assert_int_equal(json_integer_value(vb), 2);
  json_decref(va);
  json_decref(vb);
  theus_engine_close(e);
}

static void *waiter(void *p) {
  theus_job *j = p;
  json_t *r = NULL;
  intptr_t rc = theus_job_wait(j, -1, &r);
  json_decref(r);
  return (void *)rc;
}

static void test_jobs_from_other_threads(void **state) {
  (void)state;
  theus_engine *e = open_engine(0);
  theus_job *j;
  assert_int_equal(theus_engine_submit(e, "fail", NULL, &j), 0);
  pthread_t th;
  pthread_create(&th, NULL, waiter, j);
  void *rc;
  pthread_join(th, &rc);
  assert_int_equal((intptr_t)rc, THEUS_EPROCESS);
  assert_non_null(strstr(theus_job_errmsg(j), "disk on fire"));
  assert_int_equal(theus_job_version(j), 0);
  theus_job_release(j);
  assert_int_equal(theus_engine_submit(e, "nope", NULL, &j), THEUS_ENOTFOUND);
  assert_null(j);
  theus_engine_close(e);
}

typedef struct trace_log {
  int n;
  char last[32];
  int status;
} trace_log;

static void on_trace(const theus_trace_event *ev, void *ud) {
  trace_log *t = ud;
  t->n++;
  snprintf(t->last, sizeof t->last, "%s", ev->process);
  t->status = ev->status;
  assert_true(ev->end_ns >= ev->start_ns);
  assert_int_equal(ev->worker, -1);
}

static void test_trace_and_stats(void **state) {
  (void)state;
  theus_engine *e = open_engine(0);
  trace_log t = {0};
  theus_engine_set_trace(e, on_trace, &t);
  theus_engine_execute(e, "inc", NULL, NULL);
  theus_engine_execute(e, "fail", NULL, NULL);
  assert_int_equal(t.n, 2);
  assert_string_equal(t.last, "fail");
  assert_int_equal(t.status, THEUS_EPROCESS);
  json_t *s = theus_engine_stats(e);
  assert_int_equal(json_integer_value(json_object_get(json_object_get(s, "engine"), "executions")), 2);
  assert_int_equal(json_integer_value(json_object_get(json_object_get(s, "engine"), "failures")), 1);
  assert_non_null(json_object_get(json_object_get(s, "arena"), "bytes_live"));
  json_decref(s);
  theus_engine_close(e);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_registry),
      cmocka_unit_test(test_execute_commits),
      cmocka_unit_test(test_failure_commits_nothing),
      cmocka_unit_test(test_contract_rules),
      cmocka_unit_test(test_ctx_heavy_output),
      cmocka_unit_test(test_concurrent_counter),
      cmocka_unit_test(test_disjoint_processes_both_survive),
      cmocka_unit_test(test_jobs_from_other_threads),
      cmocka_unit_test(test_trace_and_stats),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
