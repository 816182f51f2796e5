/* base: how much memory this process may still take (see base.h): the one
 * place that reads cgroupfs and /proc/meminfo.
 *
 * Plain open/read/close into stack buffers: no allocation, no stdio, so the
 * check costs a few system calls and is safe under the arena lock. */
#include "base.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static ssize_t read_small(const char *path, char *buf, size_t cap) {
  int f = open(path, O_RDONLY | O_CLOEXEC);
  if (f < 0) return -1;
  size_t n = 0;
  for (;;) {
    ssize_t r = read(f, buf + n, cap - 1 - n);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    n += (size_t)r;
    if (n == cap - 1) break;
  }
  close(f);
  buf[n] = 0;
  return (ssize_t)n;
}

/* A decimal value at s (a cgroup file: "max" or digits), UINT64_MAX for "max". */
static int parse_u64(const char *s, uint64_t *v) {
  if (strncmp(s, "max", 3) == 0) {
    *v = UINT64_MAX;
    return 0;
  }
  if (*s < '0' || *s > '9') return -1;
  uint64_t x = 0;
  for (; *s >= '0' && *s <= '9'; s++) x = x > (UINT64_MAX - 9) / 10 ? UINT64_MAX : x * 10 + (uint64_t)(*s - '0');
  *v = x;
  return 0;
}

static int read_u64(const char *path, uint64_t *v) {
  char buf[64];
  if (read_small(path, buf, sizeof buf) <= 0) return -1;
  return parse_u64(buf, v);
}

static void consider(theus__mem_room *r, uint64_t limit, uint64_t used, uint64_t (*headroom)(uint64_t),
                     const char *what1, const char *what2, const char *what3) {
  if (limit >= (1ull << 62)) return; /* "max", or cgroup v1's page-rounded LONG_MAX: no limit */
  uint64_t room = used >= limit ? 0 : limit - used;
  uint64_t h = headroom ? headroom(limit) : 0;
  uint64_t avail = room > h ? room - h : 0;
  if (avail >= r->avail) return;
  r->avail = avail;
  r->room = room;
  r->limit = limit;
  r->used = used;
  snprintf(r->what, sizeof r->what, "%s%s%s", what1, what2, what3);
}

/* Walks from root+path up to root, reading limit_file - usage_file at each level. */
static void walk_cgroup(theus__mem_room *r, uint64_t (*headroom)(uint64_t), const char *root, const char *cg,
                        const char *limit_file, const char *usage_file, const char *label) {
  char dir[512], file[600];
  int n = snprintf(dir, sizeof dir, "%s%s", root, cg);
  if (n < 0 || (size_t)n >= sizeof dir) return;
  size_t rootlen = strlen(root);
  for (;;) {
    size_t len = strlen(dir);
    while (len > rootlen && dir[len - 1] == '/') dir[--len] = 0;
    uint64_t limit, used;
    snprintf(file, sizeof file, "%s/%s", dir, limit_file);
    if (read_u64(file, &limit) == 0) {
      snprintf(file, sizeof file, "%s/%s", dir, usage_file);
      if (read_u64(file, &used) == 0) {
        const char *rel = dir + rootlen;
        consider(r, limit, used, headroom, label, *rel ? rel : "/", strcmp(limit_file, "memory.max") == 0 ? " (memory.max)" : " (memory.limit_in_bytes)");
      }
    }
    if (len <= rootlen) break;
    char *slash = strrchr(dir + rootlen, '/');
    if (!slash) break;
    *slash = 0;
  }
}

static void machine_room(theus__mem_room *r, uint64_t (*headroom)(uint64_t), const char *sys) {
  char buf[4096], path[512];
  snprintf(path, sizeof path, "%s/proc/meminfo", sys);
  if (read_small(path, buf, sizeof buf) <= 0) return;
  const char *t = strstr(buf, "MemTotal:"), *av = strstr(buf, "MemAvailable:");
  if (!t || !av) return;
  t += 9;
  av += 13;
  while (*t == ' ') t++;
  while (*av == ' ') av++;
  uint64_t total, avail;
  if (parse_u64(t, &total) || parse_u64(av, &avail)) return;
  total *= 1024;
  avail *= 1024;
  consider(r, total, avail > total ? 0 : total - avail, headroom, "the machine (MemAvailable of MemTotal)", "", "");
}

void theus__os_mem_room_at(const char *sys, theus__mem_room *r, uint64_t (*headroom)(uint64_t)) {
  *r = (theus__mem_room){.room = UINT64_MAX, .avail = UINT64_MAX, .limit = UINT64_MAX};
  char buf[2048], self[300], v2[300], hybrid[300], v1[300];
  if (!sys) sys = "";
  snprintf(v2, sizeof v2, "%s/sys/fs/cgroup", sys);
  snprintf(hybrid, sizeof hybrid, "%s/sys/fs/cgroup/unified", sys);
  snprintf(v1, sizeof v1, "%s/sys/fs/cgroup/memory", sys);
  snprintf(self, sizeof self, "%s/proc/self/cgroup", sys);
  if (read_small(self, buf, sizeof buf) > 0) {
    /* lines "id:controllers:/path"; "0::/path" is cgroup v2 */
    for (char *line = buf, *next; line && *line; line = next) {
      next = strchr(line, '\n');
      if (next) *next++ = 0;
      char *c1 = strchr(line, ':');
      char *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
      if (!c2) continue;
      const char *path = c2 + 1;
      *c2 = 0;
      if (c1 == line + 1 && line[0] == '0' && c2 == c1 + 1) {
        /* v2: at /sys/fs/cgroup (unified) or /sys/fs/cgroup/unified (hybrid) */
        walk_cgroup(r, headroom, v2, path, "memory.max", "memory.current", "memory cgroup ");
        walk_cgroup(r, headroom, hybrid, path, "memory.max", "memory.current", "memory cgroup ");
      } else {
        for (char *tok = c1 + 1, *end; tok; tok = end ? end + 1 : NULL) {
          end = strchr(tok, ',');
          if ((end ? (size_t)(end - tok) : strlen(tok)) == 6 && strncmp(tok, "memory", 6) == 0) {
            walk_cgroup(r, headroom, v1, path, "memory.limit_in_bytes",
                        "memory.usage_in_bytes", "memory cgroup (v1) ");
            break;
          }
        }
      }
    }
  }
  machine_room(r, headroom, sys);
}

void theus__os_mem_room(theus__mem_room *r, uint64_t (*headroom)(uint64_t)) { theus__os_mem_room_at(NULL, r, headroom); }

uint64_t theus__os_mem_available(void) {
  theus__mem_room r;
  theus__os_mem_room(&r, NULL);
  if (r.limit == UINT64_MAX) return 0; /* nothing said */
  return r.room ? r.room : 1;         /* full: 1, not "unknown" */
}
