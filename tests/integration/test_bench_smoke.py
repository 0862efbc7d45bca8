"""`harness bench` at its smallest on the tiny verifier: every measurement that costs seconds
runs for real (layouts, engine ceiling, xgrammar, scaling); the minute-long ones are marked
skipped. A benchmark, not a timed test: only the shape and the parse counts are checked."""

from __future__ import annotations

import json

import pytest
from rich.console import Console

from harness.bench import BENCH_KEYS, print_bench, run_bench
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
    assert {"measured", "target", "met"} <= set(written["goals"]["harness_efficiency"])
    assert written["machine"]["cores"] >= 1 and written["workload"]["smoke"] is True
    recorded = Console(record=True, width=200)
    print_bench(written, recorded)
    assert "Goals" in recorded.export_text()
