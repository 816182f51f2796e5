/* Stress test of the live region: a writer publishing at full speed frames
 * whose every 8-byte word is (epoch << 32 | word index); readers (threads,
 * and a process with a read-only attachment) verify every word of every
 * snapshot they get on random ranges. Zero torn snapshots allowed.
 * THEUS_TWIN_STRESS_MS sets the duration of each phase (default 1500 ms). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/mman.h>

#include "theus/heavy.h"
#include "theus/twin.h"
#include "twin_testutil.h"

#define NWORDS 8192u /* 64 KiB region */
#define NBYTES (NWORDS * 8u)
#define READER_THREADS 2

/* Shared with the children through a MAP_SHARED page. */
typedef struct control {
  atomic_int stop;
  atomic_uint_fast64_t frames;
} control;

typedef struct tally {
  uint64_t reads, retries, starved, torn, backwards, errors, max_epoch;
} tally;

typedef struct reader_arg {
  const theus_arena *arena;
  theus_handle h;
  control *ctl;
  uint64_t seed;
  tally out;
} reader_arg;

typedef struct writer_arg {
  theus_twin_writer *twin;
  control *ctl;
} writer_arg;

typedef struct fixture {
  theus_arena *arena;
  theus_twin_writer *twin;
  control *ctl;
  tt_children kids;
} fixture;

static int stress_ms(void) {
  const char *s = getenv("THEUS_TWIN_STRESS_MS");
  int v = s ? atoi(s) : 0;
  return v > 0 ? v : 1500;
}

/* One frame in one of three ways, so every writer path is exercised. */
static int write_frame(theus_twin_writer *t, uint64_t e, uint64_t *scratch) {
  uint64_t *back = NULL;
  switch (e % 3) {
  case 0:
    if (theus_twin_writer_begin(t, THEUS_TWIN_DISCARD, (void **)&back)) return -1;
    tt_fill_frame(back, NWORDS, e);
    break;
  case 1:
    if (theus_twin_writer_begin(t, 0, (void **)&back)) return -1;
    tt_fill_frame(back, NWORDS, e);
    break;
  default:
    tt_fill_frame(scratch, NWORDS, e);
    for (size_t k = 0; k < 4; k++)
      if (theus_twin_writer_write(t, k * NBYTES / 4, (char *)scratch + k * NBYTES / 4, NBYTES / 4)) return -1;
  }
  return theus_twin_writer_publish(t, NULL);
}

static int writer_loop(writer_arg *w) {
  uint64_t *scratch = malloc(NBYTES);
  if (!scratch) return 2;
  int rc = 0;
  while (!atomic_load_explicit(&w->ctl->stop, memory_order_relaxed)) {
    if (write_frame(w->twin, theus_twin_writer_epoch(w->twin) + 1, scratch)) {
      rc = 3;
      break;
    }
    atomic_fetch_add_explicit(&w->ctl->frames, 1, memory_order_relaxed);
  }
  free(scratch);
  return rc;
}

static void check_one(theus_twin_reader *r, uint64_t *rng, uint64_t *buf, tally *t, uint64_t *last) {
  uint64_t e = 0;
  int rc;
  if (tt_rand(rng) % 4 == 0) { /* byte-granular range */
    size_t off = tt_rand(rng) % NBYTES;
    size_t len = 1 + tt_rand(rng) % (tt_rand(rng) % 8 ? 300 : NBYTES - off);
    if (len > NBYTES - off) len = NBYTES - off;
    rc = theus_twin_reader_read_at(r, off, buf, len, &e);
    if (rc == 0 && !tt_check_bytes((const unsigned char *)buf, off, len, e)) t->torn++;
  } else { /* word range, mostly short, sometimes up to the whole region */
    size_t first = tt_rand(rng) % NWORDS;
    size_t n = 1 + tt_rand(rng) % (tt_rand(rng) % 8 ? 64 : NWORDS - first);
    if (n > NWORDS - first) n = NWORDS - first;
    rc = theus_twin_reader_read_at(r, first * 8, buf, n * 8, &e);
    if (rc == 0 && !tt_check_words(buf, first, n, e)) t->torn++;
  }
  if (rc == THEUS_ESTARVED) return;
  if (rc != 0) {
    t->errors++;
    return;
  }
  if (e < *last) t->backwards++; /* snapshots never go back in time */
  *last = e;
  if (e > t->max_epoch) t->max_epoch = e;
}

static void reader_loop(reader_arg *a) {
  theus_twin_reader *r = NULL;
  uint64_t *buf = malloc(NBYTES);
  uint64_t rng = a->seed | 1, last = 0;
  if (!buf || theus_twin_reader_open(a->arena, a->h, &r) != 0) {
    a->out.errors++;
    goto done;
  }
  theus_twin_reader_set_retries(r, 200);
  while (!atomic_load_explicit(&a->ctl->stop, memory_order_relaxed))
    for (int i = 0; i < 64; i++) check_one(r, &rng, buf, &a->out, &last);
  theus_twin_reader_stats st;
  theus_twin_reader_stats_get(r, &st);
  a->out.reads = st.reads;
  a->out.retries = st.retries;
  a->out.starved = st.starved;
done:
  theus_twin_reader_close(r);
  free(buf);
}

static void *reader_thread(void *p) {
  reader_loop(p);
  return NULL;
}

static void *writer_thread(void *p) {
  return (void *)(intptr_t)writer_loop(p);
}

static int setup(void **state) {
  fixture *f = calloc(1, sizeof *f);
  if (!f) return -1;
  f->ctl = mmap(NULL, sizeof(control), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (f->ctl == MAP_FAILED) return -1;
  if (tt_arena_open(&f->arena) != 0) return -1;
  if (theus_twin_writer_open(f->arena, NBYTES, &f->twin) != 0) return -1;
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fixture *f = *state;
  if (!f) return 0;
  atomic_store(&f->ctl->stop, 1);
  tt_kill_all(&f->kids);
  theus_twin_writer_close(f->twin, 1);
  theus_arena_close(f->arena);
  munmap(f->ctl, sizeof(control));
  free(f);
  return 0;
}

static void print_tally(const char *who, const tally *t) {
  print_message("  %-16s reads %9llu  retries %7llu  starved %5llu  torn %llu  max epoch %llu\n", who,
                (unsigned long long)t->reads, (unsigned long long)t->retries,
                (unsigned long long)t->starved, (unsigned long long)t->torn,
                (unsigned long long)t->max_epoch);
}

static void assert_clean(const tally *t) {
  assert_int_equal(t->torn, 0);
  assert_int_equal(t->backwards, 0);
  assert_int_equal(t->errors, 0);
  assert_true(t->reads > 0);
  assert_true(t->max_epoch > 1);
}

static void run_reader_threads(fixture *f, reader_arg *args) {
  pthread_t th[READER_THREADS];
  for (int i = 0; i < READER_THREADS; i++) {
    args[i] = (reader_arg){f->arena, theus_twin_writer_handle(f->twin), f->ctl, 0x1234567ull * (i + 3), {0}};
    assert_int_equal(pthread_create(&th[i], NULL, reader_thread, &args[i]), 0);
  }
  struct timespec ts = {stress_ms() / 1000, (stress_ms() % 1000) * 1000000L};
  nanosleep(&ts, NULL);
  atomic_store(&f->ctl->stop, 1);
  for (int i = 0; i < READER_THREADS; i++) pthread_join(th[i], NULL);
}

/* ---- writer process, reader threads, reader process (read-only) ---------- */

typedef struct ro_reader {
  reader_arg arg;
  int ro_fd, out_fd;
} ro_reader;

static int ro_reader_main(void *p) {
  ro_reader *c = p;
  theus_arena *ro = NULL;
  if (theus_arena_open_ro(c->ro_fd, &ro) != 0) return 10;
  c->arg.arena = ro;
  reader_loop(&c->arg);
  theus_arena_close(ro);
  return write(c->out_fd, &c->arg.out, sizeof c->arg.out) == (ssize_t)sizeof c->arg.out ? 0 : 11;
}

static int writer_main(void *p) {
  return writer_loop(p);
}

static void test_stress_processes(void **state) {
  fixture *f = *state;
  int pfd[2];
  assert_int_equal(pipe(pfd), 0);
  /* Fork before any thread exists in this process. */
  writer_arg w = {f->twin, f->ctl};
  pid_t writer = tt_spawn(&f->kids, writer_main, &w);
  assert_true(writer > 0);
  ro_reader c = {{NULL, theus_twin_writer_handle(f->twin), f->ctl, 0xfeedfacecafeull, {0}},
                 theus_arena_ro_fd(f->arena), pfd[1]};
  pid_t rpid = tt_spawn(&f->kids, ro_reader_main, &c);
  assert_true(rpid > 0);
  close(pfd[1]);

  reader_arg args[READER_THREADS];
  run_reader_threads(f, args);
  int wst = tt_reap(&f->kids, writer);
  int rst = tt_reap(&f->kids, rpid);
  tally proc = {0};
  ssize_t got = read(pfd[0], &proc, sizeof proc);
  close(pfd[0]);

  print_message("writer process published %llu frames of %u bytes\n",
                (unsigned long long)atomic_load(&f->ctl->frames), NBYTES);
  for (int i = 0; i < READER_THREADS; i++) print_tally("reader thread", &args[i].out);
  print_tally("reader process", &proc);
  assert_int_equal(wst, 0);
  assert_int_equal(rst, 0);
  assert_int_equal(got, (ssize_t)sizeof proc);
  for (int i = 0; i < READER_THREADS; i++) assert_clean(&args[i].out);
  assert_clean(&proc);
}

/* ---- writer thread and reader threads in one process (the TSan case) ---- */

static void test_stress_threads(void **state) {
  fixture *f = *state;
  writer_arg w = {f->twin, f->ctl};
  pthread_t wt;
  assert_int_equal(pthread_create(&wt, NULL, writer_thread, &w), 0);
  reader_arg args[READER_THREADS];
  run_reader_threads(f, args);
  void *wrc = NULL;
  pthread_join(wt, &wrc);
  print_message("writer thread published %llu frames of %u bytes\n",
                (unsigned long long)atomic_load(&f->ctl->frames), NBYTES);
  for (int i = 0; i < READER_THREADS; i++) print_tally("reader thread", &args[i].out);
  assert_int_equal((intptr_t)wrc, 0);
  for (int i = 0; i < READER_THREADS; i++) assert_clean(&args[i].out);
}

/* ---- starvation: a writer faster than the copy ------------------------- */

static void *tiny_frames(void *p) {
  writer_arg *w = p;
  for (uint64_t i = 0; !atomic_load_explicit(&w->ctl->stop, memory_order_relaxed); i++)
    if (theus_twin_writer_write(w->twin, 0, &i, sizeof i) || theus_twin_writer_publish(w->twin, NULL)) return (void *)1;
  return NULL;
}

/* One attempt per read of the whole region while the writer publishes 8-byte
 * frames back to back: the reader must give up with THEUS_ESTARVED (and a
 * message), never hand out a torn copy. Bounded to a few seconds. */
static void test_read_at_starved(void **state) {
  fixture *f = *state;
  theus_twin_reader *r = NULL;
  uint64_t *buf = malloc(NBYTES);
  assert_non_null(buf);
  assert_int_equal(theus_twin_reader_open(f->arena, theus_twin_writer_handle(f->twin), &r), 0);
  assert_int_equal(theus_twin_reader_set_retries(r, 1), 0);
  writer_arg w = {f->twin, f->ctl};
  pthread_t wt;
  assert_int_equal(pthread_create(&wt, NULL, tiny_frames, &w), 0);
  int rc = 0;
  struct timespec t0, t;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  do {
    rc = theus_twin_reader_read_at(r, 0, buf, NBYTES, NULL);
    clock_gettime(CLOCK_MONOTONIC, &t);
  } while (rc == 0 && t.tv_sec - t0.tv_sec < 5);
  atomic_store(&f->ctl->stop, 1);
  void *wrc = NULL;
  pthread_join(wt, &wrc);
  theus_twin_reader_stats st;
  theus_twin_reader_stats_get(r, &st);
  print_message("starvation: %llu reads before the first THEUS_ESTARVED, message: %s\n",
                (unsigned long long)st.reads, theus_twin_reader_errmsg(r));
  assert_null(wrc);
  assert_int_equal(rc, THEUS_ESTARVED);
  assert_int_equal(st.starved, 1);
  assert_non_null(strstr(theus_twin_reader_errmsg(r), "overtook all 1 copies"));
  theus_twin_reader_close(r);
  free(buf);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_stress_processes, setup, teardown),
      cmocka_unit_test_setup_teardown(test_stress_threads, setup, teardown),
      cmocka_unit_test_setup_teardown(test_read_at_starved, setup, teardown),
  };
  return cmocka_run_group_tests_name("twin_stress", tests, NULL, NULL);
}
