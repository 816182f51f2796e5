/* theus-bench engine: committed engine steps (local and through a worker),
 * uncontended CAS rate, the speed-up of a CPU-bound map on 2 workers, the
 * rate of empty parallel jobs from 4 submitting threads, and how often 4
 * concurrent 20 ms jobs on 2 workers take longer than two rounds should. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "bench.h"
#include "theus/engine.h"

static const char *const counter_io[] = {"domain.counter", NULL};
static const char *const frame_in[] = {"heavy.frame", NULL};

static int inc(theus_ctx *ctx) {
  const json_t *v = theus_ctx_get(ctx, "domain.counter");
  return theus_ctx_set(ctx, "domain.counter", json_integer(json_integer_value(v) + 1));
}

static int empty(theus_ctx *ctx) {
  (void)ctx;
  return 0;
}

static int sleep_20ms(theus_ctx *ctx) {
  (void)ctx;
  struct timespec ts = {0, 20000000};
  nanosleep(&ts, NULL);
  return 0;
}

static theus_engine *open_engine(int workers) {
  theus_engine_config cfg;
  theus_engine_config_init(&cfg);
  cfg.workers = workers;
  json_t *d = json_pack("{s:i}", "counter", 0);
  cfg.domain = d;
  theus_engine *e = NULL;
  int rc = theus_engine_open(&cfg, &e);
  json_decref(d);
  if (rc) {
    fprintf(stderr, "bench engine: %s\n", theus_engine_errmsg(e));
    theus_engine_close(e);
    return NULL;
  }
  theus_contract cs[] = {
      {.name = "local", .fn = inc, .inputs = counter_io, .outputs = counter_io, .semantic = THEUS_EFFECT},
      {.name = "parallel", .fn = inc, .inputs = counter_io, .outputs = counter_io, .parallel = 1},
      {.name = "burn", .fn = bench_burn_1ms, .inputs = frame_in, .parallel = 1},
      {.name = "empty", .fn = empty, .parallel = 1},
      {.name = "sleep20", .fn = sleep_20ms, .parallel = 1},
  };
  for (size_t i = 0; i < sizeof cs / sizeof cs[0]; i++)
    theus_engine_register(e, &cs[i]);
  uint64_t shape[1] = {4096};
  void *data;
  json_t *hp = json_pack("{s:b}", "frame", 1);
  if (theus_engine_heavy_alloc(e, "frame", THEUS_DTYPE_U8, 1, shape, &data) ||
      theus_engine_cas(e, theus_engine_version(e), NULL, hp, NULL)) {
    fprintf(stderr, "bench engine: %s\n", theus_engine_errmsg(e));
    theus_engine_close(e);
    e = NULL;
  }
  json_decref(hp);
  return e;
}

/* Median per-step microseconds over rounds of n executions. */
static double step_us(theus_engine *e, const char *name, int rounds, int n) {
  double *v = calloc((size_t)rounds, sizeof *v);
  for (int r = 0; r < rounds; r++) {
    uint64_t t0 = bench_now_ns();
    for (int i = 0; i < n; i++)
      if (theus_engine_execute(e, name, NULL, NULL)) {
        fprintf(stderr, "bench engine: %s\n", theus_engine_errmsg(e));
        break;
      }
    v[r] = (double)(bench_now_ns() - t0) / 1e3 / n;
  }
  double m = bench_median(v, (size_t)rounds);
  free(v);
  return m;
}

static double cas_rate(theus_engine *e, int n) {
  json_t *patch = json_object();
  uint64_t t0 = bench_now_ns();
  for (int i = 0; i < n; i++) {
    json_object_set_new(patch, "x", json_integer(i));
    theus_engine_cas(e, theus_engine_version(e), patch, NULL, NULL);
  }
  double s = (double)(bench_now_ns() - t0) / 1e9;
  json_decref(patch);
  return n / s;
}

/* Median wall time (ms) of a map of `slices` 1-ms slices. */
static double map_ms(theus_engine *e, uint32_t slices, int rounds) {
  double v[8];
  for (int r = 0; r < rounds; r++) {
    json_t *res = NULL;
    uint64_t t0 = bench_now_ns();
    if (theus_engine_map(e, "burn", "frame", slices, "sum", NULL, &res))
      fprintf(stderr, "bench engine: %s\n", theus_engine_errmsg(e));
    v[r] = (double)(bench_now_ns() - t0) / 1e6;
    json_decref(res);
  }
  return bench_median(v, (size_t)rounds);
}

typedef struct jobs_arg {
  theus_engine *e;
  const char *name;
  int n;
  pthread_barrier_t *bar;
  int failed;
} jobs_arg;

/* n jobs of `name` back to back: submit, wait, free. */
static void *jobs_loop(void *v) {
  jobs_arg *a = v;
  pthread_barrier_wait(a->bar);
  for (int i = 0; i < a->n; i++) {
    theus_job *j = NULL;
    if (theus_engine_submit(a->e, a->name, NULL, &j) || theus_job_wait(j, -1, NULL))
      a->failed++;
    theus_job_release(j);
  }
  return NULL;
}

/* Wall time (ns) of T threads each running n jobs of `name` at once. */
static uint64_t jobs_run(theus_engine *e, const char *name, int T, int n, int *failed) {
  pthread_t th[8];
  jobs_arg a[8];
  pthread_barrier_t bar;
  pthread_barrier_init(&bar, NULL, (unsigned)T + 1);
  for (int i = 0; i < T; i++) {
    a[i] = (jobs_arg){e, name, n, &bar, 0};
    pthread_create(&th[i], NULL, jobs_loop, &a[i]);
  }
  pthread_barrier_wait(&bar);
  uint64_t t0 = bench_now_ns();
  for (int i = 0; i < T; i++) {
    pthread_join(th[i], NULL);
    *failed += a[i].failed;
  }
  uint64_t dt = bench_now_ns() - t0;
  pthread_barrier_destroy(&bar);
  return dt;
}

/* 4 threads submitting empty parallel jobs as fast as they can. */
static double jobs_per_s(theus_engine *e, int n) {
  int failed = 0;
  jobs_run(e, "empty", 4, n / 10, &failed); /* warm-up */
  uint64_t dt = jobs_run(e, "empty", 4, n, &failed);
  if (failed)
    fprintf(stderr, "bench engine: %d jobs failed: %s\n", failed, theus_engine_errmsg(e));
  return 4.0 * n / ((double)dt / 1e9);
}

/* Jobs per worker in the current round, from the trace (to tell a placement
 * imbalance from a round slowed by a busy machine). */
static _Atomic int per_worker[2];

static void count_worker(const theus_trace_event *ev, void *ud) {
  (void)ud;
  if (ev->worker == 0 || ev->worker == 1)
    atomic_fetch_add(&per_worker[ev->worker], 1);
}

/* Rounds of 4 concurrent 20 ms jobs on 2 workers whose makespan exceeds 1.2x
 * the ideal 40 ms (two jobs per worker). */
static int imbalance_rounds(theus_engine *e, int rounds) {
  int bad = 0, failed = 0, uneven = 0;
  double worst = 0;
  theus_engine_set_trace(e, count_worker, NULL);
  for (int r = 0; r < rounds; r++) {
    atomic_store(&per_worker[0], 0);
    atomic_store(&per_worker[1], 0);
    double ms = (double)jobs_run(e, "sleep20", 4, 1, &failed) / 1e6;
    uneven += atomic_load(&per_worker[0]) != 2;
    if (ms > 1.2 * 40.0)
      bad++;
    if (ms > worst)
      worst = ms;
  }
  theus_engine_set_trace(e, NULL, NULL);
  fprintf(stderr, "placement: %d of %d rounds above 48 ms (worst %.1f ms), %d rounds not 2+2 jobs per worker, %d "
          "jobs failed\n", bad, rounds, worst, uneven, failed);
  return bad;
}

int theus_bench_engine(int argc, char **argv) {
  (void)argc;
  (void)argv;
  theus_engine *e2 = open_engine(2), *e1 = open_engine(1);
  if (!e1 || !e2) {
    fprintf(stderr, "bench engine: cannot open engines\n");
    theus_engine_close(e1);
    theus_engine_close(e2);
    return 1;
  }
  step_us(e2, "local", 3, 2000); /* warm-up */
  bench_report("engine_step_local_us", step_us(e2, "local", 15, 5000), "us");
  step_us(e2, "parallel", 3, 500);
  bench_report("engine_step_parallel_us", step_us(e2, "parallel", 15, 1000), "us");
  bench_report("cas_per_s", cas_rate(e2, 200000), "ops/s");
  bench_report("engine_submit_jobs_per_s", jobs_per_s(e2, 50000), "jobs/s");
  bench_report("placement_imbalance_rounds", imbalance_rounds(e2, 100), "rounds");
  map_ms(e1, 20, 1);
  map_ms(e2, 20, 1);
  double t1 = map_ms(e1, 200, 3), t2 = map_ms(e2, 200, 3);
  fprintf(stderr, "map of 200 x 1 ms slices: 1 worker %.1f ms, 2 workers %.1f ms\n", t1, t2);
  bench_report("map_speedup_2w", t1 / t2, "x");
  theus_engine_close(e1);
  theus_engine_close(e2);
  return 0;
}
