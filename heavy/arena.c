/* The shared-memory arena: slots, generations, budgets, stats, bytes API.
 * Layout and the slot protocol are described in arena_int.h. */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "arena_int.h"

#define MiB (1024ull * 1024ull)
#define GiB (1024ull * MiB)
#define NO_SLOT UINT32_MAX

/* `to` is a power of two (grain or page size). */
static uint64_t round_up(uint64_t v, uint64_t to) { return (v + to - 1) & ~(to - 1); }

/* Half of what this process may still use: the arena's pages are shared
 * memory the kernel cannot reclaim (only swap), and the other half is left to
 * the rest of the program (workers' private memory, the JSON domain, copies a
 * process makes) and to other programs. The arena reserves pages only when an
 * array is allocated, so a generous budget costs nothing until used; going
 * past real memory is still an error at allocation (fallocate), never a
 * SIGBUS. The floor keeps small containers usable; 1 GiB (the seed's budget)
 * when the system does not say. */
uint64_t theus_arena_default_budget(void) {
  uint64_t avail = theus__os_mem_available();
  if (!avail) return 1 * GiB;
  uint64_t b = avail / 2 / MiB * MiB;
  return b < 256 * MiB ? 256 * MiB : b;
}

void theus_arena_config_init(theus_arena_config *cfg) {
  if (!cfg) return;
  cfg->hard_limit = theus_arena_default_budget();
  cfg->single_limit = cfg->hard_limit; /* one array may use the whole budget */
  cfg->soft_limit_pct = 85;
  cfg->max_handles = 1u << 20;
}

/* ---- errors ------------------------------------------------------------ */

int theus__arena_fail(const theus_arena *ca, int code, const char *fmt, ...) {
  theus_arena *a = (theus_arena *)ca; /* the message is mutable state of any arena */
  va_list ap;
  va_start(ap, fmt);
  theus__err_vset(&a->err, code, fmt, ap);
  va_end(ap);
  /* hdr is NULL while open fails before the mapping exists */
  __atomic_fetch_add(a->readonly || !a->hdr ? &a->local_errors : &a->hdr->errors, 1, __ATOMIC_RELAXED);
  return code;
}

const char *theus_arena_errmsg(const theus_arena *a) {
  return a ? theus__err_msg(&a->err) : "no arena (NULL: theus_arena_open ran out of memory)";
}

/* ---- open / attach / close -------------------------------------------- */

static int check_config(theus_arena *a, const theus_arena_config *c, uint64_t page) {
  if (c->hard_limit < page || c->single_limit == 0 || c->max_handles == 0 ||
      c->max_handles > (1u << 30) || c->soft_limit_pct > 100)
    return theus__arena_fail(a, THEUS_EINVAL,
                             "theus_arena_open: invalid config (hard_limit %" PRIu64 " must be >= the page size %" PRIu64
                             ", single_limit %" PRIu64 " > 0, max_handles %u in 1..2^30, soft %u%% <= 100)",
                             c->hard_limit, page, c->single_limit, c->max_handles, c->soft_limit_pct);
  return 0;
}

static void fill_config(theus_arena_config *c, const theus_arena_config *user) {
  theus_arena_config def;
  theus_arena_config_init(&def);
  *c = user ? *user : def;
  if (!c->hard_limit) c->hard_limit = def.hard_limit;
  if (!c->single_limit) c->single_limit = c->hard_limit; /* the budget as set, not the machine's */
  if (!c->soft_limit_pct) c->soft_limit_pct = def.soft_limit_pct;
  if (!c->max_handles) c->max_handles = def.max_handles;
}

static theus_arena *arena_new(void) {
  theus_arena *a = calloc(1, sizeof *a);
  if (!a) return NULL;
  a->fd = a->ro_fd = -1;
  pthread_mutex_init(&a->mu, NULL);
  theus__err_init(&a->err);
  return a;
}

static void init_header(theus__arena_hdr *h, const theus_arena_config *c, uint64_t page) {
  uint64_t slots_off = round_up(sizeof *h, page);
  uint64_t data_off = round_up(slots_off + (uint64_t)c->max_handles * sizeof(theus__slot), page);
  *h = (theus__arena_hdr){.magic = THEUS__ARENA_MAGIC, .page = page,
                          .hard_limit = c->hard_limit, .single_limit = c->single_limit,
                          .soft_limit = c->hard_limit / 100 * c->soft_limit_pct,
                          .max_handles = c->max_handles, .slots_off = slots_off,
                          .data_off = data_off, .data_size = round_up(2 * c->hard_limit, page),
                          .epoch = 1};
  h->total_size = data_off + h->data_size;
}

static void bind_layout(theus_arena *a) {
  a->hdr = (theus__arena_hdr *)a->base;
  a->slots = (theus__slot *)(a->base + a->hdr->slots_off);
  a->data = a->base + a->hdr->data_off;
}

static int owner_state_init(theus_arena *a) {
  const theus__arena_hdr *h = a->hdr;
  uint64_t blocks = 3 * h->max_handles + 8;
  if (blocks > UINT32_MAX - 1) blocks = UINT32_MAX - 1;
  a->pages = theus__os_zalloc(h->data_size / h->page * sizeof *a->pages); /* one per page of twice the budget */
  if (!a->pages) return THEUS_ENOMEM;
  a->page_tag = 1;
  a->page_shift = (unsigned)__builtin_ctzll(h->page);
  a->free_slots = NO_SLOT;
  return theus__tlsf_init(&a->tlsf, h->data_size, (uint32_t)blocks);
}

/* Like sqlite3_open: a failure still hands back the arena, carrying the message. */
int theus_arena_open(const theus_arena_config *user, theus_arena **out) {
  return theus__arena_open_at(user, NULL, out);
}

int theus__arena_open_at(const theus_arena_config *user, const char *dir, theus_arena **out) {
  if (!out) return THEUS_EINVAL;
  theus_arena_config c;
  theus_arena *a = *out = arena_new();
  if (!a) return THEUS_ENOMEM;
  uint64_t page = theus__os_page_size();
  fill_config(&c, user);
  int rc = check_config(a, &c, page);
  if (rc) return rc;
  theus__arena_hdr h;
  init_header(&h, &c, page);
  a->map_size = h.total_size;
  if ((rc = dir ? theus__os_tmpfile(dir, h.total_size, &a->fd) : theus__os_memfd("theus-arena", h.total_size, &a->fd)) ||
      (rc = theus__os_reopen_ro(a->fd, &a->ro_fd)))
    return theus__arena_fail(a, rc, "theus_arena_open: cannot create the %" PRIu64 "-byte memfd or its read-only descriptor: %s",
                             h.total_size, strerror(errno));
  if ((rc = theus__os_map(a->fd, h.total_size, 1, (void **)&a->base)))
    return theus__arena_fail(a, rc, "theus_arena_open: cannot map %" PRIu64 " bytes (hard_limit %" PRIu64
                             " needs twice its size of address space): %s", h.total_size, c.hard_limit,
                             strerror(errno));
  if ((rc = theus__os_reserve(a->fd, 0, h.slots_off))) /* the header page; slot pages as they are used */
    return theus__arena_fail(a, THEUS_ENOMEM, "theus_arena_open: cannot reserve the header page (%s): the machine "
                             "or the arena's backing file is out of memory", strerror(errno));
  memcpy(a->base, &h, sizeof h);
  bind_layout(a);
  if ((rc = owner_state_init(a)))
    return theus__arena_fail(a, rc, "theus_arena_open: out of memory for the owner's bookkeeping "
                             "(max_handles %u, %" PRIu64 " pages)", c.max_handles, h.data_size / page);
  return 0;
}

int theus_arena_open_ro(int ro_fd, theus_arena **out) {
  if (!out) return THEUS_EINVAL;
  *out = NULL;
  if (ro_fd < 0) return THEUS_EINVAL;
  theus_arena *a = arena_new();
  if (!a) return THEUS_ENOMEM;
  a->readonly = 1;
  int rc = theus__os_fd_size(ro_fd, &a->map_size);
  if (!rc && a->map_size < sizeof(theus__arena_hdr)) rc = THEUS_EINVAL; /* not a theus arena */
  if (!rc) rc = theus__os_map(ro_fd, a->map_size, 0, (void **)&a->base);
  if (!rc && (((theus__arena_hdr *)a->base)->magic != THEUS__ARENA_MAGIC ||
              ((theus__arena_hdr *)a->base)->total_size != a->map_size))
    rc = THEUS_EINVAL; /* not a theus arena */
  if (rc) {
    theus_arena_close(a);
    return rc;
  }
  bind_layout(a);
  *out = a;
  return 0;
}

void theus_arena_close(theus_arena *a) {
  if (!a) return;
  if (a->pages) /* set only once the header is mapped */
    theus__os_zfree(a->pages, a->hdr->data_size / a->hdr->page * sizeof *a->pages);
  theus__os_unmap(a->base, a->map_size);
  if (a->fd >= 0) close(a->fd);
  if (a->ro_fd >= 0 && !a->readonly) close(a->ro_fd);
  theus__tlsf_destroy(&a->tlsf);
  pthread_mutex_destroy(&a->mu);
  theus__err_fini(&a->err);
  free(a);
}

int theus_arena_ro_fd(const theus_arena *a) { return a ? a->ro_fd : THEUS_EINVAL; }

int theus_arena_is_readonly(const theus_arena *a) { return a ? a->readonly : 0; }

int theus_arena_rw_fd(const theus_arena *a) { return !a ? THEUS_EINVAL : a->readonly ? -1 : a->fd; }

int theus_arena_file_range(const theus_arena *a, theus_handle h, uint64_t *offset, uint64_t *len) {
  THEUS__ARENA_ARG(a, "theus_arena_file_range");
  THEUS__ARG_NONNULL(a, offset, "theus_arena_file_range");
  THEUS__ARG_NONNULL(a, len, "theus_arena_file_range");
  theus__slot s;
  s.offset = s.size = s.rsize = 0;
  int rc = theus__arena_resolve(a, h, &s);
  if (rc) return rc;
  uint64_t page = a->hdr->page, n = round_up(s.size, page);
  if (s.size < page || s.rsize < n)
    return theus__arena_fail(a, THEUS_EINVAL, "array 0x%016" PRIx64 " of %" PRIu64 " bytes shares its page with "
                             "other arrays (arrays of at least %" PRIu64 " bytes own their pages)", h, s.size, page);
  *offset = a->hdr->data_off + s.offset;
  *len = n;
  return 0;
}

/* ---- handle resolution (lock-free; works on read-only attachments) ------ */

int theus__arena_resolve(const theus_arena *a, theus_handle h, theus__slot *copy) {
  if (h == 0) return theus__arena_fail(a, THEUS_EZEROHANDLE, "handle 0 is never valid (was it initialised?)");
  uint32_t idx = THEUS_HANDLE_INDEX(h), gen = THEUS_HANDLE_GEN(h);
  if (idx >= a->hdr->max_handles || gen == 0)
    return theus__arena_fail(a, THEUS_EBADHANDLE, "handle 0x%016" PRIx64 " is out of range (slot %u of %" PRIu64 ")",
                             h, idx, a->hdr->max_handles);
  if (idx >= THEUS__LDA(&a->hdr->slots_reserved)) /* its page was never reserved: do not fault it in */
    return theus__arena_fail(a, THEUS_EBADHANDLE, "handle 0x%016" PRIx64 " was never issued (slot %u)", h, idx);
  const theus__slot *s = &a->slots[idx];
  uint32_t g = THEUS__LDA(&s->gen), e = THEUS__LDA(&s->epoch);
  if (gen > g)
    return theus__arena_fail(a, THEUS_EBADHANDLE, "handle 0x%016" PRIx64 " was never issued (slot %u is at generation %u)",
                             h, idx, g);
  if (gen < g)
    return theus__arena_fail(a, THEUS_ESTALE, "stale handle 0x%016" PRIx64 ": slot %u was freed and reused (generation %u, now %u)",
                             h, idx, gen, g);
  if (e == 0)
    return theus__arena_fail(a, THEUS_EFREED, "handle 0x%016" PRIx64 " was already freed", h);
  if (e != THEUS__LDA(&a->hdr->epoch))
    return theus__arena_fail(a, THEUS_ESTALE, "stale handle 0x%016" PRIx64 ": invalidated by an arena reset", h);
  /* Acquire loads order every field read before the re-check below (the
   * seqlock reader side; an acquire fence would do, but TSan rejects fences). */
  copy->offset = THEUS__LDA(&s->offset);
  copy->size = THEUS__LDA(&s->size);
  copy->rsize = THEUS__LDA(&s->rsize);
  copy->block = THEUS__LDA(&s->block);
  copy->dtype = THEUS__LDA(&s->dtype);
  copy->ndim = THEUS__LDA(&s->ndim);
  for (unsigned i = 0; i < THEUS_MAX_DIMS; i++) copy->shape[i] = THEUS__LDA(&s->shape[i]);
  if (THEUS__LD(&s->gen) != g || THEUS__LD(&s->epoch) != e)
    return theus__arena_fail(a, THEUS_ESTALE, "stale handle 0x%016" PRIx64 ": freed while being resolved", h);
  copy->gen = g;
  copy->epoch = e;
  return 0;
}

/* ---- budgets and counters (owner, under mu) ---------------------------- */

#define BUMP(field, d) THEUS__ST(&a->hdr->field, THEUS__LD(&a->hdr->field) + (d))

static int budget_take(theus_arena *a, uint64_t n, uint64_t rsize) {
  theus__arena_hdr *h = a->hdr;
  char s1[32], s2[32], s3[32];
  if (n > h->single_limit) {
    BUMP(hard_limit_hits, 1);
    return theus__arena_fail(a, THEUS_ETOOBIG, "allocation too large: %" PRIu64 " bytes (%s) exceeds the single-allocation "
                             "limit of %" PRIu64 " bytes (%s); raise theus_arena_config.single_limit to at least %s",
                             n, theus_size_format(n, 0, s1, sizeof s1), h->single_limit,
                             theus_size_format(h->single_limit, 0, s2, sizeof s2), theus_size_format(n, 1, s3, sizeof s3));
  }
  uint64_t live = THEUS__LD(&h->bytes_live);
  if (rsize > h->hard_limit - live) {
    BUMP(hard_limit_hits, 1);
    return theus__arena_fail(a, THEUS_EBUDGET, "global budget exceeded: %" PRIu64 " bytes live + %" PRIu64 " requested > "
                             "hard limit %" PRIu64 " (%s); free arrays or raise theus_arena_config.hard_limit to at least %s",
                             live, rsize, h->hard_limit, theus_size_format(h->hard_limit, 0, s1, sizeof s1),
                             theus_size_format(live + rsize, 1, s2, sizeof s2));
  }
  live += rsize;
  THEUS__ST(&h->bytes_live, live);
  if (live > THEUS__LD(&h->peak_bytes)) THEUS__ST(&h->peak_bytes, live);
  if (live > h->soft_limit) BUMP(soft_limit_hits, 1);
  return 0;
}

/* ---- memory check (owner, under mu) -------------------------------------
 * fallocate on a memfd inside a memory cgroup that cannot hold the pages does
 * not fail: the cgroup's OOM killer ends the process (exit 137, no message).
 * So before reserving, compare with what the cgroups and the machine can still
 * hold, after a headroom, and refuse with THEUS_ENOMEM instead. Reading the
 * limits costs tens of microseconds, so the reading is cached for
 * THEUS__ROOM_TTL_NS and decremented by what the arena reserves meanwhile; a
 * request larger than the cached room re-reads before refusing. */

static uint64_t room_headroom(uint64_t limit) {
  uint64_t h = limit / THEUS__ROOM_HEADROOM_DIV;
  return h > THEUS__ROOM_HEADROOM_MIN ? h : THEUS__ROOM_HEADROOM_MIN;
}

static int room_take(theus_arena *a, uint64_t len) {
  uint64_t now = theus__now_ns();
  if (len <= a->room && a->room_at && now - a->room_at < THEUS__ROOM_TTL_NS) {
    a->room -= len;
    return 0;
  }
  theus__mem_room r;
  theus__os_mem_room_at(a->memroot, &r, room_headroom);
  a->room = r.avail;
  a->room_at = now;
  if (len <= a->room) {
    a->room -= len;
    return 0;
  }
  a->room_refused = 1;
  return theus__arena_fail(a, THEUS_ENOMEM, "cannot reserve %" PRIu64 " bytes: %s has a limit of %" PRIu64
                           " bytes with %" PRIu64 " in use, and %" PRIu64 " bytes are kept as headroom "
                           "(free arrays, or raise the limit)", len, r.what, r.limit, r.used, room_headroom(r.limit));
}

void theus__arena_set_memroot(theus_arena *a, const char *sys) {
  pthread_mutex_lock(&a->mu);
  a->memroot = sys;
  a->room_at = 0; /* read it at the next reservation */
  pthread_mutex_unlock(&a->mu);
}

static void room_give(theus_arena *a, uint64_t len) {
  a->room = a->room > UINT64_MAX - len ? UINT64_MAX : a->room + len;
}

/* ---- slots (owner, under mu) ------------------------------------------- */

/* Reserves the page of the slot table holding slot idx (the table is sparse
 * like the data area: a page is reserved when its first slot is handed out). */
static int slots_reserve(theus_arena *a, uint32_t idx) {
  uint64_t pg = a->hdr->page, off = (a->hdr->slots_off + (uint64_t)idx * sizeof(theus__slot)) & ~(pg - 1);
  int rc = room_take(a, pg);
  if (rc) return rc;
  if ((rc = theus__os_reserve(a->fd, off, pg))) {
    room_give(a, pg);
    return theus__arena_fail(a, rc, "cannot reserve a page of the handle table for handle slot %u (%s): the "
                             "machine or the arena's backing file is out of memory", idx, strerror(errno));
  }
  THEUS__STR(&a->hdr->slots_reserved, (uint32_t)((off + pg - a->hdr->slots_off) / sizeof(theus__slot)));
  return 0;
}

/* A free slot into *idx: 0, THEUS_ENOSPACE (all in use) or a reservation failure. */
static int slot_take(theus_arena *a, uint32_t *idx) {
  if (a->free_slots != NO_SLOT) {
    *idx = a->free_slots;
    a->free_slots = a->slots[*idx].next_free;
    return 0;
  }
  for (;;) { /* fresh slots since the reset; skip retired ones */
    uint32_t hwm = a->hdr->slot_hwm;
    if (hwm >= a->hdr->max_handles)
      return theus__arena_fail(a, THEUS_ENOSPACE, "all %" PRIu64 " handle slots are in use (raise "
                               "theus_arena_config.max_handles)", a->hdr->max_handles);
    int rc = hwm < a->hdr->slots_reserved ? 0 : slots_reserve(a, hwm);
    if (rc) return rc;
    THEUS__ST(&a->hdr->slot_hwm, hwm + 1);
    if (a->slots[hwm].gen != UINT32_MAX) {
      *idx = hwm;
      return 0;
    }
  }
}

static void slot_put(theus_arena *a, uint32_t idx) {
  if (a->slots[idx].gen == UINT32_MAX) return; /* retired: its handles are never reissued */
  a->slots[idx].next_free = a->free_slots;
  a->free_slots = idx;
}

static int reserve(theus_arena *a, uint64_t off, uint64_t len) {
  int rc = room_take(a, len);
  if (rc) return rc;
  rc = theus__os_reserve(a->fd, a->hdr->data_off + off, len);
  if (rc) room_give(a, len);
  return rc;
}

static void release(theus_arena *a, uint64_t off, uint64_t len) {
  if (theus__os_release(a->fd, a->hdr->data_off + off, len) == 0) room_give(a, len);
}

/* ---- pages (owner, under mu) --------------------------------------------
 * Arrays of a page or more own their pages: reserve on alloc, punch on free.
 * Smaller arrays share pages; a per-page count says when a page empties, and
 * a small cache keeps up to THEUS__PAGE_CACHE empty pages reserved so that a
 * tight alloc/free loop of small arrays makes no system call. Entries carry
 * the reset epoch (tag), so a reset forgets them all in O(1). */

static theus__page *page_at(theus_arena *a, uint64_t p) {
  theus__page *e = &a->pages[p];
  if (e->tag != a->page_tag) *e = (theus__page){.tag = a->page_tag};
  return e;
}

static void cache_drop(theus_arena *a, uint64_t p) {
  for (unsigned i = 0; i < a->ncache; i++)
    if (a->cache[i] == p) {
      a->cache[i] = a->cache[--a->ncache];
      page_at(a, p)->cached = 0;
      return;
    }
}

static void page_release(theus_arena *a, uint64_t p) {
  if (a->ncache == THEUS__PAGE_CACHE) { /* evict the oldest cached page */
    uint32_t old = a->cache[0];
    a->cache[0] = a->cache[--a->ncache];
    page_at(a, old)->cached = 0;
    release(a, (uint64_t)old * a->hdr->page, a->hdr->page);
  }
  a->cache[a->ncache++] = (uint32_t)p;
  page_at(a, p)->cached = 1;
}

static int pages_reserve_small(theus_arena *a, uint64_t off, uint64_t len) {
  unsigned sh = a->page_shift;
  uint64_t pg = a->hdr->page, first = off >> sh, last = (off + len - 1) >> sh;
  for (uint64_t p = first; p <= last; p++) {
    theus__page *e = page_at(a, p);
    if (e->users == 0 && !e->cached) {
      int rc = reserve(a, p * pg, pg);
      if (rc) {
        for (uint64_t q = first; q < p; q++)
          if (--page_at(a, q)->users == 0) page_release(a, q);
        return rc;
      }
    }
    if (e->cached) cache_drop(a, p);
    e->users++;
  }
  return 0;
}

static void pages_release_small(theus_arena *a, uint64_t off, uint64_t len) {
  unsigned sh = a->page_shift;
  uint64_t first = off >> sh, last = (off + len - 1) >> sh;
  for (uint64_t p = first; p <= last; p++) {
    theus__page *e = page_at(a, p);
    if (--e->users == 0) page_release(a, p);
  }
}

static int pages_reserve(theus_arena *a, uint64_t off, uint64_t len) {
  if (len < a->hdr->page) return pages_reserve_small(a, off, len);
  uint64_t first = off >> a->page_shift, end = (off + len) >> a->page_shift;
  for (unsigned i = a->ncache; i-- > 0;) /* cached pages it now owns */
    if (a->cache[i] >= first && a->cache[i] < end) cache_drop(a, a->cache[i]);
  return reserve(a, off, len);
}

static void pages_release(theus_arena *a, uint64_t off, uint64_t len) {
  if (len < a->hdr->page)
    pages_release_small(a, off, len);
  else
    release(a, off, len);
}

/* ---- allocation --------------------------------------------------------
 * Small blocks (<= 1 KiB) freed recently are kept, still placed and with
 * their pages counted, in a lookaside per size class (like a thread cache),
 * so a write/free loop of small arrays touches neither TLSF nor the pages.
 * At most 16 x 16 blocks (< 136 KiB) are held this way; bytes_live does not
 * count them; a reset forgets them. */

static unsigned look_class(uint64_t rsize) { return (unsigned)(rsize / THEUS__TLSF_GRAIN) - 1u; }

static int look_pop(theus_arena *a, uint64_t rsize, uint32_t *block) {
  if (rsize > THEUS__LOOK_CLASSES * THEUS__TLSF_GRAIN) return 0;
  unsigned c = look_class(rsize);
  if (a->nlook[c] == 0) return 0;
  *block = a->look[c][--a->nlook[c]];
  return 1;
}

static int look_push(theus_arena *a, uint64_t rsize, uint32_t block) {
  if (rsize > THEUS__LOOK_CLASSES * THEUS__TLSF_GRAIN) return 0;
  unsigned c = look_class(rsize);
  if (a->nlook[c] == THEUS__LOOK_DEPTH) return 0;
  a->look[c][a->nlook[c]++] = block;
  return 1;
}

static int place(theus_arena *a, uint64_t rsize, uint32_t *block) {
  if (look_pop(a, rsize, block)) return 0;
  uint64_t align = rsize >= a->hdr->page ? a->hdr->page : THEUS__TLSF_GRAIN;
  uint32_t b = theus__tlsf_alloc(&a->tlsf, rsize, align);
  if (b == THEUS__TLSF_NONE)
    return theus__arena_fail(a, THEUS_ENOSPACE, "no free range of %" PRIu64 " bytes in the arena's address space "
                             "(fragmented: %" PRIu64 " bytes live); free arrays or reset", rsize, a->hdr->bytes_live);
  uint64_t off = theus__tlsf_off(&a->tlsf, b);
  a->room_refused = 0;
  int rc = pages_reserve(a, off, rsize);
  if (rc) {
    theus__tlsf_free(&a->tlsf, b);
    if (a->room_refused) return rc; /* the message names the limit already */
    return theus__arena_fail(a, rc, "cannot reserve %" PRIu64 " bytes of memory for the array: reserving its pages "
                             "failed (%s): the machine or the arena's backing file is out of memory",
                             rsize, strerror(errno));
  }
  if (off + rsize > a->extent) a->extent = off + rsize;
  *block = b;
  return 0;
}

static void slot_publish(theus_arena *a, uint32_t idx, uint32_t block, uint64_t n, uint64_t rsize,
                         uint8_t dtype, unsigned ndim, const uint64_t *shape) {
  theus__slot *s = &a->slots[idx];
  /* Fields are stored with release order: a reader that sees a new field
   * value (acquire) then also sees the new generation on its re-check, so a
   * stale handle racing a reuse fails even on weakly ordered CPUs. */
  THEUS__ST(&s->gen, s->gen + 1); /* generations never go back: handles never reissued */
  THEUS__STR(&s->offset, theus__tlsf_off(&a->tlsf, block));
  THEUS__STR(&s->size, n);
  THEUS__STR(&s->rsize, rsize);
  THEUS__STR(&s->block, block);
  THEUS__STR(&s->dtype, dtype);
  THEUS__STR(&s->ndim, (uint8_t)ndim);
  for (unsigned i = 0; i < THEUS_MAX_DIMS; i++) THEUS__STR(&s->shape[i], i < ndim ? shape[i] : 0);
  THEUS__STR(&s->epoch, a->hdr->epoch);
}

int theus__arena_alloc_typed(theus_arena *a, uint64_t n, uint8_t dtype, unsigned ndim,
                             const uint64_t *shape, theus_handle *out, void **ptr) {
  THEUS__ARENA_ARG(a, "theus_arena_alloc");
  THEUS__ARG_NONNULL(a, out, "theus_arena_alloc");
  if (a->readonly) return theus__arena_fail(a, THEUS_EREADONLY, "cannot allocate: this arena is attached read-only");
  if (n == 0) return theus__arena_fail(a, THEUS_EINVAL, "cannot allocate 0 bytes");
  if (n > a->hdr->single_limit || n > a->hdr->hard_limit) { /* before rounding: n near 2^64 would wrap */
    pthread_mutex_lock(&a->mu);
    int rc = budget_take(a, n, n);
    pthread_mutex_unlock(&a->mu);
    if (rc) return rc;
  }
  uint64_t rsize = round_up(n, n >= a->hdr->page ? a->hdr->page : THEUS__TLSF_GRAIN);
  uint32_t block = 0, idx = 0;
  pthread_mutex_lock(&a->mu);
  int rc = budget_take(a, n, rsize);
  if (rc) goto out;
  if ((rc = slot_take(a, &idx))) goto unbudget;
  if ((rc = place(a, rsize, &block))) goto unslot;
  slot_publish(a, idx, block, n, rsize, dtype, ndim, shape);
  BUMP(alloc_count, 1);
  BUMP(active_handles, 1);
  *out = ((uint64_t)idx << 32) | a->slots[idx].gen;
  if (ptr) *ptr = a->data + a->slots[idx].offset;
  goto out;
unslot:
  slot_put(a, idx);
unbudget:
  BUMP(bytes_live, -rsize);
out:
  pthread_mutex_unlock(&a->mu);
  return rc;
}

int theus_arena_alloc(theus_arena *a, size_t n, theus_handle *out, void **ptr) {
  uint64_t shape = n;
  return theus__arena_alloc_typed(a, n, 0, 1, &shape, out, ptr);
}

int theus_arena_write(theus_arena *a, const void *src, size_t n, theus_handle *out) {
  THEUS__ARENA_ARG(a, "theus_arena_write");
  THEUS__ARG_NONNULL(a, src, "theus_arena_write");
  THEUS__ARG_NONNULL(a, out, "theus_arena_write");
  void *p;
  int rc = theus_arena_alloc(a, n, out, &p);
  if (rc == 0) memcpy(p, src, n);
  return rc;
}

int theus_arena_view(const theus_arena *a, theus_handle h, const void **ptr, size_t *len) {
  THEUS__ARENA_ARG(a, "theus_arena_view");
  THEUS__ARG_NONNULL(a, ptr, "theus_arena_view");
  theus__slot s;
  s.offset = s.size = 0; /* silences a false maybe-uninitialized at -O3 */
  int rc = theus__arena_resolve(a, h, &s);
  if (rc) return rc;
  *ptr = a->data + s.offset;
  if (len) *len = s.size;
  return 0;
}

int theus_arena_data(theus_arena *a, theus_handle h, void **ptr, size_t *len) {
  THEUS__ARENA_ARG(a, "theus_arena_data");
  THEUS__ARG_NONNULL(a, ptr, "theus_arena_data");
  if (a->readonly) return theus__arena_fail(a, THEUS_EREADONLY, "no writable data: this arena is attached read-only");
  const void *p;
  int rc = theus_arena_view(a, h, &p, len);
  if (rc == 0) *ptr = (void *)p;
  return rc;
}

int theus_arena_read(const theus_arena *a, theus_handle h, void *dst, size_t cap, size_t *len) {
  THEUS__ARENA_ARG(a, "theus_arena_read");
  if (cap) THEUS__ARG_NONNULL(a, dst, "theus_arena_read");
  const void *p;
  size_t n;
  int rc = theus_arena_view(a, h, &p, &n);
  if (rc) return rc;
  if (len) *len = n;
  if (n > cap)
    return theus__arena_fail(a, THEUS_ETRUNC, "read of handle 0x%016" PRIx64 ": array has %zu bytes, buffer only %zu", h, n, cap);
  memcpy(dst, p, n);
  return 0;
}

int theus_arena_free(theus_arena *a, theus_handle h) {
  THEUS__ARENA_ARG(a, "theus_arena_free");
  if (a->readonly) return theus__arena_fail(a, THEUS_EREADONLY, "cannot free: this arena is attached read-only");
  theus__slot s;
  pthread_mutex_lock(&a->mu);
  int rc = theus__arena_resolve(a, h, &s);
  if (rc == 0) {
    uint32_t idx = THEUS_HANDLE_INDEX(h);
    THEUS__STR(&a->slots[idx].epoch, 0u);
    if (!look_push(a, s.rsize, s.block)) {
      pages_release(a, s.offset, s.rsize);
      theus__tlsf_free(&a->tlsf, s.block);
    }
    slot_put(a, idx);
    BUMP(bytes_live, -s.rsize);
    BUMP(active_handles, -1);
    BUMP(free_count, 1);
  }
  pthread_mutex_unlock(&a->mu);
  return rc;
}

int theus_arena_with_buffer(theus_arena *a, const void *src, size_t n,
                            int (*fn)(theus_arena *, theus_handle, void *), void *ud) {
  THEUS__ARENA_ARG(a, "theus_arena_with_buffer");
  THEUS__ARG_NONNULL(a, fn, "theus_arena_with_buffer");
  theus_handle h;
  int rc = theus_arena_write(a, src, n, &h);
  if (rc) return rc;
  rc = fn(a, h, ud);
  theus_arena_free(a, h); /* fails only if fn freed it already: that is fn's business */
  return rc;
}

void theus_scoped_release(theus_scoped *s) {
  if (!s) return;
  if (s->arena && s->handle) theus_arena_free(s->arena, s->handle);
  s->handle = 0;
}

/* ---- reset, stats, listing ---------------------------------------------- */

int theus_arena_reset(theus_arena *a) {
  THEUS__ARENA_ARG(a, "theus_arena_reset");
  if (a->readonly) return theus__arena_fail(a, THEUS_EREADONLY, "cannot reset: this arena is attached read-only");
  pthread_mutex_lock(&a->mu);
  theus__arena_hdr *h = a->hdr;
  uint32_t epoch = h->epoch + 1;
  THEUS__STR(&h->epoch, epoch ? epoch : 1); /* every live slot is now stale */
  THEUS__ST(&h->slot_hwm, 0);
  a->free_slots = NO_SLOT;
  theus__tlsf_reset(&a->tlsf);
  if (++a->page_tag == 0) { /* tags wrapped: forget explicitly, once per 65535 resets */
    memset(a->pages, 0, h->data_size / h->page * sizeof *a->pages);
    a->page_tag = 1;
  }
  a->ncache = 0;
  memset(a->nlook, 0, sizeof a->nlook);
  theus__os_release(a->fd, h->data_off, round_up(a->extent, h->page));
  a->room_at = 0; /* re-read the limits at the next reservation */
  a->extent = 0;
  THEUS__ST(&h->bytes_live, 0);
  THEUS__ST(&h->active_handles, 0);
  pthread_mutex_unlock(&a->mu);
  return 0;
}

int theus_arena_stats_get(const theus_arena *a, theus_arena_stats *o) {
  if (!a || !o) return THEUS_EINVAL;
  const theus__arena_hdr *h = a->hdr;
  if (!h) { /* an arena whose open failed */
    *o = (theus_arena_stats){.errors = __atomic_load_n(&a->local_errors, __ATOMIC_RELAXED)};
    return 0;
  }
  *o = (theus_arena_stats){
      .active_handles = THEUS__LD(&h->active_handles), .bytes_live = THEUS__LD(&h->bytes_live),
      .peak_bytes = THEUS__LD(&h->peak_bytes), .alloc_count = THEUS__LD(&h->alloc_count),
      .free_count = THEUS__LD(&h->free_count), .errors = THEUS__LD(&h->errors),
      .soft_limit_hits = THEUS__LD(&h->soft_limit_hits), .hard_limit_hits = THEUS__LD(&h->hard_limit_hits)};
  if (a->readonly) o->errors += __atomic_load_n(&a->local_errors, __ATOMIC_RELAXED);
  return 0;
}

/* Calls fn for each live slot; lock-free, consistent per slot. */
static void each_live(const theus_arena *a, void (*fn)(const theus_arena *, uint32_t, const theus__slot *, void *),
                      void *ud) {
  uint32_t hwm = THEUS__LDA(&a->hdr->slot_hwm), epoch = THEUS__LDA(&a->hdr->epoch);
  for (uint32_t i = 0; i < hwm; i++) {
    const theus__slot *s = &a->slots[i];
    uint32_t e = THEUS__LDA(&s->epoch);
    if (e == epoch) fn(a, i, s, ud);
  }
}

struct list_ctx {
  theus_live_entry *out;
  size_t cap, n;
};

static void list_one(const theus_arena *a, uint32_t i, const theus__slot *s, void *ud) {
  (void)a;
  struct list_ctx *c = ud;
  if (c->n < c->cap)
    c->out[c->n] = (theus_live_entry){((uint64_t)i << 32) | THEUS__LD(&s->gen), THEUS__LD(&s->size)};
  c->n++;
}

int theus_arena_list_live(const theus_arena *a, theus_live_entry *out, size_t cap, size_t *count) {
  THEUS__ARENA_ARG(a, "theus_arena_list_live");
  THEUS__ARG_NONNULL(a, count, "theus_arena_list_live");
  if (cap) THEUS__ARG_NONNULL(a, out, "theus_arena_list_live");
  struct list_ctx c = {out, cap, 0};
  if (!a->readonly) pthread_mutex_lock(&((theus_arena *)a)->mu);
  each_live(a, list_one, &c);
  if (!a->readonly) pthread_mutex_unlock(&((theus_arena *)a)->mu);
  *count = c.n;
  return 0;
}

struct find_ctx {
  uint64_t off;
  theus_handle found;
};

static void find_one(const theus_arena *a, uint32_t i, const theus__slot *s, void *ud) {
  (void)a;
  struct find_ctx *c = ud;
  uint64_t o = THEUS__LD(&s->offset);
  if (c->off >= o && c->off < o + THEUS__LD(&s->rsize)) c->found = ((uint64_t)i << 32) | THEUS__LD(&s->gen);
}

theus_handle theus_arena_find(const theus_arena *a, const void *addr) {
  if (!a || !a->hdr) return 0;
  const uint8_t *p = addr;
  if (p < a->data || p >= a->data + a->hdr->data_size) return 0;
  struct find_ctx c = {(uint64_t)(p - a->data), 0};
  each_live(a, find_one, &c);
  return c.found;
}

int theus_arena_contains(const theus_arena *a, const void *addr) {
  if (!a || !a->base) return 0;
  const uint8_t *p = addr;
  return p >= a->base && p < a->base + a->map_size;
}
