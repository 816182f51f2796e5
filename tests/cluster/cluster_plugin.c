/* Plugin for the cluster tests: a map process that sums f64 rows, and can
 * crash its worker or sleep (while the test kills its rank) on one chosen
 * slice, or hold slice 0 until every other slice ran (uneven slices); and
 * processes for parallel steps placed on ranks, which leave a mark naming
 * the rank that ran them. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include <theus/engine.h>
#include <theus/pipeline.h>

#define WAIT_MS 60000

/* $THEUS_CLUSTER_TEST_MARK/<what>-<i>, or NULL when the variable is unset. */
static const char *mark_path(char *buf, size_t len, const char *what, uint32_t i) {
  const char *dir = getenv("THEUS_CLUSTER_TEST_MARK");
  if (!dir) return NULL;
  snprintf(buf, len, "%s/%s-%u", dir, what, i);
  return buf;
}

static void mark(const char *what, uint32_t i) {
  char path[4096];
  FILE *f = mark_path(path, sizeof path, what, i) ? fopen(path, "w") : NULL;
  if (f) fclose(f);
}

/* Slice 0 of n holds until slices 1..n-1 left their marks: whoever claimed
 * it runs nothing else meanwhile, so with dynamic claims the other ranks
 * run every other slice; with static blocks its own block never runs and
 * it fails after WAIT_MS. */
static int wait_others(theus_ctx *ctx, const char *what, uint32_t n) {
  char path[4096];
  for (int waited = 0; waited < WAIT_MS; waited += 5) {
    uint32_t seen = 0;
    for (uint32_t i = 1; i < n; i++) seen += mark_path(path, sizeof path, what, i) && access(path, F_OK) == 0;
    if (seen == n - 1) return 0;
    struct timespec ts = {0, 5000000L};
    nanosleep(&ts, NULL);
  }
  return theus_ctx_fail(ctx, "slice 0 waited %d ms for the %u other slices: none may run behind it", WAIT_MS, n - 1);
}

/* Sum of the rows of heavy.data this slice covers. args: "crash_slice" k
 * (the worker running slice k dies of SIGSEGV), "sleep_slice" k with
 * "sleep_ms" (slice k creates $THEUS_CLUSTER_TEST_MARK/slice-k, then sleeps:
 * the test kills a rank meanwhile), "hold" NAME (slice 0 waits until every
 * other slice created $THEUS_CLUSTER_TEST_MARK/NAME-i; nothing without the
 * variable: one pool's workers each take their own share of the slices, so
 * slice 0 would wait for slices queued behind it). */
static int rows_sum(theus_ctx *ctx) {
  theus_array_info a;
  int rc = theus_ctx_heavy(ctx, "data", &a);
  if (rc) return rc;
  uint64_t lo, hi;
  uint32_t i, n;
  if ((rc = theus_ctx_slice(ctx, &lo, &hi, &i, &n))) return rc;
  const json_t *args = theus_ctx_args(ctx);
  const json_t *crash = json_object_get(args, "crash_slice"), *sleep_at = json_object_get(args, "sleep_slice");
  const char *hold = json_string_value(json_object_get(args, "hold"));
  if (crash && json_integer_value(crash) == (json_int_t)i) raise(SIGSEGV);
  if (sleep_at && json_integer_value(sleep_at) == (json_int_t)i) {
    mark("slice", i);
    json_int_t ms = json_integer_value(json_object_get(args, "sleep_ms"));
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
  }
  if (hold && !getenv("THEUS_CLUSTER_TEST_MARK")) hold = NULL; /* the run without MPI to compare with */
  if (hold && i == 0 && (rc = wait_others(ctx, hold, n))) return rc;
  const double *x = a.data;
  double s = 0;
  for (uint64_t r = lo; r < hi; r++) s += x[r];
  if (hold) mark(hold, i);
  theus_ctx_return(ctx, json_real(s));
  return 0;
}

/* Leaves $THEUS_CLUSTER_TEST_MARK/<rank>-<process>-<key>: the MPI rank
 * whose worker ran it ("-" outside mpirun). */
static void mark_rank(theus_ctx *ctx, const char *key) {
  const char *rank = getenv("OMPI_COMM_WORLD_RANK");
  char what[256];
  snprintf(what, sizeof what, "%s-%s-%s", rank ? rank : "-", theus_ctx_process(ctx), key);
  mark(what, 0);
}

/* domain.out.<key> = v * v + domain.base + the sum of heavy.data; returns
 * v * v. args: "key", "v". */
static int put_sq(theus_ctx *ctx) {
  const json_t *args = theus_ctx_args(ctx);
  const char *key = json_string_value(json_object_get(args, "key"));
  json_int_t v = json_integer_value(json_object_get(args, "v"));
  theus_array_info a;
  int rc = key ? theus_ctx_heavy(ctx, "data", &a) : theus_ctx_fail(ctx, "put_sq: args.key is missing");
  if (rc) return rc;
  double s = json_number_value(theus_ctx_get(ctx, "domain.base"));
  for (uint64_t r = 0; r < a.shape[0]; r++) s += ((const double *)a.data)[r];
  char path[300];
  snprintf(path, sizeof path, "domain.out.%s", key);
  if ((rc = theus_ctx_set(ctx, path, json_real((double)(v * v) + s)))) return rc;
  mark_rank(ctx, key);
  theus_ctx_return(ctx, json_integer(v * v));
  return 0;
}

/* domain.count += args.by; returns the new count. */
static int bump(theus_ctx *ctx) {
  json_int_t n = json_integer_value(theus_ctx_get(ctx, "domain.count")) +
                 json_integer_value(json_object_get(theus_ctx_args(ctx), "by"));
  int rc = theus_ctx_set(ctx, "domain.count", json_integer(n));
  if (rc) return rc;
  theus_ctx_return(ctx, json_integer(n));
  return 0;
}

/* Fails when args.fail is true. */
static int fail_if(theus_ctx *ctx) {
  if (json_is_true(json_object_get(theus_ctx_args(ctx), "fail"))) return theus_ctx_fail(ctx, "fail_if: asked to fail");
  return theus_ctx_set(ctx, "domain.fine", json_true());
}

/* An effect (local) process: domain.note = args.text. */
static int note(theus_ctx *ctx) {
  mark_rank(ctx, "note");
  return theus_ctx_set(ctx, "domain.note", json_incref(json_object_get(theus_ctx_args(ctx), "text")));
}

THEUS_PLUGIN_EXPORT int theus_plugin_register(theus_engine *e) {
  static const char *const in[] = {"heavy.data", NULL}, *const none[] = {NULL};
  static const char *const sq_in[] = {"domain.base", "heavy.data", NULL}, *const sq_out[] = {"domain.out", NULL};
  static const char *const count[] = {"domain.count", NULL}, *const fine[] = {"domain.fine", NULL};
  static const char *const note_out[] = {"domain.note", NULL};
  const theus_contract cs[] = {
      {.name = "rows_sum", .fn = rows_sum, .inputs = in, .outputs = none, .parallel = 1, .sandbox = THEUS_SANDBOX_OFF},
      {.name = "put_sq", .fn = put_sq, .inputs = sq_in, .outputs = sq_out, .parallel = 1, .sandbox = THEUS_SANDBOX_OFF},
      {.name = "bump", .fn = bump, .inputs = count, .outputs = count, .parallel = 1},
      {.name = "fail_if", .fn = fail_if, .inputs = none, .outputs = fine, .parallel = 1},
      {.name = "note", .fn = note, .inputs = none, .outputs = note_out, .semantic = THEUS_EFFECT},
  };
  for (size_t i = 0; i < sizeof cs / sizeof cs[0]; i++) {
    int rc = theus_engine_register(e, &cs[i]);
    if (rc) return rc;
  }
  return 0;
}
