#include <stdio.h>

#include "bench.h"

int theus_bench_dispatch(int argc, char **argv) {
  (void)argc;
  (void)argv;
  fprintf(stderr, "theus-bench: suite 'dispatch' is not built yet (issue 3)\n");
  return 2;
}
