"""The pure parts of `harness bench`: answer parsing, the workload, interleaved rounds and the
median ratios, verdict agreement, goals, tables, the compact verifier mode on the scripted
backend."""

import jsonschema
import pytest
from rich.console import Console

from harness.backends.scripted import ScriptedBackend
from harness.bench import (
    FULL,
    FULL_GPU,
    SMOKE,
    SMOKE_MODEL,
    bench_size,
    bench_verifier,
    build_jobs,
    ceiling_modes,
    compare_ratios,
    compute_agreement,
    compute_goals,
    compute_ratios,
    layout_entry,
    parse_paper_answer,
    per_round,
    print_bench,
    round_steps,
    run_rounds,
    summarize,
    workload_fingerprint,
)
from harness.bench.goals import yes_rate
from harness.bench.rounds import relative_difference, round_order, same_workload
from harness.config import VerifyConfig, load_config
from harness.models.manifest import PROJECT_ROOT
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
    verdicts = verify(role, jobs, VerifyConfig(mode="compact", logprobs=0), PROMPTS_DIR)
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
    assert SMOKE.rounds >= 2  # a smoke run still takes a median over interleaved rounds


# --- interleaved rounds and their ratios ---


def test_rounds_run_side_by_side_and_reverse_every_other_round():
    ran = []
    steps = {name: (lambda name=name: ran.append(name) or {"seconds": 1.0}) for name in "ABC"}
    readings = run_rounds(steps, 3)
    assert ran == list("ABCCBAABC") == round_order("ABC", 3)
    assert {name: len(r) for name, r in readings.items()} == {"A": 3, "B": 3, "C": 3}


@pytest.mark.parametrize(
    ("deadline", "min_rounds", "expected"),
    [
        (None, None, 4),  # no deadline: every planned round
        (80.0, 2, 4),  # the 4th round ends at 80 s: in time
        (70.0, 2, 3),  # after 3 rounds (60 s) another would end at 80 s: stop
        (10.0, 2, 2),  # late from the start: the minimum still runs
        (10.0, None, 4),  # no minimum given: the planned rounds are the minimum
    ],
)
def test_rounds_stop_before_the_deadline_after_the_minimum(deadline, min_rounds, expected):
    now = [0.0]

    def step():
        now[0] += 10.0
        return {"seconds": 10.0}

    steps = {"A": step, "B": step}  # a round lasts 20 s on the fake clock
    readings = run_rounds(steps, 4, deadline=deadline, min_rounds=min_rounds, clock=lambda: now[0])
    assert [len(r) for r in readings.values()] == [expected, expected]


@pytest.mark.parametrize(
    ("values", "median", "low", "high"),
    [
        ([1.0], 1.0, 1.0, 1.0),
        ([1.2, 0.8, 1.0], 1.0, 0.8, 1.2),  # odd: the middle value, whatever the order
        ([1.0, 2.0], 1.5, 1.0, 2.0),  # even: the mean of the middle two
        ([0.9, 5.0, 1.1, 1.0, 0.95], 1.0, 0.9, 5.0),  # one disturbed round moves no median
    ],
)
def test_summary_is_the_median_of_the_rounds_with_its_range(values, median, low, high):
    summary = summarize(values)
    assert (summary["median"], summary["min"], summary["max"]) == (median, low, high)
    assert summary["rounds"] == len(values) and summary["per_round"] == values


@pytest.mark.parametrize(
    ("numerators", "denominators", "expected"),
    [
        ([2.0, 3.0], [1.0, 2.0], [2.0, 1.5]),
        ([1.0], [0.0], [0.0]),
        ([], [], []),
    ],
)
def test_ratios_are_taken_within_each_round(numerators, denominators, expected):
    assert per_round(numerators, denominators) == expected


def test_ratios_need_the_same_rounds_on_both_sides():
    with pytest.raises(ValueError):
        per_round([1.0, 2.0], [1.0])
    with pytest.raises(ValueError):
        summarize([])


@pytest.mark.parametrize(
    ("a", "b", "difference"),
    [(1.0, 1.1, 0.1), (1.1, 1.0, 0.1), (2.0, 2.0, 0.0), (0.95, 0.74, 0.95 / 0.74 - 1)],
)
def test_relative_difference_is_symmetric(a, b, difference):
    assert relative_difference(a, b) == pytest.approx(difference)


def test_two_runs_agree_when_every_shared_ratio_is_within_ten_percent():
    def run(**medians):
        return {"ratios": {k: {"median": v} for k, v in medians.items()}}

    compared = compare_ratios(run(x=1.0, y=2.0, only_a=3.0), run(x=1.05, y=2.5))
    assert set(compared) == {"x", "y"}
    assert compared["x"]["within"] and not compared["y"]["within"]
    assert compared["y"]["difference"] == 0.25


def steps(seconds_by_step, criteria=100):
    """Hand-made readings: step -> seconds of each round."""
    return {
        name: [{"seconds": s, "criteria": criteria} for s in rounds]
        for name, rounds in seconds_by_step.items()
    }


def test_ratios_from_hand_made_rounds():
    readings = steps({
        "paper": [4.0, 8.0, 4.0],  # the machine slowed down in round 2 ...
        "all": [2.0, 4.0, 2.0],  # ... for both sides of the pair alike
        "ceiling:all": [1.9, 3.8, 1.8],
        "compact": [1.0, 2.0, 1.0],
        "ceiling:compact": [0.5, 1.0, 0.5],
        "each": [4.0, 8.0, 2.0],
        "grammar:xgrammar": [2.2, 4.4, 1.8],
        "grammar:guidance": [3.0, 3.0, 3.0],
        "free:guidance": [2.0, 1.5, 2.0],
    })  # fmt: skip
    ratios = compute_ratios(readings)
    assert ratios["all_vs_paper"]["per_round"] == [2.0, 2.0, 2.0]
    assert ratios["efficiency_all"]["median"] == 0.95
    assert ratios["efficiency_all"]["min"] == 0.9
    assert ratios["efficiency_compact"]["median"] == 0.5
    assert ratios["compact_vs_all"]["median"] == 2.0
    assert ratios["each_vs_paper"]["per_round"] == [1.0, 1.0, 2.0]
    # the profile's grammar against the ceiling (same tokens, no grammar), another against
    # its own unconstrained twin
    assert ratios["xgrammar_slowdown"]["per_round"] == [1.1579, 1.1579, 1.0]
    assert "ceiling:all" in ratios["xgrammar_slowdown"]["detail"]
    assert ratios["guidance_slowdown"]["per_round"] == [1.5, 2.0, 1.5]
    assert "free:guidance" in ratios["guidance_slowdown"]["detail"]


def test_ratios_record_how_busy_the_machine_was_in_each_round():
    readings = steps({"paper": [2.0, 2.0], "all": [1.0, 1.0]})
    for reading, share in zip(readings["paper"] + readings["all"], (0.0, 0.3, 0.1, 0.05)):
        reading["other_cpu_share"] = share
    assert compute_ratios(readings)["all_vs_paper"]["other_cpu_share_per_round"] == [0.1, 0.3]


def test_ratios_leave_out_pairs_that_were_not_measured():
    ratios = compute_ratios(steps({"paper": [2.0], "all": [1.0]}))
    assert set(ratios) == {"all_vs_paper"}


def test_layout_entry_takes_medians_and_flags_verdicts_that_changed():
    def reading(seconds, met):
        return {"seconds": seconds, "criteria": 4, "prompt_tokens": 40, "output_tokens": 8,
                "prefix_cache_hit_rate": 0.5, "unparseable": met.count(None), "requests": 2,
                "met": met}  # fmt: skip

    same = [reading(s, [True, False, True, None]) for s in (2.0, 1.0, 4.0)]
    entry = layout_entry(same)
    assert entry["criteria_per_s"] == 2.0 and entry["criteria_per_s_rounds"] == [2.0, 4.0, 1.0]
    assert entry["seconds"] == 2.0 and entry["unparseable"] == 1
    assert entry["same_verdicts_every_round"]
    changed = same[:2] + [reading(1.0, [True, True, True, None])]
    assert not layout_entry(changed)["same_verdicts_every_round"]


# --- agreement of the layouts' verdicts with `all` ---


def test_agreement_with_all_rates_kappa_and_positions():
    T, F, N = True, False, None
    verdicts = {
        "all": [T, F, T, F, T, F, F, F],
        "compact": [T, F, F, F, T, T, F, F],  # 6 of 8 agree
        "each": [T, F, T, F, N, F, F, F],  # one unscored, the rest agree
    }
    ids = ["c1", "c2", "c3", "c4"] * 2
    result = compute_agreement(verdicts, ids)
    assert set(result) == {"compact", "each"}
    compact = result["compact"]
    assert compact["n"] == 8 and compact["accuracy"] == 0.75
    assert compact["yes_rate"] == compact["reference_yes_rate"] == 0.375
    # kappa: observed 0.75, expected 0.375^2 + 0.625^2 = 0.53125
    assert compact["kappa"] == pytest.approx((0.75 - 0.53125) / (1 - 0.53125), abs=1e-4)
    assert compact["by_criterion"] == {"c1": 1.0, "c2": 0.5, "c3": 0.5, "c4": 1.0}
    each = result["each"]
    assert each["n"] == 7 and each["accuracy"] == 1.0 and each["unscored"] == 1
    assert each["yes_rate"] == pytest.approx(2 / 7, abs=1e-4)
    assert each["by_criterion"]["c1"] == 1.0 and len(each["by_criterion"]) == 4


def test_agreement_when_one_side_never_says_yes():
    result = compute_agreement({"all": [False] * 4, "compact": [True, False, True, False]},
                               ["c1", "c2", "c3", "c4"])  # fmt: skip
    compact = result["compact"]
    assert compact["accuracy"] == 0.5 and compact["kappa"] == 0.0
    assert compact["reference_yes_rate"] == 0.0 and compact["yes_rate"] == 0.5
    assert yes_rate([None, None]) is None


# --- goals and tables from a hand-made result ---


def layout(rate, unparseable=0):
    return {"criteria_per_s": rate, "prompt_tokens": 10, "output_tokens": 5, "criteria": 20,
            "prefix_cache_hit_rate": 0.5, "unparseable": unparseable, "seconds": 1.0}  # fmt: skip


def ratio(*values, detail="hand-made", busy=None):
    busy = {"other_cpu_share_per_round": busy} if busy else {}
    return {**summarize(list(values)), **busy, "detail": detail}


def hand_made_result():
    return {
        "ratios": {
            "efficiency_all": ratio(0.95, 0.93, 0.97, busy=[0, 0.42, 0]),
            "efficiency_compact": ratio(0.75, 0.7, 0.8),
            "all_vs_paper": ratio(1.6, 1.5, 1.7),
            "each_vs_paper": ratio(0.8, 0.8, 0.9),
            "compact_vs_paper": ratio(5.0, 4.8, 5.1),
            "compact_vs_all": ratio(3.1, 3.0, 3.2),
            "xgrammar_slowdown": ratio(1.3, 1.2, 1.35),
        },
        "engine_ceiling": {
            "all": {"criteria_per_s": 100.0, "harness_criteria_per_s": 95.0,
                    "harness_efficiency": 0.95, "prefix_cache_hit_rate": 0.8},
            "compact": {"criteria_per_s": 400.0, "harness_criteria_per_s": 300.0,
                        "harness_efficiency": 0.75, "prefix_cache_hit_rate": 0.8},
        },
        "layouts": {"paper": layout(60.0, unparseable=20), "all": layout(95.0),
                    "each": layout(50.0), "compact": layout(300.0)},
        "agreement": {"compact": {"reference": "all", "n": 20, "accuracy": 0.6, "kappa": 0.1,
                                  "yes_rate": 0.5, "reference_yes_rate": 0.3, "unscored": 0},
                      "each": {"reference": "all", "n": 0, "accuracy": None, "kappa": None,
                               "yes_rate": None, "reference_yes_rate": 0.3, "unscored": 20}},
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
                     "prompts": 4, "verifier": "smollm2-135m", "grammar": "xgrammar",
                     "seconds": 50.0, "smoke": False, "rounds": 3},
    }  # fmt: skip


def test_goals_from_the_median_ratios():
    goals = compute_goals(hand_made_result())
    efficiency = goals["harness_efficiency"]
    assert efficiency["met"] and efficiency["measured"] == 0.95
    assert (efficiency["min"], efficiency["max"], efficiency["rounds"]) == (0.93, 0.97, 3)
    assert "compact: 0.75" in efficiency["detail"]
    assert not goals["default_vs_paper"]["met"] and goals["default_vs_paper"]["measured"] == 1.6
    assert "compact: 5.00" in goals["default_vs_paper"]["detail"]
    assert not goals["xgrammar_slowdown"]["met"] and goals["xgrammar_slowdown"]["max"] == 1.35
    assert goals["unparseable_ours"] == {**goals["unparseable_ours"], "measured": 0, "met": True}
    assert goals["verifier_share"]["measured"] == 0.5
    assert "compact" in goals["verifier_share"]["detail"]


def test_goals_follow_the_default_mode():
    result = hand_made_result()
    result["workload"]["default_mode"] = "compact"
    goals = compute_goals(result)
    assert (
        goals["harness_efficiency"]["measured"] == 0.75 and not goals["harness_efficiency"]["met"]
    )
    assert goals["default_vs_paper"]["measured"] == 5.0 and goals["default_vs_paper"]["met"]
    result["workload"]["default_mode"] = "each"  # no ceiling of its own: all's
    assert compute_goals(result)["harness_efficiency"]["measured"] == 0.95


def test_goals_when_grammar_and_training_were_skipped():
    result = hand_made_result()
    result["grammar"] = {"xgrammar": {"skipped": "smoke run"}}
    del result["ratios"]["xgrammar_slowdown"]
    result["train_step_split"] = {"skipped": "smoke run"}
    result["layouts"]["each"] = layout(50.0, unparseable=3)
    goals = compute_goals(result)
    assert "xgrammar_slowdown" not in goals and "verifier_share" not in goals
    assert goals["unparseable_ours"]["measured"] == 3 and not goals["unparseable_ours"]["met"]


def test_tables_show_every_section_and_unmet_goals():
    result = hand_made_result()
    result["goals"] = compute_goals(result)
    console = Console(record=True, width=240)
    print_bench(result, console)
    text = console.export_text()
    for heading in ("Ratios", "Engine ceiling", "layouts", "agreement", "Grammar", "Scaling",
                    "step split", "Goals"):  # fmt: skip
        assert heading in text
    assert "not met" in text and "smoke run" in text
    assert "1.60 (1.50-1.70)" in text  # all vs paper: median (min-max)
    assert "1.60 1.50 1.70" in text  # its rounds
    assert "60%" in text and "n/a" in text  # compact agrees on 60%; each scored nothing
    assert "0% 42% 0%" in text  # how busy the machine was in each round


def test_smoke_runs_on_the_tiny_model_whatever_the_profile_verifier():
    config = load_config(PROJECT_ROOT / "configs" / "bench.yaml")
    full, smoke = bench_verifier(config), bench_verifier(config, smoke=True)
    assert full.model == "smollm2-135m" and full.sampling.temperature == 0.0
    assert smoke.model == SMOKE_MODEL == "tiny-s" and smoke.sampling.temperature > 0
    assert smoke.engine == full.engine and smoke.grammar == full.grammar


@pytest.mark.parametrize(
    ("smoke", "gpu", "expected"),
    [(True, False, SMOKE), (True, True, SMOKE), (False, False, FULL), (False, True, FULL_GPU)],
)
def test_the_workload_follows_the_machine(smoke, gpu, expected):
    assert bench_size(smoke, gpu) is expected


def test_full_runs_take_medians_of_at_least_three_rounds():
    for size in (FULL, FULL_GPU):
        assert min(size.rounds, size.min_rounds or size.rounds) >= 3 and size.train
    assert FULL.grammars == () and dict(FULL.skipped)["skipped"]  # other engines: on a GPU
    assert set(FULL_GPU.grammars) == {"xgrammar", "guidance", "outlines"}


@pytest.mark.parametrize(
    ("default_mode", "size", "ceilings"),
    [
        ("all", FULL, ("all",)),
        ("compact", FULL, ("all", "compact")),
        ("each", FULL, ("all",)),  # one request per criterion: no ceiling of its own
        ("all", FULL_GPU, ("all", "compact")),
        ("all", SMOKE, ("all", "compact")),
    ],
)
def test_ceilings_measured_follow_the_default_mode_and_the_size(default_mode, size, ceilings):
    assert ceiling_modes(default_mode, size) == ceilings
    steps = round_steps(ceilings)
    assert {s for s in steps if s.startswith("ceiling:")} == {f"ceiling:{m}" for m in ceilings}
    # the goal pairs stay side by side: paper | all | ceiling:all | grammar
    assert steps[-4:] == ("paper", "all", "ceiling:all", "grammar")


def test_workload_fingerprint_tells_workloads_apart():
    jobs = build_jobs(PROMPTS, 6, 20)
    assert workload_fingerprint(jobs) == workload_fingerprint(build_jobs(PROMPTS, 6, 20))
    assert workload_fingerprint(jobs) != workload_fingerprint(build_jobs(PROMPTS[::-1], 6, 20))
    assert workload_fingerprint(jobs) != workload_fingerprint(build_jobs(PROMPTS, 6, 19))

    def run(fingerprint):
        return {"workload": {"fingerprint": fingerprint, "model": "smollm2-135m"}}

    assert same_workload(run("abc"), run("abc")) and not same_workload(run("abc"), run("abd"))
