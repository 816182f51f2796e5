/* theus-c — pipeline internals shared by pipeline*.c (not installed). */
#ifndef THEUS_PIPELINE_PIPELINE_INTERNAL_H
#define THEUS_PIPELINE_PIPELINE_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include "expr.h"
#include "ffi.h"
#include "pipeline_pos.h"
#include "theus/pipeline.h"

#define PIPE_MSG 1024
#define PIPE_PTR 512
#define PIPE_DEFAULT_BUDGET 10000
/* Array elements an expression may visit per operation of the budget. */
#define EXPR_WORK_PER_OP 1024

typedef enum step_kind { ST_RUN = 1, ST_PARALLEL, ST_MAP, ST_IF, ST_WHILE, ST_SET } step_kind;

typedef struct step step;
typedef struct steplist {
  step *v;
  size_t n;
} steplist;

struct step {
  step_kind kind;
  char ptr[PIPE_PTR];  /* JSON pointer of the step object */
  char *process;       /* run, map */
  json_t *args;        /* run, map (object or NULL) */
  char *into;          /* run, map: "domain.x" receiving the result; set: target */
  char *over;          /* map: heavy key */
  uint32_t slices;     /* map: 0 = two per worker */
  char *reducer;       /* map (NULL: a map into a heavy output without "result") */
  char *out_key;       /* map into "heavy.KEY": the output's key, else NULL */
  theus_dtype out_dtype; /* 0: the input's */
  unsigned out_ndim;     /* 0: the input's shape */
  uint64_t out_shape[THEUS_MAX_DIMS];
  char *partials;        /* map into "heavy.KEY": "sum", "min", "max" (theus_map_out.partials), or NULL */
  theus__expr *expr;   /* if, while: condition; set: value expression */
  json_t *value;       /* set: literal value */
  steplist body;       /* parallel members, then, do */
  steplist alt;        /* else */
};

typedef enum fill_kind { FILL_ZEROS = 1, FILL_RANGE, FILL_RANDOM, FILL_FILE } fill_kind;

typedef struct heavy_spec {
  char *key;
  char ptr[PIPE_PTR];
  theus_dtype dtype;
  unsigned ndim;
  uint64_t shape[THEUS_MAX_DIMS];
  fill_kind fill;
  double a, b;   /* range: start, step; random: min, max */
  uint64_t seed;
  char *file;    /* resolved path */
} heavy_spec;

typedef struct typed_proc {
  char ptr[PIPE_PTR];
  char *name, *symbol, *signature;
  char **args, **outputs; /* NULL-terminated */
  uint32_t not_lengths;   /* bit i: argument i + 1 is exempt from the length rule */
  bool parallel;
  int64_t timeout_ms;
  int memo; /* "memo": 1 true, -1 false, 0 absent */
  theus__ffi_proc ffi;
  bool ffi_ready;
} typed_proc;

typedef struct json_proc {
  char ptr[PIPE_PTR];
  json_t *obj;
} json_proc;

typedef struct plugin {
  char *path;     /* as resolved (relative to the pipeline or as given) */
  char ptr[PIPE_PTR]; /* "" for plugins added by theus_pipeline_add_plugin */
  void *handle;
} plugin;

struct theus_pipeline {
  char *path, *dir;
  char *text;
  theus__pos_index pos;
  json_t *root;
  char msg[PIPE_MSG];
  plugin *plugins;
  size_t nplugins;
  int workers;
  theus_arena_config arena; /* the file's "arena" (zero fields: the arena's defaults) */
  uint64_t budget, ops;
  json_t *domain;
  heavy_spec *heavy;
  size_t nheavy;
  typed_proc *typed;
  size_t ntyped;
  json_proc *jprocs;
  size_t njprocs;
  steplist steps;
  uint32_t default_slices;
  bool skip_heavy;
  theus_pipeline_map_fn map_fn;
  void *map_ud;
  char hook_msg[PIPE_MSG]; /* the cause map_fn gives when it fails */
  theus_pipeline_parallel_ops par_ops; /* start NULL: the engine's submit and wait */
  void *par_ud;
  theus_pipeline_parallel_ops run_ops; /* start NULL: run steps by theus_engine_execute */
  void *run_ud;
  theus_pipeline_progress_fn progress;
  void *progress_ud;
  theus_pipeline_progress pr;
  volatile int cancel; /* theus_pipeline_cancel (atomic stores and loads; signal-safe) */
  theus_pipeline_where_fn enter;
  void *enter_ud;
  bool pool; /* the engine has workers: parallel processes run there */
  bool loaded; /* theus_pipeline_load succeeded: a failed load only carries the message */
};

/* Argument checks of the public calls (issue 10): NULL or a pipeline whose
 * load failed gives THEUS_EINVAL (with a message when there is an object). */
#define THEUS__PIPE_ARG(p, fn)                                                                            \
  do {                                                                                                    \
    if (!(p)) return THEUS_EINVAL;                                                                        \
    if (!(p)->loaded) {                                                                                   \
      snprintf((p)->msg, sizeof (p)->msg, fn ": this pipeline did not load (read theus_pipeline_errmsg, " \
               "then theus_pipeline_close it)");                                                          \
      return THEUS_EINVAL;                                                                                \
    }                                                                                                     \
  } while (0)

/* Tells the on_enter callback (if any) whose code runs next. */
void theus__pipe_enter(theus_pipeline *p, theus_pipeline_code code, const char *plugin, const char *process, int local);

/* Sets p->msg to "file:line:col: " + message (position of the value or key
 * at ptr) and returns THEUS_EPARSE. */
int theus__pipe_err(theus_pipeline *p, const char *ptr, bool key, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* theus__pipe_err for a failure with code `code` while acting on the pipeline's
 * content: running out of memory or a system failure keeps its code
 * (THEUS_ENOMEM, THEUS_ESYS: nothing is wrong with the file); any other code
 * becomes THEUS_EPARSE. */
int theus__pipe_err_code(theus_pipeline *p, int code, const char *ptr, bool key, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/* Same with an explicit column offset inside a string value (expressions). */
int theus__pipe_err_at(theus_pipeline *p, const char *ptr, int col_offset, int code, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/* Checks obj has only keys from allowed (NULL-terminated); the message names
 * the unknown key, what was being read, the allowed keys and a near match. */
int theus__pipe_check_keys(theus_pipeline *p, const json_t *obj, const char *ptr, const char *const *allowed,
                           const char *what);

/* "a string", "an object"... for messages. */
const char *theus__pipe_type_name(const json_t *v);

/* Reads member key of obj as a string; required or absent (*out NULL).
 * The message says what it is for. */
int theus__pipe_get_string(theus_pipeline *p, const json_t *obj, const char *ptr, const char *key, bool required,
                           const char *what, char **out);

/* Appends a segment to a pointer into dst (PIPE_PTR bytes). A pointer that
 * does not fit is cut to its longest ancestor that does, so a message about
 * a step nested that deep gives the position of an enclosing step. */
void theus__pipe_child(char *dst, const char *ptr, const char *key, size_t index);

/* "steps[2].then[0]" for the pointer "/steps/2/then/0". */
const char *theus__pipe_ptr_label(const char *ptr, char *buf, size_t cap);

/* Resolves path against the pipeline's directory (absolute paths unchanged). */
char *theus__pipe_resolve(const theus_pipeline *p, const char *path);

/* Fills a heavy array as its spec says. */
int theus__pipe_fill(theus_pipeline *p, const heavy_spec *h, void *data);

/* Number of strings in a NULL-terminated vector (NULL counts 0). */
size_t theus__pipe_strv_len(char **v);

/* dlcloses every loaded plugin (pipeline_run.c). */
void theus__pipe_unload_plugins(theus_pipeline *p);

/* Parses a file: definitions (pipeline.c) and steps (pipeline_steps.c). */
/* Parses "shape" (an integer or an array of 1 to 8) for heavy.key into
 * *ndim and shape; dtype (0 if unknown yet) bounds the byte count. */
int theus__pipe_shape(theus_pipeline *p, const char *key, theus_dtype dtype, const json_t *v, const char *ptr,
                      unsigned *ndim, uint64_t *shape);
int theus__pipe_parse_steps(theus_pipeline *p, const json_t *arr, const char *ptr, steplist *out, bool run_only);
void theus__pipe_steps_free(steplist *l);

#endif /* THEUS_PIPELINE_PIPELINE_INTERNAL_H */
