#include "bench.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

uint64_t bench_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void bench_report(const char *name, double value, const char *unit) {
  printf("%s %.6g %s\n", name, value, unit);
  fflush(stdout);
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

double bench_median(double *v, size_t n) {
  if (n == 0) return 0.0;
  qsort(v, n, sizeof *v, cmp_double);
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2.0;
}

void bench_sink(const void *p) {
  __asm__ volatile("" : : "r"(p) : "memory");
}

int bench_burn_1ms(theus_ctx *ctx) {
  uint64_t end = bench_now_ns() + 1000000;
  volatile double x = 1.0;
  while (bench_now_ns() < end)
    for (int i = 0; i < 100; i++)
      x = x * 1.0000001 + 1e-9;
  theus_ctx_return(ctx, json_integer(1));
  return 0;
}
