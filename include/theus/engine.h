/* theus-c — the engine: registered processes, versioned state, execution.
 *
 * State is a sequence of immutable versions {version, domain JSON, heavy key ->
 * array}. A compare-and-swap installs version+1; execute/submit/map run a
 * process (locally, or in the worker pool when its contract says parallel),
 * check what it wrote against its contract and commit it by CAS, retrying on
 * conflict. A failed process commits nothing.
 *
 * Thread safety: every function may be called from any thread. Messages: a
 * failing call leaves a human message in theus_engine_errmsg (last failure
 * wins when threads race; jobs keep their own message).
 */
#ifndef THEUS_ENGINE_H
#define THEUS_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "contract.h"
#include "error.h"
#include "heavy.h"
#include "pool.h"
#include "twin.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct theus_engine theus_engine;
typedef struct theus_snapshot theus_snapshot;
typedef struct theus_job theus_job;

/* The most workers an engine's pool may have (the pool's own limit,
 * THEUS_POOL_MAX_WORKERS, restated here for code that uses only the engine). */
#define THEUS_ENGINE_MAX_WORKERS 256

/* entry: the ledger line of one committed version (docs/ledger.md), valid
 * during the call only. */
typedef void (*theus_commit_fn)(const json_t *entry, void *ud);

typedef struct theus_engine_config {
  int workers;            /* pool size: 0 = one per usable CPU, -1 = no pool (all runs local),
                             at most THEUS_ENGINE_MAX_WORKERS */
  int strict;             /* nonzero: any stale CAS conflicts; 0 (default): smart CAS */
  unsigned retention;     /* past versions the engine keeps alive (default 0) */
  unsigned history;       /* versions whose written paths smart CAS remembers (default 4096) */
  unsigned max_retries;   /* re-executions on CAS conflict (default 64) */
  int64_t default_timeout_ms; /* for parallel processes whose contract says 0 (default 0 = none) */
  const theus_arena_config *arena; /* NULL = arena defaults */
  const json_t *domain;   /* initial domain object (copied); NULL = {} */
  int output;             /* what workers print: theus_output_mode (default THEUS_OUTPUT_FORWARD: line by
                             line to stderr, "[worker N process NAME] "; docs/workers.md, "Output") */
  theus_output_fn output_fn; /* FORWARD: receives each line (worker, process, line) instead of stderr */
  void *output_ud;        /* passed to output_fn */
  /* The ledger (docs/ledger.md): a JSON Lines file, created or truncated at
   * open, with one line per committed version (process, args, versions and
   * content hashes read, output patch, worker, duration, status). NULL =
   * none. ledger_fsync nonzero: each line is on disk (fdatasync) before the
   * commit returns; else lines are buffered and written at close (and by
   * theus_engine_ledger_sync). Once the file fails every later commit fails
   * THEUS_ESYS, and so does the commit during which it failed, though its
   * version stays (docs/ledger.md). */
  const char *ledger;
  int ledger_fsync;
  /* Called for every committed version from the engine's open on (the
   * versions the initial state makes too); see theus_engine_set_commit_hook. */
  theus_commit_fn on_commit;
  void *on_commit_ud;
  /* Memoisation (docs/api.md, "Memoisation"): nonzero memoises every pure
   * process whose contract does not say memo -1 (a contract's memo 1 asks for
   * it on its own). memo_capacity: results kept, least recently used dropped
   * first; 0 = THEUS_MEMO_CAPACITY_DEFAULT. */
  int memo;
  unsigned memo_capacity;
} theus_engine_config;

#define THEUS_MEMO_CAPACITY_DEFAULT 4096

/* Fills *cfg with the defaults. */
THEUS_API void theus_engine_config_init(theus_engine_config *cfg);

/* Opens an engine: arena, version word, and (unless workers == -1) the
 * worker pool. cfg may be NULL. Like sqlite3_open, a failure still hands back
 * an engine carrying the message (unless memory ran out: then *out is NULL):
 * read theus_engine_errmsg(*out), then release it with theus_engine_close. */
THEUS_API int theus_engine_open(const theus_engine_config *cfg, theus_engine **out);

/* Finishes every submitted job (collecting and committing pool jobs nobody
 * waited for), stops the pool, frees every version, draft and array.
 * Snapshots must be released before; a job not yet freed may still be waited
 * (it is finished) and freed afterwards. NULL is a no-op. */
THEUS_API void theus_engine_close(theus_engine *e);

/* Message of the last failure (what, where, how to fix), from any thread.
 * Never NULL. The text is this
 * thread's own copy, valid until the thread's fourth next *_errmsg call. */
THEUS_API const char *theus_engine_errmsg(const theus_engine *e);

/* The engine's arena (owned by the engine). */
THEUS_API theus_arena *theus_engine_arena(theus_engine *e);

/* ---- registry ---------------------------------------------------------- */

/* Registers a process (contract copied). THEUS_EINVAL for a contradictory
 * contract, THEUS_EEXIST for a duplicate name; the message names the field. */
THEUS_API int theus_engine_register(theus_engine *e, const theus_contract *c);

/* Parses a JSON contract (see theus_contract_parse) and registers it. */
THEUS_API int theus_engine_register_json(theus_engine *e, const char *text, const char *source,
                                         theus_fn_resolver resolver, void *ud);

/* The registered contract of a process (valid until close), or NULL. */
THEUS_API const theus_contract *theus_engine_contract(theus_engine *e, const char *name);

/* For "did you mean": the registered process whose name is closest to name
 * (a likely misspelling: at most 2 edits, or a third of the name's length),
 * valid until close; NULL if none is that close or name is registered (also
 * for NULL arguments and an engine whose open failed). */
THEUS_API const char *theus_engine_process_near(theus_engine *e, const char *name);

/* A reducer for map: acc is NULL for the first item; returns the new
 * accumulator (new reference) and takes ownership of acc; NULL = failure:
 * THEUS_ENOMEM if errno is ENOMEM (memory ran out), else THEUS_EINVAL (the
 * results do not combine). */
typedef json_t *(*theus_reducer_fn)(json_t *acc, const json_t *item, void *ud);

/* Registers a named reducer (beside the built-in sum, min, max, concat). */
THEUS_API int theus_engine_register_reducer(theus_engine *e, const char *name, theus_reducer_fn fn, void *ud);

/* Nonzero if name is a reducer map accepts: a registered one or a built-in
 * (sum, min, max, concat). Lets a caller check a plan before running it. */
THEUS_API int theus_engine_has_reducer(theus_engine *e, const char *name);

/* ---- state ------------------------------------------------------------- */

/* The current version number (starts at 1 for the initial state). */
THEUS_API uint64_t theus_engine_version(theus_engine *e);

/* The value at a domain path of the current version, as a new reference
 * (NULL if absent: THEUS_ENOTFOUND in the message). */
THEUS_API json_t *theus_engine_get(theus_engine *e, const char *path);

/* Writes value (reference stolen) at a domain path, committed as a new
 * version (merge semantics; json_null() deletes). A NULL value (what a json_*
 * constructor returns when memory ran out) is THEUS_EINVAL, never a deletion. */
THEUS_API int theus_engine_set(theus_engine *e, const char *path, json_t *value);

/* Installs a new version if the state is still compatible with
 * expected_version. domain_patch: RFC 7386 merge patch of the domain (or
 * NULL). heavy_patch: object {key: true} publishes the draft allocated for
 * key, {key: null} removes the binding (or NULL). On success *new_version
 * (optional) gets the installed number. THEUS_ECONFLICT (strict: any stale
 * version; smart: a written path changed after expected_version) with both
 * versions and the first conflicting path in the message; nothing changes. */
THEUS_API int theus_engine_cas(theus_engine *e, uint64_t expected_version, const json_t *domain_patch,
                               const json_t *heavy_patch, uint64_t *new_version);

/* Commits what a run of process name with args wrote, when it ran
 * elsewhere on the state of snapshot `read` (another engine holding the
 * same state: the cluster layer runs parallel members on other ranks), as
 * theus_engine_execute would have committed it: by CAS on read's version
 * (THEUS_ECONFLICT when a path it writes changed since; run it again then),
 * recorded in the ledger and the commit hook as an "execute" of name with
 * args and the content hashes of its inputs in `read`. domain_patch is the
 * run's merge patch, trusted to respect the contract (the engine that ran it
 * checked it); NULL or empty commits nothing (a reader makes no version).
 * *new_version (optional) gets the version installed, 0 if none.
 * THEUS_ECANCELED once the engine's cancel flag is set (nothing more is
 * committed, as for jobs), THEUS_ENOTFOUND (unknown process), THEUS_EINVAL
 * (NULL e, name or read, a patch that is not an object). */
THEUS_API int theus_engine_commit_run(theus_engine *e, const char *name, const json_t *args,
                                      const theus_snapshot *read, const json_t *domain_patch, uint64_t *new_version);

/* Allocates a writable draft array for heavy key (C-contiguous; *data is
 * writable until published). Publish it with a CAS heavy patch {key: true}.
 * THEUS_EEXIST (collision) if a draft for key is already pending. */
THEUS_API int theus_engine_heavy_alloc(theus_engine *e, const char *key, theus_dtype dtype, unsigned ndim,
                                       const uint64_t *shape, void **data);

/* Frees an unpublished draft. THEUS_ENOTFOUND if none. */
THEUS_API int theus_engine_heavy_discard(theus_engine *e, const char *key);

/* ---- the process context (used inside a process) -------------------- *
 * A NULL ctx gets NULL or THEUS_EINVAL from every theus_ctx_* call (the
 * values theus_ctx_set and theus_ctx_return steal are released). A NULL key
 * gives THEUS_EINVAL. */

/* The value at a domain path ("domain.x.y"), borrowed for the duration of
 * the call, or NULL if absent. For a pure process an undeclared path returns
 * NULL and fails the execution with THEUS_ECONTRACT. */
THEUS_API const json_t *theus_ctx_get(theus_ctx *ctx, const char *path);

/* The call arguments (borrowed; an empty object if none were given). */
THEUS_API const json_t *theus_ctx_args(theus_ctx *ctx);

/* A read-only, zero-copy view of heavy array `key` (declared as input
 * `heavy.<key>`; required for pure processes). THEUS_ENOTFOUND if the state
 * has no such key, THEUS_ECONTRACT if undeclared. Works in workers too. */
THEUS_API int theus_ctx_heavy(theus_ctx *ctx, const char *key, theus_array_info *out);

/* In a map: the slice [*lo, *hi) of the first dimension this call handles,
 * its index and the number of slices. THEUS_ENOTFOUND outside a map. */
THEUS_API int theus_ctx_slice(theus_ctx *ctx, uint64_t *lo, uint64_t *hi, uint32_t *index, uint32_t *count);

/* In a map: the heavy key of the array being mapped (valid during the call),
 * so one process serves maps over any key (declare inputs as `heavy.*`).
 * NULL outside a map, in a map with no input array, and for a NULL ctx. */
THEUS_API const char *theus_ctx_map_key(theus_ctx *ctx);

/* In a map into a heavy output (theus_engine_map_into): the output's dtype
 * and shape in *info (its data field is the read-only address) and in *data
 * its writable base. The slice writes rows [lo, hi) of the first dimension
 * (theus_ctx_slice) and nothing else: in a worker any other store faults and
 * fails the map as a contract violation. With theus_map_out.partials, *info
 * and *data describe this slice's own partial array instead, which it may
 * write whole. THEUS_ENOTFOUND elsewhere, THEUS_EINVAL for a NULL ctx. */
THEUS_API int theus_ctx_map_out(theus_ctx *ctx, theus_array_info *info, void **data);

/* Writes value (reference stolen) to a declared output path. Objects are
 * merged into existing objects (RFC 7386); null deletes. THEUS_ECONTRACT if
 * the path is not a declared output, THEUS_EINVAL if value is NULL (what
 * json_real() gives for a NaN or an infinity, which JSON cannot hold): the
 * execution then fails, naming the process and the path. */
THEUS_API int theus_ctx_set(theus_ctx *ctx, const char *path, json_t *value);

/* Sets the process's return value (reference stolen): returned by execute,
 * and the per-slice value combined by a map's reducer. NULL (json_real() of
 * a non-finite number) fails the execution; to return nothing, do not call
 * it. */
THEUS_API void theus_ctx_return(theus_ctx *ctx, json_t *value);

/* Allocates a writable heavy array for declared output `heavy.<key>`,
 * published when the execution commits, freed if it fails. Local runs only
 * (THEUS_EREADONLY in a worker). */
THEUS_API int theus_ctx_heavy_alloc(theus_ctx *ctx, const char *key, theus_dtype dtype, unsigned ndim,
                                    const uint64_t *shape, void **data);

/* Fails the execution with a message; returns THEUS_EPROCESS so a process can
 * `return theus_ctx_fail(ctx, "bad input %d", x);`. */
THEUS_API int theus_ctx_fail(theus_ctx *ctx, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Fails with a declared error name (contract `errors`); an undeclared name is
 * a contract violation. Returns THEUS_EPROCESS (THEUS_ECONTRACT if undeclared). */
THEUS_API int theus_ctx_raise(theus_ctx *ctx, const char *error_name, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The contract's userdata pointer. */
THEUS_API void *theus_ctx_userdata(theus_ctx *ctx);
/* Nonzero once the run was canceled (theus_job_cancel of its job, or the
 * engine's cancel flag, theus_engine_set_cancel). A local process cannot be
 * stopped from outside (it runs in the host): a long one should poll this
 * and return early; whatever it returns, nothing is committed. Always 0 in
 * a worker, where a cancel kills the worker. */
THEUS_API int theus_ctx_canceled(const theus_ctx *ctx);
/* In a worker: how many earlier runs of this task killed their worker (0 on
 * the first run; see theus_contract.retries). 0 in local runs. */
THEUS_API unsigned theus_ctx_attempt(const theus_ctx *ctx);

/* The name of the running process. */
THEUS_API const char *theus_ctx_process(theus_ctx *ctx);
/* -1 when running locally in the orchestrator, else the pool worker's id
 * (THEUS_EINVAL for a NULL ctx). */
THEUS_API int theus_ctx_worker(theus_ctx *ctx);

/* ---- live regions (see docs/twin.md) ----------------------------------- */

/* Creates a live region of nbytes (>= 1) in the engine's arena (epoch 0, all
 * zero; costs 2 * nbytes + 64 of arena budget) and binds it to heavy key
 * `key` in a newly committed version, so that processes declaring input
 * `heavy.<key>` read it with theus_ctx_live_read / theus_ctx_live_wait,
 * locally and in workers. *twin gets the writer: the host writes and
 * publishes with the theus_twin_* calls, from one thread at a time. The
 * writer is owned by the engine and valid until theus_engine_live_unbind(key)
 * or theus_engine_close; do not close or destroy it yourself. Errors:
 * THEUS_EINVAL (bad key, nbytes 0), THEUS_EEXIST (key already has a live
 * region, or a draft is pending for it), arena codes (THEUS_EBUDGET...),
 * THEUS_ECONFLICT (retries exhausted). Nothing stays allocated on failure. */
THEUS_API int theus_engine_live_create(theus_engine *e, const char *key, size_t nbytes, theus_twin_writer **twin);

/* Removes the binding of key in a new version (unless key was rebound to
 * something else meanwhile), closes the writer (readers still running get
 * THEUS_ECLOSED) and frees the region as soon as no snapshot pins a version
 * binding it. THEUS_ENOTFOUND if key has no live region. */
THEUS_API int theus_engine_live_unbind(theus_engine *e, const char *key);

/* Inside a process: copies a consistent snapshot of [offset, offset+len) of
 * the live region bound to heavy key `key` into dest and stores its epoch in
 * *epoch (optional); as theus_twin_reader_read_at (no allocation after the first
 * call of a run on that key). The key must be a declared input
 * `heavy.<key>` (for a pure process an undeclared key fails the execution
 * with THEUS_ECONTRACT, as theus_ctx_heavy). Other failures are only
 * returned, the process decides: THEUS_ENOTFOUND (no such key in the
 * process's version), THEUS_EINVAL (key is an ordinary array, or the range
 * leaves the region), THEUS_ECLOSED (unbound meanwhile), THEUS_ESTARVED. */
THEUS_API int theus_ctx_live_read(theus_ctx *ctx, const char *key, size_t offset, void *dest, size_t len,
                                  uint64_t *epoch);

/* Inside a process: as theus_twin_reader_wait_epoch on the live region of key
 * (sleeps until its epoch exceeds seen, or timeout_ms; -1 = forever).
 * Same contract rule and codes as theus_ctx_live_read, plus THEUS_ETIMEDOUT. */
THEUS_API int theus_ctx_live_wait(theus_ctx *ctx, const char *key, uint64_t seen, int64_t timeout_ms, uint64_t *now);

/* Inside a process: the size in bytes of the live region of key in *nbytes.
 * Same contract rule and codes as theus_ctx_live_read. */
THEUS_API int theus_ctx_live_size(theus_ctx *ctx, const char *key, size_t *nbytes);

/* ---- snapshots --------------------------------------------------------- */

/* Pins the current version: its values and arrays stay valid and unchanged
 * until theus_snapshot_release, whatever is committed meanwhile. */
THEUS_API int theus_engine_snapshot(theus_engine *e, theus_snapshot **out);

/* The version number the snapshot holds. */
THEUS_API uint64_t theus_snapshot_version(const theus_snapshot *s);

/* The whole domain object (borrowed, immutable: do not modify). */
THEUS_API const json_t *theus_snapshot_domain(const theus_snapshot *s);

/* The value at a domain path (borrowed), or NULL. */
THEUS_API const json_t *theus_snapshot_get(const theus_snapshot *s, const char *path);

/* View of the array bound to key in this version. THEUS_ENOTFOUND if none. */
THEUS_API int theus_snapshot_heavy(const theus_snapshot *s, const char *key, theus_array_info *out);

/* Drops the pin; arrays only this snapshot referenced are freed. */
THEUS_API void theus_snapshot_release(theus_snapshot *s);

/* ---- waiting for versions (any thread or process) ---------------------- */

/* Waits until the current version differs from seen, or timeout_ms passes
 * (-1 = forever). *now (optional) gets the version. THEUS_ETIMEDOUT. */
THEUS_API int theus_engine_wait_version(theus_engine *e, uint64_t seen, int64_t timeout_ms, uint64_t *now);

/* A descriptor of the shared page holding the current version (owned by the
 * engine, close-on-exec: dup it for exec'd programs; forked children inherit
 * it). Another process maps it with theus_version_watch_open. */
THEUS_API int theus_engine_version_fd(const theus_engine *e);

typedef struct theus_version_watch theus_version_watch;

/* Maps the version page from fd (which stays the caller's): writable when
 * fd allows it, so that its waits are counted in the page and a commit wakes
 * them (a commit makes no system call when nobody waits); from a read-only
 * descriptor it maps read-only and its waits look every millisecond. */
THEUS_API int theus_version_watch_open(int fd, theus_version_watch **out);
/* The engine's current version, read from the shared page (no syscall). */
THEUS_API uint64_t theus_version_watch_current(const theus_version_watch *w);
/* As theus_engine_wait_version, from any process. */
THEUS_API int theus_version_watch_wait(const theus_version_watch *w, uint64_t seen, int64_t timeout_ms, uint64_t *now);
/* Unmaps the page and frees w (the fd stays the caller's). NULL is a no-op. */
THEUS_API void theus_version_watch_close(theus_version_watch *w);

/* ---- execution --------------------------------------------------------- */

/* Runs process name with args (JSON object or NULL) and commits its outputs
 * (retrying on CAS conflict). *result (optional) gets the process's return
 * value (new reference, or NULL). Failure codes: THEUS_ENOTFOUND (unknown
 * process), THEUS_EPROCESS (the process failed), THEUS_ECONTRACT,
 * THEUS_ECRASH (worker died), THEUS_ETIMEDOUT, THEUS_ECONFLICT (retries
 * exhausted), THEUS_EINVAL (e, name NULL, or an engine whose open failed);
 * nothing is committed then, and the message gives the cause. */
THEUS_API int theus_engine_execute(theus_engine *e, const char *name, const json_t *args, json_t **result);

/* Starts an execution in the background; *job is waited on from any thread.
 * A parallel process is queued on the pool here, in the calling thread (or,
 * when every ring is full, by the engine's deferred-submit thread), and the
 * first wait collects, checks and commits it; a local one runs on the
 * engine's executor thread, one job at a time. No thread per job.
 * THEUS_ENOTFOUND, THEUS_EINVAL (args not an object, a NULL argument); failures of the run
 * itself are reported by theus_job_wait. */
THEUS_API int theus_engine_submit(theus_engine *e, const char *name, const json_t *args, theus_job **job);

/* Waits for the job (timeout_ms -1 = forever): THEUS_ETIMEDOUT if it is still
 * running (wait again later), else the execution's code. *result as execute.
 * THEUS_EINVAL for a NULL job. A job pointer is not checked beyond NULL. */
THEUS_API int theus_job_wait(theus_job *job, int64_t timeout_ms, json_t **result);

/* The job's failure message ("" while running or on success; a fixed text for NULL). */
THEUS_API const char *theus_job_errmsg(const theus_job *job);

/* The version the job committed (0 if it committed nothing). */
THEUS_API uint64_t theus_job_version(const theus_job *job);

/* Cancels the job wherever it is; its wait then returns THEUS_ECANCELED and
 * nothing is committed. Queued (in the pool, on the deferred-submit or the
 * executor thread): dropped without running. Running in a worker: the worker
 * is killed and replaced. Running locally: cooperative only (a local process
 * runs in the host and cannot be stopped from outside): theus_ctx_canceled
 * turns true, and whatever the process returns is not committed. A job that
 * already finished keeps its outcome. Returns 0; thread-safe; call it before
 * theus_job_release. */
THEUS_API int theus_job_cancel(theus_job *job);

/* Installs a cancel flag (NULL removes it) that the engine reads atomically
 * and which may be set from a signal handler: while it is nonzero, maps stop
 * and cancel their slices, waits on pool tasks cancel them, local processes
 * see theus_ctx_canceled, and nothing more is committed (THEUS_ECANCELED).
 * The flag must outlive its installation. */
THEUS_API void theus_engine_set_cancel(theus_engine *e, const volatile int *flag);

/* Releases the job (it keeps running and commits if not finished: the
 * engine's reaper thread collects a released pool job). */
THEUS_API void theus_job_release(theus_job *job);

/* Runs parallel process name over `slices` slices of the first dimension of
 * heavy array key (theus_ctx_slice gives each its bounds), in the pool, and
 * combines the return values with reducer ("sum", "min", "max", "concat" or a
 * registered name). *result gets the combined value. Slices may not write
 * state outputs; commit the result yourself (theus_engine_set). */
THEUS_API int theus_engine_map(theus_engine *e, const char *name, const char *key, uint32_t slices,
                               const char *reducer, const json_t *args, json_t **result);

/* The output of a map into a new heavy array (theus_engine_map_into). */
typedef struct theus_map_out {
  const char *key;   /* heavy key it is published under (declared output `heavy.<key>`) */
  theus_dtype dtype; /* 0: the input's */
  unsigned ndim;     /* 0: the input's shape; else shape[0] must equal the input's rows */
  uint64_t shape[THEUS_MAX_DIMS];
  /* NULL: the slices fill the output's rows. "sum", "min" or "max": each
   * slice fills a whole partial array of the output's dtype and shape (ndim
   * required; it starts zeroed), and the engine combines the partials
   * element by element, in the arena, into the published output. */
  const char *partials;
} theus_map_out;

/* As theus_engine_map, and the slices fill a new array: the engine allocates
 * it as a draft, each slice writes its rows through theus_ctx_map_out (in a
 * worker only those pages are writable: see docs/workers.md, "Write
 * windows"), and when every slice succeeded the array is published under
 * out->key in a new version (*version, optional, gets it); a failed slice
 * discards the draft and commits nothing. Slice bounds fall on rows whose
 * output bytes start on a page, so there may be fewer slices than asked. The
 * output must be at least a page (4 KiB) when the process is parallel.
 * key NULL: no input array; the slices split the output's rows (out->dtype
 * and out->ndim/shape required, no partials): how a parallel process fills a
 * new array on its own (slices 1: one worker, the whole array writable).
 * THEUS_ECONTRACT (output not declared), THEUS_EINVAL (out or out->key NULL,
 * ndim above THEUS_MAX_DIMS, shape), THEUS_EEXIST
 * (a draft for the key is pending), THEUS_ECONFLICT (the key was rebound
 * meanwhile), arena codes, and the codes of theus_engine_map. */
THEUS_API int theus_engine_map_into(theus_engine *e, const char *name, const char *key, uint32_t slices,
                                    const char *reducer, const json_t *args, const theus_map_out *out,
                                    json_t **result, uint64_t *version);
/* Runs only slices [first, first + count) of the map theus_engine_map would
 * run with the same name, key and slices (same bounds: n = min(slices, rows)
 * slices; theus_ctx_slice gives each its index out of n) and stores their
 * return values in *items: a new JSON array, one entry per slice in order,
 * null for a slice that returned nothing. Lets a host spread one map over
 * several engines (the cluster layer does) and fold the values with
 * theus_engine_reduce. Errors as theus_engine_map; THEUS_EINVAL if the range
 * leaves [0, n). */
THEUS_API int theus_engine_map_part(theus_engine *e, const char *name, const char *key, uint32_t slices,
                                    uint32_t first, uint32_t count, const json_t *args, json_t **items);

/* Folds items (a JSON array, e.g. the concatenated theus_engine_map_part
 * results of every slice) in order with reducer, as theus_engine_map folds
 * slice values; null entries are skipped. *result gets the value (new
 * reference; null if there was none). THEUS_EINVAL for an unknown reducer,
 * items not an array, values it cannot combine, a NULL engine or result, or an
 * engine whose open failed. */
THEUS_API int theus_engine_reduce(theus_engine *e, const char *reducer, const json_t *items, json_t **result);

/* ---- observability ----------------------------------------------------- */

typedef struct theus_engine_progress {
  uint64_t map_done;  /* slices of the maps running now that have finished */
  uint64_t map_total; /* slices of the maps running now (0 when none runs) */
  uint64_t slices;    /* map slices finished since the engine opened */
} theus_engine_progress;

/* Progress of the maps running now, for a display refreshed from another
 * thread while theus_engine_map blocks (theus-run's progress line). Counters
 * are read one by one: map_done <= map_total always holds, the pair is exact
 * when one map runs at a time. A pooled map counts a slice when it is
 * collected, in slice order. All zero for a NULL engine; out NULL: nothing. */
THEUS_API void theus_engine_progress_get(theus_engine *e, theus_engine_progress *out);

/* Counters as JSON (new reference): {"engine": {...}, "arena": {...},
 * "pool": {...}}. */
THEUS_API json_t *theus_engine_stats(theus_engine *e);

typedef struct theus_trace_event {
  const char *process;
  int worker;          /* -1 = ran locally */
  uint64_t queued_ns;  /* CLOCK_MONOTONIC: when the run was submitted (= start_ns for local runs) */
  uint64_t start_ns;   /* when it started, measured where it ran (the worker for parallel runs) */
  uint64_t end_ns;     /* when it ended there (a worker that died: when its death was seen) */
  int status;          /* 0 or THEUS_E* */
} theus_trace_event;

typedef void (*theus_trace_fn)(const theus_trace_event *ev, void *ud);

/* Calls fn after every process run (each map slice too), from the thread
 * that observed the end. NULL disables. */
THEUS_API void theus_engine_set_trace(theus_engine *e, theus_trace_fn fn, void *ud);

/* Calls fn for every committed version, in version order, with the entry
 * the ledger would write (also without a ledger file). fn runs under the
 * engine's state lock: it must be quick and must not call the engine (it may
 * set a cancel flag, theus_engine_set_cancel). fn NULL disables; e NULL:
 * nothing. */
THEUS_API void theus_engine_set_commit_hook(theus_engine *e, theus_commit_fn fn, void *ud);

/* Writes every buffered ledger line and waits until the file is on disk
 * (fdatasync). Returns 0 (also without a ledger), or THEUS_ESYS with the
 * message on e if a write failed, now or earlier (the message names the
 * file, the system's reason and the first version whose line may be lost);
 * THEUS_EINVAL for a NULL e. */
THEUS_API int theus_engine_ledger_sync(theus_engine *e);

/* ---- ledger files ------------------------------------------------------ */

/* A ledger read back (theus_ledger_open): its whole entries, in order. */
typedef struct theus_ledger theus_ledger;

/* Reads the ledger at path. A last line that is not whole (no newline, or
 * not JSON: a write cut short by a crash or a power cut) is left out and
 * counted by theus_ledger_torn_bytes; a bad line before the last one is
 * THEUS_EPARSE naming it, THEUS_ESYS if it cannot be read, THEUS_EINVAL for
 * a NULL path. Like theus_engine_open, a failure still hands back the ledger
 * carrying the message (unless memory ran out or out is NULL: THEUS_EINVAL). */
THEUS_API int theus_ledger_open(const char *path, theus_ledger **out);

/* Whole entries read. */
THEUS_API size_t theus_ledger_count(const theus_ledger *l);

/* Entry i (owned by l, valid until close), or NULL past the end. */
THEUS_API const json_t *theus_ledger_entry(const theus_ledger *l, size_t i);

/* Bytes of a torn last line left out (0: the file ends with a whole entry). */
THEUS_API uint64_t theus_ledger_torn_bytes(const theus_ledger *l);

/* Message of the last failure. Never NULL. */
THEUS_API const char *theus_ledger_errmsg(const theus_ledger *l);

/* Frees l. NULL is a no-op. */
THEUS_API void theus_ledger_close(theus_ledger *l);

#ifdef __cplusplus
}
#endif
#endif /* THEUS_ENGINE_H */
