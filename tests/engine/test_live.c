/* engine + twin: a live region bound to a heavy key, read through ctx by a
 * local process and by a parallel process in a worker while a host thread
 * publishes frames; contract errors; lifetimes (unbind, snapshots, close).
 *
 * Frames: word i of the frame with epoch e holds (e << 32) | i, so every
 * snapshot checks itself against the epoch the read reports (epoch 0 is the
 * initial all-zero content). The group teardown stops the writer thread and
 * closes the engine (reaping the workers) even when an assertion failed. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "theus/engine.h"

#define WORDS 2048u /* 16 KiB frames */
#define NBYTES (WORDS * 8u)

static theus_engine *E;

/* ---- the host writer thread --------------------------------------------- */

typedef struct writer {
  theus_twin_writer *tw;
  pthread_t th;
  int running;
  atomic_int stop;
  uint64_t published;
  int bad_epoch; /* publish reported an epoch other than the one written */
} writer;

static writer W;

static void *writer_main(void *arg) {
  writer *w = arg;
  while (!atomic_load_explicit(&w->stop, memory_order_relaxed)) {
    uint64_t *back, e = w->published + 1, got = 0;
    if (theus_twin_writer_begin(w->tw, THEUS_TWIN_DISCARD, (void **)&back))
      break;
    for (uint64_t i = 0; i < WORDS; i++)
      back[i] = e << 32 | i;
    if (theus_twin_writer_publish(w->tw, &got) || got != e) {
      w->bad_epoch = 1;
      break;
    }
    w->published = e;
  }
  return NULL;
}

static void writer_start(theus_twin_writer *tw) {
  W.tw = tw;
  W.published = theus_twin_writer_epoch(tw);
  W.bad_epoch = 0;
  atomic_store(&W.stop, 0);
  assert_int_equal(pthread_create(&W.th, NULL, writer_main, &W), 0);
  W.running = 1;
}

static void writer_stop(void) {
  if (!W.running)
    return;
  atomic_store(&W.stop, 1);
  pthread_join(W.th, NULL);
  W.running = 0;
}

/* ---- processes ------------------------------------------------------------ */

/* rounds x reads random word ranges of "frame", waiting for a new epoch
 * between rounds; returns counts and the number of wrong words. */
static int live_check(theus_ctx *ctx) {
  const json_t *a = theus_ctx_args(ctx);
  int rounds = (int)json_integer_value(json_object_get(a, "rounds"));
  int reads = (int)json_integer_value(json_object_get(a, "reads"));
  size_t n = 0;
  int rc = theus_ctx_live_size(ctx, "frame", &n);
  if (rc || n != NBYTES)
    return theus_ctx_fail(ctx, "live_size: %s, %zu bytes", theus_strerror(rc), n);
  uint64_t buf[WORDS];
  uint64_t seen = 0, last = 0, bad = 0, ok = 0, starved = 0, epochs = 0;
  unsigned seed = (unsigned)getpid() ^ (unsigned)theus_ctx_worker(ctx);
  for (int r = 0; r < rounds; r++) {
    if ((rc = theus_ctx_live_wait(ctx, "frame", seen, 5000, &seen)))
      return theus_ctx_fail(ctx, "live_wait after epoch %llu: %s", (unsigned long long)seen, theus_strerror(rc));
    for (int k = 0; k < reads; k++) {
      uint64_t off = (uint64_t)rand_r(&seed) % WORDS, len = 1 + (uint64_t)rand_r(&seed) % (WORDS - off), ep = 0;
      rc = theus_ctx_live_read(ctx, "frame", off * 8, buf, len * 8, &ep);
      if (rc == THEUS_ESTARVED) {
        starved++;
        continue;
      }
      if (rc)
        return theus_ctx_fail(ctx, "live_read: %s", theus_strerror(rc));
      if (ep < last)
        return theus_ctx_fail(ctx, "epoch went back from %llu to %llu", (unsigned long long)last,
                              (unsigned long long)ep);
      epochs += ep != last;
      last = ep;
      for (uint64_t i = 0; i < len; i++)
        bad += buf[i] != (ep ? ep << 32 | (off + i) : 0);
      ok++;
    }
    seen = last > seen ? last : seen;
  }
  theus_ctx_return(ctx, json_pack("{s:I, s:I, s:I, s:I, s:I, s:i}", "reads", (json_int_t)ok, "bad", (json_int_t)bad,
                                  "starved", (json_int_t)starved, "last", (json_int_t)last, "epochs",
                                  (json_int_t)epochs, "worker", theus_ctx_worker(ctx)));
  return 0;
}

/* Returns the code of one live read of args.key (8 bytes at offset 0). */
static int peek(theus_ctx *ctx) {
  const char *key = json_string_value(json_object_get(theus_ctx_args(ctx), "key"));
  uint64_t w = 0, ep = 0;
  int rc = theus_ctx_live_read(ctx, key ? key : "frame", 0, &w, sizeof w, &ep);
  if (rc == THEUS_ECONTRACT)
    return rc; /* the execution fails with the contract message */
  theus_ctx_return(ctx, json_integer(rc));
  return 0;
}

/* Unbinds "tmp" while running, then reads it: its version still binds the
 * region (so it is not freed), but the writer is closed. */
static int unbind_then_read(theus_ctx *ctx) {
  uint64_t w = 0;
  int before = theus_ctx_live_read(ctx, "tmp", 0, &w, sizeof w, NULL);
  int ub = theus_engine_live_unbind(*(theus_engine **)theus_ctx_userdata(ctx), "tmp");
  int after = theus_ctx_live_read(ctx, "tmp", 0, &w, sizeof w, NULL);
  theus_ctx_return(ctx, json_pack("[i,i,i]", before, ub, after));
  return 0;
}

/* ---- fixtures --------------------------------------------------------------- */

static const char *const in_frame[] = {"heavy.frame", "heavy.tmp", "heavy.data", "heavy.nope", NULL};
static const char *const in_x[] = {"domain.x", NULL};

static int setup(void **state) {
  (void)state;
  theus_engine_config cfg;
  theus_engine_config_init(&cfg);
  cfg.workers = 2;
  if (theus_engine_open(&cfg, &E)) {
    print_error("engine open: %s\n", theus_engine_errmsg(E));
    theus_engine_close(E);
    E = NULL;
    return -1;
  }
  theus_contract cs[] = {
      {.name = "check_par", .fn = live_check, .inputs = in_frame, .parallel = 1, .timeout_ms = 60000},
      {.name = "check_local", .fn = live_check, .inputs = in_frame},
      {.name = "peek_par", .fn = peek, .inputs = in_frame, .parallel = 1},
      {.name = "peek_local", .fn = peek, .inputs = in_frame},
      {.name = "undeclared_par", .fn = peek, .inputs = in_x, .parallel = 1},
      {.name = "undeclared_local", .fn = peek, .inputs = in_x},
      {.name = "unbind_then_read", .fn = unbind_then_read, .inputs = in_frame, .semantic = THEUS_EFFECT,
       .userdata = &E},
  };
  for (size_t i = 0; i < sizeof cs / sizeof cs[0]; i++)
    if (theus_engine_register(E, &cs[i])) {
      print_error("register: %s\n", theus_engine_errmsg(E));
      return -1;
    }
  return 0;
}

static int teardown(void **state) {
  (void)state;
  writer_stop();
  theus_engine_close(E);
  E = NULL;
  return 0;
}

/* After each test: whatever failed, the next test starts with no writer
 * running and no live region bound. */
static int unbind_all(void **state) {
  (void)state;
  writer_stop();
  theus_engine_live_unbind(E, "frame");
  theus_engine_live_unbind(E, "tmp");
  return 0;
}

static uint64_t bytes_live(void) {
  theus_arena_stats st;
  theus_arena_stats_get(theus_engine_arena(E), &st);
  return st.bytes_live;
}

/* Runs process name with args and returns its integer result (or the
 * execution's failure code as a negative number). */
static int run_int(const char *name, const char *key) {
  json_t *a = json_pack("{s:s}", "key", key), *r = NULL;
  int rc = theus_engine_execute(E, name, a, &r);
  json_decref(a);
  int v = rc ? rc : (int)json_integer_value(r);
  json_decref(r);
  return v;
}

/* ---- tests ------------------------------------------------------------------ */

static void check_result(const json_t *r, int rounds, int want_worker) {
  json_int_t reads = json_integer_value(json_object_get(r, "reads"));
  json_int_t starved = json_integer_value(json_object_get(r, "starved"));
  json_int_t last = json_integer_value(json_object_get(r, "last"));
  json_int_t epochs = json_integer_value(json_object_get(r, "epochs"));
  int worker = (int)json_integer_value(json_object_get(r, "worker"));
  print_message("live reader (worker %d): %lld reads, %lld starved, %lld epochs seen, last %lld\n", worker,
                (long long)reads, (long long)starved, (long long)epochs, (long long)last);
  assert_int_equal(json_integer_value(json_object_get(r, "bad")), 0);
  assert_true(reads > 0);
  assert_true(epochs >= rounds); /* every round waited for a newer epoch */
  assert_true(last >= rounds);
  if (want_worker)
    assert_true(worker >= 0);
  else
    assert_int_equal(worker, -1);
}

static void test_local_and_worker_read_while_host_publishes(void **state) {
  (void)state;
  uint64_t v0 = theus_engine_version(E);
  theus_twin_writer *tw = NULL;
  int rc = theus_engine_live_create(E, "frame", NBYTES, &tw);
  if (rc)
    fail_msg("live_create: %s", theus_engine_errmsg(E));
  assert_int_equal(theus_engine_version(E), v0 + 1);
  theus_snapshot *s;
  theus_engine_snapshot(E, &s);
  theus_array_info ai;
  assert_int_equal(theus_snapshot_heavy(s, "frame", &ai), 0);
  assert_true(ai.handle == theus_twin_writer_handle(tw));
  theus_snapshot_release(s);

  assert_int_equal(run_int("peek_local", "frame"), 0); /* epoch 0, nothing published yet */
  writer_start(tw);
  const int rounds = 20;
  json_t *a = json_pack("{s:i, s:i}", "rounds", rounds, "reads", 200), *rp = NULL, *rl = NULL;
  theus_job *job = NULL;
  assert_int_equal(theus_engine_submit(E, "check_par", a, &job), 0);
  rc = theus_engine_execute(E, "check_local", a, &rl);
  int prc = theus_job_wait(job, -1, &rp);
  char pmsg[1024];
  snprintf(pmsg, sizeof pmsg, "%s", theus_job_errmsg(job));
  theus_job_release(job);
  json_decref(a);
  writer_stop();
  if (rc || prc) {
    json_decref(rl);
    json_decref(rp);
    fail_msg("local: %s / parallel: %s", rc ? theus_engine_errmsg(E) : "ok", prc ? pmsg : "ok");
  }
  assert_false(W.bad_epoch);
  print_message("host published %llu frames\n", (unsigned long long)W.published);
  check_result(rl, rounds, 0);
  check_result(rp, rounds, 1);
  json_decref(rl);
  json_decref(rp);
  assert_int_equal(theus_engine_version(E), v0 + 1); /* readers commit nothing */
  assert_int_equal(theus_engine_live_unbind(E, "frame"), 0);
}

static void test_undeclared_key_is_a_contract_violation(void **state) {
  (void)state;
  theus_twin_writer *tw = NULL;
  assert_int_equal(theus_engine_live_create(E, "frame", NBYTES, &tw), 0);
  assert_int_equal(run_int("undeclared_local", "frame"), THEUS_ECONTRACT);
  assert_non_null(strstr(theus_engine_errmsg(E), "undeclared live region 'heavy.frame'"));
  assert_int_equal(run_int("undeclared_par", "frame"), THEUS_ECONTRACT);
  assert_non_null(strstr(theus_engine_errmsg(E), "undeclared live region 'heavy.frame'"));
  /* declared but absent, and an ordinary array: codes the process sees */
  assert_int_equal(run_int("peek_local", "nope"), THEUS_ENOTFOUND);
  assert_int_equal(run_int("peek_par", "nope"), THEUS_ENOTFOUND);
  uint64_t shape[1] = {4};
  void *d;
  assert_int_equal(theus_engine_heavy_alloc(E, "data", THEUS_DTYPE_F64, 1, shape, &d), 0);
  memset(d, 0, 32);
  json_t *hp = json_pack("{s:b}", "data", 1);
  assert_int_equal(theus_engine_cas(E, theus_engine_version(E), NULL, hp, NULL), 0);
  json_decref(hp);
  assert_int_equal(run_int("peek_local", "data"), THEUS_EINVAL);
  assert_int_equal(run_int("peek_par", "data"), THEUS_EINVAL);
  assert_int_equal(run_int("peek_par", "frame"), 0);
  assert_int_equal(theus_engine_live_unbind(E, "frame"), 0);
}

static void test_unbind_frees_the_region(void **state) {
  (void)state;
  uint64_t before = bytes_live();
  theus_twin_writer *tw = NULL, *tw2 = NULL;
  assert_int_equal(theus_engine_live_create(E, "tmp", 1u << 20, &tw), 0);
  assert_true(bytes_live() >= before + (2u << 20));
  assert_int_equal(theus_twin_writer_write(tw, 0, "abcdefgh", 8), 0);
  assert_int_equal(theus_twin_writer_publish(tw, NULL), 0);

  /* refused creations leave nothing behind */
  uint64_t mid = bytes_live();
  assert_int_equal(theus_engine_live_create(E, "tmp", 64, &tw2), THEUS_EEXIST);
  assert_null(tw2);
  assert_non_null(strstr(theus_engine_errmsg(E), "'tmp' already has a live region"));
  assert_int_equal(theus_engine_live_create(E, "z", 0, &tw2), THEUS_EINVAL);
  assert_int_equal(theus_engine_live_create(E, "a.b", 64, &tw2), THEUS_EINVAL);
  assert_int_equal(bytes_live(), mid);

  /* a pinned version keeps the region alive after unbind */
  theus_snapshot *s;
  theus_engine_snapshot(E, &s);
  uint64_t v = theus_engine_version(E);
  assert_int_equal(theus_engine_live_unbind(E, "tmp"), 0);
  assert_int_equal(theus_engine_version(E), v + 1);
  assert_int_equal(run_int("peek_local", "tmp"), THEUS_ENOTFOUND);
  assert_int_equal(bytes_live(), mid);
  theus_snapshot_release(s);
  assert_int_equal(bytes_live(), before);
  assert_int_equal(theus_engine_live_unbind(E, "tmp"), THEUS_ENOTFOUND);
}

static void test_unbind_during_a_run_closes_the_reader(void **state) {
  (void)state;
  uint64_t before = bytes_live();
  theus_twin_writer *tw = NULL;
  assert_int_equal(theus_engine_live_create(E, "tmp", 256, &tw), 0);
  json_t *r = NULL;
  assert_int_equal(theus_engine_execute(E, "unbind_then_read", NULL, &r), 0);
  assert_int_equal(json_integer_value(json_array_get(r, 0)), 0);
  assert_int_equal(json_integer_value(json_array_get(r, 1)), 0);
  assert_int_equal(json_integer_value(json_array_get(r, 2)), THEUS_ECLOSED);
  json_decref(r);
  assert_int_equal(bytes_live(), before);
}

static void test_close_releases_bound_regions(void **state) {
  (void)state;
  theus_engine_config cfg;
  theus_engine_config_init(&cfg);
  cfg.workers = -1;
  theus_engine *e2 = NULL;
  assert_int_equal(theus_engine_open(&cfg, &e2), 0);
  theus_twin_writer *tw = NULL;
  assert_int_equal(theus_engine_live_create(e2, "a", 4096, &tw), 0);
  assert_int_equal(theus_engine_live_create(e2, "b", 100, &tw), 0);
  assert_int_equal(theus_twin_writer_publish(tw, NULL), 0);
  theus_engine_close(e2); /* sanitizers report any leaked writer or binding */
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_teardown(test_local_and_worker_read_while_host_publishes, unbind_all),
      cmocka_unit_test_teardown(test_undeclared_key_is_a_contract_violation, unbind_all),
      cmocka_unit_test_teardown(test_unbind_frees_the_region, unbind_all),
      cmocka_unit_test_teardown(test_unbind_during_a_run_closes_the_reader, unbind_all),
      cmocka_unit_test(test_close_releases_bound_regions),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
