"""A deterministic backend for unit tests of orchestration logic.

Replies come from a list (in call order, cycling), a mapping (keyed by the last user message)
or a function of the request (returning None simulates a failed request). Every request is
recorded in `calls`. Replies are checked against the request's schema unless `validate=False`,
so a test script cannot silently feed answers a constrained engine could never give.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence

import jsonschema

from harness.backends.base import Advance, Backend, RunContext
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


RULES: dict[str, Callable[[ChatRequest], str | None]] = {"keyword": keyword_verdicts}


def _configured_script(config: RoleConfig) -> Script:
    if config.rule is not None:
        return RULES[config.rule]
    return config.replies or []


class ScriptedBackend(Backend):
    name = "scripted"

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
