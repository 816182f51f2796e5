/* theus-run --replay: checks a run's committed versions against a ledger. */
#ifndef THEUS_CLI_REPLAY_H
#define THEUS_CLI_REPLAY_H

#include <theus/engine.h>
#include <theus/pipeline.h>

typedef struct replay {
  theus_ledger *ledger;
  size_t next;            /* index of the next ledger entry to compare */
  theus_pipeline *p;      /* canceled at the first difference: the run stops */
  int differs;
  char msg[1024];         /* the first difference */
} replay;

/* Reads the ledger at path; 0, or nonzero with the reason in r->msg. */
int cli_replay_open(replay *r, const char *path, theus_pipeline *p);
void cli_replay_close(replay *r);

/* A theus_commit_fn; ud is the replay. */
void cli_replay_commit(const json_t *entry, void *ud);

/* After the run: 0 when every ledger entry was matched, else 1 with the
 * reason in r->msg (a difference, or versions the run did not reach). */
int cli_replay_finish(replay *r);

#endif
