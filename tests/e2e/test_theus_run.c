/* End-to-end tests: the built theus-run on real pipelines.
 *
 * usage: test_theus_run THEUS_RUN PIPELINE_DIR E2E_PLUGIN DEMO_JSON BAD_PLUGIN [K/N]
 * (K/N: only part K of the tests, see `parts` at the end)
 * Every run is a fork/exec whose stdout and stderr go to memfds; the child is
 * always reaped (killed after a deadline), and theus-run's own workers die
 * with it (PR_SET_PDEATHSIG in the pool).
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

/* Test-program configuration from argv (read-only after main starts). */
static const char *theus_run, *pipe_dir, *e2e_plugin, *demo_json, *bad_plugin;

typedef struct result {
  int status; /* exit code, or 128 + signal */
  char *out, *err;
} result;

static char *slurp_fd(int fd) {
  off_t n = lseek(fd, 0, SEEK_END);
  char *buf = calloc(1, (size_t)(n > 0 ? n : 0) + 1);
  if (buf && n > 0 && pread(fd, buf, (size_t)n, 0) != n) buf[0] = '\0';
  close(fd);
  return buf;
}

static void result_free(result *r) {
  free(r->out);
  free(r->err);
  memset(r, 0, sizeof *r);
}

/* argv[64] for theus-run with args (NULL-terminated). */
static void cli_argv(const char **argv, const char *const *args) {
  size_t n = 0;
  argv[n++] = theus_run;
  for (size_t i = 0; args[i] && n < 63; i++) argv[n++] = args[i];
  argv[n] = NULL;
}

/* A theus-run started by start_cli; end_cli reaps it. */
typedef struct child {
  pid_t pid;
  int out, err;
} child;

/* Starts theus-run with args (NULL-terminated), stdout and stderr to memfds. */
static void start_cli(child *c, const char *const *args) {
  const char *argv[64];
  cli_argv(argv, args);
  c->out = memfd_create("stdout", 0);
  c->err = memfd_create("stderr", 0);
  assert_true(c->out >= 0 && c->err >= 0);
  c->pid = fork();
  assert_true(c->pid >= 0);
  if (c->pid == 0) {
    dup2(c->out, 1);
    dup2(c->err, 2);
    execv(theus_run, (char *const *)argv);
    _exit(127);
  }
}

/* Waits at most 120 s for c (then kills it) and collects its outputs. */
static void end_cli(child *c, result *r) {
  int st = 0;
  struct timespec tick = {0, 5 * 1000 * 1000};
  for (int waited = 0; waitpid(c->pid, &st, WNOHANG) == 0; waited++) {
    if (waited > 120 * 200) { /* a hung run must not outlive the test */
      kill(c->pid, SIGKILL);
      waitpid(c->pid, &st, 0);
      break;
    }
    nanosleep(&tick, NULL);
  }
  r->status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  r->out = slurp_fd(c->out);
  r->err = slurp_fd(c->err);
}

/* Runs theus-run with args (NULL-terminated), waits at most 120 s. */
static void run_cli(result *r, const char *const *args) {
  child c;
  start_cli(&c, args);
  end_cli(&c, r);
}

/* Like run_cli, with stderr on a pseudo-terminal (stdout stays a file):
 * what a user at a terminal sees. r->err gets the terminal's bytes, "\r\n"
 * turned back into "\n". */
static void run_cli_tty(result *r, const char *const *args) {
  const char *argv[64];
  cli_argv(argv, args);
  int out = memfd_create("stdout", 0), master = posix_openpt(O_RDWR | O_NOCTTY);
  assert_true(out >= 0 && master >= 0);
  assert_int_equal(grantpt(master), 0);
  assert_int_equal(unlockpt(master), 0);
  const char *slave = ptsname(master);
  assert_non_null(slave);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    setsid();
    int s = open(slave, O_RDWR);
    if (s < 0) _exit(126);
    dup2(out, 1);
    dup2(s, 2);
    close(master);
    execv(theus_run, (char *const *)argv);
    _exit(127);
  }
  size_t len = 0, cap = 1 << 16;
  char *buf = malloc(cap);
  assert_non_null(buf);
  int st = 0;
  for (int waited = 0;; waited++) { /* read until the terminal closes (EIO), 120 s at most */
    struct pollfd pf = {master, POLLIN, 0};
    if (waited > 120 * 20) {
      kill(pid, SIGKILL);
      break;
    }
    if (poll(&pf, 1, 50) <= 0) continue;
    if (len + 4096 > cap && !(buf = realloc(buf, cap *= 2))) fail_msg("out of memory");
    ssize_t k = read(master, buf + len, 4096);
    if (k <= 0) break;
    len += (size_t)k;
  }
  waitpid(pid, &st, 0);
  close(master);
  size_t w = 0;
  for (size_t i = 0; i < len; i++)
    if (!(buf[i] == '\r' && i + 1 < len && buf[i + 1] == '\n')) buf[w++] = buf[i];
  buf[w] = '\0';
  r->status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  r->out = slurp_fd(out);
  r->err = buf;
}

static void pipe_path(char *buf, size_t cap, const char *name) { snprintf(buf, cap, "%s/%s", pipe_dir, name); }

static json_t *parse(const char *text, const char *what) {
  json_error_t je;
  json_t *v = json_loads(text, 0, &je);
  if (!v) fail_msg("%s is not JSON (%s at %d:%d): %.400s", what, je.text, je.line, je.column, text);
  return v;
}

static void expect_status(const result *r, int want) {
  if (r->status != want)
    fail_msg("exit status %d, want %d\nstdout: %.2000s\nstderr: %.2000s", r->status, want, r->out, r->err);
}

static void expect_err(const result *r, const char *want) {
  if (!strstr(r->err, want)) fail_msg("stderr lacks \"%s\":\n%.2000s", want, r->err);
}

static double num_at(const json_t *root, const char *path) {
  char buf[256];
  snprintf(buf, sizeof buf, "%s", path);
  const json_t *v = root;
  for (char *save = NULL, *seg = strtok_r(buf, ".", &save); seg && v; seg = strtok_r(NULL, ".", &save))
    v = json_object_get(v, seg);
  if (!json_is_number(v)) fail_msg("%s is not a number", path);
  return json_number_value(v);
}

static json_int_t int_at(const json_t *obj, const char *key) {
  const json_t *v = json_object_get(obj, key);
  if (!json_is_integer(v)) fail_msg("%s is not an integer", key);
  return json_integer_value(v);
}

/* ---- temp directory for --state-out / --trace ------------------------------------- */

typedef struct tmp {
  char dir[64], state[96], trace[96], ledger[96];
} tmp;

static int tmp_setup(void **state) {
  tmp *t = calloc(1, sizeof *t);
  snprintf(t->dir, sizeof t->dir, "/tmp/theus-e2e-XXXXXX");
  if (!t || !mkdtemp(t->dir)) return -1;
  snprintf(t->state, sizeof t->state, "%s/state.json", t->dir);
  snprintf(t->trace, sizeof t->trace, "%s/trace.json", t->dir);
  snprintf(t->ledger, sizeof t->ledger, "%s/ledger.jsonl", t->dir);
  *state = t;
  return 0;
}

static int tmp_teardown(void **state) {
  tmp *t = *state;
  unlink(t->state);
  unlink(t->trace);
  unlink(t->ledger);
  rmdir(t->dir);
  free(t);
  return 0;
}

/* ---- tests ------------------------------------------------------------------------ */

static void test_usage(void **state) {
  (void)state;
  result r;
  run_cli(&r, (const char *[]){NULL});
  expect_status(&r, 2);
  expect_err(&r, "no pipeline file given");
  result_free(&r);
  run_cli(&r, (const char *[]){"--help", NULL});
  expect_status(&r, 0);
  assert_non_null(strstr(r.out, "usage: theus-run"));
  result_free(&r);
  run_cli(&r, (const char *[]){"--version", NULL});
  expect_status(&r, 0);
  assert_non_null(strstr(r.out, "theus-run "));
  result_free(&r);
  run_cli(&r, (const char *[]){"--workers", "many", "x.json", NULL});
  expect_status(&r, 2);
  expect_err(&r, "--workers");
  result_free(&r);
  run_cli(&r, (const char *[]){"--bogus", "x.json", NULL});
  expect_status(&r, 2);
  result_free(&r);
  run_cli(&r, (const char *[]){"/nonexistent/p.json", NULL});
  expect_status(&r, 2);
  expect_err(&r, "/nonexistent/p.json:0:0: cannot open");
  result_free(&r);
}

/* The trace has one complete event per task, on the row of the worker that ran it. */
static void check_trace(const char *file, const json_t *stats) {
  json_error_t je;
  json_t *tr = json_load_file(file, 0, &je);
  if (!tr) fail_msg("trace %s: %s", file, je.text);
  json_t *events = json_object_get(tr, "traceEvents");
  assert_true(json_is_array(events));
  const json_t *pool = json_object_get(stats, "pool");
  const json_t *per = json_object_get(pool, "per_worker");
  size_t nworkers = json_array_size(per);
  json_int_t *per_tid = calloc(nworkers + 1, sizeof *per_tid);
  size_t i;
  json_t *ev;
  json_array_foreach(events, i, ev) {
    if (strcmp(json_string_value(json_object_get(ev, "ph")), "X") != 0) continue;
    json_int_t tid = int_at(ev, "tid");
    assert_int_equal(tid, int_at(json_object_get(ev, "args"), "worker") + 1);
    assert_true(tid >= 0 && (size_t)tid <= nworkers);
    assert_true(json_number_value(json_object_get(ev, "dur")) >= 0);
    per_tid[tid]++;
  }
  json_int_t in_pool = 0;
  for (size_t w = 0; w < nworkers; w++) {
    assert_int_equal(per_tid[w + 1], int_at(json_array_get(per, w), "tasks"));
    in_pool += per_tid[w + 1];
  }
  assert_int_equal(in_pool, int_at(pool, "completed"));
  assert_true(per_tid[0] >= 1); /* the local runs (finish, normalize) */
  free(per_tid);
  json_decref(tr);
}

static void test_demo(void **state) {
  tmp *t = *state;
  result r;
  run_cli(&r, (const char *[]){"--workers", "2", "--stats", "--state-out", t->state, "--trace", t->trace, demo_json,
                               NULL});
  expect_status(&r, 0);
  json_t *out = parse(r.out, "stdout");
  assert_true(json_is_true(json_object_get(json_object_get(out, "check"), "ok")));
  assert_float_equal(num_at(out, "raw.mean"), 5.0, 0.01);
  assert_float_equal(num_at(out, "raw.std"), 2.8868, 0.005);
  assert_float_equal(num_at(out, "median"), 5.0, 0.01);
  assert_float_equal(num_at(out, "normalized.std"), 1.0, 0.001);
  assert_int_equal((json_int_t)num_at(out, "iterations"), 17); /* log2(8 / 1e-4) rounded up */
  json_error_t je;
  json_t *saved = json_load_file(t->state, 0, &je);
  assert_non_null(saved);
  assert_true(json_equal(saved, out));
  json_t *stats = parse(r.err, "--stats on stderr");
  assert_int_equal(int_at(json_object_get(stats, "pool"), "workers"), 2);
  assert_int_equal(int_at(json_object_get(stats, "pool"), "failed"), 0);
  assert_true(int_at(json_object_get(stats, "arena"), "bytes_live") >= 64 << 20);
  assert_true(int_at(json_object_get(stats, "pipeline"), "ops") > 17 * 4);
  assert_true(int_at(json_object_get(stats, "engine"), "version") > 1);
  /* all workers did real work */
  size_t w;
  json_t *pw;
  json_array_foreach(json_object_get(json_object_get(stats, "pool"), "per_worker"), w, pw)
    assert_true(int_at(pw, "tasks") > 0);
  check_trace(t->trace, stats);
  json_decref(saved);
  json_decref(stats);
  json_decref(out);
  result_free(&r);
}

static void test_step_kinds(void **state) {
  (void)state;
  char path[512];
  pipe_path(path, sizeof path, "steps.json");
  result r;
  run_cli(&r, (const char *[]){"--plugin", e2e_plugin, "--stats", path, NULL});
  expect_status(&r, 0);
  json_t *d = parse(r.out, "stdout");
  assert_int_equal(int_at(d, "counter"), 15);
  assert_int_equal(int_at(d, "last"), 5); /* a run step's return value stored "into" */
  assert_int_equal(int_at(d, "a"), 1);    /* the parallel group committed each member */
  assert_string_equal(json_string_value(json_object_get(d, "b")), "two");
  assert_int_equal(json_integer_value(json_array_get(json_object_get(d, "c"), 0)), 3);
  assert_float_equal(num_at(d, "total"), 500500, 0);
  json_t *parts = json_object_get(d, "parts");
  assert_int_equal(json_array_size(parts), 3);
  double sum = 0;
  for (size_t i = 0; i < 3; i++) sum += json_number_value(json_array_get(parts, i));
  assert_float_equal(sum, 500500, 0);
  assert_string_equal(json_string_value(json_object_get(d, "branch")), "then");
  assert_null(json_object_get(d, "never"));
  assert_true(json_is_true(json_object_get(d, "else_ran")));
  assert_int_equal(int_at(d, "i"), 10);
  assert_int_equal(int_at(d, "expr"), 21);
  json_t *stats = parse(r.err, "--stats");
  /* run 1, parallel 3, maps 2, ifs 3 + 2 branches, while 1 + 10 x (2 + 1), set 1 */
  assert_int_equal(int_at(json_object_get(stats, "pipeline"), "ops"), 43);
  json_decref(stats);
  json_decref(d);
  result_free(&r);
}

static void test_set_and_quiet_stderr(void **state) {
  (void)state;
  char path[512];
  pipe_path(path, sizeof path, "steps.json");
  result r;
  run_cli(&r, (const char *[]){"--plugin", e2e_plugin, "--set", "domain.flag=false", "--set", "domain.note=hello",
                               "--set", "domain.deep.x=[1,2]", path, NULL});
  expect_status(&r, 0);
  assert_string_equal(r.err, ""); /* not a terminal: no progress line, no summary */
  json_t *d = parse(r.out, "stdout");
  assert_string_equal(json_string_value(json_object_get(d, "branch")), "else");
  assert_string_equal(json_string_value(json_object_get(d, "note")), "hello");
  assert_int_equal(json_array_size(json_object_get(json_object_get(d, "deep"), "x")), 2);
  assert_null(json_object_get(d, "else_ran")); /* not flag is true now: the empty then ran */
  json_decref(d);
  result_free(&r);
  run_cli(&r, (const char *[]){"--plugin", e2e_plugin, "--set", "counter=1", path, NULL});
  expect_status(&r, 2);
  expect_err(&r, "--set counter");
  result_free(&r);
}

/* The library names its API calls; theus-run shows its own flags instead. */
static void test_cli_names_its_flags(void **state) {
  (void)state;
  char path[512];
  pipe_path(path, sizeof path, "steps.json");
  result r;
  run_cli(&r, (const char *[]){"--plugin", "/nonexistent/plugin.so", path, NULL});
  expect_status(&r, 2);
  expect_err(&r, "--plugin /nonexistent/plugin.so: cannot load it");
  assert_null(strstr(r.err, "theus_pipeline_add_plugin"));
  assert_null(strstr(r.err, "ninja"));
  result_free(&r);
}

static void test_ffi_types(void **state) {
  (void)state;
  char path[512];
  pipe_path(path, sizeof path, "ffi.json");
  result r;
  run_cli(&r, (const char *[]){"--plugin", e2e_plugin, path, NULL});
  expect_status(&r, 0);
  json_t *d = parse(r.out, "stdout");
  json_t *res = json_object_get(d, "r");
  static const struct {
    const char *key;
    json_int_t want;
  } ints[] = {{"u8", 255}, {"u16", 65535}, {"u32", 4294967295LL}, {"u64", INT64_MAX}, {"i8", -127},
              {"i16", -32767}, {"i32", -2147483647LL}, {"i64", INT64_MIN + 1}, {"lit", -6}, {"sum_s", -50},
              {"sum_b", 525}, {"sum_sat", 43860}, {"sum_v", 30}};
  for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
    if (!json_is_integer(json_object_get(res, ints[i].key))) fail_msg("r.%s is not an integer", ints[i].key);
    if (int_at(res, ints[i].key) != ints[i].want)
      fail_msg("r.%s = %lld, want %lld", ints[i].key, (long long)int_at(res, ints[i].key), (long long)ints[i].want);
  }
  assert_float_equal(num_at(res, "f32"), 2.5, 0);
  assert_float_equal(num_at(res, "f64"), 3.25, 0);
  assert_float_equal(num_at(res, "sum_d"), 2475, 0);
  assert_float_equal(num_at(res, "sum_d_map"), 2475, 0); /* a typed function over map slices */
  json_decref(d);
  result_free(&r);
}

static void test_ffi_range_error(void **state) {
  (void)state;
  char path[512];
  pipe_path(path, sizeof path, "ffi.json");
  result r;
  run_cli(&r, (const char *[]){"--plugin", e2e_plugin, "--set", "domain.u8=256", path, NULL});
  expect_status(&r, 1);
  expect_err(&r, "ffi.json:");
  expect_err(&r, "steps[0] (run \"inc_u8\")");
  expect_err(&r, "domain.u8 (argument 1) = 256 is out of range for u8");
  result_free(&r);
}

/* Issue 15 item 1: a parallel process prints under 4 KiB, then over 64 KiB,
 * with stdout not a terminal: every line reaches stderr, prefixed, and stdout
 * holds only the final state, which parses. */
static void test_worker_output(void **state) {
  (void)state;
  char path[512];
  pipe_path(path, sizeof path, "output.json");
  result r;
  run_cli(&r, (const char *[]){"--plugin", e2e_plugin, path, NULL});
  expect_status(&r, 0);
  json_t *d = parse(r.out, "stdout");
  assert_int_equal(int_at(d, "counter"), 1);
  json_decref(d);
  expect_err(&r, " process chatty] chatty 0 xxxxxxxxxxx\n");
  expect_err(&r, " process chatty] chatty 2 xxxxxxxxxxx\n");
  expect_err(&r, " process chatty] chatty on stderr\n");
  expect_err(&r, " process chatty] no newline at the end");
  expect_err(&r, " process chatty] chatty 1999 xxx");
  size_t lines = 0, bytes = strlen(r.err);
  for (const char *p = r.err; *p; p = strchr(p, '\n') + 1) { /* every line of stderr is a whole, prefixed line */
    const char *q = p + strspn(p, "[worker 0123456789");
    if (strncmp(p, "[worker ", 8) != 0 || strncmp(q - 1, " process chatty] ", 17) != 0 || !strchr(p, '\n'))
      fail_msg("unprefixed or torn line: %.120s", p);
    lines++;
  }
  assert_true(lines >= 2000 + 3 + 2);
  assert_true(bytes > 64 * 1024);
  result_free(&r);
}

/* Issue 15 item 3: on a terminal the progress line refreshes during a map
 * (slices done / total, rate, ETA) and every forwarded worker line stands
 * whole on its own line, never glued to a frame; without a terminal there
 * is no progress at all. */
static void test_progress_on_a_terminal(void **state) {
  (void)state;
  char path[512];
  pipe_path(path, sizeof path, "progress.json");
  result r;
  run_cli_tty(&r, (const char *[]){"--plugin", e2e_plugin, path, NULL});
  expect_status(&r, 0);
  json_t *d = parse(r.out, "stdout");
  assert_int_equal((json_int_t)num_at(d, "naps"), 12);
  json_decref(d);
  int frames = 0, map_frames = 0, eta = 0, said[12] = {0};
  /* segments: between "\r\033[K" (a frame is redrawn or cleared) and "\n" */
  for (char *p = r.err; *p;) {
    size_t k = strcspn(p, "\r\n");
    char seg[512];
    snprintf(seg, sizeof seg, "%.*s", (int)(k < sizeof seg ? k : sizeof seg - 1), p);
    p += k;
    if (*p == '\r') {
      if (strncmp(p, "\r\033[K", 4) != 0) fail_msg("a bare carriage return in:\n%s", r.err);
      p += 4;
    } else if (*p == '\n') {
      p++;
    }
    unsigned w, slice;
    char tail[32];
    if (!seg[0]) continue;
    if (!strncmp(seg, "theus-run: step ", 16)) {
      frames++;
      if (strstr(seg, "[worker")) fail_msg("a worker line glued to a frame: %s", seg);
      if (strstr(seg, "/12 slices")) map_frames++;
      if (strstr(seg, "/s, ETA ")) eta++;
    } else if (sscanf(seg, "[worker %u process nap] nap of slice %u %31s", &w, &slice, tail) == 3 && w < 2 &&
               slice < 12 && !strcmp(tail, "begins")) {
      said[slice]++;
    } else if (strncmp(seg, "theus-run: done, 2 operations", 29) != 0) {
      fail_msg("unexpected on the terminal: \"%s\"", seg);
    }
  }
  for (int i = 0; i < 12; i++) assert_int_equal(said[i], 1);
  assert_true(frames > 0);
  assert_true(map_frames > 0); /* the map is 1.5 s long at least: the 10 Hz timer draws during it */
  assert_true(eta > 0);
  result_free(&r);
  /* not a terminal: the worker lines, nothing else */
  run_cli(&r, (const char *[]){"--plugin", e2e_plugin, path, NULL});
  expect_status(&r, 0);
  assert_null(strstr(r.err, "theus-run: step"));
  assert_null(strchr(r.err, '\r'));
  expect_err(&r, " process nap] nap of slice 11 begins\n");
  result_free(&r);
}

/* Issue 15 item 4: a non-finite result fails the step, naming the process
 * and the path (in a worker, and in the reducer of a map); before, the
 * output went missing and theus-run exited 0. */
static void test_nonfinite_result(void **state) {
  (void)state;
  char path[512];
  pipe_path(path, sizeof path, "nonfinite.json");
  result r;
  run_cli(&r, (const char *[]){"--plugin", e2e_plugin, path, NULL});
  expect_status(&r, 1);
  expect_err(&r, "steps[0] (run \"sum_n\")");
  expect_err(&r, "process 'sum_n' failed: the function returned inf for domain.sum");
  json_t *d = parse(r.out, "stdout");
  assert_null(json_object_get(d, "sum"));
  json_decref(d);
  result_free(&r);
  run_cli(&r, (const char *[]){"--plugin", e2e_plugin, "--set", "domain.n=1", path, NULL});
  expect_status(&r, 1);
  expect_err(&r, "steps[1] (map \"sum_n\")");
  expect_err(&r, "reducer 'sum' cannot combine the result of slice 1 (1e+308 + 1e+308 is not a "
                                "finite number");
  d = parse(r.out, "stdout");
  assert_true(num_at(d, "sum") == 1e308);
  assert_null(json_object_get(d, "total"));
  json_decref(d);
  result_free(&r);
}

/* Issue 15 item 6: a parallel group's members commit on their own, outputs
 * and "into" alike, although the first member fails; the step fails with it
 * and nothing after the group runs. */
static void test_parallel_group_commits(void **state) {
  (void)state;
  char path[512];
  pipe_path(path, sizeof path, "parallel_fail.json");
  result r;
  run_cli(&r, (const char *[]){"--plugin", e2e_plugin, path, NULL});
  expect_status(&r, 1);
  expect_err(&r, "step steps[0].parallel[0] (run \"crash\") failed");
  json_t *d = parse(r.out, "stdout");
  assert_int_equal((json_int_t)num_at(d, "a"), 1);
  assert_int_equal((json_int_t)num_at(d, "b"), 2);
  assert_true(num_at(d, "wa") >= 0 && num_at(d, "wa") < 2); /* put returns its worker's index */
  assert_true(num_at(d, "wb") >= 0 && num_at(d, "wb") < 2);
  assert_null(json_object_get(d, "never"));
  json_decref(d);
  result_free(&r);
}

/* Issue 15 item 4: a length bound to a domain value never reads past its array. */
static void test_ffi_length_checked(void **state) {
  (void)state;
  char path[512];
  pipe_path(path, sizeof path, "ffi_len.json");
  result r;
  run_cli(&r, (const char *[]){"--plugin", e2e_plugin, path, NULL});
  expect_status(&r, 1);
  expect_err(&r, "steps[0] (run \"sum_n\")");
  expect_err(&r, "argument 2 (domain.n = 1000000) is the length of argument 1, heavy.d, which has "
                                "100 elements: the function would read past the array");
  json_t *d = parse(r.out, "stdout");
  assert_null(json_object_get(d, "sum")); /* nothing committed */
  json_decref(d);
  result_free(&r);
  /* the whole array is fine for the run step, but a map slice has 25 rows */
  run_cli(&r, (const char *[]){"--plugin", e2e_plugin, "--set", "domain.n=100", path, NULL});
  expect_status(&r, 1);
  expect_err(&r, "steps[1] (map \"sum_n\")");
  expect_err(&r, "which has 25 elements in this slice");
  d = parse(r.out, "stdout");
  assert_int_equal((json_int_t)num_at(d, "sum"), 4950);
  json_decref(d);
  result_free(&r);
  run_cli(&r, (const char *[]){"--plugin", e2e_plugin, "--set", "domain.n=20", path, NULL});
  expect_status(&r, 0);
  d = parse(r.out, "stdout");
  assert_int_equal((json_int_t)num_at(d, "sum"), 190);
  /* slices start at 0, 25, 50, 75: each sums its first 20 rows */
  assert_int_equal((json_int_t)num_at(d, "sum_map"), 190 + (190 + 500) + (190 + 1000) + (190 + 1500));
  json_decref(d);
  result_free(&r);
}

static void test_pipeline_errors(void **state) {
  (void)state;
  static const struct {
    const char *file, *where, *what;
  } cases[] = {
      {"syntax.json", ":3:19: ", "invalid JSON"},
      {"unknown_key.json", ":3:20: ", "unknown key \"argz\" in a run step; did you mean \"args\"?"},
      {"unknown_process.json", ":5:13: ", "unknown process \"subtract\"; register it"}, /* nothing close */
      {"misspelled_process.json", ":5:13: ", "unknown process \"slice_summ\"; did you mean \"slice_sum\"?"},
      {"misspelled_kind.json", ":4:5: ", "this step has no kind; did you mean \"run\" (not \"rnu\")?"},
      {"wrong_type.json", ":2:13: ", "\"budget\" must be an integer"},
      {"missing_field.json", ":4:5: ", "missing \"into\""},
      {"bad_expr.json", ":4:26: ", "in expression \"domain.i <> 3\": unexpected '>'"},
      {"bad_binding.json", ":4:15: ", "a pointer argument needs heavy.KEY"},
      {"missing_plugin.json", ":2:15: ", "cannot load it"},
      {"unknown_reducer.json", ":5:16: ", "unknown reducer \"average\""},
      {"bad_heavy.json", ":3:25: ", "unknown dtype \"f16\""},
      {"two_kinds.json", ":4:5: ", "has both \"run\" and \"set\""},
      {"missing_symbol.json", ":3:33: ", "no plugin exports the C function \"e2e_does_not_exist\""},
      {"not_parallel_map.json", ":5:13: ", "process \"add\" is not parallel"},
      {"bad_not_lengths.json", ":5:21: ", "\"not_lengths\" names argument 1"},
      {"too_many_workers.json", ":2:14: ", "\"workers\" must be an integer from -1 to 256"},
      {"bad_arena.json", ":2:23: ", "\"arena\" \"budget\": size \"8 gigs\": unknown unit"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char path[512], want[600];
    snprintf(path, sizeof path, "%s/errors/%s", pipe_dir, cases[i].file);
    snprintf(want, sizeof want, "theus-run: %s%s", path, cases[i].where);
    result r;
    run_cli(&r, (const char *[]){"--plugin", e2e_plugin, path, NULL});
    if (r.status != 2 || strncmp(r.err, want, strlen(want)) != 0 || !strstr(r.err, cases[i].what))
      fail_msg("%s: exit %d, stderr:\n%s\nwant exit 2 and a message starting:\n%s... %s", cases[i].file, r.status,
               r.err, want, cases[i].what);
    assert_string_equal(r.out, ""); /* nothing ran, no state printed */
    result_free(&r);
  }
}

/* Issue 15 item 7: mistakes found before anything runs, each saying what it
 * is: a directory as the pipeline (not "invalid JSON"), a --trace or
 * --state-out file that could not be written at the end. */
static void test_refused_before_the_run(void **state) {
  (void)state;
  char path[512], missing[600];
  pipe_path(path, sizeof path, "vector.json");
  snprintf(missing, sizeof missing, "%s/no-such-dir/trace.json", pipe_dir);
  static const struct {
    const char *flag, *needle;
  } cases[] = {{"--trace", "/no-such-dir/trace.json: cannot write there (No such file or directory); nothing ran"},
               {"--state-out", ": cannot write there (it is a directory); nothing ran"}};
  for (size_t i = 0; i < 2; i++) {
    result r;
    run_cli(&r, (const char *[]){cases[i].flag, i == 0 ? missing : pipe_dir, path, NULL});
    expect_status(&r, 2);
    if (!strstr(r.err, cases[i].needle) || !strstr(r.err, cases[i].flag))
      fail_msg("%s: stderr:\n%s\nlacks \"%s\"", cases[i].flag, r.err, cases[i].needle);
    assert_string_equal(r.out, "");
    result_free(&r);
  }
  result r;
  run_cli(&r, (const char *[]){pipe_dir, NULL});
  expect_status(&r, 2);
  expect_err(&r, "is a directory, not a pipeline file");
  assert_null(strstr(r.err, "invalid JSON"));
  result_free(&r);
  /* a plugin registration failing on its own: a cause, not an empty message */
  pipe_path(path, sizeof path, "fail.json");
  setenv("E2E_REGISTER_FAIL", "7", 1);
  run_cli(&r, (const char *[]){"--plugin", e2e_plugin, path, NULL});
  unsetenv("E2E_REGISTER_FAIL");
  expect_status(&r, 2);
  expect_err(&r, "theus_plugin_register failed: it returned 7 (not a THEUS_E* code) and no engine "
                                "call in it failed, so the cause is the plugin's own code");
  result_free(&r);
}

static void test_crash_exits_1(void **state) {
  (void)state;
  char path[512];
  pipe_path(path, sizeof path, "crash.json");
  result r;
  run_cli(&r, (const char *[]){"--plugin", e2e_plugin, path, NULL});
  expect_status(&r, 1);
  expect_err(&r, "crash.json:6:5: step steps[1] (run \"crash\") failed");
  expect_err(&r, "SIGSEGV");
  json_t *d = parse(r.out, "stdout"); /* the state as the failure left it */
  assert_int_equal(int_at(d, "counter"), 1);
  json_decref(d);
  result_free(&r);
}

static void test_failing_step(void **state) {
  (void)state;
  char path[512];
  pipe_path(path, sizeof path, "fail.json");
  result r;
  run_cli(&r, (const char *[]){"--plugin", e2e_plugin, path, NULL});
  expect_status(&r, 1);
  expect_err(&r, "step steps[0] (run \"refuse\") failed");
  expect_err(&r, "refused on purpose: the input is not ready");
  result_free(&r);
}

static void test_while_budget(void **state) {
  (void)state;
  static const struct {
    const char *file, *where, *msg;
  } cases[] = {{"loop.json", "loop.json:5:5: ", "operation budget of 50 exhausted"},
               {"loop_default.json", "loop_default.json:4:5: ", "operation budget of 10000 exhausted"}};
  for (size_t i = 0; i < 2; i++) {
    char path[512];
    pipe_path(path, sizeof path, cases[i].file);
    result r;
    run_cli(&r, (const char *[]){"--stats", path, NULL});
    expect_status(&r, 1);
    expect_err(&r, cases[i].msg);
    expect_err(&r, cases[i].where); /* the while step */
    expect_err(&r, "\"ops\": ");
    result_free(&r);
  }
}

/* ---- code that crashes or exits inside theus-run (issue 10) ------------------------- */

/* Runs pipeline `file` with the bad plugin and E2E_BAD=bad (NULL: unset). */
static void run_bad(result *r, const char *bad, const char *file) {
  char path[512];
  pipe_path(path, sizeof path, file);
  if (bad) setenv("E2E_BAD", bad, 1);
  run_cli(r, (const char *[]){"--plugin", bad_plugin, path, NULL});
  unsetenv("E2E_BAD");
}

static void test_plugin_register_segv_is_named(void **state) {
  (void)state;
  result r;
  run_bad(&r, "segv", "segv_local.json");
  expect_status(&r, 128 + SIGSEGV); /* re-raised with the default action */
  expect_err(&r, "theus-run: plugin ");
  expect_err(&r, "e2e_bad_plugin.so crashed with SIGSEGV in theus_plugin_register");
  result_free(&r);
}

static void test_plugin_register_exit_is_named_and_4(void **state) {
  (void)state;
  result r;
  run_bad(&r, "exit", "segv_local.json");
  expect_status(&r, 4);
  expect_err(&r, "e2e_bad_plugin.so called exit(3) in theus_plugin_register; theus-run exits with 4");
  result_free(&r);
}

static void test_local_process_segv_is_named(void **state) {
  (void)state;
  result r;
  run_bad(&r, NULL, "segv_local.json");
  expect_status(&r, 128 + SIGSEGV);
  expect_err(&r, "theus-run: process \"segv_local\" crashed with SIGSEGV (it runs in theus-run itself");
  result_free(&r);
}

static void test_local_process_exit_is_named_and_4(void **state) {
  (void)state;
  result r;
  run_bad(&r, NULL, "exit_local.json");
  expect_status(&r, 4);
  expect_err(&r, "theus-run: process \"exit_local\" called exit(3) (it runs in theus-run itself");
  result_free(&r);
}

/* The engine cannot open (an arena of 9000 TiB needs twice that of address
 * space): an environment error, exit 3, never 1 (a failed step). */
static void test_engine_open_failure_exits_3(void **state) {
  (void)state;
  char path[512];
  pipe_path(path, sizeof path, "big.json");
  result r;
  run_cli(&r, (const char *[]){"--arena-budget", "9000TiB", path, NULL});
  expect_status(&r, 3);
  expect_err(&r, "cannot open the engine");
  assert_string_equal(r.out, "");
  result_free(&r);
}

static void test_unwritable_output_exits_3(void **state) {
  (void)state;
  char path[512];
  pipe_path(path, sizeof path, "steps.json");
  result r;
  /* /dev/full passes the check before the run (a path that cannot be
   * written there is exit 2, test_refused_before_the_run) and fails
   * the write at the end with ENOSPC */
  run_cli(&r, (const char *[]){"--state-out", "/dev/full", "--plugin", e2e_plugin, path, NULL});
  expect_status(&r, 3);
  expect_err(&r, "cannot write /dev/full");
  result_free(&r);
  pipe_path(path, sizeof path, "fail.json"); /* a failed step wins over the output error */
  run_cli(&r, (const char *[]){"--state-out", "/dev/full", "--plugin", e2e_plugin, path, NULL});
  expect_status(&r, 1);
  result_free(&r);
}

/* A 128 MiB array: fine with the file's "arena" (or the machine's default),
 * refused with a message naming the field, its flag and a value that fits when
 * single_limit is the seed's 100 MiB; the flags override the file. */
static void test_arena_sizes(void **state) {
  (void)state;
  char big[512], sized[512];
  pipe_path(big, sizeof big, "big.json");
  pipe_path(sized, sizeof sized, "big_arena.json");
  result r;
  run_cli(&r, (const char *[]){"--stats", sized, NULL});
  expect_status(&r, 0);
  json_t *stats = parse(strchr(r.err, '{'), "--stats");
  assert_int_equal(int_at(json_object_get(stats, "arena"), "bytes_live"), 128 << 20);
  json_decref(stats);
  result_free(&r);
  run_cli(&r, (const char *[]){big, NULL}); /* the default budget follows the machine, single_limit = budget */
  expect_status(&r, 0);
  result_free(&r);
  static const char *const too_big[] = {
      "big.json:4:13: cannot allocate heavy.big (128MiB)",
      "exceeds the single-allocation limit of 104857600 bytes (100MiB)",
      "raise theus_arena_config.single_limit to at least 128MiB",
      "in this pipeline set \"arena\": {\"single_limit\": \"128MiB\"}",
      "(or run theus-run with --arena-single-limit 128MiB)"};
  run_cli(&r, (const char *[]){"--arena-single-limit", "100MiB", big, NULL});
  expect_status(&r, 3); /* an array the arena cannot hold: not a failed step (1) */
  for (size_t i = 0; i < sizeof too_big / sizeof too_big[0]; i++)
    if (!strstr(r.err, too_big[i])) fail_msg("stderr lacks \"%s\":\n%s", too_big[i], r.err);
  result_free(&r);
  run_cli(&r, (const char *[]){"--arena-single-limit", "100MiB", sized, NULL}); /* the flag beats the file */
  expect_status(&r, 3);
  expect_err(&r, "--arena-single-limit 128MiB");
  result_free(&r);
  run_cli(&r, (const char *[]){"--arena-budget", "100MiB", sized, NULL});
  expect_status(&r, 3);
  expect_err(&r, "global budget exceeded");
  expect_err(&r, "\"arena\": {\"budget\": \"128MiB\"} (or run theus-run with --arena-budget 128MiB)");
  result_free(&r);
  run_cli(&r, (const char *[]){"--arena-budget", "8G", big, NULL});
  expect_status(&r, 2);
  expect_err(&r, "--arena-budget: size \"8G\": the unit 'G' is ambiguous");
  result_free(&r);
  run_cli(&r, (const char *[]){"--arena-single-limit", "0", big, NULL});
  expect_status(&r, 2);
  expect_err(&r, "--arena-single-limit must be at least 1 bytes");
  result_free(&r);
}

static int pool_workers(const char *err) {
  json_t *stats = parse(strchr(err, '{'), "--stats");
  int n = (int)int_at(json_object_get(stats, "pool"), "workers");
  json_decref(stats);
  return n;
}

/* The file's "workers" is the default, --workers decides; above the pool's
 * limit is refused by theus-run itself, before any engine opens. */
static void test_workers(void **state) {
  (void)state;
  char path[512];
  pipe_path(path, sizeof path, "workers.json");
  result r;
  run_cli(&r, (const char *[]){"--stats", path, NULL});
  expect_status(&r, 0);
  assert_int_equal(pool_workers(r.err), 1);
  result_free(&r);
  run_cli(&r, (const char *[]){"--stats", "--workers", "2", path, NULL});
  expect_status(&r, 0);
  assert_int_equal(pool_workers(r.err), 2);
  result_free(&r);
  run_cli(&r, (const char *[]){"--workers", "257", path, NULL});
  expect_status(&r, 2);
  expect_err(&r, "theus-run: --workers wants an integer from -1 to 256");
  expect_err(&r, "THEUS_POOL_MAX_WORKERS), not '257'");
  assert_string_equal(r.out, "");
  result_free(&r);
  run_cli(&r, (const char *[]){"--workers", "256", "--help", NULL}); /* the limit itself is accepted */
  expect_status(&r, 0);
  result_free(&r);
}

/* Numeric glue in expressions: an element-wise Newton iteration converging
 * on max(abs(new - old)) < tol, indexing, sum, len; mismatched arrays and
 * array work against the budget fail the run with clear messages. */
static void test_map_into(void **state) {
  (void)state;
  char path[512];
  pipe_path(path, sizeof path, "map_into.json");
  result r;
  run_cli(&r, (const char *[]){"--plugin", e2e_plugin, path, NULL});
  expect_status(&r, 0);
  json_t *d = parse(r.out, "stdout");
  assert_float_equal(num_at(d, "doubled"), 100000.0 * 100001.0, 0); /* 2 * sum(1..100000) */
  assert_int_equal(int_at(d, "rows"), 100000);
  assert_float_equal(num_at(d, "wide"), 3 * 50000.0 * 100001.0, 0);
  assert_float_equal(num_at(d, "bins"), 50000.0 * 100001.0, 0); /* the four bins hold every value once */
  assert_float_equal(num_at(d, "ramp"), 4999.0 * 5000.0 / 2, 0); /* run steps filling new arrays */
  assert_float_equal(num_at(d, "ramp2"), 4999.0 * 5000.0, 0);
  json_decref(d);
  result_free(&r);
}

static void test_vector_expressions(void **state) {
  (void)state;
  char path[512];
  pipe_path(path, sizeof path, "vector.json");
  result r;
  run_cli(&r, (const char *[]){"--stats", path, NULL});
  expect_status(&r, 0);
  json_t *d = parse(r.out, "stdout");
  assert_true(json_is_true(json_object_get(json_object_get(d, "check"), "ok")));
  json_t *x = json_object_get(d, "new");
  assert_int_equal(json_array_size(x), 4);
  assert_float_equal(json_number_value(json_array_get(x, 1)), 3, 1e-12);
  assert_float_equal(json_number_value(json_array_get(x, 3)), 0.5, 1e-12);
  assert_float_equal(num_at(d, "norm"), sqrt(21.25), 1e-9); /* sqrt(2 + 9 + 10 + 0.25) */
  assert_int_equal(int_at(d, "trace"), 5);
  assert_float_equal(num_at(d, "mean"), 5.3125, 0);
  assert_int_equal(json_integer_value(json_array_get(json_object_get(d, "row"), 1)), 402);
  json_decref(d);
  result_free(&r);
  pipe_path(path, sizeof path, "vector_mismatch.json");
  run_cli(&r, (const char *[]){path, NULL});
  expect_status(&r, 1);
  expect_err(&r, "vector_mismatch.json:6:32: step steps[1]: \"if\" expression "
                                "\"max(abs(domain.new - domain.old)) < domain.tol\": '-' needs arrays of equal length, "
                                "found arrays of length 4 and 3");
  result_free(&r);
  pipe_path(path, sizeof path, "vector_budget.json");
  run_cli(&r, (const char *[]){path, NULL}); /* 3 elements: one operation */
  expect_status(&r, 0);
  result_free(&r);
  char *big = malloc(16 + 2 * 3000);
  char *w = big + sprintf(big, "domain.v=[");
  for (int i = 0; i < 3000; i++) w += sprintf(w, "%s1", i ? "," : "");
  strcpy(w, "]");
  run_cli(&r, (const char *[]){"--set", big, path, NULL}); /* 6000 elements: 5 more operations than it has */
  expect_status(&r, 1);
  expect_err(&r, "operation budget of 3 exhausted at step steps[0] (its expression visited 6000 array "
                                "elements, 5 operations)");
  free(big);
  result_free(&r);
}

/* SIGINT or SIGTERM to theus-run in the middle of a map: the map is canceled
 * (its workers killed), the state committed before it is written to
 * --state-out, theus-run exits 128 + signal and leaves no process behind (this
 * test is a subreaper, so anything left would be its child; the arena is a
 * memfd and goes with the last process that maps it). */
static void test_signal_cancels_map(void **state) {
  tmp *t = *state;
  char pipe[128], mark[128];
  snprintf(pipe, sizeof pipe, "%s/sig.json", t->dir);
  snprintf(mark, sizeof mark, "%s/mark", t->dir);
  FILE *f = fopen(pipe, "w");
  assert_non_null(f);
  fprintf(f, "{\"workers\": 2, \"domain\": {\"counter\": 0},\n"
             " \"heavy\": {\"values\": {\"dtype\": \"f64\", \"shape\": [8], \"fill\": \"zeros\"}},\n"
             " \"steps\": [{\"run\": \"add\"},\n"
             "  {\"map\": \"nap_mark\", \"over\": \"heavy.values\", \"slices\": 8,\n"
             "   \"args\": {\"ms\": 600000, \"mark\": \"%s\"}, \"reduce\": \"sum\", \"into\": \"domain.naps\"}]}\n",
          mark);
  fclose(f);
  assert_int_equal(prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0), 0);
  static const int sigs[] = {SIGINT, SIGTERM};
  for (size_t k = 0; k < 2; k++) {
    unlink(mark);
    unlink(t->state);
    child c;
    start_cli(&c, (const char *[]){"--plugin", e2e_plugin, "--state-out", t->state, pipe, NULL});
    struct stat sb;
    struct timespec tick = {0, 5 * 1000 * 1000};
    for (int waited = 0; stat(mark, &sb) != 0 || sb.st_size == 0; waited++) {
      if (waited > 60 * 200) kill(c.pid, SIGKILL); /* end_cli reaps it; the status check fails */
      if (waited > 60 * 200) break;
      nanosleep(&tick, NULL);
    }
    kill(c.pid, sigs[k]);
    result r;
    end_cli(&c, &r);
    expect_status(&r, 128 + sigs[k]);
    expect_err(&r, "step steps[1] (map \"nap_mark\") failed: canceled");
    json_error_t je;
    json_t *saved = json_load_file(t->state, 0, &je);
    assert_non_null(saved);
    assert_int_equal(int_at(saved, "counter"), 1); /* the step before the map */
    assert_null(json_object_get(saved, "naps"));
    json_decref(saved);
    int st;
    assert_int_equal(waitpid(-1, &st, WNOHANG), -1); /* no forksrv, no worker left */
    assert_int_equal(errno, ECHILD);
    result_free(&r);
  }
  unlink(mark);
  unlink(pipe);
  prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0);
}

/* Rewrites the ledger with entry `at` (0-based) changed by edit, and the
 * last line cut to `cut` bytes if cut >= 0. Returns the entry's version. */
static json_int_t edit_ledger(const char *path, size_t at, void (*edit)(json_t *), long cut) {
  FILE *f = fopen(path, "r");
  assert_non_null(f);
  json_t *lines = json_array();
  char *line = NULL;
  size_t cap = 0;
  while (getline(&line, &cap, f) > 0) json_array_append_new(lines, parse(line, "a ledger line"));
  free(line);
  fclose(f);
  json_t *en = json_array_get(lines, at);
  assert_non_null(en);
  json_int_t v = json_integer_value(json_object_get(en, "version"));
  if (edit) edit(en);
  assert_non_null(f = fopen(path, "w"));
  size_t i;
  json_t *x;
  json_array_foreach(lines, i, x) {
    char *text = json_dumps(x, JSON_COMPACT);
    if (cut >= 0 && i + 1 == json_array_size(lines)) fprintf(f, "%.*s", (int)cut, text);
    else fprintf(f, "%s\n", text);
    free(text);
  }
  fclose(f);
  json_decref(lines);
  return v;
}

static void set_mean(json_t *en) {
  json_object_set_new(json_object_get(json_object_get(en, "patch"), "raw"), "mean", json_integer(0));
}

/* --ledger then --replay: the demo replays identically; a changed entry stops
 * the replay naming version, process and path. */
static void test_ledger_replay_demo(void **state) {
  tmp *t = *state;
  result r;
  run_cli(&r, (const char *[]){"--workers", "2", "--ledger", t->ledger, "--ledger-fsync", demo_json, NULL});
  expect_status(&r, 0);
  result_free(&r);
  run_cli(&r, (const char *[]){"--workers", "2", "--replay", t->ledger, demo_json, NULL});
  expect_status(&r, 0);
  expect_err(&r, "committed versions match the ledger");
  result_free(&r);
  /* the entry of 'finish' (the first run of a process in the demo) says mean 0 */
  FILE *f = fopen(t->ledger, "r");
  char line[4096];
  size_t at = 0;
  while (fgets(line, sizeof line, f) && !strstr(line, "\"process\":\"finish\"")) at++;
  fclose(f);
  json_int_t v = edit_ledger(t->ledger, at, set_mean, -1);
  run_cli(&r, (const char *[]){"--workers", "2", "--replay", t->ledger, demo_json, NULL});
  expect_status(&r, 1);
  char want[160];
  snprintf(want, sizeof want, "replay differs at version %lld (process 'finish'): patch domain.raw.mean: ledger 0, "
           "replay 4.99", (long long)v);
  expect_err(&r, want);
  result_free(&r);
}

/* A torn last line of the demo's ledger: read up to the last whole entry;
 * the replay then goes past the ledger's end. */
static void test_ledger_torn_demo(void **state) {
  tmp *t = *state;
  result r;
  run_cli(&r, (const char *[]){"--workers", "2", "--ledger", t->ledger, demo_json, NULL});
  expect_status(&r, 0);
  result_free(&r);
  edit_ledger(t->ledger, 0, NULL, 40);
  run_cli(&r, (const char *[]){"--workers", "2", "--replay", t->ledger, demo_json, NULL});
  expect_status(&r, 1);
  expect_err(&r, "the ledger ends before it");
  result_free(&r);
}

/* A ledger that cannot be written (/dev/full): exit 3 naming it; with
 * --ledger-fsync already the demo's first commit (its heavy arrays, while the
 * engine opens) says its line may be lost. */
static void test_ledger_unwritable_demo(void **state) {
  (void)state;
  result r;
  run_cli(&r, (const char *[]){"--workers", "2", "--ledger", "/dev/full", demo_json, NULL});
  expect_status(&r, 3);
  expect_err(&r, "the ledger '/dev/full' cannot be written (No space left on device)");
  result_free(&r);
  run_cli(&r, (const char *[]){"--workers", "2", "--ledger", "/dev/full", "--ledger-fsync", demo_json, NULL});
  expect_status(&r, 3);
  expect_err(&r, "is committed but its ledger line may be lost");
  result_free(&r);
}

/* --ledger then --replay: the e2e pipelines replay identically. */
static void test_ledger_replay_pipelines(void **state) {
  tmp *t = *state;
  result r;
  static const char *const files[] = {"steps.json", "vector.json", "ffi.json"};
  for (size_t i = 0; i < 3; i++) {
    char path[512];
    pipe_path(path, sizeof path, files[i]);
    run_cli(&r, (const char *[]){"--plugin", e2e_plugin, "--ledger", t->ledger, path, NULL});
    expect_status(&r, 0);
    result_free(&r);
    run_cli(&r, (const char *[]){"--plugin", e2e_plugin, "--replay", t->ledger, path, NULL});
    expect_status(&r, 0);
    expect_err(&r, "committed versions match the ledger");
    result_free(&r);
  }
}

/* A while loop that revisits states: the memoised typed process ("memo":
 * true in the file) runs once per distinct input. --memo memoises every pure
 * process: the step-kinds pipeline gives the same state with it. */
static void test_memo_pipeline(void **state) {
  (void)state;
  char path[512];
  pipe_path(path, sizeof path, "memo.json");
  result r;
  run_cli(&r, (const char *[]){"--plugin", e2e_plugin, "--stats", path, NULL});
  expect_status(&r, 0);
  json_t *d = parse(r.out, "stdout");
  assert_int_equal(int_at(d, "y"), 2);
  json_t *stats = parse(r.err, "--stats");
  assert_int_equal(int_at(json_object_get(stats, "memo"), "hits"), 4);
  assert_int_equal(int_at(json_object_get(stats, "memo"), "misses"), 2);
  json_decref(stats);
  json_decref(d);
  result_free(&r);
  pipe_path(path, sizeof path, "steps.json");
  run_cli(&r, (const char *[]){"--plugin", e2e_plugin, "--memo", "--stats", path, NULL});
  expect_status(&r, 0);
  stats = parse(r.err, "--stats");
  assert_true(json_is_true(json_object_get(json_object_get(stats, "memo"), "all_pure")));
  assert_true(int_at(json_object_get(stats, "memo"), "misses") > 0);
  d = parse(r.out, "stdout");
  assert_int_equal(int_at(d, "counter"), 15);
  assert_float_equal(num_at(d, "total"), 500500, 0);
  json_decref(d);
  json_decref(stats);
  result_free(&r);
}

/* The tests in five parts of about equal length under TSan (the demo's
 * 64 MiB signal weighs most: about 9 s a run there): tests/e2e/meson.build
 * runs each part as its own meson test, so the parts run side by side. */
static const struct CMUnitTest part1[] = {
    cmocka_unit_test_setup_teardown(test_ledger_replay_demo, tmp_setup, tmp_teardown),
};
static const struct CMUnitTest part2[] = {
    cmocka_unit_test_setup_teardown(test_ledger_torn_demo, tmp_setup, tmp_teardown),
    cmocka_unit_test(test_while_budget),
};
static const struct CMUnitTest part3[] = {
    cmocka_unit_test_setup_teardown(test_demo, tmp_setup, tmp_teardown),
    cmocka_unit_test(test_progress_on_a_terminal),
    cmocka_unit_test(test_ffi_length_checked),
};
static const struct CMUnitTest part4[] = {
    cmocka_unit_test_setup_teardown(test_ledger_replay_pipelines, tmp_setup, tmp_teardown),
    cmocka_unit_test(test_arena_sizes),
    cmocka_unit_test_setup_teardown(test_signal_cancels_map, tmp_setup, tmp_teardown),
    cmocka_unit_test(test_pipeline_errors),
    cmocka_unit_test(test_vector_expressions),
};
static const struct CMUnitTest part5[] = {
    cmocka_unit_test(test_usage),
    cmocka_unit_test(test_step_kinds),
    cmocka_unit_test(test_map_into),
    cmocka_unit_test(test_set_and_quiet_stderr),
    cmocka_unit_test(test_cli_names_its_flags),
    cmocka_unit_test(test_ffi_types),
    cmocka_unit_test(test_ffi_range_error),
    cmocka_unit_test(test_nonfinite_result),
    cmocka_unit_test(test_parallel_group_commits),
    cmocka_unit_test(test_refused_before_the_run),
    cmocka_unit_test(test_worker_output),
    cmocka_unit_test(test_crash_exits_1),
    cmocka_unit_test(test_failing_step),
    cmocka_unit_test(test_plugin_register_segv_is_named),
    cmocka_unit_test(test_plugin_register_exit_is_named_and_4),
    cmocka_unit_test(test_local_process_segv_is_named),
    cmocka_unit_test(test_local_process_exit_is_named_and_4),
    cmocka_unit_test(test_engine_open_failure_exits_3),
    cmocka_unit_test(test_unwritable_output_exits_3),
    cmocka_unit_test(test_workers),
    cmocka_unit_test(test_memo_pipeline),
    cmocka_unit_test(test_ledger_unwritable_demo),
};
#define PART(tests) {"theus-run " #tests, tests, sizeof tests / sizeof tests[0]}
static const struct {
  const char *name;
  const struct CMUnitTest *tests;
  size_t n;
} parts[] = {PART(part1), PART(part2), PART(part3), PART(part4), PART(part5)};
#define NPARTS (sizeof parts / sizeof parts[0])

int main(int argc, char **argv) {
  if (argc != 6 && argc != 7) {
    fprintf(stderr, "usage: %s THEUS_RUN PIPELINE_DIR E2E_PLUGIN DEMO_JSON BAD_PLUGIN [K/N]\n"
                    "  K/N: run part K (1..N) only, where N must be %zu; without it, every part\n",
            argv[0], NPARTS);
    return 2;
  }
  theus_run = argv[1];
  pipe_dir = argv[2];
  e2e_plugin = argv[3];
  demo_json = argv[4];
  bad_plugin = argv[5];
  size_t first = 0, last = NPARTS; /* parts [first, last) */
  if (argc == 7) {
    unsigned k = 0, n = 0;
    char end;
    if (sscanf(argv[6], "%u/%u%c", &k, &n, &end) != 2 || n != NPARTS || k < 1 || k > n) {
      fprintf(stderr, "%s: part \"%s\": want K/%zu with K from 1 to %zu (the parts of this program; "
                      "tests/e2e/meson.build must list them all)\n", argv[0], argv[6], NPARTS, NPARTS);
      return 2;
    }
    first = k - 1;
    last = k;
  }
  int failed = 0;
  for (size_t i = first; i < last; i++)
    failed += _cmocka_run_group_tests(parts[i].name, parts[i].tests, parts[i].n, NULL, NULL);
  return failed;
}
