"""theus.Engine: the orchestrator (processes, versioned state, heavy arrays,
execution in the worker pool) over libtheus."""
import asyncio
import ctypes
import json
import os
import tempfile
import threading
import traceback
import warnings
import weakref
from ctypes import byref, c_uint64, c_void_p

import numpy as np

from . import _lib, _mem, errors
from ._lib import LIB, decref, from_json, take_json, to_json, cstr
from .arena import arena_config, list_live, stats_dict

THEUS_ETIMEDOUT = -13
THEUS_EPROCESS = -20
_SLICE_MS = 200  # blocking waits are cut into slices so Ctrl-C is seen


def _ms(timeout):
    """Seconds (None = forever) -> int64 milliseconds (-1 = forever, 0 = poll)."""
    if timeout is None:
        return -1
    t = float(timeout)
    if t < 0:
        raise errors.InvalidArgumentError(f"theus: timeout must be >= 0 seconds or None (forever), not {timeout}")
    return int(t * 1000 + 0.999)


def _domain_path(path):
    path = str(path)
    if path == "domain" or path.startswith("domain.") or path.startswith("heavy."):
        return path
    return "domain." + path


class _Core:
    """Owns the C engine. Everything that exposes engine memory (snapshot pins,
    draft arrays) holds a strong reference to it, so theus_engine_close runs
    only once the Engine is closed (or dropped) AND nothing points into its
    arena any more -- or at interpreter exit, whatever is left."""

    def __init__(self, ptr, plugins, pipeline=None):
        self.ptr = ptr
        self.children = {}  # id -> weakref.finalize of snapshots, jobs, readers: released before the engine
        self.callbacks = []  # CFUNCTYPE objects and contract arrays of Python processes
        self.plugins = plugins
        self.pipeline = pipeline
        self.fin = weakref.finalize(self, _owner_only, os.getpid(), _close_engine, ptr, self.children,
                                    self.callbacks, plugins, pipeline)

    def adopt(self, obj, func, *args):
        """Registers obj's release (run when obj dies or before the engine closes)."""
        for k in [k for k, f in self.children.items() if not f.alive]:
            del self.children[k]
        fin = weakref.finalize(obj, _owner_only, os.getpid(), func, *args)
        self.children[id(fin)] = fin
        return fin


def _owner_only(pid, func, *args):
    """Runs a release only in the process that opened the object: a child made
    by os.fork() that exits normally must not stop its parent's pool or free
    arrays in the shared arena."""
    if os.getpid() == pid:
        func(*args)


def _close_engine(ptr, children, callbacks, plugins, pipeline):
    for fin in list(children.values()):
        fin()
    children.clear()
    LIB.theus_engine_close(ptr)
    if pipeline:
        LIB.theus_pipeline_close(pipeline)  # unloads the pipeline's plugins, after the engine
    callbacks.clear()
    del plugins[:]  # ctypes never dlclose()s; the list only keeps them referenced until here


class _Pin:
    """One theus_snapshot: released when the Snapshot is released and its last numpy view is gone."""

    __slots__ = ("ptr", "core", "views", "fin", "__weakref__")

    def __init__(self, core, ptr):
        self.ptr = ptr
        self.core = core
        self.views = _mem.Tracker()
        self.fin = core.adopt(self, LIB.theus_snapshot_release, ptr)

    def release(self):
        self.fin()
        self.core = None

    def heavy(self, key):
        if self.core is None:
            raise errors.ClosedError("theus: the snapshot was released (its engine closed)")
        info = _lib.ArrayInfo()
        rc = LIB.theus_snapshot_heavy(self.ptr, cstr(key, "heavy key"), byref(info))
        if rc:
            raise errors.error_for(rc, f"theus: snapshot of version {LIB.theus_snapshot_version(self.ptr)} has no "
                                       f"heavy array '{key}'" if rc == -17 else LIB.theus_engine_errmsg(
                                           self.core.ptr).decode())
        return _mem.info_array(info, self, self.views)


class Snapshot:
    """A pinned version: ``version``, ``domain``, ``get(path)``, ``heavy[key]``.

    Use it as a context manager. Its heavy arrays are read-only numpy views
    that stay valid while they live, even after the snapshot is released (the
    C snapshot is released when both happened)."""

    def __init__(self, pin):
        self._pin = pin
        self.version = LIB.theus_snapshot_version(pin.ptr)

    def _p(self):
        pin = self._pin
        if pin is None or pin.core is None:
            raise errors.ClosedError(f"theus: snapshot of version {self.version} was released")
        return pin

    @property
    def domain(self):
        return from_json(LIB.theus_snapshot_domain(self._p().ptr))

    def get(self, path, default=None):
        path = _domain_path(path)
        if path.startswith("heavy."):
            try:
                return self._p().heavy(path[6:])
            except errors.NotFoundError:
                return default
        if path == "domain":
            return self.domain
        ptr = LIB.theus_snapshot_get(self._p().ptr, cstr(path, "path"))
        return default if not ptr else from_json(ptr)

    @property
    def heavy(self):
        return _HeavyView(self._p())

    def release(self):
        pin, self._pin = self._pin, None
        if pin is not None and len(pin.views) == 0:
            pin.release()

    @property
    def released(self):
        return self._pin is None or self._pin.core is None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()

    def __repr__(self):
        return f"<theus.Snapshot version {self.version}{' released' if self.released else ''}>"


class _HeavyView:
    """snapshot.heavy[key] / .get(key)."""

    def __init__(self, pin):
        self._pin = pin

    def __getitem__(self, key):
        return self._pin.heavy(key)

    def get(self, key, default=None):
        try:
            return self._pin.heavy(key)
        except errors.NotFoundError:
            return default

    def __contains__(self, key):
        return self.get(key) is not None


class DraftArray(np.ndarray):
    """A numpy array over an unpublished heavy draft. Writable until the draft
    is published by compare_and_swap; then it and every view derived from it
    by numpy slicing/indexing become read-only (writes raise ValueError:
    assignment destination is read-only). Views made with np.asarray(),
    memoryview() or ctypes escape this tracking: do not write through them
    after publishing."""

    def __array_finalize__(self, obj):
        d = getattr(obj, "_theus_draft", None)
        self._theus_draft = None
        if d is not None:
            addr = self.__array_interface__["data"][0]
            if d.lo <= addr < d.hi:
                self._theus_draft = d
                d.track(self)

    @property
    def published(self):
        d = self._theus_draft
        return d is not None and d.published


class _Draft:
    __slots__ = ("key", "lo", "hi", "views", "mem", "root", "published", "__weakref__")

    def __init__(self, key, lo, nbytes):
        self.key, self.lo, self.hi = key, lo, lo + nbytes
        self.views = []  # weakrefs to DraftArray views (ndarrays are unhashable: no WeakSet)
        self.mem = None
        self.root = None
        self.published = False

    def track(self, arr):
        if len(self.views) > 64:
            self.views = [r for r in self.views if r() is not None]
        self.views.append(weakref.ref(arr))

    def seal(self, pin):
        """Published: read-only from now on, and pinned by a snapshot holding the version."""
        self.published = True
        root = self.root() if self.root is not None else None
        for v in [r() for r in self.views] + [root]:
            if v is not None:
                v.flags.writeable = False
        mem = self.mem() if self.mem is not None else None
        if mem is not None and pin is not None:
            mem.owner = pin
            pin.views.add(mem)


class _Heavy:
    """engine.heavy: alloc(key, shape, dtype) drafts; engine.heavy[key] reads the current version."""

    def __init__(self, engine):
        self._engine = engine

    def alloc(self, key, shape, dtype=np.float32):
        """A writable numpy array (DraftArray, zero-filled) over a new draft for
        heavy key `key` in the engine's arena, without a copy. Publish it with
        engine.compare_and_swap(engine.state.version, heavy={key: arr})."""
        eng = self._engine
        core = eng._c()
        shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(int(s) for s in shape)
        if not 1 <= len(shape) <= _lib.MAX_DIMS:
            raise errors.InvalidArgumentError(f"theus: heavy arrays have 1 to {_lib.MAX_DIMS} dimensions, "
                                              f"not {len(shape)} (shape {shape})")
        dt = np.dtype(dtype)
        dims = (c_uint64 * len(shape))(*shape)
        data = c_void_p()
        eng._check(LIB.theus_engine_heavy_alloc(core.ptr, cstr(key, "heavy key"), _mem.dtype_code(dt), len(shape),
                                                dims, byref(data)))
        nbytes = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
        d = _Draft(key, data.value, nbytes)
        mem = _mem._Mem(data.value, shape, dt, False, core)
        d.mem = weakref.ref(mem)
        root = np.asarray(mem)
        d.root = weakref.ref(root)
        arr = root.view(DraftArray)
        arr._theus_draft = d
        d.track(arr)
        eng._drafts[key] = d
        return arr

    def discard(self, key):
        """Frees the unpublished draft of key. BusyError while its arrays are alive (delete them first)."""
        eng = self._engine
        core = eng._c()
        d = eng._drafts.get(key)
        if d is not None and d.mem is not None and d.mem() is not None:
            raise errors.BusyError(f"theus: cannot discard the draft of heavy key '{key}': numpy arrays over it are "
                                   "still alive; delete them first (del arr)")
        eng._check(LIB.theus_engine_heavy_discard(core.ptr, cstr(key, "heavy key")))
        eng._drafts.pop(key, None)

    def __getitem__(self, key):
        """Read-only view of key in the current version (pins that version while the view lives)."""
        pin = self._engine._pin()
        try:
            return pin.heavy(key)
        finally:
            if len(pin.views) == 0:
                pin.release()

    def get(self, key, default=None):
        try:
            return self[key]
        except errors.NotFoundError:
            return default


class _State:
    """engine.state: version, domain (the current version's, as Python values)."""

    def __init__(self, engine):
        self._engine = engine

    @property
    def version(self):
        return LIB.theus_engine_version(self._engine._c().ptr)

    @property
    def domain(self):
        with self._engine.snapshot() as s:
            return s.domain

    def __repr__(self):
        return f"<theus state version {self.version}>"


class Context:
    """What a Python process sees: get/set/args/heavy/return_/fail/raise_error.
    Valid only during the call."""

    __slots__ = ("_ptr", "_views", "_args")

    def __init__(self, ptr):
        self._ptr = ptr
        self._views = _mem.Tracker()
        self._args = None

    def _p(self):
        if self._ptr is None:
            raise errors.ClosedError("theus: a process context is only valid during its call")
        return self._ptr

    @property
    def process(self):
        return LIB.theus_ctx_process(self._p()).decode()

    @property
    def worker(self):
        return LIB.theus_ctx_worker(self._p())

    @property
    def canceled(self):
        """True once the job running this process was canceled (Job.cancel): a
        local process cannot be stopped from outside, so a long one checks
        this and returns; whatever it returns then is not committed."""
        return bool(LIB.theus_ctx_canceled(self._p()))

    @property
    def args(self):
        if self._args is None:
            self._args = from_json(LIB.theus_ctx_args(self._p())) or {}
        return self._args

    @property
    def domain(self):
        return _CtxDomain(self)

    def get(self, path, default=None):
        """The value at a domain path ("domain.x" or "x"); undeclared paths fail a pure process."""
        path = _domain_path(path)
        if path.startswith("heavy."):
            return self.heavy.get(path[6:], default)
        ptr = LIB.theus_ctx_get(self._p(), cstr(path, "path"))
        return default if not ptr else from_json(ptr)

    def set(self, path, value):
        """Writes value to a declared output path (merge semantics; None deletes)."""
        rc = LIB.theus_ctx_set(self._p(), cstr(_domain_path(path), "path"), to_json(value))
        if rc:
            raise _Abort(rc)

    def return_(self, value):
        """Sets the process's return value (also done by returning a non-None value)."""
        LIB.theus_ctx_return(self._p(), to_json(value))

    @property
    def heavy(self):
        return _CtxHeavy(self)

    def fail(self, message):
        """Fails the execution with message (raises; nothing is committed)."""
        LIB.theus_ctx_fail(self._p(), b"%s", cstr(str(message), "message"))
        raise _Abort(THEUS_EPROCESS)

    def raise_error(self, error_name, message):
        """Fails with a declared error name (contract `errors`)."""
        rc = LIB.theus_ctx_raise(self._p(), cstr(error_name, "error name"), b"%s", cstr(str(message), "message"))
        raise _Abort(rc or THEUS_EPROCESS)


class _CtxDomain:
    def __init__(self, ctx):
        self._ctx = ctx

    def __getitem__(self, k):
        v = self._ctx.get(k, _MISSING)
        if v is _MISSING:
            raise KeyError(k)
        return v

    def get(self, k, default=None):
        return self._ctx.get(k, default)


_MISSING = object()


class _CtxHeavy:
    def __init__(self, ctx):
        self._ctx = ctx

    def get(self, key, default=None):
        info = _lib.ArrayInfo()
        rc = LIB.theus_ctx_heavy(self._ctx._p(), cstr(key, "heavy key"), byref(info))
        if rc == -17:
            return default
        if rc:
            raise _Abort(rc)
        return _mem.info_array(info, None, self._ctx._views)

    def __getitem__(self, key):
        v = self.get(key, _MISSING)
        if v is _MISSING:
            raise KeyError(f"no heavy array '{key}' in this version")
        return v


class _Abort(Exception):
    """Unwinds a Python process after the C side recorded the failure."""

    def __init__(self, code):
        super().__init__(code)
        self.code = code


_interrupts = threading.local()


def _trampoline(fn, name):
    def call(ctx_ptr):
        ctx = Context(ctx_ptr)
        rc = 0
        try:
            rv = fn(ctx)
            if rv is not None:
                ctx.return_(rv)
        except _Abort as a:
            rc = a.code
        except BaseException as exc:  # noqa: B902 - nothing may escape into C
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                _interrupts.exc = exc
            tb = traceback.extract_tb(exc.__traceback__)
            where = f" (at {os.path.basename(tb[-1].filename)}:{tb[-1].lineno} in {tb[-1].name})" if tb else ""
            last = traceback.format_exception_only(type(exc), exc)[-1].strip()
            LIB.theus_ctx_fail(ctx_ptr, b"%s", f"Python process '{name}' raised {last}{where}".encode(
                "utf-8", "replace"))
            rc = THEUS_EPROCESS
        escaped = len(ctx._views)
        ctx._ptr = None
        if escaped and rc == 0:
            LIB.theus_ctx_fail(ctx_ptr, b"%s", (
                f"Python process '{name}' kept {escaped} ctx.heavy view(s) alive after returning; they are only "
                "valid during the call: copy what you need (np.array(view)) or return a JSON value").encode())
            rc = THEUS_EPROCESS
        return rc

    return _lib.PROCESS_FN(call)


class Job:
    """A background execution (engine.submit). wait(timeout) returns the process's value."""

    def __init__(self, engine, ptr, name):
        self._engine = engine
        self._ptr = ptr
        self.name = name
        self._done = False
        self._result = None
        self._error = None
        self._lock = threading.Lock()  # a release waits for a wait in progress (no use after free)
        self._use = threading.Lock()  # and for a cancel in progress, which never waits for a wait
        self._fin = engine._c().adopt(self, _release_job, ptr, self._lock, self._use)

    def _poll(self, timeout_ms):
        """One theus_job_wait; True when finished (result/error stored)."""
        with self._lock:
            if self._done:
                return True
            if not self._fin.alive:
                raise errors.ClosedError(f"theus: job '{self.name}' was released (its engine closed)")
            res = c_void_p()
            rc = LIB.theus_job_wait(self._ptr, timeout_ms, byref(res))
            if rc == THEUS_ETIMEDOUT and LIB.theus_job_errmsg(self._ptr) == b"":
                return False
            self._done = True
            self.version = LIB.theus_job_version(self._ptr)
            if rc:
                self._error = errors.error_for(rc, LIB.theus_job_errmsg(self._ptr).decode())
            else:
                self._result = take_json(res.value)
            return True

    def _outcome(self):
        if self._error is not None:
            raise self._error
        return self._result

    def done(self):
        return self._poll(0)

    def wait(self, timeout=None):
        """The process's return value; its exception if it failed; TimeoutError if still running at timeout."""
        budget = _ms(timeout)
        while True:
            step = _SLICE_MS if budget < 0 else min(budget, _SLICE_MS)
            if self._poll(step):
                return self._outcome()
            if budget >= 0:
                budget -= step
                if budget <= 0:
                    raise errors.TimeoutError(f"theus: job '{self.name}' still running after {timeout} s")

    def __await__(self):
        return self._wait_async().__await__()

    async def _wait_async(self):
        loop = asyncio.get_running_loop()
        while not await loop.run_in_executor(None, self._poll, _SLICE_MS):
            pass
        return self._outcome()

    def cancel(self):
        """Cancels the job wherever it is: queued, it is dropped; running in a
        worker, the worker is killed and replaced; running locally, ctx.canceled
        turns true. Nothing is committed and wait() raises CanceledError; a job
        that already finished keeps its outcome."""
        with self._use:  # not self._lock: a wait() holds it 200 ms at a time
            if self._fin.alive:
                LIB.theus_job_cancel(self._ptr)

    def release(self):
        """Frees the job (it keeps running and commits if not finished)."""
        self._fin()


def _release_job(ptr, lock, use):
    with lock, use:
        LIB.theus_job_release(ptr)


class Engine:
    """The orchestrator.

    ``Engine(workers=2, plugins=["./my_plugin.so"], budget=..., single_limit=...)``

    workers: pool size (0 = one per usable CPU, -1 = no pool: everything runs
    locally). plugins: shared objects exporting ``theus_plugin_register``;
    loaded with RTLD_GLOBAL before the engine opens so the forked workers have
    their code. budget/single_limit/soft_limit_pct/max_handles: the arena's
    limits (defaults 1 GiB / 100 MiB / 85 % / 2^20). domain: the initial
    domain (a dict). strict: any stale compare_and_swap conflicts (default:
    smart, only if a written path changed). default_timeout: seconds for
    parallel processes that declare none. retention/history/max_retries as in
    theus_engine_config. ledger: a path; every committed version is appended
    to it as a JSON line (docs/ledger.md), on disk at each commit with
    ledger_fsync, else buffered until ledger_sync() or close. memo: memoise
    every pure process (memo_capacity results kept, least recently used
    dropped).
    """

    def __init__(self, workers=0, plugins=(), *, budget=None, single_limit=None, soft_limit_pct=None,
                 max_handles=None, domain=None, strict=False, default_timeout=None, retention=None, history=None,
                 max_retries=None, ledger=None, ledger_fsync=False, memo=False, memo_capacity=None,
                 _pipeline=None):
        self._core = None
        self._drafts = {}
        self._lock = threading.RLock()
        self._pipeline_info = None
        cfg, keep = self._config(workers, budget, single_limit, soft_limit_pct, max_handles, domain, strict,
                                 default_timeout, retention, history, max_retries,
                                 (ledger, ledger_fsync, memo, memo_capacity))
        if _pipeline is not None:
            p, source = _pipeline
            out = c_void_p()
            rc = LIB.theus_pipeline_open_engine(p, byref(cfg), byref(out))
            _free_domain(cfg)
            if rc:
                msg = LIB.theus_pipeline_errmsg(p).decode() or (
                    LIB.theus_engine_errmsg(out).decode() if out.value else "")
                if out.value:
                    LIB.theus_engine_close(out)
                LIB.theus_pipeline_close(p)
                raise errors.error_for(rc, msg)
            self._core = _Core(out.value, [], p)
            self._pipeline_info = source
            self.workers = workers
            return
        libs = [self._load_plugin(path) for path in ([plugins] if isinstance(plugins, (str, os.PathLike))
                                                     else plugins)]
        out = c_void_p()
        rc = LIB.theus_engine_open(byref(cfg), byref(out))
        _free_domain(cfg)
        if rc:
            msg = LIB.theus_engine_errmsg(out).decode() if out.value else LIB.theus_strerror(rc).decode()
            if out.value:
                LIB.theus_engine_close(out)
            raise errors.error_for(rc, f"theus: the engine did not open: {msg}")
        self._core = _Core(out.value, libs)
        self.workers = workers
        for path, lib in zip(plugins if not isinstance(plugins, (str, os.PathLike)) else [plugins], libs):
            reg = lib.theus_plugin_register
            reg.restype = ctypes.c_int
            reg.argtypes = [c_void_p]
            rc = reg(out.value)
            if rc:
                msg = LIB.theus_engine_errmsg(out.value).decode()
                self.close()
                raise errors.error_for(rc, f"theus: plugin {path}: theus_plugin_register failed: {msg}")

    @staticmethod
    def _config(workers, budget, single_limit, soft_limit_pct, max_handles, domain, strict, default_timeout,
                retention, history, max_retries, survive=(None, False, False, None)):
        cfg = _lib.EngineConfig()
        LIB.theus_engine_config_init(byref(cfg))
        cfg.workers = int(workers)
        cfg.strict = 1 if strict else 0
        if retention is not None:
            cfg.retention = int(retention)
        if history is not None:
            cfg.history = int(history)
        if max_retries is not None:
            cfg.max_retries = int(max_retries)
        if default_timeout is not None:
            cfg.default_timeout_ms = _ms(default_timeout)
        acfg = None
        if any(v is not None for v in (budget, single_limit, soft_limit_pct, max_handles)):
            acfg = arena_config(budget, single_limit, soft_limit_pct, max_handles)
            cfg.arena = ctypes.pointer(acfg)
        Engine._survive_config(cfg, *survive)  # checks its arguments before the domain is allocated
        if domain is not None:
            if not isinstance(domain, dict):
                raise errors.InvalidArgumentError("theus: domain must be a dict (the initial domain object)")
            cfg.domain = to_json(domain)
        return cfg, acfg

    @staticmethod
    def _survive_config(cfg, ledger, ledger_fsync, memo, memo_capacity):
        """The ledger and memo fields of cfg (ctypes keeps the path's bytes with
        cfg; the engine copies the path when it opens)."""
        if ledger is not None:
            path = os.fsencode(ledger)
            if not path or b"\0" in path:
                raise errors.InvalidArgumentError(f"theus: ledger must be a file path, not {ledger!r}")
            cfg.ledger = path
        cfg.ledger_fsync = 1 if ledger_fsync else 0
        cfg.memo = 1 if memo else 0
        if memo_capacity is not None:
            if int(memo_capacity) <= 0:
                raise errors.InvalidArgumentError(f"theus: memo_capacity must be positive, not {memo_capacity!r}")
            cfg.memo_capacity = int(memo_capacity)

    @staticmethod
    def _load_plugin(path):
        path = os.fspath(path)
        full = os.path.abspath(path) if os.sep in path or os.path.exists(path) else path
        try:
            lib = ctypes.CDLL(full, mode=ctypes.RTLD_GLOBAL)
        except OSError as exc:
            raise errors.InvalidArgumentError(f"theus: cannot load plugin {path}: {exc}") from None
        if not hasattr(lib, "theus_plugin_register"):
            raise errors.InvalidArgumentError(
                f"theus: plugin {path} exports no theus_plugin_register(theus_engine *); declare it with "
                "THEUS_PLUGIN_EXPORT (see include/theus/pipeline.h)")
        return lib

    # ---- plumbing ----
    def _c(self):
        core = self._core
        if core is None:
            raise errors.ClosedError("theus: the engine is closed")
        return core

    def _check(self, rc):
        if rc:
            exc = errors.error_for(rc, LIB.theus_engine_errmsg(self._core.ptr).decode())
            raise exc

    def _pin(self):
        core = self._c()
        out = c_void_p()
        self._check(LIB.theus_engine_snapshot(core.ptr, byref(out)))
        return _Pin(core, out.value)

    @staticmethod
    def _reraise_interrupt():
        exc = getattr(_interrupts, "exc", None)
        if exc is not None:
            _interrupts.exc = None
            raise exc

    # ---- state ----
    @property
    def state(self):
        return _State(self)

    @property
    def version(self):
        return LIB.theus_engine_version(self._c().ptr)

    @property
    def heavy(self):
        return _Heavy(self)

    @property
    def arena_ptr(self):
        return LIB.theus_engine_arena(self._c().ptr)

    def get(self, path, default=_MISSING):
        """The value at a state path of the current version: "domain.a.b" (or
        "a.b"), or "heavy.key" (a read-only numpy view). NotFoundError if absent
        and no default is given."""
        core = self._c()
        path = _domain_path(path)
        if path.startswith("heavy."):
            arr = self.heavy.get(path[6:])
            if arr is None:
                if default is _MISSING:
                    raise errors.NotFoundError(f"theus: get: no heavy array '{path[6:]}' in version {self.version}")
                return default
            return arr
        if path == "domain":
            return self.state.domain
        ptr = LIB.theus_engine_get(core.ptr, cstr(path, "path"))
        if not ptr:
            if default is not _MISSING:
                return default
            self._check(-17)
        return take_json(ptr)

    def set(self, path, value):
        """Writes value at a domain path as a new version (merge; None deletes). Returns the new version."""
        core = self._c()
        self._check(LIB.theus_engine_set(core.ptr, cstr(_domain_path(path), "path"), to_json(value)))
        return LIB.theus_engine_version(core.ptr)

    def compare_and_swap(self, expected_version, data=None, heavy=None, *, domain=None):
        """Installs version expected+1 if the state is still compatible (smart or strict CAS).

        data (alias domain): an RFC 7386 merge patch of the domain. heavy:
        {key: array} publishes the draft allocated for key (the array returned
        by heavy.alloc, or True); {key: None} removes the binding. Returns the
        new version; ConflictError (with both versions and the path) if lost.
        Published arrays become read-only and stay valid while referenced."""
        core = self._c()
        if data is not None and domain is not None:
            raise errors.InvalidArgumentError("theus: pass the domain patch as data= or domain=, not both")
        patch = data if data is not None else domain
        hp, publish = None, []
        if heavy:
            hp = {}
            for key, val in heavy.items():
                if val is None:
                    hp[key] = None
                    continue
                d = self._drafts.get(key)
                if val is not True:
                    vd = getattr(val, "_theus_draft", None)
                    if vd is not None and vd.key == key and vd.published:
                        raise errors.InvalidArgumentError(
                            f"theus: the draft of '{key}' was already published; allocate a new one with "
                            f"engine.heavy.alloc('{key}', ...) for new data")
                    if vd is None or vd is not d:
                        raise errors.InvalidArgumentError(
                            f"theus: heavy['{key}'] must be the array engine.heavy.alloc('{key}', ...) returned "
                            "(or a view of it), True, or None to unbind; arrays not in the arena cannot be "
                            "published without a copy: allocate with heavy.alloc and fill it")
                hp[key] = True
                if d is not None:
                    publish.append(d)
        jp = to_json(patch) if patch is not None else None
        jh = to_json(hp) if hp is not None else None
        newv = c_uint64()
        try:
            with self._lock:
                rc = LIB.theus_engine_cas(core.ptr, int(expected_version), jp, jh, byref(newv))
                self._check(rc)
                pin = None
                if publish:
                    pin = self._pin()
                for d in publish:
                    self._drafts.pop(d.key, None)
                    d.seal(pin)
                if pin is not None and len(pin.views) == 0:
                    pin.release()
        finally:
            decref(jp)
            decref(jh)
        return newv.value

    cas = compare_and_swap

    def snapshot(self):
        """Pins the current version (a context manager). See Snapshot."""
        return Snapshot(self._pin())

    def wait_version(self, seen=None, timeout=None):
        """Waits until the version differs from seen (default: the current one); returns it.
        TimeoutError after timeout seconds (None = forever)."""
        core = self._c()
        if seen is None:
            seen = LIB.theus_engine_version(core.ptr)
        budget = _ms(timeout)
        now = c_uint64()
        while True:
            step = _SLICE_MS if budget < 0 else min(budget, _SLICE_MS)
            rc = LIB.theus_engine_wait_version(core.ptr, int(seen), step, byref(now))
            if rc != THEUS_ETIMEDOUT:
                self._check(rc)
                return now.value
            if budget >= 0:
                budget -= step
                if budget <= 0:
                    raise errors.TimeoutError(f"theus: version still {seen} after {timeout} s")

    # ---- execution ----
    def execute(self, name, args=None, **kwargs):
        """Runs a process (in the pool if parallel) and commits its outputs; returns its value."""
        core = self._c()
        a = _args(args, kwargs)
        ja = to_json(a) if a else None  # NULL = no arguments: no JSON round trip on the hot path
        res = c_void_p()
        try:
            rc = LIB.theus_engine_execute(core.ptr, cstr(name, "process name"), ja, byref(res))
        finally:
            decref(ja)
        self._reraise_interrupt()
        if rc:
            decref(res.value)
            self._check(rc)
        return take_json(res.value)

    def submit(self, name, args=None, **kwargs):
        """Starts an execution in the background; returns a Job (await it, or job.wait())."""
        core = self._c()
        ja = to_json(_args(args, kwargs))
        job = c_void_p()
        try:
            self._check(LIB.theus_engine_submit(core.ptr, cstr(name, "process name"), ja, byref(job)))
        finally:
            decref(ja)
        return Job(self, job.value, name)

    async def execute_async(self, name, args=None, **kwargs):
        """execute without blocking the event loop (submit + waits in the default executor)."""
        job = self.submit(name, args, **kwargs)
        try:
            return await job._wait_async()
        finally:
            job.release()

    def map(self, name, key, slices=None, reducer="sum", args=None, **kwargs):
        """Runs parallel process name over slices of heavy array key's first
        dimension and combines the results with reducer ("sum", "min", "max",
        "concat" or one a plugin registered). slices defaults to 4 per worker."""
        core = self._c()
        if slices is None:
            n = self.workers if self.workers > 0 else (os.cpu_count() or 1)
            slices = 4 * n
        ja = to_json(_args(args, kwargs))
        res = c_void_p()
        try:
            rc = LIB.theus_engine_map(core.ptr, cstr(name, "process name"), cstr(key, "heavy key"), int(slices),
                                      cstr(reducer, "reducer"), ja, byref(res))
        finally:
            decref(ja)
        if rc:
            decref(res.value)
            self._check(rc)
        return take_json(res.value)

    def stats(self):
        """{"engine": {...}, "arena": {...}, "pool": {...}} counters."""
        return take_json(LIB.theus_engine_stats(self._c().ptr))

    def ledger_sync(self):
        """Writes every buffered ledger line and waits until the file is on
        disk; raises SystemCallError (THEUS_ESYS) naming the file and the reason
        if a ledger write failed, now or earlier (every later commit is then
        refused). Without a ledger: nothing to do."""
        core = self._c()
        self._check(LIB.theus_engine_ledger_sync(core.ptr))

    def arena_stats(self):
        """The engine arena's eight counters."""
        return stats_dict(LIB.theus_engine_arena(self._c().ptr))

    def arena_live(self):
        """[(handle, size), ...] of the engine arena's live arrays."""
        return list_live(LIB.theus_engine_arena(self._c().ptr))

    # ---- Python processes ----
    def process(self, fn=None, *, inputs=(), outputs=(), parallel=False, semantic="effect", errors=(), name=None,
                memo=None):
        """Decorator: registers a Python function as a process that runs
        locally in this interpreter, with the same contract checks as a C
        process. The function gets a Context and may return a JSON value.
        parallel=True is refused: pool workers run C code only."""

        def register(f):
            self.register(f, inputs=inputs, outputs=outputs, parallel=parallel, semantic=semantic,
                          errors=errors, name=name, memo=memo)
            return f

        return register(fn) if fn is not None else register

    def register(self, fn, *, inputs=(), outputs=(), parallel=False, semantic="effect", errors=(), name=None,
                 memo=None):
        """Registers fn as a process (see process()). memo: True memoises this
        pure process (the same declared input values return the cached result
        without running it), False never, None follows the engine's memo."""
        core = self._c()
        pname = name or fn.__name__
        if parallel:
            raise _errors.InvalidArgumentError(
                f"theus: Python process '{pname}' cannot be parallel: pool workers are forked C processes that "
                "do not run Python. Write it as a C process in a plugin: `static int "
                f"{pname}(theus_ctx *ctx) {{ ... }}` using theus_ctx_heavy/theus_ctx_get/theus_ctx_return, "
                "registered from `THEUS_PLUGIN_EXPORT int theus_plugin_register(theus_engine *e)` with "
                f"theus_engine_register(e, &(theus_contract){{.name = \"{pname}\", .fn = {pname}, .inputs = ..., "
                ".parallel = 1}), built as a shared module and loaded with theus.Engine(plugins=['./plugin.so']); "
                "or drop parallel=True to run it locally in this interpreter")
        sem = {"pure": 0, "effect": 1}.get(semantic)
        if sem is None:
            raise _errors.InvalidArgumentError(f"theus: semantic must be 'pure' or 'effect', not {semantic!r}")
        tramp = _trampoline(fn, pname)
        keep_in, p_in = _lib.string_array(list(inputs), "input path")
        keep_out, p_out = _lib.string_array(list(outputs), "output path")
        keep_err, p_err = _lib.string_array(list(errors), "error name")
        c = _lib.Contract(name=cstr(pname, "process name"), fn=tramp, inputs=p_in, outputs=p_out, parallel=0,
                          semantic=sem, errors=p_err, timeout_ms=0, userdata=None,
                          memo=0 if memo is None else 1 if memo else -1)
        self._check(LIB.theus_engine_register(core.ptr, byref(c)))
        core.callbacks.append((tramp, keep_in, keep_out, keep_err))
        return fn

    # ---- live regions ----
    def live(self, key, nbytes):
        """Creates a live region of nbytes bound to heavy key; returns its LiveWriter."""
        from .live import LiveWriter
        core = self._c()
        w = c_void_p()
        self._check(LIB.theus_engine_live_create(core.ptr, cstr(key, "heavy key"), int(nbytes), byref(w)))
        return LiveWriter(self, key, w.value)

    # ---- pipelines ----
    @classmethod
    def from_pipeline(cls, source, workers=None, plugins=(), set=None, **kwargs):
        """Opens an engine the way theus-run does: loads the pipeline (a path or
        a dict), its plugins (and `plugins`), opens the engine, registers the
        plugins' and the file's processes and creates its heavy arrays. Then
        call engine.run_pipeline()."""
        p, cleanup = _load_pipeline(source)
        try:
            for path in ([plugins] if isinstance(plugins, (str, os.PathLike)) else plugins):
                rc = LIB.theus_pipeline_add_plugin(p, cstr(os.path.abspath(os.fspath(path)), "plugin path"))
                if rc:
                    raise errors.error_for(rc, LIB.theus_pipeline_errmsg(p).decode())
            for path, value in (set or {}).items():
                rc = LIB.theus_pipeline_set(p, cstr(_domain_path(path), "path"), to_json(value))
                if rc:
                    raise errors.error_for(rc, LIB.theus_pipeline_errmsg(p).decode())
        except BaseException:
            LIB.theus_pipeline_close(p)
            cleanup()
            raise
        if workers is None:
            w = LIB.theus_pipeline_workers(p)
            workers = 0 if w == -2 else w
        try:
            return cls(workers, _pipeline=(p, source if isinstance(source, (str, os.PathLike)) else "<dict>"),
                       **kwargs)
        finally:
            cleanup()

    def run_pipeline(self, source=None):
        """Runs a pipeline's steps on this engine and returns the domain afterwards.

        With no argument: the pipeline this engine was opened from
        (Engine.from_pipeline). With a path or dict: its steps run on this
        engine, using the processes already registered here (plugins given to
        Engine(...)); a pipeline that also brings plugins, processes, heavy
        arrays or a domain needs Engine.from_pipeline instead."""
        core = self._c()
        if source is None:
            if core.pipeline:
                self._run(core.pipeline, core)
                return self.state.domain
            raise errors.InvalidArgumentError("theus: run_pipeline() without a source needs an engine opened with "
                                              "Engine.from_pipeline(path_or_dict)")
        doc = json.loads(json.dumps(source)) if isinstance(source, dict) else _read_json(source)
        extra = [k for k in ("plugins", "processes", "heavy", "domain") if k in doc] if isinstance(doc, dict) else []
        if extra:
            raise errors.InvalidArgumentError(
                f"theus: pipeline {source if not isinstance(source, dict) else '<dict>'} declares "
                f"{', '.join(extra)}, which are set up when an engine opens: use "
                "theus.Engine.from_pipeline(source).run_pipeline(), or keep only the steps here")
        # The C runner takes a map step's default slice count (2 per worker)
        # from theus_pipeline_open_engine, which did not run here: fill it in.
        n = self.workers if self.workers > 0 else (os.cpu_count() or 1)
        shown = source if not isinstance(source, dict) else None
        if isinstance(doc, dict) and _fill_slices(doc.get("steps"), 2 * n):
            source = doc
        p, cleanup = _load_pipeline(source)
        try:
            self._run(p, core, shown if isinstance(source, dict) else None)
        finally:
            LIB.theus_pipeline_close(p)
            cleanup()
        return self.state.domain

    def _run(self, p, core, original=None):
        rc = LIB.theus_pipeline_run(p, core.ptr)
        self._reraise_interrupt()
        if rc:
            msg = LIB.theus_pipeline_errmsg(p).decode()
            if original is not None:
                msg += f" (in a copy of {os.fspath(original)} with map slices filled in)"
            raise errors.error_for(rc, msg)

    # ---- lifetime ----
    @property
    def closed(self):
        return self._core is None

    def close(self):
        """Closes the engine: every method raises ClosedError from now on.

        Snapshots without live numpy views are released at once. If numpy
        arrays over engine memory are still alive (heavy views, published
        arrays, undeleted drafts), the C engine -- workers included -- stays
        open until the last one is deleted, so they never point at unmapped
        memory; a ResourceWarning says so. At interpreter exit every engine is
        closed whatever is left."""
        core, self._core = self._core, None
        if core is None:
            return
        self._drafts.clear()
        for fin in list(core.children.values()):
            info = fin.peek()
            if info is None:
                continue
            obj = info[0]
            if isinstance(obj, _Pin):
                if len(obj.views) == 0:
                    obj.release()
            else:
                fin()  # jobs, readers
        if _referrers_alive(core):
            warnings.warn("theus: engine closed while numpy arrays over its memory (or calls in other threads) "
                          "are alive; the C engine and its workers stay open until they are deleted",
                          ResourceWarning, stacklevel=2)
        del core

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        if self._core is None:
            return "<theus.Engine closed>"
        return f"<theus.Engine version {self.version}, workers {self.workers}>"


_errors = errors


def _referrers_alive(core):
    import sys
    # Engine dropped its reference; the local name and getrefcount's argument remain.
    return sys.getrefcount(core) > 3


def _free_domain(cfg):
    if cfg.domain:
        decref(cfg.domain)
        cfg.domain = None


def _args(args, kwargs):
    if args is not None and not isinstance(args, dict):
        raise errors.InvalidArgumentError("theus: process args must be a dict (a JSON object)")
    if kwargs:
        args = dict(args or {}, **kwargs)
    return args if args is not None else {}


def _fill_slices(steps, n):
    """Sets "slices": n on map steps without one (recursively); True if any changed."""
    changed = False
    if not isinstance(steps, list):
        return False
    for st in steps:
        if not isinstance(st, dict):
            continue
        if "map" in st and "slices" not in st:
            st["slices"] = n
            changed = True
        for k in ("parallel", "then", "else", "do"):
            changed |= _fill_slices(st.get(k), n)
    return changed


def _read_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except OSError as exc:
        raise errors.NotFoundError(f"theus: cannot read pipeline {path}: {exc.strerror}") from None
    except ValueError:
        return {}  # the C loader reports the syntax error with line and column


def _load_pipeline(source):
    """(theus_pipeline*, cleanup). A dict is written to a temporary file, with
    relative plugin paths made absolute (against the current directory)."""
    cleanup = lambda: None  # noqa: E731
    if isinstance(source, dict):
        doc = dict(source)
        if isinstance(doc.get("plugins"), list):
            doc["plugins"] = [os.path.abspath(p) if isinstance(p, str) else p for p in doc["plugins"]]
        fd, path = tempfile.mkstemp(prefix="theus-pipeline-", suffix=".json")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=1)
        cleanup = lambda: os.unlink(path) if os.path.exists(path) else None  # noqa: E731
    else:
        path = os.fspath(source)
    out = c_void_p()
    rc = LIB.theus_pipeline_load(cstr(path, "pipeline path"), byref(out))
    if rc:
        msg = LIB.theus_pipeline_errmsg(out).decode() if out.value else LIB.theus_strerror(rc).decode()
        if out.value:
            LIB.theus_pipeline_close(out)
        cleanup()
        raise errors.error_for(rc, msg)
    return out.value, cleanup
