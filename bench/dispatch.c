/* theus-bench dispatch: the worker pool against this machine's floors.
 *   spin_floor_roundtrip_us   two processes ping-pong a word in shared memory
 *   futex_floor_roundtrip_us  the same, sleeping on a futex each time
 *   dispatch_roundtrip_us     empty task to a warm worker and back
 *   dispatch_batched_tasks_per_s  empty tasks over all workers, theus_pool_map
 *                             in chunks of 1000 (what Pool.map(chunksize=1000) does)
 *   dispatch_submit_batch_tasks_per_s  the same, one slot per task (submit_batch)
 *   handoff_1KiB_us / handoff_1GiB_us  a task reading the first and last
 *                             element of an arena array of that size
 * Round trips are averaged over blocks of BLOCK, and the median block wins.
 * Optional argument: a scale factor (default 1) for the number of samples. */
#include <linux/futex.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench.h"
#include "theus/heavy.h"
#include "theus/pool.h"

enum { BLOCK = 1000, BLOCKS = 41 };

/* ---- floors: two processes, one shared word ------------------------------- */

static void fwait(_Atomic uint32_t *w, uint32_t v) {
  syscall(SYS_futex, (uint32_t *)w, FUTEX_WAIT, v, NULL, NULL, 0);
}
static void fwake(_Atomic uint32_t *w) { syscall(SYS_futex, (uint32_t *)w, FUTEX_WAKE, 1, NULL, NULL, 0); }

/* Waits until *w == want; spinning, or on the futex. */
static void await_word(_Atomic uint32_t *w, uint32_t want, int use_futex) {
  uint32_t v;
  while ((v = atomic_load_explicit(w, memory_order_acquire)) != want)
    if (use_futex) fwait(w, v);
}

static void post_word(_Atomic uint32_t *w, uint32_t v, int use_futex) {
  atomic_store_explicit(w, v, memory_order_release);
  if (use_futex) fwake(w);
}

/* The parent sends odd numbers, the child answers with the next even one. */
static double floor_roundtrip_us(int use_futex, int scale) {
  _Atomic uint32_t *w = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (w == MAP_FAILED) return -1;
  atomic_store(w, 0);
  uint32_t total = (uint32_t)(BLOCK * BLOCKS * scale);
  pid_t pid = fork();
  if (pid == 0) {
    for (uint32_t i = 1; i <= 2 * total; i += 2) {
      await_word(w, i, use_futex);
      post_word(w, i + 1, use_futex);
    }
    _exit(0);
  }
  double blocks[BLOCKS];
  uint32_t v = 1;
  for (int b = 0; b < BLOCKS; b++) {
    uint64_t t0 = bench_now_ns();
    for (int i = 0; i < BLOCK * scale; i++, v += 2) {
      post_word(w, v, use_futex);
      await_word(w, v + 1, use_futex);
    }
    blocks[b] = (double)(bench_now_ns() - t0) / (BLOCK * scale) / 1000.0;
  }
  waitpid(pid, NULL, 0);
  munmap((void *)w, 4096);
  return bench_median(blocks, BLOCKS);
}

/* ---- the pool --------------------------------------------------------------- */

static int t_empty(theus_task *t) {
  (void)t;
  return 0;
}

static int t_first_last(theus_task *t) {
  const void *p;
  size_t n;
  int rc = theus_task_view(t, 0, &p, &n);
  if (rc < 0) return rc;
  unsigned char v = (unsigned char)(((const unsigned char *)p)[0] + ((const unsigned char *)p)[n - 1]);
  return theus_task_write(t, &v, 1);
}

static theus_pool *start_pool(unsigned nworkers, const theus_arena *a) {
  theus_pool_config cfg;
  theus_pool_config_init(&cfg);
  if (nworkers) cfg.nworkers = nworkers;
  cfg.arena = a;
  theus_pool *p = NULL;
  if (theus_pool_open(&cfg, &p) < 0) {
    fprintf(stderr, "theus-bench: %s\n", theus_pool_errmsg(p));
    theus_pool_close(p, 1);
    return NULL;
  }
  return p;
}

static double roundtrip_us(theus_pool *p, const theus_task_desc *d, int scale) {
  double blocks[BLOCKS];
  theus_pool_result r = {0};
  for (int b = -1; b < BLOCKS; b++) { /* block -1 warms the worker up */
    uint64_t t0 = bench_now_ns();
    for (int i = 0; i < BLOCK * scale; i++) {
      theus_ticket tk;
      if (theus_pool_submit(p, d, &tk) < 0 || theus_pool_wait(p, tk, -1, &r) < 0 || r.status != 0) {
        fprintf(stderr, "theus-bench: task failed: %s %s\n", theus_pool_errmsg(p), r.errmsg);
        return -1;
      }
      theus_pool_result_release(&r);
    }
    if (b >= 0) blocks[b] = (double)(bench_now_ns() - t0) / (BLOCK * scale) / 1000.0;
  }
  return bench_median(blocks, BLOCKS);
}

/* Keeps every ring busy: submit as many as fit, collect the oldest, repeat. */
static double batched_per_s(theus_pool *p, size_t total) {
  enum { WIN = 4096, CHUNK = 256 };
  static theus_task_desc d[CHUNK];
  static theus_ticket tk[WIN];
  for (int i = 0; i < CHUNK; i++) d[i] = (theus_task_desc){.fn = t_empty};
  size_t sent = 0, got = 0;
  theus_pool_result r;
  uint64_t t0 = bench_now_ns();
  while (got < total) {
    while (sent < total && sent - got + CHUNK <= WIN) {
      size_t n = total - sent < CHUNK ? total - sent : CHUNK;
      theus_ticket local[CHUNK];
      int rc = theus_pool_submit_batch(p, d, n, local);
      if (rc <= 0) break;
      for (int i = 0; i < rc; i++) tk[(sent + (size_t)i) % WIN] = local[i];
      sent += (size_t)rc;
    }
    if (theus_pool_wait(p, tk[got % WIN], -1, &r) < 0 || r.status != 0) return -1;
    got++;
  }
  return (double)total / ((double)(bench_now_ns() - t0) / 1e9);
}

/* Empty tasks through theus_pool_map in chunks of 1000, like Pool.map(chunksize=1000). */
static double map_per_s(theus_pool *p, size_t total) {
  theus_map_desc m = {.fn = t_empty, .count = total, .chunk = 1000};
  uint64_t t0 = bench_now_ns();
  if (theus_pool_map(p, &m, NULL) != 0) return -1;
  return (double)total / ((double)(bench_now_ns() - t0) / 1e9);
}

static double handoff_us(theus_pool *p, theus_arena *a, size_t size, int scale) {
  theus_handle h;
  void *data;
  if (theus_arena_alloc(a, size, &h, &data) < 0) {
    fprintf(stderr, "theus-bench: arena alloc of %zu bytes: %s\n", size, theus_arena_errmsg(a));
    return -1;
  }
  ((unsigned char *)data)[0] = 1;
  ((unsigned char *)data)[size - 1] = 2;
  theus_task_desc d = {.fn = t_first_last, .handles = &h, .nhandles = 1};
  double us = roundtrip_us(p, &d, scale);
  theus_arena_free(a, h);
  return us;
}

int theus_bench_dispatch(int argc, char **argv) {
  int scale = argc > 1 ? atoi(argv[1]) : 1;
  if (scale < 1) scale = 1;
  double spin = floor_roundtrip_us(0, scale);
  bench_report("spin_floor_roundtrip_us", spin, "us");
  bench_report("futex_floor_roundtrip_us", floor_roundtrip_us(1, scale), "us");

  theus_arena_config ac;
  theus_arena_config_init(&ac);
  ac.hard_limit = 2ull << 30;
  ac.single_limit = (1ull << 30) + (1ull << 20);
  theus_arena *a = NULL;
  if (theus_arena_open(&ac, &a) < 0) {
    fprintf(stderr, "theus-bench: arena open failed\n");
    return 1;
  }
  theus_pool *p1 = start_pool(1, a);
  if (!p1) return 1;
  theus_task_desc empty = {.fn = t_empty};
  double rt = roundtrip_us(p1, &empty, scale);
  bench_report("dispatch_roundtrip_us", rt, "us");
  bench_report("ratio_dispatch_vs_spin_floor", rt / spin, "x");
  double h1k = handoff_us(p1, a, 1024, scale);
  double h1g = handoff_us(p1, a, 1ull << 30, scale);
  bench_report("handoff_1KiB_us", h1k, "us");
  bench_report("handoff_1GiB_us", h1g, "us");
  bench_report("ratio_handoff_1GiB_vs_1KiB", h1g / h1k, "x");
  bench_report("dispatch_submit_batch_1worker_tasks_per_s", batched_per_s(p1, 200000u * (size_t)scale), "tasks/s");
  theus_pool_close(p1, 0);

  theus_pool *pn = start_pool(0, a);
  if (!pn) return 1;
  bench_report("dispatch_submit_batch_tasks_per_s", batched_per_s(pn, 200000u * (size_t)scale), "tasks/s");
  map_per_s(pn, 100000); /* warm-up */
  bench_report("dispatch_batched_tasks_per_s", map_per_s(pn, 2000000u * (size_t)scale), "tasks/s");
  theus_pool_stats st;
  theus_pool_stats_get(pn, &st);
  fprintf(stderr, "theus-bench: batched run used %u workers\n", st.nworkers);
  theus_pool_close(pn, 0);
  theus_arena_close(a);
  return 0;
}
