/* theus-run --replay FILE: the pipeline runs again and every version it
 * commits is compared with the ledger's entry of that version: what ran
 * (op, process, args), what it read (content hashes) and what it wrote (the
 * patch, heavy outputs by content hash). The first difference cancels the run
 * and is reported with its version, process and path. Worker, duration and
 * the version a process ran on are not compared: they vary between runs. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "replay.h"

int cli_replay_open(replay *r, const char *path, theus_pipeline *p) {
  memset(r, 0, sizeof *r);
  r->p = p;
  int rc = theus_ledger_open(path, &r->ledger);
  if (rc)
    snprintf(r->msg, sizeof r->msg, "--replay: %s", r->ledger ? theus_ledger_errmsg(r->ledger) : "out of memory");
  return rc;
}

void cli_replay_close(replay *r) {
  theus_ledger_close(r->ledger);
  r->ledger = NULL;
}

static void show(const json_t *v, char *buf, size_t cap) {
  char *s = v ? json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY | JSON_SORT_KEYS) : NULL;
  snprintf(buf, cap, "%.120s%s", s ? s : "(absent)", s && strlen(s) > 120 ? "..." : "");
  free(s);
}

/* The first path below prefix where a and b differ (objects walked key by
 * key, anything else compared whole); 0 if they are equal. */
static int first_diff(const json_t *a, const json_t *b, const char *prefix, char *path, size_t cap,
                      const json_t **da, const json_t **db) {
  if (a && b && json_equal(a, b))
    return 0;
  if (!a && !b)
    return 0;
  if (json_is_object(a) && json_is_object(b)) {
    const char *k;
    const json_t *v;
    for (int side = 0; side < 2; side++) {
      json_object_foreach((json_t *)(side ? b : a), k, v) {
        char sub[512];
        snprintf(sub, sizeof sub, "%s%s%s", prefix, *prefix ? "." : "", k);
        if (first_diff(json_object_get(a, k), json_object_get(b, k), sub, path, cap, da, db))
          return 1;
      }
    }
  }
  snprintf(path, cap, "%s", *prefix ? prefix : "(the whole value)");
  *da = a;
  *db = b;
  return 1;
}

static const char *what(const json_t *en, char *buf, size_t cap) {
  const char *op = json_string_value(json_object_get(en, "op"));
  const char *proc = json_string_value(json_object_get(en, "process"));
  if (proc)
    snprintf(buf, cap, "process '%s'", proc);
  else
    snprintf(buf, cap, "%s", op ? op : "a commit");
  return buf;
}

static void differ(replay *r, const json_t *want, const json_t *got, const char *field, const char *prefix) {
  char path[512], w[160], g[160], who[160];
  const json_t *da = NULL, *db = NULL;
  if (!first_diff(json_object_get(want, field), json_object_get(got, field), prefix, path, sizeof path, &da, &db))
    return;
  show(da, w, sizeof w);
  show(db, g, sizeof g);
  int n = snprintf(r->msg, sizeof r->msg, "replay differs at version %lld (%s): %s %s: ledger %s, replay %s",
                   json_integer_value(json_object_get(want, "version")), what(want, who, sizeof who), field, path,
                   w, g);
  if (n >= (int)sizeof r->msg) /* a very long path: the message is cut, and says so */
    memcpy(r->msg + sizeof r->msg - 4, "...", 4);
  r->differs = 1;
}

void cli_replay_commit(const json_t *entry, void *ud) {
  replay *r = ud;
  if (r->differs)
    return;
  const json_t *want = theus_ledger_entry(r->ledger, r->next);
  char who[160];
  if (!want) {
    snprintf(r->msg, sizeof r->msg, "replay differs at version %lld (%s): the ledger ends before it (%zu entries)",
             json_integer_value(json_object_get(entry, "version")), what(entry, who, sizeof who),
             theus_ledger_count(r->ledger));
    r->differs = 1;
  }
  static const struct {
    const char *field, *prefix;
  } fields[] = {{"version", ""}, {"op", ""}, {"process", ""}, {"args", "args"},
                {"reads", ""},   {"patch", "domain"}, {"heavy", "heavy"}};
  for (size_t i = 0; i < sizeof fields / sizeof fields[0] && !r->differs; i++)
    differ(r, want, entry, fields[i].field, fields[i].prefix);
  r->next++;
  if (r->differs)
    theus_pipeline_cancel(r->p);
}

int cli_replay_finish(replay *r) {
  if (r->differs)
    return 1;
  size_t n = theus_ledger_count(r->ledger);
  if (r->next < n) {
    char who[160];
    const json_t *want = theus_ledger_entry(r->ledger, r->next);
    snprintf(r->msg, sizeof r->msg, "replay differs at version %lld (%s): the replay ended before it (%zu of %zu "
             "entries matched)", json_integer_value(json_object_get(want, "version")), what(want, who, sizeof who),
             r->next, n);
    return 1;
  }
  snprintf(r->msg, sizeof r->msg, "replay: all %zu committed versions match the ledger%s", n,
           theus_ledger_torn_bytes(r->ledger) ? " (its torn last line was left out)" : "");
  return 0;
}
