"""A deterministic backend for unit tests of orchestration logic.

Replies come from a list (in call order, cycling), a mapping (keyed by the last user message),
a function of the request (returning None simulates a failed request), or a built-in rule
(`rule: keyword` or `rule: synthetic`, usable from a profile, so CLI runs can be tested with no
model); `delay_s` slows each request down. Every request is recorded in `calls`. Replies are
checked against the request's schema unless `validate=False`, so a test script cannot silently
feed answers a constrained engine could never give.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable, Sequence

import jsonschema

from harness.backends.base import Advance, Backend, Capabilities, RunContext
from harness.config import RoleConfig
from harness.types import ChatRequest, Completion, failed_completion

Script = list[str] | dict[str, str] | Callable[[ChatRequest], str | None]
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


RULES: dict[str, Callable[[ChatRequest], str | None]] = {
    "keyword": keyword_verdicts,
    "synthetic": synthetic_replies,
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

    def _reply(self, request: ChatRequest) -> str | None:
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
        if self.validate and request.json_schema is not None:
            jsonschema.validate(json.loads(reply), request.json_schema)
        prompt_tokens = sum(len(m.content.split()) for m in request.messages)
        return Completion(
            text=reply,
            prompt_tokens=prompt_tokens,
            completion_tokens=len(reply.split()),
            model=self.config.model,
        )
