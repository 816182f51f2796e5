/* workers/: the pool's output thread (THEUS_OUTPUT_FORWARD). Every worker
 * writes its stdout and stderr into two pipes; this one thread reads them all
 * and hands out whole lines, prefixed with the worker and the process, to the
 * host's callback or to the orchestrator's stderr.
 *
 * Which process wrote a line travels in-band: a worker writes a marker (NUL,
 * 'T', the pool's random nonce, the label, NUL) into both of its pipes when
 * the label of its tasks changes, and when it starts. In-band, because the
 * reader may read a task's bytes long after the worker moved on; a marker sits
 * exactly between the bytes written before and after it. A marker also ends a
 * partial line, which is how the last words of a killed worker are flushed
 * (under the label they were written with) before its replacement speaks. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <unistd.h>

#include "pool_internal.h"

enum { MARK_MAX = 2 + THEUS__OUT_NONCE + THEUS__OUT_LABEL }; /* NUL 'T' nonce label(<64) NUL */

typedef struct stream {
  int fd; /* read end, -1 once closed */
  unsigned worker;
  char label[THEUS__OUT_LABEL];
  size_t len, cut;                  /* bytes in line; bytes dropped past THEUS_OUTPUT_LINE_MAX */
  char line[THEUS_OUTPUT_LINE_MAX + 1];
  unsigned char mk[MARK_MAX];       /* a marker being read (it may span reads) */
  size_t mklen;
} stream;

struct theus__output {
  const theus__ctl *ctl;
  unsigned n; /* streams: 2 per worker */
  stream *s;
  int *wfd;   /* the orchestrator's copies of the write ends (2 per worker), until closed */
  theus_output_fn fn;
  void *ud;
  int wake; /* eventfd: stop */
  /* the thread's poll set, allocated at open: a thread that could not get it
   * would close the pipes, and every worker would die of SIGPIPE */
  struct pollfd *pf;
  unsigned *idx;
  pthread_t thread;
  int running;
  char buf[64 * 1024];
  char emit[THEUS_OUTPUT_LINE_MAX + THEUS__OUT_LABEL + 96];
};

/* ---- lines ------------------------------------------------------------------ */

static void write_all(int fd, const char *p, size_t n) {
  while (n) {
    ssize_t w = write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return; /* the orchestrator's stderr is gone: nothing better to do */
    p += w;
    n -= (size_t)w;
  }
}

static void emit_line(theus__output *o, stream *st) {
  char tail[48] = ""; /* the cut marker is part of the line, so a callback sees it too */
  if (st->cut) snprintf(tail, sizeof tail, " [... %zu more bytes cut]", st->cut);
  if (o->fn) {
    /* line + tail, NUL-terminated, in the emit buffer (the line may hold NULs) */
    size_t tl = strlen(tail);
    memcpy(o->emit, st->line, st->len);
    memcpy(o->emit + st->len, tail, tl + 1);
    o->fn((int)st->worker, st->label, o->emit, st->len + tl, o->ud);
  } else {
    int h = st->label[0] ? snprintf(o->emit, sizeof o->emit, "[worker %u process %s] ", st->worker, st->label)
                         : snprintf(o->emit, sizeof o->emit, "[worker %u] ", st->worker);
    size_t at = (size_t)h, tl = strlen(tail);
    memcpy(o->emit + at, st->line, st->len);
    at += st->len;
    memcpy(o->emit + at, tail, tl);
    at += tl;
    o->emit[at++] = '\n';
    write_all(STDERR_FILENO, o->emit, at); /* one write: never torn by the orchestrator's own writes */
  }
  st->len = 0;
  st->cut = 0;
}

static void flush_partial(theus__output *o, stream *st) {
  if (st->len || st->cut) emit_line(o, st);
}

static void data_byte(theus__output *o, stream *st, unsigned char c) {
  if (c == '\n') {
    emit_line(o, st);
  } else if (st->len < THEUS_OUTPUT_LINE_MAX) {
    st->line[st->len++] = (char)c;
  } else {
    st->cut++;
  }
}

/* One byte of a stream: text, or part of a marker. A NUL starts a candidate
 * marker; if the bytes after it stop matching, they were text after all. */
static void feed(theus__output *o, stream *st, unsigned char c) {
  if (!st->mklen) {
    if (c == '\0')
      st->mk[st->mklen++] = c;
    else
      data_byte(o, st, c);
    return;
  }
  size_t pos = st->mklen;
  int ok;
  if (pos == 1)
    ok = c == 'T';
  else if (pos < 2 + THEUS__OUT_NONCE)
    ok = c == (unsigned char)o->ctl->out_nonce[pos - 2];
  else if (c == '\0') { /* a whole marker: what came before it belongs to the old label */
    flush_partial(o, st);
    size_t l = pos - 2 - THEUS__OUT_NONCE;
    memcpy(st->label, st->mk + 2 + THEUS__OUT_NONCE, l);
    st->label[l] = '\0';
    st->mklen = 0;
    return;
  } else
    ok = pos + 1 < MARK_MAX;
  if (ok) {
    st->mk[st->mklen++] = c;
    return;
  }
  /* Not a marker: its first byte (the NUL) is text; the rest is fed again,
   * since another NUL in it may start a real marker. */
  unsigned char again[MARK_MAX];
  size_t n = st->mklen;
  memcpy(again, st->mk, n);
  st->mklen = 0;
  data_byte(o, st, again[0]);
  for (size_t i = 1; i < n; i++) feed(o, st, again[i]);
  feed(o, st, c);
}

/* Reads what fd has now, at most max buffers (so one busy worker cannot
 * starve the others; 0: all); returns 0 at EOF or on error (the stream is
 * done). */
static int drain(theus__output *o, stream *st, unsigned max) {
  for (unsigned k = 0; !max || k < max; k++) {
    ssize_t r = read(st->fd, o->buf, sizeof o->buf);
    if (r > 0) {
      for (ssize_t i = 0; i < r; i++) feed(o, st, (unsigned char)o->buf[i]);
      continue;
    }
    if (r < 0 && errno == EINTR) continue;
    if (r < 0 && errno == EAGAIN) return 1;
    return 0;
  }
  return 1;
}

static void stream_done(theus__output *o, stream *st) {
  if (st->mklen) { /* a marker cut short by the end: it was text */
    unsigned char again[MARK_MAX];
    size_t n = st->mklen;
    memcpy(again, st->mk, n);
    st->mklen = 0;
    for (size_t i = 0; i < n; i++) data_byte(o, st, again[i]);
  }
  flush_partial(o, st);
  close(st->fd);
  st->fd = -1;
}

static void *output_main(void *arg) {
  theus__output *o = arg;
  struct pollfd *pf = o->pf;
  unsigned *idx = o->idx;
  int stop = 0;
  while (!stop) {
    nfds_t k = 0;
    for (unsigned i = 0; i < o->n; i++)
      if (o->s[i].fd >= 0) {
        pf[k] = (struct pollfd){.fd = o->s[i].fd, .events = POLLIN};
        idx[k++] = i;
      }
    pf[k] = (struct pollfd){.fd = o->wake, .events = POLLIN};
    if (poll(pf, k + 1, -1) < 0 && errno != EINTR) break;
    stop = (pf[k].revents & POLLIN) != 0;
    for (nfds_t j = 0; j < k; j++)
      if (pf[j].revents && !drain(o, &o->s[idx[j]], 4)) stream_done(o, &o->s[idx[j]]);
  }
  /* Stopping: the fork server is gone, so is every worker it reaped; read
   * what they left in the pipes and flush every partial line. */
  for (unsigned i = 0; i < o->n; i++)
    if (o->s[i].fd >= 0) {
      drain(o, &o->s[i], 0);
      stream_done(o, &o->s[i]);
    }
  return NULL;
}

/* ---- start / stop ----------------------------------------------------------- */

static void free_output(theus__output *o) {
  for (unsigned i = 0; i < o->n; i++)
    if (o->s[i].fd >= 0) close(o->s[i].fd);
  theus__output_close_writers(o);
  if (o->wake >= 0) close(o->wake);
  free(o->pf);
  free(o->idx);
  free(o->wfd);
  free(o->s);
  free(o);
}

int theus__output_open(theus__ctl *c, unsigned nworkers, theus_output_fn fn, void *ud, theus__output **out,
                        char *err, size_t errlen) {
  *out = NULL;
  for (unsigned w = 0; w < nworkers; w++) c->out_fd[w][0] = c->out_fd[w][1] = -1;
  unsigned char rnd[THEUS__OUT_NONCE / 2];
  if (getrandom(rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd) { /* not a secret: a clock will do */
    uint64_t t = theus__now_ns() ^ ((uint64_t)getpid() << 32);
    memcpy(rnd, &t, sizeof rnd < sizeof t ? sizeof rnd : sizeof t);
  }
  for (unsigned i = 0; i < sizeof rnd; i++) {
    c->out_nonce[2 * i] = "0123456789abcdef"[rnd[i] >> 4];
    c->out_nonce[2 * i + 1] = "0123456789abcdef"[rnd[i] & 15];
  }
  c->out_nonce[THEUS__OUT_NONCE] = '\0';
  theus__output *o = calloc(1, sizeof *o);
  if (!o || !(o->s = calloc(2 * (size_t)nworkers, sizeof *o->s)) ||
      !(o->wfd = malloc(2 * (size_t)nworkers * sizeof *o->wfd)) ||
      !(o->pf = calloc(2 * (size_t)nworkers + 1, sizeof *o->pf)) ||
      !(o->idx = calloc(2 * (size_t)nworkers, sizeof *o->idx))) {
    if (o) {
      free(o->s);
      free(o->wfd);
      free(o->pf);
    }
    free(o);
    snprintf(err, errlen, "theus_pool_open: out of memory for the output thread");
    return THEUS_ENOMEM;
  }
  o->ctl = c;
  o->fn = fn;
  o->ud = ud;
  o->wake = -1;
  o->n = 2 * nworkers;
  for (unsigned i = 0; i < o->n; i++) o->s[i].fd = o->wfd[i] = -1;
  for (unsigned w = 0; w < nworkers; w++)
    for (int k = 0; k < 2; k++) {
      int fds[2];
      if (pipe2(fds, O_CLOEXEC) < 0) {
        snprintf(err, errlen, "theus_pool_open: pipe for worker %u's output failed: %s (raise ulimit -n, or set "
                 "theus_pool_config.output to THEUS_OUTPUT_DISCARD)", w, strerror(errno));
        free_output(o);
        return THEUS_ESYS;
      }
      for (int e = 0; e < 2; e++) /* never 0..2, which the workers' dup2 would clobber */
        if (fds[e] <= STDERR_FILENO) {
          int up = fcntl(fds[e], F_DUPFD_CLOEXEC, STDERR_FILENO + 1);
          close(fds[e]);
          fds[e] = up;
        }
      if (fds[0] < 0 || fds[1] < 0) {
        if (fds[0] >= 0) close(fds[0]);
        if (fds[1] >= 0) close(fds[1]);
        snprintf(err, errlen, "theus_pool_open: no descriptor for worker %u's output pipe (raise ulimit -n)", w);
        free_output(o);
        return THEUS_ESYS;
      }
      fcntl(fds[0], F_SETFL, O_NONBLOCK);
      o->s[2 * w + (unsigned)k] = (stream){.fd = fds[0], .worker = w};
      c->out_fd[w][k] = o->wfd[2 * w + (unsigned)k] = fds[1];
    }
  o->wake = eventfd(0, EFD_CLOEXEC);
  if (o->wake < 0) {
    snprintf(err, errlen, "theus_pool_open: eventfd for the output thread failed: %s", strerror(errno));
    free_output(o);
    return THEUS_ESYS;
  }
  *out = o;
  return 0;
}

int theus__output_run(theus__output *o, char *err, size_t errlen) {
  if (!o) return 0;
  sigset_t all, old;
  sigfillset(&all); /* host signals are for host threads */
  pthread_sigmask(SIG_SETMASK, &all, &old);
  int rc = pthread_create(&o->thread, NULL, output_main, o);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (rc) {
    snprintf(err, errlen, "theus_pool_open: starting the output thread failed: %s", strerror(rc));
    return THEUS_ESYS;
  }
  o->running = 1;
  return 0;
}

void theus__output_close_writers(theus__output *o) {
  for (unsigned i = 0; o && i < o->n; i++)
    if (o->wfd[i] >= 0) {
      close(o->wfd[i]);
      o->wfd[i] = -1;
    }
}

void theus__output_stop(theus__output *o) {
  if (!o) return;
  if (o->running) {
    uint64_t one = 1;
    while (write(o->wake, &one, sizeof one) < 0 && errno == EINTR) {
    }
    pthread_join(o->thread, NULL);
  }
  free_output(o);
}
