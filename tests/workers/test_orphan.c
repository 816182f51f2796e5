/* workers: SIGKILL the process that owns a busy pool. Within 1 s neither its
 * fork server nor any worker may be alive, and /dev/shm holds nothing new.
 * The owner is a forked child that reports its pids over a pipe; teardown
 * kills and reaps it (and any theus-* survivor) even when an assertion fails. */
#include <dirent.h>
#include <errno.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "theus/heavy.h"
#include "theus/pool.h"

enum { NWORKERS = 2, MAXNAMES = 256 };

typedef struct fixture {
  pid_t owner;
  int npids;
  int pids[NWORKERS + 1];
} fixture;

static int setup(void **state) {
  fixture *f = calloc(1, sizeof *f);
  if (!f) return -1;
  *state = f;
  return 0;
}

/* 1 if pid names a live theus-* process (a zombie or another program is not). */
static int alive_theus(int pid) {
  char path[64], buf[256];
  snprintf(path, sizeof path, "/proc/%d/stat", pid);
  FILE *fp = fopen(path, "r");
  if (!fp) return 0;
  size_t n = fread(buf, 1, sizeof buf - 1, fp);
  fclose(fp);
  buf[n] = '\0';
  char *close_paren = strrchr(buf, ')');
  if (!strstr(buf, "(theus-") || !close_paren || close_paren[1] == '\0') return 0;
  return close_paren[2] != 'Z' && close_paren[2] != 'X';
}

static int teardown(void **state) {
  fixture *f = *state;
  if (f->owner > 0) {
    kill(f->owner, SIGKILL);
    waitpid(f->owner, NULL, 0);
  }
  for (int i = 0; i < f->npids; i++)
    if (alive_theus(f->pids[i])) kill(f->pids[i], SIGKILL);
  free(f);
  return 0;
}

static int t_spin(theus_task *t) {
  (void)t;
  for (volatile unsigned long i = 0;; i++) {
  }
  return 0;
}

static _Noreturn void owner_main(int wfd) {
  theus_arena *a;
  theus_pool *p;
  theus_pool_config cfg;
  if (theus_arena_open(NULL, &a) < 0) _exit(10);
  theus_pool_config_init(&cfg);
  cfg.nworkers = NWORKERS;
  cfg.arena = a;
  if (theus_pool_open(&cfg, &p) < 0) _exit(11);
  theus_task_desc d = {.fn = t_spin};
  theus_ticket tk;
  for (int i = 0; i < 2 * NWORKERS; i++)
    if (theus_pool_submit(p, &d, &tk) < 0) _exit(12);
  int pids[NWORKERS + 1];
  pids[0] = theus_pool_forksrv_pid(p);
  for (unsigned w = 0; w < NWORKERS; w++) pids[w + 1] = theus_pool_worker_pid(p, w);
  if (write(wfd, pids, sizeof pids) != (ssize_t)sizeof pids) _exit(13);
  for (;;) pause();
}

static int list_shm(char names[][256]) {
  DIR *d = opendir("/dev/shm");
  int n = 0;
  if (!d) return 0;
  struct dirent *e;
  while ((e = readdir(d)) && n < MAXNAMES) snprintf(names[n++], 256, "%s", e->d_name);
  closedir(d);
  return n;
}

static void test_owner_sigkill(void **state) {
  fixture *f = *state;
  static char before[MAXNAMES][256], after[MAXNAMES][256];
  int nb = list_shm(before);
  int fds[2];
  assert_int_equal(pipe(fds), 0);
  f->owner = fork();
  assert_true(f->owner >= 0);
  if (f->owner == 0) {
    close(fds[0]);
    owner_main(fds[1]);
  }
  close(fds[1]);
  struct pollfd pfd = {.fd = fds[0], .events = POLLIN};
  assert_int_equal(poll(&pfd, 1, 30000), 1);
  ssize_t got = read(fds[0], f->pids, sizeof f->pids);
  close(fds[0]);
  assert_int_equal(got, (ssize_t)sizeof f->pids);
  f->npids = NWORKERS + 1;
  for (int i = 0; i < f->npids; i++) assert_true(alive_theus(f->pids[i]));
  /* the workers are busy in t_spin now (or about to be) */
  assert_int_equal(kill(f->owner, SIGKILL), 0);
  assert_int_equal(waitpid(f->owner, NULL, 0), f->owner);
  f->owner = 0;
  int left = f->npids;
  for (int tick = 0; tick < 100 && left; tick++) { /* 1 s */
    left = 0;
    for (int i = 0; i < f->npids; i++) left += alive_theus(f->pids[i]);
    if (left) usleep(10000);
  }
  if (left) fail_msg("%d of the pool's processes outlived their owner by 1 s", left);
  int na = list_shm(after);
  for (int i = 0; i < na; i++) {
    int known = 0;
    for (int j = 0; j < nb && !known; j++) known = strcmp(after[i], before[j]) == 0;
    if (!known) fail_msg("new entry in /dev/shm: %s", after[i]);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_owner_sigkill, setup, teardown),
  };
  return cmocka_run_group_tests_name("workers/orphan", tests, NULL, NULL);
}
