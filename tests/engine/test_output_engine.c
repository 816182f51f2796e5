/* engine: what parallel processes print (issue 15 item 1), through the
 * engine's config: forwarded lines name the worker and the process (the
 * engine labels its tasks), discard drops them. The engine is closed in the
 * test (which flushes every line) before the checks, or by the teardown. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "theus/engine.h"

typedef struct seen {
  pthread_mutex_t lock;
  int n, speaker, other;
  int worker_ok;
  char last[128];
} seen;

static void on_line(int worker, const char *process, const char *line, size_t len, void *ud) {
  seen *s = ud;
  pthread_mutex_lock(&s->lock);
  s->n++;
  char want[64];
  snprintf(want, sizeof want, "%s says ", process);
  if (len >= strlen(want) && memcmp(line, want, strlen(want)) == 0) {
    if (strcmp(process, "speaker") == 0) s->speaker++;
    if (strcmp(process, "other_speaker") == 0) s->other++;
  }
  s->worker_ok += worker == 0;
  snprintf(s->last, sizeof s->last, "%.*s", (int)len, line);
  pthread_mutex_unlock(&s->lock);
}

static int speak(theus_ctx *ctx) {
  const char *name = json_string_value(json_object_get(theus_ctx_args(ctx), "as"));
  printf("%s says hello\n", name);
  fprintf(stderr, "%s says goodbye\n", name);
  return 0;
}

typedef struct fixture {
  theus_engine *e;
  seen s;
} fixture;

static int setup(void **state) {
  fixture *f = calloc(1, sizeof *f);
  if (!f) return -1;
  pthread_mutex_init(&f->s.lock, NULL);
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fixture *f = *state;
  theus_engine_close(f->e);
  pthread_mutex_destroy(&f->s.lock);
  free(f);
  return 0;
}

static void open_engine(fixture *f, int output) {
  theus_engine_config cfg;
  theus_engine_config_init(&cfg);
  cfg.workers = 1;
  cfg.output = output;
  cfg.output_fn = on_line;
  cfg.output_ud = &f->s;
  if (theus_engine_open(&cfg, &f->e)) fail_msg("engine open: %s", theus_engine_errmsg(f->e));
  const char *names[] = {"speaker", "other_speaker"};
  for (int i = 0; i < 2; i++) {
    theus_contract c = {.name = names[i], .fn = speak, .parallel = 1, .semantic = THEUS_PURE};
    assert_int_equal(theus_engine_register(f->e, &c), 0);
  }
}

static void say(fixture *f, const char *process) {
  json_t *args = json_pack("{s:s}", "as", process), *res = NULL;
  int rc = theus_engine_execute(f->e, process, args, &res);
  if (rc) fail_msg("execute %s: %s", process, theus_engine_errmsg(f->e));
  json_decref(args);
  json_decref(res);
}

static void test_forward_names_the_process(void **state) {
  fixture *f = *state;
  open_engine(f, THEUS_OUTPUT_FORWARD);
  for (int i = 0; i < 3; i++) {
    say(f, "speaker");
    say(f, "other_speaker");
  }
  theus_engine_close(f->e);
  f->e = NULL;
  assert_int_equal(f->s.n, 12);
  assert_int_equal(f->s.speaker, 6);
  assert_int_equal(f->s.other, 6);
  assert_int_equal(f->s.worker_ok, 12);
}

static void test_discard(void **state) {
  fixture *f = *state;
  open_engine(f, THEUS_OUTPUT_DISCARD);
  say(f, "speaker");
  theus_engine_close(f->e);
  f->e = NULL;
  assert_int_equal(f->s.n, 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_forward_names_the_process, setup, teardown),
      cmocka_unit_test_setup_teardown(test_discard, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
