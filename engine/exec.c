/* Running processes: locally or in the pool, committing by CAS with retry;
 * async jobs; map with reducers. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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

/* A run submitted at queued that ran from start to end where it ran (a
 * worker stamps both; start 0: it never ran, the span is the wait). */
static void trace_span(theus_engine *e, const theus_contract *c, int worker, uint64_t queued, uint64_t start,
                       uint64_t end, int rc) {
  theus_trace_fn fn = atomic_load_explicit(&e->trace, memory_order_acquire);
  if (!fn)
    return;
  if (!start || !end) {
    start = queued;
    end = theus__now_ns();
  }
  theus_trace_event ev = {c->name, worker, queued, start, end, rc};
  fn(&ev, atomic_load_explicit(&e->trace_ud, memory_order_relaxed));
}

/* A run observed here from t0 to now (local runs, runs that never left). */
static void trace(theus_engine *e, const theus_contract *c, int worker, uint64_t t0, int rc) {
  trace_span(e, c, worker, t0, t0, theus__now_ns(), rc);
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

/* ---- worker runs: the binary task path ------------------------------------
 * Task bytes: task_hdr, then the heavy keys (NUL-terminated, one per task
 * handle, the handles themselves ride in the pool slot), then the declared
 * domain inputs as JSON (only if the contract declares domain inputs), then
 * the args as JSON (only if non-empty). In a map the same bytes are the
 * chunk's common bytes and each item is a slice_t. The result is a res_hdr,
 * then the patch JSON and the return JSON, each only when present. An empty
 * process without inputs or args costs no JSON work on either side. */

#define TASK_MAGIC 0x314b5448u /* "THK1" */
#define RES_MAGIC 0x31525448u  /* "THR1" */

typedef struct task_hdr {
  uint32_t magic;
  uint32_t reg; /* worker-registry index of the process */
  uint64_t version;
  uint32_t has_slice, nkeys;
  uint64_t lo, hi;
  uint32_t slice_index, slice_count;
  uint32_t keys_len, dom_len, args_len, pad;
} task_hdr;

typedef struct res_hdr {
  uint32_t magic, patch_len, ret_len, pad;
} res_hdr;

/* ---- the declared domain inputs, written as JSON straight from the
 * snapshot: no object is built and no reference taken on the snapshot's
 * values (jansson's reference count is not safe to bump from many threads
 * at once), and dumping only reads them. */

#define MAX_SHIP THEUS__REG_STRINGS

/* Compares two paths segment by segment ('.' sorts before any field byte). */
static int path_cmp(const void *a, const void *b) {
  const unsigned char *x = *(const unsigned char *const *)a, *y = *(const unsigned char *const *)b;
  for (; *x && *x == *y; x++, y++) {
  }
  int cx = *x == '.' ? 1 : *x ? *x + 1 : 0, cy = *y == '.' ? 1 : *y ? *y + 1 : 0;
  return cx - cy;
}

static int is_prefix_path(const char *anc, const char *p) {
  size_t n = strlen(anc);
  return !strncmp(anc, p, n) && (p[n] == '.' || !p[n]);
}

static size_t seg_len(const char *s) {
  const char *d = strchr(s, '.');
  return d ? (size_t)(d - s) : strlen(s);
}

static int put_bytes(char *buf, size_t cap, size_t *at, const char *s, size_t n) {
  if (n > cap - *at)
    return -1;
  memcpy(buf + *at, s, n);
  *at += n;
  return 0;
}

/* Writes {"a":{"b":v},...} for the declared domain inputs present in domain
 * (each cut above its first wildcard; a path under another shipped path is
 * covered by it). *len gets the bytes written; THEUS_ELIMIT if cap is short. */
static int dump_inputs(const theus_contract *c, const json_t *domain, char *buf, size_t cap, size_t *len) {
  /* a parallel contract's strings fit the registry's limits (checked at registration) */
  char store[THEUS__REG_BLOB];
  const char *paths[MAX_SHIP];
  size_t n = 0, at = 0, used = 0;
  for (size_t i = 0; c->inputs && c->inputs[i] && n < MAX_SHIP; i++) {
    size_t l = strlen(c->inputs[i]) + 1;
    if (strncmp(c->inputs[i], "domain.", 7) || l > sizeof store - used)
      continue;
    char *p = memcpy(store + used, c->inputs[i], l);
    used += l;
    char *star = strstr(p, ".*");
    if (star)
      *star = 0; /* ship the subtree above the first wildcard */
    if (strchr(p, '.'))
      paths[n++] = p;
  }
  qsort(paths, n, sizeof *paths, path_cmp);
  const char *prev = NULL; /* the last path written: its parents are the open objects */
  if (put_bytes(buf, cap, &at, "{", 1))
    return THEUS_ELIMIT;
  for (size_t i = 0; i < n; i++) {
    if (prev && is_prefix_path(prev, paths[i]))
      continue; /* covered by prev (or a duplicate) */
    const json_t *v = theus__json_at(domain, paths[i]);
    if (!v)
      continue;
    /* segments after "domain." shared by the open objects of prev and this path's parents */
    const char *p = paths[i] + 7, *q = prev ? prev + 7 : NULL;
    size_t common = 0, popen = 0;
    for (const char *s = q; s && strchr(s, '.'); s = strchr(s, '.') + 1)
      popen++;
    const char *a = p, *b = q;
    while (b && common < popen && strchr(a, '.') && seg_len(a) == seg_len(b) && !strncmp(a, b, seg_len(a))) {
      common++;
      a = strchr(a, '.') + 1;
      b = strchr(b, '.') + 1;
    }
    for (size_t k = common; k < popen; k++)
      if (put_bytes(buf, cap, &at, "}", 1))
        return THEUS_ELIMIT;
    if (prev && put_bytes(buf, cap, &at, ",", 1))
      return THEUS_ELIMIT;
    for (; strchr(a, '.'); a = strchr(a, '.') + 1) /* open this path's remaining parents */
      if (put_bytes(buf, cap, &at, "\"", 1) || put_bytes(buf, cap, &at, a, seg_len(a)) ||
          put_bytes(buf, cap, &at, "\":{", 3))
        return THEUS_ELIMIT;
    if (put_bytes(buf, cap, &at, "\"", 1) || put_bytes(buf, cap, &at, a, strlen(a)) ||
        put_bytes(buf, cap, &at, "\":", 2))
      return THEUS_ELIMIT;
    size_t need = json_dumpb(v, buf + at, cap - at, JSON_COMPACT | JSON_ENCODE_ANY);
    if (!need || need > cap - at)
      return THEUS_ELIMIT;
    at += need;
    prev = paths[i];
  }
  for (const char *s = prev ? prev + 7 : NULL; s && strchr(s, '.'); s = strchr(s, '.') + 1)
    if (put_bytes(buf, cap, &at, "}", 1))
      return THEUS_ELIMIT;
  if (put_bytes(buf, cap, &at, "}", 1))
    return THEUS_ELIMIT;
  *len = at;
  return 0;
}

typedef struct task_pack {
  unsigned char buf[THEUS_POOL_ARG_MAX];
  size_t len;
  theus_handle handles[THEUS_POOL_MAX_HANDLES];
  const char *keys[THEUS_POOL_MAX_HANDLES];
  unsigned nhandles;
} task_pack;

static int pack_fail(const theus_contract *c, size_t need, char *msg, size_t msglen) {
  snprintf(msg, msglen,
           "process '%s': inputs and args take %zu bytes, above the %u-byte task limit; put large data in heavy "
           "arrays",
           c->name, need, THEUS_POOL_ARG_MAX);
  return THEUS_ELIMIT;
}

/* Appends j as compact JSON at tp->buf + tp->len; *n gets its length. */
static int pack_json(const theus_contract *c, task_pack *tp, const json_t *j, uint32_t *n, char *msg,
                     size_t msglen) {
  size_t room = sizeof tp->buf - tp->len;
  size_t need = json_dumpb(j, (char *)tp->buf + tp->len, room, JSON_COMPACT);
  if (!need) {
    snprintf(msg, msglen, "process '%s': could not encode the task (args must be JSON)", c->name);
    return THEUS_ENOMEM;
  }
  if (need > room)
    return pack_fail(c, tp->len + need, msg, msglen);
  tp->len += need;
  *n = (uint32_t)need;
  return 0;
}

static int pack_task(const theus_engine *e, const theus_contract *c, int32_t reg, const theus_snapshot *snap,
                     const json_t *args, const slice_t *sl, task_pack *tp, char *msg, size_t msglen) {
  task_hdr h = {.magic = TASK_MAGIC, .reg = (uint32_t)reg, .version = snap->version};
  if (sl) {
    h.has_slice = 1;
    h.lo = sl->lo;
    h.hi = sl->hi;
    h.slice_index = sl->index;
    h.slice_count = sl->count;
  }
  tp->len = sizeof h;
  tp->nhandles = 0;
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
    size_t kl = strlen(snap->heavy[i].key) + 1;
    if (kl > sizeof tp->buf - tp->len)
      return pack_fail(c, tp->len + kl, msg, msglen);
    memcpy(tp->buf + tp->len, snap->heavy[i].key, kl);
    tp->len += kl;
    h.keys_len += (uint32_t)kl;
    tp->handles[tp->nhandles] = snap->heavy[i].arr->handle;
    tp->keys[tp->nhandles++] = snap->heavy[i].key;
  }
  h.nkeys = tp->nhandles;
  int rc = 0;
  if (e->reg->ent[reg].has_domain_inputs) {
    size_t n = 0;
    if (dump_inputs(c, snap->domain, (char *)tp->buf + tp->len, sizeof tp->buf - tp->len, &n))
      return pack_fail(c, sizeof tp->buf + 1, msg, msglen);
    tp->len += n;
    h.dom_len = (uint32_t)n;
  }
  if (!rc && args && json_object_size(args))
    rc = pack_json(c, tp, args, &h.args_len, msg, msglen);
  memcpy(tp->buf, &h, sizeof h);
  return rc;
}

/* Worker side: writes the result header and the JSON that is present into
 * the task's result buffer, without allocating. */
static int write_result(theus_task *t, const theus_ctx *ctx) {
  size_t cap;
  char *out = theus_task_out(t, &cap);
  res_hdr rh = {RES_MAGIC, 0, 0, 0};
  size_t at = sizeof rh;
  if (cap < at)
    return theus_task_fail(t, THEUS_ETRUNC, "engine task: result buffer of %zu bytes is too small", cap);
  const json_t *parts[2] = {ctx->patch && json_object_size(ctx->patch) ? ctx->patch : NULL, ctx->ret};
  uint32_t *lens[2] = {&rh.patch_len, &rh.ret_len};
  for (int i = 0; i < 2; i++) {
    if (!parts[i])
      continue;
    size_t n = json_dumpb(parts[i], out + at, cap - at, JSON_COMPACT | JSON_ENCODE_ANY);
    if (!n)
      return theus_task_fail(t, THEUS_EINVAL, "process '%s': its %s cannot be encoded as JSON", ctx->c->name,
                             i ? "return value" : "patch");
    if (n > cap - at)
      return theus_task_fail(t, THEUS_ETRUNC,
                             "process '%s': its result takes more than the %zu bytes a task result may hold; put "
                             "large results in heavy arrays",
                             ctx->c->name, cap);
    *lens[i] = (uint32_t)n;
    at += n;
  }
  memcpy(out, &rh, sizeof rh);
  return theus_task_set_result(t, at);
}

static json_t *load_part(const char *p, size_t n, size_t flags) {
  json_error_t je;
  return n ? json_loadb(p, n, flags, &je) : NULL;
}

int theus__pool_task(theus_task *t) {
  size_t len, ilen = 0;
  const unsigned char *arg = theus_task_common(t, &len);
  const void *item = NULL;
  if (arg)
    item = theus_task_arg(t, &ilen);
  else
    arg = theus_task_arg(t, &len);
  const theus__registry *reg = theus_task_context(t);
  task_hdr h;
  if (!reg || len < sizeof h)
    return theus_task_fail(t, THEUS_EPARSE, "engine task: %zu task bytes, no header", len);
  memcpy(&h, arg, sizeof h);
  uint32_t count = atomic_load_explicit(&((theus__registry *)reg)->count, memory_order_acquire);
  if (h.magic != TASK_MAGIC || h.reg >= count || (uint64_t)h.keys_len + h.dom_len + h.args_len > len - sizeof h ||
      (item && ilen != sizeof(slice_t)))
    return theus_task_fail(t, THEUS_EPARSE, "engine task: malformed task header (registry index %u of %u)", h.reg,
                           count);
  const char *keys = (const char *)arg + sizeof h, *dom = keys + h.keys_len, *args = dom + h.dom_len;
  theus_ctx ctx = {0};
  ctx.c = &reg->ent[h.reg].c;
  ctx.task = t;
  ctx.task_keys = keys;
  ctx.task_nkeys = h.nkeys;
  ctx.worker = (int)theus_task_worker(t);
  json_t *jdom = load_part(dom, h.dom_len, 0), *jargs = load_part(args, h.args_len, 0);
  ctx.domain = jdom;
  ctx.args = jargs;
  if (item) {
    slice_t sl;
    memcpy(&sl, item, sizeof sl);
    h.has_slice = 1, h.lo = sl.lo, h.hi = sl.hi, h.slice_index = sl.index, h.slice_count = sl.count;
  }
  if (h.has_slice) {
    ctx.has_slice = 1;
    ctx.lo = h.lo;
    ctx.hi = h.hi;
    ctx.slice_index = h.slice_index;
    ctx.slice_count = h.slice_count;
  }
  int rc = (h.dom_len && !jdom) || (h.args_len && !jargs) ? THEUS_EPARSE : call_process(&ctx);
  if (!rc)
    rc = write_result(t, &ctx);
  else
    theus_task_fail(t, rc, "%s", ctx.msg[0] ? ctx.msg : "engine task: malformed task JSON");
  theus__ctx_fini(&ctx);
  json_decref(jdom);
  json_decref(jargs);
  return rc;
}

/* Queues a packed task; with block 0, THEUS_EAGAIN when every ring is full. */
static int submit_task(theus_engine *e, const theus_contract *c, const task_pack *tp, int block,
                       theus_ticket *tk) {
  theus_task_desc d = {.fn = theus__pool_task, .arg = tp->buf, .arg_len = tp->len, .handles = tp->handles,
                       .nhandles = tp->nhandles, .keys = tp->keys, .timeout_ms = c->timeout_ms,
                       .flags = theus_contract_sandboxed(c) ? THEUS_TASK_SANDBOX : 0};
  return block ? theus_pool_submit_wait(e->pool, &d, -1, tk) : theus_pool_submit(e->pool, &d, tk);
}

/* Decodes a worker's result bytes into o and checks them against c: the
 * worker is not trusted to have checked its own outputs. */
static void decode_result(const theus_contract *c, const void *data, size_t len, int worker, run_out *o) {
  res_hdr rh;
  if (len < sizeof rh || (memcpy(&rh, data, sizeof rh), rh.magic != RES_MAGIC) ||
      (uint64_t)rh.patch_len + rh.ret_len > len - sizeof rh) {
    o->rc = THEUS_EPARSE;
    snprintf(o->msg, sizeof o->msg, "process '%s': bad result from worker %d (%zu bytes)", c->name, worker, len);
    return;
  }
  const char *p = (const char *)data + sizeof rh;
  json_t *patch = load_part(p, rh.patch_len, 0), *ret = load_part(p + rh.patch_len, rh.ret_len, JSON_DECODE_ANY);
  if ((rh.patch_len && !json_is_object(patch)) || (rh.ret_len && !ret)) {
    json_decref(patch);
    json_decref(ret);
    o->rc = THEUS_EPARSE;
    snprintf(o->msg, sizeof o->msg, "process '%s': bad result JSON from worker %d", c->name, worker);
    return;
  }
  o->patch = patch;
  o->ret = json_is_null(ret) ? (json_decref(ret), NULL) : ret;
  o->rc = theus__check_outputs(c, o->patch, o->msg, sizeof o->msg);
}

/* Turns a pool result into a run_out. THEUS_ETIMEDOUT when the wait itself
 * timed out (the ticket stays valid; o untouched), else 0. */
static int collect(theus_engine *e, const theus_contract *c, theus_ticket tk, uint64_t t0, int64_t timeout_ms,
                   run_out *o) {
  theus_pool_result res;
  memset(&res, 0, sizeof res);
  int rc = theus_pool_wait(e->pool, tk, timeout_ms, &res);
  if (rc == THEUS_ETIMEDOUT)
    return rc;
  o->worker = res.worker;
  if (rc || res.status) {
    o->rc = rc ? rc : res.status;
    snprintf(o->msg, sizeof o->msg, "process '%s' (parallel): %s", c->name, res.errmsg);
  } else {
    decode_result(c, res.data, res.len, res.worker, o);
  }
  trace_span(e, c, o->worker, t0, res.start_ns, res.end_ns, o->rc);
  theus_pool_result_release(&res);
  return 0;
}

/* Packs and queues one run; o gets the failure if it could not be queued.
 * With block 0, THEUS_EAGAIN (o untouched) when every ring is full. */
static int start_remote(theus_engine *e, const theus_contract *c, int32_t reg, theus_snapshot *snap,
                        const json_t *args, int block, theus_ticket *tk, run_out *o) {
  task_pack tp; /* on the stack: no allocation per run */
  o->worker = -1;
  if (!(o->rc = pack_task(e, c, reg, snap, args, NULL, &tp, o->msg, sizeof o->msg)) &&
      (o->rc = submit_task(e, c, &tp, block, tk)) == THEUS_EAGAIN && !block)
    return o->rc = THEUS_EAGAIN;
  if (o->rc)
    snprintf(o->msg, sizeof o->msg, "process '%s': submit to the pool: %s", c->name, theus_pool_errmsg(e->pool));
  return o->rc;
}

static void run_remote(theus_engine *e, const theus_contract *c, int32_t reg, theus_snapshot *snap,
                       const json_t *args, run_out *o) {
  theus_ticket tk;
  uint64_t t0 = theus__now_ns();
  if (!start_remote(e, c, reg, snap, args, 1, &tk, o))
    collect(e, c, tk, t0, -1, o);
}

static void run(theus_engine *e, const theus_contract *c, int32_t reg, theus_snapshot *snap, const json_t *args,
                run_out *o) {
  if (reg >= 0)
    run_remote(e, c, reg, snap, args, o);
  else
    run_local(e, c, snap, args, NULL, o);
  if (o->rc)
    atomic_fetch_add_explicit(&e->n_fail, 1, memory_order_relaxed);
}

/* ---- execute ------------------------------------------------------------ */

static void backoff(unsigned attempt, unsigned *seed) {
  long ns = 1000L << (attempt < 10 ? attempt : 10); /* 1 us .. ~1 ms */
  struct timespec ts = {0, ns / 2 + rand_r(seed) % (ns / 2 + 1)};
  nanosleep(&ts, NULL);
}

static const theus_contract *lookup(theus_engine *e, const char *name, int32_t *reg, char *msg, size_t msglen) {
  const theus_contract *c = theus__proc_find(e, name, reg);
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

/* Commits the outcome of attempt number `attempt` (run on snap, reference
 * taken over) and, on conflict, runs again on the newest version, up to
 * max_retries: the shared tail of execute and of pool jobs. */
static int exec_finish(theus_engine *e, const theus_contract *c, int32_t reg, const json_t *args, unsigned attempt,
                       theus_snapshot *snap, run_out *o, json_t **result, uint64_t *version, char *msg,
                       size_t msglen) {
  unsigned seed = (unsigned)theus__now_ns();
  for (;; attempt++) {
    if (!snap) {
      snap = theus__snap_get(e);
      run(e, c, reg, snap, args, o);
    }
    int rc = o->rc;
    if (rc)
      snprintf(msg, msglen, "%s", o->msg);
    else
      rc = commit(e, snap, o, version, msg, msglen);
    theus__snap_put(snap);
    snap = NULL;
    if (!rc && result) {
      *result = o->ret;
      o->ret = NULL;
    }
    run_out_fini(e, o, rc != 0);
    memset(o, 0, sizeof *o);
    if (rc == THEUS_ECONFLICT && attempt < e->cfg.max_retries) {
      atomic_fetch_add_explicit(&e->n_retry, 1, memory_order_relaxed);
      backoff(attempt, &seed);
      continue;
    }
    if (rc == THEUS_ECONFLICT) {
      size_t l = strlen(msg);
      snprintf(msg + l, msglen - l, " (after %u retries of '%s')", attempt, c->name);
    }
    return rc;
  }
}

static int exec_run(theus_engine *e, const char *name, const json_t *args, json_t **result, uint64_t *version,
                    char *msg, size_t msglen) {
  int32_t reg;
  const theus_contract *c = lookup(e, name, &reg, msg, msglen);
  if (!c)
    return THEUS_ENOTFOUND;
  if (args && !json_is_object(args)) {
    snprintf(msg, msglen, "execute '%s': args must be a JSON object", name);
    return THEUS_EINVAL;
  }
  atomic_fetch_add_explicit(&e->n_exec, 1, memory_order_relaxed);
  run_out o = {0};
  return exec_finish(e, c, reg, args, 0, NULL, &o, result, version, msg, msglen);
}

int theus_engine_execute(theus_engine *e, const char *name, const json_t *args, json_t **result) {
  char msg[1024] = "";
  if (result)
    *result = NULL;
  int rc = exec_run(e, name, args, result, NULL, msg, sizeof msg);
  return rc ? theus__eset(e, rc, "%s", msg) : 0;
}

/* ---- jobs ------------------------------------------------------------------
 * A parallel job is packed and queued on the pool by theus_engine_submit, in
 * the caller's thread; the job keeps the ticket and the snapshot it ran on.
 * If every ring is full at that moment, the job goes to the engine's
 * deferred-submit thread (started on first need), which sleeps on the pool's
 * "slot freed" futex and queues it: a thread that submits more jobs than the
 * rings hold before waiting for any does not block forever.
 * Whoever waits for it first collects the result, checks it and commits (a
 * conflict runs it again, like execute). A job released unfinished goes to
 * the engine's reaper thread (one per engine, started on first need), which
 * collects and commits it. Local jobs run in order on the engine's executor
 * thread (one per engine, started on first need). Close finishes them all. */

enum { J_LOCAL = 0, J_POOL = 1, J_COLLECTING = 2, J_DONE = 3, J_DEFER = 4 };

struct theus_job {
  theus_engine *e;
  atomic_uint refs;
  const theus_contract *c;
  int32_t reg;
  json_t *args;
  pthread_mutex_t m;
  pthread_cond_t cv;
  int state; /* J_*, under m */
  int reaping; /* released by its owner before it finished */
  theus_ticket tk;
  theus_snapshot *snap;
  uint64_t t0;
  struct theus_job *next;             /* in a queue */
  struct theus_job *pnext, **pprev;   /* in e->jobs_pool, under jobs_lock */
  _Atomic int done;
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
  pthread_cond_destroy(&j->cv);
  pthread_mutex_destroy(&j->m);
  free(j);
}

/* Lets the engine forget the job, then records the outcome. Nothing touches
 * the job once it is marked done: its owner may free it at once. */
static void job_done(theus_job *j, int rc, json_t *result, uint64_t version, const char *msg) {
  theus_engine *e = j->e;
  pthread_mutex_lock(&e->jobs_lock);
  if (j->pprev) {
    if (j->pnext)
      j->pnext->pprev = j->pprev;
    *j->pprev = j->pnext;
    j->pprev = NULL;
  }
  if (--e->jobs_running == 0 || e->jobs_closing)
    pthread_cond_broadcast(&e->jobs_cv);
  pthread_mutex_unlock(&e->jobs_lock);
  pthread_mutex_lock(&j->m);
  j->rc = rc;
  j->result = result;
  j->version = version;
  snprintf(j->msg, sizeof j->msg, "%s", rc ? msg : "");
  j->state = J_DONE;
  atomic_store_explicit(&j->done, 1, memory_order_release);
  pthread_cond_broadcast(&j->cv);
  pthread_mutex_unlock(&j->m);
}

static int cv_wait(pthread_cond_t *cv, pthread_mutex_t *m, const struct timespec *dl) {
  return dl ? pthread_cond_timedwait(cv, m, dl) : pthread_cond_wait(cv, m);
}

/* Collects and commits a pool job, or waits for whoever does. timeout_ms < 0:
 * forever. Returns the job's code, or THEUS_ETIMEDOUT. */
static int job_finish(theus_job *j, int64_t timeout_ms) {
  struct timespec dlbuf, *dl = NULL;
  if (timeout_ms >= 0) {
    theus__abstime_ms(&dlbuf, timeout_ms);
    dl = &dlbuf;
  }
  pthread_mutex_lock(&j->m);
  while (j->state == J_LOCAL || j->state == J_COLLECTING || j->state == J_DEFER)
    if (timeout_ms == 0 || cv_wait(&j->cv, &j->m, dl)) {
      pthread_mutex_unlock(&j->m);
      return THEUS_ETIMEDOUT;
    }
  if (j->state == J_DONE) {
    int rc = j->rc;
    pthread_mutex_unlock(&j->m);
    return rc;
  }
  j->state = J_COLLECTING;
  pthread_mutex_unlock(&j->m);
  theus_engine *e = j->e;
  run_out o = {0};
  if (collect(e, j->c, j->tk, j->t0, timeout_ms, &o) == THEUS_ETIMEDOUT) {
    pthread_mutex_lock(&e->jobs_lock);
    pthread_mutex_lock(&j->m);
    j->state = J_POOL;
    pthread_cond_broadcast(&j->cv);
    pthread_mutex_unlock(&j->m);
    if (e->jobs_closing)
      pthread_cond_broadcast(&e->jobs_cv);
    pthread_mutex_unlock(&e->jobs_lock);
    return THEUS_ETIMEDOUT;
  }
  if (o.rc)
    atomic_fetch_add_explicit(&e->n_fail, 1, memory_order_relaxed);
  json_t *result = NULL;
  uint64_t version = 0;
  char msg[1024] = "";
  theus_snapshot *snap = j->snap;
  j->snap = NULL;
  int rc = exec_finish(e, j->c, j->reg, j->args, 0, snap, &o, &result, &version, msg, sizeof msg);
  job_done(j, rc, result, version, msg);
  return rc;
}

static void *exec_main(void *arg);
static void *reap_main(void *arg);
static void *defer_main(void *arg);

/* Queues j on q (under jobs_lock), starting q's thread on first use. */
static int jobq_push(theus_engine *e, theus__jobq *q, theus_job *j) {
  int err = 0;
  if (!q->started) {
    pthread_attr_t at;
    pthread_attr_init(&at);
    err = pthread_create(&q->th, &at, q == &e->exec_q ? exec_main : q == &e->reap_q ? reap_main : defer_main, e);
    pthread_attr_destroy(&at);
    if (err)
      return err;
    q->started = 1;
  }
  j->next = NULL;
  if (q->tail)
    q->tail->next = j;
  else
    q->head = j;
  q->tail = j;
  pthread_cond_signal(&q->cv);
  return 0;
}

static void defer_one(theus_engine *e, theus_job *j);

/* The executor (local jobs, kind 0), the reaper (released pool jobs, 1) and
 * the deferred submitter (2). */
static void jobq_loop(theus_engine *e, int kind) {
  theus__jobq *q = kind == 1 ? &e->reap_q : kind == 2 ? &e->defer_q : &e->exec_q;
  pthread_mutex_lock(&e->jobs_lock);
  for (;;) {
    while (!q->head && !e->jobs_stop)
      pthread_cond_wait(&q->cv, &e->jobs_lock);
    theus_job *j = q->head;
    if (!j)
      break;
    if (!(q->head = j->next))
      q->tail = NULL;
    pthread_mutex_unlock(&e->jobs_lock);
    if (kind == 1) {
      job_finish(j, -1);
    } else if (kind == 2) {
      defer_one(e, j);
    } else {
      json_t *result = NULL;
      uint64_t version = 0;
      char msg[1024] = "";
      run_out o = {0};
      int rc = exec_finish(e, j->c, -1, j->args, 0, NULL, &o, &result, &version, msg, sizeof msg);
      job_done(j, rc, result, version, msg);
    }
    job_put(j);
    pthread_mutex_lock(&e->jobs_lock);
  }
  pthread_mutex_unlock(&e->jobs_lock);
}

static void *exec_main(void *arg) {
  jobq_loop(arg, 0);
  return NULL;
}

static void *reap_main(void *arg) {
  jobq_loop(arg, 1);
  return NULL;
}

static void *defer_main(void *arg) {
  jobq_loop(arg, 2);
  return NULL;
}

/* Queues a deferred job, sleeping while the rings are full; hands it to the
 * reaper if its owner released it meanwhile. */
static void defer_one(theus_engine *e, theus_job *j) {
  run_out o = {0};
  if (start_remote(e, j->c, j->reg, j->snap, j->args, 1, &j->tk, &o)) {
    atomic_fetch_add_explicit(&e->n_fail, 1, memory_order_relaxed);
    trace(e, j->c, -1, j->t0, o.rc);
    theus__snap_put(j->snap);
    j->snap = NULL;
    pthread_mutex_lock(&j->m);
    int orphan = j->reaping;
    if (!orphan)
      j->reaping = 2; /* from now on a release drops its reference itself */
    pthread_mutex_unlock(&j->m);
    job_done(j, o.rc, NULL, 0, o.msg);
    if (orphan)
      job_put(j); /* the owner's reference, handed over when it released the job */
    return;
  }
  pthread_mutex_lock(&e->jobs_lock); /* jobs_lock before j->m, as close takes them */
  pthread_mutex_lock(&j->m);
  j->state = J_POOL;
  int orphan = j->reaping;
  pthread_cond_broadcast(&j->cv);
  pthread_mutex_unlock(&j->m);
  if (e->jobs_closing)
    pthread_cond_broadcast(&e->jobs_cv);
  pthread_mutex_unlock(&e->jobs_lock);
  if (orphan) {
    pthread_mutex_lock(&e->jobs_lock);
    int err = jobq_push(e, &e->reap_q, j); /* carries the owner's reference */
    pthread_mutex_unlock(&e->jobs_lock);
    if (err) {
      job_finish(j, -1);
      job_put(j);
    }
  }
}

int theus_engine_submit(theus_engine *e, const char *name, const json_t *args, theus_job **out) {
  char msg[512] = "";
  *out = NULL;
  int32_t reg;
  const theus_contract *c = lookup(e, name, &reg, msg, sizeof msg);
  if (!c)
    return theus__eset(e, THEUS_ENOTFOUND, "submit: %s", msg);
  if (args && !json_is_object(args))
    return theus__eset(e, THEUS_EINVAL, "submit '%s': args must be a JSON object", name);
  theus_job *j = calloc(1, sizeof *j);
  if (!j || (args && !(j->args = json_deep_copy(args)))) {
    free(j);
    return theus__eset(e, THEUS_ENOMEM, "submit '%s': out of memory", name);
  }
  j->e = e;
  j->c = c;
  j->reg = reg;
  atomic_init(&j->refs, 2); /* the caller's, and the executor's or the pool list's */
  pthread_mutex_init(&j->m, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&j->cv, &ca);
  pthread_condattr_destroy(&ca);
  atomic_fetch_add_explicit(&e->n_exec, 1, memory_order_relaxed);
  if (reg >= 0) {
    run_out o = {0};
    j->state = J_POOL;
    j->snap = theus__snap_get(e);
    j->t0 = theus__now_ns();
    atomic_init(&j->refs, 1);
    int rc = start_remote(e, c, reg, j->snap, j->args, 0, &j->tk, &o);
    if (rc && rc != THEUS_EAGAIN) {
      /* could not even be queued: the job is born finished */
      atomic_fetch_add_explicit(&e->n_fail, 1, memory_order_relaxed);
      trace(e, c, -1, j->t0, o.rc);
      theus__snap_put(j->snap);
      j->snap = NULL;
      j->state = J_DONE;
      j->rc = o.rc;
      snprintf(j->msg, sizeof j->msg, "%s", o.msg);
      atomic_store(&j->done, 1);
      *out = j;
      return 0;
    }
    int err = 0;
    pthread_mutex_lock(&e->jobs_lock);
    if (rc == THEUS_EAGAIN) { /* every ring is full: the deferred submitter queues it */
      j->state = J_DEFER;
      atomic_fetch_add_explicit(&j->refs, 1, memory_order_relaxed);
      if ((err = jobq_push(e, &e->defer_q, j)))
        atomic_fetch_sub_explicit(&j->refs, 1, memory_order_relaxed);
    }
    if (!err) {
      e->jobs_running++;
      j->pnext = e->jobs_pool;
      if (j->pnext)
        j->pnext->pprev = &j->pnext;
      j->pprev = &e->jobs_pool;
      e->jobs_pool = j;
    }
    pthread_mutex_unlock(&e->jobs_lock);
    if (err) {
      theus__snap_put(j->snap);
      job_put(j);
      return theus__eset(e, THEUS_ESYS, "submit '%s': every task ring is full and the engine's submit thread "
                         "cannot start: %s", name, strerror(err));
    }
    *out = j;
    return 0;
  }
  j->state = J_LOCAL;
  pthread_mutex_lock(&e->jobs_lock);
  int err = e->jobs_stop ? EINVAL : jobq_push(e, &e->exec_q, j);
  if (!err)
    e->jobs_running++;
  pthread_mutex_unlock(&e->jobs_lock);
  if (err) {
    atomic_store(&j->refs, 1);
    job_put(j);
    return theus__eset(e, THEUS_ESYS, "submit '%s': cannot start the engine's executor thread: %s", name,
                       strerror(err));
  }
  *out = j;
  return 0;
}

int theus_job_wait(theus_job *j, int64_t timeout_ms, json_t **result) {
  if (result)
    *result = NULL;
  int rc = job_finish(j, timeout_ms < 0 ? -1 : timeout_ms);
  if (rc == THEUS_ETIMEDOUT && !atomic_load_explicit(&j->done, memory_order_acquire))
    return rc;
  if (result) {
    pthread_mutex_lock(&j->m);
    *result = json_incref(j->result);
    pthread_mutex_unlock(&j->m);
  }
  return rc;
}

const char *theus_job_errmsg(const theus_job *j) {
  return atomic_load_explicit(&j->done, memory_order_acquire) ? j->msg : "";
}

uint64_t theus_job_version(const theus_job *j) {
  return atomic_load_explicit(&j->done, memory_order_acquire) ? j->version : 0;
}

void theus_job_release(theus_job *j) {
  if (!j)
    return;
  theus_engine *e = j->e;
  pthread_mutex_lock(&j->m);
  int hand_over = j->state == J_POOL && !j->reaping;
  int deferred = j->state == J_DEFER && !j->reaping; /* the submit thread hands it to the reaper */
  if (hand_over || deferred)
    j->reaping = 1;
  pthread_mutex_unlock(&j->m);
  if (deferred)
    return;
  if (hand_over) {
    pthread_mutex_lock(&e->jobs_lock);
    int err = jobq_push(e, &e->reap_q, j); /* takes over the caller's reference */
    pthread_mutex_unlock(&e->jobs_lock);
    if (!err)
      return;
    job_finish(j, -1); /* no reaper thread: finish it here */
  }
  job_put(j);
}

/* A pool job whose ticket is in the pool, uncollected (J_POOL), with a
 * reference taken; NULL if none (under jobs_lock). */
static theus_job *pick_queued(theus_engine *e) {
  for (theus_job *j = e->jobs_pool; j; j = j->pnext) {
    pthread_mutex_lock(&j->m);
    int queued = j->state == J_POOL;
    pthread_mutex_unlock(&j->m);
    if (queued) {
      atomic_fetch_add(&j->refs, 1);
      return j;
    }
  }
  return NULL;
}

void theus__jobs_fini(theus_engine *e) {
  /* Pool jobs nobody waits for: collect and commit them here. Only jobs
   * whose ticket is in the pool are taken: collecting them frees the ring
   * slots that deferred jobs wait for; others are being collected by their
   * waiters or the reaper, or are deferred, and each change of theirs is
   * signalled on jobs_cv while closing. */
  pthread_mutex_lock(&e->jobs_lock);
  e->jobs_closing = 1;
  for (;;) {
    theus_job *j = pick_queued(e);
    if (!j && !e->jobs_pool)
      break;
    if (!j) {
      pthread_cond_wait(&e->jobs_cv, &e->jobs_lock);
      continue;
    }
    pthread_mutex_unlock(&e->jobs_lock);
    job_finish(j, -1);
    job_put(j);
    pthread_mutex_lock(&e->jobs_lock);
  }
  while (e->jobs_running)
    pthread_cond_wait(&e->jobs_cv, &e->jobs_lock);
  e->jobs_stop = 1;
  pthread_cond_broadcast(&e->exec_q.cv);
  pthread_cond_broadcast(&e->reap_q.cv);
  pthread_cond_broadcast(&e->defer_q.cv);
  pthread_mutex_unlock(&e->jobs_lock);
  if (e->defer_q.started)
    pthread_join(e->defer_q.th, NULL);
  if (e->exec_q.started)
    pthread_join(e->exec_q.th, NULL);
  if (e->reap_q.started)
    pthread_join(e->reap_q.th, NULL);
}

/* ---- map ---------------------------------------------------------------- */

typedef struct map_job {
  theus_engine *e;
  const theus_contract *c;
  int32_t reg;
  theus_snapshot *snap;
  const json_t *args;
  uint32_t n;
  slice_t *sl;
  run_out *out;
} map_job;

/* Result bytes per slice: one slot's result room per chunk of one slice (the
 * statuses take 4 bytes of it), capped so that many slices do not need a
 * huge results buffer. */
#define MAP_ITEM_RESULT (16u * 1024u)

static void map_run_all(map_job *m, char *msg, size_t msglen) {
  if (m->reg < 0) {
    for (uint32_t i = 0; i < m->n; i++) {
      run_local(m->e, m->c, m->snap, m->args, &m->sl[i], &m->out[i]);
      if (m->out[i].rc)
        atomic_fetch_add_explicit(&m->e->n_fail, 1, memory_order_relaxed);
    }
    return;
  }
  task_pack tp;
  int rc = pack_task(m->e, m->c, m->reg, m->snap, m->args, NULL, &tp, msg, msglen);
  int *status = calloc(m->n, sizeof *status), *workers = calloc(m->n, sizeof *workers);
  uint64_t *times = calloc(2 * (size_t)m->n, sizeof *times);
  char *results = malloc((size_t)m->n * MAP_ITEM_RESULT);
  if (!rc && (!status || !workers || !times || !results)) {
    snprintf(msg, msglen, "map '%s': out of memory for %u slice results", m->c->name, m->n);
    rc = THEUS_ENOMEM;
  }
  uint64_t t0 = theus__now_ns();
  if (!rc) {
    theus_map_desc d = {.fn = theus__pool_task, .args = m->sl, .arg_size = sizeof(slice_t), .count = m->n,
                        .handles = tp.handles, .nhandles = tp.nhandles, .keys = tp.keys, .results = results,
                        .result_size = MAP_ITEM_RESULT, .status = status, .chunk = 1,
                        .timeout_ms = m->c->timeout_ms, .common = tp.buf,
                        .flags = theus_contract_sandboxed(m->c) ? THEUS_TASK_SANDBOX : 0,
                        .common_size = tp.len, .workers = workers, .times = times};
    for (uint32_t i = 0; i < m->n; i++)
      status[i] = 1; /* not collected: the map as a whole failed before it */
    int mrc = theus_pool_map(m->e->pool, &d, NULL);
    for (uint32_t i = 0; i < m->n; i++) {
      run_out *o = &m->out[i];
      o->worker = status[i] == 1 ? -1 : workers[i];
      if (status[i] == 1) {
        o->rc = mrc < 0 ? mrc : THEUS_EPROCESS;
        snprintf(o->msg, sizeof o->msg, "process '%s' (parallel map): %s", m->c->name,
                 theus_pool_errmsg(m->e->pool));
      } else if (status[i]) {
        o->rc = status[i];
        snprintf(o->msg, sizeof o->msg, "process '%s' (parallel): %s", m->c->name,
                 theus_pool_errmsg(m->e->pool));
      } else {
        decode_result(m->c, results + (size_t)i * MAP_ITEM_RESULT, MAP_ITEM_RESULT, workers[i], o);
      }
      if (o->rc)
        atomic_fetch_add_explicit(&m->e->n_fail, 1, memory_order_relaxed);
      trace_span(m->e, m->c, o->worker, t0, times[2 * i], times[2 * i + 1], o->rc);
    }
  } else {
    for (uint32_t i = 0; i < m->n; i++) {
      m->out[i].rc = rc;
      snprintf(m->out[i].msg, sizeof m->out[i].msg, "%s", msg);
    }
  }
  free(status);
  free(workers);
  free(times);
  free(results);
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

/* The checks and setup theus_engine_map and theus_engine_map_part share. */
static int map_begin(theus_engine *e, map_job *m, const char *name, const char *key, uint32_t slices,
                     char *msg, size_t msglen) {
  m->c = lookup(e, name, &m->reg, msg, msglen);
  if (!m->c)
    return theus__eset(e, THEUS_ENOTFOUND, "map: %s", msg);
  if (!slices || (m->args && !json_is_object(m->args)))
    return theus__eset(e, THEUS_EINVAL, "map '%s': slices must be >= 1 and args an object", name);
  atomic_fetch_add_explicit(&e->n_exec, 1, memory_order_relaxed);
  m->snap = theus__snap_get(e);
  return map_setup(e, m, key, slices, msg, msglen);
}

static int map_end(theus_engine *e, map_job *m, int rc, const char *msg) {
  for (uint32_t i = 0; m->out && i < m->n; i++)
    run_out_fini(e, &m->out[i], 1);
  free(m->out);
  free(m->sl);
  if (m->snap)
    theus__snap_put(m->snap);
  if (rc)
    atomic_fetch_add_explicit(&e->n_fail, 1, memory_order_relaxed);
  return rc ? theus__eset(e, rc, "%s", msg) : 0;
}

int theus_engine_map(theus_engine *e, const char *name, const char *key, uint32_t slices, const char *reducer,
                     const json_t *args, json_t **result) {
  char msg[1024] = "";
  if (result)
    *result = NULL;
  map_job m = {e, NULL, -1, NULL, args, 0, NULL, NULL};
  void *ud;
  theus_reducer_fn fn = reducer ? theus__reducer_find(e, reducer, &ud) : NULL;
  if (!fn)
    return theus__eset(e, THEUS_EINVAL, "map '%s': unknown reducer '%s' (sum, min, max, concat or registered)",
                       name, reducer ? reducer : "(null)");
  int rc = map_begin(e, &m, name, key, slices, msg, sizeof msg);
  if (!m.snap)
    return rc; /* refused before it started: the message is set */
  if (!rc) {
    map_run_all(&m, msg, sizeof msg);
    rc = map_reduce(&m, fn, ud, reducer, result, msg, sizeof msg);
  }
  return map_end(e, &m, rc, msg);
}

/* The slices' return values as a JSON array in slice order (null: none). */
static int map_items(map_job *m, uint32_t first, uint32_t total, json_t **items, char *msg, size_t msglen) {
  json_t *arr = json_array();
  if (!arr)
    return THEUS_ENOMEM;
  for (uint32_t i = 0; i < m->n; i++) {
    run_out *o = &m->out[i];
    if (!o->rc && o->patch && json_object_size(o->patch)) {
      snprintf(o->msg, sizeof o->msg, "contract violation: map slices may not write state outputs");
      o->rc = THEUS_ECONTRACT;
    }
    if (o->rc) {
      snprintf(msg, msglen, "map '%s' slice %u/%u [%llu, %llu): %.700s", m->c->name, first + i, total,
               (unsigned long long)m->sl[i].lo, (unsigned long long)m->sl[i].hi, o->msg);
      json_decref(arr);
      return o->rc;
    }
    if (json_array_append(arr, o->ret ? o->ret : json_null())) {
      json_decref(arr);
      return THEUS_ENOMEM;
    }
  }
  *items = arr;
  return 0;
}

int theus_engine_map_part(theus_engine *e, const char *name, const char *key, uint32_t slices, uint32_t first,
                          uint32_t count, const json_t *args, json_t **items) {
  char msg[1024] = "";
  *items = NULL;
  map_job m = {e, NULL, -1, NULL, args, 0, NULL, NULL};
  int rc = map_begin(e, &m, name, key, slices, msg, sizeof msg);
  if (!m.snap)
    return rc;
  uint32_t total = m.n;
  if (!rc && (first > total || count > total - first)) {
    snprintf(msg, sizeof msg, "map '%s': slices [%u, %u) leave the map's %u slices", name, first, first + count,
             total);
    rc = THEUS_EINVAL;
  }
  if (!rc && !count) {
    rc = (*items = json_array()) ? 0 : THEUS_ENOMEM;
  } else if (!rc) { /* run only [first, first + count): the bounds stay those of the whole map */
    memmove(m.sl, m.sl + first, count * sizeof *m.sl);
    m.n = count;
    map_run_all(&m, msg, sizeof msg);
    rc = map_items(&m, first, total, items, msg, sizeof msg);
  }
  return map_end(e, &m, rc, msg);
}
