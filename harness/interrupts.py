"""Ctrl-C (SIGINT) and SIGTERM stop any command promptly and cleanly.

The first signal raises KeyboardInterrupt in the main thread; on the way out every engine and
server is stopped by its context manager; then one line says that the run was interrupted and
which command resumes it (the same one: a run resumes from its run folder), and the process
exits with 130 (SIGINT) or 143 (SIGTERM). Whatever the unwinding meets after the signal (an
engine that died of it, a request cut off) belongs to the interruption: no traceback, no
misleading error. Further signals are ignored while the run stops, so that stopping the
engines is not cut short (SIGKILL still ends everything: servers die with the harness).

    with stop_on_signals():
        main()
"""

from __future__ import annotations

import shlex
import shutil
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click

SIGNALS = (signal.SIGINT, signal.SIGTERM)


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
        _stop(received[0] if received else signal.SIGINT, argv or sys.argv)
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
    raise SystemExit(128 + signum) from None
