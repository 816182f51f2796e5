/* workers/: the pool and pure sandbox layers. Why each rule exists, and what
 * the kernel already refuses without one, is in docs/workers.md ("Threat
 * model"); the filters are built with libseccomp, never by hand. */
#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <sched.h>
#include <seccomp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "sandbox.h"

/* Calls newer than some libseccomp releases: resolved by name when the
 * library knows them, else by the number they share on x86-64 and arm64
 * (numbers from 424 up are the same on every architecture). */
#if defined(__x86_64__) || defined(__aarch64__)
#define NR_UNIFIED(n) (n)
#else
#define NR_UNIFIED(n) (-1)
#endif

static int fail(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(char *err, size_t errlen, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  if (err && errlen) vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
  return -1;
}

/* ---- filter building ----------------------------------------------------- */

typedef struct filter {
  scmp_filter_ctx ctx;
  int rc;           /* first libseccomp error (negative errno) */
  const char *what; /* the rule it failed on */
  int trap_names;   /* record trapped calls for the SIGSYS handler */
} filter;

/* The calls the pure layer traps, by number, for the SIGSYS message. */
#define MAX_TRAPPED 96
static struct {
  int nr;
  char name[24];
} trapped[MAX_TRAPPED];
static unsigned ntrapped;

static void note_trapped(int nr, const char *name) {
  for (unsigned i = 0; i < ntrapped; i++)
    if (trapped[i].nr == nr) return;
  if (ntrapped == MAX_TRAPPED) return;
  trapped[ntrapped].nr = nr;
  snprintf(trapped[ntrapped].name, sizeof trapped[ntrapped].name, "%s", name);
  ntrapped++;
}

const char *theus__sandbox_trapped_name(int nr) {
  for (unsigned i = 0; i < ntrapped; i++)
    if (trapped[i].nr == nr) return trapped[i].name;
  return NULL;
}

/* Adds one rule; a call this architecture does not have is skipped (nothing
 * can call it). fallback_nr: the number to use when libseccomp is older than
 * the call (-1: none). */
static void rule(filter *f, uint32_t act, const char *name, int fallback_nr, unsigned n, const struct scmp_arg_cmp *a) {
  if (f->rc) return;
  int nr = seccomp_syscall_resolve_name(name);
  if (nr == __NR_SCMP_ERROR) nr = fallback_nr;
  if (nr < 0) return;
  int rc = seccomp_rule_add_array(f->ctx, act, nr, n, a);
  if (rc < 0) {
    f->rc = rc;
    f->what = name;
    return;
  }
  if (f->trap_names && act == SCMP_ACT_TRAP) {
    char *resolved = seccomp_syscall_resolve_num_arch(SCMP_ARCH_NATIVE, nr);
    note_trapped(nr, resolved ? resolved : name);
    free(resolved);
  }
}

#define RULE0(f, act, name) rule((f), (act), (name), -1, 0, NULL)
#define RULE(f, act, name, ...)                                                                   \
  do {                                                                                            \
    const struct scmp_arg_cmp a_[] = {__VA_ARGS__};                                               \
    rule((f), (act), (name), -1, (unsigned)(sizeof a_ / sizeof a_[0]), a_);                       \
  } while (0)

static int load(filter *f, const char *layer, char *err, size_t errlen) {
  int rc = f->rc;
  if (rc < 0) {
    seccomp_release(f->ctx);
    return fail(err, errlen, "%s sandbox: libseccomp refused the rule for %s: %s", layer, f->what, strerror(-rc));
  }
  rc = seccomp_load(f->ctx);
  seccomp_release(f->ctx);
  if (rc < 0)
    return fail(err, errlen, "%s sandbox: seccomp_load failed: %s (a kernel without seccomp filters, or a container "
                "that forbids them; start the pool with unsandboxed = 1 to run without)", layer, strerror(-rc));
  return 0;
}

static int filter_init(filter *f, char *err, size_t errlen) {
  memset(f, 0, sizeof *f);
  f->ctx = seccomp_init(SCMP_ACT_ALLOW);
  if (!f->ctx) return fail(err, errlen, "sandbox: seccomp_init failed (out of memory)");
  /* A call made through another ABI (int 0x80 on x86-64) would dodge every
   * rule: kill the whole process instead. */
  seccomp_attr_set(f->ctx, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS);
  return 0;
}

/* ---- the pool layer ------------------------------------------------------ */

/* A worker keeps no capability: without CAP_DAC_OVERRIDE/CAP_FOWNER the
 * arena inode's mode (0400) holds even for root, and without
 * CAP_SYS_PTRACE/CAP_SYS_ADMIN other processes' memory and map_files stay
 * closed. The bounding set is dropped where we may (CAP_SETPCAP). */
static int drop_capabilities(char *err, size_t errlen) {
  for (int cap = 0; cap < 64; cap++)
    if (prctl(PR_CAPBSET_READ, cap, 0, 0, 0) == 1) prctl(PR_CAPBSET_DROP, cap, 0, 0, 0);
  prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
  struct __user_cap_header_struct h = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
  struct __user_cap_data_struct d[2];
  memset(d, 0, sizeof d);
  if (syscall(SYS_capset, &h, d) != 0) return fail(err, errlen, "pool sandbox: capset failed: %s", strerror(errno));
  return 0;
}

/* Landlock, when the kernel has it: the domain itself is what matters. A
 * process in a Landlock domain cannot ptrace, open /proc/<pid>/mem or fd/ of,
 * or (ABI >= 6) signal a process outside it: the orchestrator. The ruleset
 * handles only device-node creation, which a worker has no use for. */
struct ll_attr {
  uint64_t handled_access_fs, handled_access_net, scoped;
};

static int landlock(void) {
#ifdef SYS_landlock_create_ruleset
  long abi = syscall(SYS_landlock_create_ruleset, NULL, 0, 1u /* LANDLOCK_CREATE_RULESET_VERSION */);
  if (abi <= 0) return 0;
  struct ll_attr a = {.handled_access_fs = (1ull << 6) | (1ull << 9)}; /* MAKE_CHAR | MAKE_BLOCK */
  size_t size = sizeof a.handled_access_fs;
  if (abi >= 6) {
    a.scoped = 1ull << 1; /* LANDLOCK_SCOPE_SIGNAL */
    size = sizeof a;
  }
  int fd = (int)syscall(SYS_landlock_create_ruleset, &a, size, 0u);
  if (fd < 0) return 0;
  long rc = syscall(SYS_landlock_restrict_self, fd, 0u);
  close(fd);
  return rc == 0 ? (int)abi : 0;
#else
  return 0;
#endif
}

static int pool_filter(uintptr_t win_base, uint64_t win_span, char *err, size_t errlen) {
  filter f;
  if (filter_init(&f, err, errlen) < 0) return -1;
  const uint32_t no = SCMP_ACT_ERRNO(EPERM);
  /* Other processes' memory: the orchestrator maps the arena writable. */
  RULE0(&f, no, "ptrace");
  RULE0(&f, no, "process_vm_writev");
  RULE0(&f, no, "process_vm_readv");
  RULE0(&f, no, "pidfd_getfd");
  /* Giving the arena inode its write bit back (mode or ACL), then reopening
   * it through /proc/self/fd: the owner needs no capability for these. */
  RULE0(&f, no, "chmod");
  RULE0(&f, no, "fchmod");
  RULE0(&f, no, "fchmodat");
  rule(&f, no, "fchmodat2", NR_UNIFIED(452), 0, NULL);
  RULE0(&f, no, "setxattr");
  RULE0(&f, no, "lsetxattr");
  RULE0(&f, no, "fsetxattr");
  rule(&f, no, "setxattrat", NR_UNIFIED(463), 0, NULL);
  RULE0(&f, no, "removexattr");
  RULE0(&f, no, "lremovexattr");
  RULE0(&f, no, "fremovexattr");
  rule(&f, no, "removexattrat", NR_UNIFIED(466), 0, NULL);
  /* io_uring runs opens and xattr writes without passing through seccomp. */
  RULE0(&f, no, "io_uring_setup");
  /* A user namespace would hand back CAP_DAC_OVERRIDE over inodes we own. */
  RULE0(&f, no, "unshare");
  RULE0(&f, no, "setns");
  RULE(&f, no, "clone", SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_NEWUSER, CLONE_NEWUSER));
  /* clone3 passes its flags in memory a filter cannot read: ENOSYS makes libc
   * fall back to clone, whose flags the rule above sees. */
  RULE0(&f, SCMP_ACT_ERRNO(ENOSYS), "clone3");
  /* Writable shared file mappings: the kernel already refuses them on the
   * O_RDONLY arena descriptor; refuse them on any descriptor. */
  const scmp_datum_t type = MAP_TYPE | MAP_ANONYMOUS;
  RULE(&f, no, "mmap", SCMP_A2(SCMP_CMP_MASKED_EQ, PROT_WRITE, PROT_WRITE), SCMP_A3(SCMP_CMP_MASKED_EQ, type, MAP_SHARED));
  RULE(&f, no, "mmap", SCMP_A2(SCMP_CMP_MASKED_EQ, PROT_WRITE, PROT_WRITE),
       SCMP_A3(SCMP_CMP_MASKED_EQ, type, MAP_SHARED_VALIDATE));
  RULE(&f, no, "mmap2", SCMP_A2(SCMP_CMP_MASKED_EQ, PROT_WRITE, PROT_WRITE), SCMP_A3(SCMP_CMP_MASKED_EQ, type, MAP_SHARED));
  RULE(&f, no, "mmap2", SCMP_A2(SCMP_CMP_MASKED_EQ, PROT_WRITE, PROT_WRITE),
       SCMP_A3(SCMP_CMP_MASKED_EQ, type, MAP_SHARED_VALIDATE));
  /* A write window is a writable shared mapping of exactly the pages of one
   * output: growing it in place (mremap) would extend it over the next pages
   * of the memfd, and remap_file_pages would point it at any other offset. */
  RULE0(&f, no, "remap_file_pages");
  if (win_span)
    RULE(&f, no, "mremap", SCMP_A0(SCMP_CMP_MASKED_EQ, ~(scmp_datum_t)(win_span - 1), (scmp_datum_t)win_base));
  return load(&f, "pool", err, errlen);
}

int theus__sandbox_pool(int arena_fd, uintptr_t win_base, uint64_t win_span, char *err, size_t errlen) {
  /* The inode, not the descriptor, decides whether /proc/<pid>/fd/N or
   * map_files reopen it writable: r-------- closes every such path for a
   * process without CAP_DAC_OVERRIDE, the orchestrator's rw descriptor and
   * mapping were opened before and stay valid. */
  if (arena_fd >= 0 && fchmod(arena_fd, S_IRUSR) != 0) {
    int e = errno;
    struct stat sb; /* not ours to change, but already unwritable: as good */
    if (fstat(arena_fd, &sb) != 0 || (sb.st_mode & (S_IWUSR | S_IWGRP | S_IWOTH)))
      return fail(err, errlen, "pool sandbox: fchmod of the arena's descriptor to 0400 failed: %s (the pool must "
                  "run as the arena's owner)", strerror(e));
  }
  if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0)
    return fail(err, errlen, "pool sandbox: PR_SET_DUMPABLE failed: %s", strerror(errno));
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
    return fail(err, errlen, "pool sandbox: PR_SET_NO_NEW_PRIVS failed: %s", strerror(errno));
  if (drop_capabilities(err, errlen) < 0) return -1;
  landlock();
  return pool_filter(win_base, win_span, err, errlen);
}

/* ---- the pure layer ------------------------------------------------------ */

int theus__sandbox_pure(char *err, size_t errlen) {
  filter f;
  if (filter_init(&f, err, errlen) < 0) return -1;
  f.trap_names = 1;
  /* Every thread a task left behind gets the filter too. */
  seccomp_attr_set(f.ctx, SCMP_FLTATR_CTL_TSYNC, 1);
  const uint32_t trap = SCMP_ACT_TRAP;
  const scmp_datum_t self = (scmp_datum_t)getpid();
  /* No new processes (threads are fine), no exec. */
  RULE0(&f, trap, "fork");
  RULE0(&f, trap, "vfork");
  RULE(&f, trap, "clone", SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_THREAD, 0));
  RULE0(&f, trap, "execve");
  RULE0(&f, trap, "execveat");
  /* No network (nor local sockets: another process is outside too). */
  static const char *const net[] = {"socket", "socketpair", "connect", "bind", "listen", "accept", "accept4"};
  for (size_t i = 0; i < sizeof net / sizeof *net; i++) RULE0(&f, trap, net[i]);
  /* No writes outside the result: no open for writing, creating or
   * truncating, nothing that changes the file system. */
  static const struct {
    const char *name;
    unsigned arg;
  } opens[] = {{"open", 1}, {"openat", 2}};
  for (size_t i = 0; i < sizeof opens / sizeof *opens; i++) {
    unsigned a = opens[i].arg;
    RULE(&f, trap, opens[i].name, SCMP_CMP(a, SCMP_CMP_MASKED_EQ, O_ACCMODE, O_WRONLY));
    RULE(&f, trap, opens[i].name, SCMP_CMP(a, SCMP_CMP_MASKED_EQ, O_ACCMODE, O_RDWR));
    RULE(&f, trap, opens[i].name, SCMP_CMP(a, SCMP_CMP_MASKED_EQ, O_ACCMODE, O_ACCMODE));
    RULE(&f, trap, opens[i].name, SCMP_CMP(a, SCMP_CMP_MASKED_EQ, O_CREAT, O_CREAT));
    RULE(&f, trap, opens[i].name, SCMP_CMP(a, SCMP_CMP_MASKED_EQ, O_TRUNC, O_TRUNC));
  }
  rule(&f, trap, "openat2", NR_UNIFIED(437), 0, NULL); /* its flags live in memory */
  static const char *const fs[] = {
      "creat",     "truncate", "ftruncate", "fallocate", "unlink",   "unlinkat", "rename",    "renameat",
      "renameat2", "mkdir",    "mkdirat",   "rmdir",     "link",     "linkat",   "symlink",   "symlinkat",
      "mknod",     "mknodat",  "chown",     "fchown",    "lchown",   "fchownat", "utime",     "utimes",
      "utimensat", "futimesat", "chmod",    "fchmod",    "fchmodat", "setxattr", "lsetxattr", "fsetxattr",
      "removexattr", "lremovexattr", "fremovexattr"};
  for (size_t i = 0; i < sizeof fs / sizeof *fs; i++) RULE0(&f, trap, fs[i]);
  rule(&f, trap, "fchmodat2", NR_UNIFIED(452), 0, NULL);
  /* Writes through descriptors: only the diagnostic streams (1, 2). */
  static const struct {
    const char *name;
    unsigned arg;
  } writes[] = {{"write", 0},    {"writev", 0},    {"pwrite64", 0}, {"pwritev", 0},         {"pwritev2", 0},
                {"sendfile", 0}, {"splice", 2},    {"vmsplice", 0}, {"copy_file_range", 2}, {"sendto", 0},
                {"sendmsg", 0},  {"sendmmsg", 0}};
  for (size_t i = 0; i < sizeof writes / sizeof *writes; i++)
    RULE(&f, trap, writes[i].name, SCMP_CMP(writes[i].arg, SCMP_CMP_GT, 2));
  /* No signals to other processes (the orchestrator, other workers). */
  RULE(&f, trap, "kill", SCMP_A0(SCMP_CMP_NE, self));
  RULE(&f, trap, "tgkill", SCMP_A0(SCMP_CMP_NE, self));
  RULE(&f, trap, "rt_sigqueueinfo", SCMP_A0(SCMP_CMP_NE, self));
  RULE(&f, trap, "rt_tgsigqueueinfo", SCMP_A0(SCMP_CMP_NE, self));
  RULE0(&f, trap, "tkill");
  RULE0(&f, trap, "pidfd_send_signal");
  /* The violation report itself: a task may not take SIGSYS over. */
  RULE(&f, SCMP_ACT_ERRNO(EPERM), "rt_sigaction", SCMP_A0(SCMP_CMP_EQ, SIGSYS), SCMP_A1(SCMP_CMP_NE, 0));
  return load(&f, "pure-process", err, errlen);
}
