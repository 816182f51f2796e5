"""theus.Arena: the shared-memory arena on its own (seed 000's write_shared /
shared_buffer / get_shared_stats), with numpy views instead of copies."""
import contextlib
import ctypes
import os
import weakref
from ctypes import byref, c_size_t, c_uint64, c_void_p

import numpy as np

from . import _lib, _mem, errors
from ._lib import LIB

STAT_NAMES = ("active_handles", "bytes_live", "peak_bytes", "alloc_count", "free_count", "errors",
              "soft_limit_hits", "hard_limit_hits")


def arena_config(budget=None, single_limit=None, soft_limit_pct=None, max_handles=None):
    """A theus_arena_config with the defaults for every argument left None."""
    cfg = _lib.ArenaConfig()
    LIB.theus_arena_config_init(byref(cfg))
    if budget is not None:
        cfg.hard_limit = _positive(budget, "budget")
    if single_limit is not None:
        cfg.single_limit = _positive(single_limit, "single_limit")
    if soft_limit_pct is not None:
        if not 1 <= int(soft_limit_pct) <= 100:
            raise errors.InvalidArgumentError(f"theus: soft_limit_pct must be 1..100, not {soft_limit_pct}")
        cfg.soft_limit_pct = int(soft_limit_pct)
    if max_handles is not None:
        cfg.max_handles = _positive(max_handles, "max_handles")
    return cfg


def _positive(v, what):
    v = int(v)
    if v <= 0:
        raise errors.InvalidArgumentError(f"theus: {what} must be a positive number of bytes, not {v}")
    return v


def buffer_address(data):
    """(address, nbytes, keepalive) of a C-contiguous buffer, without copying it."""
    if isinstance(data, np.ndarray):
        arr = data if data.flags.c_contiguous else np.ascontiguousarray(data)
        return arr.ctypes.data, arr.nbytes, arr
    try:
        arr = np.frombuffer(data, dtype=np.uint8)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"theus: expected bytes, bytearray, memoryview or a numpy array, got "
                        f"{type(data).__name__} ({exc})") from None
    return arr.ctypes.data, arr.nbytes, arr


def _owner_only(pid, func, *args):
    """Releases only in the process that opened the arena (not in an os.fork() child)."""
    if os.getpid() == pid:
        func(*args)


class _ArenaCore:
    """Owns the C arena; numpy views reference it, so it is unmapped only
    after the Arena was closed AND the last view is gone."""

    def __init__(self, ptr):
        self.ptr = ptr
        self.views = {}  # handle -> Tracker of _Mem objects
        self._fin = weakref.finalize(self, _owner_only, os.getpid(), LIB.theus_arena_close, ptr)

    def tracker(self, h):
        t = self.views.get(h)
        if t is None:
            t = self.views[h] = _mem.Tracker()
        return t

    def live_views(self, h=None):
        if h is not None:
            t = self.views.get(h)
            return len(t) if t is not None else 0
        return sum(len(t) for t in self.views.values())


class Arena:
    """A shared-memory arena of generational handles.

    ``budget`` (global hard limit, default 1 GiB), ``single_limit`` (largest
    allocation, default 100 MiB), ``soft_limit_pct`` (default 85) and
    ``max_handles`` map to theus_arena_config. Handles are ints; a stale one
    raises StaleHandleError. Views are zero-copy numpy arrays that keep the
    arena mapped while they live; freeing a handle (or resetting the arena)
    while views of it are alive raises BusyError instead of leaving them
    pointing at reused memory.
    """

    def __init__(self, budget=None, single_limit=None, soft_limit_pct=None, max_handles=None):
        cfg = arena_config(budget, single_limit, soft_limit_pct, max_handles)
        out = c_void_p()
        rc = LIB.theus_arena_open(byref(cfg), byref(out))
        if rc:
            msg = LIB.theus_arena_errmsg(out).decode() if out.value else ""
            if out.value:
                LIB.theus_arena_close(out)
            raise errors.error_for(rc, msg or f"theus: cannot open an arena: {LIB.theus_strerror(rc).decode()}")
        self._core = _ArenaCore(out.value)

    # ---- helpers ----
    def _ptr(self):
        core = self._core
        if core is None:
            raise errors.ClosedError("theus: the arena is closed")
        return core.ptr

    def _check(self, rc):
        if rc:
            raise errors.error_for(rc, LIB.theus_arena_errmsg(self._core.ptr).decode())

    # ---- bytes API ----
    def write(self, data):
        """Copies a buffer (bytes, bytearray, memoryview, numpy array) into a new array; returns its handle."""
        ptr = self._ptr()
        addr, n, keep = buffer_address(data)
        h = c_uint64()
        self._check(LIB.theus_arena_write(ptr, c_void_p(addr), n, byref(h)))
        del keep
        return h.value

    def alloc(self, shape, dtype=np.uint8):
        """Allocates a typed array; returns (handle, writable numpy array over it, zero-filled)."""
        ptr = self._ptr()
        shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
        if not 1 <= len(shape) <= _lib.MAX_DIMS:
            raise errors.InvalidArgumentError(f"theus: arrays have 1 to {_lib.MAX_DIMS} dimensions, not {len(shape)}")
        dims = (c_uint64 * len(shape))(*shape)
        h, data = c_uint64(), c_void_p()
        self._check(LIB.theus_array_alloc(ptr, _mem.dtype_code(dtype), len(shape), dims, byref(h), byref(data)))
        arr = _mem.make_array(data.value, shape, dtype, False, self._core, self._core.tracker(h.value))
        return h.value, arr

    def read(self, handle):
        """A copy of the array's bytes."""
        ptr = self._ptr()
        p, n = c_void_p(), c_size_t()
        self._check(LIB.theus_arena_view(ptr, handle, byref(p), byref(n)))
        buf = ctypes.create_string_buffer(n.value)
        self._check(LIB.theus_arena_read(ptr, handle, buf, n.value, byref(n)))
        return buf.raw[:n.value]

    def read_into(self, handle, out):
        """Copies the array into a writable buffer; returns the number of bytes (TruncatedError if too small)."""
        ptr = self._ptr()
        arr = np.frombuffer(out, dtype=np.uint8)
        if arr.flags.writeable is False:
            raise TypeError("theus: read_into needs a writable buffer")
        n = c_size_t()
        self._check(LIB.theus_arena_read(ptr, handle, c_void_p(arr.ctypes.data), arr.nbytes, byref(n)))
        return n.value

    def view(self, handle, dtype=None, shape=None):
        """A read-only, zero-copy numpy array over the array. Typed arrays keep
        their dtype and shape unless given; byte arrays are uint8 (or dtype,
        shape if given). The view keeps the arena mapped; free(handle) refuses
        while it lives."""
        ptr = self._ptr()
        info = _lib.ArrayInfo()
        self._check(LIB.theus_array_info_get(ptr, handle, byref(info)))
        if dtype is None and shape is None and info.dtype:
            return _mem.info_array(info, self._core, self._core.tracker(handle))
        dt = np.dtype(dtype if dtype is not None else np.uint8)
        n = info.nbytes
        if shape is None:
            if n % dt.itemsize:
                raise errors.InvalidArgumentError(
                    f"theus: handle {handle:#x} holds {n} bytes, not a whole number of {dt} items ({dt.itemsize} B)")
            shape = (n // dt.itemsize,)
        shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
        need = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
        if need > n:
            raise errors.InvalidArgumentError(
                f"theus: shape {shape} of {dt} needs {need} bytes, handle {handle:#x} holds {n}")
        return _mem.make_array(info.data, shape, dt, True, self._core, self._core.tracker(handle))

    def memoryview(self, handle):
        """A read-only memoryview (format 'B') over the array, zero-copy."""
        return memoryview(self.view(handle, np.uint8))

    def free(self, handle):
        """Frees the array. StaleHandleError (or FreedHandleError, a subclass)
        for a stale handle; BusyError while numpy views of it are alive."""
        ptr = self._ptr()
        live = self._core.live_views(handle)
        if live:
            raise errors.BusyError(f"theus: cannot free handle {handle:#x}: {live} numpy view(s) of it are still "
                                   "alive; delete them first (or copy what you need with np.array(view))")
        self._check(LIB.theus_arena_free(ptr, handle))
        self._core.views.pop(handle, None)

    @contextlib.contextmanager
    def buffer(self, data):
        """``with arena.buffer(data) as h:`` writes data and frees h on every exit path."""
        h = self.write(data)
        try:
            yield h
        finally:
            if self._core is not None:
                self.free(h)

    def reset(self):
        """Invalidates every handle at once (O(1)). BusyError while numpy views are alive."""
        ptr = self._ptr()
        live = self._core.live_views()
        if live:
            raise errors.BusyError(f"theus: cannot reset the arena: {live} numpy view(s) of its arrays are alive; "
                                   "delete them first")
        self._check(LIB.theus_arena_reset(ptr))
        self._core.views.clear()

    def stats(self):
        """The eight counters as a dict (see STAT_NAMES)."""
        return stats_dict(self._ptr())

    def list_live(self):
        """[(handle, size_in_bytes), ...] of the live arrays, by slot."""
        return list_live(self._ptr())

    # ---- lifetime ----
    @property
    def closed(self):
        return self._core is None

    def close(self):
        """Closes the arena. If numpy views are still alive, the mapping stays
        until the last one is gone (they stay valid); every method raises
        ClosedError from now on."""
        self._core = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        if self._core is None:
            return "<theus.Arena closed>"
        s = self.stats()
        return f"<theus.Arena {s['active_handles']} live, {s['bytes_live']} bytes>"


def stats_dict(arena_ptr):
    st = _lib.ArenaStats()
    rc = LIB.theus_arena_stats_get(arena_ptr, byref(st))
    if rc:
        raise errors.error_for(rc, LIB.theus_arena_errmsg(arena_ptr).decode())
    return {n: getattr(st, n) for n in STAT_NAMES}


def list_live(arena_ptr):
    count = c_size_t()
    while True:
        rc = LIB.theus_arena_list_live(arena_ptr, None, 0, byref(count))
        if rc:
            raise errors.error_for(rc, LIB.theus_arena_errmsg(arena_ptr).decode())
        cap = count.value + 16
        buf = (_lib.LiveEntry * cap)()
        rc = LIB.theus_arena_list_live(arena_ptr, buf, cap, byref(count))
        if rc:
            raise errors.error_for(rc, LIB.theus_arena_errmsg(arena_ptr).decode())
        if count.value <= cap:
            return [(buf[i].handle, buf[i].size) for i in range(count.value)]
