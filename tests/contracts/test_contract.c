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
  char err[256] = "";
  theus_contract c = {.name = "inc", .fn = dummy, .inputs = in, .outputs = out, .errors = errs, .parallel = 1};
  assert_int_equal(theus_contract_check(&c, err, sizeof err), 0);
}

/* The calls the engine uses at registration and in ctx checks. */
static void test_copy_and_lists(void **state) {
  (void)state;
  char name[] = "inc", in0[] = "domain.items.*";
  const char *in[] = {in0, NULL}, *errs[] = {"E_RANGE", NULL};
  int ud;
  theus_contract c = {.name = name, .fn = dummy, .inputs = in, .errors = errs, .timeout_ms = 7, .userdata = &ud};
  theus_contract *d = theus_contract_copy(&c);
  assert_non_null(d);
  name[0] = 'X'; /* the copy owns its strings */
  in0[0] = 'X';
  assert_string_equal(d->name, "inc");
  assert_true(d->fn == dummy && d->userdata == &ud && d->timeout_ms == 7);
  assert_true(theus_path_list_covers(d->inputs, "domain.items.a"));
  assert_false(theus_path_list_covers(d->inputs, "domain.items"));
  assert_false(theus_path_list_covers(d->outputs, "domain.x")); /* NULL list: copied as empty */
  assert_false(theus_path_list_covers(NULL, "domain.x"));
  assert_true(theus_name_list_has(d->errors, "E_RANGE"));
  assert_false(theus_name_list_has(d->errors, "E_OTHER"));
  assert_false(theus_name_list_has(NULL, "E_RANGE"));
  theus_contract_release(d);
  theus_contract_release(NULL);
  assert_null(theus_contract_copy(NULL));
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
  assert_int_equal(theus_contract_check(&c, NULL, 0), 0); /* filled by a map's write window, sandboxed */
  c.sandbox = THEUS_SANDBOX_OFF;
  expect_reject(&c, "outputs[0]");
  c.sandbox = THEUS_SANDBOX_DEFAULT;
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
  assert_int_equal(theus_contract_parse(text, "c.json", resolve, NULL, &d), 0);
  assert_string_equal(theus_contract_doc_errmsg(d), "");
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

/* sandbox: default means on for parallel processes, never for local ones. */
static void test_sandbox_field(void **state) {
  (void)state;
  theus_contract c = {.name = "p", .fn = dummy, .parallel = 1};
  assert_true(theus_contract_sandboxed(&c));
  c.sandbox = THEUS_SANDBOX_OFF;
  assert_false(theus_contract_sandboxed(&c));
  assert_int_equal(theus_contract_check(&c, NULL, 0), 0);
  c.sandbox = THEUS_SANDBOX_ON;
  assert_true(theus_contract_sandboxed(&c));
  c.parallel = 0;
  assert_false(theus_contract_sandboxed(&c));
  expect_reject(&c, "sandbox on");
  c.sandbox = THEUS_SANDBOX_DEFAULT;
  assert_false(theus_contract_sandboxed(&c));
  c.sandbox = (theus_sandbox)7;
  expect_reject(&c, "sandbox");

  const char *text = "{\"name\": \"s\", \"function\": \"dummy\", \"parallel\": true, \"sandbox\": \"off\"}";
  theus_contract_doc *d = NULL;
  assert_int_equal(theus_contract_parse(text, "c.json", resolve, NULL, &d), 0);
  assert_int_equal(theus_contract_doc_get(d)->sandbox, THEUS_SANDBOX_OFF);
  assert_false(theus_contract_sandboxed(theus_contract_doc_get(d)));
  json_t *j = theus_contract_to_json(theus_contract_doc_get(d));
  assert_string_equal(json_string_value(json_object_get(j, "sandbox")), "off");
  json_decref(j);
  theus_contract_doc_release(d);
  const char *dflt = "{\"name\": \"s\", \"function\": \"dummy\", \"parallel\": true}";
  assert_int_equal(theus_contract_parse(dflt, "c.json", resolve, NULL, &d), 0);
  assert_int_equal(theus_contract_doc_get(d)->sandbox, THEUS_SANDBOX_DEFAULT);
  assert_true(theus_contract_sandboxed(theus_contract_doc_get(d)));
  theus_contract_doc_release(d);
}

static void expect_parse_error(const char *text, int code, const char *needle) {
  theus_contract_doc *d = NULL;
  assert_int_equal(theus_contract_parse(text, "c.json", resolve, NULL, &d), code);
  assert_non_null(d); /* a failed parse hands the document back with its message */
  assert_null(theus_contract_doc_get(d));
  char err[768];
  snprintf(err, sizeof err, "%s", theus_contract_doc_errmsg(d));
  theus_contract_doc_release(d);
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
  expect_parse_error("{\"name\": \"x\", \"function\": \"dummy\",\n \"sandbox\": true}", THEUS_EPARSE,
                     "c.json:2:2: field 'sandbox'");
  expect_parse_error("{\"name\": \"x\", \"function\": \"dummy\", \"sandbox\": \"on\"}", THEUS_EINVAL, "sandbox on");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_valid_contract),
      cmocka_unit_test(test_copy_and_lists),
      cmocka_unit_test(test_contradictions_name_the_field),
      cmocka_unit_test(test_json_roundtrip),
      cmocka_unit_test(test_json_errors_have_positions),
      cmocka_unit_test(test_sandbox_field),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
