/* theus-c — fuzz harness: RFC 7386 merge patch and the paths a patch writes.
 *
 * Input: two JSON texts one after the other, target then patch (a lone text
 * is used as the patch of a null target). Checks, besides memory safety:
 *   - the target is never modified (versions are immutable);
 *   - applying the same patch twice changes nothing (RFC 7386 is idempotent);
 *   - a patch applied to NULL equals the patch applied to an empty object
 *     when the patch is an object;
 *   - every path written starts with the prefix, and there is one per leaf.
 */
#include <jansson.h>

#include "fuzz_util.h"
#include "theus/contract.h"

static size_t leaves(const json_t *patch) {
  if (!json_is_object(patch) || json_object_size(patch) == 0) return 1;
  size_t n = 0;
  const char *k;
  json_t *v;
  json_object_foreach((json_t *)patch, k, v) n += json_is_object(v) && json_object_size(v) ? leaves(v) : 1;
  return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  json_error_t je;
  json_t *target = json_loadb((const char *)data, size, JSON_DECODE_ANY | JSON_DISABLE_EOF_CHECK, &je);
  if (!target) return 0;
  size_t used = je.position;
  json_t *patch = used < size ? json_loadb((const char *)data + used, size - used, JSON_DECODE_ANY, &je) : NULL;
  if (!patch) {
    patch = target;
    target = NULL;
  }
  json_t *before = target ? json_deep_copy(target) : NULL;

  json_t *once = theus_merge_patch(target, patch);
  if (once) {
    json_t *twice = theus_merge_patch(once, patch);
    if (twice) FUZZ_ASSERT(json_equal(once, twice));
    json_decref(twice);
  }
  if (target) FUZZ_ASSERT(json_equal(before, target));
  if (json_is_object(patch)) {
    json_t *empty = json_object();
    json_t *a = theus_merge_patch(NULL, patch), *b = theus_merge_patch(empty, patch);
    if (a && b) FUZZ_ASSERT(json_equal(a, b));
    json_decref(a);
    json_decref(b);
    json_decref(empty);
  }

  char **paths = NULL;
  size_t n = 0, cap = 0;
  if (theus_merge_patch_paths(patch, "domain", &paths, &n, &cap) == 0) {
    FUZZ_ASSERT(n == leaves(patch));
    for (size_t i = 0; i < n; i++) FUZZ_ASSERT(strncmp(paths[i], "domain", 6) == 0);
  }
  for (size_t i = 0; i < n; i++) free(paths[i]);
  free(paths);

  json_decref(once);
  json_decref(before);
  json_decref(target);
  json_decref(patch);
  return 0;
}
