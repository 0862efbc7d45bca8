"""vLLM's own distribution as configuration: the exact command line of the server the harness
starts for tensor, pipeline and data parallel profiles (on Ray, across nodes), its
environment, the engine options each vLLM backend refuses, and the GPUs the memory plan gives
such engines. No GPU is needed: nothing here starts a server."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from harness.backends.vllm_server import server_command
from harness.config import ConfigError, RoleConfig, load_config
from harness.offline import apply_environment, child_environment
from harness.plan import engine_span, parse_gpus, plan_run

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
MODEL = "/models/Qwen3-32B"
PORT = 41000


@pytest.fixture(autouse=True)
def _no_cpu_defaults(monkeypatch) -> None:
    """The CPU build's default (`--no-enable-chunked-prefill`) stays out of these lines."""
    monkeypatch.setattr("harness.backends.vllm_server.engine_defaults", dict)


def head(label: str = "qwen3-32b") -> list[str]:
    """What every server command starts with: the harness's own choices."""
    return [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", MODEL,
            "--served-model-name", label, "--host", "127.0.0.1", "--port", str(PORT),
            "--seed", "0", "--structured-outputs-config",
            json.dumps({"backend": "xgrammar", "disable_any_whitespace": True}),
            "--no-enable-log-requests", "--disable-uvicorn-access-log"]  # fmt: skip


def command_for(engine: dict) -> list[str]:
    role = RoleConfig(name="qwen3-32b", backend="vllm-server", model="Qwen/Qwen3-32B",
                      engine={"dtype": "bfloat16", **engine})  # fmt: skip
    return server_command(MODEL, role, PORT)


@pytest.mark.parametrize(
    ("engine", "flags"),
    [
        ({"tensor_parallel_size": 2}, ["--tensor-parallel-size", "2"]),
        ({"pipeline_parallel_size": 2}, ["--pipeline-parallel-size", "2"]),
        ({"data_parallel_size": 2}, ["--data-parallel-size", "2"]),
        (
            {"tensor_parallel_size": 4, "distributed_executor_backend": "ray"},
            ["--tensor-parallel-size", "4", "--distributed-executor-backend", "ray"],
        ),
        (
            {
                "tensor_parallel_size": 2,
                "pipeline_parallel_size": 2,
                "distributed_executor_backend": "ray",
            },
            [
                "--tensor-parallel-size",
                "2",
                "--pipeline-parallel-size",
                "2",
                "--distributed-executor-backend",
                "ray",
            ],
        ),
        (
            {
                "data_parallel_size": 4,
                "data_parallel_size_local": 2,
                "data_parallel_address": "10.0.0.1",
                "data_parallel_rpc_port": 13345,
            },
            [
                "--data-parallel-size",
                "4",
                "--data-parallel-size-local",
                "2",
                "--data-parallel-address",
                "10.0.0.1",
                "--data-parallel-rpc-port",
                "13345",
            ],
        ),
        (
            {"data_parallel_size": 4, "data_parallel_backend": "ray"},
            ["--data-parallel-size", "4", "--data-parallel-backend", "ray"],
        ),
    ],
    ids=["tp2", "pp2", "dp2", "tp4-ray", "tp2-pp2-ray", "dp-across-nodes", "dp-ray"],
)
def test_parallel_options_reach_the_server_command_exactly(engine: dict, flags: list[str]) -> None:
    assert command_for(engine) == [*head(), "--dtype", "bfloat16", *flags]


def test_the_multinode_profile_builds_its_command_line() -> None:
    config = load_config(CONFIGS / "multinode.yaml")
    command = server_command(MODEL, config.verifier(), PORT)
    assert command[: len(head())] == head()
    assert command[len(head()) :] == [
        "--dtype", "bfloat16", "--tensor-parallel-size", "2", "--pipeline-parallel-size", "2",
        "--distributed-executor-backend", "ray", "--gpu-memory-utilization", "0.85",
        "--max-model-len", "16384", "--enable-prefix-caching",
    ]  # fmt: skip


def test_the_servers_environment_keeps_the_ray_cluster_and_turns_ray_stats_off(
    monkeypatch,
) -> None:
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "1")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    apply_environment(offline=True)
    environ = child_environment(True, {"VLLM_CPU_OMP_THREADS_BIND": "0"})
    assert environ["RAY_ADDRESS"] == "10.0.0.1:6379"  # the operator's cluster
    assert environ["RAY_USAGE_STATS_ENABLED"] == "0"
    assert "HTTPS_PROXY" not in environ and environ["VLLM_NO_USAGE_STATS"] == "1"


@pytest.mark.parametrize(
    ("backend", "key", "value", "says"),
    [
        ("vllm", "data_parallel_size", 2, "use backend: vllm-server"),
        ("vllm", "data_parallel_address", "10.0.0.1", "use backend: vllm-server"),
        ("vllm", "headless", True, "use backend: vllm-server"),
        ("vllm-server", "host", "0.0.0.0", "127.0.0.1 only"),
        ("vllm-server", "port", 8000, "free loopback port"),
        ("vllm-server", "headless", True, "no API for the harness"),
        ("vllm-server", "api_server_count", 2, "one API process"),
    ],
)
def test_engine_options_a_backend_cannot_take_are_refused_by_name(
    tmp_path: Path, backend: str, key: str, value, says: str
) -> None:
    profile = tmp_path / "p.yaml"
    profile.write_text(f"roles:\n  verifier:\n    - {{backend: {backend}, model: tiny-s, "
                       f"engine: {{{key}: {json.dumps(value)}}}}}\n")  # fmt: skip
    with pytest.raises(ConfigError) as raised:
        load_config(profile)
    message = str(raised.value)
    assert "p.yaml:3: roles.verifier.0" in message and f"engine.{key}: " in message
    assert says in message


def test_what_each_backend_can_take_loads() -> None:
    RoleConfig(backend="vllm", model="m", engine={"tensor_parallel_size": 2,
               "pipeline_parallel_size": 2, "distributed_executor_backend": "ray",
               "data_parallel_size": 1})  # fmt: skip
    RoleConfig(backend="vllm-server", model="m", engine={"data_parallel_size": 4,
               "data_parallel_size_local": 2, "data_parallel_address": "10.0.0.1"})  # fmt: skip


# --- the GPUs the plan gives such engines ---------------------------------------------------


@pytest.mark.parametrize(
    ("engine", "local", "total", "here"),
    [
        ({}, 1, 1, 1),
        ({"tensor_parallel_size": 2, "pipeline_parallel_size": 2}, 8, 4, 4),
        ({"tensor_parallel_size": 2, "data_parallel_size": 2}, 8, 4, 4),
        (
            {"tensor_parallel_size": 2, "pipeline_parallel_size": 2, "data_parallel_size": 2},
            4,
            8,
            8,
        ),
        ({"tensor_parallel_size": 4, "distributed_executor_backend": "ray"}, 2, 4, 2),
        ({"tensor_parallel_size": 4, "distributed_executor_backend": "ray"}, 8, 4, 4),
        (
            {"data_parallel_size": 4, "data_parallel_size_local": 2, "tensor_parallel_size": 2},
            4,
            8,
            4,
        ),
        ({"tensor_parallel_size": 8, "nnodes": 2}, 4, 8, 4),
    ],
)
def test_an_engine_spans_tensor_x_pipeline_x_data_parallel_gpus(
    engine: dict, local: int, total: int, here: int
) -> None:
    span = engine_span(engine, local)
    assert (span.total, span.here) == (total, here)


def _verifier_row(overrides: list[str], gpus: str):
    config = load_config(CONFIGS / "multinode.yaml", overrides)
    plan = plan_run(config, parse_gpus(gpus), gpus, ["verify"])
    [group] = plan.groups
    [row] = group.engines
    return plan, row


def test_weights_are_split_over_tensor_x_pipeline_not_over_data_parallel() -> None:
    # Qwen3-32B: 32_762_123_264 parameters x 2 bytes = 61.03 GiB; over TP 2 x PP 2: 15.26
    plan, row = _verifier_row([], "2x80GB")
    assert row.weights_gib == round(32_762_123_264 * 2 / 4 / 2**30, 2) == 15.26
    # KV: 262_144 bytes per token x 16384 tokens / (2 x 2) = 1 GiB per GPU
    assert row.kv_gib == 1.0
    assert (row.gpus, row.elsewhere) == ([0, 1], 2) and plan.ok  # Ray puts the rest elsewhere
    replicas = ["roles.proposer.engine.pipeline_parallel_size=1",
                "roles.proposer.engine.data_parallel_size=2",
                "roles.proposer.engine.distributed_executor_backend=mp"]  # fmt: skip
    plan, row = _verifier_row(replicas, "4x80GB")
    assert row.weights_gib == 30.51 and row.kv_gib == 2.0  # each replica holds half per GPU
    assert (row.gpus, row.elsewhere) == ([0, 1, 2, 3], 0) and plan.ok


def test_more_gpus_than_the_machine_has_is_refused_in_one_line() -> None:
    plan, _ = _verifier_row(["roles.proposer.engine.distributed_executor_backend=mp"], "2x80GB")
    problem = plan.first_problem()
    assert problem is not None and "\n" not in problem
    assert problem.startswith("stage verify, qwen3-32b on GPU 0,1,2,3: needs 4 GPUs "
                              "(tensor 2 x pipeline 2 x data 1), 2 here; ")  # fmt: skip
    assert "Beyond one machine" in problem


def test_data_parallel_across_nodes_plans_this_nodes_replicas_only() -> None:
    across = ["roles.proposer.engine.pipeline_parallel_size=1",
              "roles.proposer.engine.distributed_executor_backend=mp",
              "roles.proposer.engine.data_parallel_size=2",
              "roles.proposer.engine.data_parallel_size_local=1",
              "roles.proposer.engine.data_parallel_address=10.0.0.1"]  # fmt: skip
    plan, row = _verifier_row(across, "2x80GB")
    assert (row.gpus, row.elsewhere) == ([0, 1], 2) and plan.ok
