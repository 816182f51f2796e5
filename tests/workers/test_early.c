/* workers: workers that die before they take a task (a start-up that cannot
 * succeed). The fork server must not wait forever for a worker that never
 * comes: after THEUS__EARLY_DEATHS early deaths in a row the queued tasks fail
 * with the cause, and fewer early deaths only delay the task. Workers are made
 * to die at start-up through prctl(PR_SET_NAME, "theus-worker"), the first
 * thing a worker does, wrapped at link time (-Wl,--wrap=prctl). The pool lives
 * in the cmocka state; teardown stops it with cancel, which reaps every child
 * even when an assertion failed. */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <cmocka.h>

#include "theus/pool.h"

#define THEUS__EARLY_DEATHS_TEST 3 /* THEUS__EARLY_DEATHS (workers/pool_internal.h) */

/* How workers die at start-up, set before the pool forks (inherited): 0 no
 * death; 1 every worker, by _exit(7); 2 by SIGSEGV and 3 by _exit(0) while
 * the counter file (shared memory would not do: the fork server unmaps every
 * writable shared mapping it inherits) holds a positive count, which each
 * death decrements. In modes 2 and 3 a worker first waits for the marker file
 * (made once the task is queued), so the deaths happen with the task queued. */
static int die_mode;
static char count_path[64], marker_path[64];

static int take_death(void) {
  for (int i = 0; i < 10000 && access(marker_path, F_OK); i++) usleep(1000);
  FILE *f = fopen(count_path, "r+");
  int n = 0;
  if (!f) return 0;
  if (fscanf(f, "%d", &n) == 1 && n > 0) {
    rewind(f);
    fprintf(f, "%d\n", n - 1);
  }
  fclose(f);
  return n > 0;
}

static int read_count(void) {
  FILE *f = fopen(count_path, "r");
  int n = -1;
  if (f && fscanf(f, "%d", &n) != 1) n = -1;
  if (f) fclose(f);
  return n;
}

int __real_prctl(int option, ...);
int __wrap_prctl(int option, ...);
int __wrap_prctl(int option, ...) {
  va_list ap;
  va_start(ap, option);
  unsigned long a[4];
  for (int i = 0; i < 4; i++) a[i] = va_arg(ap, unsigned long);
  va_end(ap);
  if (option == PR_SET_NAME && die_mode && !strcmp((const char *)a[0], "theus-worker")) {
    if (die_mode == 1) _exit(7);
    if (take_death()) {
      if (die_mode == 3) _exit(0);
      signal(SIGSEGV, SIG_DFL);
      raise(SIGSEGV);
    }
  }
  return __real_prctl(option, a[0], a[1], a[2], a[3]);
}

static int open_pool(void **state, int mode, int deaths) {
  die_mode = mode;
  FILE *f = fopen(count_path, "w");
  if (!f) return -1;
  fprintf(f, "%d\n", deaths);
  fclose(f);
  theus_pool_config cfg;
  theus_pool_config_init(&cfg);
  cfg.nworkers = 1;
  theus_pool *p = NULL;
  if (theus_pool_open(&cfg, &p) < 0) {
    theus_pool_close(p, 1);
    return -1;
  }
  *state = p;
  return 0;
}

static int setup_always(void **state) { return open_pool(state, 1, 0); }
static int setup_twice(void **state) { return open_pool(state, 2, 2); }
static int setup_exit0(void **state) { return open_pool(state, 3, THEUS__EARLY_DEATHS_TEST + 1); }
static int teardown(void **state) {
  theus_pool_close(*state, 1);
  die_mode = 0;
  unlink(count_path);
  unlink(marker_path);
  return 0;
}

static int t_ok(theus_task *t) {
  int v = 7;
  return theus_task_write(t, &v, sizeof v);
}

/* Submits t_ok, then makes the marker (the deaths of modes 2 and 3 wait for
 * it), and waits for the result. */
static int run_one(theus_pool *p, theus_pool_result *r) {
  theus_task_desc d = {.fn = t_ok};
  theus_ticket tk;
  int rc = theus_pool_submit(p, &d, &tk);
  FILE *m = fopen(marker_path, "w");
  if (m) fclose(m);
  return rc ? rc : theus_pool_wait(p, tk, -1, r);
}

/* Every worker dies at start-up: each task fails, with the cause, and the
 * pool still closes (draining) without waiting for a worker. */
static void always_dies_fails_queued(void **state) {
  theus_pool *p = *state;
  for (int i = 0; i < 2; i++) {
    theus_pool_result r;
    assert_int_equal(run_one(p, &r), 0);
    assert_int_equal(r.status, THEUS_ECRASH);
    assert_int_equal(r.worker, -1);
    assert_non_null(strstr(r.errmsg, "not run: worker 0 died"));
    assert_non_null(strstr(r.errmsg, "times in a row before it could take a task"));
    assert_non_null(strstr(r.errmsg, "exited with status 7 before it took a task"));
    theus_pool_result_release(&r);
  }
  theus_pool_stats st;
  theus_pool_stats_get(p, &st);
  assert_int_equal(st.crashed, 2);
  assert_int_equal(st.completed, 0);
  assert_true(st.respawned >= 2);
  assert_int_equal(theus_pool_close(p, 0), 0); /* drain: nothing left queued */
  *state = NULL;
}

/* Two early deaths (by a signal) while the task is queued, fewer than the
 * limit: the task waits for the third worker and runs on it. */
static void dies_twice_then_runs(void **state) {
  theus_pool *p = *state;
  theus_pool_result r;
  assert_int_equal(run_one(p, &r), 0);
  if (r.status) fprintf(stderr, "errmsg: %s\n", r.errmsg);
  assert_int_equal(r.status, 0);
  assert_int_equal(*(int *)r.data, 7);
  theus_pool_result_release(&r);
  theus_pool_stats st;
  theus_pool_stats_get(p, &st);
  assert_int_equal(st.crashed, 0);
  assert_int_equal(st.respawned, 2);
  assert_int_equal(read_count(), 0); /* both deaths happened */
}

/* Workers that exit 0 before touching a slot do so on purpose (a task wants
 * another sandbox or write window): more of them in a row than the limit
 * are not early deaths, and the task runs on the next worker. */
static void exit0_is_not_an_early_death(void **state) {
  theus_pool *p = *state;
  theus_pool_result r;
  assert_int_equal(run_one(p, &r), 0);
  assert_int_equal(r.status, 0);
  theus_pool_result_release(&r);
  theus_pool_stats st;
  theus_pool_stats_get(p, &st);
  assert_int_equal(st.crashed, 0);
  assert_int_equal(st.respawned, THEUS__EARLY_DEATHS_TEST + 1);
  assert_int_equal(read_count(), 0);
}

int main(void) {
  snprintf(count_path, sizeof count_path, "/tmp/theus-test-early-%d", (int)getpid());
  snprintf(marker_path, sizeof marker_path, "/tmp/theus-test-early-%d.queued", (int)getpid());
  alarm(120); /* a fork server that waits forever would hang the suite */
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(always_dies_fails_queued, setup_always, teardown),
      cmocka_unit_test_setup_teardown(dies_twice_then_runs, setup_twice, teardown),
      cmocka_unit_test_setup_teardown(exit0_is_not_an_early_death, setup_exit0, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
