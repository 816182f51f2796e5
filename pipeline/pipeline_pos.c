/* theus-c — JSON Pointer -> line:column index of a JSON text. */
#include "pipeline_pos.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "theus/error.h"

/* jansson refuses deeper documents, so a valid text never needs more. */
#define POS_MAX_DEPTH 2048

/* The pointer being scanned grows with the document (long keys, deep
 * nesting): it has no length limit of its own. */
typedef struct scanner {
  const char *s;
  size_t len, pos;
  int line, col;
  theus__pos_index *idx;
  char *ptr;
  size_t ptr_len, ptr_cap;
  int depth;
  const char *why; /* the cause when the scan fails */
} scanner;

static int fail(scanner *sc, int code, const char *why) {
  if (!sc->why) sc->why = why;
  return code;
}

static void advance(scanner *sc) {
  unsigned char c = (unsigned char)sc->s[sc->pos++];
  if (c == '\n') {
    sc->line++;
    sc->col = 1;
  } else if ((c & 0xC0) != 0x80) { /* count characters, not UTF-8 continuation bytes */
    sc->col++;
  }
}

static char peek(const scanner *sc) { return sc->pos < sc->len ? sc->s[sc->pos] : '\0'; }

static void skip_ws(scanner *sc) {
  while (sc->pos < sc->len && strchr(" \t\r\n", sc->s[sc->pos])) advance(sc);
}

static int record(scanner *sc, int line, int col, int kline, int kcol) {
  theus__pos_index *idx = sc->idx;
  if (idx->n == idx->cap) {
    size_t cap = idx->cap ? idx->cap * 2 : 64;
    theus__pos_entry *v = realloc(idx->v, cap * sizeof *v);
    if (!v) return fail(sc, THEUS_ENOMEM, "out of memory");
    idx->v = v;
    idx->cap = cap;
  }
  char *p = strdup(sc->ptr);
  if (!p) return fail(sc, THEUS_ENOMEM, "out of memory");
  idx->v[idx->n++] = (theus__pos_entry){p, line, col, kline, kcol};
  return 0;
}

/* Skips a string token. */
static int skip_string(scanner *sc) {
  if (peek(sc) != '"') return fail(sc, THEUS_EPARSE, "expected a string");
  advance(sc);
  while (sc->pos < sc->len && sc->s[sc->pos] != '"') {
    if (sc->s[sc->pos] == '\\') advance(sc);
    if (sc->pos < sc->len) advance(sc);
  }
  if (peek(sc) != '"') return fail(sc, THEUS_EPARSE, "unterminated string");
  advance(sc);
  return 0;
}

static int scan_value(scanner *sc, int kline, int kcol);

/* Pushes a segment, scans the member value, pops the segment. */
static int scan_child(scanner *sc, const char *key, size_t len, size_t index, int kline, int kcol) {
  size_t need = sc->ptr_len + 2 * len + 32; /* "/" + every byte escaped, or an index */
  if (need > sc->ptr_cap) {
    size_t cap = need > 2 * sc->ptr_cap ? need : 2 * sc->ptr_cap;
    char *np = realloc(sc->ptr, cap);
    if (!np) return fail(sc, THEUS_ENOMEM, "out of memory");
    sc->ptr = np;
    sc->ptr_cap = cap;
  }
  size_t mark = sc->ptr_len;
  theus__pos_push(sc->ptr, sc->ptr_cap, key, index); /* fits: room was made above */
  sc->ptr_len = strlen(sc->ptr);
  int rc = scan_value(sc, kline, kcol);
  sc->ptr[sc->ptr_len = mark] = '\0';
  return rc;
}

static int scan_member(scanner *sc) {
  int kline = sc->line, kcol = sc->col;
  size_t start = sc->pos;
  int rc = skip_string(sc);
  if (rc) return rc;
  /* let jansson decode the key's escapes exactly as it did for the document */
  json_t *k = json_loadb(sc->s + start, sc->pos - start, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
  /* the document parsed already, so a key that does not decode now is an
   * allocation that failed (jansson says "invalid syntax" for those too) */
  if (!k) return fail(sc, THEUS_ENOMEM, "out of memory decoding a key");
  if (!json_is_string(k)) {
    json_decref(k);
    return fail(sc, THEUS_EPARSE, "a key is not a valid JSON string");
  }
  skip_ws(sc);
  if (peek(sc) != ':') rc = fail(sc, THEUS_EPARSE, "expected ':' after a key");
  if (!rc) {
    advance(sc);
    rc = scan_child(sc, json_string_value(k), strlen(json_string_value(k)), 0, kline, kcol);
  }
  json_decref(k);
  return rc;
}

static int scan_container(scanner *sc, char close) {
  advance(sc);
  skip_ws(sc);
  if (peek(sc) == close) {
    advance(sc);
    return 0;
  }
  for (size_t i = 0;; i++) {
    skip_ws(sc);
    int rc = close == '}' ? scan_member(sc) : scan_child(sc, NULL, 0, i, 0, 0);
    if (rc) return rc;
    skip_ws(sc);
    char c = peek(sc);
    if (c == close) {
      advance(sc);
      return 0;
    }
    if (c != ',') return fail(sc, THEUS_EPARSE, "expected ',' or the end of the container");
    advance(sc);
  }
}

static int scan_value(scanner *sc, int kline, int kcol) {
  skip_ws(sc);
  int line = sc->line, col = sc->col;
  int rc = record(sc, line, col, kline ? kline : line, kline ? kcol : col);
  if (rc) return rc;
  if (++sc->depth > POS_MAX_DEPTH) return fail(sc, THEUS_EPARSE, "nested deeper than 2048");
  char c = peek(sc);
  if (c == '{' || c == '[')
    rc = scan_container(sc, c == '{' ? '}' : ']');
  else if (c == '"')
    rc = skip_string(sc);
  else if (c)
    while (sc->pos < sc->len && !strchr(",]} \t\r\n", sc->s[sc->pos])) advance(sc);
  else
    rc = fail(sc, THEUS_EPARSE, "expected a value");
  sc->depth--;
  return rc;
}

int theus__pos_index_build(theus__pos_index *idx, const char *text, size_t len, char *err, size_t errlen) {
  memset(idx, 0, sizeof *idx);
  scanner sc = {.s = text, .len = len, .line = 1, .col = 1, .idx = idx, .ptr = calloc(1, 64), .ptr_cap = 64};
  int rc = sc.ptr ? scan_value(&sc, 0, 0) : fail(&sc, THEUS_ENOMEM, "out of memory");
  if (rc && err && errlen)
    snprintf(err, errlen, "%d:%d: cannot index the positions of the text: %s", sc.line, sc.col, sc.why);
  free(sc.ptr);
  if (rc) theus__pos_index_free(idx);
  return rc;
}

void theus__pos_lookup(const theus__pos_index *idx, const char *ptr, bool key, int *line, int *col) {
  *line = *col = 0;
  if (!ptr) ptr = "";
  for (size_t n = strlen(ptr);;) { /* ptr[0, n) is the pointer looked for */
    for (size_t i = 0; i < idx->n; i++)
      if (strncmp(idx->v[i].ptr, ptr, n) == 0 && idx->v[i].ptr[n] == '\0') {
        *line = key ? idx->v[i].key_line : idx->v[i].line;
        *col = key ? idx->v[i].key_col : idx->v[i].col;
        return;
      }
    if (n == 0) return;
    while (n > 0 && ptr[--n] != '/') /* fall back to the parent */
      ;
    key = false;
  }
}

void theus__pos_index_free(theus__pos_index *idx) {
  for (size_t i = 0; i < idx->n; i++) free(idx->v[i].ptr);
  free(idx->v);
  memset(idx, 0, sizeof *idx);
}

bool theus__pos_push(char *buf, size_t cap, const char *key, size_t index) {
  size_t n = strlen(buf), n0 = n;
  char num[32];
  if (!key) {
    snprintf(num, sizeof num, "%zu", index);
    key = num;
  }
  if (n + 1 >= cap) return false;
  buf[n++] = '/';
  for (const char *k = key; *k; k++) {
    const char *esc = *k == '~' ? "~0" : *k == '/' ? "~1" : NULL;
    size_t need = esc ? 2 : 1;
    if (n + need >= cap) {
      buf[n0] = '\0'; /* unchanged: still the parent's pointer */
      return false;
    }
    if (esc) {
      memcpy(buf + n, esc, 2);
    } else {
      buf[n] = *k;
    }
    n += need;
  }
  buf[n] = '\0';
  return true;
}
