/* workers/: the layout shared by the orchestrator, the fork server and the
 * workers. One anonymous MAP_SHARED region (inherited over fork, so nothing is
 * named in /dev/shm) holds a header, one ring per worker and the ring slots.
 *
 * A slot goes FREE -> QUEUED (submitter) -> RUNNING (worker) -> DONE (worker,
 * or the fork server when the worker died) -> FREE (the waiter that collected
 * it). Sequence numbers start at 1 and grow forever; slot = seq % capacity.
 * ring.run is the next sequence the worker will run: only the worker moves it,
 * or the fork server once that worker is dead and before its replacement
 * starts, so the two never race. A submitter may use sequence s only when
 * s - run < capacity and the slot is FREE; that keeps "slot.seq == run" an
 * unambiguous "this task was submitted" test for the fork server's repair.
 */
#ifndef THEUS_WORKERS_POOL_INTERNAL_H
#define THEUS_WORKERS_POOL_INTERNAL_H

#include <stdatomic.h>
#include <stdint.h>
#include <sys/types.h>

#include "base.h"
#include "theus/pool.h"

enum { THEUS__SLOT_FREE = 0, THEUS__SLOT_QUEUED = 1, THEUS__SLOT_RUNNING = 2, THEUS__SLOT_DONE = 3 };
enum { THEUS__STOP_NONE = 0, THEUS__STOP_DRAIN = 1, THEUS__STOP_CANCEL = 2 };
enum { THEUS__START_PENDING = 0, THEUS__START_UP = 1, THEUS__START_FAILED = 2 };

#define THEUS__MAX_ARENA_RANGES 4
/* Spinning for a slot (a waiter, or a worker for its next task): past this
 * long, each look at the clock also offers the core (sched_yield) to whatever
 * else wants it; on an idle core that returns at once. */
#define THEUS__SPIN_YIELD_NS 10000u
#define THEUS__EARLY_DEATHS 3 /* workers dead before taking a task, in a row, that fail the queued ones */
#define THEUS__OUT_NONCE 16 /* hex digits of the output marker's nonce */
#define THEUS__OUT_LABEL 64 /* bytes of a task label in a marker, NUL included */

/* Internal slot flag beside THEUS_TASK_*: the chunk writes the pool's open
 * write window (docs/workers.md, "Write windows"). */
#define THEUS__TASK_WINDOW 0x100u

/* A write window: pages [off, off + len) of the arena's memfd that the map
 * with generation gen fills (gen 0: none). Sent by the orchestrator to the
 * fork server over the control socket; len 0 closes window gen. The fork
 * server answers with gen once done (for a close: once no worker holding it
 * is alive). */
typedef struct theus__wincmd {
  uint64_t gen, off, len;
} theus__wincmd;

/* The first cache line is everything a round trip touches. */
typedef struct theus__slot {
  _Atomic uint32_t state;
  _Atomic uint32_t waiters; /* threads asleep on state (futex) */
  uint64_t seq;
  theus_task_fn fn;
  uint32_t arg_len;
  uint32_t nhandles;
  int64_t timeout_ms;  /* <= 0: none */
  int32_t status;
  uint32_t res_len;
  _Atomic int64_t deadline_ns; /* CLOCK_MONOTONIC, set by the worker at start; 0: none */
  int32_t worker;
  int32_t pid;
  /* -- cold part -- */
  uint32_t has_keys;
  uint32_t nitems;    /* 0: one task; else a map chunk of nitems items */
  uint32_t item_arg;  /* map: argument bytes per item */
  uint32_t item_res;  /* map: result bytes per item; res = int32 statuses, then results */
  uint32_t flags;     /* THEUS_TASK_* from the descriptor */
  uint32_t item_common; /* map: bytes common to every item at the start of arg */
  uint32_t retries;     /* re-runs left after a worker death (the fork server decrements) */
  uint32_t attempt;     /* runs that killed their worker so far */
  /* Cancel (theus_pool_cancel). skip: a queued slot the canceller finished
   * itself; the worker (or the fork server's repair) steps over it and clears
   * the mark. cancel: the fork server kills the worker running this slot. */
  _Atomic uint32_t skip;
  _Atomic uint64_t cancel_seq; /* == seq: kill the worker running it */
  char causes[THEUS_POOL_ERRMSG_MAX]; /* "cause; cause" of earlier attempts */
  uint64_t start_ns, end_ns; /* CLOCK_MONOTONIC, on the worker: when the task ran (0: it never did) */
  uint64_t win_gen;          /* THEUS__TASK_WINDOW: the window it writes, and the bytes [win_lo, win_hi) */
  uint64_t win_lo, win_hi;   /* of it that its items may write (win_lo page-aligned) */
  char errmsg[THEUS_POOL_ERRMSG_MAX];
  theus_handle handles[THEUS_POOL_MAX_HANDLES];
  char keys[THEUS_POOL_MAX_HANDLES][THEUS_POOL_KEY_MAX];
  unsigned char arg[THEUS_POOL_ARG_MAX];
  unsigned char res[THEUS_POOL_RESULT_MAX];
} __attribute__((aligned(64))) theus__slot;

typedef struct theus__ring {
  /* written by submitters */
  _Atomic uint32_t pub; /* futex word the worker sleeps on; bumped by every publish */
  char pad0[60];
  /* written by the worker (or the fork server while no worker lives) */
  _Atomic uint64_t run;
  _Atomic uint32_t sleeping;
  _Atomic int32_t pid;
  char pad1[48];
  /* counters, read by stats */
  _Atomic uint64_t tasks, busy_ns, completed, failed, crashed, timed_out, canceled, respawns, retried, poisoned;
} __attribute__((aligned(64))) theus__ring;

typedef struct theus__ctl {
  uint32_t nworkers;
  uint32_t cap; /* power of two */
  uint32_t spin_us;
  int32_t keep_core;
  int32_t arena_fd; /* read-only memfd descriptor, or -1 */
  int32_t arena_rw_fd; /* read-write descriptor, kept by the fork server only (write windows), or -1 */
  int32_t win_fd;      /* the fork server's end of the window control socket, or -1 */
  int32_t orch_pid;
  int32_t unsandboxed; /* theus_pool_config.unsandboxed: no pool sandbox layer */
  _Atomic uint32_t start_state; /* futex word: THEUS__START_* */
  _Atomic uint32_t stop;        /* THEUS__STOP_* */
  _Atomic uint32_t broken;      /* the fork server died: every task fails */
  _Atomic uint32_t timed;       /* some task carries a timeout: the fork server must tick */
  _Atomic int32_t forksrv_pid;
  const void *task_context; /* theus_pool_config.task_context (same address in every process) */
  size_t task_context_size;  /* > 0: a shared mapping the workers keep, read-only */
  char fatal[THEUS_POOL_ERRMSG_MAX]; /* why the fork server could not start */
  /* Output (theus_pool_config.output). FORWARD: out_fd[w] are the write ends
   * of worker w's stdout and stderr pipes, held by the fork server (which
   * hands them to each incarnation of worker w; set before the fork server
   * starts, never changed after) and read by the pool's output
   * thread (workers/output.c). A worker writes a marker into both pipes when
   * the label of its tasks changes (and when it starts): NUL, 'T', the nonce,
   * the label, NUL. The random nonce keeps task output from forging one. */
  int32_t out_mode;
  int32_t out_fd[THEUS_POOL_MAX_WORKERS][2];
  char out_nonce[THEUS__OUT_NONCE + 1];
  theus_task_label_fn label;
  size_t slots_off;
  size_t total;
} theus__ctl;

static inline theus__ring *theus__ring_of(theus__ctl *c, unsigned w) {
  return (theus__ring *)((char *)c + ((sizeof(theus__ctl) + 63) & ~(size_t)63)) + w;
}

static inline theus__slot *theus__slot_of(theus__ctl *c, unsigned w, uint64_t seq) {
  theus__slot *base = (theus__slot *)((char *)c + c->slots_off);
  return base + (size_t)w * c->cap + (seq & (c->cap - 1));
}

/* Marks a slot DONE and wakes its waiter if one sleeps (Dekker pairing with
 * the waiter's increment of waiters before it re-checks state). */
/* A map chunk's result bytes: int32 statuses[nitems], uint32 lens[nitems]
 * (bytes each item's result holds), then the items' results at a stride of
 * item_res. */
#define THEUS__CHUNK_ITEM_OVERHEAD (sizeof(int32_t) + sizeof(uint32_t))

static inline uint32_t *theus__chunk_lens(unsigned char *res, uint32_t nitems) {
  return (uint32_t *)(void *)(res + (size_t)nitems * sizeof(int32_t));
}

static inline unsigned char *theus__chunk_items(unsigned char *res, uint32_t nitems) {
  return res + (size_t)nitems * THEUS__CHUNK_ITEM_OVERHEAD;
}

static inline size_t theus__chunk_res_len(uint32_t nitems, uint32_t item_res) {
  return (size_t)nitems * (THEUS__CHUNK_ITEM_OVERHEAD + item_res);
}

static inline void theus__slot_finish(theus__slot *s) {
  atomic_store_explicit(&s->state, THEUS__SLOT_DONE, memory_order_seq_cst);
  if (atomic_load_explicit(&s->waiters, memory_order_seq_cst)) theus__futex_wake(&s->state);
}

/* Appends "; " (when not first) and text to a cause list, bounded; a list
 * that does not fit ends in "...". Async-signal-safe. */
static inline void theus__causes_add(char *buf, size_t cap, const char *text) {
  size_t at = 0;
  while (at < cap && buf[at]) at++;
  if (at + 1 >= cap) return;
  const char *sep = at ? "; " : "";
  for (const char *q = sep; *q && at + 1 < cap; q++) buf[at++] = *q;
  for (const char *q = text; *q && at + 1 < cap; q++) buf[at++] = *q;
  buf[at] = '\0';
  if (at + 1 >= cap && cap > 4) buf[cap - 4] = buf[cap - 3] = buf[cap - 2] = '.';
}

/* Fork server: never returns. */
_Noreturn void theus__forksrv_main(theus__ctl *c);
/* Worker: never returns. arena may be NULL. */
/* The write window a worker was forked with: mapped PROT_READ at base, made
 * writable range by range per task (gen 0: none). */
typedef struct theus__winmap {
  uint64_t gen;
  unsigned char *base;
  uint64_t len;
} theus__winmap;

/* Worker: never returns. arena may be NULL, win too. */
_Noreturn void theus__worker_main(theus__ctl *c, unsigned w, const theus_arena *arena,
                                  const uintptr_t (*ranges)[2], unsigned nranges, const theus__winmap *win);
/* The pool's output thread (workers/output.c), THEUS_OUTPUT_FORWARD only. */
typedef struct theus__output theus__output;
/* Creates the pipes (write ends into c->out_fd, nonce into c->out_nonce).
 * Returns 0 or a negative code with a message in err. */
int theus__output_open(theus__ctl *c, unsigned nworkers, theus_output_fn fn, void *ud, theus__output **out,
                        char *err, size_t errlen);
/* Starts the thread that reads them, once the fork server is forked: a
 * thread alive at that fork would leave its stack in the fork server's and
 * the workers' thread caches, and a task's own thread reusing it is taken by
 * ThreadSanitizer for a second thread of one id. Lines wait in the pipes
 * until then. 0 or a negative code with a message in err. */
int theus__output_run(theus__output *o, char *err, size_t errlen);
/* Closes the orchestrator's copies of the write ends, once the fork server
 * has its own (c->out_fd keeps the numbers: the fork server's). NULL: no-op. */
void theus__output_close_writers(theus__output *o);
/* Reads what is left, flushes partial lines, joins the thread and frees. NULL: no-op. */
void theus__output_stop(theus__output *o);

/* Async-signal-safe string building (bounded, always NUL-terminated). */
size_t theus__str_add(char *buf, size_t cap, size_t at, const char *s);
size_t theus__str_hex(char *buf, size_t cap, size_t at, uint64_t v);
size_t theus__str_dec(char *buf, size_t cap, size_t at, int64_t v);

#endif
