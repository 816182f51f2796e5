/* base: the floor of libtheus (internal, never installed).
 *
 * Every operating-system primitive the library uses (futex, clock, page size,
 * memfd/mmap/fallocate), the one error object every handle embeds and a JSON
 * parse that tells running out of memory from bad text. This is
 * the only internal header other folders may include; it knows nothing above
 * it. Porting or instrumenting the library starts here (after mimalloc's
 * prim.h and SQLite's per-connection error message).
 */
#ifndef THEUS_BASE_H
#define THEUS_BASE_H

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "theus/error.h"

/* ---- time, spinning, futex (os.c) --------------------------------------- */

/* CLOCK_MONOTONIC in nanoseconds. */
uint64_t theus__now_ns(void);

/* now + timeout_ms, saturating: a negative or huge timeout means none
 * (UINT64_MAX), never a deadline that wrapped into the past. */
uint64_t theus__deadline_ns(uint64_t now, int64_t timeout_ms);

/* A hint to the CPU inside a spin loop. */
static inline void theus__cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ volatile("yield");
#endif
}

/* Sleeps while *w == expect, at most timeout_ns (< 0: no limit). Shared (not
 * private) futex: the word may live in memory shared across processes, even
 * mapped read-only here. Returns 0, or -1 with errno (EAGAIN: *w != expect;
 * ETIMEDOUT; EINTR) like the system call. */
int theus__futex_wait(const _Atomic uint32_t *w, uint32_t expect, int64_t timeout_ns);
/* CLOCK_MONOTONIC now + timeout_ms as a timespec, for condition variables
 * created with that clock (pthread_condattr_setclock). */
struct timespec;
void theus__abstime_ms(struct timespec *ts, int64_t timeout_ms);
/* Wakes every waiter on w (shared futex). */
void theus__futex_wake(_Atomic uint32_t *w);

/* ---- memory and files (os.c) ---------------------------------------------
 * Each returns 0 or a negative THEUS_E code (THEUS_ENOMEM when the system is
 * out of memory or space, else THEUS_ESYS with errno kept). */

/* The system page size. */
size_t theus__os_page_size(void);
/* Creates an anonymous memfd of `size` bytes (sparse), sealed against
 * shrinking and growing. */
int theus__os_memfd(const char *name, uint64_t size, int *fd);
/* Opens a new O_RDONLY file description of fd (via /proc/self/fd). */
int theus__os_reopen_ro(int fd, int *ro_fd);
/* Maps the whole of fd, shared; PROT_READ only unless writable. */
int theus__os_map(int fd, uint64_t size, int writable, void **base);
/* Unmaps what theus__os_map or theus__os_map_anon mapped; NULL is a no-op. */
void theus__os_unmap(void *base, uint64_t size);
/* Maps size bytes of anonymous shared memory (inherited over fork, named
 * nowhere; MAP_NORESERVE: pages cost memory once touched), zero-filled. */
int theus__os_map_anon(uint64_t size, void **base);
/* Zero-filled private memory for a large table of which little may ever be
 * used: an anonymous mapping, so only touched pages cost memory (what calloc
 * of such a size does too, but under a sanitizer calloc writes the whole
 * table and its shadow: 2 s per arena under TSan). NULL on failure.
 * theus__os_zfree(p, size) releases it; NULL is a no-op. */
void *theus__os_zalloc(uint64_t size);
void theus__os_zfree(void *p, uint64_t size);
/* Makes [base, base+size) read-only in this process. */
int theus__os_protect_ro(void *base, uint64_t size);
/* Faults the pages of [addr, addr+len) in with one call, for reading or
 * writing (MADV_POPULATE_*: a fault per page costs tens of microseconds in
 * some VMs). Best effort: kernels before 5.14 refuse it, harmlessly. */
void theus__os_populate(const void *addr, uint64_t len, int write);
/* Size of the file behind fd. */
int theus__os_fd_size(int fd, uint64_t *size);
/* Allocates backing pages for [off, off+len) now (no SIGBUS later). */
int theus__os_reserve(int fd, uint64_t off, uint64_t len);
/* Returns the pages of [off, off+len) to the system (reads then give zeros). */
int theus__os_release(int fd, uint64_t off, uint64_t len);
/* Like theus__os_memfd, but an unnamed file (O_TMPFILE) in directory dir, not
 * sealed: lets a test back an arena with a size-limited tmpfs. */
int theus__os_tmpfile(const char *dir, uint64_t size, int *fd);

/* ---- memory limits (os_mem.c: the one reader of cgroupfs and /proc/meminfo)
 * How much memory this process may still take, from the tightest of: every
 * memory cgroup it is in (cgroup v2 memory.max - memory.current, and cgroup v1
 * memory.limit_in_bytes - memory.usage_in_bytes, at each level from its own
 * cgroup up to the root) and the machine (MemAvailable of MemTotal). Reads a
 * handful of small files (no allocation, no stdio): tens of microseconds, so
 * callers cache it. */
typedef struct theus__mem_room {
  uint64_t avail; /* room - headroom(limit), the tightest over all sources; UINT64_MAX if none */
  uint64_t room;  /* limit - used (0 if used >= limit) of that source */
  uint64_t limit; /* the limit that gave `room` */
  uint64_t used;
  char what[200]; /* "memory cgroup /a/b (memory.max)" or "the machine (MemAvailable)" */
} theus__mem_room;
/* `headroom(limit)` is subtracted from each source's room before comparing,
 * so `avail` is the tightest room left after the headroom; NULL: none. */
void theus__os_mem_room(theus__mem_room *r, uint64_t (*headroom)(uint64_t limit));
/* The same, reading <sys>/proc/... and <sys>/sys/fs/cgroup/... (sys NULL or
 * "": the real ones): lets a test give the arena a synthetic cgroup tree. */
void theus__os_mem_room_at(const char *sys, theus__mem_room *r, uint64_t (*headroom)(uint64_t limit));
/* Bytes this process may still use (the tightest room above, no headroom):
 * in a container MemAvailable describes the host, so a limited cgroup lowers
 * it. 0 if nothing says; 1 if a limit is reached. */
uint64_t theus__os_mem_available(void);
/* CPUs this process may use: its affinity mask (taskset, cpusets), lowered to
 * the cpu.max quota of its cgroup v2 and its ancestors, rounded up (a quota
 * of 1.5 CPUs gives 2). At least 1. Reads /proc and cgroupfs (os_cpu.c). */
unsigned theus__os_cpus(void);
/* CPUs a cgroup v2 cpu.max line ("150000 100000") allows, rounded up; 0 for
 * "max ..." (no limit) or text that is not a quota. */
unsigned theus__cpu_max_parse(const char *text);

/* ---- errors (error.c) -----------------------------------------------------
 * The object that failed keeps a message saying what, where and how to fix.
 * Writers and readers may be different threads: both take the lock, and a
 * reader gets a copy, never the buffer a writer may be rewriting. */

#define THEUS__ERRMSG_MAX 1024

typedef struct theus__err {
  pthread_mutex_t lock;
  int code;                     /* of the last failure, 0 if none */
  char msg[THEUS__ERRMSG_MAX];  /* "" if none */
} theus__err;

void theus__err_init(theus__err *err);
void theus__err_fini(theus__err *err);
/* Records code and the printf-formatted message; returns code. The arguments
 * may point at a message read from this or another object. */
int theus__err_set(theus__err *err, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
int theus__err_vset(theus__err *err, int code, const char *fmt, va_list ap) __attribute__((format(printf, 3, 0)));
/* Copies the message (cut to len - 1 bytes) into buf under the lock. */
void theus__err_copy(const theus__err *err, char *buf, size_t len);
/* The message ("no error" if none), copied under the lock into thread-local
 * storage: the text stays valid until the same thread has made
 * THEUS__ERRMSG_RING more *_errmsg calls (so printing a few messages in one
 * printf is safe). Never NULL. */
#define THEUS__ERRMSG_RING 4
const char *theus__err_msg(const theus__err *err);

/* Formats a message into buf (if buf and len) and returns code: the shared
 * shape of every "fill the caller's buffer and fail" path. */
int theus__errf(char *buf, size_t len, int code, const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* "Did you mean": true if cand is a likely misspelling of name, closer than
 * any candidate before it (*best, start at SIZE_MAX, is updated): at most 2
 * edits, or a third of name's length for long names (case-insensitive
 * Levenshtein distance; names over 60 bytes never match). Loop over the
 * candidates and keep the last one for which it returned true. */
int theus__near(const char *name, const char *cand, size_t *best);
/* ---- JSON text (json.c) ---------------------------------------------------- */

struct json_t;
struct json_error_t;
/* json_loadb that tells a syntax error (*rc THEUS_EPARSE, details in *je)
 * from running out of memory (*rc THEUS_ENOMEM): jansson reports some failed
 * allocations as syntax errors, so a failure counts as one only if the text
 * is not valid JSON (checked without allocating). *rc is 0 when a value is
 * returned. */
struct json_t *theus__json_load(const char *buf, size_t n, size_t flags, struct json_error_t *je, int *rc);

#endif
