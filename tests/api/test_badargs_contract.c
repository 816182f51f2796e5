/* Bad arguments to <theus/contract.h>: NULL paths, lists, contracts,
 * documents, texts and outputs. Every call runs in a child (badargs.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "badargs.h"
#include "theus/contract.h"

static int noop(theus_ctx *ctx) {
  (void)ctx;
  return 0;
}

static theus_process_fn resolve(const char *name, void *ud) {
  (void)name, (void)ud;
  return noop;
}

static const char *const list[] = {"domain.a", "domain.b.*", NULL};
static const char *const with_null_entry[] = {NULL};

CASE(k_path_check, char err[64];
     return want(theus_path_check(NULL, err, sizeof err), THEUS_EINVAL, "path_check(NULL)") ||
            want(theus_path_check(NULL, NULL, 0), THEUS_EINVAL, "path_check(NULL, NULL, 0)") ||
            want_err(theus_path_check("", err, sizeof err), "path_check(\"\")") ||
            want_err(theus_path_check("domain.", NULL, 0), "path_check(\"domain.\", NULL, 0)") ||
            want_err(theus_path_check("domain.a", err, 0) == 0 ? -1 : 0, "path_check(valid, errlen 0)");)
CASE(k_covers, return want(theus_path_covers(NULL, "domain.a"), 0, "path_covers(NULL, p)") ||
                      want(theus_path_covers("domain.a", NULL), 0, "path_covers(p, NULL)") ||
                      want(theus_path_covers(NULL, NULL), 0, "path_covers(NULL, NULL)");)
CASE(k_list_covers, return want(theus_path_list_covers(NULL, "domain.a"), 0, "path_list_covers(NULL, p)") ||
                           want(theus_path_list_covers(list, NULL), 0, "path_list_covers(list, NULL)") ||
                           want(theus_path_list_covers(with_null_entry, "domain.a"), 0, "path_list_covers({NULL}, p)");)
CASE(k_name_list, return want(theus_name_list_has(NULL, "x"), 0, "name_list_has(NULL, x)") ||
                         want(theus_name_list_has(list, NULL), 0, "name_list_has(list, NULL)");)
CASE(k_retries, theus_contract none = {.name = "p", .fn = noop, .retries = -1},
     odd = {.name = "p", .fn = noop, .retries = -7}, eff = {.name = "p", .fn = noop, .semantic = THEUS_EFFECT};
     return want((int)theus_contract_retries(NULL), 0, "contract_retries(NULL)") ||
            want((int)theus_contract_retries(&none), 0, "contract_retries(retries -1)") ||
            want((int)theus_contract_retries(&odd), 0, "contract_retries(retries -7)") ||
            want((int)theus_contract_retries(&eff), 0, "contract_retries(an effect)");)
CASE(k_overlaps, return want(theus_path_overlaps(NULL, "domain.a"), 0, "path_overlaps(NULL, p)") ||
                        want(theus_path_overlaps("domain.a", NULL), 0, "path_overlaps(p, NULL)");)
CASE(k_check, char err[128]; theus_contract noname = {.fn = noop}, nofn = {.name = "p"};
     theus_contract badin = {.name = "p", .fn = noop, .inputs = list, .outputs = with_null_entry, .parallel = -7,
                             .semantic = (theus_semantic)42, .timeout_ms = -99};
     return want(theus_contract_check(NULL, err, sizeof err), THEUS_EINVAL, "contract_check(NULL)") ||
            want(theus_contract_check(NULL, NULL, 0), THEUS_EINVAL, "contract_check(NULL, NULL, 0)") ||
            want(theus_contract_check(&noname, err, sizeof err), THEUS_EINVAL, "contract_check(name NULL)") ||
            want(theus_contract_check(&nofn, NULL, 0), THEUS_EINVAL, "contract_check(fn NULL)") ||
            want_err(theus_contract_check(&badin, err, sizeof err), "contract_check(semantic 42, timeout -99)");)
CASE(k_copy, theus_contract_release(NULL); theus_contract noname = {.fn = noop};
     return theus_contract_copy(NULL) != NULL || theus_contract_copy(&noname) != NULL;)
CASE(k_sandboxed, return want(theus_contract_sandboxed(NULL), 0, "contract_sandboxed(NULL)");)
CASE(k_parse, theus_contract_doc *d = NULL;
     int r = want(theus_contract_parse(NULL, "x", resolve, NULL, &d), THEUS_EINVAL, "contract_parse(text NULL)");
     theus_contract_doc_release(d); d = NULL;
     r = r || want(theus_contract_parse("{}", "x", resolve, NULL, NULL), THEUS_EINVAL, "contract_parse(out NULL)");
     theus_contract_parse("{\"name\": \"p\", \"function\": \"f\"}", NULL, NULL, NULL, &d); /* legal: fn stays NULL */
     theus_contract_doc_release(d); d = NULL;
     int rc = theus_contract_parse("", "x", resolve, NULL, &d);
     theus_contract_doc_release(d);
     return r || want_err(rc, "contract_parse(\"\")");)
CASE(k_from_json, theus_contract_doc *d = NULL; json_t *arr = json_array();
     int r = want(theus_contract_from_json(NULL, "x", resolve, NULL, &d), THEUS_EINVAL, "from_json(NULL)");
     theus_contract_doc_release(d); d = NULL;
     r = r || want(theus_contract_from_json(arr, "x", resolve, NULL, NULL), THEUS_EINVAL, "from_json(out NULL)");
     int rc = theus_contract_from_json(arr, NULL, resolve, NULL, &d);
     theus_contract_doc_release(d);
     return r || want_err(rc, "from_json(an array)");)
CASE(k_doc, theus_contract_doc_release(NULL);
     return theus_contract_doc_errmsg(NULL) == NULL || theus_contract_doc_get(NULL) != NULL ||
            theus_contract_doc_json(NULL) != NULL;)
CASE(k_to_json, theus_contract noname = {.fn = noop};
     json_t *j = theus_contract_to_json(&noname); json_decref(j);
     return theus_contract_to_json(NULL) != NULL;)
CASE(k_merge, json_t *o = json_pack("{s:i}", "a", 1); json_t *r = theus_merge_patch(NULL, o); json_decref(r);
     r = theus_merge_patch(o, NULL); json_decref(r); r = theus_merge_patch(NULL, NULL); json_decref(r); return 0;)
CASE(k_merge_paths, json_t *o = json_pack("{s:i}", "a", 1); char **v = NULL; size_t n = 0, cap = 0;
     theus_merge_patch_paths(NULL, "domain", &v, &n, &cap); /* a NULL patch is a leaf: writes the prefix */
     return             want(theus_merge_patch_paths(o, NULL, &v, &n, &cap), THEUS_EINVAL, "merge_patch_paths(prefix NULL)") ||
            want(theus_merge_patch_paths(o, "domain", NULL, &n, &cap), THEUS_EINVAL, "merge_patch_paths(paths NULL)") ||
            want(theus_merge_patch_paths(o, "domain", &v, NULL, &cap), THEUS_EINVAL, "merge_patch_paths(n NULL)") ||
            want(theus_merge_patch_paths(o, "domain", &v, &n, NULL), THEUS_EINVAL, "merge_patch_paths(cap NULL)");)

static const badcase contract_cases[] = {
    ENTRY(k_path_check, "theus_path_check(NULL / \"\" / errlen 0)"),
    ENTRY(k_covers, "theus_path_covers(NULLs)"),
    ENTRY(k_list_covers, "theus_path_list_covers(NULLs)"),
    ENTRY(k_name_list, "theus_name_list_has(NULLs)"),
    ENTRY(k_retries, "theus_contract_retries(NULL / retries -1, -7 / an effect)"),
    ENTRY(k_overlaps, "theus_path_overlaps(NULLs)"),
    ENTRY(k_check, "theus_contract_check(NULL / name NULL / fn NULL / bad fields)"),
    ENTRY(k_copy, "theus_contract_copy/release(NULL, name NULL)"),
    ENTRY(k_sandboxed, "theus_contract_sandboxed(NULL)"),
    ENTRY(k_parse, "theus_contract_parse(NULLs, \"\")"),
    ENTRY(k_from_json, "theus_contract_from_json(NULL / out NULL / array)"),
    ENTRY(k_doc, "theus_contract_doc_errmsg/get/json/release(NULL)"),
    ENTRY(k_to_json, "theus_contract_to_json(NULL / name NULL)"),
    ENTRY(k_merge, "theus_merge_patch(NULLs)"),
    ENTRY(k_merge_paths, "theus_merge_patch_paths(NULL patch / prefix / paths / n / cap)"),
};

static void test_contract_h(void **state) {
  (void)state;
  badargs_check(contract_cases, sizeof contract_cases / sizeof contract_cases[0]);
}

int main(void) {
  setvbuf(stdout, NULL, _IONBF, 0);
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_contract_h)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
