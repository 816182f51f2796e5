#!/usr/bin/env python3
"""theus-run --mpi under mpirun on one machine (issue 13, docs/cluster.md).

  check_cluster.py MODE THEUS_RUN MPIRUN SRC BUILD CLUSTER_PLUGIN E2E_PLUGIN CLUSTER_MANY

MODE:
  same   the demo, README, k-means and e2e pipelines give the same outcome
         and final domain under mpirun -n 1/2/3 as without MPI: bit for bit
         when the slice counts agree (--workers n without MPI, 1 per rank with
         -n n), within a stated tolerance when they do not. One MPI job per
         rank count runs them all (CLUSTER_MANY: the library as theus-run
         --mpi uses it, one pipeline after another); theus-run --mpi itself
         runs the failing one under -n 3 (exit status, its error printed
         once).
  ship   heavy arrays cross between nodes once per version per node
         (THEUS_CLUSTER_RANK_IS_NODE=1), a second map ships 0 bytes; on one
         node nothing crosses, the node's ranks get copies.
  claim  dynamic claims (the default): a map whose slice 0 holds its rank
         until the 11 other slices ran gives the same domain as without MPI,
         bit for bit, and the rank that ran slice 0 ran nothing else of it
         (slices_by_rank); static blocks could not run it.
  parallel
         parallel steps: members of parallel processes go round-robin over
         the ranks (each rank's worker leaves a mark naming its rank), an
         effect stays on rank 0, a member whose CAS conflicts runs again on
         rank 0; the final domain equals the run without MPI; rank 0's
         ledger and the ledger without MPI replay each other (moved
         members are the same "execute" entries); a failing member is
         reported once, naming its rank and host.
  run    run steps: those of parallel processes go round-robin over the
         ranks, the round-robin going on from step to step (each rank's
         worker leaves a mark naming its rank; calls_by_rank), an effect
         stays on rank 0; the final domain equals the run without MPI, and
         rank 0's ledger and the ledger without MPI replay each other
         (same versions, same entries); a run step failing on rank 1 is
         reported once, naming its rank and host.
  crash  a worker crash on rank 2 (static blocks) fails the step at rank 0
         naming rank, host and cause, once; every rank exits non-zero; with
         dynamic claims the crash is reported once too, wherever it ran.
  kill   a rank SIGKILLed mid-map (static blocks) ends the job non-zero, the
         output names the rank and its host, rank 0 says what it was waiting
         for.
Every run is bounded (its process group is killed at the deadline), and
after each one no process of the run is left and nothing new is in /dev/shm.
"""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid

MODE, THEUS_RUN, MPIRUN, SRC, BUILD, CPLUGIN, E2E_PLUGIN, MANY = sys.argv[1:9]
TAG = "theus-cluster-" + uuid.uuid4().hex
MPI = [MPIRUN, "--allow-run-as-root", "--oversubscribe", "--mca", "btl_vader_single_copy_mechanism", "none",
       "-x", "THEUS_CLUSTER_TEST_TAG"]
DEADLINE = 120
failures = []


def fail(msg):
    print("FAIL:", msg)
    failures.append(msg)


def tagged():
    """Live processes started by this script's runs (they carry TAG)."""
    pids = []
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == os.getpid():
            continue
        try:
            with open(f"/proc/{d}/environ", "rb") as f:
                if TAG.encode() in f.read():
                    pids.append(int(d))
        except OSError:
            pass
    return pids


def shm():
    try:
        return {n for n in os.listdir("/dev/shm") if any(w in n for w in ("vader", "ompi", "theus", "pmix"))}
    except OSError:
        return set()


def other_mpi_jobs():
    """Names of MPI launchers alive now: after a run is reaped, any is another
    job's (a shared machine), whose segments are its own."""
    names = set()
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/comm") as f:
                    c = f.read().strip()
            except OSError:
                continue
            if c in ("mpirun", "orterun", "orted", "prterun", "prted"):
                names.add(f"{c}[{d}]")
    return names


def run(args, env=None, during=None, deadline=DEADLINE):
    """Runs args in its own process group, bounded; during(popen), if given,
    acts while it runs. Returns (code, out, err)."""
    e = dict(os.environ, THEUS_CLUSTER_TEST_TAG=TAG, **(env or {}))
    if args[0] == MPIRUN:
        # meson sets glibc's MALLOC_PERTURB_, which makes every allocation
        # write its pages: Open MPI's start-up in each rank then costs 2 to 3
        # times as long (measured: 1.9 s against 5.1 s for mpirun -n 3 of a
        # trivial pipeline). The runs without MPI keep it.
        e.pop("MALLOC_PERTURB_", None)
    before = shm()
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=e, start_new_session=True)
    try:
        if during:
            during(p)
        out, err = p.communicate(timeout=deadline)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        fail(f"{' '.join(args)}: still running after {deadline} s (killed)")
    for _ in range(50):  # workers see their rank's death at once; give the kernel a moment
        if not tagged():
            break
        time.sleep(0.1)
    left = tagged()
    if left:
        fail(f"{' '.join(args)}: processes left behind: {left}")
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
    leaked = shm() - before
    if leaked and other_mpi_jobs():
        # another MPI job on this machine made them: what is ours cannot be
        # told apart, so this run's check is skipped (said, not hidden)
        print(f"note: {sorted(leaked)} appeared while {sorted(other_mpi_jobs())} ran; not counted", flush=True)
        leaked = set()
    if leaked:
        fail(f"{' '.join(args)}: left in /dev/shm: {sorted(leaked)}")
    return p.returncode, out.decode(), err.decode()


def mpirun(n, args, env=None, during=None, prog=None, deadline=DEADLINE):
    """theus-run --mpi --quiet ARGS (or PROG ARGS) under mpirun -n n."""
    extra = []
    for k in env or {}:
        extra += ["-x", k]
    return run(MPI + extra + ["-n", str(n)] + (prog or [THEUS_RUN, "--mpi", "--quiet"]) + args, env, during, deadline)


def close(a, b, path="domain"):
    """Equal, numbers within 1e-9 relative or 1e-6 absolute (a sum that
    cancels to about 0 keeps an absolute error of n * eps * mean |x|)."""
    if isinstance(a, bool) or isinstance(b, bool) or not isinstance(a, (int, float)) or not isinstance(b, (int, float)):
        if isinstance(a, dict) and isinstance(b, dict) and a.keys() == b.keys():
            return all(close(a[k], b[k], f"{path}.{k}") for k in a)
        if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
            return all(close(x, y, f"{path}[{i}]") for i, (x, y) in enumerate(zip(a, b)))
        if a != b:
            print(f"  {path}: {a!r} != {b!r}")
        return a == b
    ok = abs(a - b) <= max(1e-6, 1e-9 * max(abs(a), abs(b)))
    if not ok:
        print(f"  {path}: {a!r} vs {b!r}")
    return ok


def pipelines():
    """(name, plugin or None, path); the last one fails (its budget)."""
    e2e = os.path.join(SRC, "tests", "e2e", "pipelines")
    return [
        ("demo", None, os.path.join(BUILD, "examples", "pipelines", "demo.json")),
        ("readme", None, os.path.join(BUILD, "examples", "pipelines", "readme.json")),
        ("kmeans", None, os.path.join(BUILD, "examples", "kmeans", "kmeans.json")),
        ("steps", E2E_PLUGIN, os.path.join(e2e, "steps.json")),
        ("ffi", E2E_PLUGIN, os.path.join(e2e, "ffi.json")),
        ("trace", E2E_PLUGIN, os.path.join(e2e, "trace.json")),
        ("vector", None, os.path.join(e2e, "vector.json")),
        ("loop (fails: budget)", None, os.path.join(e2e, "loop.json")),
    ]


def many(n, pipes):
    """Every pipeline of pipes in one MPI job of n ranks (CLUSTER_MANY, one
    worker per rank): {index: (code, final domain as theus-run prints it)},
    or None if the job failed."""
    code, out, err = mpirun(n, [path + ("," + plug if plug else "") for _, plug, path in pipes], prog=[MANY],
                            deadline=DEADLINE * 3)
    parts = re.split(r"^=== (\d+) (-?\d+)\n", out, flags=re.M)
    got = {int(parts[i]): (int(parts[i + 1]), parts[i + 2]) for i in range(1, len(parts) - 2, 3)}
    if code or len(got) != len(pipes):
        fail(f"cluster_many under mpirun -n {n}: exit {code}, {len(got)} of {len(pipes)} pipelines: {err[-800:]}")
        return None
    return got


def mode_same():
    pipes = pipelines()
    for n in (1, 2, 3):
        got = many(n, pipes)
        if got is None:
            continue
        if n == 3:
            default_slices(got[0][1])
        for i, (name, plug, path) in enumerate(pipes):
            base = run([THEUS_RUN, "--quiet", "--workers", str(n)] + (["--plugin", plug] if plug else []) + [path])
            what = f"{name}, mpirun -n {n}"
            rc, dom = got[i]
            if (rc != 0) != (base[0] != 0) or base[0] not in (0, 1):
                fail(f"{what}: code {rc}, without MPI exit {base[0]}: {base[2][-600:]}")
                continue
            if dom != base[1]:
                fail(f"{what}: the final domain differs from the run without MPI (same slices: must be identical)")
            print(f"ok {what}: code {rc}, {'identical domain' if dom == base[1] else 'differs'}")
    # theus-run --mpi itself: the failing pipeline's exit status and its error printed once (by rank 0 of 3)
    name, plug, path = pipes[-1]
    base = run([THEUS_RUN, "--quiet", "--workers", "3", path])
    line = base[2].strip().splitlines()[-1] if base[2].strip() else "(no message)"
    got = mpirun(3, ["--workers", "1", path])
    what = f"{name}, theus-run --mpi under mpirun -n 3"
    if got[0] != base[0] or not base[0] or got[1] != base[1] or got[2].count(line) != 1:
        fail(f"{what}: exit {got[0]} (without MPI {base[0]}), the error {line!r} must be printed once: {got[2]}")
    else:
        print(f"ok {what}: exit {got[0]}, identical domain, the error printed once")


def default_slices(got):
    """The demo under -n 3 with one worker per rank (the cluster's default:
    two slices per worker over all ranks, 6) against the run without MPI on
    2 workers (4 slices): floats may associate differently."""
    demo = [os.path.join(BUILD, "examples", "pipelines", "demo.json")]
    base = run([THEUS_RUN, "--quiet", "--workers", "2"] + demo)
    if base[0]:
        fail(f"demo without MPI: exit {base[0]}: {base[2][-600:]}")
    elif not close(json.loads(base[1]), json.loads(got)):
        fail("demo with default slices: the domain is not within the tolerance")
    else:
        print("ok demo, default slices (6 under -n 3, 4 without MPI): within the tolerance")


def stats_of(err):
    start = err.index("{")
    return json.loads(err[start:])


def mode_ship():
    pipe = os.path.join(SRC, "tests", "cluster", "pipelines", "twice.json")
    nbytes = 131072 * 8
    for n, alone, nodes in ((3, "1", 3), (3, "0", 1), (2, "1", 2)):
        code, out, err = mpirun(n, ["--plugin", CPLUGIN, "--workers", "1", "--stats", pipe],
                                {"THEUS_CLUSTER_RANK_IS_NODE": alone})
        what = f"twice.json, -n {n}, THEUS_CLUSTER_RANK_IS_NODE={alone}"
        if code:
            fail(f"{what}: exit {code}: {err[-800:]}")
            continue
        st = stats_of(err)["cluster"]
        dom = json.loads(out)
        want = {"ranks": n, "nodes": nodes, "maps": 2, "bytes_shipped": nbytes * (nodes - 1),
                "arrays_shipped": nodes - 1, "bytes_node_copied": nbytes * (n - nodes)}
        bad = {k: (st.get(k), v) for k, v in want.items() if st.get(k) != v}
        if bad:
            fail(f"{what}: stats (got, want): {bad}")
        total = 131072 * 131071 / 2
        if dom.get("first") != total or abs(sum(dom.get("parts", [])) - total) > 0 or len(dom.get("parts", [])) != 6:
            fail(f"{what}: wrong results {dom}")
        print(f"ok {what}: {st}")


def mpirun_marked(n, pipe):
    """theus-run --mpi --stats PIPE under mpirun -n n with one worker per rank,
    each worker leaving a mark in a temporary directory (the cluster plugin's
    THEUS_CLUSTER_TEST_MARK): (exit code, stdout, stderr, the marks left)."""
    import tempfile
    with tempfile.TemporaryDirectory() as marks:
        code, out, err = mpirun(n, ["--plugin", CPLUGIN, "--workers", "1", "--stats", pipe],
                                {"THEUS_CLUSTER_TEST_MARK": marks})
        return code, out, err, sorted(os.listdir(marks))


def run_local(name, pipe, workers):
    """theus-run PIPE without MPI: its stdout, or None (failed, said why)."""
    code, out, err = run([THEUS_RUN, "--quiet", "--plugin", CPLUGIN, "--workers", str(workers), pipe])
    if code:
        fail(f"{name} without MPI: exit {code}: {err[-800:]}")
        return None
    return out


def mode_claim():
    pipe = os.path.join(SRC, "tests", "cluster", "pipelines", "uneven.json")
    base = run_local("uneven.json", pipe, 3)  # no marks: no hold
    if base is None:
        return
    for n in (2, 3):
        code, out, err, _ = mpirun_marked(n, pipe)
        what = f"uneven.json, mpirun -n {n}"
        if code:
            fail(f"{what}: exit {code}: {err[-800:]}")
            continue
        if out != base:
            fail(f"{what}: the final domain differs from the run without MPI (same slices: must be identical)")
        st = stats_of(err)["cluster"]
        by_rank = st["slices_by_rank"]
        # the second map (even slices) is spread too: slices_by_rank adds both maps
        if st["claim"] != "dynamic" or st["maps_dynamic"] != 2 or sum(by_rank) != 24 or len(by_rank) != n:
            fail(f"{what}: stats {st}")
        print(f"ok {what}: identical domain, {st}")
    # the first map alone: whoever ran slice 0 ran nothing else
    one = os.path.join(SRC, "tests", "cluster", "pipelines", "hold.json")
    code, out, err, _ = mpirun_marked(3, one)
    if code:
        fail(f"hold.json: exit {code}: {err[-800:]}")
        return
    by_rank = stats_of(err)["cluster"]["slices_by_rank"]
    # the first claim takes slice 0, whose rank then waits for the 11 others:
    # that rank ran exactly one (how the other two shared 11 depends on timing)
    if 1 not in by_rank or sum(by_rank) != 12:
        fail(f"hold.json: slices by rank {by_rank}: one rank must have run slice 0 alone, the others the 11 others")
    else:
        print(f"ok hold.json, mpirun -n 3: slices by rank {by_rank}")


def spread_run(name, movable, exact, rerun=None):
    """Runs tests/cluster/pipelines/NAME without MPI and under mpirun -n 2 and
    -n 3 (one worker per rank): the same final domain (exact: byte for byte;
    else key order aside, as a local (effect) job commits from the engine's
    executor thread whenever it ends, without MPI too); the k-th movable call
    of the run (run steps and parallel members alike, in the order they run)
    ran on rank k mod n and note (an effect) on rank 0, as the marks each
    worker leaves say; calls_* in the stats agree; calls_rerun is rerun(n)."""
    pipe = os.path.join(SRC, "tests", "cluster", "pipelines", name)
    base = run_local(name, pipe, 2)
    if base is None:
        return
    for n in (2, 3):
        code, out, err, left = mpirun_marked(n, pipe)
        what = f"{name}, mpirun -n {n}"
        if code:
            fail(f"{what}: exit {code}: {err[-800:]}")
            continue
        if (out != base) if exact else (json.loads(out) != json.loads(base)):
            fail(f"{what}: the final domain differs from the run without MPI:\n{out}\n{base}")
        want = {f"{i % n}-put_sq-{k}-0" for i, (p, k) in enumerate(movable) if p == "put_sq"} | {"0-note-note-0"}
        if set(left) != want:
            fail(f"{what}: calls ran on the wrong ranks: marks {left}, expected {sorted(want)}")
        st = stats_of(err)["cluster"]
        by_rank = [0] * n
        for i, _ in enumerate(movable):
            by_rank[i % n] += 1
        by_rank[0] += 1  # note
        want_rerun = rerun(n) if rerun else 0
        if (st["calls_by_rank"] != by_rank or st["calls_rerun"] != want_rerun or st["calls_local"] != by_rank[0]
                or st["calls_remote"] != sum(by_rank[1:])):
            fail(f"{what}: stats {st}, expected calls_by_rank {by_rank}, calls_rerun {want_rerun}")
        print(f"ok {what}: same domain, marks {left}, calls_by_rank {st['calls_by_rank']}, rerun {st['calls_rerun']}")


def fails_once(name, where):
    """NAME fails under mpirun -n 3 as without MPI (exit 1, same domain), its
    failing call, at `where` and run on rank 1, reported once by rank 0."""
    pipe = os.path.join(SRC, "tests", "cluster", "pipelines", name)
    base = run([THEUS_RUN, "--quiet", "--plugin", CPLUGIN, "--workers", "2", pipe])
    code, out, err = mpirun(3, ["--plugin", CPLUGIN, "--workers", "1", pipe])
    line = f"{name}:{where} (run \"fail_if\") failed: process failed: rank 1 (host {socket.gethostname()}): "
    if code == 0 or base[0] != 1 or err.count(line) != 1 or err.count(f"{name}:") != 1 or out != base[1]:
        fail(f"{name}: exit {code} (without MPI {base[0]}), the failure must be printed once naming rank 1: {err}")
    else:
        print(f"ok {name}, mpirun -n 3: the failing call reported once, by rank 0, naming rank 1")


def mode_parallel():
    # the movable members in the order they run (note is an effect: rank 0)
    movable = [("put_sq", "a"), ("put_sq", "b"), ("put_sq", "c"), ("bump", 1), ("bump", 2), ("put_sq", "d"),
               ("put_sq", "e"), ("put_sq", "f"), ("put_sq", "g")]
    # the second bump's CAS conflicts with the first's where it is moved
    spread_run("spread.json", movable, False, lambda n: 1 if movable.index(("bump", 2)) % n else 0)
    # rank 0's ledger records moved members as the run without MPI does: each replays the other
    ledgers_replay(os.path.join(SRC, "tests", "cluster", "pipelines", "ledger.json"), 3)
    fails_once("spread_fail.json", "6:7: step steps[0].parallel[1]")


def ledgers_replay(pipe, n):
    """The ledger of a run without MPI replays under mpirun -n n and rank 0's
    ledger replays without MPI: same versions, same entries."""
    import tempfile
    name = os.path.basename(pipe)
    with tempfile.TemporaryDirectory() as d:
        plain, spread = os.path.join(d, "plain.jsonl"), os.path.join(d, "mpi.jsonl")
        base = run([THEUS_RUN, "--quiet", "--plugin", CPLUGIN, "--workers", "2", "--ledger", plain, pipe])
        got = mpirun(n, ["--plugin", CPLUGIN, "--workers", "1", "--replay", plain, pipe])
        mine = mpirun(n, ["--plugin", CPLUGIN, "--workers", "1", "--ledger", spread, pipe])
        back = run([THEUS_RUN, "--quiet", "--plugin", CPLUGIN, "--workers", "2", "--replay", spread, pipe])
    if base[0] or got[0] or mine[0] or back[0] or got[1] != base[1]:
        fail(f"{name}: exits {base[0]} (ledger), {got[0]} (mpirun --replay), {mine[0]} (mpirun --ledger), "
             f"{back[0]} (--replay of it): {got[2][-600:]} {back[2][-600:]}")
    else:
        print(f"ok {name}, mpirun -n {n}: rank 0's ledger and the ledger without MPI replay each other")


def mode_run():
    # the movable calls in the order they run, run steps and parallel members alike (note is an effect: rank 0)
    movable = [("put_sq", "a"), ("put_sq", "b"), ("bump", 1), ("put_sq", "c"), ("put_sq", "d"), ("put_sq", "e"),
               ("bump", 2), ("put_sq", "f"), ("put_sq", "g")]
    spread_run("runs.json", movable, True)
    fails_once("runs_fail.json", "5:5: step steps[1]")
    ledgers_replay(os.path.join(SRC, "tests", "cluster", "pipelines", "runs.json"), 3)


def mode_crash():
    pipe = os.path.join(SRC, "tests", "cluster", "pipelines", "crash.json")
    code, out, err = mpirun(3, ["--plugin", CPLUGIN, "--workers", "1", pipe],
                            {"THEUS_CLUSTER_RANK_IS_NODE": "1", "THEUS_CLUSTER_CLAIM": "static"})
    host = socket.gethostname()
    print(err)
    if code == 0:
        fail("crash.json: mpirun exited 0")
    want = f"rank 2 (host {host}"
    if err.count(want) != 1 or "SIGSEGV" not in err or "crash.json:" not in err:
        fail(f"crash.json: stderr must name {want!r}, SIGSEGV and the pipeline position once: {err}")
    if out.strip() and json.loads(out).get("total") is not None:
        fail("crash.json: a failed map committed its result")
    # dynamic claims: the slice runs wherever it was claimed; reported once all the same
    code, out, err = mpirun(3, ["--plugin", CPLUGIN, "--workers", "1", pipe], {"THEUS_CLUSTER_RANK_IS_NODE": "1"})
    print(err)
    if code == 0 or err.count("crash.json:") != 1 or "slice 5/6" not in err or "SIGSEGV" not in err:
        fail(f"crash.json with dynamic claims: exit {code}; stderr must give the failure once: {err}")


def rank_pid(mpirun_pid, rank):
    """The pid of MPI rank `rank` (a child of mpirun), or None."""
    for d in os.listdir("/proc"):
        try:
            with open(f"/proc/{d}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{d}/environ", "rb") as f:
                env = f.read().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue
        if ppid == mpirun_pid and f"OMPI_COMM_WORLD_RANK={rank}".encode() in env:
            return int(d)
    return None


def kill_rank_later(marks, rank):
    """Once slice 2 runs (its mark appears), SIGKILLs rank `rank`."""
    def act(p):
        deadline = time.time() + DEADLINE
        while time.time() < deadline and not os.path.exists(os.path.join(marks, "slice-2")) and p.poll() is None:
            time.sleep(0.1)
        pid = rank_pid(p.pid, rank)
        if pid is None:
            fail(f"no rank {rank} to kill (the slice never started?)")
            return
        print(f"killing rank {rank} (pid {pid}) with SIGKILL")
        os.kill(pid, signal.SIGKILL)
    return act


def mode_kill():
    import tempfile
    pipe = os.path.join(SRC, "tests", "cluster", "pipelines", "kill.json")
    with tempfile.TemporaryDirectory() as marks:
        code, out, err = mpirun(3, ["--plugin", CPLUGIN, "--workers", "1", pipe],
                                {"THEUS_CLUSTER_RANK_IS_NODE": "1", "THEUS_CLUSTER_TEST_MARK": marks,
                                 "THEUS_CLUSTER_CLAIM": "static"},
                                during=kill_rank_later(marks, 1))
    text = out + err
    print(text)
    if code == 0:
        fail("kill.json: mpirun exited 0 after a rank was killed")
    host = socket.gethostname()
    if "rank 1" not in text or host not in text:
        fail(f"kill.json: the output must name rank 1 and its host {host}")
    if "theus-run: rank 0: the MPI runtime ended the job while waiting for the map 'rows_sum' on" not in err:
        fail("kill.json: rank 0 did not say what it was waiting for")


{"same": mode_same, "ship": mode_ship, "claim": mode_claim, "parallel": mode_parallel, "run": mode_run,
 "crash": mode_crash, "kill": mode_kill}[MODE]()
print(f"cluster {MODE}: {len(failures)} failure(s)")
sys.exit(1 if failures else 0)
