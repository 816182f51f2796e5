/* base: error code names and the error object every handle embeds. */
#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "base.h"

const char *theus_strerror(int code) {
  switch (code) {
    case 0: return "success";
#define THEUS__ERR_TEXT(name, value, text) \
  case THEUS_##name: return text;
    THEUS_ERRNO_MAP(THEUS__ERR_TEXT)
#undef THEUS__ERR_TEXT
  }
  return "unknown error";
}

const char *theus_err_name(int code) {
  switch (code) {
    case 0: return "THEUS_OK";
#define THEUS__ERR_NAME(name, value, text) \
  case THEUS_##name: return "THEUS_" #name;
    THEUS_ERRNO_MAP(THEUS__ERR_NAME)
#undef THEUS__ERR_NAME
  }
  return "THEUS_E?";
}

/* ---- the error object ----------------------------------------------------- */

void theus__err_init(theus__err *err) {
  pthread_mutex_init(&err->lock, NULL);
  err->code = 0;
  err->msg[0] = '\0';
}

void theus__err_fini(theus__err *err) { pthread_mutex_destroy(&err->lock); }

int theus__err_vset(theus__err *err, int code, const char *fmt, va_list ap) {
  /* Format outside the lock into a local buffer: an argument may be this
   * object's own message (read through theus__err_msg, i.e. a copy). */
  char tmp[THEUS__ERRMSG_MAX];
  vsnprintf(tmp, sizeof tmp, fmt, ap);
  size_t n = strnlen(tmp, sizeof tmp - 1);
  pthread_mutex_lock(&err->lock);
  err->code = code;
  memcpy(err->msg, tmp, n);
  err->msg[n] = '\0';
  pthread_mutex_unlock(&err->lock);
  return code;
}

int theus__err_set(theus__err *err, int code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  theus__err_vset(err, code, fmt, ap);
  va_end(ap);
  return code;
}

void theus__err_copy(const theus__err *err, char *buf, size_t len) {
  if (!len) return;
  theus__err *e = (theus__err *)err; /* the lock is mutable state of any reader */
  pthread_mutex_lock(&e->lock);
  size_t n = strnlen(e->msg, len - 1);
  memcpy(buf, e->msg, n);
  buf[n] = '\0';
  pthread_mutex_unlock(&e->lock);
}

const char *theus__err_msg(const theus__err *err) {
  static _Thread_local char ring[THEUS__ERRMSG_RING][THEUS__ERRMSG_MAX];
  static _Thread_local unsigned next;
  char *buf = ring[next++ % THEUS__ERRMSG_RING];
  theus__err_copy(err, buf, THEUS__ERRMSG_MAX);
  return buf[0] ? buf : "no error";
}

int theus__errf(char *buf, size_t len, int code, const char *fmt, ...) {
  if (buf && len) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, len, fmt, ap);
    va_end(ap);
  }
  return code;
}

/* ---- did you mean ------------------------------------------------------------ */

static size_t distance(const char *a, const char *b) {
  size_t la = strlen(a), lb = strlen(b);
  if (la > 60 || lb > 60) return SIZE_MAX;
  size_t row[62];
  for (size_t j = 0; j <= lb; j++) row[j] = j;
  for (size_t i = 1; i <= la; i++) {
    size_t prev = row[0];
    row[0] = i;
    for (size_t j = 1; j <= lb; j++) {
      size_t cur = row[j];
      size_t best = prev + (tolower((unsigned char)a[i - 1]) != tolower((unsigned char)b[j - 1]));
      if (row[j] + 1 < best) best = row[j] + 1;
      if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
      row[j] = best;
      prev = cur;
    }
  }
  return row[lb];
}

int theus__near(const char *name, const char *cand, size_t *best) {
  if (!name || !cand || !strcmp(name, cand)) return 0;
  size_t d = distance(name, cand), len = strlen(name), limit = len / 3 > 2 ? len / 3 : 2;
  if (d > limit || d >= *best) return 0;
  *best = d;
  return 1;
}
