"""Ctrl-C and SIGTERM: one line with the command that resumes, exit 130 / 143, and whatever
fails while the run stops (an engine that died of the same signal) is no error of its own."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from contextlib import suppress

import click
import pytest

from harness.interrupts import resume_command, stop_on_signals

ARGV = ["/somewhere/bin/harness", "eval", "-c", "configs/my profile.yaml"]


@pytest.fixture(autouse=True)
def restore_handlers():
    """After a signal the handlers stay deaf until the exit; this process goes on."""
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    for signum, action in before.items():
        signal.signal(signum, action)


def interrupt_self(signum: int) -> None:
    os.kill(os.getpid(), signum)
    time.sleep(5)  # the handler raises here
    raise AssertionError("the signal did not interrupt")


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_stops_the_block_with_one_line(capsys, signum, code):
    closed = []
    with pytest.raises(SystemExit) as stop, stop_on_signals(ARGV):
        try:
            interrupt_self(signum)
        finally:
            closed.append(True)  # context managers on the way out still run
    assert stop.value.code == code
    assert closed == [True]
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    assert signal.Signals(signum).name in lines[0]
    assert lines[0].endswith(
        "resume with: /somewhere/bin/harness eval -c 'configs/my profile.yaml'"
    )


def test_an_error_after_the_signal_is_part_of_the_interruption(capsys):
    """An engine killed by the same signal fails the request in flight: still an interrupt."""
    with pytest.raises(SystemExit) as stop, stop_on_signals(ARGV):
        try:
            interrupt_self(signal.SIGTERM)
        finally:
            raise RuntimeError("EngineDeadError: the engine core died")
    assert stop.value.code == 143
    err = capsys.readouterr().err
    assert "EngineDeadError" not in err and "Traceback" not in err


def test_a_swallowed_interrupt_still_ends_the_command_as_interrupted(capsys):
    # vLLM's engine start-up swallows a KeyboardInterrupt in the same way
    with pytest.raises(SystemExit) as stop, stop_on_signals(ARGV), suppress(KeyboardInterrupt):
        interrupt_self(signal.SIGTERM)
    assert stop.value.code == 143


def test_further_signals_while_stopping_are_ignored(capsys):
    with pytest.raises(SystemExit) as stop, stop_on_signals(ARGV):
        try:
            interrupt_self(signal.SIGINT)
        finally:
            os.kill(os.getpid(), signal.SIGTERM)  # a second signal while closing engines
            time.sleep(0.2)
    assert stop.value.code == 130
    assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, signal.default_int_handler)


def test_once_the_exit_is_decided_no_signal_can_kill_the_process(capsys):
    """The interpreter's shutdown resets Python handlers to the default: a late Ctrl-C would
    end the process by SIGINT (exit -2) instead of 130, unless the signals are ignored."""
    with pytest.raises(SystemExit), stop_on_signals(ARGV):
        interrupt_self(signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN


def test_without_a_signal_errors_pass_and_handlers_are_restored():
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    with pytest.raises(ValueError), stop_on_signals(ARGV):
        raise ValueError("not an interrupt")
    with stop_on_signals(ARGV):
        pass
    assert {s: signal.getsignal(s) for s in before} == before


@pytest.mark.parametrize("exc", [KeyboardInterrupt(), click.exceptions.Abort()])
def test_a_keyboard_interrupt_without_a_handler_run_counts_as_ctrl_c(capsys, exc):
    with pytest.raises(SystemExit) as stop, stop_on_signals(ARGV):
        raise exc
    assert stop.value.code == 130
    # deaf until the exit, as after a signal of its own (no handler put back on the way out)
    assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN


def test_resume_command():
    assert resume_command(ARGV) == "/somewhere/bin/harness eval -c 'configs/my profile.yaml'"
    module = resume_command(["/x/harness/__main__.py", "verify", "--set", "a.b=c d"])
    assert shlex.split(module)[1:] == ["-m", "harness", "verify", "--set", "a.b=c d"]
    assert shlex.split(module)[0] in (sys.executable, os.path.basename(sys.executable))


@pytest.mark.integration  # a subprocess harness run
def test_the_cli_exits_143_on_sigterm_with_one_line(tmp_path):
    """The real entry point, on a command that waits: SIGTERM gives 143 and one line."""
    script = (
        "import time, harness.cli as cli\n"
        "@cli.main.command('wait')\n"
        "def wait():\n"
        "    print('waiting', flush=True)\n"
        "    time.sleep(60)\n"
        "cli.run()\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", script, "wait"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout.readline().strip() == "waiting"
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 143
    assert time.monotonic() - started < 5
    assert "Traceback" not in err
    [line] = [line for line in err.splitlines() if line.strip()]
    assert line == "interrupted (SIGTERM): engines and servers stopped; resume with: -c wait"


# Ctrl-C lands while exec() runs code built from a string (dataclasses, namedtuples: as when an
# import is under way); the harness is started as `python -m`, as the tests and the train stage
# start it.
EXEC_INTERRUPTED = """
import harness.cli as cli

def main(standalone_mode):
    exec("import time\\nprint('waiting', flush=True)\\nfor _ in range(600):\\n    time.sleep(0.1)")

cli.main = main
cli.run()
"""


@pytest.mark.integration  # a subprocess harness run
def test_ctrl_c_inside_code_run_by_exec_still_exits_130(tmp_path):
    """CPython remembers a KeyboardInterrupt that left code exec() ran from a string and, under
    `python -m`, kills itself by SIGINT at the very end (exit -2) unless the exit bypasses it."""
    (tmp_path / "exec_interrupted.py").write_text(EXEC_INTERRUPTED)
    process = subprocess.Popen(
        [sys.executable, "-m", "exec_interrupted", "rollouts"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert process.stdout.readline().strip() == "waiting"
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 130, err[-2000:]
    assert "Traceback" not in err
    [line] = [line for line in err.splitlines() if line.strip()]
    assert line.startswith("interrupted (SIGINT): ")
