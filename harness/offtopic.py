"""Off-topic preference probe: a verifier's reward should prefer a prompt's own responses to
responses written for other prompts, both judged under the prompt's own rubric. It needs no
bigger verifier and no human labels: a verifier near 0.5 (chance; ties count half) is not
reading the response against the rubric.

For each prompt, `compare.off_topic_per_prompt` responses of other prompts are drawn with a
seed (the same candidates give the same draw) and shown as answers to it, each a job with the
stable candidate id `offtopic:<prompt id>:<candidate id>`. Every verifier checks them with the
comparison's own jobs (harness.compare); `off_topic_row` then pairs each on-topic response of a
prompt with each of its off-topic ones (harness.metrics.off_topic_accuracy). A reference answer
among the candidates (HealthBench's physician-ideal completion) is on-topic like any other.

    harness compare-verifiers -c configs/tiny.yaml    # compare/metrics.json: off_topic_*
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from harness.metrics import off_topic_accuracy
from harness.types import Candidate
from harness.verifier import Job

PREFIX = "offtopic"


def off_topic_id(prompt_id: str, candidate_id: str) -> str:
    return f"{PREFIX}:{prompt_id}:{candidate_id}"


def off_topic_jobs(jobs: Sequence[Job], per_prompt: int) -> list[Job]:
    """Up to `per_prompt` responses of other prompts for each prompt of `jobs`, each shown as
    an answer to that prompt under its rubric (the rubric of the prompt's first job)."""
    pool = sorted({j.candidate.id: j for j in jobs}.values(), key=lambda j: j.candidate.id)
    hosts: dict[str, Job] = {}
    for job in jobs:
        hosts.setdefault(job.prompt.id, job)
    own = Counter(j.prompt.id for j in pool)
    probe = []
    for prompt_id in sorted(hosts):
        host = hosts[prompt_id]
        for donor in _draw(pool, prompt_id, own[prompt_id], per_prompt):
            shown = donor.model_copy(
                update={"id": off_topic_id(prompt_id, donor.id), "prompt_id": prompt_id}
            )
            probe.append(Job(host.prompt, shown, host.rubric))
    return probe


def _draw(pool: Sequence[Job], prompt_id: str, num_own: int, per_prompt: int) -> list[Candidate]:
    """A seeded draw of `per_prompt` candidates of other prompts: enough indices are drawn
    that, after the prompt's own `num_own` are dropped, `per_prompt` remain where they exist."""
    num_drawn = min(per_prompt + num_own, len(pool))
    indices = random.Random(f"{PREFIX}:{prompt_id}").sample(range(len(pool)), num_drawn)
    others = [pool[i].candidate for i in indices if pool[i].prompt.id != prompt_id]
    return others[:per_prompt]


def off_topic_row(
    on_topic: Mapping[str, Mapping[str, float | None]],
    off_topic: Mapping[str, Mapping[str, float | None]],
) -> dict[str, Any]:
    """The probe's columns of a verifier's row, from its own on- and off-topic rewards."""
    result = off_topic_accuracy(on_topic, off_topic)
    return {
        "off_topic_accuracy": result["accuracy"],
        "off_topic_ci95": result["ci95"],
        "off_topic_pairs": result["n_pairs"],
        "off_topic_ties": result["ties"],
        "off_topic_unscored": result["unscored"],
    }
