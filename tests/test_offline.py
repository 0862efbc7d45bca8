import os
import subprocess
import sys

import pytest

from harness.backends import create_backend
from harness.config import RoleConfig
from harness.offline import OfflineError, apply_environment, check_endpoint, is_loopback_host


@pytest.mark.parametrize("host", ["127.0.0.1", "127.3.2.1", "localhost", "::1", "[::1]"])
def test_loopback_hosts_are_allowed(host):
    assert is_loopback_host(host)


@pytest.mark.parametrize(
    "url",
    [
        "https://api.openai.com/v1",
        "http://10.0.0.5:8000/v1",
        "http://192.168.1.2/v1",
        "http://127.0.0.1.example.com/v1",
        "http://0.0.0.0:8000/v1",
    ],
)
def test_non_loopback_endpoints_are_refused_offline(url):
    with pytest.raises(OfflineError, match="not a loopback address"):
        check_endpoint(url, offline=True)
    check_endpoint(url, offline=False)


def test_openai_role_pointing_outside_is_refused_before_any_request(context):
    config = RoleConfig(
        backend="openai", model="gpt-4.1-mini", base_url="https://api.openai.com/v1"
    )
    with pytest.raises(OfflineError, match=r"roles.verifier.base_url"):
        create_backend("verifier", config, context)


def test_offline_environment_blocks_hub_and_telemetry(monkeypatch):
    for name in ("HF_HUB_OFFLINE", "VLLM_NO_USAGE_STATS", "DO_NOT_TRACK"):
        monkeypatch.delenv(name, raising=False)
    apply_environment(offline=True)
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    assert os.environ["VLLM_NO_USAGE_STATS"] == "1"
    apply_environment(offline=False)
    assert "HF_HUB_OFFLINE" not in os.environ
    assert os.environ["DO_NOT_TRACK"] == "1"  # telemetry stays off online too


@pytest.mark.integration  # a subprocess harness run
def test_cli_refuses_remote_endpoint_with_a_clear_error(tmp_path):
    profile = tmp_path / "remote.yaml"
    profile.write_text(
        f"runs_dir: {tmp_path}\nroles:\n  judge: {{backend: openai, model: m, "
        "base_url: 'http://203.0.113.7:8000/v1'}\n"
    )
    requests = tmp_path / "requests.jsonl"
    requests.write_text('{"prompt": "hello"}\n')
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "harness",
            "generate",
            "-c",
            str(profile),
            "--role",
            "judge",
            "--input",
            str(requests),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "203.0.113.7" in result.stderr and "offline" in result.stderr
    assert "Traceback" not in result.stderr


def test_engine_options_become_server_flags():
    from harness.backends.vllm_server import engine_flags

    flags = engine_flags({"tensor_parallel_size": 2, "enforce_eager": True,
                          "enable_chunked_prefill": False, "quantization": None,
                          "structured_outputs_config": {"backend": "guidance"}})  # fmt: skip
    assert flags == ["--tensor-parallel-size", "2", "--enforce-eager",
                     "--no-enable-chunked-prefill", "--structured-outputs-config",
                     '{"backend": "guidance"}']  # fmt: skip


def test_a_remote_endpoint_in_a_pool_is_refused_before_any_stage_runs(tmp_path):
    from click.testing import CliRunner

    from harness.cli import main

    profile = tmp_path / "pool.yaml"
    profile.write_text(
        f"runs_dir: {tmp_path}\nrun_name: r\n"
        "data: {prompts: harness/data/sample_prompts.jsonl, max_prompts: 2}\n"
        "rollouts: {num_samples: 1, models: [{backend: scripted, model: s, replies: [hi]}]}\n"
        "roles:\n  proposer: {backend: scripted, model: p, rule: synthetic}\n"
        "  verifier: {backend: openai, model: m, base_url: "
        "[http://127.0.0.1:8001/v1, http://203.0.113.7:8000/v1]}\n"
    )
    result = CliRunner().invoke(main, ["verify", "-c", str(profile)])
    assert isinstance(result.exception, OfflineError)  # one line, exit 2 (harness.errors)
    assert str(result.exception).startswith(
        f"{profile}: roles.verifier.base_url[1]: http://203.0.113.7:8000/v1 is not a loopback"
    )
    assert not (tmp_path / "r" / "candidates.jsonl").exists()  # no stage ran
