/* Running processes: locally or in the pool, committing by CAS with retry;
 * async jobs; map with reducers. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../contracts/contract_internal.h"
#include "engine_internal.h"

/* What one run of a process produced. */
typedef struct run_out {
  int rc;
  int worker;
  json_t *patch; /* domain merge patch, or NULL */
  json_t *heavy; /* {key: true} drafts to publish, or NULL */
  json_t *ret;
  char msg[1024];
} run_out;

typedef struct slice_t {
  uint64_t lo, hi;
  uint32_t index, count;
} slice_t;

static void run_out_fini(theus_engine *e, run_out *o, int drop_drafts) {
  const char *key;
  json_t *v;
  if (drop_drafts)
    json_object_foreach(o->heavy, key, v) theus__draft_drop(e, key);
  json_decref(o->patch);
  json_decref(o->heavy);
  json_decref(o->ret);
  o->patch = o->heavy = o->ret = NULL;
}

static void trace(theus_engine *e, const theus_contract *c, int worker, uint64_t t0, int rc) {
  theus_trace_fn fn = atomic_load_explicit(&e->trace, memory_order_acquire);
  if (!fn)
    return;
  theus_trace_event ev = {c->name, worker, t0, theus__now_ns(), rc};
  fn(&ev, atomic_load_explicit(&e->trace_ud, memory_order_relaxed));
}

/* ---- local runs ----------------------------------------------------------- */

/* Runs c->fn on ctx and turns its outcome into code + message. */
static int call_process(theus_ctx *ctx) {
  int rc = ctx->c->fn(ctx);
  if (!ctx->rc && rc)
    snprintf(ctx->msg, sizeof ctx->msg, "process '%s' failed: returned %d (%s)", ctx->c->name, rc,
             rc < 0 ? theus_strerror(rc) : "nonzero");
  if (!ctx->rc && rc)
    ctx->rc = rc < 0 ? rc : THEUS_EPROCESS;
  return ctx->rc;
}

static void run_local(theus_engine *e, const theus_contract *c, theus_snapshot *snap, const json_t *args,
                      const slice_t *sl, run_out *o) {
  theus_ctx ctx = {0};
  ctx.e = e;
  ctx.c = c;
  ctx.snap = snap;
  ctx.domain = snap->domain;
  ctx.args = args;
  ctx.worker = -1;
  if (sl) {
    ctx.has_slice = 1;
    ctx.lo = sl->lo;
    ctx.hi = sl->hi;
    ctx.slice_index = sl->index;
    ctx.slice_count = sl->count;
  }
  uint64_t t0 = theus__now_ns();
  o->rc = call_process(&ctx);
  o->worker = -1;
  o->heavy = ctx.heavy_out;
  ctx.heavy_out = NULL;
  if (!o->rc) {
    o->patch = ctx.patch;
    o->ret = ctx.ret;
    ctx.patch = ctx.ret = NULL;
  } else {
    snprintf(o->msg, sizeof o->msg, "%s", ctx.msg);
  }
  theus__ctx_fini(&ctx);
  trace(e, c, -1, t0, o->rc);
}

/* ---- worker runs: the task carries the contract, inputs and args as JSON -- */

static json_t *strv_json(const char *const *v) {
  json_t *a = json_array();
  for (size_t i = 0; a && v && v[i]; i++)
    json_array_append_new(a, json_string(v[i]));
  return a;
}

/* The declared domain inputs of c, copied (shared) out of the snapshot. */
static json_t *input_domain(const theus_contract *c, const json_t *domain) {
  json_t *mini = json_object();
  for (size_t i = 0; mini && c->inputs && c->inputs[i]; i++) {
    if (strncmp(c->inputs[i], "domain.", 7))
      continue;
    char path[512];
    snprintf(path, sizeof path, "%s", c->inputs[i]);
    char *star = strstr(path, ".*");
    if (star)
      *star = 0; /* ship the subtree above the first wildcard */
    const json_t *v = theus__json_at(domain, path);
    if (v && strchr(path, '.'))
      theus__patch_put(mini, path, json_incref((json_t *)v));
  }
  return mini;
}

typedef struct task_pack {
  char *arg;
  size_t len;
  theus_handle handles[THEUS_POOL_MAX_HANDLES];
  const char *keys[THEUS_POOL_MAX_HANDLES];
  unsigned nhandles;
} task_pack;

static int bind_heavy(const theus_contract *c, const theus_snapshot *snap, task_pack *tp, json_t *hmap,
                      char *msg, size_t msglen) {
  for (size_t i = 0; i < snap->nheavy; i++) {
    char path[300];
    snprintf(path, sizeof path, "heavy.%s", snap->heavy[i].key);
    if (!theus__strv_covers(c->inputs, path))
      continue;
    if (tp->nhandles == THEUS_POOL_MAX_HANDLES) {
      snprintf(msg, msglen, "process '%s': more than %u heavy inputs for one task", c->name,
               THEUS_POOL_MAX_HANDLES);
      return THEUS_ELIMIT;
    }
    tp->handles[tp->nhandles] = snap->heavy[i].arr->handle;
    tp->keys[tp->nhandles] = snap->heavy[i].key;
    json_object_set_new(hmap, snap->heavy[i].key, json_integer(tp->nhandles));
    tp->nhandles++;
  }
  return 0;
}

static int pack_task(const theus_contract *c, const theus_snapshot *snap, const json_t *args, const slice_t *sl,
                     task_pack *tp, char *msg, size_t msglen) {
  json_t *hmap = json_object();
  int rc = bind_heavy(c, snap, tp, hmap, msg, msglen);
  json_t *a = args ? json_incref((json_t *)args) : json_object();
  json_t *j = json_pack("{s:I, s:I, s:s, s:i, s:o, s:o, s:o, s:o, s:o, s:o}", "fn", (json_int_t)(intptr_t)c->fn,
                        "ud", (json_int_t)(intptr_t)c->userdata, "name", c->name, "sem", (int)c->semantic, "in",
                        strv_json(c->inputs), "out", strv_json(c->outputs), "err", strv_json(c->errors), "dom",
                        input_domain(c, snap->domain), "args", a, "heavy",
                        hmap);
  if (j && sl)
    json_object_set_new(j, "slice", json_pack("[I,I,i,i]", (json_int_t)sl->lo, (json_int_t)sl->hi,
                                              (int)sl->index, (int)sl->count));
  if (!j) {
    snprintf(msg, msglen, "process '%s': could not encode the task (args must be JSON)", c->name);
    return THEUS_ENOMEM;
  }
  tp->arg = rc ? NULL : json_dumps(j, JSON_COMPACT);
  json_decref(j);
  if (rc)
    return rc;
  if (!tp->arg)
    return THEUS_ENOMEM;
  tp->len = strlen(tp->arg);
  if (tp->len > THEUS_POOL_ARG_MAX) {
    snprintf(msg, msglen,
             "process '%s': inputs and args take %zu bytes, above the %u-byte task limit; "
             "put large data in heavy arrays",
             c->name, tp->len, THEUS_POOL_ARG_MAX);
    free(tp->arg);
    tp->arg = NULL;
    return THEUS_ELIMIT;
  }
  return 0;
}

/* Worker side: rebuild a ctx from the task bytes and run the process. */
static const char **strv_from(const json_t *a) {
  size_t n = json_array_size(a);
  const char **v = calloc(n + 1, sizeof *v);
  for (size_t i = 0; v && i < n; i++)
    v[i] = json_string_value(json_array_get(a, i));
  return v;
}

int theus__pool_task(theus_task *t) {
  size_t len;
  const char *arg = theus_task_arg(t, &len);
  json_error_t je;
  json_t *j = json_loadb(arg, len, 0, &je);
  if (!j)
    return theus_task_fail(t, THEUS_EPARSE, "engine task: bad task bytes: %s", je.text);
  theus_contract c = {0};
  c.name = json_string_value(json_object_get(j, "name"));
  c.fn = (theus_process_fn)(intptr_t)json_integer_value(json_object_get(j, "fn"));
  c.userdata = (void *)(intptr_t)json_integer_value(json_object_get(j, "ud"));
  c.semantic = (theus_semantic)json_integer_value(json_object_get(j, "sem"));
  c.parallel = 1;
  const char **in = strv_from(json_object_get(j, "in")), **out = strv_from(json_object_get(j, "out")),
             **err = strv_from(json_object_get(j, "err"));
  c.inputs = in;
  c.outputs = out;
  c.errors = err;
  theus_ctx ctx = {0};
  ctx.c = &c;
  ctx.task = t;
  ctx.domain = json_object_get(j, "dom");
  ctx.args = json_object_get(j, "args");
  ctx.task_heavy = json_object_get(j, "heavy");
  ctx.worker = (int)theus_task_worker(t);
  const json_t *sl = json_object_get(j, "slice");
  if (sl) {
    ctx.has_slice = 1;
    ctx.lo = (uint64_t)json_integer_value(json_array_get(sl, 0));
    ctx.hi = (uint64_t)json_integer_value(json_array_get(sl, 1));
    ctx.slice_index = (uint32_t)json_integer_value(json_array_get(sl, 2));
    ctx.slice_count = (uint32_t)json_integer_value(json_array_get(sl, 3));
  }
  int rc = (!in || !out || !err || !c.name || !c.fn) ? THEUS_EINVAL : call_process(&ctx);
  if (!rc) {
    json_t *res = json_pack("{s:O?, s:O?}", "patch", ctx.patch, "ret", ctx.ret);
    char *s = res ? json_dumps(res, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    json_decref(res);
    rc = s ? theus_task_write(t, s, strlen(s)) : theus_task_fail(t, THEUS_ENOMEM, "engine task: out of memory");
    free(s);
  } else {
    theus_task_fail(t, rc, "%s", ctx.msg[0] ? ctx.msg : "engine task: malformed task");
  }
  theus__ctx_fini(&ctx);
  free(in);
  free(out);
  free(err);
  json_decref(j);
  return rc;
}

static int submit_task(theus_engine *e, const theus_contract *c, const task_pack *tp, theus_ticket *tk) {
  theus_task_desc d = {theus__pool_task, tp->arg, tp->len, tp->handles, tp->nhandles, tp->keys,
                       c->timeout_ms ? (int64_t)c->timeout_ms : 0};
  for (unsigned spin = 0;; spin++) {
    int rc = theus_pool_submit(e->pool, &d, tk);
    if (rc != THEUS_EAGAIN || spin > 100000)
      return rc;
    struct timespec ts = {0, 50000};
    nanosleep(&ts, NULL);
  }
}

/* Turns a pool result into a run_out. */
static void collect(theus_engine *e, const theus_contract *c, theus_ticket tk, uint64_t t0, run_out *o) {
  theus_pool_result res;
  memset(&res, 0, sizeof res);
  int rc = theus_pool_wait(e->pool, tk, -1, &res);
  o->worker = res.worker;
  if (rc || res.status) {
    o->rc = rc ? rc : res.status;
    snprintf(o->msg, sizeof o->msg, "process '%s' (parallel): %s", c->name,
             res.errmsg);
  } else {
    json_error_t je;
    json_t *j = json_loadb(res.data, res.len, 0, &je);
    if (!j) {
      o->rc = THEUS_EPARSE;
      snprintf(o->msg, sizeof o->msg, "process '%s': bad result from worker %d: %s", c->name, res.worker, je.text);
    } else {
      json_t *p = json_object_get(j, "patch"), *r = json_object_get(j, "ret");
      o->patch = json_is_object(p) ? json_incref(p) : NULL;
      o->ret = json_is_null(r) ? NULL : json_incref(r);
      json_decref(j);
      /* the worker is not trusted to have checked its own outputs */
      o->rc = theus__check_outputs(c, o->patch, o->msg, sizeof o->msg);
    }
  }
  theus_pool_result_release(&res);
  trace(e, c, o->worker, t0, o->rc);
}

static void run_remote(theus_engine *e, const theus_contract *c, theus_snapshot *snap, const json_t *args,
                       const slice_t *sl, run_out *o) {
  task_pack tp = {0};
  theus_ticket tk;
  uint64_t t0 = theus__now_ns();
  o->worker = -1;
  if ((o->rc = pack_task(c, snap, args, sl, &tp, o->msg, sizeof o->msg)))
    return;
  if ((o->rc = submit_task(e, c, &tp, &tk)))
    snprintf(o->msg, sizeof o->msg, "process '%s': submit to the pool: %s", c->name, theus_pool_errmsg(e->pool));
  free(tp.arg);
  if (!o->rc)
    collect(e, c, tk, t0, o);
}

static void run(theus_engine *e, const theus_contract *c, theus_snapshot *snap, const json_t *args,
                const slice_t *sl, run_out *o) {
  if (c->parallel && e->pool)
    run_remote(e, c, snap, args, sl, o);
  else
    run_local(e, c, snap, args, sl, o);
  if (o->rc)
    atomic_fetch_add_explicit(&e->n_fail, 1, memory_order_relaxed);
}

/* ---- execute ------------------------------------------------------------ */

static void backoff(unsigned attempt, unsigned *seed) {
  long ns = 1000L << (attempt < 10 ? attempt : 10); /* 1 us .. ~1 ms */
  struct timespec ts = {0, ns / 2 + rand_r(seed) % (ns / 2 + 1)};
  nanosleep(&ts, NULL);
}

static const theus_contract *lookup(theus_engine *e, const char *name, char *msg, size_t msglen) {
  const theus_contract *c = theus_engine_contract(e, name);
  if (!c)
    snprintf(msg, msglen, "no process named '%s' is registered; register it before executing",
             name ? name : "(null)");
  return c;
}

static int commit(theus_engine *e, theus_snapshot *snap, run_out *o, uint64_t *version, char *msg,
                  size_t msglen) {
  int writes = (o->patch && json_object_size(o->patch)) || (o->heavy && json_object_size(o->heavy));
  if (!writes)
    return 0; /* nothing to commit: a reader does not create a version */
  return theus__cas(e, snap->version, o->patch, o->heavy, version, msg, msglen);
}

static int exec_run(theus_engine *e, const char *name, const json_t *args, json_t **result, uint64_t *version,
                    char *msg, size_t msglen) {
  const theus_contract *c = lookup(e, name, msg, msglen);
  if (!c)
    return THEUS_ENOTFOUND;
  if (args && !json_is_object(args)) {
    snprintf(msg, msglen, "execute '%s': args must be a JSON object", name);
    return THEUS_EINVAL;
  }
  atomic_fetch_add_explicit(&e->n_exec, 1, memory_order_relaxed);
  unsigned seed = (unsigned)theus__now_ns();
  for (unsigned attempt = 0;; attempt++) {
    theus_snapshot *snap = theus__snap_get(e);
    run_out o = {0};
    run(e, c, snap, args, NULL, &o);
    int rc = o.rc;
    if (rc)
      snprintf(msg, msglen, "%s", o.msg);
    else
      rc = commit(e, snap, &o, version, msg, msglen);
    theus__snap_put(snap);
    if (!rc && result) {
      *result = o.ret;
      o.ret = NULL;
    }
    run_out_fini(e, &o, rc != 0);
    if (rc == THEUS_ECONFLICT && attempt < e->cfg.max_retries) {
      atomic_fetch_add_explicit(&e->n_retry, 1, memory_order_relaxed);
      backoff(attempt, &seed);
      continue;
    }
    if (rc == THEUS_ECONFLICT) {
      size_t l = strlen(msg);
      snprintf(msg + l, msglen - l, " (after %u retries of '%s')", attempt, name);
    }
    return rc;
  }
}

int theus_engine_execute(theus_engine *e, const char *name, const json_t *args, json_t **result) {
  char msg[1024] = "";
  if (result)
    *result = NULL;
  int rc = exec_run(e, name, args, result, NULL, msg, sizeof msg);
  return rc ? theus__eset(e, rc, "%s", msg) : 0;
}

/* ---- jobs ------------------------------------------------------------------ */

struct theus_job {
  theus_engine *e;
  atomic_uint refs;
  char *name;
  json_t *args;
  pthread_mutex_t m;
  pthread_cond_t cv;
  atomic_int done;
  int rc;
  json_t *result;
  uint64_t version;
  char msg[1024];
};

static void job_put(theus_job *j) {
  if (atomic_fetch_sub_explicit(&j->refs, 1, memory_order_acq_rel) != 1)
    return;
  json_decref(j->args);
  json_decref(j->result);
  free(j->name);
  pthread_cond_destroy(&j->cv);
  pthread_mutex_destroy(&j->m);
  free(j);
}

static void *job_main(void *arg) {
  theus_job *j = arg;
  theus_engine *e = j->e;
  json_t *result = NULL;
  uint64_t version = 0;
  char msg[1024] = "";
  int rc = exec_run(e, j->name, j->args, &result, &version, msg, sizeof msg);
  pthread_mutex_lock(&j->m);
  j->rc = rc;
  j->result = result;
  j->version = version;
  memcpy(j->msg, msg, sizeof msg);
  j->done = 1;
  pthread_cond_broadcast(&j->cv);
  pthread_mutex_unlock(&j->m);
  job_put(j);
  pthread_mutex_lock(&e->jobs_lock);
  if (--e->jobs_running == 0)
    pthread_cond_broadcast(&e->jobs_cv);
  pthread_mutex_unlock(&e->jobs_lock);
  return NULL;
}

int theus_engine_submit(theus_engine *e, const char *name, const json_t *args, theus_job **out) {
  char msg[512] = "";
  *out = NULL;
  if (!lookup(e, name, msg, sizeof msg))
    return theus__eset(e, THEUS_ENOTFOUND, "submit: %s", msg);
  theus_job *j = calloc(1, sizeof *j);
  if (!j || !(j->name = strdup(name))) {
    free(j);
    return theus__eset(e, THEUS_ENOMEM, "submit '%s': out of memory", name);
  }
  j->e = e;
  atomic_init(&j->refs, 2);
  j->args = args ? json_deep_copy(args) : NULL;
  pthread_mutex_init(&j->m, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&j->cv, &ca);
  pthread_condattr_destroy(&ca);
  pthread_attr_t at;
  pthread_attr_init(&at);
  pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
  pthread_mutex_lock(&e->jobs_lock);
  e->jobs_running++;
  pthread_mutex_unlock(&e->jobs_lock);
  pthread_t th;
  int err = pthread_create(&th, &at, job_main, j);
  pthread_attr_destroy(&at);
  if (err) {
    pthread_mutex_lock(&e->jobs_lock);
    e->jobs_running--;
    pthread_mutex_unlock(&e->jobs_lock);
    atomic_store(&j->refs, 1);
    job_put(j);
    return theus__eset(e, THEUS_ESYS, "submit '%s': cannot start a thread: %s", name, strerror(err));
  }
  *out = j;
  return 0;
}

int theus_job_wait(theus_job *j, int timeout_ms, json_t **result) {
  if (result)
    *result = NULL;
  struct timespec dl;
  clock_gettime(CLOCK_MONOTONIC, &dl);
  if (timeout_ms > 0) {
    dl.tv_sec += timeout_ms / 1000;
    dl.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (dl.tv_nsec >= 1000000000L) {
      dl.tv_sec++;
      dl.tv_nsec -= 1000000000L;
    }
  }
  pthread_mutex_lock(&j->m);
  while (!j->done && timeout_ms != 0) {
    if (timeout_ms < 0)
      pthread_cond_wait(&j->cv, &j->m);
    else if (pthread_cond_timedwait(&j->cv, &j->m, &dl))
      break;
  }
  int rc = j->done ? j->rc : THEUS_ETIMEDOUT;
  if (j->done && result)
    *result = json_incref(j->result);
  pthread_mutex_unlock(&j->m);
  return rc;
}

const char *theus_job_errmsg(const theus_job *j) { return j->done ? j->msg : ""; }

uint64_t theus_job_version(const theus_job *j) { return j->done ? j->version : 0; }

void theus_job_release(theus_job *j) {
  if (j)
    job_put(j);
}

/* ---- map ---------------------------------------------------------------- */

typedef struct map_job {
  theus_engine *e;
  const theus_contract *c;
  theus_snapshot *snap;
  const json_t *args;
  uint32_t n;
  slice_t *sl;
  run_out *out;
} map_job;

/* Slices in flight at once: results stay in the pool's rings until
 * collected, so an unbounded burst would fill them. */
#define MAP_WINDOW 128u

static void map_submit(map_job *m, uint32_t i, theus_ticket *tk) {
  run_out *o = &m->out[i];
  task_pack tp = {0};
  o->worker = -1;
  if (!(o->rc = pack_task(m->c, m->snap, m->args, &m->sl[i], &tp, o->msg, sizeof o->msg)) &&
      (o->rc = submit_task(m->e, m->c, &tp, tk)))
    snprintf(o->msg, sizeof o->msg, "submit: %s", theus_pool_errmsg(m->e->pool));
  free(tp.arg);
  if (o->rc)
    *tk = 0;
}

static void map_run_all(map_job *m) {
  if (!(m->c->parallel && m->e->pool)) {
    for (uint32_t i = 0; i < m->n; i++)
      run_local(m->e, m->c, m->snap, m->args, &m->sl[i], &m->out[i]);
    return;
  }
  theus_ticket tk[MAP_WINDOW];
  uint64_t t0[MAP_WINDOW];
  uint32_t next = 0; /* next slice to submit; slices [done, next) are in flight */
  for (uint32_t done = 0; done < m->n; done++) {
    for (; next < m->n && next - done < MAP_WINDOW; next++) {
      t0[next % MAP_WINDOW] = theus__now_ns();
      map_submit(m, next, &tk[next % MAP_WINDOW]);
    }
    if (tk[done % MAP_WINDOW])
      collect(m->e, m->c, tk[done % MAP_WINDOW], t0[done % MAP_WINDOW], &m->out[done]);
  }
}

/* Reduces the slice results in order; the first failure wins. */
static int map_reduce(map_job *m, theus_reducer_fn fn, void *ud, const char *rname, json_t **result, char *msg,
                      size_t msglen) {
  json_t *acc = NULL;
  int rc = 0;
  for (uint32_t i = 0; i < m->n && !rc; i++) {
    run_out *o = &m->out[i];
    if (!o->rc && o->patch && json_object_size(o->patch)) {
      snprintf(o->msg, sizeof o->msg, "contract violation: map slices may not write state outputs");
      o->rc = THEUS_ECONTRACT;
    }
    if (o->rc) {
      rc = o->rc;
      snprintf(msg, msglen, "map '%s' slice %u/%u [%llu, %llu): %.700s", m->c->name, i, m->n,
               (unsigned long long)m->sl[i].lo, (unsigned long long)m->sl[i].hi, o->msg);
      break;
    }
    if (!o->ret)
      continue;
    if (!(acc = fn(acc, o->ret, ud))) {
      rc = THEUS_EINVAL;
      snprintf(msg, msglen, "map '%s': reducer '%s' cannot combine the result of slice %u (%s)", m->c->name,
               rname, i, json_is_string(o->ret) ? "a string" : "type mismatch");
    }
  }
  if (rc)
    json_decref(acc);
  else if (result)
    *result = acc ? acc : json_null();
  else
    json_decref(acc);
  return rc;
}

static int map_setup(theus_engine *e, map_job *m, const char *key, uint32_t slices, char *msg, size_t msglen) {
  const theus__hbind *b = key ? theus__snap_find(m->snap, key) : NULL;
  theus_array_info info;
  if (!b || theus_array_info_get(b->arr->arena, b->arr->handle, &info)) {
    snprintf(msg, msglen, "map '%s': no heavy array '%s' in version %llu; publish it first", m->c->name,
             key ? key : "(null)", (unsigned long long)m->snap->version);
    return THEUS_ENOTFOUND;
  }
  char path[300];
  snprintf(path, sizeof path, "heavy.%s", key);
  if (!theus__strv_covers(m->c->inputs, path)) {
    snprintf(msg, msglen, "map '%s': the contract does not declare input '%s'", m->c->name, path);
    return THEUS_ECONTRACT;
  }
  uint64_t rows = info.shape[0];
  m->n = slices > rows ? (uint32_t)rows : slices;
  m->sl = calloc(m->n, sizeof *m->sl);
  m->out = calloc(m->n, sizeof *m->out);
  if (!m->sl || !m->out)
    return THEUS_ENOMEM;
  for (uint32_t i = 0; i < m->n; i++)
    m->sl[i] = (slice_t){rows * i / m->n, rows * (i + 1) / m->n, i, m->n};
  (void)e;
  return 0;
}

int theus_engine_map(theus_engine *e, const char *name, const char *key, uint32_t slices, const char *reducer,
                     const json_t *args, json_t **result) {
  char msg[1024] = "";
  if (result)
    *result = NULL;
  map_job m = {e, lookup(e, name, msg, sizeof msg), NULL, args, 0, NULL, NULL};
  if (!m.c)
    return theus__eset(e, THEUS_ENOTFOUND, "map: %s", msg);
  void *ud;
  theus_reducer_fn fn = reducer ? theus__reducer_find(e, reducer, &ud) : NULL;
  if (!fn)
    return theus__eset(e, THEUS_EINVAL, "map '%s': unknown reducer '%s' (sum, min, max, concat or registered)",
                       name, reducer ? reducer : "(null)");
  if (!slices || (args && !json_is_object(args)))
    return theus__eset(e, THEUS_EINVAL, "map '%s': slices must be >= 1 and args an object", name);
  atomic_fetch_add_explicit(&e->n_exec, 1, memory_order_relaxed);
  m.snap = theus__snap_get(e);
  int rc = map_setup(e, &m, key, slices, msg, sizeof msg);
  if (!rc) {
    map_run_all(&m);
    rc = map_reduce(&m, fn, ud, reducer, result, msg, sizeof msg);
  }
  for (uint32_t i = 0; m.out && i < m.n; i++)
    run_out_fini(e, &m.out[i], 1);
  free(m.out);
  free(m.sl);
  theus__snap_put(m.snap);
  if (rc)
    atomic_fetch_add_explicit(&e->n_fail, 1, memory_order_relaxed);
  return rc ? theus__eset(e, rc, "%s", msg) : 0;
}
