/* Issue 10 reproducers: pipelines at the edges of the expression language
 * and of the position index, loaded and run on an engine without a pool. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "pipeline_fixture.h"

#include "theus/theus.h"

static int setup(void **state) { return fixture_setup(state, "limits"); }

static int teardown(void **state) { return fixture_teardown(state); }

/* A growing string (fails the test on ENOMEM). */
typedef struct text {
  char *s;
  size_t n, cap;
} text;

static void put(text *t, const char *s) {
  size_t l = strlen(s);
  if (t->n + l + 1 > t->cap) {
    t->cap = 2 * (t->n + l + 1);
    t->s = realloc(t->s, t->cap);
    assert_non_null(t->s);
  }
  memcpy(t->s + t->n, s, l + 1);
  t->n += l;
}

static void repeat(text *t, const char *s, size_t times) {
  for (size_t i = 0; i < times; i++) put(t, s);
}

/* Writes t, loads it; returns the pipeline or NULL with err filled. */
static theus_pipeline *load(fixture *f, text *t, char *err, size_t errlen) {
  FILE *fp = fopen(f->path, "w");
  assert_non_null(fp);
  fputs(t->s, fp);
  fclose(fp);
  free(t->s);
  *t = (text){0};
  theus_pipeline *p = NULL;
  int rc = theus_pipeline_load(f->path, &p);
  snprintf(err, errlen, "%s", rc ? theus_pipeline_errmsg(p) : "");
  if (rc) {
    theus_pipeline_close(p);
    p = NULL;
  }
  return p;
}

/* Loads, opens with no pool, runs; returns domain.x (new reference). */
static json_t *run_x(fixture *f, text *t) {
  char err[1024];
  theus_pipeline *p = load(f, t, err, sizeof err);
  if (!p) fail_msg("load: %s", err);
  theus_engine_config cfg;
  theus_engine_config_init(&cfg);
  cfg.workers = -1;
  theus_engine *e = NULL;
  int rc = theus_pipeline_open_engine(p, &cfg, &e);
  if (rc) fail_msg("open: %s", theus_pipeline_errmsg(p));
  rc = theus_pipeline_run(p, e);
  if (rc) fail_msg("run: %s", theus_pipeline_errmsg(p));
  json_t *x = theus_engine_get(e, "domain.x");
  theus_engine_close(e);
  theus_pipeline_close(p);
  return x;
}

/* '+'.join(['1'] * 70000) as a set expression: it crashed theus-run. */
static void test_long_chain_in_set(void **state) {
  text t = {0};
  put(&t, "{\"domain\": {\"x\": 0}, \"steps\": [{\"set\": \"domain.x\", \"expr\": \"1");
  repeat(&t, "+1", 69999);
  put(&t, "\"}]}");
  json_t *x = run_x(*state, &t);
  assert_int_equal(json_integer_value(x), 70000);
  json_decref(x);
}

/* The same chain inside an if that is never taken crashed when freed. */
static void test_long_chain_untaken(void **state) {
  text t = {0};
  put(&t, "{\"domain\": {\"x\": 5}, \"steps\": [{\"if\": \"false\", \"then\": [{\"set\": \"domain.x\", \"expr\": \"1");
  repeat(&t, " * 1", 69999);
  put(&t, "\"}]}, {\"if\": \"(((((((((((domain.x == 5");
  repeat(&t, " and true", 69999);
  put(&t, ")))))))))))\", \"then\": [{\"set\": \"domain.x\", \"value\": 6}]}]}");
  json_t *x = run_x(*state, &t);
  assert_int_equal(json_integer_value(x), 6);
  json_decref(x);
}

/* A key longer than 4096 bytes made a valid pipeline fail with a bare
 * "parse error". */
static void test_long_key(void **state) {
  text t = {0};
  put(&t, "{\"domain\": {\"x\": 1, \"");
  repeat(&t, "k", 6000);
  put(&t, "\": {\"");
  repeat(&t, "j", 6000);
  put(&t, "\": 2}},\n \"steps\": [{\"set\": \"domain.x\", \"expr\": \"domain.x + 1\"}]}");
  json_t *x = run_x(*state, &t);
  assert_int_equal(json_integer_value(x), 2);
  json_decref(x);
  /* an error after the long key still has its line:column and cause */
  put(&t, "{\"domain\": {\"");
  repeat(&t, "k", 6000);
  put(&t, "\": 1},\n \"steps\": [{\"sett\": \"domain.x\"}]}");
  char err[1024];
  assert_null(load(*state, &t, err, sizeof err));
  if (!strstr(err, "p.json:2:12: this step has no kind")) fail_msg("got: %s", err);
}

/* if/then nested 600 deep: a pointer of about 5400 bytes. */
static void nested_ifs(text *t, size_t depth, const char *inner) {
  put(t, "{\"domain\": {\"x\": 0}, \"steps\": [\n");
  repeat(t, "{\"if\": \"true\", \"then\": [", depth);
  put(t, "\n");
  put(t, inner);
  put(t, "\n");
  repeat(t, "]}", depth);
  put(t, "]}");
}

static void test_deep_nesting(void **state) {
  text t = {0};
  nested_ifs(&t, 600, "{\"set\": \"domain.x\", \"expr\": \"domain.x + 600\"}");
  json_t *x = run_x(*state, &t);
  assert_int_equal(json_integer_value(x), 600);
  json_decref(x);
  /* an error that deep: a position (of an enclosing step) and the cause */
  nested_ifs(&t, 600, "{\"set\": \"domain.x\", \"expr\": \"domain.x +\"}");
  char err[1024];
  assert_null(load(*state, &t, err, sizeof err));
  if (!strstr(err, "p.json:2:") || strstr(err, ":0:0:") || !strstr(err, "unexpected end of expression"))
    fail_msg("got: %s", err);
}

/* Issue 11: a host that passes no config gets the file's "workers" and
 * "arena"; one that passes cfg->arena gets exactly that config. */
static void test_file_config_without_host_config(void **state) {
  fixture *f = *state;
  text t = {0};
  put(&t, "{\"workers\": -1, \"arena\": {\"budget\": \"64MiB\"},\n"
          " \"heavy\": {\"a\": {\"dtype\": \"u8\", \"shape\": 68157440}}, \"steps\": []}");
  char err[1024];
  theus_pipeline *p = load(f, &t, err, sizeof err);
  if (!p) fail_msg("load: %s", err);
  theus_engine *e = NULL;
  assert_int_equal(theus_pipeline_open_engine(p, NULL, &e), THEUS_ETOOBIG); /* single_limit = the file's budget */
  assert_null(e);
  const char *msg = theus_pipeline_errmsg(p);
  if (!strstr(msg, "p.json:2:12: cannot allocate heavy.a (65MiB)") ||
      !strstr(msg, "in this pipeline set \"arena\": {\"single_limit\": \"65MiB\"}") || strstr(msg, "--arena"))
    fail_msg("message: %s", msg);
  theus_arena_config ac;
  theus_pipeline_arena_config(p, &ac);
  ac.single_limit = 65u << 20; /* over the budget now: the budget refuses it */
  theus_engine_config cfg;
  theus_engine_config_init(&cfg);
  cfg.workers = -1;
  cfg.arena = &ac;
  assert_int_equal(theus_pipeline_open_engine(p, &cfg, &e), THEUS_EBUDGET);
  if (!strstr(theus_pipeline_errmsg(p), "in this pipeline set \"arena\": {\"budget\": \"65MiB\"}"))
    fail_msg("message: %s", theus_pipeline_errmsg(p));
  ac.hard_limit = 65u << 20;
  assert_int_equal(theus_pipeline_open_engine(p, &cfg, &e), 0);
  json_t *st = theus_engine_stats(e);
  assert_null(json_object_get(json_object_get(st, "pool"), "per_worker")); /* no pool: the file said -1 */
  json_decref(st);
  theus_engine_close(e);
  theus_pipeline_close(p);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_file_config_without_host_config, setup, teardown),
      cmocka_unit_test_setup_teardown(test_long_chain_in_set, setup, teardown),
      cmocka_unit_test_setup_teardown(test_long_chain_untaken, setup, teardown),
      cmocka_unit_test_setup_teardown(test_long_key, setup, teardown),
      cmocka_unit_test_setup_teardown(test_deep_nesting, setup, teardown),
  };
  return cmocka_run_group_tests_name("pipeline_limits", tests, NULL, NULL);
}
