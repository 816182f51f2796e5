/* Shared harness of the bad-argument tests (issue 10 item 6), after libuv's
 * test runner: every call runs in a forked child, so a crash is reported as
 * a failure naming the call instead of ending the test program.
 *
 * A case is a function returning 0 when the call answered as it must (an
 * error code, NULL, a no-op), non-zero otherwise (it prints why). The parent
 * reaps every child (a child that hangs ends by SIGALRM) and fails once,
 * listing every call that crashed or answered wrongly. */
#ifndef THEUS_TEST_BADARGS_H
#define THEUS_TEST_BADARGS_H

#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

typedef struct badcase {
  const char *call; /* the call as written in the case, for the report */
  int (*fn)(void);
} badcase;

/* One case: CASE(name, body returning 0 when right); ENTRY(name, "the call") in the table. */
#define CASE(id, ...) \
  static int id(void) { __VA_ARGS__ }

#define ENTRY(id, text) {text, id}

/* rc must equal w. */
static inline int want(int rc, int w, const char *what) {
  if (rc == w) return 0;
  printf("  %s returned %d, want %d\n", what, rc, w);
  return 1;
}

/* rc must be an error code. */
static inline int want_err(int rc, const char *what) {
  if (rc < 0) return 0;
  printf("  %s returned %d, want a negative THEUS_E code\n", what, rc);
  return 1;
}

/* Seeded generator for forged handles (splitmix64): the same 64-bit values on every run. */
static inline uint64_t badargs_next(uint64_t *s) {
  uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

/* Forged handle number i: the edge shapes first (0, generation 0, index past
 * the table, maxima), then seeded random values. max_handles: the table size. */
static inline uint64_t badargs_handle(unsigned i, uint64_t max_handles, uint64_t *seed) {
  const uint64_t edges[] = {0,
                            1, /* slot 0, generation 1: never issued in these tests */
                            UINT32_MAX,
                            (uint64_t)1 << 32, /* generation 0 */
                            ((uint64_t)1 << 32) | UINT32_MAX,
                            (max_handles - 1) << 32 | 1,
                            max_handles << 32 | 1, /* index just past the table */
                            (uint64_t)UINT32_MAX << 32,
                            (uint64_t)UINT32_MAX << 32 | 1,
                            UINT64_MAX,
                            (uint64_t)INT64_MAX,
                            (uint64_t)INT64_MIN};
  unsigned ne = sizeof edges / sizeof edges[0];
  return i < ne ? edges[i] : badargs_next(seed);
}
#define BADARGS_HANDLES 5000

static inline const char *badargs_signame(int sig) {
  static char buf[32];
  const char *s = sigabbrev_np(sig);
  snprintf(buf, sizeof buf, "SIG%s", s ? s : "?");
  return buf;
}

/* Runs every case in its own child; returns a malloc'ed report of the calls
 * that crashed or answered wrongly ("" when none). */
static inline char *badargs_run(const badcase *t, size_t n) {
  size_t cap = 1 << 16, len = 0;
  char *rep = calloc(1, cap);
  for (size_t i = 0; i < n; i++) {
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
      len += (size_t)snprintf(rep + len, cap - len, "%s: cannot fork: %s\n", t[i].call, strerror(errno));
      continue;
    }
    if (pid == 0) {
      /* cmocka's handlers would catch the crash and run the next tests in here */
      const int sigs[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT};
      for (size_t k = 0; k < sizeof sigs / sizeof sigs[0]; k++) signal(sigs[k], SIG_DFL);
      alarm(60); /* a call that hangs is reported as killed by SIGALRM */
      _exit(t[i].fn() ? 1 : 0);
    }
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    if (len + 512 >= cap) continue;
    if (WIFSIGNALED(st))
      len += (size_t)snprintf(rep + len, cap - len, "%s: crashed (%s)\n", t[i].call, badargs_signame(WTERMSIG(st)));
    else if (WEXITSTATUS(st) != 0)
      len += (size_t)snprintf(rep + len, cap - len, "%s: wrong answer (see above)\n", t[i].call);
  }
  return rep;
}

/* Runs the cases and fails the cmocka test, listing every call that crashed
 * or answered wrongly (include <cmocka.h> first). */
static inline void badargs_check(const badcase *t, size_t n) {
  char *rep = badargs_run(t, n);
  if (rep[0]) {
    printf("%s", rep);
    free(rep);
    fail_msg("some calls crashed or answered wrongly (listed above)");
  }
  free(rep);
}

#endif
