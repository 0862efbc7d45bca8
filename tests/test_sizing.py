"""The sizing table: verifier endpoints per trainer size from a bench run's measured figures,
worked by hand."""

from __future__ import annotations

from rich.console import Console

from harness.bench.goals import compute_goals
from harness.bench.sizing import bench_sizing, endpoints_needed, sizing_rows
from harness.bench.tables import print_bench

from .test_bench import hand_made_result


def test_endpoints_by_hand() -> None:
    # 10 criteria/s per endpoint; the rest of the step 0.5 s for 4 completions, so 1.5 s for
    # the paper's 12 per GPU. One GPU: 12 x 20 = 240 verdicts, 24 s on one endpoint;
    # 240 / (10 x 1.5) = 16 endpoints grade them in 1.5 s
    [one, two, four, eight] = sizing_rows(10.0, 0.5, 4)
    assert one == {"trainer_gpus": 1, "prompts_per_step": 0.75, "verdicts_per_step": 240,
                   "rest_s": 1.5, "endpoints": 16, "endpoints_small_share": 144,
                   "share_with_one": round(24 / 25.5, 3)}  # fmt: skip
    assert [r["endpoints"] for r in (two, four, eight)] == [32, 64, 128]
    assert eight["prompts_per_step"] == 6 and eight["verdicts_per_step"] == 1920


def test_endpoints_round_up_and_never_go_below_one() -> None:
    assert endpoints_needed(100, 10.0, 10.0) == 1  # exactly in time: one
    assert endpoints_needed(101, 10.0, 10.0) == 2
    assert endpoints_needed(1, 1000.0, 10.0) == 1
    assert endpoints_needed(90, 10.0, 10.0, share=0.1) == 9  # 1.11 s allowed: 8.1 -> 9


def test_a_bench_result_sizes_from_its_default_mode_and_prints_the_table() -> None:
    result = hand_made_result()
    assert bench_sizing(result) is None  # completions per step unknown: no table
    result["train_step_split"]["all"]["completions_per_step"] = 4
    sizing = bench_sizing(result)
    assert sizing is not None
    # layouts.all: 95 criteria/s; split.all: generation 0.5 + update 0.5 s for 4 completions
    assert sizing["measured"] == {"mode": "all", "criteria_per_s": 95.0, "rest_s": 1.0,
                                  "completions_per_step": 4, "verifier_share": 0.5}  # fmt: skip
    # T = 12 x 1.0 / 4 = 3 s; one GPU: 240 / (95 x 3) = 0.84 -> 1; eight: 1920 / 285 -> 7
    assert [r["endpoints"] for r in sizing["rows"]] == [1, 2, 4, 7]
    result["goals"] = compute_goals(result)
    console = Console(record=True, width=240)
    print_bench(result, console)
    assert "6. Verifier endpoints per trainer" in console.export_text()


def test_a_smoke_result_has_no_sizing() -> None:
    result = hand_made_result()
    result["train_step_split"] = {"skipped": "smoke run"}
    assert bench_sizing(result) is None
