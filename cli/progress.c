/* theus-run — the progress line (see progress.h). */
#include "progress.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <theus/pool.h>

#define TICK_MS 100 /* 10 Hz: smooth to the eye, a few hundred bytes a second */

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void cli_progress_init(cli_progress *pg) {
  memset(pg, 0, sizeof *pg);
  pthread_mutex_init(&pg->lock, NULL);
  pthread_mutex_init(&pg->draw, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&pg->cv, &ca);
  pthread_condattr_destroy(&ca);
  pg->t0 = now_s();
}

void cli_progress_fini(cli_progress *pg) {
  pthread_cond_destroy(&pg->cv);
  pthread_mutex_destroy(&pg->draw);
  pthread_mutex_destroy(&pg->lock);
}

void cli_progress_step(const theus_pipeline_progress *pr, void *ud) {
  cli_progress *pg = ud;
  pthread_mutex_lock(&pg->lock);
  pg->pr = *pr;
  pthread_mutex_unlock(&pg->lock);
}

void cli_progress_line(int worker, const char *process, const char *line, size_t len, void *ud) {
  cli_progress *pg = ud;
  char buf[THEUS_OUTPUT_LINE_MAX + 256];
  int h = *process ? snprintf(buf, sizeof buf, "[worker %d process %s] ", worker, process)
                   : snprintf(buf, sizeof buf, "[worker %d] ", worker);
  size_t n = (size_t)h < sizeof buf ? (size_t)h : sizeof buf - 1;
  if (len > sizeof buf - n - 1) len = sizeof buf - n - 1;
  memcpy(buf + n, line, len); /* not %s: a line may hold NUL bytes */
  n += len;
  buf[n++] = '\n';
  pthread_mutex_lock(&pg->draw);
  flockfile(stderr);
  if (pg->shown) fputs("\r\033[K", stderr);
  pg->shown = false;
  fwrite(buf, 1, n, stderr);
  funlockfile(stderr);
  pthread_mutex_unlock(&pg->draw);
}

/* ", map 37/120 slices, 41.2/s, ETA 2.0 s" while a map runs; its rate counts
 * from when this map was first seen (a new total or fewer done: a new map). */
static void map_part(cli_progress *pg, double t, char *buf, size_t cap) {
  theus_engine_progress ep;
  theus_engine_progress_get(pg->e, &ep);
  buf[0] = '\0';
  if (!ep.map_total) return;
  if (ep.map_total != pg->base_total || ep.map_done < pg->base_done) {
    pg->base_total = ep.map_total;
    pg->base_done = ep.map_done;
    pg->base_t = t;
  }
  int n = snprintf(buf, cap, ", map %llu/%llu slices", (unsigned long long)ep.map_done,
                   (unsigned long long)ep.map_total);
  double dt = t - pg->base_t, rate = dt > 0 ? (double)(ep.map_done - pg->base_done) / dt : 0;
  if (rate > 0 && n > 0 && (size_t)n < cap)
    snprintf(buf + n, cap - (size_t)n, ", %.1f/s, ETA %.1f s", rate, (double)(ep.map_total - ep.map_done) / rate);
}

static void draw(cli_progress *pg) {
  double t = now_s();
  pthread_mutex_lock(&pg->lock);
  theus_pipeline_progress pr = pg->pr;
  pthread_mutex_unlock(&pg->lock);
  if (!pr.nsteps) return; /* the pipeline has not reported yet */
  char map[128];
  map_part(pg, t, map, sizeof map);
  pthread_mutex_lock(&pg->draw);
  flockfile(stderr);
  pg->shown = true;
  fprintf(stderr, "\r\033[Ktheus-run: step %zu/%zu, %llu ops, %d task%s in flight%s, %.1f s", pr.step, pr.nsteps,
          (unsigned long long)pr.ops, pr.in_flight, pr.in_flight == 1 ? "" : "s", map, t - pg->t0);
  fflush(stderr);
  funlockfile(stderr);
  pthread_mutex_unlock(&pg->draw);
}

static void *timer(void *ud) {
  cli_progress *pg = ud;
  pthread_mutex_lock(&pg->lock);
  while (!pg->stop) {
    pthread_mutex_unlock(&pg->lock);
    draw(pg);
    pthread_mutex_lock(&pg->lock);
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_nsec += TICK_MS * 1000000L;
    if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
    while (!pg->stop && pthread_cond_timedwait(&pg->cv, &pg->lock, &ts) != ETIMEDOUT) {
    }
  }
  pthread_mutex_unlock(&pg->lock);
  return NULL;
}

int cli_progress_start(cli_progress *pg, theus_engine *e, bool show) {
  pg->e = e;
  pg->t0 = now_s();
  pg->running = show && pthread_create(&pg->th, NULL, timer, pg) == 0;
  return pg->running || !show ? 0 : -1;
}

double cli_progress_stop(cli_progress *pg) {
  if (pg->running) {
    pthread_mutex_lock(&pg->lock);
    pg->stop = true;
    pthread_cond_signal(&pg->cv);
    pthread_mutex_unlock(&pg->lock);
    pthread_join(pg->th, NULL);
    pg->running = false;
  }
  pthread_mutex_lock(&pg->draw);
  flockfile(stderr);
  if (pg->shown) fputs("\r\033[K", stderr);
  pg->shown = false;
  funlockfile(stderr);
  pthread_mutex_unlock(&pg->draw);
  return now_s() - pg->t0;
}
