/* Memoisation of pure processes: a bounded LRU cache from (process, args,
 * declared input values, identity of the heavy arrays read, map slice) to the
 * run's outputs (domain patch and return value). The key is the XXH3-128 hash
 * of that material (hash.c); 128 bits make an accidental collision
 * negligible. */
#include <stdlib.h>
#include <string.h>

#include "engine_internal.h"

typedef struct memo_ent {
  theus__memo_key_t key;
  struct memo_ent *hnext;      /* bucket chain */
  struct memo_ent *prev, *next; /* LRU list: head.next is the most recent */
  json_t *patch, *ret;
} memo_ent;

struct theus__memo {
  pthread_mutex_t lock;
  memo_ent **buckets;
  size_t nbuckets, n, cap;
  memo_ent lru; /* sentinel */
  atomic_ullong hits, misses, evictions;
};

int theus__memo_open(theus_engine *e) {
  unsigned cap = e->cfg.memo_capacity ? e->cfg.memo_capacity : THEUS_MEMO_CAPACITY_DEFAULT;
  theus__memo *m = calloc(1, sizeof *m);
  size_t nb = 16;
  while (nb < cap)
    nb *= 2;
  if (!m || !(m->buckets = calloc(nb, sizeof *m->buckets))) {
    free(m);
    return theus__eset(e, THEUS_ENOMEM, "engine open: out of memory for the memo cache (%u entries)", cap);
  }
  pthread_mutex_init(&m->lock, NULL);
  m->nbuckets = nb;
  m->cap = cap;
  m->lru.prev = m->lru.next = &m->lru;
  e->memo = m;
  return 0;
}

static void ent_free(memo_ent *x) {
  json_decref(x->patch);
  json_decref(x->ret);
  free(x);
}

void theus__memo_close(theus_engine *e) {
  theus__memo *m = e->memo;
  if (!m)
    return;
  for (memo_ent *x = m->lru.next, *nx; x != &m->lru; x = nx) {
    nx = x->next;
    ent_free(x);
  }
  pthread_mutex_destroy(&m->lock);
  free(m->buckets);
  free(m);
  e->memo = NULL;
}

int theus__memo_on(const theus_engine *e, const theus_contract *c) {
  if (!e->memo || c->semantic != THEUS_PURE || c->memo < 0)
    return 0;
  return c->memo > 0 || e->cfg.memo;
}

/* ---- keys ----------------------------------------------------------------- */

/* The heavy inputs matching key ("*": all) by identity: key and handle
 * (index and generation, never reused for another array). A live region's
 * bytes change under the same handle: not memoisable (-1). */
static int add_heavy(theus__kbuf *b, const theus_snapshot *snap, const char *key) {
  for (size_t i = 0; i < snap->nheavy; i++) {
    const theus__hbind *hb = &snap->heavy[i];
    if (strcmp(key, "*") && strcmp(key, hb->key))
      continue;
    if (hb->arr->live)
      return -1;
    theus__kbuf_add(b, hb->key, strlen(hb->key) + 1);
    theus__kbuf_add(b, &hb->arr->handle, sizeof hb->arr->handle);
  }
  return 0;
}

int theus__memo_key(const theus_contract *c, const json_t *args, const theus_snapshot *snap, const uint64_t *slice,
                    theus__memo_key_t *out) {
  theus__kbuf b;
  theus__kbuf_init(&b);
  theus__kbuf_add(&b, c->name, strlen(c->name) + 1);
  theus__kbuf_json(&b, args && json_object_size(args) ? args : NULL, 1);
  int rc = 0;
  for (const char *const *in = c->inputs; in && *in && !rc; in++) {
    size_t n; /* the pattern's part (unused: the whole input is in the key) */
    theus__kbuf_add(&b, *in, strlen(*in) + 1);
    if (!strncmp(*in, "heavy.", 6))
      rc = add_heavy(&b, snap, *in + 6);
    else
      theus__kbuf_json(&b, theus__input_at(snap->domain, *in, &n), 1);
    theus__kbuf_add(&b, "", 1);
  }
  if (slice)
    theus__kbuf_add(&b, slice, 4 * sizeof *slice);
  if (!rc && b.failed)
    rc = -1;
  if (!rc)
    theus__hash128(b.p, b.n, out->h);
  theus__kbuf_fini(&b);
  return rc;
}

/* ---- the cache ------------------------------------------------------------ */

static memo_ent **bucket(theus__memo *m, const theus__memo_key_t *k) {
  return &m->buckets[k->h[0] & (m->nbuckets - 1)];
}

static memo_ent *find(theus__memo *m, const theus__memo_key_t *k) {
  for (memo_ent *x = *bucket(m, k); x; x = x->hnext)
    if (x->key.h[0] == k->h[0] && x->key.h[1] == k->h[1])
      return x;
  return NULL;
}

static void lru_unlink(memo_ent *x) {
  x->prev->next = x->next;
  x->next->prev = x->prev;
}

static void lru_front(theus__memo *m, memo_ent *x) {
  x->next = m->lru.next;
  x->prev = &m->lru;
  m->lru.next->prev = x;
  m->lru.next = x;
}

int theus__memo_get(theus_engine *e, const theus__memo_key_t *key, json_t **patch, json_t **ret) {
  theus__memo *m = e->memo;
  pthread_mutex_lock(&m->lock);
  memo_ent *x = find(m, key);
  if (x) {
    lru_unlink(x);
    lru_front(m, x);
    /* the patch is shared (a commit only reads it); the return value is
     * copied: it becomes the caller's, or a reducer's accumulator */
    *patch = json_incref(x->patch);
    *ret = x->ret ? json_deep_copy(x->ret) : NULL;
  }
  pthread_mutex_unlock(&m->lock);
  atomic_fetch_add_explicit(x ? &m->hits : &m->misses, 1, memory_order_relaxed);
  return x != NULL;
}

void theus__memo_put(theus_engine *e, const theus__memo_key_t *key, const json_t *patch, const json_t *ret) {
  theus__memo *m = e->memo;
  memo_ent *x = calloc(1, sizeof *x);
  if (!x)
    return;
  x->key = *key;
  x->patch = json_incref((json_t *)patch); /* never changed once made: see memo_get */
  x->ret = ret ? json_deep_copy(ret) : NULL;
  memo_ent *old = NULL;
  pthread_mutex_lock(&m->lock);
  if (find(m, &x->key)) { /* two runs of the same key raced: keep the first */
    pthread_mutex_unlock(&m->lock);
    ent_free(x);
    return;
  }
  if (m->n == m->cap) { /* evict the least recently used */
    old = m->lru.prev;
    lru_unlink(old);
    memo_ent **pp = bucket(m, &old->key);
    while (*pp != old)
      pp = &(*pp)->hnext;
    *pp = old->hnext;
    m->n--;
  }
  memo_ent **b = bucket(m, &x->key);
  x->hnext = *b;
  *b = x;
  lru_front(m, x);
  m->n++;
  pthread_mutex_unlock(&m->lock);
  if (old) {
    atomic_fetch_add_explicit(&m->evictions, 1, memory_order_relaxed);
    ent_free(old);
  }
}

json_t *theus__memo_stats(theus_engine *e) {
  theus__memo *m = e->memo;
  if (!m)
    return json_object();
  pthread_mutex_lock(&m->lock);
  size_t n = m->n;
  pthread_mutex_unlock(&m->lock);
  return json_pack("{s:b, s:I, s:I, s:I, s:I, s:I}", "all_pure", e->cfg.memo != 0, "hits", (json_int_t)atomic_load(&m->hits),
                   "misses", (json_int_t)atomic_load(&m->misses), "evictions", (json_int_t)atomic_load(&m->evictions),
                   "entries", (json_int_t)n, "capacity", (json_int_t)m->cap);
}
