/* base: how many CPUs this process may use (see base.h).
 *
 * Online CPUs overstate it twice over: taskset/cpusets narrow the affinity
 * mask, and a container's cgroup v2 cpu.max caps the time. Read once per
 * pool or pipeline configuration; never allocates. */
#include "base.h"

#include <inttypes.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

unsigned theus__cpu_max_parse(const char *text) {
  uint64_t quota, period;
  if (!text || sscanf(text, "%" SCNu64 " %" SCNu64, &quota, &period) != 2 || !period || !quota) return 0;
  uint64_t n = (quota + period - 1) / period; /* 1.5 CPUs of time keep 2 workers busy in turns */
  return n > 65535 ? 65535 : (unsigned)n;
}

/* The smallest cpu.max quota (in CPUs, rounded up) over this process's cgroup
 * v2 and its ancestors, or 0 if none is limited. */
static unsigned cgroup_cpus(void) {
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
  unsigned best = 0;
  for (;;) {
    char path[1100], text[64] = "";
    snprintf(path, sizeof path, "/sys/fs/cgroup%s/cpu.max", strcmp(rel, "/") ? rel : "");
    FILE *m = fopen(path, "re");
    if (m) {
      if (!fgets(text, sizeof text, m)) text[0] = '\0';
      fclose(m);
    }
    unsigned n = theus__cpu_max_parse(text);
    if (n && (!best || n < best)) best = n;
    char *slash = strrchr(rel, '/');
    if (!slash || slash == rel) break;
    *slash = '\0';
  }
  return best;
}

unsigned theus__os_cpus(void) {
  long online = sysconf(_SC_NPROCESSORS_ONLN);
  unsigned n = online > 0 ? (unsigned)online : 1;
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0) n = (unsigned)CPU_COUNT(&set);
  unsigned cg = cgroup_cpus();
  if (cg && cg < n) n = cg;
  return n;
}
