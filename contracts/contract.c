/* Contract validation, deep copy and JSON form. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "contract_internal.h"

#define fail theus__errf

static size_t strv_len(const char *const *v) {
  size_t n = 0;
  while (v && v[n])
    n++;
  return n;
}

int theus_path_list_covers(const char *const *patterns, const char *path) {
  for (size_t i = 0; patterns && patterns[i]; i++)
    if (theus_path_covers(patterns[i], path))
      return 1;
  return 0;
}

int theus_name_list_has(const char *const *v, const char *name) {
  if (!name)
    return 0;
  for (size_t i = 0; v && v[i]; i++)
    if (!strcmp(v[i], name))
      return 1;
  return 0;
}

static int ident_ok(const char *s, const char *extra) {
  if (!s || !*s)
    return 0;
  for (const char *p = s; *p; p++)
    if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '_' ||
          strchr(extra, *p)))
      return 0;
  return 1;
}

/* Effect-only zones: fields that carry signals, commands or metadata. */
static int effect_zone(const char *path) {
  for (const char *p = path; p; p = strchr(p, '.')) {
    if (*p == '.')
      p++;
    if (!strncmp(p, "sig_", 4) || !strncmp(p, "cmd_", 4) || !strncmp(p, "meta_", 5))
      return 1;
  }
  return 0;
}

static int check_paths(const theus_contract *c, const char *const *v, const char *field, char *err,
                       size_t errlen) {
  char why[256];
  for (size_t i = 0; v && v[i]; i++) {
    if (theus_path_check(v[i], why, sizeof why))
      return fail(err, errlen, THEUS_EINVAL, "contract '%s': %s[%zu]: %s", c->name, field, i, why);
    if (c->semantic == THEUS_PURE && effect_zone(v[i]))
      return fail(err, errlen, THEUS_EINVAL,
                  "contract '%s': %s[%zu] '%s': a pure process cannot use an effect-only zone "
                  "(sig_/cmd_/meta_); declare semantic effect or drop the path",
                  c->name, field, i, v[i]);
    if (c->parallel && c->sandbox == THEUS_SANDBOX_OFF && !strcmp(field, "outputs") && !strncmp(v[i], "heavy.", 6))
      return fail(err, errlen, THEUS_EINVAL,
                  "contract '%s': outputs[%zu] '%s': a parallel process fills heavy outputs only in a map, "
                  "through a write window that runs sandboxed; drop sandbox off or the output",
                  c->name, i, v[i]);
  }
  return 0;
}

static int check(const theus_contract *c, int need_fn, char *err, size_t errlen) {
  if (!c)
    return fail(err, errlen, THEUS_EINVAL, "contract is NULL");
  if (!ident_ok(c->name, "-.:"))
    return fail(err, errlen, THEUS_EINVAL,
                "contract name '%s' is empty or has characters outside [A-Za-z0-9_.:-]",
                c->name ? c->name : "(null)");
  if (need_fn && !c->fn)
    return fail(err, errlen, THEUS_EINVAL, "contract '%s': fn is NULL; give the process function", c->name);
  if (c->semantic != THEUS_PURE && c->semantic != THEUS_EFFECT)
    return fail(err, errlen, THEUS_EINVAL, "contract '%s': semantic must be pure or effect", c->name);
  if (c->sandbox != THEUS_SANDBOX_DEFAULT && c->sandbox != THEUS_SANDBOX_ON && c->sandbox != THEUS_SANDBOX_OFF)
    return fail(err, errlen, THEUS_EINVAL, "contract '%s': sandbox must be THEUS_SANDBOX_DEFAULT, _ON or _OFF (is %d)",
                c->name, (int)c->sandbox);
  if (c->sandbox == THEUS_SANDBOX_ON && !c->parallel)
    return fail(err, errlen, THEUS_EINVAL,
                "contract '%s': sandbox on: only parallel processes run sandboxed (a local process runs inside "
                "the host); set parallel true or drop sandbox",
                c->name);
  if (c->retries < -1)
    return fail(err, errlen, THEUS_EINVAL, "contract '%s': retries is %d: 0 = the default (%d), -1 = none, > 0 = "
                "that many", c->name, c->retries, THEUS_RETRIES_DEFAULT);
  if (c->retries > 0 && c->semantic == THEUS_EFFECT)
    return fail(err, errlen, THEUS_EINVAL, "contract '%s': retries %d: an effect process is never retried "
                "automatically (it may have acted already); drop retries or make it pure", c->name, c->retries);
  if (c->memo < -1 || c->memo > 1)
    return fail(err, errlen, THEUS_EINVAL, "contract '%s': memo is %d: 1 = memoise, -1 = never, 0 = the engine's "
                "default", c->name, c->memo);
  if (c->memo > 0 && c->semantic == THEUS_EFFECT)
    return fail(err, errlen, THEUS_EINVAL, "contract '%s': memo: an effect process is never memoised (its effect "
                "would be skipped); drop memo or make it pure", c->name);
  if (c->parallel && c->semantic == THEUS_EFFECT)
    return fail(err, errlen, THEUS_EINVAL,
                "contract '%s': parallel: an effect process always runs locally; "
                "make it pure or set parallel false",
                c->name);
  int rc = check_paths(c, c->inputs, "inputs", err, errlen);
  if (!rc)
    rc = check_paths(c, c->outputs, "outputs", err, errlen);
  if (rc)
    return rc;
  for (size_t i = 0; c->errors && c->errors[i]; i++) {
    if (!ident_ok(c->errors[i], ""))
      return fail(err, errlen, THEUS_EINVAL, "contract '%s': errors[%zu] '%s' is not an identifier", c->name, i,
                  c->errors[i]);
    for (size_t j = 0; j < i; j++)
      if (!strcmp(c->errors[i], c->errors[j]))
        return fail(err, errlen, THEUS_EINVAL, "contract '%s': errors[%zu] '%s' is declared twice", c->name, i,
                    c->errors[i]);
  }
  return 0;
}

int theus_contract_check(const theus_contract *c, char *err, size_t errlen) { return check(c, 1, err, errlen); }

/* ---- deep copy: one block, pointer arrays first, then strings ---------- */

static size_t strv_bytes(const char *const *v) {
  size_t n = sizeof(char *);
  for (size_t i = 0; v && v[i]; i++)
    n += sizeof(char *) + strlen(v[i]) + 1;
  return n;
}

static const char *const *strv_copy(const char *const *v, char **cursor) {
  size_t n = strv_len(v);
  const char **out = (const char **)(void *)*cursor;
  *cursor += (n + 1) * sizeof(char *);
  for (size_t i = 0; i < n; i++) {
    size_t l = strlen(v[i]) + 1;
    memcpy(*cursor, v[i], l);
    out[i] = *cursor;
    *cursor += l;
  }
  out[n] = NULL;
  /* keep the next pointer array aligned */
  size_t mis = (uintptr_t)*cursor % sizeof(char *);
  if (mis)
    *cursor += sizeof(char *) - mis;
  return out;
}

int theus_contract_sandboxed(const theus_contract *c) {
  return c && c->parallel && c->sandbox != THEUS_SANDBOX_OFF;
}

unsigned theus_contract_retries(const theus_contract *c) {
  if (!c || c->semantic != THEUS_PURE || c->retries < 0) return 0;
  return c->retries == 0 ? THEUS_RETRIES_DEFAULT : (unsigned)c->retries;
}

theus_contract *theus_contract_copy(const theus_contract *c) {
  if (!c || !c->name)
    return NULL;
  size_t sz = sizeof *c + strlen(c->name) + 1 + 4 * sizeof(char *) + strv_bytes(c->inputs) +
              strv_bytes(c->outputs) + strv_bytes(c->errors) + 3 * sizeof(char *);
  theus_contract *d = malloc(sz);
  if (!d)
    return NULL;
  *d = *c;
  char *cur = (char *)(d + 1);
  d->inputs = strv_copy(c->inputs, &cur);
  d->outputs = strv_copy(c->outputs, &cur);
  d->errors = strv_copy(c->errors, &cur);
  memcpy(cur, c->name, strlen(c->name) + 1);
  d->name = cur;
  return d;
}

/* The copy is one block (see above), so one free releases every string. */
void theus_contract_release(theus_contract *c) { free(c); }

/* ---- JSON form --------------------------------------------------------- */

struct theus_contract_doc {
  theus_contract c;
  json_t *json;                /* owns the strings c points to */
  const char **lists[3];       /* inputs, outputs, errors */
  int rc;                      /* 0, or why the parse failed (msg) */
  char msg[768];
};

/* line:col of the first occurrence of "key" in text, for messages. */
static void locate(const char *text, const char *key, int *line, int *col) {
  *line = 0;
  *col = 0;
  if (!text)
    return;
  char pat[80];
  snprintf(pat, sizeof pat, "\"%s\"", key);
  const char *hit = strstr(text, pat);
  if (!hit)
    return;
  *line = 1;
  const char *bol = text;
  for (const char *p = text; p < hit; p++)
    if (*p == '\n') {
      (*line)++;
      bol = p + 1;
    }
  *col = (int)(hit - bol) + 1;
}

typedef struct parse_ctx {
  const char *text, *source;
  char *err;
  size_t errlen;
} parse_ctx;

static int field_err(const parse_ctx *pc, const char *key, const char *what) {
  int line, col;
  locate(pc->text, key, &line, &col);
  if (line)
    return fail(pc->err, pc->errlen, THEUS_EPARSE, "%s:%d:%d: field '%s': %s", pc->source, line, col, key, what);
  return fail(pc->err, pc->errlen, THEUS_EPARSE, "%s: field '%s': %s", pc->source, key, what);
}

static int get_strv(const parse_ctx *pc, const json_t *obj, const char *key, const char ***out) {
  const json_t *arr = json_object_get(obj, key);
  *out = NULL;
  if (!arr)
    return 0;
  if (!json_is_array(arr))
    return field_err(pc, key, "must be an array of strings");
  size_t n = json_array_size(arr);
  *out = calloc(n + 1, sizeof(char *));
  if (!*out)
    return THEUS_ENOMEM;
  for (size_t i = 0; i < n; i++) {
    const json_t *s = json_array_get(arr, i);
    if (!json_is_string(s))
      return field_err(pc, key, "every entry must be a string");
    (*out)[i] = json_string_value(s);
  }
  return 0;
}

static int parse_scalars(const parse_ctx *pc, const json_t *obj, theus_contract *c) {
  const json_t *v = json_object_get(obj, "name");
  if (!json_is_string(v))
    return field_err(pc, "name", "is required and must be a string");
  c->name = json_string_value(v);
  if ((v = json_object_get(obj, "parallel")) && !json_is_boolean(v))
    return field_err(pc, "parallel", "must be true or false");
  c->parallel = json_is_true(v);
  c->semantic = THEUS_PURE;
  if ((v = json_object_get(obj, "semantic"))) {
    const char *s = json_string_value(v);
    if (!s || (strcmp(s, "pure") && strcmp(s, "effect")))
      return field_err(pc, "semantic", "must be \"pure\" or \"effect\"");
    c->semantic = !strcmp(s, "effect") ? THEUS_EFFECT : THEUS_PURE;
  }
  if ((v = json_object_get(obj, "timeout_ms"))) {
    if (!json_is_integer(v) || json_integer_value(v) < -1)
      return field_err(pc, "timeout_ms", "must be an integer: milliseconds, 0 = the engine default, -1 = none");
    c->timeout_ms = (int64_t)json_integer_value(v);
  }
  if ((v = json_object_get(obj, "retries"))) {
    if (!json_is_integer(v) || json_integer_value(v) < -1 || json_integer_value(v) > 1000)
      return field_err(pc, "retries", "must be an integer: re-runs after a worker death, 0 = the default (2), -1 = "
                       "none, at most 1000");
    c->retries = (int)json_integer_value(v);
  }
  if ((v = json_object_get(obj, "memo"))) {
    if (!json_is_boolean(v))
      return field_err(pc, "memo", "must be true (memoise this pure process) or false (never)");
    c->memo = json_is_true(v) ? 1 : -1;
  }
  if ((v = json_object_get(obj, "sandbox"))) {
    const char *s = json_string_value(v);
    if (!s || (strcmp(s, "default") && strcmp(s, "on") && strcmp(s, "off")))
      return field_err(pc, "sandbox", "must be \"default\", \"on\" or \"off\"");
    c->sandbox = !strcmp(s, "on") ? THEUS_SANDBOX_ON : !strcmp(s, "off") ? THEUS_SANDBOX_OFF : THEUS_SANDBOX_DEFAULT;
  }
  return 0;
}

/* Fills d from obj (reference stolen); on failure d keeps the message. */
static int doc_build(const parse_ctx *pc, json_t *obj, theus_fn_resolver resolver, void *ud,
                     theus_contract_doc *d) {
  d->json = obj;
  int rc = THEUS_EPARSE;
  if (!json_is_object(obj)) {
    rc = fail(pc->err, pc->errlen, THEUS_EPARSE, "%s: a contract must be a JSON object", pc->source);
    goto fail;
  }
  if ((rc = parse_scalars(pc, obj, &d->c)) || (rc = get_strv(pc, obj, "inputs", &d->lists[0])) ||
      (rc = get_strv(pc, obj, "outputs", &d->lists[1])) || (rc = get_strv(pc, obj, "errors", &d->lists[2])))
    goto fail;
  d->c.inputs = d->lists[0];
  d->c.outputs = d->lists[1];
  d->c.errors = d->lists[2];
  const json_t *fn = json_object_get(obj, "function");
  if (fn && !json_is_string(fn)) {
    rc = field_err(pc, "function", "must be a string (the symbol name)");
    goto fail;
  }
  if (resolver && fn) {
    d->c.fn = resolver(json_string_value(fn), ud);
    if (!d->c.fn) {
      rc = fail(pc->err, pc->errlen, THEUS_ENOTFOUND,
                "%s: contract '%s': function '%s' not found; export it from the program or plugin", pc->source,
                d->c.name, json_string_value(fn));
      goto fail;
    }
  }
  if ((rc = check(&d->c, resolver != NULL, pc->err, pc->errlen)))
    goto fail;
  return 0;
fail:
  return rc;
}

/* A new document that carries the message of whatever fails next. */
static theus_contract_doc *doc_new(theus_contract_doc **out, parse_ctx *pc) {
  theus_contract_doc *d = out ? calloc(1, sizeof *d) : NULL;
  if (out)
    *out = d;
  if (d) {
    pc->err = d->msg;
    pc->errlen = sizeof d->msg;
  }
  return d;
}

int theus_contract_parse(const char *text, const char *source, theus_fn_resolver resolver, void *ud,
                         theus_contract_doc **out) {
  parse_ctx pc = {text, source ? source : "<contract>", NULL, 0};
  theus_contract_doc *d = doc_new(out, &pc);
  if (!d)
    return out ? THEUS_ENOMEM : THEUS_EINVAL;
  json_error_t je;
  int rc = 0;
  json_t *obj = text ? theus__json_load(text, strlen(text), JSON_REJECT_DUPLICATES, &je, &rc) : NULL;
  if (!text)
    d->rc = fail(d->msg, sizeof d->msg, THEUS_EINVAL, "%s: no text", pc.source);
  else if (!obj && rc == THEUS_ENOMEM)
    d->rc = fail(d->msg, sizeof d->msg, THEUS_ENOMEM, "%s: out of memory parsing the contract", pc.source);
  else if (!obj)
    d->rc = fail(d->msg, sizeof d->msg, THEUS_EPARSE, "%s:%d:%d: %s", pc.source, je.line, je.column, je.text);
  else
    d->rc = doc_build(&pc, obj, resolver, ud, d);
  return d->rc;
}

int theus_contract_from_json(const json_t *obj, const char *source, theus_fn_resolver resolver, void *ud,
                             theus_contract_doc **out) {
  parse_ctx pc = {NULL, source ? source : "<contract>", NULL, 0};
  theus_contract_doc *d = doc_new(out, &pc);
  if (!d)
    return out ? THEUS_ENOMEM : THEUS_EINVAL;
  if (!obj)
    d->rc = fail(d->msg, sizeof d->msg, THEUS_EINVAL, "%s: no JSON object", pc.source);
  else
    d->rc = doc_build(&pc, json_incref((json_t *)obj), resolver, ud, d);
  return d->rc;
}

const char *theus_contract_doc_errmsg(const theus_contract_doc *d) {
  return d ? d->msg : "theus_contract_doc_errmsg: no document (out of memory)";
}

theus_contract *theus_contract_doc_get(theus_contract_doc *d) { return d && !d->rc ? &d->c : NULL; }

const json_t *theus_contract_doc_json(const theus_contract_doc *d) { return d && !d->rc ? d->json : NULL; }

void theus_contract_doc_release(theus_contract_doc *d) {
  if (!d)
    return;
  for (int i = 0; i < 3; i++)
    free(d->lists[i]);
  json_decref(d->json);
  free(d);
}

/* NULL if any allocation fails: json_pack then fails too, rather than
 * describing a contract with entries missing. */
static json_t *strv_json(const char *const *v) {
  json_t *a = json_array();
  for (size_t i = 0; a && v && v[i]; i++)
    if (json_array_append_new(a, json_string(v[i]))) {
      json_decref(a);
      return NULL;
    }
  return a;
}

json_t *theus_contract_to_json(const theus_contract *c) {
  if (!c)
    return NULL;
  json_t *j = json_pack("{s:s, s:o, s:o, s:b, s:s, s:o, s:I, s:s, s:i}", "name", c->name, "inputs", strv_json(c->inputs),
                        "outputs", strv_json(c->outputs), "parallel", c->parallel, "semantic",
                        c->semantic == THEUS_EFFECT ? "effect" : "pure", "errors", strv_json(c->errors),
                        "timeout_ms", (json_int_t)c->timeout_ms, "sandbox",
                        c->sandbox == THEUS_SANDBOX_ON ? "on" : c->sandbox == THEUS_SANDBOX_OFF ? "off" : "default",
                        "retries", c->retries);
  /* memo as the JSON form reads it: true / false, absent for the engine's default */
  if (j && c->memo && json_object_set_new(j, "memo", json_boolean(c->memo > 0))) {
    json_decref(j);
    return NULL;
  }
  return j;
}
