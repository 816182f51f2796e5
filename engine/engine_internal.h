/* engine: internal structures shared by the engine's files (not installed). */
#ifndef THEUS_ENGINE_INTERNAL_H
#define THEUS_ENGINE_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "base.h"
#include "theus/engine.h"
#include "theus/pool.h"

/* A published (or draft) heavy array, shared by every version binding it and
 * freed with its last reference. */
typedef struct theus__harr {
  atomic_uint refs;
  theus_arena *arena;
  theus_handle handle;
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
  _Atomic uint32_t seq;   /* low 32 bits of version: the futex word */
  uint32_t pad;
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
} theus__regent;

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

  _Atomic(theus_trace_fn) trace;
  _Atomic(void *) trace_ud;

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
/* CAS with an error message written into msg (for jobs). */
int theus__cas(theus_engine *e, uint64_t expected, const json_t *domain_patch, const json_t *heavy_patch,
               uint64_t *new_version, char *msg, size_t msglen);
int theus__draft_new(theus_engine *e, const char *key, theus_dtype dtype, unsigned ndim, const uint64_t *shape,
                     void **data, theus_handle *handle, char *msg, size_t msglen);
int theus__draft_drop(theus_engine *e, const char *key);
int theus__vword_wait(const theus__vword *w, uint64_t seen, int64_t timeout_ms, uint64_t *now);
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
