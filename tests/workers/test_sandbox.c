/* workers: the pure-process sandbox (THEUS_TASK_SANDBOX) at the pool level.
 * A sandboxed task that forks, execs, opens a socket, opens a file for
 * writing, writes to a descriptor or signals another process is cut short:
 * its result is a contract violation naming the call, the worker is
 * replaced, and the next task runs. What a pure task needs (reading files,
 * threads, malloc, stderr) still works. Teardown stops the pool with cancel,
 * which reaps every child even when an assertion failed. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "theus/heavy.h"
#include "theus/pool.h"

typedef struct fixture {
  theus_pool *pool;
  char path[64]; /* a file a sandboxed task must not create */
} fixture;

static int setup(void **state) {
  fixture *f = calloc(1, sizeof *f);
  if (!f) return -1;
  snprintf(f->path, sizeof f->path, "/tmp/theus-test-sandbox-%d", (int)getpid());
  *state = f;
  theus_pool_config cfg;
  theus_pool_config_init(&cfg);
  cfg.nworkers = 1; /* one worker: every task below lands on the same slot */
  return theus_pool_open(&cfg, &f->pool) < 0 ? -1 : 0;
}

static int teardown(void **state) {
  fixture *f = *state;
  if (!f) return 0;
  theus_pool_close(f->pool, 1);
  unlink(f->path);
  free(f);
  return 0;
}

/* ---- task functions ------------------------------------------------------ */

static int t_pid(theus_task *t) {
  int pid = getpid();
  return theus_task_write(t, &pid, sizeof pid);
}

static int t_fork(theus_task *t) {
  pid_t pid = fork();
  if (pid == 0) _exit(0);
  if (pid > 0) waitpid(pid, NULL, 0);
  return theus_task_fail(t, THEUS_EPROCESS, "fork returned %d", (int)pid);
}

static int t_sys_fork(theus_task *t) {
#ifdef SYS_fork
  long pid = syscall(SYS_fork);
  if (pid == 0) _exit(0);
  if (pid > 0) waitpid((pid_t)pid, NULL, 0);
#endif
  return theus_task_fail(t, THEUS_EPROCESS, "fork syscall came back");
}

static int t_exec(theus_task *t) {
  char *argv[] = {"/bin/true", NULL}, *envp[] = {NULL};
  execve("/bin/true", argv, envp);
  return theus_task_fail(t, THEUS_EPROCESS, "execve came back: %s", strerror(errno));
}

static int t_socket(theus_task *t) {
  int s = socket(AF_INET, SOCK_STREAM, 0);
  if (s >= 0) close(s);
  return theus_task_fail(t, THEUS_EPROCESS, "socket returned %d", s);
}

static int t_open_write(theus_task *t) {
  const char *path = theus_task_arg(t, NULL);
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  if (fd >= 0) close(fd);
  return theus_task_fail(t, THEUS_EPROCESS, "open for writing returned %d", fd);
}

static int t_write_pipe(theus_task *t) {
  int p[2];
  if (pipe(p) != 0) return theus_task_fail(t, THEUS_ESYS, "pipe: %s", strerror(errno));
  ssize_t n = write(p[1], "x", 1);
  close(p[0]);
  close(p[1]);
  return theus_task_fail(t, THEUS_EPROCESS, "write returned %zd", n);
}

static int t_kill_parent(theus_task *t) {
  kill(getppid(), 0);
  return theus_task_fail(t, THEUS_EPROCESS, "kill came back");
}

static int t_unlink(theus_task *t) {
  unlink(theus_task_arg(t, NULL));
  return theus_task_fail(t, THEUS_EPROCESS, "unlink came back");
}

/* What a pure task may do: read a file, run threads, allocate, write stderr. */
static void *thread_fn(void *arg) { return arg; }
static int t_pure_ok(theus_task *t) {
  char buf[256];
  int fd = open("/proc/self/status", O_RDONLY);
  if (fd < 0 || read(fd, buf, sizeof buf) <= 0)
    return theus_task_fail(t, THEUS_ESYS, "reading a file: %s", strerror(errno));
  close(fd);
  pthread_t th[2];
  for (int i = 0; i < 2; i++)
    if (pthread_create(&th[i], NULL, thread_fn, NULL) != 0) return theus_task_fail(t, THEUS_ESYS, "pthread_create");
  for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
  void *big = malloc(32u << 20);
  if (!big) return theus_task_fail(t, THEUS_ENOMEM, "malloc");
  memset(big, 1, 32u << 20);
  free(big);
  if (write(2, "", 0) < 0) return theus_task_fail(t, THEUS_ESYS, "write to stderr: %s", strerror(errno));
  int pid = getpid();
  return theus_task_write(t, &pid, sizeof pid);
}

/* Taking SIGSYS over would hide violations: refused with EPERM. */
static int t_take_sigsys(theus_task *t) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = SIG_IGN;
  int rc = sigaction(SIGSYS, &sa, NULL);
  int err = errno;
  return theus_task_write(t, (int[2]){rc, err}, 2 * sizeof(int));
}

/* Blocking SIGSYS does not help either: the kernel kills the worker. */
static int t_block_sigsys_then_socket(theus_task *t) {
  sigset_t s;
  sigemptyset(&s);
  sigaddset(&s, SIGSYS);
  sigprocmask(SIG_BLOCK, &s, NULL);
  return t_socket(t);
}

/* A store into the read-only arena from a sandboxed task: still reported by
 * the SIGSEGV handler, which the pure layer leaves alone. */
static int t_write_ro(theus_task *t) {
  const void *p;
  size_t n;
  int rc = theus_task_view(t, 0, &p, &n);
  if (rc < 0) return rc;
  ((volatile char *)(uintptr_t)p)[n / 2] = 1;
  return 0;
}

static int t_map_item(theus_task *t) {
  int v;
  memcpy(&v, theus_task_arg(t, NULL), sizeof v);
  if (v == 3) {
    int s = socket(AF_UNIX, SOCK_STREAM, 0);
    if (s >= 0) close(s);
  }
  v *= 2;
  return theus_task_write(t, &v, sizeof v);
}

/* ---- helpers ------------------------------------------------------------- */

static theus_pool_result run(fixture *f, theus_task_fn fn, unsigned flags, const void *arg, size_t len) {
  theus_task_desc d = {.fn = fn, .arg = arg, .arg_len = len, .flags = flags};
  theus_ticket tk;
  int rc = theus_pool_submit(f->pool, &d, &tk);
  if (rc != 0) fail_msg("submit: %s", theus_pool_errmsg(f->pool));
  theus_pool_result r;
  assert_int_equal(theus_pool_wait(f->pool, tk, 30000, &r), 0);
  return r;
}

static int run_pid(fixture *f, theus_task_fn fn, unsigned flags) {
  theus_pool_result r = run(f, fn, flags, NULL, 0);
  if (r.status != 0) fail_msg("task failed: %s", r.errmsg);
  int pid;
  assert_int_equal(r.len, sizeof pid);
  memcpy(&pid, r.data, sizeof pid);
  theus_pool_result_release(&r);
  return pid;
}

/* A sandboxed task calling `call` is a contract violation naming it, and the
 * pool heals: a fresh worker runs the next (sandboxed and plain) tasks. */
static void violation(fixture *f, theus_task_fn fn, const char *call, const void *arg, size_t len) {
  int before = run_pid(f, t_pid, THEUS_TASK_SANDBOX);
  theus_pool_result r = run(f, fn, THEUS_TASK_SANDBOX, arg, len);
  printf("  %s\n", r.errmsg);
  assert_int_equal(r.status, THEUS_ECONTRACT);
  char want[64];
  snprintf(want, sizeof want, "called %s()", call);
  if (!strstr(r.errmsg, want)) fail_msg("message does not name %s(): %s", call, r.errmsg);
  assert_int_equal(r.pid, before);
  int after = run_pid(f, t_pure_ok, THEUS_TASK_SANDBOX);
  assert_int_not_equal(after, before); /* the violating worker was replaced */
  assert_int_not_equal(run_pid(f, t_pid, 0), 0);
}

/* ---- tests --------------------------------------------------------------- */

static void test_pure_allowed(void **state) {
  fixture *f = *state;
  int a = run_pid(f, t_pure_ok, THEUS_TASK_SANDBOX);
  int b = run_pid(f, t_pure_ok, THEUS_TASK_SANDBOX);
  assert_int_equal(a, b); /* a sandboxed worker stays for the next sandboxed task */
}

static void test_fork(void **state) { violation(*state, t_fork, "clone", NULL, 0); }
static void test_sys_fork(void **state) {
#ifdef SYS_fork
  violation(*state, t_sys_fork, "fork", NULL, 0);
#else
  skip();
#endif
}
static void test_exec(void **state) { violation(*state, t_exec, "execve", NULL, 0); }
static void test_socket(void **state) { violation(*state, t_socket, "socket", NULL, 0); }

static void test_open_write(void **state) {
  fixture *f = *state;
  unlink(f->path);
  violation(f, t_open_write, "openat", f->path, strlen(f->path) + 1);
  struct stat sb;
  assert_int_equal(stat(f->path, &sb), -1); /* nothing was created */
}

static void test_write_fd(void **state) { violation(*state, t_write_pipe, "write", NULL, 0); }
static void test_kill_other(void **state) { violation(*state, t_kill_parent, "kill", NULL, 0); }

static void test_unlink(void **state) {
  fixture *f = *state;
  int fd = open(f->path, O_WRONLY | O_CREAT, 0600);
  assert_true(fd >= 0);
  close(fd);
  violation(f, t_unlink, "unlink", f->path, strlen(f->path) + 1);
  struct stat sb;
  assert_int_equal(stat(f->path, &sb), 0); /* still there */
  unlink(f->path);
}

static void test_sigsys_handler_refused(void **state) {
  fixture *f = *state;
  theus_pool_result r = run(f, t_take_sigsys, THEUS_TASK_SANDBOX, NULL, 0);
  assert_int_equal(r.status, 0);
  int v[2];
  memcpy(v, r.data, sizeof v);
  theus_pool_result_release(&r);
  assert_int_equal(v[0], -1);
  assert_int_equal(v[1], EPERM);
}

static void test_blocked_sigsys(void **state) {
  fixture *f = *state;
  theus_pool_result r = run(f, t_block_sigsys_then_socket, THEUS_TASK_SANDBOX, NULL, 0);
  printf("  %s\n", r.errmsg);
  assert_int_equal(r.status, THEUS_ECRASH);
  assert_non_null(strstr(r.errmsg, "SIGSYS"));
  assert_int_not_equal(run_pid(f, t_pid, THEUS_TASK_SANDBOX), 0);
}

/* The same calls without the flag are the task's own business. */
static void test_unsandboxed_task_may(void **state) {
  fixture *f = *state;
  theus_pool_result r = run(f, t_socket, 0, NULL, 0);
  assert_int_equal(r.status, THEUS_EPROCESS); /* returned normally: socket() ran */
  assert_non_null(strstr(r.errmsg, "socket returned"));
  theus_pool_result_release(&r);
}

/* A plain task after a sandboxed one gets a fresh worker (the filter cannot
 * be removed), and runs normally. */
static void test_mode_switch(void **state) {
  fixture *f = *state;
  theus_pool_stats s0, s1;
  int pure = run_pid(f, t_pid, THEUS_TASK_SANDBOX);
  theus_pool_stats_get(f->pool, &s0);
  int plain = run_pid(f, t_pid, 0);
  /* the fork server counts the respawn after the fork: the task may finish first */
  for (int i = 0; i < 1000; i++) {
    theus_pool_stats_get(f->pool, &s1);
    if (s1.respawned > s0.respawned) break;
    usleep(1000);
  }
  assert_int_not_equal(pure, plain);
  assert_int_equal(s1.respawned, s0.respawned + 1);
  assert_int_equal(s1.crashed, s0.crashed);
  assert_int_equal(s1.failed, s0.failed);
  assert_int_equal(run_pid(f, t_pid, 0), plain); /* and stays */
}

static void test_map_sandboxed(void **state) {
  fixture *f = *state;
  enum { N = 8 };
  int in[N], out[N], st[N];
  for (int i = 0; i < N; i++) in[i] = i;
  theus_map_desc m = {.fn = t_map_item, .args = in, .arg_size = sizeof(int), .count = N, .results = out,
                      .result_size = sizeof(int), .status = st, .chunk = 4, .flags = THEUS_TASK_SANDBOX};
  size_t nfailed = 0;
  int rc = theus_pool_map(f->pool, &m, &nfailed);
  printf("  %s\n", theus_pool_errmsg(f->pool));
  assert_int_equal(rc, THEUS_ECONTRACT);
  assert_int_equal(nfailed, 4); /* the chunk holding item 3 */
  for (int i = 4; i < N; i++) {
    assert_int_equal(st[i], 0);
    assert_int_equal(out[i], 2 * i);
  }
  assert_non_null(strstr(theus_pool_errmsg(f->pool), "called socket()"));
  m.flags = 0x80;
  assert_int_equal(theus_pool_map(f->pool, &m, NULL), THEUS_EINVAL);
}

static void test_arena_write_still_reported(void **state) {
  (void)state;
  theus_arena *a = NULL;
  theus_pool *p = NULL;
  assert_int_equal(theus_arena_open(NULL, &a), 0);
  theus_handle h;
  void *data;
  assert_int_equal(theus_arena_alloc(a, 4096, &h, &data), 0);
  memset(data, 7, 4096);
  theus_pool_config cfg;
  theus_pool_config_init(&cfg);
  cfg.nworkers = 1;
  cfg.arena = a;
  int rc = theus_pool_open(&cfg, &p);
  if (rc == 0) {
    const char *keys[] = {"heavy.frame"};
    theus_task_desc d = {.fn = t_write_ro, .handles = &h, .nhandles = 1, .keys = keys, .flags = THEUS_TASK_SANDBOX};
    theus_ticket tk;
    theus_pool_result r = {0};
    rc = theus_pool_submit(p, &d, &tk);
    if (rc == 0) rc = theus_pool_wait(p, tk, 30000, &r);
    if (rc == 0) {
      printf("  %s\n", r.errmsg);
      rc = r.status == THEUS_ECONTRACT && strstr(r.errmsg, "heavy.frame") ? 0 : -1;
    }
  }
  theus_pool_close(p, 1); /* before any assertion: no child outlives the test */
  int intact = ((unsigned char *)data)[2048] == 7;
  theus_arena_close(a);
  assert_int_equal(rc, 0);
  assert_true(intact);
}

static void test_bad_flags(void **state) {
  fixture *f = *state;
  theus_task_desc d = {.fn = t_pid, .flags = 0x80};
  theus_ticket tk;
  assert_int_equal(theus_pool_submit(f->pool, &d, &tk), THEUS_EINVAL);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_pure_allowed, setup, teardown),
      cmocka_unit_test_setup_teardown(test_fork, setup, teardown),
      cmocka_unit_test_setup_teardown(test_sys_fork, setup, teardown),
      cmocka_unit_test_setup_teardown(test_exec, setup, teardown),
      cmocka_unit_test_setup_teardown(test_socket, setup, teardown),
      cmocka_unit_test_setup_teardown(test_open_write, setup, teardown),
      cmocka_unit_test_setup_teardown(test_write_fd, setup, teardown),
      cmocka_unit_test_setup_teardown(test_kill_other, setup, teardown),
      cmocka_unit_test_setup_teardown(test_unlink, setup, teardown),
      cmocka_unit_test_setup_teardown(test_sigsys_handler_refused, setup, teardown),
      cmocka_unit_test_setup_teardown(test_blocked_sigsys, setup, teardown),
      cmocka_unit_test_setup_teardown(test_unsandboxed_task_may, setup, teardown),
      cmocka_unit_test_setup_teardown(test_mode_switch, setup, teardown),
      cmocka_unit_test_setup_teardown(test_map_sandboxed, setup, teardown),
      cmocka_unit_test_setup_teardown(test_bad_flags, setup, teardown),
      cmocka_unit_test(test_arena_write_still_reported),
  };
  return cmocka_run_group_tests_name("sandbox", tests, NULL, NULL);
}
