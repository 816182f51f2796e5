/* theus-c — pipeline files: loading, checking, definitions (not steps). */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base.h" /* theus__near, theus__json_load */
#include "pipeline_internal.h"

/* ---- messages ------------------------------------------------------------ */

static int vpipe_err(theus_pipeline *p, int line, int col, int code, const char *fmt, va_list ap) {
  int n = snprintf(p->msg, sizeof p->msg, "%s:%d:%d: ", p->path, line, col);
  if (n < 0 || (size_t)n >= sizeof p->msg) n = 0;
  vsnprintf(p->msg + n, sizeof p->msg - (size_t)n, fmt, ap);
  return code;
}

/* Appends a plugin path (from the file or theus_pipeline_add_plugin). */
static int add_plugin(theus_pipeline *p, const char *path) {
  plugin *v = realloc(p->plugins, (p->nplugins + 1) * sizeof *v);
  if (!v) return THEUS_ENOMEM;
  p->plugins = v;
  v[p->nplugins] = (plugin){0};
  if (!(v[p->nplugins].path = strdup(path))) return THEUS_ENOMEM;
  p->nplugins++;
  return 0;
}

int theus__pipe_err(theus_pipeline *p, const char *ptr, bool key, const char *fmt, ...) {
  int line, col;
  theus__pos_lookup(&p->pos, ptr, key, &line, &col);
  va_list ap;
  va_start(ap, fmt);
  int rc = vpipe_err(p, line, col, THEUS_EPARSE, fmt, ap);
  va_end(ap);
  return rc;
}

int theus__pipe_err_code(theus_pipeline *p, int code, const char *ptr, bool key, const char *fmt, ...) {
  int line, col;
  theus__pos_lookup(&p->pos, ptr, key, &line, &col);
  va_list ap;
  va_start(ap, fmt);
  int rc = vpipe_err(p, line, col, code == THEUS_ENOMEM || code == THEUS_ESYS ? code : THEUS_EPARSE, fmt, ap);
  va_end(ap);
  return rc;
}

int theus__pipe_err_at(theus_pipeline *p, const char *ptr, int col_offset, int code, const char *fmt, ...) {
  int line, col;
  theus__pos_lookup(&p->pos, ptr, false, &line, &col);
  va_list ap;
  va_start(ap, fmt);
  int rc = vpipe_err(p, line, col + col_offset, code, fmt, ap);
  va_end(ap);
  return rc;
}

const char *theus__pipe_type_name(const json_t *v) {
  switch (json_typeof(v)) {
  case JSON_OBJECT: return "an object";
  case JSON_ARRAY: return "an array";
  case JSON_STRING: return "a string";
  case JSON_INTEGER: return "an integer";
  case JSON_REAL: return "a number";
  case JSON_TRUE:
  case JSON_FALSE: return "a boolean";
  default: return "null";
  }
}

const char *theus__pipe_ptr_label(const char *ptr, char *buf, size_t cap) {
  size_t n = 0;
  buf[0] = '\0';
  for (const char *s = ptr; *s == '/';) {
    s++;
    size_t len = strcspn(s, "/");
    bool index = len && strspn(s, "0123456789") >= len;
    int w = index ? snprintf(buf + n, cap - n, "[%.*s]", (int)len, s)
                  : snprintf(buf + n, cap - n, "%s%.*s", n ? "." : "", (int)len, s);
    if (w < 0 || (size_t)w >= cap - n) break;
    n += (size_t)w;
    s += len;
  }
  return buf;
}

void theus__pipe_child(char *dst, const char *ptr, const char *key, size_t index) {
  size_t len = strlen(ptr), n = len;
  while (n >= PIPE_PTR) /* too long: keep whole segments, i.e. an ancestor */
    while (n > 0 && ptr[--n] != '/')
      ;
  memmove(dst, ptr, n);
  dst[n] = '\0';
  if (n == len) theus__pos_push(dst, PIPE_PTR, key, index); /* else it stays the ancestor */
}

int theus__pipe_check_keys(theus_pipeline *p, const json_t *obj, const char *ptr, const char *const *allowed,
                           const char *what) {
  const char *key;
  json_t *v;
  json_object_foreach((json_t *)obj, key, v) {
    const char *near = NULL;
    size_t best = SIZE_MAX;
    bool ok = false;
    for (size_t i = 0; allowed[i] && !ok; i++) {
      ok = strcmp(key, allowed[i]) == 0;
      if (theus__near(key, allowed[i], &best)) near = allowed[i];
    }
    if (ok) continue;
    char list[256] = "";
    for (size_t i = 0; allowed[i]; i++)
      snprintf(list + strlen(list), sizeof list - strlen(list), "%s\"%s\"", i ? ", " : "", allowed[i]);
    char kp[PIPE_PTR];
    theus__pipe_child(kp, ptr, key, 0);
    char hint[96] = "";
    if (near) snprintf(hint, sizeof hint, "did you mean \"%s\"? ", near);
    return theus__pipe_err(p, kp, true, "unknown key \"%s\" in %s; %sallowed keys: %s", key, what, hint, list);
  }
  return 0;
}

int theus__pipe_get_string(theus_pipeline *p, const json_t *obj, const char *ptr, const char *key, bool required,
                           const char *what, char **out) {
  json_t *v = json_object_get(obj, key);
  char kp[PIPE_PTR];
  theus__pipe_child(kp, ptr, key, 0);
  *out = NULL;
  if (!v) {
    if (!required) return 0;
    return theus__pipe_err(p, ptr, false, "missing \"%s\" (%s); add \"%s\": \"...\"", key, what, key);
  }
  if (!json_is_string(v) || !json_string_length(v))
    return theus__pipe_err(p, kp, false, "\"%s\" must be a non-empty string (%s), found %s", key, what,
                           json_is_string(v) ? "an empty string" : theus__pipe_type_name(v));
  *out = strdup(json_string_value(v));
  return *out ? 0 : THEUS_ENOMEM;
}

char *theus__pipe_resolve(const theus_pipeline *p, const char *path) {
  if (path[0] == '/') return strdup(path);
  size_t n = strlen(p->dir) + strlen(path) + 2;
  char *r = malloc(n);
  if (r) snprintf(r, n, "%s/%s", p->dir, path);
  return r;
}

/* ---- top-level fields ----------------------------------------------------------- */

static int get_int(theus_pipeline *p, const json_t *obj, const char *ptr, const char *key, long long lo,
                   long long hi, long long *out, const char *what) {
  json_t *v = json_object_get(obj, key);
  if (!v) return 0;
  char kp[PIPE_PTR];
  theus__pipe_child(kp, ptr, key, 0);
  if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
    return theus__pipe_err(p, kp, false, "\"%s\" must be an integer from %lld to %lld (%s), found %s", key, lo, hi,
                           what, json_is_integer(v) ? "one out of range" : theus__pipe_type_name(v));
  *out = json_integer_value(v);
  return 0;
}

/* One size of the "arena" object: a string with a unit ("8GiB") or a byte
 * count, at least min bytes. */
static int arena_size(theus_pipeline *p, const json_t *obj, const char *key, uint64_t min, uint64_t *out) {
  json_t *v = json_object_get(obj, key);
  if (!v) return 0;
  char kp[PIPE_PTR], err[400], lim[32];
  theus__pipe_child(kp, "/arena", key, 0);
  if (json_is_integer(v) && json_integer_value(v) >= 0) {
    *out = (uint64_t)json_integer_value(v);
  } else if (json_is_string(v)) {
    if (theus_size_parse(json_string_value(v), out, err, sizeof err))
      return theus__pipe_err(p, kp, false, "\"arena\" \"%s\": %s", key, err);
  } else {
    return theus__pipe_err(p, kp, false,
                           "\"arena\" \"%s\" must be a size such as \"8GiB\" or a byte count, found %s", key,
                           json_is_integer(v) ? "a negative number" : theus__pipe_type_name(v));
  }
  char found[32];
  if (*out < min)
    return theus__pipe_err(p, kp, false, "\"arena\" \"%s\" must be at least %s, found %s", key,
                           theus_size_format(min, 0, lim, sizeof lim), theus_size_format(*out, 0, found, sizeof found));
  return 0;
}

/* "arena": {"budget": "8GiB", "single_limit": "2GiB", "soft_limit": 0.85}. */
static int load_arena(theus_pipeline *p, const json_t *v) {
  static const char *const allowed[] = {"budget", "single_limit", "soft_limit", NULL};
  if (!v) return 0;
  if (!json_is_object(v))
    return theus__pipe_err(p, "/arena", false,
                           "\"arena\" is an object such as {\"budget\": \"8GiB\", \"single_limit\": \"2GiB\", "
                           "\"soft_limit\": 0.85}, found %s", theus__pipe_type_name(v));
  int rc = theus__pipe_check_keys(p, v, "/arena", allowed, "\"arena\"");
  if (!rc) rc = arena_size(p, v, "budget", 4096, &p->arena.hard_limit);
  if (!rc) rc = arena_size(p, v, "single_limit", 1, &p->arena.single_limit);
  json_t *soft = json_object_get(v, "soft_limit");
  if (!rc && soft) {
    double f = json_number_value(soft);
    if (!json_is_number(soft) || !(f > 0 && f <= 1))
      return theus__pipe_err(p, "/arena/soft_limit", false,
                             "\"arena\" \"soft_limit\" is a fraction of the budget above 0 and at most 1 "
                             "(default 0.85), found %s", json_is_number(soft) ? "one out of range" : theus__pipe_type_name(soft));
    unsigned pct = (unsigned)(f * 100 + 0.5);
    p->arena.soft_limit_pct = pct ? pct : 1;
  }
  return rc;
}

static int load_domain(theus_pipeline *p, const json_t *v) {
  if (!v) return (p->domain = json_object()) ? 0 : THEUS_ENOMEM;
  if (json_is_object(v)) return (p->domain = json_deep_copy(v)) ? 0 : THEUS_ENOMEM;
  if (!json_is_string(v))
    return theus__pipe_err(p, "/domain", false,
                           "\"domain\" must be an object (the initial domain) or a string (a JSON file relative to "
                           "this pipeline), found %s",
                           theus__pipe_type_name(v));
  char *file = theus__pipe_resolve(p, json_string_value(v));
  if (!file) return THEUS_ENOMEM;
  json_error_t je;
  p->domain = json_load_file(file, JSON_REJECT_DUPLICATES, &je);
  int rc = 0;
  if (!p->domain)
    rc = theus__pipe_err(p, "/domain", false, "cannot load the domain file: %s:%d:%d: %s", file, je.line,
                         je.column, je.text);
  else if (!json_is_object(p->domain))
    rc = theus__pipe_err(p, "/domain", false, "the domain file %s must hold a JSON object, it holds %s", file,
                         theus__pipe_type_name(p->domain));
  free(file);
  return rc;
}

static int load_plugins(theus_pipeline *p, const json_t *v) {
  if (!v) return 0;
  if (!json_is_array(v))
    return theus__pipe_err(p, "/plugins", false,
                           "\"plugins\" must be an array of .so paths relative to this file, found %s",
                           theus__pipe_type_name(v));
  size_t i;
  json_t *it;
  json_array_foreach(v, i, it) {
    char ip[PIPE_PTR];
    theus__pipe_child(ip, "/plugins", NULL, i);
    if (!json_is_string(it))
      return theus__pipe_err(p, ip, false, "plugins[%zu] must be a path string, found %s", i,
                             theus__pipe_type_name(it));
    char *path = theus__pipe_resolve(p, json_string_value(it));
    int rc = path ? add_plugin(p, path) : THEUS_ENOMEM;
    free(path);
    if (rc) return rc;
    snprintf(p->plugins[p->nplugins - 1].ptr, PIPE_PTR, "%s", ip);
  }
  return 0;
}

/* ---- heavy arrays ---------------------------------------------------------------- */

static bool valid_key(const char *k) {
  if (!(isalpha((unsigned char)*k) || *k == '_')) return false;
  for (; *k; k++)
    if (!(isalnum((unsigned char)*k) || *k == '_' || *k == '-')) return false;
  return true;
}

int theus__pipe_shape(theus_pipeline *p, const char *key, theus_dtype dtype, const json_t *v, const char *ptr,
                      unsigned *ndim, uint64_t *shape) {
  const char *fix = "give \"shape\" as a positive integer or an array of 1 to 8 of them, e.g. [1024, 3]";
  if (json_is_integer(v)) {
    *ndim = 1;
    shape[0] = json_integer_value(v) > 0 ? (uint64_t)json_integer_value(v) : 0;
  } else if (json_is_array(v) && json_array_size(v) >= 1 && json_array_size(v) <= THEUS_MAX_DIMS) {
    *ndim = (unsigned)json_array_size(v);
    for (unsigned d = 0; d < *ndim; d++) {
      json_t *x = json_array_get(v, d);
      shape[d] = json_is_integer(x) && json_integer_value(x) > 0 ? (uint64_t)json_integer_value(x) : 0;
    }
  } else {
    return theus__pipe_err(p, ptr, false, "bad shape for heavy.%s: %s", key, fix);
  }
  uint64_t total = dtype ? theus_dtype_size(dtype) : 8;
  for (unsigned d = 0; d < *ndim; d++) {
    if (shape[d] == 0) return theus__pipe_err(p, ptr, false, "bad shape for heavy.%s: %s", key, fix);
    if (total > UINT64_MAX / shape[d])
      return theus__pipe_err(p, ptr, false, "heavy.%s: the shape overflows 64 bits; make it smaller", key);
    total *= shape[d];
  }
  return 0;
}

static uint64_t heavy_nbytes(const heavy_spec *h) {
  uint64_t n = theus_dtype_size(h->dtype);
  for (unsigned d = 0; d < h->ndim; d++) n *= h->shape[d];
  return n;
}

static int fill_numbers(theus_pipeline *p, const json_t *obj, const char *ptr, const char *ka, const char *kb,
                        double *a, double *b, const char *what) {
  const char *const allowed[] = {ka, kb, strcmp(what, "random") == 0 ? "seed" : NULL, NULL};
  int rc = theus__pipe_check_keys(p, obj, ptr, allowed, what);
  if (rc) return rc;
  const char *keys[2] = {ka, kb};
  double *dst[2] = {a, b};
  for (int i = 0; i < 2; i++) {
    json_t *x = json_object_get(obj, keys[i]);
    if (!x) continue;
    char kp[PIPE_PTR];
    theus__pipe_child(kp, ptr, keys[i], 0);
    if (!json_is_number(x))
      return theus__pipe_err(p, kp, false, "\"%s\" of a %s fill must be a number, found %s", keys[i], what,
                             theus__pipe_type_name(x));
    *dst[i] = json_number_value(x);
  }
  return 0;
}

static int heavy_fill_file(theus_pipeline *p, heavy_spec *h, const json_t *x, const char *ptr) {
  if (!json_is_string(x))
    return theus__pipe_err(p, ptr, false, "\"file\" must be the path of a raw file, found %s",
                           theus__pipe_type_name(x));
  h->fill = FILL_FILE;
  if (!(h->file = theus__pipe_resolve(p, json_string_value(x)))) return THEUS_ENOMEM;
  struct stat st;
  if (stat(h->file, &st) != 0)
    return theus__pipe_err(p, ptr, false, "cannot open the raw file %s for heavy.%s: %s; the path is relative to "
                           "the pipeline file", h->file, h->key, strerror(errno));
  if ((uint64_t)st.st_size != heavy_nbytes(h))
    return theus__pipe_err(p, ptr, false,
                           "the raw file %s has %lld bytes but heavy.%s needs %llu (shape x %zu-byte %s); fix the "
                           "shape or the file",
                           h->file, (long long)st.st_size, h->key, (unsigned long long)heavy_nbytes(h),
                           theus_dtype_size(h->dtype), theus_dtype_name(h->dtype));
  return 0;
}

static int heavy_fill(theus_pipeline *p, heavy_spec *h, const json_t *v, const char *ptr) {
  const char *fix = "use \"zeros\", {\"range\": {\"start\": 0, \"step\": 1}}, {\"random\": {\"seed\": 1, \"min\": 0, "
                    "\"max\": 1}} or {\"file\": \"data.raw\"}";
  h->fill = FILL_ZEROS;
  if (!v || (json_is_string(v) && strcmp(json_string_value(v), "zeros") == 0)) return 0;
  if (!json_is_object(v) || json_object_size(v) != 1)
    return theus__pipe_err(p, ptr, false, "bad fill for heavy.%s: %s", h->key, fix);
  const char *kind = json_object_iter_key(json_object_iter((json_t *)v));
  json_t *x = json_object_iter_value(json_object_iter((json_t *)v));
  char kp[PIPE_PTR];
  theus__pipe_child(kp, ptr, kind, 0);
  if (strcmp(kind, "file") == 0) return heavy_fill_file(p, h, x, kp);
  if ((strcmp(kind, "range") && strcmp(kind, "random")) || !json_is_object(x))
    return theus__pipe_err(p, kp, strcmp(kind, "range") && strcmp(kind, "random"), "bad fill for heavy.%s: %s",
                           h->key, fix);
  if (strcmp(kind, "range") == 0) {
    h->fill = FILL_RANGE;
    h->a = 0;
    h->b = 1;
    return fill_numbers(p, x, kp, "start", "step", &h->a, &h->b, "range");
  }
  h->fill = FILL_RANDOM;
  h->a = 0;
  h->b = 1;
  json_t *seed = json_object_get(x, "seed");
  if (seed && (!json_is_integer(seed) || json_integer_value(seed) < 0)) {
    char sp[PIPE_PTR];
    theus__pipe_child(sp, kp, "seed", 0);
    return theus__pipe_err(p, sp, false, "\"seed\" must be a non-negative integer, found %s",
                           theus__pipe_type_name(seed));
  }
  h->seed = seed ? (uint64_t)json_integer_value(seed) : 0;
  int rc = fill_numbers(p, x, kp, "min", "max", &h->a, &h->b, "random");
  if (!rc && !(h->a < h->b))
    rc = theus__pipe_err(p, kp, false, "random fill of heavy.%s: \"min\" must be below \"max\"", h->key);
  return rc;
}

static int heavy_one(theus_pipeline *p, heavy_spec *h, const char *key, const json_t *v, const char *ptr) {
  static const char *const allowed[] = {"dtype", "shape", "fill", NULL};
  snprintf(h->ptr, PIPE_PTR, "%s", ptr);
  if (!(h->key = strdup(key))) return THEUS_ENOMEM;
  if (!valid_key(key))
    return theus__pipe_err(p, ptr, true, "heavy key \"%s\" is not a valid name; use letters, digits, _ and -", key);
  if (!json_is_object(v))
    return theus__pipe_err(p, ptr, false,
                           "heavy.%s must be an object like {\"dtype\": \"f32\", \"shape\": [1024]}, found %s", key,
                           theus__pipe_type_name(v));
  int rc = theus__pipe_check_keys(p, v, ptr, allowed, "a heavy array");
  char *dtype = NULL;
  if (!rc) rc = theus__pipe_get_string(p, v, ptr, "dtype", true, "element type: u8..u64, i8..i64, f32, f64", &dtype);
  if (!rc && !(h->dtype = theus_dtype_parse(dtype))) {
    char kp[PIPE_PTR];
    theus__pipe_child(kp, ptr, "dtype", 0);
    rc = theus__pipe_err(p, kp, false, "unknown dtype \"%s\"; use u8, u16, u32, u64, i8, i16, i32, i64, f32 or f64",
                         dtype);
  }
  free(dtype);
  char sp[PIPE_PTR], fp[PIPE_PTR];
  theus__pipe_child(sp, ptr, "shape", 0);
  theus__pipe_child(fp, ptr, "fill", 0);
  if (!rc && !json_object_get(v, "shape"))
    rc = theus__pipe_err(p, ptr, false, "heavy.%s has no \"shape\"; add e.g. \"shape\": [1024]", key);
  if (!rc) rc = theus__pipe_shape(p, h->key, h->dtype, json_object_get(v, "shape"), sp, &h->ndim, h->shape);
  if (!rc) rc = heavy_fill(p, h, json_object_get(v, "fill"), fp);
  return rc;
}

static int load_heavy(theus_pipeline *p, const json_t *v) {
  if (!v) return 0;
  if (!json_is_object(v))
    return theus__pipe_err(p, "/heavy", false,
                           "\"heavy\" must be an object {key: {\"dtype\", \"shape\", \"fill\"}}, found %s",
                           theus__pipe_type_name(v));
  if (!(p->heavy = calloc(json_object_size(v) + 1, sizeof *p->heavy))) return THEUS_ENOMEM;
  const char *key;
  json_t *spec;
  json_object_foreach((json_t *)v, key, spec) {
    char kp[PIPE_PTR];
    theus__pipe_child(kp, "/heavy", key, 0);
    int rc = heavy_one(p, &p->heavy[p->nheavy++], key, spec, kp);
    if (rc) return rc;
  }
  return 0;
}

/* ---- processes -------------------------------------------------------------------- */

static int strv_from_json(theus_pipeline *p, const json_t *v, const char *ptr, const char *what, bool numbers,
                          char ***out) {
  if (v && !json_is_array(v))
    return theus__pipe_err(p, ptr, false, "\"%s\" must be an array of strings, found %s", what,
                           theus__pipe_type_name(v));
  size_t n = v ? json_array_size(v) : 0;
  if (!(*out = calloc(n + 1, sizeof **out))) return THEUS_ENOMEM;
  for (size_t i = 0; i < n; i++) {
    json_t *x = json_array_get(v, i);
    char buf[64] = "";
    char ip[PIPE_PTR];
    theus__pipe_child(ip, ptr, NULL, i);
    if (numbers && json_is_number(x))
      snprintf(buf, sizeof buf, "%.17g", json_number_value(x));
    else if (!json_is_string(x))
      return theus__pipe_err(p, ip, false, "%s[%zu] must be a %s, found %s", what, i,
                             numbers ? "state path string or a number" : "state path string",
                             theus__pipe_type_name(x));
    if (!((*out)[i] = strdup(json_is_string(x) ? json_string_value(x) : buf))) return THEUS_ENOMEM;
  }
  return 0;
}

size_t theus__pipe_strv_len(char **v) {
  size_t n = 0;
  while (v && v[n]) n++;
  return n;
}

static void noop_fn(void) {}

/* "not_lengths": argument numbers (1-based) exempt from the length rule. */
static int get_not_lengths(theus_pipeline *p, const json_t *v, const char *ptr, uint32_t *mask) {
  const json_t *a = json_object_get(v, "not_lengths");
  char np[PIPE_PTR];
  theus__pipe_child(np, ptr, "not_lengths", 0);
  *mask = 0;
  if (!a) return 0;
  if (!json_is_array(a))
    return theus__pipe_err(p, np, false, "\"not_lengths\" must be an array of argument numbers (1-based), found %s",
                           theus__pipe_type_name(a));
  for (size_t i = 0; i < json_array_size(a); i++) {
    const json_t *x = json_array_get(a, i);
    json_int_t n = json_is_integer(x) ? json_integer_value(x) : 0;
    if (n < 1 || n > THEUS_FFI_MAX_ARGS) {
      char ip[PIPE_PTR];
      theus__pipe_child(ip, np, NULL, i);
      return theus__pipe_err(p, ip, false, "\"not_lengths\"[%zu] must be an argument number 1..%d", i,
                             THEUS_FFI_MAX_ARGS);
    }
    *mask |= 1u << (n - 1);
  }
  return 0;
}

/* A typed process refused by theus__ffi_proc_init: the message at the binding
 * or output refused, else at the signature (a syntax error) or the args. */
static int typed_err(theus_pipeline *p, const typed_proc *t, int rc, const char *ptr, const char *err) {
  char at[PIPE_PTR], list[PIPE_PTR];
  const char *key = t->ffi.bad_output >= 0 ? "outputs" : rc == THEUS_EPARSE && t->ffi.bad_arg < 0 ? "signature" : "args";
  theus__pipe_child(list, ptr, key, 0);
  int index = t->ffi.bad_output >= 0 ? t->ffi.bad_output : t->ffi.bad_arg;
  if (index >= 0)
    theus__pipe_child(at, list, NULL, (size_t)index);
  else
    snprintf(at, sizeof at, "%s", list);
  return theus__pipe_err_code(p, rc, at, false, "process \"%s\": %s", t->name, err);
}

static int typed_one(theus_pipeline *p, typed_proc *t, const json_t *v, const char *ptr) {
  static const char *const allowed[] = {"name", "symbol", "signature", "args", "outputs", "parallel",
                                        "timeout_ms", "memo", "description", "not_lengths", NULL};
  snprintf(t->ptr, PIPE_PTR, "%s", ptr);
  int rc = theus__pipe_check_keys(p, v, ptr, allowed, "a typed process");
  if (!rc) rc = theus__pipe_get_string(p, v, ptr, "name", true, "the process name steps use", &t->name);
  if (!rc) rc = theus__pipe_get_string(p, v, ptr, "symbol", false, "the C function to call", &t->symbol);
  if (!rc && !t->symbol && !(t->symbol = strdup(t->name))) rc = THEUS_ENOMEM;
  if (!rc) rc = theus__pipe_get_string(p, v, ptr, "signature", true, "e.g. \"void(f32*, u64, f64)\"", &t->signature);
  char ap[PIPE_PTR], op[PIPE_PTR], pp[PIPE_PTR];
  theus__pipe_child(ap, ptr, "args", 0);
  theus__pipe_child(op, ptr, "outputs", 0);
  theus__pipe_child(pp, ptr, "parallel", 0);
  if (!rc) rc = strv_from_json(p, json_object_get(v, "args"), ap, "args", true, &t->args);
  if (!rc) rc = strv_from_json(p, json_object_get(v, "outputs"), op, "outputs", false, &t->outputs);
  json_t *par = json_object_get(v, "parallel");
  if (!rc && par && !json_is_boolean(par))
    rc = theus__pipe_err(p, pp, false, "\"parallel\" must be true or false, found %s", theus__pipe_type_name(par));
  t->parallel = json_is_true(par);
  long long tmo = 0;
  if (!rc) rc = get_int(p, v, ptr, "timeout_ms", -1, INT32_MAX, &tmo, "0 = the engine default, -1 = none");
  t->timeout_ms = (int64_t)tmo;
  json_t *memo = json_object_get(v, "memo");
  if (!rc && memo && !json_is_boolean(memo)) {
    char mp[PIPE_PTR];
    theus__pipe_child(mp, ptr, "memo", 0);
    rc = theus__pipe_err(p, mp, false, "\"memo\" must be true or false, found %s", theus__pipe_type_name(memo));
  }
  t->memo = !memo ? 0 : json_is_true(memo) ? 1 : -1;
  if (!rc) rc = get_not_lengths(p, v, ptr, &t->not_lengths);
  if (rc) return rc;
  /* check the bindings now, with a stand-in function: the real one is looked up in the plugins at open */
  char err[THEUS_FFI_ERRLEN];
  rc = theus__ffi_proc_init(&t->ffi, noop_fn, t->signature, (const char *const *)t->args, theus__pipe_strv_len(t->args),
                            (const char *const *)t->outputs, theus__pipe_strv_len(t->outputs), err, sizeof err);
  if (rc) return typed_err(p, t, rc, ptr, err);
  if ((rc = theus__ffi_proc_not_length(&t->ffi, t->not_lengths, err, sizeof err))) {
    char np[PIPE_PTR];
    theus__pipe_child(np, ptr, "not_lengths", 0);
    theus__ffi_proc_fini(&t->ffi);
    return theus__pipe_err(p, np, false, "process \"%s\": %s", t->name, err);
  }
  bool writes = theus__ffi_proc_writes_array(&t->ffi);
  theus__ffi_proc_fini(&t->ffi);
  if (writes && t->parallel)
    return theus__pipe_err(p, pp, false,
                           "process \"%s\" writes a heavy array, which workers cannot do (they map the arena "
                           "read-only); remove \"parallel\": true",
                           t->name);
  return 0;
}

static int load_processes(theus_pipeline *p, const json_t *v) {
  if (!v) return 0;
  if (!json_is_array(v))
    return theus__pipe_err(p, "/processes", false, "\"processes\" must be an array of contracts, found %s",
                           theus__pipe_type_name(v));
  size_t n = json_array_size(v);
  p->typed = calloc(n + 1, sizeof *p->typed);
  p->jprocs = calloc(n + 1, sizeof *p->jprocs);
  if (!p->typed || !p->jprocs) return THEUS_ENOMEM;
  for (size_t i = 0; i < n; i++) {
    json_t *c = json_array_get(v, i);
    char ip[PIPE_PTR];
    theus__pipe_child(ip, "/processes", NULL, i);
    if (!json_is_object(c))
      return theus__pipe_err(p, ip, false, "processes[%zu] must be a contract object, found %s", i,
                             theus__pipe_type_name(c));
    if (json_object_get(c, "signature")) {
      int rc = typed_one(p, &p->typed[p->ntyped++], c, ip);
      if (rc) return rc;
    } else {
      snprintf(p->jprocs[p->njprocs].ptr, PIPE_PTR, "%s", ip);
      p->jprocs[p->njprocs++].obj = json_incref(c);
    }
  }
  return 0;
}

/* ---- load / free ---------------------------------------------------------------- */

static int read_text(theus_pipeline *p) {
  FILE *f = fopen(p->path, "rb");
  struct stat st;
  if (f && fstat(fileno(f), &st) == 0 && S_ISDIR(st.st_mode)) { /* fopen takes a directory; fread fails */
    fclose(f);
    snprintf(p->msg, sizeof p->msg, "%s:0:0: is a directory, not a pipeline file; give the JSON file inside it",
             p->path);
    return THEUS_EPARSE;
  }
  if (!f) {
    int e = errno; /* out of descriptors or memory is no fault of the file */
    snprintf(p->msg, sizeof p->msg, "%s:0:0: cannot open the pipeline file: %s", p->path, strerror(e));
    return e == ENOMEM ? THEUS_ENOMEM : e == EMFILE || e == ENFILE ? THEUS_ESYS : THEUS_EPARSE;
  }
  size_t cap = 4096, n = 0;
  char *buf = malloc(cap);
  while (buf) {
    n += fread(buf + n, 1, cap - n - 1, f);
    if (n < cap - 1) break;
    char *nb = realloc(buf, cap *= 2);
    if (!nb) free(buf);
    buf = nb;
  }
  int rerr = ferror(f) ? errno : 0;
  fclose(f);
  if (!buf) {
    snprintf(p->msg, sizeof p->msg, "%s: out of memory reading the pipeline file", p->path);
    return THEUS_ENOMEM;
  }
  if (rerr) {
    free(buf);
    snprintf(p->msg, sizeof p->msg, "%s:0:0: cannot read the pipeline file: %s", p->path, strerror(rerr));
    return THEUS_EPARSE;
  }
  buf[n] = '\0';
  p->text = buf;
  json_error_t je;
  int rc = 0;
  p->root = theus__json_load(buf, n, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &je, &rc);
  if (!p->root) {
    if (rc == THEUS_ENOMEM)
      snprintf(p->msg, sizeof p->msg, "%s: out of memory parsing the pipeline file", p->path);
    else
      snprintf(p->msg, sizeof p->msg, "%s:%d:%d: invalid JSON: %s", p->path, je.line, je.column, je.text);
    return rc;
  }
  char err[256];
  rc = theus__pos_index_build(&p->pos, buf, n, err, sizeof err);
  if (rc) snprintf(p->msg, sizeof p->msg, "%s:%s", p->path, err);
  return rc;
}

static int load_all(theus_pipeline *p) {
  static const char *const allowed[] = {"description", "plugins", "workers", "budget", "arena", "domain",
                                        "heavy", "processes", "steps", NULL};
  int rc = read_text(p);
  if (rc) return rc;
  if (!json_is_object(p->root))
    return theus__pipe_err(p, "", false, "a pipeline is a JSON object with \"steps\", found %s",
                           theus__pipe_type_name(p->root));
  if ((rc = theus__pipe_check_keys(p, p->root, "", allowed, "the pipeline"))) return rc;
  long long workers = -2, budget = PIPE_DEFAULT_BUDGET;
  if ((rc = get_int(p, p->root, "", "workers", -1, THEUS_ENGINE_MAX_WORKERS, &workers,
                    "-1 = no pool, 0 = one per usable CPU; the limit is THEUS_ENGINE_MAX_WORKERS"))) return rc;
  if ((rc = load_arena(p, json_object_get(p->root, "arena")))) return rc;
  if ((rc = get_int(p, p->root, "", "budget", 1, INT64_MAX, &budget, "operations the run may perform"))) return rc;
  p->workers = (int)workers;
  p->budget = (uint64_t)budget;
  if ((rc = load_plugins(p, json_object_get(p->root, "plugins")))) return rc;
  if ((rc = load_domain(p, json_object_get(p->root, "domain")))) return rc;
  if ((rc = load_heavy(p, json_object_get(p->root, "heavy")))) return rc;
  if ((rc = load_processes(p, json_object_get(p->root, "processes")))) return rc;
  json_t *steps = json_object_get(p->root, "steps");
  if (!steps)
    return theus__pipe_err(p, "", false, "the pipeline has no \"steps\"; add \"steps\": [{\"run\": \"process\"}]");
  return theus__pipe_parse_steps(p, steps, "/steps", &p->steps, false);
}

int theus_pipeline_load(const char *path, theus_pipeline **out) {
  if (!out) return THEUS_EINVAL;
  theus_pipeline *p = *out = calloc(1, sizeof *p);
  if (!p) return THEUS_ENOMEM;
  /* from here on p carries the message, sqlite3_open style */
  p->workers = -2;
  p->budget = PIPE_DEFAULT_BUDGET;
  if (!path) {
    snprintf(p->msg, sizeof p->msg, "theus_pipeline_load: the pipeline path is NULL");
    return THEUS_EINVAL;
  }
  if (!(p->path = strdup(path)) || !(p->dir = strdup(path))) {
    snprintf(p->msg, sizeof p->msg, "%s: out of memory", path);
    return THEUS_ENOMEM;
  }
  char *slash = strrchr(p->dir, '/');
  if (slash)
    slash[slash == p->dir] = '\0'; /* keep "/" for files at the root */
  else
    strcpy(p->dir, ".");
  int rc = load_all(p);
  if (rc && !p->msg[0]) snprintf(p->msg, sizeof p->msg, "%s: %s", path, theus_strerror(rc));
  p->loaded = rc == 0;
  return rc;
}

int theus_pipeline_add_plugin(theus_pipeline *p, const char *path) {
  THEUS__PIPE_ARG(p, "theus_pipeline_add_plugin");
  if (!path) {
    snprintf(p->msg, sizeof p->msg, "theus_pipeline_add_plugin: the path is NULL");
    return THEUS_EINVAL;
  }
  return add_plugin(p, path);
}

int theus_pipeline_set(theus_pipeline *p, const char *path, json_t *value) {
  int rc = 0;
  if (!p || !p->loaded || !path || !value) {
    json_decref(value); /* stolen, as on every other failure */
    THEUS__PIPE_ARG(p, "theus_pipeline_set");
    snprintf(p->msg, sizeof p->msg, "theus_pipeline_set: the %s is NULL", path ? "value" : "path");
    return THEUS_EINVAL;
  }
  if (strncmp(path, "domain.", 7) != 0 || theus_path_check(path, NULL, 0) || strchr(path, '*')) {
    snprintf(p->msg, sizeof p->msg, "theus_pipeline_set %s: the path must look like domain.field or domain.a.b", path);
    json_decref(value);
    return THEUS_EINVAL;
  }
  char *copy = strdup(path + 7), *save = NULL;
  json_t *obj = p->domain;
  for (char *seg = copy ? strtok_r(copy, ".", &save) : NULL; seg; seg = strtok_r(NULL, ".", &save)) {
    char *rest = save && *save ? save : NULL;
    if (!rest) {
      rc = json_object_set(obj, seg, value);
      break;
    }
    json_t *next = json_object_get(obj, seg);
    if (!json_is_object(next)) {
      next = json_object();
      if (json_object_set_new(obj, seg, next)) next = NULL;
    }
    if (!(obj = next)) rc = THEUS_ENOMEM;
    if (rc) break;
  }
  free(copy);
  json_decref(value);
  return rc ? THEUS_ENOMEM : 0;
}

int theus_pipeline_workers(const theus_pipeline *p) { return p && p->loaded ? p->workers : -2; }

void theus_pipeline_arena_config(const theus_pipeline *p, theus_arena_config *out) {
  if (!out) return;
  if (p && p->loaded) *out = p->arena;
  else *out = (theus_arena_config){0};
}
uint64_t theus_pipeline_ops(const theus_pipeline *p) { return p ? p->ops : 0; }
const char *theus_pipeline_errmsg(const theus_pipeline *p) { return p ? p->msg : "no pipeline"; }

void theus_pipeline_on_progress(theus_pipeline *p, theus_pipeline_progress_fn fn, void *ud) {
  if (!p) return;
  p->progress = fn;
  p->progress_ud = ud;
}

void theus_pipeline_on_enter(theus_pipeline *p, theus_pipeline_where_fn fn, void *ud) {
  if (!p) return;
  p->enter = fn;
  p->enter_ud = ud;
}

void theus__pipe_enter(theus_pipeline *p, theus_pipeline_code code, const char *plugin, const char *process, int local) {
  if (!p->enter) return;
  theus_pipeline_where w = {code, plugin, process, local};
  p->enter(&w, p->enter_ud);
}

static void typed_free(typed_proc *t) {
  if (t->ffi_ready) theus__ffi_proc_fini(&t->ffi);
  theus__ffi_strv_free(t->args);
  theus__ffi_strv_free(t->outputs);
  free(t->name);
  free(t->symbol);
  free(t->signature);
}

void theus_pipeline_close(theus_pipeline *p) {
  if (!p) return;
  theus__pipe_steps_free(&p->steps);
  for (size_t i = 0; i < p->ntyped; i++) typed_free(&p->typed[i]);
  for (size_t i = 0; i < p->njprocs; i++) json_decref(p->jprocs[i].obj);
  for (size_t i = 0; i < p->nheavy; i++) {
    free(p->heavy[i].key);
    free(p->heavy[i].file);
  }
  theus__pipe_unload_plugins(p);
  for (size_t i = 0; i < p->nplugins; i++) free(p->plugins[i].path);
  free(p->plugins);
  free(p->typed);
  free(p->jprocs);
  free(p->heavy);
  json_decref(p->domain);
  json_decref(p->root);
  theus__pos_index_free(&p->pos);
  free(p->text);
  free(p->path);
  free(p->dir);
  free(p);
}
