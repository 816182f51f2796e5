/* theus-c — the cluster: MPI setup, nodes, attaching engines, collective runs. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cluster_internal.h"

int theus__cl_err(theus_cluster *c, int code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(c->msg, sizeof c->msg, fmt, ap);
  va_end(ap);
  return code;
}

int theus__cl_wait(MPI_Request *r) {
  long ns = 20000;
  for (;;) {
    int done = 0;
    int rc = MPI_Test(r, &done, MPI_STATUS_IGNORE);
    if (rc != MPI_SUCCESS || done) return rc;
    struct timespec ts = {0, ns};
    nanosleep(&ts, NULL);
    if (ns < 1000000) ns *= 2; /* up to 1 ms: a dispatch is late by at most that */
  }
}

int theus__cl_mpi_fail(theus_cluster *c, int mrc, const char *what) {
  char s[MPI_MAX_ERROR_STRING] = "";
  int n = 0;
  MPI_Error_string(mrc, s, &n);
  return theus__cl_err(c, THEUS_ESYS, "rank %d (host %s): %s: MPI error: %s", c->rank,
                       theus_cluster_host(c, c->rank), what, s);
}

int theus__cl_bcast_json(theus_cluster *c, MPI_Comm comm, json_t **v) {
  char *text = NULL;
  uint64_t len = 0;
  if (c->rank == 0) {
    if (!(text = json_dumps(*v, JSON_COMPACT | JSON_ENCODE_ANY))) return THEUS_ENOMEM;
    len = strlen(text);
  }
  MPI_Request r;
  int mrc = MPI_Ibcast(&len, 1, MPI_UINT64_T, 0, comm, &r);
  if (mrc == MPI_SUCCESS) mrc = theus__cl_wait(&r);
  if (mrc == MPI_SUCCESS && c->rank != 0 && !(text = malloc(len + 1))) mrc = MPI_ERR_NO_MEM;
  if (mrc == MPI_SUCCESS) mrc = MPI_Ibcast(text, (int)len, MPI_CHAR, 0, comm, &r);
  if (mrc == MPI_SUCCESS) mrc = theus__cl_wait(&r);
  int rc = mrc == MPI_SUCCESS ? 0 : theus__cl_mpi_fail(c, mrc, "broadcast of a command");
  if (!rc && c->rank != 0) {
    text[len] = '\0';
    json_error_t err;
    if (!(*v = json_loads(text, JSON_DECODE_ANY, &err)))
      rc = theus__cl_err(c, THEUS_ESYS, "rank %d: a command from rank 0 does not parse: %s", c->rank, err.text);
  }
  free(text);
  return rc;
}

void theus__cl_set_waiting(theus_cluster *c, const char *text) {
  int next = !atomic_load(&c->wait_cur);
  snprintf(c->waiting[next], sizeof c->waiting[next], "%s", text);
  atomic_store(&c->wait_cur, next);
}

const char *theus_cluster_waiting(const theus_cluster *c) {
  return c->waiting[atomic_load(&((theus_cluster *)c)->wait_cur)];
}

/* Nodes: ranks sharing memory, or each rank alone (THEUS_CLUSTER_RANK_IS_NODE). */
static int find_nodes(theus_cluster *c) {
  MPI_Comm shm;
  int mrc = MPI_Comm_split_type(c->world, MPI_COMM_TYPE_SHARED, c->rank, MPI_INFO_NULL, &shm);
  if (mrc != MPI_SUCCESS) return theus__cl_mpi_fail(c, mrc, "MPI_Comm_split_type");
  MPI_Comm_size(shm, &c->local_ranks);
  const char *alone = getenv("THEUS_CLUSTER_RANK_IS_NODE");
  if (alone && !strcmp(alone, "1")) {
    MPI_Comm_free(&shm);
    mrc = MPI_Comm_split(c->world, c->rank, 0, &c->node);
  } else {
    c->node = shm;
  }
  if (mrc != MPI_SUCCESS) return theus__cl_mpi_fail(c, mrc, "MPI_Comm_split");
  MPI_Comm_rank(c->node, &c->node_rank);
  MPI_Comm_size(c->node, &c->node_size);
  /* the leaders: node rank 0 of each node (rank 0 is one: keys are world ranks) */
  mrc = MPI_Comm_split(c->world, c->node_rank == 0 ? 0 : MPI_UNDEFINED, c->rank, &c->leaders);
  if (mrc != MPI_SUCCESS) return theus__cl_mpi_fail(c, mrc, "MPI_Comm_split (leaders)");
  int leader = c->node_rank == 0;
  MPI_Allreduce(&leader, &c->nnodes, 1, MPI_INT, MPI_SUM, c->world);
  return 0;
}

int theus_cluster_init(int *argc, char ***argv, theus_cluster **out) {
  theus_cluster *c = *out = calloc(1, sizeof *c);
  if (!c) return THEUS_ENOMEM;
  c->world = c->node = c->leaders = MPI_COMM_NULL;
  c->win = MPI_WIN_NULL;
  int inited = 0, provided = 0;
  MPI_Initialized(&inited);
  if (!inited) {
    if (MPI_Init_thread(argc, argv, MPI_THREAD_SERIALIZED, &provided) != MPI_SUCCESS)
      return theus__cl_err(c, THEUS_ESYS, "MPI_Init_thread failed: run under mpirun or srun");
    c->own_mpi = true;
  } else {
    MPI_Query_thread(&provided);
  }
  if (provided < MPI_THREAD_SERIALIZED)
    return theus__cl_err(c, THEUS_EINVAL, "MPI gives thread level %d; the cluster needs MPI_THREAD_SERIALIZED",
                         provided);
  MPI_Comm_dup(MPI_COMM_WORLD, &c->world);
  /* errors come back as codes, so they reach the message */
  MPI_Comm_set_errhandler(c->world, MPI_ERRORS_RETURN);
  MPI_Comm_rank(c->world, &c->rank);
  MPI_Comm_size(c->world, &c->size);
  c->hosts = calloc((size_t)c->size, CL_HOST);
  c->held = json_object();
  c->slices_by_rank = calloc((size_t)c->size, sizeof *c->slices_by_rank);
  c->calls_by_rank = calloc((size_t)c->size, sizeof *c->calls_by_rank);
  const char *claim = getenv("THEUS_CLUSTER_CLAIM");
  c->claim = claim && !strcmp(claim, "static") ? THEUS_CLUSTER_STATIC : THEUS_CLUSTER_DYNAMIC;
  if (!c->hosts || !c->held || !c->slices_by_rank || !c->calls_by_rank)
    return theus__cl_err(c, THEUS_ENOMEM, "out of memory for %d ranks", c->size);
  char me[CL_HOST] = "";
  int n = 0;
  char name[MPI_MAX_PROCESSOR_NAME];
  MPI_Get_processor_name(name, &n);
  snprintf(me, sizeof me, "%.*s", n, name);
  int mrc = MPI_Allgather(me, CL_HOST, MPI_CHAR, c->hosts, CL_HOST, MPI_CHAR, c->world);
  if (mrc != MPI_SUCCESS) return theus__cl_mpi_fail(c, mrc, "MPI_Allgather of host names");
  return find_nodes(c);
}

void theus_cluster_finalize(theus_cluster *c) {
  if (!c) return;
  if (c->win != MPI_WIN_NULL) {
    MPI_Win_unlock_all(c->win);
    MPI_Win_free(&c->win);
  }
  if (c->leaders != MPI_COMM_NULL) MPI_Comm_free(&c->leaders);
  if (c->node != MPI_COMM_NULL) MPI_Comm_free(&c->node);
  if (c->world != MPI_COMM_NULL) MPI_Comm_free(&c->world);
  if (c->own_mpi) MPI_Finalize();
  json_decref(c->shipped);
  json_decref(c->held);
  free(c->slices_by_rank);
  free(c->calls_by_rank);
  free(c->hosts);
  free(c);
}

int theus_cluster_rank(const theus_cluster *c) { return c->rank; }
int theus_cluster_size(const theus_cluster *c) { return c->size; }
int theus_cluster_nodes(const theus_cluster *c) { return c->nnodes; }
int theus_cluster_local_ranks(const theus_cluster *c) { return c->local_ranks; }
const char *theus_cluster_errmsg(const theus_cluster *c) { return c->msg; }

const char *theus_cluster_host(const theus_cluster *c, int rank) {
  return c->hosts && rank >= 0 && rank < c->size ? c->hosts + (size_t)rank * CL_HOST : "?";
}

/* The engine's pool size (a pool-less engine runs a slice at a time: 1). */
static int engine_workers(theus_engine *e) {
  json_t *st = theus_engine_stats(e);
  json_int_t w = json_integer_value(json_object_get(json_object_get(st, "pool"), "workers"));
  json_decref(st);
  return w > 0 ? (int)w : 1;
}

/* Collective: rank 0's slice counter for dynamic claims, one int64 in a
 * window every rank keeps a passive-target epoch on (lock_all) until
 * finalize. Without one-sided MPI on some rank, no rank keeps a window and
 * maps stay static. */
static void open_counter(theus_cluster *c) {
  int64_t *base = NULL;
  MPI_Aint bytes = c->rank == 0 ? (MPI_Aint)sizeof(int64_t) : 0;
  int ok = MPI_Win_allocate(bytes, sizeof(int64_t), MPI_INFO_NULL, c->world, &base, &c->win) == MPI_SUCCESS;
  if (ok && c->rank == 0) *base = 0;
  if (ok) MPI_Win_set_errhandler(c->win, MPI_ERRORS_RETURN);
  if (ok) ok = MPI_Win_lock_all(MPI_MODE_NOCHECK, c->win) == MPI_SUCCESS;
  int all = 0;
  MPI_Allreduce(&ok, &all, 1, MPI_INT, MPI_MIN, c->world);
  if (!all && ok) { /* another rank failed: undo ours together (only those with a window call it) */
    MPI_Win_unlock_all(c->win);
  }
  if (!all) c->win = MPI_WIN_NULL; /* a half-made window is left to MPI_Finalize */
}

int theus_cluster_attach(theus_cluster *c, theus_engine *e, int status, const char *msg) {
  struct {
    int status, workers;
  } mine = {status, !status && e ? engine_workers(e) : 0}, *all = calloc((size_t)c->size, sizeof *all);
  char text[CL_MSG] = "", *texts = c->rank == 0 ? calloc((size_t)c->size, CL_MSG) : NULL;
  snprintf(text, sizeof text, "%s", msg ? msg : "");
  int mrc = all && (c->rank || texts) ? MPI_Allgather(&mine, 2, MPI_INT, all, 2, MPI_INT, c->world) : MPI_ERR_NO_MEM;
  if (mrc == MPI_SUCCESS) mrc = MPI_Gather(text, CL_MSG, MPI_CHAR, texts, CL_MSG, MPI_CHAR, 0, c->world);
  int rc = mrc == MPI_SUCCESS ? 0 : theus__cl_mpi_fail(c, mrc, "attach");
  c->total_workers = 0;
  c->workers = mine.workers;
  for (int r = 0; !rc && r < c->size; r++) {
    c->total_workers += all[r].workers;
    if (!all[r].status) continue;
    rc = all[r].status;
    if (c->rank == 0 && r == 0) theus__cl_err(c, rc, "%s", texts);
    else if (c->rank == 0)
      theus__cl_err(c, rc, "rank %d (host %s): %s", r, theus_cluster_host(c, r), texts + (size_t)r * CL_MSG);
  }
  free(all);
  free(texts);
  c->e = rc ? NULL : e;
  theus__cl_forget(c); /* a new engine holds nothing yet (and its handles may repeat the last one's) */
  if (!rc && c->win == MPI_WIN_NULL && c->size > 1) open_counter(c);
  return rc;
}

static int map_hook(theus_engine *e, const char *process, const char *key, uint32_t slices, const char *reducer,
                    const json_t *args, json_t **result, char *msg, size_t msglen, void *ud) {
  theus_cluster *c = ud;
  (void)e;
  int rc = theus_cluster_map(c, process, key, slices, reducer, args, result);
  if (rc) snprintf(msg, msglen, "%s", c->msg);
  return rc;
}

int theus_cluster_run(theus_cluster *c, theus_pipeline *p) {
  if (!c->e) return theus__cl_err(c, THEUS_EINVAL, "theus_cluster_run: no engine attached (theus_cluster_attach)");
  if (c->rank != 0) return theus_cluster_serve(c);
  theus_pipeline_on_map(p, map_hook, c);
  theus_pipeline_on_parallel(p, &theus__cl_parallel_ops, c);
  theus_pipeline_on_run(p, &theus__cl_run_ops, c);
  c->placed = 0;
  int rc = theus_pipeline_run(p, c->e);
  theus_pipeline_on_map(p, NULL, NULL);
  theus_pipeline_on_parallel(p, NULL, NULL);
  theus_pipeline_on_run(p, NULL, NULL);
  theus__cl_group_end(c);
  int src = theus_cluster_stop(c, rc);
  return rc ? rc : src;
}

int theus_cluster_set_claim(theus_cluster *c, theus_cluster_claim claim) {
  if (c->rank != 0 || (claim != THEUS_CLUSTER_DYNAMIC && claim != THEUS_CLUSTER_STATIC))
    return theus__cl_err(c, THEUS_EINVAL, "theus_cluster_set_claim: %s",
                         c->rank ? "rank 0 decides how maps spread" : "claim is neither dynamic nor static");
  c->claim = claim;
  return 0;
}

static json_t *by_rank(const theus_cluster *c, const uint64_t *v) {
  json_t *a = json_array();
  for (int r = 0; a && r < c->size; r++) json_array_append_new(a, json_integer((json_int_t)v[r]));
  return a;
}

json_t *theus_cluster_stats(const theus_cluster *c) {
  int dynamic = c->claim == THEUS_CLUSTER_DYNAMIC && c->win != MPI_WIN_NULL;
  return json_pack("{s:i, s:i, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:s, s:I, s:I, s:o, s:I, s:I, s:I, s:o}", "ranks",
                   c->size, "nodes", c->nnodes, "bytes_shipped", (json_int_t)c->bytes_shipped, "arrays_shipped",
                   (json_int_t)c->arrays_shipped, "bytes_node_copied", (json_int_t)c->bytes_node_copied, "syncs",
                   (json_int_t)c->syncs, "maps", (json_int_t)c->maps, "maps_dynamic", (json_int_t)c->maps_dynamic,
                   "claims", (json_int_t)c->claims, "claim", dynamic ? "dynamic" : "static", "slices_local",
                   (json_int_t)c->slices_local, "slices_remote", (json_int_t)c->slices_remote, "slices_by_rank",
                   by_rank(c, c->slices_by_rank), "calls_local", (json_int_t)c->calls_local, "calls_remote",
                   (json_int_t)c->calls_remote, "calls_rerun", (json_int_t)c->calls_rerun, "calls_by_rank",
                   by_rank(c, c->calls_by_rank));
}
