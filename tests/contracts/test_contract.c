/* contracts/contract: validation naming the field, JSON form with positions. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "theus/contract.h"

static int dummy(theus_ctx *ctx) {
  (void)ctx;
  return 0;
}

static theus_process_fn resolve(const char *name, void *ud) {
  (void)ud;
  return !strcmp(name, "dummy") ? dummy : NULL;
}

static void test_valid_contract(void **state) {
  (void)state;
  const char *in[] = {"domain.counter", "heavy.frame", NULL}, *out[] = {"domain.items.*", NULL},
             *errs[] = {"E_RANGE", NULL};
  theus_contract c = {.name = "inc", .fn = dummy, .inputs = in, .outputs = out, .errors = errs, .parallel = 1};
  char err[256] = "";
  assert_int_equal(theus_contract_check(&c, err, sizeof err), 0);
}

static void expect_reject(const theus_contract *c, const char *needle) {
  char err[512] = "";
  assert_int_equal(theus_contract_check(c, err, sizeof err), THEUS_EINVAL);
  if (!strstr(err, needle))
    fail_msg("message '%s' does not mention '%s'", err, needle);
}

static void test_contradictions_name_the_field(void **state) {
  (void)state;
  const char *bad_path[] = {"domain.ok", "domian.x", NULL};
  const char *sig[] = {"domain.sig_stop", NULL};
  const char *heavy_out[] = {"heavy.frame", NULL};
  const char *dup_err[] = {"E_X", "E_X", NULL};
  theus_contract c = {.name = "p", .fn = dummy};
  c.inputs = bad_path;
  expect_reject(&c, "inputs[1]");
  c.inputs = sig;
  expect_reject(&c, "effect-only");
  c.semantic = THEUS_EFFECT;
  assert_int_equal(theus_contract_check(&c, NULL, 0), 0); /* fine for an effect process */
  c.parallel = 1;
  expect_reject(&c, "parallel");
  c.inputs = NULL;
  c.semantic = THEUS_PURE;
  c.outputs = heavy_out;
  expect_reject(&c, "outputs[0]");
  c.outputs = NULL;
  c.errors = dup_err;
  expect_reject(&c, "errors[1]");
  c.errors = NULL;
  c.fn = NULL;
  expect_reject(&c, "fn");
  c.fn = dummy;
  c.name = "";
  expect_reject(&c, "name");
}

static void test_json_roundtrip(void **state) {
  (void)state;
  const char *text = "{\"name\": \"scale\", \"function\": \"dummy\", \"inputs\": [\"domain.k\"],\n"
                     " \"outputs\": [\"domain.y\"], \"semantic\": \"pure\", \"parallel\": true,\n"
                     " \"errors\": [\"E_RANGE\"], \"timeout_ms\": 500}";
  theus_contract_doc *d = NULL;
  char err[256] = "";
  assert_int_equal(theus_contract_parse(text, "c.json", resolve, NULL, &d, err, sizeof err), 0);
  theus_contract *c = theus_contract_doc_get(d);
  assert_string_equal(c->name, "scale");
  assert_ptr_equal(c->fn, dummy);
  assert_string_equal(c->inputs[0], "domain.k");
  assert_null(c->inputs[1]);
  assert_true(c->parallel);
  assert_int_equal(c->timeout_ms, 500);
  json_t *j = theus_contract_to_json(c);
  assert_string_equal(json_string_value(json_object_get(j, "semantic")), "pure");
  assert_string_equal(json_string_value(json_array_get(json_object_get(j, "errors"), 0)), "E_RANGE");
  json_decref(j);
  theus_contract_doc_release(d);
}

static void expect_parse_error(const char *text, int code, const char *needle) {
  theus_contract_doc *d = (theus_contract_doc *)1;
  char err[512] = "";
  assert_int_equal(theus_contract_parse(text, "c.json", resolve, NULL, &d, err, sizeof err), code);
  assert_null(d);
  if (!strstr(err, needle))
    fail_msg("message '%s' does not mention '%s'", err, needle);
}

static void test_json_errors_have_positions(void **state) {
  (void)state;
  expect_parse_error("{\"name\": \"x\",\n \"inputs\": [1]}", THEUS_EPARSE, "c.json:2:2: field 'inputs'");
  expect_parse_error("{\"name\": \"x\",\n  \"inputs\": [}", THEUS_EPARSE, "c.json:2:");
  expect_parse_error("{\"name\": \"x\", \"function\": \"nope\"}", THEUS_ENOTFOUND, "function 'nope'");
  expect_parse_error("{\"name\": \"x\", \"function\": \"dummy\", \"semantic\": \"maybe\"}", THEUS_EPARSE,
                     "semantic");
  expect_parse_error("{\"name\": \"x\", \"function\": \"dummy\", \"outputs\": [\"domain.\"]}", THEUS_EINVAL,
                     "outputs[0]");
  expect_parse_error("[1]", THEUS_EPARSE, "must be a JSON object");
  expect_parse_error("{\"function\": \"dummy\"}", THEUS_EPARSE, "'name'");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_valid_contract),
      cmocka_unit_test(test_contradictions_name_the_field),
      cmocka_unit_test(test_json_roundtrip),
      cmocka_unit_test(test_json_errors_have_positions),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
