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

typedef enum node_kind { N_NUM, N_BOOL, N_STR, N_NULL, N_PATH, N_UNARY, N_CHAIN } node_kind;

typedef enum op {
  OP_NONE, OP_OR, OP_AND, OP_NOT, OP_NEG, OP_EQ, OP_NE, OP_LT, OP_LE, OP_GT, OP_GE,
  OP_ADD, OP_SUB, OP_MUL, OP_DIV, OP_MOD
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
  int col;
  double num;
  bool b;
  char *str;         /* N_STR value; N_PATH display text */
  char **seg;        /* N_PATH segments below domain */
  size_t nseg;
  struct node *l;    /* N_UNARY operand */
  operand *v;        /* N_CHAIN operands, left to right (two or more) */
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

static node *node_new(node_kind k, op o, size_t col) {
  node *n = calloc(1, sizeof *n);
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
    operand *v = c ? calloc(4, sizeof *v) : NULL;
    if (!v) return free(c), NULL;
    v[0] = (operand){OP_NONE, l->col, l};
    c->v = v;
    c->nv = 1;
    c->capv = 4;
    return c;
  }
  if (l->nv == l->capv) {
    operand *v = realloc(l->v, 2 * l->capv * sizeof *v);
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
  char *buf = malloc(len + 1);
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
  char **seg = realloc(n->seg, (n->nseg + 1) * sizeof *seg);
  if (!seg) return THEUS_ENOMEM;
  n->seg = seg;
  if (!(seg[n->nseg] = strndup(s, len))) return THEUS_ENOMEM;
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
  n->str = strndup(p->s + start, p->pos - start);
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
  perr(p, start, "unknown name '%.*s'; values are numbers, 'strings', true, false, null or paths like domain.x",
       (int)n, w);
  return NULL;
}

static node *parse_primary(parser *p) {
  ws(p);
  char c = p->s[p->pos];
  size_t at = p->pos;
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
    perr(p, at, "unexpected '%c'; expected a value (number, 'string', true, false, null, domain.x or '(')", c);
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

static int parse_once(const char *text, theus__expr **out, char *err, size_t errlen, int *errcol) {
  *out = NULL;
  if (errcol) *errcol = 0;
  parser p = {text ? text : "", 0, 0, err, errlen, 0};
  node *root = parse_or(&p);
  ws(&p);
  if (root && p.s[p.pos]) {
    perr(&p, p.pos, "unexpected '%c' after a complete expression; combine conditions with and/or", p.s[p.pos]);
    node_free(root);
    root = NULL;
  }
  if (!root) {
    if (!p.errcol) perr(&p, p.pos, "out of memory");
    if (errcol) *errcol = p.errcol;
    return THEUS_EPARSE;
  }
  theus__expr *e = calloc(1, sizeof *e);
  if (!e || !(e->text = strdup(p.s))) {
    free(e);
    node_free(root);
    return THEUS_ENOMEM;
  }
  e->root = root;
  *out = e;
  return 0;
}

/* A node that cannot be allocated makes its parents fail as if the text were
 * wrong: an error counts as a syntax error only if a second parse gives the
 * same one (a second parse that succeeds is used); else memory ran out. */
int theus__expr_parse(const char *text, theus__expr **out, char *err, size_t errlen, int *errcol) {
  char first[256] = "", again[256] = "";
  int col1 = 0, col2 = 0;
  int rc = parse_once(text, out, first, sizeof first, &col1);
  if (rc == THEUS_EPARSE) rc = parse_once(text, out, again, sizeof again, &col2);
  if (rc == THEUS_EPARSE && (col1 != col2 || strcmp(first, again))) {
    snprintf(again, sizeof again, "out of memory");
    col2 = 0;
    rc = THEUS_ENOMEM;
  }
  if (rc && err && errlen) snprintf(err, errlen, "%s", rc == THEUS_ENOMEM && !again[0] ? "out of memory" : again);
  if (errcol) *errcol = rc ? col2 : 0;
  return rc;
}

const char *theus__expr_text(const theus__expr *e) { return e ? e->text : ""; }

void theus__expr_free(theus__expr *e) {
  if (!e) return;
  node_free(e->root);
  free(e->text);
  free(e);
}

/* ---- evaluation ------------------------------------------------------------ */

typedef enum vkind { V_NULL, V_NUM, V_BOOL, V_STR } vkind;

typedef struct value {
  vkind k;
  double num;
  bool b;
  const char *s; /* borrowed from the AST or the domain */
} value;

typedef struct evaluator {
  const json_t *domain;
  char *err;
  size_t errlen;
  int errcol;
} evaluator;

static int eerr(evaluator *ev, int col, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int eerr(evaluator *ev, int col, const char *fmt, ...) {
  ev->errcol = col;
  va_list ap;
  va_start(ap, fmt);
  if (ev->err && ev->errlen) vsnprintf(ev->err, ev->errlen, fmt, ap);
  va_end(ap);
  return THEUS_EINVAL;
}

static const char *kind_name(vkind k) {
  static const char *names[] = {"null", "a number", "a boolean", "a string"};
  return names[k];
}

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
  if (json_is_number(v)) *out = (value){V_NUM, json_number_value(v), false, NULL};
  else if (json_is_boolean(v)) *out = (value){V_BOOL, 0, json_is_true(v), NULL};
  else if (json_is_string(v)) *out = (value){V_STR, 0, false, json_string_value(v)};
  else if (json_is_null(v)) *out = (value){V_NULL, 0, false, NULL};
  else
    return eerr(ev, n->col, "%s is %s; expressions use numbers, strings and booleans (name a field inside it)", n->str,
                json_is_array(v) ? "an array" : "an object");
  return 0;
}

static int eval(evaluator *ev, const node *n, value *out);

/* Column of the left side of operand i's operator: the first operand, or the
 * operator that produced the value so far. */
static int left_col(const node *n, size_t i) { return i == 1 ? n->v[0].n->col : n->v[i - 1].col; }

/* acc = acc and/or operand i, short-circuiting (the operand is not evaluated). */
static int eval_logic(evaluator *ev, const node *n, size_t i, value *acc) {
  const operand *o = &n->v[i];
  const char *name = o->op == OP_AND ? "and" : "or";
  if (acc->k != V_BOOL)
    return eerr(ev, left_col(n, i), "%s needs booleans but its left side is %s", name, kind_name(acc->k));
  if ((o->op == OP_AND) != acc->b) return 0; /* false and ..., true or ... */
  int rc = eval(ev, o->n, acc);
  if (!rc && acc->k != V_BOOL)
    rc = eerr(ev, o->n->col, "%s needs booleans but its right side is %s", name, kind_name(acc->k));
  return rc;
}

static bool values_equal(const value *a, const value *b) {
  if (a->k != b->k) return false;
  switch (a->k) {
  case V_NUM: return a->num == b->num;
  case V_BOOL: return a->b == b->b;
  case V_STR: return strcmp(a->s, b->s) == 0;
  default: return true;
  }
}

static int eval_compare(evaluator *ev, const operand *n, const value *l, const value *r, value *out) {
  static const char *names[] = {[OP_LT] = "<", [OP_LE] = "<=", [OP_GT] = ">", [OP_GE] = ">="};
  out->k = V_BOOL;
  if (n->op == OP_EQ || n->op == OP_NE) {
    out->b = values_equal(l, r) == (n->op == OP_EQ);
    return 0;
  }
  double c;
  if (l->k == V_NUM && r->k == V_NUM)
    c = (l->num > r->num) - (l->num < r->num);
  else if (l->k == V_STR && r->k == V_STR)
    c = strcmp(l->s, r->s);
  else
    return eerr(ev, n->col, "'%s' compares two numbers or two strings, not %s and %s", names[n->op], kind_name(l->k),
                kind_name(r->k));
  out->b = n->op == OP_LT ? c < 0 : n->op == OP_LE ? c <= 0 : n->op == OP_GT ? c > 0 : c >= 0;
  return 0;
}

static int eval_arith(evaluator *ev, const operand *n, const value *l, const value *r, value *out) {
  static const char names[] = {[OP_ADD] = '+', [OP_SUB] = '-', [OP_MUL] = '*', [OP_DIV] = '/', [OP_MOD] = '%'};
  if (l->k != V_NUM || r->k != V_NUM)
    return eerr(ev, n->col, "'%c' needs two numbers, not %s and %s", names[n->op], kind_name(l->k), kind_name(r->k));
  if ((n->op == OP_DIV || n->op == OP_MOD) && r->num == 0) return eerr(ev, n->col, "division by zero");
  double v = n->op == OP_ADD ? l->num + r->num : n->op == OP_SUB ? l->num - r->num
           : n->op == OP_MUL ? l->num * r->num : n->op == OP_DIV ? l->num / r->num : fmod(l->num, r->num);
  if (!isfinite(v)) return eerr(ev, n->col, "'%c' overflows (the result is not a finite number)", names[n->op]);
  *out = (value){V_NUM, v, false, NULL};
  return 0;
}

static int eval_unary(evaluator *ev, const node *n, value *out) {
  int rc = eval(ev, n->l, out);
  if (rc) return rc;
  if (n->op == OP_NOT) {
    if (out->k != V_BOOL) return eerr(ev, n->col, "'not' needs a boolean, not %s", kind_name(out->k));
    out->b = !out->b;
  } else {
    if (out->k != V_NUM) return eerr(ev, n->col, "'-' needs a number, not %s", kind_name(out->k));
    out->num = -out->num;
  }
  return 0;
}

/* A chain is a left fold over its operands: a loop, never a recursion. */
static int eval_chain(evaluator *ev, const node *n, value *acc) {
  int rc = eval(ev, n->v[0].n, acc);
  for (size_t i = 1; !rc && i < n->nv; i++) {
    const operand *o = &n->v[i];
    value r, res;
    if (o->op == OP_AND || o->op == OP_OR) {
      rc = eval_logic(ev, n, i, acc);
      continue;
    }
    if (!(rc = eval(ev, o->n, &r)))
      rc = o->op >= OP_EQ && o->op <= OP_GE ? eval_compare(ev, o, acc, &r, &res) : eval_arith(ev, o, acc, &r, &res);
    if (!rc) *acc = res;
  }
  return rc;
}

static int eval(evaluator *ev, const node *n, value *out) {
  switch (n->kind) {
  case N_NUM: *out = (value){V_NUM, n->num, false, NULL}; return 0;
  case N_BOOL: *out = (value){V_BOOL, 0, n->b, NULL}; return 0;
  case N_STR: *out = (value){V_STR, 0, false, n->str}; return 0;
  case N_NULL: *out = (value){V_NULL, 0, false, NULL}; return 0;
  case N_PATH: return eval_path(ev, n, out);
  case N_UNARY: return eval_unary(ev, n, out);
  default: return eval_chain(ev, n, out);
  }
}

static json_t *to_json(const value *v) {
  switch (v->k) {
  case V_NUM:
    if (v->num == floor(v->num) && fabs(v->num) < 9007199254740992.0) return json_integer((json_int_t)v->num);
    return json_real(v->num);
  case V_BOOL: return json_boolean(v->b);
  case V_STR: return json_string(v->s);
  default: return json_null();
  }
}

int theus__expr_eval(const theus__expr *e, const json_t *domain, json_t **out, char *err, size_t errlen,
                     int *errcol) {
  evaluator ev = {domain, err, errlen, 0};
  value v;
  *out = NULL;
  int rc = eval(&ev, e->root, &v);
  if (errcol) *errcol = ev.errcol;
  if (rc) return rc;
  *out = to_json(&v);
  return *out ? 0 : THEUS_ENOMEM;
}

int theus__expr_eval_bool(const theus__expr *e, const json_t *domain, bool *out, char *err, size_t errlen,
                          int *errcol) {
  evaluator ev = {domain, err, errlen, 0};
  value v;
  int rc = eval(&ev, e->root, &v);
  if (!rc && v.k != V_BOOL)
    rc = eerr(&ev, e->root->col, "the condition is %s, not a boolean; compare it, e.g. '%s > 0'", kind_name(v.k),
              e->text);
  if (errcol) *errcol = ev.errcol;
  *out = !rc && v.b;
  return rc;
}
