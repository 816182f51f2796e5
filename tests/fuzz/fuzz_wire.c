/* theus-c — fuzz harness: the task path's value encoding (engine/wire.c),
 * whose decoder reads bytes a worker wrote (untrusted).
 *
 * Input, by its first byte:
 *   'J'  the rest is JSON text: a value jansson loads must survive
 *        encode -> decode unchanged (json_equal), and its encoding must take
 *        the length theus__wire_put reports even when the buffer is short;
 *   else the whole input is wire bytes: decoding them must fail cleanly or
 *        give a value whose encoding decodes to an equal value.
 * Besides memory safety (ASan/UBSan): no leak of a partly decoded value. */
#include <jansson.h>

#include "engine_internal.h"
#include "fuzz_util.h"

static void roundtrip(const json_t *v) {
  size_t need = 0;
  int rc = theus__wire_put(v, NULL, 0, &need);
  if (rc == THEUS_ELIMIT) return; /* nested deeper than the wire allows: refused, not encoded */
  FUZZ_ASSERT(rc == THEUS_ETRUNC || (rc == 0 && need == 0));
  unsigned char *buf = malloc(need ? need : 1);
  if (!buf) abort();
  size_t len = 0;
  FUZZ_ASSERT(theus__wire_put(v, buf, need, &len) == 0 && len == need);
  int grc = -1;
  json_t *back = theus__wire_get(buf, len, &grc);
  FUZZ_ASSERT(back && grc == 0 && json_equal(back, v));
  if (len) { /* one byte short is always refused */
    json_t *cut = theus__wire_get(buf, len - 1, &grc);
    FUZZ_ASSERT(!cut && grc == THEUS_EPARSE);
  }
  json_decref(back);
  free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size && data[0] == 'J') {
    json_error_t je;
    json_t *v = json_loadb((const char *)data + 1, size - 1, JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
    if (v) roundtrip(v);
    json_decref(v);
    return 0;
  }
  int rc = -1;
  json_t *v = theus__wire_get(data, size, &rc);
  FUZZ_ASSERT(v ? rc == 0 : rc == THEUS_EPARSE || rc == THEUS_ENOMEM);
  if (v) roundtrip(v);
  json_decref(v);
  return 0;
}
