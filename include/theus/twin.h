/* theus-c — twin: tear-free snapshots of live data.
 *
 * A *live region* of N bytes is one arena allocation holding a small header
 * (epoch/sequence word, futex word) and two N-byte buffers. One writer fills
 * the back buffer and publishes it; any number of readers — threads of the
 * owner, pool workers, other processes that attached the arena read-only —
 * copy consistent snapshots of any byte range into their own buffers and never
 * see a torn write (double buffer + sequence re-checked after the copy, the
 * Linux seqcount_latch idea; see heavy/twin.c for the memory-ordering proof).
 *
 * Roles and threads:
 *  - theus_twin_writer (the writer) is used by one thread at a time. It may move to
 *    a forked child (the mapping is shared), as long as only one of them writes.
 *  - theus_twin_reader is used by one thread at a time (it keeps counters and
 *    an error message); make one per thread with theus_twin_reader_open(), it is cheap.
 *    Readers only ever load from the region, so they work from a PROT_READ
 *    mapping (theus_arena_open_ro) in another process.
 *
 * Epochs: the region starts at epoch 0 (all bytes zero); every publish adds 1.
 */
#ifndef THEUS_TWIN_H
#define THEUS_TWIN_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "heavy.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct theus_twin_writer theus_twin_writer;               /* the writer */
typedef struct theus_twin_reader theus_twin_reader; /* one reader, one thread */

/* theus_twin_writer_begin flag: the caller will rewrite every byte it cares
 * about, so the back buffer is handed over without first being brought up to
 * date with the last published frame (it then holds the frame before that). */
#define THEUS_TWIN_DISCARD 1u

/* Default bound on read_at attempts before THEUS_ESTARVED. */
#define THEUS_TWIN_DEFAULT_RETRIES 1000u

/* Reader counters (cumulative since theus_twin_reader_open). */
typedef struct theus_twin_reader_stats {
  uint64_t reads;   /* successful read_at calls */
  uint64_t retries; /* copies thrown away because the writer overtook them */
  uint64_t starved; /* read_at calls that gave up with THEUS_ESTARVED */
} theus_twin_reader_stats;

/* ---- writer ----------------------------------------------------------- */

/* Creates a live region of nbytes (>= 1) in arena a (owner side, writable),
 * at epoch 0 with every byte zero. Costs 2 * nbytes (+64) of arena budget.
 * Errors: THEUS_EINVAL (NULL argument, nbytes 0), THEUS_ETOOBIG (2 * nbytes
 * overflows), THEUS_ENOMEM, or the arena's code (THEUS_EREADONLY, THEUS_EBUDGET,
 * THEUS_ETOOBIG... with details in theus_arena_errmsg(a)). On failure *out is NULL. */
THEUS_API int theus_twin_writer_open(theus_arena *a, size_t nbytes, theus_twin_writer **out);

/* The arena handle of the region: give it to readers (theus_twin_reader_open). */
THEUS_API theus_handle theus_twin_writer_handle(const theus_twin_writer *t);

/* N, the size of the region in bytes. */
THEUS_API size_t theus_twin_writer_size(const theus_twin_writer *t);

/* The last published epoch (the writer's own view; no fence needed). */
THEUS_API uint64_t theus_twin_writer_epoch(const theus_twin_writer *t);

/* Opens a frame (if none is open) and returns the back buffer, N writable
 * bytes that readers do not see until theus_twin_writer_publish(). Without flags
 * the back buffer holds the last published content (the writer copies only
 * the bytes the previous frame changed); with THEUS_TWIN_DISCARD it holds
 * stale content and the caller is expected to overwrite it. The pointer is
 * valid until the publish. */
THEUS_API int theus_twin_writer_begin(theus_twin_writer *t, unsigned flags, void **back);

/* Copies len bytes of src to [offset, offset+len) of the back buffer,
 * opening a frame if needed. THEUS_EINVAL (with a message) if the range
 * leaves the region. Several writes may precede one publish. */
THEUS_API int theus_twin_writer_write(theus_twin_writer *t, size_t offset, const void *src, size_t len);

/* Makes the open frame (or, with none open, an unchanged copy of the current
 * content) the visible one, atomically, and increments the epoch; *epoch
 * (optional) receives the new epoch. Wakes every theus_twin_reader_wait_epoch()
 * sleeper: always one FUTEX_WAKE syscall, because read-only waiters cannot
 * announce themselves (see docs/twin.md for the measured cost). */
THEUS_API int theus_twin_writer_publish(theus_twin_writer *t, uint64_t *epoch);

/* The message of the last failure on this writer (what, where, how to fix).
 * Never NULL. The text is this thread's own copy, valid until the thread's
 * fourth next *_errmsg call. */
THEUS_API const char *theus_twin_writer_errmsg(const theus_twin_writer *t);

/* Marks the region closed (readers then get THEUS_ECLOSED, sleepers wake up
 * with it) and frees the writer. With free_region 0 the arena allocation stays
 * alive: free it with theus_arena_free(a, handle) once no reader uses it (the
 * engine does this when the last reference goes). With free_region nonzero it
 * is freed now: readers must be done with it (a reader of freed memory sees
 * THEUS_ECLOSED or, if the memory was reused already, whatever is there, as
 * with any freed view). NULL is a no-op. */
THEUS_API void theus_twin_writer_close(theus_twin_writer *t, int free_region);

/* ---- readers ---------------------------------------------------------- */

/* Opens a reader on the region named by handle h, from the owner's arena or
 * from a read-only attachment in any process. Checks the handle (arena codes:
 * THEUS_ESTALE, THEUS_EFREED, ... with details in theus_arena_errmsg(a)) and
 * that it names a live region (THEUS_EINVAL otherwise). On failure *out is NULL. */
THEUS_API int theus_twin_reader_open(const theus_arena *a, theus_handle h, theus_twin_reader **out);

/* 0 if h names a live region in a (owner or read-only attachment), with its
 * size in *nbytes (optional); THEUS_EINVAL if h is a live array of another
 * kind, or the arena's code for a bad handle. Lets a binder (the engine)
 * check "this heavy key holds a live region" without opening a reader. */
THEUS_API int theus_twin_probe(const theus_arena *a, theus_handle h, size_t *nbytes);

/* Frees the reader (not the region). NULL is a no-op. */
THEUS_API void theus_twin_reader_close(theus_twin_reader *r);

/* N, the size of the region in bytes. */
THEUS_API size_t theus_twin_reader_size(const theus_twin_reader *r);

/* Copies a consistent snapshot of [offset, offset+len) into dest (which must
 * not overlap the region) and stores its epoch in *epoch (optional). No
 * allocation, no syscall, no write to shared memory. Every byte copied belongs
 * to one published frame. Errors: THEUS_EINVAL (range outside the region,
 * with a message), THEUS_ECLOSED (writer closed the region), THEUS_ESTARVED
 * (the writer overtook the copy on every one of the allowed attempts; dest then
 * holds garbage). len 0 is allowed and just reports the epoch. */
THEUS_API int theus_twin_reader_read_at(theus_twin_reader *r, size_t offset, void *dest, size_t len,
                                 uint64_t *epoch);

/* The current published epoch (one acquire load). */
THEUS_API uint64_t theus_twin_reader_epoch(const theus_twin_reader *r);

/* Sleeps (futex, works across processes and from a read-only mapping) until
 * the epoch is greater than seen, then stores it in *now (optional) and
 * returns 0 at once if it already is. timeout_ms < 0 waits forever.
 * THEUS_ETIMEDOUT when the time is up, THEUS_ECLOSED if the region was closed
 * or freed meanwhile. */
THEUS_API int theus_twin_reader_wait_epoch(theus_twin_reader *r, uint64_t seen, int64_t timeout_ms, uint64_t *now);

/* Sets the bound on read_at attempts (>= 1; default THEUS_TWIN_DEFAULT_RETRIES). */
THEUS_API int theus_twin_reader_set_retries(theus_twin_reader *r, unsigned attempts);

/* Copies the reader's counters into *out. */
THEUS_API void theus_twin_reader_stats_get(const theus_twin_reader *r, theus_twin_reader_stats *out);

/* The message of the last failure on this reader. Never NULL. The text is
 * this thread's own copy, valid until the thread's fourth next *_errmsg call. */
THEUS_API const char *theus_twin_reader_errmsg(const theus_twin_reader *r);

#ifdef __cplusplus
}
#endif
#endif /* THEUS_TWIN_H */
