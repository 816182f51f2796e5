/* theus-c — the task path's value encoding (engine/wire.c): round trips,
 * lengths when the buffer is short, the inputs object built from paths, and
 * the refusal of every kind of malformed bytes a worker could send. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "engine_internal.h"

static json_t *roundtrip(const json_t *v) {
  unsigned char buf[4096];
  size_t len = 0;
  assert_int_equal(theus__wire_put(v, buf, sizeof buf, &len), 0);
  int rc = -1;
  json_t *back = theus__wire_get(buf, len, &rc);
  assert_int_equal(rc, 0);
  assert_non_null(back);
  return back;
}

static void test_roundtrip_every_type(void **state) {
  (void)state;
  const char *texts[] = {"{}", "[]", "null", "true", "false", "0", "-9223372036854775808", "9223372036854775807",
                         "[127,128,-128,-129,32767,2147483647,2147483648,-2147483648,-2147483649]",
                         "1.5e300", "-0.0", "\"\"", "\"caf\\u00e9 \\u0000 nul\"",
                         "{\"a\":{\"b\":[1,{\"c\":null}],\"\":\"empty key\"},\"z\":[[],{}]}"};
  for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
    json_t *v = json_loads(texts[i], JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
    assert_non_null(v);
    json_t *back = roundtrip(v);
    if (!json_equal(v, back)) fail_msg("round trip of %s changed it", texts[i]);
    json_decref(back);
    json_decref(v);
  }
  json_t *r = json_real(0.1); /* bits, not text: the same double comes back */
  json_t *back = roundtrip(r);
  assert_true(json_real_value(back) == 0.1);
  json_decref(back);
  json_decref(r);
}

/* Integers take the smallest width: a small one two bytes, as its text. */
static void test_integer_widths(void **state) {
  (void)state;
  const struct {
    json_int_t v;
    size_t len;
  } cases[] = {{0, 2}, {-128, 2}, {127, 2}, {128, 5}, {-129, 5}, {INT32_MAX, 5}, {INT32_MIN, 5},
               {(json_int_t)INT32_MAX + 1, 9}, {(json_int_t)INT32_MIN - 1, 9}, {INT64_MIN, 9}};
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    json_t *v = json_integer(cases[i].v);
    unsigned char buf[16];
    size_t len = 0;
    assert_int_equal(theus__wire_put(v, buf, sizeof buf, &len), 0);
    if (len != cases[i].len) fail_msg("%lld took %zu bytes, want %zu", (long long)cases[i].v, len, cases[i].len);
    json_t *back = roundtrip(v);
    assert_int_equal(json_integer_value(back), cases[i].v);
    json_decref(back);
    json_decref(v);
  }
}

static void test_short_buffer_reports_length(void **state) {
  (void)state;
  json_t *v = json_pack("{s:[i,i,s]}", "k", 1, 2, "three");
  unsigned char buf[256];
  size_t full = 0, len = 0;
  assert_int_equal(theus__wire_put(v, buf, sizeof buf, &full), 0);
  for (size_t cap = 0; cap < full; cap++) {
    assert_int_equal(theus__wire_put(v, buf, cap, &len), THEUS_ETRUNC);
    assert_int_equal(len, full);
  }
  int rc;
  for (size_t n = 0; n < full; n++) /* every truncation is refused */
    assert_null(theus__wire_get(buf, n, &rc)), assert_int_equal(rc, THEUS_EPARSE);
  json_decref(v);
}

static void test_depth_limit(void **state) {
  (void)state;
  json_t *v = json_array();
  for (unsigned i = 0; i < THEUS__WIRE_MAX_DEPTH + 1; i++) {
    json_t *outer = json_array();
    json_array_append_new(outer, v);
    v = outer;
  }
  unsigned char buf[8192];
  size_t len;
  assert_int_equal(theus__wire_put(v, buf, sizeof buf, &len), THEUS_ELIMIT);
  json_decref(v);
  /* the decoder refuses the same depth without recursing further */
  memset(buf, 'a', sizeof buf);
  for (size_t i = 0; i + 5 <= sizeof buf; i += 5) memset(buf + i + 1, 0, 4), buf[i + 1] = 1;
  int rc;
  assert_null(theus__wire_get(buf, sizeof buf, &rc));
  assert_int_equal(rc, THEUS_EPARSE);
}

/* Bytes a worker could send, each malformed in one way. */
static void test_malformed_refused(void **state) {
  (void)state;
  double nan = NAN, inf = INFINITY;
  unsigned char b[64];
  int rc;
  const unsigned char *bad[] = {
      (const unsigned char *)"x",                      /* unknown tag */
      (const unsigned char *)"nn",                     /* trailing byte */
      (const unsigned char *)"s\x05\0\0\0abc",         /* string longer than the bytes */
      (const unsigned char *)"s\x02\0\0\0\xc3\x28",    /* bad UTF-8 */
      (const unsigned char *)"a\xff\xff\xff\xff",      /* a count no buffer holds */
      (const unsigned char *)"o\x01\0\0\0\x02\0\0\0a\0n", /* NUL in a key */
      (const unsigned char *)"o\x01\0\0\0\x01\0\0\0\xffn", /* bad UTF-8 in a key */
      (const unsigned char *)"o\x01\0\0\0\x01\0\0\0k",   /* key without its value */
      (const unsigned char *)"i\x01\x02",              /* short integer */
  };
  const size_t lens[] = {1, 2, 8, 7, 5, 12, 11, 10, 3};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    json_t *v = theus__wire_get(bad[i], lens[i], &rc);
    if (v || rc != THEUS_EPARSE) fail_msg("malformed case %zu was accepted (rc %d)", i, rc);
  }
  b[0] = 'r';
  memcpy(b + 1, &nan, sizeof nan);
  assert_null(theus__wire_get(b, 9, &rc));
  assert_int_equal(rc, THEUS_EPARSE);
  memcpy(b + 1, &inf, sizeof inf);
  assert_null(theus__wire_get(b, 9, &rc));
  assert_int_equal(rc, THEUS_EPARSE);
}

/* The inputs object: sorted paths (none under another) become nested
 * objects, absent ones are left out. */
static void test_paths_object(void **state) {
  (void)state;
  json_t *dom = json_loads("{\"q\":{\"a\":{\"b\":1,\"x\":2},\"c\":{\"d\":{\"e\":3},\"f\":[4]},\"h\":\"s\"},\"top\":true}",
                           0, NULL);
  assert_non_null(dom);
  const char *paths[] = {"domain.q.a.b", "domain.q.c.d.e", "domain.q.c.f", "domain.q.h", "domain.q.missing.y",
                         "domain.top"};
  unsigned char buf[512];
  size_t len = 0;
  assert_int_equal(theus__wire_put_paths(dom, paths, 6, 7, buf, sizeof buf, &len), 0);
  int rc;
  json_t *got = theus__wire_get(buf, len, &rc);
  json_t *want = json_loads("{\"q\":{\"a\":{\"b\":1},\"c\":{\"d\":{\"e\":3},\"f\":[4]},\"h\":\"s\"},\"top\":true}", 0,
                            NULL);
  assert_non_null(got);
  if (!json_equal(got, want)) fail_msg("%s", json_dumps(got, JSON_COMPACT));
  size_t need = 0;
  assert_int_equal(theus__wire_put_paths(dom, paths, 6, 7, buf, 10, &need), THEUS_ETRUNC);
  assert_int_equal(need, len);
  assert_int_equal(theus__wire_put_paths(dom, paths, 0, 7, buf, sizeof buf, &len), 0);
  json_t *empty = theus__wire_get(buf, len, &rc);
  assert_true(json_is_object(empty) && json_object_size(empty) == 0);
  json_decref(empty);
  json_decref(got);
  json_decref(want);
  json_decref(dom);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_roundtrip_every_type), cmocka_unit_test(test_integer_widths),
      cmocka_unit_test(test_short_buffer_reports_length),
      cmocka_unit_test(test_depth_limit),          cmocka_unit_test(test_malformed_refused),
      cmocka_unit_test(test_paths_object),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
