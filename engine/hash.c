/* Content hashes (xxHash's XXH3, from libxxhash: see docs/ledger.md for why
 * not a cryptographic hash) and the key buffer they hash. JSON values are
 * hashed as jansson's compact dump with sorted keys, which is canonical:
 * equal values (object keys in any order) give equal bytes. */
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#include "engine_internal.h"

static int kbuf_reserve(theus__kbuf *b, size_t more) {
  if (b->n + more <= b->cap)
    return 0;
  size_t cap = b->cap * 2 > b->n + more ? b->cap * 2 : b->n + more;
  char *p = b->p == b->stack ? malloc(cap) : realloc(b->p, cap);
  if (!p)
    return b->failed = -1;
  if (b->p == b->stack)
    memcpy(p, b->stack, b->n);
  b->p = p;
  b->cap = cap;
  return 0;
}

void theus__kbuf_init(theus__kbuf *b) {
  b->p = b->stack;
  b->n = 0;
  b->cap = sizeof b->stack;
  b->failed = 0;
}

void theus__kbuf_fini(theus__kbuf *b) {
  if (b->p != b->stack)
    free(b->p);
  theus__kbuf_init(b);
}

void theus__kbuf_add(theus__kbuf *b, const void *p, size_t n) {
  if (kbuf_reserve(b, n))
    return;
  memcpy(b->p + b->n, p, n);
  b->n += n;
}

void theus__kbuf_json(theus__kbuf *b, const json_t *v, size_t flags) {
  static const char absent[] = "\001absent";
  if (!v) {
    theus__kbuf_add(b, absent, sizeof absent);
    return;
  }
  size_t need = json_dumpb(v, b->p + b->n, b->cap - b->n, flags);
  if (need > b->cap - b->n) { /* did not fit: grow and dump again */
    if (kbuf_reserve(b, need))
      return;
    need = json_dumpb(v, b->p + b->n, b->cap - b->n, flags);
  }
  b->n += need;
}

uint64_t theus__hash_bytes(const void *p, size_t n) { return XXH3_64bits(p, n); }

void theus__hash128(const void *p, size_t n, uint64_t out[2]) {
  XXH128_hash_t h = XXH3_128bits(p, n);
  out[0] = h.low64;
  out[1] = h.high64;
}

uint64_t theus__hash_json(const json_t *v) {
  theus__kbuf b;
  theus__kbuf_init(&b);
  theus__kbuf_json(&b, v, THEUS__JSON_CANON);
  uint64_t h = b.failed ? 0 : theus__hash_bytes(b.p, b.n);
  theus__kbuf_fini(&b);
  return h;
}

uint64_t theus__harr_hash(theus__harr *a) {
  if (a->live)
    return 0;
  uint64_t h = atomic_load_explicit(&a->hash, memory_order_acquire);
  if (h)
    return h; /* a published array never changes: hashed once */
  const void *p;
  size_t n;
  if (theus_arena_view(a->arena, a->handle, &p, &n))
    return 0;
  h = theus__hash_bytes(p, n);
  atomic_store_explicit(&a->hash, h, memory_order_release);
  return h;
}
