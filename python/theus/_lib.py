"""ctypes declarations of the libtheus C API (and the few jansson calls needed
to move JSON values across it).

Only this module knows C signatures; everything else calls ``LIB.<name>``.
The library is found, in this order: the THEUS_LIBRARY environment variable
(a path to libtheus.so, e.g. in a build tree), the library directory recorded
when the package was installed by ``meson install``, then the dynamic loader's
search path (``libtheus.so.0``).
"""
import ctypes
import ctypes.util
import json
import os
from ctypes import (CFUNCTYPE, POINTER, Structure, byref, c_char_p, c_int, c_int64, c_size_t, c_uint, c_uint32,
                    c_uint64, c_void_p)

ENV_VAR = "THEUS_LIBRARY"


def _candidates():
    env = os.environ.get(ENV_VAR)
    if env:
        return [env]
    out = []
    try:
        from . import _build_config  # written by meson install
        out.append(os.path.join(_build_config.LIBDIR, "libtheus.so.0"))
    except ImportError:
        pass
    out.append("libtheus.so.0")
    found = ctypes.util.find_library("theus")
    if found:
        out.append(found)
    return out


def _load():
    errors = []
    for path in _candidates():
        try:
            return ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL), path
        except OSError as exc:
            errors.append(f"{path}: {exc}")
    hint = (f"set {ENV_VAR} to the path of libtheus.so (in a build tree: {ENV_VAR}=<builddir>/libtheus.so), "
            "or install theus-c with `meson install`")
    raise ImportError("theus: cannot load the C library libtheus (" + "; ".join(errors) + "); " + hint)


LIB, LIB_PATH = _load()
JANSSON = ctypes.CDLL("libjansson.so.4")
LIBC = ctypes.CDLL(None)

# ---- types -------------------------------------------------------------------

theus_handle = c_uint64
json_p = c_void_p
PROCESS_FN = CFUNCTYPE(c_int, c_void_p)  # int (*)(theus_ctx *)


class ArenaConfig(Structure):
    _fields_ = [("hard_limit", c_uint64), ("single_limit", c_uint64), ("soft_limit_pct", c_uint),
                ("max_handles", c_uint32)]


class ArenaStats(Structure):
    _fields_ = [(n, c_uint64) for n in ("active_handles", "bytes_live", "peak_bytes", "alloc_count", "free_count",
                                        "errors", "soft_limit_hits", "hard_limit_hits")]


class LiveEntry(Structure):
    _fields_ = [("handle", c_uint64), ("size", c_uint64)]


MAX_DIMS = 8


class ArrayInfo(Structure):
    _fields_ = [("handle", c_uint64), ("dtype", c_int), ("ndim", c_uint), ("shape", c_uint64 * MAX_DIMS),
                ("strides", c_uint64 * MAX_DIMS), ("itemsize", c_uint64), ("nbytes", c_uint64),
                ("data", c_void_p)]


class EngineConfig(Structure):
    _fields_ = [("workers", c_int), ("strict", c_int), ("retention", c_uint), ("history", c_uint),
                ("max_retries", c_uint), ("default_timeout_ms", c_int64), ("arena", POINTER(ArenaConfig)),
                ("domain", json_p), ("output", c_int), ("output_fn", c_void_p), ("output_ud", c_void_p),
                ("ledger", c_char_p), ("ledger_fsync", c_int), ("on_commit", c_void_p),
                ("on_commit_ud", c_void_p), ("memo", c_int), ("memo_capacity", c_uint)]


class Contract(Structure):
    _fields_ = [("name", c_char_p), ("fn", PROCESS_FN), ("inputs", POINTER(c_char_p)),
                ("outputs", POINTER(c_char_p)), ("parallel", c_int), ("semantic", c_int),
                ("errors", POINTER(c_char_p)), ("timeout_ms", c_int64), ("userdata", c_void_p),
                ("sandbox", c_int), ("retries", c_int), ("memo", c_int)]


class TwinReaderStats(Structure):
    _fields_ = [("reads", c_uint64), ("retries", c_uint64), ("starved", c_uint64)]


# ---- signatures -----------------------------------------------------------------

_P = c_void_p
_SIGS = {
    # error.h
    "theus_strerror": (c_char_p, [c_int]),
    "theus_err_name": (c_char_p, [c_int]),
    # heavy.h
    "theus_arena_config_init": (None, [POINTER(ArenaConfig)]),
    "theus_arena_open": (c_int, [POINTER(ArenaConfig), POINTER(_P)]),
    "theus_arena_close": (None, [_P]),
    "theus_arena_errmsg": (c_char_p, [_P]),
    "theus_arena_alloc": (c_int, [_P, c_size_t, POINTER(c_uint64), POINTER(_P)]),
    "theus_arena_write": (c_int, [_P, _P, c_size_t, POINTER(c_uint64)]),
    "theus_arena_view": (c_int, [_P, c_uint64, POINTER(_P), POINTER(c_size_t)]),
    "theus_arena_data": (c_int, [_P, c_uint64, POINTER(_P), POINTER(c_size_t)]),
    "theus_arena_read": (c_int, [_P, c_uint64, _P, c_size_t, POINTER(c_size_t)]),
    "theus_arena_free": (c_int, [_P, c_uint64]),
    "theus_arena_reset": (c_int, [_P]),
    "theus_arena_stats_get": (c_int, [_P, POINTER(ArenaStats)]),
    "theus_arena_list_live": (c_int, [_P, POINTER(LiveEntry), c_size_t, POINTER(c_size_t)]),
    "theus_array_alloc": (c_int, [_P, c_int, c_uint, POINTER(c_uint64), POINTER(c_uint64), POINTER(_P)]),
    "theus_array_info_get": (c_int, [_P, c_uint64, POINTER(ArrayInfo)]),
    # engine.h
    "theus_engine_config_init": (None, [POINTER(EngineConfig)]),
    "theus_engine_open": (c_int, [POINTER(EngineConfig), POINTER(_P)]),
    "theus_engine_close": (None, [_P]),
    "theus_engine_errmsg": (c_char_p, [_P]),
    "theus_engine_arena": (_P, [_P]),
    "theus_engine_register": (c_int, [_P, POINTER(Contract)]),
    "theus_engine_version": (c_uint64, [_P]),
    "theus_engine_get": (json_p, [_P, c_char_p]),
    "theus_engine_set": (c_int, [_P, c_char_p, json_p]),
    "theus_engine_cas": (c_int, [_P, c_uint64, json_p, json_p, POINTER(c_uint64)]),
    "theus_engine_heavy_alloc": (c_int, [_P, c_char_p, c_int, c_uint, POINTER(c_uint64), POINTER(_P)]),
    "theus_engine_heavy_discard": (c_int, [_P, c_char_p]),
    "theus_engine_live_create": (c_int, [_P, c_char_p, c_size_t, POINTER(_P)]),
    "theus_engine_live_unbind": (c_int, [_P, c_char_p]),
    "theus_engine_snapshot": (c_int, [_P, POINTER(_P)]),
    "theus_snapshot_version": (c_uint64, [_P]),
    "theus_snapshot_domain": (json_p, [_P]),
    "theus_snapshot_get": (json_p, [_P, c_char_p]),
    "theus_snapshot_heavy": (c_int, [_P, c_char_p, POINTER(ArrayInfo)]),
    "theus_snapshot_release": (None, [_P]),
    "theus_engine_wait_version": (c_int, [_P, c_uint64, c_int64, POINTER(c_uint64)]),
    "theus_engine_execute": (c_int, [_P, c_char_p, json_p, POINTER(json_p)]),
    "theus_engine_submit": (c_int, [_P, c_char_p, json_p, POINTER(_P)]),
    "theus_job_wait": (c_int, [_P, c_int64, POINTER(json_p)]),
    "theus_job_errmsg": (c_char_p, [_P]),
    "theus_job_version": (c_uint64, [_P]),
    "theus_job_release": (None, [_P]),
    "theus_job_cancel": (c_int, [_P]),
    "theus_engine_ledger_sync": (c_int, [_P]),
    "theus_engine_map": (c_int, [_P, c_char_p, c_char_p, c_uint32, c_char_p, json_p, POINTER(json_p)]),
    "theus_engine_stats": (json_p, [_P]),
    # contract.h (inside a process)
    "theus_ctx_get": (json_p, [_P, c_char_p]),
    "theus_ctx_args": (json_p, [_P]),
    "theus_ctx_heavy": (c_int, [_P, c_char_p, POINTER(ArrayInfo)]),
    "theus_ctx_set": (c_int, [_P, c_char_p, json_p]),
    "theus_ctx_return": (None, [_P, json_p]),
    "theus_ctx_process": (c_char_p, [_P]),
    "theus_ctx_worker": (c_int, [_P]),
    "theus_ctx_canceled": (c_int, [_P]),
    # theus_ctx_fail / theus_ctx_raise are variadic: called with explicit "%s" arguments, no argtypes.
    # twin.h
    "theus_twin_writer_handle": (c_uint64, [_P]),
    "theus_twin_writer_size": (c_size_t, [_P]),
    "theus_twin_writer_epoch": (c_uint64, [_P]),
    "theus_twin_writer_write": (c_int, [_P, c_size_t, _P, c_size_t]),
    "theus_twin_writer_publish": (c_int, [_P, POINTER(c_uint64)]),
    "theus_twin_writer_errmsg": (c_char_p, [_P]),
    "theus_twin_reader_open": (c_int, [_P, c_uint64, POINTER(_P)]),
    "theus_twin_reader_close": (None, [_P]),
    "theus_twin_reader_size": (c_size_t, [_P]),
    "theus_twin_reader_read_at": (c_int, [_P, c_size_t, _P, c_size_t, POINTER(c_uint64)]),
    "theus_twin_reader_epoch": (c_uint64, [_P]),
    "theus_twin_reader_wait_epoch": (c_int, [_P, c_uint64, c_int64, POINTER(c_uint64)]),
    "theus_twin_reader_stats_get": (None, [_P, POINTER(TwinReaderStats)]),
    "theus_twin_reader_errmsg": (c_char_p, [_P]),
    # pipeline.h
    "theus_pipeline_load": (c_int, [c_char_p, POINTER(_P)]),
    "theus_pipeline_add_plugin": (c_int, [_P, c_char_p]),
    "theus_pipeline_set": (c_int, [_P, c_char_p, json_p]),
    "theus_pipeline_workers": (c_int, [_P]),
    "theus_pipeline_open_engine": (c_int, [_P, POINTER(EngineConfig), POINTER(_P)]),
    "theus_pipeline_run": (c_int, [_P, _P]),
    "theus_pipeline_ops": (c_uint64, [_P]),
    "theus_pipeline_errmsg": (c_char_p, [_P]),
    "theus_pipeline_close": (None, [_P]),
}


def _declare():
    missing = []
    for name, (res, args) in _SIGS.items():
        try:
            fn = getattr(LIB, name)
        except AttributeError:
            missing.append(name)
            continue
        fn.restype = res
        fn.argtypes = args
    if missing:
        raise ImportError(f"theus: {LIB_PATH} lacks {', '.join(missing)}: it is an older or newer libtheus than "
                          f"this package; point {ENV_VAR} at a matching build")


_declare()
# Variadic: the fixed arguments are declared (so the pointer is not truncated to
# an int); the "%s" argument is passed as an extra char *.
LIB.theus_ctx_fail.restype = c_int
LIB.theus_ctx_fail.argtypes = [c_void_p, c_char_p]
LIB.theus_ctx_raise.restype = c_int
LIB.theus_ctx_raise.argtypes = [c_void_p, c_char_p, c_char_p]

JANSSON.json_loads.restype = json_p
JANSSON.json_loads.argtypes = [c_char_p, c_size_t, c_void_p]
JANSSON.json_dumps.restype = c_void_p  # malloc'd char*, freed with free()
JANSSON.json_dumps.argtypes = [json_p, c_size_t]
JANSSON.json_array.restype = json_p
JANSSON.json_array.argtypes = []
JANSSON.json_array_append_new.restype = c_int
JANSSON.json_array_append_new.argtypes = [json_p, json_p]
JANSSON.json_delete.restype = None
JANSSON.json_delete.argtypes = [json_p]
LIBC.free.restype = None
LIBC.free.argtypes = [c_void_p]

JSON_DECODE_ANY = 0x4
JSON_COMPACT = 0x20
JSON_ENCODE_ANY = 0x200
JSON_REAL_PRECISION_17 = (17 & 0x1F) << 11


def to_json(value):
    """A new json_t reference for a Python value (the caller owns it), or None for None when allowed."""
    try:
        text = json.dumps(value, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise TypeError(f"theus: value cannot be sent to the engine as JSON ({exc}); use dict, list, str, int, "
                        "finite float, bool or None (numpy scalars: call .item())") from None
    ptr = JANSSON.json_loads(text.encode(), JSON_DECODE_ANY, None)
    if not ptr:
        raise MemoryError("theus: jansson could not build the JSON value")
    return ptr


def from_json(ptr):
    """The Python value of a json_t (borrowed: the reference is not touched). NULL -> None."""
    if not ptr:
        return None
    s = JANSSON.json_dumps(ptr, JSON_ENCODE_ANY | JSON_COMPACT | JSON_REAL_PRECISION_17)
    if not s:
        raise MemoryError("theus: jansson could not serialise a JSON value")
    try:
        return json.loads(ctypes.string_at(s).decode())
    finally:
        LIBC.free(s)


def decref(ptr):
    """json_decref, which jansson only has as an inline function: putting the
    value in a fresh array (stealing our reference) and deleting the array
    makes the library drop the reference with its own atomic decrement."""
    if not ptr:
        return
    arr = JANSSON.json_array()
    if not arr or JANSSON.json_array_append_new(arr, ptr):  # append_new drops ptr on failure too
        if arr:
            JANSSON.json_delete(arr)
        return
    JANSSON.json_delete(arr)


def take_json(ptr):
    """The Python value of a new reference, which is released."""
    try:
        return from_json(ptr)
    finally:
        decref(ptr)


def cstr(s, what="name"):
    if isinstance(s, bytes):
        return s
    if not isinstance(s, str):
        raise TypeError(f"theus: {what} must be a str, not {type(s).__name__}")
    if "\0" in s:
        raise ValueError(f"theus: {what} {s!r} contains a NUL character")
    return s.encode()


def string_array(items, what):
    """A NULL-terminated char*[] (kept alive by the returned tuple's first item)."""
    if items is None:
        return None, None
    if isinstance(items, (str, bytes)):
        items = [items]
    enc = [cstr(i, what) for i in items]
    arr = (c_char_p * (len(enc) + 1))(*enc, None)
    return arr, ctypes.cast(arr, POINTER(c_char_p))


__all__ = ["LIB", "LIB_PATH", "ENV_VAR", "byref"]
