/* theus-c — pipeline steps: parsing and checking every step kind. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base.h" /* theus__near */
#include "pipeline_internal.h"

static const char *const kinds[] = {"run", "parallel", "map", "if", "while", "set", NULL};

static int parse_expr(theus_pipeline *p, const json_t *obj, const char *ptr, const char *key, theus__expr **out) {
  char kp[PIPE_PTR];
  theus__pipe_child(kp, ptr, key, 0);
  json_t *v = json_object_get(obj, key);
  if (!json_is_string(v))
    return theus__pipe_err(p, kp, false, "\"%s\" must be an expression string such as \"domain.err > 0.01\", found %s",
                           key, theus__pipe_type_name(v));
  char err[256];
  int col = 0;
  int rc = theus__expr_parse(json_string_value(v), out, err, sizeof err, &col);
  if (rc)
    return theus__pipe_err_at(p, kp, col, rc == THEUS_ENOMEM ? rc : THEUS_EPARSE, "in expression \"%s\": %s",
                              json_string_value(v), err);
  return rc;
}

static int domain_path(theus_pipeline *p, const json_t *obj, const char *ptr, const char *key, bool required,
                       char **out) {
  int rc = theus__pipe_get_string(p, obj, ptr, key, required, "a domain path such as \"domain.result\"", out);
  if (rc || !*out) return rc;
  char err[256] = "";
  if (strncmp(*out, "domain.", 7) != 0 || strchr(*out, '*') || theus_path_check(*out, err, sizeof err)) {
    char kp[PIPE_PTR];
    theus__pipe_child(kp, ptr, key, 0);
    return theus__pipe_err(p, kp, false, "\"%s\": \"%s\" is not a domain path; write domain.name or domain.a.b%s%s",
                           key, *out, err[0] ? ": " : "", err);
  }
  return 0;
}

static int get_args(theus_pipeline *p, const json_t *obj, const char *ptr, step *s) {
  json_t *v = json_object_get(obj, "args");
  if (!v) return 0;
  if (!json_is_object(v)) {
    char kp[PIPE_PTR];
    theus__pipe_child(kp, ptr, "args", 0);
    return theus__pipe_err(p, kp, false, "\"args\" must be an object (the call arguments), found %s",
                           theus__pipe_type_name(v));
  }
  s->args = json_incref(v);
  return 0;
}

static int parse_map_out(theus_pipeline *p, const json_t *obj, step *s);
static int parse_slices(theus_pipeline *p, const json_t *obj, step *s);

/* A run step may fill a new heavy array: "into": "heavy.KEY" with "dtype"
 * and "shape" (and "slices", default 1), not inside a parallel group. */
static int parse_run(theus_pipeline *p, const json_t *obj, step *s, bool member) {
  static const char *const allowed[] = {"run", "args", "into", "name", "dtype", "shape", "slices", NULL};
  int rc = theus__pipe_check_keys(p, obj, s->ptr, allowed, "a run step");
  if (!rc) rc = theus__pipe_get_string(p, obj, s->ptr, "run", true, "the process to run", &s->process);
  if (!rc) rc = get_args(p, obj, s->ptr, s);
  const char *into = json_string_value(json_object_get(obj, "into"));
  bool heavy = into && !strncmp(into, "heavy.", 6);
  if (!rc && heavy && member)
    return theus__pipe_err(p, s->ptr, false, "a run step inside a parallel group cannot fill a heavy array; make it "
                           "a step of its own");
  if (!rc && heavy) {
    rc = parse_map_out(p, obj, s);
    if (!rc && (!s->out_dtype || !s->out_ndim))
      rc = theus__pipe_err(p, s->ptr, false, "a run step into \"%s\" needs the array's \"dtype\" and \"shape\"",
                           into);
    return rc ? rc : parse_slices(p, obj, s);
  }
  if (!rc && (json_object_get(obj, "dtype") || json_object_get(obj, "shape") || json_object_get(obj, "slices")))
    rc = theus__pipe_err(p, s->ptr, false, "\"dtype\", \"shape\" and \"slices\" belong to a run step that fills a "
                         "heavy array (\"into\": \"heavy.KEY\")");
  if (!rc) rc = domain_path(p, obj, s->ptr, "into", false, &s->into);
  return rc;
}

/* "into": "heavy.KEY" with optional "dtype" and "shape" (default: the
 * input's), and "reduce" + "result" (a domain path) together or neither. */
static int parse_map_out(theus_pipeline *p, const json_t *obj, step *s) {
  char kp[PIPE_PTR], why[256];
  int rc = theus__pipe_get_string(p, obj, s->ptr, "into", true, "", &s->out_key);
  if (rc) return rc;
  memmove(s->out_key, s->out_key + 6, strlen(s->out_key + 6) + 1);
  char path[300];
  snprintf(path, sizeof path, "heavy.%s", s->out_key);
  theus__pipe_child(kp, s->ptr, "into", 0);
  if (theus_path_check(path, why, sizeof why) || strchr(s->out_key, '*'))
    return theus__pipe_err(p, kp, false, "\"into\": \"%s\" is not a heavy key: %s", path, why[0] ? why : "no '*'");
  char *dtype = NULL;
  rc = theus__pipe_get_string(p, obj, s->ptr, "dtype", false, "element type: u8..u64, i8..i64, f32, f64", &dtype);
  if (!rc && dtype && !(s->out_dtype = theus_dtype_parse(dtype))) {
    theus__pipe_child(kp, s->ptr, "dtype", 0);
    rc = theus__pipe_err(p, kp, false, "unknown dtype \"%s\"; use u8, u16, u32, u64, i8, i16, i32, i64, f32 or f64",
                         dtype);
  }
  free(dtype);
  json_t *shape = json_object_get(obj, "shape");
  theus__pipe_child(kp, s->ptr, "shape", 0);
  if (!rc && shape) rc = theus__pipe_shape(p, s->out_key, s->out_dtype, shape, kp, &s->out_ndim, s->out_shape);
  if (!rc) rc = theus__pipe_get_string(p, obj, s->ptr, "partials", false, "sum, min or max", &s->partials);
  if (!rc && s->partials && strcmp(s->partials, "sum") && strcmp(s->partials, "min") && strcmp(s->partials, "max")) {
    theus__pipe_child(kp, s->ptr, "partials", 0);
    rc = theus__pipe_err(p, kp, false, "\"partials\" must be \"sum\", \"min\" or \"max\", found \"%s\"", s->partials);
  }
  if (!rc && s->partials && !shape)
    rc = theus__pipe_err(p, s->ptr, false, "\"partials\" needs the partial's \"shape\" (each slice fills one)");
  if (!rc) rc = domain_path(p, obj, s->ptr, "result", false, &s->into);
  if (!rc && s->into)
    rc = theus__pipe_get_string(p, obj, s->ptr, "reduce", true, "sum, min, max, concat or a registered reducer (it "
                                "combines what the slices return into \"result\")", &s->reducer);
  if (!rc && !s->into && json_object_get(obj, "reduce"))
    rc = theus__pipe_err(p, s->ptr, false, "\"reduce\" without \"result\": add \"result\": \"domain.x\" to keep "
                         "what the slices return, or drop \"reduce\"");
  return rc;
}

static int parse_map(theus_pipeline *p, const json_t *obj, step *s) {
  static const char *const allowed[] = {"map", "over", "slices", "reduce", "args", "into", "name", "dtype", "shape",
                                        "result", "partials", NULL};
  int rc = theus__pipe_check_keys(p, obj, s->ptr, allowed, "a map step");
  if (!rc) rc = theus__pipe_get_string(p, obj, s->ptr, "map", true, "the parallel process to map", &s->process);
  if (!rc) rc = theus__pipe_get_string(p, obj, s->ptr, "over", true, "the heavy array, e.g. \"heavy.signal\"", &s->over);
  if (!rc && strncmp(s->over, "heavy.", 6) == 0) memmove(s->over, s->over + 6, strlen(s->over + 6) + 1);
  if (!rc) rc = get_args(p, obj, s->ptr, s);
  const char *into = json_string_value(json_object_get(obj, "into"));
  if (!rc && into && !strncmp(into, "heavy.", 6)) {
    rc = parse_map_out(p, obj, s);
  } else {
    if (!rc && (json_object_get(obj, "dtype") || json_object_get(obj, "shape") || json_object_get(obj, "result") ||
                json_object_get(obj, "partials")))
      rc = theus__pipe_err(p, s->ptr, false, "\"dtype\", \"shape\", \"partials\" and \"result\" belong to a map "
                           "into a heavy output (\"into\": \"heavy.KEY\")");
    if (!rc) rc = theus__pipe_get_string(p, obj, s->ptr, "reduce", true, "sum, min, max, concat or a registered reducer",
                                         &s->reducer);
    if (!rc) rc = domain_path(p, obj, s->ptr, "into", true, &s->into);
  }
  return rc ? rc : parse_slices(p, obj, s);
}

static int parse_slices(theus_pipeline *p, const json_t *obj, step *s) {
  json_t *sl = json_object_get(obj, "slices");
  if (sl) {
    char kp[PIPE_PTR];
    theus__pipe_child(kp, s->ptr, "slices", 0);
    if (!json_is_integer(sl) || json_integer_value(sl) < 1 || json_integer_value(sl) > 1 << 20)
      return theus__pipe_err(p, kp, false, "\"slices\" must be an integer from 1 to %d, found %s", 1 << 20,
                             json_is_integer(sl) ? "one out of range" : theus__pipe_type_name(sl));
    s->slices = (uint32_t)json_integer_value(sl);
  }
  return 0;
}

static int parse_body(theus_pipeline *p, const json_t *obj, const char *ptr, const char *key, bool required,
                      steplist *out) {
  json_t *v = json_object_get(obj, key);
  if (!v && !required) return 0;
  if (!v) return theus__pipe_err(p, ptr, false, "missing \"%s\": add \"%s\": [ ...steps... ]", key, key);
  char kp[PIPE_PTR];
  theus__pipe_child(kp, ptr, key, 0);
  return theus__pipe_parse_steps(p, v, kp, out, false);
}

static int parse_if(theus_pipeline *p, const json_t *obj, step *s) {
  static const char *const allowed[] = {"if", "then", "else", "name", NULL};
  int rc = theus__pipe_check_keys(p, obj, s->ptr, allowed, "an if step");
  if (!rc) rc = parse_expr(p, obj, s->ptr, "if", &s->expr);
  if (!rc) rc = parse_body(p, obj, s->ptr, "then", true, &s->body);
  if (!rc) rc = parse_body(p, obj, s->ptr, "else", false, &s->alt);
  return rc;
}

static int parse_while(theus_pipeline *p, const json_t *obj, step *s) {
  static const char *const allowed[] = {"while", "do", "name", NULL};
  int rc = theus__pipe_check_keys(p, obj, s->ptr, allowed, "a while step");
  if (!rc) rc = parse_expr(p, obj, s->ptr, "while", &s->expr);
  if (!rc) rc = parse_body(p, obj, s->ptr, "do", true, &s->body);
  return rc;
}

static int parse_set(theus_pipeline *p, const json_t *obj, step *s) {
  static const char *const allowed[] = {"set", "value", "expr", "name", NULL};
  int rc = theus__pipe_check_keys(p, obj, s->ptr, allowed, "a set step");
  if (!rc) rc = domain_path(p, obj, s->ptr, "set", true, &s->into);
  if (rc) return rc;
  json_t *value = json_object_get(obj, "value");
  bool has_expr = json_object_get(obj, "expr") != NULL;
  if (!value == !has_expr)
    return theus__pipe_err(p, s->ptr, false,
                           "a set step needs exactly one of \"value\" (a JSON value) or \"expr\" (an expression such "
                           "as \"domain.i + 1\")");
  if (value) {
    s->value = json_incref(value);
    return 0;
  }
  return parse_expr(p, obj, s->ptr, "expr", &s->expr);
}

static int parse_parallel(theus_pipeline *p, const json_t *obj, step *s) {
  static const char *const allowed[] = {"parallel", "name", NULL};
  int rc = theus__pipe_check_keys(p, obj, s->ptr, allowed, "a parallel step");
  char kp[PIPE_PTR];
  theus__pipe_child(kp, s->ptr, "parallel", 0);
  if (!rc) rc = theus__pipe_parse_steps(p, json_object_get(obj, "parallel"), kp, &s->body, true);
  if (!rc && s->body.n == 0)
    rc = theus__pipe_err(p, kp, false, "a parallel group needs at least one {\"run\": ...} step");
  return rc;
}

static int step_kind_of(theus_pipeline *p, const json_t *obj, step *s, bool run_only) {
  const char *found = NULL;
  for (size_t k = 0; kinds[k]; k++) {
    if (!json_object_get(obj, kinds[k])) continue;
    if (found)
      return theus__pipe_err(p, s->ptr, false,
                             "a step has one kind, this one has both \"%s\" and \"%s\"; split it into two steps",
                             found, kinds[k]);
    found = kinds[k];
    s->kind = (step_kind)(k + 1);
  }
  if (!found) {
    const char *key, *near = NULL, *typo = NULL;
    size_t best = SIZE_MAX;
    json_t *v;
    json_object_foreach((json_t *)obj, key, v)
      for (size_t k = 0; kinds[k]; k++)
        if (theus__near(key, kinds[k], &best)) near = kinds[k], typo = key;
    char hint[160] = "";
    if (near) snprintf(hint, sizeof hint, "did you mean \"%s\" (not \"%.60s\")? ", near, typo);
    return theus__pipe_err(p, s->ptr, false,
                           "this step has no kind; %sgive it one of \"run\", \"parallel\", \"map\", \"if\", "
                           "\"while\", \"set\"",
                           hint);
  }
  if (run_only && s->kind != ST_RUN)
    return theus__pipe_err(p, s->ptr, false,
                           "a parallel group runs processes side by side: only {\"run\": ...} steps are allowed, "
                           "not \"%s\"",
                           found);
  return 0;
}

static int parse_step(theus_pipeline *p, const json_t *obj, step *s, bool run_only) {
  if (!json_is_object(obj))
    return theus__pipe_err(p, s->ptr, false, "a step must be an object such as {\"run\": \"process\"}, found %s",
                           theus__pipe_type_name(obj));
  int rc = step_kind_of(p, obj, s, run_only);
  if (rc) return rc;
  switch (s->kind) {
  case ST_RUN: return parse_run(p, obj, s, run_only);
  case ST_PARALLEL: return parse_parallel(p, obj, s);
  case ST_MAP: return parse_map(p, obj, s);
  case ST_IF: return parse_if(p, obj, s);
  case ST_WHILE: return parse_while(p, obj, s);
  default: return parse_set(p, obj, s);
  }
}

int theus__pipe_parse_steps(theus_pipeline *p, const json_t *arr, const char *ptr, steplist *out, bool run_only) {
  if (!json_is_array(arr))
    return theus__pipe_err(p, ptr, false, "steps must be an array of step objects, found %s",
                           theus__pipe_type_name(arr));
  size_t n = json_array_size(arr);
  if (n && !(out->v = calloc(n, sizeof *out->v))) return THEUS_ENOMEM;
  for (size_t i = 0; i < n; i++) {
    step *s = &out->v[out->n++];
    theus__pipe_child(s->ptr, ptr, NULL, i);
    int rc = parse_step(p, json_array_get(arr, i), s, run_only);
    if (rc) return rc;
  }
  return 0;
}

void theus__pipe_steps_free(steplist *l) {
  for (size_t i = 0; i < l->n; i++) {
    step *s = &l->v[i];
    free(s->process);
    free(s->into);
    free(s->over);
    free(s->reducer);
    free(s->out_key);
    free(s->partials);
    json_decref(s->args);
    json_decref(s->value);
    theus__expr_free(s->expr);
    theus__pipe_steps_free(&s->body);
    theus__pipe_steps_free(&s->alt);
  }
  free(l->v);
  l->v = NULL;
  l->n = 0;
}
