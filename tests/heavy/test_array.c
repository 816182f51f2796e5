/* Typed arrays: dtypes, shapes, strides, errors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "theus/heavy.h"

static int setup(void **st) {
  theus_arena *a;
  if (theus_arena_open(NULL, &a) != 0) return -1;
  *st = a;
  return 0;
}

static int teardown(void **st) {
  theus_arena_close(*st);
  return 0;
}

static void test_dtypes(void **st) {
  (void)st;
  static const char *names[] = {"u8", "u16", "u32", "u64", "i8", "i16", "i32", "i64", "f32", "f64"};
  static const size_t sizes[] = {1, 2, 4, 8, 1, 2, 4, 8, 4, 8};
  for (unsigned i = 0; i < 10; i++) {
    theus_dtype t = theus_dtype_parse(names[i]);
    assert_int_not_equal(t, 0);
    assert_string_equal(theus_dtype_name(t), names[i]);
    assert_int_equal(theus_dtype_size(t), sizes[i]);
  }
  assert_int_equal(theus_dtype_parse("f16"), 0);
  assert_int_equal(theus_dtype_parse(NULL), 0);
  assert_null(theus_dtype_name((theus_dtype)99));
  assert_int_equal(theus_dtype_size((theus_dtype)0), 0);
}

static void test_shape_strides(void **st) {
  theus_arena *a = *st;
  uint64_t shape[3] = {4, 5, 6};
  theus_handle h;
  float *data;
  assert_int_equal(theus_array_alloc(a, THEUS_DTYPE_F32, 3, shape, &h, (void **)&data), 0);
  for (int i = 0; i < 120; i++) data[i] = (float)i * 0.5f;
  theus_array_info info;
  assert_int_equal(theus_array_info_get(a, h, &info), 0);
  assert_int_equal(info.handle, h);
  assert_int_equal(info.dtype, THEUS_DTYPE_F32);
  assert_int_equal(info.ndim, 3);
  assert_int_equal(info.itemsize, 4);
  assert_int_equal(info.nbytes, 4 * 5 * 6 * 4);
  assert_int_equal(info.shape[0], 4);
  assert_int_equal(info.shape[2], 6);
  assert_int_equal(info.strides[0], 120);
  assert_int_equal(info.strides[1], 24);
  assert_int_equal(info.strides[2], 4);
  assert_ptr_equal(info.data, data);
  const float *f = info.data;
  /* element [2][3][4] through the strides */
  const float *e = (const float *)((const char *)f + 2 * info.strides[0] + 3 * info.strides[1] + 4 * info.strides[2]);
  assert_true(*e == (float)(2 * 30 + 3 * 6 + 4) * 0.5f);
  assert_int_equal(theus_arena_free(a, h), 0);
  assert_int_equal(theus_array_info_get(a, h, &info), THEUS_EFREED);
}

static void test_bytes_array_info(void **st) {
  theus_arena *a = *st;
  theus_handle h;
  assert_int_equal(theus_arena_write(a, "hello", 5, &h), 0);
  theus_array_info info;
  assert_int_equal(theus_array_info_get(a, h, &info), 0);
  assert_int_equal(info.dtype, 0);
  assert_int_equal(info.ndim, 1);
  assert_int_equal(info.shape[0], 5);
  assert_int_equal(info.itemsize, 1);
  assert_int_equal(info.nbytes, 5);
  assert_memory_equal(info.data, "hello", 5);
  theus_arena_free(a, h);
}

static void test_eight_dims_and_errors(void **st) {
  theus_arena *a = *st;
  uint64_t shape[9] = {2, 2, 2, 2, 2, 2, 2, 3, 2};
  theus_handle h;
  assert_int_equal(theus_array_alloc(a, THEUS_DTYPE_U16, 8, shape, &h, NULL), 0);
  theus_array_info info;
  assert_int_equal(theus_array_info_get(a, h, &info), 0);
  assert_int_equal(info.nbytes, 128 * 3 * 2);
  assert_int_equal(info.strides[7], 2);
  assert_int_equal(info.strides[0], 64 * 3 * 2);
  theus_arena_free(a, h);
  assert_int_equal(theus_array_alloc(a, THEUS_DTYPE_U16, 9, shape, &h, NULL), THEUS_EINVAL);
  assert_int_equal(theus_array_alloc(a, THEUS_DTYPE_U16, 0, shape, &h, NULL), THEUS_EINVAL);
  assert_int_equal(theus_array_alloc(a, (theus_dtype)42, 1, shape, &h, NULL), THEUS_EINVAL);
  assert_non_null(strstr(theus_arena_errmsg(a), "dtype"));
  uint64_t zero[2] = {3, 0};
  assert_int_equal(theus_array_alloc(a, THEUS_DTYPE_U8, 2, zero, &h, NULL), THEUS_EINVAL);
  uint64_t huge[2] = {1ull << 40, 1ull << 40};
  assert_int_equal(theus_array_alloc(a, THEUS_DTYPE_F64, 2, huge, &h, NULL), THEUS_ETOOBIG);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_dtypes),
      cmocka_unit_test_setup_teardown(test_shape_strides, setup, teardown),
      cmocka_unit_test_setup_teardown(test_bytes_array_info, setup, teardown),
      cmocka_unit_test_setup_teardown(test_eight_dims_and_errors, setup, teardown),
  };
  return cmocka_run_group_tests_name("heavy/array", tests, NULL, NULL);
}
