/* theus-c — fuzz harness: the pipeline expression language (if / while).
 *
 * Input: expression text. It is parsed, and if it parses it is evaluated
 * (as a value and as a condition) against a fixed domain with numbers,
 * strings, booleans, nulls, objects and arrays, so that paths, comparisons
 * and arithmetic all have something to find.
 */
#include <jansson.h>

#include "expr.h"
#include "fuzz_util.h"
#include "theus/error.h"

static const char domain_text[] =
    "{\"n\": 3, \"x\": 2.5, \"neg\": -7, \"zero\": 0, \"big\": 9007199254740993, \"huge\": 1e308,"
    " \"s\": \"abc\", \"empty\": \"\", \"t\": true, \"f\": false, \"nil\": null,"
    " \"o\": {\"a\": {\"b\": 1}, \"k\": \"v\"}, \"a\": [1, 2, [3, {\"c\": 4}]], \"sig_stop\": false}";

static json_t *domain, *empty;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (!domain) {
    json_error_t je;
    domain = json_loads(domain_text, 0, &je); /* kept for the whole run */
    empty = json_object();
    FUZZ_ASSERT(domain != NULL && empty != NULL);
  }
  char *text = fuzz_cstr(data, size);
  char err[256];
  int col = 0;
  theus__expr *e = NULL;
  int rc = theus__expr_parse(text, &e, err, sizeof err, &col);
  if (rc == 0) {
    FUZZ_ASSERT(e != NULL);
    FUZZ_ASSERT(strcmp(theus__expr_text(e), text) == 0);
    json_t *v = NULL;
    if (theus__expr_eval(e, domain, &v, err, sizeof err, &col, NULL) == 0) FUZZ_ASSERT(v != NULL);
    json_decref(v);
    bool b;
    (void)theus__expr_eval_bool(e, domain, &b, err, sizeof err, &col, NULL);
    (void)theus__expr_eval_bool(e, empty, &b, err, sizeof err, NULL, NULL);
    theus__expr_free(e);
  } else if (rc == THEUS_EPARSE) {
    FUZZ_ASSERT(e == NULL);
    FUZZ_ASSERT(col >= 1 && (size_t)col <= strlen(text) + 1);
  }
  free(text);
  return 0;
}
