/* workers/: the two sandbox layers (see docs/workers.md, "Threat model").
 *
 * Pool layer, installed once in the fork server before it forks any worker,
 * inherited by every worker: the arena inode loses its write permission, no
 * new privileges, no capabilities, not dumpable, a Landlock domain when the
 * kernel has one, and a seccomp filter that refuses (EPERM) the calls that
 * could reach writable memory behind the arena.
 *
 * Pure layer, installed in a worker before the first task that asks for it
 * (THEUS_TASK_SANDBOX) and never removed: no process creation, exec, network,
 * file writes or signals to other processes. A refused call traps (SIGSYS);
 * the worker reports it as a contract violation naming the call, then dies
 * and is replaced. */
#ifndef THEUS_WORKERS_SANDBOX_H
#define THEUS_WORKERS_SANDBOX_H

#include <stddef.h>
#include <stdint.h>

/* The pool layer, for the calling process and its future children. arena_fd
 * may be -1. [win_base, win_base + win_span) is the address range reserved
 * for write windows (win_span a power of two, win_base aligned to it; 0: none):
 * mremap of any address in it is refused. 0, or -1 with a message in err. */
int theus__sandbox_pool(int arena_fd, uintptr_t win_base, uint64_t win_span, char *err, size_t errlen);

/* The pure layer, for every thread of the calling process. 0, or -1 with a
 * message in err. */
int theus__sandbox_pure(char *err, size_t errlen);

/* Name of a system call the pure layer traps (async-signal-safe: a table
 * filled at install time), or NULL if it is not one of them. */
const char *theus__sandbox_trapped_name(int nr);

#endif
