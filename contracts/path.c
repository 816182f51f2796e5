/* State paths and patterns: syntax check, coverage, overlap. */
#include <stdio.h>
#include <string.h>

#include "contract_internal.h"

static int is_field_start(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_';
}

static int is_field_char(char c) {
  return is_field_start(c) || (c >= '0' && c <= '9') || c == '-';
}

/* Length of the segment starting at p (up to '.' or end). */
static size_t seg_len(const char *p) {
  size_t n = 0;
  while (p[n] && p[n] != '.')
    n++;
  return n;
}

static int seg_ok(const char *p, size_t n) {
  if (n == 1 && p[0] == '*')
    return 1;
  if (n == 0 || !is_field_start(p[0]))
    return 0;
  for (size_t i = 1; i < n; i++)
    if (!is_field_char(p[i]))
      return 0;
  return 1;
}

#define fail(err, errlen, ...) theus__errf(err, errlen, THEUS_EINVAL, __VA_ARGS__)

int theus_path_check(const char *path, char *err, size_t errlen) {
  if (!path || !*path)
    return fail(err, errlen, "empty state path; use 'domain.<field>' or 'heavy.<key>'");
  size_t zl = seg_len(path);
  int heavy = zl == 5 && !strncmp(path, "heavy", 5);
  if (!heavy && !(zl == 6 && !strncmp(path, "domain", 6)))
    return fail(err, errlen, "path '%s' must start with 'domain.' or 'heavy.'", path);
  const char *p = path + zl;
  int segs = 0;
  while (*p) {
    p++; /* the '.' */
    size_t n = seg_len(p);
    if (!seg_ok(p, n))
      return fail(err, errlen, "path '%s': segment %d must be '*' or a field [A-Za-z_][A-Za-z0-9_-]*",
                  path, segs + 1);
    segs++;
    p += n;
  }
  if (segs == 0)
    return fail(err, errlen, "path '%s' names a whole zone; name a field below it", path);
  if (heavy && segs != 1)
    return fail(err, errlen, "path '%s': heavy paths are 'heavy.<key>' (one key, no sub-fields)", path);
  return 0;
}

/* Walks both paths segment by segment; returns how they relate:
 * 1 = a is a prefix of (or equal to) b, 2 = b is a strict prefix of a, 0 = differ. */
static int relate(const char *a, const char *b) {
  for (;;) {
    size_t na = seg_len(a), nb = seg_len(b);
    int star = (na == 1 && a[0] == '*') || (nb == 1 && b[0] == '*');
    if (!star && (na != nb || strncmp(a, b, na) != 0))
      return 0;
    a += na;
    b += nb;
    if (!*a)
      return 1;
    if (!*b)
      return 2;
    a++;
    b++;
  }
}

int theus_path_covers(const char *pattern, const char *path) {
  if (!pattern || !path)
    return 0;
  if (relate(pattern, path) != 1)
    return 0;
  /* A trailing '*' must consume a real segment: `x.*` covers below x, not x. */
  size_t lp = strlen(pattern);
  if (lp >= 2 && pattern[lp - 1] == '*' && pattern[lp - 2] == '.') {
    size_t segs_pat = 1, segs_path = 1;
    for (const char *q = pattern; *q; q++)
      segs_pat += *q == '.';
    for (const char *q = path; *q; q++)
      segs_path += *q == '.';
    return segs_path >= segs_pat;
  }
  return 1;
}

int theus_path_overlaps(const char *a, const char *b) { return a && b && relate(a, b) != 0; }
