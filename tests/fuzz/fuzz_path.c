/* theus-c — fuzz harness: state paths (theus_path_check / covers / overlaps).
 *
 * Input: two paths separated by the first newline (a lone path is compared
 * with itself). covers/overlaps run on any text (the engine calls them on
 * paths derived from patch keys, which are not always valid), and on valid
 * paths their relations must hold:
 *   overlaps is symmetric, covers implies overlaps, a valid path covers itself.
 */
#include "fuzz_util.h"
#include "theus/contract.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char *a = fuzz_cstr(data, size);
  char *nl = strchr(a, '\n');
  const char *b = a;
  if (nl) {
    *nl = '\0';
    b = nl + 1;
  }
  char err[256];
  int va = theus_path_check(a, err, sizeof err) == 0;
  int vb = theus_path_check(b, err, sizeof err) == 0;
  (void)theus_path_check(a, NULL, 0);
  int ab = theus_path_overlaps(a, b), ba = theus_path_overlaps(b, a);
  int cab = theus_path_covers(a, b), cba = theus_path_covers(b, a);
  if (va && vb) {
    FUZZ_ASSERT(ab == ba);
    FUZZ_ASSERT(!cab || ab);
    FUZZ_ASSERT(!cba || ba);
  }
  if (va) FUZZ_ASSERT(theus_path_covers(a, a) && theus_path_overlaps(a, a));
  free(a);
  return 0;
}
