/* engine/state: versions, snapshots, CAS (strict/smart), heavy lifecycle,
 * version waits across processes. */
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "theus/engine.h"

static theus_engine *open_engine(int strict, const char *domain) {
  theus_engine_config cfg;
  theus_engine_config_init(&cfg);
  cfg.workers = -1;
  cfg.strict = strict;
  json_t *d = domain ? json_loads(domain, 0, NULL) : NULL;
  cfg.domain = d;
  theus_engine *e = NULL;
  assert_int_equal(theus_engine_open(&cfg, &e), 0);
  json_decref(d);
  return e;
}

static int cas_text(theus_engine *e, uint64_t expected, const char *patch) {
  json_t *p = json_loads(patch, 0, NULL);
  assert_non_null(p);
  int rc = theus_engine_cas(e, expected, p, NULL, NULL);
  json_decref(p);
  return rc;
}

static json_int_t get_int(theus_engine *e, const char *path) {
  json_t *v = theus_engine_get(e, path);
  assert_non_null(v);
  json_int_t x = json_integer_value(v);
  json_decref(v);
  return x;
}

static void test_initial_state_and_get_set(void **state) {
  (void)state;
  theus_engine *e = open_engine(0, "{\"a\":{\"b\":1}}");
  assert_int_equal(theus_engine_version(e), 1);
  assert_int_equal(get_int(e, "domain.a.b"), 1);
  assert_null(theus_engine_get(e, "domain.nope"));
  assert_null(theus_engine_get(e, "bad path"));
  assert_int_equal(theus_engine_set(e, "domain.a.c", json_integer(7)), 0);
  assert_int_equal(theus_engine_version(e), 2);
  assert_int_equal(get_int(e, "domain.a.c"), 7);
  assert_int_equal(get_int(e, "domain.a.b"), 1);
  assert_int_equal(theus_engine_set(e, "domain.*", json_integer(7)), THEUS_EINVAL);
  theus_engine_close(e);
}

static void test_snapshot_isolation(void **state) {
  (void)state;
  theus_engine *e = open_engine(0, "{\"x\":1,\"deep\":{\"y\":[1,2]}}");
  theus_snapshot *s;
  assert_int_equal(theus_engine_snapshot(e, &s), 0);
  char *before = json_dumps(theus_snapshot_domain(s), JSON_SORT_KEYS);
  assert_int_equal(cas_text(e, 1, "{\"x\":2,\"deep\":{\"y\":null,\"z\":3}}"), 0);
  assert_int_equal(cas_text(e, 2, "{\"x\":3}"), 0);
  char *after = json_dumps(theus_snapshot_domain(s), JSON_SORT_KEYS);
  assert_string_equal(before, after);
  assert_int_equal(theus_snapshot_version(s), 1);
  assert_int_equal(json_integer_value(theus_snapshot_get(s, "domain.x")), 1);
  assert_int_equal(get_int(e, "domain.x"), 3);
  free(before);
  free(after);
  theus_snapshot_release(s);
  theus_engine_close(e);
}

static void test_strict_vs_smart_stale_cas(void **state) {
  (void)state;
  for (int strict = 0; strict <= 1; strict++) {
    theus_engine *e = open_engine(strict, "{\"a\":0,\"b\":0}");
    assert_int_equal(cas_text(e, 1, "{\"a\":1}"), 0);
    /* stale (expected 1, current 2) but writes an untouched key */
    int rc = cas_text(e, 1, "{\"b\":1}");
    if (strict) {
      assert_int_equal(rc, THEUS_ECONFLICT);
      assert_non_null(strstr(theus_engine_errmsg(e), "expected version 1"));
      assert_non_null(strstr(theus_engine_errmsg(e), "current 2"));
      assert_int_equal(theus_engine_version(e), 2);
    } else {
      assert_int_equal(rc, 0);
      assert_int_equal(theus_engine_version(e), 3);
      assert_int_equal(get_int(e, "domain.a"), 1);
      assert_int_equal(get_int(e, "domain.b"), 1);
    }
    /* stale and touching a changed key: always a conflict */
    uint64_t v = theus_engine_version(e);
    assert_int_equal(cas_text(e, 1, "{\"a\":5}"), THEUS_ECONFLICT);
    assert_int_equal(theus_engine_version(e), v);
    assert_int_equal(get_int(e, "domain.a"), 1);
    if (!strict)
      assert_non_null(strstr(theus_engine_errmsg(e), "'domain.a'"));
    theus_engine_close(e);
  }
}

static void test_smart_cas_three_levels_deep(void **state) {
  (void)state;
  theus_engine *e = open_engine(0, "{\"l1\":{\"l2\":{\"l3\":{\"x\":0,\"y\":0}}}}");
  assert_int_equal(cas_text(e, 1, "{\"l1\":{\"l2\":{\"l3\":{\"x\":1}}}}"), 0);
  /* sibling leaf three levels down: merges */
  assert_int_equal(cas_text(e, 1, "{\"l1\":{\"l2\":{\"l3\":{\"y\":1}}}}"), 0);
  assert_int_equal(get_int(e, "domain.l1.l2.l3.x"), 1);
  assert_int_equal(get_int(e, "domain.l1.l2.l3.y"), 1);
  /* the same leaf: conflict naming the path and both versions */
  assert_int_equal(cas_text(e, 1, "{\"l1\":{\"l2\":{\"l3\":{\"x\":9}}}}"), THEUS_ECONFLICT);
  const char *m = theus_engine_errmsg(e);
  assert_non_null(strstr(m, "domain.l1.l2.l3.x"));
  assert_non_null(strstr(m, "expected version 1"));
  assert_non_null(strstr(m, "current 3"));
  /* replacing an ancestor conflicts with a change below it */
  assert_int_equal(cas_text(e, 1, "{\"l1\":{\"l2\":5}}"), THEUS_ECONFLICT);
  assert_int_equal(theus_engine_version(e), 3);
  /* a future version is invalid */
  assert_int_equal(cas_text(e, 99, "{\"q\":1}"), THEUS_EINVAL);
  theus_engine_close(e);
}

static void test_disjoint_writers_advance_by_two(void **state) {
  (void)state;
  theus_engine *e = open_engine(0, "{}");
  uint64_t v0 = theus_engine_version(e);
  assert_int_equal(cas_text(e, v0, "{\"w1\":1}"), 0);
  assert_int_equal(cas_text(e, v0, "{\"w2\":2}"), 0);
  assert_int_equal(theus_engine_version(e), v0 + 2);
  assert_int_equal(get_int(e, "domain.w1"), 1);
  assert_int_equal(get_int(e, "domain.w2"), 2);
  theus_engine_close(e);
}

static uint64_t bytes_live(theus_engine *e) {
  theus_arena_stats st;
  assert_int_equal(theus_arena_stats_get(theus_engine_arena(e), &st), 0);
  return st.bytes_live;
}

static void test_heavy_shared_by_reference_and_freed(void **state) {
  (void)state;
  theus_engine *e = open_engine(0, "{}");
  uint64_t live0 = bytes_live(e);
  float *data;
  uint64_t shape[1] = {1 << 16};
  assert_int_equal(theus_engine_heavy_alloc(e, "frame", THEUS_DTYPE_F32, 1, shape, (void **)&data), 0);
  /* collision: a second draft for the same key while the first is unpublished */
  void *other;
  assert_int_equal(theus_engine_heavy_alloc(e, "frame", THEUS_DTYPE_F32, 1, shape, &other), THEUS_EEXIST);
  assert_non_null(strstr(theus_engine_errmsg(e), "collision"));
  for (int i = 0; i < 1 << 16; i++)
    data[i] = (float)i;
  json_t *hp = json_pack("{s:b}", "frame", 1);
  assert_int_equal(theus_engine_cas(e, 1, NULL, hp, NULL), 0);
  json_decref(hp);
  assert_true(bytes_live(e) > live0);

  theus_snapshot *s1, *s2;
  assert_int_equal(theus_engine_snapshot(e, &s1), 0);
  assert_int_equal(cas_text(e, 2, "{\"other\":1}"), 0);
  assert_int_equal(theus_engine_snapshot(e, &s2), 0);
  theus_array_info a1, a2;
  assert_int_equal(theus_snapshot_heavy(s1, "frame", &a1), 0);
  assert_int_equal(theus_snapshot_heavy(s2, "frame", &a2), 0);
  assert_ptr_equal(a1.data, a2.data); /* same array, no copy */
  assert_ptr_equal(a1.data, data);
  assert_int_equal(a1.handle, a2.handle);
  assert_int_equal(((const float *)a2.data)[12345], 12345.0f);

  /* remove the binding: the snapshots keep the array alive */
  hp = json_pack("{s:n}", "frame");
  assert_int_equal(theus_engine_cas(e, 3, NULL, hp, NULL), 0);
  json_decref(hp);
  theus_snapshot *s3;
  assert_int_equal(theus_engine_snapshot(e, &s3), 0);
  assert_int_equal(theus_snapshot_heavy(s3, "frame", &a2), THEUS_ENOTFOUND);
  assert_int_equal(theus_snapshot_heavy(s1, "frame", &a1), 0);
  theus_snapshot_release(s1);
  assert_true(bytes_live(e) > live0);
  theus_snapshot_release(s2);
  assert_int_equal(bytes_live(e), live0); /* the last reference freed it */
  theus_snapshot_release(s3);

  /* publishing a missing draft fails, discarding a draft frees it */
  hp = json_pack("{s:b}", "nodraft", 1);
  assert_int_equal(theus_engine_cas(e, theus_engine_version(e), NULL, hp, NULL), THEUS_ENOTFOUND);
  json_decref(hp);
  assert_int_equal(theus_engine_heavy_alloc(e, "tmp", THEUS_DTYPE_U8, 1, shape, &other), 0);
  assert_int_equal(theus_engine_heavy_discard(e, "tmp"), 0);
  assert_int_equal(theus_engine_heavy_discard(e, "tmp"), THEUS_ENOTFOUND);
  assert_int_equal(bytes_live(e), live0);
  theus_engine_close(e);
}

static void test_retention_keeps_old_versions(void **state) {
  (void)state;
  theus_engine_config cfg;
  theus_engine_config_init(&cfg);
  cfg.workers = -1;
  cfg.retention = 1;
  theus_engine *e;
  assert_int_equal(theus_engine_open(&cfg, &e), 0);
  uint64_t live0 = bytes_live(e);
  uint64_t shape[1] = {4096};
  void *d;
  assert_int_equal(theus_engine_heavy_alloc(e, "a", THEUS_DTYPE_U8, 1, shape, &d), 0);
  json_t *hp = json_pack("{s:b}", "a");
  assert_int_equal(theus_engine_cas(e, 1, NULL, hp, NULL), 0);
  json_decref(hp);
  hp = json_pack("{s:n}", "a");
  assert_int_equal(theus_engine_cas(e, 2, NULL, hp, NULL), 0);
  json_decref(hp);
  assert_true(bytes_live(e) > live0); /* version 2 is retained */
  assert_int_equal(cas_text(e, 3, "{\"x\":1}"), 0);
  assert_int_equal(bytes_live(e), live0); /* version 2 left the retention window */
  theus_engine_close(e);
}

static void test_version_wait_across_processes(void **state) {
  (void)state;
  theus_engine *e = open_engine(0, "{}");
  uint64_t now = 0;
  assert_int_equal(theus_engine_wait_version(e, 1, 10, &now), THEUS_ETIMEDOUT);
  assert_int_equal(now, 1);
  int fd = theus_engine_version_fd(e);
  pid_t pids[2]; /* a watcher on the engine's descriptor, and one on a read-only descriptor (it polls) */
  for (int k = 0; k < 2; k++) {
  pid_t pid = pids[k] = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    alarm(10);
    theus_version_watch *w;
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    int wfd = k ? open(path, O_RDONLY | O_CLOEXEC) : fd;
    if (wfd < 0 || theus_version_watch_open(wfd, &w))
      _exit(2);
    /* Wait past version 1 (not past whatever is current when the child gets
     * to run: the parent's CAS may already have happened), forever: a lost
     * wake-up hangs the watcher on the engine's descriptor until alarm() kills
     * it, and the test fails. */
    uint64_t v = 0;
    int rc = theus_version_watch_current(w) <= 2 ? theus_version_watch_wait(w, 1, -1, &v) : -1;
    theus_version_watch_close(w);
    _exit(rc == 0 && v == 2 ? 0 : 1);
  }
  }
  usleep(20000);
  int rc = cas_text(e, 1, "{\"go\":true}");
  for (int k = 0; k < 2; k++) {
    int status = 0;
    waitpid(pids[k], &status, 0);
    assert_true(WIFEXITED(status));
    if (WEXITSTATUS(status)) fail_msg("watcher %d (%s descriptor) exited %d", k, k ? "read-only" : "engine's",
                                      WEXITSTATUS(status));
  }
  assert_int_equal(rc, 0);
  assert_int_equal(theus_engine_wait_version(e, 1, 0, &now), 0);
  assert_int_equal(now, 2);
  theus_engine_close(e);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_initial_state_and_get_set),
      cmocka_unit_test(test_snapshot_isolation),
      cmocka_unit_test(test_strict_vs_smart_stale_cas),
      cmocka_unit_test(test_smart_cas_three_levels_deep),
      cmocka_unit_test(test_disjoint_writers_advance_by_two),
      cmocka_unit_test(test_heavy_shared_by_reference_and_freed),
      cmocka_unit_test(test_retention_keeps_old_versions),
      cmocka_unit_test(test_version_wait_across_processes),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
