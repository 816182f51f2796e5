/* TLSF over offsets; see tlsf.h for the design and the fragmentation note. */
#include "tlsf.h"

#include <stdlib.h>
#include <string.h>

#include "base.h"
#include "theus/error.h"

#define SMALL_LIMIT (THEUS__TLSF_SL_COUNT * THEUS__TLSF_GRAIN)

static unsigned msb64(uint64_t v) { return 63u - (unsigned)__builtin_clzll(v); }

/* Size -> (first level, second level) list indices. */
static void mapping(uint64_t size, unsigned *fl, unsigned *sl) {
  if (size < SMALL_LIMIT) {
    *fl = 0;
    *sl = (unsigned)(size / THEUS__TLSF_GRAIN);
    return;
  }
  unsigned m = msb64(size);
  *fl = m - (THEUS__TLSF_SL_LOG2 + 6u) + 1u; /* 1024 (2^10) -> 1 */
  *sl = (unsigned)(size >> (m - THEUS__TLSF_SL_LOG2)) & (THEUS__TLSF_SL_COUNT - 1u);
}

/* Rounds a request up so that every block of its class is large enough. */
static uint64_t round_request(uint64_t size) {
  if (size < SMALL_LIMIT) return size;
  return size + (1ull << (msb64(size) - THEUS__TLSF_SL_LOG2)) - 1u;
}

static uint32_t desc_new(theus__tlsf *t) {
  uint32_t id = t->spare;
  if (id != THEUS__TLSF_NONE) {
    t->spare = t->blocks[id].next_free;
    return id;
  }
  if (t->used == t->cap) return THEUS__TLSF_NONE;
  return t->used++;
}

static void desc_release(theus__tlsf *t, uint32_t id) {
  t->blocks[id].next_free = t->spare;
  t->spare = id;
}

static void list_insert(theus__tlsf *t, uint32_t id) {
  theus__tlsf_block *b = &t->blocks[id];
  unsigned fl, sl;
  mapping(b->size, &fl, &sl);
  uint32_t head = t->heads[fl][sl];
  b->is_free = 1;
  b->prev_free = THEUS__TLSF_NONE;
  b->next_free = head;
  if (head != THEUS__TLSF_NONE) t->blocks[head].prev_free = id;
  t->heads[fl][sl] = id;
  t->fl_map |= 1ull << fl;
  t->sl_bitmap[fl] |= 1u << sl;
}

static void list_remove(theus__tlsf *t, uint32_t id) {
  theus__tlsf_block *b = &t->blocks[id];
  unsigned fl, sl;
  mapping(b->size, &fl, &sl);
  if (b->prev_free != THEUS__TLSF_NONE)
    t->blocks[b->prev_free].next_free = b->next_free;
  else
    t->heads[fl][sl] = b->next_free;
  if (b->next_free != THEUS__TLSF_NONE) t->blocks[b->next_free].prev_free = b->prev_free;
  if (t->heads[fl][sl] == THEUS__TLSF_NONE) {
    t->sl_bitmap[fl] &= ~(1u << sl);
    if (t->sl_bitmap[fl] == 0) t->fl_map &= ~(1ull << fl);
  }
  b->is_free = 0;
}

/* First non-empty list able to hold every block of class (fl, sl). */
static uint32_t find_suitable(const theus__tlsf *t, unsigned fl, unsigned sl) {
  if (fl >= THEUS__TLSF_FL_COUNT) return THEUS__TLSF_NONE;
  uint32_t sl_map = sl < 32 ? t->sl_bitmap[fl] & (~0u << sl) : 0;
  if (sl_map == 0) {
    uint64_t fl_map = fl + 1 < 64 ? t->fl_map & (~0ull << (fl + 1)) : 0;
    if (fl_map == 0) return THEUS__TLSF_NONE;
    fl = (unsigned)__builtin_ctzll(fl_map);
    sl_map = t->sl_bitmap[fl];
  }
  return t->heads[fl][__builtin_ctz(sl_map)];
}

/* Cuts block id at `size`; the remainder becomes a new free block. */
static int split(theus__tlsf *t, uint32_t id, uint64_t size) {
  uint32_t rest = desc_new(t);
  if (rest == THEUS__TLSF_NONE) return -1;
  theus__tlsf_block *b = &t->blocks[id], *r = &t->blocks[rest];
  r->off = b->off + size;
  r->size = b->size - size;
  r->prev_phys = id;
  r->next_phys = b->next_phys;
  if (b->next_phys != THEUS__TLSF_NONE) t->blocks[b->next_phys].prev_phys = rest;
  b->next_phys = rest;
  b->size = size;
  list_insert(t, rest);
  return 0;
}

int theus__tlsf_init(theus__tlsf *t, uint64_t size, uint32_t max_blocks) {
  memset(t, 0, sizeof *t);
  t->blocks = theus__os_zalloc((uint64_t)max_blocks * sizeof *t->blocks); /* millions; few used */
  if (!t->blocks) return THEUS_ENOMEM;
  t->cap = max_blocks;
  t->size = size - size % THEUS__TLSF_GRAIN;
  theus__tlsf_reset(t);
  return 0;
}

void theus__tlsf_destroy(theus__tlsf *t) {
  theus__os_zfree(t->blocks, (uint64_t)t->cap * sizeof *t->blocks);
  t->blocks = NULL;
}

void theus__tlsf_reset(theus__tlsf *t) {
  t->fl_map = 0;
  memset(t->sl_bitmap, 0, sizeof t->sl_bitmap);
  memset(t->heads, 0xff, sizeof t->heads);
  t->used = 0;
  t->spare = THEUS__TLSF_NONE;
  uint32_t id = desc_new(t);
  t->blocks[id] = (theus__tlsf_block){.off = 0, .size = t->size,
                                      .prev_phys = THEUS__TLSF_NONE,
                                      .next_phys = THEUS__TLSF_NONE};
  list_insert(t, id);
}

uint32_t theus__tlsf_alloc(theus__tlsf *t, uint64_t size, uint64_t align) {
  uint64_t want = size + (align > THEUS__TLSF_GRAIN ? align - THEUS__TLSF_GRAIN : 0);
  unsigned fl, sl;
  mapping(round_request(want), &fl, &sl);
  uint32_t id = find_suitable(t, fl, sl);
  if (id == THEUS__TLSF_NONE) return id;
  list_remove(t, id);
  uint64_t gap = (align - t->blocks[id].off % align) % align;
  if (gap) {
    /* The aligned part becomes a new block; the gap stays free in front. */
    if (split(t, id, gap) != 0) goto undo;
    uint32_t aligned = t->blocks[id].next_phys;
    list_remove(t, aligned);
    list_insert(t, id);
    id = aligned;
  }
  if (t->blocks[id].size > size && split(t, id, size) != 0) goto undo;
  return id;
undo:
  theus__tlsf_free(t, id);
  return THEUS__TLSF_NONE;
}

static void absorb_next(theus__tlsf *t, uint32_t id) {
  theus__tlsf_block *b = &t->blocks[id];
  uint32_t n = b->next_phys;
  b->size += t->blocks[n].size;
  b->next_phys = t->blocks[n].next_phys;
  if (b->next_phys != THEUS__TLSF_NONE) t->blocks[b->next_phys].prev_phys = id;
  desc_release(t, n);
}

void theus__tlsf_free(theus__tlsf *t, uint32_t id) {
  theus__tlsf_block *b = &t->blocks[id];
  if (b->next_phys != THEUS__TLSF_NONE && t->blocks[b->next_phys].is_free) {
    list_remove(t, b->next_phys);
    absorb_next(t, id);
  }
  uint32_t p = b->prev_phys;
  if (p != THEUS__TLSF_NONE && t->blocks[p].is_free) {
    list_remove(t, p);
    absorb_next(t, p);
    id = p;
  }
  list_insert(t, id);
}
