/* theus-c — heavy: the shared-memory arena.
 *
 * One arena is one memfd holding a control block (counters, slot table with
 * per-array metadata) and a data area. Arrays are named by 64-bit generational
 * handles (slot index << 32 | generation). The owning process allocates, writes
 * and frees; any other process may attach the same memfd read-only and resolve
 * handles to const pointers by itself (the slot table is in shared memory).
 *
 * Thread safety: every function may be called concurrently from many threads
 * on one arena. A view is valid until its handle is freed or the arena reset.
 */
#ifndef THEUS_HEAVY_H
#define THEUS_HEAVY_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct theus_arena theus_arena;

/* A generational handle; 0 is never a valid handle. */
typedef uint64_t theus_handle;

#define THEUS_HANDLE_INDEX(h) ((uint32_t)((h) >> 32))
#define THEUS_HANDLE_GEN(h) ((uint32_t)((h)&0xffffffffu))

/* Arena limits. Zero fields take the defaults noted; theus_arena_config_init
 * writes those defaults, so they can be read and printed. The budget follows
 * the machine: half of the memory this process may still use (MemAvailable,
 * or its cgroup's memory.max - memory.current when that is lower), rounded
 * down to a MiB, at least 256 MiB; 1 GiB when the system does not say. The
 * seed's fixed 1 GiB / 100 MiB remain explicit settings. */
typedef struct theus_arena_config {
  uint64_t hard_limit;    /* global budget in bytes (default: follows the machine, see above) */
  uint64_t single_limit;  /* largest single allocation (default: hard_limit, whatever it is set to) */
  unsigned soft_limit_pct; /* soft limit, percent of hard (default 85) */
  uint32_t max_handles;   /* slot table size (default 1 << 20) */
} theus_arena_config;

/* The eight counters. Cumulative ones survive theus_arena_reset(). */
typedef struct theus_arena_stats {
  uint64_t active_handles;
  uint64_t bytes_live;   /* bytes reserved by live arrays: each rounded up to 64 B below the page size, to whole pages from it */
  uint64_t peak_bytes;
  uint64_t alloc_count;
  uint64_t free_count;
  uint64_t errors;       /* every failed call on this arena */
  uint64_t soft_limit_hits;
  uint64_t hard_limit_hits; /* allocations refused by the global or single limit */
} theus_arena_stats;

typedef struct theus_live_entry {
  theus_handle handle;
  uint64_t size; /* bytes requested */
} theus_live_entry;

/* ---- lifecycle -------------------------------------------------------- */

/* Fills *cfg with the defaults (reads the memory available now, see
 * theus_arena_config: hard_limit and single_limit both get that budget). */
THEUS_API void theus_arena_config_init(theus_arena_config *cfg);

/* The budget theus_arena_config_init picks on this machine now. */
THEUS_API uint64_t theus_arena_default_budget(void);

/* Parses a size such as "8GiB", "1.5 GiB", "100MiB", "4096" into bytes. A
 * decimal number (no sign, no exponent) with an optional unit, case-
 * insensitive: B, KiB, MiB, GiB, TiB (powers of 1024) or KB, MB, GB, TB
 * (powers of 1000, as the SI says); no unit means bytes; a bare K, M, G or T
 * is refused as ambiguous. A fraction rounds down to a whole byte.
 * THEUS_EINVAL with a message in err (pure validator: no object; err may be
 * NULL), also for a NULL out; NULL text is the empty text. */
THEUS_API int theus_size_parse(const char *text, uint64_t *out, char *err, size_t errlen);

/* Writes bytes as theus_size_parse reads it back: "128MiB" when a binary unit
 * divides it exactly, else "1000B". round_up nonzero first rounds up to a
 * whole MiB (KiB below 1 MiB), for "raise it to" hints. Returns buf
 * (truncated to cap; buf NULL or cap 0: writes nothing). */
THEUS_API const char *theus_size_format(uint64_t bytes, int round_up, char *buf, size_t cap);

/* Creates an arena (memfd, sparse, sealed against resizing). cfg may be NULL.
 * Like sqlite3_open, a failure still hands back an arena carrying the message
 * (unless memory ran out: then *out is NULL): read theus_arena_errmsg(*out),
 * then release it with theus_arena_close; no other call is valid on it. */
THEUS_API int theus_arena_open(const theus_arena_config *cfg, theus_arena **out);

/* Attaches, in this process, the arena whose read-only descriptor is ro_fd
 * (see theus_arena_ro_fd). The mapping is PROT_READ from an O_RDONLY file
 * description: writes fault and mprotect(PROT_WRITE) is refused. The fd is
 * not closed by this call. Mutating calls on the result fail THEUS_EREADONLY. */
THEUS_API int theus_arena_open_ro(int ro_fd, theus_arena **out);

/* Unmaps and frees this process's view of the arena. The memory itself is
 * released by the kernel when the last process unmaps it. NULL is a no-op. */
THEUS_API void theus_arena_close(theus_arena *a);

/* The read-only descriptor (O_RDONLY on the memfd), inheritable by children;
 * hand it to processes that must only read. Owned by the arena. */
THEUS_API int theus_arena_ro_fd(const theus_arena *a);

/* The read-write descriptor of the memfd (owner only; -1 for a read-only
 * attachment or an arena whose open failed, THEUS_EINVAL for NULL). Owned by the arena. Hand it only to code that maps exactly the
 * pages it may write (the pool's write windows, docs/workers.md). */
THEUS_API int theus_arena_rw_fd(const theus_arena *a);

/* Where array h lies in the memfd: *offset (page-aligned) and *len, its
 * size rounded up to whole pages, all of them its own. THEUS_EINVAL for an
 * array smaller than a page (it shares its page with others), a NULL arena or
 * output, or an arena whose open failed; handle codes for a bad handle. */
THEUS_API int theus_arena_file_range(const theus_arena *a, theus_handle h, uint64_t *offset, uint64_t *len);

/* Nonzero if this is a read-only attachment. */
THEUS_API int theus_arena_is_readonly(const theus_arena *a);

/* The message of the last failure on this arena (what, where, how to fix;
 * the last failure wins when threads race). Never NULL. The text is this
 * thread's own copy, valid until the thread's fourth next *_errmsg call. */
THEUS_API const char *theus_arena_errmsg(const theus_arena *a);

/* ---- bytes API -------------------------------------------------------- */

/* Allocates n bytes (n >= 1), writable; *ptr (optional) receives the address.
 * Arrays of 4 KiB or more are page-aligned, smaller ones 64-byte aligned.
 * Pages are reserved now, so exhaustion is an error here, never a SIGBUS. */
THEUS_API int theus_arena_alloc(theus_arena *a, size_t n, theus_handle *out, void **ptr);

/* Allocates n bytes and copies src into them. */
THEUS_API int theus_arena_write(theus_arena *a, const void *src, size_t n, theus_handle *out);

/* Zero-copy, generation-checked view: *ptr and *len describe the array. */
THEUS_API int theus_arena_view(const theus_arena *a, theus_handle h, const void **ptr, size_t *len);

/* Writable address of a live array (owner only: THEUS_EREADONLY otherwise). */
THEUS_API int theus_arena_data(theus_arena *a, theus_handle h, void **ptr, size_t *len);

/* Copies the array into dst (capacity cap). *len (optional) gets its size.
 * THEUS_ETRUNC if cap is too small (nothing copied). */
THEUS_API int theus_arena_read(const theus_arena *a, theus_handle h, void *dst, size_t cap, size_t *len);

/* Frees the array and returns its pages to the system. Stale, double-freed,
 * out-of-range and zero handles fail with distinct codes. */
THEUS_API int theus_arena_free(theus_arena *a, theus_handle h);

/* Scoped buffer, callback form: writes src, calls fn(a, h, ud), frees h
 * whatever fn returns, and returns fn's result (or the write error). */
THEUS_API int theus_arena_with_buffer(theus_arena *a, const void *src, size_t n,
                            int (*fn)(theus_arena *a, theus_handle h, void *ud), void *ud);

/* Scoped buffer, cleanup-attribute form (GCC/Clang):
 *   THEUS_SCOPED(buf, arena);
 *   theus_arena_write(arena, src, n, &buf.handle);
 *   ... every return path frees buf.handle (if nonzero). */
typedef struct theus_scoped {
  theus_arena *arena;
  theus_handle handle;
} theus_scoped;
/* Frees s->handle if nonzero and zeroes it; the cleanup function of
 * THEUS_SCOPED (callable by hand too). */
THEUS_API void theus_scoped_release(theus_scoped *s);
#define THEUS_SCOPED(name, arena_)                                              \
  __attribute__((cleanup(theus_scoped_release))) theus_scoped name = {(arena_), 0}

/* ---- maintenance ------------------------------------------------------ */

/* Invalidates every handle in O(1) whatever their number, and returns the data
 * pages to the system. Handle values are never reissued afterwards. */
THEUS_API int theus_arena_reset(theus_arena *a);

/* Snapshot of the counters (works on read-only attachments too). */
THEUS_API int theus_arena_stats_get(const theus_arena *a, theus_arena_stats *out);

/* Lists live arrays: writes up to cap entries, *count gets the total number
 * live (call with cap 0 to size the buffer). Order is by slot. */
THEUS_API int theus_arena_list_live(const theus_arena *a, theus_live_entry *out, size_t cap, size_t *count);

/* The live array containing addr (0 if none). Reads shared memory only, no
 * lock, no allocation: async-signal-safe, for fault handlers in workers. */
THEUS_API theus_handle theus_arena_find(const theus_arena *a, const void *addr);

/* Nonzero if addr lies inside this process's mapping of the arena. */
THEUS_API int theus_arena_contains(const theus_arena *a, const void *addr);

/* ---- typed arrays ----------------------------------------------------- */

typedef enum theus_dtype {
  THEUS_DTYPE_U8 = 1, THEUS_DTYPE_U16, THEUS_DTYPE_U32, THEUS_DTYPE_U64,
  THEUS_DTYPE_I8, THEUS_DTYPE_I16, THEUS_DTYPE_I32, THEUS_DTYPE_I64,
  THEUS_DTYPE_F32, THEUS_DTYPE_F64
} theus_dtype;

#define THEUS_MAX_DIMS 8

/* Everything about an array, readable from the owner or a read-only mapper. */
typedef struct theus_array_info {
  theus_handle handle;
  theus_dtype dtype;     /* 0 for a bytes array */
  unsigned ndim;         /* 1 for a bytes array (shape = {nbytes}) */
  uint64_t shape[THEUS_MAX_DIMS];
  uint64_t strides[THEUS_MAX_DIMS]; /* in bytes, C-contiguous */
  uint64_t itemsize;
  uint64_t nbytes;
  const void *data;
} theus_array_info;

/* Bytes per element (0 for an unknown dtype). */
THEUS_API size_t theus_dtype_size(theus_dtype t);
/* "f32", "u8", ... (NULL for an unknown dtype). */
THEUS_API const char *theus_dtype_name(theus_dtype t);
/* Parses "f32" etc.; returns 0 for an unknown name. */
THEUS_API theus_dtype theus_dtype_parse(const char *name);

/* Allocates a C-contiguous array of dtype with ndim (1..8) dims; *data
 * (optional) is writable. Zero-sized dims are refused (THEUS_EINVAL). */
THEUS_API int theus_array_alloc(theus_arena *a, theus_dtype dtype, unsigned ndim, const uint64_t *shape,
                      theus_handle *out, void **data);

/* Resolves a handle to its dtype, shape, strides and const data pointer. */
THEUS_API int theus_array_info_get(const theus_arena *a, theus_handle h, theus_array_info *out);

#ifdef __cplusplus
}
#endif
#endif /* THEUS_HEAVY_H */
