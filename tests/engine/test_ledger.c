/* engine: the ledger (one JSON line per committed version, content hashes of
 * what each process read), fsync mode, the commit hook, and reading a ledger
 * back: a torn last line is left out, a bad line before it is an error. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <xxhash.h>

#include "theus/engine.h"

static const char *const x_io[] = {"domain.x", NULL};
static const char *const sum_in[] = {"heavy.data", "domain.x", NULL};
static const char *const sum_out[] = {"domain.sum", NULL};
static const char *const v_in[] = {"domain.v", NULL};
static const char *const w_out[] = {"domain.w", NULL};

/* x += args.by */
static int inc(theus_ctx *ctx) {
  json_int_t x = json_integer_value(theus_ctx_get(ctx, "domain.x"));
  json_int_t by = json_integer_value(json_object_get(theus_ctx_args(ctx), "by"));
  return theus_ctx_set(ctx, "domain.x", json_integer(x + by));
}

/* sum = x + the sum of heavy.data, in a worker */
static int sum(theus_ctx *ctx) {
  theus_array_info a;
  int rc = theus_ctx_heavy(ctx, "data", &a);
  if (rc) return rc;
  double s = (double)json_integer_value(theus_ctx_get(ctx, "domain.x"));
  for (uint64_t i = 0; i < a.shape[0]; i++) s += ((const double *)a.data)[i];
  return theus_ctx_set(ctx, "domain.sum", json_real(s));
}

/* w = v */
static int copy_v(theus_ctx *ctx) { return theus_ctx_set(ctx, "domain.w", json_deep_copy(theus_ctx_get(ctx, "domain.v"))); }

typedef struct dir {
  char path[64], file[96];
} dir;

static int dir_setup(void **state) {
  dir *d = calloc(1, sizeof *d);
  snprintf(d->path, sizeof d->path, "/tmp/theus-ledger-XXXXXX");
  if (!d || !mkdtemp(d->path)) return -1;
  snprintf(d->file, sizeof d->file, "%s/ledger.jsonl", d->path);
  *state = d;
  return 0;
}

static int dir_teardown(void **state) {
  dir *d = *state;
  unlink(d->file);
  rmdir(d->path);
  free(d);
  return 0;
}

static void write_file(const char *path, const char *text) {
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  fputs(text, f);
  fclose(f);
}

/* Versions seen by the commit hook, in order. */
typedef struct seen {
  json_int_t v[16];
  size_t n;
} seen;

static void on_commit(const json_t *entry, void *ud) {
  seen *s = ud;
  if (s && s->n < 16) s->v[s->n++] = json_integer_value(json_object_get(entry, "version"));
}

static theus_engine *open_engine(const char *ledger, int fsync, seen *hook) {
  theus_engine_config cfg;
  theus_engine_config_init(&cfg);
  cfg.workers = 1;
  cfg.ledger = ledger;
  cfg.ledger_fsync = fsync;
  cfg.on_commit = on_commit;
  cfg.on_commit_ud = hook;
  json_t *dom = json_pack("{s:i}", "x", 0);
  cfg.domain = dom;
  theus_engine *e;
  assert_int_equal(theus_engine_open(&cfg, &e), 0);
  json_decref(dom);
  const theus_contract inc_c = {.name = "inc", .fn = inc, .inputs = x_io, .outputs = x_io};
  const theus_contract sum_c = {.name = "sum", .fn = sum, .inputs = sum_in, .outputs = sum_out, .parallel = 1};
  assert_int_equal(theus_engine_register(e, &inc_c), 0);
  assert_int_equal(theus_engine_register(e, &sum_c), 0);
  return e;
}

/* Runs inc(by 2), publishes heavy.data, inc(by 0) (same x read twice), sum
 * in a worker, set; closes the engine. */
static void run_steps(const char *ledger, int fsync, seen *hook) {
  theus_engine *e = open_engine(ledger, fsync, hook);
  json_t *by2 = json_pack("{s:i}", "by", 2), *by0 = json_pack("{s:i}", "by", 0);
  assert_int_equal(theus_engine_execute(e, "inc", by2, NULL), 0);
  double *data;
  uint64_t shape[1] = {4};
  assert_int_equal(theus_engine_heavy_alloc(e, "data", THEUS_DTYPE_F64, 1, shape, (void **)&data), 0);
  for (int i = 0; i < 4; i++) data[i] = i;
  json_t *hp = json_pack("{s:b}", "data", 1);
  assert_int_equal(theus_engine_cas(e, theus_engine_version(e), NULL, hp, NULL), 0);
  assert_int_equal(theus_engine_execute(e, "inc", by0, NULL), 0); /* writes x = 2 again: a version */
  assert_int_equal(theus_engine_execute(e, "sum", NULL, NULL), 0);
  assert_int_equal(theus_engine_set(e, "domain.done", json_true()), 0);
  json_decref(hp);
  json_decref(by2);
  json_decref(by0);
  theus_engine_close(e); /* flushes the buffered lines */
}

static const char *str(const json_t *en, const char *key) { return json_string_value(json_object_get(en, key)); }

static void test_entries(void **state) {
  dir *d = *state;
  seen hook = {{0}, 0};
  run_steps(d->file, 0, &hook);
  theus_ledger *l;
  assert_int_equal(theus_ledger_open(d->file, &l), 0);
  assert_int_equal(theus_ledger_count(l), 5);
  assert_int_equal(theus_ledger_torn_bytes(l), 0);
  assert_int_equal(hook.n, 5); /* the hook saw what the file holds, in order */
  for (size_t i = 0; i < 5; i++) {
    const json_t *en = theus_ledger_entry(l, i);
    assert_int_equal(json_integer_value(json_object_get(en, "version")), hook.v[i]);
    if (i) assert_int_equal(hook.v[i], hook.v[i - 1] + 1);
    assert_string_equal(str(en, "status"), "committed");
  }
  const json_t *first = theus_ledger_entry(l, 0), *pub = theus_ledger_entry(l, 1), *again = theus_ledger_entry(l, 2),
               *sm = theus_ledger_entry(l, 3), *set = theus_ledger_entry(l, 4);
  assert_string_equal(str(first, "op"), "execute");
  assert_string_equal(str(first, "process"), "inc");
  assert_int_equal(json_integer_value(json_object_get(json_object_get(first, "args"), "by")), 2);
  assert_int_equal(json_integer_value(json_object_get(json_object_get(first, "patch"), "x")), 2);
  assert_int_equal(json_integer_value(json_object_get(first, "worker")), -1);
  const char *h0 = json_string_value(json_object_get(json_object_get(first, "reads"), "domain.x"));
  const char *h1 = json_string_value(json_object_get(json_object_get(again, "reads"), "domain.x"));
  assert_non_null(h0);
  assert_non_null(h1);
  assert_memory_equal(h0, "xxh3:", 5);
  assert_string_not_equal(h0, h1); /* x was 0, then 2 */
  /* the published array: its content hash, dtype and shape; sum read it by the same hash */
  assert_string_equal(str(pub, "op"), "cas");
  const json_t *arr = json_object_get(json_object_get(pub, "heavy"), "data");
  assert_string_equal(str(arr, "dtype"), "f64");
  assert_int_equal(json_integer_value(json_array_get(json_object_get(arr, "shape"), 0)), 4);
  assert_string_equal(str(sm, "process"), "sum");
  assert_string_equal(json_string_value(json_object_get(json_object_get(sm, "reads"), "heavy.data")),
                      str(arr, "hash"));
  assert_string_equal(json_string_value(json_object_get(json_object_get(sm, "reads"), "domain.x")), h1);
  assert_int_equal(json_integer_value(json_object_get(sm, "worker")), 0); /* ran in worker 0 */
  assert_string_equal(str(set, "op"), "set");
  assert_true(json_is_true(json_object_get(json_object_get(set, "patch"), "done")));
  theus_ledger_close(l);
}

/* Entries of the commit hook, kept whole. */
static void keep_entry(const json_t *entry, void *ud) { json_array_append_new(ud, json_deep_copy(entry)); }

/* theus_engine_commit_run (a run made elsewhere on the same state): the same
 * ledger entry as the execute it stands for (op, process, args, read
 * version, reads, patch), a CAS on the version read, nothing for an empty
 * patch. */
static void test_commit_run(void **state) {
  (void)state;
  json_t *entries = json_array();
  theus_engine *e = open_engine(NULL, 0, NULL);
  theus_engine_set_commit_hook(e, keep_entry, entries);
  json_t *by3 = json_pack("{s:i}", "by", 3), *patch = json_pack("{s:i}", "x", 3);
  theus_snapshot *read;
  assert_int_equal(theus_engine_snapshot(e, &read), 0); /* x = 0 */
  assert_int_equal(theus_engine_execute(e, "inc", by3, NULL), 0);
  assert_int_equal(theus_engine_set(e, "domain.x", json_integer(0)), 0);
  theus_snapshot *read2;
  assert_int_equal(theus_engine_snapshot(e, &read2), 0); /* x = 0 again */
  uint64_t v = 0;
  assert_int_equal(theus_engine_commit_run(e, "inc", by3, read2, patch, &v), 0);
  assert_int_equal(v, theus_snapshot_version(read2) + 1);
  json_t *x = theus_engine_get(e, "domain.x");
  assert_int_equal(json_integer_value(x), 3);
  json_decref(x);
  assert_int_equal(json_array_size(entries), 3);
  const json_t *ex = json_array_get(entries, 0), *cr = json_array_get(entries, 2);
  static const char *const same[] = {"op", "process", "args", "reads", "patch"};
  for (size_t i = 0; i < sizeof same / sizeof same[0]; i++)
    assert_true(json_equal(json_object_get(ex, same[i]), json_object_get(cr, same[i])));
  assert_string_equal(str(cr, "op"), "execute");
  assert_int_equal(json_integer_value(json_object_get(cr, "read_version")), theus_snapshot_version(read2));
  /* x changed after `read` was taken: the CAS on its version conflicts, nothing is committed */
  assert_int_equal(theus_engine_commit_run(e, "inc", by3, read, patch, &v), THEUS_ECONFLICT);
  assert_int_equal(v, 0);
  assert_non_null(strstr(theus_engine_errmsg(e), "domain.x"));
  /* an empty patch is a reader: no version */
  uint64_t before = theus_engine_version(e);
  json_t *empty = json_object();
  assert_int_equal(theus_engine_commit_run(e, "inc", NULL, read2, empty, &v), 0);
  assert_int_equal(theus_engine_commit_run(e, "inc", NULL, read2, NULL, NULL), 0);
  assert_int_equal(theus_engine_version(e), before);
  assert_int_equal(v, 0);
  assert_int_equal(theus_engine_commit_run(e, "nope", NULL, read2, patch, NULL), THEUS_ENOTFOUND);
  static volatile int cancel = 1; /* a canceled run commits nothing more */
  theus_engine_set_cancel(e, &cancel);
  assert_int_equal(theus_engine_commit_run(e, "inc", by3, read2, patch, &v), THEUS_ECANCELED);
  theus_engine_set_cancel(e, NULL);
  assert_int_equal(theus_engine_commit_run(e, "inc", NULL, NULL, patch, NULL), THEUS_EINVAL);
  assert_int_equal(json_array_size(entries), 3);
  theus_engine_set_commit_hook(e, NULL, NULL);
  json_decref(empty);
  json_decref(by3);
  json_decref(patch);
  theus_snapshot_release(read);
  theus_snapshot_release(read2);
  theus_engine_close(e);
  json_decref(entries);
}

/* The same run with fsync gives the same entries but duration and worker. */
static void test_fsync_same_entries(void **state) {
  dir *d = *state;
  seen a = {{0}, 0}, b = {{0}, 0};
  run_steps(d->file, 0, &a);
  theus_ledger *l0, *l1;
  assert_int_equal(theus_ledger_open(d->file, &l0), 0);
  run_steps(d->file, 1, &b); /* truncates the file first */
  assert_int_equal(theus_ledger_open(d->file, &l1), 0);
  assert_int_equal(theus_ledger_count(l1), theus_ledger_count(l0));
  for (size_t i = 0; i < theus_ledger_count(l0); i++) {
    json_t *x = json_deep_copy(theus_ledger_entry(l0, i)), *y = json_deep_copy(theus_ledger_entry(l1, i));
    json_object_del(x, "duration_us");
    json_object_del(y, "duration_us");
    assert_true(json_equal(x, y));
    json_decref(x);
    json_decref(y);
  }
  theus_ledger_close(l0);
  theus_ledger_close(l1);
}

static void test_torn_last_line(void **state) {
  dir *d = *state;
  theus_ledger *l;
  static const char whole[] = "{\"version\":2}\n{\"version\":3}\n";
  static const struct {
    const char *tail;
    uint64_t torn;
  } cases[] = {{"", 0}, {"{\"version\":4,\"op\":\"ex", 21}, {"{\"version\":4}", 13}, {"{\"vers\n", 7}};
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char text[128];
    snprintf(text, sizeof text, "%s%s", whole, cases[i].tail);
    write_file(d->file, text);
    assert_int_equal(theus_ledger_open(d->file, &l), 0);
    assert_int_equal(theus_ledger_count(l), 2);
    assert_int_equal(theus_ledger_torn_bytes(l), cases[i].torn);
    assert_int_equal(json_integer_value(json_object_get(theus_ledger_entry(l, 1), "version")), 3);
    assert_null(theus_ledger_entry(l, 2));
    theus_ledger_close(l);
  }
}

static void test_bad_line_before_the_last(void **state) {
  dir *d = *state;
  theus_ledger *l;
  write_file(d->file, "{\"version\":2}\n{\"vers\n{\"version\":4}\n");
  assert_int_equal(theus_ledger_open(d->file, &l), THEUS_EPARSE);
  assert_non_null(strstr(theus_ledger_errmsg(l), "line 2"));
  theus_ledger_close(l);
  assert_int_equal(theus_ledger_open("/nonexistent/ledger.jsonl", &l), THEUS_ESYS);
  assert_non_null(strstr(theus_ledger_errmsg(l), "cannot open it"));
  theus_ledger_close(l);
}

static void test_ledger_cannot_be_created(void **state) {
  (void)state;
  theus_engine_config cfg;
  theus_engine_config_init(&cfg);
  cfg.workers = -1;
  cfg.ledger = "/nonexistent/dir/ledger.jsonl";
  theus_engine *e;
  assert_int_equal(theus_engine_open(&cfg, &e), THEUS_ESYS);
  assert_non_null(strstr(theus_engine_errmsg(e), "cannot create the ledger '/nonexistent/dir/ledger.jsonl'"));
  theus_engine_close(e);
}

/* A ledger that cannot be written (/dev/full: every write fails ENOSPC).
 * Buffered: commits succeed until a write fails; theus_engine_ledger_sync
 * says so, naming the file and the reason, and every later commit is refused
 * with the state left as it was. */
static void test_write_fails_buffered(void **state) {
  (void)state;
  theus_engine *e = open_engine("/dev/full", 0, NULL);
  json_t *by1 = json_pack("{s:i}", "by", 1);
  uint64_t v = theus_engine_version(e) + 1;
  assert_int_equal(theus_engine_execute(e, "inc", by1, NULL), 0); /* buffered: not written yet */
  assert_int_equal(theus_engine_version(e), v);
  assert_int_equal(theus_engine_ledger_sync(e), THEUS_ESYS);
  const char *msg = theus_engine_errmsg(e);
  assert_non_null(strstr(msg, "the ledger '/dev/full' cannot be written (No space left on device)"));
  char want[64];
  snprintf(want, sizeof want, "from version %llu on may be lost", (unsigned long long)v);
  assert_non_null(strstr(msg, want));
  assert_int_equal(theus_engine_execute(e, "inc", by1, NULL), THEUS_ESYS);
  assert_non_null(strstr(theus_engine_errmsg(e), "later commits are refused"));
  assert_int_equal(theus_engine_set(e, "domain.y", json_true()), THEUS_ESYS);
  assert_int_equal(theus_engine_version(e), v);
  assert_int_equal(theus_engine_ledger_sync(e), THEUS_ESYS); /* it stays failed */
  json_decref(by1);
  theus_engine_close(e);
  assert_int_equal(theus_engine_ledger_sync(NULL), THEUS_EINVAL);
}

/* With ledger_fsync the commit whose line cannot be written says so (its
 * version stays), and the next one is refused. An engine without a ledger
 * syncs nothing and succeeds. */
static void test_write_fails_fsync(void **state) {
  (void)state;
  theus_engine *e = open_engine("/dev/full", 1, NULL);
  json_t *by1 = json_pack("{s:i}", "by", 1);
  uint64_t v = theus_engine_version(e);
  assert_int_equal(theus_engine_execute(e, "inc", by1, NULL), THEUS_ESYS);
  char want[64];
  snprintf(want, sizeof want, "version %llu is committed but its ledger line may be lost",
           (unsigned long long)v + 1);
  assert_non_null(strstr(theus_engine_errmsg(e), want));
  assert_int_equal(theus_engine_version(e), v + 1);
  assert_int_equal(theus_engine_execute(e, "inc", by1, NULL), THEUS_ESYS);
  assert_int_equal(theus_engine_version(e), v + 1);
  json_decref(by1);
  theus_engine_close(e);
  e = open_engine(NULL, 0, NULL);
  assert_int_equal(theus_engine_ledger_sync(e), 0);
  theus_engine_close(e);
}

/* A value with every kind of JSON text: escapes, UTF-8, integer extremes,
 * reals jansson writes with ".0" or an exponent, key orders (a prefix sorts
 * first; more than 16 keys), empty containers, nesting. */
static json_t *every_kind(void) {
  json_t *v = json_pack("{s:[I,I,i,f,f,f,f,f,f,f,b,b,n], s:s, s:{s:i, s:{}, s:[]}, s:s, s:s}", "b",
                        (json_int_t)INT64_MAX, (json_int_t)INT64_MIN, 0, 0.1, 1e300, -2.5e-10, 123456789.0, 1e17,
                        5e-324, -0.0, 1, 0, "s", "q\"b\\s/\b\f\n\r\t\001\037\177 \xc3\xa9 \xf0\x9f\x98\x80", "a", "z",
                        1, "y", "x", "aa", "after a", "", "the empty key");
  json_t *many = json_object();
  for (int i = 40; i > 0; i--) {
    char k[16];
    snprintf(k, sizeof k, "k%d", i * 7 % 41);
    json_object_set_new(many, k, json_integer(i));
  }
  json_object_set_new(many, "nested", json_pack("{s:[{s:i,s:i}]}", "z", "b", 2, "a", 1));
  json_object_set_new(v, "many", many);
  return v;
}

/* The ledger writes JSON text itself (not with jansson): the same bytes as
 * jansson's compact dump, for the patch as written and for the canonical
 * (sorted) text the read hashes are taken of, so ledgers stay comparable. */
static void test_text_as_jansson(void **state) {
  dir *d = *state;
  theus_engine_config cfg;
  theus_engine_config_init(&cfg);
  cfg.workers = -1;
  cfg.ledger = d->file;
  json_t *v = every_kind(), *dom = json_pack("{s:O}", "v", v);
  cfg.domain = dom;
  theus_engine *e;
  assert_int_equal(theus_engine_open(&cfg, &e), 0);
  json_decref(dom);
  const theus_contract c = {.name = "copy_v", .fn = copy_v, .inputs = v_in, .outputs = w_out};
  assert_int_equal(theus_engine_register(e, &c), 0);
  assert_int_equal(theus_engine_execute(e, "copy_v", NULL, NULL), 0);
  theus_engine_close(e);

  char *canon = json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
  json_t *patch = json_pack("{s:O}", "w", v);
  char *ptext = json_dumps(patch, JSON_COMPACT), want[64], line[16384];
  assert_non_null(canon);
  assert_non_null(ptext);
  snprintf(want, sizeof want, "\"reads\":{\"domain.v\":\"xxh3:%016llx\"}",
           (unsigned long long)XXH3_64bits(canon, strlen(canon)));
  FILE *f = fopen(d->file, "r");
  assert_non_null(f);
  assert_non_null(fgets(line, sizeof line, f));
  fclose(f);
  assert_non_null(strstr(line, want));
  char *at = strstr(line, "\"patch\":");
  assert_non_null(at);
  assert_memory_equal(at + 8, ptext, strlen(ptext));
  assert_memory_equal(at + 8 + strlen(ptext), ",\"heavy\":", 9);
  free(canon);
  free(ptext);
  json_decref(patch);
  json_decref(v);
}

/* Many lines (the buffer is written out in chunks while the engine runs)
 * and lines longer than the buffer: every line whole and in order. */
static void test_many_and_long_lines(void **state) {
  dir *d = *state;
  seen hook = {{0}, 0};
  theus_engine *e = open_engine(d->file, 0, &hook);
  json_t *by1 = json_pack("{s:i}", "by", 1);
  char *big = malloc(200000);
  assert_non_null(big);
  memset(big, 'y', 199999);
  big[199999] = '\0';
  for (int i = 0; i < 3000; i++) {
    if (i % 1000 == 500)
      assert_int_equal(theus_engine_set(e, "domain.big", json_string(big)), 0);
    assert_int_equal(theus_engine_execute(e, "inc", by1, NULL), 0);
  }
  theus_engine_close(e);
  theus_ledger *l;
  assert_int_equal(theus_ledger_open(d->file, &l), 0);
  assert_int_equal(theus_ledger_count(l), 3003);
  assert_int_equal(theus_ledger_torn_bytes(l), 0);
  for (size_t i = 0; i < 3003; i++)
    assert_int_equal(json_integer_value(json_object_get(theus_ledger_entry(l, i), "version")), (json_int_t)i + 2);
  const json_t *set = theus_ledger_entry(l, 500);
  assert_string_equal(str(set, "op"), "set");
  assert_int_equal(json_string_length(json_object_get(json_object_get(set, "patch"), "big")), 199999);
  theus_ledger_close(l);
  json_decref(by1);
  free(big);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_entries, dir_setup, dir_teardown),
      cmocka_unit_test_setup_teardown(test_fsync_same_entries, dir_setup, dir_teardown),
      cmocka_unit_test_setup_teardown(test_torn_last_line, dir_setup, dir_teardown),
      cmocka_unit_test_setup_teardown(test_bad_line_before_the_last, dir_setup, dir_teardown),
      cmocka_unit_test(test_ledger_cannot_be_created),
      cmocka_unit_test(test_write_fails_buffered),
      cmocka_unit_test(test_write_fails_fsync),
      cmocka_unit_test_setup_teardown(test_text_as_jansson, dir_setup, dir_teardown),
      cmocka_unit_test_setup_teardown(test_many_and_long_lines, dir_setup, dir_teardown),
      cmocka_unit_test(test_commit_run),
  };
  return cmocka_run_group_tests_name("ledger", tests, NULL, NULL);
}
