/* Bad arguments to <theus/pool.h>: NULL pools, descriptors and outputs,
 * forged tickets (edge shapes plus seeded random 64-bit values), bad task
 * descriptions, forged arena handles given to tasks, and every theus_task_*
 * call with a NULL task or bad indices inside a worker. Every case runs in a
 * child (badargs.h); a case that opens a pool closes it. */
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "badargs.h"
#include "theus/heavy.h"
#include "theus/pool.h"

#define HANDLES 1024u

static theus_arena *arena;

/* A pool of one worker sharing an arena of HANDLES slots, with one live array. */
static theus_pool *pool(theus_handle *live) {
  theus_arena_config ac;
  theus_arena_config_init(&ac);
  ac.hard_limit = 16u << 20;
  ac.max_handles = HANDLES;
  theus_pool_config c;
  theus_pool_config_init(&c);
  c.nworkers = 1;
  theus_pool *p = NULL;
  theus_handle h;
  if (theus_arena_open(&ac, &arena) || theus_arena_write(arena, "abcdefgh", 8, &h)) _exit(99);
  c.arena = arena;
  if (theus_pool_open(&c, &p)) {
    printf("  cannot open the pool: %s\n", theus_pool_errmsg(p));
    theus_pool_close(p, 1);
    _exit(99);
  }
  if (live) *live = h;
  return p;
}

static int done(theus_pool *p, int bad) {
  theus_pool_close(p, 1);
  theus_arena_close(arena);
  return bad;
}

static int ok_task(theus_task *t) {
  (void)t;
  return 0;
}

/* Every theus_task_* call with NULL, then with bad indices and sizes on the
 * real task; the names of wrong answers go into the result. */
static int task_probe(theus_task *t) {
  char log[512] = "";
  size_t n = 0, len;
  const void *v;
  theus_array_info i;
#define T(ok, what) \
  if (!(ok)) n += (size_t)snprintf(log + n, sizeof log - n, "%s; ", what)
  T(theus_task_arena(NULL) == NULL, "arena(NULL)");
  T(theus_task_arg(NULL, &len) == NULL && len == 0, "arg(NULL)");
  T(theus_task_nhandles(NULL) == 0, "nhandles(NULL)");
  T(theus_task_handle(NULL, 0) == 0, "handle(NULL)");
  T(theus_task_array(NULL, 0, &i) == THEUS_EINVAL, "array(NULL)");
  T(theus_task_view(NULL, 0, &v, &len) == THEUS_EINVAL, "view(NULL)");
  T(theus_task_out(NULL, &len) == NULL && len == 0, "out(NULL)");
  T(theus_task_set_result(NULL, 1) == THEUS_EINVAL, "set_result(NULL)");
  T(theus_task_write(NULL, "x", 1) == THEUS_EINVAL, "write(NULL)");
  T(theus_task_fail(NULL, -1, "x") == THEUS_EINVAL, "fail(NULL)");
  T(theus_task_worker(NULL) == UINT_MAX, "worker(NULL)");
  T(theus_task_attempt(NULL) == 0, "attempt(NULL)");
  T(theus_task_attempt(t) == 0, "attempt(t) on a first run");
  T(theus_task_context(NULL) == NULL, "context(NULL)");
  T(theus_task_common(NULL, &len) == NULL && len == 0, "common(NULL)");
  len = 1;
  T(theus_task_window(NULL, &len) == NULL && len == 0, "window(NULL)");
  T(theus_task_window(t, NULL) == NULL, "window(t, NULL) in a plain task");
  T(theus_task_handle(t, UINT_MAX) == 0, "handle(t, UINT_MAX)");
  T(theus_task_array(t, 1, &i) == THEUS_EINVAL, "array(t, past the inputs)");
  T(theus_task_array(t, 0, NULL) == THEUS_EINVAL, "array(t, 0, NULL)");
  T(theus_task_view(t, UINT_MAX, &v, &len) == THEUS_EINVAL, "view(t, UINT_MAX)");
  T(theus_task_view(t, 0, NULL, NULL) == 0, "view(t, 0, NULL, NULL)");
  (void)theus_task_arg(t, NULL);
  T(theus_task_common(t, NULL) == NULL, "common(t, NULL) in a plain task");
  T(theus_task_write(t, NULL, 0) == 0, "write(t, NULL, 0)");
  T(theus_task_out(t, NULL) != NULL, "out(t, NULL)");
#undef T
  /* these fail the task: a fresh message each, the last one is kept */
  int wrong = theus_task_write(t, NULL, 5) != THEUS_EINVAL || theus_task_write(t, "x", SIZE_MAX) != THEUS_ETRUNC ||
              theus_task_set_result(t, SIZE_MAX) != THEUS_ETRUNC || theus_task_fail(t, 5, NULL) != THEUS_EPROCESS;
  if (wrong) n += (size_t)snprintf(log + n, sizeof log - n, "write/set_result/fail(t, bad sizes or fmt NULL); ");
  return theus_task_fail(t, THEUS_EPROCESS, "probe: %s", n ? log : "ok");
}

/* In a map with a write window (sandboxed: no printing): 0 when
 * theus_task_window answers NULL for a NULL task and the window for t. */
static int window_probe(theus_task *t) {
  size_t len = 1, wlen = 0;
  int ok = theus_task_window(NULL, &len) == NULL && len == 0 && theus_task_window(NULL, NULL) == NULL &&
           theus_task_window(t, NULL) != NULL && theus_task_window(t, &wlen) != NULL && wlen > 0;
  return ok ? 0 : theus_task_fail(t, THEUS_EPROCESS, "theus_task_window answered wrongly");
}

/* ---- NULL pool, NULL outputs ------------------------------------------------ */
CASE(w_config, theus_pool_config_init(NULL); return 0;)
CASE(w_open, theus_pool *p = NULL; theus_pool_config c; theus_pool_config_init(&c); c.nworkers = 0;
     int r = want(theus_pool_open(NULL, NULL), THEUS_EINVAL, "pool_open(NULL, NULL)") ||
             want_err(theus_pool_open(&c, &p), "pool_open(0 workers)") ||
             (p && want(theus_pool_cancel(p, 1), THEUS_EINVAL, "pool_cancel(pool whose open failed)"));
     theus_pool_close(p, 1); return r;)
CASE(w_null_pool, theus_ticket t; theus_task_desc d = {.fn = ok_task}; size_t nf; theus_map_desc m = {.fn = ok_task};
     theus_pool_result r; theus_pool_stats st; theus_pool_result_release(NULL);
     return want(theus_pool_submit(NULL, &d, &t), THEUS_EINVAL, "pool_submit(NULL)") ||
            want(theus_pool_submit_wait(NULL, &d, 0, &t), THEUS_EINVAL, "pool_submit_wait(NULL)") ||
            want(theus_pool_submit_batch(NULL, &d, 1, &t), THEUS_EINVAL, "pool_submit_batch(NULL)") ||
            want(theus_pool_map(NULL, &m, &nf), THEUS_EINVAL, "pool_map(NULL)") ||
            want(theus_pool_cancel(NULL, 1), THEUS_EINVAL, "pool_cancel(NULL)") ||
            want(theus_pool_wait(NULL, 1, 0, &r), THEUS_EINVAL, "pool_wait(NULL)") ||
            want(theus_pool_stats_get(NULL, &st), THEUS_EINVAL, "pool_stats_get(NULL)") ||
            want(theus_pool_close(NULL, 1), 0, "pool_close(NULL)") || theus_pool_size(NULL) != 0 ||
            theus_pool_worker_pid(NULL, 0) != 0 || theus_pool_has_function(NULL, ok_task) != 0 ||
            theus_pool_forksrv_pid(NULL) != 0 || theus_pool_errmsg(NULL) == NULL;)
CASE(w_null_args, theus_pool *p = pool(NULL); theus_ticket t; theus_task_desc d = {.fn = ok_task}; size_t nf;
     return done(p, want(theus_pool_submit(p, NULL, &t), THEUS_EINVAL, "pool_submit(desc NULL)") ||
                        want(theus_pool_submit(p, &d, NULL), THEUS_EINVAL, "pool_submit(out NULL)") ||
                        want(theus_pool_submit_wait(p, NULL, 0, &t), THEUS_EINVAL, "pool_submit_wait(desc NULL)") ||
                        want(theus_pool_submit_wait(p, &d, 0, NULL), THEUS_EINVAL, "pool_submit_wait(out NULL)") ||
                        want(theus_pool_submit_batch(p, NULL, 3, &t), THEUS_EINVAL, "submit_batch(tasks NULL)") ||
                        want(theus_pool_submit_batch(p, &d, 1, NULL), THEUS_EINVAL, "submit_batch(tickets NULL)") ||
                        want(theus_pool_submit_batch(p, NULL, 0, NULL), 0, "submit_batch(n 0)") ||
                        want(theus_pool_map(p, NULL, &nf), THEUS_EINVAL, "pool_map(desc NULL)") ||
                        want(theus_pool_wait(p, 1, 0, NULL), THEUS_EINVAL, "pool_wait(res NULL)") ||
                        want(theus_pool_stats_get(p, NULL), THEUS_EINVAL, "pool_stats_get(out NULL)") ||
                        theus_pool_worker_pid(p, UINT_MAX) != 0 || theus_pool_has_function(p, NULL) != 0);)

/* ---- bad descriptions ------------------------------------------------------- */
CASE(w_bad_desc, theus_pool *p = pool(NULL); theus_ticket t; int local = 0; theus_handle h = 1;
     theus_task_desc nofn = {0}, stack = {.fn = (theus_task_fn)(void *)&local},
                     flags = {.fn = ok_task, .flags = 0x80}, argnull = {.fn = ok_task, .arg_len = 4},
                     argbig = {.fn = ok_task, .arg = "x", .arg_len = SIZE_MAX},
                     hnull = {.fn = ok_task, .nhandles = 1}, hmany = {.fn = ok_task, .handles = &h, .nhandles = UINT_MAX};
     return done(p, want(theus_pool_submit(p, &nofn, &t), THEUS_EINVAL, "submit(fn NULL)") ||
                        want(theus_pool_submit(p, &stack, &t), THEUS_EINVAL, "submit(fn on the stack)") ||
                        want(theus_pool_submit(p, &flags, &t), THEUS_EINVAL, "submit(unknown flags)") ||
                        want(theus_pool_submit(p, &argnull, &t), THEUS_EINVAL, "submit(arg NULL, arg_len 4)") ||
                        want(theus_pool_submit(p, &argbig, &t), THEUS_EINVAL, "submit(arg_len SIZE_MAX)") ||
                        want(theus_pool_submit(p, &hnull, &t), THEUS_EINVAL, "submit(handles NULL, 1)") ||
                        want(theus_pool_submit(p, &hmany, &t), THEUS_EINVAL, "submit(nhandles UINT_MAX)") ||
                        want(theus_pool_submit_batch(p, &nofn, 1, &t), THEUS_EINVAL, "submit_batch(fn NULL)"));)
CASE(w_bad_map, theus_pool *p = pool(NULL); size_t nf; int st[4]; char big[8];
     theus_map_desc nofn = {.count = 1}, flags = {.fn = ok_task, .count = 1, .flags = 0x80},
                    args = {.fn = ok_task, .count = 4, .arg_size = 8},
                    results = {.fn = ok_task, .count = 4, .result_size = 8},
                    common = {.fn = ok_task, .count = 1, .common_size = 8},
                    huge = {.fn = ok_task, .count = 4, .arg_size = SIZE_MAX / 2, .args = big, .status = st},
                    chunk = {.fn = ok_task, .count = 4, .chunk = SIZE_MAX, .status = st},
                    none = {.fn = ok_task, .count = 0};
     return done(p, want(theus_pool_map(p, &nofn, &nf), THEUS_EINVAL, "map(fn NULL)") ||
                        want(theus_pool_map(p, &flags, &nf), THEUS_EINVAL, "map(unknown flags)") ||
                        want(theus_pool_map(p, &args, &nf), THEUS_EINVAL, "map(args NULL)") ||
                        want(theus_pool_map(p, &results, &nf), THEUS_EINVAL, "map(results NULL)") ||
                        want(theus_pool_map(p, &common, &nf), THEUS_EINVAL, "map(common NULL)") ||
                        want(theus_pool_map(p, &huge, &nf), THEUS_EINVAL, "map(arg_size SIZE_MAX/2)") ||
                        want(theus_pool_map(p, &chunk, &nf), THEUS_EINVAL, "map(chunk SIZE_MAX)") ||
                        want(theus_pool_map(p, &none, NULL), 0, "map(count 0, nfailed NULL)"));)

/* ---- forged tickets and handles ---------------------------------------------- */
CASE(w_forged_tickets, theus_pool *p = pool(NULL); theus_pool_result r; uint64_t seed = 0x7e57; int bad = 0;
     for (unsigned i = 0; i < BADARGS_HANDLES && !bad; i++) {
       theus_ticket t = badargs_handle(i, 256, &seed);
       bad = want(theus_pool_wait(p, t, 0, &r), THEUS_ENOTFOUND, "pool_wait(forged ticket)") ||
             want(theus_pool_cancel(p, t), THEUS_ENOTFOUND, "pool_cancel(forged ticket)");
       if (bad) printf("  ticket 0x%016llx\n", (unsigned long long)t);
     }
     return done(p, bad);)
/* A collected ticket is spent: waiting again is THEUS_ENOTFOUND. */
CASE(w_spent_ticket, theus_pool *p = pool(NULL); theus_ticket t; theus_pool_result r;
     theus_task_desc d = {.fn = ok_task};
     int bad = want(theus_pool_submit(p, &d, &t), 0, "submit") || want(theus_pool_wait(p, t, -1, &r), 0, "wait") ||
               want(theus_pool_wait(p, t, 0, &r), THEUS_ENOTFOUND, "wait(spent ticket)") ||
               want(theus_pool_cancel(p, t), THEUS_ENOTFOUND, "pool_cancel(spent ticket)");
     return done(p, bad);)
/* Forged arena handles given to tasks: each task fails with a handle code
 * (never a crash: THEUS_ECRASH would mean the worker died), 16 per task. */
CASE(w_forged_handles, theus_handle live; theus_pool *p = pool(&live); uint64_t seed = 0xbad; int bad = 0;
     theus_handle hs[THEUS_POOL_MAX_HANDLES]; theus_pool_result r; theus_ticket t; unsigned n = 0;
     for (unsigned i = 0; i < 2048 && !bad; i += THEUS_POOL_MAX_HANDLES) {
       for (unsigned k = 0; k < THEUS_POOL_MAX_HANDLES; k++) {
         hs[k] = badargs_handle(i + k, HANDLES, &seed);
         if (hs[k] == live) hs[k] = 0;
       }
       theus_task_desc d = {.fn = ok_task, .handles = hs, .nhandles = THEUS_POOL_MAX_HANDLES};
       bad = want(theus_pool_submit(p, &d, &t), 0, "submit(forged handles)") ||
             want(theus_pool_wait(p, t, -1, &r), 0, "wait");
       if (!bad && (r.status >= 0 || r.status == THEUS_ECRASH)) {
         printf("  a task given forged handles (first 0x%016llx) ended with %d: %s\n", (unsigned long long)hs[0],
                r.status, r.errmsg);
         bad = 1;
       }
       theus_pool_result_release(&r);
       n++;
     }
     theus_pool_stats st;
     if (!bad && (theus_pool_stats_get(p, &st) || st.crashed || st.respawned)) {
       printf("  %llu workers crashed, %llu respawned\n", (unsigned long long)st.crashed,
              (unsigned long long)st.respawned);
       bad = 1;
     }
     return done(p, bad || n == 0);)
/* Write windows: bad window handles and ranges fail the map; in a window
 * map, theus_task_window(NULL) is NULL. */
CASE(w_window, theus_pool *p = pool(NULL); size_t page = (size_t)sysconf(_SC_PAGESIZE); theus_handle h; void *d;
     if (theus_arena_alloc(arena, 2 * page, &h, &d)) return done(p, 1);
     uint64_t ok_r[2] = {0, page}, past[2] = {0, 4 * page}, odd[2] = {1, page}, inv[2] = {page, 0};
     int st = 0;
     theus_map_desc good = {.fn = window_probe, .count = 1, .status = &st, .window = h, .window_ranges = ok_r},
                    noranges = {.fn = window_probe, .count = 1, .window = h},
                    forged = {.fn = window_probe, .count = 1, .window = h ^ ((uint64_t)7 << 32), .window_ranges = ok_r},
                    beyond = {.fn = window_probe, .count = 1, .window = h, .window_ranges = past},
                    unaligned = {.fn = window_probe, .count = 1, .window = h, .window_ranges = odd},
                    inverted = {.fn = window_probe, .count = 1, .window = h, .window_ranges = inv};
     int bad = want_err(theus_pool_map(p, &noranges, NULL), "map(window, ranges NULL)") ||
               want_err(theus_pool_map(p, &forged, NULL), "map(forged window handle)") ||
               want_err(theus_pool_map(p, &beyond, NULL), "map(window range past the array)") ||
               want_err(theus_pool_map(p, &unaligned, NULL), "map(window range not page-aligned)") ||
               want_err(theus_pool_map(p, &inverted, NULL), "map(window range hi < lo)");
     if (!bad && (theus_pool_map(p, &good, NULL) || st)) {
       printf("  theus_task_window in a window map: status %d, %s\n", st, theus_pool_errmsg(p));
       bad = 1;
     }
     return done(p, bad);)
CASE(w_task_api, theus_handle live; theus_pool *p = pool(&live); theus_pool_result r; theus_ticket t;
     theus_task_desc d = {.fn = task_probe, .handles = &live, .nhandles = 1};
     int bad = want(theus_pool_submit(p, &d, &t), 0, "submit") || want(theus_pool_wait(p, t, -1, &r), 0, "wait");
     if (!bad && (r.status != THEUS_EPROCESS || strcmp(r.errmsg, "probe: ok") != 0)) {
       printf("  theus_task_* in a worker: status %d, %s\n", r.status, r.errmsg);
       bad = 1;
     }
     return done(p, bad);)

static const badcase pool_cases[] = {
    ENTRY(w_config, "theus_pool_config_init(NULL)"),
    ENTRY(w_open, "theus_pool_open(NULL, NULL / 0 workers)"),
    ENTRY(w_null_pool, "theus_pool_*(NULL pool), theus_pool_result_release(NULL)"),
    ENTRY(w_null_args, "theus_pool_*(p, NULL descriptions and outputs)"),
    ENTRY(w_bad_desc, "theus_pool_submit(fn NULL / not in the image / flags / arg / handles)"),
    ENTRY(w_bad_map, "theus_pool_map(fn NULL / flags / args / results / common / sizes)"),
    ENTRY(w_forged_tickets, "theus_pool_wait(p, forged tickets)"),
    ENTRY(w_spent_ticket, "theus_pool_wait(p, a collected ticket)"),
    ENTRY(w_forged_handles, "theus_pool_submit(p, tasks with forged arena handles)"),
    ENTRY(w_window, "theus_pool_map(bad write windows) / theus_task_window(NULL) in a window map"),
    ENTRY(w_task_api, "theus_task_*(NULL task, bad indices and sizes) in a worker"),
};

static void test_pool_h(void **state) {
  (void)state;
  badargs_check(pool_cases, sizeof pool_cases / sizeof pool_cases[0]);
}

int main(void) {
  setvbuf(stdout, NULL, _IONBF, 0);
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_pool_h)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
