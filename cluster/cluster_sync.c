/* theus-c — syncs: rank 0's state reaching the other ranks, heavy arrays once
 * per node (docs/cluster.md). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "cluster_internal.h"

/* Bytes per broadcast: MPI counts are int, and a chunk bounds the scratch
 * buffer of a rank that could not allocate the array. */
#define SHIP_CHUNK (64u << 20)

json_t *theus__cl_merge_diff(const json_t *from, const json_t *to) {
  json_t *patch = json_object();
  const char *k;
  json_t *v;
  json_object_foreach((json_t *)from, k, v)
    if (patch && !json_object_get(to, k)) json_object_set_new(patch, k, json_null());
  json_object_foreach((json_t *)to, k, v) {
    const json_t *old = json_object_get(from, k);
    if (!patch || (old && json_equal(old, v))) continue;
    json_object_set_new(patch, k,
                        json_is_object(old) && json_is_object(v) ? theus__cl_merge_diff(old, v) : json_deep_copy(v));
  }
  return patch;
}

void theus__cl_forget(theus_cluster *c) {
  json_object_clear(c->held);
  json_decref(c->shipped);
  c->shipped = NULL;
}

/* The domain part of a sync: the whole domain first, a patch afterwards. */
static int sync_domain(theus_cluster *c, const json_t *dom, json_t *sync) {
  json_t *copy = json_deep_copy(dom);
  if (!copy) return THEUS_ENOMEM;
  if (!c->shipped) json_object_set(sync, "domain", copy);
  else json_object_set_new(sync, "patch", theus__cl_merge_diff(c->shipped, dom));
  json_decref(c->shipped);
  c->shipped = copy;
  return 0;
}

int theus__cl_sync_build(theus_cluster *c, const json_t *keys, json_t **sync) {
  theus_snapshot *snap;
  int rc = theus_engine_snapshot(c->e, &snap);
  if (rc) return theus__cl_err(c, rc, "rank 0: %s", theus_engine_errmsg(c->e));
  json_t *s = json_pack("{s:I, s:[]}", "version", (json_int_t)theus_snapshot_version(snap), "heavy");
  rc = s ? sync_domain(c, theus_snapshot_domain(snap), s) : THEUS_ENOMEM;
  size_t i;
  json_t *k;
  json_array_foreach(keys, i, k) {
    theus_array_info info;
    const char *key = json_string_value(k);
    if (rc || theus_snapshot_heavy(snap, key, &info)) continue; /* absent: the map itself says so */
    json_t *id = json_integer((json_int_t)info.handle);
    if (json_equal(json_object_get(c->held, key), id)) {
      json_decref(id);
      continue;
    }
    json_t *shape = json_array();
    for (unsigned d = 0; d < info.ndim; d++) json_array_append_new(shape, json_integer((json_int_t)info.shape[d]));
    const char *dt = info.dtype ? theus_dtype_name(info.dtype) : "u8"; /* a bytes array travels as u8 */
    json_array_append_new(json_object_get(s, "heavy"),
                          json_pack("{s:s, s:O, s:s, s:o, s:I}", "key", key, "id", id, "dtype", dt, "shape",
                                    info.dtype ? shape : json_pack("[I]", (json_int_t)info.nbytes), "nbytes",
                                    (json_int_t)info.nbytes));
    if (!info.dtype) json_decref(shape);
    json_object_set_new(c->held, key, id);
  }
  theus_snapshot_release(snap);
  if (rc) json_decref(s);
  *sync = rc ? NULL : s;
  return rc ? theus__cl_err(c, rc, "rank 0: cannot build a sync: %s", theus_strerror(rc)) : 0;
}

/* Broadcasts nbytes at data from rank 0: over the leaders (the network, once
 * per node), then inside each node. data NULL: receive into scratch. */
static int ship(theus_cluster *c, void *data, uint64_t nbytes) {
  char *scratch = NULL;
  if (!data && !(data = scratch = malloc(nbytes < SHIP_CHUNK ? nbytes + 1 : SHIP_CHUNK))) return MPI_ERR_NO_MEM;
  int mrc = MPI_SUCCESS;
  for (uint64_t off = 0; mrc == MPI_SUCCESS && off < nbytes; off += SHIP_CHUNK) {
    int n = (int)(nbytes - off < SHIP_CHUNK ? nbytes - off : SHIP_CHUNK);
    char *at = scratch ? scratch : (char *)data + off;
    if (c->leaders != MPI_COMM_NULL && c->nnodes > 1) mrc = MPI_Bcast(at, n, MPI_BYTE, 0, c->leaders);
    if (mrc == MPI_SUCCESS && c->node_size > 1) mrc = MPI_Bcast(at, n, MPI_BYTE, 0, c->node);
  }
  free(scratch);
  if (c->rank == 0) {
    c->bytes_shipped += nbytes * (uint64_t)(c->nnodes - 1);
    c->arrays_shipped += (uint64_t)(c->nnodes - 1);
    c->bytes_node_copied += nbytes * (uint64_t)(c->size - c->nnodes);
  }
  return mrc;
}

/* Rank 0's side of one array: the bytes of its current binding. */
static int ship_from_root(theus_cluster *c, const char *key, uint64_t nbytes) {
  theus_snapshot *snap = NULL;
  theus_array_info info;
  int rc = theus_engine_snapshot(c->e, &snap);
  if (rc) snap = NULL;
  else if ((rc = theus_snapshot_heavy(snap, key, &info)) == 0 && info.nbytes != nbytes) rc = THEUS_ECONFLICT;
  /* rank 0 is the only writer of its state between build and apply; still, never send other bytes */
  int mrc = ship(c, rc ? NULL : (void *)info.data, nbytes);
  theus_snapshot_release(snap);
  if (rc) return theus__cl_err(c, rc, "rank 0: heavy.%s changed while it was shipped", key);
  return mrc == MPI_SUCCESS ? 0 : theus__cl_err(c, THEUS_ESYS, "rank 0: shipping heavy.%s failed", key);
}

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23 /* Linux 5.14 */
#endif

/* Faults the whole pages of a fresh draft in with one call before MPI writes
 * them (a fault per page, taken inside the receive, costs far more: tens of
 * microseconds each in some VMs). Pages only partly the draft's are left to
 * fault as usual. Best effort: older kernels refuse it, harmlessly. */
static void prefault(void *data, uint64_t nbytes) {
  uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
  uintptr_t lo = ((uintptr_t)data + page - 1) & ~(page - 1), hi = ((uintptr_t)data + nbytes) & ~(page - 1);
  if (hi > lo) madvise((void *)lo, hi - lo, MADV_POPULATE_WRITE);
}

/* Another rank's side: receive into a draft of its own arena. */
static int ship_to_rank(theus_cluster *c, const json_t *h, json_t *published, int rc) {
  const char *key = json_string_value(json_object_get(h, "key"));
  uint64_t nbytes = (uint64_t)json_integer_value(json_object_get(h, "nbytes"));
  uint64_t shape[THEUS_MAX_DIMS];
  const json_t *sh = json_object_get(h, "shape");
  unsigned ndim = (unsigned)json_array_size(sh);
  for (unsigned d = 0; d < ndim && d < THEUS_MAX_DIMS; d++) shape[d] = (uint64_t)json_integer_value(json_array_get(sh, d));
  void *data = NULL;
  if (!rc) {
    rc = theus_engine_heavy_alloc(c->e, key, theus_dtype_parse(json_string_value(json_object_get(h, "dtype"))), ndim,
                                  shape, &data);
    if (rc) theus__cl_err(c, rc, "cannot hold heavy.%s from rank 0: %s", key, theus_engine_errmsg(c->e));
    else json_object_set_new(published, key, json_true());
    if (!rc) prefault(data, nbytes);
  }
  int mrc = ship(c, data, nbytes);
  if (!rc && mrc != MPI_SUCCESS) rc = theus__cl_err(c, THEUS_ESYS, "receiving heavy.%s from rank 0 failed", key);
  return rc;
}

/* Installs the sync's domain and the published arrays as one version. */
static int install(theus_cluster *c, const json_t *sync, json_t *published) {
  json_t *patch = NULL;
  const json_t *full = json_object_get(sync, "domain");
  if (full) {
    theus_snapshot *snap;
    int rc = theus_engine_snapshot(c->e, &snap);
    if (rc) return theus__cl_err(c, rc, "%s", theus_engine_errmsg(c->e));
    patch = theus__cl_merge_diff(theus_snapshot_domain(snap), full);
    theus_snapshot_release(snap);
  } else {
    patch = json_incref(json_object_get(sync, "patch"));
  }
  int rc = 0;
  if (json_object_size(patch) || json_object_size(published))
    rc = theus_engine_cas(c->e, theus_engine_version(c->e), patch, published, NULL);
  json_decref(patch);
  if (rc)
    return theus__cl_err(c, rc, "cannot install rank 0's version %lld: %s",
                         (long long)json_integer_value(json_object_get(sync, "version")), theus_engine_errmsg(c->e));
  return 0;
}

int theus__cl_sync_apply(theus_cluster *c, const json_t *sync) {
  const json_t *heavy = json_object_get(sync, "heavy");
  json_t *published = json_object();
  int rc = published ? 0 : THEUS_ENOMEM;
  size_t i;
  json_t *h;
  json_array_foreach(heavy, i, h) {
    uint64_t nbytes = (uint64_t)json_integer_value(json_object_get(h, "nbytes"));
    const char *key = json_string_value(json_object_get(h, "key"));
    int r = c->rank == 0 ? ship_from_root(c, key, nbytes) : ship_to_rank(c, h, published, rc);
    if (!rc) rc = r;
    if (!r && c->rank) json_object_set(c->held, key, json_object_get(h, "id"));
  }
  if (c->rank == 0) {
    c->syncs++;
  } else if (!rc) {
    rc = install(c, sync, published);
  }
  if (rc && c->rank) { /* nothing half-installed: drop the drafts */
    const char *k;
    json_t *v;
    json_object_foreach(published, k, v) theus_engine_heavy_discard(c->e, k);
    theus__cl_forget(c); /* and ship everything again next time */
  }
  json_decref(published);
  return rc;
}
