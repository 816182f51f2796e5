/* theus-bench kmeans [N]: the k-means example pipeline (examples/kmeans) on
 * N points (default 4194304) x 8 dims, K = 16, 10 iterations, run by
 * theus_pipeline_run with 1 and with 2 workers, against a plain
 * single-threaded C loop of the same algorithm on the same points. The
 * final centroids must agree; only the steps are timed (not the fill). */
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench.h"
#include "theus/theus.h"

enum { D = 8, K = 16, ITERS = 10 };

typedef struct km_run {
  double seconds;
  double centroids[K * D];
  float *points; /* copy of heavy.points (first run only) */
  uint64_t n;
} km_run;

static int write_pipeline(char *path, const char *plugin, uint64_t n) {
  int fd = mkstemps(path, 5);
  FILE *f = fd < 0 ? NULL : fdopen(fd, "w");
  if (!f) return -1;
  fprintf(f, "{\"plugins\": [\"%s\"], \"budget\": 100000,\n"
             " \"domain\": {\"k\": %d, \"tol\": 0, \"max_iter\": %d, \"iter\": 0, \"shift\": 1},\n"
             " \"heavy\": {\"points\": {\"dtype\": \"f32\", \"shape\": [%llu, %d],\n"
             "   \"fill\": {\"random\": {\"seed\": 42, \"min\": 0, \"max\": 1}}}},\n"
             " \"steps\": [{\"run\": \"kmeans_init\"},\n"
             "   {\"while\": \"domain.iter < domain.max_iter and domain.shift > domain.tol\", \"do\": [\n"
             "     {\"map\": \"kmeans_assign\", \"over\": \"heavy.points\", \"reduce\": \"sum\", \"into\": \"domain.acc\"},\n"
             "     {\"run\": \"kmeans_update\"}, {\"set\": \"domain.iter\", \"expr\": \"domain.iter + 1\"}]}]}\n",
          plugin, K, ITERS, (unsigned long long)n, D);
  return fclose(f);
}

static int read_result(theus_engine *e, km_run *r, int copy_points) {
  theus_snapshot *s;
  if (theus_engine_snapshot(e, &s)) return -1;
  const json_t *c = theus_snapshot_get(s, "domain.centroids");
  for (size_t i = 0; i < K * D; i++) r->centroids[i] = json_number_value(json_array_get(json_array_get(c, i / D), i % D));
  theus_array_info a;
  int rc = theus_snapshot_heavy(s, "points", &a);
  if (!rc && copy_points && (r->points = malloc(a.nbytes))) {
    memcpy(r->points, a.data, a.nbytes);
    r->n = a.shape[0];
  }
  theus_snapshot_release(s);
  return rc;
}

static int run_pipeline(const char *path, int workers, km_run *r, int copy_points) {
  theus_pipeline *p = NULL;
  theus_engine *e = NULL;
  theus_arena_config ac;
  theus_arena_config_init(&ac);
  ac.hard_limit = 4ull << 30;
  ac.single_limit = 2ull << 30;
  theus_engine_config cfg;
  theus_engine_config_init(&cfg);
  cfg.workers = workers;
  cfg.arena = &ac;
  int rc = theus_pipeline_load(path, &p);
  if (rc) {
    fprintf(stderr, "bench kmeans: %s\n", p ? theus_pipeline_errmsg(p) : theus_strerror(rc));
    theus_pipeline_close(p);
    return -1;
  }
  if (!(rc = theus_pipeline_open_engine(p, &cfg, &e))) {
    uint64_t t0 = bench_now_ns();
    rc = theus_pipeline_run(p, e);
    r->seconds = (double)(bench_now_ns() - t0) / 1e9;
  }
  if (rc) fprintf(stderr, "bench kmeans: %s\n", theus_pipeline_errmsg(p));
  if (!rc) rc = read_result(e, r, copy_points);
  theus_engine_close(e);
  theus_pipeline_close(p);
  return rc;
}

/* The same algorithm as examples/kmeans, in one plain loop. */
static double c_loop(const float *x, uint64_t n, double *c) {
  uint64_t t0 = bench_now_ns();
  for (int k = 0; k < K; k++)
    for (int j = 0; j < D; j++) c[k * D + j] = x[(n / K * (uint64_t)k) * D + (uint64_t)j];
  for (int it = 0; it < ITERS; it++) {
    double sums[K * D] = {0};
    uint64_t counts[K] = {0};
    for (uint64_t r = 0; r < n; r++) {
      const float *p = x + r * D;
      int best = 0;
      double bd = INFINITY;
      for (int k = 0; k < K; k++) {
        double s = 0;
        for (int j = 0; j < D; j++) {
          double t = (double)p[j] - c[k * D + j];
          s += t * t;
        }
        if (s < bd) bd = s, best = k;
      }
      counts[best]++;
      for (int j = 0; j < D; j++) sums[best * D + j] += p[j];
    }
    for (int k = 0; k < K; k++)
      for (int j = 0; counts[k] && j < D; j++) c[k * D + j] = sums[k * D + j] / (double)counts[k];
  }
  return (double)(bench_now_ns() - t0) / 1e9;
}

static double max_diff(const double *a, const double *b) {
  double m = 0;
  for (size_t i = 0; i < K * D; i++) m = fabs(a[i] - b[i]) > m ? fabs(a[i] - b[i]) : m;
  return m;
}

int theus_bench_kmeans(int argc, char **argv) {
  uint64_t n = argc > 1 ? strtoull(argv[1], NULL, 10) : 4194304u;
  char exe[PATH_MAX], plugin[PATH_MAX + 64], path[] = "/tmp/theus-kmeans-XXXXXX.json";
  ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (len <= 0) return 1;
  exe[len] = '\0';
  *strrchr(exe, '/') = '\0';
  snprintf(plugin, sizeof plugin, "%s/../examples/kmeans/kmeans_plugin.so", exe);
  if (write_pipeline(path, plugin, n)) return 1;
  km_run w1 = {0}, w2 = {0};
  double c[K * D];
  int rc = run_pipeline(path, 1, &w1, 1) || run_pipeline(path, 2, &w2, 0);
  unlink(path);
  if (rc || !w1.points) return 1;
  double tc = c_loop(w1.points, w1.n, c);
  free(w1.points);
  double d1 = max_diff(c, w1.centroids), d2 = max_diff(c, w2.centroids);
  fprintf(stderr, "kmeans %llu x %d, K %d, %d iterations: C loop %.3f s, 1 worker %.3f s, 2 workers %.3f s; "
          "centroid difference %.2g / %.2g\n", (unsigned long long)n, D, K, ITERS, tc, w1.seconds, w2.seconds, d1, d2);
  if (d1 > 1e-6 || d2 > 1e-6) {
    fprintf(stderr, "bench kmeans: the pipeline's centroids differ from the C loop's\n");
    return 1;
  }
  bench_report("kmeans_c_loop_s", tc, "s");
  bench_report("kmeans_1w_s", w1.seconds, "s");
  bench_report("kmeans_2w_s", w2.seconds, "s");
  bench_report("kmeans_vs_c_loop", w1.seconds / tc, "x");
  bench_report("kmeans_speedup_2w", w1.seconds / w2.seconds, "x");
  return 0;
}
