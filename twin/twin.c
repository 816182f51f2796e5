/* theus-c — twin: tear-free snapshots of a live region (see include/theus/twin.h).
 *
 * Layout of the one arena allocation (64-byte aligned):
 *
 *   [ header, 64 B | buffer 0, stride B | buffer 1, stride B ]   stride = N rounded up to 64
 *
 * The header holds the sequence word `seq` and the futex word; everything else
 * in it is written once before the handle is handed out.
 *
 * ---- The protocol (seqcount_latch, single writer) --------------------------
 *
 *   seq == 2e      epoch e is published, its content is buffer e&1 ("front"),
 *                  no frame open;
 *   seq == 2e + 1  epoch e is still the published one, the writer is filling
 *                  buffer (e+1)&1 ("back") for epoch e+1.
 *
 *   writer, frame open:   seq = 2e+1 (release); fence(release); write back...
 *   writer, publish:      seq = 2e+2 (release); bump futex word; FUTEX_WAKE
 *   reader:               s0 = seq (acquire); e = s0 >> 1;
 *                         copy from buffer e&1;
 *                         fence(acquire); s1 = seq (relaxed);
 *                         keep the copy iff s1 <= 2e + 2, else retry.
 *
 * Why a kept copy is never torn. Buffer e&1 held epoch e's content when seq
 * became 2e (the release store of the publish), and the reader's acquire load
 * of s0 >= 2e makes all of it visible: the reader cannot see anything older.
 * The writer touches buffer e&1 again only in frame e+2, which it opens by
 * storing seq = 2e+3 *before* (release fence) its first store to that buffer.
 * Suppose the reader's copy observed any store of frame e+2 or later. That
 * store follows the writer's release fence, the reader's acquire fence
 * follows the observing load, so the fences synchronize (C11 7.17.4) and the
 * store seq = 2e+3, sequenced before the writer's fence, happens before the
 * reader's load of s1: by coherence s1 >= 2e+3 and the copy is thrown away.
 * So a kept copy holds exactly epoch e's bytes. The window a reader gets is
 * from s0 to the *opening of the frame after next*, not just to the next
 * publish — that is what the second buffer buys: a read only fails when the
 * writer completes a whole frame and starts the next one during the copy.
 *
 * On x86-64 the fences cost nothing (loads are not reordered with loads, and
 * stores not with stores); on arm64 they are `dmb ishld` / `dmb ish`. Both are
 * compiler barriers, so the copy cannot be moved across them.
 *
 * ---- The C11 data-race caveat -----------------------------------------------
 *
 * A reader that is overtaken copies bytes the writer is storing at the same
 * time. With plain memcpy on both sides that is a data race, which C11 calls
 * undefined behaviour, even though the racy bytes are always thrown away. The
 * strictly conforming form makes every byte access a relaxed atomic (the
 * fence argument above then holds to the letter), but atomic word loads cannot
 * be vectorised and cost a large part of memcpy's bandwidth (bench/twin.c
 * measures it: `atomic_word_copy_GBps`). We do what the Linux kernel and every
 * C seqlock do: copy with memcpy, an opaque call that the fences fence in, and
 * never look at the bytes before the check. What could break this is a
 * compiler that proves the race and exploits it; memcpy into caller memory
 * across an acquire fence gives it nothing to prove. (C++ proposal P1478,
 * atomic_load_per_byte_memcpy, exists to bless exactly this pattern.)
 *
 * ThreadSanitizer would rightly report that race, so under TSan the copy is a
 * volatile byte loop in a function TSan does not instrument, followed by
 * __tsan_write_range(dest) so that races of the *caller* on dest are still
 * caught. Only the load side of this one copy is hidden: the writer's stores,
 * the header accesses (atomics) and everything else stay instrumented.
 *
 * ---- Waiting ----------------------------------------------------------------
 *
 * Waiters sleep on the 32-bit futex word with FUTEX_WAIT without
 * FUTEX_PRIVATE_FLAG (shared futexes are keyed on the memfd's inode and
 * offset, so processes with different mappings meet), and FUTEX_WAIT only
 * reads the word, so a PROT_READ mapping is enough. A waiter in a read-only
 * mapping cannot register itself in a waiters counter, so the writer issues
 * FUTEX_WAKE on every publish (a few hundred ns without waiters; measured by
 * `theus-bench twin` as twin_publish_ns / futex_wake_nowaiter_ns).
 */
#include "theus/twin.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "base.h"

#if defined(__SANITIZE_THREAD__)
#define THEUS__TWIN_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define THEUS__TWIN_TSAN 1
#endif
#endif

#define TWIN_MAGIC UINT64_C(0x314e495753554854) /* "THUSWIN1" little-endian */
#define TWIN_HDR 64u
/* Longest single futex sleep: a waiter re-checks that the region still
 * exists this often, so a region freed under it cannot strand it. */
#define TWIN_WAIT_SLICE_MS 250

_Static_assert(ATOMIC_LLONG_LOCK_FREE == 2, "64-bit atomics must be lock-free to live in shared memory");
_Static_assert(ATOMIC_INT_LOCK_FREE == 2, "32-bit atomics must be lock-free to live in shared memory");

typedef struct twin_hdr {
  uint64_t magic;
  uint64_t nbytes;
  uint64_t stride;
  _Atomic uint64_t seq;
  _Atomic uint32_t futex;  /* changes on every publish and on close */
  _Atomic uint32_t closed;
  uint64_t reserved[3];
} twin_hdr;
_Static_assert(sizeof(twin_hdr) == TWIN_HDR, "twin header is one cache line");

struct theus_twin_writer {
  theus_arena *arena;
  theus_handle handle;
  twin_hdr *hdr;
  unsigned char *buf; /* buffer 0; buffer 1 is buf + stride */
  size_t nbytes, stride;
  uint64_t epoch; /* last published */
  int open;
  size_t cur_lo, cur_hi;   /* bytes the open frame may have changed */
  size_t prev_lo, prev_hi; /* bytes the last published frame changed */
  theus__err err;
};

struct theus_twin_reader {
  const theus_arena *arena;
  theus_handle handle;
  const twin_hdr *hdr;
  const unsigned char *buf;
  size_t nbytes, stride;
  unsigned attempts;
  theus_twin_reader_stats stats;
  theus__err err;
};

static int twin_range_ok(size_t n, size_t offset, size_t len) {
  return offset <= n && len <= n - offset;
}

/* ---- the racy copy (see the caveat above) ------------------------------- */

#ifdef THEUS__TWIN_TSAN
void __tsan_write_range(void *addr, unsigned long size);

__attribute__((no_sanitize_thread, noinline)) static void twin_copy_unchecked(void *dest, const void *src,
                                                                               size_t n) {
  const volatile unsigned char *s = src;
  unsigned char *d = dest;
  for (size_t i = 0; i < n; i++) d[i] = s[i];
}

static void twin_racy_copy(void *dest, const void *src, size_t n) {
  twin_copy_unchecked(dest, src, n);
  if (n) __tsan_write_range(dest, n);
}
#else
static inline void twin_racy_copy(void *dest, const void *src, size_t n) {
  if (n) memcpy(dest, src, n); /* dest may be NULL when n is 0 */
}
#endif

/* ---- writer ------------------------------------------------------------- */

int theus_twin_writer_open(theus_arena *a, size_t nbytes, theus_twin_writer **out) {
  if (out) *out = NULL;
  if (!a || !out || nbytes == 0) return THEUS_EINVAL;
  if (nbytes > (SIZE_MAX - TWIN_HDR) / 2 - 64) return THEUS_ETOOBIG;
  size_t stride = (nbytes + 63) & ~(size_t)63;

  theus_twin_writer *t = calloc(1, sizeof *t);
  if (!t) return THEUS_ENOMEM;
  void *mem = NULL;
  int rc = theus_arena_alloc(a, TWIN_HDR + 2 * stride, &t->handle, &mem);
  if (rc) goto fail_alloc;

  /* Arena memory may be recycled: make epoch 0 all zeros in both buffers so
   * the first catch-up has nothing to copy. */
  memset(mem, 0, TWIN_HDR + 2 * stride);
  t->arena = a;
  t->hdr = mem;
  t->buf = (unsigned char *)mem + TWIN_HDR;
  t->nbytes = nbytes;
  t->stride = stride;
  t->cur_lo = t->prev_lo = SIZE_MAX;
  t->hdr->magic = TWIN_MAGIC;
  t->hdr->nbytes = nbytes;
  t->hdr->stride = stride;
  atomic_store_explicit(&t->hdr->seq, 0, memory_order_release);
  theus__err_init(&t->err);
  *out = t;
  return 0;

fail_alloc:
  free(t);
  return rc;
}

theus_handle theus_twin_writer_handle(const theus_twin_writer *t) {
  return t ? t->handle : 0;
}

size_t theus_twin_writer_size(const theus_twin_writer *t) {
  return t ? t->nbytes : 0;
}

uint64_t theus_twin_writer_epoch(const theus_twin_writer *t) {
  return t ? t->epoch : 0;
}

const char *theus_twin_writer_errmsg(const theus_twin_writer *t) {
  return t ? theus__err_msg(&t->err) : "theus_twin_writer: NULL writer";
}

static unsigned char *twin_back(const theus_twin_writer *t) {
  return t->buf + ((t->epoch + 1) & 1) * t->stride;
}

/* Opens frame epoch+1: announce it (seq odd) before the first store to the
 * back buffer, then bring the back buffer up to the published content unless
 * the caller will overwrite it anyway. */
static void twin_frame_open(theus_twin_writer *t, unsigned flags) {
  /* Release store: a reader that loads 2e+1 must still synchronize with the
   * publish of epoch e (C17 release sequences would give that, C++20's do
   * not; it costs nothing on x86). The fence then orders this store before
   * every store into the back buffer (the proof at the top of this file). */
  atomic_store_explicit(&t->hdr->seq, 2 * t->epoch + 1, memory_order_release);
  atomic_thread_fence(memory_order_release);
  unsigned char *back = twin_back(t);
  const unsigned char *front = t->buf + (t->epoch & 1) * t->stride;
  if (!(flags & THEUS_TWIN_DISCARD) && t->prev_lo < t->prev_hi)
    memcpy(back + t->prev_lo, front + t->prev_lo, t->prev_hi - t->prev_lo);
  t->cur_lo = SIZE_MAX;
  t->cur_hi = 0;
  t->open = 1;
}

static void twin_mark(theus_twin_writer *t, size_t lo, size_t hi) {
  if (lo < t->cur_lo) t->cur_lo = lo;
  if (hi > t->cur_hi) t->cur_hi = hi;
}

int theus_twin_writer_begin(theus_twin_writer *t, unsigned flags, void **back) {
  if (!t || !back) return THEUS_EINVAL;
  if (flags & ~THEUS_TWIN_DISCARD)
    return theus__err_set(&t->err, THEUS_EINVAL,
                     "theus_twin_writer_begin: unknown flags 0x%x on region 0x%" PRIx64
                     "; the only flag is THEUS_TWIN_DISCARD",
                     flags & ~THEUS_TWIN_DISCARD, t->handle);
  if (!t->open) twin_frame_open(t, flags);
  /* The caller gets a raw pointer, so any byte may change. */
  twin_mark(t, 0, t->nbytes);
  *back = twin_back(t);
  return 0;
}

int theus_twin_writer_write(theus_twin_writer *t, size_t offset, const void *src, size_t len) {
  if (!t || (!src && len)) return THEUS_EINVAL;
  if (!twin_range_ok(t->nbytes, offset, len))
    return theus__err_set(&t->err, THEUS_EINVAL,
                     "theus_twin_writer_write: range [%zu, %zu + %zu) is outside the live region 0x%" PRIx64
                     " of %zu bytes; keep offset + len <= %zu",
                     offset, offset, len, t->handle, t->nbytes, t->nbytes);
  if (!t->open) twin_frame_open(t, 0);
  if (len == 0) return 0;
  memcpy(twin_back(t) + offset, src, len);
  twin_mark(t, offset, offset + len);
  return 0;
}

static void twin_wake_all(twin_hdr *h) {
  /* Single writer: a load and a store are enough to change the word. */
  uint32_t f = atomic_load_explicit(&h->futex, memory_order_relaxed);
  atomic_store_explicit(&h->futex, f + 1, memory_order_release);
  theus__futex_wake(&h->futex);
}

int theus_twin_writer_publish(theus_twin_writer *t, uint64_t *epoch) {
  if (!t) return THEUS_EINVAL;
  if (!t->open) twin_frame_open(t, 0);
  /* Release: the whole back buffer is visible to whoever reads this seq. */
  atomic_store_explicit(&t->hdr->seq, 2 * (t->epoch + 1), memory_order_release);
  t->epoch++;
  t->prev_lo = t->cur_lo;
  t->prev_hi = t->cur_hi;
  t->open = 0;
  twin_wake_all(t->hdr);
  if (epoch) *epoch = t->epoch;
  return 0;
}

void theus_twin_writer_close(theus_twin_writer *t, int free_region) {
  if (!t) return;
  theus_arena *a = t->arena;
  theus_handle h = t->handle;
  atomic_store_explicit(&t->hdr->closed, 1, memory_order_release);
  twin_wake_all(t->hdr);
  theus__err_fini(&t->err);
  free(t);
  if (free_region) theus_arena_free(a, h);
}

/* ---- readers ------------------------------------------------------------ */

/* Resolves h and checks that it names a live region; fills the geometry. */
static int twin_resolve(const theus_arena *a, theus_handle h, const twin_hdr **hdr) {
  const void *p = NULL;
  size_t len = 0;
  int rc = theus_arena_view(a, h, &p, &len);
  if (rc) return rc;
  const twin_hdr *x = p;
  if (len < TWIN_HDR || x->magic != TWIN_MAGIC || x->nbytes == 0 || x->stride < x->nbytes ||
      x->stride % 64 != 0 || x->stride > (len - TWIN_HDR) / 2)
    return THEUS_EINVAL;
  *hdr = x;
  return 0;
}

int theus_twin_probe(const theus_arena *a, theus_handle h, size_t *nbytes) {
  const twin_hdr *hdr = NULL;
  if (!a) return THEUS_EINVAL;
  int rc = twin_resolve(a, h, &hdr);
  if (rc == 0 && nbytes) *nbytes = hdr->nbytes;
  return rc;
}

int theus_twin_reader_open(const theus_arena *a, theus_handle h, theus_twin_reader **out) {
  if (out) *out = NULL;
  if (!a || !out) return THEUS_EINVAL;
  const twin_hdr *hdr = NULL;
  int rc = twin_resolve(a, h, &hdr);
  if (rc) return rc;
  theus_twin_reader *r = calloc(1, sizeof *r);
  if (!r) return THEUS_ENOMEM;
  r->arena = a;
  r->handle = h;
  r->hdr = hdr;
  r->buf = (const unsigned char *)hdr + TWIN_HDR;
  r->nbytes = hdr->nbytes;
  r->stride = hdr->stride;
  r->attempts = THEUS_TWIN_DEFAULT_RETRIES;
  theus__err_init(&r->err);
  *out = r;
  return 0;
}

void theus_twin_reader_close(theus_twin_reader *r) {
  if (!r) return;
  theus__err_fini(&r->err);
  free(r);
}

size_t theus_twin_reader_size(const theus_twin_reader *r) {
  return r ? r->nbytes : 0;
}

int theus_twin_reader_set_retries(theus_twin_reader *r, unsigned attempts) {
  if (!r) return THEUS_EINVAL;
  if (attempts == 0)
    return theus__err_set(&r->err, THEUS_EINVAL,
                     "theus_twin_reader_set_retries: 0 attempts on region 0x%" PRIx64
                     " would fail every read; use 1 or more",
                     r->handle);
  r->attempts = attempts;
  return 0;
}

void theus_twin_reader_stats_get(const theus_twin_reader *r, theus_twin_reader_stats *out) {
  if (!out) return;
  if (!r) {
    memset(out, 0, sizeof *out);
    return;
  }
  *out = r->stats;
}

const char *theus_twin_reader_errmsg(const theus_twin_reader *r) {
  return r ? theus__err_msg(&r->err) : "theus_twin_writer: NULL reader";
}

uint64_t theus_twin_reader_epoch(const theus_twin_reader *r) {
  return r ? atomic_load_explicit(&r->hdr->seq, memory_order_acquire) >> 1 : 0;
}

static int twin_closed_error(theus_twin_reader *r, const char *where) {
  return theus__err_set(&r->err, THEUS_ECLOSED,
                   "%s: live region 0x%" PRIx64 " was closed by its writer; open the new region it "
                   "was replaced with, if any",
                   where, r->handle);
}

int theus_twin_reader_read_at(theus_twin_reader *r, size_t offset, void *dest, size_t len, uint64_t *epoch) {
  if (!r || (!dest && len)) return THEUS_EINVAL;
  if (!twin_range_ok(r->nbytes, offset, len))
    return theus__err_set(&r->err, THEUS_EINVAL,
                     "theus_twin_reader_read_at: range [%zu, %zu + %zu) is outside the live region 0x%" PRIx64
                     " of %zu bytes; keep offset + len <= %zu",
                     offset, offset, len, r->handle, r->nbytes, r->nbytes);
  if (atomic_load_explicit(&r->hdr->closed, memory_order_relaxed))
    return twin_closed_error(r, "theus_twin_reader_read_at");
  for (unsigned i = 0; i < r->attempts; i++) {
    uint64_t s0 = atomic_load_explicit(&r->hdr->seq, memory_order_acquire);
    uint64_t e = s0 >> 1;
    twin_racy_copy(dest, r->buf + (e & 1) * r->stride + offset, len);
    atomic_thread_fence(memory_order_acquire);
    uint64_t s1 = atomic_load_explicit(&r->hdr->seq, memory_order_relaxed);
    if (s1 <= 2 * e + 2) {
      /* A destroyed region's pages read as zeros (punched): closed == 0 and
       * seq == 0 would pass, the magic word does not. */
      if (__atomic_load_n(&r->hdr->magic, __ATOMIC_RELAXED) != TWIN_MAGIC)
        return twin_closed_error(r, "theus_twin_reader_read_at");
      r->stats.reads++;
      if (epoch) *epoch = e;
      return 0;
    }
    r->stats.retries++;
  }
  r->stats.starved++;
  return theus__err_set(&r->err, THEUS_ESTARVED,
                   "theus_twin_reader_read_at: the writer of live region 0x%" PRIx64
                   " overtook all %u copies of [%zu, %zu + %zu); read smaller ranges, raise the bound "
                   "with theus_twin_reader_set_retries, or publish less often",
                   r->handle, r->attempts, offset, offset, len);
}

/* Slow path only: the region may have been freed (and its memory reused)
 * while we slept; the arena's generation check tells. */
static int twin_still_there(const theus_twin_reader *r) {
  const twin_hdr *hdr = NULL;
  return twin_resolve(r->arena, r->handle, &hdr) == 0 && hdr == r->hdr;
}

int theus_twin_reader_wait_epoch(theus_twin_reader *r, uint64_t seen, int64_t timeout_ms, uint64_t *now) {
  if (!r) return THEUS_EINVAL;
  uint64_t deadline = theus__deadline_ns(theus__now_ns(), timeout_ms);
  for (;;) {
    /* Load the futex word before the epoch: if a publish lands in between,
     * the word no longer matches and FUTEX_WAIT returns at once. */
    uint32_t word = atomic_load_explicit(&r->hdr->futex, memory_order_acquire);
    if (atomic_load_explicit(&r->hdr->closed, memory_order_acquire))
      return twin_closed_error(r, "theus_twin_reader_wait_epoch");
    uint64_t e = atomic_load_explicit(&r->hdr->seq, memory_order_acquire) >> 1;
    if (e > seen) {
      if (now) *now = e;
      return 0;
    }
    if (!twin_still_there(r)) return twin_closed_error(r, "theus_twin_reader_wait_epoch");
    const int64_t slice = (int64_t)TWIN_WAIT_SLICE_MS * 1000000;
    uint64_t t = theus__now_ns();
    int64_t left = deadline == UINT64_MAX ? slice : deadline > t ? (int64_t)(deadline - t) : 0;
    if (left <= 0)
      return theus__err_set(&r->err, THEUS_ETIMEDOUT,
                       "theus_twin_reader_wait_epoch: live region 0x%" PRIx64
                       " stayed at epoch %" PRIu64 " for %" PRId64 " ms; the writer published nothing",
                       r->handle, e, timeout_ms);
    if (left > slice) left = slice;
    if (theus__futex_wait(&r->hdr->futex, word, left) != 0 && errno != EAGAIN && errno != EINTR &&
        errno != ETIMEDOUT)
      return theus__err_set(&r->err, THEUS_ESYS,
                       "theus_twin_reader_wait_epoch: FUTEX_WAIT on live region 0x%" PRIx64 " failed: %s",
                       r->handle, strerror(errno));
  }
}
