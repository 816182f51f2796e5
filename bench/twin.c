/* theus-bench twin: live-region read bandwidth against plain memcpy, epoch
 * wake-up latency against a raw futex ping-pong, and the cost of publishing.
 *
 *   memcpy_GBps / twin_read_at_GBps   1 MiB copies out of the arena, measured
 *                                     in alternating rounds while a writer
 *                                     thread publishes a full 1 MiB frame at 1 kHz
 *   ratio_twin_vs_memcpy              median of the per-round ratios (target >= 0.8)
 *   atomic_word_copy_GBps             the strictly-C11 alternative (relaxed 8-byte
 *                                     atomic loads), for the data-race caveat
 *   wait_epoch_wake_us                one-way: publish -> wait_epoch returns in
 *                                     another process (half a ping-pong round trip)
 *   futex_floor_roundtrip_us          the same ping-pong with bare shared futexes
 *   twin_publish_ns                   one small write + publish, no waiters
 *   futex_wake_nowaiter_ns            a bare FUTEX_WAKE nobody waits on
 */
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "theus/heavy.h"
#include "theus/twin.h"

#define MIB (1u << 20)
#define ROUNDS 21
#define COPIES_PER_ROUND 60
#define PINGS 2000

typedef struct bench_ctx {
  theus_arena *arena;
  theus_twin_writer *twin;
  theus_twin_reader *reader;
  const void *plain; /* a 1 MiB arena array: the memcpy baseline's source */
  void *dest;
  atomic_int stop;
} bench_ctx;

static long futex_op(atomic_uint *w, int op, unsigned val) {
  return syscall(SYS_futex, (void *)w, op, val, NULL, NULL, 0);
}

/* Waits (shared futex, no spinning) until *w differs from old. */
static void futex_wait_change(atomic_uint *w, unsigned old) {
  while (atomic_load_explicit(w, memory_order_acquire) == old) futex_op(w, FUTEX_WAIT, old);
}

static void futex_bump(atomic_uint *w) {
  atomic_fetch_add_explicit(w, 1, memory_order_release);
  futex_op(w, FUTEX_WAKE, INT_MAX);
}

/* ---- bandwidth -------------------------------------------------------- */

static void *writer_1khz(void *p) {
  bench_ctx *c = p;
  struct timespec next;
  clock_gettime(CLOCK_MONOTONIC, &next);
  while (!atomic_load(&c->stop)) {
    void *back = NULL;
    if (theus_twin_writer_begin(c->twin, THEUS_TWIN_DISCARD, &back) != 0) break;
    memset(back, (int)(theus_twin_writer_epoch(c->twin) & 0xff), MIB);
    theus_twin_writer_publish(c->twin, NULL);
    next.tv_nsec += 1000000;
    if (next.tv_nsec >= 1000000000) {
      next.tv_nsec -= 1000000000;
      next.tv_sec++;
    }
    clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL);
  }
  return NULL;
}

/* Strictly conforming copy: relaxed atomic loads of aligned 8-byte words. */
static void atomic_word_copy(void *dest, const void *src, size_t n) {
  const _Atomic uint64_t *s = src;
  uint64_t *d = dest;
  for (size_t i = 0; i < n / 8; i++) d[i] = atomic_load_explicit(&s[i], memory_order_relaxed);
}

enum { COPY_MEMCPY, COPY_TWIN, COPY_ATOMIC };

/* GB/s of COPIES_PER_ROUND copies of 1 MiB; -1 if a read failed. */
static double copy_round(bench_ctx *c, int how) {
  uint64_t t0 = bench_now_ns();
  for (int i = 0; i < COPIES_PER_ROUND; i++) {
    if (how == COPY_MEMCPY) {
      memcpy(c->dest, c->plain, MIB);
    } else if (how == COPY_ATOMIC) {
      atomic_word_copy(c->dest, c->plain, MIB);
    } else if (theus_twin_reader_read_at(c->reader, 0, c->dest, MIB, NULL) != 0) {
      fprintf(stderr, "twin bench: %s\n", theus_twin_reader_errmsg(c->reader));
      return -1;
    }
    bench_sink(c->dest);
  }
  double s = (double)(bench_now_ns() - t0) / 1e9;
  return (double)COPIES_PER_ROUND * MIB / s / 1e9;
}

static int bench_bandwidth(bench_ctx *c) {
  double mem[ROUNDS], twin[ROUNDS], ratio[ROUNDS], atom[ROUNDS];
  pthread_t w;
  if (pthread_create(&w, NULL, writer_1khz, c) != 0) return -1;
  int rc = 0;
  copy_round(c, COPY_MEMCPY); /* warm caches and page tables */
  copy_round(c, COPY_TWIN);
  for (int r = 0; r < ROUNDS && rc == 0; r++) {
    mem[r] = copy_round(c, COPY_MEMCPY);
    twin[r] = copy_round(c, COPY_TWIN);
    atom[r] = copy_round(c, COPY_ATOMIC);
    if (twin[r] < 0) rc = -1;
    ratio[r] = twin[r] / mem[r];
  }
  atomic_store(&c->stop, 1);
  pthread_join(w, NULL);
  if (rc) return rc;
  theus_twin_reader_stats st;
  theus_twin_reader_stats_get(c->reader, &st);
  bench_report("memcpy_GBps", bench_median(mem, ROUNDS), "GB/s");
  bench_report("twin_read_at_GBps", bench_median(twin, ROUNDS), "GB/s");
  bench_report("ratio_twin_vs_memcpy", bench_median(ratio, ROUNDS), "x");
  bench_report("atomic_word_copy_GBps", bench_median(atom, ROUNDS), "GB/s");
  bench_report("twin_writer_epochs", (double)theus_twin_writer_epoch(c->twin), "publishes");
  bench_report("twin_read_at_retries", (double)st.retries, "retries");
  return 0;
}

/* ---- wake-up latency, across processes ---------------------------------- */

/* Child of the futex floor: answers every bump of ping with a bump of pong. */
static int floor_child(atomic_uint *ping, atomic_uint *pong) {
  for (unsigned i = 0; i < PINGS; i++) {
    futex_wait_change(ping, i);
    futex_bump(pong);
  }
  return 0;
}

/* Child of the twin ping-pong: reads region a through a read-only
 * attachment, answers each epoch by publishing region b. */
static int twin_child(int ro_fd, theus_handle ha, theus_twin_writer *b) {
  theus_arena *ro = NULL;
  theus_twin_reader *ra = NULL;
  if (theus_arena_open_ro(ro_fd, &ro) != 0 || theus_twin_reader_open(ro, ha, &ra) != 0) return 1;
  uint64_t seen = 0;
  for (unsigned i = 0; i < PINGS; i++) {
    if (theus_twin_reader_wait_epoch(ra, seen, 10000, &seen) != 0) return 2;
    theus_twin_writer_publish(b, NULL);
  }
  theus_twin_reader_close(ra);
  theus_arena_close(ro);
  return 0;
}

static pid_t fork_child(void) {
  fflush(NULL);
  pid_t pid = fork();
  if (pid == 0) prctl(PR_SET_PDEATHSIG, SIGKILL);
  return pid;
}

static int reap(pid_t pid) {
  int st = 0;
  if (waitpid(pid, &st, 0) != pid) return -1;
  return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -1;
}

static double median_us(double *v, size_t n) {
  return bench_median(v, n) / 1000.0;
}

static int bench_futex_floor(bench_ctx *c, double *samples) {
  atomic_uint *w = NULL;
  theus_handle h = 0;
  if (theus_arena_alloc(c->arena, 128, &h, (void **)&w) != 0) return -1;
  atomic_uint *ping = &w[0], *pong = &w[16]; /* separate cache lines */
  atomic_store(ping, 0);
  atomic_store(pong, 0);
  pid_t pid = fork_child();
  if (pid == 0) _exit(floor_child(ping, pong));
  for (unsigned i = 0; i < PINGS; i++) {
    uint64_t t0 = bench_now_ns();
    futex_bump(ping);
    futex_wait_change(pong, i);
    samples[i] = (double)(bench_now_ns() - t0);
  }
  int rc = reap(pid);
  theus_arena_free(c->arena, h);
  return rc;
}

static int bench_twin_pingpong(bench_ctx *c, double *samples) {
  theus_twin_writer *a = NULL, *b = NULL;
  theus_twin_reader *rb = NULL;
  int rc = -1;
  if (theus_twin_writer_open(c->arena, 64, &a) != 0) return -1;
  if (theus_twin_writer_open(c->arena, 64, &b) != 0) goto out_a;
  if (theus_twin_reader_open(c->arena, theus_twin_writer_handle(b), &rb) != 0) goto out_b;
  pid_t pid = fork_child();
  if (pid == 0) _exit(twin_child(theus_arena_ro_fd(c->arena), theus_twin_writer_handle(a), b));
  uint64_t seen = 0;
  rc = 0;
  for (unsigned i = 0; i < PINGS && rc == 0; i++) {
    uint64_t t0 = bench_now_ns();
    theus_twin_writer_publish(a, NULL);
    rc = theus_twin_reader_wait_epoch(rb, seen, 10000, &seen);
    samples[i] = (double)(bench_now_ns() - t0);
  }
  if (reap(pid) != 0) rc = -1;
  theus_twin_reader_close(rb);
out_b:
  theus_twin_writer_close(b, 1);
out_a:
  theus_twin_writer_close(a, 1);
  return rc;
}

/* ---- publish cost --------------------------------------------------------- */

static int bench_publish(bench_ctx *c) {
  enum { N = 200000 };
  theus_twin_writer *t = NULL;
  theus_handle h = 0;
  atomic_uint *w = NULL;
  if (theus_twin_writer_open(c->arena, 64, &t) != 0) return -1;
  uint64_t t0 = bench_now_ns();
  for (uint64_t i = 0; i < N; i++) {
    theus_twin_writer_write(t, 0, &i, sizeof i);
    theus_twin_writer_publish(t, NULL);
  }
  double publish_ns = (double)(bench_now_ns() - t0) / N;
  theus_twin_writer_close(t, 1);
  if (theus_arena_alloc(c->arena, 64, &h, (void **)&w) != 0) return -1;
  t0 = bench_now_ns();
  for (int i = 0; i < N; i++) futex_op(w, FUTEX_WAKE, INT_MAX);
  double wake_ns = (double)(bench_now_ns() - t0) / N;
  theus_arena_free(c->arena, h);
  bench_report("twin_publish_ns", publish_ns, "ns");
  bench_report("futex_wake_nowaiter_ns", wake_ns, "ns");
  return 0;
}

static int bench_latency(bench_ctx *c) {
  static double fl[PINGS], tw[PINGS];
  if (bench_futex_floor(c, fl) != 0 || bench_twin_pingpong(c, tw) != 0) return -1;
  double floor_rt = median_us(fl, PINGS), twin_rt = median_us(tw, PINGS);
  bench_report("wait_epoch_wake_us", twin_rt / 2, "us");
  bench_report("wait_epoch_roundtrip_us", twin_rt, "us");
  bench_report("futex_floor_roundtrip_us", floor_rt, "us");
  bench_report("ratio_wait_epoch_vs_futex_floor", twin_rt / floor_rt, "x");
  return 0;
}

static int bench_setup(bench_ctx *c) {
  void *plain = NULL;
  theus_handle h = 0;
  if (theus_arena_open(NULL, &c->arena) != 0) return -1;
  if (theus_twin_writer_open(c->arena, MIB, &c->twin) != 0) return -1;
  if (theus_twin_reader_open(c->arena, theus_twin_writer_handle(c->twin), &c->reader) != 0) return -1;
  if (theus_arena_alloc(c->arena, MIB, &h, &plain) != 0) return -1;
  memset(plain, 0x5a, MIB);
  c->plain = plain;
  c->dest = malloc(MIB);
  if (!c->dest) return -1;
  memset(c->dest, 1, MIB);
  return 0;
}

int theus_bench_twin(int argc, char **argv) {
  (void)argc;
  (void)argv;
  bench_ctx c = {0};
  int rc = bench_setup(&c);
  if (rc != 0) {
    fprintf(stderr, "twin bench: setup failed: %s\n", c.arena ? theus_arena_errmsg(c.arena) : "no arena");
    goto out;
  }
  /* Processes first: fork before the writer thread exists. */
  if ((rc = bench_latency(&c)) != 0 || (rc = bench_publish(&c)) != 0 || (rc = bench_bandwidth(&c)) != 0)
    fprintf(stderr, "twin bench: a measurement failed\n");
out:
  free(c.dest);
  theus_twin_reader_close(c.reader);
  theus_twin_writer_close(c.twin, 1);
  theus_arena_close(c.arena); /* frees the baseline array with the arena */
  return rc ? 1 : 0;
}
