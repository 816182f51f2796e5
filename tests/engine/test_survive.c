/* engine: retries of pure work after a worker death, poison, effect processes
 * never retried, job cancellation (queued, running in a worker, running
 * locally), the engine cancel flag on a map. One engine per group; the group
 * teardown closes it (and reaps the workers) even on failure. No timing in
 * assertions: tasks that must be running when canceled block until killed. */
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "theus/engine.h"

static theus_engine *E;
static const char *const y_out[] = {"domain.y", NULL};
static const char *const d_in[] = {"heavy.data", NULL};

/* Dies by SIGSEGV on its first run only; then writes y = the attempt. */
static int crash_first(theus_ctx *ctx) {
  if (theus_ctx_attempt(ctx) == 0) raise(SIGSEGV);
  return theus_ctx_set(ctx, "domain.y", json_integer(theus_ctx_attempt(ctx)));
}

static int crash_always(theus_ctx *ctx) {
  (void)ctx;
  raise(SIGSEGV);
  return 0;
}

static int block(theus_ctx *ctx) {
  (void)ctx;
  for (;;) pause();
  return 0;
}

/* A local process that polls its cancel state. */
static atomic_int local_started;
static int polite(theus_ctx *ctx) {
  atomic_store(&local_started, 1);
  while (!theus_ctx_canceled(ctx)) usleep(1000);
  return theus_ctx_set(ctx, "domain.y", json_integer(-1)); /* must not be committed */
}

static int slice_block(theus_ctx *ctx) {
  (void)ctx;
  for (;;) pause();
  return 0;
}

static int setup(void **state) {
  (void)state;
  theus_engine_config cfg;
  theus_engine_config_init(&cfg);
  cfg.workers = 2;
  if (theus_engine_open(&cfg, &E)) return -1;
  theus_contract cs[] = {
      {.name = "crash_first", .fn = crash_first, .outputs = y_out, .parallel = 1},
      {.name = "crash_always", .fn = crash_always, .outputs = y_out, .parallel = 1, .retries = 1},
      {.name = "crash_once_no_retry", .fn = crash_first, .outputs = y_out, .parallel = 1, .retries = -1},
      {.name = "block", .fn = block, .outputs = y_out, .parallel = 1},
      {.name = "polite", .fn = polite, .outputs = y_out, .semantic = THEUS_EFFECT},
      {.name = "slice_block", .fn = slice_block, .inputs = d_in, .parallel = 1},
  };
  for (size_t i = 0; i < sizeof cs / sizeof cs[0]; i++)
    if (theus_engine_register(E, &cs[i])) return -1;
  void *data;
  uint64_t shape[1] = {64};
  if (theus_engine_heavy_alloc(E, "data", THEUS_DTYPE_F64, 1, shape, &data)) return -1;
  memset(data, 0, 64 * sizeof(double));
  json_t *hp = json_pack("{s:b}", "data", 1);
  int rc = theus_engine_cas(E, theus_engine_version(E), NULL, hp, NULL);
  json_decref(hp);
  return rc;
}

static int teardown(void **state) {
  (void)state;
  theus_engine_close(E);
  return 0;
}

static json_int_t pool_stat(const char *k) {
  json_t *s = theus_engine_stats(E);
  json_int_t v = json_integer_value(json_object_get(json_object_get(s, "pool"), k));
  json_decref(s);
  return v;
}

static json_int_t arena_live(void) {
  json_t *s = theus_engine_stats(E);
  json_int_t v = json_integer_value(json_object_get(json_object_get(s, "arena"), "bytes_live"));
  json_decref(s);
  return v;
}

static void test_pure_crash_first_succeeds_on_retry(void **state) {
  (void)state;
  uint64_t v = theus_engine_version(E);
  json_int_t retried = pool_stat("retried");
  assert_int_equal(theus_engine_execute(E, "crash_first", NULL, NULL), 0);
  assert_int_equal(theus_engine_version(E), v + 1);
  theus_snapshot *s;
  theus_engine_snapshot(E, &s);
  assert_int_equal(json_integer_value(json_object_get(theus_snapshot_domain(s), "y")), 1);
  theus_snapshot_release(s);
  assert_int_equal(pool_stat("retried"), retried + 1);
}

static void test_poison_after_retries(void **state) {
  (void)state;
  uint64_t v = theus_engine_version(E);
  assert_int_equal(theus_engine_execute(E, "crash_always", NULL, NULL), THEUS_ECRASH);
  const char *m = theus_engine_errmsg(E);
  print_message("%s\n", m);
  assert_non_null(strstr(m, "process 'crash_always' (parallel): poison: the task killed 2 workers"));
  assert_non_null(strstr(strstr(m, "SIGSEGV") + 1, "SIGSEGV"));
  assert_int_equal(theus_engine_version(E), v);
  assert_true(pool_stat("poisoned") >= 1);
}

static void test_retries_none(void **state) {
  (void)state;
  assert_int_equal(theus_engine_execute(E, "crash_once_no_retry", NULL, NULL), THEUS_ECRASH);
  assert_null(strstr(theus_engine_errmsg(E), "poison"));
  assert_non_null(strstr(theus_engine_errmsg(E), "killed by SIGSEGV"));
}

/* Effect processes are never retried: the contract refuses retries, and
 * their resolved budget is 0. */
static void test_effect_never_retried(void **state) {
  (void)state;
  theus_contract c = {.name = "eff", .fn = polite, .semantic = THEUS_EFFECT, .retries = 2};
  assert_int_equal(theus_engine_register(E, &c), THEUS_EINVAL);
  assert_non_null(strstr(theus_engine_errmsg(E), "never retried"));
  c.retries = 0;
  assert_int_equal(theus_contract_retries(&c), 0);
  theus_contract p = {.name = "p", .fn = polite, .parallel = 1};
  assert_int_equal(theus_contract_retries(&p), THEUS_RETRIES_DEFAULT);
  p.retries = -1;
  assert_int_equal(theus_contract_retries(&p), 0);
  p.retries = 5;
  assert_int_equal(theus_contract_retries(&p), 5);
  theus_contract_doc *d = NULL;
  assert_int_equal(theus_contract_parse("{\"name\":\"x\",\"retries\":3,\"parallel\":true}", "t.json", NULL, NULL, &d),
                   0);
  assert_int_equal(theus_contract_doc_get(d)->retries, 3);
  json_t *j = theus_contract_to_json(theus_contract_doc_get(d));
  assert_int_equal(json_integer_value(json_object_get(j, "retries")), 3);
  json_decref(j);
  theus_contract_doc_release(d);
  assert_int_equal(theus_contract_parse("{\"name\":\"x\",\"retries\":-2}", "t.json", NULL, NULL, &d), THEUS_EPARSE);
  assert_non_null(strstr(theus_contract_doc_errmsg(d), "retries"));
  theus_contract_doc_release(d);
}

/* Three blocking jobs on two workers: two run, one is queued. Cancel all. */
static void test_cancel_pool_jobs(void **state) {
  (void)state;
  uint64_t v = theus_engine_version(E);
  json_int_t live = arena_live();
  theus_job *j[3];
  for (int i = 0; i < 3; i++) assert_int_equal(theus_engine_submit(E, "block", NULL, &j[i]), 0);
  /* let at least one start (a wait that times out leaves the job valid) */
  assert_int_equal(theus_job_wait(j[0], 50, NULL), THEUS_ETIMEDOUT);
  for (int i = 2; i >= 0; i--) assert_int_equal(theus_job_cancel(j[i]), 0);
  for (int i = 0; i < 3; i++) {
    assert_int_equal(theus_job_wait(j[i], -1, NULL), THEUS_ECANCELED);
    assert_non_null(strstr(theus_job_errmsg(j[i]), "cancel"));
    assert_int_equal(theus_job_version(j[i]), 0);
    theus_job_release(j[i]);
  }
  assert_int_equal(theus_engine_version(E), v);
  assert_int_equal(arena_live(), live);
  assert_int_equal(theus_engine_execute(E, "crash_first", NULL, NULL), 0); /* the pool goes on */
}

/* A running local job is canceled cooperatively; one queued behind it never runs. */
static void test_cancel_local_jobs(void **state) {
  (void)state;
  uint64_t v = theus_engine_version(E);
  atomic_store(&local_started, 0);
  theus_job *a, *b;
  assert_int_equal(theus_engine_submit(E, "polite", NULL, &a), 0);
  assert_int_equal(theus_engine_submit(E, "polite", NULL, &b), 0);
  while (!atomic_load(&local_started)) usleep(1000);
  assert_int_equal(theus_job_cancel(b), 0);
  assert_int_equal(theus_job_cancel(a), 0);
  assert_int_equal(theus_job_wait(a, -1, NULL), THEUS_ECANCELED);
  assert_non_null(strstr(theus_job_errmsg(a), "not committed"));
  assert_int_equal(theus_job_wait(b, -1, NULL), THEUS_ECANCELED);
  assert_non_null(strstr(theus_job_errmsg(b), "before it ran"));
  theus_job_release(a);
  theus_job_release(b);
  assert_int_equal(theus_engine_version(E), v);
}

static volatile int cancel_flag;
static void *trip_later(void *arg) {
  (void)arg;
  usleep(50000);
  __atomic_store_n(&cancel_flag, 1, __ATOMIC_SEQ_CST); /* the engine loads it atomically */
  return NULL;
}

/* The engine's cancel flag stops a map whose slices block. */
static void test_cancel_flag_stops_map(void **state) {
  (void)state;
  uint64_t v = theus_engine_version(E);
  json_int_t live = arena_live();
  cancel_flag = 0;
  theus_engine_set_cancel(E, &cancel_flag);
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, trip_later, NULL), 0);
  json_t *r = NULL;
  assert_int_equal(theus_engine_map(E, "slice_block", "data", 8, "sum", NULL, &r), THEUS_ECANCELED);
  pthread_join(th, NULL);
  assert_null(r);
  /* while the flag stays set, nothing runs or commits */
  assert_int_equal(theus_engine_execute(E, "crash_first", NULL, NULL), THEUS_ECANCELED);
  theus_engine_set_cancel(E, NULL);
  assert_int_equal(theus_engine_version(E), v);
  assert_int_equal(arena_live(), live);
  assert_int_equal(theus_engine_execute(E, "crash_first", NULL, NULL), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_pure_crash_first_succeeds_on_retry),
      cmocka_unit_test(test_poison_after_retries),
      cmocka_unit_test(test_retries_none),
      cmocka_unit_test(test_effect_never_retried),
      cmocka_unit_test(test_cancel_pool_jobs),
      cmocka_unit_test(test_cancel_local_jobs),
      cmocka_unit_test(test_cancel_flag_stops_map),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
