/* theus-bench survive: a memoised hit versus the same pure process run
 * locally and committed (memo_hit_us, memo_hit_ratio), committed steps per
 * second with the ledger on (no fsync) versus off (ledger_overhead), and the
 * time from a worker's death to its task running again on a fresh worker
 * (retry_recovery_ms). */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench.h"
#include "theus/engine.h"

static const char *const x_in[] = {"domain.x", NULL};
static const char *const y_out[] = {"domain.y", NULL};
static const char *const counter_io[] = {"domain.counter", NULL};

/* y = 2x + 1 */
static int affine(theus_ctx *ctx) {
  json_int_t x = json_integer_value(theus_ctx_get(ctx, "domain.x"));
  return theus_ctx_set(ctx, "domain.y", json_integer(2 * x + 1));
}

static int inc(theus_ctx *ctx) {
  const json_t *v = theus_ctx_get(ctx, "domain.counter");
  return theus_ctx_set(ctx, "domain.counter", json_integer(json_integer_value(v) + 1));
}

/* Where the first attempt writes the time it dies (set before the engine
 * opens, so the workers have it; the task is unsandboxed to write it). */
static char stamp_path[64];

/* Dies by SIGKILL on its first run, stamping the time in stamp_path; the
 * retry returns how many ns passed since (CLOCK_MONOTONIC is system-wide). */
static int die_first(theus_ctx *ctx) {
  if (theus_ctx_attempt(ctx) == 0) {
    FILE *f = fopen(stamp_path, "w");
    if (f) {
      fprintf(f, "%llu\n", (unsigned long long)bench_now_ns());
      fclose(f);
    }
    raise(SIGKILL);
  }
  uint64_t now = bench_now_ns();
  unsigned long long died = 0;
  FILE *f = fopen(stamp_path, "r");
  if (!f || fscanf(f, "%llu", &died) != 1 || !died)
    return theus_ctx_fail(ctx, "no death stamp");
  fclose(f);
  theus_ctx_return(ctx, json_integer((json_int_t)(now - died)));
  return theus_ctx_set(ctx, "domain.y", json_integer(1));
}

static theus_engine *open_engine(int workers, const char *ledger) {
  theus_engine_config cfg;
  theus_engine_config_init(&cfg);
  cfg.workers = workers;
  cfg.ledger = ledger;
  json_t *d = json_pack("{s:i, s:i}", "x", 3, "counter", 0);
  cfg.domain = d;
  theus_engine *e = NULL;
  int rc = theus_engine_open(&cfg, &e);
  json_decref(d);
  theus_contract cs[] = {
      {.name = "affine_memo", .fn = affine, .inputs = x_in, .outputs = y_out, .memo = 1},
      {.name = "affine", .fn = affine, .inputs = x_in, .outputs = y_out, .memo = -1},
      {.name = "inc", .fn = inc, .inputs = counter_io, .outputs = counter_io},
      {.name = "die_first", .fn = die_first, .outputs = y_out, .parallel = 1, .retries = 1,
       .sandbox = THEUS_SANDBOX_OFF},
  };
  for (size_t i = 0; !rc && i < sizeof cs / sizeof cs[0]; i++)
    rc = theus_engine_register(e, &cs[i]);
  if (rc) {
    fprintf(stderr, "bench survive: %s\n", theus_engine_errmsg(e));
    theus_engine_close(e);
    return NULL;
  }
  return e;
}

/* Median µs per execute of name over rounds of n. */
static double step_us(theus_engine *e, const char *name, int n) {
  double r[9];
  for (int k = 0; k < 9; k++) {
    uint64_t t0 = bench_now_ns();
    for (int i = 0; i < n; i++)
      if (theus_engine_execute(e, name, NULL, NULL)) {
        fprintf(stderr, "bench survive: %s\n", theus_engine_errmsg(e));
        return -1;
      }
    r[k] = (double)(bench_now_ns() - t0) / 1e3 / n;
  }
  return bench_median(r, 9);
}

static int bench_memo(void) {
  theus_engine *e = open_engine(-1, NULL);
  if (!e)
    return 1;
  theus_engine_execute(e, "affine_memo", NULL, NULL); /* the miss that fills the cache */
  double local = step_us(e, "affine", 2000), hit = step_us(e, "affine_memo", 2000);
  theus_engine_close(e);
  bench_report("local_step_us", local, "us");
  bench_report("memo_hit_us", hit, "us");
  bench_report("memo_hit_ratio", hit / local, "x");
  return 0;
}

static int bench_ledger(void) {
  char path[] = "/tmp/theus-bench-ledger-XXXXXX";
  int fd = mkstemp(path);
  if (fd < 0)
    return 1;
  close(fd);
  double off[5], on[5];
  for (int k = 0; k < 5; k++) { /* interleaved rounds: machine noise hits both */
    for (int led = 0; led < 2; led++) {
      theus_engine *e = open_engine(-1, led ? path : NULL);
      if (!e)
        return 1;
      int n = 20000;
      uint64_t t0 = bench_now_ns();
      for (int i = 0; i < n; i++)
        theus_engine_execute(e, "inc", NULL, NULL);
      theus_engine_close(e); /* the ledger's last lines are written here: counted */
      (led ? on : off)[k] = n / ((double)(bench_now_ns() - t0) / 1e9);
    }
  }
  unlink(path);
  double a = bench_median(off, 5), b = bench_median(on, 5);
  bench_report("steps_per_s_ledger_off", a, "/s");
  bench_report("steps_per_s_ledger_on", b, "/s");
  bench_report("ledger_overhead", b / a, "x");
  return 0;
}

static int bench_retry(void) {
  snprintf(stamp_path, sizeof stamp_path, "/tmp/theus-bench-stamp-%d", (int)getpid());
  theus_engine *e = open_engine(2, NULL);
  if (!e)
    return 1;
  double r[21];
  int n = 0;
  for (int k = 0; k < 21; k++) {
    json_t *res = NULL;
    if (theus_engine_execute(e, "die_first", NULL, &res)) {
      fprintf(stderr, "bench survive: %s\n", theus_engine_errmsg(e));
      continue;
    }
    r[n++] = (double)json_integer_value(res) / 1e6;
    json_decref(res);
  }
  theus_engine_close(e);
  unlink(stamp_path);
  if (!n)
    return 1;
  bench_report("retry_recovery_ms", bench_median(r, (size_t)n), "ms");
  return 0;
}

/* theus-bench survive [memo|ledger|retry]: all three parts, or the one
 * named (to profile it alone). */
int theus_bench_survive(int argc, char **argv) {
  const char *only = argc > 1 ? argv[1] : "";
  int all = !*only, rc = 0;
  if (all || !strcmp(only, "memo"))
    rc |= bench_memo();
  if (all || !strcmp(only, "ledger"))
    rc |= bench_ledger();
  if (all || !strcmp(only, "retry"))
    rc |= bench_retry();
  return rc;
}
