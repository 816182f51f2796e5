/* Unit tests: pipeline expressions (pipeline/expr.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../../pipeline/expr.h"
#include "theus/error.h"

static const char *domain_text =
    "{\"err\": 0.25, \"tol\": 0.001, \"n\": 7, \"name\": \"demo\", \"on\": true, \"nothing\": null,"
    " \"stats\": {\"mean\": 1.5, \"inner\": {\"deep\": -2}}, \"list\": [10, 20, 30], \"obj\": {},"
    " \"old\": [1, 2, 3], \"new\": [1.5, 2, 2.75], \"m\": [[1, 2], [3, 4]], \"empty\": [], \"mixed\": [1, \"x\"],"
    " \"items\": [{\"name\": \"a\", \"w\": [1, 2]}], \"counts\": [3, 0, 5, 0]}";

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
  rc = theus__expr_eval(e, dom, &out, err, sizeof err, &col, NULL);
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
  int rc = theus__expr_eval(e, d, &out, err, sizeof err, &got, NULL);
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
  expect_eval_error(d, "1 + domain.stats", 3, "not a number and an object"); /* objects are values now (fields) */
  expect_eval_error(d, "domain.name + 1", 13, "needs numbers or arrays of numbers, not a string and a number");
  expect_eval_error(d, "domain.n / 0", 10, "division by zero");
  expect_eval_error(d, "domain.n and true", 1, "needs booleans");
  expect_eval_error(d, "not domain.n", 1, "'not' needs a boolean");
  expect_eval_error(d, "-domain.on", 1, "'-' needs a number");
  expect_eval_error(d, "domain.on < 1", 11, "compares two numbers");
  expect_eval_error(d, "1e308 * 10", 7, "overflows");
  expect_eval_error(d, "true and true and domain.n", 19, "its right side is a number");
  expect_eval_error(d, "(1 + 1) and true", 4, "its left side is a number");
  expect_eval_error(d, "1 + 2 + domain.on - 4", 7, "'+' needs numbers");
}

static void test_condition_must_be_bool(void **state) {
  const json_t *d = *state;
  theus__expr *e;
  char err[256];
  int col;
  bool b = true;
  assert_int_equal(theus__expr_parse("domain.n + 1", &e, err, sizeof err, &col), 0);
  assert_string_equal(theus__expr_text(e), "domain.n + 1");
  assert_int_equal(theus__expr_eval_bool(e, d, &b, err, sizeof err, &col, NULL), THEUS_EINVAL);
  assert_false(b);
  assert_non_null(strstr(err, "not a boolean"));
  theus__expr_free(e);
  assert_int_equal(theus__expr_parse("domain.err > domain.tol", &e, err, sizeof err, &col), 0);
  assert_int_equal(theus__expr_eval_bool(e, d, &b, err, sizeof err, &col, NULL), 0);
  assert_true(b);
  theus__expr_free(e);
}

static void expect_json(const json_t *dom, const char *text, const char *want) {
  json_t *v = eval_ok(dom, text), *w = json_loads(want, JSON_DECODE_ANY, NULL);
  assert_non_null(w);
  char *got = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
  if (!json_equal(v, w)) fail_msg("'%s' = %s, want %s", text, got, want);
  free(got);
  json_decref(v);
  json_decref(w);
}

/* Issue 11: what numeric glue needs. */
static void test_functions(void **state) {
  const json_t *d = *state;
  expect_num(d, "len(domain.list)", 3);
  expect_num(d, "len(domain.name)", 4);
  expect_num(d, "len('h\u00e9') + len(\"\")", 2); /* characters, not bytes: \u00e9 is two UTF-8 bytes */
  expect_num(d, "len(domain.empty)", 0);
  expect_num(d, "abs(-2.5)", 2.5);
  expect_num(d, "sqrt(16) + sqrt(0)", 4);
  expect_num(d, "min(3, 1, 2)", 1);
  expect_num(d, "max(3, domain.n, 2)", 7);
  expect_num(d, "min(7)", 7);
  expect_num(d, "min(domain.list)", 10);
  expect_num(d, "max(domain.m)", 4); /* nested arrays: every number */
  expect_num(d, "sum(domain.list)", 60);
  expect_num(d, "sum(domain.m)", 10);
  expect_num(d, "sum(domain.empty)", 0);
  expect_num(d, "sum(domain.list) / len(domain.list)", 20);
  expect_num(d, "max(abs(domain.new - domain.old))", 0.5);
  expect_bool(d, "max(abs(domain.new - domain.old)) < domain.tol", false);
  expect_num(d, "len ( domain.list )", 3); /* spaces */
}

static void test_arrays(void **state) {
  const json_t *d = *state;
  expect_json(d, "domain.old + domain.new", "[2.5, 4, 5.75]");
  expect_json(d, "domain.old * 2", "[2, 4, 6]"); /* broadcasting */
  expect_json(d, "10 - domain.old", "[9, 8, 7]");
  expect_json(d, "domain.old / [2, 4, 8]", "[0.5, 0.5, 0.375]");
  expect_json(d, "domain.m * domain.m", "[[1, 4], [9, 16]]"); /* nested, equal shapes */
  expect_json(d, "domain.m + 1", "[[2, 3], [4, 5]]");
  expect_json(d, "-domain.m", "[[-1, -2], [-3, -4]]");
  expect_json(d, "abs(domain.old - 2)", "[1, 0, 1]");
  expect_json(d, "sqrt([4, 9])", "[2, 3]");
  expect_json(d, "[]", "[]");
  expect_json(d, "[1, [2, 3], domain.old]", "[1, [2, 3], [1, 2, 3]]");
  expect_json(d, "domain.items", "[{\"name\": \"a\", \"w\": [1, 2]}]"); /* a whole array, as set's expr */
  expect_num(d, "domain.list[1]", 20);
  expect_num(d, "domain.list[domain.n - 6] + domain.list[0]", 30);
  expect_num(d, "domain.m[1][0]", 3);
  expect_num(d, "domain.m[1].1", 4);
  expect_num(d, "(domain.old + 1)[2]", 4);
  expect_num(d, "[5, 6, 7][2]", 7);
  expect_num(d, "sum(domain.items[0].w)", 3);
  expect_bool(d, "domain.items[0].name == 'a'", true);
  expect_bool(d, "domain.old == [1, 2.0, 3]", true); /* numbers compare by value at any depth */
  expect_bool(d, "domain.m != [[1, 2], [3, 5]]", true);
  expect_bool(d, "domain.old == domain.list", false);
  /* k-means style: all points assigned, smallest cluster, centroid movement */
  expect_bool(d, "sum(domain.counts) == 8 and len(domain.counts) == 4", true);
  expect_num(d, "min(domain.counts)", 0);
  expect_num(d, "max(abs(domain.m - [[1, 2], [3, 3.5]]))", 0.5);
}

static void test_array_errors(void **state) {
  const json_t *d = *state;
  expect_eval_error(d, "domain.old + [1, 2, 3, 4]", 12, "'+' needs arrays of equal length, found arrays of length 3 and 4");
  expect_eval_error(d, "domain.m - [[1], [2]]", 10, "arrays of length 2 and 1 (nested)");
  expect_eval_error(d, "domain.mixed * 2", 14, "element 1 of the left operand is a string");
  expect_eval_error(d, "domain.old / [1, 0, 1]", 12, "division by zero");
  expect_eval_error(d, "domain.list[3]", 13, "index 3 is out of range for an array of length 3");
  expect_eval_error(d, "domain.list[-1]", 13, "index -1 is out of range");
  expect_eval_error(d, "domain.list[0.5]", 13, "an index is a whole number, not a fraction");
  expect_eval_error(d, "domain.list['a']", 13, "not a string");
  expect_eval_error(d, "domain.n[0]", 9, "'[...]' indexes an array, not a number");
  expect_eval_error(d, "domain.items[0].size", 16, "no field 'size' there");
  expect_eval_error(d, "domain.old < domain.new", 12, "not an array of length 3 and an array of length 3; reduce");
  expect_eval_error(d, "sqrt(-1)", 1, "sqrt of a negative number (-1)");
  expect_eval_error(d, "sqrt([1, -4])", 1, "sqrt of a negative number (-4, element 1)");
  expect_eval_error(d, "min(domain.empty)", 1, "min of an empty array");
  expect_eval_error(d, "max(domain.list, 3)", 5, "argument 1 is an array of length 3");
  expect_eval_error(d, "sum(3)", 1, "sum takes an array, not a number");
  expect_eval_error(d, "sum(domain.mixed)", 1, "sum works on numbers, but element 1 is a string");
  expect_eval_error(d, "len(3)", 1, "len takes an array or a string, not a number");
  expect_eval_error(d, "abs('x')", 1, "abs takes a number or an array of numbers, not a string");
  expect_eval_error(d, "[1, 'x']", 5, "array literals hold numbers and arrays; element 1 is a string");
  expect_eval_error(d, "not domain.old", 1, "'not' needs a boolean, not an array of length 3");
  expect_eval_error(d, "domain.old and true", 1, "needs booleans but its left side is an array of length 3");
}

static void test_call_parse_errors(void **state) {
  (void)state;
  expect_parse_error("mean(domain.list)", 1, "unknown function 'mean'; functions are len, abs, sqrt, sum, min and max");
  expect_parse_error("len(1, 2)", 1, "len takes one argument, found 2");
  expect_parse_error("sqrt()", 1, "sqrt takes one argument, found 0");
  expect_parse_error("max()", 1, "max takes numbers, or one array");
  expect_parse_error("min(1, 2", 9, "expected ',' or ')' to close the call at column 4");
  expect_parse_error("[1, 2", 6, "expected ',' or ']' to close the array at column 1");
  expect_parse_error("domain.list[1", 14, "expected ']' to close the '[' at column 12");
  expect_parse_error("domain.list[]", 13, "unexpected ']'");
  expect_parse_error("abs 1", 1, "unknown name 'abs'");
  char deep[400];
  for (int i = 0; i < 100; i++) memcpy(deep + 4 * i, "abs(", 4);
  strcpy(deep + 400 - 1, "");
  deep[399] = '\0';
  expect_parse_error(deep, 4 * 65, "nested deeper than 64"); /* calls count as nesting: the 65th '(' */
  memset(deep, '[', 200);
  strcpy(deep + 200, "1");
  expect_parse_error(deep, 65, "nested deeper than 64");
  strcpy(deep, "domain.m");
  for (int i = 0; i < 70; i++) strcat(deep, "[");
  expect_parse_error(deep, 9 + 64, "nested deeper than 64"); /* the 65th '[' */
}

/* Array work is counted, and a long argument list or index chain is a loop. */
static void test_work_and_long_lists(void **state) {
  const json_t *d = *state;
  theus__expr *e;
  char err[256];
  int col;
  json_t *out;
  uint64_t work = 0;
  assert_int_equal(theus__expr_parse("sum(domain.old * 2 + domain.new)", &e, err, sizeof err, &col), 0);
  assert_int_equal(theus__expr_eval(e, d, &out, err, sizeof err, &col, &work), 0);
  assert_int_equal(work, 9); /* three element-wise passes over 3 elements */
  json_decref(out);
  theus__expr_free(e);
  size_t n = 50000;
  char *s = malloc(8 * n + 16), *w = s;
  w += sprintf(w, "max(");
  for (size_t i = 0; i < n; i++) w += sprintf(w, "%s%zu", i ? "," : "", i);
  strcpy(w, ")");
  expect_num(d, s, (double)(n - 1));
  w = s + sprintf(s, "[");
  for (size_t i = 0; i < n; i++) w += sprintf(w, "%s1", i ? "," : "");
  strcpy(w, "]");
  assert_int_equal(theus__expr_parse(s, &e, err, sizeof err, &col), 0);
  assert_int_equal(theus__expr_eval(e, d, &out, err, sizeof err, &col, NULL), 0);
  assert_int_equal(json_array_size(out), n);
  json_decref(out);
  theus__expr_free(e);
  w = s + sprintf(s, "domain.m");
  for (size_t i = 0; i < 20000; i++) w += sprintf(w, "[0]");
  expect_eval_error(d, s, 15, "'[...]' indexes an array, not a number"); /* the third index */
  free(s);
}

/* Arrays nested deeper than 32 are refused instead of recursing on. */
static void test_deep_arrays(void **state) {
  (void)state;
  char text[256] = "";
  for (int i = 0; i < 40; i++) strcat(text, "[");
  strcat(text, "1");
  for (int i = 0; i < 40; i++) strcat(text, "]");
  json_t *dom = json_pack("{s:o}", "deep", json_loads(text, 0, NULL));
  expect_eval_error(dom, "domain.deep + 1", 13, "arrays nested deeper than 32");
  expect_eval_error(dom, "sum(domain.deep)", 1, "nested deeper than 32");
  expect_eval_error(dom, "domain.deep == domain.deep", 13, "nested deeper than 32");
  json_decref(dom);
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
      cmocka_unit_test_setup_teardown(test_functions, setup, teardown),
      cmocka_unit_test_setup_teardown(test_arrays, setup, teardown),
      cmocka_unit_test_setup_teardown(test_array_errors, setup, teardown),
      cmocka_unit_test(test_call_parse_errors),
      cmocka_unit_test_setup_teardown(test_work_and_long_lists, setup, teardown),
      cmocka_unit_test(test_deep_arrays),
  };
  return cmocka_run_group_tests_name("expr", tests, NULL, NULL);
}
