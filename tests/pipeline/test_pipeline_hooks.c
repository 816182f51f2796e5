/* pipeline: a host running parallel steps (theus_pipeline_on_parallel, what
 * the cluster layer uses): start gets the members in file order, finish is
 * called for each in order, each member's "into" is stored from the result
 * the host gives, the first failing member in file order fails the step,
 * a member that could not start ends the list, the operation budget cuts it,
 * and ops NULL gives the engine's submit and wait back. A host running run
 * steps (theus_pipeline_on_run) gets each as a group of one member, charged
 * one operation, its failure naming the step; parallel steps and run steps
 * that fill an array stay the engine's. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "pipeline_fixture.h"

#include "theus/theus.h"

/* The start of both pipelines: budget, domain, two processes. */
#define HEAD \
    "{\"workers\": -1, \"budget\": %d, \"domain\": {\"a\": -3, \"b\": -5},\n" \
    " \"processes\": [\n" \
    "  {\"name\": \"abs_a\", \"symbol\": \"labs\", \"signature\": \"i64(i64)\", \"args\": [\"domain.a\"],\n" \
    "   \"outputs\": [\"domain.pa\"], \"parallel\": false},\n" \
    "  {\"name\": \"abs_b\", \"symbol\": \"labs\", \"signature\": \"i64(i64)\", \"args\": [\"domain.b\"],\n" \
    "   \"outputs\": [\"domain.pb\"], \"parallel\": false}],\n"

static const char *const PIPE =
    HEAD
    " \"steps\": [{\"parallel\": [{\"run\": \"abs_a\", \"into\": \"domain.ia\"},\n"
    "                           {\"run\": \"abs_b\", \"args\": {\"k\": 1}, \"into\": \"domain.ib\"},\n"
    "                           {\"run\": \"abs_a\", \"into\": \"domain.ic\"}]}]}\n";

static const char *const PIPE_RUN =
    HEAD
    " \"steps\": [{\"run\": \"abs_a\", \"into\": \"domain.ra\"},\n"
    "           {\"parallel\": [{\"run\": \"abs_b\", \"into\": \"domain.ib\"}]},\n"
    "           {\"run\": \"abs_a\", \"args\": {\"k\": 1}, \"into\": \"domain.rb\"}]}\n";

/* What the host saw, and how it answers. */
typedef struct host {
  char log[256];   /* "s:abs_a,abs_b,abs_a;f0;f1;f2;" */
  size_t started;  /* start returns this (capped at n) */
  int fail_at;     /* finish of this member fails (-1: none) */
} host;

static void logf_(host *h, const char *fmt, ...) {
  size_t at = strlen(h->log);
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(h->log + at, sizeof h->log - at, fmt, ap);
  va_end(ap);
}

static size_t start(theus_engine *e, theus_pipeline_call *calls, size_t n, void *ud) {
  host *h = ud;
  (void)e;
  logf_(h, "s:");
  for (size_t i = 0; i < n; i++)
    logf_(h, "%s%s%s", calls[i].process, calls[i].args ? "+args" : "", i + 1 < n ? "," : ";");
  size_t k = h->started < n ? h->started : n;
  if (k < n) {
    calls[k].rc = THEUS_EINVAL;
    snprintf(calls[k].msg, sizeof calls[k].msg, "the host cannot start it");
  }
  return k;
}

static void finish(theus_engine *e, theus_pipeline_call *calls, size_t i, void *ud) {
  host *h = ud;
  (void)e;
  logf_(h, "f%zu;", i);
  if ((int)i == h->fail_at) {
    calls[i].rc = THEUS_EPROCESS;
    snprintf(calls[i].msg, sizeof calls[i].msg, "the host says no");
    return;
  }
  calls[i].result = json_integer(100 + (json_int_t)i); /* ran elsewhere: only this comes back */
}

static const theus_pipeline_parallel_ops OPS = {start, finish};

static int setup(void **state) { return fixture_setup(state, "hooks"); }

static int teardown(void **state) { return fixture_teardown(state); }

/* Runs pipeline `fmt` (operation budget `budget`) with the host's ops for
 * its parallel steps (h NULL: the engine's) or, run_steps set, for its run
 * steps; returns the run's code, *dom the final domain. */
static int run_with(fixture *f, const char *fmt, int budget, host *h, bool run_steps, json_t **dom, char *err,
                    size_t errlen) {
  FILE *fp = fopen(f->path, "w");
  assert_non_null(fp);
  fprintf(fp, fmt, budget);
  fclose(fp);
  theus_pipeline *p;
  assert_int_equal(theus_pipeline_load(f->path, &p), 0);
  theus_engine *e;
  assert_int_equal(theus_pipeline_open_engine(p, NULL, &e), 0);
  if (run_steps) theus_pipeline_on_run(p, h ? &OPS : NULL, h);
  else theus_pipeline_on_parallel(p, h ? &OPS : NULL, h);
  int rc = theus_pipeline_run(p, e);
  snprintf(err, errlen, "%s", theus_pipeline_errmsg(p));
  theus_snapshot *snap;
  assert_int_equal(theus_engine_snapshot(e, &snap), 0);
  *dom = json_deep_copy(theus_snapshot_domain(snap));
  theus_snapshot_release(snap);
  theus_engine_close(e);
  theus_pipeline_close(p);
  return rc;
}

static int run(fixture *f, int budget, host *h, json_t **dom, char *err, size_t errlen) {
  return run_with(f, PIPE, budget, h, false, dom, err, errlen);
}

static json_int_t at(const json_t *dom, const char *k) { return json_integer_value(json_object_get(dom, k)); }

static void test_host_runs_members_in_order(void **state) {
  host h = {"", 3, -1};
  json_t *dom;
  char err[1024];
  assert_int_equal(run(*state, 100, &h, &dom, err, sizeof err), 0);
  assert_string_equal(h.log, "s:abs_a,abs_b+args,abs_a;f0;f1;f2;");
  /* the intos come from the host's results; the processes never ran here */
  assert_int_equal(at(dom, "ia"), 100);
  assert_int_equal(at(dom, "ib"), 101);
  assert_int_equal(at(dom, "ic"), 102);
  assert_null(json_object_get(dom, "pa"));
  json_decref(dom);
}

static void test_first_failure_in_file_order(void **state) {
  host h = {"", 3, 1};
  json_t *dom;
  char err[1024];
  assert_int_equal(run(*state, 100, &h, &dom, err, sizeof err), THEUS_EPROCESS);
  assert_string_equal(h.log, "s:abs_a,abs_b+args,abs_a;f0;f1;f2;"); /* member 2 still finished */
  assert_non_null(strstr(err, "steps[0].parallel[1]"));
  assert_non_null(strstr(err, "the host says no"));
  assert_int_equal(at(dom, "ia"), 100);
  assert_null(json_object_get(dom, "ib"));
  assert_int_equal(at(dom, "ic"), 102); /* each member commits on its own */
  json_decref(dom);
}

static void test_member_that_cannot_start(void **state) {
  host h = {"", 1, -1};
  json_t *dom;
  char err[1024];
  assert_int_equal(run(*state, 100, &h, &dom, err, sizeof err), THEUS_EINVAL);
  assert_string_equal(h.log, "s:abs_a,abs_b+args,abs_a;f0;");
  assert_non_null(strstr(err, "steps[0].parallel[1]"));
  assert_non_null(strstr(err, "the host cannot start it"));
  assert_int_equal(at(dom, "ia"), 100);
  assert_null(json_object_get(dom, "ic"));
  json_decref(dom);
}

static void test_budget_cuts_the_list(void **state) {
  host h = {"", 3, -1};
  json_t *dom;
  char err[1024];
  assert_int_equal(run(*state, 2, &h, &dom, err, sizeof err), THEUS_ELIMIT);
  assert_string_equal(h.log, "s:abs_a,abs_b+args;f0;f1;");
  assert_non_null(strstr(err, "budget"));
  json_decref(dom);
}

static void test_ops_null_is_the_engine(void **state) {
  json_t *dom;
  char err[1024];
  assert_int_equal(run(*state, 100, NULL, &dom, err, sizeof err), 0);
  assert_int_equal(at(dom, "pa"), 3);
  assert_int_equal(at(dom, "pb"), 5);
  assert_int_equal(at(dom, "ia"), 3);
  assert_int_equal(at(dom, "ib"), 5);
  json_decref(dom);
}

static void test_host_runs_run_steps(void **state) {
  host h = {"", 1, -1};
  json_t *dom;
  char err[1024];
  assert_int_equal(run_with(*state, PIPE_RUN, 100, &h, true, &dom, err, sizeof err), 0);
  assert_string_equal(h.log, "s:abs_a;f0;s:abs_a+args;f0;"); /* one group of one per run step */
  assert_int_equal(at(dom, "ra"), 100);
  assert_int_equal(at(dom, "rb"), 100);
  assert_null(json_object_get(dom, "pa")); /* the host ran them */
  assert_int_equal(at(dom, "pb"), 5);      /* the parallel step stayed the engine's */
  assert_int_equal(at(dom, "ib"), 5);
  json_decref(dom);
}

static void test_run_step_failure_names_the_step(void **state) {
  host h = {"", 1, 0};
  json_t *dom;
  char err[1024];
  assert_int_equal(run_with(*state, PIPE_RUN, 100, &h, true, &dom, err, sizeof err), THEUS_EPROCESS);
  assert_string_equal(h.log, "s:abs_a;f0;");
  assert_non_null(strstr(err, "step steps[0] (run \"abs_a\") failed"));
  assert_non_null(strstr(err, "the host says no"));
  assert_null(json_object_get(dom, "ra"));
  assert_null(json_object_get(dom, "pb")); /* the run stopped there */
  json_decref(dom);
}

static void test_run_step_charged_once(void **state) {
  host h = {"", 1, -1};
  json_t *dom;
  char err[1024];
  /* budget 1: the first run step takes it, the parallel member finds none */
  assert_int_equal(run_with(*state, PIPE_RUN, 1, &h, true, &dom, err, sizeof err), THEUS_ELIMIT);
  assert_string_equal(h.log, "s:abs_a;f0;");
  assert_int_equal(at(dom, "ra"), 100);
  assert_non_null(strstr(err, "steps[1].parallel[0]"));
  json_decref(dom);
}

static void test_run_ops_null_is_execute(void **state) {
  json_t *dom;
  char err[1024];
  assert_int_equal(run_with(*state, PIPE_RUN, 100, NULL, true, &dom, err, sizeof err), 0);
  assert_int_equal(at(dom, "ra"), 3);
  assert_int_equal(at(dom, "rb"), 3);
  assert_int_equal(at(dom, "pa"), 3);
  json_decref(dom);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_host_runs_members_in_order, setup, teardown),
      cmocka_unit_test_setup_teardown(test_first_failure_in_file_order, setup, teardown),
      cmocka_unit_test_setup_teardown(test_member_that_cannot_start, setup, teardown),
      cmocka_unit_test_setup_teardown(test_budget_cuts_the_list, setup, teardown),
      cmocka_unit_test_setup_teardown(test_ops_null_is_the_engine, setup, teardown),
      cmocka_unit_test_setup_teardown(test_host_runs_run_steps, setup, teardown),
      cmocka_unit_test_setup_teardown(test_run_step_failure_names_the_step, setup, teardown),
      cmocka_unit_test_setup_teardown(test_run_step_charged_once, setup, teardown),
      cmocka_unit_test_setup_teardown(test_run_ops_null_is_execute, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
