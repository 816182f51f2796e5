/* theus-bench SUITE [args]: runs one benchmark suite. */
#include <stdio.h>
#include <string.h>

#include "bench.h"

static const struct {
  const char *name;
  int (*run)(int, char **);
  const char *what;
} suites[] = {
  {"arena", theus_bench_arena, "arena write/free vs malloc, 1 MiB alloc, reset flatness"},
  {"dispatch", theus_bench_dispatch, "worker round trip vs spin/futex floors, batching, hand-off"},
  {"engine", theus_bench_engine, "engine step, CAS rate, map speed-up"},
  {"twin", theus_bench_twin, "twin read_at bandwidth vs memcpy, epoch wake-up"},
  {"kmeans", theus_bench_kmeans, "k-means example pipeline, 1 and 2 workers, vs a plain C loop"},
  {"survive", theus_bench_survive, "memo hit vs local step, ledger on vs off, retry after a worker death"},
  {"arrays", theus_bench_arrays, "maps into heavy outputs: 1 GiB normalise vs memcpy, per-slice overhead"},
#ifdef THEUS_HAVE_MPI
  {"cluster", theus_bench_cluster, "under mpirun: map spread over ranks, heavy shipping vs MPI_Bcast"},
#endif
};

static void usage(FILE *f) {
  fprintf(f, "usage: theus-bench SUITE\nsuites:\n");
  for (size_t i = 0; i < sizeof suites / sizeof suites[0]; i++)
    fprintf(f, "  %-9s %s\n", suites[i].name, suites[i].what);
}

int main(int argc, char **argv) {
  if (argc < 2) {
    usage(stderr);
    return 2;
  }
  for (size_t i = 0; i < sizeof suites / sizeof suites[0]; i++)
    if (strcmp(argv[1], suites[i].name) == 0) return suites[i].run(argc - 1, argv + 1);
  fprintf(stderr, "theus-bench: unknown suite '%s'\n", argv[1]);
  usage(stderr);
  return 2;
}
