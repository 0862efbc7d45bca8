"""A deterministic backend for unit tests of orchestration logic.

Replies come from a list (in call order, cycling), a mapping (keyed by the last user message),
a function of the request (returning None simulates a failed request; returning a
`Completion` gives its text with whatever else it carries, such as logprobs), or a built-in
rule (`rule: keyword`, `synthetic` or `blind`, usable from a profile, so CLI runs can be
tested with no model); `delay_s` slows each request down. Every request is recorded in
`calls`. Replies are checked against the request's schema unless `validate=False`, so a test
script cannot silently feed answers a constrained engine could never give.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from collections.abc import Callable, Sequence

import jsonschema

from harness.backends.base import Advance, Backend, Capabilities, RunContext
from harness.config import RoleConfig
from harness.types import ChatRequest, Completion, TokenLogprob, failed_completion

Script = list[str] | dict[str, str] | Callable[[ChatRequest], str | Completion | None]
KEYWORD = re.compile(r'contains the (?:word|letter) "([^"]+)"', re.IGNORECASE)


def keyword_verdicts(request: ChatRequest) -> str | None:
    """A verifier that checks by rule: "contains the letter/word "X"" is met when X occurs in
    the response (case-insensitive); any other criterion is "no". For `all`-mode requests."""
    text = request.messages[-1].content
    response = text.split("<response>\n", 1)[-1].rsplit("\n</response>", 1)[0].lower()
    rubric = text.split("<rubric>\n", 1)[-1].split("</rubric>", 1)[0]
    answers = {}
    for line in rubric.splitlines():
        cid, _, criterion = line.partition(": ")
        match = KEYWORD.search(criterion)
        answers[cid] = "yes" if match and match.group(1).lower() in response else "no"
    return json.dumps(answers)


WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india")


def synthetic_replies(request: ChatRequest) -> str | None:
    """The same answer for the same request (sample index and retry included), for every
    stage of the rubric pipeline: a few words for a free answer, a rubric of "contains the
    word" criteria, and keyword verdicts on them. Any other schema gets no reply."""
    digest = hashlib.sha256(request.model_dump_json(exclude={"id"}).encode()).digest()
    words = [WORDS[b % len(WORDS)] for b in digest]
    if request.json_schema is None:
        return " ".join(words[:5])
    if request.schema_name == "rubric":
        low = request.json_schema.get("minItems", 1)
        high = min(request.json_schema.get("maxItems", low + 2), low + 2)
        distinct = list(dict.fromkeys(words))[: low + digest[0] % (high - low + 1)]
        criteria = [f'The response contains the word "{w}"' for w in distinct]
        return json.dumps([{"criterion": c, "weight": 1 + digest[i] % 3}
                           for i, c in enumerate(criteria)])  # fmt: skip
    if request.schema_name == "verdicts":
        return keyword_verdicts(request)
    return None


BLIND_P = 0.9  # how sure the blind model is of its one answer


def blind_replies(request: ChatRequest) -> str | Completion | None:
    """A model that answers without reading: every verdict "yes" and every judgement "the
    first response", each with P = 0.9 in its logprobs; a rubric and free text as
    `synthetic`. Every check of "does this run measure anything?" fails on it."""
    if request.schema_name == "verdicts" and request.json_schema.get("type") == "object":
        ids = list(request.json_schema["properties"])
        return _sure(json.dumps(dict.fromkeys(ids, "yes"), separators=(",", ":")), "no")
    if request.schema_name == "verdicts":  # compact: `^[yn]{N}$`, one letter per criterion
        num_criteria = int(re.search(r"\{(\d+)\}", request.json_schema["pattern"]).group(1))
        return _sure_letters(num_criteria)
    if request.schema_name == "verdict":
        return _sure('{"answer":"yes"}', "no")
    if request.schema_name == "judgement":
        return _sure('{"verdict":"1"}', "2")
    return synthetic_replies(request)


def _sure(text: str, other: str) -> Completion:
    """`text` with a logprob for each character, every string value's first character
    chosen with P = BLIND_P against `other`'s first character."""
    tokens, inside = [], False
    for index, char in enumerate(text):
        decides = inside and text[index - 1] == '"'
        top = {char: math.log(BLIND_P), other[0]: math.log(1 - BLIND_P)} if decides else {}
        tokens.append(TokenLogprob(token=char, logprob=top.get(char, 0.0), top=top))
        inside = (not inside) if char == '"' else inside
    return Completion(text=text, logprobs=tuple(tokens))


def _sure_letters(num_criteria: int) -> Completion:
    letter = TokenLogprob(token="y", logprob=math.log(BLIND_P),
                          top={"y": math.log(BLIND_P), "n": math.log(1 - BLIND_P)})  # fmt: skip
    quote = TokenLogprob(token='"', logprob=0.0, top={})
    return Completion(text=f'"{"y" * num_criteria}"',
                      logprobs=(quote, *[letter] * num_criteria, quote))  # fmt: skip


RULES: dict[str, Callable[[ChatRequest], str | Completion | None]] = {
    "keyword": keyword_verdicts,
    "synthetic": synthetic_replies,
    "blind": blind_replies,
}


def _configured_script(config: RoleConfig) -> Script:
    if config.rule is not None:
        return RULES[config.rule]
    return config.replies or []


class ScriptedBackend(Backend):
    name = "scripted"
    capabilities = Capabilities(cacheable=False)

    def __init__(
        self,
        role: str,
        config: RoleConfig,
        context: RunContext,
        script: Script | None = None,
        validate: bool = True,
    ) -> None:
        super().__init__(role, config, context)
        self.script: Script = script if script is not None else _configured_script(config)
        self.validate = validate
        self.calls: list[ChatRequest] = []

    def _generate(
        self, requests: Sequence[ChatRequest], advance: Advance | None
    ) -> list[Completion]:
        completions = [self._complete(r) for r in requests]
        if advance:
            advance(len(requests))
        return completions

    def _reply(self, request: ChatRequest) -> str | Completion | None:
        if callable(self.script):
            return self.script(request)
        if isinstance(self.script, dict):
            return self.script.get(request.messages[-1].content)
        if not self.script:
            return None
        return self.script[len(self.calls) % len(self.script)]

    def _complete(self, request: ChatRequest) -> Completion:
        if self.config.delay_s:
            time.sleep(self.config.delay_s)
        reply = self._reply(request)
        self.calls.append(request)
        if reply is None:
            return failed_completion(self.config.model, "scripted backend has no reply")
        text = reply.text if isinstance(reply, Completion) else reply
        if self.validate and request.json_schema is not None:
            jsonschema.validate(json.loads(text), request.json_schema)
        counts = {
            "prompt_tokens": sum(len(m.content.split()) for m in request.messages),
            "completion_tokens": len(text.split()),
            "model": self.config.model,
        }
        if isinstance(reply, Completion):  # counts and model only where it has none
            return reply.model_copy(
                update={k: v for k, v in counts.items() if not getattr(reply, k)}
            )
        return Completion(text=text, **counts)
