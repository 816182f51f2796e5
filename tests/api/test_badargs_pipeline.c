/* Bad arguments to <theus/pipeline.h>: NULL pipelines, paths, values,
 * engines and outputs, and a pipeline whose load failed. Every call runs in
 * a child (badargs.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "badargs.h"
#include "theus/pipeline.h"

static char file[64]; /* a valid pipeline: {"workers": -1, "steps": []}, made by main */

static theus_pipeline *pipeline(void) {
  theus_pipeline *p = NULL;
  if (theus_pipeline_load(file, &p) != 0) _exit(99);
  return p;
}

/* A pipeline whose load failed: it only carries the message. */
static theus_pipeline *failed(void) {
  theus_pipeline *p = NULL;
  if (theus_pipeline_load("/nonexistent/theus.json", &p) == 0 || !p) _exit(99);
  return p;
}

static theus_engine *engine(void) {
  theus_engine_config c;
  theus_engine_config_init(&c);
  c.workers = -1;
  theus_engine *e = NULL;
  if (theus_engine_open(&c, &e) != 0) _exit(99);
  return e;
}

static void progress(const theus_pipeline_progress *pr, void *ud) { (void)pr, (void)ud; }
static void enter(const theus_pipeline_where *w, void *ud) { (void)w, (void)ud; }
static int on_map(theus_engine *e, const char *process, const char *key, uint32_t slices, const char *reducer,
                  const json_t *args, json_t **result, char *msg, size_t msglen, void *ud) {
  (void)e, (void)process, (void)key, (void)slices, (void)reducer, (void)args, (void)result, (void)msg, (void)msglen,
      (void)ud;
  return THEUS_EINVAL;
}

CASE(p_load, theus_pipeline *p = NULL;
     int r = want(theus_pipeline_load(NULL, &p), THEUS_EINVAL, "load(NULL, &p)");
     theus_pipeline_close(p);
     return r || want(theus_pipeline_load(file, NULL), THEUS_EINVAL, "load(file, NULL)");)
CASE(p_add_plugin, return want(theus_pipeline_add_plugin(NULL, "x.so"), THEUS_EINVAL, "add_plugin(NULL)") ||
                          want(theus_pipeline_add_plugin(pipeline(), NULL), THEUS_EINVAL, "add_plugin(path NULL)") ||
                          want(theus_pipeline_add_plugin(failed(), "x.so"), THEUS_EINVAL, "add_plugin(failed)");)
CASE(p_set, theus_pipeline *p = pipeline();
     return want(theus_pipeline_set(NULL, "domain.x", json_integer(1)), THEUS_EINVAL, "set(NULL)") ||
            want(theus_pipeline_set(p, NULL, json_integer(1)), THEUS_EINVAL, "set(path NULL)") ||
            want(theus_pipeline_set(p, "domain.x", NULL), THEUS_EINVAL, "set(value NULL)") ||
            want(theus_pipeline_set(failed(), "domain.x", json_integer(1)), THEUS_EINVAL, "set(failed)");)
CASE(p_workers, return want(theus_pipeline_workers(NULL), -2, "workers(NULL)");) /* -1 would mean "no pool" */
CASE(p_open, theus_engine *e = NULL;
     return want(theus_pipeline_open_engine(NULL, NULL, &e), THEUS_EINVAL, "open_engine(NULL)") ||
            want(theus_pipeline_open_engine(pipeline(), NULL, NULL), THEUS_EINVAL, "open_engine(out NULL)") ||
            want(theus_pipeline_open_engine(failed(), NULL, &e), THEUS_EINVAL, "open_engine(failed)");)
CASE(p_callbacks, theus_pipeline_on_progress(NULL, progress, NULL); theus_pipeline_on_enter(NULL, enter, NULL);
     theus_pipeline_on_progress(failed(), progress, NULL); theus_pipeline_on_map(NULL, on_map, NULL);
     theus_pipeline_on_map(failed(), on_map, NULL); theus_pipeline_on_map(pipeline(), NULL, NULL);
     theus_pipeline_skip_heavy(NULL); theus_pipeline_skip_heavy(failed()); theus_pipeline_cancel(NULL);
     theus_pipeline_on_parallel(NULL, NULL, NULL); theus_pipeline_on_parallel(failed(), NULL, NULL);
     theus_pipeline_parallel_ops half = {NULL, NULL}; theus_pipeline_on_parallel(pipeline(), &half, NULL);
     theus_pipeline_on_run(NULL, NULL, NULL); theus_pipeline_on_run(failed(), NULL, NULL);
     theus_pipeline_on_run(pipeline(), &half, NULL);
     theus_pipeline_cancel(failed()); return 0;)
CASE(p_run, theus_engine *e = engine();
     return want(theus_pipeline_run(NULL, e), THEUS_EINVAL, "run(NULL, e)") ||
            want(theus_pipeline_run(pipeline(), NULL), THEUS_EINVAL, "run(p, NULL)") ||
            want(theus_pipeline_run(failed(), e), THEUS_EINVAL, "run(failed, e)");)
CASE(p_arena_config, theus_arena_config c; memset(&c, 0xff, sizeof c); theus_pipeline_arena_config(pipeline(), NULL);
     theus_pipeline_arena_config(NULL, &c);
     if (c.hard_limit || c.single_limit || c.max_handles) return 1;
     memset(&c, 0xff, sizeof c); theus_pipeline_arena_config(failed(), &c);
     return c.hard_limit != 0 || c.single_limit != 0;)
CASE(p_getters, theus_pipeline_close(NULL);
     return theus_pipeline_ops(NULL) != 0 || theus_pipeline_errmsg(NULL) == NULL;)

static const badcase pipeline_cases[] = {
    ENTRY(p_load, "theus_pipeline_load(NULL / out NULL)"),
    ENTRY(p_add_plugin, "theus_pipeline_add_plugin(NULL / path NULL / failed)"),
    ENTRY(p_set, "theus_pipeline_set(NULL / path NULL / value NULL / failed)"),
    ENTRY(p_workers, "theus_pipeline_workers(NULL)"),
    ENTRY(p_open, "theus_pipeline_open_engine(NULL / out NULL / failed)"),
    ENTRY(p_callbacks, "theus_pipeline_on_progress/on_enter/on_map/on_parallel/on_run/skip_heavy/cancel(NULL / failed)"),
    ENTRY(p_run, "theus_pipeline_run(NULL / engine NULL / failed)"),
    ENTRY(p_arena_config, "theus_pipeline_arena_config(NULL / out NULL / failed)"),
    ENTRY(p_getters, "theus_pipeline_ops/errmsg/close(NULL)"),
};

static void test_pipeline_h(void **state) {
  (void)state;
  badargs_check(pipeline_cases, sizeof pipeline_cases / sizeof pipeline_cases[0]);
}

int main(void) {
  setvbuf(stdout, NULL, _IONBF, 0);
  snprintf(file, sizeof file, "/tmp/theus-badargs-XXXXXX");
  int fd = mkstemp(file);
  if (fd < 0) return 1;
  const char text[] = "{\"workers\": -1, \"steps\": []}\n";
  int ok = write(fd, text, sizeof text - 1) == (ssize_t)(sizeof text - 1);
  close(fd);
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_pipeline_h)};
  int rc = ok ? cmocka_run_group_tests(tests, NULL, NULL) : 1;
  unlink(file);
  return rc;
}
