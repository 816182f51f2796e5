/* Unit tests: libffi signatures, bindings and calls (pipeline/ffi.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "../../pipeline/ffi.h"
#include "theus/error.h"

/* ---- functions under call ------------------------------------------------ */

#define INC_FN(T, name) \
  static T name(T x) { return (T)(x + 1); }
INC_FN(uint8_t, inc_u8)
INC_FN(uint16_t, inc_u16)
INC_FN(uint32_t, inc_u32)
INC_FN(uint64_t, inc_u64)
INC_FN(int8_t, inc_i8)
INC_FN(int16_t, inc_i16)
INC_FN(int32_t, inc_i32)
INC_FN(int64_t, inc_i64)
INC_FN(float, inc_f32)
INC_FN(double, inc_f64)

static double sum_f32(const float *p, uint64_t n) {
  double s = 0;
  for (uint64_t i = 0; i < n; i++) s += p[i];
  return s;
}

static void scale_f32(float *p, uint64_t n, double k) {
  for (uint64_t i = 0; i < n; i++) p[i] = (float)(p[i] * k);
}

static int64_t mix(int8_t a, uint16_t b, int32_t c, uint64_t d, float e, double f) {
  return a + b + c + (int64_t)d + (int64_t)e + (int64_t)f;
}

static void noop(void) {}

static double recip(double x) { return 1.0 / x; }
static float times_ten(float x) { return x * 10.0f; }

/* ---- a fake state -------------------------------------------------------- */

typedef struct fake {
  json_t *domain;
  float frame[5];
  double frame64[2];
  int writable_asked;
} fake;

static int fake_array(void *ud, const char *key, bool writable, theus_array_info *info, char *err, size_t errlen) {
  fake *f = ud;
  memset(info, 0, sizeof *info);
  info->ndim = 1;
  if (writable) f->writable_asked++;
  if (strcmp(key, "frame") == 0) {
    info->dtype = THEUS_DTYPE_F32;
    info->itemsize = 4;
    info->shape[0] = 5;
    info->nbytes = sizeof f->frame;
    info->data = f->frame;
    return 0;
  }
  if (strcmp(key, "frame64") == 0) {
    info->dtype = THEUS_DTYPE_F64;
    info->itemsize = 8;
    info->shape[0] = 2;
    info->nbytes = sizeof f->frame64;
    info->data = f->frame64;
    return 0;
  }
  snprintf(err, errlen, "no heavy.%s", key);
  return THEUS_ENOTFOUND;
}

static json_t *fake_domain(void *ud, const char *path) {
  fake *f = ud;
  return json_object_get(f->domain, path);
}

static int setup(void **state) {
  static fake f;
  memset(&f, 0, sizeof f);
  f.domain = json_object();
  for (int i = 0; i < 5; i++) f.frame[i] = (float)(i + 1);
  *state = &f;
  return 0;
}

static int teardown(void **state) {
  fake *f = *state;
  json_decref(f->domain);
  return 0;
}

/* Calls fn(sig) with the single argument domain.x = x; returns rc, *out the result. */
static int call1(fake *f, void (*fn)(void), const char *sig, json_t *x, json_t **out, char *err) {
  theus__ffi_proc p;
  const char *args[] = {"domain.x"};
  const char *outs[] = {"domain.y"};
  int rc = theus__ffi_proc_init(&p, fn, sig, args, 1, outs, 1, err, THEUS_FFI_ERRLEN);
  assert_int_equal(rc, 0);
  json_object_set_new(f->domain, "x", x);
  theus__ffi_env env = {fake_array, fake_domain, f};
  rc = theus__ffi_proc_call(&p, &env, out, err, THEUS_FFI_ERRLEN);
  theus__ffi_proc_fini(&p);
  return rc;
}

static void expect_int(fake *f, void (*fn)(void), const char *sig, json_int_t in, json_int_t want) {
  char err[THEUS_FFI_ERRLEN] = "";
  json_t *out = NULL;
  assert_int_equal(call1(f, fn, sig, json_integer(in), &out, err), 0);
  assert_true(json_is_integer(out));
  assert_int_equal(json_integer_value(out), want);
  json_decref(out);
}

static void expect_range_error(fake *f, void (*fn)(void), const char *sig, json_t *in, const char *needle) {
  char err[THEUS_FFI_ERRLEN] = "";
  json_t *out = NULL;
  assert_int_equal(call1(f, fn, sig, in, &out, err), THEUS_EINVAL);
  assert_null(out);
  assert_non_null(strstr(err, needle));
  assert_non_null(strstr(err, "domain.x"));
}

#define FN(f) ((void (*)(void))(f))

static void test_unsigned_scalars(void **state) {
  fake *f = *state;
  expect_int(f, FN(inc_u8), "u8(u8)", 254, 255);
  expect_int(f, FN(inc_u8), "u8(u8)", 255, 0); /* the function wraps, not the binding */
  expect_int(f, FN(inc_u16), "u16(u16)", 65534, 65535);
  expect_int(f, FN(inc_u32), "u32(u32)", 4294967294LL, 4294967295LL);
  expect_int(f, FN(inc_u64), "u64(u64)", INT64_MAX - 1, INT64_MAX);
  expect_range_error(f, FN(inc_u8), "u8(u8)", json_integer(256), "out of range for u8");
  expect_range_error(f, FN(inc_u16), "u16(u16)", json_integer(-1), "out of range for u16");
  expect_range_error(f, FN(inc_u32), "u32(u32)", json_integer(4294967296LL), "out of range for u32");
  expect_range_error(f, FN(inc_u64), "u64(u64)", json_integer(-5), "out of range for u64");
  expect_range_error(f, FN(inc_u64), "u64(u64)", json_real(1e30), "out of range for u64");
}

static void test_signed_scalars(void **state) {
  fake *f = *state;
  expect_int(f, FN(inc_i8), "i8(i8)", -128, -127);
  expect_int(f, FN(inc_i8), "i8(i8)", 126, 127);
  expect_int(f, FN(inc_i16), "i16(i16)", -32768, -32767);
  expect_int(f, FN(inc_i32), "i32(i32)", -2147483647LL - 1, -2147483647LL);
  expect_int(f, FN(inc_i64), "i64(i64)", INT64_MIN, INT64_MIN + 1);
  expect_int(f, FN(inc_i32), "i32 ( i32 )", 41, 42); /* whitespace is free */
  expect_range_error(f, FN(inc_i8), "i8(i8)", json_integer(128), "out of range for i8");
  expect_range_error(f, FN(inc_i16), "i16(i16)", json_integer(-32769), "out of range for i16");
  expect_range_error(f, FN(inc_i32), "i32(i32)", json_integer(2147483648LL), "out of range for i32");
  expect_range_error(f, FN(inc_i64), "i64(i64)", json_real(1e19), "out of range for i64");
  expect_range_error(f, FN(inc_i32), "i32(i32)", json_real(2.5), "not an integer");
  expect_range_error(f, FN(inc_i32), "i32(i32)", json_true(), "a boolean");
  expect_range_error(f, FN(inc_i32), "i32(i32)", json_string("3"), "a string");
}

static void test_integral_real_accepted(void **state) {
  fake *f = *state;
  char err[THEUS_FFI_ERRLEN] = "";
  json_t *out = NULL;
  assert_int_equal(call1(f, FN(inc_i16), "i16(i16)", json_real(7.0), &out, err), 0);
  assert_int_equal(json_integer_value(out), 8);
  json_decref(out);
}

static void test_float_scalars(void **state) {
  fake *f = *state;
  char err[THEUS_FFI_ERRLEN] = "";
  json_t *out = NULL;
  assert_int_equal(call1(f, FN(inc_f32), "f32(f32)", json_real(1.5), &out, err), 0);
  assert_true(json_is_real(out));
  assert_float_equal(json_real_value(out), 2.5, 0);
  json_decref(out);
  assert_int_equal(call1(f, FN(inc_f64), "f64(f64)", json_integer(41), &out, err), 0);
  assert_float_equal(json_real_value(out), 42.0, 0);
  json_decref(out);
  expect_range_error(f, FN(inc_f32), "f32(f32)", json_real(1e39), "out of range for f32");
  expect_range_error(f, FN(inc_f64), "f64(f64)", json_null(), "null");
}

/* Issue 15 item 4: a non-finite return is an error naming the output, never
 * a NULL that leaves the output path missing. */
static void test_nonfinite_return(void **state) {
  fake *f = *state;
  char err[THEUS_FFI_ERRLEN] = "";
  json_t *out = NULL;
  assert_int_equal(call1(f, FN(recip), "f64(f64)", json_real(0.0), &out, err), THEUS_EPROCESS);
  assert_null(out);
  assert_non_null(strstr(err, "the function returned inf for domain.y; JSON has no NaN or infinity"));
  assert_int_equal(call1(f, FN(times_ten), "f32(f32)", json_real(3e38), &out, err), THEUS_EPROCESS);
  assert_non_null(strstr(err, "returned inf for domain.y"));
  assert_int_equal(call1(f, FN(recip), "f64(f64)", json_real(-1e-310), &out, err), THEUS_EPROCESS);
  assert_non_null(strstr(err, "returned -inf"));
  assert_int_equal(call1(f, FN(recip), "f64(f64)", json_real(4.0), &out, err), 0);
  assert_float_equal(json_real_value(out), 0.25, 0);
  json_decref(out);
}

static void test_missing_domain_value(void **state) {
  fake *f = *state;
  theus__ffi_proc p;
  char err[THEUS_FFI_ERRLEN] = "";
  const char *args[] = {"domain.nope"};
  const char *outs[] = {"domain.y"};
  assert_int_equal(theus__ffi_proc_init(&p, FN(inc_f64), "f64(f64)", args, 1, outs, 1, err, sizeof err), 0);
  theus__ffi_env env = {fake_array, fake_domain, f};
  json_t *out = NULL;
  assert_int_equal(theus__ffi_proc_call(&p, &env, &out, err, sizeof err), THEUS_EINVAL);
  assert_non_null(strstr(err, "domain.nope"));
  assert_non_null(strstr(err, "missing"));
  theus__ffi_proc_fini(&p);
}

static void test_array_read(void **state) {
  fake *f = *state;
  theus__ffi_proc p;
  char err[THEUS_FFI_ERRLEN] = "";
  const char *args[] = {"heavy.frame", "heavy.frame.len"};
  const char *outs[] = {"domain.sum"};
  assert_int_equal(theus__ffi_proc_init(&p, FN(sum_f32), "f64(f32*, u64)", args, 2, outs, 1, err, sizeof err), 0);
  assert_false(p.binds[0].writable);
  assert_string_equal(p.ret_output, "domain.sum");
  theus__ffi_env env = {fake_array, fake_domain, f};
  json_t *out = NULL;
  assert_int_equal(theus__ffi_proc_call(&p, &env, &out, err, sizeof err), 0);
  assert_float_equal(json_real_value(out), 15.0, 0);
  assert_int_equal(f->writable_asked, 0);
  json_decref(out);
  theus__ffi_proc_fini(&p);
}

static void test_array_written_when_output(void **state) {
  fake *f = *state;
  theus__ffi_proc p;
  char err[THEUS_FFI_ERRLEN] = "";
  const char *args[] = {"heavy.frame", "heavy.frame.len", "domain.k"};
  const char *outs[] = {"heavy.frame"};
  assert_int_equal(
      theus__ffi_proc_init(&p, FN(scale_f32), "void(f32*, u64, f64)", args, 3, outs, 1, err, sizeof err), 0);
  assert_true(p.binds[0].writable);
  json_object_set_new(f->domain, "k", json_real(2.0));
  theus__ffi_env env = {fake_array, fake_domain, f};
  json_t *out = (json_t *)1;
  assert_int_equal(theus__ffi_proc_call(&p, &env, &out, err, sizeof err), 0);
  assert_null(out);
  assert_int_equal(f->writable_asked, 1);
  assert_float_equal(f->frame[4], 10.0f, 0);
  theus__ffi_proc_fini(&p);
}

static int sum_calls;
static double sum_f32_counted(const float *p, uint64_t n) {
  sum_calls++;
  return sum_f32(p, n);
}

/* Calls sum_f32_counted("f64(f32*, <lt>)") with heavy.frame (5 elements) and
 * the length bound to len_arg; domain.n = n when n_set. */
static int call_len(fake *f, const char *sig, const char *len_arg, json_t *n, uint32_t exempt, char *err,
                    double *sum) {
  theus__ffi_proc p;
  const char *args[] = {"heavy.frame", len_arg};
  const char *outs[] = {"domain.sum"};
  assert_int_equal(theus__ffi_proc_init(&p, FN(sum_f32_counted), sig, args, 2, outs, 1, err, THEUS_FFI_ERRLEN), 0);
  if (exempt) assert_int_equal(theus__ffi_proc_not_length(&p, exempt, err, THEUS_FFI_ERRLEN), 0);
  if (n) json_object_set_new(f->domain, "n", n);
  theus__ffi_env env = {fake_array, fake_domain, f};
  json_t *out = NULL;
  int rc = theus__ffi_proc_call(&p, &env, &out, err, THEUS_FFI_ERRLEN);
  if (out) *sum = json_real_value(out);
  json_decref(out);
  theus__ffi_proc_fini(&p);
  return rc;
}

static void test_length_rule(void **state) {
  fake *f = *state;
  char err[THEUS_FFI_ERRLEN] = "";
  double sum = 0;
  sum_calls = 0;
  /* within the array: called */
  assert_int_equal(call_len(f, "f64(f32*, u64)", "domain.n", json_integer(3), 0, err, &sum), 0);
  assert_float_equal(sum, 6.0, 0);
  assert_int_equal(call_len(f, "f64(f32*, u64)", "domain.n", json_integer(5), 0, err, &sum), 0);
  assert_float_equal(sum, 15.0, 0);
  assert_int_equal(call_len(f, "f64(f32*, u64)", "0", NULL, 0, err, &sum), 0);
  assert_int_equal(sum_calls, 3);
  /* past the array: refused before the call, both lengths named */
  assert_int_equal(call_len(f, "f64(f32*, u64)", "domain.n", json_integer(100000000), 0, err, &sum), THEUS_ECONTRACT);
  assert_non_null(strstr(err, "argument 2 (domain.n = 100000000) is the length of argument 1, heavy.frame"));
  assert_non_null(strstr(err, "which has 5 elements"));
  assert_non_null(strstr(err, "bind heavy.frame.len"));
  assert_int_equal(call_len(f, "f64(f32*, i32)", "6", NULL, 0, err, &sum), THEUS_ECONTRACT);
  assert_non_null(strstr(err, "the literal 6"));
  assert_int_equal(call_len(f, "f64(f32*, i64)", "domain.n", json_integer(-1), 0, err, &sum), THEUS_ECONTRACT);
  assert_non_null(strstr(err, "negative length"));
  assert_int_equal(sum_calls, 3);
  /* an argument listed in not_lengths is not checked */
  assert_int_equal(call_len(f, "f64(f32*, u64)", "domain.n", json_integer(5), 1u << 1, err, &sum), 0);
  assert_int_equal(sum_calls, 4);
  /* a float after an array, or an integer after a scalar, is no length; heavy.KEY.len is exact */
  theus__ffi_proc p;
  const char *a1[] = {"heavy.frame", "domain.n"}, *a2[] = {"domain.n", "heavy.frame.len"}, *o[] = {"domain.s"};
  assert_int_equal(theus__ffi_proc_init(&p, FN(noop), "f64(f32*, f64)", a1, 2, o, 1, err, sizeof err), 0);
  assert_int_equal(p.binds[1].len_of, 0);
  assert_int_equal(theus__ffi_proc_not_length(&p, 1u << 1, err, sizeof err), THEUS_EINVAL);
  assert_non_null(strstr(err, "\"not_lengths\" names argument 2"));
  theus__ffi_proc_fini(&p);
  assert_int_equal(theus__ffi_proc_init(&p, FN(noop), "f64(u64, u64)", a2, 2, o, 1, err, sizeof err), 0);
  assert_int_equal(p.binds[0].len_of + p.binds[1].len_of, 0);
  theus__ffi_proc_fini(&p);
}

static void test_array_dtype_mismatch(void **state) {
  fake *f = *state;
  theus__ffi_proc p;
  char err[THEUS_FFI_ERRLEN] = "";
  const char *args[] = {"heavy.frame64", "heavy.frame64.len"};
  const char *outs[] = {"domain.sum"};
  assert_int_equal(theus__ffi_proc_init(&p, FN(sum_f32), "f64(f32*, u64)", args, 2, outs, 1, err, sizeof err), 0);
  theus__ffi_env env = {fake_array, fake_domain, f};
  json_t *out = NULL;
  assert_int_equal(theus__ffi_proc_call(&p, &env, &out, err, sizeof err), THEUS_ECONTRACT);
  assert_non_null(strstr(err, "heavy.frame64 holds f64"));
  assert_null(out);
  theus__ffi_proc_fini(&p);
}

static void test_mixed_and_literals(void **state) {
  fake *f = *state;
  theus__ffi_proc p;
  char err[THEUS_FFI_ERRLEN] = "";
  const char *args[] = {"-3", "domain.b", "heavy.frame.len", "7", "2.0", "0.5"};
  const char *outs[] = {"domain.r"};
  json_object_set_new(f->domain, "b", json_integer(1000));
  assert_int_equal(theus__ffi_proc_init(&p, FN(mix), "i64(i8, u16, i32, u64, f32, f64)", args, 6, outs, 1, err,
                                        sizeof err),
                   0);
  theus__ffi_env env = {fake_array, fake_domain, f};
  json_t *out = NULL;
  assert_int_equal(theus__ffi_proc_call(&p, &env, &out, err, sizeof err), 0);
  assert_int_equal(json_integer_value(out), -3 + 1000 + 5 + 7 + 2 + 0);
  json_decref(out);
  theus__ffi_proc_fini(&p);
}

static void test_void_void(void **state) {
  (void)state;
  theus__ffi_proc p;
  char err[THEUS_FFI_ERRLEN] = "";
  assert_int_equal(theus__ffi_proc_init(&p, FN(noop), "void(void)", NULL, 0, NULL, 0, err, sizeof err), 0);
  theus__ffi_env env = {0};
  json_t *out = NULL;
  assert_int_equal(theus__ffi_proc_call(&p, &env, &out, err, sizeof err), 0);
  assert_null(out);
  theus__ffi_proc_fini(&p);
  assert_int_equal(theus__ffi_proc_init(&p, FN(noop), "void()", NULL, 0, NULL, 0, err, sizeof err), 0);
  theus__ffi_proc_fini(&p);
}

static void expect_parse_error(const char *sig, const char *needle) {
  theus__ffi_sig s;
  char err[THEUS_FFI_ERRLEN] = "";
  assert_int_equal(theus__ffi_sig_parse(sig, &s, err, sizeof err), THEUS_EPARSE);
  if (!strstr(err, needle)) fail_msg("signature %s: message \"%s\" lacks \"%s\"", sig, err, needle);
}

static void test_signature_errors(void **state) {
  (void)state;
  expect_parse_error("f16(u8)", "column 1: expected a type");
  expect_parse_error("void(f32*, u65)", "column 12");
  expect_parse_error("void(f32*, u64", "column 15: expected \",\" or \")\"");
  expect_parse_error("void f32", "column 6: expected \"(\"");
  expect_parse_error("f32*(u8)", "pointer return");
  expect_parse_error("void(void*)", "void* has no element type");
  expect_parse_error("void(u8, void)", "void is only allowed");
  expect_parse_error("void(u8) x", "unexpected text");
  theus__ffi_sig s;
  char err[THEUS_FFI_ERRLEN];
  assert_int_equal(theus__ffi_sig_parse("f64 ( f32 * , u64 )", &s, err, sizeof err), 0);
  assert_int_equal(s.nargs, 2);
  assert_true(s.args[0].ptr);
  assert_int_equal(s.args[0].type, THEUS_DTYPE_F32);
  assert_int_equal(s.ret.type, THEUS_DTYPE_F64);
  char tb[16];
  assert_string_equal(theus__ffi_type_name(s.args[0], tb), "f32*");
}

static void expect_bind_error(const char *sig, const char *const *args, size_t nargs, const char *const *outs,
                              size_t nouts, const char *needle) {
  theus__ffi_proc p;
  char err[THEUS_FFI_ERRLEN] = "";
  int rc = theus__ffi_proc_init(&p, FN(noop), sig, args, nargs, outs, nouts, err, sizeof err);
  assert_int_not_equal(rc, 0);
  if (!strstr(err, needle)) fail_msg("%s: message \"%s\" lacks \"%s\"", sig, err, needle);
}

static void test_binding_errors_at_load(void **state) {
  (void)state;
  const char *a2[] = {"heavy.frame", "heavy.frame.len"};
  const char *dom[] = {"domain.scale"};
  const char *hv[] = {"heavy.frame"};
  const char *len[] = {"heavy.frame.len"};
  const char *bad[] = {"state.x"};
  const char *lit[] = {"2.5"};
  const char *out_sum[] = {"domain.sum"};
  const char *out_other[] = {"heavy.other"};
  expect_bind_error("f64(f32*, u64)", a2, 1, out_sum, 1, "takes 2 arguments but 1 binding is given");
  expect_bind_error("void(f32*)", dom, 1, NULL, 0, "a pointer argument needs heavy.KEY");
  expect_bind_error("void(f64)", hv, 1, NULL, 0, "declare the argument as T*");
  expect_bind_error("void(f64)", len, 1, NULL, 0, "use an integer type");
  expect_bind_error("void(f64)", bad, 1, NULL, 0, "expected heavy.KEY, heavy.KEY.len, domain.PATH or a number");
  expect_bind_error("void(i32)", lit, 1, NULL, 0, "not an integer");
  expect_bind_error("f64(f32*, u64)", a2, 2, NULL, 0, "no output domain.PATH receives it");
  expect_bind_error("void(f32*, u64)", a2, 2, out_other, 1, "that is also one of its T* arguments");
}

/* Issue 10, found by the fuzz harnesses (tests/fuzz/corpus/signature): every
 * bound state path passes theus_path_check, and an output shorter than
 * "heavy." is refused without reading past it. bad_arg / bad_output say which. */
static void expect_refused(const char *sig, const char *const *args, size_t nargs, const char *const *outs,
                           size_t nouts, int bad_arg, int bad_output, const char *needle) {
  theus__ffi_proc p;
  char err[THEUS_FFI_ERRLEN] = "";
  assert_int_equal(theus__ffi_proc_init(&p, FN(noop), sig, args, nargs, outs, nouts, err, sizeof err), THEUS_EINVAL);
  if (!strstr(err, needle)) fail_msg("%s: message \"%s\" lacks \"%s\"", sig, err, needle);
  assert_int_equal(p.bad_arg, bad_arg);
  assert_int_equal(p.bad_output, bad_output);
}

static void test_bound_paths_checked(void **state) {
  (void)state;
  const char *len_dot[] = {"heavy.a", "heavy.a.b.len"}, *key_dot[] = {"heavy.a.b"}, *empty_seg[] = {"domain.a..b"},
             *digit[] = {"domain.0x"}, *star[] = {"domain.*"}, *heavy_star[] = {"heavy.*"}, *hv[] = {"heavy.a"};
  const char *out_short[] = {"x"}, *out_two[] = {"domain.y", "heavy"};
  expect_refused("void(f32*, u64)", len_dot, 2, NULL, 0, 1, -1, "path 'heavy.a.b': heavy paths are 'heavy.<key>'");
  expect_refused("void(f32*)", key_dot, 1, NULL, 0, 0, -1, "heavy paths are 'heavy.<key>'");
  expect_refused("void(f64)", empty_seg, 1, NULL, 0, 0, -1, "path 'domain.a..b': segment 2");
  expect_refused("void(f64)", digit, 1, NULL, 0, 0, -1, "path 'domain.0x': segment 1");
  expect_refused("void(f64)", star, 1, NULL, 0, 0, -1, "'*' is a pattern");
  expect_refused("void(f32*)", heavy_star, 1, NULL, 0, 0, -1, "'*' is a pattern");
  expect_refused("void(f32*)", hv, 1, out_short, 1, -1, 0, "output \"x\" of \"void(f32*)\"");
  expect_refused("f64(f32*)", hv, 1, out_two, 2, -1, 1, "output \"heavy\" of \"f64(f32*)\"");
  /* a path longer than any fixed buffer is kept whole in the contract's inputs */
  char longp[1200] = "domain.";
  memset(longp + 7, 'k', sizeof longp - 8);
  const char *long_args[] = {longp};
  theus__ffi_proc p;
  char err[THEUS_FFI_ERRLEN];
  assert_int_equal(theus__ffi_proc_init(&p, FN(noop), "void(f64)", long_args, 1, NULL, 0, err, sizeof err), 0);
  char **in = theus__ffi_proc_inputs(&p);
  assert_non_null(in);
  assert_string_equal(in[0], longp);
  assert_null(in[1]);
  theus__ffi_strv_free(in);
  theus__ffi_proc_fini(&p);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_unsigned_scalars, setup, teardown),
      cmocka_unit_test_setup_teardown(test_signed_scalars, setup, teardown),
      cmocka_unit_test_setup_teardown(test_integral_real_accepted, setup, teardown),
      cmocka_unit_test_setup_teardown(test_float_scalars, setup, teardown),
      cmocka_unit_test_setup_teardown(test_nonfinite_return, setup, teardown),
      cmocka_unit_test_setup_teardown(test_missing_domain_value, setup, teardown),
      cmocka_unit_test_setup_teardown(test_array_read, setup, teardown),
      cmocka_unit_test_setup_teardown(test_array_written_when_output, setup, teardown),
      cmocka_unit_test_setup_teardown(test_array_dtype_mismatch, setup, teardown),
      cmocka_unit_test_setup_teardown(test_length_rule, setup, teardown),
      cmocka_unit_test_setup_teardown(test_mixed_and_literals, setup, teardown),
      cmocka_unit_test(test_void_void),
      cmocka_unit_test(test_signature_errors),
      cmocka_unit_test(test_binding_errors_at_load),
      cmocka_unit_test(test_bound_paths_checked),
  };
  return cmocka_run_group_tests_name("ffi", tests, NULL, NULL);
}
