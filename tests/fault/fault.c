/* tests/fault: the --wrap'ed primitives and the injection counter (see fault.h). */
#include "fault.h"

#include <dlfcn.h>
#include <errno.h>
#include <elf.h>
#include <execinfo.h>
#include <link.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/types.h>
#include <unistd.h>

#include <jansson.h>

#ifdef __SANITIZE_ADDRESS__
#include <sanitizer/common_interface_defs.h>
#endif

static _Atomic uint64_t armed_at; /* 0: disarmed */
static _Atomic int persistent;     /* every call from armed_at on fails, not just that one */
static _Atomic uint64_t ncalls;
static _Atomic int fired;
static pid_t armed_pid;
static enum fault_kind fired_kind;
static void *fired_stack[48];
static int fired_depth;

static const char *const kind_names[FK_COUNT] = {
    "malloc", "calloc", "realloc", "strdup", "strndup", "aligned_alloc", "jansson-alloc",
    "mmap", "memfd_create", "fallocate", "fork", "pipe", "pthread_create", "dlopen", "open", "fopen"};

const char *fault_kind_name(enum fault_kind k) { return k < FK_COUNT ? kind_names[k] : "?"; }

/* Counts one fallible call of this process while armed; 1 if it must fail. */
static int inject(enum fault_kind k) {
  if (!atomic_load_explicit(&armed_at, memory_order_acquire)) return 0;
  if (getpid() != armed_pid) return 0; /* a forked child (fork server, worker): out of scope */
  uint64_t n = atomic_fetch_add(&ncalls, 1) + 1;
  uint64_t want = atomic_load(&armed_at);
  if (n < want || (n > want && !atomic_load(&persistent))) return 0;
  if (n == want) { /* the first failure is the one reported */
    fired_kind = k;
    fired_depth = backtrace(fired_stack, (int)(sizeof fired_stack / sizeof *fired_stack));
    atomic_store(&fired, 1);
  }
  return 1;
}

void fault_arm(uint64_t n) { fault_arm_mode(n, 0); }

void fault_arm_mode(uint64_t n, int persist) {
  atomic_store(&persistent, persist);
  armed_pid = getpid();
  atomic_store(&ncalls, 0);
  atomic_store(&fired, 0);
  atomic_store(&armed_at, n);
}

int fault_disarm(void) {
  atomic_store(&armed_at, 0);
  return atomic_load(&fired);
}

uint64_t fault_calls(void) { return atomic_load(&ncalls); }

enum fault_kind fault_fired_kind(void) { return fired_kind; }

/* ---- where the injected call came from ------------------------------------ */

static const char *const lib_dirs[] = {"/base/", "/heavy/", "/twin/", "/workers/", "/contracts/", "/engine/",
                                       "/pipeline/", NULL};

/* "file:line in function" for a return address (the call itself is
 * symbolized: pc - 1). Only ever called with the fault disarmed. */
#ifdef __SANITIZE_ADDRESS__
static void symbolize(void *pc, char *buf, size_t len) {
  __sanitizer_symbolize_pc((char *)pc - 1, "%s:%l in %f", buf, len);
}
#else
static void symbolize(void *pc, char *buf, size_t len) {
  Dl_info di;
  char *at = (char *)pc - 1;
  snprintf(buf, len, "%p", pc);
  if (!dladdr(at, &di) || !di.dli_fbase) return;
  const ElfW(Ehdr) *eh = di.dli_fbase;
  unsigned long addr = (unsigned long)(uintptr_t)at - (eh->e_type == ET_DYN ? (unsigned long)(uintptr_t)di.dli_fbase : 0);
  char cmd[1200], func[512] = "?", line[512] = "?";
  snprintf(cmd, sizeof cmd, "addr2line -f -e '%s' %#lx 2>/dev/null",
           di.dli_fname && di.dli_fname[0] ? di.dli_fname : "/proc/self/exe", addr);
  FILE *f = popen(cmd, "r");
  if (!f) return;
  if (fgets(func, sizeof func, f) && !fgets(line, sizeof line, f)) snprintf(line, sizeof line, "?");
  pclose(f);
  func[strcspn(func, "\n")] = line[strcspn(line, " \n")] = '\0';
  snprintf(buf, len, "%s in %s", line, func);
}
#endif

/* The library frames of the injected call, innermost first: "file:line in
 * function" joined by " < ". */
const char *fault_site(void) {
  static char site[2048];
  size_t l = 0;
  site[0] = '\0';
  for (int i = 1; i < fired_depth && l < sizeof site - 1; i++) {
    char buf[512];
    symbolize(fired_stack[i], buf, sizeof buf);
    if (strstr(buf, "tests/fault/")) continue;
    for (const char *const *d = lib_dirs; *d; d++) {
      const char *p = strstr(buf, *d);
      if (p) {
        l += (size_t)snprintf(site + l, sizeof site - l, "%s%s", l ? " < " : "", p + 1);
        break;
      }
    }
  }
  return site;
}

void fault_print_site(const char *prefix) {
  for (int i = 1; i < fired_depth && i < 16; i++) {
    char buf[512];
    symbolize(fired_stack[i], buf, sizeof buf);
    fprintf(stderr, "%s#%d %s\n", prefix, i, buf);
  }
}

/* ---- the wrapped primitives ------------------------------------------------
 * __wrap_X replaces X for every object of the test binary; __real_X is X. */

void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t sz);
void *__real_realloc(void *p, size_t n);
char *__real_strdup(const char *s);
char *__real_strndup(const char *s, size_t n);
void *__real_aligned_alloc(size_t al, size_t n);
void *__real_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off);
void *__real_mmap64(void *addr, size_t len, int prot, int flags, int fd, off_t off);
int __real_fallocate64(int fd, int mode, off_t off, off_t len);
int __real_open64(const char *path, int flags, ...);
FILE *__real_fopen64(const char *path, const char *mode);
int __real_memfd_create(const char *name, unsigned flags);
int __real_fallocate(int fd, int mode, off_t off, off_t len);
pid_t __real_fork(void);
int __real_pipe(int fds[2]);
int __real_pipe2(int fds[2], int flags);
int __real_pthread_create(pthread_t *t, const pthread_attr_t *at, void *(*fn)(void *), void *arg);
void *__real_dlopen(const char *path, int flags);
int __real_open(const char *path, int flags, ...);
FILE *__real_fopen(const char *path, const char *mode);

#define FAIL_IF(kind, err, ret) \
  do {                          \
    if (inject(kind)) {         \
      errno = (err);            \
      return ret;               \
    }                           \
  } while (0)

void *__wrap_malloc(size_t n) {
  FAIL_IF(FK_MALLOC, ENOMEM, NULL);
  return __real_malloc(n);
}
void *__wrap_calloc(size_t n, size_t sz) {
  FAIL_IF(FK_CALLOC, ENOMEM, NULL);
  return __real_calloc(n, sz);
}
void *__wrap_realloc(void *p, size_t n) {
  FAIL_IF(FK_REALLOC, ENOMEM, NULL); /* the old block stays the caller's */
  return __real_realloc(p, n);
}
char *__wrap_strdup(const char *s) {
  FAIL_IF(FK_STRDUP, ENOMEM, NULL);
  return __real_strdup(s);
}
char *__wrap_strndup(const char *s, size_t n) {
  FAIL_IF(FK_STRNDUP, ENOMEM, NULL);
  return __real_strndup(s, n);
}
void *__wrap_aligned_alloc(size_t al, size_t n) {
  FAIL_IF(FK_ALIGNED_ALLOC, ENOMEM, NULL);
  return __real_aligned_alloc(al, n);
}
void *__wrap_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off) {
  FAIL_IF(FK_MMAP, ENOMEM, MAP_FAILED);
  return __real_mmap(addr, len, prot, flags, fd, off);
}
/* The library is built with _FILE_OFFSET_BITS=64: its references are to the
 * *64 names (the same functions on 64-bit systems). */
void *__wrap_mmap64(void *addr, size_t len, int prot, int flags, int fd, off_t off) {
  FAIL_IF(FK_MMAP, ENOMEM, MAP_FAILED);
  return __real_mmap64(addr, len, prot, flags, fd, off);
}
int __wrap_fallocate64(int fd, int mode, off_t off, off_t len) {
  if (!(mode & FALLOC_FL_PUNCH_HOLE)) FAIL_IF(FK_FALLOCATE, ENOSPC, -1);
  return __real_fallocate64(fd, mode, off, len);
}
/* The mode argument of open(), present with O_CREAT or O_TMPFILE. */
#define OPEN_MODE(flags, mode)                  \
  mode_t mode = 0;                              \
  if ((flags) & (O_CREAT | O_TMPFILE)) {        \
    va_list ap;                                 \
    va_start(ap, flags);                        \
    mode = (mode_t)va_arg(ap, int);             \
    va_end(ap);                                 \
  }

int __wrap_open64(const char *path, int flags, ...) {
  OPEN_MODE(flags, mode);
  FAIL_IF(FK_OPEN, EMFILE, -1);
  return __real_open64(path, flags, mode);
}
FILE *__wrap_fopen64(const char *path, const char *mode) {
  FAIL_IF(FK_FOPEN, EMFILE, NULL);
  return __real_fopen64(path, mode);
}
int __wrap_memfd_create(const char *name, unsigned flags) {
  FAIL_IF(FK_MEMFD_CREATE, EMFILE, -1);
  return __real_memfd_create(name, flags);
}
int __wrap_fallocate(int fd, int mode, off_t off, off_t len) {
  /* Punching a hole gives pages back on a release path (free, reset): it is
   * not a failure an operation could report, so only reservations count. */
  if (!(mode & FALLOC_FL_PUNCH_HOLE)) FAIL_IF(FK_FALLOCATE, ENOSPC, -1);
  return __real_fallocate(fd, mode, off, len);
}
pid_t __wrap_fork(void) {
  FAIL_IF(FK_FORK, EAGAIN, -1);
  return __real_fork();
}
int __wrap_pipe(int fds[2]) {
  FAIL_IF(FK_PIPE, EMFILE, -1);
  return __real_pipe(fds);
}
int __wrap_pipe2(int fds[2], int flags) {
  FAIL_IF(FK_PIPE, EMFILE, -1);
  return __real_pipe2(fds, flags);
}
int __wrap_pthread_create(pthread_t *t, const pthread_attr_t *at, void *(*fn)(void *), void *arg) {
  if (inject(FK_PTHREAD_CREATE)) return EAGAIN; /* errno is not used: the code is returned */
  return __real_pthread_create(t, at, fn, arg);
}
void *__wrap_dlopen(const char *path, int flags) {
  /* Fail through the real dlopen so that dlerror() has a message, as after
   * any failed load. */
  if (inject(FK_DLOPEN)) return __real_dlopen("/nonexistent/theus-fault-injected.so", flags);
  return __real_dlopen(path, flags);
}
int __wrap_open(const char *path, int flags, ...) {
  OPEN_MODE(flags, mode);
  FAIL_IF(FK_OPEN, EMFILE, -1);
  return __real_open(path, flags, mode);
}
FILE *__wrap_fopen(const char *path, const char *mode) {
  FAIL_IF(FK_FOPEN, EMFILE, NULL);
  return __real_fopen(path, mode);
}

/* ---- jansson --------------------------------------------------------------- */

static void *json_alloc(size_t n) {
  FAIL_IF(FK_JSON_MALLOC, ENOMEM, NULL);
  return __real_malloc(n);
}

static void json_release(void *p) { free(p); }

void fault_init(void) {
  json_set_alloc_funcs(json_alloc, json_release);
  /* backtrace() loads its unwinder on first use: do it now, not inside a
   * wrapped malloc */
  void *pc[2];
  fired_depth = backtrace(pc, 2);
  fired_depth = 0;
}
