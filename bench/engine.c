#include <stdio.h>

#include "bench.h"

int theus_bench_engine(int argc, char **argv) {
  (void)argc;
  (void)argv;
  fprintf(stderr, "theus-bench: suite 'engine' is not built yet (issue 4)\n");
  return 2;
}
