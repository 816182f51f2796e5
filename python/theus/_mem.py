"""numpy arrays over memory owned by C objects, and the ownership rules that
keep them from outliving it.

Every array theus hands out is built from a ``_Mem`` object exposing
``__array_interface__``; numpy stores that object as the array's ``base``, so
the ``_Mem`` lives exactly as long as the array or any view derived from it.
The ``_Mem`` holds a strong reference to whatever keeps the memory mapped and
unchanged (an arena core, a snapshot pin, a published version), and trackers
keep *weak* references to the ``_Mem`` objects to know whether views are alive.
"""
import weakref

import numpy as np

from . import errors

# theus_dtype <-> numpy
_DTYPES = {1: "u1", 2: "u2", 3: "u4", 4: "u8", 5: "i1", 6: "i2", 7: "i4", 8: "i8", 9: "f4", 10: "f8"}
_CODES = {np.dtype(v): k for k, v in _DTYPES.items()}


def dtype_code(dtype):
    """The theus_dtype code of a numpy dtype (native byte order only)."""
    dt = np.dtype(dtype)
    code = _CODES.get(dt) if dt.isnative else None
    if code is None:
        raise errors.InvalidArgumentError(
            f"theus: dtype {dt} is not supported by the arena; use one of "
            f"{', '.join(str(np.dtype(v)) for v in _DTYPES.values())} (native byte order)")
    return code


def numpy_dtype(code):
    return np.dtype(_DTYPES.get(code, "u1"))  # 0 = bytes array


class _Mem:
    """Exports one C memory range to numpy and pins what keeps it valid."""

    __slots__ = ("__array_interface__", "owner", "__weakref__")

    def __init__(self, addr, shape, dtype, readonly, owner):
        self.__array_interface__ = {"version": 3, "shape": tuple(int(s) for s in shape),
                                    "typestr": np.dtype(dtype).str, "data": (int(addr), bool(readonly))}
        self.owner = owner


def make_array(addr, shape, dtype, readonly, owner, tracker=None, cls=None):
    """A numpy array over [addr, addr + nbytes) keeping owner alive; tracker
    (a WeakSet) learns the _Mem so its owner can see whether views are alive."""
    mem = _Mem(addr, shape, dtype, readonly, owner)
    if tracker is not None:
        tracker.add(mem)
    arr = np.asarray(mem)
    if cls is not None:
        arr = arr.view(cls)
    return arr


def info_array(info, owner, tracker=None, readonly=True):
    """A numpy array for a theus_array_info."""
    shape = [info.shape[i] for i in range(info.ndim)]
    return make_array(info.data, shape, numpy_dtype(info.dtype), readonly, owner, tracker)


def live_count(tracker):
    return len(tracker)


class Tracker(weakref.WeakSet):
    """The live _Mem objects of one memory owner."""
