/* workers: an attacker-written task tries every known way to write a
 * published (read-only) heavy array from inside a real pool worker. Each
 * attack that gets a writable path uses it at once, as an attacker would; the
 * test asserts the attempt was refused AND the array, checked through the
 * orchestrator's own mapping, is unchanged. docs/workers.md ("Threat model")
 * lists what each one is stopped by. The pool lives in the cmocka state;
 * teardown stops it with cancel, which reaps every child even on failure. */
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <fcntl.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cmocka.h>

#include "theus/heavy.h"
#include "theus/pool.h"

#define ARRAY_BYTES (64u * 1024u)

typedef struct fixture {
  theus_arena *arena;
  theus_pool *pool;
  theus_handle h;
  const unsigned char *orch_view; /* the orchestrator's (writable) mapping of the array */
  unsigned char expect[ARRAY_BYTES];
} fixture;

/* What the attacker task learns from the test: where to aim. */
typedef struct target {
  int orch_pid, forksrv_pid, other_worker_pid;
  int rw_fd; /* the orchestrator's read-write arena descriptor */
  uintptr_t orch_addr;
} target;

/* What it reports: the outcome of the final, decisive call. */
typedef struct verdict {
  long rc; /* -1: refused */
  int err;
  int wrote; /* the attack got a writable path and wrote through it */
} verdict;

/* ---- fixture ------------------------------------------------------------- */

/* The orchestrator's O_RDWR descriptor of the arena memfd, found the way an
 * attacker reading /proc/<pid>/fd would. */
static int find_arena_fd(int accmode) {
  DIR *d = opendir("/proc/self/fd");
  int found = -1;
  struct dirent *e;
  while (d && (e = readdir(d)) && found < 0) {
    char path[300], link[128];
    snprintf(path, sizeof path, "/proc/self/fd/%s", e->d_name);
    ssize_t n = readlink(path, link, sizeof link - 1);
    if (n <= 0) continue;
    link[n] = '\0';
    int fd = atoi(e->d_name);
    if (strstr(link, "memfd:theus-arena") && (fcntl(fd, F_GETFL) & O_ACCMODE) == accmode) found = fd;
  }
  if (d) closedir(d);
  return found;
}

static int start(void **state, int unsandboxed) {
  fixture *f = calloc(1, sizeof *f);
  if (!f || theus_arena_open(NULL, &f->arena) < 0) return -1;
  void *data;
  if (theus_arena_alloc(f->arena, ARRAY_BYTES, &f->h, &data) < 0) return -1;
  for (size_t i = 0; i < ARRAY_BYTES; i++) f->expect[i] = (unsigned char)(i * 7 + 3);
  memcpy(data, f->expect, ARRAY_BYTES);
  f->orch_view = data;
  theus_pool_config cfg;
  theus_pool_config_init(&cfg);
  cfg.nworkers = 2;
  cfg.arena = f->arena;
  cfg.unsandboxed = unsandboxed;
  *state = f;
  if (theus_pool_open(&cfg, &f->pool) < 0) {
    fprintf(stderr, "pool start: %s\n", theus_pool_errmsg(f->pool));
    return -1;
  }
  return 0;
}

static int setup(void **state) { return start(state, 0); }
static int setup_unsandboxed(void **state) { return start(state, 1); }

static int teardown(void **state) {
  fixture *f = *state;
  if (!f) return 0;
  theus_pool_close(f->pool, 1);
  theus_arena_close(f->arena);
  free(f);
  return 0;
}

/* ---- attacker helpers (run in the worker) -------------------------------- */

static const target *aim(theus_task *t) { return theus_task_arg(t, NULL); }

static const unsigned char *array(theus_task *t) {
  const void *p = NULL;
  theus_task_view(t, 0, &p, NULL);
  return p;
}

/* The worker's O_RDONLY arena descriptor, found in /proc/self/fd. */
static int arena_fd(theus_task *t) {
  (void)t;
  return find_arena_fd(O_RDONLY);
}

static int report(theus_task *t, long rc, int err, int wrote) {
  verdict v = {rc, err, wrote};
  return theus_task_write(t, &v, sizeof v);
}

/* Got a descriptor: try to map it writable and write, as an attacker would. */
static int use_fd(theus_task *t, int fd) {
  if (fd < 0) return report(t, -1, errno, 0);
  unsigned char *w = mmap(NULL, ARRAY_BYTES, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  int err = errno;
  if (w == MAP_FAILED) {
    ssize_t n = pwrite(fd, "X", 1, 0); /* write(2) instead of a mapping */
    close(fd);
    return report(t, n == 1 ? 0 : -1, err, n == 1);
  }
  /* The whole data area is fair game: scribble over it all. */
  size_t len = ARRAY_BYTES;
  memset(w, 0xEE, len);
  munmap(w, len);
  close(fd);
  return report(t, 0, 0, 1);
}

static int reopen(theus_task *t, const char *path, int flags) { return use_fd(t, open(path, flags)); }

/* ---- attacks ------------------------------------------------------------- */

static int a_reopen_self_rdwr(theus_task *t) {
  char path[64];
  snprintf(path, sizeof path, "/proc/self/fd/%d", arena_fd(t));
  return reopen(t, path, O_RDWR);
}

static int a_reopen_self_wronly(theus_task *t) {
  char path[64];
  snprintf(path, sizeof path, "/proc/self/fd/%d", arena_fd(t));
  return reopen(t, path, O_WRONLY);
}

static int a_reopen_orch_fd(theus_task *t) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/fd/%d", aim(t)->orch_pid, aim(t)->rw_fd);
  return reopen(t, path, O_RDWR);
}

static int a_reopen_forksrv_fd(theus_task *t) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/fd/%d", aim(t)->forksrv_pid, arena_fd(t));
  return reopen(t, path, O_RDWR);
}

/* The inode's owner needs no capability to give it its write bit back. */
static int a_fchmod_then_reopen(theus_task *t) {
  if (fchmod(arena_fd(t), 0600) != 0) return report(t, -1, errno, 0);
  return a_reopen_self_rdwr(t);
}

/* A POSIX ACL that reads "user::rw-": chmod by another name. */
static int a_acl_then_reopen(theus_task *t) {
  struct {
    uint32_t version;
    struct {
      uint16_t tag, perm;
      uint32_t id;
    } e[3];
  } acl = {2, {{0x01, 6, UINT32_MAX}, {0x04, 4, UINT32_MAX}, {0x20, 0, UINT32_MAX}}};
  if (fsetxattr(arena_fd(t), "system.posix_acl_access", &acl, sizeof acl, 0) != 0) return report(t, -1, errno, 0);
  return a_reopen_self_rdwr(t);
}

/* /proc/self/map_files/<range> of the arena mapping, opened for writing. */
static int a_map_files(theus_task *t) {
  uintptr_t p = (uintptr_t)array(t);
  FILE *fp = fopen("/proc/self/maps", "r");
  char line[512], path[128] = "";
  unsigned long lo, hi;
  while (fp && fgets(line, sizeof line, fp))
    if (sscanf(line, "%lx-%lx", &lo, &hi) == 2 && p >= lo && p < hi) {
      snprintf(path, sizeof path, "/proc/self/map_files/%lx-%lx", lo, hi);
      break;
    }
  if (fp) fclose(fp);
  if (!path[0]) return theus_task_fail(t, THEUS_EINVAL, "no mapping holds the array");
  return reopen(t, path, O_RDWR);
}

static int a_mmap_shared_write(theus_task *t) {
  void *w = mmap(NULL, ARRAY_BYTES, PROT_READ | PROT_WRITE, MAP_SHARED, arena_fd(t), 0);
  if (w == MAP_FAILED) return report(t, -1, errno, 0);
  memset(w, 0xEE, ARRAY_BYTES);
  munmap(w, ARRAY_BYTES);
  return report(t, 0, 0, 1);
}

/* A duplicate shares the O_RDONLY file description; F_SETFL cannot change an
 * access mode, but an attacker would try. */
static int a_dup_setfl(theus_task *t) {
  int fd = dup(arena_fd(t));
  if (fd < 0) return report(t, -1, errno, 0);
  fcntl(fd, F_SETFL, O_RDWR);
  return use_fd(t, fd);
}

static int a_mprotect(theus_task *t) {
  uintptr_t page = (uintptr_t)array(t) & ~(uintptr_t)4095;
  if (mprotect((void *)page, 4096, PROT_READ | PROT_WRITE) != 0) return report(t, -1, errno, 0);
  memset((void *)page, 0xEE, 4096);
  return report(t, 0, 0, 1);
}

/* Move the mapping, then ask for write on the new address. */
static int a_mremap(theus_task *t) {
  uintptr_t page = (uintptr_t)array(t) & ~(uintptr_t)4095;
  void *dst = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  void *moved = mremap((void *)page, 4096, 4096, MREMAP_MAYMOVE | MREMAP_FIXED, dst);
  if (moved == MAP_FAILED) return report(t, -1, errno, 0);
  int rc = mprotect(moved, 4096, PROT_READ | PROT_WRITE), err = errno;
  if (rc == 0) memset(moved, 0xEE, 4096);
  /* put it back: later tasks on this worker read the arena there */
  mremap(moved, 4096, 4096, MREMAP_MAYMOVE | MREMAP_FIXED, (void *)page);
  return report(t, rc == 0 ? 0 : -1, err, rc == 0);
}

/* /proc/self/mem writes with FOLL_FORCE, the way debuggers poke breakpoints. */
static int a_proc_self_mem(theus_task *t) {
  int fd = open("/proc/self/mem", O_RDWR);
  if (fd < 0) return report(t, -1, errno, 0);
  ssize_t n = pwrite(fd, "X", 1, (off_t)(uintptr_t)array(t));
  int err = errno;
  close(fd);
  return report(t, n == 1 ? 0 : -1, err, n == 1);
}

static int poke_mem(theus_task *t, int pid, uintptr_t addr) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/mem", pid);
  int fd = open(path, O_RDWR);
  if (fd < 0) return report(t, -1, errno, 0);
  ssize_t n = pwrite(fd, "X", 1, (off_t)addr);
  int err = errno;
  close(fd);
  return report(t, n == 1 ? 0 : -1, err, n == 1);
}

static int a_proc_orch_mem(theus_task *t) { return poke_mem(t, aim(t)->orch_pid, aim(t)->orch_addr); }
static int a_proc_forksrv_mem(theus_task *t) { return poke_mem(t, aim(t)->forksrv_pid, (uintptr_t)array(t)); }
static int a_proc_worker_mem(theus_task *t) { return poke_mem(t, aim(t)->other_worker_pid, (uintptr_t)array(t)); }

static int a_process_vm_writev(theus_task *t) {
  char x = 'X';
  struct iovec local = {&x, 1}, remote = {(void *)aim(t)->orch_addr, 1};
  ssize_t n = process_vm_writev(aim(t)->orch_pid, &local, 1, &remote, 1, 0);
  return report(t, n == 1 ? 0 : -1, errno, n == 1);
}

static int a_ptrace_orch(theus_task *t) {
  long rc = ptrace(PTRACE_ATTACH, aim(t)->orch_pid, NULL, NULL);
  if (rc == 0) ptrace(PTRACE_DETACH, aim(t)->orch_pid, NULL, NULL);
  return report(t, rc, errno, 0);
}

static int a_ptrace_forksrv(theus_task *t) {
  long rc = ptrace(PTRACE_SEIZE, aim(t)->forksrv_pid, NULL, NULL);
  if (rc == 0) ptrace(PTRACE_DETACH, aim(t)->forksrv_pid, NULL, NULL);
  return report(t, rc, errno, 0);
}

/* Steal the orchestrator's rw descriptor outright. */
static int a_pidfd_getfd(theus_task *t) {
  int pidfd = (int)syscall(SYS_pidfd_open, aim(t)->orch_pid, 0);
  if (pidfd < 0) return report(t, -1, errno, 0);
  int fd = (int)syscall(SYS_pidfd_getfd, pidfd, aim(t)->rw_fd, 0);
  int err = errno;
  close(pidfd);
  errno = err;
  return use_fd(t, fd);
}

/* A user namespace where we hold CAP_DAC_OVERRIDE over our own inodes. */
static int a_unshare_userns(theus_task *t) {
  if (unshare(CLONE_NEWUSER) != 0) return report(t, -1, errno, 0);
  return a_reopen_self_rdwr(t);
}

static int a_clone_userns(theus_task *t) {
  long pid = syscall(SYS_clone, (unsigned long)(CLONE_NEWUSER | SIGCHLD), NULL, NULL, NULL, 0);
  if (pid == 0) _exit(0);
  return report(t, pid < 0 ? -1 : 0, errno, 0);
}

/* io_uring would run opens and xattr writes past the seccomp filter. */
static int a_io_uring(theus_task *t) {
  char params[120];
  memset(params, 0, sizeof params);
  long fd = syscall(SYS_io_uring_setup, 4, params);
  if (fd >= 0) close((int)fd);
  return report(t, fd < 0 ? -1 : 0, errno, 0);
}

static int a_kill_orch(theus_task *t) {
  long rc = kill(aim(t)->orch_pid, 0);
  return report(t, rc, errno, 0);
}

/* ---- the test harness ---------------------------------------------------- */

static int landlock_abi(void) {
#ifdef SYS_landlock_create_ruleset
  long v = syscall(SYS_landlock_create_ruleset, NULL, 0, 1u);
  return v > 0 ? (int)v : 0;
#else
  return 0;
#endif
}

static target aim_at(fixture *f) {
  target tg = {.orch_pid = getpid(), .forksrv_pid = theus_pool_forksrv_pid(f->pool),
               .other_worker_pid = theus_pool_worker_pid(f->pool, 1), .rw_fd = find_arena_fd(O_RDWR),
               .orch_addr = (uintptr_t)f->orch_view};
  return tg;
}

/* Runs one attack on worker 0's side of the pool and returns what it saw. */
static verdict attack_on(fixture *f, theus_task_fn fn, const char *what) {
  target tg = aim_at(f);
  assert_true(tg.rw_fd >= 0);
  theus_task_desc d = {.fn = fn, .arg = &tg, .arg_len = sizeof tg, .handles = &f->h, .nhandles = 1};
  theus_ticket tk;
  assert_int_equal(theus_pool_submit(f->pool, &d, &tk), 0);
  theus_pool_result r;
  assert_int_equal(theus_pool_wait(f->pool, tk, 30000, &r), 0);
  verdict v = {0, 0, 0};
  if (r.status != 0) fail_msg("%s: the attack task itself failed: %s", what, r.errmsg);
  assert_int_equal(r.len, sizeof v);
  memcpy(&v, r.data, sizeof v);
  theus_pool_result_release(&r);
  return v;
}

static void array_unchanged(fixture *f, const char *what) {
  if (memcmp(f->orch_view, f->expect, ARRAY_BYTES) != 0) fail_msg("%s: the published array was changed", what);
}

/* The attack must be refused, and the array must be intact. */
static void refused(void **state, theus_task_fn fn, const char *what) {
  fixture *f = *state;
  verdict v = attack_on(f, fn, what);
  if (v.rc != -1 || v.wrote)
    fail_msg("%s: not refused (rc %ld, wrote %d)", what, v.rc, v.wrote);
  printf("  %-34s refused: %s\n", what, strerror(v.err));
  array_unchanged(f, what);
}

#define ESCAPE(name) \
  static void test_##name(void **state) { refused(state, a_##name, #name); }

ESCAPE(reopen_self_rdwr)
ESCAPE(reopen_self_wronly)
ESCAPE(reopen_orch_fd)
ESCAPE(reopen_forksrv_fd)
ESCAPE(fchmod_then_reopen)
ESCAPE(acl_then_reopen)
ESCAPE(map_files)
ESCAPE(mmap_shared_write)
ESCAPE(dup_setfl)
ESCAPE(mprotect)
ESCAPE(mremap)
ESCAPE(proc_self_mem)
ESCAPE(proc_forksrv_mem)
ESCAPE(proc_worker_mem)
ESCAPE(process_vm_writev)
ESCAPE(ptrace_orch)
ESCAPE(ptrace_forksrv)
ESCAPE(pidfd_getfd)
ESCAPE(unshare_userns)
ESCAPE(clone_userns)
ESCAPE(io_uring)

/* The orchestrator must stay dumpable (it is the host application): only a
 * Landlock domain (or Yama ptrace_scope >= 1) keeps a worker out of its
 * /proc/<pid>/mem. Without either, a pure task is still kept out (it cannot
 * open anything for writing); docs/workers.md says so. */
static int yama_scope(void) {
  FILE *fp = fopen("/proc/sys/kernel/yama/ptrace_scope", "r");
  int v = 0;
  if (fp) {
    if (fscanf(fp, "%d", &v) != 1) v = 0;
    fclose(fp);
  }
  return v;
}

static void test_proc_orch_mem(void **state) {
  if (!landlock_abi() && yama_scope() < 1) {
    printf("  proc_orch_mem: neither Landlock nor Yama here: not enforced for non-pure tasks (skipped)\n");
    skip();
  }
  refused(state, a_proc_orch_mem, "proc_orch_mem");
}

static void test_kill_orch(void **state) {
  if (landlock_abi() < 6) {
    printf("  kill_orch: Landlock signal scoping needs ABI 6 (have %d) (skipped)\n", landlock_abi());
    skip();
  }
  refused(state, a_kill_orch, "kill_orch");
}

/* After every attack the pool still does its work: threads, big mallocs, a
 * file read and a normal result. */
static void *thread_fn(void *arg) { return arg; }
static int t_normal(theus_task *t) {
  pthread_t th;
  if (pthread_create(&th, NULL, thread_fn, NULL) != 0) return theus_task_fail(t, THEUS_ESYS, "pthread_create");
  pthread_join(th, NULL);
  char *big = malloc(64u << 20);
  if (!big) return theus_task_fail(t, THEUS_ENOMEM, "malloc");
  memset(big, 1, 64u << 20);
  free(big);
  int fd = open("/proc/self/status", O_RDONLY);
  if (fd < 0) return theus_task_fail(t, THEUS_ESYS, "open for reading: %s", strerror(errno));
  close(fd);
  return report(t, 0, 0, 0);
}

static void test_pool_still_works(void **state) {
  fixture *f = *state;
  verdict v = attack_on(f, t_normal, "normal task");
  assert_int_equal(v.rc, 0);
  array_unchanged(f, "normal task");
}

/* Control: without the pool layer the first escape works (the reason the
 * layer exists). It only opens, it does not write. */
static int a_open_only(theus_task *t) {
  char path[64];
  snprintf(path, sizeof path, "/proc/self/fd/%d", arena_fd(t));
  int fd = open(path, O_RDWR);
  int err = errno;
  if (fd >= 0) close(fd);
  return report(t, fd < 0 ? -1 : 0, err, 0);
}

static void test_control_unsandboxed(void **state) {
  fixture *f = *state;
  verdict v = attack_on(f, a_open_only, "control");
  printf("  control (unsandboxed pool): /proc/self/fd reopen O_RDWR %s\n", v.rc == 0 ? "succeeds" : strerror(v.err));
  assert_int_equal(v.rc, 0);
}

int main(void) {
  const struct CMUnitTest sandboxed[] = {
      cmocka_unit_test(test_reopen_self_rdwr), cmocka_unit_test(test_reopen_self_wronly),
      cmocka_unit_test(test_reopen_orch_fd),   cmocka_unit_test(test_reopen_forksrv_fd),
      cmocka_unit_test(test_fchmod_then_reopen), cmocka_unit_test(test_acl_then_reopen),
      cmocka_unit_test(test_map_files),        cmocka_unit_test(test_mmap_shared_write),
      cmocka_unit_test(test_dup_setfl),        cmocka_unit_test(test_mprotect),
      cmocka_unit_test(test_mremap),           cmocka_unit_test(test_proc_self_mem),
      cmocka_unit_test(test_proc_orch_mem),    cmocka_unit_test(test_proc_forksrv_mem),
      cmocka_unit_test(test_proc_worker_mem),  cmocka_unit_test(test_process_vm_writev),
      cmocka_unit_test(test_ptrace_orch),      cmocka_unit_test(test_ptrace_forksrv),
      cmocka_unit_test(test_pidfd_getfd),      cmocka_unit_test(test_unshare_userns),
      cmocka_unit_test(test_clone_userns),     cmocka_unit_test(test_io_uring),
      cmocka_unit_test(test_kill_orch),        cmocka_unit_test(test_pool_still_works),
  };
  const struct CMUnitTest control[] = {
      cmocka_unit_test_setup_teardown(test_control_unsandboxed, setup_unsandboxed, teardown),
  };
  int rc = cmocka_run_group_tests_name("escape", sandboxed, setup, teardown);
  rc += cmocka_run_group_tests_name("escape-control", control, NULL, NULL);
  return rc;
}
