/* workers/: the worker process — its task loop, the task API and the fault
 * handler that turns a write into the read-only arena into a contract
 * violation reported through the result slot. */
#include <errno.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdio_ext.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>

#include "pool_internal.h"
#include "sandbox.h"

#ifndef SYS_SECCOMP
#define SYS_SECCOMP 1 /* si_code of a seccomp SIGSYS (older libc headers lack it) */
#endif

struct theus_task {
  theus__ctl *ctl;
  theus__slot *slot;
  unsigned worker;
  const theus_arena *arena;
  const unsigned char *arg; /* this task's (or map item's) argument bytes */
  size_t arg_len;
  unsigned char *out; /* its result buffer */
  size_t out_cap, out_len;
  int failed;    /* theus_task_fail wrote the message */
  int msg_taken; /* map: an earlier item's message is kept, later ones dropped */
  theus_array_info in[THEUS_POOL_MAX_HANDLES];
};

/* Everything the fault handler needs. A signal handler takes no user pointer,
 * so a worker process keeps one static pointer to its own context; it is only
 * ever set inside a worker (one pool per worker process), never in the host. */
typedef struct worker_ctx {
  theus__ctl *ctl;
  theus__ring *ring;
  unsigned w;
  int pid; /* cached: getpid() is a syscall, and syscalls cost ~1 us in a VM */
  theus_task *task; /* the running task, or NULL */
  uintptr_t ranges[THEUS__MAX_ARENA_RANGES][2];
  unsigned nranges;
  int pure; /* the pure-process sandbox is installed (for good) */
  char label[THEUS__OUT_LABEL]; /* THEUS_OUTPUT_FORWARD: the label the last marker announced */
  theus__winmap win;      /* the write window it was forked with (gen 0: none) */
  uint64_t wlo, whi;      /* the bytes of it writable now */
} worker_ctx;

static worker_ctx *worker_self;

/* ---- async-signal-safe strings ------------------------------------------ */

size_t theus__str_add(char *buf, size_t cap, size_t at, const char *s) {
  while (*s && at + 1 < cap) buf[at++] = *s++;
  if (at < cap) buf[at] = '\0';
  return at;
}

size_t theus__str_hex(char *buf, size_t cap, size_t at, uint64_t v) {
  char tmp[19] = "0x";
  for (int i = 0; i < 16; i++) tmp[2 + i] = "0123456789abcdef"[(v >> (60 - 4 * i)) & 15];
  tmp[18] = '\0';
  return theus__str_add(buf, cap, at, tmp);
}

size_t theus__str_dec(char *buf, size_t cap, size_t at, int64_t v) {
  char tmp[24];
  int i = 23, neg = v < 0;
  uint64_t u = neg ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
  tmp[i] = '\0';
  do {
    tmp[--i] = (char)('0' + u % 10);
    u /= 10;
  } while (u);
  if (neg) tmp[--i] = '-';
  return theus__str_add(buf, cap, at, tmp + i);
}

/* ---- fault handler ------------------------------------------------------- */

static size_t fault_describe(const worker_ctx *x, uintptr_t addr, char *msg, size_t cap) {
  const theus_task *t = x->task;
  size_t at = theus__str_add(msg, cap, 0, "contract violation: write to read-only heavy array ");
  for (unsigned i = 0; t && i < t->slot->nhandles; i++) {
    uintptr_t lo = (uintptr_t)t->in[i].data;
    if (addr < lo || addr >= lo + t->in[i].nbytes) continue;
    at = theus__str_hex(msg, cap, at, t->in[i].handle);
    if (t->slot->has_keys && t->slot->keys[i][0]) {
      at = theus__str_add(msg, cap, at, " (key '");
      at = theus__str_add(msg, cap, at, t->slot->keys[i]);
      at = theus__str_add(msg, cap, at, "')");
    }
    at = theus__str_add(msg, cap, at, " at byte ");
    return theus__str_dec(msg, cap, at, (int64_t)(addr - lo));
  }
  at = theus__str_add(msg, cap, at, "(address ");
  at = theus__str_hex(msg, cap, at, addr);
  return theus__str_add(msg, cap, at, " is in the arena but in no input of this task)");
}

static int in_window(const worker_ctx *x, uintptr_t addr) {
  return x->win.gen && addr >= (uintptr_t)x->win.base && addr < (uintptr_t)x->win.base + x->win.len;
}

static size_t window_describe(const worker_ctx *x, uintptr_t addr, char *msg, size_t cap) {
  size_t at = theus__str_add(msg, cap, 0, "contract violation: write at byte ");
  at = theus__str_dec(msg, cap, at, (int64_t)(addr - (uintptr_t)x->win.base));
  at = theus__str_add(msg, cap, at, " of the heavy output, outside the bytes [");
  at = theus__str_dec(msg, cap, at, (int64_t)x->wlo);
  at = theus__str_add(msg, cap, at, ", ");
  at = theus__str_dec(msg, cap, at, (int64_t)x->whi);
  return theus__str_add(msg, cap, at, ") this task may write");
}

static int in_arena(const worker_ctx *x, uintptr_t addr) {
  for (unsigned i = 0; i < x->nranges; i++)
    if (addr >= x->ranges[i][0] && addr < x->ranges[i][1]) return 1;
  return 0;
}

/* A write into the PROT_READ arena mapping: report it through the slot, then
 * let the fault repeat with the default action so the worker dies by SIGSEGV
 * (its state after a stray write is not to be trusted). */
static void on_fault(int sig, siginfo_t *si, void *uc) {
  (void)uc;
  worker_ctx *x = worker_self;
  struct sigaction dfl;
  memset(&dfl, 0, sizeof dfl);
  dfl.sa_handler = SIG_DFL;
  sigaction(sig, &dfl, NULL);
  if (si->si_code <= 0) { /* sent by kill(): nothing will fault again, so die now */
    raise(sig);
    return;
  }
  uintptr_t addr = (uintptr_t)si->si_addr;
  if (!x || !x->task || !(in_arena(x, addr) || in_window(x, addr))) return;
  theus__slot *s = x->task->slot;
  if (in_window(x, addr))
    window_describe(x, addr, s->errmsg, sizeof s->errmsg);
  else
    fault_describe(x, addr, s->errmsg, sizeof s->errmsg);
  s->status = THEUS_ECONTRACT;
  s->res_len = 0;
  atomic_fetch_add(&x->ring->failed, 1);
  theus__slot_finish(s);
}

/* A call the pure-process sandbox traps (SECCOMP_RET_TRAP): the call did not
 * happen. Report it through the slot, then die by SIGSYS (the handler is
 * one-shot, SA_RESETHAND, because the sandbox refuses a new SIGSYS action):
 * the task is cut short mid-way, so the worker is replaced, not reused. */
static void on_sigsys(int sig, siginfo_t *si, void *uc) {
  (void)uc;
  worker_ctx *x = worker_self;
  if (si->si_code == SYS_SECCOMP && x && x->task) {
    theus__slot *s = x->task->slot;
    const char *name = theus__sandbox_trapped_name(si->si_syscall);
    char *m = s->errmsg;
    size_t cap = sizeof s->errmsg;
    size_t at = theus__str_add(m, cap, 0, "contract violation: the sandboxed (pure) process called ");
    if (name) {
      at = theus__str_add(m, cap, at, name);
    } else {
      at = theus__str_add(m, cap, at, "system call ");
      at = theus__str_dec(m, cap, at, si->si_syscall);
    }
    at = theus__str_add(m, cap, at, "(), which its sandbox refuses (no fork/exec, network, file writes or "
                                    "signals to other processes); worker ");
    at = theus__str_dec(m, cap, at, (int64_t)x->w);
    at = theus__str_add(m, cap, at, " (pid ");
    at = theus__str_dec(m, cap, at, x->pid);
    theus__str_add(m, cap, at, ") was replaced");
    s->status = THEUS_ECONTRACT;
    s->res_len = 0;
    atomic_fetch_add(&x->ring->failed, 1);
    theus__slot_finish(s);
  }
  raise(sig);
  sigset_t one;
  sigemptyset(&one);
  sigaddset(&one, sig);
  sigprocmask(SIG_UNBLOCK, &one, NULL);
  _exit(128 + sig); /* not reached: the default action ran */
}

static void install_fault_handler(void) {
  static char altstack[64 * 1024]; /* per worker process: a stack overflow must still report */
  stack_t ss = {.ss_sp = altstack, .ss_size = sizeof altstack, .ss_flags = 0};
  sigaltstack(&ss, NULL);
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = on_fault;
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGSEGV, &sa, NULL);
  sigaction(SIGBUS, &sa, NULL);
  sa.sa_sigaction = on_sigsys;
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESETHAND;
  sigaction(SIGSYS, &sa, NULL);
}

/* Gives the worker the sandbox the task at s asks for. A worker that has the
 * pure sandbox cannot shed it: for a task without the flag it exits before
 * touching the slot (still QUEUED), and the fork server's fresh worker runs
 * it. Returns 0 to run the task, or a status to fail it with. */
static int match_sandbox(worker_ctx *x, theus__slot *s) {
  int want = (s->flags & THEUS_TASK_SANDBOX) != 0;
  if (want == x->pure) return 0;
  if (!want) _exit(0);
  char err[THEUS_POOL_ERRMSG_MAX];
  if (theus__sandbox_pure(err, sizeof err) < 0) {
    snprintf(s->errmsg, sizeof s->errmsg, "%s", err);
    return THEUS_ESYS;
  }
  x->pure = 1;
  return 0;
}

/* A worker forked with a write window runs only the tasks of that window,
 * and a window task runs only on a worker forked with it: otherwise the
 * worker exits before touching the slot (still QUEUED) and the fork server's
 * fresh worker, forked with or without the window, runs it. */
static void match_window(const worker_ctx *x, const theus__slot *s) {
  int want = (s->flags & THEUS__TASK_WINDOW) != 0;
  if (!want && !x->win.gen) return;
  if (!want || s->win_gen != x->win.gen) _exit(0);
}

/* Makes [lo, hi) the only writable bytes of the window (page granular: lo is
 * page-aligned, hi is rounded up; the window ends on a page boundary). */
static int window_range(worker_ctx *x, theus_task *t, uint64_t lo, uint64_t hi) {
  uint64_t page = theus__os_page_size();
  hi = (hi + page - 1) & ~(page - 1);
  if (lo % page || lo > hi || hi > x->win.len)
    return theus_task_fail(t, THEUS_EINVAL, "write window: bytes [%llu, %llu) do not fit its %llu bytes",
                           (unsigned long long)lo, (unsigned long long)hi, (unsigned long long)x->win.len);
  if (lo == x->wlo && hi == x->whi) return 0;
  if (x->whi > x->wlo && mprotect(x->win.base + x->wlo, x->whi - x->wlo, PROT_READ) != 0)
    return theus_task_fail(t, THEUS_ESYS, "write window: mprotect failed: %s", strerror(errno));
  x->wlo = x->whi = 0;
  if (hi > lo && mprotect(x->win.base + lo, hi - lo, PROT_READ | PROT_WRITE) != 0)
    return theus_task_fail(t, THEUS_ESYS, "write window: mprotect failed: %s", strerror(errno));
  theus__os_populate(x->win.base + lo, hi - lo, 1); /* a fresh worker: one call, not a fault per page */
  x->wlo = lo;
  x->whi = hi;
  return 0;
}

/* The host's handlers and mask make no sense in a worker. */
static void reset_signals(void) {
  struct sigaction dfl;
  memset(&dfl, 0, sizeof dfl);
  dfl.sa_handler = SIG_DFL;
  for (int sig = 1; sig < NSIG; sig++)
    if (sig != SIGKILL && sig != SIGSTOP) sigaction(sig, &dfl, NULL);
  /* A terminal's Ctrl-C signals the whole foreground process group: the
   * host decides what an interrupt does to its tasks (theus-run cancels the
   * run, which kills the running workers itself); a host that dies of it
   * takes the workers along (PR_SET_PDEATHSIG). */
  signal(SIGINT, SIG_IGN);
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, NULL);
}

/* ---- task API ------------------------------------------------------------ */

/* A NULL task gets neutral answers (NULL, 0, THEUS_EINVAL): a task function
 * passing on a pointer it did not check must not crash the worker. */

const theus_arena *theus_task_arena(const theus_task *t) { return t ? t->arena : NULL; }

const void *theus_task_arg(const theus_task *t, size_t *len) {
  if (len) *len = t ? t->arg_len : 0;
  return t ? t->arg : NULL;
}

unsigned theus_task_nhandles(const theus_task *t) { return t ? t->slot->nhandles : 0; }

theus_handle theus_task_handle(const theus_task *t, unsigned i) {
  return t && i < t->slot->nhandles ? t->slot->handles[i] : 0;
}

int theus_task_array(const theus_task *t, unsigned i, theus_array_info *out) {
  if (!t || i >= t->slot->nhandles || !out) return THEUS_EINVAL;
  *out = t->in[i];
  return 0;
}

int theus_task_view(const theus_task *t, unsigned i, const void **ptr, size_t *len) {
  if (!t || i >= t->slot->nhandles) return THEUS_EINVAL;
  if (ptr) *ptr = t->in[i].data;
  if (len) *len = t->in[i].nbytes;
  return 0;
}

void *theus_task_window(const theus_task *t, size_t *len) {
  worker_ctx *x = worker_self;
  int has = t && x && x->win.gen && (t->slot->flags & THEUS__TASK_WINDOW);
  if (len) *len = has ? x->win.len : 0;
  return has ? x->win.base : NULL;
}

void *theus_task_out(theus_task *t, size_t *cap) {
  if (cap) *cap = t ? t->out_cap : 0;
  return t ? t->out : NULL;
}

int theus_task_set_result(theus_task *t, size_t len) {
  if (!t) return THEUS_EINVAL;
  if (len > t->out_cap)
    return theus_task_fail(t, THEUS_ETRUNC,
                           "task result of %zu bytes exceeds the inline limit (%zu bytes: THEUS_POOL_RESULT_MAX, "
                           "or result_size in a map): put large results in the arena and return the handle",
                           len, t->out_cap);
  t->out_len = len;
  return 0;
}

int theus_task_write(theus_task *t, const void *data, size_t len) {
  if (!t) return THEUS_EINVAL;
  if (!data && len) return theus_task_fail(t, THEUS_EINVAL, "theus_task_write: data is NULL (%zu bytes)", len);
  if (len > t->out_cap - t->out_len)
    return theus_task_fail(t, THEUS_ETRUNC,
                           "task result would grow to %zu bytes, beyond the inline limit (%zu bytes: "
                           "THEUS_POOL_RESULT_MAX, or result_size in a map): put large results in the arena",
                           t->out_len + len, t->out_cap);
  if (len) memcpy(t->out + t->out_len, data, len);
  t->out_len += len;
  return 0;
}

int theus_task_fail(theus_task *t, int code, const char *fmt, ...) {
  if (!t) return THEUS_EINVAL;
  t->failed = 1;
  if (t->msg_taken) return code < 0 ? code : THEUS_EPROCESS;
  va_list ap;
  va_start(ap, fmt);
  if (fmt)
    vsnprintf(t->slot->errmsg, sizeof t->slot->errmsg, fmt, ap);
  else
    snprintf(t->slot->errmsg, sizeof t->slot->errmsg, "task failed (theus_task_fail with no message)");
  va_end(ap);
  return code < 0 ? code : THEUS_EPROCESS;
}

unsigned theus_task_worker(const theus_task *t) { return t ? t->worker : UINT_MAX; }

/* ---- output ---------------------------------------------------------------- */

/* Announces label in both output pipes (see theus__ctl.out_fd): what this
 * worker writes from now on is its. One write per pipe, far below PIPE_BUF,
 * so a marker is never split by another writer of the same pipe. */
static void announce(worker_ctx *x, const char *label) {
  char m[2 + THEUS__OUT_NONCE + THEUS__OUT_LABEL];
  size_t n = 0;
  m[n++] = '\0';
  m[n++] = 'T';
  memcpy(m + n, x->ctl->out_nonce, THEUS__OUT_NONCE);
  n += THEUS__OUT_NONCE;
  size_t l = strnlen(label, THEUS__OUT_LABEL - 1);
  memcpy(m + n, label, l);
  n += l;
  m[n++] = '\0';
  for (int fd = STDOUT_FILENO; fd <= STDERR_FILENO; fd++)
    while (write(fd, m, n) < 0 && errno == EINTR) {
    }
  memcpy(x->label, label, l);
  x->label[l] = '\0';
}

/* Before a task: a new label is announced (a syscall per pipe, only when the
 * process changes, never on a run of tasks of one process). */
static void label_task(worker_ctx *x, const theus_task *t) {
  if (x->ctl->out_mode != THEUS_OUTPUT_FORWARD) return;
  char buf[THEUS__OUT_LABEL];
  const char *l = x->ctl->label ? x->ctl->label(t, buf, sizeof buf) : NULL;
  if (!l) l = "";
  if (strncmp(l, x->label, THEUS__OUT_LABEL - 1) != 0) announce(x, l);
}

/* A worker's stdio: what the host had buffered when it forked is not the
 * worker's to print (it would come out once per worker). When forwarding,
 * stdout is unbuffered so that nothing a task printed is lost when the worker
 * is killed. fds 1 and 2 were set up by the fork server. */
static void worker_stdio(worker_ctx *x) {
  __fpurge(stdout);
  __fpurge(stderr);
  if (x->ctl->out_mode != THEUS_OUTPUT_FORWARD) return; /* discarded, or the host's (flushed after each task) */
  setvbuf(stdout, NULL, _IONBF, 0);
  announce(x, ""); /* ends a dead predecessor's partial line */
}

const void *theus_task_context(const theus_task *t) { return t ? t->ctl->task_context : NULL; }

unsigned theus_task_attempt(const theus_task *t) { return t ? t->slot->attempt : 0; }

const void *theus_task_common(const theus_task *t, size_t *len) {
  size_t n = t && t->slot->nitems ? t->slot->item_common : 0;
  if (len) *len = n;
  return n ? t->slot->arg : NULL;
}

/* ---- task loop ----------------------------------------------------------- */

static int resolve_inputs(theus_task *t) {
  theus__slot *s = t->slot;
  for (unsigned i = 0; i < s->nhandles; i++) {
    if (!t->arena)
      return theus_task_fail(t, THEUS_EINVAL, "task input %u (handle 0x%016llx): the pool has no arena "
                             "(set theus_pool_config.arena)", i, (unsigned long long)s->handles[i]);
    int rc = theus_array_info_get(t->arena, s->handles[i], &t->in[i]);
    if (rc < 0)
      return theus_task_fail(t, rc, "task input %u (handle 0x%016llx%s%s%s): %s", i,
                             (unsigned long long)s->handles[i], s->has_keys ? ", key '" : "",
                             s->has_keys ? s->keys[i] : "", s->has_keys ? "'" : "",
                             theus_arena_errmsg(t->arena));
  }
  return 0;
}

static int task_status(theus_task *t, int rc) {
  if (rc == 0) return 0;
  int st = rc < 0 ? rc : THEUS_EPROCESS;
  if (!t->failed && !t->msg_taken)
    snprintf(t->slot->errmsg, sizeof t->slot->errmsg, "task returned %d (%s) without a message", rc,
             theus_strerror(st));
  return st;
}

/* A map chunk: every item in turn; in res the statuses, then the lengths
 * of the items' results, then the results at a stride of item_res (see
 * theus__chunk_lens). The slot's status is the first failure, its message
 * prefixed by the item. */
static int run_items(worker_ctx *x, theus_task *t) {
  theus__slot *s = t->slot;
  int32_t *status = (int32_t *)(void *)s->res;
  uint32_t *lens = theus__chunk_lens(s->res, s->nitems);
  unsigned char *out = theus__chunk_items(s->res, s->nitems);
  int first = 0;
  for (uint32_t i = 0; i < s->nitems; i++) {
    t->arg = s->arg + s->item_common + (size_t)i * s->item_arg;
    t->arg_len = s->item_arg;
    t->out = out + (size_t)i * s->item_res;
    t->out_cap = s->item_res;
    t->out_len = 0;
    t->failed = 0;
    x->task = t;
    status[i] = task_status(t, s->fn(t));
    lens[i] = status[i] ? 0 : (uint32_t)t->out_len;
    x->task = NULL;
    if (status[i] && !first) {
      first = status[i];
      char msg[THEUS_POOL_ERRMSG_MAX];
      snprintf(msg, sizeof msg, "%s", s->errmsg);
      snprintf(s->errmsg, sizeof s->errmsg, "map item %u of the chunk: %.200s", i, msg);
      t->msg_taken = 1;
    }
  }
  s->res_len = (uint32_t)theus__chunk_res_len(s->nitems, s->item_res);
  return first;
}

static void run_task(worker_ctx *x, const theus_arena *arena, theus__slot *s) {
  theus_task t = {.ctl = x->ctl, .slot = s, .worker = x->w, .arena = arena, .arg = s->arg, .arg_len = s->arg_len,
                  .out = s->res, .out_cap = THEUS_POOL_RESULT_MAX};
  uint64_t t0 = theus__now_ns();
  uint64_t deadline = s->timeout_ms > 0 ? theus__deadline_ns(t0, s->timeout_ms) : 0;
  atomic_store_explicit(&s->deadline_ns, deadline > INT64_MAX ? 0 : (int64_t)deadline, memory_order_relaxed);
  /* A CAS, not a store: theus_pool_cancel may take a queued slot first. */
  uint32_t queued = THEUS__SLOT_QUEUED;
  if (!atomic_compare_exchange_strong_explicit(&s->state, &queued, THEUS__SLOT_RUNNING, memory_order_seq_cst,
                                               memory_order_seq_cst))
    return;
  s->worker = (int32_t)x->w;
  s->pid = x->pid;
  s->errmsg[0] = '\0';
  s->res_len = 0;
  s->start_ns = t0;
  s->end_ns = 0;
  label_task(x, &t);
  int st = resolve_inputs(&t);
  if (st == 0 && (s->flags & THEUS__TASK_WINDOW)) st = window_range(x, &t, s->win_lo, s->win_hi);
  if (st == 0 && s->nitems) {
    st = run_items(x, &t);
  } else if (st == 0) {
    x->task = &t;
    st = task_status(&t, s->fn(&t));
    x->task = NULL;
    s->res_len = st == 0 ? (uint32_t)t.out_len : 0;
  }
  /* A task may have buffered its stream again (setvbuf): its output is in
   * the pipe before the result is, and before the next label's marker. No
   * syscall, not even a lock, when nothing is buffered. */
  if (__fpending(stdout)) fflush(stdout);
  if (__fpending(stderr)) fflush(stderr);
  uint64_t t1 = theus__now_ns();
  s->end_ns = t1;
  theus__ring *r = x->ring; /* single writer (this worker): plain adds, no locked RMW */
  atomic_store_explicit(&r->busy_ns, atomic_load_explicit(&r->busy_ns, memory_order_relaxed) + (t1 - t0),
                        memory_order_relaxed);
  atomic_store_explicit(&r->tasks, atomic_load_explicit(&r->tasks, memory_order_relaxed) + 1, memory_order_relaxed);
  _Atomic uint64_t *ctr = st == 0 ? &r->completed : &r->failed;
  atomic_store_explicit(ctr, atomic_load_explicit(ctr, memory_order_relaxed) + 1, memory_order_relaxed);
  s->status = st;
  theus__slot_finish(s);
}

/* Fails the task at s without running it (its message is already written). */
static void refuse_task(worker_ctx *x, theus__slot *s, int st) {
  uint32_t queued = THEUS__SLOT_QUEUED;
  if (!atomic_compare_exchange_strong(&s->state, &queued, THEUS__SLOT_RUNNING)) return; /* canceled */
  s->worker = (int32_t)x->w;
  s->pid = x->pid;
  s->res_len = 0;
  s->start_ns = s->end_ns = theus__now_ns();
  s->status = st;
  atomic_fetch_add(&x->ring->tasks, 1);
  atomic_fetch_add(&x->ring->failed, 1);
  theus__slot_finish(s);
}

/* Waits for the slot at ring.run to be QUEUED: spins spin_us, then sleeps on
 * the ring's futex word. Returns NULL when the pool stops. */
static theus__slot *next_task(worker_ctx *x, uint64_t seq) {
  theus__slot *s = theus__slot_of(x->ctl, x->w, seq);
  uint64_t spin_from = 0, spin_until = 0;
  for (unsigned n = 0;; n++) {
    if (atomic_load_explicit(&s->state, memory_order_acquire) == THEUS__SLOT_QUEUED) return s;
    if (atomic_load_explicit(&s->skip, memory_order_acquire) && s->seq == seq) return s; /* canceled: step over */
    if (atomic_load_explicit(&x->ctl->stop, memory_order_relaxed)) {
      if (atomic_load_explicit(&s->state, memory_order_acquire) == THEUS__SLOT_QUEUED &&
          atomic_load(&x->ctl->stop) == THEUS__STOP_DRAIN)
        return s;
      return NULL;
    }
    if ((n & 63) != 63) {
      theus__cpu_relax();
      continue;
    }
    uint64_t now = theus__now_ns();
    if (!spin_until) {
      spin_from = now;
      spin_until = now + (uint64_t)x->ctl->spin_us * 1000u;
    }
    if (now - spin_from > THEUS__SPIN_YIELD_NS && now < spin_until) sched_yield(); /* the submitter may need it */
    if (now < spin_until) continue;
    uint32_t v = atomic_load(&x->ring->pub);
    atomic_store(&x->ring->sleeping, 1);
    if (atomic_load(&s->state) != THEUS__SLOT_QUEUED && !atomic_load(&s->skip) && !atomic_load(&x->ctl->stop))
      theus__futex_wait(&x->ring->pub, v, -1);
    atomic_store(&x->ring->sleeping, 0);
    spin_until = 0;
  }
}

_Noreturn void theus__worker_main(theus__ctl *c, unsigned w, const theus_arena *arena,
                                  const uintptr_t (*ranges)[2], unsigned nranges, const theus__winmap *win) {
  worker_ctx x = {.ctl = c, .ring = theus__ring_of(c, w), .w = w, .pid = (int)getpid()};
  if (win) x.win = *win;
  for (unsigned i = 0; i < nranges && i < THEUS__MAX_ARENA_RANGES; i++) {
    x.ranges[i][0] = ranges[i][0];
    x.ranges[i][1] = ranges[i][1];
    x.nranges = i + 1;
  }
  char name[16] = "theus-worker";
  prctl(PR_SET_NAME, name, 0, 0, 0);
  if (!c->keep_core) {
    struct rlimit rl = {0, 0};
    setrlimit(RLIMIT_CORE, &rl);
  } else {
    prctl(PR_SET_DUMPABLE, 1, 0, 0, 0); /* the fork server is not: core dumps need it */
  }
  reset_signals();
  worker_stdio(&x);
  worker_self = &x;
  install_fault_handler();
  for (;;) {
    uint64_t seq = atomic_load_explicit(&x.ring->run, memory_order_relaxed);
    theus__slot *s = next_task(&x, seq);
    if (!s) _exit(0);
    if (atomic_load_explicit(&s->skip, memory_order_acquire)) {
      atomic_store(&s->skip, 0); /* theus_pool_cancel finished it while queued */
    } else {
      match_window(&x, s);
      int st = match_sandbox(&x, s);
      if (st == 0)
        run_task(&x, arena, s);
      else
        refuse_task(&x, s, st);
      if (atomic_load_explicit(&s->skip, memory_order_acquire)) atomic_store(&s->skip, 0);
    }
    atomic_store_explicit(&x.ring->run, seq + 1, memory_order_release);
  }
}
