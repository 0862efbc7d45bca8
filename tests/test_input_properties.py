"""Property-based tests of every input loader: random bytes, random text in random encodings
and random JSON and YAML shapes (near the real schemas, so that they get past the first
check). Whatever the input, a loader returns or raises the project's own error, and that error
names the file. Examples are derandomised, so a CI run is repeatable.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.config import DEFAULT_PROFILE, ConfigError, load_config
from harness.datasets import (
    import_rubric_dataset,
    load_candidates,
    load_healthbench,
    load_prompts,
    load_rubrics,
    save_prompts,
)
from harness.generate import load_requests
from harness.jsonl import InputError, read_json
from harness.runstate import RunState
from harness.types import Sampling

PROPERTY = settings(
    max_examples=int(os.environ.get("HARNESS_PROPERTY_EXAMPLES", "60")),
    deadline=None,
    derandomize=not os.environ.get("HARNESS_PROPERTY_EXAMPLES"),
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
ENCODINGS = ["utf-8", "utf-8-sig", "utf-16", "utf-16-be", "utf-32", "latin-1", "cp1252"]

# --- strategies ---

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=12)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def either(good: st.SearchStrategy) -> st.SearchStrategy:
    """Mostly the right type, sometimes anything."""
    return st.one_of(good, good, json_values)


texts = st.text(max_size=30)
messages = st.lists(
    st.fixed_dictionaries(
        {"role": either(st.sampled_from(["system", "user", "assistant", "robot"]))},
        optional={"content": either(texts)},
    ),
    max_size=3,
)
weights = either(st.integers(-12, 12))

RECORDS: dict[str, st.SearchStrategy] = {
    "prompt": st.fixed_dictionaries(
        {},
        optional={
            "id": either(st.sampled_from(["p1", "p2", ""])),
            "prompt": either(texts),
            "messages": either(messages),
            "domain": either(texts),
            "metadata": json_values,
        },
    ),
    "healthbench": st.fixed_dictionaries(
        {},
        optional={
            "prompt_id": either(st.sampled_from(["h1", "h2", ""])),
            "prompt": either(messages),
            "rubrics": either(
                st.lists(
                    st.fixed_dictionaries(
                        {"criterion": either(texts), "points": weights},
                        optional={"tags": either(st.lists(texts, max_size=2))},
                    ),
                    max_size=3,
                )
            ),
            "example_tags": either(st.lists(texts, max_size=2)),
            "ideal_completions_data": either(
                st.fixed_dictionaries({"ideal_completion": either(texts)})
            ),
            "canary": texts,
        },
    ),
    "paper": st.fixed_dictionaries(
        {},
        optional={
            "prompt": either(texts),
            "rubrics": either(
                st.lists(
                    st.fixed_dictionaries({"criterion": either(texts), "weight": weights}),
                    max_size=3,
                )
            ),
            "number_of_criteria": either(st.integers(0, 4)),
            "total_weight": either(st.integers(-20, 20)),
        },
    ),
    "rubric": st.fixed_dictionaries(
        {},
        optional={
            "prompt_id": either(texts),
            "version": either(st.integers(-1, 3)),
            "criteria": either(
                st.lists(
                    st.fixed_dictionaries(
                        {"id": either(texts), "text": either(texts), "weight": weights}
                    ),
                    max_size=3,
                )
            ),
        },
    ),
    "candidate": st.fixed_dictionaries(
        {},
        optional={
            "id": either(texts),
            "prompt_id": either(texts),
            "text": either(texts),
            "model": either(texts),
            "sample_index": either(st.integers(-1, 3)),
        },
    ),
    "request": st.fixed_dictionaries(
        {},
        optional={
            "prompt": either(texts),
            "messages": either(messages),
            "json_schema": either(
                st.fixed_dictionaries(
                    {"type": either(st.sampled_from(["object", "string", "objekt"]))},
                    optional={"properties": json_values, "required": json_values},
                )
            ),
            "sampling": either(st.fixed_dictionaries({}, optional={"top_p": json_values})),
            "sample_index": either(st.integers(-1, 3)),
            "id": either(texts),
        },
    ),
}


def jsonl_text(records: st.SearchStrategy) -> st.SearchStrategy[str]:
    """Lines of JSON records, now and then a broken, blank or non-object line."""
    line = st.one_of(
        records.map(json.dumps),
        records.map(json.dumps),
        json_values.map(json.dumps),
        texts,
        st.just(""),
        st.just('{"id": "p1", "prompt": "half a surrogate pair \\ud800"}'),
    )
    return st.lists(line, max_size=4).map(lambda lines: "\n".join(lines) + "\n")


def encoded(text: st.SearchStrategy[str]) -> st.SearchStrategy[bytes]:
    return st.builds(
        lambda t, encoding: t.encode(encoding, errors="replace"), text, st.sampled_from(ENCODINGS)
    )


def file_bytes(text: st.SearchStrategy[str]) -> st.SearchStrategy[bytes]:
    """Well-formed UTF-8, the same text in another encoding, a few flipped bytes, or noise."""
    flipped = st.builds(
        lambda data, at, byte: data[:at] + bytes([byte]) + data[at + 1 :] if data else data,
        text.map(str.encode),
        st.integers(0, 200),
        st.integers(0, 255),
    )
    return st.one_of(text.map(str.encode), encoded(text), flipped, st.binary(max_size=200))


# --- the property ---


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("inputs")


def assert_clean(load: Callable[[Path], Any], path: Path) -> Any:
    """`load(path)` returns, or raises InputError or ConfigError naming `path`."""
    try:
        return load(path)
    except (InputError, ConfigError) as exc:
        assert str(path) in str(exc), str(exc)
        return None


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("name", "record", "load"),
    [
        ("prompts.jsonl", "prompt", load_prompts),
        ("healthbench.jsonl", "healthbench", load_healthbench),
        ("healthbench.jsonl", "healthbench", load_prompts),
        ("paper.jsonl", "paper", import_rubric_dataset),
        ("rubrics.jsonl", "rubric", load_rubrics),
        ("candidates.jsonl", "candidate", load_candidates),
        ("requests.jsonl", "request", lambda path: load_requests(path, Sampling())),
    ],
    ids=lambda v: v.__name__ if callable(v) else v,
)
def test_jsonl_loaders_fail_only_with_named_input_errors(folder, name, record, load):
    @PROPERTY
    @given(file_bytes(jsonl_text(RECORDS[record])))
    def check(data: bytes) -> None:
        assert_clean(load, write(folder / name, data))

    check()


@PROPERTY
@given(
    data=file_bytes(
        st.lists(RECORDS["prompt"], max_size=3).map(json.dumps) | json_values.map(json.dumps)
    )
)
def test_json_list_of_prompts(folder, data):
    assert_clean(load_prompts, write(folder / "paper_prompts.json", data))


@PROPERTY
@given(data=st.binary(max_size=300))
def test_parquet_noise(folder, data):
    assert_clean(load_prompts, write(folder / "prompts.parquet", data))


@PROPERTY
@given(data=file_bytes(jsonl_text(RECORDS["prompt"])))
def test_what_loads_as_prompts_saves_and_loads_the_same(folder, data):
    prompts = assert_clean(load_prompts, write(folder / "roundtrip.jsonl", data))
    if prompts:
        save_prompts(folder / "saved.jsonl", prompts)
        assert load_prompts(folder / "saved.jsonl") == prompts


def stage_records() -> st.SearchStrategy:
    entry = st.fixed_dictionaries({"fingerprint": either(texts)}, optional={"prompts": json_values})
    return st.one_of(
        st.dictionaries(st.sampled_from(["prompts", "rollouts"]), either(entry)), json_values
    )


@PROPERTY
@given(data=file_bytes(stage_records().map(json.dumps)))
def test_stages_json(folder, data):
    run_dir = folder / "run"
    run_dir.mkdir(exist_ok=True)
    path = write(run_dir / "stages.json", data)
    state = RunState(run_dir)
    assert_clean(lambda _: (state.is_done("prompts", "abc", []), state.counts("rollouts")), path)


@PROPERTY
@given(data=file_bytes(json_values.map(json.dumps)))
def test_run_folder_json(folder, data):
    assert_clean(read_json, write(folder / "summary.json", data))


# --- profiles ---

DEFAULT = yaml.safe_load(DEFAULT_PROFILE.read_text())


def key_paths(node: Any, path: tuple = ()) -> list[tuple]:
    paths = [path]
    if isinstance(node, dict):
        for key, value in node.items():
            paths += key_paths(value, (*path, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            paths += key_paths(value, (*path, i))
    return paths


PATHS = key_paths(DEFAULT)[1:]


def replaced(profile: Any, path: tuple, value: Any) -> Any:
    """`profile` with the value at `path` replaced (a copy)."""
    if not path:
        return value
    copy = dict(profile) if isinstance(profile, dict) else list(profile)
    copy[path[0]] = replaced(copy[path[0]], path[1:], value)
    return copy


mutated_profiles = st.builds(
    lambda changes: yaml.safe_dump(_apply(changes)),
    st.lists(st.tuples(st.sampled_from(PATHS), json_values), min_size=1, max_size=3),
)


def _apply(changes: list[tuple[tuple, Any]]) -> Any:
    profile = DEFAULT
    for path, value in changes:
        with suppress(KeyError, IndexError, TypeError):  # an earlier change removed the path
            profile = replaced(profile, path, value)
    return profile


YAML_TOKENS = ["a:", "roles:", "verifier:", " ", " ", "\n", "\n  ", "- ", "&x ", "*x ", "!!int ",
               "!!binary ", "!!float ", "!!timestamp ", "!!python/object ", "!foo ", "[", "]",
               "{", "}", ", ", "<<: ", "? ", "---\n", "'", '"', "\\ud800", "# c", "1", "0x1f",
               "2001-02-30", "%YAML 1.1\n", "|", ">", "\t", "~", "é"]  # fmt: skip
yaml_soup = st.lists(st.sampled_from(YAML_TOKENS), max_size=25).map("".join)


@PROPERTY
@given(data=file_bytes(st.one_of(mutated_profiles, yaml_soup, json_values.map(yaml.safe_dump))))
def test_profiles_fail_only_with_named_config_errors(folder, data):
    assert_clean(load_config, write(folder / "profile.yaml", data))
