/* Internal: a TLSF (two-level segregated fit) allocator over offsets.
 *
 * It manages a range [0, size) of abstract offsets; the block descriptors live
 * in private memory, never in the managed range, so the data area stays pure
 * data (its pages can be punched out while free). Allocation and free are O(1):
 * two bitmap scans and a constant number of list operations, whatever the size.
 *
 * Fragmentation. A request of n bytes is served from the first non-empty list
 * whose *smallest* block is >= n (the request is rounded up to the next
 * second-level class before the search), so no list walk is needed; the
 * rounding wastes at most 1/16 of a request. Like every non-moving allocator,
 * TLSF has no bound on external fragmentation for adversarial sequences
 * (Robson: up to ~M*log2(n)/2 for n size classes). The arena therefore gives
 * the allocator twice the budget in address space (sparse, costs nothing): a
 * workload whose live bytes stay within the budget fails only if its free
 * space is split into holes smaller than the request across a range twice as
 * large as all live data; that failure is a THEUS_ENOSPACE error, never
 * corruption. Not thread-safe: the arena serialises calls.
 */
#ifndef THEUS_TLSF_H
#define THEUS_TLSF_H

#include <stdint.h>

#define THEUS__TLSF_GRAIN 64u /* every block is a multiple of this */
#define THEUS__TLSF_SL_LOG2 4u
#define THEUS__TLSF_SL_COUNT (1u << THEUS__TLSF_SL_LOG2)
#define THEUS__TLSF_FL_COUNT 48u
#define THEUS__TLSF_NONE UINT32_MAX

typedef struct theus__tlsf_block {
  uint64_t off;
  uint64_t size;
  uint32_t prev_phys, next_phys; /* neighbours in address order */
  uint32_t prev_free, next_free; /* free-list links (or descriptor free list) */
  uint32_t is_free;
} theus__tlsf_block;

typedef struct theus__tlsf {
  uint64_t size;
  uint64_t fl_map; /* bit f set: some list of first level f is non-empty */
  uint32_t sl_bitmap[THEUS__TLSF_FL_COUNT];
  uint32_t heads[THEUS__TLSF_FL_COUNT][THEUS__TLSF_SL_COUNT];
  theus__tlsf_block *blocks; /* descriptor pool */
  uint32_t cap, used, spare;  /* pool capacity, high-water mark, free descriptors */
} theus__tlsf;

/* Prepares t for [0, size), with room for max_blocks descriptors. */
int theus__tlsf_init(theus__tlsf *t, uint64_t size, uint32_t max_blocks);
void theus__tlsf_destroy(theus__tlsf *t);
/* Forgets every block in O(1): the whole range is one free block again. */
void theus__tlsf_reset(theus__tlsf *t);
/* Allocates size bytes (a multiple of the grain) aligned to align (a power of
 * two multiple of the grain). Returns a block id or THEUS__TLSF_NONE. */
uint32_t theus__tlsf_alloc(theus__tlsf *t, uint64_t size, uint64_t align);
/* Frees a block id returned by alloc, coalescing with free neighbours. */
void theus__tlsf_free(theus__tlsf *t, uint32_t id);

static inline uint64_t theus__tlsf_off(const theus__tlsf *t, uint32_t id) { return t->blocks[id].off; }

#endif
