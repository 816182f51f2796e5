/* theus-c — pipeline expressions: recursive-descent parser and evaluator.
 *
 * Recursion depth never depends on the length of the text: a run of binary
 * operators of one precedence level ("1 + 2 + ... + n", "a and b and ...")
 * is one chain node whose operands are parsed, evaluated and freed in a loop,
 * and the only nesting (parentheses, unary '-' and 'not') is limited to
 * EXPR_MAX_DEPTH. So the C stack used by the parser, the evaluator and
 * node_free is bounded by a constant. */
#include "expr.h"

#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "theus/error.h"

/* Nesting deeper than this is refused so a hostile pipeline cannot exhaust the
 * C stack of the parser or the evaluator (chains are loops, see above). */
#define EXPR_MAX_DEPTH 64

typedef enum node_kind {
  N_NUM, N_BOOL, N_STR, N_NULL, N_PATH, N_UNARY, N_CHAIN,
  N_CALL,  /* fn(v[0], v[1], ...) */
  N_ARRAY, /* [v[0], v[1], ...] */
  N_POST   /* l then v[i]: OP_INDEX (v[i].n the index) or OP_FIELD (v[i].n an N_STR) */
} node_kind;

/* The functions; arity is checked when parsing. */
typedef enum fn { FN_LEN, FN_ABS, FN_SQRT, FN_SUM, FN_MIN, FN_MAX } fn;
static const struct {
  const char *name;
  size_t min, max;
} fns[] = {{"len", 1, 1}, {"abs", 1, 1}, {"sqrt", 1, 1}, {"sum", 1, 1}, {"min", 1, SIZE_MAX}, {"max", 1, SIZE_MAX}};
#define NFNS (sizeof fns / sizeof fns[0])

typedef enum op {
  OP_NONE, OP_OR, OP_AND, OP_NOT, OP_NEG, OP_EQ, OP_NE, OP_LT, OP_LE, OP_GT, OP_GE,
  OP_ADD, OP_SUB, OP_MUL, OP_DIV, OP_MOD, OP_INDEX, OP_FIELD
} op;

/* An operand of a chain and the operator before it (OP_NONE for the first);
 * col is the operator's column, where its errors point. */
typedef struct operand {
  op op;
  int col;
  struct node *n;
} operand;

typedef struct node {
  node_kind kind;
  op op;             /* N_UNARY */
  fn fn;             /* N_CALL */
  int col;
  double num;
  bool b;
  char *str;         /* N_STR value; N_PATH display text */
  char **seg;        /* N_PATH segments below domain */
  size_t nseg;
  struct node *l;    /* N_UNARY operand, N_POST base */
  operand *v;        /* N_CHAIN operands, left to right (two or more); N_CALL, N_ARRAY, N_POST: see above */
  size_t nv, capv;
} node;

struct theus__expr {
  char *text;
  node *root;
};

typedef struct parser {
  const char *s;
  size_t pos;
  int depth;
  char *err;
  size_t errlen;
  int errcol;
} parser;

static int perr(parser *p, size_t at, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int perr(parser *p, size_t at, const char *fmt, ...) {
  if (p->errcol) return THEUS_EPARSE; /* keep the first, innermost error */
  p->errcol = (int)at + 1;
  va_list ap;
  va_start(ap, fmt);
  if (p->err && p->errlen) vsnprintf(p->err, p->errlen, fmt, ap);
  va_end(ap);
  return THEUS_EPARSE;
}

static void node_free(node *n) {
  if (!n) return;
  node_free(n->l);
  for (size_t i = 0; i < n->nv; i++) node_free(n->v[i].n);
  free(n->v);
  for (size_t i = 0; i < n->nseg; i++) free(n->seg[i]);
  free(n->seg);
  free(n->str);
  free(n);
}

/* The parser's allocations: a failure is remembered for the whole parse, so
 * that a syntax error it causes higher up (a missing operand) is reported as
 * running out of memory. One parse runs on one thread. */
static _Thread_local bool parse_oom;
static void *oom_if_null(void *x) {
  if (!x) parse_oom = true;
  return x;
}
static void *p_calloc(size_t n, size_t sz) { return oom_if_null(calloc(n, sz)); }
static void *p_malloc(size_t n) { return oom_if_null(malloc(n)); }
static void *p_realloc(void *x, size_t n) { return oom_if_null(realloc(x, n)); }
static char *p_strndup(const char *x, size_t n) { return oom_if_null(strndup(x, n)); }

static node *node_new(node_kind k, op o, size_t col) {
  node *n = p_calloc(1, sizeof *n);
  if (n) {
    n->kind = k;
    n->op = o;
    n->col = (int)col + 1;
  }
  return n;
}

static void ws(parser *p) {
  while (isspace((unsigned char)p->s[p->pos])) p->pos++;
}

static bool is_name_start(char c) { return isalpha((unsigned char)c) || c == '_'; }
static bool is_name_char(char c) { return isalnum((unsigned char)c) || c == '_'; }

/* Consumes the operator or keyword w if it is next (keywords must end at a
 * non-name character so "order" is not "or" + "der"). */
static bool accept(parser *p, const char *w) {
  ws(p);
  size_t n = strlen(w);
  if (strncmp(p->s + p->pos, w, n) != 0) return false;
  if (is_name_start(w[0]) && is_name_char(p->s[p->pos + n])) return false;
  /* "<" must not eat the first half of "<=", "=" alone is not an operator */
  if ((n == 1 && (w[0] == '<' || w[0] == '>' || w[0] == '!')) && p->s[p->pos + 1] == '=') return false;
  p->pos += n;
  return true;
}

static node *parse_or(parser *p);

/* l as a chain node with room for one more operand (l itself if it is a
 * chain), or NULL if out of memory (l unchanged). Appending to a chain that
 * came from a tighter level or from parentheses is exact: a chain is a left
 * fold, so [a, +b] followed by "< c" means (a + b) < c. */
static node *chain_room(node *l, size_t col) {
  if (l->kind != N_CHAIN) {
    node *c = node_new(N_CHAIN, OP_NONE, col);
    operand *v = c ? p_calloc(4, sizeof *v) : NULL;
    if (!v) return free(c), NULL;
    v[0] = (operand){OP_NONE, l->col, l};
    c->v = v;
    c->nv = 1;
    c->capv = 4;
    return c;
  }
  if (l->nv == l->capv) {
    operand *v = p_realloc(l->v, 2 * l->capv * sizeof *v);
    if (!v) return NULL;
    l->v = v;
    l->capv *= 2;
  }
  return l;
}

/* Appends operand r (operator o at col) to *l. On failure (r NULL: a parse
 * error already reported, or out of memory) frees both and sets *l NULL. */
static void chain_push(parser *p, node **l, op o, size_t col, node *r) {
  node *c = r ? chain_room(*l, col) : NULL;
  if (!c) {
    if (r) perr(p, col, "out of memory");
    node_free(*l);
    node_free(r);
    *l = NULL;
    return;
  }
  c->v[c->nv++] = (operand){o, (int)col + 1, r};
  c->col = (int)col + 1; /* a chain's errors point at its last operator */
  *l = c;
}

/* Appends (o, col, r) to n->v (any node kind); frees r on failure. */
static int list_push(parser *p, node *n, op o, size_t col, node *r) {
  if (n->nv == n->capv) {
    size_t cap = n->capv ? 2 * n->capv : 4;
    operand *v = p_realloc(n->v, cap * sizeof *v);
    if (!v) return node_free(r), perr(p, col, "out of memory");
    n->v = v;
    n->capv = cap;
  }
  n->v[n->nv++] = (operand){o, (int)col + 1, r};
  return 0;
}

/* One nested expression (a call's argument, an element, an index): one level
 * deeper, so brackets count towards EXPR_MAX_DEPTH like parentheses. */
static node *parse_nested(parser *p, size_t at) {
  if (++p->depth > EXPR_MAX_DEPTH) return perr(p, at, "expression nested deeper than %d", EXPR_MAX_DEPTH), NULL;
  node *n = parse_or(p);
  p->depth--;
  return n;
}

/* "e, e, ... close" into n->v after the opening bracket at `at` (a loop: a
 * long list never deepens the C stack). */
static node *parse_list(parser *p, node *n, char close, size_t at, const char *what) {
  ws(p);
  if (p->s[p->pos] == close) {
    p->pos++;
    return n;
  }
  for (;;) {
    ws(p);
    size_t col = p->pos;
    node *e = parse_nested(p, at); /* too deep: the bracket that opened the level */
    if (!e || list_push(p, n, OP_NONE, col, e)) return node_free(n), NULL;
    ws(p);
    if (p->s[p->pos] == ',') {
      p->pos++;
      continue;
    }
    if (p->s[p->pos] == close) {
      p->pos++;
      return n;
    }
    perr(p, p->pos, "expected ',' or '%c' to close the %s at column %zu", close, what, at + 1);
    node_free(n);
    return NULL;
  }
}

static node *parse_call(parser *p, size_t start, size_t len) {
  size_t f = 0;
  while (f < NFNS && (strlen(fns[f].name) != len || strncmp(fns[f].name, p->s + start, len))) f++;
  if (f == NFNS)
    return perr(p, start, "unknown function '%.*s'; functions are len, abs, sqrt, sum, min and max", (int)len,
                p->s + start), NULL;
  node *n = node_new(N_CALL, OP_NONE, start);
  if (!n) return perr(p, start, "out of memory"), NULL;
  n->fn = (fn)f;
  p->pos++; /* '(' */
  if (!(n = parse_list(p, n, ')', p->pos - 1, "call"))) return NULL;
  if (n->nv < fns[f].min || n->nv > fns[f].max) {
    if (fns[f].max == 1)
      perr(p, start, "%s takes one argument, found %zu", fns[f].name, n->nv);
    else
      perr(p, start, "%s takes numbers, or one array: %s(a, b) or %s(domain.v); found no argument", fns[f].name,
           fns[f].name, fns[f].name);
    node_free(n);
    return NULL;
  }
  return n;
}

/* primary { "[" expr "]" | "." (NAME | INDEX) }: indexing and fields after
 * any value, in a loop. */
static node *parse_postfix(parser *p, node *base) {
  node *n = NULL;
  while (base) {
    size_t save = p->pos;
    ws(p);
    size_t at = p->pos;
    char c = p->s[at];
    node *x = NULL;
    op o;
    if (c == '[') {
      p->pos++;
      if (!(x = parse_nested(p, at))) break;
      if (!accept(p, "]")) {
        perr(p, p->pos, "expected ']' to close the '[' at column %zu", at + 1);
        node_free(x);
        break;
      }
      o = OP_INDEX;
    } else if (c == '.' && at == save && (is_name_start(p->s[at + 1]) || isdigit((unsigned char)p->s[at + 1]))) {
      size_t seg = ++p->pos;
      while (is_name_char(p->s[p->pos])) p->pos++;
      x = node_new(N_STR, OP_NONE, seg);
      if (!x || !(x->str = p_strndup(p->s + seg, p->pos - seg))) {
        node_free(x);
        perr(p, seg, "out of memory");
        break;
      }
      o = OP_FIELD;
    } else {
      p->pos = save;
      return n ? n : base;
    }
    if (!n) {
      if (!(n = node_new(N_POST, OP_NONE, at))) {
        node_free(x);
        perr(p, at, "out of memory");
        break;
      }
      n->l = base;
    }
    if (list_push(p, n, o, at, x)) break;
    n->col = (int)at + 1; /* errors point at the last bracket */
  }
  node_free(n ? n : base);
  return NULL;
}

/* One precedence level: sub { op sub }, in a loop. next_op consumes and
 * returns the next operator of the level, or OP_NONE. */
static node *parse_chain(parser *p, node *(*sub)(parser *), op (*next_op)(parser *)) {
  node *l = sub(p);
  while (l) {
    ws(p);
    size_t at = p->pos;
    op o = next_op(p);
    if (!o) break;
    chain_push(p, &l, o, at, sub(p));
  }
  return l;
}

static node *parse_number(parser *p) {
  size_t start = p->pos;
  char *end;
  double v = strtod(p->s + start, &end);
  if (end == p->s + start || !isfinite(v)) {
    perr(p, start, "malformed number");
    return NULL;
  }
  p->pos = (size_t)(end - p->s);
  if (is_name_char(p->s[p->pos])) {
    perr(p, p->pos, "unexpected '%c' after a number", p->s[p->pos]);
    return NULL;
  }
  node *n = node_new(N_NUM, OP_NONE, start);
  if (n) n->num = v;
  return n;
}

/* Copies the string body at s (closed by q) into buf (NULL: only counts);
 * returns its length and sets *end to the closing quote (or the NUL). */
static size_t string_body(const char *s, char q, char *buf, const char **end) {
  size_t len = 0;
  for (; *s && *s != q; s++) {
    if (*s == '\\' && (s[1] == q || s[1] == '\\')) s++;
    if (buf) buf[len] = *s;
    len++;
  }
  *end = s;
  return len;
}

static node *parse_string(parser *p) {
  size_t start = p->pos;
  char q = p->s[p->pos++];
  const char *end;
  size_t len = string_body(p->s + p->pos, q, NULL, &end); /* sized exactly: a text may hold many strings */
  if (*end != q) return perr(p, start, "unterminated string; close it with %c", q), NULL;
  char *buf = p_malloc(len + 1);
  if (!buf) return perr(p, start, "out of memory"), NULL;
  string_body(p->s + p->pos, q, buf, &end);
  buf[len] = '\0';
  p->pos = (size_t)(end - p->s) + 1;
  node *n = node_new(N_STR, OP_NONE, start);
  if (!n) return free(buf), NULL;
  n->str = buf;
  return n;
}

static int path_push(node *n, const char *s, size_t len) {
  char **seg = p_realloc(n->seg, (n->nseg + 1) * sizeof *seg);
  if (!seg) return THEUS_ENOMEM;
  n->seg = seg;
  if (!(seg[n->nseg] = p_strndup(s, len))) return THEUS_ENOMEM;
  n->nseg++;
  return 0;
}

static node *parse_path(parser *p, size_t start) {
  node *n = node_new(N_PATH, OP_NONE, start);
  if (!n) return NULL;
  while (p->s[p->pos] == '.') {
    size_t seg = ++p->pos;
    if (is_name_start(p->s[seg]))
      while (is_name_char(p->s[p->pos])) p->pos++;
    else
      while (isdigit((unsigned char)p->s[p->pos])) p->pos++;
    if (p->pos == seg || path_push(n, p->s + seg, p->pos - seg)) {
      perr(p, seg, "expected a field name or an index after '.'");
      node_free(n);
      return NULL;
    }
  }
  if (n->nseg == 0) {
    perr(p, start, "'domain' alone is not a value; name a field, e.g. domain.err");
    node_free(n);
    return NULL;
  }
  n->str = p_strndup(p->s + start, p->pos - start);
  return n;
}

static node *parse_name(parser *p) {
  size_t start = p->pos;
  while (is_name_char(p->s[p->pos])) p->pos++;
  size_t n = p->pos - start;
  const char *w = p->s + start;
  if (n == 4 && !strncmp(w, "true", 4)) {
    node *r = node_new(N_BOOL, OP_NONE, start);
    if (r) r->b = true;
    return r;
  }
  if (n == 5 && !strncmp(w, "false", 5)) return node_new(N_BOOL, OP_NONE, start);
  if (n == 4 && !strncmp(w, "null", 4)) return node_new(N_NULL, OP_NONE, start);
  if (n == 6 && !strncmp(w, "domain", 6)) return parse_path(p, start);
  size_t after = p->pos;
  while (isspace((unsigned char)p->s[after])) after++;
  if (p->s[after] == '(') {
    p->pos = after;
    return parse_call(p, start, n);
  }
  perr(p, start, "unknown name '%.*s'; values are numbers, 'strings', true, false, null, paths like domain.x, "
       "[arrays] or calls of len, abs, sqrt, sum, min, max", (int)n, w);
  return NULL;
}

static node *parse_atom(parser *p);
static node *parse_primary(parser *p) { return parse_postfix(p, parse_atom(p)); }

static node *parse_atom(parser *p) {
  ws(p);
  char c = p->s[p->pos];
  size_t at = p->pos;
  if (c == '[') {
    node *n = node_new(N_ARRAY, OP_NONE, at);
    if (!n) return perr(p, at, "out of memory"), NULL;
    p->pos++;
    return parse_list(p, n, ']', at, "array");
  }
  if (c == '(') {
    p->pos++;
    if (++p->depth > EXPR_MAX_DEPTH) return perr(p, at, "expression nested deeper than %d", EXPR_MAX_DEPTH), NULL;
    node *n = parse_or(p);
    p->depth--;
    if (n && !accept(p, ")")) {
      perr(p, p->pos, "expected ')' to close the '(' at column %zu", at + 1);
      node_free(n);
      return NULL;
    }
    return n;
  }
  if (isdigit((unsigned char)c) || (c == '.' && isdigit((unsigned char)p->s[p->pos + 1]))) return parse_number(p);
  if (c == '"' || c == '\'') return parse_string(p);
  if (is_name_start(c)) return parse_name(p);
  if (!c)
    perr(p, at, "unexpected end of expression; expected a value");
  else
    perr(p, at, "unexpected '%c'; expected a value (number, 'string', true, false, null, domain.x, [array], call "
         "or '(')", c);
  return NULL;
}

static node *unary_node(parser *p, op o, size_t at, node *operand) {
  if (!operand) return NULL;
  node *n = node_new(N_UNARY, o, at);
  if (!n) return node_free(operand), perr(p, at, "out of memory"), NULL;
  n->l = operand;
  return n;
}

static node *parse_unary(parser *p) {
  ws(p);
  size_t at = p->pos;
  if (!accept(p, "-")) return parse_primary(p);
  if (++p->depth > EXPR_MAX_DEPTH) return perr(p, at, "expression nested deeper than %d", EXPR_MAX_DEPTH), NULL;
  node *n = unary_node(p, OP_NEG, at, parse_unary(p));
  p->depth--;
  return n;
}

static op term_op(parser *p) {
  return accept(p, "*") ? OP_MUL : accept(p, "/") ? OP_DIV : accept(p, "%") ? OP_MOD : OP_NONE;
}
static op sum_op(parser *p) { return accept(p, "+") ? OP_ADD : accept(p, "-") ? OP_SUB : OP_NONE; }
static op cmp_op(parser *p) {
  return accept(p, "==") ? OP_EQ : accept(p, "!=") ? OP_NE : accept(p, "<=") ? OP_LE : accept(p, ">=") ? OP_GE
       : accept(p, "<") ? OP_LT : accept(p, ">") ? OP_GT : OP_NONE;
}
static op and_op(parser *p) { return accept(p, "and") || accept(p, "&&") ? OP_AND : OP_NONE; }
static op or_op(parser *p) { return accept(p, "or") || accept(p, "||") ? OP_OR : OP_NONE; }

static node *parse_term(parser *p) { return parse_chain(p, parse_unary, term_op); }
static node *parse_sum(parser *p) { return parse_chain(p, parse_term, sum_op); }

static node *parse_cmp(parser *p) {
  node *l = parse_sum(p);
  ws(p);
  size_t at = p->pos;
  op o = l ? cmp_op(p) : OP_NONE;
  if (o) {
    chain_push(p, &l, o, at, parse_sum(p));
  } else if (l && p->s[p->pos] == '=') {
    perr(p, p->pos, "'=' is not an operator; compare with '=='");
    node_free(l);
    l = NULL;
  }
  return l;
}

static node *parse_not(parser *p) {
  ws(p);
  size_t at = p->pos;
  if (!accept(p, "not") && !accept(p, "!")) return parse_cmp(p);
  if (++p->depth > EXPR_MAX_DEPTH) return perr(p, at, "expression nested deeper than %d", EXPR_MAX_DEPTH), NULL;
  node *n = unary_node(p, OP_NOT, at, parse_not(p));
  p->depth--;
  return n;
}

static node *parse_and(parser *p) { return parse_chain(p, parse_not, and_op); }
static node *parse_or(parser *p) { return parse_chain(p, parse_and, or_op); }

int theus__expr_parse(const char *text, theus__expr **out, char *err, size_t errlen, int *errcol) {
  *out = NULL;
  if (errcol) *errcol = 0;
  parser p = {text ? text : "", 0, 0, err, errlen, 0};
  parse_oom = false;
  node *root = parse_or(&p);
  ws(&p);
  if (root && p.s[p.pos]) {
    perr(&p, p.pos, "unexpected '%c' after a complete expression; combine conditions with and/or", p.s[p.pos]);
    node_free(root);
    root = NULL;
  }
  theus__expr *e = root ? calloc(1, sizeof *e) : NULL;
  if (root && (!e || !(e->text = strdup(p.s)))) parse_oom = true;
  if (parse_oom) {
    if (e) free(e->text);
    free(e);
    node_free(root);
    if (err && errlen) snprintf(err, errlen, "out of memory");
    return THEUS_ENOMEM;
  }
  if (!root) {
    if (!p.errcol) perr(&p, p.pos, "unexpected end of the expression");
    if (errcol) *errcol = p.errcol;
    return THEUS_EPARSE;
  }
  e->root = root;
  *out = e;
  return 0;
}

const char *theus__expr_text(const theus__expr *e) { return e ? e->text : ""; }

void theus__expr_free(theus__expr *e) {
  if (!e) return;
  node_free(e->root);
  free(e->text);
  free(e);
}

/* ---- evaluation ------------------------------------------------------------
 *
 * Cost. There are no loops and no variables, and each node is evaluated at
 * most once, so an expression's work is bounded by its node count times the
 * size of the arrays it touches: an element-wise operation, abs/sqrt or a
 * broadcast yields an array no larger than its operands, and an array literal
 * no larger than its elements together, so no result is larger than the
 * domain's arrays plus the text. Every array element visited is counted
 * (work); the pipeline charges it to its operation budget. Arrays nested
 * deeper than ARRAY_MAX_DEPTH are refused, which bounds the only recursion
 * that follows data rather than the text. */

#define ARRAY_MAX_DEPTH 32

typedef enum vkind { V_NULL, V_NUM, V_BOOL, V_STR, V_ARR, V_OBJ } vkind;

/* s and j are borrowed: from the AST, from the domain (which outlives the
 * evaluation), or from a temporary that hold keeps alive. hold is an owned
 * reference (NULL for borrowed values); temporaries are private to one
 * evaluation, so their reference counts are never shared with the domain. */
typedef struct value {
  vkind k;
  double num;
  bool b;
  const char *s;
  const json_t *j;
  json_t *hold;
} value;

typedef struct evaluator {
  const json_t *domain;
  char *err;
  size_t errlen;
  int errcol;
  uint64_t work;
} evaluator;

static void vclear(value *v) {
  json_decref(v->hold);
  *v = (value){V_NULL, 0, false, NULL, NULL, NULL};
}

static int eerr(evaluator *ev, int col, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int eerr(evaluator *ev, int col, const char *fmt, ...) {
  ev->errcol = col;
  va_list ap;
  va_start(ap, fmt);
  if (ev->err && ev->errlen) vsnprintf(ev->err, ev->errlen, fmt, ap);
  va_end(ap);
  return THEUS_EINVAL;
}

/* "a number", "an array of length 3"... (buf: 48 bytes) */
static const char *vname(const value *v, char *buf) {
  static const char *names[] = {"null", "a number", "a boolean", "a string", "an array", "an object"};
  if (v->k != V_ARR) return names[v->k];
  snprintf(buf, 48, "an array of length %zu", json_array_size(v->j));
  return buf;
}

static const char *jname(const json_t *j) {
  return json_is_number(j) ? "a number" : json_is_string(j) ? "a string" : json_is_boolean(j) ? "a boolean"
       : json_is_null(j) ? "null" : json_is_array(j) ? "an array" : "an object";
}

/* A JSON value as an expression value, borrowed; hold (may be NULL) is the
 * temporary it lives in, referenced once more by the result. */
static void from_json(const json_t *j, json_t *hold, value *out) {
  *out = (value){V_NULL, 0, false, NULL, NULL, NULL};
  if (json_is_number(j)) out->k = V_NUM, out->num = json_number_value(j);
  else if (json_is_boolean(j)) out->k = V_BOOL, out->b = json_is_true(j);
  else if (json_is_string(j)) out->k = V_STR, out->s = json_string_value(j);
  else if (json_is_array(j)) out->k = V_ARR, out->j = j;
  else if (json_is_object(j)) out->k = V_OBJ, out->j = j;
  if (hold && out->k >= V_STR) out->hold = json_incref(hold);
}

static json_t *num_json(double v) {
  if (v == floor(v) && fabs(v) < 9007199254740992.0) return json_integer((json_int_t)v);
  return json_real(v);
}

static int eval(evaluator *ev, const node *n, value *out);

static int eval_path(evaluator *ev, const node *n, value *out) {
  const json_t *v = ev->domain;
  for (size_t i = 0; v && i < n->nseg; i++) {
    if (json_is_array(v) && isdigit((unsigned char)n->seg[i][0]))
      v = json_array_get(v, strtoul(n->seg[i], NULL, 10));
    else
      v = json_is_object(v) ? json_object_get(v, n->seg[i]) : NULL;
  }
  if (!v)
    return eerr(ev, n->col, "%s is missing from the domain; set it in the pipeline's \"domain\" or with theus_pipeline_set",
                n->str);
  from_json(v, NULL, out);
  return 0;
}

/* ---- arrays: element-wise, reductions, copies (depth-bounded recursion) ---- */

static const char opch[] = {[OP_ADD] = '+', [OP_SUB] = '-', [OP_MUL] = '*', [OP_DIV] = '/', [OP_MOD] = '%'};

static int arith_num(evaluator *ev, const operand *o, double a, double b, double *out) {
  if ((o->op == OP_DIV || o->op == OP_MOD) && b == 0) return eerr(ev, o->col, "division by zero");
  double v = o->op == OP_ADD ? a + b : o->op == OP_SUB ? a - b : o->op == OP_MUL ? a * b : o->op == OP_DIV ? a / b
           : fmod(a, b);
  if (!isfinite(v)) return eerr(ev, o->col, "'%c' overflows (the result is not a finite number)", opch[o->op]);
  *out = v;
  return 0;
}

/* la/ra: an array, or NULL for the number ln/rn (broadcast). */
static int ew(evaluator *ev, const operand *o, const json_t *la, double ln, const json_t *ra, double rn, int depth,
              json_t **out) {
  *out = NULL;
  if (!la && !ra) {
    double v;
    int rc = arith_num(ev, o, ln, rn, &v);
    if (!rc && !(*out = num_json(v))) rc = THEUS_ENOMEM;
    return rc;
  }
  if (depth >= ARRAY_MAX_DEPTH) return eerr(ev, o->col, "'%c': arrays nested deeper than %d", opch[o->op], ARRAY_MAX_DEPTH);
  size_t n = la ? json_array_size(la) : json_array_size(ra);
  if (la && ra && json_array_size(ra) != n)
    return eerr(ev, o->col, "'%c' needs arrays of equal length, found arrays of length %zu and %zu%s", opch[o->op], n,
                json_array_size(ra), depth ? " (nested)" : "");
  json_t *res = json_array();
  if (!res) return THEUS_ENOMEM;
  for (size_t i = 0; i < n; i++) {
    const json_t *le = la ? json_array_get(la, i) : NULL, *re = ra ? json_array_get(ra, i) : NULL;
    const json_t *bad = le && !json_is_number(le) && !json_is_array(le) ? le : re && !json_is_number(re) && !json_is_array(re) ? re : NULL;
    if (bad) {
      json_decref(res);
      return eerr(ev, o->col, "'%c' works on numbers and arrays of numbers, but element %zu of the %s operand is %s",
                  opch[o->op], i, bad == le ? "left" : "right", jname(bad));
    }
    json_t *x;
    int rc = ew(ev, o, json_is_array(le) ? le : NULL, le && !json_is_array(le) ? json_number_value(le) : ln,
                json_is_array(re) ? re : NULL, re && !json_is_array(re) ? json_number_value(re) : rn, depth + 1, &x);
    ev->work++;
    if (rc || json_array_append_new(res, x)) {
      json_decref(res);
      return rc ? rc : THEUS_ENOMEM;
    }
  }
  *out = res;
  return 0;
}

/* f applied to every number of a (abs, sqrt, unary minus). */
static int map1(evaluator *ev, int col, const char *name, fn f, bool neg, const json_t *a, int depth, json_t **out) {
  *out = NULL;
  if (depth >= ARRAY_MAX_DEPTH) return eerr(ev, col, "%s: arrays nested deeper than %d", name, ARRAY_MAX_DEPTH);
  json_t *res = json_array();
  if (!res) return THEUS_ENOMEM;
  for (size_t i = 0; i < json_array_size(a); i++) {
    const json_t *e = json_array_get(a, i);
    json_t *x = NULL;
    int rc = 0;
    ev->work++;
    if (json_is_array(e)) {
      rc = map1(ev, col, name, f, neg, e, depth + 1, &x);
    } else if (!json_is_number(e)) {
      rc = eerr(ev, col, "%s works on numbers, but element %zu is %s", name, i, jname(e));
    } else {
      double v = json_number_value(e);
      if (!neg && f == FN_SQRT && v < 0) rc = eerr(ev, col, "sqrt of a negative number (%g, element %zu)", v, i);
      else if (!(x = num_json(neg ? -v : f == FN_ABS ? fabs(v) : sqrt(v)))) rc = THEUS_ENOMEM;
    }
    if (rc || json_array_append_new(res, x)) {
      json_decref(res);
      return rc ? rc : THEUS_ENOMEM;
    }
  }
  *out = res;
  return 0;
}

/* sum, min or max of every number in a (nested arrays included). */
static int fold(evaluator *ev, int col, fn f, const json_t *a, int depth, double *acc, size_t *count) {
  if (depth >= ARRAY_MAX_DEPTH) return eerr(ev, col, "%s: arrays nested deeper than %d", fns[f].name, ARRAY_MAX_DEPTH);
  for (size_t i = 0; i < json_array_size(a); i++) {
    const json_t *e = json_array_get(a, i);
    ev->work++;
    if (json_is_array(e)) {
      int rc = fold(ev, col, f, e, depth + 1, acc, count);
      if (rc) return rc;
      continue;
    }
    if (!json_is_number(e)) return eerr(ev, col, "%s works on numbers, but element %zu is %s", fns[f].name, i, jname(e));
    double v = json_number_value(e);
    *acc = !(*count)++ ? v : f == FN_SUM ? *acc + v : f == FN_MIN ? fmin(*acc, v) : fmax(*acc, v);
  }
  if (f == FN_SUM && !isfinite(*acc)) return eerr(ev, col, "sum overflows (the result is not a finite number)");
  return 0;
}

/* A private copy of a domain array (to hold it in an array literal). */
static int copy_array(evaluator *ev, int col, const json_t *a, int depth, json_t **out) {
  *out = NULL;
  if (depth >= ARRAY_MAX_DEPTH) return eerr(ev, col, "arrays nested deeper than %d", ARRAY_MAX_DEPTH);
  json_t *res = json_array();
  if (!res) return THEUS_ENOMEM;
  for (size_t i = 0; i < json_array_size(a); i++) {
    const json_t *e = json_array_get(a, i);
    json_t *x = NULL;
    int rc = 0;
    ev->work++;
    if (json_is_array(e)) rc = copy_array(ev, col, e, depth + 1, &x);
    else if (!(x = json_deep_copy(e))) rc = THEUS_ENOMEM;
    if (rc || json_array_append_new(res, x)) {
      json_decref(res);
      return rc ? rc : THEUS_ENOMEM;
    }
  }
  *out = res;
  return 0;
}

/* Equality at any depth up to the limit; numbers by value (1 == 1.0). */
static int json_eq(evaluator *ev, int col, const json_t *a, const json_t *b, int depth, bool *eq) {
  if (json_is_number(a) && json_is_number(b)) return *eq = json_number_value(a) == json_number_value(b), 0;
  if (!json_is_array(a) || !json_is_array(b)) return *eq = json_equal((json_t *)a, (json_t *)b), 0;
  if (depth >= ARRAY_MAX_DEPTH) return eerr(ev, col, "'==': arrays nested deeper than %d", ARRAY_MAX_DEPTH);
  *eq = json_array_size(a) == json_array_size(b);
  for (size_t i = 0; *eq && i < json_array_size(a); i++) {
    ev->work++;
    int rc = json_eq(ev, col, json_array_get(a, i), json_array_get(b, i), depth + 1, eq);
    if (rc) return rc;
  }
  return 0;
}

/* ---- operators ----------------------------------------------------------- */

/* Column of the left side of operand i's operator: the first operand, or the
 * operator that produced the value so far. */
static int left_col(const node *n, size_t i) { return i == 1 ? n->v[0].n->col : n->v[i - 1].col; }

/* acc = acc and/or operand i, short-circuiting (the operand is not evaluated). */
static int eval_logic(evaluator *ev, const node *n, size_t i, value *acc) {
  const operand *o = &n->v[i];
  const char *name = o->op == OP_AND ? "and" : "or";
  char b[48];
  if (acc->k != V_BOOL)
    return eerr(ev, left_col(n, i), "%s needs booleans but its left side is %s", name, vname(acc, b));
  if ((o->op == OP_AND) != acc->b) return 0; /* false and ..., true or ... */
  int rc = eval(ev, o->n, acc);
  if (!rc && acc->k != V_BOOL)
    rc = eerr(ev, o->n->col, "%s needs booleans but its right side is %s", name, vname(acc, b));
  return rc;
}

static int values_equal(evaluator *ev, int col, const value *a, const value *b, bool *eq) {
  *eq = false;
  if (a->k != b->k) return 0;
  switch (a->k) {
  case V_NUM: *eq = a->num == b->num; return 0;
  case V_BOOL: *eq = a->b == b->b; return 0;
  case V_STR: *eq = strcmp(a->s, b->s) == 0; return 0;
  case V_ARR:
  case V_OBJ: return json_eq(ev, col, a->j, b->j, 0, eq);
  default: *eq = true; return 0;
  }
}

static int eval_compare(evaluator *ev, const operand *n, const value *l, const value *r, value *out) {
  static const char *names[] = {[OP_LT] = "<", [OP_LE] = "<=", [OP_GT] = ">", [OP_GE] = ">="};
  char b1[48], b2[48];
  *out = (value){V_BOOL, 0, false, NULL, NULL, NULL};
  if (n->op == OP_EQ || n->op == OP_NE) {
    bool eq;
    int rc = values_equal(ev, n->col, l, r, &eq);
    out->b = eq == (n->op == OP_EQ);
    return rc;
  }
  double c;
  if (l->k == V_NUM && r->k == V_NUM)
    c = (l->num > r->num) - (l->num < r->num);
  else if (l->k == V_STR && r->k == V_STR)
    c = strcmp(l->s, r->s);
  else
    return eerr(ev, n->col, "'%s' compares two numbers or two strings, not %s and %s%s", names[n->op], vname(l, b1),
                vname(r, b2), l->k == V_ARR || r->k == V_ARR ? "; reduce an array first, e.g. max(abs(a - b))" : "");
  out->b = n->op == OP_LT ? c < 0 : n->op == OP_LE ? c <= 0 : n->op == OP_GT ? c > 0 : c >= 0;
  return 0;
}

static int eval_arith(evaluator *ev, const operand *n, const value *l, const value *r, value *out) {
  char b1[48], b2[48];
  *out = (value){V_NULL, 0, false, NULL, NULL, NULL};
  if ((l->k != V_NUM && l->k != V_ARR) || (r->k != V_NUM && r->k != V_ARR))
    return eerr(ev, n->col, "'%c' needs numbers or arrays of numbers, not %s and %s", opch[n->op], vname(l, b1),
                vname(r, b2));
  if (l->k == V_NUM && r->k == V_NUM) {
    out->k = V_NUM;
    return arith_num(ev, n, l->num, r->num, &out->num);
  }
  json_t *res;
  int rc = ew(ev, n, l->k == V_ARR ? l->j : NULL, l->num, r->k == V_ARR ? r->j : NULL, r->num, 0, &res);
  if (!rc) *out = (value){V_ARR, 0, false, NULL, res, res};
  return rc;
}

static int eval_unary(evaluator *ev, const node *n, value *out) {
  int rc = eval(ev, n->l, out);
  if (rc) return rc;
  char b[48];
  if (n->op == OP_NOT) {
    if (out->k != V_BOOL) return eerr(ev, n->col, "'not' needs a boolean, not %s", vname(out, b));
    out->b = !out->b;
  } else if (out->k == V_ARR) {
    json_t *res;
    rc = map1(ev, n->col, "'-'", FN_ABS, true, out->j, 0, &res);
    vclear(out);
    if (!rc) *out = (value){V_ARR, 0, false, NULL, res, res};
  } else {
    if (out->k != V_NUM) return eerr(ev, n->col, "'-' needs a number or an array of numbers, not %s", vname(out, b));
    out->num = -out->num;
  }
  return rc;
}

/* A chain is a left fold over its operands: a loop, never a recursion. */
static int eval_chain(evaluator *ev, const node *n, value *acc) {
  int rc = eval(ev, n->v[0].n, acc);
  for (size_t i = 1; !rc && i < n->nv; i++) {
    const operand *o = &n->v[i];
    value r = {0}, res = {0};
    if (o->op == OP_AND || o->op == OP_OR) {
      rc = eval_logic(ev, n, i, acc);
      continue;
    }
    if (!(rc = eval(ev, o->n, &r)))
      rc = o->op >= OP_EQ && o->op <= OP_GE ? eval_compare(ev, o, acc, &r, &res) : eval_arith(ev, o, acc, &r, &res);
    vclear(&r);
    vclear(acc);
    if (!rc) *acc = res;
  }
  return rc;
}

static int eval_call(evaluator *ev, const node *n, value *out) {
  fn f = n->fn;
  char b[48];
  int rc = eval(ev, n->v[0].n, out);
  if (rc) return rc;
  if (f == FN_LEN) {
    if (out->k == V_ARR) {
      double len = (double)json_array_size(out->j);
      vclear(out);
      *out = (value){V_NUM, len, false, NULL, NULL, NULL};
      return 0;
    }
    if (out->k == V_STR) {
      size_t chars = 0; /* characters, not bytes: UTF-8 continuation bytes are not counted */
      for (const char *c = out->s; *c; c++) chars += ((unsigned char)*c & 0xC0) != 0x80;
      ev->work += chars;
      vclear(out);
      *out = (value){V_NUM, (double)chars, false, NULL, NULL, NULL};
      return 0;
    }
    return eerr(ev, n->col, "len takes an array or a string, not %s", vname(out, b));
  }
  if (f == FN_ABS || f == FN_SQRT) {
    if (out->k == V_NUM) {
      if (f == FN_SQRT && out->num < 0) return eerr(ev, n->col, "sqrt of a negative number (%g)", out->num);
      out->num = f == FN_ABS ? fabs(out->num) : sqrt(out->num);
      return 0;
    }
    if (out->k != V_ARR)
      return eerr(ev, n->col, "%s takes a number or an array of numbers, not %s", fns[f].name, vname(out, b));
    json_t *res;
    rc = map1(ev, n->col, fns[f].name, f, false, out->j, 0, &res);
    vclear(out);
    if (!rc) *out = (value){V_ARR, 0, false, NULL, res, res};
    return rc;
  }
  /* sum, min, max */
  if (n->nv == 1 && out->k == V_ARR) {
    double acc = 0;
    size_t count = 0;
    rc = fold(ev, n->col, f, out->j, 0, &acc, &count);
    if (!rc && !count && f != FN_SUM)
      rc = eerr(ev, n->col, "%s of an empty array; check len(...) > 0 first", fns[f].name);
    vclear(out);
    if (!rc) *out = (value){V_NUM, acc, false, NULL, NULL, NULL};
    return rc;
  }
  if (f == FN_SUM) return eerr(ev, n->col, "sum takes an array, not %s", vname(out, b));
  double acc = 0;
  for (size_t i = 0; i < n->nv; i++) {
    if (i && (rc = eval(ev, n->v[i].n, out))) return rc;
    if (out->k != V_NUM) {
      rc = eerr(ev, n->v[i].col, "%s takes numbers, or one array (%s(domain.v)); argument %zu is %s", fns[f].name,
                fns[f].name, i + 1, vname(out, b));
      vclear(out);
      return rc;
    }
    acc = !i ? out->num : f == FN_MIN ? fmin(acc, out->num) : fmax(acc, out->num);
  }
  out->num = acc;
  return 0;
}

static int eval_array(evaluator *ev, const node *n, value *out) {
  json_t *res = json_array();
  if (!res) return THEUS_ENOMEM;
  for (size_t i = 0; i < n->nv; i++) {
    value v;
    int rc = eval(ev, n->v[i].n, &v);
    json_t *x = NULL;
    char b[48];
    ev->work++;
    if (rc) {
    } else if (v.k == V_NUM) {
      if (!(x = num_json(v.num))) rc = THEUS_ENOMEM;
    } else if (v.k == V_ARR) {
      if (v.hold) x = json_incref((json_t *)v.j); /* a private temporary: share it */
      else rc = copy_array(ev, n->v[i].col, v.j, 0, &x);
    } else {
      rc = eerr(ev, n->v[i].col, "array literals hold numbers and arrays; element %zu is %s", i, vname(&v, b));
    }
    vclear(&v);
    if (rc || json_array_append_new(res, x)) {
      json_decref(res);
      return rc ? rc : THEUS_ENOMEM;
    }
  }
  *out = (value){V_ARR, 0, false, NULL, res, res};
  return 0;
}

/* base[i] and base.field, left to right in a loop. */
static int eval_post(evaluator *ev, const node *n, value *out) {
  int rc = eval(ev, n->l, out);
  char b[48];
  for (size_t i = 0; !rc && i < n->nv; i++) {
    const operand *o = &n->v[i];
    const json_t *next = NULL;
    if (o->op == OP_FIELD && out->k == V_OBJ) {
      if (!(next = json_object_get(out->j, o->n->str)))
        rc = eerr(ev, o->col, "no field '%s' there; the object has %zu fields", o->n->str, json_object_size(out->j));
    } else if (o->op == OP_FIELD && out->k == V_ARR && isdigit((unsigned char)o->n->str[0])) {
      size_t k = strtoul(o->n->str, NULL, 10);
      if (!(next = json_array_get(out->j, k)))
        rc = eerr(ev, o->col, "index %zu is out of range for an array of length %zu", k, json_array_size(out->j));
    } else if (o->op == OP_FIELD) {
      rc = eerr(ev, o->col, "'.%s' needs an object, not %s", o->n->str, vname(out, b));
    } else if (out->k != V_ARR) {
      rc = eerr(ev, o->col, "'[...]' indexes an array, not %s", vname(out, b));
    } else {
      value ix;
      if ((rc = eval(ev, o->n, &ix))) break;
      double k = ix.num;
      size_t len = json_array_size(out->j);
      if (ix.k != V_NUM || k != floor(k))
        rc = eerr(ev, o->n->col, "an index is a whole number, not %s", ix.k == V_NUM ? "a fraction" : vname(&ix, b));
      else if (k < 0 || k >= (double)len)
        rc = eerr(ev, o->n->col, "index %.0f is out of range for an array of length %zu", k, len);
      else
        next = json_array_get(out->j, (size_t)k);
      vclear(&ix);
    }
    if (rc) break;
    value v;
    from_json(next, out->hold, &v);
    vclear(out);
    *out = v;
  }
  if (rc) vclear(out);
  return rc;
}

static int eval_node(evaluator *ev, const node *n, value *out) {
  switch (n->kind) {
  case N_NUM: *out = (value){V_NUM, n->num, false, NULL, NULL, NULL}; return 0;
  case N_BOOL: *out = (value){V_BOOL, 0, n->b, NULL, NULL, NULL}; return 0;
  case N_STR: *out = (value){V_STR, 0, false, n->str, NULL, NULL}; return 0;
  case N_NULL: return 0;
  case N_PATH: return eval_path(ev, n, out);
  case N_UNARY: return eval_unary(ev, n, out);
  case N_CALL: return eval_call(ev, n, out);
  case N_ARRAY: return eval_array(ev, n, out);
  case N_POST: return eval_post(ev, n, out);
  default: return eval_chain(ev, n, out);
  }
}

/* Every failure leaves *out empty (a temporary it held is released). Recursion
 * follows the tree, whose nesting the parser bounds by EXPR_MAX_DEPTH. */
static int eval(evaluator *ev, const node *n, value *out) {
  *out = (value){V_NULL, 0, false, NULL, NULL, NULL};
  int rc = eval_node(ev, n, out);
  if (rc) vclear(out);
  return rc;
}

static json_t *to_json(const value *v) {
  switch (v->k) {
  case V_NUM: return num_json(v->num);
  case V_BOOL: return json_boolean(v->b);
  case V_STR: return json_string(v->s);
  case V_ARR:
  case V_OBJ: return v->hold ? json_incref((json_t *)v->j) : json_deep_copy(v->j);
  default: return json_null();
  }
}

int theus__expr_eval(const theus__expr *e, const json_t *domain, json_t **out, char *err, size_t errlen,
                     int *errcol, uint64_t *work) {
  evaluator ev = {domain, err, errlen, 0, 0};
  value v;
  *out = NULL;
  int rc = eval(&ev, e->root, &v);
  if (errcol) *errcol = ev.errcol;
  if (work) *work = ev.work;
  if (rc) return rc;
  *out = to_json(&v);
  vclear(&v);
  return *out ? 0 : THEUS_ENOMEM;
}

int theus__expr_eval_bool(const theus__expr *e, const json_t *domain, bool *out, char *err, size_t errlen,
                          int *errcol, uint64_t *work) {
  evaluator ev = {domain, err, errlen, 0, 0};
  value v;
  char b[48];
  int rc = eval(&ev, e->root, &v);
  if (!rc && v.k != V_BOOL)
    rc = eerr(&ev, e->root->col, "the condition is %s, not a boolean; compare it, e.g. '%s > 0'", vname(&v, b),
              e->text);
  if (errcol) *errcol = ev.errcol;
  if (work) *work = ev.work;
  *out = !rc && v.b;
  vclear(&v);
  return rc;
}
