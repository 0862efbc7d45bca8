"""The training child process of `harness eval` (its command line, environment, GPUs and
failure report, through fake children) and the GRPOConfig options sent to TRL on a GPU."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import pytest
import torch

from harness import train_process
from harness.config import ConfigError, HarnessConfig
from harness.errors import explain
from harness.train_process import (
    Launch,
    TrainingProcessError,
    launch_problem,
    launch_settings,
    needs_launch,
    read_result,
    run_child,
    train_command,
    train_environment,
    train_in_child,
    training_gpus,
    write_result,
)
from harness.training import TrainResult, generation_server_command, grpo_options
from harness.trust import without_gate

from .conftest import scripted_role

RUN_TIME_VARIABLES = {
    "RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "2",
    "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500",
    "VLLM_WORKER_MULTIPROC_METHOD": "spawn", "VLLM_DIST_IDENT": "x",
}  # fmt: skip
GUARD_VARIABLES = {
    "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
    "VLLM_NO_USAGE_STATS": "1", "VLLM_DO_NOT_TRACK": "1", "VLLM_CACHE_ROOT": "/cache/vllm",
    "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_LOGGING_LEVEL": "ERROR",
}  # fmt: skip


def profile(tmp_path: Path, **train) -> HarnessConfig:
    return HarnessConfig.model_validate({
        "runs_dir": str(tmp_path), "run_name": "r", "train": train,
        "roles": {"policy": scripted_role(sampling={"temperature": 0.7}).model_dump()},
    })  # fmt: skip


@pytest.mark.parametrize(
    ("chosen", "visible", "expected"),
    [
        (None, [], []),  # CPU: no GPU to limit
        (None, ["0"], ["0"]),
        (None, ["0", "1"], ["1"]),  # the last of several
        (None, ["2", "5", "7"], ["7"]),  # as the parent's CUDA_VISIBLE_DEVICES names them
        ([0, 1], ["0", "1"], ["0", "1"]),  # train.gpus
    ],
)
def test_training_gpus(chosen, visible, expected):
    assert training_gpus(chosen, visible) == expected


@pytest.mark.parametrize(
    ("chosen", "visible", "count", "taken", "expected"),
    [
        (None, [str(i) for i in range(8)], 8, [], [str(i) for i in range(8)]),
        (None, ["0", "1", "2", "3"], 2, [], ["2", "3"]),  # the last ones
        (None, ["0", "1", "2", "3"], 2, ["3"], ["1", "2"]),  # not the generation server's
        ([4, 5], ["0", "1"], 2, [], ["4", "5"]),
    ],
)
def test_training_gpus_for_several_processes(chosen, visible, count, taken, expected):
    assert training_gpus(chosen, visible, count, taken) == expected


def test_more_processes_than_free_gpus_is_a_config_error():
    with pytest.raises(ConfigError, match=r"train.num_processes is 3 but 2 GPUs are free"):
        training_gpus(None, ["0", "1", "2"], 3, ["0"])
    with pytest.raises(ConfigError, match=r"train.num_processes is 2 but 1 GPUs are free"):
        training_gpus(None, ["0"], 2)


HARNESS = ["-m", "harness", "train", "-c", "c.yaml", "--result", "r.json"]
# accelerate's defaults, said (else it warns); TRL's bf16/fp16 settings decide the precision
QUIET = ["--mixed_precision", "no", "--dynamo_backend", "no"]


def command_of(launch: Launch) -> list[str]:
    return train_command(Path("c.yaml"), Path("r.json"), launch)


def test_one_process_runs_harness_train_on_the_resolved_profile():
    assert command_of(Launch(1, ("1",))) == [sys.executable, *HARNESS]
    assert command_of(Launch(1, ())) == command_of(Launch(1, ("0",)))


@pytest.mark.parametrize("processes", [2, 8])
def test_several_gpus_go_through_accelerate_launch(processes):
    launch = Launch(processes, tuple(str(i) for i in range(processes)), port=29611)
    assert command_of(launch) == [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_machines", "1",
        "--num_processes", str(processes), *QUIET, "--main_process_port", "29611", *HARNESS,
    ]  # fmt: skip


def test_cpu_processes_use_the_multi_gpu_launcher_with_their_share_of_threads():
    # `--cpu` would pick accelerate's simple launcher: one process
    command = command_of(Launch(2, (), port=29612, cpu_threads=8))
    assert command[3:] == [
        "--multi_gpu", "--num_machines", "1", "--num_processes", "2", *QUIET,
        "--main_process_port", "29612", "--num_cpu_threads_per_process", "8", *HARNESS,
    ]  # fmt: skip
    assert "--cpu" not in command


def test_a_deepspeed_config_passes_through_even_for_one_process(tmp_path):
    zero = tmp_path / "zero3.json"
    command = command_of(Launch(1, ("0",), deepspeed=zero, port=29613))
    assert command[3:] == [
        "--use_deepspeed", "--deepspeed_config_file", str(zero),
        "--num_machines", "1", "--num_processes", "1", *QUIET, "--main_process_port", "29613",
        *HARNESS,
    ]  # fmt: skip


def test_launch_settings_on_a_cpu_and_on_gpus(tmp_path, monkeypatch):
    monkeypatch.setattr(train_process.os, "cpu_count", lambda: 16)
    on_cpu = launch_settings(profile(tmp_path, num_processes=2), [], on_cpu=True)
    assert (on_cpu.processes, on_cpu.gpus, on_cpu.cpu_threads) == (2, (), 8)
    assert on_cpu.port is not None and on_cpu.launcher
    eight = launch_settings(profile(tmp_path, num_processes=8), [str(i) for i in range(8)], False)
    assert eight.gpus == tuple(str(i) for i in range(8)) and eight.cpu_threads is None
    listed = launch_settings(profile(tmp_path, gpus=[2, 3]), [str(i) for i in range(4)], False)
    assert (listed.processes, listed.gpus) == (2, ("2", "3"))  # one process per listed GPU
    single = launch_settings(profile(tmp_path), ["0"], on_cpu=False)
    assert single == Launch(1, ("0",)) and not single.launcher


@pytest.mark.parametrize(
    ("train", "refusal"),
    [
        ({"deepspeed": "zero3.json"}, "train.deepspeed needs CUDA GPUs"),
        ({"generation": "vllm", "vllm_mode": "server", "vllm_server_url": "http://127.0.0.1:1"},
         "train.vllm_mode: server needs CUDA GPUs (TRL syncs the trained weights"),
    ],
)  # fmt: skip
def test_gpu_only_settings_are_refused_on_a_cpu_in_one_line(tmp_path, train, refusal):
    with pytest.raises(ConfigError) as refused:
        launch_settings(profile(tmp_path, **train), [], on_cpu=True)
    assert str(refused.value).startswith(refusal) and "\n" not in str(refused.value)


def test_launch_problems_name_the_field(tmp_path):
    missing = profile(tmp_path, deepspeed=str(tmp_path / "zero3.json"))
    assert launch_problem(missing) == (
        f"train.deepspeed: {tmp_path / 'zero3.json'} does not exist (a DeepSpeed ZeRO JSON config)"
    )
    (tmp_path / "zero3.json").write_text("{}")
    assert launch_problem(missing) is None
    remote = profile(tmp_path, generation="vllm", vllm_mode="server",
                     vllm_server_url="http://gpu-node:8000")  # fmt: skip
    assert "train.vllm_server_url: http://gpu-node:8000 is not a loopback" in launch_problem(remote)
    in_process = profile(tmp_path, num_processes=2).model_copy(update={"roles": profile(
        tmp_path).roles.model_copy(update={"verifier": [scripted_role().model_copy(
            update={"backend": "vllm", "model": "tiny-s"})]})})  # fmt: skip
    assert launch_problem(in_process).startswith(
        "train.num_processes: 2 with an in-process `vllm` verifier would start one engine"
    )
    assert "use backend: vllm-server" in launch_problem(in_process)


def test_harness_train_launches_itself_except_inside_a_launched_process(tmp_path, monkeypatch):
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert not needs_launch(profile(tmp_path))
    assert needs_launch(profile(tmp_path, num_processes=2))
    assert needs_launch(profile(tmp_path, gpus=[0, 1]))
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert not needs_launch(profile(tmp_path, num_processes=2))


def test_num_processes_must_match_the_listed_gpus_in_one_line(tmp_path):
    from harness.config import load_config

    with pytest.raises(ConfigError) as mismatch:
        load_config(None, ["train.gpus=[0, 1, 2]", "train.num_processes=2"])
    assert "train.num_processes is 2 but train.gpus lists 3 GPUs" in str(mismatch.value)
    with pytest.raises(ConfigError, match=r"exactly one of train.vllm_server_gpus"):
        load_config(None, ["train.generation=vllm", "train.vllm_mode=server"])


def test_unused_launch_settings_leave_the_dump_and_fingerprints_as_they_were(tmp_path):
    from harness.stage_config import LAUNCH_DEFAULTS, TrainConfig

    dumped = json.loads(TrainConfig().model_dump_json())
    assert not set(LAUNCH_DEFAULTS) & set(dumped) and list(dumped)[-2:] == ["gpus", "trl"]
    assert TrainConfig(num_processes=2).model_dump()["num_processes"] == 2


def test_the_environment_is_clean_limited_to_the_gpus_and_keeps_the_offline_guard(monkeypatch):
    for name, value in {**RUN_TIME_VARIABLES, **GUARD_VARIABLES}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    monkeypatch.setattr("harness.backends.processes.thread_binding",
                        lambda: {"VLLM_CPU_OMP_THREADS_BIND": "auto"})  # fmt: skip
    environ = train_environment(offline=True, gpus=["1"])
    assert not set(RUN_TIME_VARIABLES) & set(environ)
    assert {k: environ[k] for k in GUARD_VARIABLES} == GUARD_VARIABLES
    assert "HTTPS_PROXY" not in environ
    assert environ["CUDA_VISIBLE_DEVICES"] == "1"
    assert environ["VLLM_CPU_OMP_THREADS_BIND"] == "auto"  # the binding the parent would give


def test_without_gpus_the_visible_devices_are_left_alone(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert "CUDA_VISIBLE_DEVICES" not in train_environment(offline=False, gpus=[])


def child(script: str) -> list[str]:
    return [sys.executable, "-c", script]


def test_a_failed_child_is_reported_with_its_status_and_last_lines():
    shown: list[str] = []
    script = "import sys; [print(f'line {i}', file=sys.stderr) for i in range(30)]; sys.exit(1)"
    with pytest.raises(TrainingProcessError) as failure:
        run_child(child(script), {}, show=shown.append)
    message = str(failure.value)
    assert message.splitlines()[0].startswith("the training process exited with code 1 (")
    assert message.splitlines()[1:] == [f"  | line {i}" for i in range(10, 30)]
    assert shown == [f"line {i}" for i in range(30)]  # every line streamed through
    assert explain(failure.value) == (message, 1)


def test_the_childs_exit_status_is_kept_and_a_signal_gives_1():
    with pytest.raises(TrainingProcessError) as failure:
        run_child(child("print('bad profile'); raise SystemExit(2)"), {}, show=lambda _: None)
    assert failure.value.exit_status == 2 and "  | bad profile" in str(failure.value)
    with pytest.raises(TrainingProcessError) as killed:
        run_child(child("import os, signal; os.kill(os.getpid(), signal.SIGKILL)"), {},
                  show=lambda _: None)  # fmt: skip
    assert killed.value.exit_status == 1 and "killed by signal 9" in str(killed.value)


def result_of(train_dir: Path) -> TrainResult:
    return TrainResult(
        train_dir=train_dir, adapter_dir=train_dir / "adapter", steps=4, reward_first=0.25,
        reward_last=None, base_weights_unchanged=True, adapter_weights_changed=True,
        peak_memory_mb=12.5, step_split={"step_s": 1.0}, resumed_from=2,
    )  # fmt: skip


def test_the_result_travels_as_json_from_the_main_process_only(tmp_path, monkeypatch):
    path = tmp_path / "result.json"
    monkeypatch.setenv("RANK", "1")
    write_result(result_of(tmp_path), path)
    assert not path.exists()
    monkeypatch.setenv("RANK", "0")
    write_result(result_of(tmp_path), path)
    assert read_result(path) == result_of(tmp_path)


FAKE_TRAIN = """
import json, os, sys
from pathlib import Path
result = Path(sys.argv[sys.argv.index("--result") + 1])
config = sys.argv[sys.argv.index("-c") + 1]
record = {"train_dir": "t", "adapter_dir": "t/adapter", "steps": 3, "reward_first": 0.5,
          "reward_last": 0.75, "base_weights_unchanged": True, "adapter_weights_changed": True,
          "peak_memory_mb": 1.0, "step_split": {}, "resumed_from": 0}
print("training", config, file=sys.stderr)
result.write_text(json.dumps(record))
Path(os.environ["FAKE_ENV"]).write_text(json.dumps(dict(os.environ)))
"""


def test_train_in_child_runs_the_command_with_the_clean_environment(tmp_path, monkeypatch):
    script, env_file = tmp_path / "fake_train.py", tmp_path / "env.json"
    script.write_text(FAKE_TRAIN)
    commands: list[list[str]] = []

    def fake_command(config_path, result_path, launch):
        commands.append(train_command(config_path, result_path, launch))
        return [sys.executable, str(script), *commands[-1][3:]]  # its arguments, not harness

    monkeypatch.setattr(train_process, "train_command", fake_command)
    monkeypatch.setattr(train_process, "visible_gpus", lambda: ["0", "1"])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("FAKE_ENV", str(env_file))
    monkeypatch.setenv("MASTER_PORT", "29500")
    config = profile(tmp_path)
    config_path = tmp_path / "r" / "config.yaml"
    config_path.parent.mkdir()
    shown: list[str] = []
    result = train_in_child(config, config_path, show=shown.append)
    assert (result.steps, result.reward_last) == (3, 0.75)
    assert shown == [f"training {config_path}"]
    assert commands[0][:6] == [sys.executable, "-m", "harness", "train", "-c", str(config_path)]
    environ = json.loads(env_file.read_text())
    assert environ["CUDA_VISIBLE_DEVICES"] == "1" and "MASTER_PORT" not in environ
    assert HarnessConfig.model_validate_json(json.dumps(_yaml(config_path))) == config


def _yaml(path: Path) -> dict:
    import yaml

    return yaml.safe_load(path.read_text())


def fields_of_grpo_config() -> set[str]:
    from trl import GRPOConfig

    return {f.name for f in dataclasses.fields(GRPOConfig)}


def test_on_a_gpu_the_policy_loads_in_bfloat16_with_colocated_vllm_that_fits(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    config = profile(tmp_path, generation="vllm", vllm_memory_share=0.35,
                     max_completion_length=2048)  # fmt: skip
    options = grpo_options(config, tmp_path / "train", longest_prompt=512)
    sent = {k: options[k] for k in (
        "use_cpu", "model_init_kwargs", "bf16", "fp16", "gradient_checkpointing", "use_vllm",
        "vllm_mode", "vllm_gpu_memory_utilization", "vllm_max_model_length")}  # fmt: skip
    assert sent == {
        "use_cpu": False, "model_init_kwargs": {"dtype": "bfloat16"}, "bf16": True,
        "fp16": False, "gradient_checkpointing": True, "use_vllm": True,
        "vllm_mode": "colocate", "vllm_gpu_memory_utilization": 0.35,
        "vllm_max_model_length": 512 + 2048,
    }  # fmt: skip
    assert set(options) <= fields_of_grpo_config()  # every name is one TRL 1.16 knows


def test_a_gpu_without_bfloat16_trains_in_float16_and_settings_win(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    options = grpo_options(profile(tmp_path, generation="vllm"), tmp_path, longest_prompt=None)
    assert options["model_init_kwargs"] == {"dtype": "float16"} and options["fp16"]
    assert options["vllm_max_model_length"] is None  # no prompt length known: TRL's default
    explicit = profile(tmp_path, generation="vllm", dtype="float32", vllm_max_model_len=4096,
                       trl={"gradient_checkpointing": False})  # fmt: skip
    options = grpo_options(explicit, tmp_path, longest_prompt=100)
    assert options["model_init_kwargs"] == {"dtype": "float32"}
    assert not options["bf16"] and not options["fp16"] and not options["gradient_checkpointing"]
    assert options["vllm_max_model_length"] == 4096


def test_on_cpu_the_options_stay_as_they_were(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    options = grpo_options(profile(tmp_path), tmp_path, longest_prompt=100)
    assert options["use_cpu"] and options["model_init_kwargs"] == {"dtype": "float32"}
    assert not options["bf16"] and not options["fp16"] and not options["gradient_checkpointing"]
    assert options["vllm_max_model_length"] is None  # plain generation: no vLLM context


class _Server:
    base_url = "http://127.0.0.1:43210/v1"

    def template_kwargs_read(self, role, config):
        return {"enable_thinking": False}


class _Pool:
    def __init__(self) -> None:
        self.groups: list[list[str]] = []

    def enter_group(self, roles) -> None:
        self.groups.append([r.label for r in roles])

    def role(self, name, config, cached=True):
        return dataclasses.make_dataclass("R", [("backend", object)])(_Server())


def test_a_served_train_verifier_stays_up_and_the_trainer_reaches_it_over_loopback():
    from harness.config import load_config
    from harness.stages import _trainer_config

    config = load_config(Path(__file__).resolve().parents[1] / "configs" / "medical.yaml")
    verifier = config.verifier(config.train.verifier)
    run = dataclasses.make_dataclass("Run", [("config", object), ("pool", object)])(config, _Pool())
    trainer = _trainer_config(run, verifier)
    assert run.pool.groups == [["qwen3-4b"]]  # the parent keeps the server, stops the rest
    assert trainer.train.hack_gate == "off"  # the gate ran in this process, before
    served = trainer.verifier("qwen3-4b")
    assert (served.backend, served.base_url) == ("openai", _Server.base_url)
    assert served.chat_template_kwargs == {"enable_thinking": False}
    assert trainer.verifier("qwen3-0.6b") == config.verifier("qwen3-0.6b")  # others as given
    # an in-process engine cannot be shared: the trainer opens its own, the parent stops its
    inproc = load_config(Path(__file__).resolve().parents[1] / "configs" / "medical.yaml",
                         ["roles.verifier.0.backend=vllm"])  # fmt: skip
    run = dataclasses.make_dataclass("Run", [("config", object), ("pool", object)])(inproc, _Pool())
    trainer = _trainer_config(run, inproc.verifier("qwen3-4b"))
    assert trainer == without_gate(inproc) and trainer.train.hack_gate == "off"  # ran here
    assert run.pool.groups == [[]]


def test_server_mode_sends_the_generation_server_url_to_trl(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    config = profile(tmp_path, generation="vllm", vllm_mode="server",
                     vllm_server_url="http://127.0.0.1:8011")  # fmt: skip
    options = grpo_options(config, tmp_path, longest_prompt=100)
    assert (options["use_vllm"], options["vllm_mode"]) == (True, "server")
    assert options["vllm_server_base_url"] == "http://127.0.0.1:8011"
    assert set(options) <= fields_of_grpo_config()
    assert "vllm_server_base_url" not in grpo_options(profile(tmp_path), tmp_path)


def test_the_generation_server_is_trls_vllm_serve_on_loopback(tmp_path):
    settings = profile(tmp_path, generation="vllm", vllm_mode="server", vllm_server_gpus=[6, 7],
                       vllm_max_model_len=4096).train  # fmt: skip
    command = generation_server_command(settings, "/models/policy", 8123)
    assert command[:5] == [sys.executable, "-m", "vllm.entrypoints.cli.main", "serve",
                           "/models/policy"]  # fmt: skip
    flags = dict(zip(command[5::2], command[6::2]))
    assert flags["--host"] == "127.0.0.1" and flags["--port"] == "8123"
    assert flags["--tensor-parallel-size"] == "2"  # over train.vllm_server_gpus
    assert command[command.index("--max-model-len") + 1] == "4096"
    # what TRL's client needs: the trained weights pushed over NCCL, processed logprobs
    weights = command[command.index("--weight-transfer-config") + 1]
    assert json.loads(weights) == {"backend": "nccl"}
    assert command[command.index("--logprobs-mode") + 1] == "processed_logprobs"


FAKE_SERVER = """
import http.server, sys
class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/health" else 404); self.end_headers()
print("serving", flush=True)
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Health).serve_forever()
"""


def test_the_harness_starts_and_stops_the_generation_server_on_its_gpus(tmp_path, monkeypatch):
    import psutil

    from harness import generation_server as module

    seen: dict = {}

    def fake_server(settings, policy, port):
        seen["gpus"] = settings.vllm_server_gpus
        return [sys.executable, "-c", FAKE_SERVER, str(port)]

    monkeypatch.setattr("harness.training.generation_server_command", fake_server)
    monkeypatch.setattr("harness.models.manifest.resolve_model", lambda model, offline: model)
    started = []
    real_start = module.start_server_process

    def start(command, environ, log_path):
        seen["visible"], seen["dev_mode"] = environ["CUDA_VISIBLE_DEVICES"], environ[
            "VLLM_SERVER_DEV_MODE"]  # fmt: skip
        started.append(real_start(command, environ, log_path))
        return started[-1]

    monkeypatch.setattr(module, "start_server_process", start)
    config = profile(tmp_path, generation="vllm", vllm_mode="server", vllm_server_gpus=[2, 3])
    with module.generation_server(config) as trainer:
        url = trainer.train.vllm_server_url
        assert url.startswith("http://127.0.0.1:") and trainer.train.vllm_server_gpus is None
        assert started[0].poll() is None
    assert (seen["gpus"], seen["visible"], seen["dev_mode"]) == ([2, 3], "2,3", "1")
    assert not psutil.pid_exists(started[0].pid) or started[0].poll() is not None
    log = (config.run_dir / "logs" / "trl-vllm-serve.log").read_text()
    assert log.startswith(f"$ {sys.executable} -c") and "serving" in log
    without = profile(tmp_path)
    with module.generation_server(without) as same:
        assert same is without


def test_on_resume_each_process_truncates_its_own_logs(tmp_path):
    from harness.training import _last_checkpoint_step, _truncate_logs, rank_log_path

    lines = "".join(json.dumps({"step": s}) + "\n" for s in (1, 2, 3))
    for path in (tmp_path / "metrics.jsonl", tmp_path / "rewards.jsonl",
                 rank_log_path(tmp_path, 0), rank_log_path(tmp_path, 1)):  # fmt: skip
        path.parent.mkdir(exist_ok=True)
        path.write_text(lines)
    _truncate_logs(tmp_path, 2, main=False, rank=1)
    assert (tmp_path / "rewards.jsonl").read_text() == lines  # the main process's to cut
    assert [json.loads(x)["step"] for x in rank_log_path(tmp_path, 1).open()] == [1, 2]
    assert rank_log_path(tmp_path, 0).read_text() == lines
    _truncate_logs(tmp_path, 2, main=True, rank=0)
    for name in ("metrics.jsonl", "rewards.jsonl"):
        assert [json.loads(x)["step"] for x in (tmp_path / name).open()] == [1, 2]
    half = tmp_path / "checkpoints" / "checkpoint-3"
    half.mkdir(parents=True)
    (tmp_path / "checkpoints" / "checkpoint-2").mkdir()
    (tmp_path / "checkpoints" / "checkpoint-2" / "trainer_state.json").write_text("{}")
    assert _last_checkpoint_step(tmp_path / "checkpoints", remove_partial=False) == 2
    assert half.is_dir()  # only the main process removes a half-written checkpoint
    assert _last_checkpoint_step(tmp_path / "checkpoints") == 2 and not half.exists()
