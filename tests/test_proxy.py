"""No request goes through a proxy from the environment to a loopback endpoint: HTTP_PROXY,
HTTPS_PROXY and ALL_PROXY (either case) point at a listener that must receive nothing while
the OpenAI client, the server health check and the CLI talk to a fake server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx2
import pytest

from harness.backends import create_backend
from harness.backends.vllm_server import VLLMServerBackend
from harness.config import RoleConfig
from harness.offline import apply_environment, child_environment, proxy_variables

from .conftest import verdict_requests
from .fakes import FakeOpenAIServer, ProxyListener

SECRET = "nurse:hunter2"


@pytest.fixture
def proxy(monkeypatch):
    with ProxyListener() as listener:
        for name, value in listener.environment(SECRET).items():
            monkeypatch.setenv(name, value)
        yield listener


def test_the_listener_sees_a_client_that_trusts_the_environment(proxy):
    """The control: without the fix this is where a request (and its key) would go."""
    with FakeOpenAIServer() as server, pytest.raises(httpx2.HTTPError):
        httpx2.Client(trust_env=True).get(f"{server.root}/health")
    assert proxy.connections == 1


def test_offline_environment_drops_every_proxy_setting_and_says_so_once(proxy, capsys):
    os.environ["FTP_PROXY"] = proxy.url()
    apply_environment(offline=True)
    assert proxy_variables(os.environ) == []
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("offline: ignoring ")
    assert "HTTP_PROXY" in err and "https_proxy" in err and "FTP_PROXY" in err
    assert SECRET not in err and str(proxy.port) not in err
    apply_environment(offline=True)
    assert capsys.readouterr().err == ""


def test_online_keeps_the_proxy_but_not_for_loopback(proxy, monkeypatch):
    monkeypatch.setenv("NO_PROXY", "intranet.example")
    monkeypatch.delenv("no_proxy", raising=False)
    apply_environment(offline=False)
    assert os.environ["HTTPS_PROXY"] == proxy.url(SECRET)
    assert os.environ["NO_PROXY"] == "intranet.example,127.0.0.1,localhost,::1"
    assert os.environ["no_proxy"] == "127.0.0.1,localhost,::1"


def test_started_processes_get_no_proxy_offline(proxy):
    assert proxy_variables(child_environment(offline=True)) == []
    assert child_environment(offline=True, extra={"A": "1"})["A"] == "1"
    assert "HTTP_PROXY" in child_environment(offline=False)


@pytest.mark.parametrize("offline", [True, False])
def test_openai_backend_to_loopback_never_uses_the_proxy(proxy, monkeypatch, tmp_path, offline):
    """The client itself ignores the proxy for loopback: built with the proxy set and
    no NO_PROXY, offline or not, without the environment being prepared first."""
    from harness.backends.base import RunContext
    from harness.backends.openai_api import OpenAIBackend

    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    context = RunContext(run_dir=tmp_path, offline=offline)
    with FakeOpenAIServer() as server:
        config = RoleConfig(backend="openai", model="m", base_url=server.base_url)
        with OpenAIBackend("verifier", config, context) as backend:
            completions = backend.generate(verdict_requests(5))
    assert [c.error for c in completions] == [None] * 5
    assert len(server.requests) == 5
    assert proxy.connections == 0


def test_a_role_started_offline_never_uses_the_proxy(proxy, tmp_path):
    from harness.backends.base import RunContext

    with FakeOpenAIServer() as server:
        config = RoleConfig(backend="openai", model="m", base_url=server.base_url)
        backend = create_backend("verifier", config, RunContext(run_dir=tmp_path))
        for name, value in proxy.environment(SECRET).items():  # set again after the guard
            os.environ[name] = value
        with backend:
            completions = backend.generate(verdict_requests(5))
    assert [c.error for c in completions] == [None] * 5
    assert proxy.connections == 0


def test_server_health_check_never_uses_the_proxy(proxy, tmp_path):
    backend = object.__new__(VLLMServerBackend)
    backend.process = subprocess.Popen(["sleep", "30"])
    backend.log_path = tmp_path / "server.log"
    try:
        with FakeOpenAIServer() as server:
            backend._wait_healthy(server.root, timeout_s=10, role="verifier")
    finally:
        backend.process.kill()
        backend.process.wait()
    assert proxy.connections == 0


@pytest.mark.integration  # a subprocess harness run
def test_cli_offline_run_with_a_proxy_in_the_environment(proxy, tmp_path: Path):
    profile = tmp_path / "profile.yaml"
    requests = tmp_path / "requests.jsonl"
    requests.write_text('{"prompt": "chest pain since this morning"}\n' * 3)
    with FakeOpenAIServer() as server:
        profile.write_text(
            f"runs_dir: {tmp_path}\nroles:\n  judge: {{backend: openai, model: m, "
            f"base_url: '{server.base_url}', api_key_env: FAKE_KEY}}\n"
        )
        result = subprocess.run(
            [sys.executable, "-m", "harness", "generate", "-c", str(profile), "--role", "judge",
             "--input", str(requests)],
            capture_output=True, text=True, timeout=120,
            env={**os.environ, "FAKE_KEY": "sk-secret"},
        )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert len(server.requests) == 3
    assert proxy.connections == 0
    assert result.stderr.count("offline: ignoring") == 1
    assert SECRET not in result.stderr + result.stdout
