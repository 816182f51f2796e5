/* The ledger: one JSON line per committed version, and the content hashes
 * it records (xxHash's XXH3-64, from libxxhash: see docs/ledger.md for why
 * not a cryptographic hash). Also the reader of a ledger file. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <xxhash.h>

#include "engine_internal.h"

/* ---- content hashes --------------------------------------------------- */

uint64_t theus__hash_bytes(const void *p, size_t n) { return XXH3_64bits(p, n); }

/* jansson's compact dump with sorted keys is canonical for a value: equal
 * values (object keys in any order) give equal bytes. */
static int hash_dump(const char *buf, size_t n, void *ud) {
  XXH3_64bits_update(ud, buf, n);
  return 0;
}

uint64_t theus__hash_json(const json_t *v) {
  XXH3_state_t *st = XXH3_createState();
  if (!st)
    return 0;
  XXH3_64bits_reset(st);
  json_dump_callback(v, hash_dump, st, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
  uint64_t h = XXH3_64bits_digest(st);
  XXH3_freeState(st);
  return h;
}

uint64_t theus__harr_hash(theus__harr *a) {
  if (a->live)
    return 0;
  uint64_t h = atomic_load_explicit(&a->hash, memory_order_acquire);
  if (h)
    return h; /* a published array never changes: hashed once */
  const void *p;
  size_t n;
  if (theus_arena_view(a->arena, a->handle, &p, &n))
    return 0;
  h = theus__hash_bytes(p, n);
  atomic_store_explicit(&a->hash, h, memory_order_release);
  return h;
}

static json_t *hash_str(uint64_t h) {
  char buf[32];
  snprintf(buf, sizeof buf, "xxh3:%016" PRIx64, h);
  return json_string(buf);
}

/* ---- what a process read ---------------------------------------------- */

static void read_heavy(json_t *out, const theus_snapshot *snap, const char *key) {
  for (size_t i = 0; i < snap->nheavy; i++) {
    const theus__hbind *b = &snap->heavy[i];
    if (strcmp(key, "*") && strcmp(key, b->key))
      continue;
    char path[300];
    snprintf(path, sizeof path, "heavy.%s", b->key);
    json_object_set_new(out, path, b->arr->live ? json_string("live") : hash_str(theus__harr_hash(b->arr)));
  }
}

/* A domain pattern is hashed at its part before the first '*' segment. */
static void read_domain(json_t *out, const theus_snapshot *snap, const char *pattern) {
  char path[512];
  snprintf(path, sizeof path, "%s", pattern);
  char *star = strstr(path, ".*");
  if (star)
    *star = '\0';
  const json_t *v = theus__json_at(snap->domain, path);
  json_object_set_new(out, path, v ? hash_str(theus__hash_json(v)) : json_null());
}

json_t *theus__ledger_reads(const theus_contract *c, const theus_snapshot *snap) {
  json_t *out = json_object();
  for (const char *const *in = c->inputs; out && in && *in; in++) {
    if (!strncmp(*in, "heavy.", 6))
      read_heavy(out, snap, *in + 6);
    else
      read_domain(out, snap, *in);
  }
  return out;
}

/* ---- writing ------------------------------------------------------------ */

int theus__ledger_open(theus_engine *e, const char *path) {
  e->ledger = fopen(path, "we");
  if (!e->ledger)
    return theus__eset(e, THEUS_ESYS, "engine open: cannot create the ledger '%s': %s", path, strerror(errno));
  setvbuf(e->ledger, NULL, _IOFBF, 1 << 16);
  return 0;
}

void theus__ledger_close(theus_engine *e) {
  if (e->ledger)
    fclose(e->ledger);
  e->ledger = NULL;
}

void theus_engine_set_commit_hook(theus_engine *e, theus_commit_fn fn, void *ud) {
  atomic_store_explicit(&e->commit_ud, ud, memory_order_relaxed);
  atomic_store_explicit(&e->commit_fn, fn, memory_order_release);
}

/* {key: {"hash", "dtype", "shape"} | "live" | null} for the heavy patch. */
static json_t *heavy_out(const theus_snapshot *s, const json_t *hpatch) {
  json_t *out = json_object();
  const char *key;
  json_t *v;
  json_object_foreach((json_t *)hpatch, key, v) {
    const theus__hbind *b = json_is_true(v) ? theus__snap_find(s, key) : NULL;
    theus_array_info info;
    if (!b || b->arr->live || theus_array_info_get(b->arr->arena, b->arr->handle, &info)) {
      json_object_set_new(out, key, b ? json_string("live") : json_null());
      continue;
    }
    json_t *shape = json_array();
    for (unsigned d = 0; d < info.ndim; d++)
      json_array_append_new(shape, json_integer((json_int_t)info.shape[d]));
    json_object_set_new(out, key,
                        json_pack("{s:o, s:s, s:o}", "hash", hash_str(theus__harr_hash(b->arr)), "dtype",
                                  info.dtype ? theus_dtype_name(info.dtype) : "bytes", "shape", shape));
  }
  return out;
}

static json_t *entry_new(const theus__commit_info *ci, const theus_snapshot *s, const json_t *dpatch,
                         const json_t *hpatch) {
  static const theus__commit_info bare = {.op = "cas", .worker = -1};
  if (!ci)
    ci = &bare;
  json_t *en = json_pack("{s:I, s:s, s:o, s:O, s:I, s:O, s:O}", "version", (json_int_t)s->version, "op", ci->op,
                         "process", ci->process ? json_string(ci->process) : json_null(), "args",
                         ci->args ? ci->args : json_null(), "read_version", (json_int_t)ci->read_version, "reads",
                         ci->reads ? ci->reads : json_null(), "patch", dpatch ? dpatch : json_null());
  if (!en)
    return NULL;
  json_object_set_new(en, "heavy", hpatch ? heavy_out(s, hpatch) : json_null());
  json_object_set_new(en, "worker", json_integer(ci->worker));
  json_object_set_new(en, "duration_us", json_integer((json_int_t)(ci->duration_ns / 1000)));
  json_object_set_new(en, "attempt", json_integer(ci->attempt));
  json_object_set_new(en, "status", json_string("committed"));
  return en;
}

static int dump_file(const char *buf, size_t n, void *ud) { return fwrite(buf, 1, n, ud) == n ? 0 : -1; }

void theus__ledger_commit(theus_engine *e, const theus__commit_info *ci, const theus_snapshot *s,
                          const json_t *dpatch, const json_t *hpatch) {
  json_t *en = entry_new(ci, s, dpatch, hpatch);
  if (!en)
    return;
  theus_commit_fn fn = atomic_load_explicit(&e->commit_fn, memory_order_acquire);
  if (fn)
    fn(en, atomic_load_explicit(&e->commit_ud, memory_order_relaxed));
  if (e->ledger) {
    json_dump_callback(en, dump_file, e->ledger, JSON_COMPACT);
    fputc('\n', e->ledger);
    if (e->cfg.ledger_fsync && fflush(e->ledger) == 0)
      fdatasync(fileno(e->ledger));
  }
  json_decref(en);
}

/* ---- reading ------------------------------------------------------------ */

struct theus_ledger {
  json_t *entries;
  uint64_t torn;
  theus__err err;
};

static int ledger_fail(theus_ledger *l, int code, const char *fmt, const char *path, unsigned long line,
                       const char *why) {
  return theus__err_set(&l->err, code, fmt, path, line, why);
}

static int ledger_parse(theus_ledger *l, const char *path, char *buf, size_t n) {
  size_t at = 0;
  for (unsigned long line = 1; at < n; line++) {
    char *nl = memchr(buf + at, '\n', n - at);
    size_t len = nl ? (size_t)(nl - (buf + at)) : n - at;
    json_error_t je;
    json_t *v = nl ? json_loadb(buf + at, len, 0, &je) : NULL;
    if (!v && (!nl || nl + 1 == buf + n)) {
      l->torn = n - at; /* the last line: cut short by a crash */
      return 0;
    }
    if (!v || json_array_append_new(l->entries, v))
      return ledger_fail(l, THEUS_EPARSE, "ledger %s line %lu: %s (only the last line may be torn)", path, line,
                         v ? "out of memory" : je.text);
    at += len + 1;
  }
  return 0;
}

int theus_ledger_open(const char *path, theus_ledger **out) {
  theus_ledger *l = calloc(1, sizeof *l);
  *out = l;
  if (!l)
    return THEUS_ENOMEM;
  theus__err_init(&l->err);
  l->entries = json_array();
  FILE *f = path ? fopen(path, "re") : NULL;
  if (!f)
    return ledger_fail(l, THEUS_ESYS, "ledger %s (line %lu): cannot open it: %s", path ? path : "(null)", 0,
                       strerror(errno));
  char *buf = NULL;
  size_t n = 0, cap = 0, got;
  do {
    if (n == cap) {
      char *nb = realloc(buf, cap = cap * 2 + (1 << 16));
      if (!nb)
        break;
      buf = nb;
    }
    got = fread(buf + n, 1, cap - n, f);
    n += got;
  } while (got);
  int rc = ferror(f) || n == cap ? THEUS_ESYS : 0;
  fclose(f);
  if (rc)
    rc = ledger_fail(l, rc, "ledger %s (line %lu): read failed: %s", path, 0, "I/O error or out of memory");
  else
    rc = ledger_parse(l, path, buf, n);
  free(buf);
  return rc;
}

size_t theus_ledger_count(const theus_ledger *l) { return l ? json_array_size(l->entries) : 0; }

const json_t *theus_ledger_entry(const theus_ledger *l, size_t i) { return l ? json_array_get(l->entries, i) : NULL; }

uint64_t theus_ledger_torn_bytes(const theus_ledger *l) { return l ? l->torn : 0; }

const char *theus_ledger_errmsg(const theus_ledger *l) { return l ? theus__err_msg(&l->err) : "no ledger"; }

void theus_ledger_close(theus_ledger *l) {
  if (!l)
    return;
  json_decref(l->entries);
  theus__err_fini(&l->err);
  free(l);
}
