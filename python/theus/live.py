"""Live regions (seed 004): one writer publishing at high rate, readers copying
tear-free snapshots into their own preallocated buffers."""
from ctypes import byref, c_uint64, c_void_p

import numpy as np

from . import _lib, errors
from ._lib import LIB
from .arena import buffer_address

THEUS_ETIMEDOUT = -13
_SLICE_MS = 200


class LiveWriter:
    """The writer of a live region bound to a heavy key (engine.live(key, nbytes)).

    Owned by the engine: valid until unbind() or engine.close(). Use it from
    one thread at a time: write(offset, data) as often as needed, then
    publish() makes the frame visible to every reader at once."""

    def __init__(self, engine, key, ptr):
        self._engine = engine
        self.key = key
        self._ptr = ptr
        self.handle = LIB.theus_twin_writer_handle(ptr)
        self.size = LIB.theus_twin_writer_size(ptr)
        self._epoch = c_uint64()

    def _p(self):
        if self._ptr is None:
            raise errors.ClosedError(f"theus: the live region '{self.key}' was unbound")
        self._engine._c()  # ClosedError once the engine is closed
        return self._ptr

    def _check(self, rc):
        if rc:
            raise errors.error_for(rc, LIB.theus_twin_writer_errmsg(self._ptr).decode())

    def write(self, offset, data):
        """Copies data (any C-contiguous buffer) to [offset, offset + len) of the next frame."""
        p = self._p()
        addr, n, keep = buffer_address(data)
        self._check(LIB.theus_twin_writer_write(p, int(offset), c_void_p(addr), n))
        del keep

    def publish(self):
        """Makes the frame visible (atomically) and wakes waiting readers; returns the new epoch."""
        self._check(LIB.theus_twin_writer_publish(self._p(), byref(self._epoch)))
        return self._epoch.value

    @property
    def epoch(self):
        return LIB.theus_twin_writer_epoch(self._p())

    def reader(self):
        """A new reader of this region (one per thread)."""
        return LiveReader(self._engine, self.handle, self.key)

    def unbind(self):
        """Removes the key's binding in a new version and closes the writer (readers then get ClosedError)."""
        p = self._p()
        self._engine._check(LIB.theus_engine_live_unbind(self._engine._c().ptr, _lib.cstr(self.key)))
        del p
        self._ptr = None

    def __repr__(self):
        return f"<theus.LiveWriter '{self.key}' {self.size} bytes>"


class LiveReader:
    """A reader of a live region: read_at copies a consistent frame range into
    a preallocated buffer; no allocation per call once the buffer was seen."""

    def __init__(self, engine, handle, key=None):
        core = engine._c()
        out = c_void_p()
        arena = LIB.theus_engine_arena(core.ptr)
        rc = LIB.theus_twin_reader_open(arena, handle, byref(out))
        if rc:
            raise errors.error_for(rc, LIB.theus_arena_errmsg(arena).decode())
        self.key = key
        self._ptr = out.value
        self._fin = core.adopt(self, LIB.theus_twin_reader_close, out.value)
        self.size = LIB.theus_twin_reader_size(out.value)
        self._epoch = c_uint64()
        self._epoch_ref = byref(self._epoch)
        self._read = LIB.theus_twin_reader_read_at
        self._dest = None  # (buffer object, address, nbytes) of the last destination
        self._stats = _lib.TwinReaderStats()

    def _error(self, rc):
        if not self._fin.alive:
            return errors.ClosedError("theus: the live reader is closed (its engine closed)")
        return errors.error_for(rc, LIB.theus_twin_reader_errmsg(self._ptr).decode())

    def _resolve(self, dest):
        if isinstance(dest, np.ndarray):
            if not dest.flags.c_contiguous or not dest.flags.writeable:
                raise errors.InvalidArgumentError("theus: read_at needs a writable, C-contiguous destination")
            addr, n = dest.ctypes.data, dest.nbytes
        else:
            arr = np.frombuffer(dest, dtype=np.uint8)
            if not arr.flags.writeable:
                raise errors.InvalidArgumentError("theus: read_at needs a writable destination buffer")
            addr, n = arr.ctypes.data, arr.nbytes
        self._dest = (dest, addr, n)
        return self._dest

    def read_at(self, offset, dest, nbytes=None):
        """Copies [offset, offset + nbytes) of the current frame into dest (a
        writable numpy array or buffer; nbytes defaults to its size) and
        returns the frame's epoch."""
        if not self._fin.alive:
            raise errors.ClosedError("theus: the live reader is closed (its engine closed)")
        d = self._dest
        if d is None or d[0] is not dest:
            d = self._resolve(dest)
        n = d[2] if nbytes is None else nbytes
        if n > d[2]:
            raise errors.InvalidArgumentError(f"theus: read_at of {n} bytes into a {d[2]}-byte buffer")
        rc = self._read(self._ptr, offset, d[1], n, self._epoch_ref)
        if rc:
            raise self._error(rc)
        return self._epoch.value

    @property
    def epoch(self):
        if not self._fin.alive:
            raise errors.ClosedError("theus: the live reader is closed")
        return LIB.theus_twin_reader_epoch(self._ptr)

    def wait_epoch(self, seen, timeout=None):
        """Sleeps until the epoch exceeds seen; returns it. TimeoutError after timeout seconds (None = forever)."""
        budget = -1 if timeout is None else int(float(timeout) * 1000 + 0.999)
        now = c_uint64()
        while True:
            if not self._fin.alive:
                raise errors.ClosedError("theus: the live reader is closed")
            step = _SLICE_MS if budget < 0 else min(budget, _SLICE_MS)
            rc = LIB.theus_twin_reader_wait_epoch(self._ptr, int(seen), step, byref(now))
            if rc == 0:
                return now.value
            if rc != THEUS_ETIMEDOUT:
                raise self._error(rc)
            if budget >= 0:
                budget -= step
                if budget <= 0:
                    raise errors.TimeoutError(f"theus: live region epoch still {seen} after {timeout} s")

    def stats(self):
        LIB.theus_twin_reader_stats_get(self._ptr, byref(self._stats))
        return {"reads": self._stats.reads, "retries": self._stats.retries, "starved": self._stats.starved}

    def close(self):
        self._fin()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
