/* theus-c — JSON Pointer -> line:column index of a JSON text. */
#include "pipeline_pos.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "theus/error.h"

/* jansson refuses deeper documents, so a valid text never needs more. */
#define POS_MAX_DEPTH 2048
#define POS_PTR_MAX 4096

typedef struct scanner {
  const char *s;
  size_t len, pos;
  int line, col;
  theus__pos_index *idx;
  char ptr[POS_PTR_MAX];
  int depth;
} scanner;

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
    if (!v) return THEUS_ENOMEM;
    idx->v = v;
    idx->cap = cap;
  }
  char *p = strdup(sc->ptr);
  if (!p) return THEUS_ENOMEM;
  idx->v[idx->n++] = (theus__pos_entry){p, line, col, kline, kcol};
  return 0;
}

/* Skips a string token; *start gets its first byte (the quote). */
static int skip_string(scanner *sc) {
  if (peek(sc) != '"') return THEUS_EPARSE;
  advance(sc);
  while (sc->pos < sc->len && sc->s[sc->pos] != '"') {
    if (sc->s[sc->pos] == '\\') advance(sc);
    if (sc->pos < sc->len) advance(sc);
  }
  if (peek(sc) != '"') return THEUS_EPARSE;
  advance(sc);
  return 0;
}

static int scan_value(scanner *sc, int kline, int kcol);

/* Pushes a segment, scans the member value, pops the segment. */
static int scan_child(scanner *sc, const char *key, size_t index, int kline, int kcol) {
  size_t mark = strlen(sc->ptr);
  if (!theus__pos_push(sc->ptr, sizeof sc->ptr, key, index)) return THEUS_EPARSE;
  int rc = scan_value(sc, kline, kcol);
  sc->ptr[mark] = '\0';
  return rc;
}

static int scan_member(scanner *sc) {
  int kline = sc->line, kcol = sc->col;
  size_t start = sc->pos;
  int rc = skip_string(sc);
  if (rc) return rc;
  /* let jansson decode the key's escapes exactly as it did for the document */
  json_t *k = json_loadb(sc->s + start, sc->pos - start, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
  if (!json_is_string(k)) {
    json_decref(k);
    return THEUS_EPARSE;
  }
  skip_ws(sc);
  if (peek(sc) != ':') rc = THEUS_EPARSE;
  if (!rc) {
    advance(sc);
    rc = scan_child(sc, json_string_value(k), 0, kline, kcol);
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
    int rc = close == '}' ? scan_member(sc) : scan_child(sc, NULL, i, 0, 0);
    if (rc) return rc;
    skip_ws(sc);
    char c = peek(sc);
    if (c == close) {
      advance(sc);
      return 0;
    }
    if (c != ',') return THEUS_EPARSE;
    advance(sc);
  }
}

static int scan_value(scanner *sc, int kline, int kcol) {
  skip_ws(sc);
  int line = sc->line, col = sc->col;
  int rc = record(sc, line, col, kline ? kline : line, kline ? kcol : col);
  if (rc) return rc;
  if (++sc->depth > POS_MAX_DEPTH) return THEUS_EPARSE;
  char c = peek(sc);
  if (c == '{' || c == '[')
    rc = scan_container(sc, c == '{' ? '}' : ']');
  else if (c == '"')
    rc = skip_string(sc);
  else if (c)
    while (sc->pos < sc->len && !strchr(",]} \t\r\n", sc->s[sc->pos])) advance(sc);
  else
    rc = THEUS_EPARSE;
  sc->depth--;
  return rc;
}

int theus__pos_index_build(theus__pos_index *idx, const char *text, size_t len) {
  memset(idx, 0, sizeof *idx);
  scanner *sc = calloc(1, sizeof *sc);
  if (!sc) return THEUS_ENOMEM;
  *sc = (scanner){.s = text, .len = len, .line = 1, .col = 1, .idx = idx};
  int rc = scan_value(sc, 0, 0);
  free(sc);
  if (rc) theus__pos_index_free(idx);
  return rc;
}

void theus__pos_lookup(const theus__pos_index *idx, const char *ptr, bool key, int *line, int *col) {
  *line = *col = 0;
  char buf[POS_PTR_MAX];
  snprintf(buf, sizeof buf, "%s", ptr ? ptr : "");
  for (;;) {
    for (size_t i = 0; i < idx->n; i++)
      if (strcmp(idx->v[i].ptr, buf) == 0) {
        *line = key ? idx->v[i].key_line : idx->v[i].line;
        *col = key ? idx->v[i].key_col : idx->v[i].col;
        return;
      }
    char *slash = strrchr(buf, '/');
    if (!slash) return;
    *slash = '\0'; /* fall back to the parent */
    key = false;
  }
}

void theus__pos_index_free(theus__pos_index *idx) {
  for (size_t i = 0; i < idx->n; i++) free(idx->v[i].ptr);
  free(idx->v);
  memset(idx, 0, sizeof *idx);
}

bool theus__pos_push(char *buf, size_t cap, const char *key, size_t index) {
  size_t n = strlen(buf);
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
    if (n + need >= cap) return false;
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
