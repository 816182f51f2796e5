/* The process context: what a running process may read and write. The same
 * code serves local runs (ctx->e set) and worker runs (ctx->task set). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine_internal.h"

/* Records the first failure of the run; later ones keep the first cause. */
static int ctx_err(theus_ctx *ctx, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int ctx_err(theus_ctx *ctx, int code, const char *fmt, ...) {
  if (ctx->rc)
    return code;
  ctx->rc = code;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(ctx->msg, sizeof ctx->msg, fmt, ap);
  va_end(ap);
  return code;
}

/* A NULL ctx (a process passing on a pointer it did not check) gets NULL or
 * THEUS_EINVAL from every call below: there is no run to fail. */

void theus__ctx_fini(theus_ctx *ctx) {
  for (unsigned i = 0; i < ctx->nlive; i++)
    theus_twin_reader_close(ctx->live[i].r);
  ctx->nlive = 0;
  json_decref(ctx->patch);
  json_decref(ctx->ret);
  json_decref(ctx->heavy_out);
  ctx->patch = ctx->ret = ctx->heavy_out = NULL;
}

const json_t *theus_ctx_get(theus_ctx *ctx, const char *path) {
  if (!ctx)
    return NULL;
  if (!path || strncmp(path, "domain.", 7) || theus_path_check(path, NULL, 0) || strchr(path, '*')) {
    ctx_err(ctx, THEUS_EINVAL, "process '%s': ctx_get: '%s' is not a domain path like 'domain.x'", ctx->c->name,
            path ? path : "(null)");
    return NULL;
  }
  if (ctx->c->semantic == THEUS_PURE && !theus__strv_covers(ctx->c->inputs, path)) {
    ctx_err(ctx, THEUS_ECONTRACT,
            "contract violation: pure process '%s' read undeclared input '%s'; add it to inputs", ctx->c->name,
            path);
    return NULL;
  }
  return theus__json_at(ctx->domain, path);
}

const json_t *theus_ctx_args(theus_ctx *ctx) { return ctx ? ctx->args : NULL; }

/* Pure processes may only read the heavy keys (arrays or live regions) they
 * declared: anything else fails the execution. */
static int heavy_declared(theus_ctx *ctx, const char *key, const char *what) {
  if (!ctx || !key)
    return THEUS_EINVAL;
  char path[256];
  snprintf(path, sizeof path, "heavy.%s", key);
  if (ctx->c->semantic == THEUS_PURE && !theus__strv_covers(ctx->c->inputs, path))
    return ctx_err(ctx, THEUS_ECONTRACT,
                   "contract violation: pure process '%s' read undeclared %s '%s'; add it to inputs",
                   ctx->c->name, what, path);
  return 0;
}

/* The handle bound to key in this run's version, and the arena to read it
 * from (the owner's, or the worker's read-only attachment). */
static int heavy_handle(theus_ctx *ctx, const char *key, const theus_arena **a, theus_handle *h) {
  if (ctx->task) {
    const char *k = ctx->task_keys;
    for (uint32_t i = 0; i < ctx->task_nkeys; i++, k += strlen(k) + 1)
      if (!strcmp(k, key)) {
        *a = theus_task_arena(ctx->task);
        *h = theus_task_handle(ctx->task, i);
        return 0;
      }
    return THEUS_ENOTFOUND;
  }
  const theus__hbind *b = theus__snap_find(ctx->snap, key);
  if (!b)
    return THEUS_ENOTFOUND;
  *a = b->arr->arena;
  *h = b->arr->handle;
  return 0;
}

int theus_ctx_heavy(theus_ctx *ctx, const char *key, theus_array_info *out) {
  const theus_arena *a = NULL;
  theus_handle h = 0;
  int rc = heavy_declared(ctx, key, "heavy array");
  if (!rc)
    rc = heavy_handle(ctx, key, &a, &h);
  return rc ? rc : theus_array_info_get(a, h, out);
}

/* The reader of the live region bound to key, opened on first use in this run
 * and kept until theus__ctx_fini (one calloc per run and key). */
static int ctx_live_reader(theus_ctx *ctx, const char *key, theus_twin_reader **out) {
  const theus_arena *a = NULL;
  theus_handle h = 0;
  int rc = heavy_declared(ctx, key, "live region");
  if (!rc)
    rc = heavy_handle(ctx, key, &a, &h);
  if (rc)
    return rc;
  for (unsigned i = 0; i < ctx->nlive; i++)
    if (ctx->live[i].h == h) {
      *out = ctx->live[i].r;
      return 0;
    }
  if (ctx->nlive == THEUS_POOL_MAX_HANDLES) /* more keys than slots: recycle the last one */
    theus_twin_reader_close(ctx->live[--ctx->nlive].r);
  if ((rc = theus_twin_reader_open(a, h, out)))
    return rc;
  ctx->live[ctx->nlive].h = h;
  ctx->live[ctx->nlive++].r = *out;
  return 0;
}

int theus_ctx_live_read(theus_ctx *ctx, const char *key, size_t offset, void *dest, size_t len, uint64_t *epoch) {
  theus_twin_reader *r;
  int rc = ctx_live_reader(ctx, key, &r);
  return rc ? rc : theus_twin_reader_read_at(r, offset, dest, len, epoch);
}

int theus_ctx_live_wait(theus_ctx *ctx, const char *key, uint64_t seen, int64_t timeout_ms, uint64_t *now) {
  theus_twin_reader *r;
  int rc = ctx_live_reader(ctx, key, &r);
  return rc ? rc : theus_twin_reader_wait_epoch(r, seen, timeout_ms, now);
}

int theus_ctx_live_size(theus_ctx *ctx, const char *key, size_t *nbytes) {
  theus_twin_reader *r;
  int rc = ctx_live_reader(ctx, key, &r);
  if (!rc && nbytes)
    *nbytes = theus_twin_reader_size(r);
  return rc;
}

int theus_ctx_slice(theus_ctx *ctx, uint64_t *lo, uint64_t *hi, uint32_t *index, uint32_t *count) {
  if (!ctx)
    return THEUS_EINVAL;
  if (!ctx->has_slice)
    return THEUS_ENOTFOUND;
  if (lo)
    *lo = ctx->lo;
  if (hi)
    *hi = ctx->hi;
  if (index)
    *index = ctx->slice_index;
  if (count)
    *count = ctx->slice_count;
  return 0;
}

const char *theus_ctx_map_key(theus_ctx *ctx) { return ctx && ctx->has_slice ? ctx->map_key : NULL; }

int theus_ctx_map_out(theus_ctx *ctx, theus_array_info *info, void **data) {
  if (!ctx)
    return THEUS_EINVAL;
  if (!ctx->has_slice || !ctx->out_key || !ctx->out_data)
    return THEUS_ENOTFOUND;
  if (info)
    *info = ctx->out_info;
  if (data)
    *data = ctx->out_data;
  return 0;
}

int theus_ctx_set(theus_ctx *ctx, const char *path, json_t *value) {
  if (!ctx) {
    json_decref(value);
    return THEUS_EINVAL;
  }
  if (!value) /* taking it for null would commit a deletion */
    return ctx_err(ctx, THEUS_EINVAL, "process '%s': ctx_set '%s': value is NULL (json_real() of a NaN or an "
                   "infinity returns NULL: JSON has no non-finite numbers; or a json_* constructor ran out of memory; "
                   "json_null() deletes)", ctx->c->name, path ? path : "(null)");
  if (!path || strncmp(path, "domain.", 7) || theus_path_check(path, NULL, 0) || strchr(path, '*')) {
    json_decref(value);
    return ctx_err(ctx, THEUS_EINVAL, "process '%s': ctx_set: '%s' is not a domain path like 'domain.x'",
                   ctx->c->name, path ? path : "(null)");
  }
  if (!theus__strv_covers(ctx->c->outputs, path)) {
    json_decref(value);
    return ctx_err(ctx, THEUS_ECONTRACT,
                   "contract violation: process '%s' wrote undeclared output '%s'; add it to outputs",
                   ctx->c->name, path);
  }
  if (!ctx->patch && !(ctx->patch = json_object())) {
    json_decref(value);
    return ctx_err(ctx, THEUS_ENOMEM, "process '%s': out of memory", ctx->c->name);
  }
  int rc = theus__patch_put(ctx->patch, path, value);
  return rc ? ctx_err(ctx, rc, "process '%s': out of memory", ctx->c->name) : 0;
}

void theus_ctx_return(theus_ctx *ctx, json_t *value) {
  if (!ctx) {
    json_decref(value);
    return;
  }
  json_decref(ctx->ret);
  ctx->ret = value;
  if (!value)
    ctx_err(ctx, THEUS_EINVAL,
            "process '%s': ctx_return: no value (NULL; json_real() of a NaN or an infinity returns NULL: JSON has "
            "no non-finite numbers)",
            ctx->c->name);
}

int theus_ctx_heavy_alloc(theus_ctx *ctx, const char *key, theus_dtype dtype, unsigned ndim,
                          const uint64_t *shape, void **data) {
  if (!ctx)
    return THEUS_EINVAL;
  if (!key || !shape || !data)
    return ctx_err(ctx, THEUS_EINVAL, "process '%s': heavy_alloc: %s is NULL", ctx->c->name,
                   !key ? "key" : !shape ? "shape" : "data");
  if (!ctx->e)
    return ctx_err(ctx, THEUS_EREADONLY,
                   "process '%s': heavy_alloc in a worker: the arena is read-only there; run it locally",
                   ctx->c->name);
  char path[256];
  snprintf(path, sizeof path, "heavy.%s", key);
  if (!theus__strv_covers(ctx->c->outputs, path))
    return ctx_err(ctx, THEUS_ECONTRACT,
                   "contract violation: process '%s' allocated undeclared heavy output '%s'; add it to outputs",
                   ctx->c->name, path);
  char msg[512];
  int rc = theus__draft_new(ctx->e, key, dtype, ndim, shape, data, NULL, msg, sizeof msg);
  if (rc)
    return ctx_err(ctx, rc, "process '%s': %s", ctx->c->name, msg);
  if (!ctx->heavy_out)
    ctx->heavy_out = json_object();
  if (!ctx->heavy_out || json_object_set_new(ctx->heavy_out, key, json_true())) {
    theus__draft_drop(ctx->e, key);
    return ctx_err(ctx, THEUS_ENOMEM, "process '%s': out of memory", ctx->c->name);
  }
  return 0;
}

static int vfail(theus_ctx *ctx, int code, const char *prefix, const char *fmt, va_list ap) {
  if (ctx->rc)
    return code;
  char buf[600] = "(no message)";
  if (fmt)
    vsnprintf(buf, sizeof buf, fmt, ap);
  return ctx_err(ctx, code, "process '%s' failed%s: %s", ctx->c->name, prefix, buf);
}

int theus_ctx_fail(theus_ctx *ctx, const char *fmt, ...) {
  if (!ctx)
    return THEUS_EINVAL;
  va_list ap;
  va_start(ap, fmt);
  int rc = vfail(ctx, THEUS_EPROCESS, "", fmt, ap);
  va_end(ap);
  return rc;
}

int theus_ctx_raise(theus_ctx *ctx, const char *error_name, const char *fmt, ...) {
  if (!ctx)
    return THEUS_EINVAL;
  if (!error_name || !theus__strv_has(ctx->c->errors, error_name))
    return ctx_err(ctx, THEUS_ECONTRACT,
                   "contract violation: process '%s' raised undeclared error '%s'; add it to errors",
                   ctx->c->name, error_name ? error_name : "(null)");
  char prefix[128];
  snprintf(prefix, sizeof prefix, " with %s", error_name);
  va_list ap;
  va_start(ap, fmt);
  int rc = vfail(ctx, THEUS_EPROCESS, prefix, fmt, ap);
  va_end(ap);
  return rc;
}

void *theus_ctx_userdata(theus_ctx *ctx) { return ctx ? ctx->c->userdata : NULL; }

unsigned theus_ctx_attempt(const theus_ctx *ctx) { return ctx && ctx->task ? theus_task_attempt(ctx->task) : 0; }

int theus_ctx_canceled(const theus_ctx *ctx) {
  if (!ctx || !ctx->e) return 0; /* in a worker: a cancel kills the worker instead */
  return (ctx->job_cancel && atomic_load(ctx->job_cancel)) || theus__engine_canceled(ctx->e);
}

const char *theus_ctx_process(theus_ctx *ctx) { return ctx ? ctx->c->name : NULL; }

int theus_ctx_worker(theus_ctx *ctx) { return ctx ? ctx->worker : THEUS_EINVAL; }

/* Every leaf of patch node v (a value, null, or an empty object: what the
 * merge writes) must be covered by a declared output or an ancestor pattern.
 * path holds v's path, NUL-terminated ("domain" then ".key" per level). */
static int outputs_cover(const theus_contract *c, const json_t *v, theus__kbuf *path, char *msg, size_t msglen) {
  if (!json_is_object(v) || !json_object_size(v)) {
    if (theus__strv_covers(c->outputs, path->p))
      return 0;
    snprintf(msg, msglen, "contract violation: process '%s' wrote undeclared output '%s'; nothing committed",
             c->name, path->p);
    return THEUS_ECONTRACT;
  }
  const char *key;
  size_t kl;
  json_t *val;
  json_object_keylen_foreach((json_t *)v, key, kl, val) {
    size_t len = path->n;
    THEUS__KBUF_LIT(path, ".");
    theus__kbuf_add(path, key, kl + 1); /* with its NUL */
    if (path->failed) {
      snprintf(msg, msglen, "process '%s': out of memory listing the paths its patch writes; nothing committed",
               c->name);
      return THEUS_ENOMEM;
    }
    path->n--; /* the NUL stays as the end of the text, not of the content */
    int rc = outputs_cover(c, val, path, msg, msglen);
    path->n = len;
    path->p[len] = '\0';
    if (rc)
      return rc;
  }
  return 0;
}

int theus__check_outputs(const theus_contract *c, const json_t *patch, char *msg, size_t msglen) {
  if (!json_is_object(patch) || !json_object_size(patch))
    return 0;
  theus__kbuf path;
  theus__kbuf_init(&path);
  theus__kbuf_add(&path, "domain", 7);
  path.n--;
  int rc = outputs_cover(c, patch, &path, msg, msglen);
  theus__kbuf_fini(&path);
  return rc;
}
