/* Versioned state: immutable versions, heavy array lifetimes, CAS, drafts,
 * and the shared version word other processes wait on. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base.h"
#include "engine_internal.h"

#define msgf theus__errf

/* ---- arrays and versions ------------------------------------------------ */

static void harr_put(theus__harr *a) {
  if (a && atomic_fetch_sub_explicit(&a->refs, 1, memory_order_acq_rel) == 1) {
    theus_arena_free(a->arena, a->handle);
    free(a);
  }
}

theus_snapshot *theus__snap_get(theus_engine *e) {
  pthread_mutex_lock(&e->state_lock);
  theus_snapshot *s = e->cur;
  atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
  pthread_mutex_unlock(&e->state_lock);
  return s;
}

void theus__snap_put(theus_snapshot *s) {
  if (!s || atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) != 1)
    return;
  for (size_t i = 0; i < s->nheavy; i++)
    harr_put(s->heavy[i].arr);
  free(s->heavy);
  json_decref(s->domain);
  free(s);
}

const theus__hbind *theus__snap_find(const theus_snapshot *s, const char *key) {
  for (size_t i = 0; i < s->nheavy; i++)
    if (!strcmp(s->heavy[i].key, key))
      return &s->heavy[i];
  return NULL;
}

/* "domain.a.b" -> the value, walking objects; NULL if absent. */
const json_t *theus__json_at(const json_t *root, const char *path) {
  const char *p = strchr(path, '.');
  const json_t *v = root;
  while (p && v) {
    p++;
    const char *end = strchr(p, '.');
    size_t n = end ? (size_t)(end - p) : strlen(p);
    v = json_is_object(v) ? json_object_getn(v, p, n) : NULL;
    p = end;
  }
  return v;
}

const json_t *theus__json_at_pattern(const json_t *root, const char *pattern) {
  const char *star = strstr(pattern, ".*");
  if (!star)
    return theus__json_at(root, pattern);
  char path[512];
  snprintf(path, sizeof path, "%.*s", (int)(star - pattern), pattern);
  return theus__json_at(root, path);
}

/* ---- version word ------------------------------------------------------- */

/* A commit makes no system call unless someone waits: the publisher stores
 * seq then reads waiters, a waiter counts itself in waiters then reads seq
 * (both sequentially consistent), so one of them sees the other; the futex
 * then queues the waiter only if seq is still what it saw. */
static void vword_publish(theus_engine *e, uint64_t v) {
  atomic_store_explicit(&e->vword->version, v, memory_order_release);
  atomic_store_explicit(&e->vword->seq, (uint32_t)v, memory_order_seq_cst);
  if (atomic_load_explicit(&e->vword->waiters, memory_order_seq_cst))
    theus__futex_wake(&e->vword->seq);
}

int theus__vword_wait(theus__vword *w, int announce, uint64_t seen, int64_t timeout_ms, uint64_t *now) {
  uint64_t deadline = theus__deadline_ns(theus__now_ns(), timeout_ms);
  for (;;) {
    uint32_t seq = atomic_load_explicit(&w->seq, memory_order_acquire);
    uint64_t v = atomic_load_explicit(&w->version, memory_order_acquire);
    if (v != seen || seq != (uint32_t)seen) {
      if (now)
        *now = atomic_load_explicit(&w->version, memory_order_acquire);
      return 0;
    }
    int64_t left = -1; /* no limit */
    if (deadline != UINT64_MAX) {
      uint64_t t = theus__now_ns();
      if (t >= deadline) {
        if (now)
          *now = v;
        return THEUS_ETIMEDOUT;
      }
      left = deadline - t > INT64_MAX ? INT64_MAX : (int64_t)(deadline - t);
    }
    if (!announce) { /* nobody will wake us: look again every millisecond */
      theus__futex_wait(&w->seq, (uint32_t)seen, left >= 0 && left < 1000000 ? left : 1000000);
      continue;
    }
    atomic_fetch_add_explicit(&w->waiters, 1, memory_order_seq_cst);
    if (atomic_load_explicit(&w->seq, memory_order_seq_cst) == (uint32_t)seen)
      theus__futex_wait(&w->seq, (uint32_t)seen, left);
    atomic_fetch_sub_explicit(&w->waiters, 1, memory_order_seq_cst);
  }
}

/* ---- init / fini -------------------------------------------------------- */

int theus__state_init(theus_engine *e, const json_t *domain) {
  int rc = theus__os_memfd("theus-version", theus__os_page_size(), &e->vfd);
  if (rc)
    return theus__eset(e, rc, "engine open: memfd for the version word failed: %s", strerror(errno));
  if ((rc = theus__os_map(e->vfd, theus__os_page_size(), 1, (void **)&e->vword)))
    return theus__eset(e, rc, "engine open: mapping the version word failed: %s", strerror(errno));
  if (domain && !json_is_object(domain))
    return theus__eset(e, THEUS_EINVAL, "engine open: config.domain must be a JSON object");
  e->hist = calloc(e->cfg.history, sizeof *e->hist);
  e->retained = e->cfg.retention ? calloc(e->cfg.retention, sizeof *e->retained) : NULL;
  e->cur = calloc(1, sizeof *e->cur);
  if (e->cur) {
    /* before any failure return: theus__state_fini frees it by this reference */
    atomic_init(&e->cur->refs, 1);
    e->cur->version = 1;
  }
  if (!e->hist || !e->cur || (e->cfg.retention && !e->retained))
    return theus__eset(e, THEUS_ENOMEM, "engine open: out of memory");
  e->cur->domain = domain ? json_deep_copy(domain) : json_object();
  if (!e->cur->domain)
    return theus__eset(e, THEUS_ENOMEM, "engine open: out of memory copying the domain");
  vword_publish(e, 1);
  return 0;
}

static void hist_clear(theus__hist *h) {
  for (size_t i = 0; i < h->n; i++)
    free(h->paths[i]);
  free(h->paths);
  memset(h, 0, sizeof *h);
}

void theus__state_fini(theus_engine *e) {
  theus__snap_put(e->cur);
  for (unsigned i = 0; e->retained && i < e->cfg.retention; i++)
    theus__snap_put(e->retained[i]);
  free(e->retained);
  for (unsigned i = 0; e->hist && i < e->cfg.history; i++)
    hist_clear(&e->hist[i]);
  free(e->hist);
  while (e->drafts) {
    theus__draft *d = e->drafts;
    e->drafts = d->next;
    harr_put(d->arr);
    free(d);
  }
  theus__live_fini(e);
  theus__os_unmap(e->vword, theus__os_page_size());
  if (e->vfd >= 0)
    close(e->vfd);
}

/* ---- drafts ------------------------------------------------------------- */

static theus__draft **draft_find(theus_engine *e, const char *key) {
  theus__draft **pp = &e->drafts;
  while (*pp && strcmp((*pp)->arr->key, key))
    pp = &(*pp)->next;
  return pp;
}

/* Adds a draft for key: a new array (adopt 0) or an allocation the caller
 * made (adopt != 0, e.g. a live region). *arr (optional) gets the draft. */
static int draft_add(theus_engine *e, const char *key, theus_handle adopt, theus_dtype dtype, unsigned ndim,
                     const uint64_t *shape, void **data, theus__harr **arr, char *msg, size_t msglen) {
  char why[256];
  char path[300];
  snprintf(path, sizeof path, "heavy.%s", key ? key : "");
  if (!key || theus_path_check(path, why, sizeof why) || strchr(key, '*'))
    return msgf(msg, msglen, THEUS_EINVAL, "heavy_alloc: bad key '%s': use [A-Za-z_][A-Za-z0-9_-]*",
                key ? key : "(null)");
  size_t kl = strlen(key);
  theus__draft *d = malloc(sizeof *d);
  theus__harr *a = malloc(sizeof *a + kl + 1);
  if (!d || !a) {
    free(d);
    free(a);
    return msgf(msg, msglen, THEUS_ENOMEM, "heavy_alloc '%s': out of memory", key);
  }
  atomic_init(&a->refs, 1);
  atomic_init(&a->hash, 0);
  a->live = adopt != 0; /* an adopted allocation is a live region's */
  a->arena = e->arena;
  memcpy(a->key, key, kl + 1);
  pthread_mutex_lock(&e->state_lock);
  int rc = 0;
  if (*draft_find(e, key)) {
    rc = msgf(msg, msglen, THEUS_EEXIST,
              "heavy_alloc: collision on key '%s': another draft for it is being published; "
              "publish it (cas with {\"%s\": true}) or discard it first",
              key, key);
  } else if (!adopt && (rc = theus_array_alloc(e->arena, dtype, ndim, shape, &a->handle, data)) != 0) {
    msgf(msg, msglen, rc, "heavy_alloc '%s': %s", key, theus_arena_errmsg(e->arena));
  } else {
    if (adopt)
      a->handle = adopt;
    d->arr = a;
    d->next = e->drafts;
    e->drafts = d;
    if (arr)
      *arr = a;
  }
  pthread_mutex_unlock(&e->state_lock);
  if (rc) {
    free(d);
    free(a);
  }
  return rc;
}

int theus__draft_new(theus_engine *e, const char *key, theus_dtype dtype, unsigned ndim, const uint64_t *shape,
                     void **data, theus_handle *handle, char *msg, size_t msglen) {
  theus__harr *a = NULL;
  int rc = draft_add(e, key, 0, dtype, ndim, shape, data, &a, msg, msglen);
  if (!rc && handle)
    *handle = a->handle;
  return rc;
}

int theus__draft_drop(theus_engine *e, const char *key) {
  pthread_mutex_lock(&e->state_lock);
  theus__draft **pp = draft_find(e, key), *d = *pp;
  if (d)
    *pp = d->next;
  pthread_mutex_unlock(&e->state_lock);
  if (!d)
    return THEUS_ENOTFOUND;
  harr_put(d->arr);
  free(d);
  return 0;
}

/* ---- CAS ---------------------------------------------------------------- */

typedef struct cas_op {
  uint64_t expected;
  const json_t *dpatch, *hpatch;
  char **paths;
  size_t n, cap;
  char *msg;
  size_t msglen;
} cas_op;

static int cas_prepare(cas_op *op) {
  if (op->dpatch && !json_is_object(op->dpatch))
    return msgf(op->msg, op->msglen, THEUS_EINVAL, "cas: the domain patch must be a JSON object (RFC 7386)");
  if (op->hpatch && !json_is_object(op->hpatch))
    return msgf(op->msg, op->msglen, THEUS_EINVAL, "cas: the heavy patch must be an object {key: true|null}");
  if (op->dpatch && json_object_size(op->dpatch) &&
      theus_merge_patch_paths(op->dpatch, "domain", &op->paths, &op->n, &op->cap))
    return msgf(op->msg, op->msglen, THEUS_ENOMEM,
                "cas: out of memory listing the paths the domain patch writes; nothing was committed");
  const char *key;
  json_t *v;
  json_object_foreach((json_t *)op->hpatch, key, v) {
    if (!json_is_true(v) && !json_is_null(v))
      return msgf(op->msg, op->msglen, THEUS_EINVAL,
                  "cas: heavy patch key '%s' must map to true (publish its draft) or null (remove)", key);
    char *p = malloc(strlen(key) + 7);
    char **np = p && op->n == op->cap ? realloc(op->paths, (op->cap * 2 + 4) * sizeof *np) : op->paths;
    if (!p || !np) {
      free(p);
      return msgf(op->msg, op->msglen, THEUS_ENOMEM,
                  "cas: out of memory listing heavy key '%s' of the patch; nothing was committed", key);
    }
    if (op->n == op->cap)
      op->cap = op->cap * 2 + 4;
    sprintf(p, "heavy.%s", key);
    op->paths = np;
    op->paths[op->n++] = p;
  }
  return 0;
}

/* Under state_lock: does anything written after op->expected overlap op's paths? */
static int cas_conflicts(theus_engine *e, cas_op *op) {
  uint64_t cur = e->cur->version;
  if (op->expected > cur)
    return msgf(op->msg, op->msglen, THEUS_EINVAL, "cas: expected version %llu is newer than current %llu",
                (unsigned long long)op->expected, (unsigned long long)cur);
  if (op->expected == cur)
    return 0;
  if (cur - op->expected > e->cfg.history)
    return msgf(op->msg, op->msglen, THEUS_ECONFLICT,
                "version conflict: expected version %llu, current %llu: older than the %u versions of "
                "history kept (config.history); re-read and retry",
                (unsigned long long)op->expected, (unsigned long long)cur, e->cfg.history);
  for (uint64_t v = op->expected + 1; v <= cur; v++) {
    const theus__hist *h = &e->hist[v % e->cfg.history];
    for (size_t i = 0; i < h->n; i++) {
      if (e->cfg.strict)
        return msgf(op->msg, op->msglen, THEUS_ECONFLICT,
                    "version conflict (strict): expected version %llu, current %llu; first path changed "
                    "since: '%s' (version %llu)",
                    (unsigned long long)op->expected, (unsigned long long)cur, h->paths[i], (unsigned long long)v);
      for (size_t j = 0; j < op->n; j++)
        if (theus_path_overlaps(h->paths[i], op->paths[j]))
          return msgf(op->msg, op->msglen, THEUS_ECONFLICT,
                      "version conflict on '%s': expected version %llu, current %llu; '%s' was written at "
                      "version %llu",
                      op->paths[j], (unsigned long long)op->expected, (unsigned long long)cur, h->paths[i],
                      (unsigned long long)v);
    }
    if (e->cfg.strict)
      return msgf(op->msg, op->msglen, THEUS_ECONFLICT,
                  "version conflict (strict): expected version %llu, current %llu",
                  (unsigned long long)op->expected, (unsigned long long)cur);
  }
  return 0;
}

/* Under state_lock: builds the next version (nothing published yet). */
static int cas_build(theus_engine *e, cas_op *op, theus_snapshot **out) {
  theus_snapshot *cur = e->cur;
  size_t nadd = 0;
  const char *key;
  json_t *v;
  json_object_foreach((json_t *)op->hpatch, key, v) {
    if (!json_is_true(v))
      continue;
    if (!*draft_find(e, key))
      return msgf(op->msg, op->msglen, THEUS_ENOTFOUND,
                  "cas: no draft for heavy key '%s'; allocate it with theus_engine_heavy_alloc first", key);
    nadd++;
  }
  theus_snapshot *s = calloc(1, sizeof *s);
  if (!s)
    return msgf(op->msg, op->msglen, THEUS_ENOMEM, "cas: out of memory building version %llu",
                (unsigned long long)cur->version + 1);
  s->heavy = calloc(cur->nheavy + nadd + 1, sizeof *s->heavy);
  s->domain = op->dpatch && json_object_size(op->dpatch) ? theus_merge_patch(cur->domain, op->dpatch)
                                                          : json_incref(cur->domain);
  if (!s->heavy || !s->domain) {
    free(s->heavy);
    json_decref(s->domain);
    free(s);
    return msgf(op->msg, op->msglen, THEUS_ENOMEM, "cas: out of memory building version %llu",
                (unsigned long long)cur->version + 1);
  }
  atomic_init(&s->refs, 1);
  s->version = cur->version + 1;
  for (size_t i = 0; i < cur->nheavy; i++) {
    if (op->hpatch && json_object_get(op->hpatch, cur->heavy[i].key))
      continue;
    s->heavy[s->nheavy] = cur->heavy[i];
    atomic_fetch_add_explicit(&cur->heavy[i].arr->refs, 1, memory_order_relaxed);
    s->nheavy++;
  }
  json_object_foreach((json_t *)op->hpatch, key, v) {
    if (!json_is_true(v))
      continue;
    theus__draft **pp = draft_find(e, key), *d = *pp;
    *pp = d->next; /* the draft's reference moves to the version */
    s->heavy[s->nheavy].arr = d->arr;
    s->heavy[s->nheavy].key = d->arr->key;
    s->nheavy++;
    free(d);
  }
  *out = s;
  return 0;
}

/* Under state_lock: makes s current and records its written paths. */
static void cas_publish(theus_engine *e, cas_op *op, theus_snapshot *s) {
  theus__hist *h = &e->hist[s->version % e->cfg.history];
  hist_clear(h);
  h->version = s->version;
  h->paths = op->paths;
  h->n = op->n;
  op->paths = NULL;
  op->n = op->cap = 0;
  theus_snapshot *old = e->cur;
  e->cur = s;
  if (e->cfg.retention) {
    theus_snapshot **slot = &e->retained[old->version % e->cfg.retention];
    theus__snap_put(*slot);
    *slot = old;
  } else {
    theus__snap_put(old);
  }
  vword_publish(e, s->version);
}

/* After version v was published with a ledger file: THEUS_ESYS if the
 * ledger failed while taking its line (the line could not be formatted, or
 * the write or fdatasync it triggered failed). The version stays (others may
 * have read it): the caller must know its line may be missing. */
static int cas_not_recorded(theus_engine *e, uint64_t v, char *msg, size_t msglen) {
  char why[640];
  if (!theus__ledger_check(e, why, sizeof why))
    return 0;
  atomic_fetch_add_explicit(&e->n_commit, 1, memory_order_relaxed);
  if (msg && msglen)
    snprintf(msg, msglen, "version %llu is committed but its ledger line may be lost: %s",
             (unsigned long long)v, why);
  return THEUS_ESYS;
}

int theus__cas(theus_engine *e, uint64_t expected, const json_t *domain_patch, const json_t *heavy_patch,
               const theus__commit_info *ci, uint64_t *new_version, char *msg, size_t msglen) {
  cas_op op = {expected, domain_patch, heavy_patch, NULL, 0, 0, msg, msglen};
  if (msg && msglen)
    msg[0] = '\0';
  atomic_fetch_add_explicit(&e->n_cas, 1, memory_order_relaxed);
  int rc = cas_prepare(&op);
  theus_snapshot *s = NULL;
  if (!rc) {
    pthread_mutex_lock(&e->state_lock);
    rc = e->ledger ? theus__ledger_check(e, msg, msglen) : 0;
    if (!rc)
      rc = cas_conflicts(e, &op);
    if (!rc)
      rc = cas_build(e, &op, &s);
    if (!rc) {
      cas_publish(e, &op, s);
      if (theus__ledger_on(e))
        theus__ledger_commit(e, ci, s, domain_patch, heavy_patch);
      if (new_version)
        *new_version = s->version;
      if (e->ledger)
        rc = cas_not_recorded(e, s->version, msg, msglen);
    }
    pthread_mutex_unlock(&e->state_lock);
  }
  if (rc == THEUS_ECONFLICT)
    atomic_fetch_add_explicit(&e->n_conflict, 1, memory_order_relaxed);
  else if (!rc)
    atomic_fetch_add_explicit(&e->n_commit, 1, memory_order_relaxed);
  for (size_t i = 0; i < op.n; i++)
    free(op.paths[i]);
  free(op.paths);
  return rc;
}

/* ---- live regions ------------------------------------------------------- */

static theus__live **live_find(theus_engine *e, const char *key) {
  theus__live **pp = &e->lives;
  while (*pp && strcmp((*pp)->arr->key, key))
    pp = &(*pp)->next;
  return pp;
}

/* Binds (bind 1: publishes the pending draft of key) or unbinds key in a new
 * version, retrying on conflict. Unbinding only removes key while it still
 * names arr: a key rebound to another array since then is left alone. */
static int live_commit(theus_engine *e, const char *key, const theus__harr *arr, int bind, char *msg,
                       size_t msglen) {
  json_t *hp = json_object();
  if (!hp || json_object_set_new(hp, key, bind ? json_true() : json_null())) {
    json_decref(hp);
    return msgf(msg, msglen, THEUS_ENOMEM, "out of memory");
  }
  int rc = 0;
  for (unsigned i = 0; i <= e->cfg.max_retries; i++) {
    theus_snapshot *s = theus__snap_get(e);
    const theus__hbind *b = theus__snap_find(s, key);
    int skip = !bind && (!b || b->arr != arr);
    uint64_t v = s->version;
    theus__snap_put(s);
    theus__commit_info ci = {.op = "live", .read_version = v, .worker = -1};
    if (skip || (rc = theus__cas(e, v, NULL, hp, &ci, NULL, msg, msglen)) != THEUS_ECONFLICT)
      break;
  }
  json_decref(hp);
  return rc;
}

/* Unlinks the live entry of key (NULL if none). An entry whose creation is
 * still binding it belongs to its creator: only the creator (pending 1)
 * takes it, a concurrent unbind sees none. */
static theus__live *live_take(theus_engine *e, const char *key, int pending) {
  pthread_mutex_lock(&e->state_lock);
  theus__live **pp = live_find(e, key), *l = *pp;
  if (l && l->ready == !pending)
    *pp = l->next;
  else
    l = NULL;
  pthread_mutex_unlock(&e->state_lock);
  return l;
}

/* Closes the writer (readers then see THEUS_ECLOSED) and drops the engine's
 * reference; the region is freed once no version binds it any more. */
static void live_release(theus__live *l) {
  theus_twin_writer_close(l->twin, 0);
  harr_put(l->arr);
  free(l);
}

/* Creates the region and its pending draft, and registers the live entry. */
static int live_prepare(theus_engine *e, const char *key, size_t nbytes, theus__live *l, char *msg,
                        size_t msglen) {
  int rc = theus_twin_writer_open(e->arena, nbytes, &l->twin);
  if (rc)
    return msgf(msg, msglen, rc, "live_create '%s': %s", key,
                nbytes ? theus_arena_errmsg(e->arena) : "nbytes must be at least 1");
  if ((rc = draft_add(e, key, theus_twin_writer_handle(l->twin), 0, 0, NULL, NULL, &l->arr, msg, msglen))) {
    theus_twin_writer_close(l->twin, 1);
    return rc;
  }
  pthread_mutex_lock(&e->state_lock);
  if (*live_find(e, key)) {
    rc = msgf(msg, msglen, THEUS_EEXIST,
              "live_create: key '%s' already has a live region; unbind it first (theus_engine_live_unbind)", key);
  } else {
    atomic_fetch_add_explicit(&l->arr->refs, 1, memory_order_relaxed); /* the live table's reference */
    l->next = e->lives;
    e->lives = l;
  }
  pthread_mutex_unlock(&e->state_lock);
  if (rc) {
    theus_twin_writer_close(l->twin, 0);
    theus__draft_drop(e, key); /* frees the region */
  }
  return rc;
}

int theus_engine_live_create(theus_engine *e, const char *key, size_t nbytes, theus_twin_writer **out) {
  THEUS__ENGINE_ARG(e, "live_create");
  char msg[768] = "";
  if (out)
    *out = NULL;
  if (!out || !key)
    return theus__eset(e, THEUS_EINVAL, "live_create: key and out are required");
  theus__live *l = calloc(1, sizeof *l);
  if (!l)
    return theus__eset(e, THEUS_ENOMEM, "live_create '%s': out of memory", key);
  int rc = live_prepare(e, key, nbytes, l, msg, sizeof msg);
  if (rc) {
    free(l);
    return theus__eset(e, rc, "%s", msg);
  }
  if ((rc = live_commit(e, key, l->arr, 1, msg, sizeof msg))) {
    live_take(e, key, 1);
    theus__draft_drop(e, key);
    live_release(l);
    return theus__eset(e, rc, "live_create '%s': binding it: %s", key, msg);
  }
  *out = l->twin; /* before l is visible to unbind */
  pthread_mutex_lock(&e->state_lock);
  l->ready = 1;
  pthread_mutex_unlock(&e->state_lock);
  return 0;
}

int theus_engine_live_unbind(theus_engine *e, const char *key) {
  THEUS__ENGINE_ARG(e, "live_unbind");
  if (!key)
    return theus__eset(e, THEUS_EINVAL, "live_unbind: key is NULL");
  char msg[768] = "";
  theus__live *l = key ? live_take(e, key, 0) : NULL;
  if (!l)
    return theus__eset(e, THEUS_ENOTFOUND, "live_unbind: no live region for key '%s'; create one with "
                                           "theus_engine_live_create", key ? key : "(null)");
  int rc = live_commit(e, key, l->arr, 0, msg, sizeof msg);
  live_release(l);
  return rc ? theus__eset(e, rc, "live_unbind '%s': %s (the region is closed all the same)", key, msg) : 0;
}

void theus__live_fini(theus_engine *e) {
  while (e->lives) {
    theus__live *l = e->lives;
    e->lives = l->next;
    live_release(l);
  }
}
