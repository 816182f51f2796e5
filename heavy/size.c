/* Sizes with units, parsed and printed in one place for the whole project
 * (the pipeline's "arena" object, theus-run's --arena-* flags, the arena's
 * limit messages). Rules in heavy.h and docs/heavy.md ("Sizes"). */
#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "theus/heavy.h"

typedef struct unit {
  const char *name;
  uint64_t mult;
} unit;

/* Binary units are what memory is counted in; the SI ones mean what the SI
 * says (KB = 1000 B), so "8GB" is never silently 8 GiB. */
static const unit units[] = {
    {"B", 1},           {"KiB", 1ull << 10}, {"MiB", 1ull << 20}, {"GiB", 1ull << 30}, {"TiB", 1ull << 40},
    {"KB", 1000ull},    {"MB", 1000000ull},  {"GB", 1000000000ull}, {"TB", 1000000000000ull},
};

static int fail(char *err, size_t errlen, const char *fmt, const char *text) {
  if (err && errlen) snprintf(err, errlen, fmt, text);
  return THEUS_EINVAL;
}

int theus_size_parse(const char *text, uint64_t *out, char *err, size_t errlen) {
  static const char *const units_help =
      "; write a byte count or a number with a unit: B, KiB, MiB, GiB, TiB (powers of 1024) or KB, MB, GB, TB "
      "(powers of 1000), e.g. \"8GiB\" or \"1.5GiB\"";
  char msg[400];
  if (!out) return fail(err, errlen, "theus_size_parse: out is NULL (size \"%.40s\")", text ? text : "");
  *out = 0;
  if (!text) text = "";
  const char *s = text;
  while (isspace((unsigned char)*s)) s++;
  if (!isdigit((unsigned char)*s)) {
    snprintf(msg, sizeof msg, "\"%%.40s\" is not a size%s", units_help);
    return fail(err, errlen, msg, text);
  }
  unsigned __int128 whole = 0, frac = 0, scale = 1;
  for (; isdigit((unsigned char)*s); s++) {
    whole = whole * 10 + (unsigned)(*s - '0');
    if (whole > UINT64_MAX) return fail(err, errlen, "size \"%.40s\" is too large (more than 2^64-1 bytes)", text);
  }
  if (*s == '.') {
    s++;
    if (!isdigit((unsigned char)*s)) {
      snprintf(msg, sizeof msg, "size \"%%.40s\": a digit must follow the '.'%s", units_help);
      return fail(err, errlen, msg, text);
    }
    for (; isdigit((unsigned char)*s); s++)
      if (scale < 1000000000000000000ull) { /* digits past 10^-18 change nothing a byte can show */
        frac = frac * 10 + (unsigned)(*s - '0');
        scale *= 10;
      }
  }
  while (isspace((unsigned char)*s)) s++;
  const char *u = s;
  size_t ulen = 0;
  while (isalpha((unsigned char)u[ulen])) ulen++;
  const char *rest = u + ulen;
  while (isspace((unsigned char)*rest)) rest++;
  uint64_t mult = 1;
  if (ulen) {
    size_t i = 0;
    while (i < sizeof units / sizeof units[0] &&
           (strlen(units[i].name) != ulen || strncasecmp(units[i].name, u, ulen) != 0))
      i++;
    if (i == sizeof units / sizeof units[0]) {
      if (ulen == 1 && strchr("kKmMgGtT", *u))
        snprintf(msg, sizeof msg, "size \"%%.40s\": the unit '%c' is ambiguous; write %ciB (powers of 1024) or %cB "
                 "(powers of 1000)", *u, toupper((unsigned char)*u), toupper((unsigned char)*u));
      else
        snprintf(msg, sizeof msg, "size \"%%.40s\": unknown unit%s", units_help);
      return fail(err, errlen, msg, text);
    }
    mult = units[i].mult;
  }
  if (*rest) {
    snprintf(msg, sizeof msg, "size \"%%.40s\": unexpected text after the unit%s", units_help);
    return fail(err, errlen, msg, text);
  }
  unsigned __int128 v = whole * mult + frac * mult / scale; /* the fraction rounds down to a whole byte */
  if (v > UINT64_MAX) return fail(err, errlen, "size \"%.40s\" is too large (more than 2^64-1 bytes)", text);
  *out = (uint64_t)v;
  return 0;
}

const char *theus_size_format(uint64_t bytes, int round_up, char *buf, size_t cap) {
  static const unit bin[] = {{"TiB", 1ull << 40}, {"GiB", 1ull << 30}, {"MiB", 1ull << 20}, {"KiB", 1ull << 10}};
  if (!buf || !cap) return buf;
  if (round_up) /* whole MiB (or KiB) above a MiB (a KiB): short, and never below bytes */
    for (size_t i = 2; i < 4; i++)
      if (bytes >= bin[i].mult) {
        uint64_t m = bin[i].mult;
        if (bytes % m && bytes <= UINT64_MAX - m) bytes += m - bytes % m;
        break;
      }
  for (size_t i = 0; i < 4; i++)
    if (bytes >= bin[i].mult && bytes % bin[i].mult == 0) {
      snprintf(buf, cap, "%" PRIu64 "%s", bytes / bin[i].mult, bin[i].name);
      return buf;
    }
  snprintf(buf, cap, "%" PRIu64 "B", bytes);
  return buf;
}
