/* Unit tests: pipeline loading without an engine (pipeline/pipeline*.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "../../pipeline/pipeline_internal.h"

typedef struct fixture {
  char dir[64];
  char path[128];
} fixture;

static int setup(void **state) {
  fixture *f = calloc(1, sizeof *f);
  snprintf(f->dir, sizeof f->dir, "/tmp/theus-pipe-XXXXXX");
  if (!f || !mkdtemp(f->dir)) return -1;
  snprintf(f->path, sizeof f->path, "%s/p.json", f->dir);
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fixture *f = *state;
  char raw[160];
  snprintf(raw, sizeof raw, "%s/data.raw", f->dir);
  unlink(raw);
  unlink(f->path);
  rmdir(f->dir);
  free(f);
  return 0;
}

static void write_file(const char *path, const char *text) {
  FILE *fp = fopen(path, "w");
  assert_non_null(fp);
  fputs(text, fp);
  fclose(fp);
}

/* Loads text; expects success (want NULL) or an error containing "p.json:" + want. */
static theus_pipeline *load(fixture *f, const char *text, const char *want) {
  write_file(f->path, text);
  theus_pipeline *p = NULL;
  int rc = theus_pipeline_load(f->path, &p);
  char err[1024];
  snprintf(err, sizeof err, "%s", theus_pipeline_errmsg(p));
  if (!want) {
    if (rc) fail_msg("load failed: %s", err);
    return p;
  }
  theus_pipeline_close(p); /* a failed load hands the pipeline back with its message */
  char full[256];
  snprintf(full, sizeof full, "p.json:%s", want);
  if (rc != THEUS_EPARSE || !strstr(err, full)) fail_msg("want \"%s\", got rc %d: %s", full, rc, err);
  return NULL;
}

static void test_position_index(void **state) {
  (void)state;
  const char *text = "{\n  \"a\": [1, {\"b~/c\": \"x\"}],\n  \"é\": {\"k\": true}\n}";
  theus__pos_index idx;
  assert_int_equal(theus__pos_index_build(&idx, text, strlen(text), NULL, 0), 0);
  int line, col;
  theus__pos_lookup(&idx, "", false, &line, &col);
  assert_int_equal(line * 100 + col, 101);
  theus__pos_lookup(&idx, "/a", true, &line, &col);
  assert_int_equal(line * 100 + col, 203);
  theus__pos_lookup(&idx, "/a", false, &line, &col);
  assert_int_equal(line * 100 + col, 208);
  theus__pos_lookup(&idx, "/a/1/b~0~1c", false, &line, &col); /* escaped key b~/c */
  assert_int_equal(line * 100 + col, 221);
  theus__pos_lookup(&idx, "/\xc3\xa9/k", false, &line, &col); /* columns count characters, not bytes */
  assert_int_equal(line * 100 + col, 314);
  theus__pos_lookup(&idx, "/a/1/missing", false, &line, &col); /* falls back to the parent */
  assert_int_equal(line * 100 + col, 212);
  theus__pos_index_free(&idx);
  char label[64];
  assert_string_equal(theus__pipe_ptr_label("/steps/2/then/0", label, sizeof label), "steps[2].then[0]");
}

/* Issue 10: pointers longer than 4096 bytes (a long key) are indexed and
 * looked up; a pointer that does not fit a fixed buffer stays its parent. */
static void test_position_index_long(void **state) {
  (void)state;
  char *text = malloc(20000), *ptr = malloc(20000);
  assert_true(text && ptr);
  memset(text, 0, 20000);
  strcpy(text, "{\"a\": {\"");
  memset(text + strlen(text), '/', 6000); /* escaped as ~1: 12000 bytes of pointer */
  strcat(text, "\":\n  [0, 1]}}");
  theus__pos_index idx;
  char err[256] = "";
  assert_int_equal(theus__pos_index_build(&idx, text, strlen(text), err, sizeof err), 0);
  strcpy(ptr, "/a/");
  for (int i = 0; i < 6000; i++) strcat(ptr + 3 + 2 * i, "~1");
  strcat(ptr, "/1");
  int line, col;
  theus__pos_lookup(&idx, ptr, false, &line, &col);
  assert_int_equal(line * 100 + col, 207);
  strcat(ptr, "/missing/deeper");
  theus__pos_lookup(&idx, ptr, true, &line, &col); /* falls back to /1 */
  assert_int_equal(line * 100 + col, 207);
  theus__pos_index_free(&idx);
  char buf[16] = "/steps/0";
  assert_false(theus__pos_push(buf, sizeof buf, "a-long-key", 0));
  assert_string_equal(buf, "/steps/0");
  free(text);
  free(ptr);
}

static void test_valid_pipeline(void **state) {
  fixture *f = *state;
  char raw[160];
  snprintf(raw, sizeof raw, "%s/data.raw", f->dir);
  write_file(raw, "abcdefgh");
  theus_pipeline *p = load(f,
                           "{\"workers\": 3, \"budget\": 77, \"domain\": {\"x\": 1},\n"
                           " \"heavy\": {\"a\": {\"dtype\": \"u8\", \"shape\": 8, \"fill\": {\"file\": \"data.raw\"}},\n"
                           "           \"b\": {\"dtype\": \"i16\", \"shape\": [2, 3], \"fill\": {\"range\": {\"start\": -1}}},\n"
                           "           \"c\": {\"dtype\": \"f32\", \"shape\": [4], \"fill\": {\"random\": {\"seed\": 9}}}},\n"
                           " \"processes\": [{\"name\": \"t\", \"signature\": \"f64(u8*, u64)\", \"args\": [\"heavy.a\", \"heavy.a.len\"],"
                           " \"outputs\": [\"domain.y\"]}],\n"
                           " \"steps\": [{\"run\": \"t\"}, {\"while\": \"domain.x < 3\", \"do\": [{\"set\": \"domain.x\", \"expr\": \"domain.x + 1\"}]}]}",
                           NULL);
  assert_int_equal(theus_pipeline_workers(p), 3);
  assert_int_equal(p->budget, 77);
  assert_int_equal(p->nheavy, 3);
  assert_int_equal(p->ntyped, 1);
  assert_int_equal(p->steps.n, 2);
  assert_int_equal(p->steps.v[1].kind, ST_WHILE);
  uint8_t bytes[8];
  assert_int_equal(theus__pipe_fill(p, &p->heavy[0], bytes), 0);
  assert_memory_equal(bytes, "abcdefgh", 8);
  int16_t v[6];
  assert_int_equal(theus__pipe_fill(p, &p->heavy[1], v), 0);
  assert_int_equal(v[0], -1);
  assert_int_equal(v[5], 4);
  float r1[4], r2[4];
  assert_int_equal(theus__pipe_fill(p, &p->heavy[2], r1), 0);
  assert_int_equal(theus__pipe_fill(p, &p->heavy[2], r2), 0);
  assert_memory_equal(r1, r2, sizeof r1); /* the same seed gives the same data */
  for (int i = 0; i < 4; i++) assert_true(r1[i] >= 0 && r1[i] < 1);
  /* theus_pipeline_set creates intermediate objects and overrides the file */
  assert_int_equal(theus_pipeline_set(p, "domain.a.b", json_integer(5)), 0);
  assert_int_equal(theus_pipeline_set(p, "domain.x", json_string("s")), 0);
  assert_int_equal(json_integer_value(json_object_get(json_object_get(p->domain, "a"), "b")), 5);
  assert_string_equal(json_string_value(json_object_get(p->domain, "x")), "s");
  assert_int_equal(theus_pipeline_set(p, "heavy.a", json_integer(1)), THEUS_EINVAL);
  /* library messages name the call, never a theus-run flag */
  assert_non_null(strstr(theus_pipeline_errmsg(p), "theus_pipeline_set heavy.a: the path must look like"));
  assert_null(strstr(theus_pipeline_errmsg(p), "--"));
  theus_pipeline_close(p);
}

static void test_errors(void **state) {
  fixture *f = *state;
  load(f, "[1]", "1:1: a pipeline is a JSON object");
  load(f, "{}", "1:1: the pipeline has no \"steps\"");
  load(f, "{\"steps\": [], \"step\": 1}", "1:15: unknown key \"step\" in the pipeline; did you mean \"steps\"?");
  load(f, "{\"steps\": {}}", "1:11: steps must be an array");
  load(f, "{\"steps\": [3]}", "1:12: a step must be an object");
  load(f, "{\"steps\": [{}]}", "1:12: this step has no kind");
  load(f, "{\"steps\": [{\"run\": 5}]}", "1:20: \"run\" must be a non-empty string");
  load(f, "{\"steps\": [{\"run\": \"a\", \"args\": []}]}", "1:33: \"args\" must be an object");
  load(f, "{\"steps\": [{\"run\": \"a\", \"into\": \"x\"}]}", "1:33: \"into\": \"x\" is not a domain path");
  load(f, "{\"steps\": [{\"parallel\": [{\"if\": \"true\", \"then\": []}]}]}", "1:26: a parallel group runs");
  load(f, "{\"steps\": [{\"parallel\": []}]}", "1:25: a parallel group needs at least one");
  load(f, "{\"steps\": [{\"if\": \"1 +\", \"then\": []}]}", "1:23: in expression \"1 +\": unexpected end");
  load(f, "{\"steps\": [{\"while\": \"true\"}]}", "1:12: missing \"do\"");
  load(f, "{\"steps\": [{\"set\": \"domain.x\"}]}", "1:12: a set step needs exactly one of");
  load(f, "{\"steps\": [{\"map\": \"m\", \"over\": \"a\", \"reduce\": \"sum\", \"into\": \"domain.x\", \"slices\": 0}]}",
       "1:85: \"slices\" must be an integer from 1");
  load(f, "{\"steps\": [{\"map\": \"m\", \"over\": \"a\", \"reduce\": \"sum\", \"into\": \"domain.x\", \"dtype\": \"f32\"}]}",
       "1:12: \"dtype\", \"shape\", \"partials\" and \"result\" belong to a map into");
  load(f, "{\"steps\": [{\"map\": \"m\", \"over\": \"a\", \"reduce\": \"sum\", \"into\": \"heavy.y\"}]}", "1:12: \"reduce\" without \"result\": add \"result\": \"domain.x\" to keep what");
  load(f, "{\"steps\": [{\"map\": \"m\", \"over\": \"a\", \"into\": \"heavy.y\", \"dtype\": \"f16\"}]}", "1:66: unknown dtype \"f16\"; use u8, u16, u32, u64, i8, i16, i32, i64, f");
  load(f, "{\"steps\": [{\"map\": \"m\", \"over\": \"a\", \"into\": \"heavy.y\", \"shape\": [4, 0]}]}", "1:66: bad shape for heavy.y: give \"shape\" as a positive integer or an ");
  load(f, "{\"steps\": [{\"map\": \"m\", \"over\": \"a\", \"into\": \"heavy.y.z\"}]}", "1:46: \"into\": \"heavy.y.z\" is not a heavy key: path 'heavy.y.z': heavy ");
  load(f, "{\"steps\": [{\"run\": \"r\", \"into\": \"heavy.y\", \"shape\": [4]}]}", "1:12: a run step into \"heavy.y\" needs the array's \"dtype\" and \"shape\"");
  load(f, "{\"steps\": [{\"parallel\": [{\"run\": \"r\", \"into\": \"heavy.y\", \"dtype\": \"f32\", \"shape\": 4}]}]}", "1:26: a run step inside a parallel group cannot fill a heavy array; ma");
  load(f, "{\"steps\": [{\"run\": \"r\", \"into\": \"domain.y\", \"shape\": [4]}]}", "1:12: \"dtype\", \"shape\" and \"slices\" belong to a run step that fills a ");
  load(f, "{\"workers\": -5, \"steps\": []}", "1:13: \"workers\" must be an integer from -1");
  load(f, "{\"domain\": 3, \"steps\": []}", "1:12: \"domain\" must be an object");
  load(f, "{\"domain\": \"nope.json\", \"steps\": []}", "1:12: cannot load the domain file");
  load(f, "{\"plugins\": [1], \"steps\": []}", "1:14: plugins[0] must be a path string");
  load(f, "{\"heavy\": {\"9x\": {}}, \"steps\": []}", "1:12: heavy key \"9x\" is not a valid name");
  load(f, "{\"heavy\": {\"a\": {\"dtype\": \"f32\"}}, \"steps\": []}", "1:17: heavy.a has no \"shape\"");
  load(f, "{\"heavy\": {\"a\": {\"dtype\": \"f32\", \"shape\": [0]}}, \"steps\": []}", "1:43: bad shape for heavy.a");
  load(f, "{\"heavy\": {\"a\": {\"dtype\": \"f32\", \"shape\": 1, \"fill\": \"ones\"}}, \"steps\": []}",
       "1:54: bad fill for heavy.a");
  load(f, "{\"heavy\": {\"a\": {\"dtype\": \"u8\", \"shape\": 4, \"fill\": {\"file\": \"data.raw\"}}}, \"steps\": []}",
       "1:62: cannot open the raw file");
  load(f, "{\"heavy\": {\"a\": {\"dtype\": \"f32\", \"shape\": 1, \"fill\": {\"random\": {\"min\": 2, \"max\": 1}}}}, \"steps\": []}",
       "1:65: random fill of heavy.a: \"min\" must be below \"max\"");
  load(f, "{\"heavy\": {\"a\": {\"dtype\": \"f32\", \"shape\": 1, \"fill\": {\"range\": {\"begin\": 1}}}}, \"steps\": []}",
       "1:65: unknown key \"begin\" in range");
  load(f, "{\"processes\": [{\"name\": \"t\", \"signature\": \"f64(u8*\"}], \"steps\": []}",
       "1:43: process \"t\": signature \"f64(u8*\", column 8");
  load(f, "{\"processes\": [{\"name\": \"t\", \"signature\": \"void(u8*)\", \"args\": [\"heavy.a\"], \"outputs\": [\"heavy.a\"], "
          "\"parallel\": true}], \"steps\": []}",
       "1:113: process \"t\" writes a heavy array");
  load(f, "{\"processes\": [{\"name\": \"t\", \"signature\": \"void(u8)\", \"args\": [true]}], \"steps\": []}",
       "1:64: args[0] must be a state path string or a number");
}

/* Issue 10, found by the fuzz harnesses (tests/fuzz): bindings whose state
 * path no contract may name were accepted at load and refused only at open,
 * and an output shorter than "heavy." was read past its end. Each is refused
 * at load, the message at the binding or output itself. */
static void test_typed_bindings_at_load(void **state) {
  fixture *f = *state;
  static const struct {
    const char *sig, *args, *outputs, *at, *why;
  } cases[] = {
      {"void(f32*, u64)", "\"heavy.a\", \"heavy.a.b.len\"", "", "\"heavy.a.b.len\"",
       "argument 2 of \"void(f32*, u64)\" is bound to \"heavy.a.b.len\", not a valid state path: path 'heavy.a.b': "
       "heavy paths are 'heavy.<key>'"},
      {"void(f32*)", "\"heavy.a.b\"", "", "\"heavy.a.b\"",
       "argument 1 of \"void(f32*)\" is bound to \"heavy.a.b\", not a valid state path: path 'heavy.a.b': heavy "
       "paths are 'heavy.<key>'"},
      {"void(f64)", "\"domain.a..b\"", "", "\"domain.a..b\"",
       "argument 1 of \"void(f64)\" is bound to \"domain.a..b\", not a valid state path: path 'domain.a..b': "
       "segment 2 must be"},
      {"void(f64)", "\"domain.0x\"", "", "\"domain.0x\"",
       "argument 1 of \"void(f64)\" is bound to \"domain.0x\", not a valid state path: path 'domain.0x': segment 1 "
       "must be"},
      {"void(f64)", "\"domain.k.*\"", "", "\"domain.k.*\"",
       "argument 1 of \"void(f64)\" is bound to \"domain.k.*\", not a valid state path: '*' is a pattern"},
      {"void(f32*)", "\"heavy.a\"", "\"domain.y\", \"x\"", "\"x\"",
       "output \"x\" of \"void(f32*)\": a typed process writes domain.PATH"},
      {"void(f32*)", "\"heavy.a\"", "\"heavy.\"", "\"heavy.\"",
       "output \"heavy.\" of \"void(f32*)\": a typed process writes domain.PATH"},
      {"void(f32*, u8)", "\"heavy.a\", \"300\"", "", "\"300\"", "literal argument 2 = 300 is out of range for u8"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char text[512], want[256];
    snprintf(text, sizeof text,
             "{\"processes\": [{\"name\": \"t\", \"signature\": \"%s\", \"args\": [%s], \"outputs\": [%s]}],"
             " \"steps\": []}",
             cases[i].sig, cases[i].args, cases[i].outputs);
    const char *at = strstr(text, cases[i].at); /* the message's column is the binding's or output's */
    assert_non_null(at);
    snprintf(want, sizeof want, "1:%d: process \"t\": %s", (int)(at - text) + 1, cases[i].why);
    load(f, text, want);
  }
  theus_pipeline_close(load(f,
                            "{\"processes\": [{\"name\": \"t\", \"signature\": \"f64(f32*, u64, f64)\", \"args\": "
                            "[\"heavy.a_1\", \"heavy.a_1.len\", \"domain.k-2.x\"], \"outputs\": [\"domain.y\"]}],"
                            " \"steps\": []}",
                            NULL));
}

/* "arena" and "workers": sizes with units, defaults, and file:line:column errors. */
static void test_arena_and_workers(void **state) {
  fixture *f = *state;
  theus_pipeline *p = load(f, "{\"arena\": {\"budget\": \"8GiB\", \"single_limit\": \"2GiB\", \"soft_limit\": 0.9},"
                              " \"workers\": 256, \"steps\": []}", NULL);
  theus_arena_config ac;
  theus_pipeline_arena_config(p, &ac);
  assert_int_equal(ac.hard_limit, 8ull << 30);
  assert_int_equal(ac.single_limit, 2ull << 30);
  assert_int_equal(ac.soft_limit_pct, 90);
  assert_int_equal(ac.max_handles, 0);
  assert_int_equal(theus_pipeline_workers(p), 256);
  theus_pipeline_close(p);
  p = load(f, "{\"arena\": {\"single_limit\": 134217728}, \"steps\": []}", NULL); /* bytes as a number */
  theus_pipeline_arena_config(p, &ac);
  assert_int_equal(ac.hard_limit, 0); /* unset: the machine's default at open */
  assert_int_equal(ac.single_limit, 128u << 20);
  assert_int_equal(ac.soft_limit_pct, 0);
  assert_int_equal(theus_pipeline_workers(p), -2);
  theus_pipeline_close(p);
  p = load(f, "{\"arena\": {\"budget\": \"1.5 GB\"}, \"steps\": []}", NULL);
  theus_pipeline_arena_config(p, &ac);
  assert_int_equal(ac.hard_limit, 1500000000ull); /* KB, MB, GB are powers of 1000 */
  theus_pipeline_close(p);
  load(f, "{\"arena\": 5, \"steps\": []}", "1:11: \"arena\" is an object");
  load(f, "{\"arena\": {\"budgit\": \"1GiB\"}, \"steps\": []}",
       "1:12: unknown key \"budgit\" in \"arena\"; did you mean \"budget\"?");
  load(f, "{\"arena\": {\"budget\": \"8G\"}, \"steps\": []}",
       "1:22: \"arena\" \"budget\": size \"8G\": the unit 'G' is ambiguous; write GiB");
  load(f, "{\"arena\": {\"budget\": \"lots\"}, \"steps\": []}", "1:22: \"arena\" \"budget\": \"lots\" is not a size");
  load(f, "{\"arena\": {\"budget\": \"100\"}, \"steps\": []}", "1:22: \"arena\" \"budget\" must be at least 4KiB");
  load(f, "{\"arena\": {\"single_limit\": true}, \"steps\": []}",
       "1:28: \"arena\" \"single_limit\" must be a size such as \"8GiB\" or a byte count, found a boolean");
  load(f, "{\"arena\": {\"single_limit\": -1}, \"steps\": []}", "1:28: \"arena\" \"single_limit\" must be a size");
  load(f, "{\"arena\": {\"single_limit\": 0}, \"steps\": []}", "1:28: \"arena\" \"single_limit\" must be at least 1B");
  load(f, "{\"arena\": {\"soft_limit\": 85}, \"steps\": []}",
       "1:26: \"arena\" \"soft_limit\" is a fraction of the budget above 0 and at most 1");
  load(f, "{\"arena\": {\"soft_limit\": \"85%\"}, \"steps\": []}", "1:26: \"arena\" \"soft_limit\" is a fraction");
  load(f, "{\"workers\": 257, \"steps\": []}", "1:13: \"workers\" must be an integer from -1 to 256");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_arena_and_workers, setup, teardown),
      cmocka_unit_test(test_position_index),
      cmocka_unit_test(test_position_index_long),
      cmocka_unit_test_setup_teardown(test_valid_pipeline, setup, teardown),
      cmocka_unit_test_setup_teardown(test_errors, setup, teardown),
      cmocka_unit_test_setup_teardown(test_typed_bindings_at_load, setup, teardown),
  };
  return cmocka_run_group_tests_name("pipeline_parse", tests, NULL, NULL);
}
