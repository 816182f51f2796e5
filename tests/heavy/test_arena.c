/* Arena: bytes API, handles, budgets, stats, reset, threads. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "theus/heavy.h"
#include "../../heavy/arena_int.h" /* to age a slot without 2^32 allocations */

#define MiB (1024u * 1024u)

static theus_arena *open_with(uint64_t hard, uint64_t single, unsigned soft_pct, uint32_t handles) {
  theus_arena_config c;
  theus_arena_config_init(&c);
  if (hard) c.hard_limit = hard;
  if (single) c.single_limit = single;
  if (soft_pct) c.soft_limit_pct = soft_pct;
  if (handles) c.max_handles = handles;
  theus_arena *a = NULL;
  assert_int_equal(theus_arena_open(&c, &a), 0);
  assert_non_null(a);
  return a;
}

static theus_arena_stats stats(theus_arena *a) {
  theus_arena_stats s;
  assert_int_equal(theus_arena_stats_get(a, &s), 0);
  return s;
}

/* Bytes of memory actually backing the memfd right now. */
static uint64_t backed_bytes(theus_arena *a) {
  struct stat st;
  assert_int_equal(fstat(theus_arena_ro_fd(a), &st), 0);
  return (uint64_t)st.st_blocks * 512u;
}

static void roundtrip(theus_arena *a, size_t n) {
  uint8_t *src = malloc(n), *dst = malloc(n);
  for (size_t i = 0; i < n; i++) src[i] = (uint8_t)(i * 131u + n);
  theus_handle h;
  assert_int_equal(theus_arena_write(a, src, n, &h), 0);
  memset(dst, 0, n);
  size_t len = 0;
  assert_int_equal(theus_arena_read(a, h, dst, n, &len), 0);
  assert_int_equal(len, n);
  assert_memory_equal(src, dst, n);
  const void *view;
  assert_int_equal(theus_arena_view(a, h, &view, &len), 0);
  assert_int_equal(len, n);
  assert_memory_equal(view, src, n);
  assert_int_equal(theus_arena_free(a, h), 0);
  free(src);
  free(dst);
}

static void test_roundtrip_sizes(void **st) {
  (void)st;
  theus_arena *a = open_with(0, 0, 0, 0);
  roundtrip(a, 5);
  roundtrip(a, 1000);
  roundtrip(a, 50u * MiB);
  assert_int_equal(stats(a).bytes_live, 0);
  assert_int_equal(stats(a).alloc_count, 3);
  assert_int_equal(stats(a).free_count, 3);
  theus_arena_close(a);
}

static void test_alignment(void **st) {
  (void)st;
  theus_arena *a = open_with(0, 0, 0, 0);
  theus_handle h;
  void *p;
  assert_int_equal(theus_arena_alloc(a, 100, &h, &p), 0);
  assert_int_equal((uintptr_t)p % 64, 0);
  assert_int_equal(theus_arena_alloc(a, 5000, &h, &p), 0);
  assert_int_equal((uintptr_t)p % 4096, 0);
  assert_int_equal(theus_arena_alloc(a, 1, &h, &p), 0);
  assert_int_equal(theus_arena_alloc(a, 4096, &h, &p), 0);
  assert_int_equal((uintptr_t)p % 4096, 0);
  theus_arena_close(a);
}

static void test_handle_errors_distinct(void **st) {
  (void)st;
  theus_arena *a = open_with(0, 0, 0, 1024);
  const void *v;
  size_t len;
  uint64_t e0 = stats(a).errors;
  assert_int_equal(theus_arena_view(a, 0, &v, &len), THEUS_EZEROHANDLE);
  assert_non_null(strstr(theus_arena_errmsg(a), "handle 0"));
  assert_int_equal(theus_arena_view(a, (uint64_t)5000 << 32 | 1, &v, &len), THEUS_EBADHANDLE);
  assert_non_null(strstr(theus_arena_errmsg(a), "out of range"));
  theus_handle h;
  assert_int_equal(theus_arena_write(a, "abc", 3, &h), 0);
  assert_int_equal(theus_arena_view(a, h + 7, &v, &len), THEUS_EBADHANDLE); /* never issued */
  assert_int_equal(theus_arena_free(a, h), 0);
  assert_int_equal(theus_arena_view(a, h, &v, &len), THEUS_EFREED);
  assert_int_equal(theus_arena_free(a, h), THEUS_EFREED); /* double free */
  assert_non_null(strstr(theus_arena_errmsg(a), "already freed"));
  theus_handle h2;
  assert_int_equal(theus_arena_write(a, "xyz", 3, &h2), 0);
  assert_int_equal(THEUS_HANDLE_INDEX(h2), THEUS_HANDLE_INDEX(h)); /* slot reused ... */
  assert_true(THEUS_HANDLE_GEN(h2) > THEUS_HANDLE_GEN(h));          /* ... new generation */
  assert_int_equal(theus_arena_view(a, h, &v, &len), THEUS_ESTALE);
  assert_non_null(strstr(theus_arena_errmsg(a), "reused"));
  assert_int_equal(theus_arena_free(a, h), THEUS_ESTALE);
  assert_int_equal(theus_arena_view(a, h2, &v, &len), 0);
  assert_memory_equal(v, "xyz", 3);
  assert_int_equal(stats(a).errors, e0 + 7);
  assert_int_equal(theus_arena_alloc(a, 0, &h, NULL), THEUS_EINVAL);
  char small[2];
  assert_int_equal(theus_arena_read(a, h2, small, sizeof small, &len), THEUS_ETRUNC);
  assert_int_equal(len, 3);
  theus_arena_close(a);
}

static void test_single_limit(void **st) {
  (void)st;
  theus_arena *a = open_with(0, 100u * MiB, 0, 0); /* the seed's 100 MiB, set explicitly */
  theus_handle h;
  assert_int_equal(theus_arena_alloc(a, 101u * MiB, &h, NULL), THEUS_ETOOBIG);
  assert_int_equal(stats(a).hard_limit_hits, 1);
  assert_int_equal(stats(a).errors, 1);
  assert_non_null(strstr(theus_arena_errmsg(a), "single-allocation limit"));
  assert_int_equal(stats(a).bytes_live, 0);
  assert_int_equal(theus_arena_alloc(a, 100u * MiB, &h, NULL), 0); /* the limit itself is fine */
  theus_arena_close(a);
}

static void test_global_and_soft_limits(void **st) {
  (void)st;
  theus_arena *a = open_with(1 * MiB, 1 * MiB, 50, 0);
  theus_handle h1, h2, h3;
  assert_int_equal(theus_arena_alloc(a, 400 * 1024, &h1, NULL), 0);
  assert_int_equal(stats(a).soft_limit_hits, 0);
  assert_int_equal(theus_arena_alloc(a, 400 * 1024, &h2, NULL), 0); /* 800 KiB > 512 KiB soft */
  assert_int_equal(stats(a).soft_limit_hits, 1);
  assert_int_equal(theus_arena_alloc(a, 400 * 1024, &h3, NULL), THEUS_EBUDGET);
  assert_int_equal(stats(a).hard_limit_hits, 1);
  assert_non_null(strstr(theus_arena_errmsg(a), "hard limit"));
  assert_int_equal(stats(a).bytes_live, 800 * 1024);
  assert_int_equal(theus_arena_free(a, h1), 0);
  assert_int_equal(theus_arena_alloc(a, 400 * 1024, &h3, NULL), 0);
  assert_int_equal(stats(a).soft_limit_hits, 2);
  assert_int_equal(stats(a).peak_bytes, 800 * 1024);
  theus_arena_close(a);
}

struct race {
  theus_arena *a;
  pthread_barrier_t *go;
  int ok;
};

static void *race_thread(void *p) {
  struct race *r = p;
  pthread_barrier_wait(r->go);
  for (int i = 0; i < 64; i++) {
    theus_handle h;
    if (theus_arena_alloc(r->a, 64 * 1024, &h, NULL) == 0) r->ok++;
  }
  return NULL;
}

static void test_budget_race_never_overshoots(void **st) {
  (void)st;
  for (int round = 0; round < 20; round++) {
    theus_arena *a = open_with(1 * MiB, 1 * MiB, 0, 0);
    pthread_barrier_t go;
    pthread_barrier_init(&go, NULL, 8);
    pthread_t t[8];
    struct race r[8];
    for (int i = 0; i < 8; i++) {
      r[i] = (struct race){a, &go, 0};
      pthread_create(&t[i], NULL, race_thread, &r[i]);
    }
    int ok = 0;
    for (int i = 0; i < 8; i++) {
      pthread_join(t[i], NULL);
      ok += r[i].ok;
    }
    pthread_barrier_destroy(&go);
    assert_int_equal(ok, 16); /* exactly 1 MiB / 64 KiB */
    assert_int_equal(stats(a).bytes_live, 1 * MiB);
    assert_int_equal(stats(a).peak_bytes, 1 * MiB);
    assert_int_equal(stats(a).hard_limit_hits, 8 * 64 - 16);
    theus_arena_close(a);
  }
}

static int cb_calls;
static int scoped_cb(theus_arena *a, theus_handle h, void *ud) {
  cb_calls++;
  const void *v;
  size_t n;
  assert_int_equal(theus_arena_view(a, h, &v, &n), 0);
  assert_memory_equal(v, ud, n);
  return -42; /* an "error" inside the scope: the buffer must still be freed */
}

static int scoped_early_return(theus_arena *a, int bail) {
  THEUS_SCOPED(buf, a);
  assert_int_equal(theus_arena_write(a, "scoped", 6, &buf.handle), 0);
  if (bail) return 1;
  assert_int_equal(stats(a).active_handles, 1);
  return 0;
}

static void test_scoped_buffers(void **st) {
  (void)st;
  theus_arena *a = open_with(0, 0, 0, 0);
  assert_int_equal(theus_arena_with_buffer(a, "hello", 5, scoped_cb, "hello"), -42);
  assert_int_equal(cb_calls, 1);
  assert_int_equal(stats(a).active_handles, 0);
  assert_int_equal(scoped_early_return(a, 1), 1);
  assert_int_equal(stats(a).active_handles, 0);
  assert_int_equal(scoped_early_return(a, 0), 0);
  assert_int_equal(stats(a).active_handles, 0);
  assert_int_equal(stats(a).bytes_live, 0);
  theus_arena_close(a);
}

static void test_reset_invalidates_100k(void **st) {
  (void)st;
  enum { N = 100000 };
  theus_arena *a = open_with(0, 0, 0, 0);
  theus_handle *hs = malloc(N * sizeof *hs);
  for (uint32_t i = 0; i < N; i++) assert_int_equal(theus_arena_write(a, &i, sizeof i, &hs[i]), 0);
  assert_int_equal(theus_arena_free(a, hs[7]), 0);
  theus_arena_stats before = stats(a);
  assert_int_equal(before.active_handles, N - 1);
  uint64_t backed = backed_bytes(a);
  assert_int_equal(theus_arena_reset(a), 0);
  theus_arena_stats after = stats(a);
  assert_int_equal(after.active_handles, 0);
  assert_int_equal(after.bytes_live, 0);
  assert_int_equal(after.alloc_count, before.alloc_count); /* cumulative counters survive */
  assert_int_equal(after.free_count, before.free_count);
  assert_int_equal(after.peak_bytes, before.peak_bytes);
  const void *v;
  size_t n, live;
  for (uint32_t i = 0; i < N; i++)
    if (i != 7) assert_int_equal(theus_arena_view(a, hs[i], &v, &n), THEUS_ESTALE);
  assert_int_equal(theus_arena_list_live(a, NULL, 0, &live), 0);
  assert_int_equal(live, 0);
  /* New handles reuse slots with higher generations: no value is reissued. */
  for (uint32_t i = 0; i < 1000; i++) {
    theus_handle h;
    assert_int_equal(theus_arena_write(a, &i, sizeof i, &h), 0);
    assert_true(THEUS_HANDLE_GEN(h) > THEUS_HANDLE_GEN(hs[THEUS_HANDLE_INDEX(h) < N ? THEUS_HANDLE_INDEX(h) : 0]));
    assert_int_equal(theus_arena_view(a, hs[i], &v, &n), THEUS_ESTALE);
  }
  /* The ~6 MiB of old data pages were returned (the slot table stays). */
  assert_true(backed_bytes(a) + 6u * MiB <= backed);
  free(hs);
  theus_arena_close(a);
}

static void test_list_live_and_return_to_zero(void **st) {
  (void)st;
  theus_arena *a = open_with(0, 0, 0, 0);
  theus_handle h[3];
  size_t sizes[3] = {10, 70000, 3};
  for (int i = 0; i < 3; i++) assert_int_equal(theus_arena_alloc(a, sizes[i], &h[i], NULL), 0);
  assert_int_equal(theus_arena_free(a, h[1]), 0);
  theus_live_entry e[4];
  size_t n;
  assert_int_equal(theus_arena_list_live(a, e, 4, &n), 0);
  assert_int_equal(n, 2);
  assert_int_equal(e[0].handle, h[0]);
  assert_int_equal(e[0].size, 10);
  assert_int_equal(e[1].handle, h[2]);
  assert_int_equal(e[1].size, 3);
  assert_int_equal(theus_arena_list_live(a, e, 1, &n), 0); /* short buffer: count still total */
  assert_int_equal(n, 2);
  assert_int_equal(theus_arena_free(a, h[0]), 0);
  assert_int_equal(theus_arena_free(a, h[2]), 0);
  assert_int_equal(stats(a).bytes_live, 0);
  assert_int_equal(stats(a).active_handles, 0);
  theus_arena_close(a);
}

static void test_pages_reserved_then_returned(void **st) {
  (void)st;
  theus_arena *a = open_with(0, 0, 0, 0);
  uint64_t base = backed_bytes(a);
  theus_handle h;
  assert_int_equal(theus_arena_alloc(a, 32u * MiB, &h, NULL), 0);
  /* Reserved at allocation, before anything touched the pages. */
  assert_true(backed_bytes(a) >= base + 32u * MiB);
  assert_int_equal(theus_arena_free(a, h), 0);
  assert_true(backed_bytes(a) < base + 1u * MiB);
  theus_arena_close(a);
}

/* Random alloc/free with content checks: exercises TLSF split/merge. */
static void test_random_mix_keeps_contents(void **st) {
  (void)st;
  enum { LIVE = 400, OPS = 20000 };
  theus_arena *a = open_with(64u * MiB, 0, 0, 4096);
  theus_handle h[LIVE] = {0};
  size_t sz[LIVE] = {0};
  unsigned seed = 12345;
  for (int op = 0; op < OPS; op++) {
    int i = rand_r(&seed) % LIVE;
    if (h[i]) {
      const uint8_t *v;
      size_t n;
      assert_int_equal(theus_arena_view(a, h[i], (const void **)&v, &n), 0);
      assert_int_equal(n, sz[i]);
      assert_int_equal(v[0], (uint8_t)i);
      assert_int_equal(v[n - 1], (uint8_t)(i ^ 0x5a));
      assert_int_equal(theus_arena_free(a, h[i]), 0);
      h[i] = 0;
    } else {
      sz[i] = 2 + (size_t)rand_r(&seed) % (rand_r(&seed) % 4 ? 3000 : 300000);
      uint8_t *p;
      assert_int_equal(theus_arena_alloc(a, sz[i], &h[i], (void **)&p), 0);
      p[0] = (uint8_t)i;
      p[sz[i] - 1] = (uint8_t)(i ^ 0x5a);
    }
  }
  for (int i = 0; i < LIVE; i++)
    if (h[i]) assert_int_equal(theus_arena_free(a, h[i]), 0);
  assert_int_equal(stats(a).bytes_live, 0);
  assert_true(backed_bytes(a) < 33u * 4096u * 4u); /* only the small-page cache stays */
  theus_arena_close(a);
}

static void *stress_thread(void *p) {
  theus_arena *a = p;
  unsigned seed = (unsigned)(uintptr_t)pthread_self();
  for (int i = 0; i < 3000; i++) {
    uint64_t val[8];
    for (int k = 0; k < 8; k++) val[k] = ((uint64_t)rand_r(&seed) << 32) | (uint64_t)i;
    size_t n = sizeof val - (size_t)(i % 8) * 8;
    theus_handle h;
    if (theus_arena_write(a, val, n, &h) != 0) return (void *)1;
    const void *v;
    size_t len;
    if (theus_arena_view(a, h, &v, &len) != 0 || len != n || memcmp(v, val, n) != 0) return (void *)2;
    if (theus_arena_free(a, h) != 0) return (void *)3;
  }
  return NULL;
}

static void test_threads_write_view_free(void **st) {
  (void)st;
  theus_arena *a = open_with(0, 0, 0, 0);
  pthread_t t[6];
  for (int i = 0; i < 6; i++) pthread_create(&t[i], NULL, stress_thread, a);
  for (int i = 0; i < 6; i++) {
    void *r;
    pthread_join(t[i], &r);
    assert_null(r);
  }
  assert_int_equal(stats(a).bytes_live, 0);
  assert_int_equal(stats(a).alloc_count, 6 * 3000);
  assert_int_equal(stats(a).errors, 0);
  theus_arena_close(a);
}

struct churn {
  theus_arena *a;
  theus_handle *hs;
  int stop;
};

/* Frees and reallocates shared handles while readers resolve them. */
static void *churn_thread(void *p) {
  struct churn *c = p;
  for (int round = 0; round < 2000; round++) {
    int i = round % 64;
    theus_handle old = __atomic_load_n(&c->hs[i], __ATOMIC_ACQUIRE), nh;
    if (theus_arena_free(c->a, old) != 0) return (void *)1;
    if (theus_arena_write(c->a, &round, sizeof round, &nh) != 0) return (void *)2;
    __atomic_store_n(&c->hs[i], nh, __ATOMIC_RELEASE);
  }
  __atomic_store_n(&c->stop, 1, __ATOMIC_RELEASE);
  return NULL;
}

static void test_views_race_frees(void **st) {
  (void)st;
  theus_arena *a = open_with(0, 0, 0, 0);
  theus_handle hs[64];
  for (int i = 0; i < 64; i++) assert_int_equal(theus_arena_write(a, &i, sizeof i, &hs[i]), 0);
  theus_handle prev[64];
  memcpy(prev, hs, sizeof prev);
  struct churn c = {a, hs, 0};
  pthread_t t;
  pthread_create(&t, NULL, churn_thread, &c);
  long ok = 0, gone = 0, bad = 0;
  do { /* at least one round: under valgrind the churn may finish before this thread runs */
    for (int i = 0; i < 128; i++) { /* current handles, then the ones seen last round */
      theus_handle h = i < 64 ? __atomic_load_n(&hs[i], __ATOMIC_ACQUIRE) : prev[i - 64];
      if (i < 64) prev[i] = h;
      const void *v;
      size_t n;
      int rc = theus_arena_view(a, h, &v, &n);
      if (rc == 0 && n == sizeof(int)) ok++;
      else if (rc == THEUS_ESTALE || rc == THEUS_EFREED) gone++;
      else bad++;
    }
  } while (!__atomic_load_n(&c.stop, __ATOMIC_ACQUIRE));
  void *r;
  pthread_join(t, &r);
  assert_null(r);
  assert_int_equal(bad, 0);
  assert_true(ok > 0);
  print_message("views: %ld resolved, %ld saw a free or reuse\n", ok, gone);
  theus_arena_close(a);
}

static void test_generation_wrap_retires_slot(void **st) {
  (void)st;
  theus_arena *a = open_with(0, 0, 0, 4);
  theus_handle h;
  assert_int_equal(theus_arena_write(a, "a", 1, &h), 0);
  assert_int_equal(theus_arena_free(a, h), 0);
  a->slots[0].gen = UINT32_MAX - 1; /* as if 2^32-2 allocations had used slot 0 */
  assert_int_equal(theus_arena_write(a, "b", 1, &h), 0);
  assert_int_equal(THEUS_HANDLE_INDEX(h), 0);
  assert_int_equal(THEUS_HANDLE_GEN(h), UINT32_MAX); /* last generation: never 0 */
  assert_int_equal(theus_arena_free(a, h), 0);
  theus_handle h2;
  assert_int_equal(theus_arena_write(a, "c", 1, &h2), 0);
  assert_int_equal(THEUS_HANDLE_INDEX(h2), 1); /* slot 0 is retired */
  assert_int_equal(theus_arena_reset(a), 0);
  assert_int_equal(theus_arena_write(a, "d", 1, &h2), 0);
  assert_int_equal(THEUS_HANDLE_INDEX(h2), 1); /* still retired after a reset */
  const void *v;
  assert_int_equal(theus_arena_view(a, h, &v, NULL), THEUS_EFREED);
  theus_arena_close(a);
}

static void test_bad_config(void **st) {
  (void)st;
  theus_arena_config c;
  theus_arena_config_init(&c);
  c.soft_limit_pct = 101;
  theus_arena *a = NULL;
  assert_int_equal(theus_arena_open(&c, &a), THEUS_EINVAL);
  assert_non_null(a); /* carries the detailed message, like theus_engine_open */
  assert_non_null(strstr(theus_arena_errmsg(a), "soft 101%"));
  theus_arena_stats s;
  assert_int_equal(theus_arena_stats_get(a, &s), 0);
  assert_int_equal(s.errors, 1);
  theus_arena_close(a);
  assert_string_equal(theus_strerror(THEUS_ESTALE), "stale handle");
  assert_string_equal(theus_err_name(THEUS_EFREED), "THEUS_EFREED");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_roundtrip_sizes),
      cmocka_unit_test(test_alignment),
      cmocka_unit_test(test_handle_errors_distinct),
      cmocka_unit_test(test_single_limit),
      cmocka_unit_test(test_global_and_soft_limits),
      cmocka_unit_test(test_budget_race_never_overshoots),
      cmocka_unit_test(test_scoped_buffers),
      cmocka_unit_test(test_reset_invalidates_100k),
      cmocka_unit_test(test_list_live_and_return_to_zero),
      cmocka_unit_test(test_pages_reserved_then_returned),
      cmocka_unit_test(test_random_mix_keeps_contents),
      cmocka_unit_test(test_threads_write_view_free),
      cmocka_unit_test(test_views_race_frees),
      cmocka_unit_test(test_generation_wrap_retires_slot),
      cmocka_unit_test(test_bad_config),
  };
  return cmocka_run_group_tests_name("heavy/arena", tests, NULL, NULL);
}
