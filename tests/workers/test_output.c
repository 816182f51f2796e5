/* workers: what tasks print (issue 15 item 1). Every worker's stdout and
 * stderr are pipes read by the pool's output thread, which hands out whole
 * lines prefixed with the worker and the process: to a callback, or to the
 * orchestrator's stderr; or they go to /dev/null.
 *
 * A test opens its pool in the fixture; theus_pool_close (which flushes every
 * line) runs in the test before the checks, and teardown closes with cancel
 * whatever an early failure left open, so every child is reaped. The test
 * program's own fds 1 and 2 are swapped for memfds only while a pool runs. */
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cmocka.h>

#include "theus/pool.h"

/* ---- what the callback saw ------------------------------------------------ */

typedef struct line {
  int worker;
  char process[64];
  char *text;
  size_t len;
} line;

typedef struct fixture {
  theus_pool *pool;
  pthread_mutex_t lock;
  line *lines;
  size_t n, cap;
  int saved[3]; /* the test's own fds 1 and 2 while swapped (index 1, 2) */
  int mem[3];
} fixture;

static void on_line(int worker, const char *process, const char *text, size_t len, void *ud) {
  fixture *f = ud;
  pthread_mutex_lock(&f->lock);
  if (f->n == f->cap) {
    f->cap = f->cap ? 2 * f->cap : 64;
    f->lines = realloc(f->lines, f->cap * sizeof *f->lines);
  }
  line *l = &f->lines[f->n++];
  l->worker = worker;
  snprintf(l->process, sizeof l->process, "%s", process);
  l->text = malloc(len + 1);
  memcpy(l->text, text, len + 1);
  l->len = len;
  pthread_mutex_unlock(&f->lock);
}

static int setup(void **state) {
  fixture *f = calloc(1, sizeof *f);
  if (!f) return -1;
  pthread_mutex_init(&f->lock, NULL);
  f->saved[1] = f->saved[2] = f->mem[1] = f->mem[2] = -1;
  *state = f;
  return 0;
}

static void restore_stdio(fixture *f) {
  for (int fd = 1; fd <= 2; fd++)
    if (f->saved[fd] >= 0) {
      dup2(f->saved[fd], fd);
      close(f->saved[fd]);
      f->saved[fd] = -1;
    }
}

static int teardown(void **state) {
  fixture *f = *state;
  theus_pool_close(f->pool, 1);
  restore_stdio(f);
  for (int fd = 1; fd <= 2; fd++)
    if (f->mem[fd] >= 0) close(f->mem[fd]);
  for (size_t i = 0; i < f->n; i++) free(f->lines[i].text);
  free(f->lines);
  pthread_mutex_destroy(&f->lock);
  free(f);
  return 0;
}

/* Swaps the test's fds 1 and 2 for memfds (before the pool opens, so its
 * fork server and workers inherit them too). */
static void swap_stdio(fixture *f) {
  fflush(stdout);
  fflush(stderr);
  for (int fd = 1; fd <= 2; fd++) {
    f->mem[fd] = memfd_create(fd == 1 ? "out" : "err", MFD_CLOEXEC);
    assert_true(f->mem[fd] >= 0);
    f->saved[fd] = dup(fd);
    dup2(f->mem[fd], fd);
  }
}

/* What landed in the swapped fd (restores both first); malloc'ed. */
static char *swapped_text(fixture *f, int fd) {
  restore_stdio(f);
  off_t n = lseek(f->mem[fd], 0, SEEK_END);
  char *buf = calloc(1, (size_t)n + 1);
  assert_int_equal(pread(f->mem[fd], buf, (size_t)n, 0), n);
  return buf;
}

/* ---- tasks ---------------------------------------------------------------- */

/* The argument: the label, then what to do. */
typedef struct job {
  char label[32];
  int what;
  int n;
} job;

enum { J_HELLO, J_DIE_MID_LINE, J_LONG, J_NUL, J_TAGGED };

static const char *label_of(const theus_task *t, char *buf, size_t cap) {
  const job *j = theus_task_arg(t, NULL);
  snprintf(buf, cap, "%s", j->label);
  return buf;
}

static int t_print(theus_task *t) {
  const job *j = theus_task_arg(t, NULL);
  switch (j->what) {
  case J_HELLO:
    printf("hello from %s\n", j->label);
    fprintf(stderr, "err %s\n", j->label);
    for (int i = 0; i < j->n; i++) printf("%s %d\n", j->label, i);
    break;
  case J_DIE_MID_LINE:
    if (write(STDOUT_FILENO, "last words", 10) != 10) return THEUS_ESYS;
    printf(", then more words"); /* no newline; stdio alone would keep it */
    raise(SIGKILL);
    break;
  case J_LONG: {
    static char big[10000];
    memset(big, 'y', sizeof big);
    fwrite(big, 1, sizeof big, stdout);
    putchar('\n');
    for (int i = 0; i < j->n; i++) printf("line %05d of %s, padded to be long enough to matter ................\n", i,
                                          j->label);
    break;
  }
  case J_NUL:
    if (write(STDOUT_FILENO, "a\0Tbogus\0b\n", 11) != 11) return THEUS_ESYS;
    break;
  case J_TAGGED: /* a line that says which process printed it */
    for (int i = 0; i < j->n; i++) printf("tag=%s i=%d\n", j->label, i);
    fprintf(stderr, "tag=%s on stderr\n", j->label);
    break;
  }
  return 0;
}

static void open_pool(fixture *f, unsigned nworkers, int mode, int with_callback) {
  theus_pool_config cfg;
  theus_pool_config_init(&cfg);
  cfg.nworkers = nworkers;
  cfg.output = mode;
  cfg.task_label = label_of;
  if (with_callback) {
    cfg.output_fn = on_line;
    cfg.output_ud = f;
  }
  int rc = theus_pool_open(&cfg, &f->pool);
  if (rc < 0) fail_msg("theus_pool_open: %s", theus_pool_errmsg(f->pool));
}

static int run(fixture *f, const char *label, int what, int n, unsigned flags) {
  job j;
  memset(&j, 0, sizeof j);
  snprintf(j.label, sizeof j.label, "%s", label);
  j.what = what;
  j.n = n;
  theus_task_desc d = {.fn = t_print, .arg = &j, .arg_len = sizeof j, .flags = flags};
  theus_ticket tk;
  assert_int_equal(theus_pool_submit(f->pool, &d, &tk), 0);
  theus_pool_result r;
  assert_int_equal(theus_pool_wait(f->pool, tk, 30000, &r), 0);
  theus_pool_result_release(&r);
  return r.status;
}

static void close_pool(fixture *f) {
  assert_int_equal(theus_pool_close(f->pool, 0), 0);
  f->pool = NULL;
}

static const line *find(const fixture *f, const char *text) {
  for (size_t i = 0; i < f->n; i++)
    if (f->lines[i].len == strlen(text) && memcmp(f->lines[i].text, text, f->lines[i].len) == 0) return &f->lines[i];
  fail_msg("no line \"%s\" among %zu", text, f->n);
  return NULL;
}

/* ---- tests ---------------------------------------------------------------- */

/* Callback mode: lines with their worker and process, stdout and stderr,
 * in order within a stream, though stdout is not a terminal. */
static void test_callback_lines(void **state) {
  fixture *f = *state;
  open_pool(f, 1, THEUS_OUTPUT_FORWARD, 1);
  assert_int_equal(run(f, "alpha", J_HELLO, 0, 0), 0);
  assert_int_equal(run(f, "beta", J_HELLO, 3, 0), 0);
  close_pool(f);
  const line *a = find(f, "hello from alpha"), *e = find(f, "err alpha"), *b0 = find(f, "beta 0"),
             *b2 = find(f, "beta 2");
  assert_string_equal(a->process, "alpha");
  assert_string_equal(e->process, "alpha");
  assert_string_equal(b0->process, "beta");
  assert_int_equal(a->worker, 0);
  assert_true(a < b0 && b0 < b2);
  assert_int_equal(f->n, 7); /* hello + err for each, 3 numbered lines */
}

/* Forward without a callback: to the orchestrator's stderr, prefixed, and
 * nothing on its stdout. */
static void test_forward_to_stderr(void **state) {
  fixture *f = *state;
  swap_stdio(f);
  open_pool(f, 1, THEUS_OUTPUT_FORWARD, 0);
  int st = run(f, "small", J_HELLO, 2, 0);
  close_pool(f);
  char *out = swapped_text(f, 1), *err = swapped_text(f, 2);
  assert_int_equal(st, 0);
  assert_string_equal(out, "");
  assert_non_null(strstr(err, "[worker 0 process small] hello from small\n"));
  assert_non_null(strstr(err, "[worker 0 process small] err small\n"));
  assert_non_null(strstr(err, "[worker 0 process small] small 0\n[worker 0 process small] small 1\n"));
  free(out);
  free(err);
}

/* A worker killed mid-line: the bytes it wrote come out, under the process
 * that wrote them, before what its replacement prints. */
static void test_killed_mid_line(void **state) {
  fixture *f = *state;
  open_pool(f, 1, THEUS_OUTPUT_FORWARD, 1);
  assert_int_equal(run(f, "dying", J_DIE_MID_LINE, 0, 0), THEUS_ECRASH);
  assert_int_equal(run(f, "after", J_HELLO, 0, 0), 0);
  close_pool(f);
  const line *d = find(f, "last words, then more words"), *a = find(f, "hello from after");
  assert_string_equal(d->process, "dying");
  assert_string_equal(a->process, "after");
  assert_true(d < a);
}

/* Discard: nothing reaches the callback, stdout or stderr. */
static void test_discard(void **state) {
  fixture *f = *state;
  swap_stdio(f);
  open_pool(f, 2, THEUS_OUTPUT_DISCARD, 1);
  int st = run(f, "quiet", J_HELLO, 100, 0);
  close_pool(f);
  char *out = swapped_text(f, 1), *err = swapped_text(f, 2);
  assert_int_equal(st, 0);
  assert_string_equal(out, "");
  assert_string_equal(err, "");
  assert_int_equal(f->n, 0);
  free(out);
  free(err);
}

/* A line beyond THEUS_OUTPUT_LINE_MAX is cut with a marker; then 200 KiB of
 * lines, every one whole and in order. */
static void test_long_and_many(void **state) {
  fixture *f = *state;
  open_pool(f, 1, THEUS_OUTPUT_FORWARD, 1);
  enum { N = 2500 };
  assert_int_equal(run(f, "big", J_LONG, N, 0), 0);
  close_pool(f);
  assert_int_equal(f->n, N + 1);
  char want[160];
  snprintf(want, sizeof want, " [... %u more bytes cut]", 10000u - THEUS_OUTPUT_LINE_MAX);
  assert_int_equal(f->lines[0].len, THEUS_OUTPUT_LINE_MAX + strlen(want));
  assert_string_equal(f->lines[0].text + THEUS_OUTPUT_LINE_MAX, want);
  for (int i = 0; i < N; i++) {
    snprintf(want, sizeof want, "line %05d of big, padded to be long enough to matter ................", i);
    assert_string_equal(f->lines[1 + i].text, want);
    assert_string_equal(f->lines[1 + i].process, "big");
  }
}

/* NUL bytes, even followed by what looks like a marker, are text. */
static void test_nul_bytes_are_text(void **state) {
  fixture *f = *state;
  open_pool(f, 1, THEUS_OUTPUT_FORWARD, 1);
  assert_int_equal(run(f, "nul", J_NUL, 0, 0), 0);
  close_pool(f);
  assert_int_equal(f->n, 1);
  assert_int_equal(f->lines[0].len, 10);
  assert_memory_equal(f->lines[0].text, "a\0Tbogus\0b", 10);
  assert_string_equal(f->lines[0].process, "nul");
}

/* A task under the pure-process sandbox prints as well (fds 1 and 2). */
static void test_sandboxed_task_prints(void **state) {
  fixture *f = *state;
  open_pool(f, 1, THEUS_OUTPUT_FORWARD, 1);
  assert_int_equal(run(f, "pure", J_HELLO, 1, THEUS_TASK_SANDBOX), 0);
  close_pool(f);
  assert_string_equal(find(f, "hello from pure")->process, "pure");
  assert_string_equal(find(f, "pure 0")->process, "pure");
}

/* Two workers, three processes, many tasks: every line whole and credited
 * to the process that printed it. */
static void test_attribution_under_load(void **state) {
  fixture *f = *state;
  open_pool(f, 2, THEUS_OUTPUT_FORWARD, 1);
  enum { TASKS = 120, LINES = 5 };
  theus_ticket tk[TASKS];
  job j[TASKS];
  for (int i = 0; i < TASKS; i++) {
    memset(&j[i], 0, sizeof j[i]);
    snprintf(j[i].label, sizeof j[i].label, "p%d", i % 3);
    j[i].what = J_TAGGED;
    j[i].n = LINES;
    theus_task_desc d = {.fn = t_print, .arg = &j[i], .arg_len = sizeof j[i]};
    assert_int_equal(theus_pool_submit(f->pool, &d, &tk[i]), 0);
  }
  for (int i = 0; i < TASKS; i++) {
    theus_pool_result r;
    assert_int_equal(theus_pool_wait(f->pool, tk[i], 30000, &r), 0);
    assert_int_equal(r.status, 0);
  }
  close_pool(f);
  assert_int_equal(f->n, TASKS * (LINES + 1));
  for (size_t i = 0; i < f->n; i++) {
    char tag[80];
    snprintf(tag, sizeof tag, "tag=%s ", f->lines[i].process);
    if (strncmp(f->lines[i].text, tag, strlen(tag)) != 0)
      fail_msg("line \"%s\" credited to process \"%s\" (worker %d)", f->lines[i].text, f->lines[i].process,
               f->lines[i].worker);
  }
}

static void test_bad_mode(void **state) {
  fixture *f = *state;
  theus_pool_config cfg;
  theus_pool_config_init(&cfg);
  cfg.output = 7;
  assert_int_equal(theus_pool_open(&cfg, &f->pool), THEUS_EINVAL);
  assert_non_null(strstr(theus_pool_errmsg(f->pool), "output is 7"));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_callback_lines, setup, teardown),
      cmocka_unit_test_setup_teardown(test_forward_to_stderr, setup, teardown),
      cmocka_unit_test_setup_teardown(test_killed_mid_line, setup, teardown),
      cmocka_unit_test_setup_teardown(test_discard, setup, teardown),
      cmocka_unit_test_setup_teardown(test_long_and_many, setup, teardown),
      cmocka_unit_test_setup_teardown(test_nul_bytes_are_text, setup, teardown),
      cmocka_unit_test_setup_teardown(test_sandboxed_task_prints, setup, teardown),
      cmocka_unit_test_setup_teardown(test_attribution_under_load, setup, teardown),
      cmocka_unit_test_setup_teardown(test_bad_mode, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
