/* arena-tour: a guided run through the heavy arena. It writes arrays, lets a
 * forked child read them through a read-only mapping, shows the stats, a stale
 * handle, a refused over-budget allocation, and a reset. */
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <theus/heavy.h>

static void show(const char *when, const theus_arena *a) {
  theus_arena_stats s;
  theus_arena_stats_get(a, &s);
  printf("%-22s active=%llu bytes_live=%llu peak=%llu allocs=%llu frees=%llu errors=%llu hard_hits=%llu\n", when,
         (unsigned long long)s.active_handles, (unsigned long long)s.bytes_live, (unsigned long long)s.peak_bytes,
         (unsigned long long)s.alloc_count, (unsigned long long)s.free_count, (unsigned long long)s.errors,
         (unsigned long long)s.hard_limit_hits);
}

/* In a forked child: attach read-only and sum the array by its handle alone. */
static int child_sum(int ro_fd, theus_handle h) {
  theus_arena *ro;
  theus_array_info info;
  if (theus_arena_open_ro(ro_fd, &ro) != 0 || theus_array_info_get(ro, h, &info) != 0) return 1;
  const float *x = info.data;
  double sum = 0;
  for (uint64_t i = 0; i < info.shape[0]; i++) sum += x[i];
  printf("child %d: read-only view of %s[%llu] -> sum = %.0f\n", (int)getpid(), theus_dtype_name(info.dtype),
         (unsigned long long)info.shape[0], sum);
  fflush(stdout);
  theus_arena_close(ro);
  return sum == 51903600.0 ? 0 : 2;
}

int main(void) {
  theus_arena *a;
  int rc = theus_arena_open(NULL, &a);
  if (rc) { /* like sqlite3_open: the failed arena carries the message */
    fprintf(stderr, "arena-tour: %s\n", theus_arena_errmsg(a));
    theus_arena_close(a);
    return 1;
  }
  uint64_t n = 1 << 20;
  theus_handle h;
  float *x;
  theus_array_alloc(a, THEUS_DTYPE_F32, 1, &n, &h, (void **)&x);
  for (uint64_t i = 0; i < n; i++) x[i] = (float)(i % 100);
  printf("allocated f32[%llu] as handle 0x%016llx (expected sum %llu)\n", (unsigned long long)n,
         (unsigned long long)h, (unsigned long long)(n / 100 * 4950 + (n % 100) * ((n % 100) - 1) / 2));
  show("after alloc:", a);
  fflush(stdout);
  pid_t pid = fork();
  if (pid == 0) _exit(child_sum(theus_arena_ro_fd(a), h));
  int status;
  waitpid(pid, &status, 0);
  theus_handle big;
  rc = theus_arena_alloc(a, 200u << 20, &big, NULL);
  printf("alloc 200 MiB: %s (%s)\n", theus_strerror(rc), theus_arena_errmsg(a));
  theus_arena_free(a, h);
  const void *v;
  rc = theus_arena_view(a, h, &v, NULL);
  printf("view after free: %s (%s)\n", theus_strerror(rc), theus_arena_errmsg(a));
  show("after free:", a);
  for (int i = 0; i < 1000; i++) theus_arena_write(a, &i, sizeof i, &h);
  show("1000 small arrays:", a);
  theus_arena_reset(a);
  show("after reset:", a);
  theus_arena_close(a);
  return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 1;
}
