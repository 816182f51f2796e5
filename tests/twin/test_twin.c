/* Unit tests of the live region (twin): content, catch-up, bounds, errors,
 * epoch waits across threads and processes. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "theus/heavy.h"
#include "theus/twin.h"
#include "twin_testutil.h"

typedef struct fixture {
  theus_arena *arena;
  theus_twin_writer *twin;
  theus_twin_reader *reader;
  tt_children kids;
} fixture;

#define REGION 1000u

static int setup(void **state) {
  fixture *f = calloc(1, sizeof *f);
  if (!f) return -1;
  if (tt_arena_open(&f->arena) != 0) return -1;
  if (theus_twin_writer_open(f->arena, REGION, &f->twin) != 0) return -1;
  if (theus_twin_reader_open(f->arena, theus_twin_writer_handle(f->twin), &f->reader) != 0) return -1;
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fixture *f = *state;
  if (!f) return 0;
  tt_kill_all(&f->kids);
  theus_twin_reader_close(f->reader);
  theus_twin_writer_close(f->twin, 1);
  theus_arena_close(f->arena);
  free(f);
  return 0;
}

static void test_initial_state(void **state) {
  fixture *f = *state;
  unsigned char buf[REGION];
  uint64_t epoch = 99;
  assert_int_not_equal(theus_twin_writer_handle(f->twin), 0);
  assert_int_equal(theus_twin_writer_size(f->twin), REGION);
  assert_int_equal(theus_twin_reader_size(f->reader), REGION);
  assert_int_equal(theus_twin_reader_epoch(f->reader), 0);
  memset(buf, 0xaa, sizeof buf);
  assert_int_equal(theus_twin_reader_read_at(f->reader, 0, buf, REGION, &epoch), 0);
  assert_int_equal(epoch, 0);
  for (size_t i = 0; i < REGION; i++) assert_int_equal(buf[i], 0);
  /* len 0 is allowed, even at the very end, and only reports the epoch. */
  assert_int_equal(theus_twin_reader_read_at(f->reader, REGION, NULL, 0, &epoch), 0);
}

static void expect_content(fixture *f, const unsigned char *model, uint64_t want_epoch) {
  unsigned char got[REGION];
  uint64_t epoch = 0;
  assert_int_equal(theus_twin_reader_read_at(f->reader, 0, got, REGION, &epoch), 0);
  assert_int_equal(epoch, want_epoch);
  assert_memory_equal(got, model, REGION);
}

/* Random partial writes, raw back-buffer edits and discarding frames, checked
 * against a model after every publish: this exercises the catch-up copy. */
static void test_publish_matches_model(void **state) {
  fixture *f = *state;
  unsigned char model[REGION] = {0}, chunk[REGION];
  uint64_t rng = 0x9e3779b97f4a7c15u, epoch = 0;
  for (uint64_t frame = 1; frame <= 300; frame++) {
    int mode = (int)(tt_rand(&rng) % 4);
    if (mode == 0) { /* a few theus_twin_writer_write calls */
      for (int k = (int)(tt_rand(&rng) % 4); k >= 0; k--) {
        size_t off = tt_rand(&rng) % REGION, len = tt_rand(&rng) % (REGION - off + 1);
        for (size_t i = 0; i < len; i++) chunk[i] = (unsigned char)tt_rand(&rng);
        assert_int_equal(theus_twin_writer_write(f->twin, off, chunk, len), 0);
        memcpy(model + off, chunk, len);
      }
    } else if (mode == 1) { /* edit the up-to-date back buffer in place */
      unsigned char *back = NULL;
      assert_int_equal(theus_twin_writer_begin(f->twin, 0, (void **)&back), 0);
      assert_memory_equal(back, model, REGION);
      size_t at = tt_rand(&rng) % REGION;
      back[at] ^= 0x5a;
      model[at] ^= 0x5a;
    } else if (mode == 2) { /* discard: rewrite everything */
      unsigned char *back = NULL;
      assert_int_equal(theus_twin_writer_begin(f->twin, THEUS_TWIN_DISCARD, (void **)&back), 0);
      for (size_t i = 0; i < REGION; i++) model[i] = back[i] = (unsigned char)tt_rand(&rng);
    } /* mode 3: publish with no frame open keeps the content */
    assert_int_equal(theus_twin_writer_publish(f->twin, &epoch), 0);
    assert_int_equal(epoch, frame);
    assert_int_equal(theus_twin_writer_epoch(f->twin), frame);
    expect_content(f, model, frame);
  }
  theus_twin_reader_stats st;
  theus_twin_reader_stats_get(f->reader, &st);
  assert_int_equal(st.reads, 300);
  assert_int_equal(st.retries, 0);
}

static void test_read_range_subset(void **state) {
  fixture *f = *state;
  unsigned char src[REGION], got[REGION];
  for (size_t i = 0; i < REGION; i++) src[i] = (unsigned char)(i * 7 + 1);
  assert_int_equal(theus_twin_writer_write(f->twin, 0, src, REGION), 0);
  assert_int_equal(theus_twin_writer_publish(f->twin, NULL), 0);
  for (size_t off = 0; off < REGION; off += 97) {
    size_t len = REGION - off < 131 ? REGION - off : 131;
    uint64_t e = 0;
    assert_int_equal(theus_twin_reader_read_at(f->reader, off, got, len, &e), 0);
    assert_int_equal(e, 1);
    assert_memory_equal(got, src + off, len);
  }
}

static void test_bounds_errors(void **state) {
  fixture *f = *state;
  unsigned char buf[REGION + 8];
  assert_int_equal(theus_twin_reader_read_at(f->reader, REGION, buf, 1, NULL), THEUS_EINVAL);
  assert_non_null(strstr(theus_twin_reader_errmsg(f->reader), "outside the live region"));
  assert_non_null(strstr(theus_twin_reader_errmsg(f->reader), "1000 bytes"));
  assert_int_equal(theus_twin_reader_read_at(f->reader, 0, buf, REGION + 1, NULL), THEUS_EINVAL);
  assert_int_equal(theus_twin_reader_read_at(f->reader, 1, buf, REGION, NULL), THEUS_EINVAL);
  assert_int_equal(theus_twin_reader_read_at(f->reader, SIZE_MAX, buf, 2, NULL), THEUS_EINVAL);
  assert_int_equal(theus_twin_reader_read_at(f->reader, 2, buf, SIZE_MAX, NULL), THEUS_EINVAL);
  assert_int_equal(theus_twin_reader_read_at(f->reader, 0, NULL, 4, NULL), THEUS_EINVAL);

  assert_int_equal(theus_twin_writer_write(f->twin, REGION - 1, buf, 2), THEUS_EINVAL);
  assert_non_null(strstr(theus_twin_writer_errmsg(f->twin), "outside the live region"));
  assert_int_equal(theus_twin_writer_write(f->twin, SIZE_MAX, buf, 1), THEUS_EINVAL);
  void *back = NULL;
  assert_int_equal(theus_twin_writer_begin(f->twin, 0x80, &back), THEUS_EINVAL);
  assert_non_null(strstr(theus_twin_writer_errmsg(f->twin), "THEUS_TWIN_DISCARD"));
  assert_int_equal(theus_twin_reader_set_retries(f->reader, 0), THEUS_EINVAL);
  assert_non_null(strstr(theus_twin_reader_errmsg(f->reader), "attempts"));
  /* Failed calls changed nothing. */
  assert_int_equal(theus_twin_reader_epoch(f->reader), 0);
  theus_twin_reader_stats st;
  theus_twin_reader_stats_get(f->reader, &st);
  assert_int_equal(st.reads, 0);
}

static void test_open_errors(void **state) {
  fixture *f = *state;
  theus_twin_reader *r = (theus_twin_reader *)1;
  theus_twin_writer *t = (theus_twin_writer *)1;
  theus_handle plain = 0;
  assert_int_equal(theus_arena_alloc(f->arena, 4096, &plain, NULL), 0);
  assert_int_equal(theus_twin_reader_open(f->arena, plain, &r), THEUS_EINVAL);
  assert_null(r);
  size_t n = 0;
  assert_int_equal(theus_twin_probe(f->arena, plain, &n), THEUS_EINVAL);
  assert_int_equal(theus_twin_probe(f->arena, theus_twin_writer_handle(f->twin), &n), 0);
  assert_int_equal(n, REGION);
  assert_int_equal(theus_twin_reader_open(f->arena, 0, &r), THEUS_EZEROHANDLE);
  assert_int_equal(theus_twin_writer_open(f->arena, 0, &t), THEUS_EINVAL);
  assert_null(t);
  assert_int_equal(theus_twin_writer_open(f->arena, SIZE_MAX / 2, &t), THEUS_ETOOBIG);

  /* A destroyed region's handle is stale for good. */
  assert_int_equal(theus_twin_writer_open(f->arena, 64, &t), 0);
  theus_handle h = theus_twin_writer_handle(t);
  theus_twin_writer_close(t, 1);
  int rc = theus_twin_reader_open(f->arena, h, &r);
  assert_true(rc == THEUS_ESTALE || rc == THEUS_EFREED);
  assert_int_equal(theus_arena_free(f->arena, plain), 0);
}

static void test_create_on_readonly_arena(void **state) {
  fixture *f = *state;
  theus_arena *ro = NULL;
  theus_twin_writer *t = NULL;
  theus_twin_reader *r = NULL;
  assert_int_equal(theus_arena_open_ro(theus_arena_ro_fd(f->arena), &ro), 0);
  assert_int_equal(theus_twin_writer_open(ro, 64, &t), THEUS_EREADONLY);
  assert_null(t);
  /* ...but reading through it works, in the same process too. */
  assert_int_equal(theus_twin_writer_write(f->twin, 0, "live", 4), 0);
  assert_int_equal(theus_twin_writer_publish(f->twin, NULL), 0);
  assert_int_equal(theus_twin_reader_open(ro, theus_twin_writer_handle(f->twin), &r), 0);
  char got[5] = {0};
  uint64_t e = 0;
  assert_int_equal(theus_twin_reader_read_at(r, 0, got, 4, &e), 0);
  assert_string_equal(got, "live");
  assert_int_equal(e, 1);
  theus_twin_reader_close(r);
  theus_arena_close(ro);
}

static void test_wait_epoch_timeout(void **state) {
  fixture *f = *state;
  uint64_t now = 77;
  struct timespec a, b;
  clock_gettime(CLOCK_MONOTONIC, &a);
  assert_int_equal(theus_twin_reader_wait_epoch(f->reader, 0, 60, &now), THEUS_ETIMEDOUT);
  clock_gettime(CLOCK_MONOTONIC, &b);
  /* Not a timing benchmark: a timeout must not return before its time. */
  int64_t ms = (b.tv_sec - a.tv_sec) * 1000 + (b.tv_nsec - a.tv_nsec) / 1000000;
  assert_true(ms >= 60);
  assert_int_equal(now, 77);
  assert_non_null(strstr(theus_twin_reader_errmsg(f->reader), "stayed at epoch 0"));

  assert_int_equal(theus_twin_writer_publish(f->twin, NULL), 0);
  assert_int_equal(theus_twin_reader_wait_epoch(f->reader, 0, 0, &now), 0);
  assert_int_equal(now, 1);
  assert_int_equal(theus_twin_reader_wait_epoch(f->reader, 1, 0, &now), THEUS_ETIMEDOUT);
}

typedef struct waiter {
  theus_twin_reader *r;
  uint64_t seen, now;
  int rc;
  atomic_int tid;
  pthread_t th;
} waiter;

static void *waiter_main(void *p) {
  waiter *w = p;
  atomic_store(&w->tid, (int)gettid());
  w->rc = theus_twin_reader_wait_epoch(w->r, w->seen, 20000, &w->now);
  return NULL;
}

/* Starts a thread in wait_epoch(seen 0) and returns once it sleeps in the kernel. */
static void start_waiter(fixture *f, waiter *w) {
  assert_int_equal(theus_twin_reader_open(f->arena, theus_twin_writer_handle(f->twin), &w->r), 0);
  assert_int_equal(pthread_create(&w->th, NULL, waiter_main, w), 0);
  while (!atomic_load(&w->tid)) sched_yield();
  assert_true(tt_wait_sleeping(atomic_load(&w->tid)));
}

static void test_wait_epoch_wakes_thread(void **state) {
  fixture *f = *state;
  waiter w = {.seen = 0};
  start_waiter(f, &w);
  assert_int_equal(theus_twin_writer_publish(f->twin, NULL), 0);
  pthread_join(w.th, NULL);
  assert_int_equal(w.rc, 0);
  assert_int_equal(w.now, 1);
  theus_twin_reader_close(w.r);
}

static void test_close_wakes_waiters(void **state) {
  fixture *f = *state;
  waiter w = {.seen = 0};
  start_waiter(f, &w);
  theus_handle h = theus_twin_writer_handle(f->twin);
  theus_twin_writer_close(f->twin, 0); /* the region itself stays allocated */
  f->twin = NULL;
  pthread_join(w.th, NULL);
  assert_int_equal(w.rc, THEUS_ECLOSED);
  assert_non_null(strstr(theus_twin_reader_errmsg(w.r), "closed"));
  char c;
  assert_int_equal(theus_twin_reader_read_at(f->reader, 0, &c, 1, NULL), THEUS_ECLOSED);
  theus_twin_reader_close(w.r);
  assert_int_equal(theus_arena_free(f->arena, h), 0);
}

/* ---- another process, read-only mapping ---------------------------------- */

typedef struct ro_child {
  int ro_fd, ready_fd;
  theus_handle h;
} ro_child;

/* Exit codes say which step failed (the parent asserts 0). */
static int ro_waiter_main(void *p) {
  ro_child *c = p;
  theus_arena *ro = NULL;
  theus_twin_reader *r = NULL;
  if (theus_arena_open_ro(c->ro_fd, &ro) != 0) return 10;
  if (theus_twin_reader_open(ro, c->h, &r) != 0) return 11;
  if (theus_twin_reader_wait_epoch(r, 0, 30, NULL) != THEUS_ETIMEDOUT) return 12;
  if (write(c->ready_fd, "r", 1) != 1) return 13;
  uint64_t now = 0, e = 0;
  int rc = theus_twin_reader_wait_epoch(r, 0, 20000, &now);
  if (rc != 0) return 14;
  if (now != 1) return 15;
  char got[6] = {0};
  if (theus_twin_reader_read_at(r, 0, got, 5, &e) != 0 || e != 1) return 16;
  if (strcmp(got, "hello") != 0) return 17;
  theus_twin_reader_close(r);
  theus_arena_close(ro);
  return 0;
}

static void test_wait_epoch_wakes_ro_process(void **state) {
  fixture *f = *state;
  int pfd[2];
  assert_int_equal(pipe(pfd), 0);
  ro_child c = {theus_arena_ro_fd(f->arena), pfd[1], theus_twin_writer_handle(f->twin)};
  pid_t pid = tt_spawn(&f->kids, ro_waiter_main, &c);
  assert_true(pid > 0);
  close(pfd[1]);
  char b;
  assert_int_equal(read(pfd[0], &b, 1), 1);
  close(pfd[0]);
  /* Publish only once the child sleeps in the kernel, to test the wake-up. */
  assert_true(tt_wait_sleeping(pid));
  assert_int_equal(theus_twin_writer_write(f->twin, 0, "hello", 5), 0);
  assert_int_equal(theus_twin_writer_publish(f->twin, NULL), 0);
  assert_int_equal(tt_reap(&f->kids, pid), 0);
}

/* A region destroyed under a reader: its pages are punched (they read as
 * zeros), and read_at must say closed rather than return zeros as data. */
static void test_read_after_destroy_is_closed(void **state) {
  fixture *f = *state;
  theus_twin_writer *big;
  theus_twin_reader *r;
  assert_int_equal(theus_twin_writer_open(f->arena, 1u << 20, &big), 0);
  assert_int_equal(theus_twin_writer_write(big, 0, "hello", 5), 0);
  assert_int_equal(theus_twin_writer_publish(big, NULL), 0);
  assert_int_equal(theus_twin_reader_open(f->arena, theus_twin_writer_handle(big), &r), 0);
  char buf[5];
  uint64_t epoch;
  assert_int_equal(theus_twin_reader_read_at(r, 0, buf, sizeof buf, &epoch), 0);
  assert_memory_equal(buf, "hello", 5);
  theus_twin_writer_close(big, 1);
  assert_int_equal(theus_twin_reader_read_at(r, 0, buf, sizeof buf, &epoch), THEUS_ECLOSED);
  theus_twin_reader_close(r);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void) {
  const struct CMUnitTest tests[] = {
      T(test_initial_state),
      T(test_publish_matches_model),
      T(test_read_range_subset),
      T(test_bounds_errors),
      T(test_open_errors),
      T(test_create_on_readonly_arena),
      T(test_wait_epoch_timeout),
      T(test_wait_epoch_wakes_thread),
      T(test_close_wakes_waiters),
      T(test_wait_epoch_wakes_ro_process),
      T(test_read_after_destroy_is_closed),
  };
  return cmocka_run_group_tests_name("twin", tests, NULL, NULL);
}
