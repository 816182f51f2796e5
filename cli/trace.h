/* theus-run — collecting task events into a Chrome Trace Event file. */
#ifndef THEUS_CLI_TRACE_H
#define THEUS_CLI_TRACE_H

#include <pthread.h>
#include <stddef.h>

#include <theus/engine.h>

typedef struct trace_rec {
  char *process;
  int worker, status;
  uint64_t queued_ns, start_ns, end_ns;
} trace_rec;

typedef struct trace_log {
  pthread_mutex_t lock; /* the engine reports from whichever thread saw the end */
  trace_rec *v;
  size_t n, cap;
  int dropped; /* events lost to out-of-memory, reported in the file */
} trace_log;

void cli_trace_init(trace_log *t);
void cli_trace_fini(trace_log *t);

/* A theus_trace_fn; ud is the trace_log. */
void cli_trace_event(const theus_trace_event *ev, void *ud);

/* Writes {"traceEvents": [...]}: one complete ("X") event per task, from its
 * start to its end where it ran (on the worker, same monotonic clock), on the
 * thread row of the worker that ran it (tid 0 = orchestrator, w+1 = worker
 * w), with its time in the queue as the argument "queue_ms", plus
 * thread-name metadata. 0 or -1. */
int cli_trace_write(trace_log *t, const char *file);

#endif /* THEUS_CLI_TRACE_H */
