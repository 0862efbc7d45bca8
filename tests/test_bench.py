"""The pure parts of `harness bench`: answer parsing, the workload, goals, tables, the compact
verifier mode on the scripted backend."""

import jsonschema
import pytest
from rich.console import Console

from harness.backends.scripted import ScriptedBackend
from harness.bench import (
    BENCH_KEYS,
    SMOKE,
    build_jobs,
    compute_goals,
    parse_paper_answer,
    print_bench,
)
from harness.prompts import PROMPTS_DIR
from harness.roles import Role
from harness.types import Prompt, json_schema_of, verdict_type
from harness.verifier import compact_schema, parse_compact, verdicts_schema, verify

from .conftest import scripted_role

IDS = ["c1", "c2", "c3"]
PROMPTS = [Prompt(id=f"p{k}", prompt=f"Question number {k} about tea?") for k in range(3)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"c1": "yes", "c2": "no", "c3": "YES"}', ["yes", "no", "yes"]),
        ('Sure! Here it is:\n{"c1":"no","c2":"yes","c3":"no"}\nDone.', ["no", "yes", "no"]),
        # not JSON (trailing comma): the paper's fallback finds the pairs one by one
        ('{"c1": "yes", "c2": "no",}', ["yes", "no", None]),
        ('"c3": "No" and "c1" : "yes"', ["yes", None, "no"]),
        ('{"c1": "maybe", "c2": 1, "c3": "no"}', [None, None, "no"]),
        ("c1 yes c2 no c3 yes", [None, None, None]),
        ("", [None, None, None]),
    ],
)
def test_paper_parser_finds_what_the_authors_regex_finds(text, expected):
    assert list(parse_paper_answer(text, IDS).values()) == expected


def test_compact_answers_parse_by_position_or_not_at_all():
    assert parse_compact("yny", IDS) == {"c1": "yes", "c2": "no", "c3": "yes"}
    for bad in ("yn", "ynyy", "yxy", "YNY", None, ["y", "n", "y"]):
        assert parse_compact(bad, IDS) == dict.fromkeys(IDS)


def test_compact_schema_admits_exactly_one_letter_per_criterion():
    schema = compact_schema(3)
    jsonschema.validate("nny", schema)
    for bad in ("nn", "nnyy", "nnx", 3):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)


def test_all_mode_schema_is_built_once_per_rubric():
    ids = ("c1", "c2")
    assert verdicts_schema(ids) is verdicts_schema(ids)
    assert verdicts_schema(ids) == json_schema_of(verdict_type(list(ids)))


def test_compact_mode_verdicts_and_unscored_answers(context):
    replies = {"p0": '"yny"', "p1": '"ny"'}  # p1's answer has one letter too few

    def script(request):
        return replies["p1" if "number 1" in request.messages[-1].content else "p0"]

    backend = ScriptedBackend("verifier", scripted_role(max_attempts=2), context, script=script,
                              validate=False)  # fmt: skip
    role = Role("verifier", backend.config, backend)
    jobs = build_jobs(PROMPTS[:2], 2, 3)
    verdicts = verify(role, jobs, "compact", PROMPTS_DIR)
    by_prompt = {}
    for verdict in verdicts:
        by_prompt.setdefault(verdict.prompt_id, []).append(verdict.met)
    assert by_prompt == {"p0": [True, False, True], "p1": [None, None, None]}
    assert all(v.unscored_reason.startswith("unparseable") for v in verdicts if v.met is None)
    request = backend.calls[0]
    assert request.json_schema == compact_schema(3)
    text = request.messages[-1].content
    assert text.index("</rubric>") < text.index("<response>")  # rubric first: shared prefix


def test_workload_is_deterministic_grouped_and_paper_sized():
    jobs = build_jobs(PROMPTS, 7, 20)
    assert [j.candidate.id for j in jobs] == [j.candidate.id for j in build_jobs(PROMPTS, 7, 20)]
    assert [j.prompt.id for j in jobs] == sorted(j.prompt.id for j in jobs)
    assert {len(j.rubric.criteria) for j in jobs} == {20}
    assert len({j.candidate.text for j in jobs}) == 7
    rubrics = {j.prompt.id: j.rubric for j in jobs}
    assert all(j.rubric is rubrics[j.prompt.id] for j in jobs)  # one rubric per prompt
    assert SMOKE.num_responses <= 8 and not SMOKE.train and SMOKE.transformers_requests == 0


def layout(rate, unparseable=0):
    return {"criteria_per_s": rate, "prompt_tokens": 10, "output_tokens": 5, "criteria": 20,
            "prefix_cache_hit_rate": 0.5, "unparseable": unparseable, "seconds": 1.0}  # fmt: skip


def hand_made_result():
    return {
        "engine_ceiling": {
            "all": {"criteria_per_s": 100.0, "harness_criteria_per_s": 95.0,
                    "harness_efficiency": 0.95, "prefix_cache_hit_rate": 0.8},
            "compact": {"criteria_per_s": 400.0, "harness_criteria_per_s": 300.0,
                        "harness_efficiency": 0.75, "prefix_cache_hit_rate": 0.8},
        },
        "layouts": {"paper": layout(60.0, unparseable=20), "all": layout(95.0),
                    "each": layout(50.0), "compact": layout(300.0)},
        "grammar": {"xgrammar": {"backend": "vllm", "requests": 4, "constrained_s": 1.3,
                                 "unconstrained_s": 1.0, "slowdown": 1.3, "valid": 4},
                    "guidance": {"skipped": "smoke run"}},
        "scaling": {"all": [{"responses": 16, "criteria_per_s": 90.0}],
                    "compact": [{"responses": 16, "criteria_per_s": 280.0}]},
        "train_step_split": {
            "all": {"step_s": 2.0, "generation_s": 0.5, "reward_s": 1.0, "update_s": 0.5,
                    "verifier_share": 0.5},
            "compact": {"step_s": 1.5, "generation_s": 0.5, "reward_s": 0.5, "update_s": 0.5,
                        "verifier_share": 0.33},
        },
        "machine": {"cpu": "test cpu", "cores": 2, "gpu": None},
        "workload": {"default_mode": "all", "responses": 8, "criteria_per_rubric": 20,
                     "prompts": 4, "verifier": "tiny-s", "grammar": "xgrammar",
                     "seconds": 50.0, "smoke": False},
    }  # fmt: skip


def test_goals_from_a_hand_made_result():
    goals = compute_goals(hand_made_result())
    assert goals["harness_efficiency"]["met"] and goals["harness_efficiency"]["measured"] == 0.95
    assert not goals["default_vs_paper"]["met"]
    assert goals["default_vs_paper"]["measured"] == pytest.approx(95 / 60, abs=1e-4)
    assert not goals["xgrammar_slowdown"]["met"]
    assert goals["unparseable_ours"] == {**goals["unparseable_ours"], "measured": 0, "met": True}
    assert goals["verifier_share"]["measured"] == 0.5
    assert "compact" in goals["verifier_share"]["detail"]


def test_goals_when_grammar_and_training_were_skipped():
    result = hand_made_result()
    result["grammar"] = {"xgrammar": {"skipped": "smoke run"}}
    result["train_step_split"] = {"skipped": "smoke run"}
    result["layouts"]["each"] = layout(50.0, unparseable=3)
    goals = compute_goals(result)
    assert "xgrammar_slowdown" not in goals and "verifier_share" not in goals
    assert goals["unparseable_ours"]["measured"] == 3 and not goals["unparseable_ours"]["met"]


def test_tables_show_every_section_and_unmet_goals():
    result = hand_made_result()
    result["goals"] = compute_goals(result)
    console = Console(record=True, width=200)
    print_bench(result, console)
    text = console.export_text()
    for heading in ("Engine ceiling", "layouts", "Grammar", "Scaling", "step split", "Goals"):
        assert heading in text
    assert "not met" in text and "smoke run" in text


def test_bench_json_keys():
    assert set(BENCH_KEYS) == {"engine_ceiling", "layouts", "grammar", "scaling",
                               "train_step_split", "machine", "goals", "workload"}  # fmt: skip
