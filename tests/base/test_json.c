/* tests/base: theus__json_load tells bad text (THEUS_EPARSE) from memory that
 * ran out (THEUS_ENOMEM), including the allocations jansson reports as syntax
 * errors, and never calls valid JSON bad. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "base.h"

static int load(const char *text, size_t flags) {
  json_error_t je;
  int rc = -1;
  json_t *j = theus__json_load(text, strlen(text), flags, &je, &rc);
  if (j) assert_int_equal(rc, 0);
  json_decref(j);
  return j ? 0 : rc;
}

static void test_bad_text_is_a_parse_error(void **state) {
  (void)state;
  static const char *const bad[] = {
      "", "   ", "{", "[1,]", "{\"a\":}", "{\"a\" 1}", "{\"a\":1,}", "{1:2}", "[01]", "[1.]", "[.5]", "[-]", "[1e]",
      "[1e+]", "[+1]", "[tru]", "[nul]", "[\"a]", "[\"\\x\"]", "[\"\\u12\"]", "[\"\\uD800\"]", "[\"\\uDC00\"]",
      "[\"\\uD800\\u0041\"]", "[\"\t\"]", "[\"\xff\"]", "[\"\xc0\xaf\"]", "[\"\xed\xa0\x80\"]", "[1] x", "[1][2]",
      "{\"a\":1}}", "[[1]", "[1]]", "1", "\"s\"", "{\"a\":1,\"a\":2}", "[1 2]", "{\"a\":1 \"b\":2}", "[\"\\u0000\"]",
      "[99999999999999999999999]"};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    int rc = load(bad[i], JSON_REJECT_DUPLICATES);
    if (rc != THEUS_EPARSE) fail_msg("'%s' gave %d, not THEUS_EPARSE", bad[i], rc);
  }
  assert_int_equal(load("01", JSON_DECODE_ANY), THEUS_EPARSE);
  assert_int_equal(load("[1] [", JSON_DECODE_ANY), THEUS_EPARSE);
}

static const char *const good[] = {
    "{}", "[]", " [ ] ", "{\"a\": [1, -0.5e+3, 2E-2, 0, true, false, null, \"x\\n\\\"\\u00e9\\uD83D\\uDE00\"]}",
    "[[[[{\"k\": {\"l\": []}}]]]]", "{\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\": \"\xe2\x82\xac\"}",
    "[1, {\"a\": {\"b\": [2, 3]}, \"c\": \"d\"}, [4, [5]]]"};

static void test_valid_text_loads(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof good / sizeof *good; i++) assert_int_equal(load(good[i], 0), 0);
  assert_int_equal(load("-12.5e3", JSON_DECODE_ANY), 0);
  assert_int_equal(load(" \"s\" ", JSON_DECODE_ANY), 0);
}

/* jansson's allocator fails from its n-th call on (persistent) */
static long calls, fail_from;
static void *failing_malloc(size_t n) { return ++calls >= fail_from ? NULL : malloc(n); }

static void test_out_of_memory_is_enomem(void **state) {
  (void)state;
  json_set_alloc_funcs(failing_malloc, free);
  for (size_t i = 0; i < sizeof good / sizeof *good; i++) {
    for (fail_from = 1;; fail_from++) {
      calls = 0;
      int rc = load(good[i], 0);
      if (!rc) break;
      if (rc != THEUS_ENOMEM) fail_msg("'%s', allocation %ld failing: %d, not THEUS_ENOMEM", good[i], fail_from, rc);
    }
    assert_true(fail_from > 1); /* every text allocates */
  }
  json_set_alloc_funcs(malloc, free);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_bad_text_is_a_parse_error),
      cmocka_unit_test(test_valid_text_loads),
      cmocka_unit_test(test_out_of_memory_is_enomem),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
