/* contracts: internal helpers shared with the engine (not installed). */
#ifndef THEUS_CONTRACT_INTERNAL_H
#define THEUS_CONTRACT_INTERNAL_H

#include "base.h" /* theus__errf */
#include "theus/contract.h"


/* Owned deep copy of a contract: one malloc block holding every string. */
theus_contract *theus__contract_dup(const theus_contract *c);
void theus__contract_free(theus_contract *c);

/* Number of entries in a NULL-terminated string list (NULL = 0). */
size_t theus__strv_len(const char *const *v);

/* Nonzero if some pattern of the list covers path. */
int theus__strv_covers(const char *const *patterns, const char *path);

/* Nonzero if name is in the list. */
int theus__strv_has(const char *const *v, const char *name);

#endif
