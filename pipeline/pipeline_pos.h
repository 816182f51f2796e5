/* theus-c — where each value of a JSON text is (internal).
 *
 * jansson does not keep source positions, so semantic errors in a pipeline
 * (unknown key, wrong type, unknown process...) could not say where they are.
 * This index re-scans the text jansson already accepted and maps every
 * value's JSON Pointer (RFC 6901, "" for the root, "/steps/2/run") to the
 * line and column of the value and, for object members, of the key.
 */
#ifndef THEUS_PIPELINE_POS_H
#define THEUS_PIPELINE_POS_H

#include <stdbool.h>
#include <stddef.h>

typedef struct theus__pos_entry {
  char *ptr;
  int line, col;         /* the value's first character, 1-based */
  int key_line, key_col; /* the member's key (object members; else = value) */
} theus__pos_entry;

typedef struct theus__pos_index {
  theus__pos_entry *v;
  size_t n, cap;
} theus__pos_index;

/* Indexes text (which must be valid JSON; pointers may be of any length).
 * THEUS_ENOMEM/THEUS_EPARSE with "line:col: cannot index ...: cause" in err
 * (may be NULL). */
int theus__pos_index_build(theus__pos_index *idx, const char *text, size_t len, char *err, size_t errlen);

/* Position of the value (key false) or key (key true) at ptr; the closest
 * indexed ancestor if ptr itself is not there; 0:0 if nothing is known. */
void theus__pos_lookup(const theus__pos_index *idx, const char *ptr, bool key, int *line, int *col);

void theus__pos_index_free(theus__pos_index *idx);

/* Appends "/" + escaped key (or index when key is NULL) to the pointer in
 * buf (capacity cap). Returns false, buf unchanged, if it does not fit. */
bool theus__pos_push(char *buf, size_t cap, const char *key, size_t index);

#endif /* THEUS_PIPELINE_POS_H */
