"""A served model that accepts a request and never answers: the request times out into the
role's retry path, a bounded number of times, and ends unscored instead of hanging."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from harness.backends.openai_api import OpenAIBackend
from harness.config import RoleConfig
from harness.roles import Role

from .conftest import verdict_requests


@pytest.fixture
def stalled_server():
    """A loopback HTTP server that reads each request and then says nothing; it counts them."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    received: list[bytes] = []
    held: list[socket.socket] = []

    def serve() -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            held.append(connection)
            data = connection.recv(65536)
            if data:
                received.append(data)

    threading.Thread(target=serve, daemon=True).start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/v1", received
    listener.close()
    for connection in held:
        connection.close()


def test_a_stalled_request_times_out_and_is_retried_a_bounded_number_of_times(
    stalled_server, context
):
    url, received = stalled_server
    config = RoleConfig(
        backend="openai", model="m", base_url=url, request_timeout_s=0.5, max_attempts=3
    )
    backend = OpenAIBackend("verifier", config, context)
    started = time.monotonic()
    try:
        [completion] = Role("verifier", config, backend).generate(verdict_requests(1))
    finally:
        backend.close()
    seconds = time.monotonic() - started
    assert completion.error == "no answer within 0.5 s (request_timeout_s)"
    assert completion.parsed is None and completion.finish_reason == "error"
    # one request per attempt (no retries inside the client multiplying the wait), and
    # three timeouts plus the role's backoff (0.5 s + 1 s)
    assert sum(r.startswith(b"POST /v1/chat/completions") for r in received) == 3
    assert 3 <= seconds < 10
