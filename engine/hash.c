/* Content hashes (xxHash's XXH3, from libxxhash: see docs/ledger.md for why
 * not a cryptographic hash) and the key buffer they hash. JSON values are
 * hashed as their compact text with sorted keys (the bytes jansson's
 * json_dumpb writes with JSON_COMPACT | JSON_SORT_KEYS), which is canonical:
 * equal values (object keys in any order) give equal bytes. */
#include <locale.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#include "engine_internal.h"

int theus__kbuf_grow(theus__kbuf *b, size_t more) {
  if (b->failed)
    return -1;
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

/* ---- JSON text -------------------------------------------------------------
 * What jansson's json_dumpb(v, JSON_COMPACT [| JSON_SORT_KEYS]) writes, byte
 * for byte (tests/engine/test_ledger.c checks it against jansson), without
 * the allocations jansson makes per call (a hash table of the containers on
 * the path, a "%p" key per container, a sorted key array) and without printf
 * for integers (written by hand: printf is most of a short line's cost). */

#define JSON_MAX_DEPTH 2048 /* deeper (or a cycle): failed, as an allocation failure is */

static inline void put_c(theus__kbuf *b, char c) {
  if (b->n < b->cap || !theus__kbuf_grow(b, 1))
    b->p[b->n++] = c;
}

void theus__kbuf_u64(theus__kbuf *b, uint64_t v) {
  static const char pairs[201] = "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
                                 "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
                                 "8081828384858687888990919293949596979899";
  static const uint64_t pow10[20] = {1ull, 10ull, 100ull, 1000ull, 10000ull, 100000ull, 1000000ull, 10000000ull,
                                     100000000ull, 1000000000ull, 10000000000ull, 100000000000ull,
                                     1000000000000ull, 10000000000000ull, 100000000000000ull,
                                     1000000000000000ull, 10000000000000000ull, 100000000000000000ull,
                                     1000000000000000000ull, 10000000000000000000ull};
  size_t n = 1;
  while (n < 20 && v >= pow10[n]) /* digits by comparison: no division */
    n++;
  char *p = theus__kbuf_room(b, n);
  if (!p)
    return;
  b->n += n;
  p += n;
  while (v >= 100) { /* two digits per division (a multiplication) */
    uint64_t q = v / 100;
    p -= 2;
    memcpy(p, pairs + 2 * (v - q * 100), 2);
    v = q;
  }
  if (v >= 10)
    memcpy(p - 2, pairs + 2 * v, 2);
  else
    p[-1] = (char)('0' + v);
}

void theus__kbuf_i64(theus__kbuf *b, int64_t v) {
  if (v < 0)
    put_c(b, '-');
  theus__kbuf_u64(b, v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v);
}

/* jansson's real format: %.17g, with ".0" when it reads as an integer, the
 * locale's decimal point as '.', and no '+' or leading zeros in the exponent. */
static void put_real(theus__kbuf *b, double v) {
  char buf[40];
  int n = snprintf(buf, sizeof buf, "%.17g", v);
  if (n < 0 || (size_t)n >= sizeof buf - 2) {
    b->failed = -1;
    return;
  }
  char point = *localeconv()->decimal_point, *at;
  if (point != '.' && (at = strchr(buf, point)))
    *at = '.';
  if (!strchr(buf, '.') && !strchr(buf, 'e')) {
    memcpy(buf + n, ".0", 3);
    n += 2;
  }
  char *exp = strchr(buf, 'e');
  if (exp) {
    char *from = exp + 1, *to = exp + 1;
    if (*from == '-')
      *to++ = *from++;
    else if (*from == '+')
      from++;
    while (*from == '0' && from[1])
      from++;
    memmove(to, from, strlen(from) + 1);
    n = (int)strlen(buf);
  }
  theus__kbuf_add(b, buf, (size_t)n);
}

/* A string: '"', '\\' and control characters escaped as jansson does; the
 * rest (UTF-8, which jansson checked when the value was made) as is. */
static void put_string(theus__kbuf *b, const char *s, size_t n) {
  static const char hex[] = "0123456789ABCDEF";
  put_c(b, '"');
  size_t run = 0;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c >= 0x20 && c != '"' && c != '\\')
      continue;
    theus__kbuf_add(b, s + run, i - run);
    run = i + 1;
    char esc[6] = {'\\', (char)c, 0, 0, 0, 0};
    size_t len = 2;
    switch (c) {
    case '\b': esc[1] = 'b'; break;
    case '\f': esc[1] = 'f'; break;
    case '\n': esc[1] = 'n'; break;
    case '\r': esc[1] = 'r'; break;
    case '\t': esc[1] = 't'; break;
    case '"':
    case '\\': break;
    default:
      memcpy(esc + 1, "u00", 3);
      esc[4] = hex[c >> 4];
      esc[5] = hex[c & 15];
      len = 6;
    }
    theus__kbuf_add(b, esc, len);
  }
  theus__kbuf_add(b, s + run, n - run);
  put_c(b, '"');
}

typedef struct key_len {
  const char *key;
  size_t len;
} key_len;

/* jansson's key order: bytes, then the shorter first. */
static int key_cmp(const void *a, const void *b) {
  const key_len *x = a, *y = b;
  int r = memcmp(x->key, y->key, x->len < y->len ? x->len : y->len);
  return r ? r : (x->len > y->len) - (x->len < y->len);
}

static void put_value(theus__kbuf *b, const json_t *v, int sort_keys, int depth);

static void put_member(theus__kbuf *b, const json_t *obj, const key_len *k, int first, int sort_keys, int depth) {
  if (!first)
    put_c(b, ',');
  put_string(b, k->key, k->len);
  put_c(b, ':');
  put_value(b, json_object_getn(obj, k->key, k->len), sort_keys, depth);
}

/* An object's members in key order: a few keys sorted on the stack. */
static void put_sorted(theus__kbuf *b, const json_t *obj, int depth) {
  key_len small[16], *keys = small;
  size_t n = json_object_size(obj), i = 0;
  if (n > 16 && !(keys = malloc(n * sizeof *keys))) {
    b->failed = -1;
    return;
  }
  for (void *it = json_object_iter((json_t *)obj); it && i < n; it = json_object_iter_next((json_t *)obj, it))
    keys[i++] = (key_len){json_object_iter_key(it), json_object_iter_key_len(it)};
  if (n > 16) {
    qsort(keys, i, sizeof *keys, key_cmp);
  } else {
    for (size_t j = 1; j < i; j++) /* insertion sort */
      for (size_t k = j; k && key_cmp(&keys[k - 1], &keys[k]) > 0; k--) {
        key_len t = keys[k];
        keys[k] = keys[k - 1];
        keys[k - 1] = t;
      }
  }
  for (size_t j = 0; j < i; j++)
    put_member(b, obj, &keys[j], j == 0, 1, depth);
  if (keys != small)
    free(keys);
}

static void put_object(theus__kbuf *b, const json_t *obj, int sort_keys, int depth) {
  put_c(b, '{');
  if (sort_keys && json_object_size(obj) > 1) {
    put_sorted(b, obj, depth);
  } else {
    int first = 1;
    for (void *it = json_object_iter((json_t *)obj); it; it = json_object_iter_next((json_t *)obj, it)) {
      key_len k = {json_object_iter_key(it), json_object_iter_key_len(it)};
      if (!first)
        put_c(b, ',');
      first = 0;
      put_string(b, k.key, k.len);
      put_c(b, ':');
      put_value(b, json_object_iter_value(it), sort_keys, depth);
    }
  }
  put_c(b, '}');
}

static void put_value(theus__kbuf *b, const json_t *v, int sort_keys, int depth) {
  if (b->failed)
    return;
  if (!v || depth > JSON_MAX_DEPTH) {
    b->failed = -1;
    return;
  }
  switch (json_typeof(v)) {
  case JSON_NULL: theus__kbuf_add(b, "null", 4); break;
  case JSON_TRUE: theus__kbuf_add(b, "true", 4); break;
  case JSON_FALSE: theus__kbuf_add(b, "false", 5); break;
  case JSON_INTEGER: theus__kbuf_i64(b, json_integer_value(v)); break;
  case JSON_REAL: put_real(b, json_real_value(v)); break;
  case JSON_STRING: put_string(b, json_string_value(v), json_string_length(v)); break;
  case JSON_ARRAY:
    put_c(b, '[');
    for (size_t i = 0, n = json_array_size(v); i < n; i++) {
      if (i)
        put_c(b, ',');
      put_value(b, json_array_get(v, i), sort_keys, depth + 1);
    }
    put_c(b, ']');
    break;
  case JSON_OBJECT: put_object(b, v, sort_keys, depth + 1); break;
  }
}

void theus__kbuf_json(theus__kbuf *b, const json_t *v, int sort_keys) {
  static const char absent[] = "\001absent";
  if (!v)
    theus__kbuf_add(b, absent, sizeof absent);
  else
    put_value(b, v, sort_keys, 0);
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
  theus__kbuf_json(&b, v, 1);
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
