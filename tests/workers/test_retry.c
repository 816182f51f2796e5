/* workers: retries after a worker death (theus_task_desc.retries) and
 * cancellation of a ticket (theus_pool_cancel), queued and running. The pool
 * lives in the cmocka state; teardown stops it with cancel, which reaps every
 * child even when an assertion failed. No timing in assertions: tasks that
 * must still be running when canceled block until killed. */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "theus/pool.h"

static theus_pool *open_pool(unsigned n) {
  theus_pool_config cfg;
  theus_pool_config_init(&cfg);
  cfg.nworkers = n;
  theus_pool *p = NULL;
  if (theus_pool_open(&cfg, &p) < 0) {
    theus_pool_close(p, 1);
    return NULL;
  }
  return p;
}

static int setup1(void **state) { return (*state = open_pool(1)) ? 0 : -1; }
static int setup2(void **state) { return (*state = open_pool(2)) ? 0 : -1; }
static int teardown(void **state) {
  theus_pool_close(*state, 1);
  return 0;
}

/* Crashes on its first run only. */
static int t_crash_first(theus_task *t) {
  if (theus_task_attempt(t) == 0) raise(SIGSEGV);
  unsigned a = theus_task_attempt(t);
  return theus_task_write(t, &a, sizeof a);
}

static int t_crash_always(theus_task *t) {
  (void)t;
  raise(SIGSEGV);
  return 0;
}

static int t_exit(theus_task *t) {
  (void)t;
  _exit(3);
  return 0;
}

static int t_ok(theus_task *t) {
  int v = 7;
  return theus_task_write(t, &v, sizeof v);
}

/* Blocks until its worker is killed. */
static int t_block(theus_task *t) {
  (void)t;
  for (;;) pause();
  return 0;
}

static int run_one(theus_pool *p, theus_task_fn fn, unsigned retries, theus_pool_result *r) {
  theus_task_desc d = {.fn = fn, .retries = retries};
  theus_ticket tk;
  int rc = theus_pool_submit(p, &d, &tk);
  if (rc) return rc;
  return theus_pool_wait(p, tk, -1, r);
}

static void crash_then_success(void **state) {
  theus_pool *p = *state;
  theus_pool_result r;
  assert_int_equal(run_one(p, t_crash_first, 2, &r), 0);
  assert_int_equal(r.status, 0);
  assert_int_equal(r.len, sizeof(unsigned));
  assert_int_equal(*(unsigned *)r.data, 1); /* it ran a second time, on a fresh worker */
  theus_pool_result_release(&r);
  theus_pool_stats st;
  theus_pool_stats_get(p, &st);
  assert_int_equal(st.retried, 1);
  assert_int_equal(st.poisoned, 0);
  assert_true(st.respawned >= 1);
}

static void no_retries_no_rerun(void **state) {
  theus_pool *p = *state;
  theus_pool_result r;
  assert_int_equal(run_one(p, t_crash_first, 0, &r), 0);
  assert_int_equal(r.status, THEUS_ECRASH);
  assert_non_null(strstr(r.errmsg, "killed by SIGSEGV"));
  assert_null(strstr(r.errmsg, "poison"));
  theus_pool_stats st;
  theus_pool_stats_get(p, &st);
  assert_int_equal(st.retried, 0);
  assert_int_equal(run_one(p, t_ok, 0, &r), 0); /* the pool goes on */
  assert_int_equal(r.status, 0);
  theus_pool_result_release(&r);
}

static void poison_after_retries(void **state) {
  theus_pool *p = *state;
  theus_pool_result r;
  assert_int_equal(run_one(p, t_crash_always, 2, &r), 0);
  assert_int_equal(r.status, THEUS_ECRASH);
  print_message("poison message: %s\n", r.errmsg);
  assert_true(strncmp(r.errmsg, "poison: the task killed 3 workers", 33) == 0);
  int n = 0;
  for (const char *q = r.errmsg; (q = strstr(q, "killed by SIGSEGV")); q++) n++;
  assert_int_equal(n, 3);
  theus_pool_stats st;
  theus_pool_stats_get(p, &st);
  assert_int_equal(st.retried, 2);
  assert_int_equal(st.poisoned, 1);
  assert_int_equal(run_one(p, t_exit, 1, &r), 0); /* exits are deaths too */
  assert_int_equal(r.status, THEUS_ECRASH);
  assert_non_null(strstr(r.errmsg, "killed 2 workers"));
  assert_non_null(strstr(r.errmsg, "exited with status 3"));
  assert_int_equal(run_one(p, t_ok, 0, &r), 0);
  assert_int_equal(r.status, 0);
  theus_pool_result_release(&r);
}

/* One worker: a blocking task runs, two more wait behind it. */
static void cancel_queued_and_running(void **state) {
  theus_pool *p = *state;
  theus_task_desc blk = {.fn = t_block}, ok = {.fn = t_ok};
  theus_ticket t0, t1, t2;
  assert_int_equal(theus_pool_submit(p, &blk, &t0), 0);
  assert_int_equal(theus_pool_submit(p, &ok, &t1), 0);
  assert_int_equal(theus_pool_submit(p, &ok, &t2), 0);
  theus_pool_result r;
  assert_int_equal(theus_pool_cancel(p, t1), 0); /* queued: dropped without running */
  assert_int_equal(theus_pool_wait(p, t1, -1, &r), 0);
  assert_int_equal(r.status, THEUS_ECANCELED);
  assert_int_equal(r.worker, -1);
  assert_non_null(strstr(r.errmsg, "canceled before it ran"));
  assert_int_equal(theus_pool_cancel(p, t1), THEUS_ENOTFOUND); /* collected */
  /* the blocking task: wait until it runs, then cancel it */
  while (theus_pool_wait(p, t0, 10, &r) == THEUS_ETIMEDOUT) {
    int pid = theus_pool_worker_pid(p, 0);
    (void)pid;
    assert_int_equal(theus_pool_cancel(p, t0), 0);
  }
  assert_int_equal(r.status, THEUS_ECANCELED);
  assert_non_null(strstr(r.errmsg, "canceled while worker 0"));
  /* the task behind them runs on the fresh worker */
  assert_int_equal(theus_pool_wait(p, t2, -1, &r), 0);
  assert_int_equal(r.status, 0);
  theus_pool_result_release(&r);
  theus_pool_stats st;
  theus_pool_stats_get(p, &st);
  assert_int_equal(st.canceled, 2);
  assert_int_equal(st.completed, 1);
}

/* A canceled map returns THEUS_ECANCELED and leaves the pool usable. */
static void cancel_map(void **state) {
  theus_pool *p = *state;
  volatile int flag = 0;
  int status[64];
  theus_map_desc m = {.fn = t_block, .count = 64, .chunk = 1, .status = status, .cancel = &flag};
  flag = 1; /* canceled from the start: nothing is submitted */
  size_t nfailed = 0;
  assert_int_equal(theus_pool_map(p, &m, &nfailed), THEUS_ECANCELED);
  assert_int_equal(nfailed, 64);
  theus_pool_result r;
  assert_int_equal(run_one(p, t_ok, 0, &r), 0);
  assert_int_equal(r.status, 0);
  theus_pool_result_release(&r);
}

static volatile int map_flag;
static void *set_flag_later(void *arg) {
  theus_pool *p = arg;
  /* cancel once both workers run a blocking chunk */
  for (;;) {
    theus_pool_stats st;
    theus_pool_stats_get(p, &st);
    if (st.workers[0].pid && st.workers[1].pid) break;
  }
  usleep(20000);
  __atomic_store_n(&map_flag, 1, __ATOMIC_RELEASE);
  return NULL;
}

#include <pthread.h>
static void cancel_map_running(void **state) {
  theus_pool *p = *state;
  int status[8];
  map_flag = 0;
  theus_map_desc m = {.fn = t_block, .count = 8, .chunk = 1, .status = status, .cancel = &map_flag};
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, set_flag_later, p), 0);
  size_t nfailed = 0;
  assert_int_equal(theus_pool_map(p, &m, &nfailed), THEUS_ECANCELED);
  pthread_join(th, NULL);
  assert_int_equal(nfailed, 8);
  theus_pool_result r;
  assert_int_equal(run_one(p, t_ok, 0, &r), 0);
  assert_int_equal(r.status, 0);
  theus_pool_result_release(&r);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(crash_then_success, setup2, teardown),
      cmocka_unit_test_setup_teardown(no_retries_no_rerun, setup2, teardown),
      cmocka_unit_test_setup_teardown(poison_after_retries, setup2, teardown),
      cmocka_unit_test_setup_teardown(cancel_queued_and_running, setup1, teardown),
      cmocka_unit_test_setup_teardown(cancel_map, setup2, teardown),
      cmocka_unit_test_setup_teardown(cancel_map_running, setup2, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
