/* theus-c — the small expression language of pipeline `if` / `while` (internal).
 *
 *   expr    := or
 *   or      := and { ("or" | "||") and }
 *   and     := not { ("and" | "&&") not }
 *   not     := ("not" | "!") not | cmp
 *   cmp     := sum [ ("==" | "!=" | "<" | "<=" | ">" | ">=") sum ]
 *   sum     := term { ("+" | "-") term }
 *   term    := unary { ("*" | "/" | "%") unary }
 *   unary   := "-" unary | primary
 *   primary := NUMBER | STRING | "true" | "false" | "null" | path | "(" expr ")"
 *   path    := "domain" { "." (NAME | INDEX) }+
 *
 * Strings are quoted with ' or ", with \ escaping the quote and itself.
 * Nothing has side effects, there are no calls and no loops, so evaluation
 * is bounded by the size of the text. Parsed once; evaluated many times.
 */
#ifndef THEUS_PIPELINE_EXPR_H
#define THEUS_PIPELINE_EXPR_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

typedef struct theus__expr theus__expr;

/* Parses text. On error returns THEUS_EPARSE, *errcol gets the 1-based column
 * in text and err says what is expected there. */
int theus__expr_parse(const char *text, theus__expr **out, char *err, size_t errlen, int *errcol);

/* Evaluates against domain (the domain object, paths start below it).
 * *out receives a new JSON value (number, boolean, string or null).
 * THEUS_EINVAL for a runtime error (missing path, wrong type, division by
 * zero), with *errcol (may be NULL) the column of the failing sub-expression. */
int theus__expr_eval(const theus__expr *e, const json_t *domain, json_t **out, char *err, size_t errlen,
                     int *errcol);

/* Evaluates a condition: the result must be a boolean. */
int theus__expr_eval_bool(const theus__expr *e, const json_t *domain, bool *out, char *err, size_t errlen,
                          int *errcol);

/* The source text the expression was parsed from. */
const char *theus__expr_text(const theus__expr *e);

void theus__expr_free(theus__expr *e);

#endif /* THEUS_PIPELINE_EXPR_H */
