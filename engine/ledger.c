/* The ledger: one JSON line per committed version, with the content hashes
 * of hash.c. Also the reader of a ledger file. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine_internal.h"

/* The entries are formatted as text straight into the file's buffer (no
 * JSON object is built per commit): process names, state paths and heavy keys
 * are validated identifiers and need no escaping; args and patches are
 * written by hash.c's JSON writer (jansson's compact bytes, no allocation). */

#define LIT THEUS__KBUF_LIT

static void put(theus__kbuf *b, const char *s) { theus__kbuf_add(b, s, strlen(s)); }

/* "xxh3:<16 hex digits>", two digits per byte from a table. */
static void put_hash(theus__kbuf *b, uint64_t h) {
  static const char hex2[513] =
      "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f"
      "303132333435363738393a3b3c3d3e3f404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f"
      "606162636465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f808182838485868788898a8b8c8d8e8f"
      "909192939495969798999a9b9c9d9e9fa0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf"
      "c0c1c2c3c4c5c6c7c8c9cacbcccdcecfd0d1d2d3d4d5d6d7d8d9dadbdcdddedfe0e1e2e3e4e5e6e7e8e9eaebecedeeef"
      "f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff";
  char *p = theus__kbuf_room(b, 23);
  if (!p)
    return;
  memcpy(p, "\"xxh3:", 6);
  for (int i = 0; i < 8; i++)
    memcpy(p + 6 + 2 * i, hex2 + 2 * ((h >> (56 - 8 * i)) & 255), 2);
  p[22] = '"';
  b->n += 23;
}

/* ,"<prefix><name>": */
static void put_key(theus__kbuf *b, int *first, const char *prefix, const char *name, size_t n) {
  theus__kbuf_add(b, *first ? "\"" : ",\"", *first ? 1 : 2);
  put(b, prefix);
  theus__kbuf_add(b, name, n);
  LIT(b, "\":");
  *first = 0;
}

/* ---- what a process read ---------------------------------------------- */

static void read_heavy(theus__kbuf *b, int *first, const theus_snapshot *snap, const char *key) {
  for (size_t i = 0; i < snap->nheavy; i++) {
    const theus__hbind *hb = &snap->heavy[i];
    if (strcmp(key, "*") && strcmp(key, hb->key))
      continue;
    put_key(b, first, "heavy.", hb->key, strlen(hb->key));
    if (hb->arr->live)
      LIT(b, "\"live\"");
    else
      put_hash(b, theus__harr_hash(hb->arr));
  }
}

const json_t *theus__input_at(const json_t *domain, const char *in, size_t *n) {
  const char *star = strchr(in, '*') ? strstr(in, ".*") : NULL; /* strchr: most inputs have no '*' */
  *n = star ? (size_t)(star - in) : strlen(in);
  return star ? theus__json_at_pattern(domain, in) : theus__json_at(domain, in);
}

void theus__ledger_reads(const theus_contract *c, const theus_snapshot *snap, theus__kbuf *b) {
  int first = 1;
  LIT(b, "{");
  for (const char *const *in = c->inputs; in && *in; in++) {
    if (!strncmp(*in, "heavy.", 6)) {
      read_heavy(b, &first, snap, *in + 6);
      continue;
    }
    size_t n;
    const json_t *v = theus__input_at(snap->domain, *in, &n);
    put_key(b, &first, "", *in, n);
    if (v)
      put_hash(b, theus__hash_json(v));
    else
      LIT(b, "null");
  }
  theus__kbuf_add(b, "}", 2); /* with its NUL */
}

/* ---- writing ------------------------------------------------------------ */

/* The open ledger file: lines are formatted straight into out (no copy per
 * line), under state_lock, and written with one write(2) per LEDGER_CHUNK
 * bytes, at close, or after every line with ledger_fsync. (A writer thread
 * was tried: handing each chunk to another core cost the committing thread
 * more in cache-line transfers than the write it saved.) */
struct theus__lfile {
  int fd;
  int werr; /* errno of the first failed write: later lines are dropped, commits refused */
  uint64_t lost_from; /* the first version whose line may be lost (werr set) */
  uint64_t first_pending; /* the version of the first line in out (0: none) */
  uint64_t first_unsynced; /* the first version not known on disk (0: none; fdatasync) */
  char *path;
  theus__kbuf out;
};

#define LEDGER_CHUNK (1u << 16)

int theus__ledger_open(theus_engine *e, const char *path) {
  theus__lfile *f = malloc(sizeof *f);
  if (!f)
    return theus__eset(e, THEUS_ENOMEM, "engine open: out of memory for the ledger '%s'", path);
  f->werr = 0;
  f->lost_from = f->first_pending = f->first_unsynced = 0;
  theus__kbuf_init(&f->out);
  f->path = strdup(path);
  f->fd = f->path ? open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666) : -1;
  if (f->fd < 0 || theus__kbuf_grow(&f->out, LEDGER_CHUNK + 4096)) {
    int err = !f->path || f->fd >= 0 ? ENOMEM : errno;
    if (f->fd >= 0)
      close(f->fd);
    theus__kbuf_fini(&f->out);
    free(f->path);
    free(f);
    return theus__eset(e, err == ENOMEM ? THEUS_ENOMEM : THEUS_ESYS, "engine open: cannot create the ledger '%s': %s",
                       path, strerror(err));
  }
  e->ledger = f;
  return 0;
}

/* Marks the file failed with err (the first failure is kept), the lines
 * from version `from` on being possibly lost. */
static void lfile_fail(theus__lfile *f, int err, uint64_t from) {
  if (f->werr)
    return;
  f->werr = err;
  f->lost_from = from;
}

/* Writes out what is pending (and fdatasyncs with sync). */
static void lfile_flush(theus__lfile *f, int sync) {
  size_t at = 0;
  while (at < f->out.n && !f->werr) {
    ssize_t w = write(f->fd, f->out.p + at, f->out.n - at);
    if (w > 0)
      at += (size_t)w;
    else if (w == 0 || errno != EINTR)
      lfile_fail(f, w ? errno : EIO, f->first_pending);
  }
  f->out.n = 0;
  f->first_pending = 0;
  if (sync && !f->werr) {
    if (fdatasync(f->fd))
      lfile_fail(f, errno, f->first_unsynced); /* what was written since the last sync may not be on disk */
    else
      f->first_unsynced = 0;
  }
}

/* THEUS_ESYS with the message in msg if the ledger file failed (a commit
 * would go unrecorded), else 0. Under state_lock. */
int theus__ledger_check(theus_engine *e, char *msg, size_t msglen) {
  theus__lfile *f = e->ledger;
  if (!f || !f->werr)
    return 0;
  if (msg && msglen)
    snprintf(msg, msglen, "the ledger '%s' cannot be written (%s): its lines from version %llu on may be lost; "
             "later commits are refused", f->path, strerror(f->werr), (unsigned long long)f->lost_from);
  return THEUS_ESYS;
}

int theus_engine_ledger_sync(theus_engine *e) {
  THEUS__ENGINE_ARG(e, "ledger_sync");
  char msg[768];
  pthread_mutex_lock(&e->state_lock);
  if (e->ledger)
    lfile_flush(e->ledger, 1);
  int rc = theus__ledger_check(e, msg, sizeof msg);
  pthread_mutex_unlock(&e->state_lock);
  return rc ? theus__eset(e, rc, "%s", msg) : 0;
}

void theus__ledger_close(theus_engine *e) {
  theus__lfile *f = e->ledger;
  if (!f)
    return;
  lfile_flush(f, 0);
  close(f->fd);
  theus__kbuf_fini(&f->out);
  free(f->path);
  free(f);
  e->ledger = NULL;
}

void theus_engine_set_commit_hook(theus_engine *e, theus_commit_fn fn, void *ud) {
  if (!e)
    return;
  atomic_store_explicit(&e->commit_ud, ud, memory_order_relaxed);
  atomic_store_explicit(&e->commit_fn, fn, memory_order_release);
}

int theus_engine_commit_run(theus_engine *e, const char *name, const json_t *args, const theus_snapshot *read,
                            const json_t *domain_patch, uint64_t *new_version) {
  if (new_version)
    *new_version = 0;
  THEUS__ENGINE_ARG(e, "commit_run");
  if (!name || !read)
    return theus__eset(e, THEUS_EINVAL, "commit_run: %s is NULL", name ? "read" : "name");
  if (domain_patch && !json_is_object(domain_patch))
    return theus__eset(e, THEUS_EINVAL, "commit_run: the domain patch of '%s' is not an object", name);
  int32_t reg;
  const theus_contract *c = theus__proc_find(e, name, &reg);
  if (!c)
    return theus__eset(e, THEUS_ENOTFOUND, "commit_run: no process named '%s' is registered", name);
  if (theus__engine_canceled(e)) /* as a job's wait after theus_engine_set_cancel's flag is set */
    return theus__eset(e, THEUS_ECANCELED, "process '%s': canceled; its result was not committed", name);
  if (!json_object_size(domain_patch))
    return 0;
  theus__commit_info ci = {"execute", c->name, args, read->version, NULL, -1, 0, 0};
  char msg[1024];
  int rc = theus__cas_process(e, &ci, c, read, domain_patch, NULL, new_version, msg, sizeof msg);
  return rc ? theus__eset(e, rc, "process '%s': %s", name, msg) : 0;
}

int theus__cas_process(theus_engine *e, theus__commit_info *ci, const theus_contract *c, const theus_snapshot *read,
                       const json_t *domain_patch, const json_t *heavy_patch, uint64_t *version, char *msg,
                       size_t msglen) {
  theus__kbuf reads;
  theus__kbuf_init(&reads);
  if (theus__ledger_on(e)) {
    theus__ledger_reads(c, read, &reads);
    ci->reads = reads.failed ? NULL : reads.p;
  }
  int rc = theus__cas(e, read->version, domain_patch, heavy_patch, ci, version, msg, msglen);
  theus__kbuf_fini(&reads);
  return rc;
}

/* {key: {"hash", "dtype", "shape"} | "live" | null} for the heavy patch. */
static void heavy_out(theus__kbuf *b, const theus_snapshot *s, const json_t *hpatch) {
  int first = 1;
  const char *key;
  json_t *v;
  LIT(b, "{");
  json_object_foreach((json_t *)hpatch, key, v) {
    const theus__hbind *hb = json_is_true(v) ? theus__snap_find(s, key) : NULL;
    theus_array_info info;
    put_key(b, &first, "", key, strlen(key));
    if (!hb || hb->arr->live || theus_array_info_get(hb->arr->arena, hb->arr->handle, &info)) {
      put(b, hb ? "\"live\"" : "null");
      continue;
    }
    LIT(b, "{\"hash\":");
    put_hash(b, theus__harr_hash(hb->arr));
    LIT(b, ",\"dtype\":\"");
    put(b, info.dtype ? theus_dtype_name(info.dtype) : "bytes");
    LIT(b, "\",\"shape\":[");
    for (unsigned d = 0; d < info.ndim; d++) {
      if (d)
        LIT(b, ",");
      theus__kbuf_u64(b, info.shape[d]);
    }
    LIT(b, "]}");
  }
  LIT(b, "}");
}

static void put_json(theus__kbuf *b, const json_t *v) {
  if (v)
    theus__kbuf_json(b, v, 0);
  else
    LIT(b, "null");
}

static void entry_text(theus__kbuf *b, const theus__commit_info *ci, const theus_snapshot *s, const json_t *dpatch,
                       const json_t *hpatch) {
  static const theus__commit_info bare = {.op = "cas", .worker = -1};
  if (!ci)
    ci = &bare;
  LIT(b, "{\"version\":");
  theus__kbuf_u64(b, s->version);
  LIT(b, ",\"op\":\"");
  put(b, ci->op);
  LIT(b, "\",\"process\":");
  if (ci->process) {
    LIT(b, "\"");
    put(b, ci->process);
    LIT(b, "\"");
  } else {
    LIT(b, "null");
  }
  LIT(b, ",\"args\":");
  put_json(b, ci->args);
  LIT(b, ",\"read_version\":");
  theus__kbuf_u64(b, ci->read_version);
  LIT(b, ",\"reads\":");
  put(b, ci->reads ? ci->reads : "null");
  LIT(b, ",\"patch\":");
  put_json(b, dpatch);
  LIT(b, ",\"heavy\":");
  if (hpatch)
    heavy_out(b, s, hpatch);
  else
    LIT(b, "null");
  LIT(b, ",\"worker\":");
  theus__kbuf_i64(b, ci->worker);
  LIT(b, ",\"duration_us\":");
  theus__kbuf_u64(b, ci->duration_ns / 1000);
  LIT(b, ",\"attempt\":");
  theus__kbuf_u64(b, ci->attempt);
  LIT(b, ",\"status\":\"committed\"}\n");
}

void theus__ledger_commit(theus_engine *e, const theus__commit_info *ci, const theus_snapshot *s,
                          const json_t *dpatch, const json_t *hpatch) {
  theus__lfile *f = e->ledger;
  theus__kbuf own, *b = f ? &f->out : &own; /* with a file, the line goes straight into its buffer */
  if (!f)
    theus__kbuf_init(&own);
  size_t start = b->n;
  entry_text(b, ci, s, dpatch, hpatch);
  theus_commit_fn fn = atomic_load_explicit(&e->commit_fn, memory_order_acquire);
  if (fn && !b->failed) { /* the hook gets the line as the file has it, parsed */
    json_t *en = json_loadb(b->p + start, b->n - start, 0, NULL);
    if (en)
      fn(en, atomic_load_explicit(&e->commit_ud, memory_order_relaxed));
    json_decref(en);
  }
  if (!f) {
    theus__kbuf_fini(&own);
    return;
  }
  if (b->failed || f->werr) { /* out of memory (or the file failed): the line is dropped whole */
    b->n = start;
    b->failed = 0;
    if (!f->werr) { /* the lines before it are whole: written, then the ledger stops */
      lfile_flush(f, 0);
      lfile_fail(f, ENOMEM, s->version);
    }
    return;
  }
  if (!f->first_pending)
    f->first_pending = s->version;
  if (!f->first_unsynced)
    f->first_unsynced = s->version;
  if (e->cfg.ledger_fsync || b->n >= LEDGER_CHUNK)
    lfile_flush(f, e->cfg.ledger_fsync);
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
  if (!out)
    return THEUS_EINVAL;
  theus_ledger *l = calloc(1, sizeof *l);
  *out = l;
  if (!l)
    return THEUS_ENOMEM;
  theus__err_init(&l->err);
  l->entries = json_array();
  if (!path)
    return ledger_fail(l, THEUS_EINVAL, "ledger %s (line %lu): %s", "(null)", 0, "path is NULL");
  FILE *f = fopen(path, "re");
  if (!f)
    return ledger_fail(l, THEUS_ESYS, "ledger %s (line %lu): cannot open it: %s", path, 0,
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
