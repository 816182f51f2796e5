/* Unit tests: pipeline expressions (pipeline/expr.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../../pipeline/expr.h"
#include "theus/error.h"

static const char *domain_text =
    "{\"err\": 0.25, \"tol\": 0.001, \"n\": 7, \"name\": \"demo\", \"on\": true, \"nothing\": null,"
    " \"stats\": {\"mean\": 1.5, \"inner\": {\"deep\": -2}}, \"list\": [10, 20, 30], \"obj\": {}}";

static int setup(void **state) {
  json_error_t je;
  *state = json_loads(domain_text, 0, &je);
  return *state ? 0 : -1;
}

static int teardown(void **state) {
  json_decref(*state);
  return 0;
}

static json_t *eval_ok(const json_t *dom, const char *text) {
  theus__expr *e;
  char err[256] = "";
  int col;
  int rc = theus__expr_parse(text, &e, err, sizeof err, &col);
  if (rc) fail_msg("parse '%s' failed at column %d: %s", text, col, err);
  json_t *out = NULL;
  rc = theus__expr_eval(e, dom, &out, err, sizeof err, &col);
  if (rc) fail_msg("eval '%s' failed at column %d: %s", text, col, err);
  theus__expr_free(e);
  return out;
}

static void expect_bool(const json_t *dom, const char *text, bool want) {
  json_t *v = eval_ok(dom, text);
  if (!json_is_boolean(v) || json_is_true(v) != want) fail_msg("'%s' should be %s", text, want ? "true" : "false");
  json_decref(v);
}

static void expect_num(const json_t *dom, const char *text, double want) {
  json_t *v = eval_ok(dom, text);
  assert_true(json_is_number(v));
  if (json_number_value(v) != want) fail_msg("'%s' = %g, want %g", text, json_number_value(v), want);
  json_decref(v);
}

static void test_arithmetic(void **state) {
  const json_t *d = *state;
  expect_num(d, "1 + 2 * 3", 7);
  expect_num(d, "(1 + 2) * 3", 9);
  expect_num(d, "10 - 4 - 3", 3); /* left associative */
  expect_num(d, "2 * -3", -6);
  expect_num(d, "- - 4", 4);
  expect_num(d, "7 % 4", 3);
  expect_num(d, "1 / 4", 0.25);
  expect_num(d, "1.5e2", 150);
  expect_num(d, ".5 + domain.n", 7.5);
  expect_num(d, "domain.stats.inner.deep * domain.stats.mean", -3);
  expect_num(d, "domain.list.1 + domain.list.2", 50);
}

static void test_comparisons_and_logic(void **state) {
  const json_t *d = *state;
  expect_bool(d, "domain.err > domain.tol", true);
  expect_bool(d, "domain.err <= 0.25", true);
  expect_bool(d, "domain.err < 0.25", false);
  expect_bool(d, "domain.n >= 7 and domain.n != 8", true);
  expect_bool(d, "domain.n == 7.0", true);
  expect_bool(d, "domain.name == 'demo'", true);
  expect_bool(d, "domain.name == \"dem\"", false);
  expect_bool(d, "'abc' < 'abd'", true);
  expect_bool(d, "domain.nothing == null", true);
  expect_bool(d, "domain.n == 'seven'", false); /* different types are unequal */
  expect_bool(d, "not domain.on or domain.n > 100", false);
  expect_bool(d, "!(domain.n > 100) && domain.on", true);
  expect_bool(d, "true or false and false", true); /* and binds tighter */
  expect_bool(d, "(true or false) and false", false);
  expect_bool(d, "not not true", true);
  expect_bool(d, "'it\\'s' == \"it's\"", true);
  /* short circuit: the missing path is never read */
  expect_bool(d, "false and domain.missing > 1", false);
  expect_bool(d, "true or domain.missing > 1", true);
}

static void expect_parse_error(const char *text, int col, const char *needle) {
  theus__expr *e = NULL;
  char err[256] = "";
  int got = -1;
  assert_int_equal(theus__expr_parse(text, &e, err, sizeof err, &got), THEUS_EPARSE);
  assert_null(e);
  if (got != col || !strstr(err, needle))
    fail_msg("'%s': got column %d '%s', want column %d '%s'", text, got, err, col, needle);
}

static void test_parse_errors(void **state) {
  (void)state;
  expect_parse_error("", 1, "unexpected end");
  expect_parse_error("domain.err >", 13, "unexpected end");
  expect_parse_error("domain.err = 1", 12, "compare with '=='");
  expect_parse_error("(1 + 2", 7, "expected ')'");
  expect_parse_error("err > 1", 1, "unknown name 'err'");
  expect_parse_error("domain > 1", 1, "'domain' alone");
  expect_parse_error("domain. > 1", 8, "after '.'");
  expect_parse_error("1 2", 3, "after a complete expression");
  expect_parse_error("'abc", 1, "unterminated string");
  expect_parse_error("1 + $", 5, "unexpected '$'");
  expect_parse_error("3x", 2, "after a number");
  char deep[400];
  memset(deep, '(', 200);
  strcpy(deep + 200, "1");
  expect_parse_error(deep, 65, "nested deeper");
  memset(deep, '-', 300);
  deep[300] = '\0';
  expect_parse_error(deep, 65, "nested deeper");
}

static void expect_eval_error(const json_t *d, const char *text, int col, const char *needle) {
  theus__expr *e;
  char err[256] = "";
  int got = -1;
  assert_int_equal(theus__expr_parse(text, &e, err, sizeof err, &got), 0);
  json_t *out = NULL;
  int rc = theus__expr_eval(e, d, &out, err, sizeof err, &got);
  theus__expr_free(e);
  assert_int_equal(rc, THEUS_EINVAL);
  assert_null(out);
  if (got != col || !strstr(err, needle))
    fail_msg("'%s': got column %d '%s', want column %d '%s'", text, got, err, col, needle);
}

/* "term op term ... op term" with n terms (malloc'd), inside depth pairs of "( )". */
static char *chain_of(size_t n, const char *term, const char *op, size_t depth) {
  size_t ol = strlen(op), tl = strlen(term);
  char *s = malloc(2 * depth + n * (tl + ol) + 1), *w = s;
  assert_non_null(s);
  memset(w, '(', depth);
  w += depth;
  for (size_t i = 0; i < n; i++) {
    if (i) memcpy(w, op, ol), w += ol;
    memcpy(w, term, tl);
    w += tl;
  }
  memset(w, ')', depth);
  w[depth] = '\0';
  return s;
}

/* Issue 10: a long operator chain crashed (eval and free recursed once per
 * term). Chains are loops now, at any length and inside any nesting. */
static void *long_chains(void *domain) {
  const json_t *d = domain;
  char *s = chain_of(70000, "1", "+", 0);
  expect_num(d, s, 70000);
  free(s);
  s = chain_of(70000, "1", " * ", 64); /* as deep as parentheses may go */
  expect_num(d, s, 1);
  free(s);
  s = chain_of(70000, "1", " - ", 0);
  expect_num(d, s, 1 - 69999);
  free(s);
  s = chain_of(70000, "1 < 2", " and ", 0);
  expect_bool(d, s, true);
  free(s);
  s = chain_of(70000, "false", " || ", 0);
  expect_bool(d, s, false);
  free(s);
  s = chain_of(70000, "'a\\'b' == \"a'b\"", " and ", 0); /* each string sized to itself */
  expect_bool(d, s, true);
  free(s);
  /* parsed only, then freed: the untaken-branch case */
  theus__expr *e;
  char err[256];
  int col;
  s = chain_of(200000, "1", "+", 10);
  assert_int_equal(theus__expr_parse(s, &e, err, sizeof err, &col), 0);
  theus__expr_free(e);
  free(s);
  s = chain_of(10, "1", "+", 65); /* one level too deep: refused with its column */
  expect_parse_error(s, 65, "nested deeper than 64");
  free(s);
  return NULL;
}

/* On a 1 MiB stack (a host thread may well have less than the main thread's
 * 8 MiB): one frame per term would need several MiB for 70000 terms. */
static void test_long_chains(void **state) {
  pthread_attr_t a;
  pthread_t t;
  assert_int_equal(pthread_attr_init(&a), 0);
  assert_int_equal(pthread_attr_setstacksize(&a, 1 << 20), 0);
  assert_int_equal(pthread_create(&t, &a, long_chains, *state), 0);
  assert_int_equal(pthread_join(t, NULL), 0);
  pthread_attr_destroy(&a);
}

/* Folding a parenthesised or tighter chain into a looser one keeps the meaning. */
static void test_chain_precedence(void **state) {
  const json_t *d = *state;
  expect_num(d, "2 * 3 + 4 * 5", 26);
  expect_num(d, "(1 + 2) * 3 - 4", 5);
  expect_num(d, "10 - (4 - 3) - (2 - 1)", 8);
  expect_num(d, "2 * (3 + 4) * 5 / 7 % 4", 2);
  expect_bool(d, "1 + 2 < 4 and 3 > 2 or false", true);
  expect_bool(d, "false and domain.missing > 0 or true", true); /* short circuit skips only its operand */
  expect_bool(d, "true or domain.missing and false", true);
  expect_bool(d, "(1 < 2) == true", true);
}

static void test_eval_errors(void **state) {
  const json_t *d = *state;
  expect_eval_error(d, "domain.missing > 1", 1, "domain.missing is missing");
  expect_eval_error(d, "domain.missing > 1", 1, "or with theus_pipeline_set"); /* a call, not a flag */
  expect_eval_error(d, "1 + domain.stats", 5, "is an object");
  expect_eval_error(d, "domain.name + 1", 13, "needs two numbers");
  expect_eval_error(d, "domain.n / 0", 10, "division by zero");
  expect_eval_error(d, "domain.n and true", 1, "needs booleans");
  expect_eval_error(d, "not domain.n", 1, "'not' needs a boolean");
  expect_eval_error(d, "-domain.on", 1, "'-' needs a number");
  expect_eval_error(d, "domain.on < 1", 11, "compares two numbers");
  expect_eval_error(d, "1e308 * 10", 7, "overflows");
  expect_eval_error(d, "true and true and domain.n", 19, "its right side is a number");
  expect_eval_error(d, "(1 + 1) and true", 4, "its left side is a number");
  expect_eval_error(d, "1 + 2 + domain.on - 4", 7, "'+' needs two numbers");
}

static void test_condition_must_be_bool(void **state) {
  const json_t *d = *state;
  theus__expr *e;
  char err[256];
  int col;
  bool b = true;
  assert_int_equal(theus__expr_parse("domain.n + 1", &e, err, sizeof err, &col), 0);
  assert_string_equal(theus__expr_text(e), "domain.n + 1");
  assert_int_equal(theus__expr_eval_bool(e, d, &b, err, sizeof err, &col), THEUS_EINVAL);
  assert_false(b);
  assert_non_null(strstr(err, "not a boolean"));
  theus__expr_free(e);
  assert_int_equal(theus__expr_parse("domain.err > domain.tol", &e, err, sizeof err, &col), 0);
  assert_int_equal(theus__expr_eval_bool(e, d, &b, err, sizeof err, &col), 0);
  assert_true(b);
  theus__expr_free(e);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_arithmetic, setup, teardown),
      cmocka_unit_test_setup_teardown(test_comparisons_and_logic, setup, teardown),
      cmocka_unit_test(test_parse_errors),
      cmocka_unit_test_setup_teardown(test_long_chains, setup, teardown),
      cmocka_unit_test_setup_teardown(test_chain_precedence, setup, teardown),
      cmocka_unit_test_setup_teardown(test_eval_errors, setup, teardown),
      cmocka_unit_test_setup_teardown(test_condition_must_be_bool, setup, teardown),
  };
  return cmocka_run_group_tests_name("expr", tests, NULL, NULL);
}
