/* theus-c — the fixture of the pipeline tests that write pipeline files: a
 * fresh temporary directory and the path of the file they write in it. */
#ifndef THEUS_TEST_PIPELINE_FIXTURE_H
#define THEUS_TEST_PIPELINE_FIXTURE_H

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

typedef struct fixture {
  char dir[64];
  char path[128];
} fixture;

/* cmocka setup: a new directory /tmp/theus-<tag>-XXXXXX, path = dir/p.json. */
static inline int fixture_setup(void **state, const char *tag) {
  fixture *f = calloc(1, sizeof *f);
  if (!f) return -1;
  snprintf(f->dir, sizeof f->dir, "/tmp/theus-%s-XXXXXX", tag);
  if (!mkdtemp(f->dir)) {
    free(f);
    return -1;
  }
  snprintf(f->path, sizeof f->path, "%s/p.json", f->dir);
  *state = f;
  return 0;
}

/* cmocka teardown: removes the file and the directory. */
static inline int fixture_teardown(void **state) {
  fixture *f = *state;
  unlink(f->path);
  rmdir(f->dir);
  free(f);
  return 0;
}

#endif
