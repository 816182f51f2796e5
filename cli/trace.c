/* theus-run — Chrome Trace Event output (viewable in Perfetto, chrome://tracing). */
#include "trace.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

void cli_trace_init(trace_log *t) {
  memset(t, 0, sizeof *t);
  pthread_mutex_init(&t->lock, NULL);
}

void cli_trace_fini(trace_log *t) {
  for (size_t i = 0; i < t->n; i++) free(t->v[i].process);
  free(t->v);
  pthread_mutex_destroy(&t->lock);
}

void cli_trace_event(const theus_trace_event *ev, void *ud) {
  trace_log *t = ud;
  pthread_mutex_lock(&t->lock);
  if (t->n == t->cap) {
    size_t cap = t->cap ? t->cap * 2 : 256;
    trace_rec *v = realloc(t->v, cap * sizeof *v);
    if (v) {
      t->v = v;
      t->cap = cap;
    }
  }
  char *name = t->n < t->cap ? strdup(ev->process ? ev->process : "?") : NULL;
  if (name)
    t->v[t->n++] = (trace_rec){name, ev->worker, ev->status, ev->queued_ns, ev->start_ns, ev->end_ns};
  else
    t->dropped++;
  pthread_mutex_unlock(&t->lock);
}

static json_t *thread_name(int tid, const char *name) {
  return json_pack("{s:s, s:s, s:i, s:i, s:{s:s}}", "name", "thread_name", "ph", "M", "pid", 1, "tid", tid, "args",
                   "name", name);
}

static int add_threads(json_t *events, const trace_log *t) {
  int max_worker = -1;
  for (size_t i = 0; i < t->n; i++)
    if (t->v[i].worker > max_worker) max_worker = t->v[i].worker;
  int rc = json_array_append_new(events, thread_name(0, "orchestrator (local runs)"));
  for (int w = 0; w <= max_worker && !rc; w++) {
    char name[32];
    snprintf(name, sizeof name, "worker %d", w);
    rc = json_array_append_new(events, thread_name(w + 1, name));
  }
  return rc;
}

int cli_trace_write(trace_log *t, const char *file) {
  json_t *events = json_array();
  uint64_t t0 = UINT64_MAX;
  for (size_t i = 0; i < t->n; i++)
    if (t->v[i].queued_ns < t0) t0 = t->v[i].queued_ns;
  int rc = !events || add_threads(events, t);
  for (size_t i = 0; i < t->n && !rc; i++) {
    const trace_rec *r = &t->v[i];
    double queue_ms = r->start_ns > r->queued_ns ? (double)(r->start_ns - r->queued_ns) / 1e6 : 0;
    json_t *ev = json_pack("{s:s, s:s, s:s, s:i, s:i, s:f, s:f, s:{s:i, s:s, s:f}}", "name", r->process, "cat",
                           "task", "ph", "X", "pid", 1, "tid", r->worker + 1, "ts", (double)(r->start_ns - t0) / 1e3,
                           "dur", (double)(r->end_ns - r->start_ns) / 1e3, "args", "worker", r->worker, "status",
                           r->status ? theus_err_name(r->status) : "ok", "queue_ms", queue_ms);
    rc = json_array_append_new(events, ev);
  }
  if (rc) json_decref(events);
  json_t *doc = rc ? NULL : json_pack("{s:o, s:s, s:{s:i}}", "traceEvents", events, "displayTimeUnit", "ms",
                                      "otherData", "dropped_events", t->dropped);
  rc = doc ? json_dump_file(doc, file, JSON_COMPACT) : -1;
  json_decref(doc);
  return rc ? -1 : 0;
}
