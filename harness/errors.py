"""What a failed command prints: one line per problem that names the file (and the line and
key where known) and what to do, with an exit status; never a traceback unless asked for.

Exit status: 2 for anything the user can fix on their side (a profile, a data file, a file or
folder that cannot be read or written, a damaged run or cache file), 3 for a backend that
cannot serve, 4 for a stage left unfinished because too many of its answers are unscored
(its records kept for the rerun), 1 for anything else. `harness --debug ...` (or
HARNESS_DEBUG=1) adds the traceback.

    harness --debug verify -c configs/tiny.yaml
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

DEBUG_VARIABLE = "HARNESS_DEBUG"
INPUT_STATUS = 2
BACKEND_STATUS = 3
UNSCORED_STATUS = 4

# file-system errors the user can act on even when the OS names no file (a full disk on write)
FILE_HINTS = {
    errno.EACCES: "check its permissions, or choose another folder (runs_dir, --output, --out)",
    errno.EPERM: "check its permissions, or choose another folder (runs_dir, --output, --out)",
    errno.EROFS: "the file system is read-only: point runs_dir (or --output, --out) elsewhere",
    errno.ENOSPC: "the disk is full: free space, or point runs_dir at another disk",
    errno.EDQUOT: "the disk quota is used up: free space, or point runs_dir at another disk",
    errno.EISDIR: "a folder where a file is expected",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.ENOENT: "",
    errno.EEXIST: "a file is in the way of a folder of that name",
    errno.ENAMETOOLONG: "",
    errno.EMFILE: "too many open files",
    errno.EIO: "",
}


def debugging() -> bool:
    return os.environ.get(DEBUG_VARIABLE, "") not in ("", "0")


def explain(exc: Exception) -> tuple[str, int]:
    """The message (without `error: `) and exit status for an error that ended a command."""
    from harness.backends.base import BackendError
    from harness.config import ConfigError
    from harness.jsonl import InputError
    from harness.models.manifest import ModelNotFoundError
    from harness.offline import OfflineError
    from harness.verifier import UnscoredShareError

    if isinstance(exc, UnscoredShareError):
        return str(exc), UNSCORED_STATUS
    if isinstance(exc, ConfigError | InputError | OfflineError | ModelNotFoundError):
        return str(exc), INPUT_STATUS
    if isinstance(exc, BackendError):
        return str(exc), BACKEND_STATUS
    if isinstance(getattr(exc, "exit_status", None), int):  # a failed child process's status
        return str(exc), exc.exit_status  # type: ignore[attr-defined]
    if isinstance(exc, UnicodeDecodeError):
        return _not_utf8(exc), INPUT_STATUS
    if isinstance(exc, OSError) and (exc.filename is not None or exc.errno in FILE_HINTS):
        return _file_problem(exc), INPUT_STATUS
    if isinstance(exc, OSError):
        return f"{exc} (--debug shows where)", 1
    return f"internal error: {type(exc).__name__}: {exc} (--debug shows the traceback)", 1


def _file_problem(exc: OSError) -> str:
    names = " -> ".join(str(n) for n in (exc.filename, exc.filename2) if n is not None)
    reason = exc.strerror or str(exc)
    hint = FILE_HINTS.get(exc.errno or 0, "")
    text = f"{reason}; {hint}" if hint else reason
    return f"{names}: {text}" if names else text


def _not_utf8(exc: UnicodeDecodeError) -> str:
    # the loaders name the file and line themselves; this is the net under everything else
    byte = exc.object[exc.start : exc.start + 1].hex()
    problem = f"not UTF-8 text (byte 0x{byte} at position {exc.start}): save it as UTF-8"
    path = _file_being_read(exc)
    return f"{path}: {problem}" if path else f"a file is {problem}"


def _file_being_read(exc: BaseException) -> str | None:
    """The innermost `path` or `filename` variable on the way to the error: a decoding error
    knows the bytes it failed on, never the file they came from."""
    found = None
    frame = exc.__traceback__
    while frame is not None:
        for name in ("path", "filename"):
            value = frame.tb_frame.f_locals.get(name)
            if isinstance(value, str | Path):
                found = str(value)
        frame = frame.tb_next
    return found
