/* theus-c — maps spread over ranks, and the executors' loop. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster_internal.h"

/* Rank r's static block of n slices: [n*r/size, n*(r+1)/size). */
static void block_of(uint32_t n, int size, int r, uint32_t *first, uint32_t *count) {
  uint64_t lo = (uint64_t)n * (uint64_t)r / (uint64_t)size, hi = (uint64_t)n * (uint64_t)(r + 1) / (uint64_t)size;
  *first = (uint32_t)lo;
  *count = (uint32_t)(hi - lo);
}

int theus__cl_add_keys(theus_engine *e, const char *name, json_t *keys) {
  const theus_contract *ct = theus_engine_contract(e, name);
  for (size_t i = 0; ct && ct->inputs && ct->inputs[i]; i++) {
    const char *in = ct->inputs[i];
    size_t k, held = 0;
    json_t *v;
    if (strncmp(in, "heavy.", 6) || strchr(in, '*')) continue;
    json_array_foreach(keys, k, v) held |= !strcmp(json_string_value(v), in + 6);
    if (!held && json_array_append_new(keys, json_string(in + 6))) return THEUS_ENOMEM;
  }
  return 0;
}

/* Runs slices [first, first + count) of the command's map on this rank's
 * engine and appends [first, [values]] to blocks. */
static int run_part(theus_cluster *c, const json_t *cmd, uint32_t n, uint32_t first, uint32_t count, json_t *blocks) {
  const json_t *args = json_object_get(cmd, "args");
  json_t *items = NULL;
  int rc = theus_engine_map_part(c->e, json_string_value(json_object_get(cmd, "process")),
                                 json_string_value(json_object_get(cmd, "key")), n, first, count,
                                 json_is_object(args) ? args : NULL, &items);
  if (rc) return theus__cl_err(c, rc, "%s", theus_engine_errmsg(c->e));
  if (json_array_append_new(blocks, json_pack("[I, o]", (json_int_t)first, items)))
    return theus__cl_err(c, THEUS_ENOMEM, "rank %d: out of memory for slice values", c->rank);
  return 0;
}

/* Claims `want` more slices from rank 0's counter: *first is the first of
 * them (n or more: none is left). The counter is the only shared thing: one
 * atomic add, which needs no work from rank 0 where MPI does it in hardware
 * or in shared memory. */
static int claim(theus_cluster *c, uint32_t want, uint32_t n, uint32_t *first) {
  int64_t add = want, old = 0;
  int mrc = MPI_Fetch_and_op(&add, &old, MPI_INT64_T, 0, 0, MPI_SUM, c->win);
  if (mrc == MPI_SUCCESS) mrc = MPI_Win_flush(0, c->win);
  if (mrc != MPI_SUCCESS) return theus__cl_mpi_fail(c, mrc, "claiming map slices (MPI_Fetch_and_op)");
  *first = old < (int64_t)n ? (uint32_t)old : n;
  return 0;
}

/* Rank 0, before a dynamic map's command goes out: the counter back to 0
 * (every claim of the previous map was flushed before its replies came). */
static int reset_counter(theus_cluster *c) {
  int64_t zero = 0, old = 0;
  int mrc = MPI_Fetch_and_op(&zero, &old, MPI_INT64_T, 0, 0, MPI_REPLACE, c->win);
  if (mrc == MPI_SUCCESS) mrc = MPI_Win_flush(0, c->win);
  return mrc == MPI_SUCCESS ? 0 : theus__cl_mpi_fail(c, mrc, "resetting the slice counter");
}

/* This rank's share of a map command: its static block, or (dynamic) the
 * blocks it claims, one slice per worker at a time, until none is left; a
 * failing block ends its claims. {"rc": 0, "blocks": [[first, [values]],
 * ...], "claims": k} or {"rc": code, "msg": "..."}. */
static json_t *run_share(theus_cluster *c, const json_t *cmd, int sync_rc) {
  uint32_t n = (uint32_t)json_integer_value(json_object_get(cmd, "slices")), first = 0, count = 0;
  json_t *blocks = json_array();
  int rc = blocks ? sync_rc : theus__cl_err(c, THEUS_ENOMEM, "rank %d: out of memory", c->rank);
  json_int_t claims = 0;
  if (!rc && !json_is_true(json_object_get(cmd, "dynamic"))) {
    block_of(n, c->size, c->rank, &first, &count);
    if (count) rc = run_part(c, cmd, n, first, count, blocks);
  } else {
    uint32_t want = c->workers > 0 ? (uint32_t)c->workers : 1;
    while (!rc && !(rc = claim(c, want, n, &first)) && first < n) {
      claims++;
      rc = run_part(c, cmd, n, first, n - first < want ? n - first : want, blocks);
    }
  }
  if (rc) {
    json_decref(blocks);
    return json_pack("{s:i, s:s}", "rc", rc, "msg", c->msg);
  }
  return json_pack("{s:i, s:o, s:I}", "rc", 0, "blocks", blocks, "claims", claims);
}

int theus__cl_gather(theus_cluster *c, const json_t *mine, json_t **all) {
  char *text = json_dumps(mine, JSON_COMPACT);
  int len = text ? (int)strlen(text) : 0, *lens = NULL, *displs = NULL;
  char *buf = NULL;
  MPI_Request r;
  if (c->rank == 0 && (!(lens = calloc((size_t)c->size, sizeof *lens)) || !(displs = calloc((size_t)c->size, sizeof *displs)))) {
    free(lens);
    free(text);
    return theus__cl_err(c, THEUS_ENOMEM, "rank 0: out of memory gathering replies");
  }
  int mrc = MPI_Igather(&len, 1, MPI_INT, lens, 1, MPI_INT, 0, c->world, &r);
  if (mrc == MPI_SUCCESS) mrc = theus__cl_wait(&r);
  size_t total = 0;
  for (int i = 0; c->rank == 0 && i < c->size; i++) {
    displs[i] = (int)total;
    total += (size_t)lens[i];
  }
  if (mrc == MPI_SUCCESS && c->rank == 0 && !(buf = malloc(total + 1))) mrc = MPI_ERR_NO_MEM;
  if (mrc == MPI_SUCCESS) mrc = MPI_Igatherv(text, len, MPI_CHAR, buf, lens, displs, MPI_CHAR, 0, c->world, &r);
  if (mrc == MPI_SUCCESS) mrc = theus__cl_wait(&r);
  int rc = mrc == MPI_SUCCESS ? 0 : theus__cl_err(c, THEUS_ESYS, "rank %d: gathering the slice results failed", c->rank);
  if (!rc && c->rank == 0) {
    *all = json_array();
    for (int i = 0; i < c->size; i++) {
      json_t *v = json_loadb(buf + displs[i], (size_t)lens[i], 0, NULL);
      json_array_append_new(*all, v ? v : json_pack("{s:i, s:s}", "rc", THEUS_ESYS, "msg", "its reply does not parse"));
    }
  }
  free(buf);
  free(displs);
  free(lens);
  free(text);
  return rc;
}

/* Rank 0: the first failure in the replies (rank 0's own first, then by
 * rank), naming the rank and host; 0 if every rank succeeded. */
int theus__cl_first_failure(theus_cluster *c, const json_t *replies) {
  for (int r = 0; r < c->size; r++) {
    const json_t *rep = json_array_get(replies, (size_t)r);
    int rc = (int)json_integer_value(json_object_get(rep, "rc"));
    if (!rc) continue;
    theus__cl_forget(c); /* a rank that failed may hold less: ship everything again */
    const char *msg = json_string_value(json_object_get(rep, "msg"));
    if (r == 0) return theus__cl_err(c, rc, "%s", msg ? msg : "");
    return theus__cl_err(c, rc, "rank %d (host %s): %s", r, theus_cluster_host(c, r), msg ? msg : "");
  }
  return 0;
}

/* Rank 0: every rank's slice values put back in slice order (*values: n
 * entries), or the first failure. Counts the slices each rank ran. */
static int collect(theus_cluster *c, const json_t *replies, uint32_t n, json_t **values) {
  int rc = theus__cl_first_failure(c, replies);
  json_t *v = rc ? NULL : json_array();
  for (uint32_t i = 0; v && i < n; i++) json_array_append_new(v, json_null());
  uint32_t placed = 0;
  for (int r = 0; v && r < c->size; r++) {
    const json_t *rep = json_array_get(replies, (size_t)r), *blk;
    size_t b;
    c->claims += (uint64_t)json_integer_value(json_object_get(rep, "claims"));
    json_array_foreach(json_object_get(rep, "blocks"), b, blk) {
      uint32_t first = (uint32_t)json_integer_value(json_array_get(blk, 0)), count = 0;
      const json_t *items = json_array_get(blk, 1);
      for (size_t j = 0; j < json_array_size(items) && first + j < n; j++, count++)
        json_array_set(v, first + j, json_array_get(items, j));
      placed += count;
      c->slices_by_rank[r] += count;
      if (r) c->slices_remote += count;
      else c->slices_local += count;
    }
  }
  if (!rc && !v) rc = theus__cl_err(c, THEUS_ENOMEM, "rank 0: out of memory for slice values");
  if (!rc && placed != n)
    rc = theus__cl_err(c, THEUS_ESYS, "rank 0: the ranks returned %u of the %u slices", placed, n);
  if (rc) json_decref(v);
  *values = rc ? NULL : v;
  return rc;
}

void theus__cl_waiting_on_ranks(theus_cluster *c, const char *what) {
  char text[CL_MSG];
  int at = snprintf(text, sizeof text, "waiting for %s on", what);
  for (int r = 1; r < c->size && at > 0 && (size_t)at < sizeof text; r++)
    at += snprintf(text + at, sizeof text - (size_t)at, "%s rank %d (host %s)", r > 1 ? "," : "", r,
                   theus_cluster_host(c, r));
  theus__cl_set_waiting(c, text);
}

/* The slices a map gets: n = min(slices, rows), as theus_engine_map cuts;
 * 0 if the key or the process is missing (the local map then says why). */
static uint32_t map_slices(theus_cluster *c, const char *name, const char *key, uint32_t slices,
                           const char *reducer) {
  theus_snapshot *snap;
  theus_array_info info;
  if (!theus_engine_contract(c->e, name) || !reducer || !theus_engine_has_reducer(c->e, reducer) || !key)
    return 0;
  if (theus_engine_snapshot(c->e, &snap)) return 0;
  int rc = theus_snapshot_heavy(snap, key, &info);
  theus_snapshot_release(snap);
  if (rc || !info.shape[0]) return 0;
  if (!slices) slices = 2 * (uint32_t)(c->total_workers > 0 ? c->total_workers : 1);
  return info.shape[0] < slices ? (uint32_t)info.shape[0] : slices;
}

static int dispatch(theus_cluster *c, const char *name, const char *key, uint32_t n, const json_t *args,
                    int dynamic, json_t **replies) {
  json_t *keys = json_pack("[s]", key), *sync = NULL;
  int rc = keys ? theus__cl_add_keys(c->e, name, keys) : THEUS_ENOMEM;
  if (!rc) rc = theus__cl_sync_build(c, keys, &sync);
  json_decref(keys);
  if (!rc && dynamic) rc = reset_counter(c);
  if (rc) {
    json_decref(sync);
    return rc;
  }
  json_t *cmd = json_pack("{s:s, s:o, s:s, s:s, s:I, s:b, s:O}", "op", "map", "sync", sync, "process", name, "key",
                          key, "slices", (json_int_t)n, "dynamic", dynamic, "args",
                          args ? (json_t *)args : json_null());
  if (!cmd) return theus__cl_err(c, THEUS_ENOMEM, "rank 0: out of memory for a command");
  if ((rc = theus__cl_bcast_json(c, c->world, &cmd))) {
    json_decref(cmd);
    return rc;
  }
  int src = theus__cl_sync_apply(c, json_object_get(cmd, "sync"));
  json_t *mine = run_share(c, cmd, src);
  json_decref(cmd);
  char what[CL_MSG];
  snprintf(what, sizeof what, "the map '%s'", name);
  theus__cl_waiting_on_ranks(c, what);
  rc = mine ? theus__cl_gather(c, mine, replies) : theus__cl_err(c, THEUS_ENOMEM, "rank 0: out of memory");
  theus__cl_set_waiting(c, "");
  json_decref(mine);
  return rc;
}

int theus_cluster_map(theus_cluster *c, const char *name, const char *key, uint32_t slices, const char *reducer,
                      const json_t *args, json_t **result) {
  *result = NULL;
  if (c->rank != 0 || !c->e)
    return theus__cl_err(c, THEUS_EINVAL, "theus_cluster_map: %s",
                         c->e ? "rank 0 drives the maps; other ranks call theus_cluster_serve" : "no engine attached");
  uint32_t n = map_slices(c, name, key, slices, reducer);
  if (!n) { /* nothing to spread: the engine gives the usual result or message */
    int rc = theus_engine_map(c->e, name, key, slices ? slices : 1, reducer, args, result);
    return rc ? theus__cl_err(c, rc, "%s", theus_engine_errmsg(c->e)) : 0;
  }
  int dynamic = c->claim == THEUS_CLUSTER_DYNAMIC && c->win != MPI_WIN_NULL;
  json_t *replies = NULL, *values = NULL;
  int rc = dispatch(c, name, key, n, args, dynamic, &replies);
  if (!rc) rc = collect(c, replies, n, &values);
  if (!rc && (rc = theus_engine_reduce(c->e, reducer, values, result)))
    theus__cl_err(c, rc, "map '%s': %s", name, theus_engine_errmsg(c->e));
  c->maps++;
  c->maps_dynamic += (uint64_t)dynamic;
  json_decref(replies);
  json_decref(values);
  return rc;
}

int theus_cluster_serve(theus_cluster *c) {
  if (c->rank == 0 || !c->e)
    return theus__cl_err(c, THEUS_EINVAL, "theus_cluster_serve: %s",
                         c->e ? "rank 0 drives; it calls theus_cluster_stop" : "no engine attached");
  for (;;) {
    json_t *cmd = NULL;
    int rc = theus__cl_bcast_json(c, c->world, &cmd);
    if (rc) return rc;
    const char *op = json_string_value(json_object_get(cmd, "op"));
    int map = op && !strcmp(op, "map"), run = op && !strcmp(op, "run");
    if (map || run) {
      int src = theus__cl_sync_apply(c, json_object_get(cmd, "sync"));
      json_t *mine = map ? run_share(c, cmd, src) : theus__cl_run_calls(c, cmd, src);
      rc = mine ? theus__cl_gather(c, mine, NULL) : THEUS_ENOMEM;
      json_decref(mine);
      json_decref(cmd);
      if (rc) return rc;
      continue;
    }
    rc = (int)json_integer_value(json_object_get(cmd, "status"));
    json_decref(cmd);
    return rc;
  }
}

int theus_cluster_stop(theus_cluster *c, int status) {
  if (c->rank != 0) return theus__cl_err(c, THEUS_EINVAL, "theus_cluster_stop: rank 0 only");
  json_t *cmd = json_pack("{s:s, s:i}", "op", "stop", "status", status);
  int rc = cmd ? theus__cl_bcast_json(c, c->world, &cmd) : THEUS_ENOMEM;
  json_decref(cmd);
  return rc;
}
