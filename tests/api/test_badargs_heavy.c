/* Bad arguments to <theus/heavy.h>, <theus/twin.h>, <theus/version.h> and
 * <theus/error.h>: NULL for every required pointer, zero sizes, arenas whose
 * open failed, and forged handles (edge shapes plus seeded random 64-bit
 * values). Every call runs in a child (badargs.h). */
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "badargs.h"
#include "theus/error.h"
#include "theus/heavy.h"
#include "theus/twin.h"
#include "theus/version.h"

#define HANDLES 1024u

static theus_arena *arena(void) {
  theus_arena_config c;
  theus_arena_config_init(&c);
  c.hard_limit = 64u << 20;
  c.max_handles = HANDLES;
  theus_arena *a = NULL;
  if (theus_arena_open(&c, &a) != 0) _exit(99);
  return a;
}

/* An arena whose open failed: it only carries the message. */
static theus_arena *failed_arena(void) {
  theus_arena_config c;
  theus_arena_config_init(&c);
  c.hard_limit = 100; /* below the page size */
  theus_arena *a = NULL;
  if (theus_arena_open(&c, &a) == 0 || !a) _exit(99);
  return a;
}

static int cb(theus_arena *a, theus_handle h, void *ud) {
  (void)a, (void)h, (void)ud;
  return 0;
}

/* ---- arena ---------------------------------------------------------------- */
CASE(c_config_init, theus_arena_config_init(NULL); return 0;)
CASE(c_open_out, return want(theus_arena_open(NULL, NULL), THEUS_EINVAL, "open(NULL, NULL)");)
CASE(c_open_ro_out, return want(theus_arena_open_ro(0, NULL), THEUS_EINVAL, "open_ro(0, NULL)");)
CASE(c_open_ro_fd, theus_arena *a; return want_err(theus_arena_open_ro(-1, &a), "open_ro(-1)");)
CASE(c_open_ro_notarena, theus_arena *a; return want_err(theus_arena_open_ro(0, &a), "open_ro(stdin)");)
CASE(c_close, theus_arena_close(NULL); return 0;)
CASE(c_ro_fd, return want(theus_arena_ro_fd(NULL), THEUS_EINVAL, "ro_fd(NULL)");)
CASE(c_rw_fd, return want(theus_arena_rw_fd(NULL), THEUS_EINVAL, "rw_fd(NULL)") ||
                     want(theus_arena_rw_fd(failed_arena()), -1, "rw_fd(failed arena)");)
CASE(c_file_range, theus_arena *a = arena(); theus_handle big, small; uint64_t off, len;
     theus_arena_alloc(a, 1 << 16, &big, NULL); theus_arena_write(a, "x", 1, &small);
     return want(theus_arena_file_range(NULL, big, &off, &len), THEUS_EINVAL, "file_range(NULL)") ||
            want(theus_arena_file_range(failed_arena(), 1, &off, &len), THEUS_EINVAL, "file_range(failed arena)") ||
            want(theus_arena_file_range(a, big, NULL, &len), THEUS_EINVAL, "file_range(offset NULL)") ||
            want(theus_arena_file_range(a, big, &off, NULL), THEUS_EINVAL, "file_range(len NULL)") ||
            want(theus_arena_file_range(a, small, &off, &len), THEUS_EINVAL, "file_range(1-byte array)") ||
            want_err(theus_arena_file_range(a, 0, &off, &len), "file_range(handle 0)");)
CASE(c_is_ro, return want(theus_arena_is_readonly(NULL), 0, "is_readonly(NULL)");)
CASE(c_errmsg, return theus_arena_errmsg(NULL) == NULL;)
CASE(c_alloc_null, theus_handle h; void *p; return want(theus_arena_alloc(NULL, 8, &h, &p), THEUS_EINVAL, "alloc(NULL)");)
CASE(c_alloc_out, return want(theus_arena_alloc(arena(), 8, NULL, NULL), THEUS_EINVAL, "alloc(out NULL)");)
CASE(c_alloc_zero, theus_handle h; return want(theus_arena_alloc(arena(), 0, &h, NULL), THEUS_EINVAL, "alloc(0)");)
CASE(c_alloc_max, theus_handle h; return want_err(theus_arena_alloc(arena(), SIZE_MAX, &h, NULL), "alloc(SIZE_MAX)");)
CASE(c_alloc_max_page, theus_handle h;
     return want_err(theus_arena_alloc(arena(), SIZE_MAX - 100, &h, NULL), "alloc(SIZE_MAX - 100)");)
CASE(c_alloc_failed, theus_handle h; return want(theus_arena_alloc(failed_arena(), 8, &h, NULL), THEUS_EINVAL, "alloc(failed arena)");)
CASE(c_write_null, theus_handle h; return want(theus_arena_write(NULL, "x", 1, &h), THEUS_EINVAL, "write(NULL)");)
CASE(c_write_src, theus_arena *a = arena(); theus_handle h; theus_arena_stats s;
     int r = want(theus_arena_write(a, NULL, 8, &h), THEUS_EINVAL, "write(src NULL)");
     theus_arena_stats_get(a, &s);
     return r || want((int)s.active_handles, 0, "active handles after write(src NULL)");)
CASE(c_write_out, return want(theus_arena_write(arena(), "x", 1, NULL), THEUS_EINVAL, "write(out NULL)");)
CASE(c_write_zero, theus_handle h; return want(theus_arena_write(arena(), "x", 0, &h), THEUS_EINVAL, "write(n 0)");)
CASE(c_view_null, const void *p; size_t n; return want(theus_arena_view(NULL, 1, &p, &n), THEUS_EINVAL, "view(NULL)");)
CASE(c_view_ptr, theus_arena *a = arena(); theus_handle h; theus_arena_write(a, "x", 1, &h);
     return want(theus_arena_view(a, h, NULL, NULL), THEUS_EINVAL, "view(ptr NULL)");)
CASE(c_view_failed, const void *p; return want(theus_arena_view(failed_arena(), 1, &p, NULL), THEUS_EINVAL, "view(failed arena)");)
CASE(c_data_null, void *p; return want(theus_arena_data(NULL, 1, &p, NULL), THEUS_EINVAL, "data(NULL)");)
CASE(c_data_ptr, theus_arena *a = arena(); theus_handle h; theus_arena_write(a, "x", 1, &h);
     return want(theus_arena_data(a, h, NULL, NULL), THEUS_EINVAL, "data(ptr NULL)");)
CASE(c_read_null, char b[4]; return want(theus_arena_read(NULL, 1, b, 4, NULL), THEUS_EINVAL, "read(NULL)");)
CASE(c_read_dst, theus_arena *a = arena(); theus_handle h; theus_arena_write(a, "x", 1, &h);
     return want(theus_arena_read(a, h, NULL, 4, NULL), THEUS_EINVAL, "read(dst NULL, cap 4)");)
CASE(c_read_cap0, theus_arena *a = arena(); theus_handle h; size_t n = 0; theus_arena_write(a, "xy", 2, &h);
     return want(theus_arena_read(a, h, NULL, 0, &n), THEUS_ETRUNC, "read(dst NULL, cap 0)") || want((int)n, 2, "len");)
CASE(c_free_null, return want(theus_arena_free(NULL, 1), THEUS_EINVAL, "free(NULL)");)
CASE(c_free_failed, return want(theus_arena_free(failed_arena(), 1), THEUS_EINVAL, "free(failed arena)");)
CASE(c_with_buffer_null, return want(theus_arena_with_buffer(NULL, "x", 1, cb, NULL), THEUS_EINVAL, "with_buffer(NULL)");)
CASE(c_with_buffer_fn, return want(theus_arena_with_buffer(arena(), "x", 1, NULL, NULL), THEUS_EINVAL, "with_buffer(fn NULL)");)
CASE(c_with_buffer_src, return want(theus_arena_with_buffer(arena(), NULL, 1, cb, NULL), THEUS_EINVAL, "with_buffer(src NULL)");)
CASE(c_scoped, theus_scoped_release(NULL); theus_scoped s = {NULL, 5}; theus_scoped_release(&s); return 0;)
CASE(c_reset_null, return want(theus_arena_reset(NULL), THEUS_EINVAL, "reset(NULL)");)
CASE(c_reset_failed, return want(theus_arena_reset(failed_arena()), THEUS_EINVAL, "reset(failed arena)");)
CASE(c_stats_null, theus_arena_stats s; return want(theus_arena_stats_get(NULL, &s), THEUS_EINVAL, "stats_get(NULL)");)
CASE(c_stats_out, return want(theus_arena_stats_get(arena(), NULL), THEUS_EINVAL, "stats_get(out NULL)");)
CASE(c_list_null, size_t n; return want(theus_arena_list_live(NULL, NULL, 0, &n), THEUS_EINVAL, "list_live(NULL)");)
CASE(c_list_count, return want(theus_arena_list_live(arena(), NULL, 0, NULL), THEUS_EINVAL, "list_live(count NULL)");)
CASE(c_list_out, size_t n; return want(theus_arena_list_live(arena(), NULL, 5, &n), THEUS_EINVAL, "list_live(out NULL, cap 5)");)
CASE(c_find, return theus_arena_find(NULL, "x") != 0 || theus_arena_find(arena(), NULL) != 0 ||
                    theus_arena_find(failed_arena(), "x") != 0;)
CASE(c_contains, return theus_arena_contains(NULL, "x") != 0 || theus_arena_contains(arena(), NULL) != 0 ||
                        theus_arena_contains(failed_arena(), "x") != 0;)
CASE(c_dtype, return theus_dtype_size((theus_dtype)-1) != 0 || theus_dtype_size((theus_dtype)1000) != 0 ||
                     theus_dtype_name((theus_dtype)1000) != NULL || theus_dtype_parse(NULL) != 0 || theus_dtype_parse("") != 0;)
CASE(c_array_null, uint64_t sh = 4; theus_handle h;
     return want(theus_array_alloc(NULL, THEUS_DTYPE_F32, 1, &sh, &h, NULL), THEUS_EINVAL, "array_alloc(NULL)");)
CASE(c_array_shape, theus_handle h;
     return want(theus_array_alloc(arena(), THEUS_DTYPE_F32, 1, NULL, &h, NULL), THEUS_EINVAL, "array_alloc(shape NULL)");)
CASE(c_array_out, uint64_t sh = 4;
     return want(theus_array_alloc(arena(), THEUS_DTYPE_F32, 1, &sh, NULL, NULL), THEUS_EINVAL, "array_alloc(out NULL)");)
CASE(c_array_ndim, uint64_t sh[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1}; theus_handle h; theus_arena *a = arena();
     return want(theus_array_alloc(a, THEUS_DTYPE_F32, 0, sh, &h, NULL), THEUS_EINVAL, "array_alloc(ndim 0)") ||
            want(theus_array_alloc(a, THEUS_DTYPE_F32, 9, sh, &h, NULL), THEUS_EINVAL, "array_alloc(ndim 9)") ||
            want(theus_array_alloc(a, (theus_dtype)77, 1, sh, &h, NULL), THEUS_EINVAL, "array_alloc(dtype 77)");)
CASE(c_array_huge, uint64_t sh[2] = {UINT64_MAX, UINT64_MAX}; theus_handle h; theus_arena *a = arena();
     return want_err(theus_array_alloc(a, THEUS_DTYPE_F64, 2, sh, &h, NULL), "array_alloc(2^64 x 2^64)") ||
            want_err(theus_array_alloc(a, THEUS_DTYPE_U8, 1, sh, &h, NULL), "array_alloc(2^64 - 1 bytes)");)
CASE(c_info_null, theus_array_info i; return want(theus_array_info_get(NULL, 1, &i), THEUS_EINVAL, "array_info_get(NULL)");)
CASE(c_info_out, theus_arena *a = arena(); uint64_t sh = 4; theus_handle h;
     theus_array_alloc(a, THEUS_DTYPE_F32, 1, &sh, &h, NULL);
     return want(theus_array_info_get(a, h, NULL), THEUS_EINVAL, "array_info_get(out NULL)");)

/* Every call that takes a handle, on forged handles: an error, never a crash. */
#define FORGED(id, expr)                                                                          \
  static int id(void) {                                                                           \
    theus_arena *a = arena();                                                                     \
    uint64_t seed = 20261123;                                                                     \
    int bad = 0;                                                                                  \
    for (unsigned i = 0; i < BADARGS_HANDLES && bad < 5; i++) {                                   \
      theus_handle h = badargs_handle(i, HANDLES, &seed);                                         \
      int rc = (expr);                                                                            \
      if (rc >= 0) {                                                                              \
        printf("  forged handle 0x%016llx: %s returned %d\n", (unsigned long long)h, #expr, rc); \
        bad++;                                                                                    \
      }                                                                                           \
    }                                                                                             \
    return bad;                                                                                   \
  }
FORGED(f_view, ({ const void *p; theus_arena_view(a, h, &p, NULL); }))
FORGED(f_data, ({ void *p; theus_arena_data(a, h, &p, NULL); }))
FORGED(f_read, ({ char b[8]; theus_arena_read(a, h, b, sizeof b, NULL); }))
FORGED(f_free, theus_arena_free(a, h))
FORGED(f_file_range, ({ uint64_t o, l; theus_arena_file_range(a, h, &o, &l); }))
FORGED(f_info, ({ theus_array_info inf; theus_array_info_get(a, h, &inf); }))
FORGED(f_probe, ({ size_t n; theus_twin_probe(a, h, &n); }))
FORGED(f_reader, ({ theus_twin_reader *r; theus_twin_reader_open(a, h, &r); }))
/* the same on live and freed arrays' neighbours: a real array in slot 0 */
FORGED(f_view_live, ({ static theus_handle keep; if (!keep) theus_arena_write(a, "abc", 3, &keep);
                       const void *p; h == keep ? -1 : theus_arena_view(a, h, &p, NULL); }))

/* ---- twin ----------------------------------------------------------------- */
CASE(t_wopen_null, theus_twin_writer *t; return want(theus_twin_writer_open(NULL, 8, &t), THEUS_EINVAL, "writer_open(NULL)");)
CASE(t_wopen_out, return want(theus_twin_writer_open(arena(), 8, NULL), THEUS_EINVAL, "writer_open(out NULL)");)
CASE(t_wopen_zero, theus_twin_writer *t; return want(theus_twin_writer_open(arena(), 0, &t), THEUS_EINVAL, "writer_open(0)");)
CASE(t_wopen_max, theus_twin_writer *t; return want_err(theus_twin_writer_open(arena(), SIZE_MAX, &t), "writer_open(SIZE_MAX)");)
CASE(t_wopen_failed, theus_twin_writer *t; return want_err(theus_twin_writer_open(failed_arena(), 8, &t), "writer_open(failed arena)");)
CASE(t_wgetters, return theus_twin_writer_handle(NULL) != 0 || theus_twin_writer_size(NULL) != 0 ||
                        theus_twin_writer_epoch(NULL) != 0 || theus_twin_writer_errmsg(NULL) == NULL;)
CASE(t_wbegin, void *b; theus_twin_writer *t; theus_twin_writer_open(arena(), 8, &t);
     return want(theus_twin_writer_begin(NULL, 0, &b), THEUS_EINVAL, "writer_begin(NULL)") ||
            want(theus_twin_writer_begin(t, 0, NULL), THEUS_EINVAL, "writer_begin(back NULL)") ||
            want(theus_twin_writer_begin(t, 0xff00, &b), THEUS_EINVAL, "writer_begin(flags 0xff00)");)
CASE(t_wwrite, theus_twin_writer *t; theus_twin_writer_open(arena(), 8, &t);
     return want(theus_twin_writer_write(NULL, 0, "x", 1), THEUS_EINVAL, "writer_write(NULL)") ||
            want(theus_twin_writer_write(t, 0, NULL, 1), THEUS_EINVAL, "writer_write(src NULL)") ||
            want(theus_twin_writer_write(t, SIZE_MAX, "x", 2), THEUS_EINVAL, "writer_write(offset SIZE_MAX)") ||
            want(theus_twin_writer_write(t, 4, "xxxxxxxx", SIZE_MAX), THEUS_EINVAL, "writer_write(len SIZE_MAX)");)
CASE(t_wpublish, return want(theus_twin_writer_publish(NULL, NULL), THEUS_EINVAL, "writer_publish(NULL)");)
CASE(t_wclose, theus_twin_writer_close(NULL, 1); return 0;)
CASE(t_ropen, theus_twin_reader *r; theus_arena *a = arena();
     return want(theus_twin_reader_open(NULL, 1, &r), THEUS_EINVAL, "reader_open(NULL)") ||
            want(theus_twin_reader_open(a, 1, NULL), THEUS_EINVAL, "reader_open(out NULL)") ||
            want_err(theus_twin_reader_open(failed_arena(), 1, &r), "reader_open(failed arena)");)
CASE(t_ropen_notwin, theus_twin_reader *r; theus_arena *a = arena(); theus_handle h; theus_arena_write(a, "x", 1, &h);
     return want(theus_twin_reader_open(a, h, &r), THEUS_EINVAL, "reader_open(a plain array)");)
CASE(t_probe, size_t n; return want(theus_twin_probe(NULL, 1, &n), THEUS_EINVAL, "probe(NULL)") ||
                               want_err(theus_twin_probe(failed_arena(), 1, &n), "probe(failed arena)");)
CASE(t_rgetters, theus_twin_reader_stats st; theus_twin_reader_stats_get(NULL, &st); theus_twin_reader_stats_get(NULL, NULL);
     theus_twin_reader_close(NULL);
     return theus_twin_reader_size(NULL) != 0 || theus_twin_reader_epoch(NULL) != 0 || theus_twin_reader_errmsg(NULL) == NULL;)
CASE(t_rcalls, theus_arena *a = arena(); theus_twin_writer *t; theus_twin_reader *r; char b[8];
     theus_twin_writer_open(a, 8, &t); theus_twin_reader_open(a, theus_twin_writer_handle(t), &r);
     return want(theus_twin_reader_read_at(NULL, 0, b, 1, NULL), THEUS_EINVAL, "read_at(NULL)") ||
            want(theus_twin_reader_read_at(r, 0, NULL, 1, NULL), THEUS_EINVAL, "read_at(dest NULL)") ||
            want(theus_twin_reader_read_at(r, SIZE_MAX, b, 2, NULL), THEUS_EINVAL, "read_at(offset SIZE_MAX)") ||
            want(theus_twin_reader_wait_epoch(NULL, 0, 0, NULL), THEUS_EINVAL, "wait_epoch(NULL)") ||
            want(theus_twin_reader_set_retries(NULL, 3), THEUS_EINVAL, "set_retries(NULL)") ||
            want(theus_twin_reader_set_retries(r, 0), THEUS_EINVAL, "set_retries(0)");)

/* ---- sizes, the default budget -------------------------------------------- */
CASE(c_size_parse, uint64_t v; char err[64];
     return want(theus_size_parse("1MiB", NULL, err, sizeof err), THEUS_EINVAL, "size_parse(out NULL)") ||
            want(theus_size_parse(NULL, &v, err, sizeof err), THEUS_EINVAL, "size_parse(text NULL)") ||
            want(theus_size_parse("x", &v, NULL, 0), THEUS_EINVAL, "size_parse(err NULL)") ||
            want(theus_size_parse("1 MiB", &v, err, 1), 0, "size_parse(errlen 1)") ||
            want(theus_size_parse("99999999999999999999TiB", &v, err, sizeof err), THEUS_EINVAL, "size_parse(2^64+)") ||
            want(theus_size_parse("16777216TiB", &v, err, sizeof err), THEUS_EINVAL, "size_parse(2^64 exactly)");)
CASE(c_size_format, char buf[4];
     return theus_size_format(1, 0, NULL, 10) != NULL || theus_size_format(UINT64_MAX, 1, buf, 0) != buf ||
            theus_size_format(UINT64_MAX, 1, buf, sizeof buf) != buf || strlen(buf) != 3;)
CASE(c_default_budget, return theus_arena_default_budget() < (256u << 20);)

/* ---- version, error --------------------------------------------------------- */
CASE(b_version, return theus_version() == 0 || theus_version_string() == NULL;)
CASE(b_strerror, const int codes[] = {0, 1, -1, -2, -50, -1000, INT_MIN, INT_MAX};
     for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++)
       if (!theus_strerror(codes[i]) || !theus_err_name(codes[i])) return 1;
     return 0;)

static const badcase heavy_cases[] = {
    ENTRY(c_config_init, "theus_arena_config_init(NULL)"),
    ENTRY(c_open_out, "theus_arena_open(NULL, NULL)"),
    ENTRY(c_open_ro_out, "theus_arena_open_ro(0, NULL)"),
    ENTRY(c_open_ro_fd, "theus_arena_open_ro(-1, &a)"),
    ENTRY(c_open_ro_notarena, "theus_arena_open_ro(stdin, &a)"),
    ENTRY(c_close, "theus_arena_close(NULL)"),
    ENTRY(c_ro_fd, "theus_arena_ro_fd(NULL)"),
    ENTRY(c_rw_fd, "theus_arena_rw_fd(NULL / failed arena)"),
    ENTRY(c_file_range, "theus_arena_file_range(NULL / failed arena / outputs NULL / small array / handle 0)"),
    ENTRY(c_is_ro, "theus_arena_is_readonly(NULL)"),
    ENTRY(c_errmsg, "theus_arena_errmsg(NULL)"),
    ENTRY(c_alloc_null, "theus_arena_alloc(NULL, ...)"),
    ENTRY(c_alloc_out, "theus_arena_alloc(a, 8, NULL, NULL)"),
    ENTRY(c_alloc_zero, "theus_arena_alloc(a, 0, ...)"),
    ENTRY(c_alloc_max, "theus_arena_alloc(a, SIZE_MAX, ...)"),
    ENTRY(c_alloc_max_page, "theus_arena_alloc(a, SIZE_MAX - 100, ...)"),
    ENTRY(c_alloc_failed, "theus_arena_alloc(failed arena, ...)"),
    ENTRY(c_write_null, "theus_arena_write(NULL, ...)"),
    ENTRY(c_write_src, "theus_arena_write(a, NULL, 8, &h)"),
    ENTRY(c_write_out, "theus_arena_write(a, src, 1, NULL)"),
    ENTRY(c_write_zero, "theus_arena_write(a, src, 0, &h)"),
    ENTRY(c_view_null, "theus_arena_view(NULL, ...)"),
    ENTRY(c_view_ptr, "theus_arena_view(a, h, NULL, NULL)"),
    ENTRY(c_view_failed, "theus_arena_view(failed arena, ...)"),
    ENTRY(c_data_null, "theus_arena_data(NULL, ...)"),
    ENTRY(c_data_ptr, "theus_arena_data(a, h, NULL, NULL)"),
    ENTRY(c_read_null, "theus_arena_read(NULL, ...)"),
    ENTRY(c_read_dst, "theus_arena_read(a, h, NULL, 4, NULL)"),
    ENTRY(c_read_cap0, "theus_arena_read(a, h, NULL, 0, &n)"),
    ENTRY(c_free_null, "theus_arena_free(NULL, h)"),
    ENTRY(c_free_failed, "theus_arena_free(failed arena, h)"),
    ENTRY(c_with_buffer_null, "theus_arena_with_buffer(NULL, ...)"),
    ENTRY(c_with_buffer_fn, "theus_arena_with_buffer(a, src, 1, NULL, NULL)"),
    ENTRY(c_with_buffer_src, "theus_arena_with_buffer(a, NULL, 1, fn, NULL)"),
    ENTRY(c_scoped, "theus_scoped_release(NULL / arena NULL)"),
    ENTRY(c_reset_null, "theus_arena_reset(NULL)"),
    ENTRY(c_reset_failed, "theus_arena_reset(failed arena)"),
    ENTRY(c_stats_null, "theus_arena_stats_get(NULL, &s)"),
    ENTRY(c_stats_out, "theus_arena_stats_get(a, NULL)"),
    ENTRY(c_list_null, "theus_arena_list_live(NULL, ...)"),
    ENTRY(c_list_count, "theus_arena_list_live(a, NULL, 0, NULL)"),
    ENTRY(c_list_out, "theus_arena_list_live(a, NULL, 5, &n)"),
    ENTRY(c_find, "theus_arena_find(NULL / failed, addr)"),
    ENTRY(c_contains, "theus_arena_contains(NULL / failed, addr)"),
    ENTRY(c_dtype, "theus_dtype_size/name/parse(bad)"),
    ENTRY(c_array_null, "theus_array_alloc(NULL, ...)"),
    ENTRY(c_array_shape, "theus_array_alloc(a, f32, 1, NULL, ...)"),
    ENTRY(c_array_out, "theus_array_alloc(a, f32, 1, shape, NULL, NULL)"),
    ENTRY(c_array_ndim, "theus_array_alloc(a, ndim 0 / 9 / dtype 77)"),
    ENTRY(c_array_huge, "theus_array_alloc(a, shapes near 2^64)"),
    ENTRY(c_info_null, "theus_array_info_get(NULL, ...)"),
    ENTRY(c_info_out, "theus_array_info_get(a, h, NULL)"),
    ENTRY(f_view, "theus_arena_view(a, forged handles)"),
    ENTRY(f_data, "theus_arena_data(a, forged handles)"),
    ENTRY(f_read, "theus_arena_read(a, forged handles)"),
    ENTRY(f_free, "theus_arena_free(a, forged handles)"),
    ENTRY(f_file_range, "theus_arena_file_range(a, forged handles)"),
    ENTRY(f_info, "theus_array_info_get(a, forged handles)"),
    ENTRY(f_probe, "theus_twin_probe(a, forged handles)"),
    ENTRY(f_reader, "theus_twin_reader_open(a, forged handles)"),
    ENTRY(f_view_live, "theus_arena_view(a with a live array, forged handles)"),
};

static const badcase size_cases[] = {
    ENTRY(c_size_parse, "theus_size_parse(out NULL / text NULL / err NULL / overflow)"),
    ENTRY(c_size_format, "theus_size_format(buf NULL / cap 0 / cap 4, UINT64_MAX)"),
    ENTRY(c_default_budget, "theus_arena_default_budget()"),
};

static const badcase twin_cases[] = {
    ENTRY(t_wopen_null, "theus_twin_writer_open(NULL, 8, &t)"),
    ENTRY(t_wopen_out, "theus_twin_writer_open(a, 8, NULL)"),
    ENTRY(t_wopen_zero, "theus_twin_writer_open(a, 0, &t)"),
    ENTRY(t_wopen_max, "theus_twin_writer_open(a, SIZE_MAX, &t)"),
    ENTRY(t_wopen_failed, "theus_twin_writer_open(failed arena, 8, &t)"),
    ENTRY(t_wgetters, "theus_twin_writer_handle/size/epoch/errmsg(NULL)"),
    ENTRY(t_wbegin, "theus_twin_writer_begin(NULL / back NULL / bad flags)"),
    ENTRY(t_wwrite, "theus_twin_writer_write(NULL / src NULL / out of range)"),
    ENTRY(t_wpublish, "theus_twin_writer_publish(NULL, NULL)"),
    ENTRY(t_wclose, "theus_twin_writer_close(NULL, 1)"),
    ENTRY(t_ropen, "theus_twin_reader_open(NULL / out NULL / failed arena)"),
    ENTRY(t_ropen_notwin, "theus_twin_reader_open(a, plain array)"),
    ENTRY(t_probe, "theus_twin_probe(NULL / failed arena)"),
    ENTRY(t_rgetters, "theus_twin_reader_size/epoch/errmsg/stats_get/close(NULL)"),
    ENTRY(t_rcalls, "theus_twin_reader_read_at/wait_epoch/set_retries(bad)"),
};

static const badcase base_cases[] = {
    ENTRY(b_version, "theus_version(), theus_version_string()"),
    ENTRY(b_strerror, "theus_strerror/theus_err_name(any int)"),
};

static void test_heavy_h(void **state) {
  (void)state;
  badargs_check(heavy_cases, sizeof heavy_cases / sizeof heavy_cases[0]);
}

static void test_sizes(void **state) {
  (void)state;
  badargs_check(size_cases, sizeof size_cases / sizeof size_cases[0]);
}

static void test_twin_h(void **state) {
  (void)state;
  badargs_check(twin_cases, sizeof twin_cases / sizeof twin_cases[0]);
}

static void test_version_and_error_h(void **state) {
  (void)state;
  badargs_check(base_cases, sizeof base_cases / sizeof base_cases[0]);
}

int main(void) {
  setvbuf(stdout, NULL, _IONBF, 0);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_heavy_h),
      cmocka_unit_test(test_sizes),
      cmocka_unit_test(test_twin_h),
      cmocka_unit_test(test_version_and_error_h),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
