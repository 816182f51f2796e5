/* theus-c — fuzz harness: the pipeline loader (theus_pipeline_load).
 *
 * Input: a pipeline file. theus_pipeline_load takes a path, so the input is
 * written to a memfd and loaded as /proc/self/fd/N (no file in the tree or
 * /tmp; relative "file" fills resolve under /proc/self/fd and are only
 * stat()ed). Loading checks the whole file: keys, types, steps, expressions,
 * heavy specs and typed-process signatures; nothing is opened or run. A
 * failure must come with a message that starts with the file name.
 */
#include <sys/mman.h>
#include <unistd.h>

#include "fuzz_util.h"
#include "theus/pipeline.h"

static int fd = -1;
static char path[64];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (fd < 0) {
    fd = memfd_create("theus-fuzz-pipeline", MFD_CLOEXEC);
    FUZZ_ASSERT(fd >= 0);
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
  }
  FUZZ_ASSERT(ftruncate(fd, 0) == 0);
  for (size_t off = 0; off < size;) {
    ssize_t w = pwrite(fd, data + off, size - off, (off_t)off);
    FUZZ_ASSERT(w > 0);
    off += (size_t)w;
  }
  theus_pipeline *p = NULL;
  int rc = theus_pipeline_load(path, &p);
  FUZZ_ASSERT(p != NULL); /* sqlite3_open style: the handle carries the message */
  const char *msg = theus_pipeline_errmsg(p);
  FUZZ_ASSERT(msg != NULL);
  if (rc == 0)
    (void)theus_pipeline_workers(p);
  else
    FUZZ_ASSERT(strncmp(msg, path, strlen(path)) == 0);
  theus_pipeline_close(p);
  return 0;
}
