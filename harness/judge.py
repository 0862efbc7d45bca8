"""Pairwise judge: which of two responses to a prompt is better, asked in both orders.

Side A and side B are candidate sets (the trained policy and the base policy, or any two
candidate files); sample k of A meets sample k of B on the same prompt. The judge answers
under a schema (`{"verdict": "1" | "2" [| "tie"]}`, optionally after a short rationale), once
with A shown first and once with B shown first; both answers are mapped back to "a"/"b".
Aggregation (`harness.metrics.summarise_pairs`): orders that agree give that outcome, orders
that disagree a tie (or the first order's verdict, by profile); ties count half; a 95%
bootstrap interval; the position-flip rate; and the win rate at equal length.

`judge.score: soft` asks for logprobs and reads, in each order, P("1") against P("2") at the
token where the verdict's value starts (`harness.decision`), renormalised over the allowed
answers; a "tie" answer's mass counts half to each side. Mapped back, P(A) is P("1") in the
first order and P("2") in the second; their mean decides the pair (its side of 0.5), which
cancels a bias toward either position. A pair with no P(A) in either order is unscored. Both
the hard verdicts and the P(A)s are recorded, and both flip rates reported.

    harness judge -c configs/default.yaml --a runs/x/a.jsonl --b runs/x/b.jsonl
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import ConfigDict, Field, create_model

from harness.config import JudgeConfig
from harness.decision import answer_probabilities
from harness.jsonl import write_records
from harness.metrics import JudgedPair, Preference, summarise_pairs
from harness.prompts import render
from harness.roles import Role
from harness.rollouts import roll_out
from harness.summary_schema import PairwiseSummary
from harness.types import (
    Adapter,
    Candidate,
    ChatRequest,
    Completion,
    Prompt,
    Record,
    json_schema_of,
)

NO_P_A = "no P(A): no logprobs at the verdict token"  # soft score: a parsed answer, no P(A)


class Judgement(Record):
    """Both orders of one pair. `first_order`: A shown as Response 1; `second_order`: B shown
    as Response 1; each already mapped to "a", "b" or "tie", or None when unscored. Beside
    them, P(A better) read in each order and their mean, where the answers carried logprobs
    (`judge.score: soft` asks for them); None where it could not be read."""

    prompt_id: str
    a_id: str
    b_id: str
    first_order: Preference | None
    second_order: Preference | None
    first_order_p_a: float | None = None  # P(A better) read in the first order (soft score)
    second_order_p_a: float | None = None
    mean_p_a: float | None = None  # over the orders read
    length_a: int
    length_b: int
    identical: bool = False  # the two sides wrote the same text: a tie by definition
    rationales: tuple[str, ...] = ()
    unscored_reasons: tuple[str, ...] = ()


def answer_schema(settings: JudgeConfig) -> dict[str, Any]:
    verdicts = ("1", "2", "tie") if settings.ties else ("1", "2")
    fields: dict[str, Any] = {}
    if settings.rationale:
        fields["rationale"] = (str, Field(..., max_length=settings.rationale_chars))
    fields["verdict"] = (Literal[verdicts], ...)  # type: ignore[valid-type]
    answer = create_model(  # type: ignore[call-overload]
        "Judgement", __config__=ConfigDict(extra="forbid"), **fields
    )
    return json_schema_of(answer)


def pair_up(
    side_a: Sequence[Candidate], side_b: Sequence[Candidate]
) -> list[tuple[Candidate, Candidate]]:
    """Sample k of A with sample k of B, prompt by prompt, in A's order."""
    b_by_key = {(c.prompt_id, c.sample_index): c for c in side_b}
    return [
        (a, b_by_key[key]) for a in side_a if (key := (a.prompt_id, a.sample_index)) in b_by_key
    ]


def judge_pairs(
    role: Role,
    prompts: Sequence[Prompt],
    pairs: Sequence[tuple[Candidate, Candidate]],
    settings: JudgeConfig,
    templates: Path,
    description: str = "judge",
) -> list[Judgement]:
    """Both orders of every pair in one batch of requests."""
    by_id = {p.id: p for p in prompts}
    schema = answer_schema(settings)
    requests = []
    for a, b in pairs:
        for first, second in ((a, b), (b, a)):
            requests.append(
                _request(by_id[a.prompt_id], first, second, settings, templates, role, schema)
            )
    completions = role.generate(requests, description=f"{description} ({role.config.label})")
    return [
        _judgement(a, b, completions[2 * i], completions[2 * i + 1], settings)
        for i, (a, b) in enumerate(pairs)
    ]


def _request(
    prompt: Prompt,
    first: Candidate,
    second: Candidate,
    settings: JudgeConfig,
    templates: Path,
    role: Role,
    schema: dict[str, Any],
) -> ChatRequest:
    messages = render(
        "judge",
        templates,
        prompt=prompt.render(),
        response_1=first.text,
        response_2=second.text,
        ties=settings.ties,
        rationale=settings.rationale,
        rationale_chars=settings.rationale_chars,
    )
    sampling = role.config.sampling
    if settings.score == "soft":
        sampling = sampling.model_copy(update={"logprobs": settings.logprobs})
    return ChatRequest(
        messages=messages,
        sampling=sampling,
        json_schema=schema,
        schema_name="judgement",
        id=f"{first.id}|{second.id}",
    )


def _judgement(
    a: Candidate, b: Candidate, first: Completion, second: Completion, settings: JudgeConfig
) -> Judgement:
    orders = (_side(first, shown_first="a"), _side(second, shown_first="b"))
    soft = settings.score == "soft"
    p_a = (soft_p_a(first, "a", settings.ties), soft_p_a(second, "b", settings.ties))
    read = [p for p in p_a if p is not None]
    reasons = [c.error or "no verdict" for c in (first, second) if not c.parsed]
    if soft:
        reasons += [NO_P_A for c, p in zip((first, second), p_a) if c.parsed and p is None]
    return Judgement(
        prompt_id=a.prompt_id,
        a_id=a.id,
        b_id=b.id,
        first_order=orders[0],
        second_order=orders[1],
        first_order_p_a=p_a[0],
        second_order_p_a=p_a[1],
        mean_p_a=sum(read) / len(read) if read else None,
        length_a=len(a.text),
        length_b=len(b.text),
        identical=a.text == b.text,
        rationales=tuple(
            c.parsed["rationale"] for c in (first, second) if "rationale" in (c.parsed or {})
        ),
        unscored_reasons=tuple(reasons),
    )


def soft_p_a(completion: Completion, shown_first: str, ties: bool) -> float | None:
    """P(side A is better) from one order's answer: P("1") when A was shown first, P("2")
    when B was, renormalised over the allowed answers with a tie's mass split evenly; None for
    an unparsed answer or one without logprobs at the verdict's first token."""
    if not completion.parsed or not completion.logprobs:
        return None
    answers = ("1", "2", "tie") if ties else ("1", "2")
    probabilities = answer_probabilities(completion.logprobs, "verdict", answers)
    if probabilities is None:
        return None
    a_shown = "1" if shown_first == "a" else "2"
    return probabilities[a_shown] + probabilities.get("tie", 0.0) / 2


def _side(completion: Completion, shown_first: str) -> Preference | None:
    """The judge's verdict as a side: "1" is whoever was shown first."""
    if not completion.parsed:
        return None
    verdict = completion.parsed["verdict"]
    if verdict == "tie":
        return "tie"
    shown_second = "b" if shown_first == "a" else "a"
    return shown_first if verdict == "1" else shown_second  # type: ignore[return-value]


def summarise(
    judgements: Sequence[Judgement], settings: JudgeConfig, seed: int = 0
) -> PairwiseSummary:
    """Win rate of A over B with ties as half, CI, flips, lengths (see the module text); the
    sides and the judge are the caller's to name."""
    pairs = [
        JudgedPair(j.prompt_id, j.first_order, j.second_order, j.length_a, j.length_b,
                   j.first_order_p_a, j.second_order_p_a, j.identical)
        for j in judgements
    ]  # fmt: skip
    outcome = summarise_pairs(
        pairs, settings.disagreement, settings.bootstrap, seed, settings.score
    )
    return PairwiseSummary.model_validate(outcome)


def sample_side(
    role: Role,
    prompts: Sequence[Prompt],
    num_samples: int,
    adapter: Adapter | None,
    label: str,
    folder: Path,
) -> list[Candidate]:
    """One side of a comparison: the policy's responses with `adapter` (None: the base),
    saved as FOLDER/LABEL.jsonl, and what it could not produce as FOLDER/LABEL.skipped.jsonl."""
    candidates, skips = roll_out(role, prompts, num_samples, adapter, label)
    write_records(folder / f"{label}.jsonl", candidates)
    if skips:
        write_records(folder / f"{label}.skipped.jsonl", skips)
    return candidates
