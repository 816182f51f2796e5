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
  uint64_t ns; /* how long the run took where it ran */
  char msg[1024];
} run_out;

typedef struct slice_t {
  uint64_t lo, hi;
  uint32_t index, count;
} slice_t;

/* What a map tells its slices besides their bounds. */
typedef struct map_ctx {
  const char *key;       /* the array mapped over */
  const char *out_key;   /* a map into an output: its key, else NULL */
  theus_handle out_h;    /* the output's draft */
  void *out_data;        /* its writable base (local runs) */
  theus_array_info out_info; /* the output, or with partials one slice's partial */
  const char *partials;  /* "sum", "min", "max": the slices fill partials in out_h, else NULL */
  uint64_t stride;       /* partials: bytes from one slice's partial to the next (whole pages) */
} map_ctx;

/* Shipped after the args when a map's slices fill partial arrays. */
typedef struct partial_blk {
  uint64_t stride;
  uint32_t dtype, ndim;
  uint64_t shape[THEUS_MAX_DIMS];
} partial_blk;

/* A C-contiguous array's info from its dtype and shape (no data). */
static void array_info_of(theus_array_info *ai, theus_dtype dt, unsigned nd, const uint64_t *shape) {
  memset(ai, 0, sizeof *ai);
  ai->dtype = dt;
  ai->ndim = nd;
  ai->itemsize = theus_dtype_size(dt);
  uint64_t n = ai->itemsize;
  for (unsigned d = nd; d-- > 0;) {
    ai->shape[d] = shape[d];
    ai->strides[d] = n;
    n *= shape[d];
  }
  ai->nbytes = n;
}

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

/* The cancel flag of the local job the executor thread runs now (NULL:
 * none): run_local hands it to the ctx for theus_ctx_canceled. */
static _Thread_local const _Atomic int *tl_job_cancel;

static int canceled_now(theus_engine *e, const _Atomic int *job_cancel) {
  return (job_cancel && atomic_load_explicit(job_cancel, memory_order_acquire)) || theus__engine_canceled(e);
}

static void run_local(theus_engine *e, const theus_contract *c, theus_snapshot *snap, const json_t *args,
                      const slice_t *sl, const map_ctx *mc, run_out *o) {
  theus_ctx ctx = {0};
  ctx.e = e;
  ctx.job_cancel = tl_job_cancel;
  ctx.c = c;
  ctx.snap = snap;
  ctx.domain = snap->domain;
  ctx.args = args;
  ctx.worker = -1;
  if (sl) {
    ctx.has_slice = 1;
    ctx.map_key = mc->key;
    ctx.out_key = mc->out_key;
    ctx.out_data = mc->out_data;
    ctx.out_info = mc->out_info;
    if (mc->partials && mc->out_data) {
      ctx.out_data = (unsigned char *)mc->out_data + sl->index * mc->stride;
      ctx.out_info.data = ctx.out_data;
    }
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
  o->ns = theus__now_ns() - t0;
  trace(e, c, -1, t0, o->rc);
}

/* ---- worker runs: the binary task path ------------------------------------
 * Task bytes: task_hdr, then the heavy keys (NUL-terminated, one per task
 * handle, the handles themselves ride in the pool slot), then the declared
 * domain inputs (only if the contract declares domain inputs), then the args
 * (only if non-empty), both as values on the wire (wire.c: tagged binary,
 * no JSON text). In a map the same bytes are the chunk's common bytes and
 * each item is a slice_t. The result is a res_hdr, then the patch and the
 * return value on the wire, each only when present. An empty process
 * without inputs or args encodes and decodes nothing on either side. */

#define TASK_MAGIC 0x314b5448u /* "THK1" */
#define RES_MAGIC 0x31525448u  /* "THR1" */

typedef struct task_hdr {
  uint32_t magic;
  uint32_t reg; /* worker-registry index of the process */
  uint64_t version;
  uint32_t has_slice, nkeys;
  uint64_t lo, hi;
  uint32_t slice_index, slice_count;
  uint32_t keys_len, dom_len, args_len;
  uint32_t map_key; /* in a map: 1 + the index among the keys of the key mapped over; 0: none */
  uint32_t out_key; /* in a map into an output: 1 + the index of its (draft) handle; 0: none */
  uint32_t partial; /* 1: a partial_blk follows the args */
} task_hdr;

typedef struct res_hdr {
  uint32_t magic, patch_len, ret_len, pad;
} res_hdr;

/* ---- the declared domain inputs, encoded straight from the snapshot
 * (theus__wire_put_paths): no object is built and no reference taken on the
 * snapshot's values (jansson's reference count is not safe to bump from many
 * threads at once), and encoding only reads them. */

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

void theus__ship_prepare(theus__regent *r) {
  /* a parallel contract's strings fit the registry's limits (checked at registration) */
  const char *paths[MAX_SHIP];
  size_t n = 0, used = 0;
  for (size_t i = 0; r->c.inputs[i] && n < MAX_SHIP; i++) {
    size_t l = strlen(r->c.inputs[i]) + 1;
    if (strncmp(r->c.inputs[i], "domain.", 7) || l > sizeof r->ship_blob - used)
      continue;
    char *p = memcpy(r->ship_blob + used, r->c.inputs[i], l);
    used += l;
    char *star = strstr(p, ".*");
    if (star)
      *star = 0; /* ship the subtree above the first wildcard */
    if (strchr(p, '.'))
      paths[n++] = p;
  }
  qsort(paths, n, sizeof *paths, path_cmp);
  r->nship = 0;
  for (size_t i = 0; i < n; i++) /* a path under (or equal to) the one kept before it is covered by it */
    if (!r->nship || !is_prefix_path(r->ship[r->nship - 1], paths[i]))
      r->ship[r->nship++] = paths[i];
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

/* Appends v on the wire at tp->buf + tp->len; *n gets its length. */
static int pack_value(const theus_contract *c, task_pack *tp, const json_t *v, uint32_t *n, char *msg,
                      size_t msglen) {
  size_t need, room = sizeof tp->buf - tp->len;
  int rc = theus__wire_put(v, tp->buf + tp->len, room, &need);
  if (rc == THEUS_ETRUNC)
    return pack_fail(c, tp->len + need, msg, msglen);
  if (rc) {
    snprintf(msg, msglen, "process '%s': its args nest deeper than %u levels", c->name, THEUS__WIRE_MAX_DEPTH);
    return rc;
  }
  tp->len += need;
  *n = (uint32_t)need;
  return 0;
}

/* Appends one heavy key and its handle to the task. */
static int pack_key(const theus_contract *c, task_pack *tp, task_hdr *h, const char *key, theus_handle handle,
                    char *msg, size_t msglen) {
  if (tp->nhandles == THEUS_POOL_MAX_HANDLES) {
    snprintf(msg, msglen, "process '%s': more than %u heavy inputs and outputs for one task", c->name,
             THEUS_POOL_MAX_HANDLES);
    return THEUS_ELIMIT;
  }
  size_t kl = strlen(key) + 1;
  if (kl > sizeof tp->buf - tp->len)
    return pack_fail(c, tp->len + kl, msg, msglen);
  memcpy(tp->buf + tp->len, key, kl);
  tp->len += kl;
  h->keys_len += (uint32_t)kl;
  tp->handles[tp->nhandles] = handle;
  tp->keys[tp->nhandles++] = key;
  return 0;
}

static int pack_task(const theus_engine *e, const theus_contract *c, int32_t reg, const theus_snapshot *snap,
                     const json_t *args, const slice_t *sl, const map_ctx *mc, task_pack *tp, char *msg,
                     size_t msglen) {
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
    if (mc && mc->key && !strcmp(mc->key, snap->heavy[i].key))
      h.map_key = tp->nhandles + 1;
    int krc = pack_key(c, tp, &h, snap->heavy[i].key, snap->heavy[i].arr->handle, msg, msglen);
    if (krc)
      return krc;
  }
  if (mc && mc->out_key) {
    h.out_key = tp->nhandles + 1;
    int krc = pack_key(c, tp, &h, mc->out_key, mc->out_h, msg, msglen);
    if (krc)
      return krc;
  }
  h.nkeys = tp->nhandles;
  int rc = 0;
  const theus__regent *r = &e->reg->ent[reg];
  if (r->has_domain_inputs) {
    size_t n = 0;
    rc = theus__wire_put_paths(snap->domain, r->ship, r->nship, 7 /* "domain." */, tp->buf + tp->len,
                               sizeof tp->buf - tp->len, &n);
    if (rc == THEUS_ETRUNC)
      return pack_fail(c, tp->len + n, msg, msglen);
    if (rc) {
      snprintf(msg, msglen, "process '%s': its domain inputs nest deeper than %u levels", c->name,
               THEUS__WIRE_MAX_DEPTH);
      return rc;
    }
    tp->len += n;
    h.dom_len = (uint32_t)n;
  }
  if (!rc && args && json_object_size(args))
    rc = pack_value(c, tp, args, &h.args_len, msg, msglen);
  if (!rc && mc && mc->partials) {
    partial_blk pb = {mc->stride, (uint32_t)mc->out_info.dtype, mc->out_info.ndim, {0}};
    memcpy(pb.shape, mc->out_info.shape, sizeof pb.shape);
    if (sizeof pb > sizeof tp->buf - tp->len)
      return pack_fail(c, tp->len + sizeof pb, msg, msglen);
    memcpy(tp->buf + tp->len, &pb, sizeof pb);
    tp->len += sizeof pb;
    h.partial = 1;
  }
  memcpy(tp->buf, &h, sizeof h);
  return rc;
}

/* Worker side: writes the result header and the values that are present into
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
    size_t n;
    int rc = theus__wire_put(parts[i], out + at, cap - at, &n);
    if (rc == THEUS_ELIMIT)
      return theus_task_fail(t, rc, "process '%s': its %s nests deeper than %u levels", ctx->c->name,
                             i ? "return value" : "patch", THEUS__WIRE_MAX_DEPTH);
    if (rc)
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

/* One value of a task or a result (NULL if n is 0); *rc THEUS_ENOMEM when
 * memory ran out, THEUS_EPARSE for bad bytes. */
static json_t *load_part(const char *p, size_t n, int *rc) {
  *rc = 0;
  return n ? theus__wire_get(p, n, rc) : NULL;
}

/* The i-th of n NUL-terminated keys (NULL past the end). */
static const char *key_at(const char *keys, uint32_t n, uint32_t i) {
  for (uint32_t k = 0; k < n; k++, keys += strlen(keys) + 1)
    if (k == i)
      return keys;
  return NULL;
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
  if (h.magic != TASK_MAGIC || h.reg >= count ||
      (uint64_t)h.keys_len + h.dom_len + h.args_len + (h.partial ? sizeof(partial_blk) : 0) > len - sizeof h ||
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
  int drc, arc;
  json_t *jdom = load_part(dom, h.dom_len, &drc), *jargs = load_part(args, h.args_len, &arc);
  ctx.domain = jdom;
  ctx.args = jargs;
  if (item) {
    slice_t sl;
    memcpy(&sl, item, sizeof sl);
    h.has_slice = 1, h.lo = sl.lo, h.hi = sl.hi, h.slice_index = sl.index, h.slice_count = sl.count;
  }
  if (h.has_slice) {
    ctx.has_slice = 1;
    ctx.map_key = h.map_key ? key_at(keys, h.nkeys, h.map_key - 1) : NULL;
    if (h.out_key && !theus_task_array(t, h.out_key - 1, &ctx.out_info)) {
      ctx.out_key = key_at(keys, h.nkeys, h.out_key - 1);
      ctx.out_data = theus_task_window(t, NULL);
    }
    theus_array_info in;
    if (ctx.out_data && h.map_key && !theus_task_array(t, h.map_key - 1, &in) && in.shape[0]) {
      /* a map into an output runs on workers forked for it: fault the slice's input rows in at once */
      uint64_t rb = in.nbytes / in.shape[0];
      theus__os_populate((const char *)in.data + h.lo * rb, (h.hi - h.lo) * rb, 0);
    }
    if (h.partial && ctx.out_data) { /* this slice's own partial array */
      partial_blk pb;
      memcpy(&pb, args + h.args_len, sizeof pb);
      array_info_of(&ctx.out_info, (theus_dtype)pb.dtype, pb.ndim < THEUS_MAX_DIMS ? pb.ndim : THEUS_MAX_DIMS,
                    pb.shape);
      ctx.out_data = (unsigned char *)ctx.out_data + (uint64_t)h.slice_index * pb.stride;
      ctx.out_info.data = ctx.out_data;
    }
    ctx.lo = h.lo;
    ctx.hi = h.hi;
    ctx.slice_index = h.slice_index;
    ctx.slice_count = h.slice_count;
  }
  int rc = drc ? drc : arc ? arc : call_process(&ctx);
  if (!rc)
    rc = write_result(t, &ctx);
  else if (drc || arc)
    theus_task_fail(t, rc, "engine task: %s", rc == THEUS_ENOMEM ? "out of memory decoding the task's values"
                                                                 : "malformed task values");
  else
    theus_task_fail(t, rc, "%s", ctx.msg[0] ? ctx.msg : "engine task: malformed task values");
  theus__ctx_fini(&ctx);
  json_decref(jdom);
  json_decref(jargs);
  return rc;
}

/* Worker side, before each task: the process name, for the pool's output
 * prefixes ("[worker 1 process scale] "): the registry entry the task
 * header names (the common part of a map chunk, else the task's bytes).
 * Points into the registry, which outlives the task; allocates nothing. */
const char *theus__task_label(const theus_task *t, char *buf, size_t cap) {
  (void)buf, (void)cap;
  size_t len;
  const unsigned char *arg = theus_task_common(t, &len);
  if (!arg)
    arg = theus_task_arg(t, &len);
  const theus__registry *reg = theus_task_context(t);
  task_hdr h;
  if (!reg || !arg || len < sizeof h)
    return NULL;
  memcpy(&h, arg, sizeof h);
  uint32_t count = atomic_load_explicit(&((theus__registry *)reg)->count, memory_order_acquire);
  return h.magic == TASK_MAGIC && h.reg < count ? reg->ent[h.reg].c.name : NULL;
}

/* Queues a packed task; with block 0, THEUS_EAGAIN when every ring is full. */
static int submit_task(theus_engine *e, const theus_contract *c, const task_pack *tp, int block,
                       theus_ticket *tk) {
  theus_task_desc d = {.fn = theus__pool_task, .arg = tp->buf, .arg_len = tp->len, .handles = tp->handles,
                       .nhandles = tp->nhandles, .keys = tp->keys, .timeout_ms = c->timeout_ms,
                       .flags = theus_contract_sandboxed(c) ? THEUS_TASK_SANDBOX : 0,
                       .retries = theus_contract_retries(c)};
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
  int prc, rrc;
  json_t *patch = load_part(p, rh.patch_len, &prc), *ret = load_part(p + rh.patch_len, rh.ret_len, &rrc);
  if (prc || rrc || (rh.patch_len && !json_is_object(patch))) {
    json_decref(patch);
    json_decref(ret);
    o->rc = prc == THEUS_ENOMEM || rrc == THEUS_ENOMEM ? THEUS_ENOMEM : THEUS_EPARSE;
    snprintf(o->msg, sizeof o->msg, "process '%s': %s from worker %d", c->name,
             o->rc == THEUS_ENOMEM ? "out of memory decoding the result" : "malformed result values", worker);
    return;
  }
  o->patch = patch;
  o->ret = json_is_null(ret) ? (json_decref(ret), NULL) : ret;
  o->rc = theus__check_outputs(c, o->patch, o->msg, sizeof o->msg);
}

/* Turns a pool result into a run_out. THEUS_ETIMEDOUT when the wait itself
 * timed out (the ticket stays valid; o untouched), else 0. */
static int collect(theus_engine *e, const theus_contract *c, theus_ticket tk, uint64_t t0, int64_t timeout_ms,
                   const _Atomic int *job_cancel, run_out *o) {
  theus_pool_result res;
  memset(&res, 0, sizeof res);
  int rc;
  if (timeout_ms < 0 && (job_cancel || atomic_load_explicit(&e->cancel, memory_order_relaxed))) {
    /* a cancel may come from a signal handler: wait in slices to see it */
    int sent = 0;
    while ((rc = theus_pool_wait(e->pool, tk, sent ? -1 : 20, &res)) == THEUS_ETIMEDOUT)
      if (canceled_now(e, job_cancel) && !sent) {
        theus_pool_cancel(e->pool, tk);
        sent = 1;
      }
  } else {
    rc = theus_pool_wait(e->pool, tk, timeout_ms, &res);
  }
  if (rc == THEUS_ETIMEDOUT)
    return rc;
  o->worker = res.worker;
  o->ns = res.end_ns > res.start_ns ? res.end_ns - res.start_ns : 0; /* measured on the worker */
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
  if (!(o->rc = pack_task(e, c, reg, snap, args, NULL, NULL, &tp, o->msg, sizeof o->msg)) &&
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
    collect(e, c, tk, t0, -1, tl_job_cancel, o);
}

static void run(theus_engine *e, const theus_contract *c, int32_t reg, theus_snapshot *snap, const json_t *args,
                run_out *o) {
  if (reg >= 0)
    run_remote(e, c, reg, snap, args, o);
  else
    run_local(e, c, snap, args, NULL, NULL, o);
  if (o->rc)
    atomic_fetch_add_explicit(&e->n_fail, 1, memory_order_relaxed);
}

/* ---- memoised runs --------------------------------------------------------- */

/* A hit fills o as the run would have (locally, in no time). */
static int memo_hit(theus_engine *e, const theus_contract *c, const theus__memo_key_t *k, run_out *o) {
  if (!theus__memo_get(e, k, &o->patch, &o->ret))
    return 0;
  o->rc = 0;
  o->worker = -1;
  o->ns = 0;
  if (atomic_load_explicit(&e->trace, memory_order_relaxed)) /* no clock read for nobody */
    trace(e, c, -1, theus__now_ns(), 0);
  return 1;
}

/* Keeps o's outputs for later runs of the same key: only a success that
 * published no heavy array (a draft is consumed by its commit). */
static void memo_keep(theus_engine *e, const theus__memo_key_t *k, const run_out *o) {
  if (!o->rc && !(o->heavy && json_object_size(o->heavy)))
    theus__memo_put(e, k, o->patch, o->ret);
}

/* run(), through the memo cache when c is memoised. */
static void run_memo(theus_engine *e, const theus_contract *c, int32_t reg, theus_snapshot *snap, const json_t *args,
                     run_out *o) {
  theus__memo_key_t k;
  int memo = theus__memo_on(e, c) && theus__memo_key(c, args, snap, NULL, &k) == 0;
  if (memo && memo_hit(e, c, &k, o))
    return;
  run(e, c, reg, snap, args, o);
  if (memo)
    memo_keep(e, &k, o);
}

/* ---- execute ------------------------------------------------------------ */

static void backoff(unsigned attempt, unsigned *seed) {
  long ns = 1000L << (attempt < 10 ? attempt : 10); /* 1 us .. ~1 ms */
  struct timespec ts = {0, ns / 2 + rand_r(seed) % (ns / 2 + 1)};
  nanosleep(&ts, NULL);
}

static const theus_contract *lookup(theus_engine *e, const char *name, int32_t *reg, char *msg, size_t msglen) {
  const theus_contract *c = theus__proc_find(e, name, reg);
  const char *near = c ? NULL : theus_engine_process_near(e, name);
  if (!c)
    snprintf(msg, msglen, "no process named '%s' is registered; %s%s%sregister it before executing",
             name ? name : "(null)", near ? "did you mean '" : "", near ? near : "", near ? "'? " : "");
  return c;
}

static int commit(theus_engine *e, const theus_contract *c, const json_t *args, unsigned attempt,
                  theus_snapshot *snap, run_out *o, uint64_t *version, char *msg, size_t msglen) {
  int writes = (o->patch && json_object_size(o->patch)) || (o->heavy && json_object_size(o->heavy));
  if (!writes)
    return 0; /* nothing to commit: a reader does not create a version */
  theus__commit_info ci = {"execute", c->name, args, snap->version, NULL, o->worker, o->ns, attempt};
  return theus__cas_process(e, &ci, c, snap, o->patch, o->heavy, version, msg, msglen);
}

/* Commits the outcome of attempt number `attempt` (run on snap, reference
 * taken over) and, on conflict, runs again on the newest version, up to
 * max_retries: the shared tail of execute and of pool jobs. */
static int exec_finish(theus_engine *e, const theus_contract *c, int32_t reg, const json_t *args, unsigned attempt,
                       theus_snapshot *snap, run_out *o, json_t **result, uint64_t *version, char *msg,
                       size_t msglen) {
  unsigned seed = (unsigned)theus__now_ns();
  for (;; attempt++) {
    if (!snap && canceled_now(e, tl_job_cancel)) {
      snprintf(msg, msglen, "process '%s': canceled before it ran", c->name);
      return THEUS_ECANCELED;
    }
    if (!snap) {
      snap = theus__snap_get(e);
      run_memo(e, c, reg, snap, args, o);
    }
    int rc = o->rc;
    if (!rc && canceled_now(e, tl_job_cancel)) {
      rc = THEUS_ECANCELED;
      snprintf(msg, msglen, "process '%s': canceled; its result was not committed", c->name);
    } else if (rc) {
      snprintf(msg, msglen, "%s", o->msg);
    } else {
      rc = commit(e, c, args, attempt, snap, o, version, msg, msglen);
    }
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
  THEUS__ENGINE_ARG(e, "execute");
  if (!name)
    return theus__eset(e, THEUS_EINVAL, "execute: name is NULL");
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
  _Atomic int canceled; /* theus_job_cancel */
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
  if (collect(e, j->c, j->tk, j->t0, timeout_ms, &j->canceled, &o) == THEUS_ETIMEDOUT) {
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
  tl_job_cancel = &j->canceled; /* a conflict re-runs it: canceled by then, it stops */
  int rc = exec_finish(e, j->c, j->reg, j->args, 0, snap, &o, &result, &version, msg, sizeof msg);
  tl_job_cancel = NULL;
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
      tl_job_cancel = &j->canceled;
      int rc = exec_finish(e, j->c, -1, j->args, 0, NULL, &o, &result, &version, msg, sizeof msg);
      tl_job_cancel = NULL;
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
  if (atomic_load(&j->canceled)) {
    o.rc = THEUS_ECANCELED;
    snprintf(o.msg, sizeof o.msg, "process '%s': canceled before it ran", j->c->name);
  }
  if (o.rc || start_remote(e, j->c, j->reg, j->snap, j->args, 1, &j->tk, &o)) {
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
  if (atomic_load(&j->canceled)) /* canceled while it waited for a ring slot */
    theus_pool_cancel(e->pool, j->tk);
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
  if (out)
    *out = NULL;
  THEUS__ENGINE_ARG(e, "submit");
  if (!name || !out)
    return theus__eset(e, THEUS_EINVAL, "submit: %s is NULL", !name ? "name" : "job");
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
  if (!j)
    return THEUS_EINVAL;
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

int theus_job_cancel(theus_job *j) {
  if (!j)
    return THEUS_EINVAL;
  atomic_store_explicit(&j->canceled, 1, memory_order_seq_cst);
  pthread_mutex_lock(&j->m);
  int in_pool = j->state == J_POOL || j->state == J_COLLECTING;
  pthread_mutex_unlock(&j->m);
  /* The ticket stays valid until collected, and only a collector (which
   * checks the flag after this store) frees it: an ENOTFOUND here only means
   * it was collected meanwhile. */
  if (in_pool)
    theus_pool_cancel(j->e->pool, j->tk);
  return 0;
}

void theus_engine_set_cancel(theus_engine *e, const volatile int *flag) {
  if (e)
    atomic_store_explicit(&e->cancel, flag, memory_order_release);
}

const char *theus_job_errmsg(const theus_job *j) {
  if (!j)
    return "no job (NULL: theus_engine_submit failed)";
  return atomic_load_explicit(&j->done, memory_order_acquire) ? j->msg : "";
}

uint64_t theus_job_version(const theus_job *j) {
  if (!j)
    return 0;
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
  map_ctx mc;
  uint32_t n;
  slice_t *sl;
  uint64_t *ranges; /* a map into an output: the output bytes of each slice */
  run_out *out;
} map_job;

/* Result bytes per slice: one slot's result room per chunk of one slice (the
 * statuses take 4 bytes of it), capped so that many slices do not need a
 * huge results buffer. */
#define MAP_ITEM_RESULT (16u * 1024u)

/* Progress (theus_engine_progress_get): slices finished, as a delta. */
typedef struct map_progress {
  theus_engine *e;
  uint64_t done;
} map_progress;

static void map_progressed(size_t done, size_t count, void *ud) {
  (void)count;
  map_progress *mp = ud;
  uint64_t d = done - mp->done;
  mp->done = done;
  atomic_fetch_add_explicit(&mp->e->map_done, d, memory_order_relaxed);
  atomic_fetch_add_explicit(&mp->e->map_slices, d, memory_order_relaxed);
}

void theus_engine_progress_get(theus_engine *e, theus_engine_progress *out) {
  if (!out)
    return;
  memset(out, 0, sizeof *out);
  if (!e)
    return;
  /* total first: a map ending lowers done before total, one starting raises total before done */
  out->map_total = atomic_load_explicit(&e->map_total, memory_order_acquire);
  out->map_done = atomic_load_explicit(&e->map_done, memory_order_acquire);
  if (out->map_done > out->map_total)
    out->map_done = out->map_total;
  out->slices = atomic_load_explicit(&e->map_slices, memory_order_relaxed);
}

static void map_run_slices(map_job *m, map_progress *mp, char *msg, size_t msglen);

static void map_run_all(map_job *m, char *msg, size_t msglen) {
  map_progress mp = {m->e, 0};
  atomic_fetch_add_explicit(&m->e->map_total, m->n, memory_order_release);
  map_run_slices(m, &mp, msg, msglen);
  atomic_fetch_sub_explicit(&m->e->map_done, mp.done, memory_order_release);
  atomic_fetch_sub_explicit(&m->e->map_total, m->n, memory_order_release);
}

typedef struct slice_decode {
  map_job *m;
  const int *workers;
} slice_decode;

/* theus_pool_map's result_fn: decodes a slice's result straight from the
 * worker's slot. */
static void slice_result(size_t i, const void *data, size_t len, void *ud) {
  slice_decode *sd = ud;
  decode_result(sd->m->c, data, len, sd->workers[i], &sd->m->out[i]);
}

static void map_run_slices(map_job *m, map_progress *mp, char *msg, size_t msglen) {
  if (m->reg < 0) {
    for (uint32_t i = 0; i < m->n; i++) {
      if (theus__engine_canceled(m->e)) {
        m->out[i].rc = THEUS_ECANCELED;
        snprintf(m->out[i].msg, sizeof m->out[i].msg, "map '%s': canceled before slice %u ran", m->c->name, i);
        continue;
      }
      run_local(m->e, m->c, m->snap, m->args, &m->sl[i], &m->mc, &m->out[i]);
      if (m->out[i].rc)
        atomic_fetch_add_explicit(&m->e->n_fail, 1, memory_order_relaxed);
      map_progressed(i + 1, m->n, mp);
    }
    return;
  }
  task_pack tp;
  int rc = pack_task(m->e, m->c, m->reg, m->snap, m->args, NULL, &m->mc, &tp, msg, msglen);
  int *status = calloc(m->n, sizeof *status), *workers = calloc(m->n, sizeof *workers);
  uint64_t *times = calloc(2 * (size_t)m->n, sizeof *times);
  slice_decode sd = {m, workers};
  if (!rc && (!status || !workers || !times)) {
    snprintf(msg, msglen, "map '%s': out of memory for %u slice results", m->c->name, m->n);
    rc = THEUS_ENOMEM;
  }
  uint64_t t0 = theus__now_ns();
  if (!rc) {
    theus_map_desc d = {.fn = theus__pool_task, .args = m->sl, .arg_size = sizeof(slice_t), .count = m->n,
                        .handles = tp.handles, .nhandles = tp.nhandles, .keys = tp.keys, .result_fn = slice_result,
                        .result_ud = &sd, .result_size = MAP_ITEM_RESULT, .status = status, .chunk = 1,
                        .timeout_ms = m->c->timeout_ms, .common = tp.buf,
                        .flags = theus_contract_sandboxed(m->c) ? THEUS_TASK_SANDBOX : 0,
                        .common_size = tp.len, .workers = workers, .times = times, .window = m->mc.out_h,
                        .window_ranges = m->ranges, .progress_fn = map_progressed, .progress_ud = mp,
                        .retries = theus_contract_retries(m->c),
                        .cancel = atomic_load_explicit(&m->e->cancel, memory_order_acquire)};
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
}

/* map_run_all through the memo cache: slices found there are not run, the
 * others run as one map and are kept. */
static void map_run_memo(map_job *m, char *msg, size_t msglen) {
  if (!theus__memo_on(m->e, m->c)) {
    map_run_all(m, msg, msglen);
    return;
  }
  theus__memo_key_t *keys = calloc(m->n, sizeof *keys);
  uint32_t *miss = calloc(m->n, sizeof *miss);
  map_job sub = *m;
  sub.sl = calloc(m->n, sizeof *sub.sl);
  sub.out = calloc(m->n, sizeof *sub.out);
  if (!keys || !miss || !sub.sl || !sub.out) {
    map_run_all(m, msg, msglen);
  } else {
    sub.n = 0;
    for (uint32_t i = 0; i < m->n; i++) {
      const slice_t *s = &m->sl[i];
      uint64_t sl[4] = {s->lo, s->hi, s->index, s->count};
      if (theus__memo_key(m->c, m->args, m->snap, sl, &keys[i]) || !memo_hit(m->e, m->c, &keys[i], &m->out[i])) {
        miss[sub.n] = i;
        sub.sl[sub.n++] = *s; /* keeps its index and count: the process sees the same slice */
      }
    }
    if (sub.n)
      map_run_all(&sub, msg, msglen);
    for (uint32_t j = 0; j < sub.n; j++) {
      m->out[miss[j]] = sub.out[j];
      memo_keep(m->e, &keys[miss[j]], &sub.out[j]);
    }
  }
  free(keys);
  free(miss);
  free(sub.sl);
  free(sub.out);
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
    theus__reduce_why();
    errno = 0;
    if (!(acc = fn(acc, o->ret, ud))) {
      rc = errno == ENOMEM ? THEUS_ENOMEM : THEUS_EINVAL;
      const char *why = theus__reduce_why();
      if (rc == THEUS_ENOMEM)
        snprintf(msg, msglen, "map '%s': reducer '%s' ran out of memory combining the result of slice %u",
                 m->c->name, rname, i);
      else
        snprintf(msg, msglen, "map '%s': reducer '%s' cannot combine the result of slice %u (%s)", m->c->name,
                 rname, i, *why ? why : json_is_string(o->ret) ? "a string" : "type mismatch");
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

/* Slice bounds: even splits of the rows, or, for a map into an output, of
 * units of rows whose output bytes are a whole number of pages (so every
 * slice's bytes start on a page and a worker can be given exactly them). */
static int map_slices(map_job *m, uint64_t rows, uint32_t slices, char *msg, size_t msglen) {
  uint64_t unit = 1;
  if (m->mc.out_key && !m->mc.partials) {
    uint64_t page = theus__os_page_size(), rb = m->mc.out_info.nbytes / rows, g = page, r = rb;
    while (r) { /* gcd(page, row bytes) */
      uint64_t t = g % r;
      g = r;
      r = t;
    }
    unit = page / g;
  }
  uint64_t units = (rows + unit - 1) / unit;
  m->n = slices > units ? (uint32_t)units : slices;
  m->sl = calloc(m->n, sizeof *m->sl);
  m->out = calloc(m->n, sizeof *m->out);
  m->ranges = m->mc.out_key ? calloc(2 * (size_t)m->n, sizeof *m->ranges) : NULL;
  if (!m->sl || !m->out || (m->mc.out_key && !m->ranges))
    return theus__errf(msg, msglen, THEUS_ENOMEM, "map '%s': out of memory for %u slices", m->c->name, m->n);
  for (uint32_t i = 0; i < m->n; i++) {
    uint64_t lo = unit * (units * i / m->n), hi = unit * (units * (i + 1) / m->n);
    m->sl[i] = (slice_t){lo, hi < rows ? hi : rows, i, m->n};
    if (m->ranges && m->mc.partials) {
      m->ranges[2 * i] = i * m->mc.stride;
      m->ranges[2 * i + 1] = i * m->mc.stride + m->mc.out_info.nbytes;
    } else if (m->ranges) {
      m->ranges[2 * i] = m->sl[i].lo * (m->mc.out_info.nbytes / rows);
      m->ranges[2 * i + 1] = m->sl[i].hi * (m->mc.out_info.nbytes / rows);
    }
  }
  return 0;
}

/* Partials: one zeroed partial array per slice in a scratch array of the
 * arena, each starting on a page (allocated once the slices are known). */
static int map_partials_setup(map_job *m, theus_dtype dt, const theus_map_out *out, char *msg, size_t msglen) {
  uint64_t probe = 0;
  if (!out->ndim || out->ndim > THEUS_MAX_DIMS || theus__reduce_array(out->partials, dt, &probe, &probe, 0)) {
    snprintf(msg, msglen, "map '%s' into '%s': partials need \"sum\", \"min\" or \"max\" and the partial's "
             "shape (ndim 1..%d)", m->c->name, out->key, THEUS_MAX_DIMS);
    return THEUS_EINVAL;
  }
  for (unsigned d = 0; d < out->ndim; d++)
    if (!out->shape[d]) {
      snprintf(msg, msglen, "map '%s' into '%s': dimension %u of the partial is 0", m->c->name, out->key, d);
      return THEUS_EINVAL;
    }
  array_info_of(&m->mc.out_info, dt, out->ndim, out->shape);
  uint64_t page = theus__os_page_size();
  m->mc.stride = (m->mc.out_info.nbytes + page - 1) / page * page;
  m->mc.partials = out->partials;
  m->mc.out_key = out->key;
  return 0;
}

static int map_partials_alloc(map_job *m, char *msg, size_t msglen) {
  void *p = NULL;
  int rc = theus_arena_alloc(m->e->arena, (size_t)m->n * m->mc.stride, &m->mc.out_h, &p);
  if (rc) {
    snprintf(msg, msglen, "map '%s' into '%s': %u partials of %llu bytes: %s", m->c->name, m->mc.out_key, m->n,
             (unsigned long long)m->mc.stride, theus_arena_errmsg(m->e->arena));
    m->mc.out_h = 0;
    return rc;
  }
  m->mc.out_data = p; /* fresh arena pages read as zero */
  return 0;
}

/* Combines the partials into a new draft for the output key. */
static int map_partials_reduce(map_job *m, char *msg, size_t msglen) {
  void *dst = NULL;
  const theus_array_info *ai = &m->mc.out_info;
  int rc = theus__draft_new(m->e, m->mc.out_key, ai->dtype, ai->ndim, ai->shape, &dst, NULL, msg, msglen);
  if (rc)
    return rc;
  const unsigned char *src = m->mc.out_data;
  memcpy(dst, src, ai->nbytes);
  for (uint32_t i = 1; i < m->n; i++)
    theus__reduce_array(m->mc.partials, ai->dtype, dst, src + i * m->mc.stride, ai->nbytes / ai->itemsize);
  return 0;
}

/* Allocates the output's draft (a map into an output). */
static int map_out_alloc(map_job *m, const theus_array_info *in, const theus_map_out *out, char *msg,
                         size_t msglen) {
  char path[300];
  if (!out->key) {
    snprintf(msg, msglen, "map '%s': out->key is NULL", m->c->name);
    return THEUS_EINVAL;
  }
  snprintf(path, sizeof path, "heavy.%s", out->key);
  if (!theus__strv_covers(m->c->outputs, path)) {
    snprintf(msg, msglen, "map '%s': the contract does not declare output '%s'", m->c->name, path);
    return THEUS_ECONTRACT;
  }
  theus_dtype dt = out->dtype ? out->dtype : in->dtype ? in->dtype : THEUS_DTYPE_U8;
  unsigned nd = out->ndim ? out->ndim : in->ndim;
  const uint64_t *shape = out->ndim ? out->shape : in->shape;
  if (out->partials)
    return map_partials_setup(m, dt, out, msg, msglen);
  if (nd > THEUS_MAX_DIMS) {
    snprintf(msg, msglen, "map '%s' into '%s': ndim %u is above %d", m->c->name, out->key, nd, THEUS_MAX_DIMS);
    return THEUS_EINVAL;
  }
  if (shape[0] != in->shape[0]) {
    snprintf(msg, msglen, "map '%s' into '%s': the output's first dimension (%llu) must be the input's rows (%llu)",
             m->c->name, out->key, (unsigned long long)shape[0], (unsigned long long)in->shape[0]);
    return THEUS_EINVAL;
  }
  void *data = NULL;
  int rc = theus__draft_new(m->e, out->key, dt, nd, shape, &data, &m->mc.out_h, msg, msglen);
  if (rc)
    return rc;
  m->mc.out_key = out->key;
  m->mc.out_data = data;
  theus_array_info_get(m->e->arena, m->mc.out_h, &m->mc.out_info);
  uint64_t off, len;
  if (m->reg >= 0 && theus_arena_file_range(m->e->arena, m->mc.out_h, &off, &len)) {
    snprintf(msg, msglen, "map '%s' into '%s': the output has %llu bytes, under a page (%zu): a parallel map "
             "fills outputs of at least a page; return small results through a reducer", m->c->name, out->key,
             (unsigned long long)m->mc.out_info.nbytes, theus__os_page_size());
    theus__draft_drop(m->e, out->key);
    m->mc.out_key = NULL;
    return THEUS_EINVAL;
  }
  return 0;
}

/* No input array (a process filling a new one): the slices split the
 * output's rows, whose shape and dtype the caller gives. */
static int map_no_input(map_job *m, const theus_map_out *out, theus_array_info *info, char *msg, size_t msglen) {
  if (!out || out->partials || !out->ndim || out->ndim > THEUS_MAX_DIMS || !out->dtype) {
    snprintf(msg, msglen, "map '%s': without an input array (key NULL) give the output's dtype and shape, and no "
             "partials", m->c->name);
    return THEUS_EINVAL;
  }
  array_info_of(info, out->dtype, out->ndim, out->shape);
  return 0;
}

static int map_setup(map_job *m, const char *key, uint32_t slices, const theus_map_out *out, char *msg,
                     size_t msglen) {
  const theus__hbind *b = key ? theus__snap_find(m->snap, key) : NULL;
  theus_array_info info;
  if (!key) {
    int rc = map_no_input(m, out, &info, msg, msglen);
    if (!rc)
      rc = map_out_alloc(m, &info, out, msg, msglen);
    return rc ? rc : map_slices(m, info.shape[0], slices, msg, msglen);
  }
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
  int rc = out ? map_out_alloc(m, &info, out, msg, msglen) : 0;
  if (!rc)
    rc = map_slices(m, info.shape[0], slices, msg, msglen);
  if (!rc && m->mc.partials)
    rc = map_partials_alloc(m, msg, msglen);
  return rc;
}

/* Publishes the output of a successful map into an output, in a version of
 * its own; discards it otherwise. */
static int map_out_finish(map_job *m, int rc, uint64_t *version, char *msg, size_t msglen) {
  if (!m->mc.out_key)
    return rc;
  if (m->mc.partials) {
    if (!rc)
      rc = map_partials_reduce(m, msg, msglen);
    if (m->mc.out_h)
      theus_arena_free(m->e->arena, m->mc.out_h);
    m->mc.out_h = 0;
    if (rc)
      return rc; /* no draft was made, or theus__draft_new failed */
  }
  if (!rc) {
    json_t *hp = json_object();
    if (!hp || json_object_set_new(hp, m->mc.out_key, json_true())) {
      snprintf(msg, msglen, "map '%s': out of memory", m->c->name);
      rc = THEUS_ENOMEM;
    } else {
      theus__commit_info ci = {.op = "map", .process = m->c->name, .args = m->args,
                               .read_version = m->snap->version, .worker = -1};
      rc = theus__cas(m->e, m->snap->version, NULL, hp, &ci, version, msg, msglen);
    }
    json_decref(hp);
  }
  if (rc)
    theus__draft_drop(m->e, m->mc.out_key);
  return rc;
}

/* The checks and setup every map shares (theus_engine_map, _map_into and
 * _map_part). m->snap stays NULL when it was refused before it started (the
 * message is then set on e). */
static int map_begin(theus_engine *e, map_job *m, const char *name, const char *key, uint32_t slices,
                     const theus_map_out *out, char *msg, size_t msglen) {
  m->c = lookup(e, name, &m->reg, msg, msglen);
  if (!m->c)
    return theus__eset(e, THEUS_ENOTFOUND, "map: %s", msg);
  if (!slices || (m->args && !json_is_object(m->args)))
    return theus__eset(e, THEUS_EINVAL, "map '%s': slices must be >= 1 and args an object", name);
  atomic_fetch_add_explicit(&e->n_exec, 1, memory_order_relaxed);
  m->snap = theus__snap_get(e);
  return map_setup(m, key, slices, out, msg, msglen);
}

static int map_end(theus_engine *e, map_job *m, int rc, const char *msg) {
  for (uint32_t i = 0; m->out && i < m->n; i++)
    run_out_fini(e, &m->out[i], 1);
  free(m->out);
  free(m->sl);
  free(m->ranges);
  if (m->snap)
    theus__snap_put(m->snap);
  if (rc)
    atomic_fetch_add_explicit(&e->n_fail, 1, memory_order_relaxed);
  return rc ? theus__eset(e, rc, "%s", msg) : 0;
}

static int map_main(theus_engine *e, const char *name, const char *key, uint32_t slices, const char *reducer,
                    const json_t *args, const theus_map_out *out, json_t **result, uint64_t *version) {
  char msg[1024] = "";
  if (result)
    *result = NULL;
  if (version)
    *version = 0;
  THEUS__ENGINE_ARG(e, "map");
  if (!name || (!key && !out))
    return theus__eset(e, THEUS_EINVAL, "map: %s is NULL", !name ? "name" : "key");
  map_job m = {.e = e, .reg = -1, .args = args, .mc = {.key = key}};
  void *ud;
  theus_reducer_fn fn = reducer ? theus__reducer_find(e, reducer, &ud) : NULL;
  if (!fn)
    return theus__eset(e, THEUS_EINVAL, "map '%s': unknown reducer '%s' (sum, min, max, concat or registered)",
                       name, reducer ? reducer : "(null)");
  int rc = map_begin(e, &m, name, key, slices, out, msg, sizeof msg);
  if (!m.snap)
    return rc; /* refused before it started: the message is set */
  if (!rc) {
    map_run_memo(&m, msg, sizeof msg);
    rc = map_reduce(&m, fn, ud, reducer, result, msg, sizeof msg);
  }
  rc = map_out_finish(&m, rc, version, msg, sizeof msg);
  if (rc && result) {
    json_decref(*result);
    *result = NULL;
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
  THEUS__ENGINE_ARG(e, "map_part");
  if (!items || !name || !key)
    return theus__eset(e, THEUS_EINVAL, "map_part: %s is NULL", !items ? "items" : !name ? "name" : "key");
  *items = NULL;
  map_job m = {.e = e, .reg = -1, .args = args, .mc = {.key = key}};
  int rc = map_begin(e, &m, name, key, slices, NULL, msg, sizeof msg);
  if (!m.snap)
    return rc;
  uint32_t total = m.n;
  if (!rc && (first > total || count > total - first)) {
    snprintf(msg, sizeof msg, "map '%s': slices [%u, %llu) leave the map's %u slices", name, first,
             (unsigned long long)first + count, total);
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

int theus_engine_map(theus_engine *e, const char *name, const char *key, uint32_t slices, const char *reducer,
                     const json_t *args, json_t **result) {
  return map_main(e, name, key, slices, reducer, args, NULL, result, NULL);
}

int theus_engine_map_into(theus_engine *e, const char *name, const char *key, uint32_t slices, const char *reducer,
                          const json_t *args, const theus_map_out *out, json_t **result, uint64_t *version) {
  THEUS__ENGINE_ARG(e, "map_into");
  if (!out)
    return theus__eset(e, THEUS_EINVAL, "map_into '%s': out is NULL", name ? name : "(null)");
  return map_main(e, name, key, slices, reducer, args, out, result, version);
}
