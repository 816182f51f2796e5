/* tests/base: the CPUs a process may use (issue 15 item 7): the affinity
 * mask narrows the count (a child pinned to one CPU gets one worker by
 * default), and a cgroup v2 cpu.max quota is read in CPUs, rounded up. */
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "base.h"
#include "theus/pool.h"

static void test_cpu_max_parse(void **state) {
  (void)state;
  assert_int_equal(theus__cpu_max_parse("max 100000\n"), 0);
  assert_int_equal(theus__cpu_max_parse("100000 100000\n"), 1);
  assert_int_equal(theus__cpu_max_parse("50000 100000\n"), 1);
  assert_int_equal(theus__cpu_max_parse("150000 100000\n"), 2);
  assert_int_equal(theus__cpu_max_parse("400000 100000"), 4);
  assert_int_equal(theus__cpu_max_parse(""), 0);
  assert_int_equal(theus__cpu_max_parse("0 100000"), 0);
  assert_int_equal(theus__cpu_max_parse("100000 0"), 0);
  assert_int_equal(theus__cpu_max_parse(NULL), 0);
}

static void test_within_affinity(void **state) {
  (void)state;
  cpu_set_t set;
  assert_int_equal(sched_getaffinity(0, sizeof set, &set), 0);
  unsigned n = theus__os_cpus();
  assert_true(n >= 1);
  assert_true(n <= (unsigned)CPU_COUNT(&set));
  theus_pool_config cfg;
  theus_pool_config_init(&cfg);
  assert_int_equal(cfg.nworkers, n);
}

/* Pinned to one CPU (in a child, so this process keeps its mask), the
 * default pool has one worker however many CPUs are online. */
static void test_pinned_child(void **state) {
  (void)state;
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set)) _exit(10);
    int first = -1;
    for (int c = 0; c < CPU_SETSIZE && first < 0; c++)
      if (CPU_ISSET(c, &set)) first = c;
    CPU_ZERO(&set);
    CPU_SET(first, &set);
    if (sched_setaffinity(0, sizeof set, &set)) _exit(11);
    theus_pool_config cfg;
    theus_pool_config_init(&cfg);
    _exit(theus__os_cpus() == 1 && cfg.nworkers == 1 ? 0 : 12);
  }
  int st = 0;
  assert_int_equal(waitpid(pid, &st, 0), pid);
  assert_true(WIFEXITED(st));
  assert_int_equal(WEXITSTATUS(st), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_cpu_max_parse),
      cmocka_unit_test(test_within_affinity),
      cmocka_unit_test(test_pinned_child),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
