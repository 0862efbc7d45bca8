"""How likely each allowed answer was, read at the token that decided it.

A constrained answer such as `{"verdict": "2"}` is decided at one token: the first whose text
reaches the first character of the answer's value. That token's alternatives (a backend's top
logprobs, with the chosen token itself) say how much probability each allowed answer had
there; answers are told apart by their first character, and the mass is renormalised over the
allowed answers alone. The engines here apply the grammar mask before they compute logprobs
(vLLM writes its structured-output bitmask into the logits before the sampler, so even its
default `logprobs_mode: raw_logprobs` is masked: "raw" means before temperature and top-p;
transformers' scores come after every logits processor, the grammar's, and when sampling the
temperature and top-p warpers too). Masked or not, renormalising over the allowed answers gives
the same ratio between them: the model's own preference among the answers it may give.

Positions are counted in the joined token texts, not in the completion's text, so a token
that decodes to a partial character elsewhere in the answer cannot shift them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

from harness.types import TokenLogprob


def value_start(text: str, key: str) -> int | None:
    """Where the string value of `key` starts in a JSON object's text (after its opening
    quote); the last occurrence, so a key quoted inside an earlier string value cannot match."""
    matches = list(re.finditer(rf'"{re.escape(key)}"\s*:\s*"', text))
    return matches[-1].end() if matches else None


def spelled(logprobs: Sequence[TokenLogprob]) -> str:
    """The answer as its tokens spell it: the text every position here is counted in."""
    return "".join(t.token for t in logprobs)


def answer_probabilities(
    logprobs: Sequence[TokenLogprob], key: str, answers: Sequence[str]
) -> dict[str, float] | None:
    """answer -> probability at the token deciding `key`'s value, over `answers` (which must
    differ in their first character); None when the value or any allowed mass is not there."""
    _by_first(answers)
    start = value_start(spelled(logprobs), key)
    return None if start is None else probabilities_at(logprobs, [start], answers)[0]


def probabilities_at(
    logprobs: Sequence[TokenLogprob], starts: Sequence[int], answers: Sequence[str]
) -> list[dict[str, float] | None]:
    """For each character position (ascending) where an answer begins, answer -> probability
    over `answers`, read from the alternatives of the token that covers the position. A
    token that covers several positions (a compact answer's "yn") is read at each of them by
    its alternatives' character there: a marginal over its top alternatives."""
    by_first = _by_first(answers)
    results: list[dict[str, float] | None] = []
    consumed, index = "", 0
    for start in starts:
        while index < len(logprobs) and len(consumed) + len(logprobs[index].token) <= start:
            consumed += logprobs[index].token
            index += 1
        covered = index < len(logprobs)
        results.append(
            _renormalise(consumed, logprobs[index], start, by_first) if covered else None
        )
    return results


def _by_first(answers: Sequence[str]) -> dict[str, str]:
    by_first = {answer[:1]: answer for answer in answers}
    if len(by_first) != len(answers) or "" in by_first:
        raise ValueError(f"answers must differ in their first character: {list(answers)}")
    return by_first


def _renormalise(
    consumed: str, token: TokenLogprob, start: int, by_first: dict[str, str]
) -> dict[str, float] | None:
    # An API's top list may leave out the token it sampled; it still carries its own mass.
    alternatives = {token.token: token.logprob, **token.top}
    mass = dict.fromkeys(by_first.values(), 0.0)
    for text, logprob in alternatives.items():
        answer = by_first.get((consumed + text)[start : start + 1])
        if answer is not None and not math.isinf(logprob):
            mass[answer] += math.exp(logprob)
    total = sum(mass.values())
    return {answer: m / total for answer, m in mass.items()} if total > 0 else None
