/* base: JSON text that may fail for want of memory (see base.h). */
#include <string.h>

#include <jansson.h>

#include "base.h"

json_t *theus__json_load(const char *buf, size_t n, size_t flags, json_error_t *je, int *rc) {
  *rc = 0;
  json_t *j = json_loadb(buf, n, flags, je);
  if (j) return j;
  *rc = THEUS_ENOMEM;
  if (json_error_code(je) == json_error_out_of_memory) return NULL;
  json_error_t again;
  if ((j = json_loadb(buf, n, flags, &again))) { /* the first failure was an allocation's */
    *rc = 0;
    return j;
  }
  if (json_error_code(&again) != json_error_out_of_memory && again.line == je->line && again.column == je->column &&
      !strcmp(again.text, je->text))
    *rc = THEUS_EPARSE;
  return NULL;
}
