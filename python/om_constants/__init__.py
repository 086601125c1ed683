"""om-constants for Python hosts of onnx-mlir models.

Importing this module puts the om-constants library bundled in the package
in the process's global symbol scope (``RTLD_GLOBAL``), once. A model that
carries its own copy of onnx-mlir's constants loader (every model onnx-mlir
builds) and is opened afterwards, as onnx-mlir's ``PyRuntime`` opens models,
then loads its constants file through om-constants: once however many
sessions use it, shared, and freed with the last one.

Import it before ``PyRuntime`` and before the first model is opened::

    import om_constants
    from PyRuntime import OMExecutionSession

If a model opened with ``RTLD_GLOBAL`` before the import already holds the
loader's names, models opened afterwards keep their own loader: the import
then warns with :class:`LoaderShadowedWarning`. What no import can take over
(models linked ``-Bsymbolic``, with protected visibility, or opened with
``RTLD_DEEPBIND``) :func:`check` reports.

The library's own documentation (README.md and docs/ in the om-constants
repository) describes its behaviour and options (``OM_CONSTANT_*``).
"""

from __future__ import annotations

import ctypes
import dataclasses
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

__all__ = [
    "Error",
    "LoaderShadowedWarning",
    "Stats",
    "StrategyStats",
    "check",
    "cli_path",
    "library_path",
    "prepare",
    "stats",
    "trim",
    "version",
]

_HERE = Path(__file__).resolve().parent

if sys.platform == "win32":
    _LIBRARY, _TOOL = "om_constants.dll", "om-constants.exe"
elif sys.platform == "darwin":
    _LIBRARY, _TOOL = "libom_constants.dylib", "om-constants"
else:
    _LIBRARY, _TOOL = "libom_constants.so", "om-constants"

# The loader functions models call, every onnx-mlir version's (the names
# `om-constants check` looks for).
_LOADER_NAMES = (
    "omLoadConstantData",
    "omMMapBinaryFile",
    "omUnloadConstantData",
    "omGetExternalConstantAddr",
)


class Error(RuntimeError):
    """A call into om-constants failed; ``str(error)`` is its message (the
    file, the path tried, the OS error and the fix)."""


class LoaderShadowedWarning(RuntimeWarning):
    """Another library already held onnx-mlir's loader names in the global
    scope when ``om_constants`` was imported: models opened afterwards call
    that one, not om-constants."""


def library_path() -> Path:
    """The om-constants shared library bundled in this package (for
    ``LD_PRELOAD`` or a C host)."""
    return _HERE / _LIBRARY


def cli_path() -> Path:
    """The ``om-constants`` tool bundled in this package (also installed as
    the ``om-constants`` command)."""
    return _HERE / "bin" / _TOOL


def _load() -> ctypes.CDLL:
    path = library_path()
    if not path.is_file():
        raise ImportError(
            f"om_constants: the bundled library {path} is missing; reinstall the "
            "package (pip install --force-reinstall om-constants)"
        )
    try:
        lib = ctypes.CDLL(str(path), mode=os.RTLD_NOW | getattr(os, "RTLD_GLOBAL", 0))
    except OSError as e:
        raise ImportError(f"om_constants: cannot open {path}: {e}") from e
    lib.om_constants_version.restype = ctypes.c_char_p
    lib.om_constants_version.argtypes = []
    lib.om_constants_last_error.restype = ctypes.c_char_p
    lib.om_constants_last_error.argtypes = []
    lib.om_constants_stats.restype = ctypes.c_bool
    lib.om_constants_stats.argtypes = [ctypes.c_void_p]
    lib.om_constants_trim.restype = ctypes.c_uint64
    lib.om_constants_trim.argtypes = []
    return lib


class _DlInfo(ctypes.Structure):
    _fields_ = [
        ("dli_fname", ctypes.c_char_p),
        ("dli_fbase", ctypes.c_void_p),
        ("dli_sname", ctypes.c_char_p),
        ("dli_saddr", ctypes.c_void_p),
    ]


def _global_holder(lib: ctypes.CDLL) -> Optional[str]:
    """The file whose definition of a loader name the global scope resolves
    to, when it is not ``lib``'s; None when every name resolves to ``lib``."""
    if os.name != "posix":
        return None  # Windows has no global scope for models to bind in
    scope = ctypes.CDLL(None)  # dlopen(NULL): the global scope
    for name in _LOADER_NAMES:
        ours = ctypes.cast(getattr(lib, name), ctypes.c_void_p).value
        try:
            seen = ctypes.cast(getattr(scope, name), ctypes.c_void_p).value
        except AttributeError:
            continue
        if seen == ours:
            continue
        info = _DlInfo()
        dladdr = scope.dladdr
        dladdr.argtypes = [ctypes.c_void_p, ctypes.POINTER(_DlInfo)]
        if dladdr(seen, ctypes.byref(info)) and info.dli_fname:
            return os.fsdecode(info.dli_fname)
        return "another library"
    return None


def _take_over() -> ctypes.CDLL:
    lib = _load()
    holder = _global_holder(lib)
    if holder is not None:
        warnings.warn(
            f"om_constants: onnx-mlir's loader names in the global scope are {holder}'s, "
            "opened RTLD_GLOBAL before `import om_constants`: models opened from now on "
            "call that loader, not om-constants. Fix: import om_constants before PyRuntime "
            "and before the first model is opened.",
            LoaderShadowedWarning,
            stacklevel=3,
        )
    return lib


# Once per process: Python imports a module once, and dlopen of the same
# file again returns the same handle.
_lib = _take_over()


def _last_error() -> str:
    msg = _lib.om_constants_last_error()
    return msg.decode("utf-8", "replace") if msg else "unknown error"


def version() -> str:
    """The bundled library's version, e.g. ``"0.1.0"``."""
    return _lib.om_constants_version().decode()


class _CStrategyStats(ctypes.Structure):
    _fields_ = [("loads", ctypes.c_uint64), ("bytes", ctypes.c_uint64), ("nanos", ctypes.c_uint64)]


# `struct om_constants_stats`, field for field (include/om_constants.h).
_STATS_FIELDS = [
    ("size", ctypes.c_uint64),
    ("live_buffers", ctypes.c_uint64),
    ("kept_buffers", ctypes.c_uint64),
    ("references", ctypes.c_uint64),
    ("live_slots", ctypes.c_uint64),
    ("live_bytes", ctypes.c_uint64),
    ("loads", ctypes.c_uint64),
    ("shared", ctypes.c_uint64),
    ("waits", ctypes.c_uint64),
    ("failures", ctypes.c_uint64),
    ("timeouts", ctypes.c_uint64),
    ("fallbacks", ctypes.c_uint64),
    ("frees", ctypes.c_uint64),
    ("bytes_mapped", ctypes.c_uint64),
    ("bytes_read", ctypes.c_uint64),
    ("load_nanos", ctypes.c_uint64),
    ("mmap", _CStrategyStats),
    ("read", _CStrategyStats),
    ("chunked_mmap", _CStrategyStats),
    ("direct_bytes", ctypes.c_uint64),
    ("direct_fallbacks", ctypes.c_uint64),
    ("huge_page_bytes", ctypes.c_uint64),
]


class _CStats(ctypes.Structure):
    _fields_ = _STATS_FIELDS


@dataclasses.dataclass(frozen=True)
class StrategyStats:
    """Loads by one strategy: how many, their bytes, their nanoseconds."""

    loads: int
    bytes: int
    nanos: int


@dataclasses.dataclass(frozen=True)
class Stats:
    """A snapshot of the library's state (``struct om_constants_stats``).

    "Live" fields describe this moment; the others count since the process
    started. A field the bundled library does not fill (it is older than
    this module) is None.
    """

    live_buffers: Optional[int]
    """Buffers in memory now, including kept ones with no reference."""
    kept_buffers: Optional[int]
    """Of those, buffers kept with no reference (``OM_CONSTANT_KEEP=1``)."""
    references: Optional[int]
    """References held now, over all slots."""
    live_slots: Optional[int]
    """Slots that hold a buffer now."""
    live_bytes: Optional[int]
    """Bytes in live buffers now."""
    loads: Optional[int]
    """Files loaded (opened and mapped or read) since start."""
    shared: Optional[int]
    """Acquires served by a buffer another slot (or the keep cache) held."""
    waits: Optional[int]
    """Calls that waited for another thread's load."""
    failures: Optional[int]
    """Loads that failed."""
    timeouts: Optional[int]
    """Waits that ended in the timeout."""
    fallbacks: Optional[int]
    """``auto`` loads that fell back from ``mmap`` to ``read``."""
    frees: Optional[int]
    """Buffers freed (last release or trim)."""
    bytes_mapped: Optional[int]
    """Bytes mapped since start."""
    bytes_read: Optional[int]
    """Bytes read into heap buffers since start."""
    load_nanos: Optional[int]
    """Nanoseconds spent loading since start."""
    mmap: Optional[StrategyStats]
    """Loads by the ``mmap`` strategy."""
    read: Optional[StrategyStats]
    """Loads by the ``read`` strategy."""
    chunked_mmap: Optional[StrategyStats]
    """Loads by the ``chunked-mmap`` strategy."""
    direct_bytes: Optional[int]
    """Bytes read with ``O_DIRECT`` since start."""
    direct_fallbacks: Optional[int]
    """``read`` loads whose ``O_DIRECT`` was refused and fell back to buffered."""
    huge_page_bytes: Optional[int]
    """Bytes of live buffers mapped with 2 MiB pages now (Linux; 0 where the
    OS cannot tell)."""


def stats() -> Stats:
    """A snapshot of the library's counters. The struct is negotiated by
    size, as in C: fields past what the library filled are None."""
    raw = _CStats()
    raw.size = ctypes.sizeof(raw)
    if not _lib.om_constants_stats(ctypes.byref(raw)):
        raise Error(_last_error())
    filled = raw.size
    values: Dict[str, Any] = {}
    for name, kind in _STATS_FIELDS[1:]:
        field = getattr(_CStats, name)
        if field.offset + field.size > filled:
            values[name] = None
        elif kind is _CStrategyStats:
            s = getattr(raw, name)
            values[name] = StrategyStats(s.loads, s.bytes, s.nanos)
        else:
            values[name] = getattr(raw, name)
    return Stats(**values)


def trim() -> int:
    """Frees every buffer kept with no reference (``OM_CONSTANT_KEEP=1``);
    returns how many were freed."""
    return int(_lib.om_constants_trim())


PathLike = Union[str, "os.PathLike[str]"]


def _tool(args: Sequence[str], cwd: Optional[PathLike]) -> Any:
    """Runs the bundled tool with ``args`` (which include ``--json``) and
    returns its JSON; raises Error with its message if it printed none."""
    tool = cli_path()
    if not tool.is_file():
        raise Error(f"the bundled tool {tool} is missing; reinstall the package")
    try:
        done = subprocess.run(
            [str(tool), *args], cwd=cwd, capture_output=True, text=True, check=False
        )
    except OSError as e:
        raise Error(f"cannot run {tool}: {e}") from e
    try:
        return json.loads(done.stdout)
    except ValueError:
        why = done.stderr.strip() or f"exit status {done.returncode}, no output"
        raise Error(why) from None


def check(
    model: PathLike, *, host: str = "om-constants-first", cwd: Optional[PathLike] = None
) -> Dict[str, Any]:
    """What ``om-constants check --json MODEL`` says about a compiled model,
    as Python objects: which loader its calls reach, which constants file it
    needs, whether it will be found, and ``"loads"``, the verdict.

    ``host`` is the setup judged: ``"om-constants-first"`` (this process,
    once ``om_constants`` is imported), ``"plain"`` or ``"all"``. ``cwd`` is
    the folder the host runs in (relative names are searched from it; the
    default is this process's). Raises Error if the model cannot be read.
    """
    report = _tool(["check", "--json", "--host", host, os.fspath(model)], cwd)
    if isinstance(report, dict) and report.get("error"):
        raise Error(report["error"])
    return report


def prepare(*files: PathLike, cwd: Optional[PathLike] = None) -> List[Dict[str, Any]]:
    """``om-constants prepare --json FILE...``: lays each constants file's
    page cache in 2 MiB pages once, before the workers that map it start
    (Linux; docs/WEIGHTS-SPEED.md). Returns one dict per file, in order:
    ``file``, ``huge_page_share`` (0 to 1), ``prepared`` (at least 90%) and
    ``note`` (why not, when not). Raises Error, with the library's message,
    if a file cannot be loaded at all.
    """
    if not files:
        raise Error("prepare needs at least one constants file")
    report = _tool(["prepare", "--json", *map(os.fspath, files)], cwd)
    results = report["files"]
    failed = [f"{r['file']}: {r['error']}" for r in results if r.get("error")]
    if failed:
        raise Error("; ".join(failed))
    return results
