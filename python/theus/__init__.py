"""theus: drive the theus-c engine from Python.

Heavy arrays are numpy arrays over the engine's shared-memory arena (no copy),
writable only as drafts and read-only once published; errors are exceptions
carrying the engine's message. Pure Python over libtheus (ctypes): set
THEUS_LIBRARY=/path/to/libtheus.so to use a build tree. See docs/python.md.
"""
from . import errors
from ._lib import ENV_VAR, LIB_PATH
from .arena import Arena, STAT_NAMES
from .engine import Context, DraftArray, Engine, Job, Snapshot
from .errors import *  # noqa: F401,F403 - one class per THEUS_E* code
from .live import LiveReader, LiveWriter

TheusEngine = Engine  # the name the Theus Python framework uses

__version__ = "0.1.0"
__all__ = ["Arena", "Engine", "TheusEngine", "Snapshot", "Job", "Context", "DraftArray", "LiveWriter",
           "LiveReader", "STAT_NAMES", "LIB_PATH", "ENV_VAR", "errors"] + errors.__all__
