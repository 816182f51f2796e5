/* theus-run --mpi: rank 0 runs the pipeline, the other ranks execute map
 * slices (docs/cluster.md). */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mpi.h"

#ifdef THEUS_HAVE_MPI
#include <theus/cluster.h>

struct cli_mpi {
  theus_cluster *c;
};

/* The job's cluster, for the SIGTERM handler (one per process). */
static theus_cluster *term_cluster;

static void put(const char *s) {
  ssize_t n = write(STDERR_FILENO, s, strlen(s));
  (void)n;
}

/* The MPI runtime ends every rank with SIGTERM when one dies: say what rank 0
 * was waiting for (mpirun's own report names the dead rank). */
static void on_term(int sig) {
  const char *w = term_cluster ? theus_cluster_waiting(term_cluster) : "";
  if (*w) {
    put("theus-run: rank 0: the MPI runtime ended the job while ");
    put(w);
    put(": a rank died, or the job was stopped (mpirun's report says which)\n");
  }
  signal(sig, SIG_DFL);
  raise(sig);
}

int cli_mpi_start(int *argc, char ***argv, cli_mpi **out) {
  cli_mpi *m = *out = calloc(1, sizeof *m);
  int rc = m ? theus_cluster_init(argc, argv, &m->c) : THEUS_ENOMEM;
  if (rc) {
    fprintf(stderr, "theus-run: --mpi: %s\n", m && m->c ? theus_cluster_errmsg(m->c) : theus_strerror(rc));
    return rc;
  }
  if (theus_cluster_rank(m->c) == 0) {
    term_cluster = m->c;
    signal(SIGTERM, on_term);
  }
  return 0;
}

int cli_mpi_rank(const cli_mpi *m) { return m ? theus_cluster_rank(m->c) : 0; }

int cli_mpi_default_workers(const cli_mpi *m) {
  long cores = sysconf(_SC_NPROCESSORS_ONLN);
  int share = m ? theus_cluster_local_ranks(m->c) : 1;
  long w = (cores > 0 ? cores : 1) / (share > 0 ? share : 1);
  return m ? (w > 0 ? (int)w : 1) : 0;
}

void cli_mpi_prepare(const cli_mpi *m, theus_pipeline *p, theus_engine_config *cfg) {
  if (!m || theus_cluster_rank(m->c) == 0) return;
  theus_pipeline_skip_heavy(p);
  cfg->ledger = NULL; /* rank 0's engine holds the version chain, and its ledger */
  cfg->on_commit = NULL;
}

int cli_mpi_attach(cli_mpi *m, theus_engine *e, int rc, theus_pipeline *p, const char **msg) {
  *msg = theus_pipeline_errmsg(p);
  if (!m) return rc;
  int arc = theus_cluster_attach(m->c, rc ? NULL : e, rc, theus_pipeline_errmsg(p));
  if (arc && !rc) *msg = theus_cluster_errmsg(m->c); /* another rank failed */
  return rc ? rc : arc;
}

int cli_mpi_run(cli_mpi *m, theus_pipeline *p, theus_engine *e) {
  return m ? theus_cluster_run(m->c, p) : theus_pipeline_run(p, e);
}

json_t *cli_mpi_stats(const cli_mpi *m) { return m ? theus_cluster_stats(m->c) : NULL; }

void cli_mpi_end(cli_mpi *m) {
  if (!m) return;
  term_cluster = NULL;
  theus_cluster_finalize(m->c);
  free(m);
}

#else /* built without MPI */

int cli_mpi_start(int *argc, char ***argv, cli_mpi **out) {
  (void)argc, (void)argv;
  *out = NULL;
  fprintf(stderr, "theus-run: --mpi: this theus-run was built without MPI; install Open MPI (libopenmpi-dev) "
                  "and rebuild with -Dmpi=enabled\n");
  return THEUS_EINVAL;
}
int cli_mpi_rank(const cli_mpi *m) { (void)m; return 0; }
int cli_mpi_default_workers(const cli_mpi *m) { (void)m; return 0; }
void cli_mpi_prepare(const cli_mpi *m, theus_pipeline *p, theus_engine_config *cfg) { (void)m, (void)p, (void)cfg; }
int cli_mpi_attach(cli_mpi *m, theus_engine *e, int rc, theus_pipeline *p, const char **msg) {
  (void)m, (void)e;
  *msg = theus_pipeline_errmsg(p);
  return rc;
}
int cli_mpi_run(cli_mpi *m, theus_pipeline *p, theus_engine *e) { (void)m; return theus_pipeline_run(p, e); }
json_t *cli_mpi_stats(const cli_mpi *m) { (void)m; return NULL; }
void cli_mpi_end(cli_mpi *m) { (void)m; }

#endif
