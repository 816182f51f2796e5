/* workers: round trips, arguments, arena inputs, results, batches, stats,
 * two pools in one process, a threaded parent, stop modes. Every test runs
 * against a pool held in the cmocka state; the teardown stops it (cancelling
 * anything left), so no child outlives a failed assertion. */
#include <pthread.h>
#include <signal.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "theus/heavy.h"
#include "theus/pool.h"

typedef struct fixture {
  theus_arena *arena;
  theus_pool *pool;
  theus_pool *pool2;
} fixture;

static int setup(void **state) {
  fixture *f = calloc(1, sizeof *f);
  if (!f || theus_arena_open(NULL, &f->arena) < 0) return -1;
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fixture *f = *state;
  theus_pool_close(f->pool, 1);
  theus_pool_close(f->pool2, 1);
  theus_arena_close(f->arena);
  free(f);
  return 0;
}

static theus_pool *start(fixture *f, unsigned nworkers) {
  theus_pool_config cfg;
  theus_pool_config_init(&cfg);
  cfg.nworkers = nworkers;
  cfg.arena = f->arena;
  theus_pool *p = NULL;
  int rc = theus_pool_open(&cfg, &p);
  if (rc < 0) fail_msg("theus_pool_open: %s", theus_pool_errmsg(p));
  return p;
}

/* ---- task functions (linked in: present in every worker) ---------------- */

static int t_echo(theus_task *t) {
  size_t n;
  const void *a = theus_task_arg(t, &n);
  return theus_task_write(t, a, n);
}

static int t_empty(theus_task *t) {
  (void)t;
  return 0;
}

/* Sums an f64 array and returns the sum, its dtype and dims. */
static int t_sum(theus_task *t) {
  theus_array_info ai;
  int rc = theus_task_array(t, 0, &ai);
  if (rc < 0) return rc;
  if (ai.dtype != THEUS_DTYPE_F64) return theus_task_fail(t, THEUS_EINVAL, "want f64, got %d", (int)ai.dtype);
  const double *d = ai.data;
  double s = 0;
  for (uint64_t i = 0; i < ai.nbytes / 8; i++) s += d[i];
  double out[3] = {s, (double)ai.ndim, (double)ai.shape[0]};
  return theus_task_write(t, out, sizeof out);
}

static int t_fail(theus_task *t) { return theus_task_fail(t, THEUS_EPROCESS, "bad input %d", 42); }

static int t_big(theus_task *t) {
  size_t cap;
  theus_task_out(t, &cap);
  return theus_task_set_result(t, cap + 1);
}

static int t_malloc(theus_task *t) {
  char *p = malloc(1000);
  if (!p) return THEUS_ENOMEM;
  snprintf(p, 1000, "w%u", theus_task_worker(t));
  int rc = theus_task_write(t, p, strlen(p) + 1);
  free(p);
  return rc;
}

static int t_worker_pid(theus_task *t) {
  int pid = getpid();
  return theus_task_write(t, &pid, sizeof pid);
}

static int t_sleep_ms(theus_task *t) {
  int ms;
  memcpy(&ms, theus_task_arg(t, NULL), sizeof ms);
  usleep((useconds_t)ms * 1000u);
  return 0;
}

static int t_square(theus_task *t) {
  int v;
  memcpy(&v, theus_task_arg(t, NULL), sizeof v);
  if (v % 7 == 3) return theus_task_fail(t, THEUS_EPROCESS, "item value %d refused", v);
  v *= v;
  return theus_task_write(t, &v, sizeof v);
}

/* Writes (item value % 5) bytes, each the value's low byte; value 3 fails. */
static int t_short(theus_task *t) {
  int v;
  memcpy(&v, theus_task_arg(t, NULL), sizeof v);
  if (v == 3) return theus_task_fail(t, THEUS_EPROCESS, "item 3 refused");
  unsigned char b[4];
  memset(b, v & 0xff, sizeof b);
  return theus_task_write(t, b, (size_t)(v % 5));
}

static int run1(theus_pool *p, const theus_task_desc *d, theus_pool_result *r) {
  theus_ticket tk;
  int rc = theus_pool_submit(p, d, &tk);
  if (rc < 0) return rc;
  return theus_pool_wait(p, tk, -1, r);
}

/* ---- tests --------------------------------------------------------------- */

typedef struct seen_results {
  size_t calls, next, bad_order, bad_len, bad_bytes;
} seen_results;

static void on_map_result(size_t i, const void *data, size_t len, void *ud) {
  seen_results *sr = ud;
  const unsigned char *b = data;
  sr->bad_order += i < sr->next;
  sr->next = i + 1;
  sr->bad_len += len != i % 5;
  for (size_t k = 0; k < len; k++) sr->bad_bytes += b[k] != (i & 0xff);
  sr->calls++;
}

static void test_echo_roundtrip(void **state) {
  fixture *f = *state;
  f->pool = start(f, 2);
  assert_int_equal(theus_pool_size(f->pool), 2);
  for (int i = 0; i < 200; i++) {
    char msg[32];
    snprintf(msg, sizeof msg, "hello %d", i);
    theus_task_desc d = {.fn = t_echo, .arg = msg, .arg_len = strlen(msg) + 1};
    theus_pool_result r;
    assert_int_equal(run1(f->pool, &d, &r), 0);
    assert_int_equal(r.status, 0);
    assert_int_equal(r.len, strlen(msg) + 1);
    assert_string_equal(r.data, msg);
    theus_pool_result_release(&r);
  }
  theus_pool_stats st;
  assert_int_equal(theus_pool_stats_get(f->pool, &st), 0);
  assert_int_equal(st.submitted, 200);
  assert_int_equal(st.completed, 200);
  assert_int_equal(st.workers[0].tasks + st.workers[1].tasks, 200);
  {
    int stopped = theus_pool_close(f->pool, 0);
    f->pool = NULL; /* gone either way: teardown must not stop it again */
    assert_int_equal(stopped, 0);
  }
}

static void test_arena_input(void **state) {
  fixture *f = *state;
  uint64_t shape[1] = {1000};
  theus_handle h;
  void *data;
  assert_int_equal(theus_array_alloc(f->arena, THEUS_DTYPE_F64, 1, shape, &h, &data), 0);
  for (int i = 0; i < 1000; i++) ((double *)data)[i] = i;
  f->pool = start(f, 2); /* after the write: the worker maps the live arena, no copy */
  theus_task_desc d = {.fn = t_sum, .handles = &h, .nhandles = 1};
  theus_pool_result r;
  assert_int_equal(run1(f->pool, &d, &r), 0);
  assert_int_equal(r.status, 0);
  double out[3];
  assert_int_equal(r.len, sizeof out);
  memcpy(out, r.data, sizeof out);
  assert_true(out[0] == 499500.0 && out[1] == 1.0 && out[2] == 1000.0);
  theus_pool_result_release(&r);
  /* arrays allocated after the pool started are visible too */
  theus_handle h2;
  assert_int_equal(theus_array_alloc(f->arena, THEUS_DTYPE_F64, 1, shape, &h2, &data), 0);
  for (int i = 0; i < 1000; i++) ((double *)data)[i] = 1;
  d.handles = &h2;
  assert_int_equal(run1(f->pool, &d, &r), 0);
  memcpy(out, r.data, sizeof out);
  assert_true(out[0] == 1000.0);
  theus_pool_result_release(&r);
  /* a stale handle fails before the function runs, naming the key */
  assert_int_equal(theus_arena_free(f->arena, h2), 0);
  const char *keys[1] = {"heavy.ones"};
  d.keys = keys;
  assert_int_equal(run1(f->pool, &d, &r), 0);
  assert_int_equal(r.status, THEUS_EFREED); /* freed, not yet reused */
  assert_non_null(strstr(r.errmsg, "heavy.ones"));
  theus_pool_result_release(&r);
}

static void test_errors_and_limits(void **state) {
  fixture *f = *state;
  f->pool = start(f, 1);
  theus_pool_result r;
  theus_task_desc d = {.fn = t_fail};
  assert_int_equal(run1(f->pool, &d, &r), 0);
  assert_int_equal(r.status, THEUS_EPROCESS);
  assert_string_equal(r.errmsg, "bad input 42");
  d.fn = t_big;
  assert_int_equal(run1(f->pool, &d, &r), 0);
  assert_int_equal(r.status, THEUS_ETRUNC);
  assert_non_null(strstr(r.errmsg, "THEUS_POOL_RESULT_MAX"));
  /* refused at submit: too many argument bytes, foreign function, NULL */
  static char big[THEUS_POOL_ARG_MAX + 1];
  theus_task_desc bad = {.fn = t_echo, .arg = big, .arg_len = sizeof big};
  theus_ticket tk;
  assert_int_equal(theus_pool_submit(f->pool, &bad, &tk), THEUS_EINVAL);
  assert_non_null(strstr(theus_pool_errmsg(f->pool), "THEUS_POOL_ARG_MAX"));
  int not_code = 0;
  bad = (theus_task_desc){.fn = (theus_task_fn)(void *)&not_code};
  assert_int_equal(theus_pool_submit(f->pool, &bad, &tk), THEUS_EINVAL);
  assert_non_null(strstr(theus_pool_errmsg(f->pool), "dlopen"));
  /* unknown and collected tickets */
  d.fn = t_empty;
  assert_int_equal(theus_pool_submit(f->pool, &d, &tk), 0);
  assert_int_equal(theus_pool_wait(f->pool, tk, -1, &r), 0);
  assert_int_equal(theus_pool_wait(f->pool, tk, -1, &r), THEUS_ENOTFOUND);
  assert_int_equal(theus_pool_wait(f->pool, 12345, 0, &r), THEUS_ENOTFOUND);
  assert_non_null(strstr(r.errmsg, "unknown or its result was already collected")); /* the waiter's copy */
  assert_int_equal(r.worker, -1);
  assert_null(r.data);
  /* a wait that times out leaves the ticket valid */
  int ms = 300;
  d = (theus_task_desc){.fn = t_sleep_ms, .arg = &ms, .arg_len = sizeof ms};
  assert_int_equal(theus_pool_submit(f->pool, &d, &tk), 0);
  assert_int_equal(theus_pool_wait(f->pool, tk, 1, &r), THEUS_ETIMEDOUT);
  assert_non_null(strstr(r.errmsg, "still"));
  assert_int_equal(theus_pool_wait(f->pool, tk, -1, &r), 0);
  assert_int_equal(r.status, 0);
}

static void test_batch(void **state) {
  fixture *f = *state;
  f->pool = start(f, 2);
  enum { N = 2000 };
  static theus_task_desc d[N];
  static theus_ticket tk[N];
  static int val[N];
  for (int i = 0; i < N; i++) {
    val[i] = i;
    d[i] = (theus_task_desc){.fn = t_echo, .arg = &val[i], .arg_len = sizeof val[i]};
  }
  size_t done = 0, got = 0;
  while (got < N) {
    if (done < N) {
      int rc = theus_pool_submit_batch(f->pool, d + done, N - done, tk + done);
      if (rc < 0) assert_int_equal(rc, THEUS_EAGAIN);
      else done += (size_t)rc;
    }
    theus_pool_result r;
    assert_int_equal(theus_pool_wait(f->pool, tk[got], -1, &r), 0);
    assert_int_equal(r.status, 0);
    int v;
    memcpy(&v, r.data, sizeof v);
    assert_int_equal(v, (int)got);
    theus_pool_result_release(&r);
    got++;
  }
  theus_pool_stats st;
  theus_pool_stats_get(f->pool, &st);
  assert_int_equal(st.completed, N);
  assert_true(st.workers[0].tasks > 0 && st.workers[1].tasks > 0);
}

/* progress_fn: items collected so far, growing, ending at count. */
typedef struct seen_progress {
  size_t calls, last, count;
  int monotonic;
} seen_progress;

static void on_map_progress(size_t done, size_t count, void *ud) {
  seen_progress *sp = ud;
  sp->monotonic &= done > sp->last && done <= count;
  sp->calls++;
  sp->last = done;
  sp->count = count;
}

/* A map hands each item only the bytes it wrote: to result_fn (no results
 * buffer, failed items skipped) or copied, leaving the rest of its stride. */
static void test_map_result_lengths(void **state) {
  fixture *f = *state;
  f->pool = start(f, 2);
  enum { N = 1000 };
  static int in[N], st[N];
  static unsigned char out[N][4];
  for (int i = 0; i < N; i++) in[i] = i;
  seen_results sr = {0};
  theus_map_desc m = {.fn = t_short, .args = in, .arg_size = sizeof(int), .count = N, .result_size = 4,
                      .status = st, .result_fn = on_map_result, .result_ud = &sr};
  size_t nfailed = 0;
  assert_int_equal(theus_pool_map(f->pool, &m, &nfailed), THEUS_EPROCESS);
  assert_int_equal(nfailed, 1);
  assert_int_equal(sr.calls, N - 1);
  assert_int_equal(sr.bad_order + sr.bad_len + sr.bad_bytes, 0);
  memset(out, 0xee, sizeof out);
  m.result_fn = NULL;
  m.results = out;
  assert_int_equal(theus_pool_map(f->pool, &m, &nfailed), THEUS_EPROCESS);
  for (int i = 0; i < N; i++)
    for (int k = 0; k < 4; k++) {
      unsigned char want = i != 3 && k < i % 5 ? (unsigned char)i : 0xee;
      if (out[i][k] != want) fail_msg("item %d byte %d: %#x, want %#x", i, k, out[i][k], want);
    }
  m.results = NULL; /* neither: refused */
  assert_int_equal(theus_pool_map(f->pool, &m, NULL), THEUS_EINVAL);
  assert_non_null(strstr(theus_pool_errmsg(f->pool), "result_fn"));
}

static void test_map(void **state) {
  fixture *f = *state;
  f->pool = start(f, 2);
  enum { N = 10000 };
  static int in[N], out[N], st[N];
  for (int i = 0; i < N; i++) in[i] = i;
  theus_map_desc m = {.fn = t_square, .args = in, .arg_size = sizeof(int), .count = N, .results = out,
                      .result_size = sizeof(int), .status = st};
  size_t nfailed = 0;
  int rc = theus_pool_map(f->pool, &m, &nfailed);
  assert_int_equal(rc, THEUS_EPROCESS);
  assert_non_null(strstr(theus_pool_errmsg(f->pool), "item 3 "));
  assert_non_null(strstr(theus_pool_errmsg(f->pool), "item value 3 refused"));
  size_t want = 0;
  for (int i = 0; i < N; i++) {
    if (i % 7 == 3) {
      want++;
      assert_int_equal(st[i], THEUS_EPROCESS);
    } else {
      assert_int_equal(st[i], 0);
      assert_int_equal(out[i], i * i);
    }
  }
  assert_int_equal(nfailed, want);
  /* explicit chunk sizes, including one that does not fit a slot */
  for (int i = 0; i < N; i++) in[i] = 7 * (i % 100); /* multiples of 7: all succeed */
  m.chunk = 1000;
  seen_progress sp = {.monotonic = 1};
  m.progress_fn = on_map_progress;
  m.progress_ud = &sp;
  assert_int_equal(theus_pool_map(f->pool, &m, &nfailed), 0);
  assert_int_equal(nfailed, 0);
  assert_int_equal(sp.calls, N / 1000); /* once per chunk */
  assert_true(sp.monotonic);
  assert_int_equal(sp.last, N);
  assert_int_equal(sp.count, N);
  m.progress_fn = NULL;
  assert_int_equal(out[N - 1], 49 * 99 * 99);
  m.chunk = 100000;
  assert_int_equal(theus_pool_map(f->pool, &m, NULL), THEUS_EINVAL);
}


/* ---- placement, blocking submit, map common bytes ------------------------- */

typedef struct place_arg {
  theus_pool *p;
  pthread_barrier_t *bar;
  theus_ticket tk;
  int rc;
} place_arg;

/* Submits one task when every thread is ready, then waits for the others to
 * have submitted too before the main thread collects anything: the
 * outstanding counts therefore only grow during a round. */
static void *place_one(void *v) {
  place_arg *a = v;
  int ms = 0;
  theus_task_desc d = {.fn = t_sleep_ms, .arg = &ms, .arg_len = sizeof ms};
  pthread_barrier_wait(a->bar);
  a->rc = theus_pool_submit(a->p, &d, &a->tk);
  pthread_barrier_wait(a->bar);
  return NULL;
}

/* 4 concurrent submitters on 2 idle workers: placement must put exactly two
 * tasks on each, every round (the old read-then-enqueue placement let racing
 * submitters pick the same idle worker). Asserts on the distribution only. */
static void test_placement_balances(void **state) {
  fixture *f = *state;
  f->pool = start(f, 2);
  enum { ROUNDS = 300, T = 4 };
  pthread_barrier_t bar;
  pthread_barrier_init(&bar, NULL, T);
  int bad = 0;
  for (int r = 0; r < ROUNDS; r++) {
    pthread_t th[T];
    place_arg a[T];
    for (int i = 0; i < T; i++) {
      a[i] = (place_arg){f->pool, &bar, 0, -1};
      assert_int_equal(pthread_create(&th[i], NULL, place_one, &a[i]), 0);
    }
    int per[2] = {0, 0};
    for (int i = 0; i < T; i++) {
      pthread_join(th[i], NULL);
      assert_int_equal(a[i].rc, 0);
      per[a[i].tk & 0xff]++; /* the ticket names the worker it was queued on */
    }
    for (int i = 0; i < T; i++) {
      theus_pool_result res;
      assert_int_equal(theus_pool_wait(f->pool, a[i].tk, -1, &res), 0);
      theus_pool_result_release(&res);
    }
    if (per[0] != 2) bad++;
  }
  pthread_barrier_destroy(&bar);
  assert_int_equal(bad, 0);
}

typedef struct collect_arg {
  theus_pool *p;
  theus_ticket *tk;
  int n, rc;
} collect_arg;

static void *collect_later(void *v) {
  collect_arg *c = v;
  usleep(20000);
  c->rc = 0;
  for (int i = 0; i < c->n; i++) {
    theus_pool_result res;
    int rc = theus_pool_wait(c->p, c->tk[i], -1, &res);
    if (rc < 0 && !c->rc) c->rc = rc;
    theus_pool_result_release(&res);
  }
  return NULL;
}

static void test_submit_wait(void **state) {
  fixture *f = *state;
  theus_pool_config cfg;
  theus_pool_config_init(&cfg);
  cfg.nworkers = 1;
  cfg.ring_capacity = 2;
  assert_int_equal(theus_pool_open(&cfg, &f->pool), 0);
  int ms = 1;
  theus_task_desc d = {.fn = t_sleep_ms, .arg = &ms, .arg_len = sizeof ms};
  theus_ticket tk[2], more;
  for (int i = 0; i < 2; i++) assert_int_equal(theus_pool_submit(f->pool, &d, &tk[i]), 0);
  assert_int_equal(theus_pool_submit(f->pool, &d, &more), THEUS_EAGAIN);
  /* nobody collects: the blocking variant gives up at its timeout */
  assert_int_equal(theus_pool_submit_wait(f->pool, &d, 30, &more), THEUS_ETIMEDOUT);
  /* another thread collects: the blocked submitter is woken and queues */
  collect_arg c = {f->pool, tk, 2, -1};
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, collect_later, &c), 0);
  assert_int_equal(theus_pool_submit_wait(f->pool, &d, -1, &more), 0);
  pthread_join(th, NULL);
  assert_int_equal(c.rc, 0);
  theus_pool_result res;
  assert_int_equal(theus_pool_wait(f->pool, more, -1, &res), 0);
  assert_int_equal(res.status, 0);
  theus_pool_result_release(&res);
}

static int t_common_add(theus_task *t) {
  size_t n;
  const int *base = theus_task_common(t, &n);
  int v;
  memcpy(&v, theus_task_arg(t, NULL), sizeof v);
  if (n != sizeof(int) || !base) return theus_task_fail(t, THEUS_EINVAL, "common bytes: %zu", n);
  v += *base + (int)(intptr_t)theus_task_context(t);
  return theus_task_write(t, &v, sizeof v);
}

static void test_map_common(void **state) {
  fixture *f = *state;
  theus_pool_config cfg;
  theus_pool_config_init(&cfg);
  cfg.nworkers = 2;
  cfg.task_context = (const void *)(intptr_t)1000;
  assert_int_equal(theus_pool_open(&cfg, &f->pool), 0);
  enum { N = 64 };
  int in[N], out[N], wk[N], base = 7;
  for (int i = 0; i < N; i++) in[i] = i, wk[i] = -5;
  for (size_t chunk = 0; chunk <= 1; chunk++) {
    theus_map_desc m = {.fn = t_common_add, .args = in, .arg_size = sizeof(int), .count = N, .results = out,
                        .result_size = sizeof(int), .chunk = chunk, .common = &base, .common_size = sizeof base,
                        .workers = wk};
    assert_int_equal(theus_pool_map(f->pool, &m, NULL), 0);
    for (int i = 0; i < N; i++) {
      assert_int_equal(out[i], i + 1007);
      assert_true(wk[i] == 0 || wk[i] == 1);
    }
  }
  /* common bytes that leave no room for one item */
  static char huge[THEUS_POOL_ARG_MAX];
  theus_map_desc m = {.fn = t_common_add, .args = in, .arg_size = sizeof(int), .count = N, .results = out,
                      .result_size = sizeof(int), .common = huge, .common_size = sizeof huge};
  assert_int_equal(theus_pool_map(f->pool, &m, NULL), THEUS_EINVAL);
}

static void test_two_pools(void **state) {
  fixture *f = *state;
  f->pool = start(f, 1);
  f->pool2 = start(f, 2);
  theus_task_desc d = {.fn = t_worker_pid};
  for (int i = 0; i < 50; i++) {
    theus_pool_result r1, r2;
    assert_int_equal(run1(f->pool, &d, &r1), 0);
    assert_int_equal(run1(f->pool2, &d, &r2), 0);
    int pid1, pid2;
    memcpy(&pid1, r1.data, sizeof pid1);
    memcpy(&pid2, r2.data, sizeof pid2);
    assert_int_equal(pid1, theus_pool_worker_pid(f->pool, 0));
    assert_true(pid2 == theus_pool_worker_pid(f->pool2, 0) || pid2 == theus_pool_worker_pid(f->pool2, 1));
    theus_pool_result_release(&r1);
    theus_pool_result_release(&r2);
  }
  {
    int stopped = theus_pool_close(f->pool, 0);
    f->pool = NULL; /* gone either way: teardown must not stop it again */
    assert_int_equal(stopped, 0);
  }
  theus_pool_result r;
  assert_int_equal(run1(f->pool2, &d, &r), 0);
  assert_int_equal(r.status, 0);
  theus_pool_result_release(&r);
}

/* Threads that hold locks while the pool forks: glibc's malloc locks in a
 * normal build. GCC 12's ASan allocator does not take its own locks around
 * fork() (a sanitizer limitation: a child forked while another thread is
 * inside ASan's malloc can deadlock in its next malloc), so the sanitizer
 * build holds plain pthread mutexes instead. */
typedef struct churn {
  _Atomic int stop; /* read by the churn threads while main sets it */
  pthread_t th[4];
  pthread_mutex_t mu[4];
} churn;

#if defined(__SANITIZE_ADDRESS__)
#define CHURN_MALLOC 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CHURN_MALLOC 0
#endif
#endif
#ifndef CHURN_MALLOC
#define CHURN_MALLOC 1
#endif

static void *churn_main(void *arg) {
  churn *c = arg;
  static _Atomic unsigned next;
  pthread_mutex_t *mu = &c->mu[next++ % 4];
  while (!c->stop) {
    if (CHURN_MALLOC) {
      void *v[16];
      for (int i = 0; i < 16; i++) v[i] = malloc((size_t)(i + 1) * 100);
      for (int i = 0; i < 16; i++) free(v[i]);
    } else {
      pthread_mutex_lock(mu);
      for (volatile int i = 0; i < 1000; i++) {
      }
      pthread_mutex_unlock(mu);
    }
  }
  return NULL;
}

static void test_threaded_parent(void **state) {
  fixture *f = *state;
  churn c = {0};
  for (int i = 0; i < 4; i++) pthread_mutex_init(&c.mu[i], NULL);
  for (int i = 0; i < 4; i++) assert_int_equal(pthread_create(&c.th[i], NULL, churn_main, &c), 0);
  for (int round = 0; round < 5; round++) {
    f->pool = start(f, 2);
    theus_task_desc d = {.fn = t_malloc};
    for (int i = 0; i < 20; i++) {
      theus_pool_result r;
      int rc = run1(f->pool, &d, &r);
      if (rc < 0 || r.status != 0) {
        c.stop = 1;
        for (int k = 0; k < 4; k++) pthread_join(c.th[k], NULL);
        fail_msg("task failed: %s", rc < 0 ? theus_pool_errmsg(f->pool) : r.errmsg);
      }
      assert_int_equal(((char *)r.data)[0], 'w');
      theus_pool_result_release(&r);
    }
    int stopped = theus_pool_close(f->pool, 0);
    f->pool = NULL; /* gone either way: teardown must not stop it again */
    assert_int_equal(stopped, 0);
  }
  c.stop = 1;
  for (int i = 0; i < 4; i++) pthread_join(c.th[i], NULL);
}

static void test_stop_modes(void **state) {
  fixture *f = *state;
  /* drain: every queued task runs before stop returns */
  f->pool = start(f, 2);
  int ms = 20;
  theus_task_desc d = {.fn = t_sleep_ms, .arg = &ms, .arg_len = sizeof ms};
  theus_ticket tk;
  for (int i = 0; i < 6; i++) assert_int_equal(theus_pool_submit(f->pool, &d, &tk), 0);
  theus_pool_stats st;
  {
    int stopped = theus_pool_close(f->pool, 0);
    f->pool = NULL; /* gone either way: teardown must not stop it again */
    assert_int_equal(stopped, 0);
  }
  /* cancel: a long task is cut short; the pool is gone when stop returns */
  f->pool = start(f, 1);
  ms = 60000;
  for (int i = 0; i < 3; i++) assert_int_equal(theus_pool_submit(f->pool, &d, &tk), 0);
  int wpid = theus_pool_worker_pid(f->pool, 0), spid = theus_pool_forksrv_pid(f->pool);
  assert_true(wpid > 0 && spid > 0);
  theus_pool_stats_get(f->pool, &st);
  assert_int_equal(st.submitted, 3);
  {
    int stopped = theus_pool_close(f->pool, 1);
    f->pool = NULL; /* gone either way: teardown must not stop it again */
    assert_int_equal(stopped, 0);
  }
  assert_int_equal(kill(spid, 0), -1); /* reaped: gone */
}

static void test_config_errors(void **state) {
  (void)state;
  theus_pool_config cfg;
  theus_pool_config_init(&cfg);
  assert_true(cfg.nworkers >= 1);
  cfg.ring_capacity = 3;
  theus_pool *p = NULL;
  assert_int_equal(theus_pool_open(&cfg, &p), THEUS_EINVAL);
  assert_non_null(strstr(theus_pool_errmsg(p), "power of two"));
  assert_int_equal(theus_pool_close(p, 1), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_echo_roundtrip, setup, teardown),
      cmocka_unit_test_setup_teardown(test_arena_input, setup, teardown),
      cmocka_unit_test_setup_teardown(test_errors_and_limits, setup, teardown),
      cmocka_unit_test_setup_teardown(test_batch, setup, teardown),
      cmocka_unit_test_setup_teardown(test_map, setup, teardown),
      cmocka_unit_test_setup_teardown(test_map_result_lengths, setup, teardown),
      cmocka_unit_test_setup_teardown(test_placement_balances, setup, teardown),
      cmocka_unit_test_setup_teardown(test_submit_wait, setup, teardown),
      cmocka_unit_test_setup_teardown(test_map_common, setup, teardown),
      cmocka_unit_test_setup_teardown(test_two_pools, setup, teardown),
      cmocka_unit_test_setup_teardown(test_threaded_parent, setup, teardown),
      cmocka_unit_test_setup_teardown(test_stop_modes, setup, teardown),
      cmocka_unit_test_setup_teardown(test_config_errors, setup, teardown),
  };
  return cmocka_run_group_tests_name("workers/pool", tests, NULL, NULL);
}
