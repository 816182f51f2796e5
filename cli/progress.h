/* theus-run — the progress line on a terminal, and worker output around it. */
#ifndef THEUS_CLI_PROGRESS_H
#define THEUS_CLI_PROGRESS_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include <theus/engine.h>
#include <theus/pipeline.h>

/* The line is drawn by a timer thread at 10 Hz, from the pipeline's last
 * report (steps, operations, tasks in flight) and the engine's map counters
 * (slices done / total, rate, ETA), so it moves during a long map too.
 * Forwarded worker lines clear it first; both write under stderr's lock, so a
 * line and the progress never mix. Without a terminal there is no line. */
typedef struct cli_progress {
  pthread_mutex_t lock; /* pr, stop */
  pthread_mutex_t draw; /* shown, and the line on screen (taken with stderr's lock,
                           which ThreadSanitizer does not see) */
  pthread_cond_t cv;    /* the timer's sleep; signalled to stop */
  theus_pipeline_progress pr;
  theus_engine *e;
  double t0;
  bool shown;   /* a line is on screen (under draw) */
  bool running, stop;
  pthread_t th;
  /* rate of the map running now: slices since base_t */
  uint64_t base_done, base_total;
  double base_t;
} cli_progress;

void cli_progress_init(cli_progress *pg);
/* A theus_pipeline_progress_fn; ud is the cli_progress. Records, never draws. */
void cli_progress_step(const theus_pipeline_progress *pr, void *ud);
/* A theus_output_fn; ud is the cli_progress. Clears the line, prints the
 * line prefixed "[worker N process P] ", in one write. */
void cli_progress_line(int worker, const char *process, const char *line, size_t len, void *ud);
/* A run on e starts now; with show, a timer thread draws the line (0, or -1
 * if the thread could not start: no line then). */
int cli_progress_start(cli_progress *pg, theus_engine *e, bool show);
/* Stops the timer (if started) and clears the line; the elapsed seconds. */
double cli_progress_stop(cli_progress *pg);
void cli_progress_fini(cli_progress *pg);

#endif /* THEUS_CLI_PROGRESS_H */
