/* Bad arguments to <theus/engine.h>: NULL engines, snapshots, watches, keys,
 * paths and outputs, zero sizes, bad dtypes and shapes. Every call runs in a
 * child (badargs.h). The execution calls (engine/exec.c, engine/ctx.c:
 * theus_engine_execute/submit/map, theus_job_*, theus_ctx_*) are being
 * rewritten elsewhere: their cases run and are reported, but do not fail the
 * test yet (exec_cases); the same for <theus/pool.h> (workers/pool.c, pool_cases). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "badargs.h"
#include "theus/engine.h"
#include "theus/pool.h"

static theus_engine *engine(void) {
  theus_engine_config c;
  theus_engine_config_init(&c);
  c.workers = -1; /* no fork server: these children stay single processes */
  theus_engine *e = NULL;
  if (theus_engine_open(&c, &e) != 0) _exit(99);
  return e;
}

static int noop(theus_ctx *ctx) {
  (void)ctx;
  return 0;
}

static json_t *red(json_t *acc, const json_t *item, void *ud) {
  (void)item, (void)ud;
  return acc;
}

static void trace(const theus_trace_event *ev, void *ud) { (void)ev, (void)ud; }

static theus_process_fn resolve(const char *name, void *ud) {
  (void)name, (void)ud;
  return noop;
}

static const char *const any_in[] = {"domain.x", NULL};

CASE(e_config_init, theus_engine_config_init(NULL); return 0;)
CASE(e_open_out, theus_engine_config c; theus_engine_config_init(&c); c.workers = -1;
     return want(theus_engine_open(&c, NULL), THEUS_EINVAL, "open(cfg, NULL)");)
CASE(e_open_badcfg, theus_engine_config c; theus_engine_config_init(&c); c.workers = -5; theus_engine *e = NULL;
     int rc = theus_engine_open(&c, &e); theus_engine_close(e); return want_err(rc, "open(workers -5)");)
CASE(e_close, theus_engine_close(NULL); return 0;)
CASE(e_errmsg, return theus_engine_errmsg(NULL) == NULL;)
CASE(e_arena, return theus_engine_arena(NULL) != NULL;)
CASE(e_register, theus_contract c = {.name = "p", .fn = noop, .inputs = any_in}; theus_engine *e = engine();
     theus_contract noname = {.fn = noop}, nofn = {.name = "q"};
     return want(theus_engine_register(NULL, &c), THEUS_EINVAL, "register(NULL, c)") ||
            want(theus_engine_register(e, NULL), THEUS_EINVAL, "register(e, NULL)") ||
            want(theus_engine_register(e, &noname), THEUS_EINVAL, "register(e, name NULL)") ||
            want(theus_engine_register(e, &nofn), THEUS_EINVAL, "register(e, fn NULL)");)
CASE(e_register_json, theus_engine *e = engine();
     return want_err(theus_engine_register_json(NULL, "{}", "x", resolve, NULL), "register_json(NULL)") ||
            want_err(theus_engine_register_json(e, NULL, "x", resolve, NULL), "register_json(text NULL)") ||
            want_err(theus_engine_register_json(e, "{\"name\": \"p\", \"fn\": \"f\"}", NULL, NULL, NULL),
                     "register_json(source NULL, resolver NULL)");)
CASE(e_contract, return theus_engine_contract(NULL, "p") != NULL || theus_engine_contract(engine(), NULL) != NULL;)
CASE(e_reducer, theus_engine *e = engine();
     return want(theus_engine_register_reducer(NULL, "r", red, NULL), THEUS_EINVAL, "register_reducer(NULL)") ||
            want(theus_engine_register_reducer(e, NULL, red, NULL), THEUS_EINVAL, "register_reducer(name NULL)") ||
            want(theus_engine_register_reducer(e, "r", NULL, NULL), THEUS_EINVAL, "register_reducer(fn NULL)") ||
            want(theus_engine_has_reducer(NULL, "sum"), 0, "has_reducer(NULL)") ||
            want(theus_engine_has_reducer(e, NULL), 0, "has_reducer(e, NULL)");)
CASE(e_version, return theus_engine_version(NULL) != 0;)
CASE(e_get, return theus_engine_get(NULL, "domain.x") != NULL || theus_engine_get(engine(), NULL) != NULL;)
CASE(e_set, theus_engine *e = engine();
     return want(theus_engine_set(NULL, "domain.x", json_integer(1)), THEUS_EINVAL, "set(NULL)") ||
            want(theus_engine_set(e, NULL, json_integer(1)), THEUS_EINVAL, "set(path NULL)") ||
            want(theus_engine_set(e, "domain.x", NULL), THEUS_EINVAL, "set(value NULL)");)
CASE(e_cas, theus_engine *e = engine(); json_t *p = json_pack("{s:i}", "x", 1); uint64_t v;
     json_t *notobj = json_integer(3);
     return want(theus_engine_cas(NULL, 0, p, NULL, &v), THEUS_EINVAL, "cas(NULL)") ||
            want_err(theus_engine_cas(e, theus_engine_version(e), notobj, notobj, &v), "cas(patches not objects)") ||
            want_err(theus_engine_cas(e, UINT64_MAX, p, NULL, NULL), "cas(version UINT64_MAX)");)
CASE(e_heavy_alloc, theus_engine *e = engine(); uint64_t sh[9] = {4, 1, 1, 1, 1, 1, 1, 1, 1}; void *d;
     uint64_t huge[2] = {UINT64_MAX, UINT64_MAX};
     return want(theus_engine_heavy_alloc(NULL, "k", THEUS_DTYPE_F32, 1, sh, &d), THEUS_EINVAL, "heavy_alloc(NULL)") ||
            want(theus_engine_heavy_alloc(e, NULL, THEUS_DTYPE_F32, 1, sh, &d), THEUS_EINVAL, "heavy_alloc(key NULL)") ||
            want(theus_engine_heavy_alloc(e, "k", THEUS_DTYPE_F32, 1, NULL, &d), THEUS_EINVAL, "heavy_alloc(shape NULL)") ||
            want(theus_engine_heavy_alloc(e, "k", THEUS_DTYPE_F32, 1, sh, NULL), THEUS_EINVAL, "heavy_alloc(data NULL)") ||
            want_err(theus_engine_heavy_alloc(e, "k", THEUS_DTYPE_F32, 0, sh, &d), "heavy_alloc(ndim 0)") ||
            want_err(theus_engine_heavy_alloc(e, "k", THEUS_DTYPE_F32, 9, sh, &d), "heavy_alloc(ndim 9)") ||
            want_err(theus_engine_heavy_alloc(e, "k", (theus_dtype)99, 1, sh, &d), "heavy_alloc(dtype 99)") ||
            want_err(theus_engine_heavy_alloc(e, "k", THEUS_DTYPE_F64, 2, huge, &d), "heavy_alloc(2^64 x 2^64)") ||
            want_err(theus_engine_heavy_alloc(e, "", THEUS_DTYPE_F32, 1, sh, &d), "heavy_alloc(key \"\")");)
CASE(e_heavy_discard, theus_engine *e = engine();
     return want(theus_engine_heavy_discard(NULL, "k"), THEUS_EINVAL, "heavy_discard(NULL)") ||
            want(theus_engine_heavy_discard(e, NULL), THEUS_EINVAL, "heavy_discard(key NULL)") ||
            want_err(theus_engine_heavy_discard(e, "never"), "heavy_discard(unknown)");)
CASE(e_live, theus_engine *e = engine(); theus_twin_writer *t;
     return want(theus_engine_live_create(NULL, "k", 8, &t), THEUS_EINVAL, "live_create(NULL)") ||
            want(theus_engine_live_create(e, NULL, 8, &t), THEUS_EINVAL, "live_create(key NULL)") ||
            want_err(theus_engine_live_create(e, "k", 0, &t), "live_create(0 bytes)") ||
            want(theus_engine_live_create(e, "k", 8, NULL), THEUS_EINVAL, "live_create(out NULL)") ||
            want(theus_engine_live_unbind(NULL, "k"), THEUS_EINVAL, "live_unbind(NULL)") ||
            want(theus_engine_live_unbind(e, NULL), THEUS_EINVAL, "live_unbind(key NULL)") ||
            want_err(theus_engine_live_unbind(e, "never"), "live_unbind(unknown)");)
CASE(e_snapshot, theus_snapshot *s; theus_array_info i; theus_engine *e = engine(); theus_snapshot *ok = NULL;
     theus_engine_snapshot(e, &ok); theus_snapshot_release(NULL);
     return want(theus_engine_snapshot(NULL, &s), THEUS_EINVAL, "snapshot(NULL)") ||
            want(theus_engine_snapshot(e, NULL), THEUS_EINVAL, "snapshot(out NULL)") ||
            theus_snapshot_version(NULL) != 0 || theus_snapshot_domain(NULL) != NULL ||
            theus_snapshot_get(NULL, "domain.x") != NULL || theus_snapshot_get(ok, NULL) != NULL ||
            want(theus_snapshot_heavy(NULL, "k", &i), THEUS_EINVAL, "snapshot_heavy(NULL)") ||
            want(theus_snapshot_heavy(ok, NULL, &i), THEUS_EINVAL, "snapshot_heavy(key NULL)") ||
            want(theus_snapshot_heavy(ok, "k", NULL), THEUS_EINVAL, "snapshot_heavy(out NULL)");)
CASE(e_wait, return want(theus_engine_wait_version(NULL, 0, 0, NULL), THEUS_EINVAL, "wait_version(NULL)") ||
                    want(theus_engine_version_fd(NULL), THEUS_EINVAL, "version_fd(NULL)");)
CASE(e_watch, theus_version_watch *w; int fd = theus_engine_version_fd(engine());
     theus_version_watch_close(NULL);
     return want_err(theus_version_watch_open(-1, &w), "version_watch_open(-1)") ||
            want(theus_version_watch_open(fd, NULL), THEUS_EINVAL, "version_watch_open(fd, NULL)") ||
            want_err(theus_version_watch_open(0, &w), "version_watch_open(stdin)") ||
            theus_version_watch_current(NULL) != 0 ||
            want(theus_version_watch_wait(NULL, 0, 0, NULL), THEUS_EINVAL, "version_watch_wait(NULL)");)
CASE(e_stats, return theus_engine_stats(NULL) != NULL;)
CASE(e_trace, theus_engine_set_trace(NULL, trace, NULL); theus_engine_set_trace(engine(), NULL, NULL); return 0;)

/* ---- engine/exec.c and engine/ctx.c (reported, not yet enforced) ---------- */
CASE(x_execute, json_t *r; theus_engine *e = engine();
     return want(theus_engine_execute(NULL, "p", NULL, &r), THEUS_EINVAL, "execute(NULL)") ||
            want_err(theus_engine_execute(e, NULL, NULL, &r), "execute(name NULL)");)
CASE(x_submit, theus_job *j; theus_engine *e = engine();
     return want(theus_engine_submit(NULL, "p", NULL, &j), THEUS_EINVAL, "submit(NULL)") ||
            want_err(theus_engine_submit(e, NULL, NULL, &j), "submit(name NULL)") ||
            want_err(theus_engine_submit(e, "p", NULL, NULL), "submit(out NULL)");)
CASE(x_job, json_t *r; theus_job_release(NULL);
     return want(theus_job_wait(NULL, 0, &r), THEUS_EINVAL, "job_wait(NULL)") || theus_job_errmsg(NULL) == NULL ||
            theus_job_version(NULL) != 0;)
CASE(x_map, json_t *r; theus_engine *e = engine();
     return want(theus_engine_map(NULL, "p", "heavy.x", 2, "sum", NULL, &r), THEUS_EINVAL, "map(NULL)") ||
            want_err(theus_engine_map(e, NULL, NULL, 0, NULL, NULL, &r), "map(NULLs)");)
CASE(x_ctx, theus_array_info i; uint64_t lo, hi; uint32_t k, n;
     theus_ctx_return(NULL, NULL);
     return theus_ctx_get(NULL, "domain.x") != NULL || theus_ctx_args(NULL) != NULL ||
            want_err(theus_ctx_heavy(NULL, "k", &i), "ctx_heavy(NULL)") ||
            want_err(theus_ctx_slice(NULL, &lo, &hi, &k, &n), "ctx_slice(NULL)") ||
            want_err(theus_ctx_set(NULL, "domain.x", NULL), "ctx_set(NULL)") ||
            want_err(theus_ctx_fail(NULL, "x"), "ctx_fail(NULL)") || theus_ctx_userdata(NULL) != NULL ||
            theus_ctx_process(NULL) != NULL;)

/* ---- workers/pool.c (reported, not yet enforced) ------------------------- */
CASE(w_config, theus_pool_config_init(NULL); return 0;)
CASE(w_open, return want(theus_pool_open(NULL, NULL), THEUS_EINVAL, "pool_open(NULL, NULL)");)
CASE(w_submit, theus_ticket t; theus_task_desc d; memset(&d, 0, sizeof d);
     return want(theus_pool_submit(NULL, &d, &t), THEUS_EINVAL, "pool_submit(NULL)") ||
            want(theus_pool_submit_wait(NULL, &d, 0, &t), THEUS_EINVAL, "pool_submit_wait(NULL)") ||
            want(theus_pool_submit_batch(NULL, &d, 1, &t), THEUS_EINVAL, "pool_submit_batch(NULL)");)
CASE(w_map, size_t nf; theus_map_desc m; memset(&m, 0, sizeof m);
     return want(theus_pool_map(NULL, &m, &nf), THEUS_EINVAL, "pool_map(NULL)");)
CASE(w_wait, theus_pool_result r; theus_pool_result_release(NULL);
     return want(theus_pool_wait(NULL, 1, 0, &r), THEUS_EINVAL, "pool_wait(NULL)");)
CASE(w_getters, theus_pool_stats st;
     return want(theus_pool_stats_get(NULL, &st), THEUS_EINVAL, "pool_stats_get(NULL)") ||
            theus_pool_size(NULL) != 0 || theus_pool_worker_pid(NULL, 0) > 0 ||
            theus_pool_has_function(NULL, NULL) > 0 || theus_pool_forksrv_pid(NULL) > 0 ||
            theus_pool_errmsg(NULL) == NULL;)
CASE(w_close, return want(theus_pool_close(NULL, 1), 0, "pool_close(NULL)");)
CASE(w_task, size_t n; const void *v; theus_array_info i;
     return theus_task_arena(NULL) != NULL || theus_task_arg(NULL, &n) != NULL || theus_task_nhandles(NULL) != 0 ||
            theus_task_handle(NULL, 0) != 0 || want_err(theus_task_array(NULL, 0, &i), "task_array(NULL)") ||
            want_err(theus_task_view(NULL, 0, &v, &n), "task_view(NULL)") || theus_task_out(NULL, &n) != NULL ||
            want_err(theus_task_set_result(NULL, 1), "task_set_result(NULL)") ||
            want_err(theus_task_write(NULL, "x", 1), "task_write(NULL)") ||
            want_err(theus_task_fail(NULL, -1, "x"), "task_fail(NULL)") || theus_task_worker(NULL) != 0;)

static const badcase pool_cases[] = {
    ENTRY(w_config, "theus_pool_config_init(NULL)"),
    ENTRY(w_open, "theus_pool_open(NULL, NULL)"),
    ENTRY(w_submit, "theus_pool_submit/submit_wait/submit_batch(NULL pool)"),
    ENTRY(w_map, "theus_pool_map(NULL pool)"),
    ENTRY(w_wait, "theus_pool_wait(NULL pool), theus_pool_result_release(NULL)"),
    ENTRY(w_getters, "theus_pool_stats_get/size/worker_pid/has_function/forksrv_pid/errmsg(NULL)"),
    ENTRY(w_close, "theus_pool_close(NULL, 1)"),
    ENTRY(w_task, "theus_task_*(NULL task)"),
};

static const badcase engine_cases[] = {
    ENTRY(e_config_init, "theus_engine_config_init(NULL)"),
    ENTRY(e_open_out, "theus_engine_open(cfg, NULL)"),
    ENTRY(e_open_badcfg, "theus_engine_open(workers -5)"),
    ENTRY(e_close, "theus_engine_close(NULL)"),
    ENTRY(e_errmsg, "theus_engine_errmsg(NULL)"),
    ENTRY(e_arena, "theus_engine_arena(NULL)"),
    ENTRY(e_register, "theus_engine_register(NULL / c NULL / name NULL / fn NULL)"),
    ENTRY(e_register_json, "theus_engine_register_json(NULL / text NULL / source NULL)"),
    ENTRY(e_contract, "theus_engine_contract(NULL / name NULL)"),
    ENTRY(e_reducer, "theus_engine_register_reducer/has_reducer(NULLs)"),
    ENTRY(e_version, "theus_engine_version(NULL)"),
    ENTRY(e_get, "theus_engine_get(NULL / path NULL)"),
    ENTRY(e_set, "theus_engine_set(NULL / path NULL / value NULL)"),
    ENTRY(e_cas, "theus_engine_cas(NULL / non-object patches / version max)"),
    ENTRY(e_heavy_alloc, "theus_engine_heavy_alloc(NULLs, ndim 0/9, dtype 99, 2^128 bytes)"),
    ENTRY(e_heavy_discard, "theus_engine_heavy_discard(NULL / key NULL / unknown)"),
    ENTRY(e_live, "theus_engine_live_create/live_unbind(NULLs, 0 bytes)"),
    ENTRY(e_snapshot, "theus_engine_snapshot/theus_snapshot_*(NULLs)"),
    ENTRY(e_wait, "theus_engine_wait_version/version_fd(NULL)"),
    ENTRY(e_watch, "theus_version_watch_*(bad fd, NULLs)"),
    ENTRY(e_stats, "theus_engine_stats(NULL)"),
    ENTRY(e_trace, "theus_engine_set_trace(NULL, ...)"),
};

static const badcase exec_cases[] = {
    ENTRY(x_execute, "theus_engine_execute(NULL / name NULL)"),
    ENTRY(x_submit, "theus_engine_submit(NULL / name NULL / out NULL)"),
    ENTRY(x_job, "theus_job_wait/errmsg/version/release(NULL)"),
    ENTRY(x_map, "theus_engine_map(NULL / NULLs)"),
    ENTRY(x_ctx, "theus_ctx_*(NULL)"),
};

static void test_engine_h(void **state) {
  (void)state;
  char *rep = badargs_run(engine_cases, sizeof engine_cases / sizeof engine_cases[0]);
  if (rep[0]) {
    printf("%s", rep);
    free(rep);
    fail_msg("some calls crashed or answered wrongly (listed above)");
  }
  free(rep);
}

/* Not enforced until the rewrite of engine/exec.c and engine/ctx.c lands:
 * printed loudly so the list stays visible in every test log. */
static void test_engine_h_exec_calls_reported(void **state) {
  (void)state;
  char *rep = badargs_run(exec_cases, sizeof exec_cases / sizeof exec_cases[0]);
  if (rep[0])
    printf("*** NOT YET ENFORCED (engine/exec.c, engine/ctx.c are being rewritten):\n%s", rep);
  free(rep);
}

static void test_pool_h_reported(void **state) {
  (void)state;
  char *rep = badargs_run(pool_cases, sizeof pool_cases / sizeof pool_cases[0]);
  if (rep[0])
    printf("*** NOT YET ENFORCED (workers/pool.c is being rewritten):\n%s", rep);
  free(rep);
}

int main(void) {
  setvbuf(stdout, NULL, _IONBF, 0);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_engine_h),
      cmocka_unit_test(test_engine_h_exec_calls_reported),
      cmocka_unit_test(test_pool_h_reported),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
