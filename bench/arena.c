/* theus-bench arena: arena write/free against glibc malloc, large allocs,
 * and reset cost as a function of the number of live handles. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "theus/heavy.h"

#define REPS 7

static theus_arena *open_arena(void) {
  theus_arena *a;
  if (theus_arena_open(NULL, &a) != 0) {
    fprintf(stderr, "theus-bench arena: cannot open an arena: %s\n", theus_arena_errmsg(a));
    theus_arena_close(a);
    return NULL;
  }
  return a;
}

/* ns per write+free of 64 B, median of REPS runs of `iters`. */
static double arena_small(theus_arena *a, size_t iters) {
  char src[64];
  memset(src, 7, sizeof src);
  double s[REPS];
  for (int r = 0; r < REPS; r++) {
    uint64_t t0 = bench_now_ns();
    for (size_t i = 0; i < iters; i++) {
      theus_handle h;
      theus_arena_write(a, src, sizeof src, &h);
      theus_arena_free(a, h);
    }
    s[r] = (double)(bench_now_ns() - t0) / (double)iters;
  }
  return bench_median(s, REPS);
}

static double malloc_small(size_t iters) {
  char src[64];
  memset(src, 7, sizeof src);
  double s[REPS];
  for (int r = 0; r < REPS; r++) {
    uint64_t t0 = bench_now_ns();
    for (size_t i = 0; i < iters; i++) {
      char *p = malloc(sizeof src);
      memcpy(p, src, sizeof src);
      bench_sink(p);
      free(p);
    }
    s[r] = (double)(bench_now_ns() - t0) / (double)iters;
  }
  return bench_median(s, REPS);
}

static double arena_1mib(theus_arena *a, size_t iters) {
  double s[REPS];
  for (int r = 0; r < REPS; r++) {
    uint64_t t0 = bench_now_ns();
    for (size_t i = 0; i < iters; i++) {
      theus_handle h;
      theus_arena_alloc(a, 1u << 20, &h, NULL);
      theus_arena_free(a, h);
    }
    s[r] = (double)(bench_now_ns() - t0) / (double)iters;
  }
  return bench_median(s, REPS);
}

/* Reset with n live handles holding `total` bytes together: the bytes are
 * held equal across n so that only the number of handles varies (the kernel's
 * cost of returning pages grows with bytes, not handles; see docs). */
static double reset_with(theus_arena *a, size_t n, size_t total) {
  double s[REPS];
  size_t each = total / n;
  for (int r = 0; r < REPS; r++) {
    for (size_t i = 0; i < n; i++) {
      theus_handle h;
      void *p;
      if (theus_arena_alloc(a, each, &h, &p) != 0) {
        fprintf(stderr, "theus-bench arena: alloc failed: %s\n", theus_arena_errmsg(a));
        return -1;
      }
      memset(p, 1, each);
    }
    uint64_t t0 = bench_now_ns();
    theus_arena_reset(a);
    s[r] = (double)(bench_now_ns() - t0);
  }
  return bench_median(s, REPS);
}

int theus_bench_arena(int argc, char **argv) {
  (void)argc;
  (void)argv;
  theus_arena *a = open_arena();
  if (!a) return 1;
  double arena_ns = arena_small(a, 1000000);
  double malloc_ns = malloc_small(1000000);
  bench_report("arena_write_free_64B_ns", arena_ns, "ns");
  bench_report("malloc_copy_free_64B_ns", malloc_ns, "ns");
  bench_report("ratio_arena_vs_malloc", arena_ns / malloc_ns, "x");
  bench_report("arena_alloc_free_1MiB_ns", arena_1mib(a, 2000), "ns");
  const size_t total = 6400000; /* 100 000 x 64 B */
  double r1k = reset_with(a, 1000, total), r100k = reset_with(a, 100000, total);
  bench_report("arena_reset_1k_ns", r1k, "ns");
  bench_report("arena_reset_100k_ns", r100k, "ns");
  bench_report("ratio_reset_100k_vs_1k", r100k / r1k, "x");
  theus_arena_close(a);
  return 0;
}
