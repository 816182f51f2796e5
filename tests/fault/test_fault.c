/* tests/fault: injected faults, SQLite style (issue 10). For one operation
 * (argv[1]) and N = 1, 2, 3 ...: make the N-th fallible call of this process
 * fail (fault.h), run the operation, and check that a failure returns a
 * THEUS_E code with a message on the object, leaves the state version, the
 * domain, the heavy bindings, the drafts and the arena's bytes_live as they
 * were, leaks nothing (LeakSanitizer in the ASan build), and that a retry
 * without the fault succeeds. The loop ends at the first N the operation
 * never reaches. Each loop prints
 *   fault loop <op>: <points> injection points, all failed cleanly
 * (or the defects it found, with the call site of the injected failure).
 *
 * Injection is on the orchestrator side only: the fork server and workers are
 * forked children and never see an injected failure (docs/testing.md). */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fault.h"
#include "theus/theus.h"

#ifdef __SANITIZE_ADDRESS__
#include <sanitizer/lsan_interface.h>
#endif

/* Internal (static library): sets the engine's message, so that a failure
 * that leaves the previous message in place is seen as "no message". */
int theus__eset(theus_engine *e, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#define SENTINEL "fault-test: message before the operation"
#define ROWS 64

/* ---- defects ---------------------------------------------------------------- */

static const char *loop_name;
static unsigned n_defects;

static void defect(uint64_t n, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void defect(uint64_t n, const char *fmt, ...) {
  char what[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(what, sizeof what, fmt, ap);
  va_end(ap);
  const char *site = fault_site();
  n_defects++;
  fprintf(stderr, "DEFECT: loop %s, N=%llu, %s failed at %s: %s\n", loop_name, (unsigned long long)n,
          fault_kind_name(fault_fired_kind()), site[0] ? site : "(unknown site)", what);
  fault_print_site("    ");
}

/* LeakSanitizer on demand: a leak found once stays found, so after the first
 * one the loop stops asking (the exit check still reports every leak). */
static void check_leaks(uint64_t n) {
#ifdef __SANITIZE_ADDRESS__
  static int leak_checks_off;
  if (leak_checks_off)
    return;
  if (__lsan_do_recoverable_leak_check()) {
    defect(n, "memory leaked by the failed operation (LeakSanitizer report above)");
    leak_checks_off = 1;
  }
#else
  (void)n;
#endif
}

static int known_code(int rc) { return rc < 0 && strcmp(theus_err_name(rc), "THEUS_E?"); }

/* A resource failure reported as the caller's mistake misleads the user. */
static int misleading_code(int rc) {
  return rc == THEUS_EINVAL || rc == THEUS_EPARSE || rc == THEUS_ENOTFOUND || rc == THEUS_EEXIST ||
         rc == THEUS_ECONTRACT;
}

static void check_message(uint64_t n, int rc, const char *msg) {
  if (!known_code(rc))
    defect(n, "returned %d, not a THEUS_E code", rc);
  if (!msg || !msg[0] || !strcmp(msg, "no error") || !strcmp(msg, SENTINEL) || strstr(msg, "(null)"))
    defect(n, "%s with no message of its own (errmsg: \"%s\")", theus_err_name(rc), msg ? msg : "(NULL)");
  else if (misleading_code(rc) &&
           !(fault_fired_kind() == FK_DLOPEN && strstr(msg, "theus-fault-injected"))) /* dlerror's words */
    defect(n, "%s blames the caller for a resource failure: %s", theus_err_name(rc), msg);
}

/* ---- per-loop tallies ------------------------------------------------------- */

static unsigned by_kind[FK_COUNT], absorbed;
static int persist; /* the pass: 0 one-shot (only the N-th call fails), 1 persistent (every call from the N-th) */
static const char *pass_name(void) { return persist ? "persistent" : "one-shot"; }

static void tally(void) { by_kind[fault_fired_kind()]++; }

static int report(uint64_t points) {
  char kinds[512] = "";
  size_t l = 0;
  for (int k = 0; k < FK_COUNT; k++)
    if (by_kind[k])
      l += (size_t)snprintf(kinds + l, sizeof kinds - l, "%s%s %u", l ? ", " : "", fault_kind_name(k), by_kind[k]);
  if (!points)
    printf("fault loop %s (%s): 0 injection points (the operation calls no fallible primitive)\n", loop_name,
           pass_name());
  else if (!n_defects)
    printf("fault loop %s (%s): %llu injection points, all failed cleanly\n", loop_name, pass_name(),
           (unsigned long long)points);
  else
    printf("fault loop %s (%s): %llu injection points, %u defects so far\n", loop_name, pass_name(),
           (unsigned long long)points, n_defects);
  printf("  by primitive: %s\n", l ? kinds : "none");
  if (absorbed)
    printf("  %u injected failures absorbed (the operation succeeded anyway, with the right effect)\n", absorbed);
  fflush(stdout);
  memset(by_kind, 0, sizeof by_kind);
  absorbed = 0;
  return n_defects ? 1 : 0;
}

/* ---- processes -------------------------------------------------------------- */

static const char *const in_n[] = {"domain.n", NULL};
static const char *const out_local[] = {"domain.n", "heavy.lout", NULL};
static const char *const in_par[] = {"domain.n", "heavy.v", NULL};
static const char *const out_par[] = {"domain.m", NULL};
static const char *const in_v[] = {"heavy.v", NULL};

/* Local (effect): n += 1, a fresh heavy array, returns the new n. Checks its
 * own allocations, as a process should. */
static int inc_local(theus_ctx *ctx) {
  json_int_t n = json_integer_value(theus_ctx_get(ctx, "domain.n"));
  json_t *v = json_integer(n + 1), *r = json_integer(n + 1);
  if (!v || !r) {
    json_decref(v);
    json_decref(r);
    return theus_ctx_fail(ctx, "out of memory");
  }
  theus_ctx_return(ctx, r);
  int rc = theus_ctx_set(ctx, "domain.n", v);
  if (rc)
    return rc;
  void *data;
  uint64_t shape[1] = {1024}; /* 8 KiB: page-aligned, its pages reserved (fallocate) */
  if ((rc = theus_ctx_heavy_alloc(ctx, "lout", THEUS_DTYPE_F64, 1, shape, &data)))
    return rc;
  ((double *)data)[0] = (double)n;
  return 0;
}

static double sum_v(theus_ctx *ctx, uint64_t lo, uint64_t hi, int *ok) {
  theus_array_info ai;
  *ok = !theus_ctx_heavy(ctx, "v", &ai);
  double s = 0;
  for (uint64_t i = lo; *ok && i < hi && i < ai.shape[0]; i++)
    s += ((const double *)ai.data)[i];
  return s;
}

/* Parallel (pure): m = n + sum(v). */
static int par_sum(theus_ctx *ctx) {
  int ok;
  double s = sum_v(ctx, 0, ROWS, &ok);
  if (!ok)
    return theus_ctx_fail(ctx, "no heavy.v");
  json_t *m = json_real(s + (double)json_integer_value(theus_ctx_get(ctx, "domain.n")));
  if (!m)
    return theus_ctx_fail(ctx, "out of memory");
  return theus_ctx_set(ctx, "domain.m", m);
}

/* A map slice: the sum of its rows. */
static int slice_sum(theus_ctx *ctx) {
  uint64_t lo, hi;
  if (theus_ctx_slice(ctx, &lo, &hi, NULL, NULL))
    return theus_ctx_fail(ctx, "not in a map");
  int ok;
  double s = sum_v(ctx, lo, hi, &ok);
  json_t *r = ok ? json_real(s) : NULL;
  if (!r)
    return theus_ctx_fail(ctx, "no heavy.v or out of memory");
  theus_ctx_return(ctx, r);
  return 0;
}

static const char *const in_live[] = {"heavy.lr", NULL};

/* Local (read): a consistent snapshot of the live region "lr" (its first byte
 * plus its epoch); the first read of a run opens a twin reader. */
static int live_peek(theus_ctx *ctx) {
  unsigned char buf[64];
  uint64_t epoch;
  int rc = theus_ctx_live_read(ctx, "lr", 0, buf, sizeof buf, &epoch);
  if (rc)
    return theus_ctx_fail(ctx, "live read of heavy.lr: %s", theus_strerror(rc));
  json_t *r = json_integer((json_int_t)(buf[0] + epoch));
  if (!r)
    return theus_ctx_fail(ctx, "out of memory");
  theus_ctx_return(ctx, r);
  return 0;
}

/* ---- the engine every state loop works on ---------------------------------------- */

typedef struct fx {
  theus_engine *e;
  json_t *result;
  theus_twin_writer *tw;
  uint64_t iter;
} fx;

static void die(const char *what, theus_engine *e) {
  fprintf(stderr, "fault test setup: %s: %s\n", what, e ? theus_engine_errmsg(e) : "");
  exit(1);
}

static void fx_open(fx *f) {
  theus_engine_config cfg;
  theus_engine_config_init(&cfg);
  cfg.workers = 1;
  json_t *dom = json_pack("{s:i, s:{s:[i,i]}}", "n", 1, "obj", "a", 1, 2);
  cfg.domain = dom;
  if (theus_engine_open(&cfg, &f->e))
    die("engine open", f->e);
  json_decref(dom);
  theus_contract c1 = {.name = "inc_local", .fn = inc_local, .inputs = in_n, .outputs = out_local,
                       .semantic = THEUS_EFFECT};
  theus_contract c2 = {.name = "par_sum", .fn = par_sum, .inputs = in_par, .outputs = out_par, .parallel = 1,
                       .semantic = THEUS_PURE};
  theus_contract c3 = {.name = "slice_sum", .fn = slice_sum, .inputs = in_v, .outputs = NULL, .parallel = 1,
                       .semantic = THEUS_PURE};
  theus_contract c4 = {.name = "live_peek", .fn = live_peek, .inputs = in_live, .outputs = NULL,
                       .semantic = THEUS_PURE};
  if (theus_engine_register(f->e, &c1) || theus_engine_register(f->e, &c2) || theus_engine_register(f->e, &c3) ||
      theus_engine_register(f->e, &c4))
    die("register", f->e);
  double *d;
  uint64_t shape[1] = {ROWS};
  if (theus_engine_heavy_alloc(f->e, "v", THEUS_DTYPE_F64, 1, shape, (void **)&d))
    die("heavy_alloc", f->e);
  for (int i = 0; i < ROWS; i++)
    d[i] = i + 1;
  json_t *hp = json_pack("{s:b}", "v", 1);
  if (theus_engine_cas(f->e, theus_engine_version(f->e), NULL, hp, NULL))
    die("cas", f->e);
  json_decref(hp);
}

/* What a failed operation must leave as it was. */
typedef struct obs {
  uint64_t version, bytes_live, handles;
  json_t *domain;
  json_int_t heavy_keys, drafts, procs;
} obs;

static obs observe(theus_engine *e) {
  obs o = {0};
  theus_snapshot *s;
  theus_engine_snapshot(e, &s);
  o.version = theus_snapshot_version(s);
  o.domain = json_deep_copy(theus_snapshot_domain(s));
  theus_snapshot_release(s);
  theus_arena_stats as;
  theus_arena_stats_get(theus_engine_arena(e), &as);
  o.bytes_live = as.bytes_live;
  o.handles = as.active_handles;
  json_t *st = theus_engine_stats(e);
  json_t *eng = json_object_get(st, "engine");
  o.heavy_keys = json_integer_value(json_object_get(eng, "heavy_keys"));
  o.drafts = json_integer_value(json_object_get(eng, "drafts"));
  o.procs = json_integer_value(json_object_get(eng, "processes"));
  json_decref(st);
  return o;
}

static void compare(uint64_t n, const obs *a, const obs *b) {
  if (a->version != b->version)
    defect(n, "state version changed: %llu -> %llu", (unsigned long long)a->version, (unsigned long long)b->version);
  if (!json_equal(a->domain, b->domain)) {
    char *x = json_dumps(a->domain, JSON_COMPACT | JSON_SORT_KEYS), *y = json_dumps(b->domain, JSON_COMPACT | JSON_SORT_KEYS);
    defect(n, "domain changed: %s -> %s", x ? x : "?", y ? y : "?");
    free(x);
    free(y);
  }
  if (a->bytes_live != b->bytes_live || a->handles != b->handles)
    defect(n, "arena changed: bytes_live %llu -> %llu, handles %llu -> %llu", (unsigned long long)a->bytes_live,
           (unsigned long long)b->bytes_live, (unsigned long long)a->handles, (unsigned long long)b->handles);
  if (a->heavy_keys != b->heavy_keys || a->drafts != b->drafts || a->procs != b->procs)
    defect(n, "engine changed: heavy keys %lld -> %lld, drafts %lld -> %lld, processes %lld -> %lld",
           (long long)a->heavy_keys, (long long)b->heavy_keys, (long long)a->drafts, (long long)b->drafts,
           (long long)a->procs, (long long)b->procs);
}

/* One operation on f->e: prepare (unarmed), run (armed), check its effect
 * after a success and undo what must be undone (unarmed). */
typedef struct op {
  const char *name;
  void (*prepare)(fx *f);
  int (*run)(fx *f);
  const char *(*msg)(fx *f); /* the failed object's message (default: the engine's) */
  int (*succeeded)(fx *f, const obs *before); /* 1 if the success did what it must */
  void (*undo)(fx *f);
  /* A new engine for every N until a pthread_create was injected: reaches
   * the start of the thread the operation starts on first use. */
  int fresh;
} op;

static const char *engine_msg(fx *f) { return theus_engine_errmsg(f->e); }

static int engine_loop(const op *o) {
  fx f = {0};
  fx_open(&f);
  uint64_t n, points = 0;
  int fresh = o->fresh;
  for (n = 1;; n++) {
    f.iter = n;
    if (fresh && n > 1) {
      theus_engine_close(f.e);
      fx_open(&f);
    }
    if (o->prepare)
      o->prepare(&f);
    obs before = observe(f.e);
    theus__eset(f.e, 0, SENTINEL);
    fault_arm_mode(n, persist);
    int rc = o->run(&f);
    int fired = fault_disarm();
    if (fired)
      tally();
    points += fired ? 1u : 0u;
    if (fired && fresh && fault_fired_kind() == FK_PTHREAD_CREATE) {
      /* the thread is started from here on (the retry starts it): the call
       * after the thread's start is now the n-th, not the (n+1)-th */
      fresh = 0;
      n--;
    }
    if (!rc) {
      if (o->succeeded && !o->succeeded(&f, &before))
        defect(n, "the operation succeeded%s but did not do its job", fired ? " despite the failure" : "");
      absorbed += fired ? 1u : 0u;
      json_decref(f.result);
      f.result = NULL;
      if (o->undo)
        o->undo(&f);
      json_decref(before.domain);
      if (!fired)
        break;
      continue;
    }
    if (!fired) {
      fprintf(stderr, "fault loop %s: the operation fails without any injected failure: %s\n", o->name,
              (o->msg ? o->msg : engine_msg)(&f));
      exit(1);
    }
    check_message(n, rc, (o->msg ? o->msg : engine_msg)(&f));
    json_decref(f.result);
    f.result = NULL;
    obs after = observe(f.e);
    compare(n, &before, &after);
    json_decref(after.domain);
    check_leaks(n);
    /* the engine keeps working: the same operation, without the fault */
    obs again = observe(f.e);
    if ((rc = o->run(&f)) != 0)
      defect(n, "the retry without a fault failed: %s: %s", theus_err_name(rc), (o->msg ? o->msg : engine_msg)(&f));
    else if (o->succeeded && !o->succeeded(&f, &again))
      defect(n, "the retry succeeded but did not do its job");
    json_decref(f.result);
    f.result = NULL;
    if (!rc && o->undo)
      o->undo(&f);
    json_decref(again.domain);
    json_decref(before.domain);
  }
  theus_engine_close(f.e);
  return report(points);
}

/* ---- the operations --------------------------------------------------------------- */

static int run_register(fx *f) {
  char name[32];
  snprintf(name, sizeof name, "reg%llu", (unsigned long long)f->iter);
  theus_contract c = {.name = name, .fn = inc_local, .inputs = in_n, .outputs = out_local, .semantic = THEUS_EFFECT};
  return theus_engine_register(f->e, &c);
}
/* Fills the registry to its capacity (16, 32, ...) first, so that every
 * registration of the loop also grows it. */
static void prep_register(fx *f) {
  json_t *st = theus_engine_stats(f->e);
  json_int_t n = json_integer_value(json_object_get(json_object_get(st, "engine"), "processes"));
  json_decref(st);
  json_int_t cap = 16;
  while (cap < n)
    cap *= 2;
  for (; n < cap; n++) {
    char name[32];
    snprintf(name, sizeof name, "pad%lld", (long long)n);
    theus_contract c = {.name = name, .fn = inc_local, .inputs = in_n, .outputs = out_local, .semantic = THEUS_EFFECT};
    if (theus_engine_register(f->e, &c))
      die("register pad", f->e);
  }
}
static int ok_register(fx *f, const obs *b) {
  (void)b;
  char name[32];
  snprintf(name, sizeof name, "reg%llu", (unsigned long long)f->iter);
  return theus_engine_contract(f->e, name) != NULL;
}

/* register_json: the JSON form, with a resolver, declared errors and an
 * unknown key kept for extensions. */
static theus_process_fn resolve(const char *name, void *ud) {
  (void)ud;
  return !strcmp(name, "inc_local") ? inc_local : NULL;
}
static int run_register_json(fx *f) {
  char text[512];
  snprintf(text, sizeof text,
           "{\"name\": \"rj%llu\", \"function\": \"inc_local\", \"inputs\": [\"domain.n\"],\n"
           " \"outputs\": [\"domain.n\", \"heavy.lout\"], \"semantic\": \"effect\", \"errors\": [\"E_X\"],\n"
           " \"timeout_ms\": 100, \"extension\": {\"k\": [1, 2, \"three\"]}}",
           (unsigned long long)f->iter);
  return theus_engine_register_json(f->e, text, "fault.json", resolve, NULL);
}
static int ok_register_json(fx *f, const obs *b) {
  (void)b;
  char name[32];
  snprintf(name, sizeof name, "rj%llu", (unsigned long long)f->iter);
  const theus_contract *c = theus_engine_contract(f->e, name);
  return c && c->fn == inc_local && c->errors && c->errors[0] && !strcmp(c->errors[0], "E_X");
}

/* cas: a domain patch at several depths and the publication of a draft. */
static json_t *cas_dp, *cas_hp;
static void prep_cas(fx *f) {
  if (!cas_hp)
    cas_hp = json_pack("{s:b}", "h", 1);
  json_decref(cas_dp);
  cas_dp = json_pack("{s:I, s:{s:[i,{s:s}], s:n}}", "n", (json_int_t)f->iter, "obj", "a", 7, "b", "deep", "gone");
  json_t *st = theus_engine_stats(f->e);
  json_int_t drafts = json_integer_value(json_object_get(json_object_get(st, "engine"), "drafts"));
  json_decref(st);
  if (!drafts) {
    double *d;
    uint64_t shape[1] = {512};
    if (theus_engine_heavy_alloc(f->e, "h", THEUS_DTYPE_F64, 1, shape, (void **)&d))
      die("heavy_alloc h", f->e);
    d[0] = (double)f->iter;
  }
}
static int run_cas(fx *f) { return theus_engine_cas(f->e, theus_engine_version(f->e), cas_dp, cas_hp, NULL); }
static int ok_cas(fx *f, const obs *b) {
  json_t *n = theus_engine_get(f->e, "domain.n");
  int ok = theus_engine_version(f->e) == b->version + 1 && json_integer_value(n) == (json_int_t)f->iter;
  json_decref(n);
  theus_snapshot *s;
  theus_engine_snapshot(f->e, &s);
  theus_array_info ai;
  ok = ok && !theus_snapshot_heavy(s, "h", &ai) && ((const double *)ai.data)[0] == (double)f->iter;
  theus_snapshot_release(s);
  return ok;
}

static int run_exec_local(fx *f) { return theus_engine_execute(f->e, "inc_local", NULL, &f->result); }
static int ok_exec_local(fx *f, const obs *b) {
  json_t *n = theus_engine_get(f->e, "domain.n");
  json_int_t before = json_integer_value(json_object_get(b->domain, "n"));
  int ok = json_integer_value(n) == before + 1 && json_integer_value(f->result) == before + 1 &&
           theus_engine_version(f->e) == b->version + 1;
  json_decref(n);
  return ok;
}

static int run_exec_par(fx *f) { return theus_engine_execute(f->e, "par_sum", NULL, &f->result); }
static int ok_exec_par(fx *f, const obs *b) {
  json_t *m = theus_engine_get(f->e, "domain.m");
  double want = ROWS * (ROWS + 1) / 2.0 + (double)json_integer_value(json_object_get(b->domain, "n"));
  int ok = m && fabs(json_number_value(m) - want) < 1e-9;
  json_decref(m);
  return ok;
}
/* par_sum writes the same m every time: clear it so a commit is always a change */
static void undo_exec_par(fx *f) {
  if (theus_engine_set(f->e, "domain.m", json_null()))
    die("set domain.m", f->e);
}

static theus_job *job;
static char job_msg[1024];
/* A job of process `name`, waited for and released. */
static int submit_wait(fx *f, const char *name) {
  job_msg[0] = '\0';
  int rc = theus_engine_submit(f->e, name, NULL, &job);
  if (rc)
    return rc;
  rc = theus_job_wait(job, -1, &f->result);
  snprintf(job_msg, sizeof job_msg, "%s", theus_job_errmsg(job));
  theus_job_release(job);
  job = NULL;
  return rc;
}
static int run_submit(fx *f) { return submit_wait(f, "inc_local"); }
static int run_submit_par(fx *f) { return submit_wait(f, "par_sum"); }
static const char *msg_submit(fx *f) { return job_msg[0] ? job_msg : theus_engine_errmsg(f->e); }

static int run_map(fx *f) { return theus_engine_map(f->e, "slice_sum", "v", 4, "sum", NULL, &f->result); }
static int ok_map(fx *f, const obs *b) {
  (void)b;
  return fabs(json_number_value(f->result) - ROWS * (ROWS + 1) / 2.0) < 1e-9;
}

static int run_live(fx *f) { return theus_engine_live_create(f->e, "live", 4096, &f->tw); }
static int ok_live(fx *f, const obs *b) {
  theus_snapshot *s;
  theus_engine_snapshot(f->e, &s);
  theus_array_info ai;
  int ok = f->tw && theus_engine_version(f->e) == b->version + 1 && !theus_snapshot_heavy(s, "live", &ai);
  theus_snapshot_release(s);
  return ok;
}
static void undo_live(fx *f) {
  if (theus_engine_live_unbind(f->e, "live"))
    die("live_unbind", f->e);
  f->tw = NULL;
}

/* live-read: a live region "lr" written once (byte 7, epoch 1), read by a
 * local process (a twin reader per run). */
static void prep_live_read(fx *f) {
  static theus_engine *made_for;
  if (made_for == f->e)
    return;
  theus_twin_writer *tw;
  unsigned char seven = 7;
  if (theus_engine_live_create(f->e, "lr", 64, &tw) || theus_twin_writer_write(tw, 0, &seven, 1) ||
      theus_twin_writer_publish(tw, NULL))
    die("live region lr", f->e);
  made_for = f->e;
}
static int run_live_read(fx *f) { return theus_engine_execute(f->e, "live_peek", NULL, &f->result); }
static int ok_live_read(fx *f, const obs *b) {
  (void)b;
  return json_integer_value(f->result) == 8;
}

static int run_snapshot(fx *f) {
  theus_snapshot *s = NULL;
  int rc = theus_engine_snapshot(f->e, &s);
  if (!rc) {
    if (!theus_snapshot_get(s, "domain.n"))
      rc = THEUS_ENOTFOUND;
    theus_snapshot_release(s);
  }
  return rc;
}

/* ---- opening: engine, pipeline ----------------------------------------------------- */

/* An operation that makes an object: it hands back the object carrying the
 * message, or NULL only when memory ran out. */
typedef struct maker {
  const char *what;
  int (*make)(void **obj);
  const char *(*msg)(void *obj);
  int (*ok)(void *obj); /* 1 if the object made reads right */
  void (*close)(void *obj);
} maker;

static int make_loop(const maker *m) {
  uint64_t n;
  for (n = 1;; n++) {
    void *obj = NULL;
    fault_arm_mode(n, persist);
    int rc = m->make(&obj);
    int fired = fault_disarm();
    if (fired)
      tally();
    if (!rc) {
      if (!m->ok(obj))
        defect(n, "%s succeeded but what it made reads wrong", m->what);
      m->close(obj);
      if (!fired)
        break;
      absorbed++;
      continue;
    }
    if (!fired) {
      fprintf(stderr, "%s fails without any injected failure: %s\n", m->what, obj ? m->msg(obj) : "(no object)");
      exit(1);
    }
    if (obj)
      check_message(n, rc, m->msg(obj));
    else if (rc != THEUS_ENOMEM)
      defect(n, "%s handed back no object, with %s (only running out of memory may do that)", m->what,
             theus_err_name(rc));
    m->close(obj);
    check_leaks(n);
  }
  return report(n - 1);
}

static json_t *open_domain; /* made in main, outside the fault */
static int open_engine(void **obj) {
  theus_engine_config cfg;
  theus_engine_config_init(&cfg);
  cfg.workers = 1;
  cfg.retention = 2;
  cfg.domain = open_domain;
  return theus_engine_open(&cfg, (theus_engine **)obj);
}
static const char *engine_errmsg(void *e) { return theus_engine_errmsg(e); }
static int engine_ok(void *e) {
  json_t *v = theus_engine_get(e, "domain.n");
  int ok = json_integer_value(v) == 1 && theus_engine_version(e) == 1;
  json_decref(v);
  return ok;
}
static void engine_close(void *e) { theus_engine_close(e); }

static const char *pipeline_path(void) {
  const char *p = getenv("THEUS_FAULT_PIPELINE");
  if (!p) {
    fprintf(stderr, "THEUS_FAULT_PIPELINE is not set (meson sets it)\n");
    exit(1);
  }
  return p;
}

static int load_pipeline(void **obj) { return theus_pipeline_load(pipeline_path(), (theus_pipeline **)obj); }
static const char *pipeline_errmsg(void *p) { return theus_pipeline_errmsg(p); }
static int pipeline_ok(void *p) { return theus_pipeline_workers(p) == 1; }
static void pipeline_close(void *p) { theus_pipeline_close(p); }

static const maker open_maker = {"engine open", open_engine, engine_errmsg, engine_ok, engine_close};
static const maker load_maker = {"pipeline load", load_pipeline, pipeline_errmsg, pipeline_ok, pipeline_close};

static theus_pipeline *pipeline_load_or_die(void) {
  theus_pipeline *p = NULL;
  const char *plugin = getenv("THEUS_FAULT_PLUGIN");
  if (theus_pipeline_load(pipeline_path(), &p) || (plugin && theus_pipeline_add_plugin(p, plugin))) {
    fprintf(stderr, "pipeline load: %s\n", theus_pipeline_errmsg(p));
    exit(1);
  }
  return p;
}

/* Opens the pipeline's engine under the fault: plugin (dlopen), typed
 * processes (libffi), engine, registration, heavy arrays. No pool here: the
 * open loop covers the pool's start, and pipeline-run runs on one. */
static int pipeline_open_loop(void) {
  theus_engine_config cfg;
  theus_engine_config_init(&cfg);
  cfg.workers = -1;
  uint64_t n;
  for (n = 1;; n++) {
    theus_pipeline *p = pipeline_load_or_die();
    theus_engine *e = NULL;
    fault_arm_mode(n, persist);
    int rc = theus_pipeline_open_engine(p, &cfg, &e);
    int fired = fault_disarm();
    if (fired)
      tally();
    if (!rc) {
      theus_snapshot *s;
      theus_engine_snapshot(e, &s);
      theus_array_info ai;
      if (theus_snapshot_heavy(s, "v", &ai) || ((const double *)ai.data)[ROWS - 1] != ROWS ||
          !theus_engine_contract(e, "inc") || !theus_engine_contract(e, "sum"))
        defect(n, "the engine opened but the pipeline's processes or arrays are missing");
      theus_snapshot_release(s);
    } else if (!fired) {
      fprintf(stderr, "pipeline open fails without any injected failure: %s\n", theus_pipeline_errmsg(p));
      exit(1);
    } else {
      check_message(n, rc, theus_pipeline_errmsg(p));
      if (e)
        defect(n, "the open failed but handed back an engine");
    }
    theus_engine_close(e);
    theus_pipeline_close(p);
    check_leaks(n);
    if (!rc && !fired)
      break;
    absorbed += !rc ? 1u : 0u;
  }
  return report(n - 1);
}

/* Runs the pipeline under the fault on an engine (with a pool) opened once:
 * a local typed step, a parallel one, a map, a branch. A failed step stops the
 * run (the steps before it stay committed, as documented); a run without the
 * fault must then succeed on the same engine. */
static int pipeline_run_loop(void) {
  theus_pipeline *p = pipeline_load_or_die();
  theus_engine *e = NULL;
  theus_engine_config cfg;
  theus_engine_config_init(&cfg);
  cfg.workers = 1;
  if (theus_pipeline_open_engine(p, &cfg, &e)) {
    fprintf(stderr, "pipeline open: %s\n", theus_pipeline_errmsg(p));
    return 1;
  }
  uint64_t n;
  for (n = 1;; n++) {
    json_t *n0 = theus_engine_get(e, "domain.n");
    json_int_t start = json_integer_value(n0);
    json_decref(n0);
    fault_arm_mode(n, persist);
    int rc = theus_pipeline_run(p, e);
    int fired = fault_disarm();
    if (fired)
      tally();
    if (rc && !fired) {
      fprintf(stderr, "pipeline run fails without any injected failure: %s\n", theus_pipeline_errmsg(p));
      return 1;
    }
    if (rc) {
      check_message(n, rc, theus_pipeline_errmsg(p));
      check_leaks(n);
      json_t *m = theus_engine_get(e, "domain.n");
      start = json_integer_value(m);
      json_decref(m);
      if ((rc = theus_pipeline_run(p, e)))
        defect(n, "the run without a fault failed: %s", theus_pipeline_errmsg(p));
    } else if (fired) {
      absorbed++;
    }
    json_t *ok = theus_engine_get(e, "domain.ok"), *sum = theus_engine_get(e, "domain.msum"),
           *lit = theus_engine_get(e, "domain.lit");
    if (!rc && (json_integer_value(ok) != start + 2 || fabs(json_number_value(sum) - ROWS * (ROWS + 1) / 2.0) > 1e-9 ||
                json_array_size(json_object_get(lit, "a")) != 3))
      defect(n, "the pipeline ran but its final domain is wrong");
    json_decref(ok);
    json_decref(sum);
    json_decref(lit);
    /* the next run must write the literal again */
    if (theus_engine_set(e, "domain.lit", json_null()))
      defect(n, "cannot clear domain.lit: %s", theus_engine_errmsg(e));
    if (!fired)
      break;
  }
  theus_engine_close(e);
  theus_pipeline_close(p);
  return report(n - 1);
}

/* ---- main ------------------------------------------------------------------------------ */

int main(int argc, char **argv) {
  fault_init();
  setvbuf(stdout, NULL, _IOLBF, 0);
  static const op ops[] = {
      {"register", prep_register, run_register, NULL, ok_register, NULL, 0},
      {"register-json", NULL, run_register_json, NULL, ok_register_json, NULL, 0},
      {"cas", prep_cas, run_cas, NULL, ok_cas, NULL, 0},
      {"execute-local", NULL, run_exec_local, NULL, ok_exec_local, NULL, 0},
      {"execute-parallel", NULL, run_exec_par, NULL, ok_exec_par, undo_exec_par, 0},
      {"submit", NULL, run_submit, msg_submit, ok_exec_local, NULL, 1},
      {"submit-parallel", NULL, run_submit_par, msg_submit, ok_exec_par, undo_exec_par, 0},
      {"map", NULL, run_map, NULL, ok_map, NULL, 0},
      {"live-create", NULL, run_live, NULL, ok_live, undo_live, 0},
      {"live-read", prep_live_read, run_live_read, NULL, ok_live_read, NULL, 0},
      {"snapshot", NULL, run_snapshot, NULL, NULL, NULL, 0},
  };
  if (argc != 2) {
    fprintf(stderr, "usage: %s open|pipeline-load|pipeline-open|pipeline-run", argv[0]);
    for (size_t i = 0; i < sizeof ops / sizeof *ops; i++)
      fprintf(stderr, "|%s", ops[i].name);
    fprintf(stderr, "\n");
    return 2;
  }
  loop_name = argv[1];
  open_domain = json_pack("{s:i}", "n", 1);
  const op *o = NULL;
  for (size_t i = 0; i < sizeof ops / sizeof *ops; i++)
    if (!strcmp(ops[i].name, argv[1]))
      o = &ops[i];
  int rc = 0;
  for (persist = 0; persist < 2; persist++) { /* the one-shot pass, then the persistent one */
    if (!strcmp(argv[1], "open"))
      rc |= make_loop(&open_maker);
    else if (!strcmp(argv[1], "pipeline-load"))
      rc |= make_loop(&load_maker);
    else if (!strcmp(argv[1], "pipeline-open"))
      rc |= pipeline_open_loop();
    else if (!strcmp(argv[1], "pipeline-run"))
      rc |= pipeline_run_loop();
    else if (o)
      rc |= engine_loop(o);
    else {
      fprintf(stderr, "unknown loop '%s'\n", argv[1]);
      return 2;
    }
  }
  json_decref(cas_dp);
  json_decref(cas_hp);
  json_decref(open_domain);
  return rc;
}
