#include <stdio.h>

#include "bench.h"

int theus_bench_twin(int argc, char **argv) {
  (void)argc;
  (void)argv;
  fprintf(stderr, "theus-bench: suite 'twin' is not built yet (issue 6)\n");
  return 2;
}
