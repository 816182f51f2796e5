/* base: how much memory this process may still use (see base.h).
 *
 * Kept apart from os.c: it only reads /proc and cgroupfs, never maps or
 * allocates, and the arena asks it once per theus_arena_config_init. */
#include "base.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

/* MemAvailable from /proc/meminfo in bytes, or 0 if unknown. */
static uint64_t meminfo_available(void) {
  FILE *f = fopen("/proc/meminfo", "re");
  if (!f) return 0;
  char line[256];
  uint64_t kib = 0;
  while (fgets(line, sizeof line, f))
    if (sscanf(line, "MemAvailable: %" SCNu64 " kB", &kib) == 1) break;
  fclose(f);
  return kib * 1024u;
}

/* Reads one unsigned number from a cgroupfs file; "max" and errors give 0. */
static uint64_t read_u64(const char *path) {
  FILE *f = fopen(path, "re");
  if (!f) return 0;
  uint64_t v = 0;
  if (fscanf(f, "%" SCNu64, &v) != 1) v = 0;
  fclose(f);
  return v;
}

/* The smallest (memory.max - memory.current) over this process's cgroup v2
 * and its ancestors (each one's limit applies), or 0 if none is limited. */
static uint64_t cgroup_headroom(void) {
  FILE *f = fopen("/proc/self/cgroup", "re");
  if (!f) return 0;
  char line[900], rel[900] = "";
  while (fgets(line, sizeof line, f))
    if (!strncmp(line, "0::", 3)) { /* the v2 hierarchy */
      line[strcspn(line, "\n")] = '\0';
      memcpy(rel, line + 3, strlen(line + 3) + 1);
      break;
    }
  fclose(f);
  if (!rel[0]) return 0;
  uint64_t best = 0;
  for (;;) {
    char dir[1024], path[1100];
    snprintf(dir, sizeof dir, "/sys/fs/cgroup%s", strcmp(rel, "/") ? rel : "");
    snprintf(path, sizeof path, "%s/memory.max", dir);
    uint64_t max = read_u64(path);
    if (max) {
      snprintf(path, sizeof path, "%s/memory.current", dir);
      uint64_t cur = read_u64(path);
      uint64_t room = max > cur ? max - cur : 1; /* full: 1, not "unlimited" */
      if (!best || room < best) best = room;
    }
    char *slash = strrchr(rel, '/');
    if (!slash || slash == rel) break;
    *slash = '\0';
  }
  return best;
}

uint64_t theus__os_mem_available(void) {
  uint64_t avail = meminfo_available(), cg = cgroup_headroom();
  if (cg && (!avail || cg < avail)) avail = cg;
  return avail;
}
