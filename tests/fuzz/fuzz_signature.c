/* theus-c — fuzz harness: C signatures of typed (libffi) processes.
 *
 * Input, one item per line: the signature ("f64(f32*, u64)"), then the
 * argument bindings ("heavy.x", "heavy.x.len", "domain.k", "2.5"); a line
 * starting with '>' is an output path ("> domain.y"). The signature parser
 * runs on the first line alone, then the whole typed process is built and
 * taken apart again (nothing is called).
 *
 * The state paths a typed process reads become its contract's inputs, so
 * every one must pass theus_path_check.
 */
#include "ffi.h"
#include "fuzz_util.h"

#define MAX_LINES 40

static void noop(void) {}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char *text = fuzz_cstr(data, size);
  const char *args[MAX_LINES], *outs[MAX_LINES];
  size_t nargs = 0, nouts = 0;
  char *line = text, *sig = NULL;
  while (line) {
    char *nl = strchr(line, '\n');
    if (nl) *nl = '\0';
    if (!nl && !*line && sig) break; /* the text ends with a newline */
    if (!sig)
      sig = line;
    else if (line[0] == '>' && nouts < MAX_LINES)
      outs[nouts++] = line + 1 + (line[1] == ' ');
    else if (line[0] != '>' && nargs < MAX_LINES)
      args[nargs++] = line;
    line = nl ? nl + 1 : NULL;
  }
  char err[THEUS_FFI_ERRLEN];
  theus__ffi_sig s;
  if (theus__ffi_sig_parse(sig, &s, err, sizeof err) == 0) {
    FUZZ_ASSERT(s.nargs <= THEUS_FFI_MAX_ARGS);
    char buf[16];
    FUZZ_ASSERT(theus__ffi_type_name(s.ret, buf) != NULL);
    for (unsigned i = 0; i < s.nargs; i++) FUZZ_ASSERT(theus__ffi_type_name(s.args[i], buf) != NULL);
  }
  theus__ffi_proc p;
  if (theus__ffi_proc_init(&p, noop, sig, args, nargs, outs, nouts, err, sizeof err) == 0) {
    FUZZ_ASSERT(p.sig.nargs == nargs);
    char **in = theus__ffi_proc_inputs(&p);
    FUZZ_ASSERT(in != NULL);
    for (size_t i = 0; in[i]; i++) FUZZ_ASSERT(theus_path_check(in[i], NULL, 0) == 0);
    theus__ffi_strv_free(in);
    (void)theus__ffi_proc_writes_array(&p);
    theus__ffi_proc_fini(&p);
  }
  free(text);
  return 0;
}
