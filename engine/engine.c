/* Engine lifecycle, registry, state accessors, snapshots, stats. */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine_internal.h"

_Static_assert(THEUS_ENGINE_MAX_WORKERS == THEUS_POOL_MAX_WORKERS,
               "the engine restates the pool's worker limit");

int theus__eset(theus_engine *e, int code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  theus__err_vset(&e->err, code, fmt, ap);
  va_end(ap);
  return code;
}

const char *theus_engine_errmsg(const theus_engine *e) { return e ? theus__err_msg(&e->err) : "engine is NULL"; }

theus_arena *theus_engine_arena(theus_engine *e) { return e && e->opened ? e->arena : NULL; }

void theus_engine_config_init(theus_engine_config *cfg) {
  if (!cfg)
    return;
  memset(cfg, 0, sizeof *cfg);
  cfg->history = 4096;
  cfg->max_retries = 64;
}

/* The worker registry: mapped before the pool forks (see engine_internal.h).
 * MAP_NORESERVE: pages cost memory only once entries are written. */
static int map_registry(theus_engine *e) {
  size_t size = sizeof(theus__registry) + THEUS__REG_MAX * sizeof(theus__regent);
  void *m = NULL;
  if (theus__os_map_anon(size, &m))
    return theus__eset(e, THEUS_ENOMEM, "engine open: mmap of the %zu-byte worker registry failed", size);
  e->reg = m;
  e->reg->cap = THEUS__REG_MAX;
  e->reg->size = size;
  return 0;
}

static int start_pool(theus_engine *e) {
  if (e->cfg.workers < 0)
    return 0;
  int rc = map_registry(e);
  if (rc)
    return rc;
  theus_pool_config pc;
  theus_pool_config_init(&pc);
  if (e->cfg.workers > 0)
    pc.nworkers = (unsigned)e->cfg.workers;
  pc.arena = e->arena;
  pc.task_context = e->reg;
  pc.task_context_size = e->reg->size;
  if (e->cfg.default_timeout_ms)
    pc.default_timeout_ms = e->cfg.default_timeout_ms;
  pc.output = e->cfg.output;
  pc.output_fn = e->cfg.output_fn;
  pc.output_ud = e->cfg.output_ud;
  pc.task_label = theus__task_label;
  rc = theus_pool_open(&pc, &e->pool);
  if (rc) {
    theus__eset(e, rc, "engine open: worker pool: %s", e->pool ? theus_pool_errmsg(e->pool) : "out of memory");
    theus_pool_close(e->pool, 1);
    e->pool = NULL;
  }
  return rc;
}

int theus_engine_open(const theus_engine_config *cfg, theus_engine **out) {
  if (!out)
    return THEUS_EINVAL;
  *out = NULL;
  theus_engine *e = calloc(1, sizeof *e);
  if (!e)
    return THEUS_ENOMEM;
  if (cfg)
    e->cfg = *cfg;
  else
    theus_engine_config_init(&e->cfg);
  if (!e->cfg.history)
    e->cfg.history = 4096;
  e->cfg.domain = NULL;
  e->cfg.arena = NULL;
  e->vfd = -1;
  pthread_mutex_init(&e->state_lock, NULL);
  theus__err_init(&e->err);
  pthread_mutex_init(&e->jobs_lock, NULL);
  pthread_cond_init(&e->jobs_cv, NULL);
  pthread_cond_init(&e->exec_q.cv, NULL);
  pthread_cond_init(&e->reap_q.cv, NULL);
  pthread_cond_init(&e->defer_q.cv, NULL);
  pthread_rwlock_init(&e->reg_lock, NULL);
  int rc = theus_arena_open(cfg ? cfg->arena : NULL, &e->arena);
  if (rc) {
    theus__eset(e, rc, "engine open: arena: %s", e->arena ? theus_arena_errmsg(e->arena) : theus_strerror(rc));
    theus_arena_close(e->arena);
    e->arena = NULL;
    goto fail;
  }
  if (e->cfg.workers < -1 || e->cfg.workers > THEUS_ENGINE_MAX_WORKERS) {
    rc = theus__eset(e, THEUS_EINVAL, "engine open: workers %d must be -1 (no pool), 0 (one per core) or 1..%d "
                     "(THEUS_ENGINE_MAX_WORKERS)", e->cfg.workers, THEUS_ENGINE_MAX_WORKERS);
    goto fail;
  }
  e->cfg.ledger = NULL; /* the path is not kept */
  theus_engine_set_commit_hook(e, e->cfg.on_commit, e->cfg.on_commit_ud);
  if ((rc = theus__state_init(e, cfg ? cfg->domain : NULL)) || (rc = start_pool(e)) ||
      (cfg && cfg->ledger && (rc = theus__ledger_open(e, cfg->ledger))) || (rc = theus__memo_open(e)))
    goto fail;
  e->opened = 1;
  *out = e;
  return 0;
fail:
  *out = e; /* carries the message; the caller closes it */
  return rc;
}

void theus_engine_close(theus_engine *e) {
  if (!e)
    return;
  theus__jobs_fini(e);
  theus_pool_close(e->pool, 1);
  if (e->reg)
    theus__os_unmap(e->reg, e->reg->size);
  theus__ledger_close(e);
  theus__memo_close(e);
  theus__state_fini(e);
  theus_arena_close(e->arena);
  for (size_t i = 0; i < e->nprocs; i++)
    theus_contract_release(e->procs[i]);
  free(e->procs);
  free(e->regidx);
  while (e->reducers) {
    theus__reducer *r = e->reducers;
    e->reducers = r->next;
    free(r);
  }
  pthread_rwlock_destroy(&e->reg_lock);
  pthread_cond_destroy(&e->jobs_cv);
  pthread_cond_destroy(&e->exec_q.cv);
  pthread_cond_destroy(&e->reap_q.cv);
  pthread_cond_destroy(&e->defer_q.cv);
  pthread_mutex_destroy(&e->jobs_lock);
  theus__err_fini(&e->err);
  pthread_mutex_destroy(&e->state_lock);
  free(e);
}

/* ---- registry ------------------------------------------------------------ */

static theus_contract *find_proc_at(theus_engine *e, const char *name, size_t *at) {
  for (size_t i = 0; i < e->nprocs; i++)
    if (!strcmp(e->procs[i]->name, name)) {
      if (at)
        *at = i;
      return e->procs[i];
    }
  return NULL;
}

static theus_contract *find_proc(theus_engine *e, const char *name) { return find_proc_at(e, name, NULL); }

const theus_contract *theus__proc_find(theus_engine *e, const char *name, int32_t *regidx) {
  size_t at = 0;
  pthread_rwlock_rdlock(&e->reg_lock);
  const theus_contract *c = name ? find_proc_at(e, name, &at) : NULL;
  *regidx = c ? e->regidx[at] : -1;
  pthread_rwlock_unlock(&e->reg_lock);
  return c;
}

/* Copies a string vector into the entry's blob and pointer table. */
static void reg_strv(theus__regent *r, const char *const *v, size_t *ns, size_t *nb) {
  for (size_t i = 0; v && v[i]; i++) {
    size_t l = strlen(v[i]) + 1;
    memcpy(r->blob + *nb, v[i], l);
    r->strv[(*ns)++] = r->blob + *nb;
    *nb += l;
  }
  r->strv[(*ns)++] = NULL;
}

static size_t strv_count(const char *const *v, size_t *bytes) {
  size_t n = 0;
  for (; v && v[n]; n++)
    *bytes += strlen(v[n]) + 1;
  return n;
}

/* Checks the registry limits for c (before anything is changed). */
static int reg_fits(theus_engine *e, const theus_contract *c) {
  size_t bytes = strlen(c->name) + 1;
  size_t n = strv_count(c->inputs, &bytes) + strv_count(c->outputs, &bytes) + strv_count(c->errors, &bytes);
  if (n > THEUS__REG_STRINGS || bytes > THEUS__REG_BLOB)
    return theus__eset(e, THEUS_ELIMIT, "register: contract '%s': a parallel process travels to the workers with at "
                       "most %u inputs+outputs+errors of %u bytes in all (name included); this one has %zu of %zu "
                       "bytes: use wildcard patterns or shorter paths", c->name, THEUS__REG_STRINGS,
                       THEUS__REG_BLOB, n, bytes);
  if (atomic_load_explicit(&e->reg->count, memory_order_relaxed) >= e->reg->cap)
    return theus__eset(e, THEUS_ELIMIT, "register: contract '%s': the engine already has %u parallel processes, the "
                       "limit of its worker registry", c->name, e->reg->cap);
  return 0;
}

/* Appends c to the worker registry (under the write lock: one appender). */
static int32_t reg_append(theus_engine *e, const theus_contract *c) {
  uint32_t i = atomic_load_explicit(&e->reg->count, memory_order_relaxed);
  theus__regent *r = &e->reg->ent[i];
  size_t ns = 0, nb = strlen(c->name) + 1;
  memset(&r->c, 0, sizeof r->c);
  memcpy(r->blob, c->name, nb);
  r->c.name = r->blob;
  r->c.fn = c->fn;
  r->c.userdata = c->userdata;
  r->c.parallel = 1;
  r->c.semantic = c->semantic;
  r->c.timeout_ms = c->timeout_ms;
  r->c.inputs = &r->strv[ns];
  reg_strv(r, c->inputs, &ns, &nb);
  r->c.outputs = &r->strv[ns];
  reg_strv(r, c->outputs, &ns, &nb);
  r->c.errors = &r->strv[ns];
  reg_strv(r, c->errors, &ns, &nb);
  r->has_domain_inputs = 0;
  for (size_t k = 0; c->inputs && c->inputs[k]; k++)
    if (!strncmp(c->inputs[k], "domain.", 7))
      r->has_domain_inputs = 1;
  theus__ship_prepare(r);
  atomic_store_explicit(&e->reg->count, i + 1, memory_order_release);
  return (int32_t)i;
}

int theus_engine_register(theus_engine *e, const theus_contract *c) {
  THEUS__ENGINE_ARG(e, "register");
  char why[512];
  int rc = theus_contract_check(c, why, sizeof why);
  if (rc)
    return theus__eset(e, rc, "register: %s", why);
  /* A worker is a fork of the image at engine open: code loaded later (a
   * plugin dlopen()ed after theus_engine_open) is not mapped there. */
  if (c->parallel && e->pool && !theus_pool_has_function(e->pool, (theus_task_fn)(void (*)(void))c->fn))
    return theus__eset(e, THEUS_EINVAL, "register: contract '%s': fn: the function is not in the program image the "
                       "workers were forked from; load the plugin that defines it before theus_engine_open",
                       c->name);
  theus_contract *d = theus_contract_copy(c);
  if (!d)
    return theus__eset(e, THEUS_ENOMEM, "register '%s': out of memory", c->name);
  int remote = c->parallel && e->pool;
  pthread_rwlock_wrlock(&e->reg_lock);
  if (find_proc(e, c->name)) {
    rc = theus__eset(e, THEUS_EEXIST, "register: contract '%s': name: a process with this name is already "
                                      "registered; choose another name", c->name);
  } else if (e->nprocs == e->capprocs) {
    size_t nc = e->capprocs ? e->capprocs * 2 : 16;
    theus_contract **np = realloc(e->procs, nc * sizeof *np);
    if (np)
      e->procs = np;
    int32_t *ni = np ? realloc(e->regidx, nc * sizeof *ni) : NULL;
    if (!ni)
      rc = theus__eset(e, THEUS_ENOMEM, "register '%s': out of memory", c->name);
    else {
      e->regidx = ni;
      e->capprocs = nc;
    }
  }
  if (!rc && remote)
    rc = reg_fits(e, c);
  if (!rc) {
    e->regidx[e->nprocs] = remote ? reg_append(e, c) : -1;
    e->procs[e->nprocs++] = d;
  }
  pthread_rwlock_unlock(&e->reg_lock);
  if (rc)
    theus_contract_release(d);
  return rc;
}

int theus_engine_register_json(theus_engine *e, const char *text, const char *source, theus_fn_resolver resolver,
                               void *ud) {
  THEUS__ENGINE_ARG(e, "register_json");
  if (!text)
    return theus__eset(e, THEUS_EINVAL, "register_json: text is NULL");
  theus_contract_doc *d = NULL;
  int rc = theus_contract_parse(text, source, resolver, ud, &d);
  if (rc) {
    rc = theus__eset(e, rc, "register: %s", theus_contract_doc_errmsg(d));
    theus_contract_doc_release(d);
    return rc;
  }
  rc = theus_engine_register(e, theus_contract_doc_get(d));
  theus_contract_doc_release(d);
  return rc;
}

const theus_contract *theus_engine_contract(theus_engine *e, const char *name) {
  if (!e || !e->opened || !name)
    return NULL;
  pthread_rwlock_rdlock(&e->reg_lock);
  const theus_contract *c = name ? find_proc(e, name) : NULL;
  pthread_rwlock_unlock(&e->reg_lock);
  return c;
}

const char *theus_engine_process_near(theus_engine *e, const char *name) {
  if (!e || !e->opened || !name)
    return NULL;
  const char *near = NULL;
  size_t best = SIZE_MAX;
  pthread_rwlock_rdlock(&e->reg_lock);
  for (size_t i = 0; i < e->nprocs; i++)
    if (theus__near(name, e->procs[i]->name, &best))
      near = e->procs[i]->name;
  pthread_rwlock_unlock(&e->reg_lock);
  return near;
}

int theus_engine_register_reducer(theus_engine *e, const char *name, theus_reducer_fn fn, void *ud) {
  THEUS__ENGINE_ARG(e, "register_reducer");
  if (!name || !*name || !fn)
    return theus__eset(e, THEUS_EINVAL, "register_reducer: name and fn are required");
  theus__reducer *r = malloc(sizeof *r + strlen(name) + 1);
  if (!r)
    return theus__eset(e, THEUS_ENOMEM, "register_reducer '%s': out of memory", name);
  r->fn = fn;
  r->ud = ud;
  strcpy(r->name, name);
  pthread_rwlock_wrlock(&e->reg_lock);
  r->next = e->reducers;
  e->reducers = r;
  pthread_rwlock_unlock(&e->reg_lock);
  return 0;
}

/* ---- state accessors --------------------------------------------------- */

uint64_t theus_engine_version(theus_engine *e) {
  if (!e || !e->opened)
    return 0;
  return atomic_load_explicit(&e->vword->version, memory_order_acquire);
}

static int domain_path_ok(theus_engine *e, const char *what, const char *path) {
  char why[300];
  if (theus_path_check(path, why, sizeof why))
    return theus__eset(e, THEUS_EINVAL, "%s: %s", what, why);
  if (strncmp(path, "domain.", 7) || strchr(path, '*'))
    return theus__eset(e, THEUS_EINVAL, "%s: '%s' must be a domain path without '*'", what, path);
  return 0;
}

json_t *theus_engine_get(theus_engine *e, const char *path) {
  if (!e || !e->opened)
    return NULL;
  if (!path) {
    theus__eset(e, THEUS_EINVAL, "get: path is NULL");
    return NULL;
  }
  if (domain_path_ok(e, "get", path))
    return NULL;
  theus_snapshot *s = theus__snap_get(e);
  json_t *v = json_incref((json_t *)theus__json_at(s->domain, path));
  theus__snap_put(s);
  if (!v)
    theus__eset(e, THEUS_ENOTFOUND, "get: no value at '%s'", path);
  return v;
}

int theus__patch_put(json_t *patch, const char *path, json_t *value) {
  json_t *obj = patch;
  const char *p = strchr(path, '.') + 1;
  for (const char *end; (end = strchr(p, '.')); p = end + 1) {
    json_t *sub = json_object_getn(obj, p, (size_t)(end - p));
    if (!json_is_object(sub)) {
      sub = json_object();
      if (!sub || json_object_setn_new(obj, p, (size_t)(end - p), sub)) {
        json_decref(value);
        return THEUS_ENOMEM;
      }
    }
    obj = sub;
  }
  return json_object_set_new(obj, p, value ? value : json_null()) ? THEUS_ENOMEM : 0;
}

int theus_engine_set(theus_engine *e, const char *path, json_t *value) {
  if (!e || !e->opened || !path || !value) {
    json_decref(value); /* stolen, as on every other failure */
    /* NULL is what a json_* constructor returns when memory ran out: taking it
     * for null would commit a deletion */
    if (e && e->opened && path)
      return theus__eset(e, THEUS_EINVAL, "set '%s': value is NULL (did a json_* constructor run out of memory?); "
                         "pass json_null() to delete", path);
    if (e && e->opened)
      return theus__eset(e, THEUS_EINVAL, "set: path is NULL");
    THEUS__ENGINE_ARG(e, "set");
  }
  int rc = domain_path_ok(e, "set", path);
  json_t *patch = json_object();
  if (rc || !patch || (rc = theus__patch_put(patch, path, value))) {
    if (!patch || rc == THEUS_EINVAL)
      json_decref(value);
    json_decref(patch);
    return rc ? rc : THEUS_ENOMEM;
  }
  char msg[512];
  for (unsigned i = 0; i <= e->cfg.max_retries; i++) {
    uint64_t v = theus_engine_version(e);
    theus__commit_info ci = {.op = "set", .read_version = v, .worker = -1, .attempt = i};
    rc = theus__cas(e, v, patch, NULL, &ci, NULL, msg, sizeof msg);
    if (rc != THEUS_ECONFLICT)
      break;
  }
  json_decref(patch);
  return rc ? theus__eset(e, rc, "set '%s': %s", path, msg) : 0;
}

int theus_engine_cas(theus_engine *e, uint64_t expected_version, const json_t *domain_patch,
                     const json_t *heavy_patch, uint64_t *new_version) {
  THEUS__ENGINE_ARG(e, "cas");
  if ((domain_patch && !json_is_object(domain_patch)) || (heavy_patch && !json_is_object(heavy_patch)))
    return theus__eset(e, THEUS_EINVAL, "cas: the %s patch must be a JSON object (or NULL)",
                       domain_patch && !json_is_object(domain_patch) ? "domain" : "heavy");
  char msg[768] = "";
  theus__commit_info ci = {.op = "cas", .read_version = expected_version, .worker = -1};
  int rc = theus__cas(e, expected_version, domain_patch, heavy_patch, &ci, new_version, msg, sizeof msg);
  return rc ? theus__eset(e, rc, "%s", msg) : 0;
}

int theus_engine_heavy_alloc(theus_engine *e, const char *key, theus_dtype dtype, unsigned ndim,
                             const uint64_t *shape, void **data) {
  THEUS__ENGINE_ARG(e, "heavy_alloc");
  if (!key || !shape || !data)
    return theus__eset(e, THEUS_EINVAL, "heavy_alloc: %s is NULL", !key ? "key" : !shape ? "shape" : "data");
  char msg[512];
  int rc = theus__draft_new(e, key, dtype, ndim, shape, data, NULL, msg, sizeof msg);
  return rc ? theus__eset(e, rc, "%s", msg) : 0;
}

int theus_engine_heavy_discard(theus_engine *e, const char *key) {
  THEUS__ENGINE_ARG(e, "heavy_discard");
  if (!key)
    return theus__eset(e, THEUS_EINVAL, "heavy_discard: key is NULL");
  int rc = key ? theus__draft_drop(e, key) : THEUS_ENOTFOUND;
  return rc ? theus__eset(e, rc, "heavy_discard: no draft for key '%s'", key ? key : "(null)") : 0;
}

/* ---- snapshots ----------------------------------------------------------- */

int theus_engine_snapshot(theus_engine *e, theus_snapshot **out) {
  THEUS__ENGINE_ARG(e, "snapshot");
  if (!out)
    return theus__eset(e, THEUS_EINVAL, "snapshot: out is NULL");
  *out = theus__snap_get(e);
  return 0;
}

uint64_t theus_snapshot_version(const theus_snapshot *s) { return s ? s->version : 0; }

const json_t *theus_snapshot_domain(const theus_snapshot *s) { return s ? s->domain : NULL; }

const json_t *theus_snapshot_get(const theus_snapshot *s, const char *path) {
  return s && path && !strncmp(path, "domain.", 7) ? theus__json_at(s->domain, path) : NULL;
}

int theus_snapshot_heavy(const theus_snapshot *s, const char *key, theus_array_info *out) {
  if (!s || !key || !out)
    return THEUS_EINVAL;
  const theus__hbind *b = key ? theus__snap_find(s, key) : NULL;
  if (!b)
    return THEUS_ENOTFOUND;
  return theus_array_info_get(b->arr->arena, b->arr->handle, out);
}

void theus_snapshot_release(theus_snapshot *s) {
  if (s)
    theus__snap_put(s);
}

/* ---- version waits ------------------------------------------------------- */

int theus_engine_wait_version(theus_engine *e, uint64_t seen, int64_t timeout_ms, uint64_t *now) {
  THEUS__ENGINE_ARG(e, "wait_version");
  return theus__vword_wait(e->vword, 1, seen, timeout_ms, now);
}

int theus_engine_version_fd(const theus_engine *e) { return e && e->opened ? e->vfd : THEUS_EINVAL; }

struct theus_version_watch {
  theus__vword *w;
  int writable; /* mapped writable: its waits are announced (else they poll each ms) */
};

int theus_version_watch_open(int fd, theus_version_watch **out) {
  if (!out)
    return THEUS_EINVAL;
  *out = NULL;
  uint64_t size = 0;
  if (fd < 0 || theus__os_fd_size(fd, &size) || size < theus__os_page_size())
    return THEUS_EINVAL; /* not a version word: mapping it could fault on read */
  theus_version_watch *w = malloc(sizeof *w);
  if (!w)
    return THEUS_ENOMEM;
  void *m = NULL;
  w->writable = 1; /* to count its waits in the word; a read-only descriptor maps read-only */
  int rc = theus__os_map(fd, theus__os_page_size(), 1, &m);
  if (rc && (w->writable = 0, rc = theus__os_map(fd, theus__os_page_size(), 0, &m))) {
    free(w);
    return rc;
  }
  w->w = m;
  *out = w;
  return 0;
}

uint64_t theus_version_watch_current(const theus_version_watch *w) {
  if (!w)
    return 0;
  return atomic_load_explicit(&w->w->version, memory_order_acquire);
}

int theus_version_watch_wait(const theus_version_watch *w, uint64_t seen, int64_t timeout_ms, uint64_t *now) {
  if (!w)
    return THEUS_EINVAL;
  return theus__vword_wait(w->w, w->writable, seen, timeout_ms, now);
}

void theus_version_watch_close(theus_version_watch *w) {
  if (!w)
    return;
  theus__os_unmap((void *)w->w, theus__os_page_size());
  free(w);
}

/* ---- observability ------------------------------------------------------- */

static json_t *pool_stats_json(theus_engine *e) {
  if (!e->pool)
    return json_null();
  theus_pool_stats *ps = malloc(sizeof *ps);
  if (!ps || theus_pool_stats_get(e->pool, ps)) {
    free(ps);
    return json_null();
  }
  json_t *w = json_array();
  for (unsigned i = 0; i < ps->nworkers; i++)
    json_array_append_new(w, json_pack("{s:i, s:I, s:I, s:I}", "pid", ps->workers[i].pid, "tasks",
                                       (json_int_t)ps->workers[i].tasks, "busy_ns",
                                       (json_int_t)ps->workers[i].busy_ns, "respawns",
                                       (json_int_t)ps->workers[i].respawns));
  json_t *j = json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:i, s:o}", "submitted",
                        (json_int_t)ps->submitted, "retried", (json_int_t)ps->retried, "poisoned",
                        (json_int_t)ps->poisoned,
                        "completed", (json_int_t)ps->completed, "failed", (json_int_t)ps->failed, "crashed",
                        (json_int_t)ps->crashed, "timed_out", (json_int_t)ps->timed_out, "canceled",
                        (json_int_t)ps->canceled, "respawned", (json_int_t)ps->respawned, "workers",
                        (int)ps->nworkers, "per_worker", w);
  free(ps);
  return j;
}

json_t *theus_engine_stats(theus_engine *e) {
  if (!e || !e->opened)
    return NULL;
  theus_arena_stats as = {0};
  theus_arena_stats_get(e->arena, &as);
  pthread_mutex_lock(&e->state_lock);
  json_int_t nheavy = (json_int_t)e->cur->nheavy;
  json_int_t ndrafts = 0;
  for (theus__draft *d = e->drafts; d; d = d->next)
    ndrafts++;
  pthread_mutex_unlock(&e->state_lock);
  pthread_rwlock_rdlock(&e->reg_lock);
  json_int_t nprocs = (json_int_t)e->nprocs;
  pthread_rwlock_unlock(&e->reg_lock);
#define LD(x) (json_int_t) atomic_load_explicit(&e->x, memory_order_relaxed)
  json_t *eng = json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:s}", "version",
                          (json_int_t)theus_engine_version(e), "processes", nprocs, "heavy_keys", nheavy, "drafts",
                          ndrafts, "executions", LD(n_exec), "failures", LD(n_fail), "commits", LD(n_commit),
                          "conflicts", LD(n_conflict), "retries", LD(n_retry), "cas_calls", LD(n_cas), "mode",
                          e->cfg.strict ? "strict" : "smart");
#undef LD
  json_t *ar = json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "active_handles",
                         (json_int_t)as.active_handles, "bytes_live", (json_int_t)as.bytes_live, "peak_bytes",
                         (json_int_t)as.peak_bytes, "alloc_count", (json_int_t)as.alloc_count, "free_count",
                         (json_int_t)as.free_count, "errors", (json_int_t)as.errors, "soft_limit_hits",
                         (json_int_t)as.soft_limit_hits, "hard_limit_hits", (json_int_t)as.hard_limit_hits);
  return json_pack("{s:o, s:o, s:o, s:o}", "engine", eng, "arena", ar, "pool", pool_stats_json(e), "memo",
                   theus__memo_stats(e));
}

void theus_engine_set_trace(theus_engine *e, theus_trace_fn fn, void *ud) {
  if (!e)
    return;
  atomic_store(&e->trace_ud, ud);
  atomic_store(&e->trace, fn);
}
