/* tests/fault: SQLite-style fault injection for the test build only.
 *
 * The fault tests link libtheus statically with -Wl,--wrap=<primitive> for
 * every fallible primitive the library calls (fault.c lists them), so calls
 * from libtheus objects and from the test go through __wrap_<primitive>.
 * fault_arm(n) makes the n-th such call after arming fail (one shot, with the
 * errno the system would give), in this process only: the fork server and the
 * workers, forked children, never see an injected failure. jansson allocates
 * in its own shared library; fault_init() routes it through the same counter
 * with json_set_alloc_funcs. */
#ifndef THEUS_TEST_FAULT_H
#define THEUS_TEST_FAULT_H

#include <stddef.h>
#include <stdint.h>

enum fault_kind {
  FK_MALLOC, FK_CALLOC, FK_REALLOC, FK_STRDUP, FK_STRNDUP, FK_ALIGNED_ALLOC, FK_JSON_MALLOC,
  FK_MMAP, FK_MEMFD_CREATE, FK_FALLOCATE, FK_FORK, FK_PIPE, FK_PTHREAD_CREATE, FK_DLOPEN,
  FK_OPEN, FK_FOPEN, FK_COUNT
};

/* Routes jansson's allocations through the counter; call first in main. */
void fault_init(void);
/* From now on, the n-th fallible call (n >= 1) of this process fails once. */
void fault_arm(uint64_t n);
/* Same; with persist, every fallible call from the n-th on fails too, until
 * fault_disarm (SQLite's persistent mode: retries and clean-up fail as well). */
void fault_arm_mode(uint64_t n, int persist);
/* Stops injecting; returns 1 if the armed failure was injected. */
int fault_disarm(void);
/* Number of fallible calls counted since the last fault_arm. */
uint64_t fault_calls(void);
/* Kind of the injected failure (valid after fault_disarm returned 1). */
enum fault_kind fault_fired_kind(void);
const char *fault_kind_name(enum fault_kind k);
/* Prints where the injected call came from (symbolized by the sanitizer, or
 * by addr2line in builds without one). */
void fault_print_site(const char *prefix);
/* The library frames of the injected call, innermost first (e.g.
 * "engine/engine.c:230 in theus__patch_put < engine/exec.c:112 in
 * input_domain < ..."), or "" if unknown. */
const char *fault_site(void);

#endif
