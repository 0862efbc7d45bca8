"""Bad inputs a hospital's IT team tried (issue 11, points 5 and 6), run through the real
`harness` command: each ends with exit 2, no traceback, and a message that names the file (and
the line and key where there is one), before any backend starts, within 2 s of CPU time.

Every role of these profiles is an `openai` backend whose API key variable is unset: were a
case ever to reach a backend, it would fail at once with exit 3 instead of starting an engine.
"""

from __future__ import annotations

import errno
import json
import os
import resource
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.cli import run

PROJECT = Path(__file__).resolve().parents[1]
ROLE = "{backend: openai, model: m, base_url: 'http://127.0.0.1:9/v1', api_key_env: HARNESS_NO_KEY}"
CPU_LIMIT_S = 2.0


def profile_text(folder: Path, prompts: Path, **top: str) -> str:
    lines = [f"runs_dir: {folder / 'runs'}", "run_name: r", f"data: {{prompts: {prompts}}}"]
    lines += [f"{key}: {value}" for key, value in top.items()]
    lines += ["roles:"] + [f"  {r}: {ROLE}" for r in ("policy", "proposer", "verifier", "judge")]
    return "\n".join(lines) + "\n"


def good_prompts(folder: Path) -> Path:
    path = folder / "prompts.jsonl"
    path.write_text('{"id": "p1", "prompt": "Is 38.5 C a fever?"}\n')
    return path


def write_profile(folder: Path, text: str | bytes | None = None) -> Path:
    path = folder / "profile.yaml"
    text = profile_text(folder, good_prompts(folder)) if text is None else text
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def run_dir(folder: Path) -> Path:
    path = folder / "runs" / "r"
    path.mkdir(parents=True, exist_ok=True)
    return path


# --- each case writes its bad input and returns the command and what stderr must contain ---


@dataclass(frozen=True)
class Case:
    args: list[str]
    expected: list[str]


def latin1_prompts(tmp: Path) -> Case:
    prompts = tmp / "latin1.jsonl"
    line = '{"id": "p1", "prompt": "fièvre à 38,5"}\n'
    prompts.write_bytes(line.encode("latin-1"))
    profile = write_profile(tmp, profile_text(tmp, prompts))
    offset = f"byte 0xe8 at byte offset {line.index('è')}"
    return Case(["verify", "-c", str(profile)], [f"{prompts}:1: not UTF-8", offset])


def utf16_prompts(tmp: Path) -> Case:
    profile = write_profile(tmp)
    prompts = tmp / "prompts.jsonl"
    prompts.write_bytes('{"id": "p1", "prompt": "fever"}\n'.encode("utf-16"))
    return Case(["verify", "-c", str(profile)], [f"{prompts}:1: not UTF-8", "UTF-16"])


def latin1_profile(tmp: Path) -> Case:
    text = profile_text(tmp, good_prompts(tmp)) + "# réglages de l'hôpital\n"
    profile = write_profile(tmp, text.encode("latin-1"))
    return Case(["verify", "-c", str(profile)], [f"{profile}:9: not UTF-8", "Latin-1"])


def utf16_profile(tmp: Path) -> Case:
    profile = write_profile(tmp, profile_text(tmp, good_prompts(tmp)).encode("utf-16"))
    return Case(["verify", "-c", str(profile)], [f"{profile}:1: not UTF-8", "UTF-16"])


def unwritable_output(tmp: Path) -> Case:
    requests = tmp / "requests.jsonl"
    requests.write_text('{"prompt": "hi"}\n')
    (tmp / "blocker").write_text("a file, not a folder")
    output = tmp / "blocker" / "out.jsonl"
    args = ["generate", "-c", str(write_profile(tmp)), "--input", str(requests), "--output"]
    return Case([*args, str(output)], [f"{tmp / 'blocker'}: Not a directory"])


def unwritable_out(tmp: Path) -> Case:
    (tmp / "blocker").write_text("a file, not a folder")
    return Case(["theory", "--out", str(tmp / "blocker" / "plots")], [f"{tmp / 'blocker'}:"])


def run_folder_is_a_file(tmp: Path) -> Case:
    profile = write_profile(tmp)
    (tmp / "runs").mkdir()
    (tmp / "runs" / "r").write_text("a file where the run folder goes")
    return Case(["verify", "-c", str(profile)], [f"{tmp / 'runs' / 'r'}:"])


def truncated_stages_json(tmp: Path) -> Case:
    profile = write_profile(tmp)
    stages = run_dir(tmp) / "stages.json"
    stages.write_text('{"prompts": {"fingerprint": "ab')
    return Case(["verify", "-c", str(profile)], [f"{stages}:1: the run's stage record is damaged"])


def stages_json_of_wrong_shape(tmp: Path) -> Case:
    profile = write_profile(tmp)
    stages = run_dir(tmp) / "stages.json"
    stages.write_text('["prompts"]')
    return Case(["verify", "-c", str(profile)], [f"{stages}: the run's stage record is damaged"])


def damaged_summary_for_report(tmp: Path) -> Case:
    folder = run_dir(tmp)
    (folder / "config.yaml").write_text(profile_text(tmp, good_prompts(tmp)))
    (folder / "summary.json").write_text('{"run": {"profile": ')
    return Case(["report", str(folder)], [f"{folder / 'summary.json'}:1: not valid JSON"])


def newer_summary_for_report(tmp: Path) -> Case:
    folder = run_dir(tmp)
    (folder / "config.yaml").write_text(profile_text(tmp, good_prompts(tmp)))
    (folder / "summary.json").write_text('{"schema_version": 2, "run": {"profile": "p"}}')
    return Case(["report", str(folder)], [f"{folder / 'summary.json'}: summary schema_version 2"])


def corrupt_cache(tmp: Path) -> Case:
    profile = write_profile(tmp)
    cache = run_dir(tmp) / "cache" / "completions.sqlite"
    cache.parent.mkdir()
    cache.write_bytes(b"SQLite format 3\x00" + b"\xde\xad" * 600)
    return Case(["verify", "-c", str(profile)], [f"{cache}: the completion cache", "cache=false"])


def malformed_set_value(tmp: Path) -> Case:
    item = "roles.judge.sampling={temperature: 0"
    return Case(["verify", "-c", str(write_profile(tmp)), "--set", item], [f"--set '{item}'"])


def bad_set_is_blamed_on_the_set(tmp: Path) -> Case:
    item = "roles.verifier.sampling.max_tokens=-1"
    expected = [f"--set {item}: roles.verifier.0.sampling.max_tokens"]
    return Case(["verify", "-c", str(write_profile(tmp)), "--set", item], expected)


def set_without_value(tmp: Path) -> Case:
    return Case(["verify", "-c", str(write_profile(tmp)), "--set", "offline"], ["--set 'offline'"])


def empty_profile(tmp: Path) -> Case:
    profile = write_profile(tmp, "# nothing here yet\n")
    return Case(["verify", "-c", str(profile)], [f"{profile}: the profile is empty"])


def empty_verifier_list(tmp: Path) -> Case:
    text = profile_text(tmp, good_prompts(tmp)).replace(f"  verifier: {ROLE}", "  verifier: []")
    profile = write_profile(tmp, text)
    return Case(["verify", "-c", str(profile)], [f"{profile}:7: roles.verifier", "empty list"])


def missing_verifier(tmp: Path) -> Case:
    text = profile_text(tmp, good_prompts(tmp)).replace(f"  verifier: {ROLE}\n", "")
    profile = write_profile(tmp, text)
    return Case(["verify", "-c", str(profile)], [f"{profile}: role 'verifier' is not configured"])


def duplicate_key(tmp: Path) -> Case:
    text = profile_text(tmp, good_prompts(tmp)) + "run_name: other\n"
    profile = write_profile(tmp, text)
    return Case(["verify", "-c", str(profile)], [f"{profile}:9: key 'run_name'", "line 2"])


def duplicate_nested_key(tmp: Path) -> Case:
    text = profile_text(tmp, good_prompts(tmp), verify="{mode: all, mode: each}")
    profile = write_profile(tmp, text)
    return Case(["verify", "-c", str(profile)], [f"{profile}:4: key 'mode'", "line 4, column 10"])


def alias_bomb(tmp: Path) -> Case:
    bomb = ["a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for prev, name in zip("abcdefgh", "bcdefghi"):
        bomb.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 9) + "]")
    profile = write_profile(tmp, profile_text(tmp, good_prompts(tmp)) + "\n".join(bomb) + "\n")
    return Case(["verify", "-c", str(profile)], [f"{profile}:", "alias bomb"])


def recursive_alias(tmp: Path) -> Case:
    profile = write_profile(tmp, profile_text(tmp, good_prompts(tmp)) + "loop: &l [*l]\n")
    return Case(["verify", "-c", str(profile)], [f"{profile}:9: an alias refers to"])


def empty_prompts_file(tmp: Path) -> Case:
    prompts = tmp / "empty.jsonl"
    prompts.write_text("\n\n")
    profile = write_profile(tmp, profile_text(tmp, prompts))
    return Case(["verify", "-c", str(profile)], [f"{prompts}: no prompts"])


def empty_requests_file(tmp: Path) -> Case:
    requests = tmp / "requests.jsonl"
    requests.write_text("")
    args = ["generate", "-c", str(write_profile(tmp)), "--input", str(requests)]
    return Case(args, [f"{requests}: no requests"])


def invalid_json_schema(tmp: Path) -> Case:
    requests = tmp / "requests.jsonl"
    requests.write_text('{"prompt": "ok"}\n{"prompt": "hi", "json_schema": {"type": "objekt"}}\n')
    args = ["generate", "-c", str(write_profile(tmp)), "--input", str(requests)]
    return Case(args, [f"{requests}:2: json_schema: not a valid JSON Schema"])


@pytest.fixture(params=["../outside", "/tmp/elsewhere", "a/b", "..", "a\\tb"])
def run_name_outside_runs(request, tmp_path: Path) -> Case:
    text = profile_text(tmp_path, good_prompts(tmp_path)).replace("run_name: r", "run_name: X")
    profile = write_profile(tmp_path, text.replace("run_name: X", f"run_name: '{request.param}'"))
    return Case(["verify", "-c", str(profile)], [f"{profile}:2: run_name", "not a folder name"])


BAD_INPUTS: list[Callable[[Path], Case]] = [
    # point 5: tracebacks instead of one-line errors
    latin1_prompts,
    utf16_prompts,
    latin1_profile,
    utf16_profile,
    unwritable_output,
    unwritable_out,
    run_folder_is_a_file,
    truncated_stages_json,
    stages_json_of_wrong_shape,
    damaged_summary_for_report,
    newer_summary_for_report,
    corrupt_cache,
    malformed_set_value,
    bad_set_is_blamed_on_the_set,
    set_without_value,
    # point 6: late or missing validation
    empty_profile,
    empty_verifier_list,
    missing_verifier,
    duplicate_key,
    duplicate_nested_key,
    alias_bomb,
    recursive_alias,
    empty_prompts_file,
    empty_requests_file,
    invalid_json_schema,
]


def harness(*args: str) -> tuple[subprocess.CompletedProcess, float]:
    """Run `python -m harness ARGS`; the result and the CPU seconds it used."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    env = {**os.environ, "PYTHONPATH": str(PROJECT), "HARNESS_DEBUG": ""}
    env.pop("HARNESS_NO_KEY", None)
    done = subprocess.run([sys.executable, "-m", "harness", *args], cwd=PROJECT, env=env,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return done, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def assert_one_line_error(case: Case) -> None:
    done, cpu_s = harness(*case.args)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    problems = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(problems) == 1 and problems[0].startswith("error: "), done.stderr
    for part in case.expected:
        assert part in problems[0]
    assert cpu_s < CPU_LIMIT_S, f"{cpu_s:.1f} s of CPU before failing"


@pytest.mark.integration  # a subprocess harness run
@pytest.mark.parametrize("bad_input", BAD_INPUTS, ids=lambda f: f.__name__)
def test_bad_input_is_one_line_with_exit_2(tmp_path: Path, bad_input):
    assert_one_line_error(bad_input(tmp_path))


@pytest.mark.integration  # a subprocess harness run
def test_run_name_cannot_leave_runs_dir(run_name_outside_runs: Case):
    assert_one_line_error(run_name_outside_runs)


@pytest.mark.integration  # a subprocess harness run
def test_debug_shows_the_traceback(tmp_path: Path):
    profile = write_profile(tmp_path, "")
    done, _ = harness("--debug", "verify", "-c", str(profile))
    assert done.returncode == 2
    assert "Traceback" in done.stderr and done.stderr.rstrip().splitlines()[-1].startswith("error:")


# --- errors a root test process cannot cause for real: raised where the OS would raise them ---


def run_cli(monkeypatch, capsys, *args: str, debug: bool = False) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["harness", *args])
    monkeypatch.setenv("HARNESS_DEBUG", "1" if debug else "")
    with pytest.raises(SystemExit) as exit_info:
        run()
    return exit_info.value.code, capsys.readouterr().err


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (errno.EACCES, "Permission denied; check its permissions"),
        (errno.EROFS, "Read-only file system; the file system is read-only"),
        (errno.ENOSPC, "No space left on device; the disk is full"),
    ],
)
def test_unwritable_run_folder_names_the_file(tmp_path, monkeypatch, capsys, code, expected):
    profile = write_profile(tmp_path)

    def refuse(self, *args, **kwargs):
        raise OSError(code, os.strerror(code), str(self))

    monkeypatch.setattr(Path, "write_text", refuse)
    status, err = run_cli(monkeypatch, capsys, "verify", "-c", str(profile))
    assert status == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    config_yaml = tmp_path / "runs" / "r" / "config.yaml"
    assert err.startswith(f"error: {config_yaml}: {os.strerror(code)}; ")
    assert expected in err


def test_full_disk_during_an_atomic_write_names_the_file_not_its_temporary(tmp_path, monkeypatch):
    from harness.jsonl import write_atomic

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    target = tmp_path / "verdicts.jsonl"
    with pytest.raises(OSError) as error:
        write_atomic(target, ["{}"])
    assert error.value.filename == str(target) and error.value.errno == errno.ENOSPC
    assert list(tmp_path.iterdir()) == []  # the temporary file is gone


def test_unexpected_error_is_one_line_without_debug(monkeypatch, capsys):
    import harness.cli

    def broken(*args, **kwargs):
        raise KeyError("surprise")

    monkeypatch.setattr(harness.cli, "prepare_run", broken)
    status, err = run_cli(monkeypatch, capsys, "verify")
    assert status == 1 and "Traceback" not in err
    assert (
        err.strip() == "error: internal error: KeyError: 'surprise' (--debug shows the traceback)"
    )


def test_harness_debug_variable_shows_the_traceback(monkeypatch, capsys, tmp_path):
    status, err = run_cli(
        monkeypatch, capsys, "verify", "-c", str(tmp_path / "nope.yaml"), debug=True
    )
    assert status == 2 and "Traceback" in err
    assert err.rstrip().splitlines()[-1].startswith(f"error: {tmp_path / 'nope.yaml'}: cannot read")


def test_a_stray_decoding_error_names_the_file_it_came_from(monkeypatch, capsys, tmp_path):
    import harness.cli

    template = tmp_path / "verdict.user.j2"
    template.write_bytes(b"caf\xe9")

    def read(*args, **kwargs):
        path = template  # noqa: F841 - what the error boundary looks for
        template.read_text(encoding="utf-8")

    monkeypatch.setattr(harness.cli, "prepare_run", read)
    status, err = run_cli(monkeypatch, capsys, "verify")
    assert status == 2
    assert (
        err.strip()
        == f"error: {template}: not UTF-8 text (byte 0xe9 at position 3): save it as UTF-8"
    )


def test_damaged_cache_fails_before_the_backend_starts(tmp_path, monkeypatch):
    from harness.backends.base import RunContext
    from harness.backends.cache import CacheError
    from harness.config import RoleConfig
    from harness.roles import build_role

    started = []
    monkeypatch.setattr("harness.roles.create_backend", lambda *a: started.append(a))
    context = RunContext(run_dir=tmp_path)
    context.cache_dir.mkdir(parents=True)
    (context.cache_dir / "completions.sqlite").write_bytes(b"not a database" * 100)
    with pytest.raises(CacheError, match=r"completions\.sqlite: the completion cache is damaged"):
        build_role("verifier", RoleConfig(backend="vllm", model="m"), context)
    assert started == []


def test_cache_with_unparseable_rows_is_damaged(tmp_path):
    from harness.backends.cache import CacheError, CompletionCache

    path = tmp_path / "completions.sqlite"
    cache = CompletionCache(path)
    with cache._db:
        cache._db.execute("INSERT INTO completions VALUES ('k', '{not json')")
    with pytest.raises(CacheError, match="a stored answer does not parse"):
        cache.get_many(["k"])
    cache.close()
    assert sqlite3.connect(path).execute("SELECT count(*) FROM completions").fetchone() == (1,)


def test_stages_json_still_reads_a_good_record(tmp_path):
    from harness.runstate import RunState

    state = RunState(tmp_path)
    state.mark_done("prompts", "abc", {"prompts": 3})
    assert state.counts("prompts") == {"prompts": 3}
    assert json.loads((tmp_path / "stages.json").read_text())["prompts"]["fingerprint"] == "abc"
