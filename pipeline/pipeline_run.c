/* theus-c — pipelines: plugins, opening the engine, heavy arrays, running steps. */
#include <dlfcn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base.h" /* theus__os_cpus */
#include "pipeline_internal.h"

/* ---- plugins and process lookup ------------------------------------------------- */

static int plugin_err(theus_pipeline *p, const plugin *pl, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int plugin_err(theus_pipeline *p, const plugin *pl, const char *fmt, ...) {
  char what[PIPE_MSG / 2];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(what, sizeof what, fmt, ap);
  va_end(ap);
  if (pl->ptr[0]) return theus__pipe_err(p, pl->ptr, false, "plugin %s: %s", pl->path, what);
  snprintf(p->msg, sizeof p->msg, "theus_pipeline_add_plugin %s: %s", pl->path, what);
  return THEUS_EPARSE;
}

static int load_plugins(theus_pipeline *p) {
  for (size_t i = 0; i < p->nplugins; i++) {
    plugin *pl = &p->plugins[i];
    /* a bare name would make dlopen search the library path: make it a path */
    char buf[4096];
    snprintf(buf, sizeof buf, "%s%s", strchr(pl->path, '/') ? "" : "./", pl->path);
    theus__pipe_enter(p, THEUS_PIPELINE_CODE_PLUGIN_LOAD, pl->path, NULL, 1);
    pl->handle = dlopen(buf, RTLD_NOW | RTLD_LOCAL);
    theus__pipe_enter(p, THEUS_PIPELINE_CODE_LIBRARY, NULL, NULL, 1);
    if (!pl->handle)
      return plugin_err(p, pl, "cannot load it: %s; build the plugin or fix its path (the pipeline's \"plugins\" "
                        "are relative to the pipeline file)", dlerror());
    if (!dlsym(pl->handle, THEUS_PLUGIN_REGISTER_SYMBOL))
      return plugin_err(p, pl, "it exports no %s(theus_engine *); define it with THEUS_PLUGIN_EXPORT",
                        THEUS_PLUGIN_REGISTER_SYMBOL);
  }
  return 0;
}

void theus__pipe_unload_plugins(theus_pipeline *p) {
  for (size_t i = 0; i < p->nplugins; i++)
    if (p->plugins[i].handle) {
      dlclose(p->plugins[i].handle);
      p->plugins[i].handle = NULL;
    }
}

/* Looks a symbol up in the plugins (in order), then in the program itself. */
static void *find_symbol(theus_pipeline *p, const char *name) {
  for (size_t i = 0; i < p->nplugins; i++) {
    void *s = p->plugins[i].handle ? dlsym(p->plugins[i].handle, name) : NULL;
    if (s) return s;
  }
  return dlsym(RTLD_DEFAULT, name);
}

static theus_process_fn resolve_fn(const char *name, void *ud) {
  void *s = find_symbol(ud, name);
  theus_process_fn fn;
  memcpy(&fn, &s, sizeof fn); /* object pointer to function pointer, as dlsym requires */
  return fn;
}

static int prepare_typed(theus_pipeline *p) {
  for (size_t i = 0; i < p->ntyped; i++) {
    typed_proc *t = &p->typed[i];
    void *sym = find_symbol(p, t->symbol);
    char sp[PIPE_PTR];
    theus__pipe_child(sp, t->ptr, "symbol", 0); /* the position falls back to the process without one */
    if (!sym)
      return theus__pipe_err(p, sp, false,
                             "process \"%s\": no plugin exports the C function \"%s\"; load the plugin that defines "
                             "it (\"plugins\" or theus_pipeline_add_plugin) and export it with THEUS_PLUGIN_EXPORT",
                             t->name, t->symbol);
    void (*fn)(void);
    memcpy(&fn, &sym, sizeof fn);
    char err[THEUS_FFI_ERRLEN];
    int rc = theus__ffi_proc_init(&t->ffi, fn, t->signature, (const char *const *)t->args,
                                  theus__pipe_strv_len(t->args), (const char *const *)t->outputs,
                                  theus__pipe_strv_len(t->outputs), err, sizeof err);
    if (rc) return theus__pipe_err_code(p, rc, t->ptr, false, "process \"%s\": %s", t->name, err);
    t->ffi_ready = true;
    if ((rc = theus__ffi_proc_not_length(&t->ffi, t->not_lengths, err, sizeof err)))
      return theus__pipe_err(p, t->ptr, false, "process \"%s\": %s", t->name, err);
  }
  return 0;
}

/* ---- registration and checks ------------------------------------------------------- */

static int register_plugins(theus_pipeline *p, theus_engine *e) {
  for (size_t i = 0; i < p->nplugins; i++) {
    void *sym = dlsym(p->plugins[i].handle, THEUS_PLUGIN_REGISTER_SYMBOL);
    theus_plugin_register_fn reg;
    memcpy(&reg, &sym, sizeof reg);
    char before[PIPE_MSG];
    snprintf(before, sizeof before, "%s", theus_engine_errmsg(e));
    theus__pipe_enter(p, THEUS_PIPELINE_CODE_PLUGIN_REGISTER, p->plugins[i].path, NULL, 1);
    int rc = reg(e);
    theus__pipe_enter(p, THEUS_PIPELINE_CODE_LIBRARY, NULL, NULL, 1);
    if (!rc) continue;
    const char *msg = theus_engine_errmsg(e);
    if (strcmp(msg, before)) /* an engine call inside it failed: that is the cause */
      return plugin_err(p, &p->plugins[i], "%s failed (%s): %s", THEUS_PLUGIN_REGISTER_SYMBOL, theus_strerror(rc),
                        msg);
    return plugin_err(p, &p->plugins[i],
                      "%s failed: it returned %d (%s) and no engine call in it failed, so the cause is the plugin's "
                      "own code (a check of its own, a resource it could not get); see its source or its stderr",
                      THEUS_PLUGIN_REGISTER_SYMBOL, rc,
                      rc < 0 && strcmp(theus_err_name(rc), "THEUS_E?") ? theus_err_name(rc) : "not a THEUS_E* code");
  }
  return 0;
}

static int register_typed(theus_pipeline *p, theus_engine *e) {
  for (size_t i = 0; i < p->ntyped; i++) {
    typed_proc *t = &p->typed[i];
    char **inputs = theus__ffi_proc_inputs(&t->ffi);
    if (!inputs)
      return theus__pipe_err_code(p, THEUS_ENOMEM, t->ptr, false, "process \"%s\": out of memory", t->name);
    theus_contract c = {.name = t->name,
                        .fn = theus__ffi_process,
                        .inputs = (const char *const *)inputs,
                        .outputs = (const char *const *)t->outputs,
                        .parallel = t->parallel,
                        .semantic = THEUS_PURE,
                        .timeout_ms = t->timeout_ms,
                        .userdata = &t->ffi,
                        .memo = t->memo};
    int rc = theus_engine_register(e, &c);
    theus__ffi_strv_free(inputs);
    if (rc) return theus__pipe_err_code(p, rc, t->ptr, false, "process \"%s\": %s", t->name, theus_engine_errmsg(e));
  }
  return 0;
}

static int register_json(theus_pipeline *p, theus_engine *e) {
  for (size_t i = 0; i < p->njprocs; i++) {
    theus_contract_doc *doc = NULL;
    char err[768];
    int rc = theus_contract_from_json(p->jprocs[i].obj, p->path, resolve_fn, p, &doc);
    snprintf(err, sizeof err, "%s", theus_contract_doc_errmsg(doc));
    if (!rc) {
      rc = theus_engine_register(e, theus_contract_doc_get(doc));
      if (rc) snprintf(err, sizeof err, "%s", theus_engine_errmsg(e));
    }
    theus_contract_doc_release(doc);
    if (rc)
      return theus__pipe_err(p, p->jprocs[i].ptr, false, "%s%s", err,
                             rc == THEUS_ENOTFOUND ? "; export the function from a plugin with THEUS_PLUGIN_EXPORT"
                                                   : "");
  }
  return 0;
}

static int check_steps(theus_pipeline *p, theus_engine *e, const steplist *l) {
  for (size_t i = 0; i < l->n; i++) {
    const step *s = &l->v[i];
    char kp[PIPE_PTR];
    if (s->process && !theus_engine_contract(e, s->process)) {
      theus__pipe_child(kp, s->ptr, s->kind == ST_MAP ? "map" : "run", 0);
      const char *near = theus_engine_process_near(e, s->process);
      return theus__pipe_err(p, kp, false,
                             "unknown process \"%s\"; %s%s%sregister it in a plugin (\"plugins\" or "
                             "theus_pipeline_add_plugin) or declare it in \"processes\"",
                             s->process, near ? "did you mean \"" : "", near ? near : "", near ? "\"? " : "");
    }
    if (s->kind == ST_MAP && !theus_engine_contract(e, s->process)->parallel) {
      theus__pipe_child(kp, s->ptr, "map", 0);
      return theus__pipe_err(p, kp, false, "process \"%s\" is not parallel; a map step runs it in the worker pool, "
                             "so declare it with parallel true", s->process);
    }
    if (s->kind == ST_MAP && s->reducer && !theus_engine_has_reducer(e, s->reducer)) {
      theus__pipe_child(kp, s->ptr, "reduce", 0);
      return theus__pipe_err(p, kp, false,
                             "unknown reducer \"%s\"; use sum, min, max, concat or one a plugin registers "
                             "(theus_engine_register_reducer)",
                             s->reducer);
    }
    int rc = check_steps(p, e, &s->body);
    if (!rc) rc = check_steps(p, e, &s->alt);
    if (rc) return rc;
  }
  return 0;
}

/* An array over an arena limit: the message names the pipeline field to
 * raise and a value that fits (the arena's own message names the config
 * field; theus-run adds its flag). */
static void heavy_fail(theus_pipeline *p, theus_engine *e, const heavy_spec *h, int rc) {
  uint64_t bytes = theus_dtype_size(h->dtype);
  for (unsigned d = 0; d < h->ndim; d++) bytes = h->shape[d] && bytes > UINT64_MAX / h->shape[d] ? UINT64_MAX : bytes * h->shape[d];
  char fit[32], size[32], hint[160] = "";
  theus_size_format(bytes, 0, size, sizeof size);
  if (rc == THEUS_ETOOBIG) {
    snprintf(hint, sizeof hint, "; in this pipeline set \"arena\": {\"single_limit\": \"%s\"}",
             theus_size_format(bytes, 1, fit, sizeof fit));
  } else if (rc == THEUS_EBUDGET) {
    theus_arena_stats st = {0};
    theus_arena_stats_get(theus_engine_arena(e), &st);
    uint64_t need = st.bytes_live > UINT64_MAX - bytes ? UINT64_MAX : st.bytes_live + bytes;
    snprintf(hint, sizeof hint, "; in this pipeline set \"arena\": {\"budget\": \"%s\"}",
             theus_size_format(need, 1, fit, sizeof fit));
  }
  theus__pipe_err(p, h->ptr, true, "cannot allocate heavy.%s (%s): %s%s", h->key, size, theus_engine_errmsg(e), hint);
}

static int create_heavy(theus_pipeline *p, theus_engine *e) {
  if (!p->nheavy || p->skip_heavy) return 0;
  json_t *patch = json_object();
  int rc = patch ? 0 : THEUS_ENOMEM;
  if (rc) snprintf(p->msg, sizeof p->msg, "%s: out of memory creating the heavy arrays", p->path);
  for (size_t i = 0; !rc && i < p->nheavy; i++) {
    heavy_spec *h = &p->heavy[i];
    void *data;
    rc = theus_engine_heavy_alloc(e, h->key, h->dtype, h->ndim, h->shape, &data);
    if (rc) {
      heavy_fail(p, e, h, rc);
      break;
    }
    if (json_object_set_new(patch, h->key, json_true())) {
      rc = theus__pipe_err_code(p, THEUS_ENOMEM, h->ptr, true, "heavy.%s: out of memory", h->key);
      break;
    }
    rc = theus__pipe_fill(p, h, data);
  }
  if (!rc && (rc = theus_engine_cas(e, theus_engine_version(e), NULL, patch, NULL)))
    snprintf(p->msg, sizeof p->msg, "%s: cannot publish the heavy arrays: %s", p->path, theus_engine_errmsg(e));
  json_decref(patch);
  return rc;
}

int theus_pipeline_open_engine(theus_pipeline *p, const theus_engine_config *cfg, theus_engine **out) {
  THEUS__PIPE_ARG(p, "theus_pipeline_open_engine");
  if (!out) {
    snprintf(p->msg, sizeof p->msg, "theus_pipeline_open_engine: out is NULL");
    return THEUS_EINVAL;
  }
  *out = NULL;
  p->msg[0] = '\0';
  int rc = load_plugins(p);
  if (!rc) rc = prepare_typed(p);
  if (rc) {
    if (!p->msg[0]) snprintf(p->msg, sizeof p->msg, "%s: cannot open the engine: %s", p->path, theus_strerror(rc));
    return rc;
  }
  theus_engine_config c;
  if (cfg) {
    c = *cfg;
  } else {
    theus_engine_config_init(&c);
    if (p->workers != -2) c.workers = p->workers;
  }
  if (!c.arena) c.arena = &p->arena; /* zero fields: the arena's defaults */
  c.domain = p->domain;
  int workers = c.workers > 0 ? c.workers : c.workers == 0 ? (int)theus__os_cpus() : 1; /* as the pool counts */
  p->default_slices = (uint32_t)workers * 2;
  p->pool = c.workers >= 0;
  theus_engine *e = NULL;
  rc = theus_engine_open(&c, &e); /* after the plugins: the fork server must have their code */
  if (rc) { /* on failure the engine (if any) only carries the message */
    snprintf(p->msg, sizeof p->msg, "%s: cannot open the engine: %s", p->path,
             e ? theus_engine_errmsg(e) : theus_strerror(rc));
    theus_engine_close(e);
    return rc;
  }
  rc = register_plugins(p, e);
  if (!rc) rc = register_typed(p, e);
  if (!rc) rc = register_json(p, e);
  if (!rc) rc = check_steps(p, e, &p->steps);
  if (!rc) rc = create_heavy(p, e);
  if (rc) {
    if (!p->msg[0]) snprintf(p->msg, sizeof p->msg, "%s: cannot open the engine: %s", p->path, theus_strerror(rc));
    theus_engine_close(e);
    return rc;
  }
  *out = e;
  return 0;
}

/* ---- running ------------------------------------------------------------------------------ */

static void report(theus_pipeline *p, int in_flight) {
  p->pr.in_flight = in_flight;
  p->pr.ops = p->ops;
  p->pr.budget = p->budget;
  if (p->progress) p->progress(&p->pr, p->progress_ud);
}

/* Before a step hands its process to the engine: whose code runs, and where. */
static void enter_process(theus_pipeline *p, theus_engine *e, const step *s) {
  if (!p->enter) return;
  const theus_contract *c = theus_engine_contract(e, s->process);
  theus__pipe_enter(p, THEUS_PIPELINE_CODE_PROCESS, NULL, s->process, !(c && c->parallel && p->pool));
}

static void leave_process(theus_pipeline *p) { theus__pipe_enter(p, THEUS_PIPELINE_CODE_LIBRARY, NULL, NULL, 1); }

static int step_fail(theus_pipeline *p, const step *s, int code, const char *cause) {
  static const char *const names[] = {"", "run", "parallel", "map", "if", "while", "set"};
  char label[PIPE_PTR];
  theus__pipe_ptr_label(s->ptr, label, sizeof label);
  char what[256] = "";
  if (s->process) snprintf(what, sizeof what, " \"%s\"", s->process);
  /* The arena's message names the config field; a pipeline user sets it in the file. */
  const char *hint = code == THEUS_ETOOBIG ? "; in this pipeline raise \"arena\": {\"single_limit\": ...}"
                   : code == THEUS_EBUDGET ? "; in this pipeline raise \"arena\": {\"budget\": ...}" : "";
  theus__pipe_err_at(p, s->ptr, 0, code, "step %s (%s%s) failed: %s: %s%s", label, names[s->kind], what,
                     theus_strerror(code), cause, hint);
  return code;
}

static int charge(theus_pipeline *p, const step *s) {
  if (p->ops >= p->budget) {
    char label[PIPE_PTR];
    theus__pipe_ptr_label(s->ptr, label, sizeof label);
    return theus__pipe_err_at(p, s->ptr, 0, THEUS_ELIMIT,
                              "operation budget of %llu exhausted at step %s; a while loop that makes no progress? "
                              "Fix its condition or raise \"budget\" in the pipeline",
                              (unsigned long long)p->budget, label);
  }
  p->ops++;
  report(p, 0);
  return 0;
}

static int store(theus_pipeline *p, theus_engine *e, const step *s, json_t *value) {
  if (!s->into || !value) {
    json_decref(value);
    return 0;
  }
  int rc = theus_engine_set(e, s->into, value);
  return rc ? step_fail(p, s, rc, theus_engine_errmsg(e)) : 0;
}

static int eval_expr(theus_pipeline *p, theus_engine *e, const step *s, bool want_bool, bool *b, json_t **v) {
  theus_snapshot *snap;
  int rc = theus_engine_snapshot(e, &snap);
  if (rc) return step_fail(p, s, rc, theus_engine_errmsg(e));
  char err[256];
  int col = 0;
  uint64_t work = 0;
  const json_t *dom = theus_snapshot_domain(snap);
  rc = want_bool ? theus__expr_eval_bool(s->expr, dom, b, err, sizeof err, &col, &work)
                 : theus__expr_eval(s->expr, dom, v, err, sizeof err, &col, &work);
  theus_snapshot_release(snap);
  const char *key = s->kind == ST_IF ? "if" : s->kind == ST_WHILE ? "while" : "expr";
  char kp[PIPE_PTR], label[PIPE_PTR];
  theus__pipe_child(kp, s->ptr, key, 0);
  theus__pipe_ptr_label(s->ptr, label, sizeof label);
  if (rc)
    return theus__pipe_err_at(p, kp, col, rc, "step %s: \"%s\" expression \"%s\": %s", label, key,
                              theus__expr_text(s->expr), err);
  /* Array work counts too: every EXPR_WORK_PER_OP elements visited cost one
   * more operation, so a loop over big vectors meets the budget as well. */
  uint64_t extra = work / EXPR_WORK_PER_OP;
  if (extra > p->budget - p->ops) {
    if (v) json_decref(*v), *v = NULL;
    return theus__pipe_err_at(p, kp, 0, THEUS_ELIMIT,
                              "operation budget of %llu exhausted at step %s (its expression visited %llu array "
                              "elements, %llu operations); raise \"budget\" in the pipeline",
                              (unsigned long long)p->budget, label, (unsigned long long)work,
                              (unsigned long long)extra);
  }
  p->ops += extra;
  return 0;
}

/* The engine's way to run a parallel group (theus_pipeline_on_parallel's
 * default): every member submitted, then waited for in file order. ud: the
 * jobs, one per member. */
static size_t engine_start(theus_engine *e, theus_pipeline_call *calls, size_t n, void *ud) {
  theus_job **jobs = ud;
  for (size_t i = 0; i < n; i++) {
    if ((calls[i].rc = theus_engine_submit(e, calls[i].process, calls[i].args, &jobs[i]))) {
      snprintf(calls[i].msg, sizeof calls[i].msg, "%s", theus_engine_errmsg(e));
      return i;
    }
  }
  return n;
}

static void engine_finish(theus_engine *e, theus_pipeline_call *calls, size_t i, void *ud) {
  theus_job **jobs = ud;
  (void)e;
  if ((calls[i].rc = theus_job_wait(jobs[i], -1, &calls[i].result)))
    snprintf(calls[i].msg, sizeof calls[i].msg, "%s", theus_job_errmsg(jobs[i]));
}

/* A group of run steps v[0..count) (a parallel step's members, or one run
 * step a host's theus_pipeline_on_run takes) through hops (start NULL: the
 * engine's ops): every member commits on its own, its outputs (when its job
 * ends) and its "into" alike, whatever its siblings did; the step fails
 * after all finished, with the first failing member in file order
 * (docs/pipeline-format.md, "What a step commits"). charge_each: each
 * member costs an operation here (a lone run step was charged by exec_step). */
static int run_group(theus_pipeline *p, theus_engine *e, const step *v, size_t count, bool charge_each,
                     const theus_pipeline_parallel_ops *hops, void *hud) {
  theus_pipeline_call *calls = calloc(count, sizeof *calls);
  theus_job **jobs = calloc(count, sizeof *jobs);
  int first = calls && jobs ? 0 : THEUS_ENOMEM;
  size_t n = 0;
  for (size_t i = 0; i < count && !first; i++) {
    const step *m = &v[i];
    if (charge_each && (first = charge(p, m))) break;
    enter_process(p, e, m);
    calls[n].process = m->process;
    calls[n++].args = m->args;
  }
  static const theus_pipeline_parallel_ops engine_ops = {engine_start, engine_finish};
  theus_pipeline_parallel_ops ops = hops->start ? *hops : engine_ops;
  void *ud = hops->start ? hud : jobs;
  size_t started = n ? ops.start(e, calls, n, ud) : 0;
  report(p, (int)started);
  if (started < n && !first) first = step_fail(p, &v[started], calls[started].rc, calls[started].msg);
  for (size_t i = 0; i < started; i++) { /* wait for every started member, even after a failure */
    ops.finish(e, calls, i, ud);
    int rc = calls[i].rc;
    if (rc) {
      json_decref(calls[i].result);
      if (!first) first = step_fail(p, &v[i], rc, calls[i].msg);
    } else if ((rc = store(p, e, &v[i], calls[i].result)) && !first) {
      first = rc;
    }
    report(p, (int)(started - i - 1));
  }
  leave_process(p);
  for (size_t i = 0; i < n; i++) /* the engine's jobs (none with a host's ops), after every into is stored */
    theus_job_release(jobs[i]);
  free(jobs);
  free(calls);
  return first;
}

static int exec_list(theus_pipeline *p, theus_engine *e, const steplist *l, bool top);

static int exec_step(theus_pipeline *p, theus_engine *e, const step *s) {
  int rc = s->kind == ST_PARALLEL ? 0 : charge(p, s);
  if (rc) return rc;
  json_t *result = NULL;
  bool cond = false;
  switch (s->kind) {
  case ST_RUN:
    if (p->run_ops.start && !s->out_key) /* a host places it (the cluster layer) */
      return run_group(p, e, s, 1, false, &p->run_ops, p->run_ud);
    report(p, 1);
    enter_process(p, e, s);
    if (s->out_key) { /* fills a new array: a map without input, one slice unless told */
      theus_map_out mo = {.key = s->out_key, .dtype = s->out_dtype, .ndim = s->out_ndim};
      memcpy(mo.shape, s->out_shape, sizeof mo.shape);
      rc = theus_engine_map_into(e, s->process, NULL, s->slices ? s->slices : 1, "concat", s->args, &mo, &result,
                                 NULL);
      leave_process(p);
      json_decref(result);
      return rc ? step_fail(p, s, rc, theus_engine_errmsg(e)) : 0;
    }
    rc = theus_engine_execute(e, s->process, s->args, &result);
    leave_process(p);
    return rc ? step_fail(p, s, rc, theus_engine_errmsg(e)) : store(p, e, s, result);
  case ST_MAP:
    report(p, (int)(s->slices ? s->slices : p->default_slices));
    enter_process(p, e, s);
    if (s->out_key) {
      theus_map_out mo = {.key = s->out_key, .dtype = s->out_dtype, .ndim = s->out_ndim, .partials = s->partials};
      memcpy(mo.shape, s->out_shape, sizeof mo.shape);
      rc = theus_engine_map_into(e, s->process, s->over, s->slices ? s->slices : p->default_slices,
                                 s->reducer ? s->reducer : "concat", s->args, &mo, &result, NULL);
    } else if (p->map_fn) { /* a host spreads it (the cluster layer) */
      rc = p->map_fn(e, s->process, s->over, s->slices, s->reducer, s->args, &result, p->hook_msg,
                     sizeof p->hook_msg, p->map_ud);
    } else {
      rc = theus_engine_map(e, s->process, s->over, s->slices ? s->slices : p->default_slices, s->reducer, s->args,
                            &result);
    }
    leave_process(p);
    if (rc) return step_fail(p, s, rc, p->map_fn && !s->out_key ? p->hook_msg : theus_engine_errmsg(e));
    if (!s->into) {
      json_decref(result);
      return 0;
    }
    return store(p, e, s, result);
  case ST_PARALLEL: return run_group(p, e, s->body.v, s->body.n, true, &p->par_ops, p->par_ud);
  case ST_SET:
    if (s->expr && (rc = eval_expr(p, e, s, false, NULL, &result))) return rc;
    if (!s->expr && !(result = json_deep_copy(s->value))) /* store() would skip the step */
      return step_fail(p, s, THEUS_ENOMEM, "out of memory copying the value");
    return store(p, e, s, result);
  case ST_IF:
    if ((rc = eval_expr(p, e, s, true, &cond, NULL))) return rc;
    return exec_list(p, e, cond ? &s->body : &s->alt, false);
  default: /* while: the first test was charged above, each further one costs an operation too */
    for (;;) {
      if ((rc = eval_expr(p, e, s, true, &cond, NULL)) || !cond) return rc;
      if ((rc = exec_list(p, e, &s->body, false)) || (rc = charge(p, s))) return rc;
    }
  }
}

static int exec_list(theus_pipeline *p, theus_engine *e, const steplist *l, bool top) {
  for (size_t i = 0; i < l->n; i++) {
    if (__atomic_load_n(&p->cancel, __ATOMIC_ACQUIRE)) {
      char label[PIPE_PTR];
      theus__pipe_ptr_label(l->v[i].ptr, label, sizeof label);
      return theus__pipe_err_at(p, l->v[i].ptr, 0, THEUS_ECANCELED, "canceled before step %s", label);
    }
    int rc = exec_step(p, e, &l->v[i]);
    if (rc) return rc;
    if (top) {
      p->pr.step = i + 1;
      report(p, 0);
    }
  }
  return 0;
}

void theus_pipeline_skip_heavy(theus_pipeline *p) {
  if (p)
    p->skip_heavy = true;
}

void theus_pipeline_on_map(theus_pipeline *p, theus_pipeline_map_fn fn, void *ud) {
  if (!p)
    return;
  p->map_fn = fn;
  p->map_ud = ud;
}

static void set_ops(theus_pipeline_parallel_ops *dst, void **dst_ud, const theus_pipeline_parallel_ops *ops,
                    void *ud) {
  *dst = ops && ops->start && ops->finish ? *ops : (theus_pipeline_parallel_ops){NULL, NULL};
  *dst_ud = ud;
}

void theus_pipeline_on_parallel(theus_pipeline *p, const theus_pipeline_parallel_ops *ops, void *ud) {
  if (p)
    set_ops(&p->par_ops, &p->par_ud, ops, ud);
}

void theus_pipeline_on_run(theus_pipeline *p, const theus_pipeline_parallel_ops *ops, void *ud) {
  if (p)
    set_ops(&p->run_ops, &p->run_ud, ops, ud);
}

int theus_pipeline_run(theus_pipeline *p, theus_engine *e) {
  THEUS__PIPE_ARG(p, "theus_pipeline_run");
  if (!e) {
    snprintf(p->msg, sizeof p->msg, "theus_pipeline_run: the engine is NULL");
    return THEUS_EINVAL;
  }
  p->ops = 0;
  p->msg[0] = '\0';
  p->pr = (theus_pipeline_progress){0, p->steps.n, 0, p->budget, 0};
  /* The engine watches the same flag: a cancel stops the running map or
   * job and commits nothing more. */
  theus_engine_set_cancel(e, &p->cancel);
  int rc = exec_list(p, e, &p->steps, true);
  theus_engine_set_cancel(e, NULL);
  if (rc && !p->msg[0]) snprintf(p->msg, sizeof p->msg, "%s: the run stopped: %s", p->path, theus_strerror(rc));
  return rc;
}

void theus_pipeline_cancel(theus_pipeline *p) {
  if (p) __atomic_store_n(&p->cancel, 1, __ATOMIC_SEQ_CST);
}
