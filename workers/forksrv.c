/* workers/: the fork server — a single-threaded child of the orchestrator that
 * forks the workers, reaps them, repairs the ring of a dead worker (failing its
 * task with the cause), replaces it, and enforces task timeouts. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "pool_internal.h"
#include "sandbox.h"

enum { REASON_NONE = 0, REASON_TIMEOUT, REASON_CANCEL, REASON_CANCEL_TASK };

typedef struct forksrv {
  theus__ctl *c;
  theus_arena *arena;
  uintptr_t ranges[THEUS__MAX_ARENA_RANGES][2];
  unsigned nranges;
  int sfd;
  int devnull; /* THEUS_OUTPUT_DISCARD: every worker's fds 1 and 2 */
  pid_t self;
  unsigned live;
  int cancel_sent;
  pid_t pid[THEUS_POOL_MAX_WORKERS];
  unsigned char reason[THEUS_POOL_MAX_WORKERS];
  unsigned char respawn[THEUS_POOL_MAX_WORKERS];
  /* Early deaths (died_early): a worker that died abnormally before it took
   * a task, e.g. a start-up that cannot succeed. Each respawn in such a run
   * waits longer, and after THEUS__EARLY_DEATHS in a row the queued tasks
   * fail instead of waiting for a worker that never comes. */
  unsigned early[THEUS_POOL_MAX_WORKERS];
  uint64_t run_at_spawn[THEUS_POOL_MAX_WORKERS]; /* ring.run when the worker was forked */
  uint64_t respawn_at[THEUS_POOL_MAX_WORKERS];   /* CLOCK_MONOTONIC ns; 0: at once */
  int64_t killed_timeout_ms[THEUS_POOL_MAX_WORKERS];
  int oomfd;          /* this cgroup's memory.events (read-only), or -1 */
  long long oom_kills; /* its oom_kill count when last read */
  /* write windows (docs/workers.md, "Write windows") */
  uintptr_t win_base;  /* reserved address range, the same in every worker */
  uint64_t win_span;   /* a power of two; 0: no windows */
  theus__wincmd win;   /* the open window (gen 0: none) */
  uint64_t closing;    /* a window being closed: answered once its holders are dead */
  uint64_t wgen[THEUS_POOL_MAX_WORKERS]; /* the window each worker was forked with */
  int win_fd;          /* control socket to the orchestrator, or -1 */
} forksrv;

/* ---- start-up: shed what the orchestrator had --------------------------- */

/* Calls fn for each line of /proc/self/maps (no malloc: the host's other
 * threads may have held locks when we were forked). */
static void maps_each(void (*fn)(void *ud, uintptr_t lo, uintptr_t hi, const char *perms, unsigned long ino),
                      void *ud) {
  int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;
  char buf[8192], line[512];
  size_t ll = 0;
  ssize_t n;
  while ((n = read(fd, buf, sizeof buf)) > 0) {
    for (ssize_t i = 0; i < n; i++) {
      if (buf[i] != '\n') {
        if (ll + 1 < sizeof line) line[ll++] = buf[i];
        continue;
      }
      line[ll] = '\0';
      ll = 0;
      unsigned long lo, hi, ino;
      char perms[8], dev[16];
      unsigned long long off;
      if (sscanf(line, "%lx-%lx %7s %llx %15s %lu", &lo, &hi, perms, &off, dev, &ino) == 6)
        fn(ud, lo, hi, perms, ino);
    }
  }
  close(fd);
}

typedef struct { theus__ctl *c; uintptr_t r[64][2]; unsigned n; } shared_list;

static void collect_shared_writable(void *ud, uintptr_t lo, uintptr_t hi, const char *perms, unsigned long ino) {
  shared_list *l = ud;
  (void)ino;
  uintptr_t clo = (uintptr_t)l->c, chi = clo + l->c->total;
  uintptr_t xlo = (uintptr_t)l->c->task_context, xhi = xlo + l->c->task_context_size; /* kept, read-only */
  if (perms[1] != 'w' || perms[3] != 's' || (lo < chi && hi > clo) || (lo < xhi && hi > xlo) || l->n == 64) return;
  l->r[l->n][0] = lo;
  l->r[l->n][1] = hi;
  l->n++;
}

/* Drops every writable shared mapping inherited from the host but our rings:
 * the owner's writable arena mapping, other pools' rings, the host's own. */
static void drop_shared_writable(theus__ctl *c) {
  for (int pass = 0; pass < 4; pass++) { /* more than 64 such mappings: go again */
    shared_list l = {.c = c};
    maps_each(collect_shared_writable, &l);
    for (unsigned i = 0; i < l.n; i++) theus__os_unmap((void *)l.r[i][0], l.r[i][1] - l.r[i][0]);
    if (l.n < 64) break;
  }
  if (c->task_context_size) theus__os_protect_ro((void *)c->task_context, c->task_context_size);
}

typedef struct { unsigned long ino; forksrv *f; } arena_find;

static void collect_arena(void *ud, uintptr_t lo, uintptr_t hi, const char *perms, unsigned long ino) {
  arena_find *a = ud;
  if (ino != a->ino || perms[3] != 's' || a->f->nranges == THEUS__MAX_ARENA_RANGES) return;
  a->f->ranges[a->f->nranges][0] = lo;
  a->f->ranges[a->f->nranges][1] = hi;
  a->f->nranges++;
}

/* Closes every descriptor from 3 up but the n in keep (-1 entries ignored). */
static void close_other_fds(const int *keep, unsigned n) {
  unsigned from = 3;
  for (;;) {
    unsigned next = ~0u; /* the smallest kept descriptor >= from */
    for (unsigned i = 0; i < n; i++)
      if (keep[i] >= (int)from && (unsigned)keep[i] < next) next = (unsigned)keep[i];
    if (next == ~0u) {
      close_range(from, ~0u, 0);
      return;
    }
    if (next > from) close_range(from, next - 1, 0);
    from = next + 1;
  }
}

/* Reserves, before the sandbox and any worker, an address range for write
 * windows: a power of two at least the memfd's size, aligned to itself, so
 * one masked compare in the seccomp filter recognises it. */
static void reserve_windows(forksrv *f) {
  struct stat sb;
  if (f->c->arena_rw_fd < 0 || f->win_fd < 0 || fstat(f->c->arena_rw_fd, &sb) != 0) return;
  uint64_t span = 1u << 20;
  while (span < (uint64_t)sb.st_size) span <<= 1;
  void *m = mmap(NULL, 2 * span, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (m == MAP_FAILED) return; /* no windows: output maps fail with the fork server's answer */
  uintptr_t lo = (uintptr_t)m, base = (lo + span - 1) & ~(uintptr_t)(span - 1);
  if (base > lo) munmap(m, base - lo);
  if (lo + 2 * span > base + span) munmap((void *)(base + span), lo + 2 * span - (base + span));
  f->win_base = base;
  f->win_span = span;
}

/* Nonzero if the next task of worker w writes the open window: its fresh
 * worker is then forked with the window mapped. The ring is writable by
 * workers, so this only decides *whether* to map; *what* is mapped comes
 * from the orchestrator alone. */
static int head_wants_window(forksrv *f, unsigned w) {
  if (!f->win.gen) return 0;
  theus__ring *r = theus__ring_of(f->c, w);
  theus__slot *s = theus__slot_of(f->c, w, atomic_load(&r->run));
  return atomic_load(&s->state) == THEUS__SLOT_QUEUED && (s->flags & THEUS__TASK_WINDOW) &&
         s->win_gen == f->win.gen;
}

/* In a new worker: fds 1 and 2 as the pool's output mode says. The pipes of
 * the other workers are closed, so a pipe reaches EOF only with its worker's
 * slot. dup2 clears close-on-exec: what a task execs writes there too. */
static void worker_stdio(const forksrv *f, unsigned w) {
  const theus__ctl *c = f->c;
  if (c->out_mode == THEUS_OUTPUT_FORWARD) {
    dup2(c->out_fd[w][0], STDOUT_FILENO);
    dup2(c->out_fd[w][1], STDERR_FILENO);
    for (unsigned i = 0; i < c->nworkers; i++)
      for (int k = 0; k < 2; k++) close(c->out_fd[i][k]);
  } else if (c->out_mode == THEUS_OUTPUT_DISCARD && f->devnull >= 0) {
    dup2(f->devnull, STDOUT_FILENO);
    dup2(f->devnull, STDERR_FILENO);
    close(f->devnull);
  }
}

/* In a fresh worker, before it runs anything: maps the window read-only
 * (writable later, range by range: the descriptor is read-write), then drops
 * every descriptor that could reach more of the arena. */
static void child_windows(forksrv *f, int map, theus__winmap *wm) {
  wm->gen = 0;
  if (map) {
    void *m = mmap((void *)f->win_base, f->win.len, PROT_READ, MAP_SHARED | MAP_FIXED, f->c->arena_rw_fd,
                   (off_t)f->win.off);
    if (m == MAP_FAILED) _exit(3); /* without its window it cannot take the task: an early death, counted */
    *wm = (theus__winmap){f->win.gen, m, f->win.len};
  }
  if (f->c->arena_rw_fd >= 0) close(f->c->arena_rw_fd);
  if (f->win_fd >= 0) close(f->win_fd);
}

static _Noreturn void fatal(forksrv *f, const char *msg) {
  snprintf(f->c->fatal, sizeof f->c->fatal, "%s", msg);
  for (unsigned w = 0; w < f->c->nworkers; w++)
    if (f->pid[w] > 0) kill(f->pid[w], SIGKILL);
  atomic_store(&f->c->start_state, THEUS__START_FAILED);
  theus__futex_wake(&f->c->start_state);
  _exit(1);
}

/* ---- workers ------------------------------------------------------------- */

static int spawn(forksrv *f, unsigned w) {
  int win = head_wants_window(f, w);
  uint64_t run = atomic_load(&theus__ring_of(f->c, w)->run); /* before the child can move it */
  pid_t pid = fork();
  if (pid < 0) return -errno;
  if (pid == 0) {
    /* The fork server is single-threaded, so "parent thread" is the process. */
    prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
    if (getppid() != f->self) _exit(1);
    close(f->sfd);
    if (f->oomfd >= 0) close(f->oomfd);
    worker_stdio(f, w);
    theus__winmap wm;
    child_windows(f, win, &wm);
    theus__worker_main(f->c, w, f->arena, (const uintptr_t(*)[2])f->ranges, f->nranges, &wm);
  }
  f->pid[w] = pid;
  f->wgen[w] = win ? f->win.gen : 0;
  f->reason[w] = REASON_NONE;
  f->respawn[w] = 0;
  f->respawn_at[w] = 0;
  f->run_at_spawn[w] = run;
  atomic_store(&theus__ring_of(f->c, w)->pid, pid);
  f->live++;
  return 0;
}

/* The cgroup v2 oom_kill counter of the fork server's cgroup (its workers
 * are in it too), or -1 if the kernel does not say. No allocation. */
static long long read_oom_kills(forksrv *f) {
  if (f->oomfd < 0) return -1;
  char buf[1024];
  ssize_t n = pread(f->oomfd, buf, sizeof buf - 1, 0);
  if (n <= 0) return -1;
  buf[n] = '\0';
  const char *p = strstr(buf, "oom_kill ");
  if (!p) return -1;
  return strtoll(p + 9, NULL, 10);
}

static void open_oom_events(forksrv *f) {
  f->oomfd = -1;
  int fd = open("/proc/self/cgroup", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;
  char buf[512];
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0) return;
  buf[n] = '\0';
  char *p = strstr(buf, "0::"); /* the unified (v2) hierarchy */
  if (!p) return;
  p += 3;
  char *nl = strchr(p, '\n');
  if (nl) *nl = '\0';
  char path[640];
  snprintf(path, sizeof path, "/sys/fs/cgroup%s/memory.events", strcmp(p, "/") ? p : "");
  f->oomfd = open(path, O_RDONLY | O_CLOEXEC);
  f->oom_kills = read_oom_kills(f);
}

/* Writes why worker w died into cause (and the status it implies). */
static int describe_death(forksrv *f, unsigned w, pid_t pid, int st, int running, char *cause, size_t cap) {
  if (f->reason[w] == REASON_TIMEOUT) {
    snprintf(cause, cap, "timed out after %lld ms: worker %u (pid %d) was killed and replaced",
             (long long)f->killed_timeout_ms[w], w, (int)pid);
    return THEUS_ETIMEDOUT;
  }
  if (f->reason[w] == REASON_CANCEL) {
    snprintf(cause, cap, "canceled: the pool was stopped while worker %u (pid %d) ran the task", w, (int)pid);
    return THEUS_ECANCELED;
  }
  if (f->reason[w] == REASON_CANCEL_TASK) {
    snprintf(cause, cap, "canceled while worker %u (pid %d) ran the task: the worker was killed and replaced", w,
             (int)pid);
    return THEUS_ECANCELED;
  }
  if (WIFSIGNALED(st)) {
    const char *name = sigabbrev_np(WTERMSIG(st));
    const char *why = "";
    if (WTERMSIG(st) == SIGKILL) {
      long long k = read_oom_kills(f);
      if (k >= 0 && f->oom_kills >= 0 && k > f->oom_kills) {
        snprintf(cause, cap, "worker %u (pid %d) killed by the OOM killer (SIGKILL; cgroup memory.events oom_kill "
                 "%lld -> %lld)", w, (int)pid, f->oom_kills, k);
        f->oom_kills = k;
        return THEUS_ECRASH;
      }
      why = " (from outside the pool: the OOM killer, a memory limit or a user)";
    } else if (WTERMSIG(st) == SIGSYS) {
      why = " (its sandbox refused a system call; the task blocked SIGSYS, so the call is not known)";
    } else if (WTERMSIG(st) == SIGXCPU) {
      why = " (its CPU time limit, RLIMIT_CPU, ran out)";
    } else if (WTERMSIG(st) == SIGXFSZ) {
      why = " (its file size limit, RLIMIT_FSIZE, was reached)";
    }
    snprintf(cause, cap, "worker %u (pid %d) killed by SIG%s%s", w, (int)pid, name ? name : "?", why);
    return THEUS_ECRASH;
  }
  snprintf(cause, cap, "worker %u (pid %d) exited with status %d %s", w, (int)pid, WEXITSTATUS(st),
           running ? "while running the task" : "before it took a task");
  return THEUS_ECRASH;
}

/* The slot goes back to QUEUED at ring.run: the fresh worker runs it. */
static void requeue(theus__slot *s) {
  atomic_store(&s->deadline_ns, 0);
  atomic_store_explicit(&s->state, THEUS__SLOT_QUEUED, memory_order_seq_cst);
}

/* The worker w is dead and reaped: fail the task it was running (if any) and
 * move run past it, so its replacement starts at the next queued task; or,
 * when the task has retries left and the worker died (not a timeout or a
 * cancel), queue it again for the replacement with the cause recorded. */
static void repair(forksrv *f, unsigned w, pid_t pid, int st) {
  theus__ring *r = theus__ring_of(f->c, w);
  uint64_t seq = atomic_load(&r->run);
  theus__slot *s = theus__slot_of(f->c, w, seq);
  if (s->seq != seq) return;
  uint32_t state = atomic_load(&s->state);
  if (state == THEUS__SLOT_QUEUED) return;
  if (state == THEUS__SLOT_RUNNING) {
    char cause[THEUS_POOL_ERRMSG_MAX];
    int reason = f->reason[w];
    if (reason == REASON_CANCEL_TASK && atomic_load(&s->cancel_seq) != seq) {
      /* our kill was for the task before, which finished meanwhile: this one
       * did nothing wrong, so it runs again without using a retry */
      requeue(s);
      return;
    }
    int status = describe_death(f, w, pid, st, 1, cause, sizeof cause);
    if (reason == REASON_NONE && s->retries > 0) {
      s->retries--;
      s->attempt++;
      theus__causes_add(s->causes, sizeof s->causes, cause);
      atomic_fetch_add(&r->retried, 1);
      requeue(s);
      return;
    }
    s->worker = (int32_t)w;
    s->pid = pid;
    s->res_len = 0;
    s->end_ns = theus__now_ns(); /* start_ns was stamped by the worker when it took the task */
    s->status = status;
    if (reason == REASON_NONE && s->attempt > 0) {
      char all[THEUS_POOL_ERRMSG_MAX];
      snprintf(all, sizeof all, "%s", s->causes);
      theus__causes_add(all, sizeof all, cause);
      int n = snprintf(s->errmsg, sizeof s->errmsg, "poison: the task killed %u workers (%u retries): ",
                       s->attempt + 1, s->attempt);
      s->errmsg[n > 0 && (size_t)n < sizeof s->errmsg ? n : 0] = '\0';
      theus__causes_add(s->errmsg + (n > 0 && (size_t)n < sizeof s->errmsg ? n : 0),
                        sizeof s->errmsg - (n > 0 && (size_t)n < sizeof s->errmsg ? (size_t)n : 0), all);
      atomic_fetch_add(&r->poisoned, 1);
    } else {
      memcpy(s->errmsg, cause, sizeof s->errmsg);
    }
    atomic_fetch_add(status == THEUS_ETIMEDOUT ? &r->timed_out : status == THEUS_ECANCELED ? &r->canceled : &r->crashed,
                     1);
    theus__slot_finish(s);
  }
  atomic_store(&s->skip, 0); /* a slot canceled while queued: stepped over here */
  atomic_store(&r->run, seq + 1);
}

static int ring_has_queued(forksrv *f, unsigned w) {
  theus__ring *r = theus__ring_of(f->c, w);
  uint64_t seq = atomic_load(&r->run);
  theus__slot *s = theus__slot_of(f->c, w, seq);
  for (unsigned n = 0; n < f->c->cap && s->seq == seq && atomic_load(&s->skip); n++) /* canceled ones */
    s = theus__slot_of(f->c, w, ++seq);
  return atomic_load(&s->state) == THEUS__SLOT_QUEUED;
}

static int any_queued(forksrv *f) {
  for (unsigned w = 0; w < f->c->nworkers; w++)
    if (ring_has_queued(f, w)) return 1;
  return 0;
}

/* Fails every task queued on worker w's ring (none of them ran) with status
 * and msg, counted in *counter, and moves run past them. Each slot is claimed
 * by the same CAS as a worker's (QUEUED -> RUNNING): theus_pool_cancel may
 * take one first, and then it finishes it and we step over it (skip). */
static void fail_queued(forksrv *f, unsigned w, int status, _Atomic uint64_t *counter, const char *msg) {
  theus__ring *r = theus__ring_of(f->c, w);
  uint64_t seq = atomic_load(&r->run);
  for (;; seq++) {
    theus__slot *s = theus__slot_of(f->c, w, seq);
    if (s->seq != seq) break;
    uint32_t queued = THEUS__SLOT_QUEUED;
    if (!atomic_compare_exchange_strong(&s->state, &queued, THEUS__SLOT_RUNNING)) {
      if (!atomic_load(&s->skip)) break; /* not queued: the ring ends here */
      atomic_store(&s->skip, 0);         /* canceled while queued: finished by the canceller */
      continue;
    }
    s->status = status;
    s->worker = -1;
    s->pid = 0;
    s->res_len = 0;
    s->start_ns = s->end_ns = 0;
    snprintf(s->errmsg, sizeof s->errmsg, "%s", msg);
    atomic_fetch_add(counter, 1);
    theus__slot_finish(s);
  }
  atomic_store(&r->run, seq);
}

/* Whether worker w, just dead with status st, died early: abnormally (a
 * signal or a non-zero exit; a worker that exits 0 before touching a slot
 * does so on purpose, for a fresh worker with another sandbox or window)
 * and having taken no task since it was forked. */
static int died_early(forksrv *f, unsigned w, int st) {
  if (f->reason[w] != REASON_NONE || (WIFEXITED(st) && WEXITSTATUS(st) == 0)) return 0;
  theus__ring *r = theus__ring_of(f->c, w);
  uint64_t seq = atomic_load(&r->run);
  theus__slot *s = theus__slot_of(f->c, w, seq);
  return seq == f->run_at_spawn[w] && !(s->seq == seq && atomic_load(&s->state) == THEUS__SLOT_RUNNING);
}

/* Worker w died early (died_early): its respawn waits 1 ms, doubling with
 * each early death in a row up to 1024 ms (a start-up that cannot succeed does
 * not fork in a loop), and from the THEUS__EARLY_DEATHS-th on, the tasks
 * queued on its ring fail with the cause instead of waiting for a worker. */
static void early_death(forksrv *f, unsigned w, pid_t pid, int st) {
  unsigned n = ++f->early[w];
  f->respawn_at[w] = theus__now_ns() + (1000000ull << (n - 1 < 10 ? n - 1 : 10));
  if (n < THEUS__EARLY_DEATHS) return;
  char cause[THEUS_POOL_ERRMSG_MAX / 2], msg[THEUS_POOL_ERRMSG_MAX];
  describe_death(f, w, pid, st, 0, cause, sizeof cause);
  snprintf(msg, sizeof msg, "not run: worker %u died %u times in a row before it could take a task; last: %s", w, n,
           cause);
  fail_queued(f, w, THEUS_ECRASH, &theus__ring_of(f->c, w)->crashed, msg);
}

static void reap(forksrv *f) {
  int st;
  pid_t pid;
  uint32_t stop = atomic_load(&f->c->stop);
  while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
    unsigned w = 0;
    while (w < f->c->nworkers && f->pid[w] != pid) w++;
    if (w == f->c->nworkers) continue;
    f->pid[w] = 0;
    f->live--;
    atomic_store(&theus__ring_of(f->c, w)->pid, 0);
    int early = died_early(f, w, st);
    repair(f, w, pid, st);
    if (early)
      early_death(f, w, pid, st);
    else
      f->early[w] = 0;
    if (stop == THEUS__STOP_NONE || (stop == THEUS__STOP_DRAIN && ring_has_queued(f, w))) f->respawn[w] = 1;
  }
}

/* ms until the next respawn is due (a failed fork is retried after 50 ms),
 * or -1 if none is pending. */
static int respawn_wait_ms(const forksrv *f) {
  uint64_t now = theus__now_ns();
  int ms = -1;
  for (unsigned w = 0; w < f->c->nworkers; w++) {
    if (!f->respawn[w]) continue;
    int wait = f->respawn_at[w] > now ? (int)((f->respawn_at[w] - now + 999999u) / 1000000u) : 0;
    if (ms < 0 || wait < ms) ms = wait;
  }
  return ms;
}

static void respawn_dead(forksrv *f) {
  uint64_t now = theus__now_ns();
  for (unsigned w = 0; w < f->c->nworkers; w++) {
    if (!f->respawn[w] || f->respawn_at[w] > now) continue;
    /* counted before spawn publishes the pid: whoever sees the worker up
     * sees its respawn counted (undone if the fork fails) */
    atomic_fetch_add(&theus__ring_of(f->c, w)->respawns, 1);
    if (spawn(f, w) < 0) {
      atomic_fetch_sub(&theus__ring_of(f->c, w)->respawns, 1);
      f->respawn_at[w] = now + 50000000u; /* a failed fork (process limit?): again in 50 ms */
    }
  }
}

/* Kills workers whose task ran past its deadline; returns ms to the next one
 * (10 ms at most while tasks carry timeouts, so new ones are seen; -1 if none). */
static int check_timeouts(forksrv *f) {
  if (!atomic_load(&f->c->timed)) return -1;
  uint64_t now = theus__now_ns(), next = now + 10000000u;
  for (unsigned w = 0; w < f->c->nworkers; w++) {
    if (f->pid[w] <= 0 || f->reason[w] != REASON_NONE) continue;
    theus__ring *r = theus__ring_of(f->c, w);
    uint64_t seq = atomic_load(&r->run);
    theus__slot *s = theus__slot_of(f->c, w, seq);
    if (s->seq != seq || atomic_load(&s->state) != THEUS__SLOT_RUNNING) continue;
    int64_t dl = atomic_load(&s->deadline_ns);
    if (dl <= 0) continue;
    if ((uint64_t)dl > now) {
      if ((uint64_t)dl < next) next = (uint64_t)dl;
      continue;
    }
    f->reason[w] = REASON_TIMEOUT;
    f->killed_timeout_ms[w] = s->timeout_ms;
    kill(f->pid[w], SIGKILL);
  }
  return (int)((next - now + 999999u) / 1000000u);
}

/* Kills workers whose running task was canceled (theus_pool_cancel). */
static void check_cancels(forksrv *f) {
  for (unsigned w = 0; w < f->c->nworkers; w++) {
    if (f->pid[w] <= 0 || f->reason[w] != REASON_NONE) continue;
    theus__ring *r = theus__ring_of(f->c, w);
    uint64_t seq = atomic_load(&r->run);
    theus__slot *s = theus__slot_of(f->c, w, seq);
    if (s->seq != seq || atomic_load(&s->cancel_seq) != seq || atomic_load(&s->state) != THEUS__SLOT_RUNNING) continue;
    f->reason[w] = REASON_CANCEL_TASK;
    kill(f->pid[w], SIGKILL);
  }
}

/* Fails every task still queued once all workers are gone (cancel stop). */
static void cancel_queued(forksrv *f) {
  for (unsigned w = 0; w < f->c->nworkers; w++)
    fail_queued(f, w, THEUS_ECANCELED, &theus__ring_of(f->c, w)->canceled,
                "canceled: the pool was stopped before the task ran");
}

static void kill_all(forksrv *f, int reason) {
  for (unsigned w = 0; w < f->c->nworkers; w++) {
    if (f->pid[w] <= 0) continue;
    if (reason) f->reason[w] = (unsigned char)reason;
    kill(f->pid[w], SIGKILL);
  }
}

static void win_answer(forksrv *f, uint64_t gen) {
  send(f->win_fd, &gen, sizeof gen, MSG_NOSIGNAL | MSG_DONTWAIT);
}

/* Answers a pending close once no worker forked with that window lives. */
static void win_close_check(forksrv *f) {
  if (!f->closing) return;
  for (unsigned w = 0; w < f->c->nworkers; w++)
    if (f->pid[w] > 0 && f->wgen[w] == f->closing) return;
  win_answer(f, f->closing);
  f->closing = 0;
}

/* A command from the orchestrator: open a window (answered at once) or close
 * it (its holders are killed: they may have kept any part of it writable). */
static void win_command(forksrv *f) {
  theus__wincmd cmd;
  ssize_t n = recv(f->win_fd, &cmd, sizeof cmd, MSG_DONTWAIT);
  if (n == 0) { /* the pool is closing */
    close(f->win_fd);
    f->win_fd = -1;
    return;
  }
  if (n != (ssize_t)sizeof cmd || !cmd.gen) return;
  if (cmd.len) {
    f->win = cmd;
    if (!f->win_span || cmd.len > f->win_span) f->win.gen = 0;
    win_answer(f, f->win.gen ? cmd.gen : 0); /* 0: no window can be made */
    return;
  }
  if (f->win.gen == cmd.gen) f->win.gen = 0;
  for (unsigned w = 0; w < f->c->nworkers; w++)
    if (f->pid[w] > 0 && f->wgen[w] == cmd.gen) kill(f->pid[w], SIGKILL);
  f->closing = cmd.gen;
  win_close_check(f);
}

static _Noreturn void serve(forksrv *f) {
  int timeout = check_timeouts(f);
  for (;;) {
    struct pollfd pfd[2] = {{.fd = f->sfd, .events = POLLIN}, {.fd = f->win_fd, .events = POLLIN}};
    poll(pfd, f->win_fd >= 0 ? 2 : 1, timeout);
    if (f->win_fd >= 0 && pfd[1].revents) win_command(f);
    struct signalfd_siginfo si[16];
    while (read(f->sfd, si, sizeof si) > 0) {
    }
    if (getppid() != f->c->orch_pid) { /* the orchestrator is gone: so are we */
      kill_all(f, REASON_NONE);
      _exit(1);
    }
    reap(f);
    win_close_check(f);
    uint32_t stop = atomic_load(&f->c->stop);
    if (stop == THEUS__STOP_CANCEL && !f->cancel_sent) {
      f->cancel_sent = 1;
      kill_all(f, REASON_CANCEL);
    }
    if (stop == THEUS__STOP_CANCEL && f->live == 0) {
      cancel_queued(f);
      _exit(0);
    }
    if (stop == THEUS__STOP_DRAIN && f->live == 0 && !any_queued(f)) _exit(0);
    if (stop != THEUS__STOP_CANCEL) {
      check_cancels(f);
      respawn_dead(f);
    }
    timeout = check_timeouts(f);
    if (stop) timeout = 10; /* draining: a worker exit also wakes us, this is a safety net */
    int respawn = respawn_wait_ms(f);
    if (respawn >= 0 && (timeout < 0 || timeout > respawn)) timeout = respawn;
  }
}

_Noreturn void theus__forksrv_main(theus__ctl *c) {
  forksrv f;
  memset(&f, 0, sizeof f);
  f.c = c;
  f.self = getpid();
  f.sfd = -1;
  f.oomfd = -1;
  f.devnull = -1;
  f.win_fd = c->win_fd;
  prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
  if (getppid() != c->orch_pid) _exit(1); /* the orchestrator died before the prctl */
  char name[16] = "theus-forksrv";
  prctl(PR_SET_NAME, name, 0, 0, 0);
  signal(SIGINT, SIG_IGN); /* a terminal's Ctrl-C is the host's to handle (see worker.c, reset_signals) */
  int keep[3 + 2 * THEUS_POOL_MAX_WORKERS]; /* the arena's, the window's and the output pipes */
  unsigned nkeep = 0;
  keep[nkeep++] = c->arena_fd;
  keep[nkeep++] = c->arena_rw_fd;
  keep[nkeep++] = c->win_fd;
  for (unsigned w = 0; w < c->nworkers; w++)
    for (int k = 0; k < 2; k++) keep[nkeep++] = c->out_fd[w][k];
  close_other_fds(keep, nkeep);
  drop_shared_writable(c);
  if (c->out_mode == THEUS_OUTPUT_DISCARD && (f.devnull = open("/dev/null", O_WRONLY | O_CLOEXEC)) < 0)
    fatal(&f, "fork server: cannot open /dev/null for the workers' output (THEUS_OUTPUT_DISCARD)");
  if (c->arena_fd >= 0) {
    int rc = theus_arena_open_ro(c->arena_fd, &f.arena);
    if (rc < 0) fatal(&f, "fork server: theus_arena_open_ro failed on the arena's read-only descriptor");
    struct stat sb;
    if (fstat(c->arena_fd, &sb) == 0) {
      arena_find af = {.ino = (unsigned long)sb.st_ino, .f = &f};
      maps_each(collect_arena, &af);
    }
  }
  open_oom_events(&f);
  /* Before any worker exists: they all inherit it, and it cannot be undone. */
  char err[THEUS_POOL_ERRMSG_MAX];
  reserve_windows(&f);
  if (!c->unsandboxed && theus__sandbox_pool(c->arena_fd, f.win_base, f.win_span, err, sizeof err) < 0)
    fatal(&f, err);
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGCHLD);
  sigaddset(&set, SIGUSR1);
  sigprocmask(SIG_BLOCK, &set, NULL);
  f.sfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
  if (f.sfd < 0) fatal(&f, "fork server: signalfd failed");
  for (unsigned w = 0; w < c->nworkers; w++)
    if (spawn(&f, w) < 0) fatal(&f, "fork server: fork of a worker failed (process limit? see ulimit -u)");
  atomic_store(&c->start_state, THEUS__START_UP);
  theus__futex_wake(&c->start_state);
  serve(&f);
}
