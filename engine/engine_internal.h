/* engine: internal structures shared by the engine's files (not installed). */
#ifndef THEUS_ENGINE_INTERNAL_H
#define THEUS_ENGINE_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "base.h"
#include "theus/engine.h"
#include "theus/pool.h"

/* A published (or draft) heavy array, shared by every version binding it and
 * freed with its last reference. */
typedef struct theus__harr {
  atomic_uint refs;
  theus_arena *arena;
  theus_handle handle;
  int live;                 /* a live region: its bytes change, so no content hash */
  _Atomic uint64_t hash;    /* content hash once computed (ledger.c), 0 = not yet */
  char key[];
} theus__harr;

typedef struct theus__hbind {
  const char *key; /* points into arr->key */
  theus__harr *arr;
} theus__hbind;

/* A version: immutable once published. theus_snapshot is this struct. */
struct theus_snapshot {
  atomic_uint refs;
  uint64_t version;
  json_t *domain;
  size_t nheavy;
  theus__hbind *heavy; /* sorted by key */
};

/* Paths written by the CAS that produced a version, for smart CAS. */
typedef struct theus__hist {
  uint64_t version;
  char **paths;
  size_t n;
} theus__hist;

typedef struct theus__draft {
  struct theus__draft *next;
  theus__harr *arr;
} theus__draft;

/* A live region bound to a heavy key: the engine owns the writer and holds
 * one reference on the region besides the versions binding it. */
typedef struct theus__live {
  struct theus__live *next;
  theus_twin_writer *twin;
  theus__harr *arr;
  int ready; /* 0 while theus_engine_live_create is still binding it */
} theus__live;

typedef struct theus__reducer {
  struct theus__reducer *next;
  theus_reducer_fn fn;
  void *ud;
  char name[];
} theus__reducer;

/* The shared page with the current version (futex on the low word). */
typedef struct theus__vword {
  _Atomic uint32_t seq;     /* low 32 bits of version: the futex word */
  _Atomic uint32_t waiters; /* threads that announced a wait (any process): a publish wakes only then */
  _Atomic uint64_t version;
} theus__vword;

/* ---- the worker registry (docs/workers.md, "Task path") ----------------
 * An anonymous MAP_SHARED table mapped in theus_engine_open before the pool
 * forks, so every worker sees it at the same address. Append-only: entry i
 * is written whole, then published by a release store of count; a worker
 * reads count with acquire and uses entries below it. An entry's pointers
 * point into the entry itself, hence are valid in every process. */
#define THEUS__REG_MAX 1024u    /* parallel processes per engine */
#define THEUS__REG_STRINGS 64u  /* inputs + outputs + errors of one parallel process */
#define THEUS__REG_BLOB 3072u   /* bytes of its name and those strings, NULs included */

typedef struct theus__regent {
  theus_contract c;
  uint32_t has_domain_inputs;
  const char *strv[THEUS__REG_STRINGS + 3]; /* inputs, NULL, outputs, NULL, errors, NULL */
  char blob[THEUS__REG_BLOB];
  /* The domain paths a task ships (theus__ship_prepare): sorted, each cut
   * above its first wildcard, none under another. Main side only. */
  uint32_t nship;
  const char *ship[THEUS__REG_STRINGS];
  char ship_blob[THEUS__REG_BLOB];
} theus__regent;

/* Fills r's ship list from its contract's inputs (done once, at register). */
void theus__ship_prepare(theus__regent *r);

/* ---- wire.c: values on the task path (tagged binary, not JSON text) ---- */
#define THEUS__WIRE_MAX_DEPTH 1024u

/* Encodes v into buf (cap bytes); *len gets the bytes it takes even when
 * they do not fit. 0, THEUS_ETRUNC (no room), THEUS_ELIMIT (nested deeper
 * than THEUS__WIRE_MAX_DEPTH) or THEUS_EINVAL (v NULL). */
int theus__wire_put(const json_t *v, void *buf, size_t cap, size_t *len);
/* Decodes exactly len bytes; NULL with *rc THEUS_EPARSE (malformed,
 * truncated, trailing bytes, bad UTF-8, a non-finite real) or THEUS_ENOMEM. */
json_t *theus__wire_get(const void *buf, size_t len, int *rc);
/* Encodes, as one object, the values at the dotted paths (sorted as
 * theus__ship_prepare sorts them, none under another) that root holds, each
 * under its segments after the first skip bytes of the path: the paths
 * "domain.a.b", "domain.c" give {"a":{"b":..},"c":..}. As theus__wire_put. */
int theus__wire_put_paths(const json_t *root, const char *const *paths, size_t n, size_t skip, void *buf,
                          size_t cap, size_t *len);

typedef struct theus__registry {
  _Atomic uint32_t count;
  uint32_t cap;
  size_t size; /* bytes mapped */
  theus__regent ent[];
} theus__registry;

typedef struct theus__jobq {
  struct theus_job *head, *tail;
  pthread_t th;
  int started;
  pthread_cond_t cv; /* under jobs_lock */
} theus__jobq;

typedef struct theus__memo theus__memo;

struct theus_engine {
  int opened; /* theus_engine_open succeeded: a failed open only carries the message */
  theus_engine_config cfg;
  theus_arena *arena;
  theus_pool *pool;

  pthread_mutex_t state_lock; /* cur, retained, hist, drafts, lives */
  theus_snapshot *cur;
  theus_snapshot **retained; /* ring of cfg.retention past versions */
  theus__hist *hist;         /* ring of cfg.history entries */
  theus__draft *drafts;
  theus__live *lives;

  pthread_rwlock_t reg_lock;
  theus_contract **procs;
  int32_t *regidx; /* per proc: its worker-registry index, or -1 */
  size_t nprocs, capprocs;
  theus__registry *reg; /* NULL without a pool */
  theus__reducer *reducers;

  int vfd;
  theus__vword *vword;

  pthread_mutex_t jobs_lock;
  pthread_cond_t jobs_cv;
  unsigned jobs_running;      /* submitted, not finished */
  struct theus_job *jobs_pool; /* jobs whose task sits in the pool (a list, for close) */
  theus__jobq exec_q;          /* local jobs: one executor thread */
  theus__jobq reap_q;          /* released unfinished pool jobs: one reaper thread */
  theus__jobq defer_q;         /* pool jobs submitted while every ring was full */
  int jobs_stop;
  int jobs_closing; /* close is finishing jobs: signal jobs_cv on every change */

  _Atomic(const volatile int *) cancel; /* theus_engine_set_cancel */
  _Atomic(theus_trace_fn) trace;
  _Atomic(void *) trace_ud;
  struct theus__lfile *ledger;       /* cfg.ledger (ledger.c), written under state_lock */
  theus__memo *memo;                 /* memo.c */
  _Atomic(theus_commit_fn) commit_fn; /* theus_engine_set_commit_hook */
  _Atomic(void *) commit_ud;

  atomic_ullong n_exec, n_fail, n_commit, n_conflict, n_retry, n_cas;
  /* theus_engine_progress_get: slices of the maps running now (done, all)
   * and slices finished since open */
  atomic_ullong map_done, map_total, map_slices;

  theus__err err;
};


/* The contract list checks under the short names the engine's files use;
 * the logic is the contracts' public API. */
static inline int theus__strv_covers(const char *const *patterns, const char *path) {
  return theus_path_list_covers(patterns, path);
}
static inline int theus__strv_has(const char *const *v, const char *name) { return theus_name_list_has(v, name); }

/* Records a message on the engine and returns code. */
int theus__eset(theus_engine *e, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* ---- state.c ---- */
int theus__state_init(theus_engine *e, const json_t *domain);
void theus__state_fini(theus_engine *e);
theus_snapshot *theus__snap_get(theus_engine *e);
void theus__snap_put(theus_snapshot *s);
const theus__hbind *theus__snap_find(const theus_snapshot *s, const char *key);
const json_t *theus__json_at(const json_t *root, const char *path);
/* The value a domain input pattern reads as a whole: at its part before the
 * first '*' segment ("domain.items.*" -> domain.items); NULL if absent. */
const json_t *theus__json_at_pattern(const json_t *root, const char *pattern);
/* What the ledger says of a commit besides its patch (ledger.c). */
typedef struct theus__commit_info {
  const char *op;       /* "execute", "set", "cas", "live", "map" (a map into a heavy output) */
  const char *process;  /* the process of an execute, else NULL */
  const json_t *args;
  uint64_t read_version; /* the version the process ran on */
  const char *reads;    /* {path: content hash} of its declared inputs as JSON text, or NULL */
  int worker;           /* -1: local */
  uint64_t duration_ns;
  unsigned attempt;     /* re-runs after CAS conflicts before this one */
} theus__commit_info;

/* CAS with an error message written into msg (for jobs); ci (NULL: a bare
 * "cas") describes the commit to the ledger. */
int theus__cas(theus_engine *e, uint64_t expected, const json_t *domain_patch, const json_t *heavy_patch,
               const theus__commit_info *ci, uint64_t *new_version, char *msg, size_t msglen);
int theus__draft_new(theus_engine *e, const char *key, theus_dtype dtype, unsigned ndim, const uint64_t *shape,
                     void **data, theus_handle *handle, char *msg, size_t msglen);
int theus__draft_drop(theus_engine *e, const char *key);
/* Waits for a version other than seen. announce: w is mapped writable, so
 * the wait is counted in w->waiters and a publish wakes it; else (a watcher
 * on a read-only descriptor) it sleeps in 1 ms slices. */
int theus__vword_wait(theus__vword *w, int announce, uint64_t seen, int64_t timeout_ms, uint64_t *now);
/* Sets the value at a domain path inside a merge patch (reference stolen). */
int theus__patch_put(json_t *patch, const char *path, json_t *value);
/* Closes every live region's writer and drops the engine's references. */
void theus__live_fini(theus_engine *e);

/* ---- engine.c ---- */
/* The registered contract named name and its registry index (-1: none). */
const theus_contract *theus__proc_find(theus_engine *e, const char *name, int32_t *regidx);

/* ---- ctx.c ---- */
struct theus_ctx {
  theus_engine *e;            /* NULL in a worker */
  const theus_contract *c;
  const json_t *domain;       /* the snapshot's domain, or the shipped inputs in a worker */
  const json_t *args;
  const theus_snapshot *snap; /* local runs */
  theus_task *task;           /* worker runs */
  const char *task_keys;      /* worker: NUL-separated heavy keys, one per task handle */
  uint32_t task_nkeys;
  json_t *patch;              /* the domain merge patch being built */
  json_t *ret;
  json_t *heavy_out;          /* {key: true} drafts allocated by this run */
  int has_slice;
  const char *map_key;        /* in a map: the key mapped over */
  const char *out_key;        /* in a map into an output: its key */
  void *out_data;             /* and its writable base (a worker: the write window) */
  theus_array_info out_info;
  uint64_t lo, hi;
  uint32_t slice_index, slice_count;
  struct {
    theus_handle h;
    theus_twin_reader *r;
  } live[THEUS_POOL_MAX_HANDLES]; /* live-region readers opened by this run */
  unsigned nlive;
  int worker;
  int rc;
  const _Atomic int *job_cancel; /* local job runs: theus_job_cancel sets it */
  char msg[768];
};

void theus__ctx_fini(theus_ctx *ctx);
/* Checks that every path written by ctx->patch is a declared output. */
int theus__check_outputs(const theus_contract *c, const json_t *patch, char *msg, size_t msglen);

/* ---- exec.c ---- */
int theus__pool_task(theus_task *t);
const char *theus__task_label(const theus_task *t, char *buf, size_t cap);
/* Finishes every job (close): waits for pool jobs nobody waits for, lets the
 * executor and reaper drain, then joins them. */
void theus__jobs_fini(theus_engine *e);

/* Nonzero once the engine's cancel flag (theus_engine_set_cancel) is set. */
static inline int theus__engine_canceled(theus_engine *e) {
  const volatile int *f = atomic_load_explicit(&e->cancel, memory_order_acquire);
  return f && __atomic_load_n(f, __ATOMIC_ACQUIRE);
}

/* ---- ledger.c ---- */
typedef struct theus__lfile theus__lfile;
/* Opens cfg.ledger for writing (created or truncated). */
int theus__ledger_open(theus_engine *e, const char *path);
void theus__ledger_close(theus_engine *e);
/* Nonzero when commits are recorded (a ledger file or a commit hook). */
static inline int theus__ledger_on(theus_engine *e) {
  return e->ledger || atomic_load_explicit(&e->commit_fn, memory_order_relaxed);
}
/* Under state_lock: THEUS_ESYS with msg if the ledger file failed (commits
 * are refused from then on), else 0. */
int theus__ledger_check(theus_engine *e, char *msg, size_t msglen);
/* Under state_lock, after s was published: writes the entry of s. */
void theus__ledger_commit(theus_engine *e, const theus__commit_info *ci, const theus_snapshot *s,
                          const json_t *dpatch, const json_t *hpatch);
/* The value of the declared domain input `in` in domain (a pattern's at its
 * part before the first '*' segment, whose length goes to *n), or NULL. */
const json_t *theus__input_at(const json_t *domain, const char *in, size_t *n);
/* Appends {path: "xxh3:..."} of the declared inputs of c in snap to b as
 * JSON text, NUL-terminated. */
typedef struct theus__kbuf theus__kbuf;
/* theus__cas of what process c computed on `read` (an execute, or a run
 * committed by theus_engine_commit_run): ci->reads gets the content hashes
 * of c's declared inputs in read when a ledger or commit hook wants them. */
int theus__cas_process(theus_engine *e, theus__commit_info *ci, const theus_contract *c, const theus_snapshot *read,
                       const json_t *domain_patch, const json_t *heavy_patch, uint64_t *version, char *msg,
                       size_t msglen);
void theus__ledger_reads(const theus_contract *c, const theus_snapshot *snap, theus__kbuf *b);

/* ---- hash.c ---- */
/* A byte buffer on the stack that moves to the heap when it outgrows it. */
typedef struct theus__kbuf {
  char *p;
  size_t n, cap;
  int failed; /* out of memory: the content is incomplete */
  char stack[2048];
} theus__kbuf;
void theus__kbuf_init(theus__kbuf *b);
void theus__kbuf_fini(theus__kbuf *b);
/* Makes room for more bytes; -1 (and failed set) when memory ran out. */
int theus__kbuf_grow(theus__kbuf *b, size_t more);
/* Room for n more bytes at the end (the caller writes them and adds n to
 * b->n), or NULL when memory ran out. Writing in place, not through a
 * local array copied in, keeps the store-to-load forwarding stall out. */
static inline char *theus__kbuf_room(theus__kbuf *b, size_t n) {
  return n > b->cap - b->n && theus__kbuf_grow(b, n) ? NULL : b->p + b->n;
}
/* Appends n bytes (inline: the writers append many short pieces). */
static inline void theus__kbuf_add(theus__kbuf *b, const void *p, size_t n) {
  if (n > b->cap - b->n && theus__kbuf_grow(b, n))
    return;
  memcpy(b->p + b->n, p, n);
  b->n += n;
}
/* Appends v in decimal. */
void theus__kbuf_u64(theus__kbuf *b, uint64_t v);
void theus__kbuf_i64(theus__kbuf *b, int64_t v);
/* Appends a string literal. */
#define THEUS__KBUF_LIT(b, s) theus__kbuf_add((b), s, sizeof s - 1)
/* Appends v as compact JSON text, keys in insertion order or sorted (the
 * canonical form hashes use): the bytes of jansson's json_dumpb with
 * JSON_COMPACT [| JSON_SORT_KEYS], without its allocations. NULL appends an
 * "absent" marker (not JSON). A value nested deeper than 2048 levels sets
 * failed. */
void theus__kbuf_json(theus__kbuf *b, const json_t *v, int sort_keys);
/* Content hashes: XXH3-64 of bytes, of a JSON value (its canonical text), of a
 * published array (cached on it; 0 for a live region); XXH3-128 of bytes. */
uint64_t theus__hash_bytes(const void *p, size_t n);
uint64_t theus__hash_json(const json_t *v);
uint64_t theus__harr_hash(theus__harr *a);
void theus__hash128(const void *p, size_t n, uint64_t out[2]);

/* ---- memo.c ---- */
typedef struct theus__memo_key_t {
  uint64_t h[2]; /* XXH3-128 */
} theus__memo_key_t;
int theus__memo_open(theus_engine *e);
void theus__memo_close(theus_engine *e);
/* Nonzero when runs of c are memoised. */
int theus__memo_on(const theus_engine *e, const theus_contract *c);
/* The key of a run of c with args on snap (slice: lo, hi, index, count, or
 * NULL); -1 when the run cannot be memoised (it reads a live region). */
int theus__memo_key(const theus_contract *c, const json_t *args, const theus_snapshot *snap, const uint64_t *slice,
                    theus__memo_key_t *out);
/* 1 and copies of the outputs on a hit; 0 on a miss. Counted in stats. */
int theus__memo_get(theus_engine *e, const theus__memo_key_t *key, json_t **patch, json_t **ret);
/* Stores copies of a successful run's outputs (the oldest entry goes when full). */
void theus__memo_put(theus_engine *e, const theus__memo_key_t *key, const json_t *patch, const json_t *ret);
json_t *theus__memo_stats(theus_engine *e);

/* ---- reduce.c ---- */
/* A registered reducer by name, else a built-in one; NULL if unknown. */
theus_reducer_fn theus__reducer_find(theus_engine *e, const char *name, void **ud);
/* Why the last built-in reducer call on this thread failed beyond a shape
 * mismatch ("" if it did not); clears it. */
const char *theus__reduce_why(void);
/* dst[i] = dst[i] op src[i] for n elements of dtype dt, op "sum", "min" or
 * "max" (integers wrap as C does); THEUS_EINVAL for another name or dtype. */
int theus__reduce_array(const char *name, theus_dtype dt, void *dst, const void *src, size_t n);

/* Argument checks of the public calls (issue 10): a NULL engine fails with
 * THEUS_EINVAL, one whose open failed with THEUS_EINVAL and a message. */
#define THEUS__ENGINE_ARG(e, fn)                                                                        \
  do {                                                                                                  \
    if (!(e)) return THEUS_EINVAL;                                                                      \
    if (!(e)->opened) return theus__eset((e), THEUS_EINVAL, fn ": this engine did not open (read "       \
                                         "theus_engine_errmsg, then theus_engine_close it)");            \
  } while (0)

#endif
