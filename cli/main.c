/* theus-run — runs a JSON pipeline on a theus-c engine (see docs/theus-run.md). */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <theus/engine.h>
#include <theus/heavy.h>
#include <theus/pipeline.h>
#include <theus/pool.h>
#include <theus/version.h>

#include "mpi.h"
#include "progress.h"
#include "replay.h"
#include "trace.h"

/* Exit status (docs/theus-run.md, "Exit status"). A crash of any code in
 * theus-run itself is reported, then ends it by the same signal. */
enum { EXIT_STEP = 1, EXIT_USAGE = 2, EXIT_ENV = 3, EXIT_PLUGIN = 4 };

typedef struct options {
  const char *pipeline;
  const char **plugins;
  size_t nplugins;
  const char **sets;
  size_t nsets;
  int workers; /* -2 = not given */
  uint64_t arena_budget, arena_single; /* 0 = not given */
  const char *state_out, *trace_out, *ledger, *replay;
  bool stats, quiet, mpi, ledger_fsync, memo;
} options;

static const char usage[] =
    "usage: theus-run [options] PIPELINE.json\n"
    "\n"
    "Runs the steps of a pipeline on a theus-c engine and prints the final domain\n"
    "state as JSON on stdout.\n"
    "\n"
    "options:\n"
    "  --plugin PATH         load a plugin .so (repeatable; after the file's own)\n"
    "  --workers N           worker processes (0 = one per usable CPU, -1 = none, at most\n"
    "                        256); overrides the pipeline's \"workers\"\n"
    "  --arena-budget SIZE   arena budget, e.g. 8GiB (units B KiB MiB GiB TiB, or\n"
    "                        KB MB GB TB as powers of 1000); overrides \"arena\"\n"
    "  --arena-single-limit SIZE\n"
    "                        largest single array, e.g. 2GiB; overrides \"arena\"\n"
    "  --set domain.P=VALUE  set an initial domain value (repeatable); VALUE is\n"
    "                        JSON if it parses (3, true, \"x\", [1]) else a string\n"
    "  --state-out FILE      also write the final domain state to FILE\n"
    "  --stats               print engine, pool and arena stats as JSON on stderr\n"
    "  --trace FILE          write a Chrome Trace Event timeline (one event per\n"
    "                        task, on the worker that ran it) for Perfetto\n"
    "  --ledger FILE         append every committed version to FILE as JSON Lines\n"
    "                        (created or truncated; see docs/ledger.md)\n"
    "  --ledger-fsync        each ledger line is on disk before its commit returns\n"
    "  --replay FILE         run again and check every committed version against\n"
    "                        the ledger FILE; exit 1 at the first difference\n"
    "  --memo                memoise every pure process (see docs/api.md)\n"
    "  --quiet               no progress line and no summary\n"
    "  --mpi                 under mpirun or srun: rank 0 runs the pipeline and\n"
    "                        prints, map steps are spread over every rank\n"
    "                        (docs/cluster.md; needs a build with MPI)\n"
    "  --help, --version\n"
    "\n"
    "exit status: 0 success, 1 a step failed (or a replay differs), 2 usage,\n"
    "pipeline or plugin error (nothing ran), 3 engine or environment error (engine\n"
    "open, out of memory, output not written), 4 plugin code called exit() in\n"
    "theus-run, 130/143 interrupted by SIGINT/SIGTERM (the run was canceled); a\n"
    "crash of plugin code is named on stderr, then theus-run dies by the same signal\n";

/* SIGINT/SIGTERM: cancel the running pipeline (one atomic store), remember
 * the signal for the exit status (128 + signal). A second signal while the
 * cancel winds down gets the default action. */
static theus_pipeline *volatile g_pipeline;
static volatile sig_atomic_t g_signal;

static void on_signal(int sig) {
  if (g_signal) {
    signal(sig, SIG_DFL);
    raise(sig);
    return;
  }
  g_signal = sig;
  theus_pipeline *p = g_pipeline;
  if (p) theus_pipeline_cancel(p);
}

static void catch_signals(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
}

/* ---- what runs now: named when theus-run crashes or plugin code exits ----------
 * The pipeline tells us (theus_pipeline_on_enter) before it calls plugin code;
 * the record is plain static memory, so the signal handler reads it without
 * locks or allocation. `code` is written last on entry and first on return,
 * so a reader never pairs it with a half-copied name. */

static struct {
  volatile sig_atomic_t code; /* theus_pipeline_code */
  volatile sig_atomic_t local;
  int tty; /* stderr is a terminal: clear the progress line first */
  char plugin[512], process[256];
  pid_t pid; /* theus-run's own: forked workers inherit the handlers, and keep quiet */
} running;

static void copy_name(char *dst, size_t cap, const char *src) {
  size_t n = src ? strlen(src) : 0;
  if (n >= cap) n = cap - 1;
  if (n) memcpy(dst, src, n);
  dst[n] = 0;
}

static void on_enter(const theus_pipeline_where *w, void *ud) {
  (void)ud;
  running.code = THEUS_PIPELINE_CODE_LIBRARY;
  copy_name(running.plugin, sizeof running.plugin, w->plugin);
  copy_name(running.process, sizeof running.process, w->process);
  running.local = w->local;
  running.code = (sig_atomic_t)w->code;
}

/* Builds a message from pieces with async-signal-safe code only. */
typedef struct { char buf[1024]; size_t n; } sigmsg;

static void put(sigmsg *m, const char *s) {
  while (s && *s && m->n < sizeof m->buf - 1) m->buf[m->n++] = *s++;
}

/* "plugin X ... in theus_plugin_register" / "process "p" ..." for the record. */
static void put_where(sigmsg *m, const char *verb, const char *what) {
  switch (running.code) {
  case THEUS_PIPELINE_CODE_PLUGIN_LOAD:
    put(m, "plugin "), put(m, running.plugin), put(m, " "), put(m, verb), put(m, what);
    put(m, " while being loaded (in its constructors)");
    break;
  case THEUS_PIPELINE_CODE_PLUGIN_REGISTER:
    put(m, "plugin "), put(m, running.plugin), put(m, " "), put(m, verb), put(m, what);
    put(m, " in " THEUS_PLUGIN_REGISTER_SYMBOL);
    break;
  case THEUS_PIPELINE_CODE_PROCESS:
    if (running.local) {
      put(m, "process \""), put(m, running.process), put(m, "\" "), put(m, verb), put(m, what);
      put(m, " (it runs in theus-run itself: it is not parallel, or there are no workers)");
    } else {
      put(m, verb), put(m, what), put(m, " while process \""), put(m, running.process);
      put(m, "\" ran in the workers (so in libtheus, theus-run or a plugin's reducer)");
    }
    break;
  default: put(m, verb), put(m, what), put(m, " outside plugin code (a bug in libtheus or theus-run)");
  }
}

static const char *signame(int sig) {
  switch (sig) {
  case SIGSEGV: return "SIGSEGV";
  case SIGBUS: return "SIGBUS";
  case SIGFPE: return "SIGFPE";
  case SIGILL: return "SIGILL";
  case SIGABRT: return "SIGABRT";
  default: return "a signal";
  }
}

static void on_crash(int sig) {
  if (getpid() == running.pid) {
    sigmsg m = {.n = 0};
    put(&m, running.tty ? "\r\033[K" : "");
    put(&m, "theus-run: ");
    put_where(&m, "crashed with ", signame(sig));
    put(&m, "\n");
    ssize_t w = write(STDERR_FILENO, m.buf, m.n);
    (void)w;
  }
  /* SA_RESETHAND restored the default action; the signal is blocked in here,
   * so it is delivered again as soon as the handler returns (a fault would
   * also repeat): the process dies by it, with a core dump where enabled. */
  raise(sig);
}

/* exit() called by plugin code (theus-run itself only returns from main with
 * the record back at LIBRARY): named, and mapped to EXIT_PLUGIN. */
static void on_exit_hook(int status, void *ud) {
  (void)ud;
  if (getpid() != running.pid || running.code == THEUS_PIPELINE_CODE_LIBRARY) return;
  sigmsg m = {.n = 0};
  put(&m, "theus-run: ");
  char what[32];
  snprintf(what, sizeof what, "exit(%d)", status);
  put_where(&m, "called ", what);
  put(&m, "; theus-run exits with 4\n");
  ssize_t w = write(STDERR_FILENO, m.buf, m.n);
  (void)w;
  fflush(stdout);
  _exit(EXIT_PLUGIN);
}

static void install_crash_reports(void) {
  static char altstack[64 * 1024]; /* a stack overflow must still print */
  running.pid = getpid();
  running.tty = isatty(STDERR_FILENO);
  stack_t ss = {.ss_sp = altstack, .ss_size = sizeof altstack};
  sigaltstack(&ss, NULL);
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_crash;
  sa.sa_flags = SA_ONSTACK | SA_RESETHAND;
  sigemptyset(&sa.sa_mask);
  static const int sigs[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT};
  for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) sigaction(sigs[i], &sa, NULL);
  on_exit(on_exit_hook, NULL);
}

/* Under --mpi only rank 0 prints messages (every rank meets the same ones). */
static bool silent;

/* Prints "theus-run: msg". Library messages name the API calls behind the
 * options; theus-run's users know the options, so those names become flags. */
static void say(const char *msg) {
  if (silent) return;
  static const struct {
    const char *call, *flag;
  } words[] = {{"theus_pipeline_set", "--set"}, {"theus_pipeline_add_plugin", "--plugin"}};
  flockfile(stderr); /* whole, even while workers' lines are forwarded */
  const char *start = msg;
  fputs("theus-run: ", stderr);
  while (*msg) {
    size_t i = 0, n = 0;
    while (i < sizeof words / sizeof words[0] && strncmp(msg, words[i].call, n = strlen(words[i].call)))
      i++;
    if (i < sizeof words / sizeof words[0]) {
      fputs(words[i].flag, stderr);
      msg += n;
    } else {
      fputc(*msg++, stderr);
    }
  }
  /* a hint naming a pipeline field gets the flag that sets it from here */
  static const struct {
    const char *field, *flag;
  } hints[] = {{"{\"single_limit\": \"", "--arena-single-limit"}, {"{\"budget\": \"", "--arena-budget"}};
  for (size_t i = 0; i < sizeof hints / sizeof hints[0]; i++) {
    const char *h = strstr(start, hints[i].field);
    if (!h) continue;
    h += strlen(hints[i].field);
    fprintf(stderr, " (or run theus-run with %s %.*s)", hints[i].flag, (int)strcspn(h, "\""), h);
  }
  fputc('\n', stderr);
  funlockfile(stderr);
}

static int usage_error(const char *fmt, const char *arg) {
  char msg[1280];
  snprintf(msg, sizeof msg, fmt, arg);
  say(msg);
  fprintf(stderr, "Try 'theus-run --help'.\n");
  return EXIT_USAGE;
}

/* --state-out/--trace: refused before anything runs when the file could not
 * be written at the end (a directory, no permission, no such directory),
 * rather than after the whole run. Creates nothing. -1 if fine. */
static int check_writable(const char *flag, const char *file) {
  if (!file || !strcmp(file, "-")) return -1;
  struct stat st;
  const char *why = NULL;
  if (stat(file, &st) == 0) {
    if (S_ISDIR(st.st_mode)) why = "it is a directory";
    else if (access(file, W_OK)) why = strerror(errno);
  } else if (errno == ENOENT) {
    char *dir = strdup(file);
    if (!dir) return usage_error("%s", "out of memory");
    char *slash = strrchr(dir, '/');
    const char *d = !slash ? "." : slash == dir ? "/" : (*slash = '\0', dir);
    if (access(d, W_OK | X_OK)) why = strerror(errno);
    free(dir);
  } else {
    why = strerror(errno);
  }
  if (!why) return -1;
  char msg[1200];
  snprintf(msg, sizeof msg, "%s %s: cannot write there (%s); nothing ran", flag, file, why);
  return usage_error("%s", msg);
}

static int out_of_memory(void) {
  say("out of memory");
  return EXIT_ENV;
}

/* --arena-*: a size with a unit, through the library's one parser. Returns
 * -1 to continue, or an exit code. */
static int parse_size_flag(const char *flag, const char *arg, uint64_t min, uint64_t *out) {
  char err[400], msg[600];
  if (theus_size_parse(arg, out, err, sizeof err)) {
    snprintf(msg, sizeof msg, "%s: %s", flag, err);
    return usage_error("%s", msg);
  }
  if (*out < min) {
    snprintf(msg, sizeof msg, "%s must be at least %llu bytes, not '%s'", flag, (unsigned long long)min, arg);
    return usage_error("%s", msg);
  }
  return -1;
}

static int push(const char ***v, size_t *n, const char *s) {
  const char **nv = realloc(*v, (*n + 1) * sizeof *nv);
  if (!nv) return -1;
  nv[(*n)++] = s;
  *v = nv;
  return 0;
}

/* Returns -1 to continue, or an exit code. */
static int parse_args(int argc, char **argv, options *o) {
  static const struct option longs[] = {
      {"plugin", required_argument, 0, 'p'}, {"workers", required_argument, 0, 'w'},
      {"set", required_argument, 0, 's'},    {"state-out", required_argument, 0, 'o'},
      {"stats", no_argument, 0, 'S'},        {"trace", required_argument, 0, 't'},
      {"quiet", no_argument, 0, 'q'},        {"help", no_argument, 0, 'h'},
      {"version", no_argument, 0, 'V'},      {"arena-budget", required_argument, 0, 'B'},
      {"arena-single-limit", required_argument, 0, 'L'}, {"ledger", required_argument, 0, 'l'},
      {"ledger-fsync", no_argument, 0, 'F'},  {"replay", required_argument, 0, 'r'},
      {"memo", no_argument, 0, 'E'}, {"mpi", no_argument, 0, 'M'},
      {0, 0, 0, 0}};
  int c;
  char *end;
  opterr = 0;
  while ((c = getopt_long(argc, argv, "+qh", longs, NULL)) != -1) {
    switch (c) {
    case 'p': if (push(&o->plugins, &o->nplugins, optarg)) return out_of_memory(); break;
    case 's': if (push(&o->sets, &o->nsets, optarg)) return out_of_memory(); break;
    case 'w': {
      errno = 0;
      long w = strtol(optarg, &end, 10);
      if (*end || !*optarg || errno == ERANGE || w < -1 || w > (long)THEUS_POOL_MAX_WORKERS) {
        char msg[300];
        snprintf(msg, sizeof msg, "--workers wants an integer from -1 to %u (-1 no pool, 0 one per usable CPU; %u is the "
                 "pool's limit, THEUS_POOL_MAX_WORKERS), not '%%s'", THEUS_POOL_MAX_WORKERS, THEUS_POOL_MAX_WORKERS);
        return usage_error(msg, optarg);
      }
      o->workers = (int)w;
      break;
    }
    case 'B':
      if ((c = parse_size_flag("--arena-budget", optarg, 4096, &o->arena_budget)) >= 0) return c;
      break;
    case 'L':
      if ((c = parse_size_flag("--arena-single-limit", optarg, 1, &o->arena_single)) >= 0) return c;
      break;
    case 'o': o->state_out = optarg; break;
    case 't': o->trace_out = optarg; break;
    case 'l': o->ledger = optarg; break;
    case 'F': o->ledger_fsync = true; break;
    case 'r': o->replay = optarg; break;
    case 'E': o->memo = true; break;
    case 'S': o->stats = true; break;
    case 'q': o->quiet = true; break;
    case 'M': o->mpi = true; break;
    case 'h': fputs(usage, stdout); return 0;
    case 'V': printf("theus-run %s (libtheus %s)\n", THEUS_VERSION_STRING, theus_version_string()); return 0;
    default: return usage_error("unknown or incomplete option '%s'", argv[optind - 1]);
    }
  }
  if (optind != argc - 1)
    return usage_error("%s", optind >= argc ? "no pipeline file given" : "give exactly one pipeline file");
  o->pipeline = argv[optind];
  if ((c = check_writable("--state-out", o->state_out)) >= 0 || (c = check_writable("--trace", o->trace_out)) >= 0)
    return c;
  return -1;
}

/* --set domain.a.b=VALUE: VALUE as JSON when it parses, else as a string. */
static int apply_sets(theus_pipeline *p, const options *o) {
  for (size_t i = 0; i < o->nsets; i++) {
    const char *eq = strchr(o->sets[i], '=');
    if (!eq) return usage_error("--set wants domain.path=value, not '%s'", o->sets[i]);
    char *path = strndup(o->sets[i], (size_t)(eq - o->sets[i]));
    json_t *v = json_loads(eq + 1, JSON_DECODE_ANY, NULL);
    if (!v) v = json_string(eq + 1);
    int rc = path && v ? theus_pipeline_set(p, path, v) : THEUS_ENOMEM;
    free(path);
    if (rc == THEUS_ENOMEM) return out_of_memory();
    if (rc) return usage_error("%s", theus_pipeline_errmsg(p));
  }
  return 0;
}

static int write_json(const char *file, const json_t *v) {
  FILE *f = strcmp(file, "-") ? fopen(file, "w") : stdout;
  int rc = f ? json_dumpf(v, f, JSON_INDENT(2)) : -1;
  if (f) rc |= fputc('\n', f) == EOF;
  if (f && f != stdout) rc |= fclose(f);
  if (rc) fprintf(stderr, "theus-run: cannot write %s\n", file);
  return rc ? EXIT_ENV : 0;
}

/* Final state, stats and trace: written whether or not a step failed, since
 * that is when they are most useful. */
static int outputs(theus_engine *e, theus_pipeline *p, const options *o, trace_log *tr, double elapsed,
                   const cli_mpi *m) {
  int rc = 0;
  theus_snapshot *snap = NULL;
  if (theus_engine_snapshot(e, &snap) == 0) {
    const json_t *dom = theus_snapshot_domain(snap);
    rc |= write_json("-", dom);
    if (o->state_out) rc |= write_json(o->state_out, dom);
    theus_snapshot_release(snap);
  } else {
    fprintf(stderr, "theus-run: cannot read the final state: %s\n", theus_engine_errmsg(e));
    rc = 1;
  }
  if (o->stats) {
    json_t *st = theus_engine_stats(e);
    json_t *cl = st ? cli_mpi_stats(m) : NULL;
    if (cl) json_object_set_new(st, "cluster", cl);
    if (!st || json_object_set_new(st, "pipeline", json_pack("{s:I, s:f}", "ops", (json_int_t)theus_pipeline_ops(p),
                                                            "elapsed_s", elapsed)) ||
        json_dumpf(st, stderr, JSON_INDENT(2))) {
      fprintf(stderr, "theus-run: cannot print the stats (out of memory)\n");
      rc = 1;
    }
    fputc('\n', stderr);
    json_decref(st);
  }
  if (o->trace_out && cli_trace_write(tr, o->trace_out)) {
    fprintf(stderr, "theus-run: cannot write the trace to %s\n", o->trace_out);
    rc = 1;
  }
  return rc ? EXIT_ENV : 0;
}

static int run(const options *o, cli_mpi *m) {
  theus_pipeline *p = NULL;
  theus_engine *e = NULL;
  trace_log tr;
  replay rp = {0};
  cli_trace_init(&tr);
  int rc = theus_pipeline_load(o->pipeline, &p);
  if (rc) {
    say(p ? theus_pipeline_errmsg(p) : theus_strerror(rc));
    theus_pipeline_close(p);
    return rc == THEUS_ENOMEM ? EXIT_ENV : EXIT_USAGE;
  }
  theus_pipeline_on_enter(p, on_enter, NULL);
  g_pipeline = p;
  if (g_signal) theus_pipeline_cancel(p);
  int code = 0;
  if (o->replay && cli_replay_open(&rp, o->replay, p)) {
    say(rp.msg);
    code = EXIT_USAGE;
  }
  for (size_t i = 0; i < o->nplugins && !code; i++)
    if (theus_pipeline_add_plugin(p, o->plugins[i])) code = out_of_memory();
  if (!code) code = apply_sets(p, o);
  theus_engine_config cfg;
  theus_engine_config_init(&cfg);
  cli_progress pg;
  cli_progress_init(&pg);
  cfg.output_fn = cli_progress_line; /* THEUS_OUTPUT_FORWARD: never to stdout, never over the progress line */
  cfg.output_ud = &pg;
  cfg.workers = o->workers != -2 ? o->workers
              : theus_pipeline_workers(p) != -2 ? theus_pipeline_workers(p) : cli_mpi_default_workers(m);
  cfg.ledger = o->ledger;
  cfg.ledger_fsync = o->ledger_fsync;
  cfg.memo = o->memo;
  if (o->replay) cfg.on_commit = cli_replay_commit, cfg.on_commit_ud = &rp;
  theus_arena_config ac; /* the file's "arena", then the flags over it */
  theus_pipeline_arena_config(p, &ac);
  if (o->arena_budget) ac.hard_limit = o->arena_budget;
  if (o->arena_single) ac.single_limit = o->arena_single;
  cfg.arena = &ac;
  cli_mpi_prepare(m, p, &cfg);
  const char *msg = NULL;
  if (!code) rc = theus_pipeline_open_engine(p, &cfg, &e);
  if (!code && (rc = cli_mpi_attach(m, e, rc, p, &msg))) {
    say(msg);
    code = rc == THEUS_EPARSE ? EXIT_USAGE : EXIT_ENV; /* engine open, out of memory or budget */
  }
  if (!code) {
    bool tty = isatty(STDERR_FILENO) && !o->quiet && !silent;
    if (tty) theus_pipeline_on_progress(p, cli_progress_step, &pg);
    cli_progress_start(&pg, e, tty); /* no thread, no line, when not a terminal */
    if (o->trace_out) theus_engine_set_trace(e, cli_trace_event, &tr);
    rc = cli_mpi_run(m, p, e);
    theus_engine_set_commit_hook(e, NULL, NULL);
    theus_engine_set_trace(e, NULL, NULL);
    double elapsed = cli_progress_stop(&pg);
    /* --replay: checked against the ledger (under --mpi by rank 0, whose engine commits the versions) */
    int differs = o->replay && !g_signal && !silent && cli_replay_finish(&rp);
    if (differs) say(rp.msg);
    else if (rc) say(theus_pipeline_errmsg(p));
    else if (o->replay && !o->quiet) say(rp.msg);
    if (!rc && tty)
      fprintf(stderr, "theus-run: done, %llu operations, %.2f s\n", (unsigned long long)theus_pipeline_ops(p),
              elapsed);
    code = silent ? 0 : outputs(e, p, o, &tr, elapsed, m);
    if (o->ledger && !silent && theus_engine_ledger_sync(e)) { /* on disk, or said why not */
      say(theus_engine_errmsg(e));
      if (!code) code = EXIT_ENV;
    }
    if (rc || differs) code = EXIT_STEP;
  }
  theus_engine_close(e); /* the last forwarded worker lines arrive until here */
  g_pipeline = NULL;
  theus_pipeline_close(p);
  cli_replay_close(&rp);
  cli_trace_fini(&tr);
  cli_progress_fini(&pg);
  if (g_signal) code = 128 + g_signal; /* 130 SIGINT, 143 SIGTERM */
  return code;
}

int main(int argc, char **argv) {
  install_crash_reports();
  options o = {.workers = -2};
  catch_signals();
  int code = parse_args(argc, argv, &o);
  cli_mpi *m = NULL;
  if (code < 0 && o.mpi && cli_mpi_start(&argc, &argv, &m)) code = EXIT_USAGE;
  silent = cli_mpi_rank(m) != 0;
  if (code < 0) code = run(&o, m);
  cli_mpi_end(m);
  free(o.plugins);
  free(o.sets);
  return code;
}
