"""Datasets: prompt formats, HealthBench, and the published rubric schema, with errors that name
file, line (or row) and field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.datasets import (
    export_rubric_dataset,
    import_rubric_dataset,
    load_candidates,
    load_healthbench,
    load_prompts,
    load_rubrics,
    save_prompts,
)
from harness.jsonl import InputError, write_records
from harness.types import Candidate, ChatMessage, Criterion, Prompt, Rubric

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
HEALTHBENCH_SAMPLE = SHARED_DATA / "healthbench_oss_eval_first30.jsonl"

PROMPTS = [
    Prompt(id="a", prompt="What is 2+2?", domain="math", metadata={"level": 1}),
    Prompt(
        id="b",
        prompt=(
            ChatMessage(role="system", content="Be brief."),
            ChatMessage(role="user", content="Name a prime."),
        ),
        metadata={"tags": ["x", "y"], "nested": {"k": None}},
    ),
    Prompt(id="c", prompt="Héllo ✓"),
]


def write_lines(path: Path, *objects: object) -> Path:
    path.write_text("".join(json.dumps(o) + "\n" for o in objects), encoding="utf-8")
    return path


def error_of(function, *args) -> str:
    """The InputError message of a call (checked with `in`: paths hold regex characters)."""
    with pytest.raises(InputError) as error:
        function(*args)
    return str(error.value)


# --- prompts ---


def test_jsonl_prompts_take_strings_message_lists_and_messages(tmp_path):
    path = write_lines(
        tmp_path / "prompts.jsonl",
        {"id": "s", "prompt": "hi", "domain": "chat", "metadata": {"k": 1}},
        {"id": "m", "prompt": [{"role": "user", "content": "yo"}]},
        {
            "id": "n",
            "messages": [{"role": "system", "content": "x"}, {"role": "user", "content": "y"}],
        },
    )
    prompts = load_prompts(path)
    assert [p.id for p in prompts] == ["s", "m", "n"]
    assert prompts[0].prompt == "hi" and prompts[0].domain == "chat"
    assert prompts[0].metadata == {"k": 1}
    assert prompts[1].messages == (ChatMessage(role="user", content="yo"),)
    assert [m.role for m in prompts[2].messages] == ["system", "user"]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ({"prompt": "no id"}, "prompts.jsonl:2: id: missing"),
        ({"id": "x", "prompt": "p", "messages": []}, "prompts.jsonl:2: prompt: give either"),
        ({"id": "x", "prompt": ""}, "prompts.jsonl:2: prompt: empty"),
        ({"id": "x", "prompt": [{"role": "robot", "content": "c"}]}, "prompts.jsonl:2: prompt."),
        ({"id": "x", "prompt": "p", "colour": "red"}, "prompts.jsonl:2: colour: Extra inputs"),
    ],
)
def test_bad_prompt_lines_name_file_line_and_field(tmp_path, line, expected):
    path = write_lines(tmp_path / "prompts.jsonl", {"id": "ok", "prompt": "fine"}, line)
    assert expected in error_of(load_prompts, path)


def test_duplicate_ids_name_both_lines(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text('{"id": "x", "prompt": "a"}\n\n{"id": "x", "prompt": "b"}\n')
    assert f"{path}:3: id: duplicate id 'x' (first at line 1)" in error_of(load_prompts, path)


def test_unknown_extension_lists_supported_formats(tmp_path):
    path = tmp_path / "prompts.csv"
    path.write_text("id,prompt\n")
    message = error_of(load_prompts, path)
    assert "prompts.csv: unsupported" in message
    assert ".jsonl" in message
    assert ".parquet" in message
    assert "save_to_disk" in message


def test_missing_file_is_named(tmp_path):
    assert "nope.parquet: cannot read" in error_of(load_prompts, tmp_path / "nope.parquet")


@pytest.mark.parametrize("name", ["prompts.jsonl", "prompts.parquet"])
def test_save_and_load_round_trip(tmp_path, name):
    path = tmp_path / "out" / name
    save_prompts(path, PROMPTS)
    assert load_prompts(path) == PROMPTS
    assert [p.name for p in path.parent.iterdir()] == [name]


def test_parquet_errors_name_row_and_field(tmp_path):
    import pyarrow
    import pyarrow.parquet

    path = tmp_path / "prompts.parquet"
    rows = [{"id": "a", "prompt": "x"}, {"id": None, "prompt": "y"}]
    pyarrow.parquet.write_table(pyarrow.Table.from_pylist(rows), path)
    assert f"{path}:row 1: id: missing" in error_of(load_prompts, path)


def test_corrupt_parquet_is_an_input_error(tmp_path):
    path = tmp_path / "prompts.parquet"
    path.write_bytes(b"not parquet")
    assert "prompts.parquet: cannot read as parquet" in error_of(load_prompts, path)


def hf_rows(prompts: list[Prompt]) -> list[dict]:
    return [
        {
            "id": p.id,
            "prompt": p.prompt if isinstance(p.prompt, str) else None,
            "messages": None if isinstance(p.prompt, str) else [m.model_dump() for m in p.prompt],
            "domain": p.domain,
        }
        for p in prompts
    ]


def test_hf_dataset_and_dataset_dict_saved_to_disk(tmp_path):
    import datasets

    plain = [p.model_copy(update={"metadata": {}}) for p in PROMPTS]
    dataset = datasets.Dataset.from_list(hf_rows(plain))
    dataset.save_to_disk(str(tmp_path / "single"))
    assert load_prompts(tmp_path / "single") == plain

    splits = datasets.DatasetDict({"train": dataset, "test": dataset.select([0])})
    splits.save_to_disk(str(tmp_path / "splits"))
    assert load_prompts(tmp_path / "splits") == plain

    datasets.DatasetDict({"a": dataset, "b": dataset}).save_to_disk(str(tmp_path / "ambiguous"))
    message = error_of(load_prompts, tmp_path / "ambiguous")
    assert "ambiguous: no 'train' split" in message
    assert "['a', 'b']" in message


def test_directory_that_is_not_a_saved_dataset(tmp_path):
    assert f"{tmp_path}: not a dataset written by save_to_disk" in error_of(load_prompts, tmp_path)


def test_paper_json_list_gets_positional_ids(tmp_path):
    path = tmp_path / "sample_prompts.json"
    path.write_text(
        json.dumps([{"prompt": "first"}, {"prompt": "second"}, {"id": "z", "prompt": "t"}])
    )
    prompts = load_prompts(path)
    assert [(p.id, p.prompt) for p in prompts] == [
        ("prompt-0", "first"),
        ("prompt-1", "second"),
        ("z", "t"),
    ]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('{"prompt": "x"}', "expected a JSON list"),
        ('[{"prompt": "x"}, "y"]', "sample_prompts.json:item 1: expected an object"),
        ('[{"prompt": "x"}, {"prompt": 3}]', "sample_prompts.json:item 1: prompt."),
        ('[{"prompt": "x"},', "sample_prompts.json:1: not valid JSON"),
    ],
)
def test_bad_paper_json_names_the_item(tmp_path, content, expected):
    path = tmp_path / "sample_prompts.json"
    path.write_text(content)
    assert expected in error_of(load_prompts, path)


# --- HealthBench ---

HEALTHBENCH_LINES = [
    {
        "prompt_id": "hb-1",
        "prompt": [
            {"role": "user", "content": "I have a headache."},
            {"role": "assistant", "content": "How long?"},
            {"role": "user", "content": "Two days."},
        ],
        "rubrics": [
            {"criterion": "Asks about red flags.", "points": 7, "tags": ["axis:completeness"]},
            {"criterion": "Recommends opioids.", "points": -9, "tags": ["axis:accuracy", "x"]},
        ],
        "example_tags": ["theme:context_seeking"],
        "ideal_completions_data": {
            "ideal_completion": "See a doctor if it worsens.",
            "ideal_completions_group": "Group 1",
            "ideal_completions_ref_completions": ["other model"],
        },
        "canary": "do not train",
    },
    {
        "prompt_id": "hb-2",
        "prompt": [{"role": "user", "content": "Is water wet?"}],
        "rubrics": [{"criterion": "Answers kindly.", "points": 3, "tags": []}],
        "example_tags": [],
        "ideal_completions_data": None,
    },
]


def test_healthbench_prompts_rubrics_and_ideal_candidates(tmp_path):
    data = load_healthbench(write_lines(tmp_path / "hb.jsonl", *HEALTHBENCH_LINES))
    first, second = data.prompts
    assert first.id == "hb-1" and first.domain == "health"
    assert [m.role for m in first.messages] == ["user", "assistant", "user"]
    assert first.metadata == {"example_tags": ["theme:context_seeking"]}
    assert second.metadata == {"example_tags": []}
    assert data.rubrics[0] == Rubric(
        prompt_id="hb-1",
        version=0,
        criteria=(
            Criterion(id="c1", text="Asks about red flags.", weight=7, tags=("axis:completeness",)),
            Criterion(id="c2", text="Recommends opioids.", weight=-9, tags=("axis:accuracy", "x")),
        ),
    )
    assert [c.weight for c in data.rubrics[1].criteria] == [3]
    assert data.candidates == [
        Candidate(
            id="hb-1:ideal:0",
            prompt_id="hb-1",
            text="See a doctor if it worsens.",
            model="physician-ideal",
            sample_index=0,
            reference=True,
        )
    ]


def test_load_prompts_detects_healthbench(tmp_path):
    prompts = load_prompts(write_lines(tmp_path / "hb.jsonl", *HEALTHBENCH_LINES))
    assert [p.id for p in prompts] == ["hb-1", "hb-2"]


def with_points(points: list) -> dict:
    rubrics = [{"criterion": f"c{i}", "points": p, "tags": []} for i, p in enumerate(points)]
    return {**HEALTHBENCH_LINES[1], "prompt_id": "bad", "rubrics": rubrics}


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (with_points([5, 0]), "hb.jsonl:3: rubrics.1.points: Value error, cannot be 0"),
        (with_points([11]), "hb.jsonl:3: rubrics.0.points: Input should be less than or equal"),
        (with_points([-11]), "hb.jsonl:3: rubrics.0.points: Input should be greater than or equal"),
        (with_points([2.5]), "hb.jsonl:3: rubrics.0.points: Input should be a valid integer"),
        (with_points([]), "hb.jsonl:3: rubrics: List should have at least 1 item"),
        ({**HEALTHBENCH_LINES[1], "prompt_id": "hb-1"}, "hb.jsonl:3: prompt_id: duplicate 'hb-1'"),
        (
            {**HEALTHBENCH_LINES[1], "prompt_id": "bad", "ideal_completions_data": {}},
            "hb.jsonl:3: ideal_completions_data.ideal_completion: Field required",
        ),
    ],
)
def test_bad_healthbench_lines_name_line_and_field(tmp_path, line, expected):
    path = write_lines(tmp_path / "hb.jsonl", *HEALTHBENCH_LINES, line)
    assert expected in error_of(load_healthbench, path)


# --- the published rubric dataset ---


def test_rubric_dataset_round_trip_keeps_the_newest_rubric(tmp_path):
    rubrics = [
        Rubric(prompt_id="a", criteria=(Criterion(id="c1", text="old", weight=1),)),
        Rubric(
            prompt_id="a",
            version=2,
            criteria=(
                Criterion(id="x", text="Correct answer.", weight=3),
                Criterion(id="y", text="Rambles.", weight=-2),
            ),
        ),
        Rubric(prompt_id="a", version=1, criteria=(Criterion(id="c1", text="mid", weight=1),)),
        Rubric(prompt_id="b", criteria=(Criterion(id="c1", text="Names 2.", weight=2),)),
        Rubric(prompt_id="c", criteria=(Criterion(id="c1", text="Greets.", weight=1),)),
    ]
    path = tmp_path / "rubrics.jsonl"
    assert export_rubric_dataset(path, PROMPTS, rubrics) == 3
    first = json.loads(path.read_text(encoding="utf-8").splitlines()[0])
    assert first == {
        "prompt": "What is 2+2?",
        "rubrics": [
            {"criterion": "Correct answer.", "weight": 3},
            {"criterion": "Rambles.", "weight": -2},
        ],
        "number_of_criteria": 2,
        "total_weight": 1,
    }

    prompts, imported = import_rubric_dataset(path)
    assert [p.prompt for p in prompts] == [p.render() for p in PROMPTS]
    assert [[(c.id, c.text, c.weight) for c in r.criteria] for r in imported] == [
        [("c1", "Correct answer.", 3), ("c2", "Rambles.", -2)],
        [("c1", "Names 2.", 2)],
        [("c1", "Greets.", 1)],
    ]
    assert all(p.id.startswith("r-") and len(p.id) == 14 for p in prompts)
    assert [r.prompt_id for r in imported] == [p.id for p in prompts]
    assert import_rubric_dataset(path) == (prompts, imported)


def test_export_refuses_prompts_without_a_rubric(tmp_path):
    rubric = Rubric(prompt_id="a", criteria=(Criterion(id="c1", text="t", weight=1),))
    message = error_of(export_rubric_dataset, tmp_path / "r.jsonl", PROMPTS, [rubric])
    assert "no rubric for 2 prompt(s)" in message
    assert "'b'" in message
    assert "'c'" in message
    assert not (tmp_path / "r.jsonl").exists()


def paper_record(**changes) -> dict:
    record = {
        "prompt": "Explain tides.",
        "rubrics": [
            {"criterion": "Mentions the moon.", "weight": 3},
            {"criterion": "b", "weight": 1},
        ],
        "number_of_criteria": 2,
        "total_weight": 4,
    }
    return {**record, **changes}


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        (
            paper_record(number_of_criteria=3),
            "r.jsonl:2: number_of_criteria: says 3 but rubrics has 2",
        ),
        (paper_record(total_weight=5), "r.jsonl:2: total_weight: says 5 but the weights sum to 4"),
        (paper_record(rubrics=[{"criterion": "a", "weight": 0}]), "r.jsonl:2: rubrics.0.weight"),
        (paper_record(rubrics=[{"criterion": "a", "weight": 12}]), "r.jsonl:2: rubrics.0.weight"),
        (paper_record(rubrics=[{"criterion": "a", "weight": "x"}]), "r.jsonl:2: rubrics.0.weight"),
        (paper_record(rubrics=[]), "r.jsonl:2: rubrics: List should have at least 1 item"),
        (paper_record(prompt="Explain tides."), "r.jsonl:2: prompt: the same prompt as line 1"),
    ],
)
def test_bad_rubric_dataset_lines_name_line_and_field(tmp_path, record, expected):
    path = write_lines(tmp_path / "r.jsonl", paper_record(), record)
    assert expected in error_of(import_rubric_dataset, path)


# --- the pipeline's own files ---


def test_candidates_and_rubrics_read_back(tmp_path):
    candidates = [Candidate(id="a:0", prompt_id="a", text="4", model="m")]
    rubrics = [Rubric(prompt_id="a", criteria=(Criterion(id="c1", text="t", weight=2),))]
    write_records(tmp_path / "c.jsonl", candidates)
    write_records(tmp_path / "r.jsonl", rubrics)
    assert load_candidates(tmp_path / "c.jsonl") == candidates
    assert load_rubrics(tmp_path / "r.jsonl") == rubrics
    write_lines(tmp_path / "bad.jsonl", {"prompt_id": "a", "criteria": []})
    assert "bad.jsonl:1: criteria" in error_of(load_rubrics, tmp_path / "bad.jsonl")


# --- the real HealthBench sample (../shared next to the repository) ---

needs_sample = pytest.mark.skipif(
    not HEALTHBENCH_SAMPLE.exists(),
    reason=f"HealthBench sample not found at {HEALTHBENCH_SAMPLE} (shared data is optional)",
)


@needs_sample
def test_real_healthbench_sample():
    data = load_healthbench(HEALTHBENCH_SAMPLE)
    weights = [c.weight for r in data.rubrics for c in r.criteria]
    assert len(data.prompts) == len(data.rubrics) == 30
    assert len(weights) == 352
    assert sum(w < 0 for w in weights) == 102
    assert len(data.candidates) == 24
    assert load_prompts(HEALTHBENCH_SAMPLE) == data.prompts


@needs_sample
def test_real_healthbench_survives_the_published_schema(tmp_path):
    data = load_healthbench(HEALTHBENCH_SAMPLE)
    path = tmp_path / "healthbench_rubrics.jsonl"
    export_rubric_dataset(path, data.prompts, data.rubrics)
    prompts, rubrics = import_rubric_dataset(path)
    assert [p.prompt for p in prompts] == [p.render() for p in data.prompts]
    assert [[(c.id, c.text, c.weight) for c in r.criteria] for r in rubrics] == [
        [(c.id, c.text, c.weight) for c in r.criteria] for r in data.rubrics
    ]
