"""Rollouts: candidate responses to every prompt from one or more models.

Each model in `rollouts.models` (default: the policy) answers every prompt `num_samples`
times in one batch; several models make the "great & diverse" pool of the paper. A response
that cannot be obtained is recorded as a skip with its reason, never kept as an empty answer.

    harness rollouts -c configs/default.yaml
"""

from __future__ import annotations

from collections.abc import Sequence

from harness.config import RoleConfig
from harness.roles import Role
from harness.types import Adapter, Candidate, ChatRequest, Prompt, Skip


def candidate_id(prompt_id: str, model: str, sample_index: int) -> str:
    return f"{prompt_id}:{model}:{sample_index}"


def rollout_requests(
    prompts: Sequence[Prompt],
    model: RoleConfig,
    num_samples: int,
    adapter: Adapter | None = None,
    label: str | None = None,
) -> list[ChatRequest]:
    return [
        ChatRequest(
            messages=prompt.messages,
            sampling=model.sampling,
            sample_index=k,
            adapter=adapter,
            id=candidate_id(prompt.id, label or model.label, k),
        )
        for prompt in prompts
        for k in range(num_samples)
    ]


def roll_out(
    role: Role,
    prompts: Sequence[Prompt],
    num_samples: int,
    adapter: Adapter | None = None,
    label: str | None = None,
) -> tuple[list[Candidate], list[Skip]]:
    """`num_samples` responses per prompt from the model behind `role` (with `adapter`
    applied, if any); candidates are labelled `label` (default: the role's)."""
    label = label or role.config.label
    requests = rollout_requests(prompts, role.config, num_samples, adapter, label)
    completions = role.generate(requests, description=f"rollouts ({label})")
    owners = [p.id for p in prompts for _ in range(num_samples)]
    candidates, skips = [], []
    for prompt_id, request, completion in zip(owners, requests, completions):
        if completion.error is not None or not completion.text.strip():
            reason = completion.error or "empty response"
            skips.append(
                Skip(stage="rollouts", prompt_id=prompt_id, item_id=request.id, reason=reason)
            )
            continue
        candidates.append(
            Candidate(
                id=request.id or "",
                prompt_id=prompt_id,
                text=completion.text,
                model=label,
                sample_index=request.sample_index,
            )
        )
    return candidates, skips


def order_pool(
    candidates: list[Candidate], prompts: Sequence[Prompt], models: Sequence[RoleConfig]
) -> list[Candidate]:
    """Prompt order, then model order (responses given with the data last), then sample
    index: the order ties are broken by."""
    prompt_rank = {p.id: i for i, p in enumerate(prompts)}
    model_rank = {m.label: i for i, m in enumerate(models)}
    return sorted(
        candidates,
        key=lambda c: (
            prompt_rank[c.prompt_id],
            model_rank.get(c.model, len(models)),
            c.sample_index,
        ),
    )
