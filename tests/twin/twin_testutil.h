/* Helpers shared by the twin tests: child processes that are always reaped,
 * a small RNG, and the frame pattern (every 8-byte word = epoch << 32 | index). */
#ifndef THEUS_TWIN_TESTUTIL_H
#define THEUS_TWIN_TESTUTIL_H

#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "theus/twin.h"

#define TT_MAX_CHILDREN 8

/* A small arena: the tests need a few regions, not a million slots. */
static inline int tt_arena_open(theus_arena **a) {
  theus_arena_config cfg;
  theus_arena_config_init(&cfg);
  cfg.hard_limit = 64u << 20;
  cfg.max_handles = 1024;
  return theus_arena_open(&cfg, a);
}

/* Children of one test; the teardown kills and reaps whatever is left, so a
 * failed assertion in the parent never leaves a process behind. */
typedef struct tt_children {
  pid_t pid[TT_MAX_CHILDREN];
  int n;
} tt_children;

/* Forks a child that runs fn(arg) and _exits with its result. The child dies
 * with the test process (PDEATHSIG). Returns the pid, or -1. */
static inline pid_t tt_spawn(tt_children *c, int (*fn)(void *), void *arg) {
  if (c->n >= TT_MAX_CHILDREN) return -1;
  fflush(NULL);
  pid_t pid = fork();
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    _exit(fn(arg));
  }
  if (pid > 0) c->pid[c->n++] = pid;
  return pid;
}

/* Waits for one child; returns its exit status (0..255), or 1000 + signal,
 * or -1. The slot is cleared so the teardown does not wait for it again. */
static inline int tt_reap(tt_children *c, pid_t pid) {
  int st = 0;
  pid_t got;
  do got = waitpid(pid, &st, 0);
  while (got < 0 && errno == EINTR);
  for (int i = 0; i < c->n; i++)
    if (c->pid[i] == pid) c->pid[i] = 0;
  if (got != pid) return -1;
  if (WIFEXITED(st)) return WEXITSTATUS(st);
  return WIFSIGNALED(st) ? 1000 + WTERMSIG(st) : -1;
}

static inline void tt_kill_all(tt_children *c) {
  for (int i = 0; i < c->n; i++)
    if (c->pid[i] > 0) {
      kill(c->pid[i], SIGKILL);
      tt_reap(c, c->pid[i]);
    }
  c->n = 0;
}

/* Waits (up to ~5 s) until pid is asleep in the kernel (state S), so that a
 * following publish really exercises the wake-up path. Returns 1 if seen. */
static inline int tt_wait_sleeping(pid_t pid) {
  char path[64], buf[512];
  snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
  for (int i = 0; i < 5000; i++) {
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    const char *p = strrchr(buf, ')');
    if (p && p[1] == ' ' && p[2] == 'S') return 1;
    struct timespec ts = {0, 1000000};
    nanosleep(&ts, NULL);
  }
  return 0;
}

static inline uint64_t tt_rand(uint64_t *s) {
  /* xorshift64*: good enough to pick ranges, and per thread. */
  uint64_t x = *s;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  *s = x;
  return x * UINT64_C(2685821657736338717);
}

/* The word a frame of epoch e holds at index i (epoch 0 is all zeros). */
static inline uint64_t tt_word(uint64_t e, uint64_t i) {
  return e == 0 ? 0 : (e << 32) | i;
}

static inline void tt_fill_frame(uint64_t *w, size_t nwords, uint64_t e) {
  for (size_t i = 0; i < nwords; i++) w[i] = tt_word(e, i);
}

/* Checks bytes [off, off+len) of a snapshot of epoch e; returns 1 if intact. */
static inline int tt_check_bytes(const unsigned char *got, size_t off, size_t len, uint64_t e) {
  for (size_t p = off; p < off + len; p++) {
    uint64_t w = tt_word(e, p / 8);
    unsigned char b;
    memcpy(&b, (const unsigned char *)&w + p % 8, 1);
    if (got[p - off] != b) return 0;
  }
  return 1;
}

static inline int tt_check_words(const uint64_t *got, size_t first, size_t n, uint64_t e) {
  for (size_t i = 0; i < n; i++)
    if (got[i] != tt_word(e, first + i)) return 0;
  return 1;
}

#endif
