/* theus-bench cluster, under mpirun (docs/cluster.md):
 *   mpirun --bind-to none -n 2 theus-bench cluster [workers-per-rank]
 * - cluster_map_efficiency: a CPU-bound map of 1 ms slices spread over the
 *   ranks (ranks x workers) against the same map on one engine of rank 0
 *   with the same total workers, medians of 5 alternated runs;
 * - cluster_bytes_shipped_second_map: bytes a second map over an unchanged
 *   64 MiB array ships (every rank its own node, THEUS_CLUSTER_RANK_IS_NODE=1);
 * - cluster_ship_vs_bcast: the rate of shipping a fresh 64 MiB heavy array
 *   with a map (sync, draft, receive, publish, an empty map, results back)
 *   over a plain MPI_Bcast of the same bytes into fresh memory plus a
 *   barrier: the median of SHIP_ROUNDS rounds' ratios, each round timing
 *   both back to back (alternately first) so that both see the same load;
 *   cluster_ship_vs_bcast_populated: the same over a plain MPI_Bcast whose
 *   receivers first fault their fresh buffer in with one madvise, as the
 *   shipping does with its draft (like for like); and, for context, the
 *   MPI_Bcast rate into memory the receivers already touched
 *   (cluster_bcast_touched_rate);
 * - cluster_map_efficiency_static: cluster_map_efficiency with static blocks
 *   (the default is dynamic claims);
 * - cluster_uneven_gain: a map whose first half of slices cost 3 ms and the
 *   second half 1 ms, with static blocks over dynamic claims (time / time,
 *   medians of 3; ideal 1.5 on 2 ranks: static gives rank 0 the whole first
 *   half). */
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <mpi.h>

#include "bench.h"
#include "theus/cluster.h"

#define MAP_SLICES 400
#define UNEVEN_SLICES 200
#define SHIP_BYTES (64u << 20)
#define SECOND_BYTES (64u << 20)
#define REPS 5
#define SHIP_REPS 3
#define SHIP_ROUNDS 7

/* Statuses theus_cluster_stop hands the other ranks: take part in a plain
 * MPI_Bcast (BCAST_ROUND + how the receivers' memory is), then serve again. */
#define BCAST_ROUND 1
enum { FRESH, POPULATED, TOUCHED, BUFFER_KINDS };

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23 /* Linux 5.14 */
#endif

static const char *const frame_in[] = {"heavy.frame", NULL};
static const char *const blob_in[] = {"heavy.blob", NULL};

/* 3 ms of CPU for a slice in the first half, 1 ms in the second. */
static int burn_skew(theus_ctx *ctx) {
  uint64_t lo, hi;
  uint32_t i, n;
  int rc = theus_ctx_slice(ctx, &lo, &hi, &i, &n);
  for (int k = 0; !rc && k < (i < n / 2 ? 3 : 1); k++) rc = bench_burn_1ms(ctx);
  return rc;
}

static int touch(theus_ctx *ctx) {
  theus_ctx_return(ctx, json_integer(1));
  return 0;
}

static theus_engine *open_engine(int workers) {
  theus_engine_config cfg;
  theus_engine_config_init(&cfg);
  cfg.workers = workers;
  theus_engine *e = NULL;
  if (theus_engine_open(&cfg, &e)) {
    fprintf(stderr, "bench cluster: %s\n", e ? theus_engine_errmsg(e) : "out of memory");
    theus_engine_close(e);
    return NULL;
  }
  theus_contract burn = {.name = "burn", .fn = bench_burn_1ms, .inputs = frame_in, .parallel = 1, .semantic = THEUS_PURE};
  theus_contract skew = {.name = "burn_skew", .fn = burn_skew, .inputs = frame_in, .parallel = 1, .semantic = THEUS_PURE};
  theus_contract t = {.name = "touch", .fn = touch, .inputs = blob_in, .parallel = 1, .semantic = THEUS_PURE};
  if (theus_engine_register(e, &burn) || theus_engine_register(e, &skew) || theus_engine_register(e, &t)) {
    fprintf(stderr, "bench cluster: %s\n", theus_engine_errmsg(e));
    theus_engine_close(e);
    return NULL;
  }
  return e;
}

/* Binds a new array of nbytes u8 (filled) to key on e. */
static int publish(theus_engine *e, const char *key, uint64_t nbytes) {
  void *data;
  int rc = theus_engine_heavy_alloc(e, key, THEUS_DTYPE_U8, 1, &nbytes, &data);
  if (rc) return rc;
  memset(data, 0x5a, nbytes);
  json_t *pub = json_pack("{s:b}", key, 1);
  rc = theus_engine_cas(e, theus_engine_version(e), NULL, pub, NULL);
  json_decref(pub);
  return rc;
}

static double timed_map(theus_cluster *c, theus_engine *single, const char *name, const char *key, uint32_t slices) {
  json_t *out = NULL;
  uint64_t t0 = bench_now_ns();
  int rc = single ? theus_engine_map(single, name, key, slices, "sum", NULL, &out)
                  : theus_cluster_map(c, name, key, slices, "sum", NULL, &out);
  double s = (double)(bench_now_ns() - t0) / 1e9;
  if (rc) fprintf(stderr, "bench cluster: map: %s\n", single ? theus_engine_errmsg(single) : theus_cluster_errmsg(c));
  json_decref(out);
  return rc ? -1 : s;
}

/* Every rank: a plain MPI_Bcast of SHIP_BYTES from rank 0 plus a barrier,
 * into a new anonymous mapping on the receivers: FRESH (as a shipped array
 * lands in a fresh draft), POPULATED (faulted in with one madvise inside the
 * timing, as the shipping does with its draft) or TOUCHED (written before the
 * timing). Rank 0's buffer is written before the timing in every case. */
static double plain_bcast(int rank, int kind) {
  char *buf = mmap(NULL, SHIP_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (buf == MAP_FAILED) return -1;
  if (rank == 0 || kind == TOUCHED) memset(buf, 0x5a, SHIP_BYTES);
  MPI_Barrier(MPI_COMM_WORLD);
  uint64_t t0 = bench_now_ns();
  if (rank && kind == POPULATED) madvise(buf, SHIP_BYTES, MADV_POPULATE_WRITE);
  MPI_Bcast(buf, (int)SHIP_BYTES, MPI_BYTE, 0, MPI_COMM_WORLD);
  MPI_Barrier(MPI_COMM_WORLD);
  double s = (double)(bench_now_ns() - t0) / 1e9;
  munmap(buf, SHIP_BYTES);
  return s;
}

/* Rank 0: a plain MPI_Bcast with every other rank (out of theus_cluster_serve). */
static double bcast_round(theus_cluster *c, int kind) {
  theus_cluster_stop(c, BCAST_ROUND + kind);
  return plain_bcast(0, kind);
}

static int efficiency(theus_cluster *c, theus_engine *e, int workers) {
  int total = workers * theus_cluster_size(c);
  cpu_set_t set;
  if (!sched_getaffinity(0, sizeof set, &set) && CPU_COUNT(&set) < total)
    fprintf(stderr, "bench cluster: rank 0 may use %d CPUs, fewer than the %d workers of the one-engine baseline "
            "(mpirun binds ranks to cores): cluster_map_efficiency is inflated; run mpirun with --bind-to none\n",
            CPU_COUNT(&set), total);
  theus_engine *single = open_engine(total);
  if (!single || publish(single, "frame", MAP_SLICES) || publish(e, "frame", MAP_SLICES)) {
    theus_engine_close(single);
    return 1;
  }
  double t1[REPS], tc[REPS], ts[REPS];
  timed_map(c, NULL, "burn", "frame", MAP_SLICES); /* warm: ships the frame, wakes every pool */
  timed_map(NULL, single, "burn", "frame", MAP_SLICES);
  for (int r = 0; r < REPS; r++) {
    t1[r] = timed_map(NULL, single, "burn", "frame", MAP_SLICES);
    tc[r] = timed_map(c, NULL, "burn", "frame", MAP_SLICES);
    theus_cluster_set_claim(c, THEUS_CLUSTER_STATIC);
    ts[r] = timed_map(c, NULL, "burn", "frame", MAP_SLICES);
    theus_cluster_set_claim(c, THEUS_CLUSTER_DYNAMIC);
    if (t1[r] < 0 || tc[r] < 0 || ts[r] < 0) break;
  }
  theus_engine_close(single);
  double m1 = bench_median(t1, REPS), mc = bench_median(tc, REPS), ms = bench_median(ts, REPS);
  fprintf(stderr,
          "cluster: %d ranks x %d workers: map of %d x 1 ms slices %.1f ms (static blocks %.1f ms), one engine of "
          "%d workers %.1f ms\n",
          theus_cluster_size(c), workers, MAP_SLICES, mc * 1e3, ms * 1e3, total, m1 * 1e3);
  bench_report("cluster_map_efficiency", m1 / mc, "ratio");
  bench_report("cluster_map_efficiency_static", m1 / ms, "ratio");
  return 0;
}

static int uneven(theus_cluster *c) {
  double td[SHIP_REPS], ts[SHIP_REPS];
  for (int r = 0; r < SHIP_REPS; r++) {
    td[r] = timed_map(c, NULL, "burn_skew", "frame", UNEVEN_SLICES);
    theus_cluster_set_claim(c, THEUS_CLUSTER_STATIC);
    ts[r] = timed_map(c, NULL, "burn_skew", "frame", UNEVEN_SLICES);
    theus_cluster_set_claim(c, THEUS_CLUSTER_DYNAMIC);
    if (td[r] < 0 || ts[r] < 0) return 1;
  }
  double md = bench_median(td, SHIP_REPS), ms = bench_median(ts, SHIP_REPS);
  fprintf(stderr, "cluster: %d slices of 3 ms then 1 ms: dynamic claims %.1f ms, static blocks %.1f ms\n",
          UNEVEN_SLICES, md * 1e3, ms * 1e3);
  bench_report("cluster_uneven_dynamic_ms", md * 1e3, "ms");
  bench_report("cluster_uneven_static_ms", ms * 1e3, "ms");
  bench_report("cluster_uneven_gain", ms / md, "ratio");
  return 0;
}

static uint64_t shipped(theus_cluster *c) {
  json_t *st = theus_cluster_stats(c);
  uint64_t b = (uint64_t)json_integer_value(json_object_get(st, "bytes_shipped"));
  json_decref(st);
  return b;
}

static int second_map(theus_cluster *c, theus_engine *e) {
  if (publish(e, "blob", SECOND_BYTES)) return 1;
  uint64_t b0 = shipped(c);
  timed_map(c, NULL, "touch", "blob", (uint32_t)theus_cluster_size(c));
  uint64_t b1 = shipped(c);
  timed_map(c, NULL, "touch", "blob", (uint32_t)theus_cluster_size(c));
  fprintf(stderr, "cluster: first map over a 64 MiB array shipped %llu bytes\n", (unsigned long long)(b1 - b0));
  bench_report("cluster_bytes_shipped_second_map", (double)(shipped(c) - b1), "B");
  return 0;
}

/* Rank 0: ships a new SHIP_BYTES array with a map (a new identity: shipped
 * again); the time, or -1. */
static double ship_round(theus_cluster *c, theus_engine *e) {
  if (publish(e, "blob", SHIP_BYTES)) return -1;
  return timed_map(c, NULL, "touch", "blob", (uint32_t)theus_cluster_size(c));
}

static int ship_vs_bcast(theus_cluster *c, theus_engine *e) {
  double touched[SHIP_REPS], t[BUFFER_KINDS][SHIP_ROUNDS], ts[SHIP_ROUNDS], plain[SHIP_ROUNDS], pop[SHIP_ROUNDS];
  for (int r = 0; r < SHIP_REPS; r++) /* also warms MPI's path for large messages */
    touched[r] = bcast_round(c, TOUCHED);
  for (int r = 0; r < SHIP_ROUNDS; r++) {
    if (r % 2 == 0 && (ts[r] = ship_round(c, e)) < 0) return 1;
    t[FRESH][r] = bcast_round(c, FRESH);
    t[POPULATED][r] = bcast_round(c, POPULATED);
    if (r % 2 == 1 && (ts[r] = ship_round(c, e)) < 0) return 1;
    plain[r] = t[FRESH][r] / ts[r]; /* rate over rate */
    pop[r] = t[POPULATED][r] / ts[r];
  }
  double gb = (double)SHIP_BYTES / 1e9;
  fprintf(stderr, "cluster: %d rounds of shipping 64 MiB vs plain MPI_Bcast (fresh / populated), ms:", SHIP_ROUNDS);
  for (int r = 0; r < SHIP_ROUNDS; r++)
    fprintf(stderr, " %.0f/%.0f/%.0f", ts[r] * 1e3, t[FRESH][r] * 1e3, t[POPULATED][r] * 1e3);
  fprintf(stderr, "\n");
  bench_report("cluster_ship_rate", gb / bench_median(ts, SHIP_ROUNDS), "GB/s");
  bench_report("cluster_bcast_rate", gb / bench_median(t[FRESH], SHIP_ROUNDS), "GB/s");
  bench_report("cluster_ship_vs_bcast", bench_median(plain, SHIP_ROUNDS), "ratio");
  bench_report("cluster_bcast_populated_rate", gb / bench_median(t[POPULATED], SHIP_ROUNDS), "GB/s");
  bench_report("cluster_ship_vs_bcast_populated", bench_median(pop, SHIP_ROUNDS), "ratio");
  bench_report("cluster_bcast_touched_rate", gb / bench_median(touched, SHIP_REPS), "GB/s");
  return 0;
}

int theus_bench_cluster(int argc, char **argv) {
  setenv("THEUS_CLUSTER_RANK_IS_NODE", "1", 0); /* shipping between ranks is what is measured */
  theus_cluster *c = NULL;
  if (theus_cluster_init(NULL, NULL, &c)) {
    fprintf(stderr, "bench cluster: %s\n", c ? theus_cluster_errmsg(c) : "out of memory");
    theus_cluster_finalize(c);
    return 1;
  }
  long cores = sysconf(_SC_NPROCESSORS_ONLN);
  int workers = argc > 1 ? atoi(argv[1]) : (int)(cores / theus_cluster_local_ranks(c));
  if (workers < 1) workers = 1;
  theus_engine *e = open_engine(workers);
  int rc = theus_cluster_attach(c, e, e ? 0 : THEUS_ESYS, e ? "" : "cannot open the engine");
  if (!rc && theus_cluster_rank(c) == 0) {
    rc = efficiency(c, e, workers) || uneven(c) || second_map(c, e) || ship_vs_bcast(c, e);
    theus_cluster_stop(c, rc ? THEUS_EINVAL : 0);
  } else if (!rc) {
    while ((rc = theus_cluster_serve(c)) >= BCAST_ROUND && rc < BCAST_ROUND + BUFFER_KINDS)
      plain_bcast(theus_cluster_rank(c), rc - BCAST_ROUND);
  }
  theus_engine_close(e);
  theus_cluster_finalize(c);
  return rc ? 1 : 0;
}
