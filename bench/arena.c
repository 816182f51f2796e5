#include <stdio.h>

#include "bench.h"

int theus_bench_arena(int argc, char **argv) {
  (void)argc;
  (void)argv;
  fprintf(stderr, "theus-bench: suite 'arena' is being written (issue 2)\n");
  return 2;
}
