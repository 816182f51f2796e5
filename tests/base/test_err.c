/* tests/base: the error object every handle embeds, and the race it fixes:
 * one thread failing calls in a loop while another reads *_errmsg. Under
 * ThreadSanitizer the old unlocked readers were reported here; everywhere a
 * torn message (a mix of the two texts) fails the test. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "base.h"
#include "theus/engine.h"
#include "theus/heavy.h"
#include "theus/version.h"

#define ROUNDS 20000

static void test_err_object(void **st) {
  (void)st;
  theus__err e;
  theus__err_init(&e);
  assert_string_equal(theus__err_msg(&e), "no error");
  assert_int_equal(theus__err_set(&e, THEUS_ESTALE, "slot %d of %s", 3, "x"), THEUS_ESTALE);
  assert_int_equal(e.code, THEUS_ESTALE);
  /* The thread-local ring keeps the last few texts valid at once. */
  const char *first = theus__err_msg(&e);
  theus__err_set(&e, THEUS_EINVAL, "second");
  const char *second = theus__err_msg(&e);
  assert_string_equal(first, "slot 3 of x");
  assert_string_equal(second, "second");
  /* A message may quote the object's own (copied) message. */
  theus__err_set(&e, THEUS_EINVAL, "outer: %s", theus__err_msg(&e));
  assert_string_equal(theus__err_msg(&e), "outer: second");
  char small[5];
  theus__err_copy(&e, small, sizeof small);
  assert_string_equal(small, "oute");
  char big[THEUS__ERRMSG_MAX + 100];
  memset(big, 'y', sizeof big - 1);
  big[sizeof big - 1] = '\0';
  theus__err_set(&e, THEUS_EINVAL, "%s", big);
  assert_int_equal(strlen(theus__err_msg(&e)), THEUS__ERRMSG_MAX - 1);
  theus__err_fini(&e);
  char buf[8];
  assert_int_equal(theus__errf(buf, sizeof buf, THEUS_EPARSE, "col %d", 12), THEUS_EPARSE);
  assert_string_equal(buf, "col 12");
  assert_int_equal(theus__errf(NULL, 0, THEUS_EPARSE, "nowhere"), THEUS_EPARSE);
}

/* ---- the race: a failing thread and a reading thread -------------------- */

typedef struct race {
  int (*fail_once)(void *obj, int i); /* one failing call; i selects one of two messages */
  const char *(*read)(const void *obj);
  void *obj;
  const char *msg[2]; /* the only two texts a reader may see (besides "no error") */
  _Atomic int done;
  int torn;
} race;

static void *failer(void *p) {
  race *r = p;
  for (int i = 0; i < ROUNDS; i++)
    if (r->fail_once(r->obj, i) == 0) break;
  atomic_store(&r->done, 1);
  return NULL;
}

static void *reader(void *p) {
  race *r = p;
  while (!atomic_load(&r->done)) {
    const char *m = r->read(r->obj);
    if (strcmp(m, r->msg[0]) && strcmp(m, r->msg[1]) && strcmp(m, "no error")) r->torn++;
  }
  return NULL;
}

static void run_race(race *r) {
  pthread_t a, b;
  assert_int_equal(pthread_create(&b, NULL, reader, r), 0);
  assert_int_equal(pthread_create(&a, NULL, failer, r), 0);
  pthread_join(a, NULL);
  pthread_join(b, NULL);
  assert_int_equal(r->torn, 0);
}

#define LONG_KEY "a-key-long-enough-that-a-torn-copy-would-show-0123456789"

static int engine_fail(void *e, int i) {
  return theus_engine_heavy_discard(e, i & 1 ? LONG_KEY : "k") != 0 ? 1 : 0;
}
static const char *engine_read(const void *e) { return theus_engine_errmsg(e); }

static void test_engine_errmsg_race(void **st) {
  (void)st;
  theus_engine_config c;
  theus_engine_config_init(&c);
  c.workers = -1;
  theus_engine *e = NULL;
  assert_int_equal(theus_engine_open(&c, &e), 0);
  race r = {.fail_once = engine_fail, .read = engine_read, .obj = e,
            .msg = {"heavy_discard: no draft for key 'k'", "heavy_discard: no draft for key '" LONG_KEY "'"}};
  run_race(&r);
  theus_engine_close(e);
}

static int arena_fail(void *a, int i) {
  const void *p;
  size_t n;
  return theus_arena_view(a, i & 1 ? 0 : ((theus_handle)12345 << 32 | 1), &p, &n) != 0 ? 1 : 0;
}
static const char *arena_read(const void *a) { return theus_arena_errmsg(a); }

static void test_arena_errmsg_race(void **st) {
  (void)st;
  theus_arena *a = NULL;
  assert_int_equal(theus_arena_open(NULL, &a), 0);
  char zero[THEUS__ERRMSG_MAX], range[THEUS__ERRMSG_MAX];
  arena_fail(a, 1);
  snprintf(zero, sizeof zero, "%s", theus_arena_errmsg(a));
  arena_fail(a, 0);
  snprintf(range, sizeof range, "%s", theus_arena_errmsg(a));
  assert_string_not_equal(zero, range);
  race r = {.fail_once = arena_fail, .read = arena_read, .obj = a, .msg = {range, zero}};
  run_race(&r);
  theus_arena_close(a);
}

/* The engine shows the arena's detailed config message, not just a code. */
static void test_engine_open_shows_arena_message(void **st) {
  (void)st;
  theus_arena_config ac;
  theus_arena_config_init(&ac);
  ac.soft_limit_pct = 150;
  theus_engine_config c;
  theus_engine_config_init(&c);
  c.workers = -1;
  c.arena = &ac;
  theus_engine *e = NULL;
  assert_int_equal(theus_engine_open(&c, &e), THEUS_EINVAL);
  assert_non_null(e);
  assert_non_null(strstr(theus_engine_errmsg(e), "soft 150%"));
  theus_engine_close(e);
}

/* The library and the headers it was built with agree on the version. */
static void test_version(void **state) {
  (void)state;
  assert_int_equal(theus_version(), THEUS_VERSION_HEX);
  assert_string_equal(theus_version_string(), THEUS_VERSION_STRING);
  char want[32];
  snprintf(want, sizeof want, "%u.%u.%u", theus_version() >> 16, (theus_version() >> 8) & 0xff,
           theus_version() & 0xff);
  assert_string_equal(theus_version_string(), want);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_version),
      cmocka_unit_test(test_err_object),
      cmocka_unit_test(test_engine_errmsg_race),
      cmocka_unit_test(test_arena_errmsg_race),
      cmocka_unit_test(test_engine_open_shows_arena_message),
  };
  return cmocka_run_group_tests_name("base/err", tests, NULL, NULL);
}
