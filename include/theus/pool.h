/* theus-c — workers: a pool of forked worker processes.
 *
 * theus_pool_open() forks one single-threaded helper, the fork server, which
 * forks the workers; the caller may already have threads (but a lock another
 * host thread holds at that instant stays held in the workers: see
 * docs/workers.md, "Known limits"). Tasks travel through
 * per-worker rings in anonymous shared memory (nothing in /dev/shm): a worker
 * spins briefly on its ring, then sleeps on a futex, and so does a waiter, so
 * an awake worker and an awake waiter exchange a task without any syscall.
 *
 * A task is a function pointer plus argument bytes plus arena handles. The
 * function runs in a worker, a forked copy of the program image as it was when
 * the pool started: it must be linked in, or dlopen()ed BEFORE
 * theus_pool_open() (theus_pool_submit refuses other addresses).
 *
 * Workers see the arena read-only (O_RDONLY memfd, PROT_READ). A task that
 * writes into an array dies by SIGSEGV and its result reads
 * "contract violation: write to read-only heavy array 0x... (key '...')".
 * Every worker death (signal, exit, timeout) fails the in-flight task with the
 * cause, a fresh worker takes its place and queued tasks run on.
 *
 * Thread safety: submit, wait, stats and errmsg may be called from many
 * threads at once; one ticket must be waited by one thread at a time.
 * theus_pool_close() must be called once, when no other thread uses the pool.
 */
#ifndef THEUS_POOL_H
#define THEUS_POOL_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "heavy.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct theus_pool theus_pool;
/* The worker-side view of one running task (valid during the call only). */
typedef struct theus_task theus_task;
/* A task function: returns 0 on success, or a negative THEUS_E* code (use
 * theus_task_fail to attach a message). Runs in a worker process. */
typedef int (*theus_task_fn)(theus_task *t);

/* Limits of what one task carries inline through shared memory. */
#define THEUS_POOL_ARG_MAX (16u * 1024u)    /* argument bytes per task */
#define THEUS_POOL_RESULT_MAX (64u * 1024u) /* result bytes per task */
#define THEUS_POOL_MAX_HANDLES 16u          /* arena handles per task */
#define THEUS_POOL_KEY_MAX 48u              /* bytes of a handle's key, NUL included */
#define THEUS_POOL_ERRMSG_MAX 512u          /* bytes of a result's message (room for every cause of a retried task) */
#define THEUS_POOL_MAX_WORKERS 256u

/* What becomes of what task code writes to stdout and stderr in a worker
 * (theus_pool_config.output; docs/workers.md, "Output"). */
typedef enum theus_output_mode {
  /* Default. Each worker's fds 1 and 2 are pipes read by one output thread of
   * the pool, which hands out whole lines: to output_fn if set, else to the
   * orchestrator's stderr as "[worker N process NAME] line". Never to the
   * orchestrator's stdout; a line is never torn or mixed with another; a
   * partial line is flushed when the next process's output starts, when the
   * worker dies and when the pool closes; lines beyond
   * THEUS_OUTPUT_LINE_MAX bytes are cut with a marker. */
  THEUS_OUTPUT_FORWARD = 0,
  THEUS_OUTPUT_DISCARD = 1, /* fds 1 and 2 of every worker are /dev/null */
  THEUS_OUTPUT_INHERIT = 2  /* workers share the orchestrator's fds 1 and 2, unprefixed (debugging only:
                               their output lands in the orchestrator's stdout) */
} theus_output_mode;

/* Bytes of a forwarded line; the rest is cut. With its prefix and the cut
 * marker a line still fits one atomic pipe write (PIPE_BUF, 4096). */
#define THEUS_OUTPUT_LINE_MAX 3968u

/* Receives a forwarded line (THEUS_OUTPUT_FORWARD): the worker's index, the
 * process (the task label; "" when the pool has no task_label or none was
 * known yet) and the line without its newline (line[len] is '\0'; a line may
 * hold NUL bytes). Called from the pool's output thread, one line at a time,
 * in the order each worker wrote them; until theus_pool_close returns. It
 * must not call into the pool. */
typedef void (*theus_output_fn)(int worker, const char *process, const char *line, size_t len, void *ud);

/* Runs in the worker before each task: names what the task runs, for output
 * prefixes. Returns a NUL-terminated name (buf of cap bytes may hold it), or
 * NULL for none. Must be quick and must not allocate or print. */
typedef const char *(*theus_task_label_fn)(const theus_task *t, char *buf, size_t cap);

typedef struct theus_pool_config {
  unsigned nworkers;       /* default: the CPUs this process may use (affinity mask, cgroup cpu.max) */
  unsigned ring_capacity;  /* tasks queued per worker (default 256, power of two) */
  uint32_t spin_us;        /* busy-wait before sleeping on a futex, both sides (default 50) */
  int64_t default_timeout_ms; /* per task when the task says 0; <= 0 means none (default) */
  const theus_arena *arena;   /* arena shared read-only with the workers (may be NULL) */
  int keep_core_dumps;     /* 0 (default): workers run with RLIMIT_CORE 0 and are not dumpable */
  int unsandboxed;         /* 1: no pool sandbox layer (debugging under gdb/strace only; see
                              docs/workers.md, "Threat model"). 0 (default): every worker runs with
                              no capabilities, no new privileges, not dumpable, and a seccomp
                              filter that keeps it from writing the arena by any path */
  int output;              /* theus_output_mode: THEUS_OUTPUT_FORWARD (default), _DISCARD, _INHERIT */
  theus_output_fn output_fn; /* FORWARD: receives each line instead of the orchestrator's stderr */
  void *output_ud;         /* passed to output_fn */
  theus_task_label_fn task_label; /* names tasks in forwarded output (the engine names the process) */
  /* Handed to every task (theus_task_context). It is used in the workers, so
   * it must point at memory they inherit: immutable since theus_pool_open,
   * or, with task_context_size > 0, a page-aligned MAP_SHARED mapping of
   * that many bytes made before theus_pool_open. Workers drop every other
   * writable shared mapping they inherit; this one they keep, read-only, and
   * see the orchestrator's later writes to it. May be NULL. */
  const void *task_context;
  size_t task_context_size;
} theus_pool_config;

/* Flags of theus_task_desc.flags and theus_map_desc.flags */
/* Run the task under the pure-process sandbox: no fork/exec, no network, no
 * file writes or signals to other processes. A refused call fails the task
 * with THEUS_ECONTRACT ("... called socket() ...") and replaces the worker.
 * The engine sets it for parallel processes unless their contract says
 * sandbox off. A worker keeps the sandbox once it has it: a task without the
 * flag that lands on such a worker makes it exit and a fresh worker runs it. */
#define THEUS_TASK_SANDBOX 0x1u

/* What to run. Everything is copied at submit; the caller's buffers are free
 * to reuse as soon as submit returns. */
typedef struct theus_task_desc {
  theus_task_fn fn;
  const void *arg;            /* argument bytes (may be NULL when arg_len is 0) */
  size_t arg_len;             /* <= THEUS_POOL_ARG_MAX */
  const theus_handle *handles; /* arrays the task reads (resolved before fn runs) */
  unsigned nhandles;           /* <= THEUS_POOL_MAX_HANDLES */
  const char *const *keys;    /* optional: a name per handle, used in messages */
  int64_t timeout_ms;         /* 0: pool default; < 0: none; > 0: kill the worker past it */
  unsigned flags;             /* THEUS_TASK_SANDBOX, or 0 */
  /* Re-runs after a worker death (signal, exit, OOM kill) while running the
   * task: the fork server queues it again for the fresh worker, up to this
   * many times (0: none). Only for tasks that may run twice (pure ones).
   * Timeouts, cancels and contract violations are never retried. A task that
   * kills retries + 1 workers fails THEUS_ECRASH "poison: ..." with every
   * cause in its message. */
  unsigned retries;
} theus_task_desc;

typedef uint64_t theus_ticket;

/* What a task produced. data is malloc'ed (NULL when len is 0): release it
 * with theus_pool_result_release. */
typedef struct theus_pool_result {
  int status;      /* 0, the task's error code, THEUS_ECRASH, THEUS_ETIMEDOUT, THEUS_ECONTRACT, ... */
  int worker;      /* index of the worker that ran it (-1 if none did) */
  int pid;         /* its pid (0 if none) */
  uint64_t start_ns, end_ns; /* when it ran on the worker, CLOCK_MONOTONIC (the same clock as the
                                orchestrator's on one machine); 0 if it never ran */
  size_t len;
  void *data;
  char errmsg[THEUS_POOL_ERRMSG_MAX]; /* empty on success */
} theus_pool_result;

typedef struct theus_pool_worker_stats {
  int pid;
  uint64_t tasks;   /* tasks this slot ran, across respawns */
  uint64_t busy_ns; /* time spent inside task functions */
  uint64_t respawns;
} theus_pool_worker_stats;

typedef struct theus_pool_stats {
  uint64_t submitted;
  uint64_t completed;  /* status 0 */
  uint64_t failed;     /* the task returned an error, or a contract violation */
  uint64_t crashed;    /* the worker died while running it, or workers died before taking it */
  uint64_t timed_out;
  uint64_t canceled;
  uint64_t respawned;  /* workers started to replace dead ones */
  uint64_t retried;    /* tasks queued again after their worker died (theus_task_desc.retries) */
  uint64_t poisoned;   /* tasks failed after killing retries + 1 workers */
  unsigned nworkers;
  theus_pool_worker_stats workers[THEUS_POOL_MAX_WORKERS];
} theus_pool_stats;

/* ---- orchestrator side ------------------------------------------------- */

/* Fills *cfg with the defaults (cfg NULL: nothing). */
THEUS_API void theus_pool_config_init(theus_pool_config *cfg);

/* Starts the fork server and its workers; returns once every worker is up.
 * cfg may be NULL. Like sqlite3_open, a failure still hands back a pool that
 * carries the message (unless memory ran out: then *out is NULL): read
 * theus_pool_errmsg(*out), then release it with theus_pool_close(*out, 1). */
THEUS_API int theus_pool_open(const theus_pool_config *cfg, theus_pool **out);

/* Queues one task on the least loaded worker. THEUS_EAGAIN when every ring is
 * full (wait for results first), THEUS_ECLOSED once the pool is stopping or
 * broken (its fork server died). */
THEUS_API int theus_pool_submit(theus_pool *p, const theus_task_desc *task, theus_ticket *out);

/* Like theus_pool_submit, but when every ring is full it sleeps (futex on a
 * pool-level "slot freed" word, bumped by every collected result) until a
 * slot is freed or timeout_ms passes (< 0: forever): THEUS_ETIMEDOUT then.
 * Never polls. Only results collected by other threads free slots: a thread
 * that submits this way while holding every uncollected ticket itself waits
 * until its timeout. */
THEUS_API int theus_pool_submit_wait(theus_pool *p, const theus_task_desc *task, int64_t timeout_ms,
                                     theus_ticket *out);

/* Queues n tasks with one wake-up per worker; tickets[i] answers tasks[i].
 * Returns how many were queued (>= 0) or a negative code if none was. */
THEUS_API int theus_pool_submit_batch(theus_pool *p, const theus_task_desc *tasks, size_t n,
                                      theus_ticket *tickets);

/* A map: one function over count items, shipped in chunks (one ring slot
 * per chunk, like Python's Pool.map chunksize), all sharing the same arena
 * inputs. Item i gets arg bytes args + i*arg_size and writes at most
 * result_size bytes; the bytes it wrote (theus_task_set_result) are copied to
 * results + i*result_size, or handed to result_fn. A chunk needs
 * chunk*arg_size <= THEUS_POOL_ARG_MAX and chunk*(8+result_size) <=
 * THEUS_POOL_RESULT_MAX. If a worker dies in a chunk, every item of that
 * chunk fails with the cause. */
typedef struct theus_map_desc {
  theus_task_fn fn;
  const void *args;   /* count * arg_size bytes (NULL if arg_size is 0) */
  size_t arg_size;
  size_t count;
  const theus_handle *handles;
  unsigned nhandles;
  const char *const *keys;
  void *results;      /* count * result_size bytes (NULL if result_size is 0, or with result_fn) */
  size_t result_size;
  int *status;        /* optional: count per-item statuses */
  size_t chunk;       /* items per chunk; 0: count / (4 * nworkers), within the limits */
  int64_t timeout_ms; /* per chunk, as for a task */
  unsigned flags;     /* THEUS_TASK_SANDBOX, or 0: applies to every chunk */
  /* Optional bytes common to every item, copied once per chunk ahead of the
   * items' bytes (theus_task_common reads them); they count against
   * THEUS_POOL_ARG_MAX with the chunk's items. */
  const void *common;
  size_t common_size;
  int *workers;       /* optional: count per-item worker indexes (-1 if none ran it) */
  uint64_t *times;    /* optional: 2 * count entries, start and end ns of the chunk that ran item i
                         (CLOCK_MONOTONIC, on the worker; 0 if it never ran) */
  unsigned retries;   /* per chunk, as theus_task_desc.retries */
  /* Optional: when *cancel becomes nonzero (any thread, a signal handler),
   * (read atomically) theus_pool_map stops submitting, cancels the chunks in flight
   * (theus_pool_cancel) and returns THEUS_ECANCELED once they are collected. */
  const volatile int *cancel;
  /* Optional: called in the thread running the map each time a chunk has
   * been collected (chunks are collected in order), with the items collected
   * so far and count. It must not call into the pool. */
  void (*progress_fn)(size_t done, size_t count, void *ud);
  void *progress_ud;
  /* Optional write window (docs/workers.md, "Write windows"): a live array of
   * the pool's arena (an unpublished draft, at least a page) that the items
   * fill. Item i may write the bytes [window_ranges[2i], window_ranges[2i+1])
   * of it (the low end page-aligned; the high end is rounded up to a page),
   * a chunk the union of its items'; any other store faults and fails the
   * item as a contract violation. The chunks run sandboxed (pure) on workers
   * forked with the window mapped, and those workers are killed before
   * theus_pool_map returns, so nothing can write the array afterwards. One
   * window at a time per pool: concurrent window maps queue. */
  theus_handle window;
  const uint64_t *window_ranges;
  /* Optional, instead of results: called in the thread running the map for
   * each item that succeeded, in order, with the len bytes its result holds
   * (at most result_size); data is valid only during the call (it points into
   * the worker's slot: nothing is copied). It must not call into the pool. */
  void (*result_fn)(size_t index, const void *data, size_t len, void *ud);
  void *result_ud;
} theus_map_desc;

/* Runs a map and waits for every item. Returns 0 when all succeeded, else the
 * status of the first failed item (the pool message names it); *nfailed
 * (optional) gets the number of failed items. */
THEUS_API int theus_pool_map(theus_pool *p, const theus_map_desc *m, size_t *nfailed);

/* Waits up to timeout_ms (< 0: forever, 0: poll) for a ticket's result.
 * Returns 0 and fills *res (res->status says how the task ended), or
 * THEUS_ETIMEDOUT (the ticket stays valid), THEUS_ENOTFOUND for a ticket
 * that is unknown or already collected, or THEUS_ECRASH if the pool broke.
 * On failure res->errmsg holds this waiter's own copy of the message (safe
 * when other threads fail on the same pool meanwhile) and res->data is NULL. */
THEUS_API int theus_pool_wait(theus_pool *p, theus_ticket t, int64_t timeout_ms, theus_pool_result *res);

/* Cancels a ticket's task wherever it is: a queued task is dropped without
 * running, a running one has its worker killed (and replaced by a fresh
 * worker). Either way the ticket's result becomes THEUS_ECANCELED; it must
 * still be collected with theus_pool_wait. A task that finished before the
 * cancel reached it keeps its result. Returns 0, THEUS_ENOTFOUND for an
 * unknown or collected ticket. Thread-safe. */
THEUS_API int theus_pool_cancel(theus_pool *p, theus_ticket t);

/* Frees res->data (and sets it to NULL). */
THEUS_API void theus_pool_result_release(theus_pool_result *res);

/* Snapshot of the counters. */
THEUS_API int theus_pool_stats_get(const theus_pool *p, theus_pool_stats *out);

/* Number of workers and the pid of worker i (0 while it is being replaced). */
THEUS_API unsigned theus_pool_size(const theus_pool *p);
/* Pid of worker i (0 while it is being replaced or if i is out of range). */
THEUS_API int theus_pool_worker_pid(const theus_pool *p, unsigned i);
/* Nonzero if fn lies in the program image the workers were forked with (code
 * linked in or dlopen()ed before theus_pool_open): only such functions can
 * run in a worker. */
THEUS_API int theus_pool_has_function(const theus_pool *p, theus_task_fn fn);
/* Pid of the fork server. */
THEUS_API int theus_pool_forksrv_pid(const theus_pool *p);

/* Stops the pool: with cancel_running 0 every queued task runs to the end
 * first; otherwise running workers are killed and queued tasks dropped. Reaps
 * every child and frees everything; uncollected results are discarded.
 * Returns 0, or THEUS_ECRASH if the fork server had died. NULL is a no-op. */
THEUS_API int theus_pool_close(theus_pool *p, int cancel_running);

/* The message of the last failure on this pool, from any thread (another
 * thread's failure may overwrite it: waiters get their own copy in
 * theus_pool_result.errmsg). Never NULL. The text is this
 * thread's own copy, valid until the thread's fourth next *_errmsg call. */
THEUS_API const char *theus_pool_errmsg(const theus_pool *p);

/* ---- worker side (call only from inside a task function) --------------- *
 * A NULL task gets NULL, 0 (sizes, counts, handles) or THEUS_EINVAL. */

/* The read-only arena (NULL if the pool has none). */
THEUS_API const theus_arena *theus_task_arena(const theus_task *t);
/* The argument bytes (of this item, in a map); *len (optional) gets their count. */
THEUS_API const void *theus_task_arg(const theus_task *t, size_t *len);
/* Number of arena handles the task was given. */
THEUS_API unsigned theus_task_nhandles(const theus_task *t);
/* Handle i of the task (0 if i is out of range). */
THEUS_API theus_handle theus_task_handle(const theus_task *t, unsigned i);
/* dtype, shape and const data of input i (resolved before fn ran, no syscall). */
THEUS_API int theus_task_array(const theus_task *t, unsigned i, theus_array_info *out);
/* Const bytes of input i. */
THEUS_API int theus_task_view(const theus_task *t, unsigned i, const void **ptr, size_t *len);
/* The result buffer (THEUS_POOL_RESULT_MAX bytes, or result_size in a map);
 * *cap gets its size. Fill it, then set the length. */
THEUS_API void *theus_task_out(theus_task *t, size_t *cap);
/* In a map with a write window: its base address (the array's first byte)
 * and, in *len (optional), its size rounded up to pages. Only this item's
 * bytes are writable (theus_map_desc.window_ranges). NULL (and *len 0)
 * without a window or for a NULL task. */
THEUS_API void *theus_task_window(const theus_task *t, size_t *len);
/* Sets the result length; THEUS_ETRUNC (with a message) beyond the capacity. */
THEUS_API int theus_task_set_result(theus_task *t, size_t len);
/* Appends bytes to the result; THEUS_ETRUNC (with a message) if they do not fit. */
THEUS_API int theus_task_write(theus_task *t, const void *data, size_t len);
/* Records a message and returns code (negative; THEUS_EPROCESS if code is not),
 * so `return theus_task_fail(...)`. fmt NULL: a generic message. */
THEUS_API int theus_task_fail(theus_task *t, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Index of the worker running this task (UINT_MAX for NULL). */
THEUS_API unsigned theus_task_worker(const theus_task *t);
/* How many times this task ran before, each time killing its worker (0 on
 * the first run; see theus_task_desc.retries). */
THEUS_API unsigned theus_task_attempt(const theus_task *t);
/* theus_pool_config.task_context of the pool running this task. */
THEUS_API const void *theus_task_context(const theus_task *t);
/* In a map: the bytes common to every item (theus_map_desc.common); NULL and
 * 0 in a plain task. */
THEUS_API const void *theus_task_common(const theus_task *t, size_t *len);

#ifdef __cplusplus
}
#endif
#endif /* THEUS_POOL_H */
