import builtins
import re

import theus
from theus import errors


def _header_codes():
    """The THEUS_ERRNO_MAP entries, read from the library itself (theus_err_name)."""
    from theus._lib import LIB
    return {c: LIB.theus_err_name(c).decode() for c in range(-1, -27, -1)}


def test_one_class_per_code():
    codes = _header_codes()
    assert all(n.startswith("THEUS_E") for n in codes.values()), codes
    for code, name in codes.items():
        cls = errors.BY_CODE[code]
        assert issubclass(cls, theus.TheusError)
        assert cls.code == code
        assert cls.name == name, (code, cls, name)
    assert len(set(errors.BY_CODE.values())) == len(codes)


def test_named_classes_and_builtin_bases():
    assert theus.ConflictError.code == -16
    assert theus.ContractError.code == -15
    assert theus.ProcessError.code == -20
    assert theus.WorkerCrashed.code == -14
    assert theus.BudgetError.code == -8
    assert theus.StaleHandleError.code == -6
    assert issubclass(theus.TimeoutError, builtins.TimeoutError)
    assert issubclass(theus.TimeoutError, theus.TheusError)
    assert issubclass(theus.FreedHandleError, theus.StaleHandleError)
    assert issubclass(theus.AllocationTooLargeError, theus.BudgetError)
    assert issubclass(theus.NotFoundError, LookupError)


def test_error_keeps_message_and_code():
    e = errors.error_for(-16, "version conflict on 'domain.x'")
    assert isinstance(e, theus.ConflictError)
    assert e.code == -16 and e.message == "version conflict on 'domain.x'"
    assert re.fullmatch(r"version conflict on 'domain.x' \[THEUS_ECONFLICT\]", str(e))
    unknown = errors.error_for(-99, "odd")
    assert type(unknown) is theus.TheusError and unknown.code == -99


def test_missing_library_message(tmp_path):
    from conftest import run_python
    r = run_python("import theus", THEUS_LIBRARY=str(tmp_path / "nope.so"))
    assert r.returncode != 0
    assert "cannot load the C library libtheus" in r.stderr and "THEUS_LIBRARY" in r.stderr
