/* theus-c — pipelines: a JSON file of steps run by an engine, and plugins.
 *
 * The format is documented in docs/pipeline-format.md. Loading checks the
 * whole file (syntax, keys, types, expressions) and opening checks what
 * needs the engine (plugins, processes, reducers); a pipeline with an error
 * never runs a step. Every message starts with "file:line:column: ".
 *
 * Order of calls (theus-run does exactly this):
 *   theus_pipeline_load -> [add_plugin, set] -> theus_pipeline_open_engine (loads
 *   plugins, THEN opens the engine so its worker pool can run plugin code,
 *   then calls each plugin's registration function) -> theus_pipeline_run ->
 *   theus_engine_close -> theus_pipeline_close (unloads plugins last).
 */
#ifndef THEUS_PIPELINE_H
#define THEUS_PIPELINE_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "engine.h"
#include "error.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Exports a symbol from a plugin (libtheus and its examples are built with
 * -fvisibility=hidden). */
#define THEUS_PLUGIN_EXPORT __attribute__((visibility("default")))

/* The registration function a plugin must export, by this exact name:
 *   THEUS_PLUGIN_EXPORT int theus_plugin_register(theus_engine *e);
 * It registers the plugin's processes (theus_engine_register) and reducers
 * and returns 0, or a negative THEUS_E* code (the engine message is shown).
 * It runs after the engine opened, but the plugin itself was loaded before,
 * so parallel processes whose code is in the plugin run in workers. Memory a
 * parallel process reads through its contract userdata must exist before
 * the engine opened (static data in the plugin is fine). */
#define THEUS_PLUGIN_REGISTER_SYMBOL "theus_plugin_register"
typedef int (*theus_plugin_register_fn)(theus_engine *e);

typedef struct theus_pipeline theus_pipeline;

/* Reads and checks a pipeline file. THEUS_EPARSE (any error in the file,
 * message "file:line:column: what; fix"), THEUS_EINVAL, THEUS_ENOMEM. Like
 * sqlite3_open, *out is set even on failure (unless memory ran out) and
 * carries the message: read theus_pipeline_errmsg(*out), then release it
 * with theus_pipeline_close. */
THEUS_API int theus_pipeline_load(const char *path, theus_pipeline **out);

/* Adds a plugin to load (path as given, e.g. from the command line), after
 * those the file lists. Before theus_pipeline_open_engine. */
THEUS_API int theus_pipeline_add_plugin(theus_pipeline *p, const char *path);

/* Sets an initial domain value, overriding the file: path "domain.a.b"
 * (intermediate objects are created), value stolen. Before open. */
THEUS_API int theus_pipeline_set(theus_pipeline *p, const char *path, json_t *value);

/* The "workers" the file asks for, or -2 if it does not say (also for NULL). */
THEUS_API int theus_pipeline_workers(const theus_pipeline *p);

/* The file's "arena" object as a config: the fields it sets, 0 (the arena's
 * default, see theus_arena_config) for the others. A host that overrides some
 * fields (theus-run's --arena-budget) starts from this and passes the result
 * as cfg->arena to theus_pipeline_open_engine. All zero for a NULL pipeline
 * or one whose load failed; out NULL: nothing. */
THEUS_API void theus_pipeline_arena_config(const theus_pipeline *p, theus_arena_config *out);

/* Before theus_pipeline_open_engine: do not create the file's heavy arrays.
 * For a host that receives them otherwise (a cluster executor gets rank 0's
 * arrays); steps over them fail until they are published. NULL: nothing. */
THEUS_API void theus_pipeline_skip_heavy(theus_pipeline *p);

/* Runs a map step instead of theus_engine_map(e, process, key, slices,
 * reducer, args, result): 0 and *result (new reference), or a negative code
 * with the cause written into msg (msglen bytes; the step's failure message
 * quotes it). slices is the step's "slices", 0 when it gives none
 * (theus_engine_map would get two per worker). */
typedef int (*theus_pipeline_map_fn)(theus_engine *e, const char *process, const char *key, uint32_t slices,
                                     const char *reducer, const json_t *args, json_t **result, char *msg,
                                     size_t msglen, void *ud);

/* Routes the run's map steps to fn (the cluster layer spreads them over
 * ranks). fn NULL restores theus_engine_map; p NULL: nothing. */
THEUS_API void theus_pipeline_on_map(theus_pipeline *p, theus_pipeline_map_fn fn, void *ud);

/* One member of a parallel step, handed to a host (theus_pipeline_on_parallel). */
typedef struct theus_pipeline_call {
  const char *process; /* the member's process */
  const json_t *args;  /* its "args" (an object), or NULL */
  int rc;              /* 0, or a negative code with the cause in msg */
  json_t *result;      /* on success: its return value (new reference, the pipeline's), or NULL */
  char msg[1024];
} theus_pipeline_call;

/* How a host runs parallel steps instead of theus_engine_submit and
 * theus_job_wait (the cluster layer places members on ranks). start gets
 * the members that are to run, in file order (the operation budget may end
 * the list early), starts them and returns how many it started: fewer than
 * n when calls[k] could not start (k the count returned; its rc and msg say
 * why; the members after it do not run). finish is then called once per
 * started member, in file order: it waits for calls[i], commits its outputs
 * as theus_job_wait would (after the members before it, each on its own),
 * and sets rc, result and msg. The pipeline stores the member's "into" right
 * after its finish. */
typedef struct theus_pipeline_parallel_ops {
  size_t (*start)(theus_engine *e, theus_pipeline_call *calls, size_t n, void *ud);
  void (*finish)(theus_engine *e, theus_pipeline_call *calls, size_t i, void *ud);
} theus_pipeline_parallel_ops;

/* Routes the run's parallel steps to ops (copied; ops NULL restores the
 * engine's submit and wait); p NULL: nothing. */
THEUS_API void theus_pipeline_on_parallel(theus_pipeline *p, const theus_pipeline_parallel_ops *ops, void *ud);

/* Routes the run's `run` steps to ops as parallel steps of one member
 * (start with n = 1, then finish; the step's "into" is stored after
 * finish), instead of theus_engine_execute: the cluster layer places them
 * on ranks. A run step that fills a new array ("out") is a map and stays
 * with theus_engine_map_into. ops is copied; ops NULL restores
 * theus_engine_execute; p NULL: nothing. */
THEUS_API void theus_pipeline_on_run(theus_pipeline *p, const theus_pipeline_parallel_ops *ops, void *ud);

/* Loads the plugins and typed (libffi) processes, opens an engine with cfg
 * (its domain replaced by the pipeline's initial domain; cfg NULL: the
 * engine's defaults with the file's "workers"; cfg->arena NULL: the file's
 * "arena", cfg->arena set: exactly that config), calls the plugins'
 * registration functions, registers the file's processes, checks that every
 * step names a known process and reducer, then creates the heavy arrays.
 * THEUS_EPARSE for an error in the pipeline or a plugin (nothing ran, no
 * engine is left open), another code if the engine failed. */
THEUS_API int theus_pipeline_open_engine(theus_pipeline *p, const theus_engine_config *cfg, theus_engine **out);

typedef struct theus_pipeline_progress {
  size_t step, nsteps; /* top-level steps done / total */
  uint64_t ops, budget;
  int in_flight;       /* tasks running now (processes, map slices) */
} theus_pipeline_progress;

typedef void (*theus_pipeline_progress_fn)(const theus_pipeline_progress *pr, void *ud);

/* Called after every operation and whenever tasks start, from the thread
 * running the pipeline. NULL disables. */
THEUS_API void theus_pipeline_on_progress(theus_pipeline *p, theus_pipeline_progress_fn fn, void *ud);

/* Whose code the pipeline's thread is about to run, for a crash or exit
 * report (theus-run's signal handler and exit hook name the plugin or the
 * process from it). */
typedef enum theus_pipeline_code {
  THEUS_PIPELINE_CODE_LIBRARY = 0,     /* back in libtheus: no user code running */
  THEUS_PIPELINE_CODE_PLUGIN_LOAD,     /* dlopen of `plugin`: its constructors run */
  THEUS_PIPELINE_CODE_PLUGIN_REGISTER, /* theus_plugin_register of `plugin` */
  THEUS_PIPELINE_CODE_PROCESS          /* a step runs `process` (a parallel group: the last one started) */
} theus_pipeline_code;

typedef struct theus_pipeline_where {
  theus_pipeline_code code;
  const char *plugin;  /* path as given, for PLUGIN_*; else NULL */
  const char *process; /* process name, for PROCESS; else NULL */
  int local;           /* 1 if the code runs in this process (not parallel, or no
                          worker pool), 0 if in a worker */
} theus_pipeline_where;

typedef void (*theus_pipeline_where_fn)(const theus_pipeline_where *w, void *ud);

/* Calls fn (from the pipeline's thread) just before theus_pipeline_open_engine
 * and theus_pipeline_run call code the pipeline does not own, and with code
 * THEUS_PIPELINE_CODE_LIBRARY when it returned. The strings stay valid until
 * theus_pipeline_close. NULL disables. */
THEUS_API void theus_pipeline_on_enter(theus_pipeline *p, theus_pipeline_where_fn fn, void *ud);

/* Runs the steps on e (opened by theus_pipeline_open_engine). A failing step stops
 * the run: THEUS_EPROCESS/ECRASH/ECONTRACT/... with "file:line:column: step
 * ...: cause"; THEUS_ELIMIT when the operation budget is exhausted. */
THEUS_API int theus_pipeline_run(theus_pipeline *p, theus_engine *e);

/* Cancels the pipeline: theus_pipeline_run stops before its next step, and
 * the step running now stops where it is (a map cancels its slices, a
 * parallel task's worker is killed and replaced, a local process sees
 * theus_ctx_canceled); nothing more is committed and the run returns
 * THEUS_ECANCELED. Async-signal-safe (one atomic store): meant for a
 * SIGINT/SIGTERM handler. The cancel stays in force for later runs of p. */
THEUS_API void theus_pipeline_cancel(theus_pipeline *p);

/* Operations counted so far by theus_pipeline_run. */
THEUS_API uint64_t theus_pipeline_ops(const theus_pipeline *p);

/* The last message. Never NULL. */
THEUS_API const char *theus_pipeline_errmsg(const theus_pipeline *p);

/* Frees the pipeline and unloads its plugins: close the engine first. */
THEUS_API void theus_pipeline_close(theus_pipeline *p);

#ifdef __cplusplus
}
#endif
#endif /* THEUS_PIPELINE_H */
