/* The task path's value encoding (docs/workers.md, "Task path"): domain
 * inputs, args, patches and return values cross between the orchestrator
 * and its workers as a tagged binary form of a JSON value, not as JSON text.
 * Both ends are the same program on the same machine (workers are forks),
 * so numbers travel in host byte order and are never formatted or parsed.
 *
 * Why not jansson's text: jansson 2.14 spends about 250 ns per container on
 * either side (a dump keeps every open container in a hashtable keyed by
 * its formatted address, to detect cycles; a load lexes byte by byte), which
 * for the small values a step ships was about a fifth of a parallel step.
 * Building the same values with jansson's constructors costs a third of it.
 *
 *   value := 'o' u32 n (u32 klen, key bytes, value){n}   object
 *          | 'a' u32 n value{n}                          array
 *          | 's' u32 len bytes                           string (UTF-8)
 *          | 'k' int8 | 'j' int32 | 'i' int64            integers, the smallest width that holds them
 *          | 'r' double                                  reals
 *          | 't' | 'f' | 'n'                             true, false, null
 *
 * Bytes from a worker are untrusted: the decoder checks every length
 * against the buffer, the nesting depth, UTF-8 (through jansson) and finite
 * reals, and refuses trailing bytes. tests/fuzz/fuzz_wire.c fuzzes it. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine_internal.h"

typedef struct wbuf {
  unsigned char *p;
  size_t cap, at;
  int short_; /* ran out of room: at keeps counting what it needs */
} wbuf;

static void put(wbuf *w, const void *src, size_t n) {
  if (!w->short_ && n <= w->cap - w->at)
    memcpy(w->p + w->at, src, n);
  else
    w->short_ = 1;
  w->at += n;
}

static void put_u32(wbuf *w, size_t v) {
  uint32_t u = (uint32_t)v;
  put(w, &u, sizeof u);
}

static void put_tag(wbuf *w, char tag) { put(w, &tag, 1); }

static int put_value(wbuf *w, const json_t *v, unsigned depth);

/* The smallest of three widths: small counters and indexes (most integers)
 * take two bytes, as their text does. */
static void put_integer(wbuf *w, int64_t i) {
  if (i >= INT8_MIN && i <= INT8_MAX) {
    int8_t b = (int8_t)i;
    put_tag(w, 'k');
    put(w, &b, sizeof b);
  } else if (i >= INT32_MIN && i <= INT32_MAX) {
    int32_t h = (int32_t)i;
    put_tag(w, 'j');
    put(w, &h, sizeof h);
  } else {
    put_tag(w, 'i');
    put(w, &i, sizeof i);
  }
}

static int put_object(wbuf *w, const json_t *v, unsigned depth) {
  put_tag(w, 'o');
  put_u32(w, json_object_size(v));
  const char *k;
  size_t kl;
  json_t *x;
  json_object_keylen_foreach((json_t *)v, k, kl, x) {
    put_u32(w, kl);
    put(w, k, kl);
    int rc = put_value(w, x, depth + 1);
    if (rc)
      return rc;
  }
  return 0;
}

static int put_array(wbuf *w, const json_t *v, unsigned depth) {
  put_tag(w, 'a');
  put_u32(w, json_array_size(v));
  for (size_t i = 0; i < json_array_size(v); i++) {
    int rc = put_value(w, json_array_get(v, i), depth + 1);
    if (rc)
      return rc;
  }
  return 0;
}

static int put_value(wbuf *w, const json_t *v, unsigned depth) {
  if (depth > THEUS__WIRE_MAX_DEPTH)
    return THEUS_ELIMIT;
  switch (json_typeof(v)) {
  case JSON_OBJECT:
    return put_object(w, v, depth);
  case JSON_ARRAY:
    return put_array(w, v, depth);
  case JSON_STRING:
    put_tag(w, 's');
    put_u32(w, json_string_length(v));
    put(w, json_string_value(v), json_string_length(v));
    return 0;
  case JSON_INTEGER:
    put_integer(w, (int64_t)json_integer_value(v));
    return 0;
  case JSON_REAL: {
    double d = json_real_value(v);
    put_tag(w, 'r');
    put(w, &d, sizeof d);
    return 0;
  }
  default:
    put_tag(w, json_is_true(v) ? 't' : json_is_false(v) ? 'f' : 'n');
    return 0;
  }
}

int theus__wire_put(const json_t *v, void *buf, size_t cap, size_t *len) {
  wbuf w = {buf, cap, 0, 0};
  int rc = v ? put_value(&w, v, 0) : THEUS_EINVAL;
  *len = w.at;
  return rc ? rc : w.short_ ? THEUS_ETRUNC : 0;
}

/* ---- decoding ------------------------------------------------------------ */

typedef struct rbuf {
  const unsigned char *p;
  size_t len, at;
  int rc; /* first failure: THEUS_EPARSE or THEUS_ENOMEM */
} rbuf;

static int take(rbuf *r, void *dst, size_t n) {
  if (n > r->len - r->at) {
    r->rc = THEUS_EPARSE;
    return -1;
  }
  memcpy(dst, r->p + r->at, n);
  r->at += n;
  return 0;
}

/* n bytes in place (a pointer into the buffer), or NULL. */
static const char *span(rbuf *r, size_t n) {
  if (n > r->len - r->at) {
    r->rc = THEUS_EPARSE;
    return NULL;
  }
  const char *s = (const char *)r->p + r->at;
  r->at += n;
  return s;
}

static json_t *fail(rbuf *r, int rc, json_t *partial) {
  if (!r->rc)
    r->rc = rc;
  json_decref(partial);
  return NULL;
}

/* Why jansson refused the n bytes at s as a string or a key: THEUS_EPARSE
 * if they are not UTF-8, THEUS_ENOMEM if memory ran out. Decided without
 * trusting one allocation: the unchecked copy fails only for memory, and
 * once it succeeded, a checked copy that still fails means bad UTF-8. */
static int string_failure(const char *s, size_t n) {
  json_t *raw = json_stringn_nocheck(s, n);
  if (!raw)
    return THEUS_ENOMEM;
  json_decref(raw);
  json_t *valid = json_stringn(s, n);
  json_decref(valid);
  return valid ? THEUS_ENOMEM : THEUS_EPARSE;
}

/* A string of n bytes at s: NULL for bad UTF-8 (EPARSE) or no memory. */
static json_t *get_string(rbuf *r, const char *s, size_t n) {
  json_t *j = json_stringn(s, n);
  return j ? j : fail(r, string_failure(s, n), NULL);
}

static json_t *get_value(rbuf *r, unsigned depth);

static json_t *get_object(rbuf *r, unsigned depth) {
  uint32_t n, kl;
  json_t *o = take(r, &n, sizeof n) ? NULL : json_object();
  if (!o)
    return fail(r, THEUS_ENOMEM, NULL);
  for (uint32_t i = 0; i < n; i++) {
    const char *k = take(r, &kl, sizeof kl) ? NULL : span(r, kl);
    if (!k || memchr(k, '\0', kl))
      return fail(r, THEUS_EPARSE, o);
    json_t *v = get_value(r, depth + 1);
    if (!v)
      return fail(r, THEUS_EPARSE, o);
    if (json_object_setn_new(o, k, kl, v)) /* bad UTF-8 in the key, or no memory */
      return fail(r, string_failure(k, kl), o);
  }
  return o;
}

static json_t *get_array(rbuf *r, unsigned depth) {
  uint32_t n;
  json_t *a = take(r, &n, sizeof n) ? NULL : json_array();
  if (!a)
    return fail(r, THEUS_ENOMEM, NULL);
  if (n > r->len - r->at) /* every element takes at least one byte */
    return fail(r, THEUS_EPARSE, a);
  for (uint32_t i = 0; i < n; i++) {
    json_t *v = get_value(r, depth + 1);
    if (!v || json_array_append_new(a, v))
      return fail(r, THEUS_ENOMEM, a);
  }
  return a;
}

static json_t *get_number(rbuf *r, char tag) {
  json_t *j;
  if (tag == 'k') {
    int8_t b;
    if (take(r, &b, sizeof b))
      return NULL;
    j = json_integer(b);
  } else if (tag == 'j') {
    int32_t h;
    if (take(r, &h, sizeof h))
      return NULL;
    j = json_integer(h);
  } else if (tag == 'i') {
    int64_t i;
    if (take(r, &i, sizeof i))
      return NULL;
    j = json_integer((json_int_t)i);
  } else {
    double d;
    if (take(r, &d, sizeof d))
      return NULL;
    if (!isfinite(d)) /* not a JSON number */
      return fail(r, THEUS_EPARSE, NULL);
    j = json_real(d);
  }
  return j ? j : fail(r, THEUS_ENOMEM, NULL);
}

static json_t *get_value(rbuf *r, unsigned depth) {
  char tag;
  if (depth > THEUS__WIRE_MAX_DEPTH || take(r, &tag, 1))
    return fail(r, THEUS_EPARSE, NULL);
  uint32_t n;
  const char *s;
  switch (tag) {
  case 'o':
    return get_object(r, depth);
  case 'a':
    return get_array(r, depth);
  case 's':
    s = take(r, &n, sizeof n) ? NULL : span(r, n);
    return s ? get_string(r, s, n) : NULL;
  case 'k':
  case 'j':
  case 'i':
  case 'r':
    return get_number(r, tag);
  case 't':
    return json_true();
  case 'f':
    return json_false();
  case 'n':
    return json_null();
  default:
    return fail(r, THEUS_EPARSE, NULL);
  }
}

json_t *theus__wire_get(const void *buf, size_t len, int *rc) {
  rbuf r = {buf, len, 0, 0};
  json_t *v = get_value(&r, 0);
  if (v && r.at != len) { /* trailing bytes */
    json_decref(v);
    v = NULL;
    r.rc = THEUS_EPARSE;
  }
  *rc = v ? 0 : r.rc ? r.rc : THEUS_EPARSE;
  return v;
}

/* ---- the declared inputs of a task ------------------------------------------ */

static size_t seg_len(const char *s) {
  const char *d = strchr(s, '.');
  return d ? (size_t)(d - s) : strlen(s);
}

/* Segments shared by the parents of two dotted paths (all but the last). */
static unsigned common_parents(const char *a, const char *b) {
  unsigned n = 0;
  while (strchr(a, '.') && strchr(b, '.') && seg_len(a) == seg_len(b) && !memcmp(a, b, seg_len(a))) {
    n++;
    a += seg_len(a) + 1;
    b += seg_len(b) + 1;
  }
  return n;
}

/* The open objects: where each one's member count is, and the count. */
typedef struct open_obj {
  uint32_t at, n;
} open_obj;

static void open_object(wbuf *w, open_obj *o) {
  put_tag(w, 'o');
  o->at = (uint32_t)w->at;
  o->n = 0;
  put_u32(w, 0);
}

static void close_object(wbuf *w, const open_obj *o) {
  if (!w->short_)
    memcpy(w->p + o->at, &o->n, sizeof o->n);
}

int theus__wire_put_paths(const json_t *root, const char *const *paths, size_t n, size_t skip, void *buf,
                          size_t cap, size_t *len) {
  wbuf w = {buf, cap, 0, 0};
  open_obj st[THEUS__REG_BLOB / 2 + 2]; /* a path of the registry has at most this many segments */
  unsigned d = 1;
  open_object(&w, &st[0]);
  const char *prev = NULL;
  int rc = 0;
  for (size_t i = 0; i < n && !rc; i++) {
    const json_t *v = theus__json_at(root, paths[i]);
    if (!v || strlen(paths[i]) < skip)
      continue;
    const char *p = paths[i] + skip;
    for (unsigned keep = 1 + (prev ? common_parents(prev, p) : 0); d > keep;)
      close_object(&w, &st[--d]);
    for (unsigned k = 1; k < d; k++) /* step over the parents still open */
      p += seg_len(p) + 1;
    for (; strchr(p, '.') && d < sizeof st / sizeof st[0]; p += seg_len(p) + 1) { /* open the rest */
      st[d - 1].n++;
      put_u32(&w, seg_len(p));
      put(&w, p, seg_len(p));
      open_object(&w, &st[d++]);
    }
    st[d - 1].n++;
    put_u32(&w, strlen(p));
    put(&w, p, strlen(p));
    rc = put_value(&w, v, d);
    prev = paths[i] + skip;
  }
  while (d > 0)
    close_object(&w, &st[--d]);
  *len = w.at;
  return rc ? rc : w.short_ ? THEUS_ETRUNC : 0;
}
