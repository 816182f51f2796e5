/* theus-c — the cluster: one pipeline over many machines, on MPI.
 *
 * Installed only when theus-c is built with MPI (-Dmpi=enabled, or found by
 * -Dmpi=auto); link with libtheus-cluster (pkg-config theus-cluster). The
 * model is in docs/cluster.md: rank 0 runs the pipeline and owns the version
 * chain; every rank opens its own engine (arena and worker pool) and runs the
 * map slices it is sent; rank 0's state reaches the other ranks as syncs in
 * version order, heavy arrays once per node.
 *
 * Threads: call the cluster from one thread per rank (MPI_THREAD_SERIALIZED);
 * the engine's own threads never touch MPI. Calls marked collective must be
 * made by every rank, in the same order.
 */
#ifndef THEUS_CLUSTER_H
#define THEUS_CLUSTER_H

#include <stdint.h>

#include <jansson.h>

#include "engine.h"
#include "error.h"
#include "pipeline.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct theus_cluster theus_cluster;

/* How a map's slices are spread over the ranks (docs/cluster.md). */
typedef enum theus_cluster_claim {
  /* Every rank claims its next slices from a counter on rank 0
   * (MPI_Fetch_and_op): as many as it has workers per claim, until none
   * are left. The default. */
  THEUS_CLUSTER_DYNAMIC = 0,
  /* Rank r runs the slices [n*r/size, n*(r+1)/size): no claims, and the rank
   * that runs a slice is known in advance. */
  THEUS_CLUSTER_STATIC = 1
} theus_cluster_claim;

/* Collective. Initialises MPI (MPI_Init_thread, unless the host did) and
 * finds the nodes: ranks sharing memory, or each rank alone when the
 * environment sets THEUS_CLUSTER_RANK_IS_NODE=1. argc/argv may be NULL.
 * Like theus_engine_open, a failure still hands back the object carrying the
 * message (unless memory ran out); close it with theus_cluster_finalize. */
THEUS_API int theus_cluster_init(int *argc, char ***argv, theus_cluster **out);

/* Collective. Frees the cluster and calls MPI_Finalize if theus_cluster_init
 * called MPI_Init. The engine attached stays the caller's (close it before).
 * NULL is a no-op. */
THEUS_API void theus_cluster_finalize(theus_cluster *c);

/* This process's rank (0 drives). */
THEUS_API int theus_cluster_rank(const theus_cluster *c);

/* The number of ranks. */
THEUS_API int theus_cluster_size(const theus_cluster *c);

/* The number of nodes (see theus_cluster_init). */
THEUS_API int theus_cluster_nodes(const theus_cluster *c);

/* Ranks running on this machine (sharing memory), whatever
 * THEUS_CLUSTER_RANK_IS_NODE says: a host divides the cores by it to size
 * each rank's pool. */
THEUS_API int theus_cluster_local_ranks(const theus_cluster *c);

/* The host name of a rank ("?" out of range). */
THEUS_API const char *theus_cluster_host(const theus_cluster *c, int rank);

/* Message of the last failure (what, where; remote failures name the rank
 * and host). Never NULL. */
THEUS_API const char *theus_cluster_errmsg(const theus_cluster *c);

/* Collective. Every rank passes the result of opening its engine (status 0
 * and e, or a negative code, e NULL and the message). Returns 0 when every
 * rank opened, else the first failing rank's code on every rank; on rank 0
 * the cluster's message then gives that rank's message ("rank 2 (host h):
 * ..." for another rank). The engine stays the caller's. A cluster may
 * attach one engine after another (the last one closed after its run): each
 * attach starts from nothing shipped. */
THEUS_API int theus_cluster_attach(theus_cluster *c, theus_engine *e, int status, const char *msg);

/* Rank 0: how the next maps spread their slices. The environment variable
 * THEUS_CLUSTER_CLAIM=static or =dynamic (read by theus_cluster_init on
 * rank 0) sets it too; the default is THEUS_CLUSTER_DYNAMIC. When MPI gives
 * no one-sided window (theus_cluster_attach could not create it), maps are
 * static whatever this says. THEUS_EINVAL for another value or another rank. */
THEUS_API int theus_cluster_set_claim(theus_cluster *c, theus_cluster_claim claim);

/* Rank 0 only. As theus_engine_map on the attached engine, with the slices
 * spread over every rank (dynamic claims or static blocks:
 * theus_cluster_set_claim) and the slice values folded at rank 0 in slice
 * order with the same reducer (docs/cluster.md). slices 0 =
 * two per worker over all ranks. The heavy arrays the process reads are
 * shipped to the nodes that do not hold them yet. Codes as theus_engine_map;
 * a remote failure's message starts "rank R (host H): ". Other ranks must be
 * in theus_cluster_serve. */
THEUS_API int theus_cluster_map(theus_cluster *c, const char *name, const char *key, uint32_t slices,
                                const char *reducer, const json_t *args, json_t **result);

/* Ranks other than 0: executes what rank 0 sends until theus_cluster_stop;
 * returns the status rank 0 passed to it (0 or a negative code), or a code
 * of its own if MPI failed. */
THEUS_API int theus_cluster_serve(theus_cluster *c);

/* Rank 0 only: ends theus_cluster_serve on every other rank, which returns
 * status. */
THEUS_API int theus_cluster_stop(theus_cluster *c, int status);

/* Collective: runs pipeline p (opened on the attached engine on every rank)
 * with rank 0 driving, its map steps spread over all ranks and its run steps
 * and the members of its parallel steps placed on them round-robin (those
 * that may move: parallel processes reading the domain and named heavy
 * arrays, writing the domain; docs/cluster.md); the other ranks serve. Returns rank 0's result on every rank; on rank 0 the
 * message is theus_pipeline_errmsg(p). */
THEUS_API int theus_cluster_run(theus_cluster *c, theus_pipeline *p);

/* Counters as JSON (new reference): bytes_shipped, arrays_shipped,
 * bytes_node_copied, syncs, maps, maps_dynamic, claims, slices_local,
 * slices_remote, slices_by_rank, calls_local, calls_remote, calls_rerun,
 * calls_by_rank, claim, ranks, nodes (see docs/cluster.md). Meaningful on
 * rank 0. */
THEUS_API json_t *theus_cluster_stats(const theus_cluster *c);

/* What rank 0 is waiting for right now ("" when it is not waiting on other
 * ranks), e.g. "waiting for rank 1 (host a), rank 2 (host b)". Safe to read
 * from a signal handler (the text is swapped, never edited in place): a host
 * prints it when the MPI runtime ends the job because a rank died. */
THEUS_API const char *theus_cluster_waiting(const theus_cluster *c);

#ifdef __cplusplus
}
#endif
#endif /* THEUS_CLUSTER_H */
