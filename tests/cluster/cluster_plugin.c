/* Plugin for the cluster tests: a map process that sums f64 rows, and can
 * crash its worker or sleep (while the test kills its rank) on one chosen
 * slice. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include <theus/engine.h>
#include <theus/pipeline.h>

/* Sum of the rows of heavy.data this slice covers. args: "crash_slice" k
 * (the worker running slice k dies of SIGSEGV), "sleep_slice" k with
 * "sleep_ms" (slice k creates $THEUS_CLUSTER_TEST_MARK/slice-k, then sleeps:
 * the test kills a rank meanwhile). */
static int rows_sum(theus_ctx *ctx) {
  theus_array_info a;
  int rc = theus_ctx_heavy(ctx, "data", &a);
  if (rc) return rc;
  uint64_t lo, hi;
  uint32_t i, n;
  if ((rc = theus_ctx_slice(ctx, &lo, &hi, &i, &n))) return rc;
  const json_t *args = theus_ctx_args(ctx);
  const json_t *crash = json_object_get(args, "crash_slice"), *sleep_at = json_object_get(args, "sleep_slice");
  if (crash && json_integer_value(crash) == (json_int_t)i) raise(SIGSEGV);
  if (sleep_at && json_integer_value(sleep_at) == (json_int_t)i) {
    const char *dir = getenv("THEUS_CLUSTER_TEST_MARK");
    char path[4096];
    snprintf(path, sizeof path, "%s/slice-%u", dir ? dir : ".", i);
    FILE *f = dir ? fopen(path, "w") : NULL;
    if (f) fclose(f);
    json_int_t ms = json_integer_value(json_object_get(args, "sleep_ms"));
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
  }
  const double *x = a.data;
  double s = 0;
  for (uint64_t r = lo; r < hi; r++) s += x[r];
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
