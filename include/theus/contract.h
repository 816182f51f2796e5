/* theus-c — contracts: what a process reads, writes and may fail with.
 *
 * A state path names a value in the engine's state: `domain.<field>...` for
 * JSON values, `heavy.<key>` for shared arrays. Fields are
 * [A-Za-z_][A-Za-z0-9_-]*; a `*` segment matches any one field. A pattern
 * covers a path when its segments match the path's first segments, so
 * `domain.user` covers `domain.user.name`, and `domain.items.*` covers every
 * value strictly below `domain.items`.
 *
 * Fields whose name starts with `sig_`, `cmd_` or `meta_` are effect-only
 * zones (signals, commands, metadata): a pure process may not use them.
 */
#ifndef THEUS_CONTRACT_H
#define THEUS_CONTRACT_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "error.h"
#include "heavy.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The process context: what a running process reads and writes through.
 * The engine implements it; the theus_ctx_* calls are in engine.h. */
typedef struct theus_ctx theus_ctx;

/* A process: reads through ctx, writes outputs through ctx, returns 0 on
 * success. A nonzero return (or theus_ctx_fail) fails the execution and
 * nothing is committed. Parallel processes run in forked workers: the function
 * must be in the program image (or a library loaded) before the engine opened. */
typedef int (*theus_process_fn)(theus_ctx *ctx);

typedef enum theus_semantic {
  THEUS_PURE = 0,   /* sees only its declared inputs; no effect-only zones */
  THEUS_EFFECT = 1  /* may touch the outside world; always runs locally */
} theus_semantic;

/* A contract. String arrays are NULL-terminated (NULL = empty). The engine
 * copies everything at registration. */
/* Whether a parallel process runs under the pure-process sandbox (no
 * fork/exec, no network, no file writes, no signals to other processes; see
 * docs/workers.md). THEUS_SANDBOX_DEFAULT means on for parallel processes
 * (they are pure); local processes run in the host and are never sandboxed. */
typedef enum theus_sandbox {
  THEUS_SANDBOX_DEFAULT = 0,
  THEUS_SANDBOX_ON = 1,
  THEUS_SANDBOX_OFF = 2
} theus_sandbox;

typedef struct theus_contract {
  const char *name;
  theus_process_fn fn;
  const char *const *inputs;   /* state path patterns the process reads */
  const char *const *outputs;  /* state path patterns the process writes */
  int parallel;                /* run in the worker pool (requires pure) */
  theus_semantic semantic;
  const char *const *errors;   /* error names theus_ctx_raise may use */
  int64_t timeout_ms;          /* parallel processes: 0 = the engine default, < 0 = none, > 0 = kill the worker past it */
  void *userdata;              /* returned by theus_ctx_userdata (local runs;
                                  in a worker only if set before the engine opened) */
  theus_sandbox sandbox;       /* default: on when parallel; on requires parallel */
  /* Parallel (pure) processes and map slices: re-runs on a fresh worker when
   * the worker running them dies (signal, exit, OOM kill). 0 = the default
   * (THEUS_RETRIES_DEFAULT, 2), -1 = none, > 0 = that many. After retries + 1
   * dead workers the run fails THEUS_ECRASH "poison: ..." naming every cause.
   * Effect processes are never retried: > 0 is refused for them. */
  int retries;
  /* Memoisation of a pure process: 1 = a run whose process, args, declared
   * input values and heavy input arrays (by identity) equal an earlier run's
   * returns that run's outputs without running; -1 = never; 0 = as the
   * engine's config says (theus_engine_config.memo). 1 is refused for effect
   * processes. A process that publishes heavy outputs is never memoised. */
  int memo;
} theus_contract;

#define THEUS_RETRIES_DEFAULT 2

/* ---- paths ----------------------------------------------------------- */

/* Checks a path or pattern. 0, or THEUS_EINVAL with a message in err
 * (may be NULL) saying which segment is wrong and what is allowed. */
THEUS_API int theus_path_check(const char *path, char *err, size_t errlen);

/* Nonzero if pattern covers path (both assumed valid). */
THEUS_API int theus_path_covers(const char *pattern, const char *path);

/* Nonzero if some pattern of the NULL-terminated list patterns (NULL =
 * empty) covers path: "is path declared" for a contract's inputs/outputs. */
THEUS_API int theus_path_list_covers(const char *const *patterns, const char *path);

/* Nonzero if name is in the NULL-terminated list v (NULL = empty), e.g. a
 * contract's declared errors. */
THEUS_API int theus_name_list_has(const char *const *v, const char *name);

/* Nonzero if the two paths overlap: one is a prefix (by segments) of the
 * other, with `*` matching any field. Used for conflict detection. */
THEUS_API int theus_path_overlaps(const char *a, const char *b);

/* ---- contracts ------------------------------------------------------- */

/* Validates a contract on its own (the engine adds: duplicate names).
 * THEUS_EINVAL with a message naming the field, e.g.
 * "contract 'scale': inputs[1] 'domain.sig_stop': pure process cannot use an
 * effect-only zone (sig_/cmd_/meta_); declare semantic effect". */
THEUS_API int theus_contract_check(const theus_contract *c, char *err, size_t errlen);

/* An owned deep copy of c (one allocation holding every string; fn and
 * userdata are copied as pointers), or NULL if out of memory or c has no
 * name. Release it with theus_contract_release. */
THEUS_API theus_contract *theus_contract_copy(const theus_contract *c);

/* Frees a copy made by theus_contract_copy. NULL is a no-op. */
THEUS_API void theus_contract_release(theus_contract *c);
/* Nonzero if the process's tasks must run under the pure-process sandbox
 * (parallel, and sandbox not off): the engine then submits them with
 * THEUS_TASK_SANDBOX. */
THEUS_API int theus_contract_sandboxed(const theus_contract *c);

/* How many times a run of the process is re-run after its worker died:
 * retries resolved (0 -> THEUS_RETRIES_DEFAULT, -1 -> 0); 0 for effect and
 * local processes. */
THEUS_API unsigned theus_contract_retries(const theus_contract *c);

/* Resolves a function name from a JSON contract (e.g. with dlsym); returns
 * NULL if unknown. */
typedef theus_process_fn (*theus_fn_resolver)(const char *fn_name, void *ud);

/* A contract parsed from JSON; owns every string the theus_contract points to. */
typedef struct theus_contract_doc theus_contract_doc;

/* Parses one contract object:
 *   {"name": "scale", "function": "scale_fn", "inputs": ["domain.k"],
 *    "outputs": ["domain.y"], "parallel": false, "semantic": "pure",
 *    "errors": ["E_RANGE"], "timeout_ms": 1000, "sandbox": "default", "retries": 2,
 *    "memo": true}
 * (`sandbox`: "default", "on" or "off", optional; `retries`: an integer,
 * optional, 0 = default, -1 = none; `memo`: a boolean, optional, absent =
 * the engine's default).
 * `function` is resolved with resolver (required unless resolver is NULL, in
 * which case fn stays NULL for the caller to fill). source names the text in
 * messages ("contracts.json:3:14: ..."). THEUS_EPARSE for bad JSON or fields,
 * THEUS_EINVAL for a contradictory contract, THEUS_ENOTFOUND for an unknown
 * function. Like sqlite3_open, *out is set even on failure (unless memory
 * ran out) and carries the message (theus_contract_doc_errmsg); release it
 * with theus_contract_doc_release either way. */
THEUS_API int theus_contract_parse(const char *text, const char *source, theus_fn_resolver resolver,
                                   void *ud, theus_contract_doc **out);

/* Same from an already-parsed JSON object (no line numbers in messages). */
THEUS_API int theus_contract_from_json(const json_t *obj, const char *source, theus_fn_resolver resolver,
                                       void *ud, theus_contract_doc **out);

/* Why parsing the document failed ("" after a successful parse). Never NULL. */
THEUS_API const char *theus_contract_doc_errmsg(const theus_contract_doc *d);

/* The contract inside a parsed document (valid until theus_contract_doc_release;
 * NULL if the parse failed). It is mutable so a caller may set fn/userdata
 * before registering. */
THEUS_API theus_contract *theus_contract_doc_get(theus_contract_doc *d);

/* The JSON object the contract came from (borrowed; NULL if the parse
 * failed), for extension fields. */
THEUS_API const json_t *theus_contract_doc_json(const theus_contract_doc *d);

/* Frees a parsed contract document. NULL is a no-op. */
THEUS_API void theus_contract_doc_release(theus_contract_doc *d);

/* The JSON form of a contract (new reference; function name not included). */
THEUS_API json_t *theus_contract_to_json(const theus_contract *c);

/* ---- JSON Merge Patch (RFC 7386) -------------------------------------- */

/* Returns a new value: target with patch applied. target is never modified;
 * untouched sub-objects are shared (by reference) with target, which is safe
 * as long as neither is mutated afterwards. target may be NULL. */
THEUS_API json_t *theus_merge_patch(const json_t *target, const json_t *patch);

/* Appends to *paths the state paths (prefixed with `prefix`, e.g. "domain")
 * a patch writes: each leaf of the patch (a non-object value, null, or an
 * empty object). Paths are malloc'd strings; *n and *cap track the array. */
THEUS_API int theus_merge_patch_paths(const json_t *patch, const char *prefix, char ***paths, size_t *n,
                                      size_t *cap);

#ifdef __cplusplus
}
#endif
#endif /* THEUS_CONTRACT_H */
