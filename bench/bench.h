/* theus-bench: shared helpers. Every suite prints one "name value unit" line
 * per figure on stdout; anything else goes to stderr. */
#ifndef THEUS_BENCH_H
#define THEUS_BENCH_H

#include <stddef.h>
#include <stdint.h>

#include "theus/engine.h"

/* Monotonic clock in nanoseconds. */
uint64_t bench_now_ns(void);
/* Prints "name value unit" with a sensible precision. */
void bench_report(const char *name, double value, const char *unit);
/* Median of n samples (sorts the array in place). */
double bench_median(double *v, size_t n);
/* A process body: 1 ms of CPU per call (a map slice), whatever the slice
 * holds; returns 1. */
int bench_burn_1ms(theus_ctx *ctx);
/* Keeps the optimiser from discarding a computed value. */
void bench_sink(const void *p);

int theus_bench_arena(int argc, char **argv);
int theus_bench_twin(int argc, char **argv);
int theus_bench_dispatch(int argc, char **argv);
int theus_bench_engine(int argc, char **argv);
int theus_bench_kmeans(int argc, char **argv);
int theus_bench_survive(int argc, char **argv);
int theus_bench_arrays(int argc, char **argv);
int theus_bench_cluster(int argc, char **argv); /* built with MPI only */

#endif
