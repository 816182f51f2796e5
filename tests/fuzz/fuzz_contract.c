/* theus-c — fuzz harness: the contract JSON parser (theus_contract_parse).
 *
 * Input: contract JSON text. Functions named "missing" are unknown, every
 * other name resolves. A parsed contract must pass theus_contract_check, its
 * JSON form must parse back to the same contract, and the engine's deep copy
 * must hold the same strings (theus_contract_copy).
 */
#include <jansson.h>

#include "fuzz_util.h"
#include "theus/contract.h"

static int dummy_process(theus_ctx *ctx) {
  (void)ctx;
  return 0;
}

static theus_process_fn resolve(const char *name, void *ud) {
  (void)ud;
  return strcmp(name, "missing") ? dummy_process : NULL;
}

static size_t strv_len(const char *const *v) {
  size_t n = 0;
  while (v && v[n]) n++;
  return n;
}

static void same_strv(const char *const *a, const char *const *b) {
  size_t na = strv_len(a), nb = strv_len(b);
  FUZZ_ASSERT(na == nb);
  for (size_t i = 0; i < na; i++) FUZZ_ASSERT(strcmp(a[i], b[i]) == 0);
}

static void same(const theus_contract *a, const theus_contract *b) {
  FUZZ_ASSERT(strcmp(a->name, b->name) == 0);
  FUZZ_ASSERT(a->parallel == b->parallel && a->semantic == b->semantic && a->timeout_ms == b->timeout_ms);
  FUZZ_ASSERT(a->sandbox == b->sandbox && a->retries == b->retries && a->memo == b->memo);
  same_strv(a->inputs, b->inputs);
  same_strv(a->outputs, b->outputs);
  same_strv(a->errors, b->errors);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char *text = fuzz_cstr(data, size);
  char err[512];
  theus_contract_doc *doc = NULL;
  int rc = theus_contract_parse(text, "fuzz.json", resolve, NULL, &doc);
  FUZZ_ASSERT(doc != NULL); /* sqlite3_open style: the document carries the message */
  FUZZ_ASSERT((rc == 0) == (theus_contract_doc_get(doc) != NULL));
  FUZZ_ASSERT((rc == 0) == (theus_contract_doc_errmsg(doc)[0] == '\0'));
  theus_contract_doc *loose = NULL; /* without a resolver: fn stays NULL */
  if (theus_contract_parse(text, NULL, NULL, NULL, &loose) == 0) FUZZ_ASSERT(theus_contract_doc_get(loose)->fn == NULL);
  theus_contract_doc_release(loose);
  if (rc == 0) {
    theus_contract *c = theus_contract_doc_get(doc);
    FUZZ_ASSERT(c->fn == dummy_process);
    FUZZ_ASSERT(theus_contract_check(c, err, sizeof err) == 0);
    FUZZ_ASSERT(theus_contract_doc_json(doc) != NULL);
    json_t *j = theus_contract_to_json(c); /* no "function": parse it back without a resolver */
    FUZZ_ASSERT(j != NULL);
    theus_contract_doc *back = NULL;
    FUZZ_ASSERT(theus_contract_from_json(j, "roundtrip", NULL, NULL, &back) == 0);
    same(c, theus_contract_doc_get(back));
    theus_contract_doc_release(back);
    json_decref(j);
    theus_contract *copy = theus_contract_copy(c);
    FUZZ_ASSERT(copy != NULL);
    same(c, copy);
    theus_contract_release(copy);
  }
  theus_contract_doc_release(doc);
  free(text);
  return 0;
}
