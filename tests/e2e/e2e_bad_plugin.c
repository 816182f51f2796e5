/* Plugin for the theus-run crash and exit reports (issue 10): misbehaving
 * code that runs inside theus-run itself. E2E_BAD chooses what its
 * registration function does: "segv" (a null store), "exit" (exit(3)), else
 * it registers two local (effect) processes that do the same when run. */
#include <stdlib.h>
#include <string.h>

#include <theus/engine.h>
#include <theus/pipeline.h>

/* A real fault, not undefined behaviour UBSan would stop first. */
__attribute__((no_sanitize("undefined"))) static void null_store(void) {
  volatile int *volatile p = NULL;
  *p = 1;
}

static int segv_local(theus_ctx *ctx) {
  (void)ctx;
  null_store();
  return 0;
}

static int exit_local(theus_ctx *ctx) {
  (void)ctx;
  exit(3);
}

THEUS_PLUGIN_EXPORT int theus_plugin_register(theus_engine *e) {
  const char *bad = getenv("E2E_BAD");
  if (bad && strcmp(bad, "segv") == 0) null_store();
  if (bad && strcmp(bad, "exit") == 0) exit(3);
  const theus_contract cs[] = {
      {.name = "segv_local", .fn = segv_local, .semantic = THEUS_EFFECT},
      {.name = "exit_local", .fn = exit_local, .semantic = THEUS_EFFECT},
  };
  for (size_t i = 0; i < sizeof cs / sizeof cs[0]; i++) {
    int rc = theus_engine_register(e, &cs[i]);
    if (rc) return rc;
  }
  return 0;
}
