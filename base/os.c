/* base: every operating-system call of libtheus that is not process control
 * (fork, signals and pidfds stay with the pool). See base.h. */
#include "base.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* ---- time and futex ------------------------------------------------------ */

uint64_t theus__now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t theus__deadline_ns(uint64_t now, int64_t timeout_ms) {
  if (timeout_ms < 0 || (uint64_t)timeout_ms > (UINT64_MAX - now) / 1000000u) return UINT64_MAX;
  return now + (uint64_t)timeout_ms * 1000000u;
}

void theus__abstime_ms(struct timespec *ts, int64_t timeout_ms) {
  clock_gettime(CLOCK_MONOTONIC, ts);
  if (timeout_ms <= 0) return;
  ts->tv_sec += (time_t)(timeout_ms / 1000);
  ts->tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
  if (ts->tv_nsec >= 1000000000L) {
    ts->tv_sec++;
    ts->tv_nsec -= 1000000000L;
  }
}

int theus__futex_wait(const _Atomic uint32_t *w, uint32_t expect, int64_t timeout_ns) {
  struct timespec ts, *tp = NULL;
  if (timeout_ns >= 0) {
    ts.tv_sec = timeout_ns / 1000000000;
    ts.tv_nsec = timeout_ns % 1000000000;
    tp = &ts;
  }
  /* The kernel wants a plain int pointer; the atomic type has the same layout. */
  return (int)syscall(SYS_futex, (const void *)w, FUTEX_WAIT, expect, tp, NULL, 0);
}

void theus__futex_wake(_Atomic uint32_t *w) {
  syscall(SYS_futex, (void *)w, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
}

/* ---- memory and files ---------------------------------------------------- */

static int os_error(void) {
  return (errno == ENOMEM || errno == ENOSPC) ? THEUS_ENOMEM : THEUS_ESYS;
}

size_t theus__os_page_size(void) {
  long p = sysconf(_SC_PAGESIZE);
  return p > 0 ? (size_t)p : 4096u; /* POSIX guarantees p > 0; the literal is never used */
}

int theus__os_memfd(const char *name, uint64_t size, int *fd) {
  int f = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (f < 0) return os_error();
  if (ftruncate(f, (off_t)size) != 0 ||
      fcntl(f, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0) {
    int rc = os_error(), saved = errno;
    close(f);
    errno = saved;
    return rc;
  }
  *fd = f;
  return 0;
}

int theus__os_reopen_ro(int fd, int *ro_fd) {
  char path[64];
  snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
  int f = open(path, O_RDONLY | O_CLOEXEC);
  if (f < 0) return THEUS_ESYS;
  *ro_fd = f;
  return 0;
}

int theus__os_map(int fd, uint64_t size, int writable, void **base) {
  int prot = PROT_READ | (writable ? PROT_WRITE : 0);
  void *p = mmap(NULL, (size_t)size, prot, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) return os_error();
  *base = p;
  return 0;
}

void theus__os_unmap(void *base, uint64_t size) {
  if (base) munmap(base, (size_t)size);
}

int theus__os_map_anon(uint64_t size, void **base) {
  void *p = mmap(NULL, (size_t)size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) return os_error();
  *base = p;
  return 0;
}

void *theus__os_zalloc(uint64_t size) {
  void *p = mmap(NULL, (size_t)size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  return p == MAP_FAILED ? NULL : p;
}

void theus__os_zfree(void *p, uint64_t size) {
  if (p) munmap(p, (size_t)size);
}

int theus__os_protect_ro(void *base, uint64_t size) {
  return mprotect(base, (size_t)size, PROT_READ) == 0 ? 0 : THEUS_ESYS;
}

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22 /* Linux 5.14 */
#define MADV_POPULATE_WRITE 23
#endif

void theus__os_populate(const void *addr, uint64_t len, int write) {
  uintptr_t page = (uintptr_t)theus__os_page_size(), lo = (uintptr_t)addr & ~(page - 1);
  uintptr_t hi = ((uintptr_t)addr + (uintptr_t)len + page - 1) & ~(page - 1);
  if (len) madvise((void *)lo, hi - lo, write ? MADV_POPULATE_WRITE : MADV_POPULATE_READ);
}

int theus__os_fd_size(int fd, uint64_t *size) {
  struct stat st;
  if (fstat(fd, &st) != 0) return THEUS_ESYS;
  *size = (uint64_t)st.st_size;
  return 0;
}

int theus__os_reserve(int fd, uint64_t off, uint64_t len) {
  if (len == 0) return 0;
  if (fallocate(fd, 0, (off_t)off, (off_t)len) == 0) return 0;
  return os_error();
}

int theus__os_release(int fd, uint64_t off, uint64_t len) {
  if (len == 0) return 0;
  if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off, (off_t)len) == 0)
    return 0;
  return THEUS_ESYS;
}

int theus__os_tmpfile(const char *dir, uint64_t size, int *fd) {
  int f = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
  if (f < 0) return os_error();
  if (ftruncate(f, (off_t)size) != 0) {
    int rc = os_error(), saved = errno;
    close(f);
    errno = saved;
    return rc;
  }
  *fd = f;
  return 0;
}
