/* theus-c — cluster internals shared by cluster*.c (not installed). */
#ifndef THEUS_CLUSTER_CLUSTER_INTERNAL_H
#define THEUS_CLUSTER_CLUSTER_INTERNAL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <mpi.h>

#include "theus/cluster.h"

#define CL_MSG 2048
#define CL_HOST 256

struct theus_cluster {
  MPI_Comm world;   /* our duplicate of MPI_COMM_WORLD */
  MPI_Comm node;    /* the ranks of this node (shared memory, or this rank alone) */
  MPI_Comm leaders; /* one rank per node; MPI_COMM_NULL on the others */
  int rank, size, node_rank, node_size, nnodes, local_ranks;
  bool own_mpi;     /* theus_cluster_init called MPI_Init */
  char *hosts;      /* size * CL_HOST */
  theus_engine *e;
  int workers, total_workers; /* this rank's pool size; every rank's together */
  /* dynamic claims (cluster_map.c): an int64 slice counter in rank 0's
   * window, passive target (lock_all from attach to finalize) */
  MPI_Win win;              /* MPI_WIN_NULL: static blocks only */
  theus_cluster_claim claim; /* rank 0: how the next maps spread */
  uint64_t *slices_by_rank, *calls_by_rank; /* rank 0: size entries each */
  void *group; /* rank 0: the parallel or run step in flight (cluster_run.c) */
  uint64_t placed; /* rank 0: movable calls placed in this run (the next goes to rank placed % size) */
  /* rank 0: the domain last shipped (NULL before the first sync) and
   * {key: identity} of the arrays every node holds; other ranks: the
   * identities they hold */
  json_t *shipped;
  json_t *held;
  uint64_t bytes_shipped, arrays_shipped, bytes_node_copied, syncs, maps, maps_dynamic, claims, slices_local,
      slices_remote, calls_local, calls_remote, calls_rerun;
  char msg[CL_MSG];
  char waiting[2][CL_MSG]; /* theus_cluster_waiting: the one `wait_cur` names is complete */
  _Atomic int wait_cur;
};

/* Sets c->msg and returns code. */
int theus__cl_err(theus_cluster *c, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Sets c->msg from an MPI error code (naming this rank, its host and what
 * failed) and returns THEUS_ESYS. */
int theus__cl_mpi_fail(theus_cluster *c, int mrc, const char *what);

/* Waits for a nonblocking MPI request, sleeping between polls so that a
 * waiting rank leaves its core to its workers. Returns the MPI code. */
int theus__cl_wait(MPI_Request *r);

/* Broadcasts a JSON value from rank 0 over comm (*v: rank 0's value; the
 * others get a new reference). Nonblocking underneath (theus__cl_wait). */
int theus__cl_bcast_json(theus_cluster *c, MPI_Comm comm, json_t **v);

/* Sets the text theus_cluster_waiting returns ("" clears it). */
void theus__cl_set_waiting(theus_cluster *c, const char *text);

/* Rank 0: the first failure in replies gathered by rank (rank 0's own
 * first), its message naming the rank and host; 0 if every rank succeeded.
 * A failure makes rank 0 ship everything again next time. */
int theus__cl_first_failure(theus_cluster *c, const json_t *replies);

/* ---- maps and the executors' loop (cluster_map.c) ---- */

/* Appends to keys (a JSON array of strings) every heavy key the contract of
 * process `name` reads by exact name (heavy.X inputs; a pattern names none)
 * that keys does not hold yet. */
int theus__cl_add_keys(theus_engine *e, const char *name, json_t *keys);

/* Gathers every rank's reply at rank 0 (*all: an array by rank there;
 * other ranks pass all NULL). Nonblocking underneath (theus__cl_wait). */
int theus__cl_gather(theus_cluster *c, const json_t *mine, json_t **all);

/* Rank 0: the waiting text while other ranks work ("waiting for WHAT on
 * rank 1 (host a), ..."). */
void theus__cl_waiting_on_ranks(theus_cluster *c, const char *what);

/* ---- parallel steps (cluster_run.c) ---- */

/* An executor's side of a "run" command: runs the members rank 0 placed on
 * this rank, each on rank 0's version, and returns their outcomes:
 * {"rc": 0, "items": [{"i", "rc", "msg", "patch", "result"}]} or {"rc", "msg"}. */
json_t *theus__cl_run_calls(theus_cluster *c, const json_t *cmd, int sync_rc);

/* Rank 0: theus_pipeline_on_parallel's ops placing members on ranks, and
 * theus_pipeline_on_run's placing run steps the same way (ud: the
 * cluster). */
extern const theus_pipeline_parallel_ops theus__cl_parallel_ops, theus__cl_run_ops;

/* Rank 0: frees the last parallel or run step's state (its jobs live until the
 * pipeline stored the members' intos: the next step, the end of the run). */
void theus__cl_group_end(theus_cluster *c);

/* ---- syncs (cluster_sync.c) ---- */

/* The RFC 7386 merge patch taking object `from` to object `to` (new
 * reference; NULL if memory ran out). */
json_t *theus__cl_merge_diff(const json_t *from, const json_t *to);

/* Forgets what the ranks hold: the next sync ships the whole domain and
 * every array the work reads (a rank failed; a new engine was attached). */
void theus__cl_forget(theus_cluster *c);

/* Rank 0: builds the sync for work that reads heavy keys `keys` (a JSON
 * array of strings): version, domain patch, the arrays whose identity the
 * nodes do not hold. */
int theus__cl_sync_build(theus_cluster *c, const json_t *keys, json_t **sync);

/* Every rank, after the command carrying the sync was broadcast: ships the
 * sync's arrays (rank 0 sends, the others receive them into their arenas) and
 * installs the sync as one version (not on rank 0). On failure the rank
 * still takes part in every broadcast, then returns the code (message in
 * c->msg). */
int theus__cl_sync_apply(theus_cluster *c, const json_t *sync);

#endif /* THEUS_CLUSTER_CLUSTER_INTERNAL_H */
