/* theus-c — parallel and run steps placed on ranks (docs/cluster.md,
 * "Parallel and run steps"): rank 0 sends the members it may move
 * round-robin to the ranks (a run step is a parallel step of one member; the
 * round-robin goes on from step to step), every rank runs its own on rank
 * 0's version and sends back what each would commit, and rank 0 commits them
 * in file order by CAS on that version, running a member again itself when
 * its CAS conflicts. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster_internal.h"

/* Rank 0: the parallel or run step in flight, between start and the last
 * finish. */
typedef struct cl_group {
  size_t started;
  int lone;          /* a run step: kept on rank 0, it runs by theus_engine_execute in finish */
  int *where;        /* the rank running each member */
  theus_job **jobs;  /* the members rank 0 runs */
  json_t *replies;   /* every rank's reply, by rank */
  theus_snapshot *read; /* the state every moved member read */
  int rc;            /* the dispatch failed: every moved member fails with it */
  char msg[CL_MSG];
} cl_group;

/* msg into dst (len bytes), cut to fit. */
static void put_msg(char *dst, size_t len, const char *msg) {
  size_t n = strnlen(msg, len - 1);
  memcpy(dst, msg, n);
  dst[n] = '\0';
}

static int under(const char *path, const char *root) {
  size_t n = strlen(root);
  return !strncmp(path, root, n) && (path[n] == '\0' || path[n] == '.');
}

/* Whether a member may run on another rank: a parallel (pure) process that
 * reads only the domain and heavy arrays it names exactly (they are shipped
 * with the command) and writes only the domain. Everything else (effect and
 * local processes, heavy outputs, heavy.* or live inputs) stays on rank 0. */
static int movable(theus_engine *e, const char *name) {
  const theus_contract *ct = theus_engine_contract(e, name);
  if (!ct || !ct->parallel || ct->semantic != THEUS_PURE) return 0;
  for (size_t i = 0; ct->outputs && ct->outputs[i]; i++)
    if (!under(ct->outputs[i], "domain")) return 0;
  for (size_t i = 0; ct->inputs && ct->inputs[i]; i++) {
    const char *in = ct->inputs[i];
    if (!under(in, "domain") && !(under(in, "heavy") && strlen(in) > 6 && !strchr(in + 6, '*') && !strchr(in + 6, '.')))
      return 0;
  }
  return 1;
}

static void group_free(cl_group *g) {
  if (!g) return;
  for (size_t i = 0; i < g->started; i++) theus_job_release(g->jobs[i]);
  json_decref(g->replies);
  theus_snapshot_release(g->read);
  free(g->where);
  free(g->jobs);
  free(g);
}

/* Rank 0: the command for the moved members, with the sync they read. */
static int build_command(theus_cluster *c, const theus_pipeline_call *calls, size_t n, const int *where,
                         json_t **out) {
  json_t *keys = json_array(), *list = json_array(), *sync = NULL;
  int rc = keys && list ? 0 : THEUS_ENOMEM;
  for (size_t i = 0; !rc && i < n; i++) {
    if (!where[i]) continue;
    rc = theus__cl_add_keys(c->e, calls[i].process, keys);
    if (!rc && json_array_append_new(list, json_pack("{s:I, s:i, s:s, s:O}", "i", (json_int_t)i, "rank", where[i],
                                                     "process", calls[i].process, "args",
                                                     calls[i].args ? (json_t *)calls[i].args : json_null())))
      rc = THEUS_ENOMEM;
  }
  if (!rc) rc = theus__cl_sync_build(c, keys, &sync);
  json_decref(keys);
  *out = rc ? NULL : json_pack("{s:s, s:o, s:o}", "op", "run", "sync", sync, "calls", list);
  if (rc) json_decref(list);
  return rc ? rc : *out ? 0 : THEUS_ENOMEM;
}

/* Rank 0: a failure every moved member reports (the first one kept). */
static void group_fail(cl_group *g, int rc, const char *msg) {
  if (g->rc || !rc) return;
  g->rc = rc;
  put_msg(g->msg, sizeof g->msg, msg);
}

/* Rank 0: places the members (where[i]) and sends the moved ones with
 * their sync, then ships what they read. Returns 1 if the command went out
 * (the other ranks then answer it: rank 0 must gather), 0 if every member
 * runs here. */
static int send_members(theus_cluster *c, cl_group *g, const theus_pipeline_call *calls, size_t n) {
  int any = 0;
  for (size_t i = 0; i < n && c->size > 1; i++) {
    if (!movable(c->e, calls[i].process)) continue;
    g->where[i] = (int)(c->placed++ % (uint64_t)c->size); /* the k-th movable call of the run: rank k mod size */
    any |= g->where[i];
  }
  json_t *cmd = NULL;
  /* the state the sync carries (rank 0 alone commits, and not meanwhile) */
  if (any && (theus_engine_snapshot(c->e, &g->read) || build_command(c, calls, n, g->where, &cmd)))
    any = 0; /* cannot spread it: run it all here */
  int rc = any ? theus__cl_bcast_json(c, c->world, &cmd) : 0;
  if (any && !rc) group_fail(g, theus__cl_sync_apply(c, json_object_get(cmd, "sync")), c->msg);
  group_fail(g, rc, c->msg);
  json_decref(cmd);
  if (!any || rc) memset(g->where, 0, n * sizeof *g->where);
  return any && !rc;
}

/* Rank 0: submits the members it runs itself (a lone run step's waits for
 * finish); returns how many members started (the first it could not submit
 * ends the list). */
static size_t submit_local(theus_engine *e, cl_group *g, theus_pipeline_call *calls, size_t n) {
  for (size_t i = 0; i < n; i++) {
    if (g->where[i] || g->lone) continue;
    if ((calls[i].rc = theus_engine_submit(e, calls[i].process, calls[i].args, &g->jobs[i]))) {
      put_msg(calls[i].msg, sizeof calls[i].msg, theus_engine_errmsg(e));
      return i;
    }
  }
  return n;
}

/* Rank 0: every rank's outcomes, while its own members run in its pool. */
static void gather_outcomes(theus_cluster *c, cl_group *g) {
  json_t *mine = json_pack("{s:i, s:[]}", "rc", 0, "items");
  theus__cl_waiting_on_ranks(c, "the members of a parallel step");
  int rc = mine ? theus__cl_gather(c, mine, &g->replies) : THEUS_ENOMEM;
  theus__cl_set_waiting(c, "");
  json_decref(mine);
  if (!rc) theus__cl_first_failure(c, g->replies); /* a rank that failed: the next sync ships everything */
  group_fail(g, rc, rc == THEUS_ENOMEM ? "rank 0: out of memory" : c->msg);
}

void theus__cl_group_end(theus_cluster *c) {
  group_free(c->group);
  c->group = NULL;
}

static size_t start_group(theus_engine *e, theus_pipeline_call *calls, size_t n, theus_cluster *c, int lone) {
  theus__cl_group_end(c); /* the step before: its jobs outlived its intos */
  cl_group *g = calloc(1, sizeof *g);
  if (g && (!(g->where = calloc(n, sizeof *g->where)) || !(g->jobs = calloc(n, sizeof *g->jobs)))) {
    group_free(g);
    g = NULL;
  }
  if (!g) {
    calls[0].rc = THEUS_ENOMEM;
    snprintf(calls[0].msg, sizeof calls[0].msg, "rank 0: out of memory placing a %s step", lone ? "run" : "parallel");
    return 0;
  }
  g->lone = lone;
  int sent = send_members(c, g, calls, n);
  g->started = submit_local(e, g, calls, n);
  if (sent) gather_outcomes(c, g);
  c->group = g;
  return g->started;
}

static size_t start(theus_engine *e, theus_pipeline_call *calls, size_t n, void *ud) {
  return start_group(e, calls, n, ud, 0);
}

static size_t start_run(theus_engine *e, theus_pipeline_call *calls, size_t n, void *ud) {
  return start_group(e, calls, n, ud, 1);
}

/* Rank 0: the outcome rank r sent for member i, or NULL with the failure in
 * calls[i] (the whole rank failed, or the member did). */
static const json_t *outcome(theus_cluster *c, const cl_group *g, theus_pipeline_call *call, size_t i) {
  int r = g->where[i];
  const json_t *rep = json_array_get(g->replies, (size_t)r), *it, *found = NULL;
  size_t k;
  json_array_foreach(json_object_get(rep, "items"), k, it)
    if ((size_t)json_integer_value(json_object_get(it, "i")) == i) found = it;
  const json_t *failed = json_integer_value(json_object_get(rep, "rc")) ? rep : found;
  int rc = failed ? (int)json_integer_value(json_object_get(failed, "rc")) : THEUS_ESYS;
  if (!rc) return found;
  const char *msg = failed ? json_string_value(json_object_get(failed, "msg")) : "its outcome did not come back";
  call->rc = rc;
  snprintf(call->msg, sizeof call->msg, "rank %d (host %s): %s", r, theus_cluster_host(c, r), msg ? msg : "");
  return NULL;
}

/* Rank 0: commits what member i did on rank where[i], on the version it
 * read; a conflict runs it again here on the newest version, as the engine
 * retries a job whose commit conflicts. */
static void commit_moved(theus_cluster *c, const cl_group *g, theus_pipeline_call *call, size_t i) {
  if (g->rc) {
    call->rc = g->rc;
    put_msg(call->msg, sizeof call->msg, g->msg);
    return;
  }
  const json_t *it = outcome(c, g, call, i);
  if (!it) return;
  const json_t *patch = json_object_get(it, "patch"), *result = json_object_get(it, "result");
  int rc = theus_engine_commit_run(c->e, call->process, call->args, g->read, patch, NULL);
  if (rc == THEUS_ECONFLICT) {
    rc = theus_engine_execute(c->e, call->process, call->args, &call->result);
    c->calls_rerun++;
  } else if (!rc && result && !json_is_null(result)) {
    call->result = json_incref((json_t *)result);
  }
  if ((call->rc = rc)) put_msg(call->msg, sizeof call->msg, theus_engine_errmsg(c->e));
}

static void finish(theus_engine *e, theus_pipeline_call *calls, size_t i, void *ud) {
  theus_cluster *c = ud;
  cl_group *g = c->group;
  int r = g->where[i];
  if (r) {
    commit_moved(c, g, &calls[i], i);
    c->calls_remote++;
  } else if (g->lone) { /* as without the cluster */
    if ((calls[i].rc = theus_engine_execute(e, calls[i].process, calls[i].args, &calls[i].result)))
      put_msg(calls[i].msg, sizeof calls[i].msg, theus_engine_errmsg(e));
    c->calls_local++;
  } else {
    if ((calls[i].rc = theus_job_wait(g->jobs[i], -1, &calls[i].result)))
      put_msg(calls[i].msg, sizeof calls[i].msg, theus_job_errmsg(g->jobs[i]));
    c->calls_local++; /* its job is released with the group, after the pipeline stored its into */
  }
  c->calls_by_rank[r]++;
}

const theus_pipeline_parallel_ops theus__cl_parallel_ops = {start, finish};
const theus_pipeline_parallel_ops theus__cl_run_ops = {start_run, finish};

/* ---- executors ---- */

/* The domain patch of every version committed while a rank runs its
 * members, by version (the commit hook sees each commit's exact patch). */
typedef struct cl_capture {
  pthread_mutex_t m;
  json_t *by_version;
} cl_capture;

static void capture(const json_t *entry, void *ud) {
  cl_capture *cap = ud;
  char v[32];
  snprintf(v, sizeof v, "%lld", (long long)json_integer_value(json_object_get(entry, "version")));
  pthread_mutex_lock(&cap->m);
  json_object_set(cap->by_version, v, json_object_get(entry, "patch"));
  pthread_mutex_unlock(&cap->m);
}

/* Puts the domain back as it was before the members ran (`before`), so that
 * the next sync's patch applies to rank 0's state. */
static int restore(theus_cluster *c, const json_t *before) {
  theus_snapshot *snap;
  int rc = theus_engine_snapshot(c->e, &snap);
  if (rc) return theus__cl_err(c, rc, "%s", theus_engine_errmsg(c->e));
  json_t *back = theus__cl_merge_diff(theus_snapshot_domain(snap), before);
  uint64_t v = theus_snapshot_version(snap);
  theus_snapshot_release(snap);
  rc = !back ? THEUS_ENOMEM : json_object_size(back) ? theus_engine_cas(c->e, v, back, NULL, NULL) : 0;
  json_decref(back);
  return rc ? theus__cl_err(c, rc, "rank %d: cannot restore rank 0's state after a parallel step: %s", c->rank,
                            rc == THEUS_ENOMEM ? "out of memory" : theus_engine_errmsg(c->e))
            : 0;
}

/* Submits every member of mine, then waits for each in order: the same
 * commits, in the same order, as rank 0's engine would make. */
static json_t *run_members(theus_cluster *c, const json_t *mine, cl_capture *cap) {
  size_t n = json_array_size(mine), k;
  theus_job **jobs = calloc(n ? n : 1, sizeof *jobs);
  json_t *items = json_array(), *call;
  if (!jobs || !items) {
    free(jobs);
    json_decref(items);
    return NULL;
  }
  json_array_foreach(mine, k, call) {
    const json_t *args = json_object_get(call, "args");
    int rc = theus_engine_submit(c->e, json_string_value(json_object_get(call, "process")),
                                 json_is_object(args) ? args : NULL, &jobs[k]);
    if (rc) /* its outcome now, with the engine's message */
      json_array_append_new(items, json_pack("{s:O, s:i, s:s}", "i", json_object_get(call, "i"), "rc", rc, "msg",
                                             theus_engine_errmsg(c->e)));
  }
  json_array_foreach(mine, k, call) {
    if (!jobs[k]) continue;
    json_t *result = NULL;
    int rc = theus_job_wait(jobs[k], -1, &result);
    const char *msg = theus_job_errmsg(jobs[k]);
    char v[32];
    snprintf(v, sizeof v, "%llu", (unsigned long long)theus_job_version(jobs[k]));
    pthread_mutex_lock(&cap->m);
    json_t *patch = json_incref(json_object_get(cap->by_version, v));
    pthread_mutex_unlock(&cap->m);
    json_array_append_new(items, json_pack("{s:O, s:i, s:s, s:o?, s:o?}", "i", json_object_get(call, "i"), "rc", rc,
                                           "msg", rc ? msg : "", "patch", rc ? NULL : patch, "result", result));
    if (rc) json_decref(patch);
    theus_job_release(jobs[k]);
  }
  free(jobs);
  return items;
}

/* Runs the members in mine on this rank's state (rank 0's version), then
 * puts the state back: *items gets their outcomes. */
static int run_mine(theus_cluster *c, const json_t *mine, json_t **items) {
  theus_snapshot *snap;
  int rc = theus_engine_snapshot(c->e, &snap);
  if (rc) return theus__cl_err(c, rc, "rank %d: %s", c->rank, theus_engine_errmsg(c->e));
  json_t *before = json_deep_copy(theus_snapshot_domain(snap));
  theus_snapshot_release(snap);
  cl_capture cap = {PTHREAD_MUTEX_INITIALIZER, json_object()};
  if (before && cap.by_version) { /* the executor's engine: the cluster owns its commit hook */
    theus_engine_set_commit_hook(c->e, capture, &cap);
    *items = run_members(c, mine, &cap);
    theus_engine_set_commit_hook(c->e, NULL, NULL);
  }
  json_decref(cap.by_version);
  rc = *items ? restore(c, before)
              : theus__cl_err(c, THEUS_ENOMEM, "rank %d: out of memory running a parallel step", c->rank);
  json_decref(before);
  return rc;
}

json_t *theus__cl_run_calls(theus_cluster *c, const json_t *cmd, int sync_rc) {
  json_t *mine = json_array(), *call, *items = NULL;
  size_t k;
  int rc = sync_rc;
  json_array_foreach(json_object_get(cmd, "calls"), k, call)
    if (mine && json_integer_value(json_object_get(call, "rank")) == c->rank) json_array_append(mine, call);
  if (!rc && !mine) rc = theus__cl_err(c, THEUS_ENOMEM, "rank %d: out of memory running a parallel step", c->rank);
  if (!rc && json_array_size(mine)) rc = run_mine(c, mine, &items);
  json_decref(mine);
  if (rc) {
    json_decref(items);
    return json_pack("{s:i, s:s}", "rc", rc, "msg", c->msg);
  }
  return json_pack("{s:i, s:o}", "rc", 0, "items", items ? items : json_array());
}
