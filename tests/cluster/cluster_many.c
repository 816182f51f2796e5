/* Runs several pipelines in one MPI job, one after another, as theus-run
 * --mpi --workers 1 runs one (an embedding host: docs/cluster.md,
 * "Embedding"), so that the cluster_same test starts mpirun once per rank
 * count instead of once per pipeline. Under mpirun:
 *   cluster_many PIPELINE[,PLUGIN] ...
 * Rank 0 prints, for each pipeline, a line "=== i rc" (its index and the
 * run's code) and then the final domain as theus-run prints it; a
 * pipeline's failure goes to stderr. Each pipeline gets engines of its own
 * on every rank, attached to the one cluster in turn. Exits 1 if MPI or an
 * engine failed (a pipeline failing is printed, not an exit status). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <theus/cluster.h>
#include <theus/pipeline.h>

/* Loads spec ("file" or "file,plugin") and opens its engine with one
 * worker; *p and *e are NULL on failure (the code returned, the message
 * in msg). */
static int open_one(theus_cluster *c, char *spec, theus_pipeline **p, theus_engine **e, const char **msg) {
  char *plugin = strchr(spec, ',');
  if (plugin) *plugin++ = '\0';
  *e = NULL;
  int rc = theus_pipeline_load(spec, p);
  if (!rc && plugin) rc = theus_pipeline_add_plugin(*p, plugin);
  if (!rc && theus_cluster_rank(c) != 0) theus_pipeline_skip_heavy(*p);
  theus_engine_config cfg;
  theus_engine_config_init(&cfg);
  cfg.workers = 1;
  if (!rc) rc = theus_pipeline_open_engine(*p, &cfg, e);
  *msg = *p ? theus_pipeline_errmsg(*p) : theus_strerror(rc);
  return rc;
}

static int print_domain(theus_engine *e) {
  theus_snapshot *snap;
  if (theus_engine_snapshot(e, &snap)) return 1;
  int rc = json_dumpf(theus_snapshot_domain(snap), stdout, JSON_INDENT(2));
  theus_snapshot_release(snap);
  return rc || putchar('\n') == EOF;
}

int main(int argc, char **argv) {
  theus_cluster *c = NULL;
  if (theus_cluster_init(&argc, &argv, &c)) {
    fprintf(stderr, "cluster_many: %s\n", c ? theus_cluster_errmsg(c) : "out of memory");
    theus_cluster_finalize(c);
    return 1;
  }
  int bad = 0, stop = 0, rank = theus_cluster_rank(c);
  for (int i = 1; i < argc && !stop; i++) { /* stop: collective, so every rank leaves together */
    theus_pipeline *p = NULL;
    theus_engine *e = NULL;
    const char *msg;
    int rc = open_one(c, argv[i], &p, &e, &msg);
    rc = theus_cluster_attach(c, rc ? NULL : e, rc, msg);
    if (rc) { /* every rank sees it: the job cannot go on */
      if (rank == 0) fprintf(stderr, "cluster_many: %s: %s\n", argv[i], theus_cluster_errmsg(c));
      bad = stop = 1;
    } else {
      rc = theus_cluster_run(c, p);
      if (rank == 0) {
        if (rc) fprintf(stderr, "cluster_many: %s\n", theus_pipeline_errmsg(p));
        printf("=== %d %d\n", i - 1, rc);
        bad |= print_domain(e);
        fflush(stdout);
      }
    }
    theus_engine_close(e);
    theus_pipeline_close(p);
  }
  theus_cluster_finalize(c);
  return bad;
}
