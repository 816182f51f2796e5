/* Read-only attachment from forked children: resolution, faults, mprotect.
 * Every child is reaped by run_child() before any assertion runs. */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "theus/heavy.h"

struct fixture {
  theus_arena *a;
  theus_handle bytes, arr;
};

static int setup(void **st) {
  static struct fixture f;
  if (theus_arena_open(NULL, &f.a) != 0) return -1;
  if (theus_arena_write(f.a, "parent data", 12, &f.bytes) != 0) return -1;
  uint64_t shape[2] = {3, 1000};
  double *d;
  if (theus_array_alloc(f.a, THEUS_DTYPE_F64, 2, shape, &f.arr, (void **)&d) != 0) return -1;
  for (int i = 0; i < 3000; i++) d[i] = i * 2.0;
  *st = &f;
  return 0;
}

static int teardown(void **st) {
  struct fixture *f = *st;
  theus_arena_close(f->a);
  return 0;
}

/* Forks; the child attaches read-only, runs fn and exits with its result.
 * Returns the raw wait status. The child can never outlive this call. */
static int run_child(struct fixture *f, int (*fn)(theus_arena *ro, struct fixture *f)) {
  pid_t pid = fork();
  if (pid == 0) {
    alarm(20);
    struct sigaction sa = {.sa_handler = SIG_DFL};
    sigaction(SIGSEGV, &sa, NULL); /* die by the signal, not by a sanitizer report */
    theus_arena *ro;
    if (theus_arena_open_ro(theus_arena_ro_fd(f->a), &ro) != 0) _exit(100);
    _exit(fn(ro, f));
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return status;
}

static int child_reads(theus_arena *ro, struct fixture *f) {
  const void *v;
  size_t n;
  if (!theus_arena_is_readonly(ro)) return 1;
  if (theus_arena_view(ro, f->bytes, &v, &n) || n != 12 || memcmp(v, "parent data", 12)) return 2;
  theus_array_info info;
  if (theus_array_info_get(ro, f->arr, &info)) return 3;
  if (info.dtype != THEUS_DTYPE_F64 || info.ndim != 2 || info.shape[1] != 1000 || info.strides[0] != 8000) return 4;
  if (((const double *)info.data)[2999] != 5998.0) return 5;
  theus_arena_stats s;
  theus_arena_stats_get(ro, &s);
  if (s.active_handles != 2) return 6;
  if (theus_arena_find(ro, (const char *)info.data + 100) != f->arr) return 7;
  theus_handle h;
  if (theus_arena_alloc(ro, 10, &h, NULL) != THEUS_EREADONLY) return 8;
  if (theus_arena_free(ro, f->bytes) != THEUS_EREADONLY) return 9;
  if (theus_arena_reset(ro) != THEUS_EREADONLY) return 10;
  return 0;
}

static void test_child_resolves_handles_alone(void **st) {
  int status = run_child(*st, child_reads);
  assert_true(WIFEXITED(status));
  assert_int_equal(WEXITSTATUS(status), 0);
}

static int child_mprotect(theus_arena *ro, struct fixture *f) {
  const void *v;
  size_t n;
  if (theus_arena_view(ro, f->bytes, &v, &n)) return 1;
  void *page = (void *)((uintptr_t)v & ~(uintptr_t)4095);
  if (mprotect(page, 4096, PROT_READ | PROT_WRITE) == 0) return 2; /* must be refused */
  if (errno != EACCES) return 3;
  return 0;
}

static void test_mprotect_write_refused(void **st) {
  int status = run_child(*st, child_mprotect);
  assert_true(WIFEXITED(status));
  assert_int_equal(WEXITSTATUS(status), 0);
}

static int child_writes(theus_arena *ro, struct fixture *f) {
  const void *v;
  size_t n;
  if (theus_arena_view(ro, f->bytes, &v, &n)) return 1;
  *(volatile char *)v = 'X'; /* must fault */
  return 2;
}

static void test_write_faults_and_parent_unchanged(void **st) {
  struct fixture *f = *st;
  int status = run_child(f, child_writes);
  assert_true(WIFSIGNALED(status));
  assert_int_equal(WTERMSIG(status), SIGSEGV);
  const void *v;
  size_t n;
  assert_int_equal(theus_arena_view(f->a, f->bytes, &v, &n), 0);
  assert_memory_equal(v, "parent data", 12);
}

static int child_sees_stale(theus_arena *ro, struct fixture *f) {
  const void *v;
  size_t n;
  return theus_arena_view(ro, f->bytes, &v, &n) == THEUS_EFREED ? 0 : 1;
}

static void test_child_sees_free(void **st) {
  struct fixture *f = *st;
  assert_int_equal(theus_arena_free(f->a, f->bytes), 0);
  int status = run_child(f, child_sees_stale);
  assert_true(WIFEXITED(status));
  assert_int_equal(WEXITSTATUS(status), 0);
  assert_int_equal(theus_arena_write(f->a, "parent data", 12, &f->bytes), 0);
}

static void test_attach_rejects_non_arena(void **st) {
  (void)st;
  int fds[2];
  assert_int_equal(pipe(fds), 0);
  theus_arena *ro = (theus_arena *)1;
  assert_int_not_equal(theus_arena_open_ro(fds[0], &ro), 0);
  assert_null(ro);
  close(fds[0]);
  close(fds[1]);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_child_resolves_handles_alone),
      cmocka_unit_test(test_mprotect_write_refused),
      cmocka_unit_test(test_write_faults_and_parent_unchanged),
      cmocka_unit_test(test_child_sees_free),
      cmocka_unit_test(test_attach_rejects_non_arena),
  };
  return cmocka_run_group_tests_name("heavy/arena_ro", tests, setup, teardown);
}
