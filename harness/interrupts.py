"""Ctrl-C (SIGINT) and SIGTERM stop any command promptly and cleanly.

The first signal raises KeyboardInterrupt in the main thread; on the way out every engine and
server is stopped by its context manager; then one line says that the run was interrupted and
which command resumes it (the same one: a run resumes from its run folder), and the process
exits with 130 (SIGINT) or 143 (SIGTERM). Whatever the unwinding meets after the signal (an
engine that died of it, a request cut off) belongs to the interruption: no traceback, no
misleading error. Further signals are ignored while the run stops, so that stopping the
engines is not cut short (SIGKILL still ends everything: servers die with the harness).

Once the line is printed the exit status is final: the entry point catches `Interrupted` and
leaves through `leave` (atexit handlers, streams flushed, `os._exit`). The interpreter's own
end cannot be trusted with it: a KeyboardInterrupt raised inside code that `exec()` ran from a
string (dataclasses and namedtuples build their methods so, and an import may be running them
when Ctrl-C comes) sets a flag in CPython that, under `python -m`, makes the interpreter kill
itself by SIGINT after finalising (exit -2), whatever status the program chose.

    try:
        with stop_on_signals():
            main()
    except Interrupted as stop:
        leave(stop.code)
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shlex
import shutil
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

import click

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(SystemExit):
    """The command was interrupted; its line is printed, `code` is 128 + the signal."""


def resume_command(argv: list[str]) -> str:
    """The command line that ran this process, as a user would type it again."""
    program = Path(argv[0])
    if program.name == "__main__.py":  # python -m harness
        head = [_typed(sys.executable), "-m", "harness"]
    else:
        head = [_typed(argv[0])]
    return shlex.join([*head, *argv[1:]])


def _typed(path: str) -> str:
    """`path` by its bare name when PATH finds that very file under it, else `path`."""
    name = Path(path).name
    found = shutil.which(name)
    same = found is not None and Path(found).resolve() == Path(path).resolve()
    return name if same else path


@contextmanager
def stop_on_signals(argv: list[str] | None = None) -> Iterator[None]:
    """Turn SIGINT and SIGTERM into a clean stop of the block (see the module docstring)."""
    received: list[int] = []

    def handler(signum: int, frame: object) -> None:
        if not received:
            received.append(signum)
            raise KeyboardInterrupt

    previous = {s: signal.signal(s, handler) for s in SIGNALS}
    try:
        yield
    except BaseException as exc:
        if not received and not isinstance(exc, (KeyboardInterrupt, click.exceptions.Abort)):
            raise
        if not received:  # an interrupt no handler of ours raised: the handlers stay deaf too
            received.append(signal.SIGINT)
        _stop(received[0], argv or sys.argv)
    else:
        if received:  # a library swallowed the interrupt: honour it now
            _stop(received[0], argv or sys.argv)
    finally:
        if not received:  # once stopping, stay deaf to further signals until the exit
            for signum, action in previous.items():
                signal.signal(signum, action)


def _stop(signum: int, argv: list[str]) -> None:
    # Deaf for good: the interpreter's shutdown resets Python-level handlers to the default,
    # under which a late signal (a second Ctrl-C) would kill the process instead of exit 130.
    for other in SIGNALS:
        signal.signal(other, signal.SIG_IGN)
    name = signal.Signals(signum).name
    click.echo(
        f"interrupted ({name}): engines and servers stopped; resume with: {resume_command(argv)}",
        err=True,
    )
    raise Interrupted(128 + signum) from None


def leave(code: int) -> NoReturn:
    """End the process with `code` at once: atexit handlers run and the streams are flushed,
    then `os._exit`, past the interpreter's end (see the module docstring)."""
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)
