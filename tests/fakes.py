"""In-process network fakes: an OpenAI-compatible chat server and a proxy that counts the
connections it receives (a proxy leak shows up as a count above zero).

The server answers `POST /v1/chat/completions` with `reply(body)` (the request's JSON body;
None drops the connection without an answer, an int is an HTTP error status), `GET /health`
and `GET /v1/models` with 200. It can be stopped and started again on the same port; a request
still running when it stops gets its connection dropped. Both run on 127.0.0.1 in daemon
threads.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Reply = Callable[[dict[str, Any]], "str | int | None"]


def yes_to_everything(body: dict[str, Any]) -> str:
    """A verdict of "yes" for every criterion of a json_schema request; text otherwise."""
    response_format = body.get("response_format")
    if not response_format:
        return "a plain answer"
    schema = response_format["json_schema"]["schema"]
    return json.dumps(dict.fromkeys(schema.get("properties", {}), "yes"))


class FakeOpenAIServer:
    def __init__(self, reply: Reply = yes_to_everything, port: int = 0) -> None:
        self.reply = reply
        self.requests: list[dict[str, Any]] = []
        self.server: ThreadingHTTPServer | None = None
        self.port = port
        self.start()

    def start(self) -> None:
        """Listen (again) on `port`; the first start picks a free one."""
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.root}/v1"

    def close(self) -> None:
        server, self.server = self.server, None
        if server is not None:
            server.shutdown()
            server.server_close()

    def __enter__(self) -> FakeOpenAIServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                if fake.server is None:  # stopping
                    self._drop()
                elif self.path == "/v1/models":
                    self._send(200, {"object": "list", "data": [{"id": "fake"}]})
                else:
                    self._send(200 if self.path == "/health" else 404, {})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.requests.append(body)
                answer = fake.reply(body)
                if answer is None or fake.server is None:  # no answer, or stopped meanwhile
                    self._drop()
                    return
                if isinstance(answer, int):
                    self._send(answer, {"error": {"message": f"status {answer}"}})
                    return
                self._send(200, completion_body(body, answer))

            def _drop(self) -> None:
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)

            def _send(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler


def completion_body(request: dict[str, Any], text: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": request.get("model", "fake"),
        "choices": [
            {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
    }


class ProxyListener:
    """A socket that accepts and counts connections, then closes them: the proxy address put
    into HTTP_PROXY, HTTPS_PROXY and ALL_PROXY."""

    def __init__(self) -> None:
        self.connections = 0
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def url(self, credentials: str = "") -> str:
        return f"http://{credentials + '@' if credentials else ''}127.0.0.1:{self.port}"

    def environment(self, credentials: str = "") -> dict[str, str]:
        names = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")
        return {n: self.url(credentials) for name in names for n in (name, name.lower())}

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            connection.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread
        self.sock.close()

    def __enter__(self) -> ProxyListener:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def closed_port() -> int:
    """A loopback port nothing listens on (connection refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
