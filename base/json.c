/* base: JSON text that may fail for want of memory (see base.h).
 *
 * jansson reports an allocation that fails while it reads a string or a key
 * as a syntax error ("invalid token near ..."), and one that fails while it
 * builds a value with no text at all. So a failed load is a syntax error only
 * if jansson says so with a text and the text is not valid JSON after all:
 * valid() below checks the syntax (RFC 8259, UTF-8) without allocating. */
#include <stdbool.h>
#include <string.h>

#include <jansson.h>

#include "base.h"

#define MAX_DEPTH 2048 /* jansson's JSON_PARSER_MAX_DEPTH: deeper is its own error */

typedef struct scan {
  const unsigned char *s;
  size_t n, i;
} scan;

static void ws(scan *c) {
  while (c->i < c->n && (c->s[c->i] == ' ' || c->s[c->i] == '\t' || c->s[c->i] == '\n' || c->s[c->i] == '\r')) c->i++;
}

static bool hex4(scan *c, unsigned *u) {
  *u = 0;
  for (int k = 0; k < 4; k++, c->i++) {
    if (c->i >= c->n) return false;
    unsigned char h = c->s[c->i];
    unsigned d = h >= '0' && h <= '9'   ? (unsigned)(h - '0')
                 : h >= 'a' && h <= 'f' ? (unsigned)(h - 'a' + 10)
                 : h >= 'A' && h <= 'F' ? (unsigned)(h - 'A' + 10)
                                        : 16u;
    if (d > 15) return false;
    *u = *u * 16 + d;
  }
  return true;
}

/* \uXXXX after the backslash and the u; surrogates must pair. */
static bool uescape(scan *c) {
  unsigned u, lo;
  if (!hex4(c, &u)) return false;
  if (u >= 0xDC00 && u <= 0xDFFF) return false;
  if (u < 0xD800 || u > 0xDBFF) return true;
  if (c->i + 1 >= c->n || c->s[c->i] != '\\' || c->s[c->i + 1] != 'u') return false;
  c->i += 2;
  return hex4(c, &lo) && lo >= 0xDC00 && lo <= 0xDFFF;
}

/* One UTF-8 sequence of 2 to 4 bytes starting at c->i (lead byte >= 0x80). */
static bool utf8(scan *c) {
  unsigned char b = c->s[c->i];
  size_t len = b >= 0xC2 && b <= 0xDF ? 2 : b >= 0xE0 && b <= 0xEF ? 3 : b >= 0xF0 && b <= 0xF4 ? 4 : 0;
  if (!len || c->i + len > c->n) return false;
  unsigned cp = b & (len == 2 ? 0x1F : len == 3 ? 0x0F : 0x07);
  for (size_t k = 1; k < len; k++) {
    if ((c->s[c->i + k] & 0xC0) != 0x80) return false;
    cp = cp << 6 | (c->s[c->i + k] & 0x3F);
  }
  c->i += len;
  return (len != 3 || (cp >= 0x800 && (cp < 0xD800 || cp > 0xDFFF))) && (len != 4 || (cp >= 0x10000 && cp <= 0x10FFFF));
}

static bool string(scan *c) {
  if (c->i >= c->n || c->s[c->i] != '"') return false;
  for (c->i++; c->i < c->n;) {
    unsigned char ch = c->s[c->i];
    if (ch == '"') {
      c->i++;
      return true;
    }
    if (ch < 0x20) return false;
    if (ch >= 0x80) {
      if (!utf8(c)) return false;
      continue;
    }
    c->i++;
    if (ch != '\\') continue;
    if (c->i >= c->n) return false;
    ch = c->s[c->i++];
    if (ch == 'u') {
      if (!uescape(c)) return false;
    } else if (!strchr("\"\\/bfnrt", ch) || !ch) {
      return false;
    }
  }
  return false;
}

static size_t digits(scan *c) {
  size_t k = c->i;
  while (c->i < c->n && c->s[c->i] >= '0' && c->s[c->i] <= '9') c->i++;
  return c->i - k;
}

static bool number(scan *c) {
  if (c->i < c->n && c->s[c->i] == '-') c->i++;
  if (c->i < c->n && c->s[c->i] == '0') {
    c->i++;
  } else if (!digits(c)) {
    return false;
  }
  if (c->i < c->n && c->s[c->i] == '.') {
    c->i++;
    if (!digits(c)) return false;
  }
  if (c->i < c->n && (c->s[c->i] == 'e' || c->s[c->i] == 'E')) {
    c->i++;
    if (c->i < c->n && (c->s[c->i] == '+' || c->s[c->i] == '-')) c->i++;
    if (!digits(c)) return false;
  }
  return true;
}

static bool word(scan *c, const char *w) {
  size_t l = strlen(w);
  if (c->n - c->i < l || memcmp(c->s + c->i, w, l)) return false;
  c->i += l;
  return true;
}

static bool scalar(scan *c) {
  unsigned char ch = c->s[c->i];
  if (ch == '"') return string(c);
  if (ch == '-' || (ch >= '0' && ch <= '9')) return number(c);
  return word(c, "true") || word(c, "false") || word(c, "null");
}

/* "key" ws ':' */
static bool key(scan *c) {
  ws(c);
  if (!string(c)) return false;
  ws(c);
  if (c->i >= c->n || c->s[c->i] != ':') return false;
  c->i++;
  return true;
}

/* Is s[0, n) one JSON text that jansson would parse with these flags, memory
 * permitting? Iterative: the nesting (object or array per level) is a bit
 * stack, so the input's depth costs no recursion. */
static bool valid(const char *s, size_t n, size_t flags) {
  scan c = {(const unsigned char *)s, n, 0};
  unsigned char obj[MAX_DEPTH / 8];
  size_t depth = 0;
  ws(&c);
  if (!(flags & JSON_DECODE_ANY) && (c.i >= n || (s[c.i] != '[' && s[c.i] != '{'))) return false;
  for (;;) {
    /* a value */
    ws(&c);
    if (c.i >= n) return false;
    if (s[c.i] == '[' || s[c.i] == '{') {
      bool o = s[c.i++] == '{';
      if (depth == MAX_DEPTH) return false;
      obj[depth / 8] = (unsigned char)((obj[depth / 8] & ~(1u << depth % 8)) | (unsigned)o << depth % 8);
      depth++;
      ws(&c);
      if (c.i < n && s[c.i] == (o ? '}' : ']')) {
        c.i++;
        depth--;
      } else {
        if (o && !key(&c)) return false;
        continue;
      }
    } else if (!scalar(&c)) {
      return false;
    }
    /* after a value: close containers, or a comma and the next member */
    for (;;) {
      ws(&c);
      if (!depth) return (flags & JSON_DISABLE_EOF_CHECK) || c.i == n;
      bool o = obj[(depth - 1) / 8] >> (depth - 1) % 8 & 1;
      if (c.i >= n) return false;
      if (s[c.i] == (o ? '}' : ']')) {
        c.i++;
        depth--;
        continue;
      }
      if (s[c.i] != ',') return false;
      c.i++;
      if (o && !key(&c)) return false;
      break;
    }
  }
}

json_t *theus__json_load(const char *buf, size_t n, size_t flags, json_error_t *je, int *rc) {
  *rc = 0;
  memset(je, 0, sizeof *je); /* jansson may fail (out of memory) before it fills je */
  json_t *j = json_loadb(buf, n, flags, je);
  if (j) return j;
  int code = json_error_code(je);
  *rc = code == json_error_out_of_memory || !je->text[0] || (code == json_error_invalid_syntax && valid(buf, n, flags))
            ? THEUS_ENOMEM
            : THEUS_EPARSE;
  return NULL;
}
