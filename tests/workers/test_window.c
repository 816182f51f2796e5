/* workers: write windows — a map whose items fill an arena array, each
 * writing only its own pages; stores elsewhere fault, the workers holding the
 * window are dead when the map returns, and a task that tries to widen its
 * window is refused. The teardown stops the pool (cancelling anything left),
 * so no child outlives a failed assertion. */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cmocka.h>

#include "theus/heavy.h"
#include "theus/pool.h"

typedef struct fixture {
  theus_arena *arena;
  theus_pool *pool;
} fixture;

static size_t page;

static int setup(void **state) {
  fixture *f = calloc(1, sizeof *f);
  if (!f || theus_arena_open(NULL, &f->arena) < 0) return -1;
  page = (size_t)sysconf(_SC_PAGESIZE); /* before the fork: the workers read it */
  theus_pool_config cfg;
  theus_pool_config_init(&cfg);
  cfg.nworkers = 2;
  cfg.arena = f->arena;
  if (theus_pool_open(&cfg, &f->pool) < 0) {
    print_error("theus_pool_open: %s\n", theus_pool_errmsg(f->pool));
    return -1;
  }
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fixture *f = *state;
  theus_pool_close(f->pool, 1);
  theus_arena_close(f->arena);
  free(f);
  return 0;
}

/* Item i (arg: its index) fills its page with i + 1 and returns its pid; with
 * arg bit 31 set it first writes the next item's page. */
static int t_fill(theus_task *t) {
  uint32_t a;
  memcpy(&a, theus_task_arg(t, NULL), sizeof a);
  uint32_t i = a & 0x7fffffffu;
  size_t len;
  uint32_t *w = theus_task_window(t, &len);
  if (!w) return theus_task_fail(t, THEUS_EINVAL, "no window");
  size_t per = page / sizeof *w;
  if (a >> 31) w[(i + 1) * per] = 0xdeadu;
  for (size_t k = 0; k < per; k++) w[i * per + k] = i + 1;
  int pid = (int)getpid();
  return theus_task_write(t, &pid, sizeof pid);
}

static theus_handle alloc_pages(fixture *f, size_t n) {
  theus_handle h;
  void *p;
  assert_int_equal(theus_arena_alloc(f->arena, n * page, &h, &p), 0);
  memset(p, 0, n * page);
  return h;
}

static int run_fill(fixture *f, theus_handle h, const uint32_t *args, size_t n, int *status, int *pids) {
  uint64_t *ranges = calloc(2 * n, sizeof *ranges);
  for (size_t i = 0; i < n; i++) {
    ranges[2 * i] = i * page;
    ranges[2 * i + 1] = (i + 1) * page;
  }
  theus_map_desc m = {.fn = t_fill, .args = args, .arg_size = sizeof *args, .count = n, .results = pids,
                      .result_size = sizeof *pids, .status = status, .chunk = 1, .window = h,
                      .window_ranges = ranges};
  int rc = theus_pool_map(f->pool, &m, NULL);
  free(ranges);
  return rc;
}

static void test_items_fill_their_pages(void **state) {
  fixture *f = *state;
  enum { N = 8 };
  theus_handle h = alloc_pages(f, N);
  uint32_t args[N];
  int status[N], pids[N];
  for (uint32_t i = 0; i < N; i++) args[i] = i;
  if (run_fill(f, h, args, N, status, pids)) fail_msg("map: %s", theus_pool_errmsg(f->pool));
  const uint32_t *d;
  size_t len;
  assert_int_equal(theus_arena_view(f->arena, h, (const void **)&d, &len), 0);
  for (size_t k = 0; k < len / sizeof *d; k++) assert_int_equal(d[k], k / (page / sizeof *d) + 1);
  /* every worker that held the window is dead (reaped) once the map returned */
  for (int i = 0; i < N; i++) {
    assert_true(pids[i] > 0);
    assert_int_equal(kill(pids[i], 0), -1);
    assert_int_equal(errno, ESRCH);
  }
  /* and plain tasks still run afterwards (on fresh workers without it) */
  for (uint32_t i = 0; i < N; i++) args[i] = i;
  theus_map_desc plain = {.fn = t_fill, .args = args, .arg_size = sizeof *args, .count = 2, .results = pids,
                          .result_size = sizeof *pids, .status = status, .chunk = 1};
  assert_int_equal(theus_pool_map(f->pool, &plain, NULL), THEUS_EINVAL); /* no window to write */
  assert_non_null(strstr(theus_pool_errmsg(f->pool), "no window"));
}

static void test_store_outside_its_pages_faults(void **state) {
  fixture *f = *state;
  theus_handle h = alloc_pages(f, 2);
  uint32_t args[2] = {0u | 0x80000000u, 1};
  int status[2], pids[2];
  assert_int_equal(run_fill(f, h, args, 2, status, pids), THEUS_ECONTRACT);
  assert_int_equal(status[0], THEUS_ECONTRACT);
  assert_int_equal(status[1], 0);
  char want[128];
  snprintf(want, sizeof want, "contract violation: write at byte %zu of the heavy output, outside the bytes [0, %zu)",
           page, page);
  assert_non_null(strstr(theus_pool_errmsg(f->pool), want));
  const uint32_t *d;
  assert_int_equal(theus_arena_view(f->arena, h, (const void **)&d, NULL), 0);
  for (size_t k = page / sizeof *d; k < 2 * page / sizeof *d; k++) assert_int_equal(d[k], 2); /* no 0xdead */
}

/* Tries to widen its window over the next array: mremap in place, mremap
 * elsewhere, remap_file_pages; returns the errnos (0 = it worked). */
static int t_widen(theus_task *t) {
  size_t len;
  char *w = theus_task_window(t, &len);
  int e[3];
  void *r = mremap(w, len, len + page, 0);
  e[0] = r == MAP_FAILED ? errno : 0;
  r = mremap(w, len, len, MREMAP_MAYMOVE);
  e[1] = r == MAP_FAILED ? errno : 0;
  e[2] = remap_file_pages(w, page, 0, 0, 0) ? errno : 0;
  return theus_task_write(t, e, sizeof e);
}

static void test_window_cannot_widen(void **state) {
  fixture *f = *state;
  theus_handle h = alloc_pages(f, 1), next;
  const char secret[] = "published bytes";
  char *nd;
  assert_int_equal(theus_arena_alloc(f->arena, page, &next, (void **)&nd), 0);
  memcpy(nd, secret, sizeof secret);
  uint64_t ranges[2] = {0, page};
  int e[3] = {-1, -1, -1}, st = -1;
  theus_map_desc m = {.fn = t_widen, .count = 1, .results = e, .result_size = sizeof e, .status = &st, .chunk = 1,
                      .window = h, .window_ranges = ranges};
  if (theus_pool_map(f->pool, &m, NULL)) fail_msg("map: %s", theus_pool_errmsg(f->pool));
  assert_int_equal(e[0], EPERM);
  assert_int_equal(e[1], EPERM);
  assert_int_equal(e[2], EPERM);
  assert_memory_equal(nd, secret, sizeof secret);
}

static void test_bad_windows_refused(void **state) {
  fixture *f = *state;
  theus_handle small, h = alloc_pages(f, 2);
  void *p;
  assert_int_equal(theus_arena_alloc(f->arena, 100, &small, &p), 0);
  uint32_t args[1] = {0};
  int st[1], pids[1];
  uint64_t ranges[2] = {0, page};
  theus_map_desc m = {.fn = t_fill, .args = args, .arg_size = sizeof *args, .count = 1, .results = pids,
                      .result_size = sizeof *pids, .status = st, .chunk = 1, .window = small,
                      .window_ranges = ranges};
  assert_int_equal(theus_pool_map(f->pool, &m, NULL), THEUS_EINVAL); /* shares its page */
  assert_non_null(strstr(theus_pool_errmsg(f->pool), "shares its page"));
  m.window = h;
  ranges[0] = 8;
  assert_int_equal(theus_pool_map(f->pool, &m, NULL), THEUS_EINVAL); /* not page-aligned */
  assert_non_null(strstr(theus_pool_errmsg(f->pool), "page-aligned"));
  ranges[0] = 0;
  ranges[1] = 3 * page;
  assert_int_equal(theus_pool_map(f->pool, &m, NULL), THEUS_EINVAL); /* past the end */
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_items_fill_their_pages, setup, teardown),
      cmocka_unit_test_setup_teardown(test_store_outside_its_pages_faults, setup, teardown),
      cmocka_unit_test_setup_teardown(test_window_cannot_widen, setup, teardown),
      cmocka_unit_test_setup_teardown(test_bad_windows_refused, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
