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

/* The heavy keys a map of process `name` over `key` reads: key, and every
 * heavy.X input its contract names exactly (a pattern ships only key). */
static json_t *needed_keys(theus_engine *e, const char *name, const char *key) {
  json_t *keys = json_pack("[s]", key);
  const theus_contract *ct = theus_engine_contract(e, name);
  for (size_t i = 0; keys && ct && ct->inputs && ct->inputs[i]; i++) {
    const char *in = ct->inputs[i];
    if (!strncmp(in, "heavy.", 6) && !strchr(in, '*') && strcmp(in + 6, key))
      json_array_append_new(keys, json_string(in + 6));
  }
  return keys;
}

/* One rank's block of a map command: {"rc": 0, "items": [...]} or
 * {"rc": code, "msg": "..."}. */
static json_t *run_block(theus_cluster *c, const json_t *cmd, int sync_rc) {
  uint32_t n = (uint32_t)json_integer_value(json_object_get(cmd, "slices")), first, count;
  block_of(n, c->size, c->rank, &first, &count);
  const json_t *args = json_object_get(cmd, "args");
  json_t *items = NULL;
  int rc = sync_rc;
  if (!rc && !count) items = json_array();
  else if (!rc && (rc = theus_engine_map_part(c->e, json_string_value(json_object_get(cmd, "process")),
                                              json_string_value(json_object_get(cmd, "key")), n, first, count,
                                              json_is_object(args) ? args : NULL, &items)))
    theus__cl_err(c, rc, "%s", theus_engine_errmsg(c->e));
  if (rc) return json_pack("{s:i, s:s}", "rc", rc, "msg", c->msg);
  return json_pack("{s:i, s:o}", "rc", 0, "items", items);
}

/* Gathers every rank's reply at rank 0 (*all: an array by rank there). */
static int gather(theus_cluster *c, const json_t *mine, json_t **all) {
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

/* Rank 0: the slice values of every rank in slice order, or the first
 * failure (rank 0's own first, then by rank) naming the rank and host. */
static int collect(theus_cluster *c, json_t *replies, json_t *values) {
  for (int r = 0; r < c->size; r++) {
    const json_t *rep = json_array_get(replies, (size_t)r);
    int rc = (int)json_integer_value(json_object_get(rep, "rc"));
    if (rc) {
      json_object_clear(c->held); /* a rank that failed may hold less: ship everything again */
      json_decref(c->shipped);
      c->shipped = NULL;
      const char *msg = json_string_value(json_object_get(rep, "msg"));
      if (r == 0) return theus__cl_err(c, rc, "%s", msg ? msg : "");
      return theus__cl_err(c, rc, "rank %d (host %s): %s", r, theus_cluster_host(c, r), msg ? msg : "");
    }
    json_array_extend(values, json_object_get(rep, "items"));
  }
  return 0;
}

/* The waiting text rank 0 shows while other ranks compute. */
static void waiting_on_ranks(theus_cluster *c, const char *name) {
  char text[CL_MSG];
  int at = snprintf(text, sizeof text, "waiting for the map '%s' on", name);
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
                    json_t **replies) {
  json_t *keys = needed_keys(c->e, name, key), *sync = NULL;
  int rc = keys ? theus__cl_sync_build(c, keys, &sync) : THEUS_ENOMEM;
  json_decref(keys);
  if (rc) return rc;
  json_t *cmd = json_pack("{s:s, s:o, s:s, s:s, s:I, s:O}", "op", "map", "sync", sync, "process", name, "key", key,
                          "slices", (json_int_t)n, "args", args ? (json_t *)args : json_null());
  if (!cmd) return theus__cl_err(c, THEUS_ENOMEM, "rank 0: out of memory for a command");
  if ((rc = theus__cl_bcast_json(c, c->world, &cmd))) {
    json_decref(cmd);
    return rc;
  }
  int src = theus__cl_sync_apply(c, json_object_get(cmd, "sync"));
  json_t *mine = run_block(c, cmd, src);
  json_decref(cmd);
  waiting_on_ranks(c, name);
  rc = mine ? gather(c, mine, replies) : theus__cl_err(c, THEUS_ENOMEM, "rank 0: out of memory");
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
  json_t *replies = NULL, *values = json_array();
  int rc = values ? dispatch(c, name, key, n, args, &replies) : THEUS_ENOMEM;
  if (!rc) rc = collect(c, replies, values);
  if (!rc && (rc = theus_engine_reduce(c->e, reducer, values, result)))
    theus__cl_err(c, rc, "map '%s': %s", name, theus_engine_errmsg(c->e));
  uint32_t first, count;
  block_of(n, c->size, 0, &first, &count);
  c->maps++;
  c->slices_local += count;
  c->slices_remote += n - count;
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
    if (op && !strcmp(op, "map")) {
      json_t *mine = run_block(c, cmd, theus__cl_sync_apply(c, json_object_get(cmd, "sync")));
      rc = mine ? gather(c, mine, NULL) : THEUS_ENOMEM;
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
