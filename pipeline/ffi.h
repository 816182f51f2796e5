/* theus-c — libffi-typed processes (internal).
 *
 * A plain C function becomes a process when it is described by a signature
 * such as "void(f32*, u64, f64)" and one binding per argument:
 *   heavy.KEY      -> pointer to the array's elements (T* must match its dtype)
 *   heavy.KEY.len  -> the array's element count (an integer argument)
 *   domain.PATH    -> a domain number converted to the argument's scalar type
 *   a number       -> a literal ("2.5", "-3")
 * The return value (if not void) becomes the first output path.
 *
 * Lengths: an integer argument bound to domain.PATH or a literal that comes
 * right after a T* argument bound to heavy.KEY is that array's length. Before
 * the call it must be 0..the array's element count (the slice's, in a map);
 * otherwise the call is refused with both lengths named, since the function
 * would read past the array. theus__ffi_proc_not_length exempts an argument
 * that merely follows an array (a mode, a seed).
 *
 * Everything that can be checked without state (arity, pointer vs scalar,
 * return value without an output, an integer argument bound to a literal
 * 2.5...) is checked by theus__ffi_proc_init, i.e. when the contract is
 * loaded. The rest (dtype of the array, range of a domain number) is checked
 * right before the call, which then never happens on a mismatch.
 */
#ifndef THEUS_PIPELINE_FFI_H
#define THEUS_PIPELINE_FFI_H

#include <ffi.h>
#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "theus/engine.h"
#include "theus/heavy.h"

#define THEUS_FFI_MAX_ARGS 16
#define THEUS_FFI_ERRLEN 512

/* A scalar or pointer type; type 0 is void (returns only). Values are the
 * theus_dtype numbers so an array's dtype compares directly. */
typedef struct theus__ffi_type {
  theus_dtype type;
  bool ptr;
} theus__ffi_type;

typedef struct theus__ffi_sig {
  theus__ffi_type ret;
  unsigned nargs;
  theus__ffi_type args[THEUS_FFI_MAX_ARGS];
} theus__ffi_sig;

typedef enum theus__ffi_bind_kind {
  THEUS_FFI_BIND_ARRAY = 1, /* heavy.KEY */
  THEUS_FFI_BIND_LEN,       /* heavy.KEY.len */
  THEUS_FFI_BIND_DOMAIN,    /* domain.PATH */
  THEUS_FFI_BIND_LITERAL    /* a number */
} theus__ffi_bind_kind;

typedef struct theus__ffi_bind {
  theus__ffi_bind_kind kind;
  char *path;     /* heavy key (no "heavy." prefix) or domain path (no "domain.") */
  bool writable;  /* array declared as an output */
  double literal; /* THEUS_FFI_BIND_LITERAL */
  unsigned len_of; /* 1 + index of the array argument this one is the length of; 0: not a length */
} theus__ffi_bind;

/* A typed process: function, prepared call interface and bindings. */
typedef struct theus__ffi_proc {
  void (*fn)(void);
  theus__ffi_sig sig;
  theus__ffi_bind binds[THEUS_FFI_MAX_ARGS];
  char *ret_output; /* full output path ("domain.x") of the return value, or NULL */
  ffi_cif cif;
  ffi_type *atypes[THEUS_FFI_MAX_ARGS];
  int bad_arg, bad_output; /* after a failed init: the binding or output refused, else -1 */
} theus__ffi_proc;

/* How the caller gives the call its state. array() fills *info for a heavy
 * key (writable: the caller must hand out writable memory, e.g. a draft) and
 * returns 0, or a negative code with a message in err. domain() returns a
 * borrowed value for a domain path (without "domain."), or NULL if absent. */
typedef struct theus__ffi_env {
  int (*array)(void *ud, const char *key, bool writable, theus_array_info *info, char *err, size_t errlen);
  json_t *(*domain)(void *ud, const char *path);
  void *ud;
} theus__ffi_env;

/* Parses a signature; on error returns THEUS_EPARSE and err says at which
 * column (1-based) and what is expected there. */
int theus__ffi_sig_parse(const char *text, theus__ffi_sig *sig, char *err, size_t errlen);

/* Renders a type ("f32*", "void"). */
const char *theus__ffi_type_name(theus__ffi_type t, char buf[16]);

/* Builds a typed process from a signature, argument bindings and outputs
 * (full paths; an argument bound to heavy.KEY is writable iff heavy.KEY is an
 * output; the return value goes to the first domain output). Checks every
 * binding against the signature (a bound state path must pass theus_path_check
 * and be no pattern); THEUS_EINVAL/THEUS_EPARSE with a message naming the
 * argument and the fix otherwise, and p->bad_arg / p->bad_output saying which
 * binding or output was refused (-1: none). fini() must be called on success. */
int theus__ffi_proc_init(theus__ffi_proc *p, void (*fn)(void), const char *signature,
                         const char *const *args, size_t nargs, const char *const *outputs, size_t noutputs,
                         char *err, size_t errlen);
void theus__ffi_proc_fini(theus__ffi_proc *p);

/* Exempts arguments from the length rule: bit i of mask is argument i + 1.
 * THEUS_EINVAL (message names the argument) for an argument that is not
 * bound as the length of the array before it. */
int theus__ffi_proc_not_length(theus__ffi_proc *p, uint32_t mask, char *err, size_t errlen);

/* Resolves every argument through env, checks dtypes and ranges, then calls
 * the function. *ret (may be NULL) receives the return value as a new JSON
 * number (NULL for void). Nothing is called if any argument fails. */
int theus__ffi_proc_call(const theus__ffi_proc *p, const theus__ffi_env *env, json_t **ret, char *err,
                         size_t errlen);

/* Converts a JSON number to scalar type t into *slot (8 bytes, aligned),
 * with range checks; what names the value in the message. */
int theus__ffi_scalar_from_json(theus_dtype t, const json_t *v, const char *what, void *slot, char *err,
                                size_t errlen);

/* The process function of every typed process; its contract's userdata is
 * the theus__ffi_proc. Arrays come from theus_ctx_heavy (narrowed to the
 * slice rows inside a map); an array declared as an output is copied into a
 * new draft (theus_ctx_heavy_alloc) that the function writes and the commit
 * publishes. The return value is written to the output path (outside a map)
 * and returned (theus_ctx_return) for reducers. */
int theus__ffi_process(theus_ctx *ctx);

/* The state paths the bindings read ("heavy.KEY", "domain.PATH"), without
 * duplicates, NULL-terminated; free with theus__ffi_strv_free. NULL on ENOMEM. */
char **theus__ffi_proc_inputs(const theus__ffi_proc *p);
void theus__ffi_strv_free(char **v);

/* True if an argument is a writable (output) array: such a process must run
 * locally, since workers map the arena read-only. */
bool theus__ffi_proc_writes_array(const theus__ffi_proc *p);

#endif /* THEUS_PIPELINE_FFI_H */
