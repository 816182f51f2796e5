/* theus-run --mpi: the cluster glue (cli/mpi.c). Without MPI in the build
 * every call is the single-machine behaviour and cli_mpi_start refuses. */
#ifndef THEUS_CLI_MPI_H
#define THEUS_CLI_MPI_H

#include <jansson.h>

#include <theus/engine.h>
#include <theus/pipeline.h>

typedef struct cli_mpi cli_mpi;

/* Joins the MPI job (*out); prints why and returns nonzero if it cannot
 * (built without MPI, MPI_Init failed). */
int cli_mpi_start(int *argc, char ***argv, cli_mpi **out);

/* This rank (0 without MPI): only rank 0 prints. */
int cli_mpi_rank(const cli_mpi *m);

/* The default pool size: one worker per core, the cores shared by the ranks of
 * this machine. */
int cli_mpi_default_workers(const cli_mpi *m);

/* Before opening the engine: executors take rank 0's heavy arrays, and
 * write no ledger and replay nothing (--ledger and --replay are rank 0's:
 * the executors' versions are local copies of its states). */
void cli_mpi_prepare(const cli_mpi *m, theus_pipeline *p, theus_engine_config *cfg);

/* After opening the engine (rc, e as it returned): 0 when every rank opened;
 * else the code, and *msg (rank 0) the message to print. */
int cli_mpi_attach(cli_mpi *m, theus_engine *e, int rc, theus_pipeline *p, const char **msg);

/* Runs the pipeline (spread over the ranks with MPI). */
int cli_mpi_run(cli_mpi *m, theus_pipeline *p, theus_engine *e);

/* The cluster's counters (NULL without MPI). */
json_t *cli_mpi_stats(const cli_mpi *m);

/* Leaves the MPI job. NULL is a no-op. */
void cli_mpi_end(cli_mpi *m);

#endif
