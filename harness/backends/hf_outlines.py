"""A Hugging Face transformers model with outlines as the structured-output layer.

The model is wrapped with `outlines.from_transformers`; a JSON schema becomes an outlines
logits processor (outlines-core by default) that masks every token the schema forbids, so the
answer always parses. Generation runs request by request with a per-request seed, which makes
samples reproducible; logprobs are computed from the masked scores.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Sequence
from typing import Any

from harness.backends.base import (
    Advance,
    Backend,
    BackendError,
    Capabilities,
    RunContext,
    context_overflow,
    plain_messages,
    template_arguments,
    template_source,
)
from harness.config import RoleConfig
from harness.models.manifest import resolve_model
from harness.types import Adapter, ChatRequest, Completion, Sampling, TokenLogprob

OUTLINES_GRAMMAR = {"outlines": "outlines_core", "xgrammar": "xgrammar", "guidance": "llguidance"}


class TransformersBackend(Backend):
    name = "transformers"
    capabilities = Capabilities(adapters=True, engine="transformers")

    def __init__(self, role: str, config: RoleConfig, context: RunContext) -> None:
        super().__init__(role, config, context)
        import outlines
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = resolve_model(config.model, offline=context.offline)
        options = dict(config.engine)
        device = options.pop("device", "cuda" if torch.cuda.is_available() else "cpu")
        dtype = options.pop("dtype", "auto")
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path)
            self.hf_model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, **options)
        except (OSError, ValueError) as exc:
            raise BackendError(
                f"role {role!r}: transformers could not load {config.model}: {exc}"
            ) from exc
        self.hf_model.to(device).eval()
        self.model = outlines.from_transformers(self.hf_model, self.tokenizer)
        self._processors: dict[str, Any] = {}
        self._adapters: set[str] = set()

    def process_ids(self) -> list[int]:
        return [os.getpid()]

    def engine_handle(self) -> Any:
        return self.hf_model, self.tokenizer

    def _use_adapter(self, adapter: Adapter | None) -> None:
        """Switch the model to `adapter` (loaded once, kept by its fingerprint) or the base."""
        if adapter is None:
            if self._adapters:
                self.hf_model.disable_adapters()
            return
        if adapter.fingerprint not in self._adapters:
            self.hf_model.load_adapter(adapter.path, adapter_name=adapter.fingerprint)
            self._adapters.add(adapter.fingerprint)
        self.hf_model.set_adapter(adapter.fingerprint)
        self.hf_model.enable_adapters()

    def _processor(self, schema: dict[str, Any]) -> Any:
        from outlines.backends import get_json_schema_logits_processor

        key = json.dumps(schema, sort_keys=True)
        if key not in self._processors:
            grammar = OUTLINES_GRAMMAR[self.config.grammar]
            self._processors[key] = get_json_schema_logits_processor(grammar, self.model, key)
        processor = self._processors[key]
        processor.reset()
        return processor

    def chat_template(self) -> str | None:
        return template_source(self.tokenizer.chat_template)

    def render(self, request: ChatRequest) -> str:
        """The prompt text of `request`: its messages in the chat template, with the request's
        template variables (`enable_thinking`, ...)."""
        return self.tokenizer.apply_chat_template(  # type: ignore[no-any-return]
            plain_messages(request),
            tokenize=False,
            add_generation_prompt=True,
            **template_arguments(request),
        )

    def prompt_too_long(self, request: ChatRequest) -> str | None:
        ids = self.tokenizer.apply_chat_template(
            plain_messages(request),
            tokenize=True,
            add_generation_prompt=True,
            return_dict=False,
            **template_arguments(request),
        )
        limit = getattr(self.hf_model.config, "max_position_embeddings", None)
        return context_overflow(len(ids), limit) if limit else None

    def _generate(
        self, requests: Sequence[ChatRequest], advance: Advance | None
    ) -> list[Completion]:
        completions = []
        for request in requests:
            completions.append(self._complete(request))
            if advance:
                advance(1)
        return completions

    def _complete(self, request: ChatRequest) -> Completion:
        import torch
        from transformers import LogitsProcessorList

        started = time.perf_counter()
        self._use_adapter(request.adapter)
        inputs = self.tokenizer(self.render(request), return_tensors="pt").to(self.hf_model.device)
        sampling = request.sampling
        processors = LogitsProcessorList()
        if request.json_schema is not None:
            processors.append(self._processor(request.json_schema))
        torch.manual_seed(request.effective_seed(self.config.model))
        sample = sampling.temperature > 0
        with torch.no_grad():
            output = self.hf_model.generate(
                **inputs,
                logits_processor=processors,
                max_new_tokens=sampling.max_tokens,
                do_sample=sample,
                temperature=sampling.temperature if sample else None,
                top_p=sampling.top_p if sample else None,
                top_k=None,
                stop_strings=list(sampling.stop) or None,
                tokenizer=self.tokenizer,
                return_dict_in_generate=True,
                output_scores=sampling.logprobs is not None,
                pad_token_id=self.tokenizer.pad_token_id,
            )
        return self._completion(output, int(inputs["input_ids"].shape[1]), sampling, started)

    def _completion(
        self, output: Any, prompt_tokens: int, sampling: Sampling, started: float
    ) -> Completion:
        """The generated tokens after the prompt's, as a completion (a final end-of-sequence
        token is counted, not shown)."""
        new_ids = output.sequences[0, prompt_tokens:].tolist()
        eos_ids = _eos_ids(self.hf_model)
        stopped = bool(new_ids) and (new_ids[-1] in eos_ids or len(new_ids) < sampling.max_tokens)
        text_ids = new_ids[:-1] if new_ids and new_ids[-1] in eos_ids else new_ids
        return Completion(
            text=self.tokenizer.decode(text_ids, skip_special_tokens=True),
            finish_reason="stop" if stopped else "length",
            prompt_tokens=prompt_tokens,
            completion_tokens=len(new_ids),
            logprobs=self._logprobs(output, new_ids, sampling.logprobs),
            model=self.config.label,
            latency_s=time.perf_counter() - started,
        )

    def _logprobs(
        self, output: Any, new_ids: list[int], top_k: int | None
    ) -> tuple[TokenLogprob, ...] | None:
        if top_k is None or not output.scores:
            return None
        tokens = []
        for token_id, scores in zip(new_ids, output.scores):
            logprobs = scores[0].float().log_softmax(-1)
            best = logprobs.topk(max(top_k, 1))
            top = {
                self.tokenizer.decode([int(i)]): float(v)
                for v, i in zip(best.values, best.indices)
                if not math.isinf(float(v))  # masked by the grammar
            }
            tokens.append(
                TokenLogprob(
                    token=self.tokenizer.decode([token_id]),
                    logprob=float(logprobs[token_id]),
                    top=top,
                )
            )
        return tuple(tokens)

    def close(self) -> None:
        self._processors.clear()


def _eos_ids(model: Any) -> set[int]:
    eos = model.generation_config.eos_token_id
    return set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
