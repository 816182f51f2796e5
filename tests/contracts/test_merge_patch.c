/* contracts/merge_patch: RFC 7386 examples, sharing, written paths. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "theus/contract.h"

static void check(const char *target, const char *patch, const char *expect) {
  json_t *t = json_loads(target, JSON_DECODE_ANY, NULL), *p = json_loads(patch, JSON_DECODE_ANY, NULL),
         *x = json_loads(expect, JSON_DECODE_ANY, NULL);
  assert_non_null(p);
  json_t *snapshot = t ? json_deep_copy(t) : NULL;
  json_t *r = theus_merge_patch(t, p);
  if (!json_equal(r, x)) {
    char *s = json_dumps(r, JSON_ENCODE_ANY);
    fail_msg("%s + %s gave %s, expected %s", target, patch, s, expect);
  }
  if (t)
    assert_true(json_equal(t, snapshot)); /* the target is never modified */
  json_decref(t);
  json_decref(p);
  json_decref(x);
  json_decref(r);
  json_decref(snapshot);
}

/* The examples table of RFC 7386 appendix A. */
static void test_rfc_examples(void **state) {
  (void)state;
  check("{\"a\":\"b\"}", "{\"a\":\"c\"}", "{\"a\":\"c\"}");
  check("{\"a\":\"b\"}", "{\"b\":\"c\"}", "{\"a\":\"b\",\"b\":\"c\"}");
  check("{\"a\":\"b\"}", "{\"a\":null}", "{}");
  check("{\"a\":\"b\",\"b\":\"c\"}", "{\"a\":null}", "{\"b\":\"c\"}");
  check("{\"a\":[\"b\"]}", "{\"a\":\"c\"}", "{\"a\":\"c\"}");
  check("{\"a\":\"c\"}", "{\"a\":[\"b\"]}", "{\"a\":[\"b\"]}");
  check("{\"a\":{\"b\":\"c\"}}", "{\"a\":{\"b\":\"d\",\"c\":null}}", "{\"a\":{\"b\":\"d\"}}");
  check("{\"a\":[{\"b\":\"c\"}]}", "{\"a\":[1]}", "{\"a\":[1]}");
  check("[\"a\",\"b\"]", "[\"c\",\"d\"]", "[\"c\",\"d\"]");
  check("{\"a\":\"b\"}", "[\"c\"]", "[\"c\"]");
  check("{\"a\":\"foo\"}", "null", "null");
  check("{\"a\":\"foo\"}", "\"bar\"", "\"bar\"");
  check("{\"e\":null}", "{\"a\":1}", "{\"e\":null,\"a\":1}");
  check("[1,2]", "{\"a\":\"b\",\"c\":null}", "{\"a\":\"b\"}");
  check("{}", "{\"a\":{\"bb\":{\"ccc\":null}}}", "{\"a\":{\"bb\":{}}}");
}

static void test_untouched_subtrees_are_shared(void **state) {
  (void)state;
  json_t *t = json_loads("{\"big\":{\"x\":[1,2,3]},\"n\":1}", 0, NULL);
  json_t *p = json_loads("{\"n\":2}", 0, NULL);
  json_t *r = theus_merge_patch(t, p);
  assert_ptr_equal(json_object_get(r, "big"), json_object_get(t, "big"));
  assert_int_equal(json_integer_value(json_object_get(t, "n")), 1);
  json_decref(t);
  json_decref(p);
  json_decref(r);
}

static void test_written_paths(void **state) {
  (void)state;
  json_t *p = json_loads("{\"a\":{\"b\":{\"c\":1,\"d\":null}},\"e\":{},\"f\":[1]}", 0, NULL);
  char **paths = NULL;
  size_t n = 0, cap = 0;
  assert_int_equal(theus_merge_patch_paths(p, "domain", &paths, &n, &cap), 0);
  assert_int_equal(n, 4);
  const char *want[] = {"domain.a.b.c", "domain.a.b.d", "domain.e", "domain.f"};
  for (size_t i = 0; i < 4; i++) {
    int found = 0;
    for (size_t j = 0; j < n; j++)
      found |= !strcmp(paths[j], want[i]);
    assert_true(found);
  }
  for (size_t j = 0; j < n; j++)
    free(paths[j]);
  free(paths);
  json_decref(p);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_rfc_examples),
      cmocka_unit_test(test_untouched_subtrees_are_shared),
      cmocka_unit_test(test_written_paths),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
