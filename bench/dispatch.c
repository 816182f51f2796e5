/* theus-bench dispatch: the worker pool against this machine's floors.
 *   spin_floor_roundtrip_us   two processes ping-pong a word in shared memory
 *   futex_floor_roundtrip_us  the same, sleeping on a futex each time
 *   dispatch_roundtrip_us     empty task to a warm worker and back
 *   dispatch_batched_tasks_per_s  empty tasks over all workers, theus_pool_map
 *                             in chunks of 1000 (what Pool.map(chunksize=1000) does)
 *   dispatch_submit_batch_tasks_per_s  the same, one slot per task (submit_batch)
 *   handoff_1KiB_us / handoff_1GiB_us  a task reading the first and last
 *                             element of an arena array of that size
 *   sandbox_*                 the same round trip without the pool sandbox
 *                             layer, with it, and with the pure-process layer
 *                             too (THEUS_TASK_SANDBOX); awake workers (spin)
 *                             and sleeping ones (spin_us 0: a futex wake and
 *                             wait per task, so the filters run); and a task
 *                             stream alternating sandboxed and plain tasks
 *                             (each switch replaces the worker)
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

static theus_pool *start_pool_cfg(unsigned nworkers, const theus_arena *a, int unsandboxed, int spin_us) {
  theus_pool_config cfg;
  theus_pool_config_init(&cfg);
  if (nworkers) cfg.nworkers = nworkers;
  cfg.arena = a;
  cfg.unsandboxed = unsandboxed;
  if (spin_us >= 0) cfg.spin_us = (uint32_t)spin_us;
  theus_pool *p = NULL;
  if (theus_pool_open(&cfg, &p) < 0) {
    fprintf(stderr, "theus-bench: %s\n", theus_pool_errmsg(p));
    theus_pool_close(p, 1);
    return NULL;
  }
  return p;
}

static theus_pool *start_pool(unsigned nworkers, const theus_arena *a) { return start_pool_cfg(nworkers, a, 0, -1); }

/* flags: THEUS_TASK_SANDBOX or 0; alternate: flip it every task. */
static double roundtrip_flags_us(theus_pool *p, const theus_task_desc *d, unsigned flags, int alternate, int block,
                                 int nblocks, int scale) {
  double blocks[BLOCKS];
  if (nblocks > BLOCKS) nblocks = BLOCKS;
  theus_pool_result r = {0};
  for (int b = -1; b < nblocks; b++) { /* block -1 warms the worker up */
    uint64_t t0 = bench_now_ns();
    for (int i = 0; i < block * scale; i++) {
      theus_ticket tk;
      theus_task_desc df = *d;
      df.flags = alternate ? (i & 1 ? THEUS_TASK_SANDBOX : 0) : flags;
      if (theus_pool_submit(p, &df, &tk) < 0 || theus_pool_wait(p, tk, -1, &r) < 0 || r.status != 0) {
        fprintf(stderr, "theus-bench: task failed: %s %s\n", theus_pool_errmsg(p), r.errmsg);
        return -1;
      }
      theus_pool_result_release(&r);
    }
    if (b >= 0) blocks[b] = (double)(bench_now_ns() - t0) / (block * scale) / 1000.0;
  }
  return bench_median(blocks, (size_t)nblocks);
}

static double roundtrip_us(theus_pool *p, const theus_task_desc *d, int scale) {
  return roundtrip_flags_us(p, d, 0, 0, BLOCK, BLOCKS, scale);
}

/* Nanoseconds per getppid() inside the worker: a system call that does
 * nothing, so the difference is what the seccomp filters add to each call. */
static int t_syscall_ns(theus_task *t) {
  enum { N = 20000 };
  double best = 1e18;
  for (int rep = 0; rep < 5; rep++) {
    uint64_t t0 = bench_now_ns();
    for (int i = 0; i < N; i++) syscall(SYS_getppid);
    double ns = (double)(bench_now_ns() - t0) / N;
    if (ns < best) best = ns;
  }
  return theus_task_write(t, &best, sizeof best);
}

static double task_double(theus_pool *p, theus_task_fn fn, unsigned flags) {
  theus_task_desc d = {.fn = fn, .flags = flags};
  theus_ticket tk;
  theus_pool_result r = {0};
  double v = -1;
  if (theus_pool_submit(p, &d, &tk) == 0 && theus_pool_wait(p, tk, -1, &r) == 0 && r.status == 0 &&
      r.len == sizeof v)
    memcpy(&v, r.data, sizeof v);
  theus_pool_result_release(&r);
  return v;
}

/* The sandbox layers' cost. Three one-worker pools live side by side (an
 * idle one sleeps on its futex): without the pool layer, with it, and with
 * the pure layer too. Rounds interleave a short block on each, so a noisy
 * neighbour hits all three alike; each figure is the median over rounds. */
static int sandbox_costs(theus_arena *a, int scale) {
  enum { ROUNDS = 21 };
  theus_task_desc empty = {.fn = t_empty};
  for (int sleeping = 0; sleeping < 2; sleeping++) {
    int spin = sleeping ? 0 : -1, block = (sleeping ? 50 : 200) * scale;
    const char *mode = sleeping ? "sleeping" : "awake";
    theus_pool *off = start_pool_cfg(1, a, 1, spin), *on = start_pool_cfg(1, a, 0, spin);
    theus_pool *pure = start_pool_cfg(1, a, 0, spin);
    if (!off || !on || !pure) return -1;
    if (!sleeping) {
      double s_off = task_double(off, t_syscall_ns, 0), s_on = task_double(on, t_syscall_ns, 0);
      double s_pure = task_double(pure, t_syscall_ns, THEUS_TASK_SANDBOX);
      bench_report("sandbox_syscall_unsandboxed_ns", s_off, "ns");
      bench_report("sandbox_syscall_pool_layer_ns", s_on, "ns");
      bench_report("sandbox_syscall_pure_layer_ns", s_pure, "ns");
    }
    double r_off[ROUNDS], r_on[ROUNDS], r_pure[ROUNDS];
    theus_pool *pools[3] = {off, on, pure};
    double *res[3] = {r_off, r_on, r_pure};
    for (int r = -1; r < ROUNDS; r++) /* round -1 warms up; the order rotates */
      for (int k = 0; k < 3; k++) {
        int i = (r + 3 + k) % 3;
        double v = roundtrip_flags_us(pools[i], &empty, i == 2 ? THEUS_TASK_SANDBOX : 0, 0, block, 3, 1);
        if (r >= 0) res[i][r] = v;
      }
    theus_pool_close(off, 0);
    theus_pool_close(on, 0);
    theus_pool_close(pure, 0);
    double t_off = bench_median(r_off, ROUNDS), t_on = bench_median(r_on, ROUNDS);
    double t_pure = bench_median(r_pure, ROUNDS);
    char name[96];
    snprintf(name, sizeof name, "sandbox_%s_roundtrip_unsandboxed_us", mode);
    bench_report(name, t_off, "us");
    snprintf(name, sizeof name, "sandbox_%s_roundtrip_pool_layer_us", mode);
    bench_report(name, t_on, "us");
    snprintf(name, sizeof name, "sandbox_%s_roundtrip_pure_layer_us", mode);
    bench_report(name, t_pure, "us");
    snprintf(name, sizeof name, "ratio_sandbox_%s_pool_layer_vs_unsandboxed", mode);
    bench_report(name, t_on / t_off, "x");
    snprintf(name, sizeof name, "ratio_sandbox_%s_pure_layer_vs_unsandboxed", mode);
    bench_report(name, t_pure / t_off, "x");
  }
  theus_pool *sw = start_pool_cfg(1, a, 0, -1);
  if (!sw) return -1;
  bench_report("sandbox_alternating_roundtrip_us", roundtrip_flags_us(sw, &empty, 0, 1, 4, BLOCKS, scale), "us");
  theus_pool_close(sw, 0);
  return 0;
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
    fprintf(stderr, "theus-bench: arena open failed: %s\n", theus_arena_errmsg(a));
    theus_arena_close(a);
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
  if (sandbox_costs(a, scale) < 0) return 1;
  theus_arena_close(a);
  return 0;
}
