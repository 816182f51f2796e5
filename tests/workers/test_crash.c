/* workers: every kind of worker death, timeouts, writes into the read-only
 * arena, and 1 000 tasks with every 10th crashing. After each death a normal
 * task must succeed on the same pool and the pool must be back to full size.
 * The pool lives in the cmocka state; teardown stops it with cancel, which
 * reaps every child even when an assertion failed. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "theus/heavy.h"
#include "theus/pool.h"

typedef struct fixture {
  theus_arena *arena;
  theus_pool *pool;
  char flag_path[64]; /* a worker writes its pid here when a task has started */
} fixture;

static int setup(void **state) {
  fixture *f = calloc(1, sizeof *f);
  if (!f || theus_arena_open(NULL, &f->arena) < 0) return -1;
  snprintf(f->flag_path, sizeof f->flag_path, "/tmp/theus-test-crash-%d", (int)getpid());
  theus_pool_config cfg;
  theus_pool_config_init(&cfg);
  cfg.nworkers = 2;
  cfg.arena = f->arena;
  if (theus_pool_open(&cfg, &f->pool) < 0) return -1;
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fixture *f = *state;
  theus_pool_close(f->pool, 1);
  theus_arena_close(f->arena);
  unlink(f->flag_path);
  free(f);
  return 0;
}

/* ---- task functions ------------------------------------------------------ */

/* Not NULL, so the fault is real and not a UBSan null report; volatile so the
 * compiler cannot see the bad address. */
static volatile uintptr_t bad_addr = 16;

static int t_ok(theus_task *t) {
  int v = 7;
  return theus_task_write(t, &v, sizeof v);
}

static int t_segv(theus_task *t) {
  (void)t;
  *(volatile int *)bad_addr = 1;
  return 0;
}

static int t_abort(theus_task *t) {
  (void)t;
  abort();
}

static int t_exit3(theus_task *t) {
  (void)t;
  _exit(3);
}

/* Grows its memory under a lowered RLIMIT_AS until the allocator gives up,
 * then dies like an xmalloc() would (or the sanitizer runtime kills it). */
static int t_oom(theus_task *t) {
  (void)t;
  struct rlimit rl = {256u << 20, 256u << 20};
  FILE *fp = fopen("/proc/self/statm", "r");
  unsigned long pages = 0;
  if (fp) {
    if (fscanf(fp, "%lu", &pages) != 1) pages = 0;
    fclose(fp);
  }
  rl.rlim_cur = rl.rlim_max = (rlim_t)pages * 4096u + (64u << 20);
  setrlimit(RLIMIT_AS, &rl);
  for (;;) {
    char *p = malloc(16u << 20);
    if (!p) abort();
    memset(p, 1, 16u << 20);
  }
}

/* Writes its pid to the file named in the argument, then sleeps. */
static int t_flag_and_sleep(theus_task *t) {
  const char *path = theus_task_arg(t, NULL);
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  if (fd >= 0) {
    int pid = getpid();
    if (write(fd, &pid, sizeof pid) < 0) pid = 0;
    close(fd);
  }
  for (int i = 0; i < 600; i++) usleep(100000);
  return 0;
}

static int t_sleep_long(theus_task *t) {
  (void)t;
  for (int i = 0; i < 600; i++) usleep(100000);
  return 0;
}

static int t_write_ro(theus_task *t) {
  const void *p;
  size_t n;
  int rc = theus_task_view(t, 0, &p, &n);
  if (rc < 0) return rc;
  ((volatile char *)(uintptr_t)p)[n / 2] = 1;
  return 0;
}

/* every 10th crashes; the rest return their argument doubled */
static int t_mixed(theus_task *t) {
  int v;
  memcpy(&v, theus_task_arg(t, NULL), sizeof v);
  if (v % 10 == 0) *(volatile int *)bad_addr = 1;
  v *= 2;
  return theus_task_write(t, &v, sizeof v);
}

/* ---- helpers ------------------------------------------------------------- */

static void run_ok(theus_pool *p) {
  theus_task_desc d = {.fn = t_ok};
  theus_ticket tk;
  theus_pool_result r;
  assert_int_equal(theus_pool_submit(p, &d, &tk), 0);
  assert_int_equal(theus_pool_wait(p, tk, -1, &r), 0);
  assert_int_equal(r.status, 0);
  assert_int_equal(*(int *)r.data, 7);
  theus_pool_result_release(&r);
}

/* Runs fn, expects the given status and a message containing want. */
static void expect_death(theus_pool *p, theus_task_fn fn, int status, const char *want) {
  theus_task_desc d = {.fn = fn};
  theus_ticket tk;
  theus_pool_result r;
  assert_int_equal(theus_pool_submit(p, &d, &tk), 0);
  assert_int_equal(theus_pool_wait(p, tk, -1, &r), 0);
  if (r.status != status || !strstr(r.errmsg, want))
    fail_msg("status %d message '%s', wanted %d and '%s'", r.status, r.errmsg, status, want);
  assert_true(r.pid > 0);
  theus_pool_result_release(&r);
}

/* After a death the replacement is forked at once; wait for it (bounded). */
static void expect_full_size(theus_pool *p) {
  for (int i = 0; i < 500; i++) {
    unsigned up = 0;
    for (unsigned w = 0; w < theus_pool_size(p); w++) up += theus_pool_worker_pid(p, w) > 0;
    if (up == theus_pool_size(p)) return;
    usleep(10000);
  }
  fail_msg("pool did not get back to %u workers", theus_pool_size(p));
}

/* ---- tests --------------------------------------------------------------- */

static void test_segv(void **state) {
  fixture *f = *state;
  expect_death(f->pool, t_segv, THEUS_ECRASH, "killed by SIGSEGV");
  run_ok(f->pool);
  expect_full_size(f->pool);
  theus_pool_stats st;
  theus_pool_stats_get(f->pool, &st);
  assert_int_equal(st.crashed, 1);
  assert_int_equal(st.respawned, 1);
}

static void test_abort(void **state) {
  fixture *f = *state;
  expect_death(f->pool, t_abort, THEUS_ECRASH, "killed by SIGABRT");
  run_ok(f->pool);
  expect_full_size(f->pool);
}

static void test_exit3(void **state) {
  fixture *f = *state;
  expect_death(f->pool, t_exit3, THEUS_ECRASH, "exited with status 3");
  run_ok(f->pool);
  expect_full_size(f->pool);
}

static void test_memory_limit(void **state) {
  fixture *f = *state;
  expect_death(f->pool, t_oom, THEUS_ECRASH, "worker ");
  run_ok(f->pool);
  expect_full_size(f->pool);
}

static void test_external_sigkill(void **state) {
  fixture *f = *state;
  theus_task_desc d = {.fn = t_flag_and_sleep, .arg = f->flag_path, .arg_len = strlen(f->flag_path) + 1};
  theus_ticket tk;
  theus_pool_result r;
  unlink(f->flag_path);
  assert_int_equal(theus_pool_submit(f->pool, &d, &tk), 0);
  int pid = 0;
  for (int i = 0; i < 1000 && pid <= 0; i++) {
    int fd = open(f->flag_path, O_RDONLY);
    if (fd >= 0) {
      if (read(fd, &pid, sizeof pid) != sizeof pid) pid = 0;
      close(fd);
    }
    if (pid <= 0) usleep(10000);
  }
  assert_true(pid > 0);
  assert_int_equal(kill(pid, SIGKILL), 0);
  assert_int_equal(theus_pool_wait(f->pool, tk, -1, &r), 0);
  assert_int_equal(r.status, THEUS_ECRASH);
  assert_non_null(strstr(r.errmsg, "killed by SIGKILL"));
  assert_int_equal(r.pid, pid);
  run_ok(f->pool);
  expect_full_size(f->pool);
}

/* A terminal's Ctrl-C reaches every process of the foreground group: the
 * fork server and the workers ignore it (the host decides), so the same
 * workers go on running tasks. */
static void test_sigint_ignored(void **state) {
  fixture *f = *state;
  theus_pool_stats before, after;
  assert_int_equal(theus_pool_stats_get(f->pool, &before), 0);
  int fs = theus_pool_forksrv_pid(f->pool);
  assert_true(fs > 0);
  assert_int_equal(kill(fs, SIGINT), 0);
  for (unsigned w = 0; w < theus_pool_size(f->pool); w++) {
    int pid = theus_pool_worker_pid(f->pool, w);
    assert_true(pid > 0);
    assert_int_equal(kill(pid, SIGINT), 0);
  }
  usleep(100000); /* time for a default action to take effect */
  run_ok(f->pool);
  assert_int_equal(theus_pool_forksrv_pid(f->pool), fs);
  assert_int_equal(kill(fs, 0), 0);
  assert_int_equal(theus_pool_stats_get(f->pool, &after), 0);
  assert_int_equal(after.respawned, before.respawned);
  assert_int_equal(after.crashed, before.crashed);
  for (unsigned w = 0; w < theus_pool_size(f->pool); w++)
    assert_int_equal(theus_pool_worker_pid(f->pool, w), before.workers[w].pid);
}

static void test_timeout(void **state) {
  fixture *f = *state;
  theus_task_desc d = {.fn = t_sleep_long, .timeout_ms = 50};
  theus_ticket tk;
  theus_pool_result r;
  assert_int_equal(theus_pool_submit(f->pool, &d, &tk), 0);
  assert_int_equal(theus_pool_wait(f->pool, tk, -1, &r), 0);
  assert_int_equal(r.status, THEUS_ETIMEDOUT);
  assert_non_null(strstr(r.errmsg, "timed out after 50 ms"));
  run_ok(f->pool);
  expect_full_size(f->pool);
  theus_pool_stats st;
  theus_pool_stats_get(f->pool, &st);
  assert_int_equal(st.timed_out, 1);
}

static void test_write_read_only(void **state) {
  fixture *f = *state;
  theus_handle h;
  void *data;
  assert_int_equal(theus_arena_alloc(f->arena, 8192, &h, &data), 0);
  memset(data, 5, 8192);
  const char *keys[1] = {"heavy.frame"};
  theus_task_desc d = {.fn = t_write_ro, .handles = &h, .nhandles = 1, .keys = keys};
  theus_ticket tk;
  theus_pool_result r;
  assert_int_equal(theus_pool_submit(f->pool, &d, &tk), 0);
  assert_int_equal(theus_pool_wait(f->pool, tk, -1, &r), 0);
  assert_int_equal(r.status, THEUS_ECONTRACT);
  char hex[32];
  snprintf(hex, sizeof hex, "0x%016llx", (unsigned long long)h);
  if (!strstr(r.errmsg, "contract violation: write to read-only heavy array") || !strstr(r.errmsg, hex) ||
      !strstr(r.errmsg, "heavy.frame"))
    fail_msg("message: %s", r.errmsg);
  assert_int_equal(((unsigned char *)data)[4096], 5); /* nothing written */
  run_ok(f->pool);
  expect_full_size(f->pool);
}

static void test_thousand_with_crashes(void **state) {
  fixture *f = *state;
  enum { N = 1000 };
  static int val[N];
  static theus_ticket tk[N];
  theus_task_desc d = {.fn = t_mixed, .arg_len = sizeof(int)};
  int failures = 0, ok = 0;
  size_t sent = 0, got = 0;
  while (got < N) {
    while (sent < N) {
      val[sent] = (int)sent;
      d.arg = &val[sent];
      int rc = theus_pool_submit(f->pool, &d, &tk[sent]);
      if (rc == THEUS_EAGAIN) break;
      assert_int_equal(rc, 0);
      sent++;
    }
    theus_pool_result r;
    assert_int_equal(theus_pool_wait(f->pool, tk[got], -1, &r), 0);
    if (got % 10 == 0) {
      if (r.status != THEUS_ECRASH || !strstr(r.errmsg, "killed by SIGSEGV"))
        fail_msg("task %zu: status %d '%s'", got, r.status, r.errmsg);
      failures++;
    } else {
      assert_int_equal(r.status, 0);
      assert_int_equal(*(int *)r.data, 2 * (int)got);
      ok++;
    }
    theus_pool_result_release(&r);
    got++;
  }
  assert_int_equal(failures, 100);
  assert_int_equal(ok, 900);
  expect_full_size(f->pool);
  theus_pool_stats st;
  theus_pool_stats_get(f->pool, &st);
  assert_int_equal(st.crashed, 100);
  assert_int_equal(st.completed, 900);
  assert_int_equal(st.respawned, 100);
}

/* A worker dying inside a map chunk fails that chunk's items, and only those. */
static void test_map_crash(void **state) {
  fixture *f = *state;
  enum { N = 1000 };
  static int in[N], out[N], st[N];
  for (int i = 0; i < N; i++) in[i] = i + 1; /* only item 9 (value 10) crashes */
  in[99] = 1;
  for (int i = 10; i < N; i++) in[i] = 1;
  theus_map_desc m = {.fn = t_mixed, .args = in, .arg_size = sizeof(int), .count = N, .results = out,
                      .result_size = sizeof(int), .status = st, .chunk = 100};
  size_t nfailed;
  assert_int_equal(theus_pool_map(f->pool, &m, &nfailed), THEUS_ECRASH);
  assert_int_equal(nfailed, 100);
  for (int i = 0; i < N; i++) {
    if (i < 100) {
      assert_int_equal(st[i], THEUS_ECRASH);
    } else {
      assert_int_equal(st[i], 0);
      assert_int_equal(out[i], 2);
    }
  }
  assert_non_null(strstr(theus_pool_errmsg(f->pool), "killed by SIGSEGV"));
  run_ok(f->pool);
  expect_full_size(f->pool);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_segv, setup, teardown),
      cmocka_unit_test_setup_teardown(test_abort, setup, teardown),
      cmocka_unit_test_setup_teardown(test_exit3, setup, teardown),
      cmocka_unit_test_setup_teardown(test_memory_limit, setup, teardown),
      cmocka_unit_test_setup_teardown(test_external_sigkill, setup, teardown),
      cmocka_unit_test_setup_teardown(test_sigint_ignored, setup, teardown),
      cmocka_unit_test_setup_teardown(test_timeout, setup, teardown),
      cmocka_unit_test_setup_teardown(test_write_read_only, setup, teardown),
      cmocka_unit_test_setup_teardown(test_thousand_with_crashes, setup, teardown),
      cmocka_unit_test_setup_teardown(test_map_crash, setup, teardown),
  };
  return cmocka_run_group_tests_name("workers/crash", tests, NULL, NULL);
}
