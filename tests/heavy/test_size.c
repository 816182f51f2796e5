/* Sizes with units (theus_size_parse / theus_size_format) and the arena's
 * machine-following defaults. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "theus/heavy.h"

static uint64_t parse_ok(const char *s) {
  uint64_t v = 0;
  char err[512] = "";
  if (theus_size_parse(s, &v, err, sizeof err) != 0) fail_msg("\"%s\" refused: %s", s, err);
  return v;
}

static void parse_err(const char *s, const char *want) {
  uint64_t v = 7;
  char err[512] = "";
  assert_int_equal(theus_size_parse(s, &v, err, sizeof err), THEUS_EINVAL);
  assert_int_equal(v, 0);
  if (!strstr(err, want)) fail_msg("\"%s\": message \"%s\" lacks \"%s\"", s, err, want);
}

static void test_units(void **st) {
  (void)st;
  assert_int_equal(parse_ok("4096"), 4096);
  assert_int_equal(parse_ok("0"), 0);
  assert_int_equal(parse_ok("12B"), 12);
  assert_int_equal(parse_ok("1KiB"), 1024);
  assert_int_equal(parse_ok("100MiB"), 100ull << 20);
  assert_int_equal(parse_ok("8GiB"), 8ull << 30);
  assert_int_equal(parse_ok("2TiB"), 2ull << 40);
  assert_int_equal(parse_ok("1KB"), 1000);
  assert_int_equal(parse_ok("3MB"), 3000000);
  assert_int_equal(parse_ok("8GB"), 8000000000ull);
  assert_int_equal(parse_ok("1TB"), 1000000000000ull);
  assert_int_equal(parse_ok(" 1.5 GiB "), 3ull << 29);  /* spaces, a fraction */
  assert_int_equal(parse_ok("2gib"), 2ull << 30);       /* case-insensitive */
  assert_int_equal(parse_ok("0.1KiB"), 102);            /* rounds down to a byte */
  assert_int_equal(parse_ok("16777215TiB"), 16777215ull << 40);
}

static void test_limits_and_errors(void **st) {
  (void)st;
  assert_int_equal(parse_ok("18446744073709551615"), UINT64_MAX);
  parse_err("18446744073709551616", "too large");
  parse_err("16777216TiB", "too large");
  parse_err("", "is not a size");
  parse_err("-1GiB", "is not a size");
  parse_err("GiB", "is not a size");
  parse_err("1e9", "unknown unit");
  parse_err("8G", "ambiguous");
  parse_err("8 k", "ambiguous");
  parse_err("3 parsecs", "unknown unit");
  parse_err("1GiB of memory", "unexpected text");
  parse_err("1.", "a digit must follow");
  char err[8];
  uint64_t v;
  assert_int_equal(theus_size_parse(NULL, &v, err, sizeof err), THEUS_EINVAL); /* short buffer: cut, not overrun */
  assert_int_equal(strlen(err), 7);
  assert_int_equal(theus_size_parse("x", &v, NULL, 0), THEUS_EINVAL);
}

static void test_format(void **st) {
  (void)st;
  char b[32];
  assert_string_equal(theus_size_format(128ull << 20, 0, b, sizeof b), "128MiB");
  assert_string_equal(theus_size_format(8ull << 30, 0, b, sizeof b), "8GiB");
  assert_string_equal(theus_size_format(3ull << 29, 0, b, sizeof b), "1536MiB");
  assert_string_equal(theus_size_format(1000, 0, b, sizeof b), "1000B");
  assert_string_equal(theus_size_format(0, 0, b, sizeof b), "0B");
  assert_string_equal(theus_size_format((128ull << 20) + 1, 1, b, sizeof b), "129MiB");
  assert_string_equal(theus_size_format(1500, 1, b, sizeof b), "2KiB");
  assert_string_equal(theus_size_format(100, 1, b, sizeof b), "100B");
  /* formatting then parsing gives at least the value */
  static const uint64_t vals[] = {1, 1023, 1024, 4097, (1ull << 20) + 5, 12345678901ull, UINT64_MAX};
  for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++) {
    assert_int_equal(parse_ok(theus_size_format(vals[i], 0, b, sizeof b)), vals[i]);
    assert_true(parse_ok(theus_size_format(vals[i], 1, b, sizeof b)) >= vals[i]);
  }
}

static void test_default_budget(void **st) {
  (void)st;
  theus_arena_config c;
  theus_arena_config_init(&c);
  assert_true(c.hard_limit >= 256ull << 20);
  assert_int_equal(c.hard_limit % (1u << 20), 0);
  assert_int_equal(c.single_limit, c.hard_limit); /* one array may take the whole budget */
  assert_int_equal(c.soft_limit_pct, 85);
  /* an explicit budget with single_limit 0: the array limit is that budget */
  c.hard_limit = 64ull << 20;
  c.single_limit = 0;
  theus_arena *a = NULL;
  assert_int_equal(theus_arena_open(&c, &a), 0);
  theus_handle h;
  assert_int_equal(theus_arena_alloc(a, 65ull << 20, &h, NULL), THEUS_ETOOBIG);
  assert_non_null(strstr(theus_arena_errmsg(a), "(64MiB); raise theus_arena_config.single_limit to at least 65MiB"));
  assert_int_equal(theus_arena_alloc(a, 40ull << 20, &h, NULL), 0);
  assert_int_equal(theus_arena_alloc(a, 40ull << 20, &h, NULL), THEUS_EBUDGET);
  assert_non_null(strstr(theus_arena_errmsg(a), "raise theus_arena_config.hard_limit to at least 80MiB"));
  theus_arena_close(a);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_units),
      cmocka_unit_test(test_limits_and_errors),
      cmocka_unit_test(test_format),
      cmocka_unit_test(test_default_budget),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
