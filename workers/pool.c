/* workers/: the orchestrator side of the pool — start, submit, wait, stats,
 * stop. A "keeper" thread per pool forks the fork server and blocks in
 * waitpid() on it: the fork server's PR_SET_PDEATHSIG then fires exactly when
 * the pool's keeper (i.e. the pool, or the whole process) goes away, not when
 * whichever host thread called theus_pool_open() happens to exit. */
#include <errno.h>
#include <link.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "pool_internal.h"

typedef struct wstate {
  pthread_mutex_t lock;
  uint64_t tail;     /* next sequence to hand out (under lock) */
  uint64_t run_seen; /* last value read from ring.run (under lock) */
  /* Placed (reserved by place(), then queued), not yet collected. place()
   * reserves by compare-and-swap from the value it chose by, so a racing
   * submitter that chose by the same value fails and chooses again. */
  _Atomic uint64_t outstanding;
} __attribute__((aligned(64))) wstate;

struct theus_pool {
  theus__ctl *ctl;
  unsigned n, cap;
  wstate *ws;
  _Atomic uint64_t submitted;
  _Atomic int stopping;
  /* "A slot was freed": bumped by every collection; submitters blocked on
   * full rings sleep on it (a futex word in private memory). */
  _Atomic uint32_t freed;
  _Atomic uint32_t freed_waiters;
  int64_t default_timeout_ms;
  pthread_t keeper;
  int keeper_running;
  int pidfd; /* of the fork server: signals it without any pid-reuse race */
  theus__output *out; /* the output thread (THEUS_OUTPUT_FORWARD), or NULL */
  uintptr_t (*image)[2]; /* executable segments loaded when the pool started */
  size_t nimage;
  const theus_arena *arena;
  int win_fd;                /* control socket to the fork server (write windows), or -1 */
  pthread_mutex_t win_lock;  /* one write window at a time; held from open to close */
  uint64_t win_gen;          /* under win_lock */
  theus__err err;
};

static int set_err(theus_pool *p, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int set_err(theus_pool *p, int code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  theus__err_vset(&p->err, code, fmt, ap);
  va_end(ap);
  return code;
}

const char *theus_pool_errmsg(const theus_pool *p) {
  return p ? theus__err_msg(&p->err) : "theus_pool_errmsg: pool is NULL (theus_pool_open ran out of memory)";
}

void theus_pool_config_init(theus_pool_config *cfg) {
  if (!cfg) return;
  memset(cfg, 0, sizeof *cfg);
  unsigned n = theus__os_cpus(); /* the CPUs this process may use, not those online */
  cfg->nworkers = n > THEUS_POOL_MAX_WORKERS ? THEUS_POOL_MAX_WORKERS : n;
  cfg->ring_capacity = 256;
  cfg->spin_us = 50;
}

/* ---- the program image: task functions must come from it ---------------- */

static int collect_image(struct dl_phdr_info *info, size_t size, void *ud) {
  (void)size;
  theus_pool *p = ud;
  for (int i = 0; i < info->dlpi_phnum; i++) {
    const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
    if (ph->p_type != PT_LOAD || !(ph->p_flags & PF_X)) continue;
    uintptr_t (*grown)[2] = realloc(p->image, (p->nimage + 1) * sizeof *p->image);
    if (!grown) return 1;
    p->image = grown;
    p->image[p->nimage][0] = info->dlpi_addr + ph->p_vaddr;
    p->image[p->nimage][1] = info->dlpi_addr + ph->p_vaddr + ph->p_memsz;
    p->nimage++;
  }
  return 0;
}

static int in_image(const theus_pool *p, theus_task_fn fn) {
  uintptr_t a = (uintptr_t)fn;
  for (size_t i = 0; i < p->nimage; i++)
    if (a >= p->image[i][0] && a < p->image[i][1]) return 1;
  return 0;
}

int theus_pool_has_function(const theus_pool *p, theus_task_fn fn) { return p && in_image(p, fn); }

/* ---- the keeper thread --------------------------------------------------- */

/* The fork server died on its own: fail every pending task so no waiter hangs. */
static void mark_broken(theus_pool *p, pid_t pid, int st) {
  theus__ctl *c = p->ctl;
  char why[96];
  if (WIFSIGNALED(st))
    snprintf(why, sizeof why, "killed by SIG%s", sigabbrev_np(WTERMSIG(st)) ? sigabbrev_np(WTERMSIG(st)) : "?");
  else
    snprintf(why, sizeof why, "exited with status %d", WEXITSTATUS(st));
  atomic_store(&c->broken, 1);
  set_err(p, THEUS_ECRASH, "the pool's fork server (pid %d) %s: the pool is broken; stop it and start a new one",
          (int)pid, why);
  for (unsigned w = 0; w < p->n; w++)
    for (unsigned i = 0; i < p->cap; i++) {
      theus__slot *s = theus__slot_of(c, w, i);
      uint32_t state = atomic_load(&s->state);
      if (state != THEUS__SLOT_QUEUED && state != THEUS__SLOT_RUNNING) continue;
      s->status = THEUS_ECRASH;
      s->res_len = 0;
      snprintf(s->errmsg, sizeof s->errmsg, "the pool's fork server (pid %d) %s; every worker died with it",
               (int)pid, why);
      theus__slot_finish(s);
    }
}

static void start_failed(theus__ctl *c, const char *msg) {
  if (msg && !c->fatal[0]) snprintf(c->fatal, sizeof c->fatal, "%s", msg);
  atomic_store(&c->start_state, THEUS__START_FAILED);
  theus__futex_wake(&c->start_state);
}

static void *keeper_main(void *arg) {
  theus_pool *p = arg;
  pid_t pid = fork();
  if (pid == 0) theus__forksrv_main(p->ctl);
  if (pid < 0) {
    start_failed(p->ctl, "fork of the fork server failed (process limit? see ulimit -u)");
    return NULL;
  }
  p->pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
  atomic_store(&p->ctl->forksrv_pid, pid);
  int st = 0;
  while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
  }
  if (atomic_load(&p->ctl->start_state) == THEUS__START_PENDING)
    start_failed(p->ctl, "the fork server exited during start-up");
  else if (!atomic_load(&p->stopping))
    mark_broken(p, pid, st);
  else if (!(WIFEXITED(st) && WEXITSTATUS(st) == 0))
    atomic_store(&p->ctl->broken, 1);
  return NULL;
}

static void signal_forksrv(theus_pool *p) {
  if (p->pidfd >= 0) syscall(SYS_pidfd_send_signal, p->pidfd, SIGUSR1, NULL, 0);
}

/* ---- start / stop -------------------------------------------------------- */

static int map_ctl(theus_pool *p, const theus_pool_config *cfg) {
  size_t head = ((sizeof(theus__ctl) + 63) & ~(size_t)63) + (size_t)p->n * sizeof(theus__ring);
  size_t total = head + (size_t)p->n * p->cap * sizeof(theus__slot);
  /* Anonymous + shared: inherited by the fork server and workers, named
   * nowhere, and released by the kernel with the last process. Pages are
   * touched only as slots are used. */
  void *m = NULL;
  if (theus__os_map_anon(total, &m))
    return set_err(p, THEUS_ENOMEM, "theus_pool_open: mmap of %zu bytes of rings failed: %s (lower nworkers "
                   "or ring_capacity)", total, strerror(errno));
  theus__ctl *c = m;
  c->nworkers = p->n;
  c->cap = p->cap;
  c->spin_us = cfg->spin_us;
  c->keep_core = cfg->keep_core_dumps;
  c->arena_fd = cfg->arena ? theus_arena_ro_fd(cfg->arena) : -1;
  c->arena_rw_fd = cfg->arena ? theus_arena_rw_fd(cfg->arena) : -1;
  c->win_fd = -1;
  c->orch_pid = getpid();
  c->unsandboxed = cfg->unsandboxed;
  c->out_mode = cfg->output;
  c->label = cfg->task_label;
  for (unsigned w = 0; w < THEUS_POOL_MAX_WORKERS; w++) c->out_fd[w][0] = c->out_fd[w][1] = -1;
  c->task_context = cfg->task_context;
  c->task_context_size = cfg->task_context_size;
  c->slots_off = head;
  c->total = total;
  for (unsigned w = 0; w < p->n; w++) atomic_store(&theus__ring_of(c, w)->run, 1);
  p->ctl = c;
  return 0;
}

static int check_config(theus_pool *p, const theus_pool_config *cfg) {
  if (cfg->nworkers < 1 || cfg->nworkers > THEUS_POOL_MAX_WORKERS)
    return set_err(p, THEUS_EINVAL, "theus_pool_open: nworkers is %u, must be 1..%u", cfg->nworkers,
                   THEUS_POOL_MAX_WORKERS);
  unsigned cap = cfg->ring_capacity;
  if (cap < 2 || cap > 65536 || (cap & (cap - 1)))
    return set_err(p, THEUS_EINVAL, "theus_pool_open: ring_capacity is %u, must be a power of two in 2..65536",
                   cap);
  if (cfg->output < THEUS_OUTPUT_FORWARD || cfg->output > THEUS_OUTPUT_INHERIT)
    return set_err(p, THEUS_EINVAL, "theus_pool_open: output is %d, must be THEUS_OUTPUT_FORWARD (0), "
                   "THEUS_OUTPUT_DISCARD (1) or THEUS_OUTPUT_INHERIT (2)", cfg->output);
  if (cfg->arena && theus_arena_ro_fd(cfg->arena) < 0)
    return set_err(p, THEUS_EINVAL, "theus_pool_open: the arena has no read-only descriptor");
  return 0;
}

static int launch(theus_pool *p) {
  sigset_t all, old;
  sigfillset(&all);
  /* The keeper, and so the fork server, start with every signal blocked:
   * host signals are never delivered to them. */
  pthread_sigmask(SIG_SETMASK, &all, &old);
  int rc = pthread_create(&p->keeper, NULL, keeper_main, p);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (rc != 0)
    return set_err(p, THEUS_ESYS, "theus_pool_open: pthread_create of the keeper thread failed: %s", strerror(rc));
  p->keeper_running = 1;
  uint32_t st;
  while ((st = atomic_load(&p->ctl->start_state)) == THEUS__START_PENDING)
    theus__futex_wait(&p->ctl->start_state, st, 100000000);
  theus__output_close_writers(p->out); /* the fork server holds them now (or never will) */
  if (st == THEUS__START_FAILED)
    return set_err(p, THEUS_ESYS, "theus_pool_open: %s", p->ctl->fatal[0] ? p->ctl->fatal : "fork server failed");
  /* The keeper publishes the pid (after the pidfd) once fork() returned in it. */
  while (!atomic_load(&p->ctl->forksrv_pid) && atomic_load(&p->ctl->start_state) == THEUS__START_UP) sched_yield();
  return 0;
}

int theus_pool_open(const theus_pool_config *cfg, theus_pool **out) {
  theus_pool_config def;
  if (!out) return THEUS_EINVAL;
  *out = NULL;
  if (!cfg) {
    theus_pool_config_init(&def);
    cfg = &def;
  }
  theus_pool *p = calloc(1, sizeof *p);
  if (!p) return THEUS_ENOMEM;
  theus__err_init(&p->err);
  p->pidfd = -1;
  p->win_fd = -1;
  pthread_mutex_init(&p->win_lock, NULL);
  *out = p;
  int rc = check_config(p, cfg);
  if (rc < 0) return rc;
  p->n = cfg->nworkers;
  p->cap = cfg->ring_capacity;
  p->default_timeout_ms = cfg->default_timeout_ms;
  p->ws = aligned_alloc(64, p->n * sizeof *p->ws);
  if (!p->ws) return set_err(p, THEUS_ENOMEM, "theus_pool_open: out of memory");
  for (unsigned w = 0; w < p->n; w++) {
    pthread_mutex_init(&p->ws[w].lock, NULL);
    p->ws[w].tail = p->ws[w].run_seen = 1;
    atomic_init(&p->ws[w].outstanding, 0);
  }
  if (dl_iterate_phdr(collect_image, p) != 0) return set_err(p, THEUS_ENOMEM, "theus_pool_open: out of memory");
  if ((rc = map_ctl(p, cfg)) < 0) return rc;
  p->arena = cfg->arena;
  if (cfg->output == THEUS_OUTPUT_FORWARD) {
    char err[THEUS_POOL_ERRMSG_MAX];
    if ((rc = theus__output_open(p->ctl, p->n, cfg->output_fn, cfg->output_ud, &p->out, err, sizeof err)) < 0)
      return set_err(p, rc, "%s", err);
  }
  int sv[2] = {-1, -1};
  if (p->ctl->arena_rw_fd >= 0 && socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) == 0) {
    p->win_fd = sv[0];
    p->ctl->win_fd = sv[1];
  }
  rc = launch(p);
  if (sv[1] >= 0) close(sv[1]); /* the fork server has its copy */
  if (rc < 0) return rc;
  char err[THEUS_POOL_ERRMSG_MAX];
  if ((rc = theus__output_run(p->out, err, sizeof err)) < 0) return set_err(p, rc, "%s", err);
  return rc;
}

int theus_pool_close(theus_pool *p, int cancel_running) {
  if (!p) return 0;
  int rc = 0;
  if (p->keeper_running) {
    atomic_store(&p->stopping, 1);
    atomic_store(&p->ctl->stop, cancel_running ? THEUS__STOP_CANCEL : THEUS__STOP_DRAIN);
    for (unsigned w = 0; w < p->n; w++) {
      theus__ring *r = theus__ring_of(p->ctl, w);
      atomic_fetch_add(&r->pub, 1);
      theus__futex_wake(&r->pub);
    }
    signal_forksrv(p);
    pthread_join(p->keeper, NULL);
    if (atomic_load(&p->ctl->broken)) rc = THEUS_ECRASH;
  }
  theus__output_stop(p->out); /* after the fork server: it and its workers wrote all they will */
  if (p->pidfd >= 0) close(p->pidfd);
  if (p->win_fd >= 0) close(p->win_fd);
  pthread_mutex_destroy(&p->win_lock);
  if (p->ctl) theus__os_unmap(p->ctl, p->ctl->total);
  if (p->ws)
    for (unsigned w = 0; w < p->n; w++) pthread_mutex_destroy(&p->ws[w].lock);
  free(p->ws);
  free(p->image);
  theus__err_fini(&p->err);
  free(p);
  return rc;
}

/* ---- submit -------------------------------------------------------------- */

static int check_desc(theus_pool *p, const theus_task_desc *d) {
  if (!d || !d->fn) return set_err(p, THEUS_EINVAL, "theus_pool_submit: task or task function is NULL");
  if (d->flags & ~THEUS_TASK_SANDBOX)
    return set_err(p, THEUS_EINVAL, "theus_pool_submit: unknown task flags 0x%x (THEUS_TASK_SANDBOX or 0)", d->flags);
  if (!in_image(p, d->fn))
    return set_err(p, THEUS_EINVAL, "theus_pool_submit: function %p is not in the program image the workers were "
                   "forked from: link it in, or dlopen() its library before theus_pool_open()", (void *)d->fn);
  if (d->arg_len > THEUS_POOL_ARG_MAX || (d->arg_len && !d->arg))
    return set_err(p, THEUS_EINVAL, "theus_pool_submit: %zu argument bytes (limit THEUS_POOL_ARG_MAX = %u; pass "
                   "bigger inputs as arena handles)", d->arg_len, THEUS_POOL_ARG_MAX);
  if (d->nhandles > THEUS_POOL_MAX_HANDLES || (d->nhandles && !d->handles))
    return set_err(p, THEUS_EINVAL, "theus_pool_submit: %u handles (limit THEUS_POOL_MAX_HANDLES = %u)",
                   d->nhandles, THEUS_POOL_MAX_HANDLES);
  if (atomic_load_explicit(&p->stopping, memory_order_relaxed) || atomic_load(&p->ctl->broken))
    return set_err(p, THEUS_ECLOSED, "theus_pool_submit: the pool is %s",
                   atomic_load(&p->ctl->broken) ? "broken (its fork server died): start a new one" : "stopping");
  return 0;
}

/* A map chunk rides in a task slot: these describe its items (nitems 0: a
 * task); common bytes go first in arg, then the items' bytes. */
typedef struct chunk_shape {
  uint32_t nitems, item_arg, item_res, common_len;
  const void *common;
  uint32_t flags; /* THEUS_TASK_* (a plain task with flags rides here too, nitems 0) */
  uint64_t win_gen, win_lo, win_hi; /* THEUS__TASK_WINDOW */
} chunk_shape;

static void fill_slot(theus__slot *s, const theus_task_desc *d, const chunk_shape *cs) {
  size_t off = cs ? cs->common_len : 0;
  s->fn = d->fn;
  s->arg_len = (uint32_t)(off + d->arg_len);
  if (off) memcpy(s->arg, cs->common, off);
  if (d->arg_len) memcpy(s->arg + off, d->arg, d->arg_len);
  s->nhandles = d->nhandles;
  for (unsigned i = 0; i < d->nhandles; i++) s->handles[i] = d->handles[i];
  s->has_keys = d->keys != NULL;
  for (unsigned i = 0; d->keys && i < d->nhandles; i++)
    snprintf(s->keys[i], sizeof s->keys[i], "%s", d->keys[i] ? d->keys[i] : "");
  s->status = 0;
  s->res_len = 0;
  s->nitems = 0;
  s->flags = 0;
  s->item_common = 0;
  s->retries = d->retries;
  s->attempt = 0;
  s->causes[0] = '\0';
  atomic_store_explicit(&s->skip, 0, memory_order_relaxed);
}

/* Queues d on worker w without waking it. THEUS_EAGAIN if its ring is full.
 * The caller has reserved one unit of w's outstanding count. */
static int enqueue(theus_pool *p, unsigned w, const theus_task_desc *d, int64_t timeout_ms, const chunk_shape *cs,
                   theus_ticket *out) {
  wstate *ws = &p->ws[w];
  theus__ring *r = theus__ring_of(p->ctl, w);
  pthread_mutex_lock(&ws->lock);
  uint64_t tail = ws->tail;
  if (tail - ws->run_seen >= p->cap) ws->run_seen = atomic_load_explicit(&r->run, memory_order_acquire);
  theus__slot *s = theus__slot_of(p->ctl, w, tail);
  if (tail - ws->run_seen >= p->cap || atomic_load_explicit(&s->state, memory_order_acquire) != THEUS__SLOT_FREE) {
    pthread_mutex_unlock(&ws->lock);
    return THEUS_EAGAIN;
  }
  fill_slot(s, d, cs);
  s->timeout_ms = timeout_ms;
  s->start_ns = s->end_ns = 0;
  if (cs) {
    s->nitems = cs->nitems;
    s->item_arg = cs->item_arg;
    s->item_res = cs->item_res;
    s->flags = cs->flags;
    s->item_common = cs->common_len;
    s->win_gen = cs->win_gen;
    s->win_lo = cs->win_lo;
    s->win_hi = cs->win_hi;
  }
  s->seq = tail;
  atomic_store_explicit(&s->state, THEUS__SLOT_QUEUED, memory_order_seq_cst);
  ws->tail = tail + 1;
  pthread_mutex_unlock(&ws->lock);
  atomic_fetch_add_explicit(&p->submitted, 1, memory_order_relaxed);
  *out = (tail << 8) | w;
  return 0;
}

static void wake_worker(theus_pool *p, unsigned w) {
  theus__ring *r = theus__ring_of(p->ctl, w);
  atomic_fetch_add_explicit(&r->pub, 1, memory_order_seq_cst);
  if (atomic_load_explicit(&r->sleeping, memory_order_seq_cst)) theus__futex_wake(&r->pub);
}

/* Load of worker w for placement: queued tasks first; among equals, a worker
 * still spinning (awake) beats one asleep on its futex, so back-to-back
 * tasks stay on a hot worker instead of paying a futex wake each. */
static uint64_t placement_cost(theus_pool *p, unsigned w, uint64_t o) {
  unsigned asleep = atomic_load_explicit(&theus__ring_of(p->ctl, w)->sleeping, memory_order_relaxed) != 0;
  return o * 2u + asleep;
}

/* Reserves a unit of the least loaded worker's outstanding count: the CAS
 * from the value the choice was made by makes choice and reservation one
 * atomic step, so concurrent submitters spread instead of piling on the
 * worker they all saw idle. Counts only grow between a read and the CAS of
 * another submitter, so a successful CAS lands on a worker that is still a
 * least loaded one. Ties go to the lowest index, not round robin:
 * back-to-back tasks from one thread then stay on one hot worker while the
 * others fall asleep, instead of keeping every worker spinning (on 2 cores
 * they starve the submitter). */
static unsigned reserve_least(theus_pool *p) {
  for (;;) {
    unsigned best = 0;
    uint64_t least = UINT64_MAX, seen = 0;
    for (unsigned w = 0; w < p->n; w++) {
      uint64_t o = atomic_load_explicit(&p->ws[w].outstanding, memory_order_acquire);
      uint64_t cost = placement_cost(p, w, o);
      if (cost < least) least = cost, best = w, seen = o;
    }
    if (atomic_compare_exchange_strong_explicit(&p->ws[best].outstanding, &seen, seen + 1, memory_order_acq_rel,
                                                memory_order_relaxed))
      return best;
  }
}

/* Tries the least loaded worker first, then the others in turn. */
static int place(theus_pool *p, const theus_task_desc *d, const chunk_shape *cs, theus_ticket *out,
                 unsigned *wout) {
  int64_t tmo = d->timeout_ms ? d->timeout_ms : p->default_timeout_ms;
  if (tmo > 0 && !atomic_load_explicit(&p->ctl->timed, memory_order_relaxed) &&
      !atomic_exchange(&p->ctl->timed, 1))
    signal_forksrv(p); /* it sleeps without a tick until a task carries a timeout */
  chunk_shape plain = {.flags = d->flags}; /* a plain task's flags ride in the shape too */
  if (!cs && d->flags) cs = &plain;
  unsigned best = reserve_least(p);
  for (unsigned k = 0; k < p->n; k++) {
    unsigned w = (best + k) % p->n;
    if (k) atomic_fetch_add_explicit(&p->ws[w].outstanding, 1, memory_order_acq_rel);
    if (enqueue(p, w, d, tmo, cs, out) == 0) {
      *wout = w;
      return 0;
    }
    atomic_fetch_sub_explicit(&p->ws[w].outstanding, 1, memory_order_acq_rel);
  }
  return set_err(p, THEUS_EAGAIN, "theus_pool_submit: all %u task rings are full (%u tasks each): collect results "
                 "with theus_pool_wait before submitting more", p->n, p->cap);
}

int theus_pool_submit(theus_pool *p, const theus_task_desc *task, theus_ticket *out) {
  if (!p || !p->ctl || !out) return THEUS_EINVAL;
  int rc = check_desc(p, task);
  unsigned w = 0;
  if (rc < 0 || (rc = place(p, task, NULL, out, &w)) < 0) return rc;
  wake_worker(p, w);
  return 0;
}

/* Sleeps until a slot is freed after `seen` was read, the deadline, or a
 * 100 ms slice (to notice a pool that stops or breaks). */
static void sleep_for_slot(theus_pool *p, uint32_t seen, uint64_t deadline) {
  uint64_t now = theus__now_ns();
  if (now >= deadline) return;
  uint64_t slice = deadline - now < 100000000u ? deadline - now : 100000000u;
  atomic_fetch_add_explicit(&p->freed_waiters, 1, memory_order_seq_cst);
  if (atomic_load_explicit(&p->freed, memory_order_seq_cst) == seen)
    theus__futex_wait(&p->freed, seen, (int64_t)slice);
  atomic_fetch_sub_explicit(&p->freed_waiters, 1, memory_order_relaxed);
}

static int place_wait(theus_pool *p, const theus_task_desc *d, const chunk_shape *cs, int64_t timeout_ms,
                      theus_ticket *out, unsigned *wout) {
  uint64_t deadline = theus__deadline_ns(theus__now_ns(), timeout_ms);
  for (;;) {
    uint32_t seen = atomic_load_explicit(&p->freed, memory_order_seq_cst);
    int rc = place(p, d, cs, out, wout);
    if (rc != THEUS_EAGAIN) return rc;
    if (atomic_load_explicit(&p->stopping, memory_order_relaxed) || atomic_load(&p->ctl->broken))
      return set_err(p, THEUS_ECLOSED, "theus_pool_submit_wait: the pool is stopping or broken");
    if (theus__now_ns() >= deadline)
      return set_err(p, THEUS_ETIMEDOUT, "theus_pool_submit_wait: every task ring stayed full for %lld ms: "
                     "collect results with theus_pool_wait", (long long)timeout_ms);
    sleep_for_slot(p, seen, deadline);
  }
}

int theus_pool_submit_wait(theus_pool *p, const theus_task_desc *task, int64_t timeout_ms, theus_ticket *out) {
  if (!p || !p->ctl || !out) return THEUS_EINVAL;
  int rc = check_desc(p, task);
  unsigned w = 0;
  if (rc < 0 || (rc = place_wait(p, task, NULL, timeout_ms, out, &w)) < 0) return rc;
  wake_worker(p, w);
  return 0;
}

int theus_pool_submit_batch(theus_pool *p, const theus_task_desc *tasks, size_t n, theus_ticket *tickets) {
  if (!p || !p->ctl || (n && (!tasks || !tickets))) return THEUS_EINVAL;
  unsigned char dirty[THEUS_POOL_MAX_WORKERS] = {0};
  size_t done = 0;
  int rc = 0;
  for (; done < n; done++) {
    unsigned w = 0;
    if ((rc = check_desc(p, &tasks[done])) < 0 || (rc = place(p, &tasks[done], NULL, &tickets[done], &w)) < 0) break;
    dirty[w] = 1;
  }
  for (unsigned w = 0; w < p->n; w++)
    if (dirty[w]) wake_worker(p, w);
  if (n && done == 0) return rc;
  return (int)(done > INT32_MAX ? INT32_MAX : done);
}

/* ---- wait ---------------------------------------------------------------- */

static void collect(const theus__slot *s, theus_pool_result *res) {
  res->status = s->status;
  res->worker = s->worker;
  res->pid = s->pid;
  res->start_ns = s->start_ns;
  res->end_ns = s->end_ns;
  res->len = 0;
  res->data = NULL;
  res->errmsg[0] = '\0';
  if (s->status != 0) snprintf(res->errmsg, sizeof res->errmsg, "%s", s->errmsg);
  if (s->status == 0 && s->res_len) {
    res->data = malloc(s->res_len);
    if (res->data) {
      memcpy(res->data, s->res, s->res_len);
      res->len = s->res_len;
    } else {
      res->status = THEUS_ENOMEM;
      snprintf(res->errmsg, sizeof res->errmsg, "theus_pool_wait: out of memory copying %u result bytes", s->res_len);
    }
  }
}

/* Sleeps on the slot's state word until DONE or the deadline (UINT64_MAX:
 * none). Sleeps at most 100 ms at a time so a broken pool is noticed. */
static int sleep_until_done(theus_pool *p, theus__slot *s, uint64_t deadline) {
  atomic_fetch_add(&s->waiters, 1);
  int rc = 0;
  for (;;) {
    uint32_t st = atomic_load(&s->state);
    if (st == THEUS__SLOT_DONE) break;
    uint64_t now = theus__now_ns();
    if (now >= deadline) {
      rc = THEUS_ETIMEDOUT;
      break;
    }
    if (atomic_load(&p->ctl->broken)) { /* nobody will ever finish it */
      rc = THEUS_ECRASH;
      break;
    }
    uint64_t slice = deadline - now < 100000000u ? deadline - now : 100000000u;
    theus__futex_wait(&s->state, st, (int64_t)slice);
  }
  atomic_fetch_sub(&s->waiters, 1);
  return rc;
}

/* Waits for ticket t to be DONE; *sout gets its slot. */
static int wait_done(theus_pool *p, theus_ticket t, int64_t timeout_ms, theus__slot **sout) {
  unsigned w = (unsigned)(t & 0xff);
  uint64_t seq = t >> 8;
  theus__slot *s = w < p->n && seq ? theus__slot_of(p->ctl, w, seq) : NULL;
  if (!s || s->seq != seq || atomic_load_explicit(&s->state, memory_order_acquire) == THEUS__SLOT_FREE)
    return set_err(p, THEUS_ENOTFOUND, "theus_pool_wait: ticket 0x%llx is unknown or its result was already "
                   "collected", (unsigned long long)t);
  uint64_t start = theus__now_ns();
  uint64_t deadline = theus__deadline_ns(start, timeout_ms);
  uint64_t spin_until = start + (uint64_t)p->ctl->spin_us * 1000u;
  if (spin_until > deadline) spin_until = deadline;
  for (unsigned n = 0; atomic_load_explicit(&s->state, memory_order_acquire) != THEUS__SLOT_DONE; n++) {
    if ((n & 63) != 63) {
      theus__cpu_relax();
      continue;
    }
    uint64_t now = theus__now_ns();
    /* Past THEUS__SPIN_YIELD_NS, let a worker that shares our core run (2
     * cores, 3 spinners); sooner, a task of a few us (an engine step that
     * writes) gives the core away to whatever else runs on a busy machine. */
    if (now - start > THEUS__SPIN_YIELD_NS && now < spin_until) sched_yield();
    if (now < spin_until) continue;
    int slept = sleep_until_done(p, s, deadline);
    if (slept == THEUS_ECRASH)
      return set_err(p, THEUS_ECRASH, "theus_pool_wait: the pool broke (its fork server died) before the task of "
                     "ticket 0x%llx finished: stop the pool and start a new one", (unsigned long long)t);
    if (slept < 0)
      return set_err(p, THEUS_ETIMEDOUT, "theus_pool_wait: the task of ticket 0x%llx is still %s on worker %u after "
                     "%lld ms (the ticket stays valid: wait again)", (unsigned long long)t,
                     atomic_load(&s->state) == THEUS__SLOT_QUEUED ? "queued" : "running", w, (long long)timeout_ms);
    break;
  }
  atomic_thread_fence(memory_order_acquire);
  *sout = s;
  return 0;
}

static void release_slot(theus_pool *p, theus_ticket t, theus__slot *s) {
  atomic_store_explicit(&s->state, THEUS__SLOT_FREE, memory_order_release);
  atomic_fetch_sub_explicit(&p->ws[t & 0xff].outstanding, 1, memory_order_acq_rel);
  /* Dekker pairing with sleep_for_slot: bump, then look for sleepers. */
  atomic_fetch_add_explicit(&p->freed, 1, memory_order_seq_cst);
  if (atomic_load_explicit(&p->freed_waiters, memory_order_seq_cst)) theus__futex_wake(&p->freed);
}

int theus_pool_wait(theus_pool *p, theus_ticket t, int64_t timeout_ms, theus_pool_result *res) {
  if (!p || !p->ctl || !res) return THEUS_EINVAL;
  theus__slot *s;
  int rc = wait_done(p, t, timeout_ms, &s);
  if (rc < 0) { /* the waiter's own copy: p->err may be rewritten by other threads */
    memset(res, 0, sizeof *res);
    res->worker = -1;
    theus__err_copy(&p->err, res->errmsg, sizeof res->errmsg);
    return rc;
  }
  collect(s, res);
  release_slot(p, t, s);
  return 0;
}

/* ---- cancel -------------------------------------------------------------- */

int theus_pool_cancel(theus_pool *p, theus_ticket t) {
  if (!p || !p->ctl) return THEUS_EINVAL;
  unsigned w = (unsigned)(t & 0xff);
  uint64_t seq = t >> 8;
  if (w >= p->n || !seq) return set_err(p, THEUS_ENOTFOUND, "theus_pool_cancel: ticket 0x%llx is unknown",
                                        (unsigned long long)t);
  theus__slot *s = theus__slot_of(p->ctl, w, seq);
  /* Under the worker's enqueue lock the slot cannot be reused for another
   * task while we look at it (reuse fills it under this lock). */
  pthread_mutex_lock(&p->ws[w].lock);
  if (s->seq != seq || atomic_load_explicit(&s->state, memory_order_acquire) == THEUS__SLOT_FREE) {
    pthread_mutex_unlock(&p->ws[w].lock);
    return set_err(p, THEUS_ENOTFOUND, "theus_pool_cancel: ticket 0x%llx is unknown or its result was already "
                   "collected", (unsigned long long)t);
  }
  /* Queued: take it from under the worker (it claims slots by the same CAS)
   * and finish it ourselves; skip tells the worker to step over it. */
  atomic_store_explicit(&s->skip, 1, memory_order_seq_cst);
  uint32_t queued = THEUS__SLOT_QUEUED;
  int taken = atomic_compare_exchange_strong_explicit(&s->state, &queued, THEUS__SLOT_RUNNING, memory_order_seq_cst,
                                                      memory_order_seq_cst);
  if (taken) {
    s->status = THEUS_ECANCELED;
    s->worker = -1;
    s->pid = 0;
    s->res_len = 0;
    snprintf(s->errmsg, sizeof s->errmsg, "canceled before it ran (it was queued on worker %u)", w);
    atomic_fetch_add(&theus__ring_of(p->ctl, w)->canceled, 1);
    theus__slot_finish(s);
  } else {
    atomic_store_explicit(&s->skip, 0, memory_order_seq_cst);
    if (queued == THEUS__SLOT_RUNNING) atomic_store_explicit(&s->cancel_seq, seq, memory_order_seq_cst);
  }
  pthread_mutex_unlock(&p->ws[w].lock);
  if (taken)
    wake_worker(p, w); /* it may sleep on this very slot */
  else if (queued == THEUS__SLOT_RUNNING)
    signal_forksrv(p); /* it kills the worker and finishes the slot */
  return 0;
}

/* ---- map ----------------------------------------------------------------- */

static int map_chunk_size(theus_pool *p, const theus_map_desc *m, size_t *out) {
  if (m->common_size > THEUS_POOL_ARG_MAX || (m->common_size && !m->common))
    return set_err(p, THEUS_EINVAL, "theus_pool_map: %zu common bytes (limit THEUS_POOL_ARG_MAX = %u, with the "
                   "chunk's items)", m->common_size, THEUS_POOL_ARG_MAX);
  size_t room = THEUS_POOL_ARG_MAX - m->common_size;
  size_t by_arg = m->arg_size ? room / m->arg_size : SIZE_MAX;
  size_t by_res = THEUS_POOL_RESULT_MAX / (THEUS__CHUNK_ITEM_OVERHEAD + m->result_size);
  size_t lim = by_arg < by_res ? by_arg : by_res;
  size_t c = m->chunk ? m->chunk : (m->count + 4 * p->n - 1) / (4 * p->n);
  if (c == 0) c = 1;
  if (lim == 0 || (m->chunk && m->chunk > lim))
    return set_err(p, THEUS_EINVAL, "theus_pool_map: a chunk of %zu items of %zu argument and %zu result bytes does "
                   "not fit a slot (%u argument bytes, %u result bytes incl. 8 per item): lower chunk, or pass data "
                   "through the arena", m->chunk ? m->chunk : 1, m->arg_size, m->result_size, THEUS_POOL_ARG_MAX,
                   THEUS_POOL_RESULT_MAX);
  *out = c < lim ? c : lim;
  return 0;
}

typedef struct map_run {
  const theus_map_desc *m;
  size_t chunk, nfailed;
  int first;
  uint64_t win_gen; /* the open write window, or 0 */
  int canceled;      /* m->cancel was seen: no more chunks were submitted */
  size_t nchunks, got; /* after map_loop: chunks it meant to collect, and collected */
  /* the first failure's message, set on the pool again when the map returns:
   * waits in the loop (the cancel polling) rewrite the pool's message */
  char first_msg[THEUS_POOL_ERRMSG_MAX + 128];
} map_run;

/* Hands item lo+i's result bytes (len of them, at most result_size) to
 * the map's result_fn, or copies them to its results. */
static void map_item_result(const theus_map_desc *m, size_t at, const unsigned char *data, uint32_t len) {
  size_t n = len < m->result_size ? len : m->result_size;
  if (m->result_fn)
    m->result_fn(at, data, n, m->result_ud);
  else if (n && m->results)
    memcpy((char *)m->results + at * m->result_size, data, n);
}

/* Copies chunk k's statuses and results out of its slot. */
static void map_collect(theus_pool *p, map_run *mr, size_t k, theus__slot *s) {
  const theus_map_desc *m = mr->m;
  size_t lo = k * mr->chunk, n = m->count - lo < mr->chunk ? m->count - lo : mr->chunk;
  /* died or failed before the items ran */
  int whole = s->res_len != theus__chunk_res_len((uint32_t)n, (uint32_t)m->result_size);
  const int32_t *st = (const int32_t *)(const void *)s->res;
  const uint32_t *lens = theus__chunk_lens(s->res, (uint32_t)n);
  const unsigned char *items = theus__chunk_items(s->res, (uint32_t)n);
  for (size_t i = 0; i < n; i++) {
    int code = whole ? s->status : st[i];
    if (m->status) m->status[lo + i] = code;
    if (m->workers) m->workers[lo + i] = s->worker;
    if (m->times) m->times[2 * (lo + i)] = s->start_ns, m->times[2 * (lo + i) + 1] = s->end_ns;
    if (code) mr->nfailed++;
    if (code && !mr->first) {
      mr->first = code;
      snprintf(mr->first_msg, sizeof mr->first_msg, "theus_pool_map: item %zu (chunk %zu, worker %d pid %d): %s",
               lo + i, k, s->worker, s->pid, s->errmsg);
      set_err(p, code, "%s", mr->first_msg);
    }
    if (!code) map_item_result(m, lo + i, items + i * m->result_size, lens[i]);
  }
}

static int map_submit_chunk(theus_pool *p, map_run *mr, size_t k, theus_ticket *tk) {
  const theus_map_desc *m = mr->m;
  size_t lo = k * mr->chunk, n = m->count - lo < mr->chunk ? m->count - lo : mr->chunk;
  theus_task_desc d = {.fn = m->fn, .arg = m->arg_size ? (const char *)m->args + lo * m->arg_size : NULL,
                       .arg_len = n * m->arg_size, .handles = m->handles, .nhandles = m->nhandles,
                       .keys = m->keys, .timeout_ms = m->timeout_ms, .retries = m->retries};
  chunk_shape cs = {.nitems = (uint32_t)n, .item_arg = (uint32_t)m->arg_size, .item_res = (uint32_t)m->result_size,
                    .common_len = (uint32_t)m->common_size, .common = m->common, .flags = m->flags};
  if (mr->win_gen) { /* the union of the items' ranges; window chunks always run sandboxed */
    cs.flags |= THEUS_TASK_SANDBOX | THEUS__TASK_WINDOW;
    cs.win_gen = mr->win_gen;
    cs.win_lo = UINT64_MAX;
    for (size_t i = lo; i < lo + n; i++) {
      cs.win_lo = m->window_ranges[2 * i] < cs.win_lo ? m->window_ranges[2 * i] : cs.win_lo;
      cs.win_hi = m->window_ranges[2 * i + 1] > cs.win_hi ? m->window_ranges[2 * i + 1] : cs.win_hi;
    }
  }
  unsigned w = 0;
  int rc = place(p, &d, &cs, tk, &w);
  if (rc == 0) wake_worker(p, w);
  return rc;
}

/* One command to the fork server and its answer (the generation, or 0). */
static int win_call(theus_pool *p, const theus__wincmd *cmd, uint64_t *answer) {
  if (send(p->win_fd, cmd, sizeof *cmd, MSG_NOSIGNAL) != (ssize_t)sizeof *cmd)
    return set_err(p, THEUS_ECRASH, "theus_pool_map: the fork server does not take window commands: %s",
                   strerror(errno));
  ssize_t n;
  while ((n = recv(p->win_fd, answer, sizeof *answer, 0)) < 0 && errno == EINTR) {
  }
  if (n != (ssize_t)sizeof *answer)
    return set_err(p, THEUS_ECRASH, "theus_pool_map: the fork server died while %s a write window",
                   cmd->len ? "opening" : "closing");
  return 0;
}

/* Checks the window and its ranges, takes the pool's window lock and has the
 * fork server record the window (workers forked from now on for its tasks
 * map it). On failure the lock is not held. */
static int win_open(theus_pool *p, const theus_map_desc *m, uint64_t *gen) {
  uint64_t off = 0, len = 0;
  if (p->win_fd < 0 || !p->arena)
    return set_err(p, THEUS_EINVAL, "theus_pool_map: write windows need a pool with an arena it owns");
  if (!m->window_ranges && m->count)
    return set_err(p, THEUS_EINVAL, "theus_pool_map: a write window needs window_ranges");
  if (theus_arena_file_range(p->arena, m->window, &off, &len) < 0)
    return set_err(p, THEUS_EINVAL, "theus_pool_map: write window: %s", theus_arena_errmsg(p->arena));
  uint64_t page = theus__os_page_size();
  for (size_t i = 0; i < m->count; i++) {
    uint64_t lo = m->window_ranges[2 * i], hi = m->window_ranges[2 * i + 1];
    if (lo % page || lo > hi || hi > len)
      return set_err(p, THEUS_EINVAL, "theus_pool_map: item %zu may write bytes [%llu, %llu) of a %llu-byte window: "
                     "the low end must be page-aligned (%llu) and the range inside", i, (unsigned long long)lo,
                     (unsigned long long)hi, (unsigned long long)len, (unsigned long long)page);
  }
  pthread_mutex_lock(&p->win_lock);
  theus__wincmd cmd = {++p->win_gen, off, len};
  uint64_t got = 0;
  int rc = win_call(p, &cmd, &got);
  if (rc == 0 && got != cmd.gen)
    rc = set_err(p, THEUS_ENOMEM, "theus_pool_map: the fork server could not reserve address space for a %llu-byte "
                 "write window", (unsigned long long)len);
  if (rc < 0) {
    pthread_mutex_unlock(&p->win_lock);
    return rc;
  }
  *gen = cmd.gen;
  return 0;
}

/* Closes the window: returns once every worker forked with it is dead. */
static int win_close(theus_pool *p, uint64_t gen) {
  theus__wincmd cmd = {gen, 0, 0};
  uint64_t got = 0;
  int rc = win_call(p, &cmd, &got);
  pthread_mutex_unlock(&p->win_lock);
  return rc;
}

static int map_loop(theus_pool *p, map_run *mr) {
  const theus_map_desc *m = mr->m;
  size_t nchunks = (m->count + mr->chunk - 1) / mr->chunk, sent = 0, got = 0;
  enum { WIN = 1024 };
  theus_ticket tk[WIN];
  int rc;
  while (got < nchunks) {
    rc = 0;
    if (!mr->canceled && m->cancel && __atomic_load_n(m->cancel, __ATOMIC_ACQUIRE)) {
      mr->canceled = 1;
      for (size_t k = got; k < sent; k++) theus_pool_cancel(p, tk[k % WIN]);
      nchunks = sent; /* submit no more */
      if (got == sent) break;
    }
    while (!mr->canceled && sent < nchunks && sent - got < WIN &&
           (rc = map_submit_chunk(p, mr, sent, &tk[sent % WIN])) == 0)
      sent++;
    if (sent == got) return rc; /* nothing in flight and nothing queued: the pool says why */
    theus__slot *s;
    /* With a cancel flag, wait in slices to see it (a signal handler may set it). */
    while ((rc = wait_done(p, tk[got % WIN], m->cancel && !mr->canceled ? 20 : -1, &s)) == THEUS_ETIMEDOUT &&
           !__atomic_load_n(m->cancel, __ATOMIC_ACQUIRE)) {
    }
    if (rc == THEUS_ETIMEDOUT) continue; /* canceled: the top of the loop cancels what is in flight */
    if (rc < 0) return rc;
    map_collect(p, mr, got, s);
    release_slot(p, tk[got % WIN], s);
    got++;
    if (m->progress_fn) m->progress_fn(got == nchunks ? m->count : got * mr->chunk, m->count, m->progress_ud);
  }
  mr->nchunks = nchunks;
  mr->got = got;
  return 0;
}

int theus_pool_map(theus_pool *p, const theus_map_desc *m, size_t *nfailed) {
  if (!p || !p->ctl || !m) return THEUS_EINVAL;
  map_run mr = {.m = m};
  theus_task_desc probe = {.fn = m->fn, .handles = m->handles, .nhandles = m->nhandles};
  int rc = check_desc(p, &probe);
  if (rc == 0 && (m->flags & ~THEUS_TASK_SANDBOX))
    rc = set_err(p, THEUS_EINVAL, "theus_pool_map: unknown flags 0x%x", m->flags);
  if (rc == 0 && m->count && ((m->arg_size && !m->args) || (m->result_size && !m->results && !m->result_fn)))
    rc = set_err(p, THEUS_EINVAL, "theus_pool_map: args, or both results and result_fn, NULL with a nonzero item "
                 "size");
  if (rc == 0) rc = map_chunk_size(p, m, &mr.chunk);
  if (rc == 0 && m->window) rc = win_open(p, m, &mr.win_gen);
  if (rc < 0) return rc;
  rc = map_loop(p, &mr);
  if (mr.win_gen) {
    int crc = win_close(p, mr.win_gen);
    rc = rc < 0 ? rc : crc;
  }
  if (rc < 0) return rc;
  if (nfailed) *nfailed = mr.nfailed;
  if (mr.first && !mr.canceled) set_err(p, mr.first, "%s", mr.first_msg);
  if (mr.canceled) {
    size_t sent_items = mr.nchunks * mr.chunk < m->count ? mr.nchunks * mr.chunk : m->count;
    if (nfailed) *nfailed = mr.nfailed + (m->count - sent_items);
    return set_err(p, THEUS_ECANCELED, "theus_pool_map: canceled after %zu of %zu items were collected",
                   mr.got * mr.chunk < m->count ? mr.got * mr.chunk : m->count, m->count);
  }
  return mr.first;
}

void theus_pool_result_release(theus_pool_result *res) {
  if (!res) return;
  free(res->data);
  res->data = NULL;
  res->len = 0;
}

/* ---- introspection ------------------------------------------------------- */

int theus_pool_stats_get(const theus_pool *p, theus_pool_stats *out) {
  if (!p || !p->ctl || !out) return THEUS_EINVAL;
  memset(out, 0, sizeof *out);
  out->submitted = atomic_load(&((theus_pool *)p)->submitted);
  out->nworkers = p->n;
  for (unsigned w = 0; w < p->n; w++) {
    theus__ring *r = theus__ring_of(p->ctl, w);
    out->completed += atomic_load(&r->completed);
    out->failed += atomic_load(&r->failed);
    out->crashed += atomic_load(&r->crashed);
    out->timed_out += atomic_load(&r->timed_out);
    out->canceled += atomic_load(&r->canceled);
    out->respawned += atomic_load(&r->respawns);
    out->retried += atomic_load(&r->retried);
    out->poisoned += atomic_load(&r->poisoned);
    out->workers[w].pid = atomic_load(&r->pid);
    out->workers[w].tasks = atomic_load(&r->tasks);
    out->workers[w].busy_ns = atomic_load(&r->busy_ns);
    out->workers[w].respawns = atomic_load(&r->respawns);
  }
  return 0;
}

unsigned theus_pool_size(const theus_pool *p) { return p && p->ctl ? p->n : 0; }

int theus_pool_worker_pid(const theus_pool *p, unsigned i) {
  return p && p->ctl && i < p->n ? atomic_load(&theus__ring_of(p->ctl, i)->pid) : 0;
}

int theus_pool_forksrv_pid(const theus_pool *p) { return p && p->ctl ? atomic_load(&p->ctl->forksrv_pid) : 0; }
