"""`harness bench --smoke` on the tiny verifier (whatever the profile's: configs/bench.yaml
measures SmolLM2): every measurement that costs seconds runs for real, in interleaved rounds
(layouts, engine ceiling, xgrammar, scaling); the minute-long ones are marked skipped. A
benchmark, not a timed test: only the shape, the rounds and the parse counts are checked."""

from __future__ import annotations

import json

import pytest
from rich.console import Console

from harness.bench import BENCH_KEYS, SMOKE, SMOKE_MODEL, print_bench, run_bench
from harness.config import load_config
from harness.models.manifest import PROJECT_ROOT

pytestmark = pytest.mark.integration
LAYOUT_FIELDS = {"criteria_per_s", "prompt_tokens", "output_tokens", "prefix_cache_hit_rate",
                 "unparseable"}  # fmt: skip


def test_smoke_bench_writes_every_key(tiny_models, tmp_path):
    config = load_config(PROJECT_ROOT / "configs" / "bench.yaml")
    result = run_bench(config, tmp_path, smoke=True, console=Console(quiet=True))
    written = json.loads((tmp_path / "bench.json").read_text())
    assert list(written) == list(BENCH_KEYS) and written == json.loads(json.dumps(result))
    layouts = written["layouts"]
    assert set(layouts) == {"paper", "all", "each", "compact"}
    for name, entry in layouts.items():
        assert set(entry) >= LAYOUT_FIELDS, name
        assert entry["criteria_per_s"] > 0 and entry["output_tokens"] > 0, name
    assert [layouts[m]["unparseable"] for m in ("all", "each", "compact")] == [0, 0, 0]
    assert layouts["compact"]["output_tokens"] < layouts["all"]["output_tokens"]
    for mode in ("all", "compact"):
        ceiling = written["engine_ceiling"][mode]
        assert ceiling["criteria_per_s"] > 0 and ceiling["prompt_ids_match"] == ceiling["requests"]
    xgrammar = written["grammar"]["xgrammar"]
    assert xgrammar["valid"] == xgrammar["requests"] and xgrammar["slowdown"] > 0
    assert written["grammar"]["guidance"] == {"skipped": "smoke run"}
    assert written["train_step_split"] == {"skipped": "smoke run"}
    assert all(p["criteria_per_s"] > 0 for points in written["scaling"].values() for p in points)
    goal = written["goals"]["harness_efficiency"]
    assert {"measured", "target", "met", "min", "max", "rounds"} <= set(goal)
    assert written["machine"]["cores"] >= 1 and written["workload"]["smoke"] is True
    assert written["workload"]["model"] == SMOKE_MODEL
    assert len(written["workload"]["fingerprint"]) == 12
    ratios = written["ratios"]
    assert {"efficiency_all", "all_vs_paper", "compact_vs_all", "xgrammar_slowdown"} <= set(ratios)
    for name, ratio in ratios.items():
        assert ratio["rounds"] == SMOKE.rounds == len(ratio["per_round"]), name
        assert 0 < ratio["min"] <= ratio["median"] <= ratio["max"], name
    assert xgrammar["slowdown"] == ratios["xgrammar_slowdown"]["median"]
    assert xgrammar["lengths_match"]  # the ceiling ran the grammar's own tokens unconstrained
    compact = written["agreement"]["compact"]
    assert compact["reference"] == "all" and compact["n"] == layouts["all"]["criteria"]
    assert 0 <= compact["accuracy"] <= 1 and set(compact["by_criterion"]) == {
        f"c{k}" for k in range(1, 21)
    }
    recorded = Console(record=True, width=200)
    print_bench(written, recorded)
    assert "Goals" in recorded.export_text()
