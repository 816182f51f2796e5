/* Built-in map reducers: sum, min, max (numbers; objects key by key; arrays
 * element by element, nested to any depth) and concat (arrays concatenated,
 * other values appended). A NULL result sets errno: EINVAL when the shapes
 * do not combine, ENOMEM (from the allocator) when memory ran out. */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "engine_internal.h"

enum { OP_SUM, OP_MIN, OP_MAX };

/* Why the last combine on this thread failed beyond a shape mismatch ("" if
 * it did not): read and cleared by theus__reduce_why. */
static _Thread_local char why[128];

const char *theus__reduce_why(void) {
  static _Thread_local char out[sizeof why];
  memcpy(out, why, sizeof why);
  why[0] = '\0';
  return out;
}

static json_t *num_combine(const json_t *a, const json_t *b, int op) {
  if (json_is_integer(a) && json_is_integer(b)) {
    json_int_t x = json_integer_value(a), y = json_integer_value(b);
    return json_integer(op == OP_SUM ? x + y : op == OP_MIN ? (x < y ? x : y) : (x > y ? x : y));
  }
  double x = json_number_value(a), y = json_number_value(b);
  double v = op == OP_SUM ? x + y : op == OP_MIN ? (x < y ? x : y) : (x > y ? x : y);
  if (!isfinite(v))
    snprintf(why, sizeof why, "%g + %g is not a finite number, and JSON has none", x, y);
  return json_real(v);
}

static json_t *combine(const json_t *a, const json_t *b, int op);

/* Arrays combine element by element; they must have the same length. */
static json_t *array_combine(const json_t *a, const json_t *b, int op) {
  size_t n = json_array_size(a);
  if (n != json_array_size(b)) {
    errno = EINVAL;
    return NULL;
  }
  json_t *out = json_array();
  for (size_t i = 0; out && i < n; i++)
    if (json_array_append_new(out, combine(json_array_get(a, i), json_array_get(b, i), op))) {
      json_decref(out);
      return NULL;
    }
  return out;
}

/* New value combining a and b; NULL if their shapes do not combine. The depth
 * is bounded by the JSON parser's nesting limit for worker results. */
static json_t *combine(const json_t *a, const json_t *b, int op) {
  if (json_is_number(a) && json_is_number(b))
    return num_combine(a, b, op);
  if (json_is_array(a) && json_is_array(b))
    return array_combine(a, b, op);
  if (!json_is_object(a) || !json_is_object(b)) {
    errno = EINVAL;
    return NULL;
  }
  json_t *out = json_deep_copy(a);
  const char *k;
  json_t *v;
  json_object_foreach((json_t *)b, k, v) {
    const json_t *old = json_object_get(a, k);
    json_t *n = old ? combine(old, v, op) : json_deep_copy(v);
    if (!n || !out || json_object_set_new(out, k, n)) {
      json_decref(out);
      return NULL;
    }
  }
  return out;
}

static json_t *reduce_op(json_t *acc, const json_t *item, int op) {
  if (!acc) {
    if (json_is_number(item) || json_is_object(item) || json_is_array(item))
      return json_deep_copy(item);
    errno = EINVAL;
    return NULL;
  }
  json_t *n = combine(acc, item, op);
  json_decref(acc);
  return n;
}

static json_t *r_sum(json_t *acc, const json_t *item, void *ud) {
  (void)ud;
  return reduce_op(acc, item, OP_SUM);
}
static json_t *r_min(json_t *acc, const json_t *item, void *ud) {
  (void)ud;
  return reduce_op(acc, item, OP_MIN);
}
static json_t *r_max(json_t *acc, const json_t *item, void *ud) {
  (void)ud;
  return reduce_op(acc, item, OP_MAX);
}

static json_t *r_concat(json_t *acc, const json_t *item, void *ud) {
  (void)ud;
  if (!acc && !(acc = json_array()))
    return NULL;
  int rc = json_is_array(item) ? json_array_extend(acc, (json_t *)item)
                               : json_array_append_new(acc, json_deep_copy(item));
  if (rc) {
    json_decref(acc);
    return NULL;
  }
  return acc;
}

#define COMBINE(T)                                                                                          \
  do {                                                                                                      \
    T *d = dst;                                                                                             \
    const T *s = src;                                                                                       \
    if (op == OP_SUM)                                                                                       \
      for (size_t i = 0; i < n; i++) d[i] = (T)(d[i] + s[i]);                                               \
    else if (op == OP_MIN)                                                                                  \
      for (size_t i = 0; i < n; i++) d[i] = s[i] < d[i] ? s[i] : d[i];                                      \
    else                                                                                                    \
      for (size_t i = 0; i < n; i++) d[i] = s[i] > d[i] ? s[i] : d[i];                                      \
  } while (0)

int theus__reduce_array(const char *name, theus_dtype dt, void *dst, const void *src, size_t n) {
  int op = !name ? -1 : !strcmp(name, "sum") ? OP_SUM : !strcmp(name, "min") ? OP_MIN : !strcmp(name, "max") ? OP_MAX : -1;
  if (op < 0)
    return THEUS_EINVAL;
  switch (dt) {
  case THEUS_DTYPE_U8: COMBINE(uint8_t); break;
  case THEUS_DTYPE_U16: COMBINE(uint16_t); break;
  case THEUS_DTYPE_U32: COMBINE(uint32_t); break;
  case THEUS_DTYPE_U64: COMBINE(uint64_t); break;
  case THEUS_DTYPE_I8: COMBINE(int8_t); break;
  case THEUS_DTYPE_I16: COMBINE(int16_t); break;
  case THEUS_DTYPE_I32: COMBINE(int32_t); break;
  case THEUS_DTYPE_I64: COMBINE(int64_t); break;
  case THEUS_DTYPE_F32: COMBINE(float); break;
  case THEUS_DTYPE_F64: COMBINE(double); break;
  default: return THEUS_EINVAL;
  }
  return 0;
}

theus_reducer_fn theus__reducer_find(theus_engine *e, const char *name, void **ud) {
  static const struct {
    const char *name;
    theus_reducer_fn fn;
  } builtin[] = {{"sum", r_sum}, {"min", r_min}, {"max", r_max}, {"concat", r_concat}};
  *ud = NULL;
  theus_reducer_fn fn = NULL;
  pthread_rwlock_rdlock(&e->reg_lock);
  for (theus__reducer *r = e->reducers; r && !fn; r = r->next)
    if (!strcmp(r->name, name)) {
      fn = r->fn;
      *ud = r->ud;
    }
  pthread_rwlock_unlock(&e->reg_lock);
  for (size_t i = 0; !fn && i < sizeof builtin / sizeof builtin[0]; i++)
    if (!strcmp(builtin[i].name, name))
      fn = builtin[i].fn;
  return fn;
}

int theus_engine_has_reducer(theus_engine *e, const char *name) {
  void *ud;
  return e && e->opened && name && theus__reducer_find(e, name, &ud) != NULL;
}

int theus_engine_reduce(theus_engine *e, const char *reducer, const json_t *items, json_t **result) {
  if (result)
    *result = NULL;
  THEUS__ENGINE_ARG(e, "reduce");
  if (!result)
    return theus__eset(e, THEUS_EINVAL, "reduce: result is NULL");
  void *ud;
  theus_reducer_fn fn = reducer ? theus__reducer_find(e, reducer, &ud) : NULL;
  if (!fn)
    return theus__eset(e, THEUS_EINVAL, "reduce: unknown reducer '%s' (sum, min, max, concat or registered)",
                       reducer ? reducer : "(null)");
  if (!json_is_array(items))
    return theus__eset(e, THEUS_EINVAL, "reduce '%s': items must be a JSON array", reducer);
  json_t *acc = NULL;
  size_t i;
  json_t *item;
  json_array_foreach(items, i, item) {
    if (json_is_null(item))
      continue;
    if (!(acc = fn(acc, item, ud)))
      return theus__eset(e, THEUS_EINVAL, "reduce: reducer '%s' cannot combine item %zu (%s)", reducer, i,
                         json_is_string(item) ? "a string" : "type mismatch");
  }
  *result = acc ? acc : json_null();
  return 0;
}
