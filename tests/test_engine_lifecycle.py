"""Engines make room: with `eval.stop_idle_engines`, every stage starts only the engines of its
current group (`Stage.engine_groups`) and stops the others first; without, every engine starts
once and stays up. Driven through the CLI on scripted roles, one model per role, with the
pool's start/stop events recorded (the scripted backend holds no memory: the events show what
would be up on a GPU). Training needs a real model, so the run brings its adapters instead.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from harness import evaluation
from harness.backends import Capabilities
from harness.backends.scripted import ScriptedBackend
from harness.cli import main
from harness.config import load_config
from harness.evaluation import run_stages
from harness.models.manifest import PROJECT_ROOT
from harness.pipeline import StageResult
from harness.policy import ADAPTER_WEIGHTS
from harness.roles import EngineEvent, RolePool
from harness.stages import STAGES, stage_named, stages_through
from tests.conftest import scripted_role

PROFILE = """
run_name: r
data: {max_prompts: 2}
rollouts:
  num_samples: 2
  models:
    - {backend: scripted, model: writer-a, rule: synthetic}
    - {backend: scripted, model: writer-b, rule: synthetic}
propose: {min_criteria: 2, max_criteria: 3}
refine: {iterations: 1, verifier: small}
train: {verifier: large}
eval: {compare: true, train: false, judge: true, overoptimization: true, theory: false}
roles:
  policy: {backend: scripted, model: policy, rule: synthetic}
  proposer: {backend: scripted, model: proposer, rule: synthetic}
  judge: {backend: scripted, model: judge, replies: ['{"verdict": "1"}']}
  verifier:
    - {name: small, backend: scripted, model: small, rule: synthetic}
    - {name: large, backend: scripted, model: large, rule: synthetic}
"""
MODELS = {"writer-a", "writer-b", "proposer", "small", "large", "policy", "judge"}
STAGE_FILES = ("candidates.jsonl", "rubrics.jsonl", "verdicts.jsonl", "rewards.jsonl",
               "judge/judgements.jsonl", "judge/summary.json", "judge/checkpoint-2.jsonl",
               "compare/large.verdicts.jsonl", "overoptimization.json")  # fmt: skip


def model(key: str) -> str:
    return json.loads(key)["model"]


def lifecycle(events: list[EngineEvent]) -> list[str]:
    """Starts and stops in order, as "+model" and "-model"."""
    sign = {"start": "+", "stop": "-"}
    return [sign[e.action] + model(e.keys[0]) for e in events if e.action in sign]


def entered_groups(events: list[EngineEvent]) -> list[set[str]]:
    """The groups entered, by model, empty ones and repeats of the same group left out."""
    groups: list[set[str]] = []
    for event in events:
        group = {model(k) for k in event.keys}
        if event.action == "enter" and group and (not groups or groups[-1] != group):
            groups.append(group)
    return groups


def check_never_more_than_the_group(events: list[EngineEvent]) -> None:
    """At every group entered and every start, the engines up are within the current group."""
    up: set[str] = set()
    group: set[str] | None = None
    for event in events:
        if event.action == "start":
            up.add(event.keys[0])
        elif event.action == "stop":
            up.discard(event.keys[0])
        else:
            group = set(event.keys)
        if event.action != "stop":
            assert group is not None and up <= group, (event, {model(k) for k in up})


def write_adapter(folder: Path) -> None:
    """What training leaves: a LoRA adapter (the scripted policy never reads it)."""
    folder.mkdir(parents=True)
    (folder / ADAPTER_WEIGHTS).write_bytes(folder.name.encode())
    (folder / "adapter_config.json").write_text('{"r": 8}')


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The profile, its templates, and a run folder holding a trained adapter and two
    checkpoints (so that judge and overoptimization run with training switched off); the
    scripted policy takes requests for an adapter (and answers as without one)."""
    with_adapters = Capabilities(adapters=True, cacheable=False)
    monkeypatch.setattr(ScriptedBackend, "capabilities", with_adapters)
    (tmp_path / "profile.yaml").write_text(PROFILE)
    shutil.copytree(PROJECT_ROOT / "prompts", tmp_path / "templates")
    train = tmp_path / "runs" / "r" / "train"
    write_adapter(train / "adapter")
    for step in (1, 2):
        write_adapter(train / "checkpoints" / f"checkpoint-{step}")
    return tmp_path


def settings(folder: Path, stop_idle: bool) -> list[str]:
    return [f"runs_dir={folder / 'runs'}", f"prompts_dir={folder / 'templates'}",
            f"eval.stop_idle_engines={str(stop_idle).lower()}"]  # fmt: skip


def run_cli(
    monkeypatch: pytest.MonkeyPatch, command: str, folder: Path, stop_idle: bool
) -> list[EngineEvent]:
    """`harness COMMAND` on the project in `folder`; the events of its role pool."""
    events: list[EngineEvent] = []
    observed = functools.partial(RolePool, observer=events.append)
    monkeypatch.setattr(evaluation, "RolePool", observed)
    overrides = [a for s in settings(folder, stop_idle) for a in ("--set", s)]
    result = CliRunner().invoke(main, [command, "-c", str(folder / "profile.yaml"), *overrides])
    assert result.exit_code == 0, f"{result.exception!r}\n{result.output[-3000:]}"
    return events


def planned_groups(folder: Path, stop_idle: bool, stage_names: list[str]) -> list[set[str]]:
    """The groups `Stage.engine_groups` gives the stages, by model, in order."""
    config = load_config(folder / "profile.yaml", settings(folder, stop_idle))
    groups = [{r.model for r in g} for n in stage_names
              for g in stage_named(n).engine_groups(config)]  # fmt: skip
    return [g for i, g in enumerate(groups) if i == 0 or groups[i - 1] != g]


def stage_outputs(folder: Path) -> dict[str, bytes]:
    return {name: (folder / "runs" / "r" / name).read_bytes() for name in STAGE_FILES}


def test_each_stage_runs_with_only_its_current_group_up(project, monkeypatch):
    events = run_cli(monkeypatch, "eval", project, stop_idle=True)
    check_never_more_than_the_group(events)
    run = [s.name for s in STAGES if s.name not in ("train", "theory")]
    assert entered_groups(events) == planned_groups(project, True, run)
    assert lifecycle(events) == [
        "+writer-a", "-writer-a", "+writer-b", "-writer-b",  # rollouts: one model at a time
        "+proposer", "+small", "-proposer",  # propose, refine (the verifier stays for verify)
        "-small", "+large",  # compare: verify's verifier measured first, then the large one
        "-large", "+policy", "-policy", "+judge",  # judge: both sides sampled, then judged
        "-judge", "+policy", "-policy", "+large", "-large", "+judge",  # overoptimization
        "-judge",  # the end of the run
    ]  # fmt: skip
    stored = json.loads((project / "runs" / "r" / "overoptimization.json").read_text())
    assert [row["step"] for row in stored["checkpoints"]] == [0, 1, 2]


def test_without_stopping_idle_engines_each_starts_once_and_records_are_the_same(
    project, monkeypatch
):
    events = run_cli(monkeypatch, "eval", project, stop_idle=False)
    starts = [e for e in lifecycle(events) if e.startswith("+")]
    assert sorted(starts) == sorted(f"+{m}" for m in MODELS)  # each once, none restarted
    assert lifecycle(events)[: len(MODELS)] == starts  # no engine stops before the end
    assert [e for e in events if e.action == "enter"] == []
    kept_up = stage_outputs(project)
    for path in (project / "runs" / "r").iterdir():  # all but what training left, to rerun
        if path.name != "train":
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    run_cli(monkeypatch, "eval", project, stop_idle=True)
    assert stage_outputs(project) == kept_up


def test_a_single_stage_command_makes_room_too(project, monkeypatch):
    events = run_cli(monkeypatch, "verify", project, stop_idle=True)
    check_never_more_than_the_group(events)
    assert lifecycle(events) == ["+writer-a", "-writer-a", "+writer-b", "-writer-b",
                                 "+proposer", "+small", "-proposer", "-small"]  # fmt: skip
    events = run_cli(monkeypatch, "compare-verifiers", project, stop_idle=True)
    assert lifecycle(events) == ["+small", "-small", "+large", "-large"]  # the rest is reused


def test_training_starts_with_only_the_train_verifier_up(project, monkeypatch):
    config = load_config(project / "profile.yaml", settings(project, True))
    events: list[EngineEvent] = []
    seen: list[list[str]] = []

    def train(run) -> StageResult:  # stands in for the trainer: what is up when it starts
        run.pool.role("verifier", config.verifier("large"))
        seen.append(sorted({model(k) for k in up_now(events)}))
        return StageResult("train", reused=False)

    monkeypatch.setattr(evaluation, "RolePool", functools.partial(RolePool, observer=events.append))
    stages = [*stages_through("verify"), dataclasses.replace(stage_named("train"), run=train)]
    run_stages(config, stages)
    assert seen == [["large"]]  # the proposer and the verify stage's verifier were stopped


def up_now(events: list[EngineEvent]) -> set[str]:
    up: set[str] = set()
    for event in events:
        if event.action == "start":
            up.add(event.keys[0])
        elif event.action == "stop":
            up.discard(event.keys[0])
    return up


def test_a_group_change_keeps_an_engine_its_roles_share(context):
    shared = scripted_role(["{}"])
    other = shared.model_copy(update={"model": "other"})
    events: list[EngineEvent] = []
    with RolePool(context, stop_idle=True, observer=events.append) as pool:
        pool.enter_group([shared, other])
        first = pool.role("proposer", shared)
        pool.role("judge", other)
        pool.enter_group([shared.model_copy(update={"name": "verifier"})])  # same key
        assert pool.role("verifier", shared).backend is first.backend
    assert lifecycle(events) == ["+scripted", "+other", "-other", "-scripted"]


def test_without_stop_idle_a_group_changes_nothing(context):
    events: list[EngineEvent] = []
    with RolePool(context, observer=events.append) as pool:
        first = pool.role("verifier", scripted_role(["{}"]))
        pool.enter_group([])
        assert pool.role("verifier", scripted_role(["{}"])).backend is first.backend
    assert lifecycle(events) == ["+scripted", "-scripted"]
