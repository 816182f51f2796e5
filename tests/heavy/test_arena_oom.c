/* Out of memory is an error, never the OOM killer nor SIGBUS (issue 10, items 0 and 5).
 *
 * Every scenario runs in a forked child that opens an arena and a pool of 2
 * workers, then allocates arrays and writes every byte of each (a lying
 * reservation would SIGBUS there) until the arena refuses: the refusal must be
 * THEUS_ENOMEM with a message naming the limit. Then the workers read every
 * byte of every live array (a missing page would SIGBUS there) and no worker
 * may have died. Each test prints what it exercised.
 *
 * 1. memory cgroup: the child joins a fresh cgroup limited to 128 MiB (v2 with
 *    the memory controller, else v1). Without the arena's check the cgroup's
 *    OOM killer ends it inside fallocate (SIGKILL, exit 137). Where no memory
 *    cgroup can be created (not root, a container without delegation), the
 *    same scenario runs against a synthetic cgroupfs tree
 *    (theus__arena_set_memroot) whose memory.current the test raises as the
 *    kernel would: that exercises the arena's check and message, not the
 *    kernel's charging, and the test says so. In a real cgroup, theus-run
 *    with a 128 MiB array must then exit 3 naming the cgroup (the issue's
 *    reproducer was exit 137, no message).
 * 2. a full tmpfs: the arena's file on a tmpfs that cannot grow (an unnamed
 *    file there, theus__arena_open_at): fallocate fails with ENOSPC. The
 *    tmpfs is an 8 MiB one mounted in a private mount namespace, else
 *    /dev/shm when it is a small tmpfs (containers give 64 MiB); if neither
 *    exists the test fails and says why.
 * 3. the reader of the limits (base/os_mem.c) on synthetic trees: cgroup v2
 *    nested limits, v1, the machine only, nothing known, a full cgroup.
 *
 * The parent reaps each child (killing it after a deadline) and removes the
 * cgroup, the mount point and the synthetic trees whatever happened. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "theus/heavy.h"
#include "theus/pool.h"
#include "../../heavy/arena_int.h"

#define MiB ((uint64_t)1024 * 1024)

/* ThreadSanitizer's shadow memory (several times what the code touches) is
 * charged to the cgroup too, beyond any headroom: under it the real-cgroup
 * case runs against the synthetic tree instead. */
#if defined(__SANITIZE_THREAD__)
#define UNDER_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define UNDER_TSAN 1
#endif
#endif
#ifndef UNDER_TSAN
#define UNDER_TSAN 0
#endif
#define TMPFS_MAGIC_NUMBER 0x01021994

/* Child exit codes */
enum { C_OK = 0, C_WRONG = 2, C_NEVER = 3, C_NOJOIN = 4, C_NOARENA = 5, C_WORKERS = 6, C_NONS = 10 };

/* ---- files ---------------------------------------------------------------- */

static int write_file(const char *path, const char *text) {
  int f = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (f < 0) return -1;
  ssize_t n = write(f, text, strlen(text));
  int ok = n == (ssize_t)strlen(text);
  close(f);
  return ok ? 0 : -1;
}

static int write_u64(const char *dir, const char *name, uint64_t v) {
  char path[700], text[32];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  snprintf(text, sizeof text, "%" PRIu64 "\n", v);
  return write_file(path, text);
}

static int mkdirs(const char *path) {
  char p[700];
  snprintf(p, sizeof p, "%s", path);
  for (char *s = p + 1; *s; s++)
    if (*s == '/') {
      *s = 0;
      if (mkdir(p, 0755) != 0 && errno != EEXIST) return -1;
      *s = '/';
    }
  return mkdir(p, 0755) != 0 && errno != EEXIST ? -1 : 0;
}

static void rm_tree(const char *dir) {
  pid_t pid = fork();
  if (pid == 0) {
    execlp("rm", "rm", "-rf", dir, (char *)NULL);
    _exit(127);
  }
  int st;
  if (pid > 0) waitpid(pid, &st, 0);
}

/* ---- child side: fill, then read everything in workers -------------------- */

typedef struct fill {
  theus_arena *a;
  theus_handle h[4096];
  size_t n;
  const char *cg_current; /* synthetic tree: memory.current to raise as arrays are reserved */
  uint64_t charged;
} fill;

/* Allocates and fills `each`-byte arrays until refused. C_OK: refused with
 * THEUS_ENOMEM and a message containing `want`. */
static int fill_until_refused(fill *f, uint64_t each, const char *want) {
  while (f->n < sizeof f->h / sizeof f->h[0]) {
    void *p;
    int rc = theus_arena_alloc(f->a, each, &f->h[f->n], &p);
    if (rc) {
      printf("child: refused after %zu arrays (the last of %" PRIu64 " bytes): %s: %s\n", f->n, each,
             theus_err_name(rc), theus_arena_errmsg(f->a));
      if (rc != THEUS_ENOMEM || !strstr(theus_arena_errmsg(f->a), want)) return C_WRONG;
      return C_OK;
    }
    memset(p, 0x5a, each); /* a lying reservation would SIGBUS here */
    f->n++;
    if (f->cg_current) { /* what the kernel would charge to the cgroup */
      char dir[600];
      snprintf(dir, sizeof dir, "%s", f->cg_current);
      f->charged += each;
      if (write_u64(dir, "memory.current", f->charged)) return C_WRONG;
    }
  }
  return C_NEVER;
}

static int read_all(theus_task *t) {
  for (unsigned i = 0; i < theus_task_nhandles(t); i++) {
    const unsigned char *p;
    size_t n;
    if (theus_task_view(t, i, (const void **)&p, &n)) return theus_task_fail(t, THEUS_EINVAL, "no view");
    for (size_t k = 0; k < n; k++)
      if (p[k] != 0x5a) return theus_task_fail(t, THEUS_EPROCESS, "byte %zu of input %u is %d", k, i, p[k]);
  }
  return 0;
}

/* A handle of the table's last slot, whose page was never reserved: resolving
 * it must not fault that page in (SIGBUS on a full tmpfs). */
#define FORGED (((theus_handle)8191 << 32) | 1)

/* Every live array read in full by the workers, 16 per task, and a forged
 * handle refused in a worker and in this process. */
static int workers_read_all(theus_pool *p, fill *f) {
  size_t tasks = 0;
  const void *v;
  theus_handle forged = FORGED;
  theus_task_desc fd = {.fn = read_all, .handles = &forged, .nhandles = 1, .timeout_ms = -1};
  theus_ticket ft;
  theus_pool_result fr;
  if (theus_arena_view(f->a, forged, &v, NULL) != THEUS_EBADHANDLE || theus_pool_submit_wait(p, &fd, -1, &ft) ||
      theus_pool_wait(p, ft, -1, &fr) || fr.status != THEUS_EBADHANDLE) {
    printf("child: a forged handle on the full arena: %s / %s\n", theus_arena_errmsg(f->a), fr.errmsg);
    return C_WORKERS;
  }
  for (size_t i = 0; i < f->n; i += THEUS_POOL_MAX_HANDLES) {
    size_t k = f->n - i < THEUS_POOL_MAX_HANDLES ? f->n - i : THEUS_POOL_MAX_HANDLES;
    theus_task_desc d = {.fn = read_all, .handles = &f->h[i], .nhandles = (unsigned)k, .timeout_ms = -1};
    theus_ticket t;
    theus_pool_result r;
    if (theus_pool_submit_wait(p, &d, -1, &t) || theus_pool_wait(p, t, -1, &r)) {
      printf("child: pool: %s\n", theus_pool_errmsg(p));
      return C_WORKERS;
    }
    if (r.status) {
      printf("child: a worker reading arrays %zu..%zu: %s: %s\n", i, i + k - 1, theus_err_name(r.status), r.errmsg);
      return C_WORKERS;
    }
    tasks++;
  }
  theus_pool_stats st;
  if (theus_pool_stats_get(p, &st) || st.crashed || st.respawned) {
    printf("child: %" PRIu64 " workers died\n", st.crashed);
    return C_WORKERS;
  }
  printf("child: the workers read all %zu arrays in full (%zu tasks), none died; a forged handle was refused "
         "here and in a worker\n", f->n, tasks);
  return C_OK;
}

/* Opens the pool on f->a, fills the arena with `each`-byte arrays, then
 * `small`-byte ones (0: none) until refused, and has the workers read all. */
static int scenario(fill *f, uint64_t each, uint64_t small, const char *want) {
  theus_pool_config pc;
  theus_pool_config_init(&pc);
  pc.nworkers = 2;
  pc.arena = f->a;
  theus_pool *p = NULL;
  if (theus_pool_open(&pc, &p)) {
    printf("child: cannot open the pool: %s\n", theus_pool_errmsg(p));
    theus_pool_close(p, 1);
    return C_WORKERS;
  }
  int rc = fill_until_refused(f, each, want);
  if (!rc && small) rc = fill_until_refused(f, small, want); /* small arrays reserve page by page */
  if (!rc) rc = workers_read_all(p, f);
  theus_pool_close(p, 1);
  return rc;
}

static theus_arena *open_arena(uint64_t hard_limit, const char *dir) {
  theus_arena_config c;
  theus_arena_config_init(&c);
  c.hard_limit = hard_limit;
  c.max_handles = 8192; /* FORGED's slot is the last */
  theus_arena *a = NULL;
  if (theus__arena_open_at(&c, dir, &a) != 0) {
    printf("child: cannot open the arena: %s\n", theus_arena_errmsg(a));
    _exit(C_NOARENA);
  }
  return a;
}

/* ---- parent side ------------------------------------------------------------ */

/* Reaps pid, killing it after timeout_s; returns its wait status. */
static int reap(pid_t pid, int timeout_s) {
  int status = 0;
  time_t end = time(NULL) + timeout_s;
  for (;;) {
    pid_t r = waitpid(pid, &status, WNOHANG);
    if (r == pid) return status;
    if (r < 0 && errno != EINTR) return -1;
    if (time(NULL) > end) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      return status;
    }
    usleep(10000);
  }
}

static void check_status(int status, const char *what) {
  if (WIFSIGNALED(status))
    fail_msg("%s: the child was killed by signal %d (%s)%s", what, WTERMSIG(status), strsignal(WTERMSIG(status)),
             WTERMSIG(status) == SIGKILL ? ": the OOM killer (or the test's deadline)" : "");
  assert_true(WIFEXITED(status));
  switch (WEXITSTATUS(status)) {
  case C_OK: return;
  case C_WRONG: fail_msg("%s: refused with the wrong code or a message not naming the limit", what);
  case C_NEVER: fail_msg("%s: never refused", what);
  case C_NOJOIN: fail_msg("%s: the child could not join the cgroup", what);
  case C_NOARENA: fail_msg("%s: the arena did not open", what);
  case C_WORKERS: fail_msg("%s: the workers could not read every array (see above)", what);
  default: fail_msg("%s: the child exited with %d", what, WEXITSTATUS(status));
  }
}

static int file_has(const char *path, const char *word) {
  char buf[512] = {0};
  int f = open(path, O_RDONLY | O_CLOEXEC);
  if (f < 0) return 0;
  ssize_t n = read(f, buf, sizeof buf - 1);
  close(f);
  return n > 0 && strstr(buf, word) != NULL;
}

/* This process's cgroup path for the v2 hierarchy ("0::/x") or the v1 memory
 * controller ("N:memory:/x"), into out. */
static int own_cgroup(int v2, char *out, size_t len) {
  FILE *f = fopen("/proc/self/cgroup", "r");
  if (!f) return -1;
  char line[1024];
  int found = -1;
  while (fgets(line, sizeof line, f)) {
    line[strcspn(line, "\n")] = 0;
    char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
    if (!c2) continue;
    *c2 = 0;
    int is_v2 = strcmp(line, "0") == 0 && c1[1] == 0;
    int is_mem = !is_v2 && (strcmp(c1 + 1, "memory") == 0 || strstr(c1 + 1, "memory,") || strstr(c1 + 1, ",memory"));
    if ((v2 && is_v2) || (!v2 && is_mem)) {
      snprintf(out, len, "%s", strcmp(c2 + 1, "/") == 0 ? "" : c2 + 1);
      found = 0;
      break;
    }
  }
  fclose(f);
  return found;
}

typedef struct {
  char dir[768];
  const char *limit_file;
  int v2;
} test_cgroup;

static int ncreated; /* cgroups made so far: a fresh name each */

/* Creates a child cgroup with the memory controller; 0 or -1 (with a reason). */
static int cgroup_create(test_cgroup *cg, char *why, size_t whylen) {
  static const char *const v2roots[] = {"/sys/fs/cgroup", "/sys/fs/cgroup/unified"};
  char own[512], path[900];
  for (unsigned i = 0; i < 2; i++) {
    snprintf(path, sizeof path, "%s/cgroup.controllers", v2roots[i]);
    if (!file_has(path, "memory") || own_cgroup(1, own, sizeof own)) continue;
    snprintf(cg->dir, sizeof cg->dir, "%s%s/theus-oom-test-%d-%d", v2roots[i], own, (int)getpid(), ++ncreated);
    snprintf(path, sizeof path, "%s%s/cgroup.subtree_control", v2roots[i], own);
    write_file(path, "+memory"); /* may already be on; fails if the cgroup has processes (then mkdir shows) */
    if (mkdir(cg->dir, 0755) != 0) continue;
    snprintf(path, sizeof path, "%s/memory.max", cg->dir);
    if (access(path, F_OK) != 0) {
      rmdir(cg->dir);
      continue;
    }
    cg->v2 = 1;
    cg->limit_file = "memory.max";
    return 0;
  }
  if (access("/sys/fs/cgroup/memory/memory.limit_in_bytes", F_OK) == 0 && own_cgroup(0, own, sizeof own) == 0) {
    snprintf(cg->dir, sizeof cg->dir, "/sys/fs/cgroup/memory%s/theus-oom-test-%d-%d", own, (int)getpid(), ++ncreated);
    if (mkdir(cg->dir, 0755) == 0) {
      cg->v2 = 0;
      cg->limit_file = "memory.limit_in_bytes";
      return 0;
    }
    snprintf(why, whylen, "cannot create %s: %s", cg->dir, strerror(errno));
    return -1;
  }
  snprintf(why, whylen, "no writable cgroup v2 with the memory controller and no cgroup v1 memory hierarchy");
  return -1;
}

static void cgroup_remove(test_cgroup *cg) {
  /* the child is reaped; its memfd pages were uncharged when it died */
  for (int i = 0; i < 50 && rmdir(cg->dir) != 0 && errno == EBUSY; i++) usleep(20000);
}

/* A synthetic root: <root>/proc/self/cgroup, <root>/proc/meminfo and cgroupfs
 * files under <root>/sys/fs/cgroup. */
static char synth_made[2][64]; /* removed by the teardown, even after a failure */

static void synth_root(char *root, size_t len) {
  snprintf(root, len, "/tmp/theus-memroot-XXXXXX");
  assert_non_null(mkdtemp(root));
  for (unsigned i = 0; i < 2; i++)
    if (!synth_made[i][0]) {
      snprintf(synth_made[i], sizeof synth_made[i], "%s", root);
      break;
    }
  char p[700];
  snprintf(p, sizeof p, "%s/proc/self", root);
  assert_int_equal(mkdirs(p), 0);
}

static void synth_write(const char *root, const char *rel, const char *text) {
  char p[700], d[700];
  snprintf(p, sizeof p, "%s%s", root, rel);
  snprintf(d, sizeof d, "%s", p);
  *strrchr(d, '/') = 0;
  assert_int_equal(mkdirs(d), 0);
  assert_int_equal(write_file(p, text), 0);
}

static void synth_meminfo(const char *root, uint64_t total_kib, uint64_t avail_kib) {
  char text[200];
  snprintf(text, sizeof text, "MemTotal:       %" PRIu64 " kB\nMemFree:        1 kB\nMemAvailable:   %" PRIu64
           " kB\nBuffers:        0 kB\n", total_kib, avail_kib);
  synth_write(root, "/proc/meminfo", text);
}

/* ---- 1. memory cgroup -------------------------------------------------------- */

/* Limits cg to 128 MiB; 0 or -1. */
static int cgroup_limit(test_cgroup *cg) {
  char path[900];
  snprintf(path, sizeof path, "%s/%s", cg->dir, cg->limit_file);
  int rc = write_file(path, "134217728");
  if (rc == 0 && !cg->v2) { /* no swap escape: the v1 memsw limit equals the memory limit when it exists */
    snprintf(path, sizeof path, "%s/memory.memsw.limit_in_bytes", cg->dir);
    write_file(path, "134217728");
  }
  return rc;
}

static const char *theus_run, *big_pipeline; /* argv: theus-run and a pipeline with a 128 MiB array */

/* theus-run in the cgroup (the reproducer): exit 3 and a message
 * naming the cgroup, not exit 137 from the OOM killer. */
static void theus_run_in_cgroup(test_cgroup *cg) {
  char path[900], out[] = "/tmp/theus-oom-run-XXXXXX";
  int fd = mkstemp(out);
  assert_true(fd >= 0);
  fflush(stdout);
  pid_t pid = cgroup_limit(cg) == 0 ? fork() : -1;
  if (pid == 0) {
    snprintf(path, sizeof path, "%s/cgroup.procs", cg->dir);
    if (write_file(path, "0") != 0) _exit(C_NOJOIN);
    dup2(fd, STDERR_FILENO);
    execl(theus_run, theus_run, "--workers", "2", "--quiet", big_pipeline, (char *)NULL);
    _exit(127);
  }
  int status = pid > 0 ? reap(pid, 120) : -1;
  char err[2048] = {0};
  ssize_t n = pread(fd, err, sizeof err - 1, 0);
  close(fd);
  unlink(out);
  cgroup_remove(cg);
  assert_true(pid > 0);
  printf("exercised: theus-run --workers 2 %s in that cgroup: status %d, stderr: %s", big_pipeline,
         WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status), n > 0 ? err : "(none)\n");
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 3)
    fail_msg("theus-run in a 128 MiB cgroup: want exit 3 (an array the cgroup cannot hold)");
  assert_non_null(strstr(err, "memory cgroup"));
}

static void real_cgroup(test_cgroup *cg) {
  char path[900];
  printf("exercised: a real memory cgroup %s (%s), 128 MiB\n", cg->dir, cg->v2 ? "v2" : "v1");
  int setup = cgroup_limit(cg);
  fflush(stdout);
  pid_t pid = setup == 0 ? fork() : -1;
  if (pid == 0) {
    snprintf(path, sizeof path, "%s/cgroup.procs", cg->dir);
    if (write_file(path, "0") != 0) _exit(C_NOJOIN);
    static fill f;
    f.a = open_arena(1024 * MiB, NULL); /* far above the cgroup's 128 MiB */
    _exit(scenario(&f, 4 * MiB, 0, "memory cgroup"));
  }
  int status = pid > 0 ? reap(pid, 120) : -1;
  cgroup_remove(cg);
  if (setup != 0) fail_msg("cannot set the limit in %s", cg->dir);
  assert_true(pid > 0);
  check_status(status, "cgroup");
}

static void synthetic_cgroup(const char *why) {
  char root[64], cgdir[700];
  synth_root(root, sizeof root);
  printf("exercised: NOT a real memory cgroup (%s); the arena's check against a synthetic cgroup v2 tree "
         "(%s: /job limited to 128 MiB, memory.current raised as arrays are reserved), the workers reading "
         "everything after\n", why, root);
  synth_write(root, "/proc/self/cgroup", "0::/job/step\n");
  synth_meminfo(root, 64ull << 20, 60ull << 20); /* 64 GiB machine: the cgroup is the tighter */
  snprintf(cgdir, sizeof cgdir, "%s/sys/fs/cgroup/job", root);
  synth_write(root, "/sys/fs/cgroup/job/memory.max", "134217728\n");
  synth_write(root, "/sys/fs/cgroup/job/step/memory.max", "max\n");
  synth_write(root, "/sys/fs/cgroup/job/memory.current", "0\n");
  synth_write(root, "/sys/fs/cgroup/job/step/memory.current", "0\n");
  fflush(stdout);
  pid_t pid = fork();
  if (pid == 0) {
    static fill f;
    f.a = open_arena(1024 * MiB, NULL);
    theus__arena_set_memroot(f.a, root);
    f.cg_current = cgdir;
    _exit(scenario(&f, 4 * MiB, 0, "memory cgroup /job (memory.max) has a limit of 134217728 bytes"));
  }
  assert_true(pid > 0);
  check_status(reap(pid, 120), "synthetic cgroup");
}

static void test_cgroup_limit_gives_enomem(void **state) {
  (void)state;
  test_cgroup cg;
  char why[1024];
  if (UNDER_TSAN)
    snprintf(why, sizeof why, "a ThreadSanitizer build: its shadow memory is charged to the cgroup beyond any "
             "headroom");
  if (!UNDER_TSAN && cgroup_create(&cg, why, sizeof why) == 0) {
    real_cgroup(&cg);
    if (cgroup_create(&cg, why, sizeof why) != 0) fail_msg("cannot create a second cgroup: %s", why);
    theus_run_in_cgroup(&cg);
  } else {
    synthetic_cgroup(why);
  }
}

/* ---- 2. a full tmpfs ---------------------------------------------------------- */

/* /dev/shm when it is a tmpfs with at most 1 GiB free (a container's). */
static int small_dev_shm(uint64_t *free_bytes) {
  struct statfs s;
  if (statfs("/dev/shm", &s) != 0 || s.f_type != TMPFS_MAGIC_NUMBER) return 0;
  *free_bytes = (uint64_t)s.f_bavail * (uint64_t)s.f_bsize;
  return *free_bytes > 0 && *free_bytes <= 1024 * MiB;
}

static void test_full_tmpfs_gives_enomem_not_sigbus(void **state) {
  (void)state;
  char dir[] = "/tmp/theus-oom-tmpfs-XXXXXX";
  assert_non_null(mkdtemp(dir));
  fflush(stdout);
  pid_t pid = fork();
  if (pid == 0) {
    if (unshare(CLONE_NEWNS) != 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0 ||
        mount("theus-test", dir, "tmpfs", 0, "size=8m") != 0)
      _exit(C_NONS);
    printf("exercised: an 8 MiB tmpfs mounted in a private mount namespace\n");
    static fill f;
    f.a = open_arena(64 * MiB, dir);
    _exit(scenario(&f, 1 * MiB, 1000, "cannot reserve"));
  }
  assert_true(pid > 0);
  int status = reap(pid, 120);
  rmdir(dir); /* the mount went away with the child's namespace */
  if (!WIFEXITED(status) || WEXITSTATUS(status) != C_NONS) {
    check_status(status, "private tmpfs");
    return;
  }
  uint64_t shm_free = 0;
  if (!small_dev_shm(&shm_free))
    fail_msg("no private mount namespace here (unshare/mount refused) and /dev/shm is not a tmpfs with at most "
             "1 GiB free: no small tmpfs to fill, so item 5's tmpfs case cannot be shown on this machine");
  printf("exercised: /dev/shm (a tmpfs with %" PRIu64 " MiB free; no private mount namespace here)\n",
         (uint64_t)(shm_free / MiB));
  fflush(stdout);
  pid = fork();
  if (pid == 0) {
    static fill f;
    f.a = open_arena(2048 * MiB, "/dev/shm"); /* an unnamed file: gone when the child exits */
    _exit(scenario(&f, 4 * MiB, 1000, "cannot reserve"));
  }
  assert_true(pid > 0);
  check_status(reap(pid, 120), "/dev/shm");
}

/* ---- 3. the reader of the limits ------------------------------------------------ */

static uint64_t no_headroom(uint64_t limit) {
  (void)limit;
  return 0;
}

static uint64_t headroom_1mib(uint64_t limit) {
  (void)limit;
  return MiB;
}

static void test_room_reader(void **state) {
  (void)state;
  char root[64];
  theus__mem_room r;
  synth_root(root, sizeof root);
  /* nothing known: no limit */
  theus__os_mem_room_at(root, &r, no_headroom);
  assert_true(r.avail == UINT64_MAX && r.limit == UINT64_MAX);
  /* the machine only */
  synth_meminfo(root, 8ull << 20, 3ull << 20); /* 8 GiB, 3 GiB available */
  synth_write(root, "/proc/self/cgroup", "0::/\n");
  theus__os_mem_room_at(root, &r, headroom_1mib);
  assert_true(r.room == 3ull << 30 && r.limit == 8ull << 30 && r.avail == (3ull << 30) - MiB);
  assert_non_null(strstr(r.what, "the machine"));
  /* cgroup v2: the tighter of two nested limits (an ancestor's), "max" ignored */
  synth_write(root, "/proc/self/cgroup", "0::/a/b/c\n");
  synth_write(root, "/sys/fs/cgroup/a/memory.max", "209715200\n");      /* 200 MiB */
  synth_write(root, "/sys/fs/cgroup/a/memory.current", "52428800\n");   /* 50 MiB */
  synth_write(root, "/sys/fs/cgroup/a/b/memory.max", "max\n");
  synth_write(root, "/sys/fs/cgroup/a/b/memory.current", "41943040\n");
  synth_write(root, "/sys/fs/cgroup/a/b/c/memory.max", "314572800\n");  /* 300 MiB, 10 MiB used */
  synth_write(root, "/sys/fs/cgroup/a/b/c/memory.current", "10485760\n");
  theus__os_mem_room_at(root, &r, no_headroom);
  assert_true(r.room == 150 * MiB && r.limit == 200 * MiB && r.used == 50 * MiB);
  assert_string_equal(r.what, "memory cgroup /a (memory.max)");
  /* full: room 0 */
  synth_write(root, "/sys/fs/cgroup/a/memory.current", "209719296\n");
  theus__os_mem_room_at(root, &r, no_headroom);
  assert_true(r.room == 0 && r.avail == 0);
  /* cgroup v1: the memory controller's line; the root's page-rounded LONG_MAX is no limit */
  synth_write(root, "/proc/self/cgroup", "5:cpu,cpuacct:/x\n4:memory:/x\n0::/\n");
  synth_write(root, "/sys/fs/cgroup/memory/memory.limit_in_bytes", "9223372036854771712\n");
  synth_write(root, "/sys/fs/cgroup/memory/memory.usage_in_bytes", "4096\n");
  synth_write(root, "/sys/fs/cgroup/memory/x/memory.limit_in_bytes", "104857600\n"); /* 100 MiB, 30 used */
  synth_write(root, "/sys/fs/cgroup/memory/x/memory.usage_in_bytes", "31457280\n");
  theus__os_mem_room_at(root, &r, no_headroom);
  assert_true(r.room == 70 * MiB && r.limit == 100 * MiB);
  assert_string_equal(r.what, "memory cgroup (v1) /x (memory.limit_in_bytes)");
  /* the headroom decides between sources: 100 MiB with 70 free vs the machine's 3 GiB */
  theus__os_mem_room_at(root, &r, headroom_1mib);
  assert_true(r.avail == 69 * MiB);
  /* the real machine says something on Linux (MemAvailable at least) */
  assert_true(theus__os_mem_available() > 0);
}

static int remove_synth_roots(void **state) {
  (void)state;
  for (unsigned i = 0; i < 2; i++)
    if (synth_made[i][0]) {
      rm_tree(synth_made[i]);
      synth_made[i][0] = 0;
    }
  return 0;
}

int main(int argc, char **argv) {
  setvbuf(stdout, NULL, _IONBF, 0);
  if (argc != 3) {
    fprintf(stderr, "usage: test_arena_oom THEUS_RUN PIPELINE_WITH_A_128MIB_ARRAY\n");
    return 2;
  }
  theus_run = argv[1];
  big_pipeline = argv[2];
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_teardown(test_room_reader, remove_synth_roots),
      cmocka_unit_test_teardown(test_cgroup_limit_gives_enomem, remove_synth_roots),
      cmocka_unit_test(test_full_tmpfs_gives_enomem_not_sigbus),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
