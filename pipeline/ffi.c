/* theus-c — libffi-typed processes: signature parser, bindings, call. */
#include "ffi.h"

#include <ctype.h>
#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base.h" /* theus__errf */
#include "theus/error.h"


static const struct {
  const char *name;
  theus_dtype type;
} type_names[] = {
    {"u8", THEUS_DTYPE_U8},   {"u16", THEUS_DTYPE_U16}, {"u32", THEUS_DTYPE_U32}, {"u64", THEUS_DTYPE_U64},
    {"i8", THEUS_DTYPE_I8},   {"i16", THEUS_DTYPE_I16}, {"i32", THEUS_DTYPE_I32}, {"i64", THEUS_DTYPE_I64},
    {"f32", THEUS_DTYPE_F32}, {"f64", THEUS_DTYPE_F64},
};
#define NTYPES (sizeof type_names / sizeof type_names[0])

const char *theus__ffi_type_name(theus__ffi_type t, char buf[16]) {
  const char *base = "void";
  for (size_t i = 0; i < NTYPES; i++)
    if (type_names[i].type == t.type) base = type_names[i].name;
  snprintf(buf, 16, "%s%s", base, t.ptr ? "*" : "");
  return buf;
}

static bool is_integer_type(theus_dtype t) { return t >= THEUS_DTYPE_U8 && t <= THEUS_DTYPE_I64; }

static ffi_type *ffi_of(theus__ffi_type t) {
  if (t.ptr) return &ffi_type_pointer;
  switch (t.type) {
  case THEUS_DTYPE_U8: return &ffi_type_uint8;
  case THEUS_DTYPE_U16: return &ffi_type_uint16;
  case THEUS_DTYPE_U32: return &ffi_type_uint32;
  case THEUS_DTYPE_U64: return &ffi_type_uint64;
  case THEUS_DTYPE_I8: return &ffi_type_sint8;
  case THEUS_DTYPE_I16: return &ffi_type_sint16;
  case THEUS_DTYPE_I32: return &ffi_type_sint32;
  case THEUS_DTYPE_I64: return &ffi_type_sint64;
  case THEUS_DTYPE_F32: return &ffi_type_float;
  case THEUS_DTYPE_F64: return &ffi_type_double;
  default: return &ffi_type_void;
  }
}

/* ---- signature parser --------------------------------------------------- */

typedef struct sig_lexer {
  const char *s;
  size_t pos;
  char *err;
  size_t errlen;
} sig_lexer;

static void skip_ws(sig_lexer *lx) {
  while (isspace((unsigned char)lx->s[lx->pos])) lx->pos++;
}

/* Reads one type; void is accepted only where allow_void says so. */
static int parse_type(sig_lexer *lx, theus__ffi_type *out, bool allow_void) {
  skip_ws(lx);
  size_t start = lx->pos;
  while (isalnum((unsigned char)lx->s[lx->pos])) lx->pos++;
  size_t n = lx->pos - start;
  const char *w = lx->s + start;
  out->ptr = false;
  out->type = 0;
  bool found = n == 4 && strncmp(w, "void", 4) == 0;
  for (size_t i = 0; !found && i < NTYPES; i++)
    if (strlen(type_names[i].name) == n && strncmp(w, type_names[i].name, n) == 0) {
      out->type = type_names[i].type;
      found = true;
    }
  if (!found)
    return theus__errf(lx->err, lx->errlen, THEUS_EPARSE,
                "signature \"%s\", column %zu: expected a type (u8 u16 u32 u64 i8 i16 i32 i64 f32 f64, "
                "T* for an array%s), found \"%.*s\"",
                lx->s, start + 1, allow_void ? ", void" : "", (int)(n ? n : 1), n ? w : lx->s + start);
  skip_ws(lx);
  if (lx->s[lx->pos] == '*') {
    if (out->type == 0)
      return theus__errf(lx->err, lx->errlen, THEUS_EPARSE,
                  "signature \"%s\", column %zu: void* has no element type; use u8* for bytes", lx->s,
                  lx->pos + 1);
    out->ptr = true;
    lx->pos++;
  }
  if (out->type == 0 && !allow_void)
    return theus__errf(lx->err, lx->errlen, THEUS_EPARSE,
                "signature \"%s\", column %zu: void is only allowed as the return type or as \"(void)\"",
                lx->s, start + 1);
  return 0;
}

static int expect_char(sig_lexer *lx, char c, const char *what) {
  skip_ws(lx);
  if (lx->s[lx->pos] != c)
    return theus__errf(lx->err, lx->errlen, THEUS_EPARSE, "signature \"%s\", column %zu: expected %s", lx->s,
                lx->pos + 1, what);
  lx->pos++;
  return 0;
}

static int parse_args(sig_lexer *lx, theus__ffi_sig *sig) {
  skip_ws(lx);
  if (lx->s[lx->pos] == ')') return 0;
  size_t first = lx->pos;
  for (;;) {
    theus__ffi_type t;
    if (sig->nargs == THEUS_FFI_MAX_ARGS)
      return theus__errf(lx->err, lx->errlen, THEUS_EPARSE, "signature \"%s\", column %zu: more than %d arguments",
                  lx->s, lx->pos + 1, THEUS_FFI_MAX_ARGS);
    int rc = parse_type(lx, &t, true);
    if (rc) return rc;
    if (t.type == 0) { /* "(void)" means no arguments, only on its own */
      skip_ws(lx);
      if (sig->nargs || lx->s[lx->pos] != ')')
        return theus__errf(lx->err, lx->errlen, THEUS_EPARSE,
                    "signature \"%s\", column %zu: void is only allowed as the return type or as \"(void)\"",
                    lx->s, first + 1);
      return 0;
    }
    sig->args[sig->nargs++] = t;
    skip_ws(lx);
    if (lx->s[lx->pos] != ',') return 0;
    lx->pos++;
  }
}

int theus__ffi_sig_parse(const char *text, theus__ffi_sig *sig, char *err, size_t errlen) {
  if (!text || !sig) return theus__errf(err, errlen, THEUS_EINVAL, "signature: NULL argument");
  memset(sig, 0, sizeof *sig);
  sig_lexer lx = {text, 0, err, errlen};
  int rc = parse_type(&lx, &sig->ret, true);
  if (!rc && sig->ret.ptr)
    rc = theus__errf(err, errlen, THEUS_EPARSE,
              "signature \"%s\": a pointer return cannot be bound to state; return a scalar or void and "
              "write arrays through a T* argument declared as an output",
              text);
  if (!rc) rc = expect_char(&lx, '(', "\"(\" after the return type, e.g. \"void(f32*, u64)\"");
  if (!rc) rc = parse_args(&lx, sig);
  if (!rc) rc = expect_char(&lx, ')', "\",\" or \")\" after an argument type");
  if (!rc) {
    skip_ws(&lx);
    if (text[lx.pos])
      rc = theus__errf(err, errlen, THEUS_EPARSE, "signature \"%s\", column %zu: unexpected text after \")\"", text,
                lx.pos + 1);
  }
  return rc;
}

/* ---- scalar conversion ---------------------------------------------------- */

/* long double holds every int64/uint64 and every double exactly on the
 * platforms we build for, so one range check covers all conversions. */
static bool int_range(theus_dtype t, long double *lo, long double *hi) {
  switch (t) {
  case THEUS_DTYPE_U8: *lo = 0; *hi = UINT8_MAX; return true;
  case THEUS_DTYPE_U16: *lo = 0; *hi = UINT16_MAX; return true;
  case THEUS_DTYPE_U32: *lo = 0; *hi = UINT32_MAX; return true;
  case THEUS_DTYPE_U64: *lo = 0; *hi = UINT64_MAX; return true;
  case THEUS_DTYPE_I8: *lo = INT8_MIN; *hi = INT8_MAX; return true;
  case THEUS_DTYPE_I16: *lo = INT16_MIN; *hi = INT16_MAX; return true;
  case THEUS_DTYPE_I32: *lo = INT32_MIN; *hi = INT32_MAX; return true;
  case THEUS_DTYPE_I64: *lo = (long double)INT64_MIN; *hi = (long double)INT64_MAX; return true;
  default: return false;
  }
}

/* An integer already checked against t's range into a slot of type t. */
static void store_int(theus_dtype t, int64_t v, void *slot) {
  switch (t) {
  case THEUS_DTYPE_U8: *(uint8_t *)slot = (uint8_t)v; break;
  case THEUS_DTYPE_U16: *(uint16_t *)slot = (uint16_t)v; break;
  case THEUS_DTYPE_U32: *(uint32_t *)slot = (uint32_t)v; break;
  case THEUS_DTYPE_U64: *(uint64_t *)slot = (uint64_t)v; break;
  case THEUS_DTYPE_I8: *(int8_t *)slot = (int8_t)v; break;
  case THEUS_DTYPE_I16: *(int16_t *)slot = (int16_t)v; break;
  case THEUS_DTYPE_I32: *(int32_t *)slot = (int32_t)v; break;
  default: *(int64_t *)slot = v; break;
  }
}

static void store_scalar(theus_dtype t, long double v, void *slot) {
  long double lo, hi;
  if (t == THEUS_DTYPE_U64) *(uint64_t *)slot = (uint64_t)v; /* may exceed INT64_MAX */
  else if (int_range(t, &lo, &hi)) store_int(t, (int64_t)v, slot);
  else if (t == THEUS_DTYPE_F32) *(float *)slot = (float)v;
  else *(double *)slot = (double)v;
}

static int scalar_from_ld(theus_dtype t, long double v, const char *what, void *slot, char *err, size_t errlen) {
  char tb[16];
  const char *tn = theus__ffi_type_name((theus__ffi_type){t, false}, tb);
  long double lo, hi;
  if (int_range(t, &lo, &hi)) {
    if (isnan(v) || v != floorl(v))
      return theus__errf(err, errlen, THEUS_EINVAL, "%s = %.17Lg is not an integer, but the argument is %s", what, v,
                  tn);
    if (v < lo || v > hi)
      return theus__errf(err, errlen, THEUS_EINVAL, "%s = %.17Lg is out of range for %s [%.0Lf, %.0Lf]", what, v, tn,
                  lo, hi);
  } else if (t == THEUS_DTYPE_F32 && isfinite(v) && fabsl(v) > FLT_MAX) {
    return theus__errf(err, errlen, THEUS_EINVAL, "%s = %.17Lg is out of range for f32 (|x| <= %g)", what, v,
                (double)FLT_MAX);
  }
  store_scalar(t, v, slot);
  return 0;
}

/* A JSON integer into an integer type, without going through long double:
 * exact everywhere, also where long double is only a double (valgrind
 * computes x87 arithmetic in 64 bits, so INT64_MAX - 1 would round). */
static int scalar_from_int(theus_dtype t, int64_t v, const char *what, void *slot, char *err, size_t errlen) {
  long double lo, hi;
  if (!int_range(t, &lo, &hi)) return scalar_from_ld(t, (long double)v, what, slot, err, errlen);
  int64_t ilo = t == THEUS_DTYPE_I64 ? INT64_MIN : (int64_t)lo;
  int64_t ihi = t == THEUS_DTYPE_I64 || t == THEUS_DTYPE_U64 ? INT64_MAX : (int64_t)hi;
  if (v < ilo || v > ihi) return scalar_from_ld(t, (long double)v, what, slot, err, errlen); /* the range message */
  store_int(t, v, slot);
  return 0;
}

int theus__ffi_scalar_from_json(theus_dtype t, const json_t *v, const char *what, void *slot, char *err,
                                size_t errlen) {
  if (json_is_integer(v)) return scalar_from_int(t, (int64_t)json_integer_value(v), what, slot, err, errlen);
  if (json_is_real(v)) return scalar_from_ld(t, (long double)json_real_value(v), what, slot, err, errlen);
  const char *kind = !v ? "missing" : json_is_boolean(v) ? "a boolean" : json_is_string(v) ? "a string"
                     : json_is_null(v) ? "null" : json_is_array(v) ? "an array" : "an object";
  return theus__errf(err, errlen, THEUS_EINVAL, "%s is %s; the argument needs a number (set it in the domain)", what,
              kind);
}

/* ---- bindings ------------------------------------------------------------- */

static bool is_output(const char *path, const char *const *outputs, size_t noutputs) {
  for (size_t i = 0; i < noutputs; i++)
    if (outputs[i] && strcmp(outputs[i], path) == 0) return true;
  return false;
}

static bool parse_literal(const char *s, double *out) {
  char *end;
  if (!*s || !(isdigit((unsigned char)*s) || *s == '-' || *s == '+' || *s == '.')) return false;
  *out = strtod(s, &end);
  return *end == '\0';
}

/* A binding reads a state path its contract will name as an input, so it
 * must be one theus_path_check accepts (heavy.KEY is one key; domain fields
 * start with a letter or '_'), and one value, not a '*' pattern. */
static int check_bind_path(const theus__ffi_bind *b, unsigned i, const char *arg, const char *sigtext, char *err,
                           size_t errlen) {
  char *full, why[256] = "";
  if (!b->path || asprintf(&full, "%s.%s", b->kind == THEUS_FFI_BIND_DOMAIN ? "domain" : "heavy", b->path) < 0)
    return theus__errf(err, errlen, THEUS_ENOMEM, "argument %u of \"%s\": out of memory", i + 1, sigtext);
  int bad = theus_path_check(full, why, sizeof why);
  if (!bad && strchr(full, '*')) snprintf(why, sizeof why, "'*' is a pattern, an argument reads one value");
  free(full);
  if (why[0])
    return theus__errf(err, errlen, THEUS_EINVAL, "argument %u of \"%s\" is bound to \"%s\", not a valid state path: %s",
                       i + 1, sigtext, arg, why);
  return 0;
}

/* Parses one argument binding and checks it against its type. */
static int bind_one(theus__ffi_bind *b, theus__ffi_type t, unsigned i, const char *arg, const char *sigtext,
                    const char *const *outputs, size_t noutputs, char *err, size_t errlen) {
  char tb[16];
  const char *tn = theus__ffi_type_name(t, tb);
  size_t n = arg ? strlen(arg) : 0;
  if (arg && strncmp(arg, "heavy.", 6) == 0 && n > 10 && strcmp(arg + n - 4, ".len") == 0) {
    b->kind = THEUS_FFI_BIND_LEN;
    b->path = strndup(arg + 6, n - 10);
  } else if (arg && strncmp(arg, "heavy.", 6) == 0) {
    b->kind = THEUS_FFI_BIND_ARRAY;
    b->path = strdup(arg + 6);
    b->writable = is_output(arg, outputs, noutputs);
  } else if (arg && strncmp(arg, "domain.", 7) == 0) {
    b->kind = THEUS_FFI_BIND_DOMAIN;
    b->path = strdup(arg + 7);
  } else if (arg && parse_literal(arg, &b->literal)) {
    b->kind = THEUS_FFI_BIND_LITERAL;
  } else {
    return theus__errf(err, errlen, THEUS_EINVAL,
                "argument %u of \"%s\" is bound to \"%s\": expected heavy.KEY, heavy.KEY.len, domain.PATH or a "
                "number",
                i + 1, sigtext, arg ? arg : "(null)");
  }
  int rc = b->kind == THEUS_FFI_BIND_LITERAL ? 0 : check_bind_path(b, i, arg, sigtext, err, errlen);
  if (rc) return rc;
  if (t.ptr != (b->kind == THEUS_FFI_BIND_ARRAY))
    return theus__errf(err, errlen, THEUS_EINVAL,
                "argument %u of \"%s\" is %s but is bound to \"%s\"; %s", i + 1, sigtext, tn, arg,
                t.ptr ? "a pointer argument needs heavy.KEY" : "heavy.KEY is an array: declare the argument as T*");
  if (b->kind == THEUS_FFI_BIND_LEN && !is_integer_type(t.type))
    return theus__errf(err, errlen, THEUS_EINVAL,
                "argument %u of \"%s\" is %s but is bound to the length \"%s\"; use an integer type (u64)",
                i + 1, sigtext, tn, arg);
  if (b->kind == THEUS_FFI_BIND_LITERAL) {
    uint64_t slot;
    char what[64];
    snprintf(what, sizeof what, "literal argument %u", i + 1);
    return scalar_from_ld(t.type, (long double)b->literal, what, &slot, err, errlen);
  }
  return 0;
}

/* *bad gets the index of the output refused. */
static int check_outputs(theus__ffi_proc *p, const char *sigtext, const char *const *outputs, size_t noutputs,
                         int *bad, char *err, size_t errlen) {
  for (size_t i = 0; i < noutputs; i++) {
    const char *o = outputs[i];
    if (o && strncmp(o, "domain.", 7) == 0) {
      if (!p->ret_output && p->sig.ret.type && !(p->ret_output = strdup(o)))
        return theus__errf(err, errlen, THEUS_ENOMEM, "output \"%s\" of \"%s\": out of memory", o, sigtext);
      continue;
    }
    bool bound = false; /* the prefix first: o may be shorter than "heavy." */
    for (unsigned a = 0; o && strncmp(o, "heavy.", 6) == 0 && a < p->sig.nargs; a++)
      bound |= p->binds[a].kind == THEUS_FFI_BIND_ARRAY && strcmp(p->binds[a].path, o + 6) == 0;
    if (!bound) {
      *bad = (int)i;
      return theus__errf(err, errlen, THEUS_EINVAL,
                  "output \"%s\" of \"%s\": a typed process writes domain.PATH (its return value) or a heavy.KEY "
                  "that is also one of its T* arguments",
                  o ? o : "(null)", sigtext);
    }
  }
  if (p->sig.ret.type && !p->ret_output)
    return theus__errf(err, errlen, THEUS_EINVAL,
                "\"%s\" returns a value but no output domain.PATH receives it; add one to \"outputs\" or return "
                "void",
                sigtext);
  return 0;
}

int theus__ffi_proc_init(theus__ffi_proc *p, void (*fn)(void), const char *signature, const char *const *args,
                         size_t nargs, const char *const *outputs, size_t noutputs, char *err, size_t errlen) {
  memset(p, 0, sizeof *p);
  p->fn = fn;
  int rc = theus__ffi_sig_parse(signature, &p->sig, err, errlen), bad_arg = -1, bad_output = -1;
  if (rc) goto out;
  if (!fn) {
    rc = theus__errf(err, errlen, THEUS_EINVAL, "typed process \"%s\": NULL function", signature);
    goto out;
  }
  if (nargs != p->sig.nargs) {
    rc = theus__errf(err, errlen, THEUS_EINVAL, "signature \"%s\" takes %u argument%s but %zu binding%s given in \"args\"",
              signature, p->sig.nargs, p->sig.nargs == 1 ? "" : "s", nargs, nargs == 1 ? " is" : "s are");
    goto out;
  }
  for (unsigned i = 0; i < p->sig.nargs && !rc; i++) {
    rc = bind_one(&p->binds[i], p->sig.args[i], i, args[i], signature, outputs, noutputs, err, errlen);
    p->atypes[i] = ffi_of(p->sig.args[i]);
    if (rc) bad_arg = (int)i;
  }
  /* The length rule: an integer bound to a value right after an array describes that array. */
  for (unsigned i = 1; i < p->sig.nargs && !rc; i++) {
    const theus__ffi_bind *prev = &p->binds[i - 1], *b = &p->binds[i];
    if (prev->kind == THEUS_FFI_BIND_ARRAY && is_integer_type(p->sig.args[i].type) && !p->sig.args[i].ptr &&
        (b->kind == THEUS_FFI_BIND_DOMAIN || b->kind == THEUS_FFI_BIND_LITERAL))
      p->binds[i].len_of = i; /* 1 + index of the array: i - 1 + 1 */
  }
  if (!rc) rc = check_outputs(p, signature, outputs, noutputs, &bad_output, err, errlen);
  if (!rc && ffi_prep_cif(&p->cif, FFI_DEFAULT_ABI, p->sig.nargs, ffi_of(p->sig.ret), p->atypes) != FFI_OK)
    rc = theus__errf(err, errlen, THEUS_EINVAL, "libffi refused the signature \"%s\"", signature);
out:
  if (rc) {
    theus__ffi_proc_fini(p);
    p->bad_arg = bad_arg;
    p->bad_output = bad_output;
  }
  return rc;
}

void theus__ffi_proc_fini(theus__ffi_proc *p) {
  if (!p) return;
  for (unsigned i = 0; i < THEUS_FFI_MAX_ARGS; i++) free(p->binds[i].path);
  free(p->ret_output);
  memset(p, 0, sizeof *p);
}

int theus__ffi_proc_not_length(theus__ffi_proc *p, uint32_t mask, char *err, size_t errlen) {
  for (unsigned i = 0; i < 32; i++) {
    if (!(mask & (1u << i))) continue;
    if (i >= p->sig.nargs || !p->binds[i].len_of)
      return theus__errf(err, errlen, THEUS_EINVAL,
                         "\"not_lengths\" names argument %u, which is not an integer bound to domain.PATH or a "
                         "number right after a T* argument bound to heavy.KEY (only such an argument is taken "
                         "for the array's length)",
                         i + 1);
    p->binds[i].len_of = 0;
  }
  return 0;
}

/* ---- call ----------------------------------------------------------------- */

typedef union slot {
  uint64_t u64;
  double f64;
  void *ptr;
  ffi_arg a;
} slot;

static int resolve_array(const theus__ffi_bind *b, theus__ffi_type t, unsigned i, const theus__ffi_env *env,
                         theus_array_info *info, char *err, size_t errlen) {
  int rc = env->array ? env->array(env->ud, b->path, b->writable && t.ptr, info, err, errlen)
                      : theus__errf(err, errlen, THEUS_ENOTFOUND, "no heavy state");
  if (rc) return rc;
  if (t.ptr && info->dtype != t.type) {
    char tb[16], hb[16], eb[16];
    const char *have = info->dtype ? theus__ffi_type_name((theus__ffi_type){info->dtype, false}, hb)
                                   : "untyped (bytes)";
    return theus__errf(err, errlen, THEUS_ECONTRACT,
                "argument %u is %s but heavy.%s holds %s elements; allocate it with dtype \"%s\" or change the "
                "signature",
                i + 1, theus__ffi_type_name(t, tb), b->path, have,
                theus__ffi_type_name((theus__ffi_type){t.type, false}, eb));
  }
  return 0;
}

static int bind_value(const theus__ffi_bind *b, theus__ffi_type t, unsigned i, const theus__ffi_env *env,
                      slot *s, theus_array_info *arr, char *err, size_t errlen) {
  theus_array_info info;
  char what[160];
  int rc;
  switch (b->kind) {
  case THEUS_FFI_BIND_ARRAY:
    rc = resolve_array(b, t, i, env, &info, err, errlen);
    s->ptr = (void *)info.data;
    if (!rc) *arr = info;
    return rc;
  case THEUS_FFI_BIND_LEN:
    rc = resolve_array(b, t, i, env, &info, err, errlen);
    if (rc) return rc;
    snprintf(what, sizeof what, "heavy.%s.len", b->path);
    return scalar_from_ld(t.type, (long double)(info.itemsize ? info.nbytes / info.itemsize : info.nbytes), what,
                          s, err, errlen);
  case THEUS_FFI_BIND_DOMAIN:
    snprintf(what, sizeof what, "domain.%s (argument %u)", b->path, i + 1);
    return theus__ffi_scalar_from_json(t.type, env->domain ? env->domain(env->ud, b->path) : NULL, what, s, err,
                                       errlen);
  default:
    snprintf(what, sizeof what, "literal argument %u", i + 1);
    return scalar_from_ld(t.type, (long double)b->literal, what, s, err, errlen);
  }
}

static json_t *ret_to_json(theus_dtype t, const slot *rv) {
  switch (t) {
  case THEUS_DTYPE_U8: return json_integer((uint8_t)rv->a);
  case THEUS_DTYPE_U16: return json_integer((uint16_t)rv->a);
  case THEUS_DTYPE_U32: return json_integer((uint32_t)rv->a);
  case THEUS_DTYPE_I8: return json_integer((int8_t)(ffi_sarg)rv->a);
  case THEUS_DTYPE_I16: return json_integer((int16_t)(ffi_sarg)rv->a);
  case THEUS_DTYPE_I32: return json_integer((int32_t)(ffi_sarg)rv->a);
  case THEUS_DTYPE_I64: return json_integer((json_int_t)(int64_t)rv->u64);
  case THEUS_DTYPE_U64: /* JSON integers are signed 64-bit: larger values become reals */
    return rv->u64 <= INT64_MAX ? json_integer((json_int_t)rv->u64) : json_real((double)rv->u64);
  case THEUS_DTYPE_F32: {
    float f;
    memcpy(&f, rv, sizeof f);
    return json_real(f);
  }
  default: return json_real(rv->f64);
  }
}

static int64_t slot_int(theus_dtype t, const slot *s, bool *neg) {
  *neg = false;
  switch (t) {
  case THEUS_DTYPE_U8: return *(const uint8_t *)s;
  case THEUS_DTYPE_U16: return *(const uint16_t *)s;
  case THEUS_DTYPE_U32: return *(const uint32_t *)s;
  case THEUS_DTYPE_U64: return s->u64 > INT64_MAX ? INT64_MAX : (int64_t)s->u64;
  case THEUS_DTYPE_I8: *neg = *(const int8_t *)s < 0; return *(const int8_t *)s;
  case THEUS_DTYPE_I16: *neg = *(const int16_t *)s < 0; return *(const int16_t *)s;
  case THEUS_DTYPE_I32: *neg = *(const int32_t *)s < 0; return *(const int32_t *)s;
  default: *neg = *(const int64_t *)s < 0; return *(const int64_t *)s;
  }
}

/* The length rule: a length argument may not exceed the array it describes. */
static int check_length(const theus__ffi_proc *p, unsigned i, const slot *v, const theus_array_info *arrs,
                        bool sliced, char *err, size_t errlen) {
  const theus__ffi_bind *b = &p->binds[i], *ab = &p->binds[b->len_of - 1];
  const theus_array_info *a = &arrs[b->len_of - 1];
  uint64_t count = a->itemsize ? a->nbytes / a->itemsize : a->nbytes;
  bool neg;
  int64_t n = slot_int(p->sig.args[i].type, v, &neg);
  if (!neg && (uint64_t)n <= count) return 0;
  char src[160];
  if (b->kind == THEUS_FFI_BIND_DOMAIN)
    snprintf(src, sizeof src, "domain.%s = %lld", b->path, (long long)n);
  else
    snprintf(src, sizeof src, "the literal %lld", (long long)n);
  return theus__errf(err, errlen, THEUS_ECONTRACT,
                     "argument %u (%s) is the length of argument %u, heavy.%s, which has %llu element%s%s: the "
                     "function would %s past the array; bind heavy.%s.len, lower the value, or list %u in "
                     "\"not_lengths\" if it is not a length",
                     i + 1, src, b->len_of, ab->path, (unsigned long long)count, count == 1 ? "" : "s",
                     sliced ? " in this slice" : "", neg ? "get a negative length and read" : "read", ab->path, i + 1);
}

static int call_checked(const theus__ffi_proc *p, const theus__ffi_env *env, bool sliced, json_t **ret, char *err,
                        size_t errlen) {
  slot vals[THEUS_FFI_MAX_ARGS];
  void *avalues[THEUS_FFI_MAX_ARGS];
  theus_array_info arrs[THEUS_FFI_MAX_ARGS];
  if (ret) *ret = NULL;
  memset(vals, 0, sizeof vals);
  memset(arrs, 0, sizeof arrs);
  for (unsigned i = 0; i < p->sig.nargs; i++) {
    int rc = bind_value(&p->binds[i], p->sig.args[i], i, env, &vals[i], &arrs[i], err, errlen);
    if (!rc && p->binds[i].len_of) rc = check_length(p, i, &vals[i], arrs, sliced, err, errlen);
    if (rc) return rc;
    avalues[i] = &vals[i];
  }
  slot rv;
  memset(&rv, 0, sizeof rv);
  ffi_call((ffi_cif *)&p->cif, p->fn, &rv, avalues);
  if (p->sig.ret.type && ret) {
    float f;
    memcpy(&f, &rv, sizeof f);
    double d = p->sig.ret.type == THEUS_DTYPE_F32 ? f : rv.f64;
    if (!is_integer_type(p->sig.ret.type) && !isfinite(d))
      return theus__errf(err, errlen, THEUS_EPROCESS, "the function returned %g%s%s; JSON has no NaN or infinity", d,
                         p->ret_output ? " for " : "", p->ret_output ? p->ret_output : "");
    *ret = ret_to_json(p->sig.ret.type, &rv);
    if (!*ret) return theus__errf(err, errlen, THEUS_ENOMEM, "out of memory converting the return value");
  }
  return 0;
}

int theus__ffi_proc_call(const theus__ffi_proc *p, const theus__ffi_env *env, json_t **ret, char *err,
                         size_t errlen) {
  return call_checked(p, env, false, ret, err, errlen);
}

/* ---- the typed process ------------------------------------------------------ */

typedef struct ctx_env {
  theus_ctx *ctx;
  bool sliced;
  uint64_t lo, hi;
} ctx_env;

static int ctx_array(void *ud, const char *key, bool writable, theus_array_info *info, char *err, size_t errlen) {
  ctx_env *ce = ud;
  int rc = theus_ctx_heavy(ce->ctx, key, info);
  if (rc) return theus__errf(err, errlen, rc, "heavy.%s: %s", key, theus_strerror(rc));
  if (ce->sliced && info->ndim >= 1 && info->shape[0] >= ce->hi) { /* a map slice sees its rows only */
    info->data = (const char *)info->data + ce->lo * info->strides[0];
    info->shape[0] = ce->hi - ce->lo;
    info->nbytes = (ce->hi - ce->lo) * info->strides[0];
  }
  if (!writable) return 0;
  void *draft;
  rc = theus_ctx_heavy_alloc(ce->ctx, key, info->dtype, info->ndim, info->shape, &draft);
  if (rc) return theus__errf(err, errlen, rc, "heavy.%s: cannot allocate the output draft (%s)", key, theus_strerror(rc));
  memcpy(draft, info->data, info->nbytes); /* published arrays are immutable: write a copy */
  info->data = draft;
  return 0;
}

static json_t *ctx_domain(void *ud, const char *path) {
  ctx_env *ce = ud;
  char *full;
  if (asprintf(&full, "domain.%s", path) < 0) return NULL;
  json_t *v = (json_t *)theus_ctx_get(ce->ctx, full);
  free(full);
  return v;
}

int theus__ffi_process(theus_ctx *ctx) {
  const theus__ffi_proc *p = theus_ctx_userdata(ctx);
  if (!p) return theus_ctx_fail(ctx, "typed process without its signature (userdata is NULL)");
  ctx_env ce = {ctx, false, 0, 0};
  uint32_t index, count;
  ce.sliced = theus_ctx_slice(ctx, &ce.lo, &ce.hi, &index, &count) == 0;
  theus__ffi_env env = {ctx_array, ctx_domain, &ce};
  char err[THEUS_FFI_ERRLEN];
  json_t *ret = NULL;
  int rc = call_checked(p, &env, ce.sliced, &ret, err, sizeof err);
  if (rc) return theus_ctx_fail(ctx, "%s", err);
  if (!ret) return 0;
  if (!ce.sliced && p->ret_output) {
    rc = theus_ctx_set(ctx, p->ret_output, json_incref(ret));
    if (rc) {
      json_decref(ret);
      return rc;
    }
  }
  theus_ctx_return(ctx, ret);
  return 0;
}

static int strv_add(char ***v, size_t *n, const char *prefix, const char *path) {
  char *full;
  if (asprintf(&full, "%s%s", prefix, path) < 0) return THEUS_ENOMEM;
  for (size_t i = 0; i < *n; i++)
    if (strcmp((*v)[i], full) == 0) {
      free(full);
      return 0;
    }
  char **nv = realloc(*v, (*n + 2) * sizeof *nv);
  if (!nv) {
    free(full);
    return THEUS_ENOMEM;
  }
  *v = nv;
  nv[*n] = full;
  nv[++*n] = NULL;
  return 0;
}

char **theus__ffi_proc_inputs(const theus__ffi_proc *p) {
  char **v = calloc(1, sizeof *v);
  size_t n = 0;
  for (unsigned i = 0; v && i < p->sig.nargs; i++) {
    const theus__ffi_bind *b = &p->binds[i];
    int rc = b->kind == THEUS_FFI_BIND_DOMAIN ? strv_add(&v, &n, "domain.", b->path)
             : b->kind == THEUS_FFI_BIND_LITERAL ? 0 : strv_add(&v, &n, "heavy.", b->path);
    if (rc) {
      theus__ffi_strv_free(v);
      return NULL;
    }
  }
  return v;
}

void theus__ffi_strv_free(char **v) {
  for (size_t i = 0; v && v[i]; i++) free(v[i]);
  free(v);
}

bool theus__ffi_proc_writes_array(const theus__ffi_proc *p) {
  for (unsigned i = 0; i < p->sig.nargs; i++)
    if (p->binds[i].kind == THEUS_FFI_BIND_ARRAY && p->binds[i].writable) return true;
  return false;
}
