"""Exceptions: one class per THEUS_E* code (include/theus/error.h), all under TheusError.

Every exception keeps the engine's own message (what failed, where, how to
fix it) as ``.message`` and the numeric code as ``.code`` (``.name`` is the
symbolic name, e.g. ``"THEUS_ECONFLICT"``).
"""
import builtins


class TheusError(Exception):
    """Base of every error raised by theus. ``code`` is the negative THEUS_E* value."""

    code = None
    name = "THEUS_E?"

    def __init__(self, message, code=None):
        if code is not None:
            self.code = code
        self.message = message
        super().__init__(message)

    def __str__(self):
        return f"{self.message} [{self.name}]"


def _cls(name, code, doc, *bases):
    return type(name, (TheusError,) + bases, {"__doc__": doc, "code": code, "name": "THEUS_" + name_of[code]})


name_of = {-1: "EINVAL", -2: "ENOMEM", -3: "ESYS", -4: "EZEROHANDLE", -5: "EBADHANDLE", -6: "ESTALE",
           -7: "EFREED", -8: "EBUDGET", -9: "ETOOBIG", -10: "ENOSPACE", -11: "EREADONLY", -12: "ETRUNC",
           -13: "ETIMEDOUT", -14: "ECRASH", -15: "ECONTRACT", -16: "ECONFLICT", -17: "ENOTFOUND", -18: "EEXIST",
           -19: "EPARSE", -20: "EPROCESS", -21: "ECLOSED", -22: "EAGAIN", -23: "ESTARVED", -24: "ECANCELED",
           -25: "EBUSY", -26: "ELIMIT"}

InvalidArgumentError = _cls("InvalidArgumentError", -1, "THEUS_EINVAL: invalid argument.", ValueError)
OutOfMemoryError = _cls("OutOfMemoryError", -2, "THEUS_ENOMEM: out of memory.", MemoryError)
SystemCallError = _cls("SystemCallError", -3, "THEUS_ESYS: an operating system call failed.")
HandleError = type("HandleError", (TheusError,), {"__doc__": "Base of the bad-handle errors."})
ZeroHandleError = type("ZeroHandleError", (HandleError,), {"__doc__": "THEUS_EZEROHANDLE: handle 0.", "code": -4,
                                                            "name": "THEUS_EZEROHANDLE"})
BadHandleError = type("BadHandleError", (HandleError,), {"__doc__": "THEUS_EBADHANDLE: handle out of range.",
                                                         "code": -5, "name": "THEUS_EBADHANDLE"})
StaleHandleError = type("StaleHandleError", (HandleError,), {
    "__doc__": "THEUS_ESTALE: the handle's array was freed (or the arena reset) and its slot reused.",
    "code": -6, "name": "THEUS_ESTALE"})
FreedHandleError = type("FreedHandleError", (StaleHandleError,), {
    "__doc__": "THEUS_EFREED: the handle was already freed (a kind of stale handle).", "code": -7,
    "name": "THEUS_EFREED"})
BudgetError = _cls("BudgetError", -8, "THEUS_EBUDGET: the arena's global budget is exhausted.", MemoryError)
AllocationTooLargeError = type("AllocationTooLargeError", (BudgetError,), {
    "__doc__": "THEUS_ETOOBIG: larger than the arena's single-allocation limit.", "code": -9,
    "name": "THEUS_ETOOBIG"})
ArenaFullError = type("ArenaFullError", (BudgetError,), {
    "__doc__": "THEUS_ENOSPACE: arena address space or slots exhausted.", "code": -10, "name": "THEUS_ENOSPACE"})
ReadOnlyError = _cls("ReadOnlyError", -11, "THEUS_EREADONLY: memory or arena is read-only.")
TruncatedError = _cls("TruncatedError", -12, "THEUS_ETRUNC: destination buffer too small.")
TimeoutError = _cls("TimeoutError", -13, "THEUS_ETIMEDOUT: timed out (also a builtin TimeoutError).",
                    builtins.TimeoutError)
WorkerCrashed = _cls("WorkerCrashed", -14, "THEUS_ECRASH: a pool worker died running the task.")
ContractError = _cls("ContractError", -15, "THEUS_ECONTRACT: a process broke its contract.")
ConflictError = _cls("ConflictError", -16, "THEUS_ECONFLICT: version conflict (compare-and-swap lost).")
NotFoundError = _cls("NotFoundError", -17, "THEUS_ENOTFOUND: no such process, key or value.", LookupError)
AlreadyExistsError = _cls("AlreadyExistsError", -18, "THEUS_EEXIST: already exists.")
ParseError = _cls("ParseError", -19, "THEUS_EPARSE: bad JSON, contract or pipeline (message has file:line:col).")
ProcessError = _cls("ProcessError", -20, "THEUS_EPROCESS: the process failed (its message says why).")
ClosedError = _cls("ClosedError", -21, "THEUS_ECLOSED: object is closed or stopping.")
TryAgainError = _cls("TryAgainError", -22, "THEUS_EAGAIN: resource temporarily unavailable.")
StarvedError = _cls("StarvedError", -23, "THEUS_ESTARVED: a live-region reader was overtaken on every attempt.")
CanceledError = _cls("CanceledError", -24, "THEUS_ECANCELED: canceled.")
BusyError = _cls("BusyError", -25, "THEUS_EBUSY: resource busy (e.g. numpy views still use the memory).")
LimitError = _cls("LimitError", -26, "THEUS_ELIMIT: operation budget exhausted.")

BY_CODE = {c.code: c for c in (
    InvalidArgumentError, OutOfMemoryError, SystemCallError, ZeroHandleError, BadHandleError, StaleHandleError,
    FreedHandleError, BudgetError, AllocationTooLargeError, ArenaFullError, ReadOnlyError, TruncatedError,
    TimeoutError, WorkerCrashed, ContractError, ConflictError, NotFoundError, AlreadyExistsError, ParseError,
    ProcessError, ClosedError, TryAgainError, StarvedError, CanceledError, BusyError, LimitError)}


def error_for(code, message):
    """The exception for a THEUS_E* code carrying message."""
    cls = BY_CODE.get(code)
    if cls is None:
        err = TheusError(message, code)
        err.name = f"THEUS_E?({code})"
        return err
    return cls(message)


__all__ = ["TheusError", "HandleError", "error_for", "BY_CODE"] + [c.__name__ for c in BY_CODE.values()]
