/* theus-c — the small expression language of pipeline `if` / `while` / `set`
 * (internal; the grammar is documented in docs/pipeline-format.md).
 *
 *   expr    := or
 *   or      := and { ("or" | "||") and }
 *   and     := not { ("and" | "&&") not }
 *   not     := ("not" | "!") not | cmp
 *   cmp     := sum [ ("==" | "!=" | "<" | "<=" | ">" | ">=") sum ]
 *   sum     := term { ("+" | "-") term }
 *   term    := unary { ("*" | "/" | "%") unary }
 *   unary   := "-" unary | postfix
 *   postfix := primary { "[" expr "]" | "." (NAME | INDEX) }
 *   primary := NUMBER | STRING | "true" | "false" | "null" | path | call
 *            | "[" [ expr { "," expr } ] "]" | "(" expr ")"
 *   call    := ("len" | "abs" | "sqrt" | "sum" | "min" | "max") "(" expr { "," expr } ")"
 *   path    := "domain" { "." (NAME | INDEX) }+
 *
 * Strings are quoted with ' or ", with \ escaping the quote and itself.
 * Nothing has side effects and there are no loops or variables, so each node
 * is evaluated at most once and the work is bounded by the node count times
 * the size of the arrays involved (counted in *work). Parsed once; evaluated
 * many times.
 */
#ifndef THEUS_PIPELINE_EXPR_H
#define THEUS_PIPELINE_EXPR_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct theus__expr theus__expr;

/* Parses text. On error returns THEUS_EPARSE, *errcol gets the 1-based column
 * in text and err says what is expected there. */
int theus__expr_parse(const char *text, theus__expr **out, char *err, size_t errlen, int *errcol);

/* Evaluates against domain (the domain object, paths start below it).
 * *out receives a new JSON value (number, boolean, string, null, or an array
 * or object). THEUS_EINVAL for a runtime error (missing path, wrong type,
 * division by zero, arrays of different lengths), with *errcol (may be NULL)
 * the column of the failing sub-expression. *work (may be NULL) gets the
 * number of array elements visited, which callers charge to a budget. */
int theus__expr_eval(const theus__expr *e, const json_t *domain, json_t **out, char *err, size_t errlen,
                     int *errcol, uint64_t *work);

/* Evaluates a condition: the result must be a boolean. */
int theus__expr_eval_bool(const theus__expr *e, const json_t *domain, bool *out, char *err, size_t errlen,
                          int *errcol, uint64_t *work);

/* The source text the expression was parsed from. */
const char *theus__expr_text(const theus__expr *e);

void theus__expr_free(theus__expr *e);

#endif /* THEUS_PIPELINE_EXPR_H */
