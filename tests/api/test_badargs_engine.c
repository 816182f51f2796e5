/* Bad arguments to <theus/engine.h>: NULL engines, snapshots, watches, keys,
 * paths and outputs, zero sizes, bad dtypes and shapes; the execution calls
 * and every theus_ctx_* call on a NULL and on a real context, in a local run
 * and in a worker. Every case runs in a child (badargs.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "badargs.h"
#include "theus/engine.h"

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

/* An engine whose open failed (workers -5): it only carries the message. */
static theus_engine *failed_engine(void) {
  theus_engine_config c;
  theus_engine_config_init(&c);
  c.workers = -5;
  theus_engine *e = NULL;
  if (theus_engine_open(&c, &e) == 0 || !e) _exit(99);
  return e;
}

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
CASE(e_commit_run, theus_engine *e = engine(); json_t *p = json_pack("{s:i}", "x", 1), *notobj = json_integer(3);
     theus_snapshot *s = NULL; uint64_t v;
     if (theus_engine_snapshot(e, &s)) return 1;
     return want(theus_engine_commit_run(NULL, "p", NULL, s, p, &v), THEUS_EINVAL, "commit_run(NULL)") ||
            want(theus_engine_commit_run(e, NULL, NULL, s, p, &v), THEUS_EINVAL, "commit_run(name NULL)") ||
            want(theus_engine_commit_run(e, "p", NULL, NULL, p, &v), THEUS_EINVAL, "commit_run(read NULL)") ||
            want_err(theus_engine_commit_run(e, "no such process", NULL, s, p, &v), "commit_run(unknown process)") ||
            want_err(theus_engine_commit_run(e, "no such process", NULL, s, notobj, NULL), "commit_run(patch 3)");)
CASE(e_ledger_sync, theus_engine *e = engine();
     return want(theus_engine_ledger_sync(NULL), THEUS_EINVAL, "ledger_sync(NULL)") ||
            want(theus_engine_ledger_sync(e), 0, "ledger_sync(no ledger)");)
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
CASE(e_near, theus_engine *bad = NULL; theus_engine_config c; theus_engine_config_init(&c); c.workers = -5;
     theus_engine_open(&c, &bad);
     return theus_engine_process_near(NULL, "p") != NULL || theus_engine_process_near(engine(), NULL) != NULL ||
            theus_engine_process_near(bad, "p") != NULL;)
CASE(e_progress, theus_engine_progress pr; memset(&pr, 0xff, sizeof pr); theus_engine_progress_get(engine(), NULL);
     theus_engine_progress_get(NULL, &pr); return pr.map_done || pr.map_total || pr.slices;)
static void commit(const json_t *entry, void *ud) { (void)entry, (void)ud; }

CASE(e_cancel, static volatile int flag = 1; theus_engine *e = engine(); json_t *r = NULL;
     theus_engine_set_cancel(NULL, &flag); theus_engine_set_cancel(failed_engine(), &flag);
     theus_engine_set_commit_hook(NULL, commit, NULL); theus_engine_set_commit_hook(failed_engine(), commit, NULL);
     theus_engine_set_commit_hook(e, NULL, NULL); theus_engine_set_cancel(e, NULL);
     theus_engine_set_cancel(e, &flag); theus_engine_set_cancel(e, NULL); /* removed again: runs go on */
     return want(theus_engine_set(e, "domain.x", json_integer(1)), 0, "set after set_cancel(NULL)") ||
            want(theus_engine_execute(e, "never", NULL, &r), THEUS_ENOTFOUND, "execute(unknown) after the cancels");)
CASE(e_ledger, theus_ledger *l = NULL; char bad[] = "/tmp/theus-badargs-ledger-XXXXXX"; int fd = mkstemp(bad);
     const char text[] = "{\"version\": 1}\nnot json\n{\"version\": 2}\n";
     if (fd < 0 || write(fd, text, sizeof text - 1) != (ssize_t)(sizeof text - 1)) return 1;
     close(fd);
     theus_ledger_close(NULL);
     int r = want(theus_ledger_open("x", NULL), THEUS_EINVAL, "ledger_open(path, NULL)") ||
             want(theus_ledger_open(NULL, &l), THEUS_EINVAL, "ledger_open(NULL)") || !l ||
             theus_ledger_count(l) != 0 || theus_ledger_entry(l, 0) != NULL || theus_ledger_torn_bytes(l) != 0;
     theus_ledger_close(l); l = NULL;
     r = r || want(theus_ledger_open("/nonexistent/ledger.jsonl", &l), THEUS_ESYS, "ledger_open(missing file)") ||
         !l || !strstr(theus_ledger_errmsg(l), "/nonexistent/ledger.jsonl");
     theus_ledger_close(l); l = NULL;
     r = r || want_err(theus_ledger_open("/", &l), "ledger_open(a directory)");
     theus_ledger_close(l); l = NULL;
     r = r || want(theus_ledger_open(bad, &l), THEUS_EPARSE, "ledger_open(a bad line before the last)") ||
         theus_ledger_entry(l, theus_ledger_count(l)) != NULL || theus_ledger_entry(l, SIZE_MAX) != NULL;
     theus_ledger_close(l); unlink(bad);
     return r || theus_ledger_count(NULL) != 0 || theus_ledger_entry(NULL, 0) != NULL ||
            theus_ledger_torn_bytes(NULL) != 0 || theus_ledger_errmsg(NULL) == NULL;)
CASE(e_trace, theus_engine_set_trace(NULL, trace, NULL); theus_engine_set_trace(engine(), NULL, NULL); return 0;)

/* ---- execution: engine/exec.c ------------------------------------------------ */

static int probe(theus_ctx *ctx);
static const char *const probe_in[] = {"domain.x", "heavy.k", "heavy.lv", NULL};
static const char *const probe_out[] = {"domain.y", "heavy.out", NULL};
static const char *const pprobe_out[] = {"domain.y", NULL}; /* a worker cannot write heavy arrays */
static const char *const probe_err[] = {"E", NULL};

/* An engine with `workers` workers (-1: none), a published f32[8] "k", a live
 * region "lv" of 16 bytes, the probe as a local process ("probe") and as a
 * parallel one ("pprobe", local too without workers), and "noop". */
static theus_engine *probe_engine(int workers) {
  theus_engine_config c;
  theus_engine_config_init(&c);
  c.workers = workers;
  theus_engine *e = NULL;
  uint64_t sh[1] = {8};
  void *d;
  theus_twin_writer *w;
  theus_contract local = {.name = "probe", .fn = probe, .inputs = probe_in, .outputs = probe_out,
                          .errors = probe_err};
  theus_contract par = local, nop = {.name = "noop", .fn = noop};
  par.name = "pprobe";
  par.parallel = workers >= 0;
  par.outputs = pprobe_out;
  json_t *publish = json_pack("{s:b}", "k", 1);
  int rc = theus_engine_open(&c, &e) || theus_engine_register(e, &local) || theus_engine_register(e, &par) ||
           theus_engine_register(e, &nop) || theus_engine_heavy_alloc(e, "k", THEUS_DTYPE_F32, 1, sh, &d) ||
           theus_engine_cas(e, theus_engine_version(e), NULL, publish, NULL) ||
           theus_engine_live_create(e, "lv", 16, &w);
  json_decref(publish);
  if (rc) {
    printf("  cannot set up the probe engine: %s\n", theus_engine_errmsg(e));
    _exit(99);
  }
  return e;
}

CASE(x_execute, json_t *r; theus_engine *e = probe_engine(-1); theus_engine *bad = NULL; theus_engine_config c;
     theus_engine_config_init(&c); c.workers = -5; theus_engine_open(&c, &bad); json_t *one = json_integer(1);
     return want(theus_engine_execute(NULL, "p", NULL, &r), THEUS_EINVAL, "execute(NULL)") ||
            want(theus_engine_execute(e, NULL, NULL, &r), THEUS_EINVAL, "execute(name NULL)") ||
            want(theus_engine_execute(bad, "noop", NULL, &r), THEUS_EINVAL, "execute(engine whose open failed)") ||
            want(theus_engine_execute(e, "never", NULL, NULL), THEUS_ENOTFOUND, "execute(unknown, result NULL)") ||
            want(theus_engine_execute(e, "noop", one, &r), THEUS_EINVAL, "execute(args not an object)");)
CASE(x_submit, theus_job *j; theus_engine *e = probe_engine(-1); json_t *one = json_integer(1);
     return want(theus_engine_submit(NULL, "p", NULL, &j), THEUS_EINVAL, "submit(NULL)") ||
            want(theus_engine_submit(e, NULL, NULL, &j), THEUS_EINVAL, "submit(name NULL)") ||
            want(theus_engine_submit(e, "noop", NULL, NULL), THEUS_EINVAL, "submit(out NULL)") ||
            want(theus_engine_submit(e, "never", NULL, &j), THEUS_ENOTFOUND, "submit(unknown)") ||
            want(theus_engine_submit(e, "noop", one, &j), THEUS_EINVAL, "submit(args not an object)");)
CASE(x_job, json_t *r; theus_job_release(NULL);
     return want(theus_job_cancel(NULL), THEUS_EINVAL, "job_cancel(NULL)") || want(theus_job_wait(NULL, 0, &r), THEUS_EINVAL, "job_wait(NULL)") ||
            want(theus_job_wait(NULL, -1, NULL), THEUS_EINVAL, "job_wait(NULL, forever, NULL)") ||
            theus_job_errmsg(NULL) == NULL || theus_job_version(NULL) != 0;)
CASE(x_map_null, json_t *r; theus_engine *e = engine();
     return want(theus_engine_map(NULL, "p", "x", 2, "sum", NULL, &r), THEUS_EINVAL, "map(NULL)") ||
            want(theus_engine_map(e, NULL, NULL, 0, NULL, NULL, &r), THEUS_EINVAL, "map(NULLs)") ||
            want(theus_engine_map(e, "p", NULL, 2, "sum", NULL, &r), THEUS_EINVAL, "map(key NULL)");)
CASE(x_map_bad, json_t *r; theus_engine *e = probe_engine(1); json_t *one = json_integer(1);
     int bad = want(theus_engine_map(e, "pprobe", "k", 0, "sum", NULL, &r), THEUS_EINVAL, "map(slices 0)") ||
               want(theus_engine_map(e, "pprobe", "k", 2, NULL, NULL, &r), THEUS_EINVAL, "map(reducer NULL)") ||
               want(theus_engine_map(e, "pprobe", "k", 2, "nope", NULL, &r), THEUS_EINVAL, "map(unknown reducer)") ||
               want(theus_engine_map(e, "pprobe", "k", 2, "sum", one, &r), THEUS_EINVAL, "map(args not an object)") ||
               want(theus_engine_map(e, "pprobe", "never", 2, "sum", NULL, &r), THEUS_ENOTFOUND, "map(unknown key)") ||
               want_err(theus_engine_map(e, "noop", "k", 2, "sum", NULL, &r), "map(a process not declaring k)");
     theus_engine_close(e); return bad;)

CASE(x_map_into_null, json_t *r; uint64_t v; theus_engine *e = engine(); theus_map_out o = {.key = "out"};
     return want(theus_engine_map_into(NULL, "p", "k", 2, "sum", NULL, &o, &r, &v), THEUS_EINVAL, "map_into(NULL)") ||
            want(theus_engine_map_into(NULL, "p", "k", 2, NULL, NULL, NULL, NULL, NULL), THEUS_EINVAL,
                 "map_into(NULL, out NULL)") ||
            want(theus_engine_map_into(failed_engine(), "p", "k", 2, NULL, NULL, &o, &r, &v), THEUS_EINVAL,
                 "map_into(engine whose open failed)") ||
            want(theus_engine_map_into(e, "p", "k", 2, NULL, NULL, NULL, &r, &v), THEUS_EINVAL, "map_into(out NULL)") ||
            want(theus_engine_map_into(e, NULL, "k", 2, NULL, NULL, &o, &r, &v), THEUS_EINVAL, "map_into(name NULL)");)
static const char *const mprobe_in[] = {"heavy.big", NULL};
static const char *const mprobe_out[] = {"heavy.out", NULL};

/* A local engine with a published f64[2048] "big" (4 pages) and "mprobe",
 * which reads heavy.big and writes heavy.out: a valid map_into is
 * theus_engine_map_into(e, "mprobe", "big", 2, "concat", NULL, {"out"}). */
static theus_engine *map_engine(void) {
  theus_engine *e = engine();
  uint64_t sh[1] = {2048};
  void *d;
  theus_contract m = {.name = "mprobe", .fn = noop, .inputs = mprobe_in, .outputs = mprobe_out};
  json_t *publish = json_pack("{s:b}", "big", 1);
  int rc = theus_engine_register(e, &m) || theus_engine_heavy_alloc(e, "big", THEUS_DTYPE_F64, 1, sh, &d) ||
           theus_engine_cas(e, theus_engine_version(e), NULL, publish, NULL);
  json_decref(publish);
  if (rc) {
    printf("  cannot set up the map engine: %s\n", theus_engine_errmsg(e));
    _exit(99);
  }
  return e;
}

#define MAP_INTO(o) theus_engine_map_into(e, "mprobe", "big", 2, "concat", NULL, o, &r, NULL)
CASE(x_map_into_bad, json_t *r; theus_engine *e = map_engine(); json_t *one = json_integer(1);
     theus_map_out o = {.key = "out"}, nokey = {.dtype = THEUS_DTYPE_F64}, undecl = {.key = "zz"},
                   dims = {.key = "out", .ndim = 9, .shape = {2048, 1, 1, 1, 1, 1, 1, 1}},
                   dt = {.key = "out", .dtype = (theus_dtype)99}, rows = {.key = "out", .ndim = 1, .shape = {3}},
                   zero = {.key = "out", .ndim = 2, .shape = {2048, 0}},
                   huge = {.key = "out", .ndim = 2, .shape = {2048, UINT64_MAX}},
                   part = {.key = "out", .partials = "nope", .ndim = 1, .shape = {4}},
                   part0 = {.key = "out", .partials = "sum"}, shapeless = {.key = "out"},
                   free_rows = {.dtype = THEUS_DTYPE_F64, .ndim = 1, .shape = {4096}};
     int bad = want(theus_engine_map_into(e, "mprobe", "big", 0, "concat", NULL, &o, &r, NULL), THEUS_EINVAL,
                    "map_into(slices 0)") ||
               want(theus_engine_map_into(e, "mprobe", "big", 2, "concat", one, &o, &r, NULL), THEUS_EINVAL,
                    "map_into(args not an object)") ||
               want(theus_engine_map_into(e, "mprobe", "big", 2, NULL, NULL, &o, &r, NULL), THEUS_EINVAL,
                    "map_into(reducer NULL)") ||
               want(MAP_INTO(&nokey), THEUS_EINVAL, "map_into(out->key NULL)") ||
               want(MAP_INTO(&undecl), THEUS_ECONTRACT, "map_into(undeclared output)") ||
               want(MAP_INTO(&dims), THEUS_EINVAL, "map_into(ndim 9)") ||
               want(MAP_INTO(&dt), THEUS_EINVAL, "map_into(dtype 99)") ||
               want(MAP_INTO(&rows), THEUS_EINVAL, "map_into(3 rows for 2048)") ||
               want(MAP_INTO(&zero), THEUS_EINVAL, "map_into(a dimension 0)") ||
               want_err(MAP_INTO(&huge), "map_into(2048 x 2^64 - 1)") ||
               want(MAP_INTO(&part), THEUS_EINVAL, "map_into(partials \"nope\")") ||
               want(MAP_INTO(&part0), THEUS_EINVAL, "map_into(partials without a shape)") ||
               want(theus_engine_map_into(e, "mprobe", NULL, 2, "concat", NULL, &shapeless, &r, NULL), THEUS_EINVAL,
                    "map_into(key NULL, no shape)") ||
               want(theus_engine_map_into(e, "mprobe", NULL, 2, "concat", NULL, &free_rows, &r, NULL), THEUS_EINVAL,
                    "map_into(key NULL, out->key NULL)") ||
               want(theus_engine_map_into(e, "mprobe", "never", 2, "concat", NULL, &o, &r, NULL), THEUS_ENOTFOUND,
                    "map_into(unknown key)") ||
               want(theus_engine_map_into(e, "never", "big", 2, "concat", NULL, &o, &r, NULL), THEUS_ENOTFOUND,
                    "map_into(unknown process)") ||
               want(MAP_INTO(&o), 0, "map_into(a valid call, after the bad ones)");
     json_decref(r); theus_engine_close(e); return bad;)
CASE(x_map_part, json_t *it; theus_engine *e = probe_engine(1);
     int bad = want(theus_engine_map_part(NULL, "p", "k", 2, 0, 1, NULL, &it), THEUS_EINVAL, "map_part(NULL)") ||
               want(theus_engine_map_part(failed_engine(), "p", "k", 2, 0, 1, NULL, &it), THEUS_EINVAL,
                    "map_part(engine whose open failed)") ||
               want(theus_engine_map_part(e, NULL, "k", 2, 0, 1, NULL, &it), THEUS_EINVAL, "map_part(name NULL)") ||
               want(theus_engine_map_part(e, "pprobe", NULL, 2, 0, 1, NULL, &it), THEUS_EINVAL, "map_part(key NULL)") ||
               want(theus_engine_map_part(e, "pprobe", "k", 2, 0, 1, NULL, NULL), THEUS_EINVAL, "map_part(items NULL)") ||
               want(theus_engine_map_part(e, "pprobe", "k", 0, 0, 1, NULL, &it), THEUS_EINVAL, "map_part(slices 0)") ||
               want(theus_engine_map_part(e, "pprobe", "k", 2, 3, 0, NULL, &it), THEUS_EINVAL, "map_part(first past n)") ||
               want(theus_engine_map_part(e, "pprobe", "k", 2, 1, UINT32_MAX, NULL, &it), THEUS_EINVAL,
                    "map_part(count UINT32_MAX)") ||
               want(theus_engine_map_part(e, "pprobe", "k", 2, UINT32_MAX, 2, NULL, &it), THEUS_EINVAL,
                    "map_part(first + count wraps)") ||
               want(theus_engine_map_part(e, "pprobe", "never", 2, 0, 1, NULL, &it), THEUS_ENOTFOUND,
                    "map_part(unknown key)");
     theus_engine_close(e); return bad;)
CASE(x_reduce, json_t *r; theus_engine *e = engine(); json_t *items = json_pack("[i, s]", 1, "x"), *one = json_integer(1);
     return want(theus_engine_reduce(NULL, "sum", items, &r), THEUS_EINVAL, "reduce(NULL)") ||
            want(theus_engine_reduce(failed_engine(), "sum", items, &r), THEUS_EINVAL, "reduce(engine whose open failed)") ||
            want(theus_engine_reduce(e, "sum", items, NULL), THEUS_EINVAL, "reduce(result NULL)") ||
            want(theus_engine_reduce(e, NULL, items, &r), THEUS_EINVAL, "reduce(reducer NULL)") ||
            want(theus_engine_reduce(e, "nope", items, &r), THEUS_EINVAL, "reduce(unknown reducer)") ||
            want(theus_engine_reduce(e, "sum", NULL, &r), THEUS_EINVAL, "reduce(items NULL)") ||
            want(theus_engine_reduce(e, "sum", one, &r), THEUS_EINVAL, "reduce(items not an array)") ||
            want(theus_engine_reduce(e, "sum", items, &r), THEUS_EINVAL, "reduce(sum of 1 and \"x\")");)

/* ---- the process context: engine/ctx.c ---------------------------------------
 * NULL ctx from the host (no run), then every call with bad arguments on a
 * real ctx, in a local run and in a worker. The probe writes what answered
 * wrongly into its return value (a worker may not print: the sandbox). */
CASE(x_ctx_null, theus_array_info i; uint64_t lo, hi, ep; uint32_t k, n; size_t nb; char buf[4]; void *d;
     uint64_t sh[1] = {1};
     theus_ctx_return(NULL, json_integer(1));
     return theus_ctx_map_key(NULL) != NULL || theus_ctx_canceled(NULL) != 0 || theus_ctx_attempt(NULL) != 0 ||
            want(theus_ctx_map_out(NULL, &i, &d), THEUS_EINVAL, "ctx_map_out(NULL)") || theus_ctx_get(NULL, "domain.x") != NULL || theus_ctx_args(NULL) != NULL ||
            want(theus_ctx_heavy(NULL, "k", &i), THEUS_EINVAL, "ctx_heavy(NULL)") ||
            want(theus_ctx_live_read(NULL, "k", 0, buf, 4, &ep), THEUS_EINVAL, "ctx_live_read(NULL)") ||
            want(theus_ctx_live_wait(NULL, "k", 0, 0, &ep), THEUS_EINVAL, "ctx_live_wait(NULL)") ||
            want(theus_ctx_live_size(NULL, "k", &nb), THEUS_EINVAL, "ctx_live_size(NULL)") ||
            want(theus_ctx_slice(NULL, &lo, &hi, &k, &n), THEUS_EINVAL, "ctx_slice(NULL)") ||
            want(theus_ctx_set(NULL, "domain.x", json_integer(1)), THEUS_EINVAL, "ctx_set(NULL)") ||
            want(theus_ctx_heavy_alloc(NULL, "k", THEUS_DTYPE_U8, 1, sh, &d), THEUS_EINVAL, "ctx_heavy_alloc(NULL)") ||
            want(theus_ctx_fail(NULL, "x"), THEUS_EINVAL, "ctx_fail(NULL)") ||
            want(theus_ctx_raise(NULL, "E", "x"), THEUS_EINVAL, "ctx_raise(NULL)") ||
            theus_ctx_userdata(NULL) != NULL || theus_ctx_process(NULL) != NULL ||
            want(theus_ctx_worker(NULL), THEUS_EINVAL, "ctx_worker(NULL)");)

static char probe_log[2048];

/* Appends `what` to the probe's log unless ok. */
static void probe_check(int ok, const char *what) {
  size_t n = strlen(probe_log);
  if (!ok) snprintf(probe_log + n, sizeof probe_log - n, "%s%s", n ? "; " : "", what);
}

/* Bad calls that only answer (the run goes on): the log of wrong answers is
 * the return value. */
static void probe_answers(theus_ctx *ctx) {
  theus_array_info i;
  uint64_t ep, lo;
  size_t nb = 0;
  char buf[32];
  probe_log[0] = 0;
  probe_check(theus_ctx_heavy(ctx, NULL, &i) == THEUS_EINVAL, "ctx_heavy(key NULL)");
  probe_check(theus_ctx_heavy(ctx, "k", NULL) == THEUS_EINVAL, "ctx_heavy(out NULL)");
  probe_check(theus_ctx_live_read(ctx, NULL, 0, buf, 4, &ep) == THEUS_EINVAL, "ctx_live_read(key NULL)");
  probe_check(theus_ctx_live_read(ctx, "lv", 0, NULL, 4, &ep) == THEUS_EINVAL, "ctx_live_read(dest NULL)");
  probe_check(theus_ctx_live_read(ctx, "lv", SIZE_MAX, buf, 4, &ep) == THEUS_EINVAL, "ctx_live_read(offset max)");
  probe_check(theus_ctx_live_read(ctx, "lv", 8, buf, SIZE_MAX, NULL) == THEUS_EINVAL, "ctx_live_read(len max)");
  probe_check(theus_ctx_live_read(ctx, "k", 0, buf, 4, NULL) < 0, "ctx_live_read(an ordinary array)");
  probe_check(theus_ctx_live_wait(ctx, NULL, 0, 0, &ep) == THEUS_EINVAL, "ctx_live_wait(key NULL)");
  probe_check(theus_ctx_live_wait(ctx, "lv", UINT64_MAX, 0, NULL) == THEUS_ETIMEDOUT, "ctx_live_wait(seen max)");
  probe_check(theus_ctx_live_size(ctx, NULL, &nb) == THEUS_EINVAL, "ctx_live_size(key NULL)");
  probe_check(theus_ctx_live_size(ctx, "lv", NULL) == 0, "ctx_live_size(nbytes NULL)");
  probe_check(theus_ctx_slice(ctx, &lo, NULL, NULL, NULL) == THEUS_ENOTFOUND, "ctx_slice(outside a map)");
  probe_check(theus_ctx_map_key(ctx) == NULL, "ctx_map_key(outside a map)");
  probe_check(theus_ctx_map_out(ctx, NULL, NULL) == THEUS_ENOTFOUND, "ctx_map_out(outside a map, NULLs)");
  probe_check(theus_ctx_canceled(ctx) == 0, "ctx_canceled(a run nobody canceled)");
  probe_check(theus_ctx_attempt(ctx) == 0, "ctx_attempt(a first run)");
  probe_check(theus_ctx_process(ctx) != NULL, "ctx_process");
  probe_check(theus_ctx_worker(ctx) >= -1, "ctx_worker");
  (void)theus_ctx_userdata(ctx);
  (void)theus_ctx_args(ctx);
  theus_ctx_return(ctx, json_string(probe_log[0] ? probe_log : "ok"));
}

/* Bad calls that fail the run: one per execution (args {"call": i}); the
 * run's code and message show how the call answered. */
typedef struct failing_call {
  const char *call, *msg; /* the call, a part of the run's message */
  int code;               /* the run's code; 0: any error (local and worker runs differ) */
} failing_call;

static const failing_call failing[] = {
    {"ctx_get(path NULL)", "ctx_get: '(null)' is not a domain path", THEUS_EINVAL},
    {"ctx_get(\"not.a.domain\")", "ctx_get: 'not.a.domain' is not a domain path", THEUS_EINVAL},
    {"ctx_set(path NULL)", "ctx_set: '(null)' is not a domain path", THEUS_EINVAL},
    {"ctx_set(value NULL)", "ctx_set 'domain.y': value is NULL", THEUS_EINVAL},
    {"ctx_set(\"domain.*\")", "ctx_set: 'domain.*' is not a domain path", THEUS_EINVAL},
    {"ctx_heavy_alloc(key NULL)", "heavy_alloc: key is NULL", THEUS_EINVAL},
    {"ctx_heavy_alloc(shape NULL)", "heavy_alloc: shape is NULL", THEUS_EINVAL},
    {"ctx_heavy_alloc(data NULL)", "heavy_alloc: data is NULL", THEUS_EINVAL},
    {"ctx_heavy_alloc(ndim 0)", "heavy_alloc", 0},
    {"ctx_heavy_alloc(ndim 9)", "heavy_alloc", 0},
    {"ctx_heavy_alloc(dtype 99)", "heavy_alloc", 0},
    {"ctx_heavy_alloc(2^64 x 3 f64)", "heavy_alloc", 0},
    {"ctx_fail(fmt NULL)", "failed: (no message)", THEUS_EPROCESS},
    {"ctx_raise(name NULL)", "raised undeclared error '(null)'", THEUS_ECONTRACT},
    {"ctx_raise(\"E\", fmt NULL)", "failed with E: (no message)", THEUS_EPROCESS},
    {"ctx_return(value NULL)", "ctx_return: no value", THEUS_EINVAL},
};
#define NFAILING (sizeof failing / sizeof failing[0])

static void probe_failing(theus_ctx *ctx, int i) {
  uint64_t sh[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1}, huge[2] = {UINT64_MAX, 3};
  void *d = NULL;
  switch (i) {
  case 0: theus_ctx_get(ctx, NULL); break;
  case 1: theus_ctx_get(ctx, "not.a.domain"); break;
  case 2: theus_ctx_set(ctx, NULL, json_integer(1)); break;
  case 3: theus_ctx_set(ctx, "domain.y", NULL); break;
  case 4: theus_ctx_set(ctx, "domain.*", json_integer(1)); break;
  case 5: theus_ctx_heavy_alloc(ctx, NULL, THEUS_DTYPE_U8, 1, sh, &d); break;
  case 6: theus_ctx_heavy_alloc(ctx, "out", THEUS_DTYPE_U8, 1, NULL, &d); break;
  case 7: theus_ctx_heavy_alloc(ctx, "out", THEUS_DTYPE_U8, 1, sh, NULL); break;
  case 8: theus_ctx_heavy_alloc(ctx, "out", THEUS_DTYPE_U8, 0, sh, &d); break;
  case 9: theus_ctx_heavy_alloc(ctx, "out", THEUS_DTYPE_U8, 9, sh, &d); break;
  case 10: theus_ctx_heavy_alloc(ctx, "out", (theus_dtype)99, 1, sh, &d); break;
  case 11: theus_ctx_heavy_alloc(ctx, "out", THEUS_DTYPE_F64, 2, huge, &d); break;
  case 12: theus_ctx_fail(ctx, NULL); break;
  case 13: theus_ctx_raise(ctx, NULL, "x"); break;
  case 14: theus_ctx_raise(ctx, "E", NULL); break;
  case 15: theus_ctx_return(ctx, NULL); break;
  }
}

static int probe(theus_ctx *ctx) {
  const json_t *call = json_object_get(theus_ctx_args(ctx), "call");
  if (call)
    probe_failing(ctx, (int)json_integer_value(call));
  else
    probe_answers(ctx);
  return 0;
}

/* Runs process name on e: 0 if every bad call answered as it must. */
static int run_probe(theus_engine *e, const char *name) {
  json_t *r = NULL;
  int rc = theus_engine_execute(e, name, NULL, &r), bad = 0;
  const char *log = json_string_value(r);
  if (rc || !log || strcmp(log, "ok") != 0) {
    printf("  %s: execute returned %d (%s), wrong answers: %s\n", name, rc, theus_engine_errmsg(e),
           log ? log : "(no return value)");
    bad = 1;
  }
  json_decref(r);
  for (size_t i = 0; i < NFAILING; i++) {
    json_t *args = json_pack("{s:i}", "call", (int)i);
    rc = theus_engine_execute(e, name, args, NULL);
    json_decref(args);
    const char *msg = theus_engine_errmsg(e);
    if (failing[i].code ? rc != failing[i].code : rc >= 0) {
      printf("  %s: %s: the run returned %d, want %d (%s)\n", name, failing[i].call, rc, failing[i].code, msg);
      bad = 1;
    } else if (!strstr(msg, failing[i].msg)) {
      printf("  %s: %s: the message \"%s\" lacks \"%s\"\n", name, failing[i].call, msg, failing[i].msg);
      bad = 1;
    }
  }
  return bad;
}

CASE(x_ctx_local, theus_engine *e = probe_engine(-1); int bad = run_probe(e, "probe"); theus_engine_close(e);
     return bad;)
CASE(x_ctx_worker, theus_engine *e = probe_engine(1); int bad = run_probe(e, "pprobe"); theus_engine_close(e);
     return bad;)

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
    ENTRY(e_ledger_sync, "theus_engine_ledger_sync(NULL, no ledger)"),
    ENTRY(e_commit_run, "theus_engine_commit_run(NULLs, unknown process, patch not an object)"),
    ENTRY(e_heavy_alloc, "theus_engine_heavy_alloc(NULLs, ndim 0/9, dtype 99, 2^128 bytes)"),
    ENTRY(e_heavy_discard, "theus_engine_heavy_discard(NULL / key NULL / unknown)"),
    ENTRY(e_live, "theus_engine_live_create/live_unbind(NULLs, 0 bytes)"),
    ENTRY(e_snapshot, "theus_engine_snapshot/theus_snapshot_*(NULLs)"),
    ENTRY(e_wait, "theus_engine_wait_version/version_fd(NULL)"),
    ENTRY(e_watch, "theus_version_watch_*(bad fd, NULLs)"),
    ENTRY(e_stats, "theus_engine_stats(NULL)"),
    ENTRY(e_near, "theus_engine_process_near(NULL / name NULL / failed engine)"),
    ENTRY(e_progress, "theus_engine_progress_get(NULL / out NULL)"),
    ENTRY(e_cancel, "theus_engine_set_cancel/set_commit_hook(NULL / failed engine / NULL flag or fn)"),
    ENTRY(e_ledger, "theus_ledger_*(NULLs, missing file, a directory, a bad line)"),
    ENTRY(e_trace, "theus_engine_set_trace(NULL, ...)"),
};

static const badcase exec_cases[] = {
    ENTRY(x_execute, "theus_engine_execute(NULL / name NULL / failed engine / unknown / args not an object)"),
    ENTRY(x_submit, "theus_engine_submit(NULL / name NULL / out NULL / unknown / args not an object)"),
    ENTRY(x_job, "theus_job_cancel/wait/errmsg/version/release(NULL)"),
    ENTRY(x_map_null, "theus_engine_map(NULL / name NULL / key NULL)"),
    ENTRY(x_map_bad, "theus_engine_map(slices 0, reducer NULL or unknown, args, unknown key, undeclared key)"),
    ENTRY(x_map_into_null, "theus_engine_map_into(NULL / failed engine / out NULL / name NULL)"),
    ENTRY(x_map_into_bad, "theus_engine_map_into(slices 0, args, reducer NULL, out->key NULL, undeclared, ndim 9, "
                          "dtype 99, rows, dimension 0, 2^70 bytes, partials, key NULL, unknowns)"),
    ENTRY(x_map_part, "theus_engine_map_part(NULLs, failed engine, slices 0, ranges past n, unknown key)"),
    ENTRY(x_reduce, "theus_engine_reduce(NULLs, failed engine, unknown reducer, items not an array, mixed items)"),
    ENTRY(x_ctx_null, "theus_ctx_*(NULL ctx)"),
    ENTRY(x_ctx_local, "theus_ctx_*(bad arguments) in a local run"),
    ENTRY(x_ctx_worker, "theus_ctx_*(bad arguments) in a worker"),
};

static void test_engine_h(void **state) {
  (void)state;
  badargs_check(engine_cases, sizeof engine_cases / sizeof engine_cases[0]);
}

static void test_execution(void **state) {
  (void)state;
  badargs_check(exec_cases, sizeof exec_cases / sizeof exec_cases[0]);
}

int main(void) {
  setvbuf(stdout, NULL, _IONBF, 0);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_engine_h),
      cmocka_unit_test(test_execution),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
