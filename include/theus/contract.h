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
typedef struct theus_contract {
  const char *name;
  theus_process_fn fn;
  const char *const *inputs;   /* state path patterns the process reads */
  const char *const *outputs;  /* state path patterns the process writes */
  int parallel;                /* run in the worker pool (requires pure) */
  theus_semantic semantic;
  const char *const *errors;   /* error names theus_ctx_raise may use */
  uint32_t timeout_ms;         /* 0 = no timeout (parallel processes only) */
  void *userdata;              /* returned by theus_ctx_userdata (local runs;
                                  in a worker only if set before the engine opened) */
} theus_contract;

/* ---- paths ----------------------------------------------------------- */

/* Checks a path or pattern. 0, or THEUS_EINVAL with a message in err
 * (may be NULL) saying which segment is wrong and what is allowed. */
THEUS_API int theus_path_check(const char *path, char *err, size_t errlen);

/* Nonzero if pattern covers path (both assumed valid). */
THEUS_API int theus_path_covers(const char *pattern, const char *path);

/* Nonzero if the two paths overlap: one is a prefix (by segments) of the
 * other, with `*` matching any field. Used for conflict detection. */
THEUS_API int theus_path_overlaps(const char *a, const char *b);

/* ---- contracts ------------------------------------------------------- */

/* Validates a contract on its own (the engine adds: duplicate names).
 * THEUS_EINVAL with a message naming the field, e.g.
 * "contract 'scale': inputs[1] 'domain.sig_stop': pure process cannot use an
 * effect-only zone (sig_/cmd_/meta_); declare semantic effect". */
THEUS_API int theus_contract_check(const theus_contract *c, char *err, size_t errlen);

/* Resolves a function name from a JSON contract (e.g. with dlsym); returns
 * NULL if unknown. */
typedef theus_process_fn (*theus_fn_resolver)(const char *fn_name, void *ud);

/* A contract parsed from JSON; owns every string the theus_contract points to. */
typedef struct theus_contract_doc theus_contract_doc;

/* Parses one contract object:
 *   {"name": "scale", "function": "scale_fn", "inputs": ["domain.k"],
 *    "outputs": ["domain.y"], "parallel": false, "semantic": "pure",
 *    "errors": ["E_RANGE"], "timeout_ms": 1000}
 * `function` is resolved with resolver (required unless resolver is NULL, in
 * which case fn stays NULL for the caller to fill). source names the text in
 * messages ("contracts.json:3:14: ..."). THEUS_EPARSE for bad JSON or fields,
 * THEUS_EINVAL for a contradictory contract, THEUS_ENOTFOUND for an unknown
 * function; *out is NULL on failure. */
THEUS_API int theus_contract_parse(const char *text, const char *source, theus_fn_resolver resolver,
                                   void *ud, theus_contract_doc **out, char *err, size_t errlen);

/* Same from an already-parsed JSON object (no line numbers in messages). */
THEUS_API int theus_contract_from_json(const json_t *obj, const char *source, theus_fn_resolver resolver,
                                       void *ud, theus_contract_doc **out, char *err, size_t errlen);

/* The contract inside a parsed document (valid until theus_contract_doc_release).
 * It is mutable so a caller may set fn/userdata before registering. */
THEUS_API theus_contract *theus_contract_doc_get(theus_contract_doc *d);

/* The JSON object the contract came from (borrowed), for extension fields. */
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

/* ---- the process context (used inside a process) ----------------------- */

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

/* Writes value (reference stolen) to a declared output path. Objects are
 * merged into existing objects (RFC 7386); null deletes. THEUS_ECONTRACT if
 * the path is not a declared output (the execution then fails). */
THEUS_API int theus_ctx_set(theus_ctx *ctx, const char *path, json_t *value);

/* Sets the process's return value (reference stolen): returned by execute,
 * and the per-slice value combined by a map's reducer. */
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

/* The name of the running process. */
THEUS_API const char *theus_ctx_process(theus_ctx *ctx);
/* -1 when running locally in the orchestrator, else the pool worker's id. */
THEUS_API int theus_ctx_worker(theus_ctx *ctx);

#ifdef __cplusplus
}
#endif
#endif /* THEUS_CONTRACT_H */
