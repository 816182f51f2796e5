/* Out of memory is an error, never the OOM killer nor SIGBUS (issue 10, items 0 and 5).
 *
 * 1. memory cgroup: a child moved into a fresh cgroup with a 128 MiB limit
 *    allocates and fills 4 MiB arrays until refused. It must get THEUS_ENOMEM
 *    with a message naming the cgroup limit; without the arena's check the
 *    kernel's cgroup OOM killer ends it inside fallocate (SIGKILL, exit 137).
 *    cgroup v2 with the memory controller is used when the machine has it,
 *    else cgroup v1's memory controller; when neither is writable (not root,
 *    a container without delegation) the test says so loudly and skips.
 * 2. tmpfs: a memfd lives on the kernel's internal shm mount, which has no
 *    size limit of its own: its only limits are the cgroups and the machine,
 *    which test 1 covers. To show that a backing that cannot grow is also an
 *    error and never a SIGBUS, the child mounts an 8 MiB tmpfs in a private
 *    mount namespace and opens the arena on an unnamed file there
 *    (theus__arena_open_at, internal): the same fallocate path, failing with
 *    ENOSPC instead of being killed.
 *
 * Each case runs in a forked child; the parent reaps it (killing it after a
 * deadline) and removes the cgroup and the mount point whatever happened. */
#include <errno.h>
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
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "theus/heavy.h"
#include "../../heavy/arena_int.h"

#define MiB (1024ull * 1024ull)

/* ---- child side --------------------------------------------------------- */

/* Allocates and fills `each`-byte arrays until refused. Exit 0: refused with
 * THEUS_ENOMEM and a message containing `want`; 2: another code or message;
 * 3: never refused. */
static int fill_until_refused(theus_arena *a, uint64_t each, const char *want) {
  for (int i = 0; i < 4096; i++) {
    theus_handle h;
    void *p;
    int rc = theus_arena_alloc(a, each, &h, &p);
    if (rc) {
      printf("child: after %d arrays of %llu bytes: %s: %s\n", i, (unsigned long long)each, theus_err_name(rc),
             theus_arena_errmsg(a));
      fflush(stdout);
      if (rc != THEUS_ENOMEM || !strstr(theus_arena_errmsg(a), want)) return 2;
      return 0;
    }
    memset(p, 0x5a, each); /* a lying reservation would SIGBUS here */
  }
  return 3;
}

static int write_file(const char *path, const char *text) {
  int f = open(path, O_WRONLY | O_CLOEXEC);
  if (f < 0) return -1;
  ssize_t n = write(f, text, strlen(text));
  int ok = n == (ssize_t)strlen(text);
  close(f);
  return ok ? 0 : -1;
}

/* ---- parent side -------------------------------------------------------- */

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
  if (WEXITSTATUS(status) == 2) fail_msg("%s: refused with the wrong code or a message not naming the limit", what);
  if (WEXITSTATUS(status) == 3) fail_msg("%s: never refused", what);
  assert_int_equal(WEXITSTATUS(status), 0);
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
  const char *procs, *limit_file;
  int v2;
} test_cgroup;

/* Creates a child cgroup with the memory controller; 0 or -1 (with a reason). */
static int cgroup_create(test_cgroup *cg, char *why, size_t whylen) {
  static const char *const v2roots[] = {"/sys/fs/cgroup", "/sys/fs/cgroup/unified"};
  char own[512], path[900];
  for (unsigned i = 0; i < 2; i++) {
    snprintf(path, sizeof path, "%s/cgroup.controllers", v2roots[i]);
    if (!file_has(path, "memory") || own_cgroup(1, own, sizeof own)) continue;
    snprintf(cg->dir, sizeof cg->dir, "%s%s/theus-oom-test-%d", v2roots[i], own, (int)getpid());
    snprintf(path, sizeof path, "%s%s/cgroup.subtree_control", v2roots[i], own);
    write_file(path, "+memory"); /* may already be on; fails if the cgroup has processes (then mkdir shows) */
    if (mkdir(cg->dir, 0755) != 0) continue;
    snprintf(path, sizeof path, "%s/memory.max", cg->dir);
    if (access(path, F_OK) != 0) {
      rmdir(cg->dir);
      continue;
    }
    cg->v2 = 1;
    cg->procs = "cgroup.procs";
    cg->limit_file = "memory.max";
    return 0;
  }
  if (access("/sys/fs/cgroup/memory/memory.limit_in_bytes", F_OK) == 0 && own_cgroup(0, own, sizeof own) == 0) {
    snprintf(cg->dir, sizeof cg->dir, "/sys/fs/cgroup/memory%s/theus-oom-test-%d", own, (int)getpid());
    if (mkdir(cg->dir, 0755) == 0) {
      cg->v2 = 0;
      cg->procs = "cgroup.procs";
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

static void test_cgroup_limit_gives_enomem(void **state) {
  (void)state;
  test_cgroup cg;
  char why[1024], path[900];
  if (cgroup_create(&cg, why, sizeof why) != 0) {
    fprintf(stderr, "\n*** test_cgroup_limit_gives_enomem SKIPPED: %s.\n*** The cgroup case of issue 10 item 5 is "
                    "NOT tested on this machine; only the tmpfs case runs.\n\n", why);
    skip();
  }
  printf("cgroup %s (%s)\n", cg.dir, cg.v2 ? "v2" : "v1: this machine has no cgroup v2 memory controller");
  snprintf(path, sizeof path, "%s/%s", cg.dir, cg.limit_file);
  int setup = write_file(path, "134217728"); /* 128 MiB */
  if (setup == 0 && !cg.v2) { /* no swap escape: the v1 memsw limit equals the memory limit when it exists */
    snprintf(path, sizeof path, "%s/memory.memsw.limit_in_bytes", cg.dir);
    write_file(path, "134217728");
  }
  pid_t pid = setup == 0 ? fork() : -1;
  if (pid == 0) {
    snprintf(path, sizeof path, "%s/%s", cg.dir, cg.procs);
    if (write_file(path, "0") != 0) _exit(4);
    theus_arena_config c;
    theus_arena_config_init(&c);
    c.hard_limit = 1024 * MiB; /* far above the cgroup's 128 MiB */
    c.max_handles = 4096;
    theus_arena *a = NULL;
    if (theus_arena_open(&c, &a) != 0) _exit(5);
    _exit(fill_until_refused(a, 4 * MiB, "memory cgroup"));
  }
  int status = pid > 0 ? reap(pid, 120) : -1;
  cgroup_remove(&cg);
  if (setup != 0) fail_msg("cannot set the limit in %s", cg.dir);
  assert_true(pid > 0);
  if (WIFEXITED(status) && WEXITSTATUS(status) == 4) fail_msg("the child could not join %s", cg.dir);
  check_status(status, "cgroup");
}

static void test_small_tmpfs_gives_enomem_not_sigbus(void **state) {
  (void)state;
  char dir[] = "/tmp/theus-oom-tmpfs-XXXXXX";
  assert_non_null(mkdtemp(dir));
  pid_t pid = fork();
  if (pid == 0) {
    if (unshare(CLONE_NEWNS) != 0) _exit(10);
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) _exit(10);
    if (mount("theus-test", dir, "tmpfs", 0, "size=8m") != 0) _exit(10);
    theus_arena_config c;
    theus_arena_config_init(&c);
    c.hard_limit = 64 * MiB;
    c.max_handles = 1024;
    theus_arena *a = NULL;
    if (theus__arena_open_at(&c, dir, &a) != 0) {
      printf("child: %s\n", theus_arena_errmsg(a));
      _exit(5);
    }
    int rc = fill_until_refused(a, 1 * MiB, "cannot reserve");
    if (rc) _exit(rc);
    /* small arrays until refused too: they reserve page by page */
    _exit(fill_until_refused(a, 1000, "cannot reserve"));
  }
  assert_true(pid > 0);
  int status = reap(pid, 60);
  rmdir(dir); /* the mount went away with the child's namespace */
  if (WIFEXITED(status) && WEXITSTATUS(status) == 10) {
    fprintf(stderr, "\n*** test_small_tmpfs_gives_enomem_not_sigbus SKIPPED: no private mount namespace "
                    "(unshare/mount not permitted here).\n\n");
    skip();
  }
  check_status(status, "tmpfs");
}

int main(void) {
  setvbuf(stdout, NULL, _IONBF, 0);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_cgroup_limit_gives_enomem),
      cmocka_unit_test(test_small_tmpfs_gives_enomem_not_sigbus),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
