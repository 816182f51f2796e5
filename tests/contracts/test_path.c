/* contracts/path: syntax, coverage, overlap. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "theus/contract.h"

static void test_valid_paths(void **state) {
  (void)state;
  const char *ok[] = {"domain.counter", "domain.items.*", "heavy.frame", "domain.a.b_c.d-1", "domain.*.x",
                      "heavy.*"};
  for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
    assert_int_equal(theus_path_check(ok[i], NULL, 0), 0);
}

static void test_invalid_paths_explain(void **state) {
  (void)state;
  char err[256];
  assert_int_equal(theus_path_check("state.x", err, sizeof err), THEUS_EINVAL);
  assert_non_null(strstr(err, "domain."));
  assert_int_equal(theus_path_check("domain..x", err, sizeof err), THEUS_EINVAL);
  assert_non_null(strstr(err, "segment 1"));
  assert_int_equal(theus_path_check("domain.1x", err, sizeof err), THEUS_EINVAL);
  assert_int_equal(theus_path_check("domain", err, sizeof err), THEUS_EINVAL);
  assert_non_null(strstr(err, "whole zone"));
  assert_int_equal(theus_path_check("heavy.frame.len", err, sizeof err), THEUS_EINVAL);
  assert_non_null(strstr(err, "heavy.<key>"));
  assert_int_equal(theus_path_check("domain.a*", err, sizeof err), THEUS_EINVAL);
  assert_int_equal(theus_path_check("", err, sizeof err), THEUS_EINVAL);
  assert_int_equal(theus_path_check(NULL, err, sizeof err), THEUS_EINVAL);
}

static void test_covers(void **state) {
  (void)state;
  assert_true(theus_path_covers("domain.user", "domain.user"));
  assert_true(theus_path_covers("domain.user", "domain.user.name"));
  assert_false(theus_path_covers("domain.user", "domain.users"));
  assert_false(theus_path_covers("domain.user.name", "domain.user"));
  assert_true(theus_path_covers("domain.items.*", "domain.items.a"));
  assert_true(theus_path_covers("domain.items.*", "domain.items.a.b"));
  assert_false(theus_path_covers("domain.items.*", "domain.items"));
  assert_true(theus_path_covers("domain.*.x", "domain.k.x.y"));
  assert_false(theus_path_covers("domain.*.x", "domain.k.y"));
  assert_true(theus_path_covers("heavy.*", "heavy.frame"));
  assert_false(theus_path_covers("heavy.frame", "domain.frame"));
}

static void test_overlaps(void **state) {
  (void)state;
  assert_true(theus_path_overlaps("domain.a.b", "domain.a.b.c"));
  assert_true(theus_path_overlaps("domain.a.b.c", "domain.a.b"));
  assert_true(theus_path_overlaps("domain.a", "domain.a"));
  assert_false(theus_path_overlaps("domain.a.b.c", "domain.a.b.d"));
  assert_false(theus_path_overlaps("domain.a", "domain.ab"));
  assert_true(theus_path_overlaps("domain.*.c", "domain.a.c"));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_valid_paths),
      cmocka_unit_test(test_invalid_paths_explain),
      cmocka_unit_test(test_covers),
      cmocka_unit_test(test_overlaps),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
