/* RFC 7386 JSON Merge Patch with structural sharing, and the set of paths a
 * patch writes (what smart CAS compares). */
#include <stdlib.h>
#include <string.h>

#include "theus/contract.h"

json_t *theus_merge_patch(const json_t *target, const json_t *patch) {
  if (!json_is_object(patch))
    return json_deep_copy(patch);
  json_t *out = json_object();
  if (!out)
    return NULL;
  /* Share untouched children: versions are immutable, so a reference is as
   * good as a copy and costs O(keys) instead of O(size). */
  if (json_is_object(target) && json_object_update(out, (json_t *)target) != 0)
    goto fail;
  const char *key;
  json_t *val;
  json_object_foreach((json_t *)patch, key, val) {
    if (json_is_null(val)) {
      json_object_del(out, key);
      continue;
    }
    const json_t *old = json_is_object(target) ? json_object_get(target, key) : NULL;
    json_t *sub = json_is_object(val) ? theus_merge_patch(old, val) : json_deep_copy(val);
    if (!sub || json_object_set_new(out, key, sub) != 0)
      goto fail;
  }
  return out;
fail:
  json_decref(out);
  return NULL;
}

static int push_path(char ***paths, size_t *n, size_t *cap, char *p) {
  if (!p)
    return THEUS_ENOMEM;
  if (*n == *cap) {
    size_t nc = *cap ? *cap * 2 : 8;
    char **np = realloc(*paths, nc * sizeof *np);
    if (!np) {
      free(p);
      return THEUS_ENOMEM;
    }
    *paths = np;
    *cap = nc;
  }
  (*paths)[(*n)++] = p;
  return 0;
}

static char *join(const char *prefix, const char *key) {
  size_t a = strlen(prefix), b = strlen(key);
  char *s = malloc(a + b + 2);
  if (!s)
    return NULL;
  memcpy(s, prefix, a);
  s[a] = '.';
  memcpy(s + a + 1, key, b + 1);
  return s;
}

int theus_merge_patch_paths(const json_t *patch, const char *prefix, char ***paths, size_t *n, size_t *cap) {
  if (!prefix || !paths || !n || !cap)
    return THEUS_EINVAL;
  if (!json_is_object(patch) || json_object_size(patch) == 0)
    return push_path(paths, n, cap, strdup(prefix));
  const char *key;
  json_t *val;
  json_object_foreach((json_t *)patch, key, val) {
    char *p = join(prefix, key);
    if (!p)
      return THEUS_ENOMEM;
    int rc = json_is_object(val) && json_object_size(val) > 0 ? theus_merge_patch_paths(val, p, paths, n, cap)
                                                               : push_path(paths, n, cap, strdup(p));
    free(p);
    if (rc)
      return rc;
  }
  return 0;
}
