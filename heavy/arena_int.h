/* Internal: the arena's shared layout and private state.
 *
 * memfd layout:  [ header | slot table (max_handles slots) | data area ]
 * The header and slot table are the "control data": shared, so a process that
 * attached read-only resolves handles alone. The data area is twice the hard
 * budget of address space (sparse; see tlsf.h for why).
 *
 * Slot protocol (single writer = the owner under its mutex; lock-free readers):
 * a slot is live iff slot.epoch == header.epoch (epochs start at 1; 0 = free).
 * The owner writes the fields, then stores epoch with release order; readers
 * load gen and epoch with acquire order, read the fields, then re-check gen and
 * epoch after an acquire fence, so a reader never returns fields of another
 * incarnation of the slot. Generations only grow; a slot whose generation
 * reached UINT32_MAX is retired, so handle values are never reissued.
 */
#ifndef THEUS_ARENA_INT_H
#define THEUS_ARENA_INT_H

#include <pthread.h>
#include <stdint.h>

#include "base.h"
#include "theus/heavy.h"
#include "tlsf.h"

#define THEUS__ARENA_MAGIC 0x5448455553415231ull /* "THEUSAR1" */

/* Relaxed accessors for fields shared with lock-free readers. */
#define THEUS__LD(p) __atomic_load_n((p), __ATOMIC_RELAXED)
#define THEUS__ST(p, v) __atomic_store_n((p), (v), __ATOMIC_RELAXED)
#define THEUS__LDA(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define THEUS__STR(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)

typedef struct theus__slot {
  uint32_t gen;
  uint32_t epoch;  /* reset epoch it was allocated in; 0 = free */
  uint64_t offset; /* from the start of the data area */
  uint64_t size;   /* bytes requested */
  uint64_t rsize;  /* bytes reserved (budgeted) */
  uint32_t block;  /* TLSF block id (owner's bookkeeping) */
  uint32_t next_free;
  uint8_t dtype, ndim, pad_[6];
  uint64_t shape[THEUS_MAX_DIMS];
  uint8_t pad2_[16];
} theus__slot;

_Static_assert(sizeof(theus__slot) == 128, "slot is two cache lines");

typedef struct theus__arena_hdr {
  uint64_t magic;
  uint64_t page;
  uint64_t hard_limit, single_limit, soft_limit;
  uint64_t max_handles;
  uint64_t slots_off, data_off, data_size, total_size;
  uint32_t epoch;    /* current reset epoch, never 0 */
  uint32_t slot_hwm; /* slots [0, hwm) have been handed out since the reset */
  /* slots [0, slots_reserved) lie on reserved pages of the file (only grows):
   * nothing reads a slot above it, so a forged handle never faults in a page
   * of a full tmpfs or cgroup (SIGBUS) */
  uint32_t slots_reserved, pad_;
  /* counters: written by the owner under its mutex, read relaxed by anyone */
  uint64_t active_handles, bytes_live, peak_bytes, alloc_count, free_count, errors,
      soft_limit_hits, hard_limit_hits;
} theus__arena_hdr;

/* Per-page bookkeeping for sub-page arrays (owner only). */
typedef struct theus__page {
  uint16_t tag;   /* page epoch this entry belongs to (else: count 0) */
  uint8_t users;  /* live sub-page arrays touching the page */
  uint8_t cached; /* empty but kept reserved (see page cache in arena.c) */
} theus__page;

#define THEUS__PAGE_CACHE 32
/* Lookaside of freed small blocks: classes of 64..1024 bytes, a few each. */
#define THEUS__LOOK_CLASSES 16
#define THEUS__LOOK_DEPTH 16

struct theus_arena {
  int fd;    /* read-write memfd (-1 for a read-only attachment) */
  int ro_fd; /* O_RDONLY description of the same file */
  int readonly;
  uint8_t *base;
  uint64_t map_size;
  theus__arena_hdr *hdr;
  theus__slot *slots;
  uint8_t *data;
  /* owner-only state, guarded by mu */
  pthread_mutex_t mu;
  theus__tlsf tlsf;
  uint32_t free_slots; /* head of the slot free list */
  uint64_t extent;     /* highest data offset used since the last reset */
  theus__page *pages;
  uint16_t page_tag;
  unsigned page_shift;
  uint32_t cache[THEUS__PAGE_CACHE];
  unsigned ncache;
  uint32_t look[THEUS__LOOK_CLASSES][THEUS__LOOK_DEPTH];
  uint8_t nlook[THEUS__LOOK_CLASSES];
  /* memory the cgroups and the machine can still give (see room_take in
   * arena.c): re-read when older than THEUS__ROOM_TTL_NS or too small */
  uint64_t room;
  uint64_t room_at; /* theus__now_ns() of the last reading; 0 = never */
  int room_refused; /* the last reservation was refused by the room check */
  const char *memroot; /* NULL, or the synthetic tree of theus__arena_set_memroot */
  theus__err err;        /* has its own lock, so const readers may set it */
  uint64_t local_errors; /* failures seen by a read-only attachment (atomic) */
};

/* Memory check before every page reservation (issue 10): a cached reading of
 * the cgroup limits and MemAvailable, valid this long, minus what the arena
 * reserved since. Headroom kept below each limit: max(16 MiB, limit / 32). */
#define THEUS__ROOM_TTL_NS (20ull * 1000 * 1000)
#define THEUS__ROOM_HEADROOM_MIN (16ull << 20)
#define THEUS__ROOM_HEADROOM_DIV 32

/* Records a failure: bumps `errors`, formats the message, returns code. */
int theus__arena_fail(const theus_arena *a, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Argument checks of the public calls (issue 10): a NULL or not-opened arena
 * (its open failed: no mapping) and NULL required pointers fail with
 * THEUS_EINVAL, naming the call, instead of crashing. */
#define THEUS__ARENA_ARG(a, fn)                                                                        \
  do {                                                                                                 \
    if (!(a)) return THEUS_EINVAL;                                                                     \
    if (!(a)->hdr) return theus__arena_fail((a), THEUS_EINVAL, fn ": this arena did not open (read "   \
                                            "theus_arena_errmsg, then theus_arena_close it)");          \
  } while (0)
#define THEUS__ARG_NONNULL(a, p, fn)                                                                   \
  do {                                                                                                 \
    if (!(p)) return theus__arena_fail((a), THEUS_EINVAL, fn ": " #p " is NULL");                       \
  } while (0)

/* Resolves a handle to its slot, with the distinct failure codes; the slot
 * contents copied into *copy are consistent with the handle. Lock-free. */
int theus__arena_resolve(const theus_arena *a, theus_handle h, theus__slot *copy);

/* Internal open: backing file in directory dir (O_TMPFILE, e.g. a small tmpfs
 * in a test) instead of a memfd when dir is not NULL. */
int theus__arena_open_at(const theus_arena_config *cfg, const char *dir, theus_arena **out);

/* Test hook: the memory check reads <sys>/proc and <sys>/sys/fs/cgroup (a
 * synthetic tree) instead of the real ones; NULL restores them. sys must
 * outlive the arena's use of it. */
void theus__arena_set_memroot(theus_arena *a, const char *sys);

/* Allocates a block of n bytes with typed metadata (dtype 0 = bytes). */

int theus__arena_alloc_typed(theus_arena *a, uint64_t n, uint8_t dtype, unsigned ndim,
                             const uint64_t *shape, theus_handle *out, void **ptr);

#endif
