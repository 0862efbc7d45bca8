"""Any OpenAI-compatible endpoint: an existing vLLM server, a local gateway, or OpenAI itself.

Structured output uses `response_format={"type": "json_schema", ...}` (a vLLM server ignores
the older `guided_json` extra). The API key is read from the environment variable the profile
names, never from the profile. While offline only loopback endpoints are accepted. Requests
run on a bounded thread pool (`concurrency`). A request that gets no answer within
`request_timeout_s` (a stalled server) fails like any other failed request, and the role's
retry path sends it again, a bounded number of times (`max_attempts`).

A loopback endpoint is reached without any proxy from the environment, offline or not. A
request that fails is that request's error (unscored downstream); an endpoint that is gone
(connection refused while probing a loopback port, or `GONE_AFTER` connection failures in a
row with no answer between) raises `BackendGone` instead, with the answers obtained so far.
A connection error on a live endpoint (its last request was answered) is sent again at once,
up to `RECONNECTS` times, before it counts: a keep-alive connection the server closed between
requests is no failure of the endpoint.

A `base_url` that lists several endpoints makes the role an endpoint pool
(`harness.backends.endpoints.EndpointPoolBackend`, chosen by `create_backend` for two or more):
requests spread over the endpoints, and one that fails is taken out and its requests re-sent
on the others. A list of one URL is that URL.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from typing import Any
from urllib.parse import urlparse

from harness.backends.base import (
    Advance,
    Backend,
    BackendError,
    BackendGone,
    RunContext,
    plain_messages,
)
from harness.config import RoleConfig
from harness.offline import check_endpoint, is_loopback_url
from harness.types import ChatRequest, Completion, TokenLogprob, failed_completion

GONE_AFTER = 8  # connection failures in a row (each after its immediate reconnects)
# The client does not retry (`max_retries=0`), so a request sent on a pooled connection that
# the server has just closed (a keep-alive race) fails with no answer; sending it again opens a
# fresh connection.
RECONNECTS = 2


class OpenAIBackend(Backend):
    name = "openai"

    def __init__(
        self, role: str, config: RoleConfig, context: RunContext, base_url: str | None = None
    ) -> None:
        super().__init__(role, config, context)
        self.base_url = base_url or next(iter(config.endpoints), "")
        if base_url:  # a server the harness started
            check_endpoint(base_url, offline=context.offline, where=f"roles.{role}.base_url")
        else:
            config.check_endpoints(role, context.offline)
        self.model_name = config.served_model_name or config.model
        self._gone: str | None = None
        self._failures_in_a_row = 0
        self._lock = threading.Lock()
        self.client = self._client()

    def _client(self, base_url: str | None = None):  # -> openai.OpenAI
        import openai

        base_url = base_url or self.base_url
        api_key = "not-needed"
        if self.config.api_key_env:
            api_key = os.environ.get(self.config.api_key_env, "")
            if not api_key:
                raise BackendError(
                    f"role {self.role!r}: environment variable {self.config.api_key_env} "
                    "(roles.*.api_key_env) is empty; export the API key there"
                )
        # A proxy from the environment would receive the requests (patient text) and the key.
        http_client = openai.DefaultHttpxClient(trust_env=not is_loopback_url(base_url))
        return openai.OpenAI(
            base_url=base_url,
            api_key=api_key,
            # No retries inside the client: the role retries failed requests (`max_attempts`,
            # with backoff), so a stalled request costs at most max_attempts timeouts.
            max_retries=0,
            timeout=self.config.request_timeout_s,
            http_client=http_client,
        )

    def gone_reason(self) -> str | None:
        """Why the endpoint is gone, or None. Only a loopback port is probed directly: a remote
        one may be reachable through a proxy alone."""
        if not is_loopback_url(self.base_url):
            return None
        url = urlparse(self.base_url)
        port = url.port or (443 if url.scheme == "https" else 80)
        try:
            with socket.create_connection((url.hostname or "127.0.0.1", port), timeout=5):
                return None
        except TimeoutError:  # busy, not gone
            return None
        except OSError as exc:
            return f"nothing answers at {url.hostname}:{port} ({exc.strerror or exc})"

    def _connection_failed(self, error: Exception) -> None:
        """Raise BackendGone when a failed connection means the endpoint is gone."""
        with self._lock:
            self._failures_in_a_row += 1
            in_a_row = self._failures_in_a_row
        reason = self.gone_reason()
        if reason is None and in_a_row >= GONE_AFTER:
            reason = f"{in_a_row} requests in a row could not connect ({error})"
        if reason is not None:
            self._gone = f"role {self.role!r} at {self.base_url}: {reason}; rerun to resume"
            raise BackendGone(self._gone)

    def _live(self) -> bool:
        """Whether the last request that ended was answered (no connection failure since)."""
        with self._lock:
            return self._failures_in_a_row == 0

    def identity(self) -> dict[str, Any]:
        return {**super().identity(), "base_url": self.base_url, "served": self.model_name}

    def workers(self) -> int:
        """How many requests run at once."""
        return self.config.concurrency

    def _arguments(self, request: ChatRequest) -> dict[str, Any]:
        sampling = request.sampling
        arguments: dict[str, Any] = {
            "model": self.model_name,
            "messages": plain_messages(request),
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "max_completion_tokens": sampling.max_tokens,
            "seed": request.effective_seed(self.config.model),
        }
        if sampling.stop:
            arguments["stop"] = list(sampling.stop)
        if sampling.logprobs is not None:
            arguments |= {"logprobs": True, "top_logprobs": sampling.logprobs}
        if request.chat_template_kwargs:  # vLLM's server reads them; sent only when set
            arguments["extra_body"] = {"chat_template_kwargs": request.chat_template_kwargs}
        if request.json_schema is not None:
            arguments["response_format"] = {
                "type": "json_schema",
                "json_schema": {
                    "name": request.schema_name,
                    "schema": request.json_schema,
                    "strict": True,
                },
            }
        return arguments

    def _complete(self, request: ChatRequest) -> Completion:
        import openai

        if self._gone:
            raise BackendGone(self._gone)
        started = time.perf_counter()
        try:
            response = send(self.client, self._arguments(request), live=self._live)
        except openai.OpenAIError as exc:
            if refuses_the_client(exc):
                raise BackendError(f"role {self.role!r} at {self.base_url}: {exc}") from exc
            if isinstance(exc, openai.APIConnectionError) and not timed_out(exc):
                self._connection_failed(exc)
            return failed_completion(self.config.label, request_error(exc, self.config))
        with self._lock:
            self._failures_in_a_row = 0
        return self._completion(response, started)

    def _completion(self, response: Any, started: float) -> Completion:
        """A chat completion response as a `Completion` (`started`: perf_counter at sending)."""
        choice = response.choices[0]
        usage = response.usage
        return Completion(
            text=choice.message.content or "",
            finish_reason="stop" if choice.finish_reason == "stop" else "length",
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
            logprobs=_token_logprobs(choice),
            model=self.config.label,
            latency_s=time.perf_counter() - started,
        )

    def _generate(
        self, requests: Sequence[ChatRequest], advance: Advance | None
    ) -> list[Completion]:
        if self._gone:
            raise BackendGone(self._gone)
        results: list[Completion | None] = [None] * len(requests)
        pool = ThreadPoolExecutor(max_workers=self.workers())
        futures = {pool.submit(self._complete, r): i for i, r in enumerate(requests)}
        try:
            for future in as_completed(futures):
                results[futures[future]] = future.result()
                if advance:
                    advance(1)
        except BackendGone as exc:  # the requests still running fail fast now
            pool.shutdown(wait=True, cancel_futures=True)
            exc.finished = {i: f.result() for f, i in futures.items() if _answered(f)}
            raise
        except BaseException:
            # An interrupt does not wait for the requests in flight (on a busy machine they can
            # take minutes): closing the backend stops its server or client, which ends them.
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown(wait=True)
        return [r for r in results if r is not None]

    def close(self) -> None:
        client = getattr(self, "client", None)
        if client is not None:
            client.close()
            self.client = None


def send(client: Any, arguments: dict[str, Any], live: Callable[[], bool]) -> Any:
    """The chat completion for `arguments`; a connection error is sent again at once, at most
    `RECONNECTS` times, while `live()` says the endpoint answered last. A timeout is never
    sent again here: it already cost `request_timeout_s`."""
    import openai

    reconnects = 0
    while True:
        try:
            return client.chat.completions.create(**arguments)
        except openai.APIConnectionError as exc:
            if timed_out(exc) or reconnects == RECONNECTS or not live():
                raise
            reconnects += 1


def refuses_the_client(error: Exception) -> bool:
    """A wrong key, model or URL: no request can succeed (the backend cannot serve)."""
    import openai

    refusals = (openai.AuthenticationError, openai.PermissionDeniedError, openai.NotFoundError)
    return isinstance(error, refusals)


def timed_out(error: Exception) -> bool:
    import openai

    return isinstance(error, openai.APITimeoutError)


def request_error(error: Exception, config: RoleConfig) -> str:
    """What a request that failed with `error` records as its error."""
    if timed_out(error):
        return f"no answer within {config.request_timeout_s:g} s (request_timeout_s)"
    return f"{type(error).__name__}: {error}"[:500]


def endpoint_fault(error: Exception, config: RoleConfig) -> str | None:
    """Why `error` shows the endpoint failing (a timeout, a connection error, a 5xx), in words
    that carry no request or answer text; None where it is the request's own error (4xx)."""
    import openai

    if timed_out(error):
        return request_error(error, config)
    if isinstance(error, openai.APIConnectionError):
        cause = error.__cause__ or error
        return f"{type(cause).__name__}: {cause}"[:200]
    if isinstance(error, openai.APIStatusError) and error.status_code >= 500:
        return f"HTTP {error.status_code}"
    return None


def _answered(future: Future[Completion]) -> bool:
    return future.done() and not future.cancelled() and future.exception() is None


def _token_logprobs(choice: Any) -> tuple[TokenLogprob, ...] | None:
    content = choice.logprobs.content if choice.logprobs else None
    if not content:
        return None
    return tuple(
        TokenLogprob(
            token=t.token,
            logprob=t.logprob,
            top={alt.token: alt.logprob for alt in (t.top_logprobs or [])},
        )
        for t in content
    )
