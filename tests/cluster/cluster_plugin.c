/* Plugin for the cluster tests: a map process that sums f64 rows, and can
 * crash its worker or sleep (while the test kills its rank) on one chosen
 * slice, or hold slice 0 until every other slice ran (uneven slices). */
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

THEUS_PLUGIN_EXPORT int theus_plugin_register(theus_engine *e) {
  static const char *const in[] = {"heavy.data", NULL};
  static const char *const none[] = {NULL};
  theus_contract c = {.name = "rows_sum", .fn = rows_sum, .inputs = in, .outputs = none, .parallel = 1,
                      .semantic = THEUS_PURE, .sandbox = THEUS_SANDBOX_OFF};
  return theus_engine_register(e, &c);
}
