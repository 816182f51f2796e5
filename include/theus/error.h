/* theus-c — error codes shared by every layer.
 *
 * Every fallible call returns 0 or one of these negative codes. The object that
 * failed (arena, pool, engine) also keeps a human-readable message saying what
 * failed, where, and how to fix it; theus_strerror() only names the code.
 */
#ifndef THEUS_ERROR_H
#define THEUS_ERROR_H

#ifdef __cplusplus
extern "C" {
#endif

/* Marks the exported API; everything else in libtheus is hidden. */
#if defined(THEUS_BUILDING)
#define THEUS_API __attribute__((visibility("default")))
#else
#define THEUS_API
#endif

#define THEUS_ERRNO_MAP(X)                                                      \
  X(EINVAL,     -1,  "invalid argument")                                        \
  X(ENOMEM,     -2,  "out of memory")                                           \
  X(ESYS,       -3,  "operating system call failed")                            \
  X(EZEROHANDLE,-4,  "zero handle")                                             \
  X(EBADHANDLE, -5,  "handle out of range")                                     \
  X(ESTALE,     -6,  "stale handle")                                            \
  X(EFREED,     -7,  "handle already freed")                                    \
  X(EBUDGET,    -8,  "global budget exceeded")                                  \
  X(ETOOBIG,    -9,  "allocation too large")                                    \
  X(ENOSPACE,   -10, "arena address space or slots exhausted")                  \
  X(EREADONLY,  -11, "arena is mapped read-only")                               \
  X(ETRUNC,     -12, "destination buffer too small")                            \
  X(ETIMEDOUT,  -13, "timed out")                                               \
  X(ECRASH,     -14, "worker died")                                             \
  X(ECONTRACT,  -15, "contract violation")                                      \
  X(ECONFLICT,  -16, "version conflict")                                        \
  X(ENOTFOUND,  -17, "not found")                                               \
  X(EEXIST,     -18, "already exists")                                          \
  X(EPARSE,     -19, "parse error")                                             \
  X(EPROCESS,   -20, "process failed")                                          \
  X(ECLOSED,    -21, "object is closed or stopping")                            \
  X(EAGAIN,     -22, "resource temporarily unavailable")                        \
  X(ESTARVED,   -23, "reader starved by writer")                                \
  X(ECANCELED,  -24, "canceled")                                                \
  X(EBUSY,      -25, "resource busy")                                           \
  X(ELIMIT,     -26, "operation budget exhausted")

enum {
#define THEUS__ERR_ENUM(name, value, text) THEUS_##name = (value),
  THEUS_ERRNO_MAP(THEUS__ERR_ENUM)
#undef THEUS__ERR_ENUM
  THEUS_OK = 0
};

/* Returns a static, human-readable name for a THEUS_E* code (or "unknown error").
 * Never NULL; safe to call from any thread and from a signal handler. */
THEUS_API const char *theus_strerror(int code);

/* Returns the symbolic name of a code, e.g. "THEUS_ESTALE" (or "THEUS_E?"). */
THEUS_API const char *theus_err_name(int code);

#ifdef __cplusplus
}
#endif
#endif /* THEUS_ERROR_H */
