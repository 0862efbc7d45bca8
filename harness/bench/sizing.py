"""(6) How many verifier endpoints keep a GRPO trainer of N GPUs from waiting on rewards, from
two measured figures of a bench run and the paper's training setup; the rest is arithmetic.

Measured (this bench run): r, the criteria per second of one verifier engine in the default
layout; and the GRPO step split of the same layout: the step's non-reward time t (generation
and update) for the c completions the step trained on.

The paper's setup: per GPU and optimizer step, per-device batch 6 x gradient accumulation 2 =
12 completions (groups of 16 per prompt), each graded against ~20 criteria. Every GPU of a
data-parallel trainer generates and updates its own 12 in parallel, so with N GPUs:

    verdicts per step   V = N x 12 x 20
    rest of the step    T = 12 x t / c          (the measured pace per completion)
    endpoints           E = ceil(V / (r x T)) = ceil(N x 20 x c / (r x t))

E endpoints grade a step's verdicts in at most T, so the reward takes no longer than the rest
of the step (the verifier's share of a step at most half; where rewards overlap generation, it
hides behind it); for a share of at most s the endpoints grow by (1 - s) / s (s = 10%: x9).
"""

from __future__ import annotations

import math
from typing import Any

GROUP_SIZE = 16  # responses per prompt
CRITERIA = 20  # criteria per rubric
COMPLETIONS_PER_GPU = 12  # per-device batch 6 x gradient accumulation 2
TRAINER_GPUS = (1, 2, 4, 8)
SMALL_SHARE = 0.1


def endpoints_needed(verdicts: float, criteria_per_s: float, rest_s: float,
                     share: float = 0.5) -> int:  # fmt: skip
    """Endpoints of `criteria_per_s` each that grade `verdicts` while the verifier's share of
    a step whose other parts take `rest_s` stays at most `share`."""
    allowed_s = rest_s * share / (1 - share)
    return max(1, math.ceil(round(verdicts / (criteria_per_s * allowed_s), 6)))


def sizing_rows(criteria_per_s: float, rest_s: float, completions: int,
                trainer_gpus: tuple[int, ...] = TRAINER_GPUS) -> list[dict[str, Any]]:  # fmt: skip
    """One row per trainer size: prompts, verdicts and the non-reward time of a step at the
    paper's batch, the endpoints for a verifier share of at most 50% and of at most 10%, and
    the share one endpoint would take."""
    step_rest = COMPLETIONS_PER_GPU * rest_s / completions
    rows = []
    for gpus in trainer_gpus:
        verdicts = gpus * COMPLETIONS_PER_GPU * CRITERIA
        one_endpoint_s = verdicts / criteria_per_s
        rows.append({
            "trainer_gpus": gpus,
            "prompts_per_step": gpus * COMPLETIONS_PER_GPU / GROUP_SIZE,
            "verdicts_per_step": verdicts,
            "rest_s": round(step_rest, 3),
            "endpoints": endpoints_needed(verdicts, criteria_per_s, step_rest),
            "endpoints_small_share": endpoints_needed(verdicts, criteria_per_s, step_rest,
                                                      SMALL_SHARE),
            "share_with_one": round(one_endpoint_s / (one_endpoint_s + step_rest), 3),
        })  # fmt: skip
    return rows


def bench_sizing(result: dict[str, Any]) -> dict[str, Any] | None:
    """The sizing of a bench result, with the measured inputs it used; None when the run did
    not measure a training step (a smoke run) or the step's completions are unknown."""
    mode = result["workload"]["default_mode"]
    split = result["train_step_split"].get(mode)
    layout = result["layouts"].get(mode)
    if not split or not layout or not split.get("completions_per_step"):
        return None
    rest_s = split["generation_s"] + split["update_s"]
    inputs = {
        "mode": mode,
        "criteria_per_s": layout["criteria_per_s"],
        "rest_s": round(rest_s, 4),
        "completions_per_step": split["completions_per_step"],
        "verifier_share": split["verifier_share"],
    }
    rows = sizing_rows(layout["criteria_per_s"], rest_s, split["completions_per_step"])
    return {"measured": inputs, "rows": rows}
