"""GPU memory read per device (NVML or nvidia-smi), which works inside containers, sampled for
its peak; torch's per-device peak for training; and a CUDA build without a usable GPU stopping
a command before anything starts. No GPU needed: the readers and torch are faked."""

from __future__ import annotations

import os
import sys
import threading
import types
from collections.abc import Collection

import pytest

from harness import compare, gpu, machine
from harness.errors import INPUT_STATUS, explain


class FakeNvml(types.SimpleNamespace):
    """pynvml (its camelCase names) with `used` bytes per device; `broken` makes nvmlInit fail."""

    class NVMLError(Exception):
        pass

    def __init__(self, used: list[int], broken: bool = False) -> None:
        super().__init__(used=used, broken=broken, shutdowns=0)

    def nvmlInit(self) -> None:
        if self.broken:
            raise self.NVMLError("Driver Not Loaded")

    def nvmlShutdown(self) -> None:
        self.shutdowns += 1

    def nvmlDeviceGetCount(self) -> int:
        return len(self.used)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> types.SimpleNamespace:
        return types.SimpleNamespace(used=self.used[handle], total=80 * 2**30)


@pytest.fixture
def no_nvml(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # `import pynvml` raises ImportError


def smi(rows: list[str] | None):
    calls = []

    def query(*arguments: str) -> list[str] | None:
        calls.append(arguments)
        return rows

    query.calls = calls  # type: ignore[attr-defined]
    return query


def test_nvidia_smi_rows_become_memory_per_device(no_nvml: None) -> None:
    query = smi(["0, 1234", "1, 80012", "2, [N/A]"])
    assert machine.gpu_memory_used_mb(query=query) == {0: 1234.0, 1: 80012.0}
    assert query.calls == [("--query-gpu=index,memory.used",)]
    assert machine.gpu_memory_used_mb([1, 3], query=query) == {1: 80012.0}


def test_no_nvidia_gpu_reads_nothing(no_nvml: None) -> None:
    assert machine.gpu_memory_used_mb(query=smi(None)) == {}


def test_nvml_reads_per_device_and_shuts_down(monkeypatch: pytest.MonkeyPatch) -> None:
    nvml = FakeNvml([3 * 2**30, 512 * 2**20])
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    query = smi(["0, 1"])
    assert machine.gpu_memory_used_mb([1], query=query) == {1: 512.0}
    assert query.calls == [] and nvml.shutdowns == 1


def test_a_broken_nvml_falls_back_to_nvidia_smi(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml([2**30], broken=True))
    assert machine.gpu_memory_used_mb(query=smi(["0, 77"])) == {0: 77.0}


def test_sampling_keeps_the_peak_of_each_device() -> None:
    readings = iter([{0: 100.0, 1: 10.0}, {0: 900.0, 1: 20.0}, {0: 300.0, 1: 5.0}])
    seen, asked = threading.Event(), []

    def read(devices: Collection[int] | None) -> dict[int, float]:
        asked.append(devices)
        reading = next(readings, {0: 50.0, 1: 1.0})
        if len(asked) >= 3:
            seen.set()
        return reading

    with machine.peak_gpu_memory([0, 1], interval_s=0.001, read=read) as peaks:
        assert seen.wait(5)
    assert peaks == {0: 900.0, 1: 20.0}
    assert set(map(tuple, asked)) == {(0, 1)}


def test_sampling_without_a_gpu_starts_no_sampler() -> None:
    calls = []
    before = threading.active_count()
    with machine.peak_gpu_memory(None, read=lambda d: calls.append(d) or {}) as peaks:
        assert threading.active_count() == before
    assert peaks == {} and calls == [None]


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, None), ("1", [1]), ("0, 2", [0, 2]), ("", []), ("GPU-8f2a", None)],
)
def test_visible_gpus(monkeypatch: pytest.MonkeyPatch, value: str | None, expected) -> None:
    if value is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", value)
    assert machine.visible_gpus() == expected


def test_compare_adds_the_visible_gpus_peak(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(machine, "_nvml_memory_used_mb", lambda: {0: 1000.0, 1: 2500.0})
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    with compare.peak_memory([os.getpid()]) as peak:
        pass
    host = peak["mb"] - 2500.0
    assert 1 < host < 64 * 1024  # this process's resident memory, plus GPU 1 alone


def fake_torch(available: bool, peaks: list[int], cuda: str | None = "13.0") -> object:
    def max_memory_allocated(index: int) -> int:
        return peaks[index]

    return types.SimpleNamespace(
        __version__="2.13.0" if cuda else "2.13.0+cpu",
        version=types.SimpleNamespace(cuda=cuda),
        cuda=types.SimpleNamespace(
            is_available=lambda: available,
            device_count=lambda: len(peaks) if available else 0,
            max_memory_allocated=max_memory_allocated,
        ),
    )


def test_training_peak_is_torchs_per_device(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", fake_torch(True, [3 * 2**30, 2**29]))
    host, devices = machine.process_peak_memory_mb()
    assert devices == {0: 3072.0, 1: 512.0}
    assert host > 1


def test_training_peak_on_cpu_is_host_memory_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", fake_torch(False, []))
    host, devices = machine.process_peak_memory_mb()
    assert devices == {} and host > 1


@pytest.fixture
def cuda_build(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gpu, "cuda_build_installed", lambda: True)


def test_cuda_build_without_a_gpu_stops_with_one_line(
    monkeypatch: pytest.MonkeyPatch, cuda_build: None
) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    torch = fake_torch(False, [])

    def is_available() -> bool:
        import warnings

        too_old = "The NVIDIA driver on your system is too old (found version 12020)."
        warnings.warn(f"CUDA initialization: {too_old}\nPlease update your driver.", stacklevel=1)
        return False

    torch.cuda.is_available = is_available
    monkeypatch.setitem(sys.modules, "torch", torch)
    with pytest.raises(gpu.NoUsableGpuError) as caught:
        gpu.require_usable_cuda()
    message, status = explain(caught.value)
    assert status == INPUT_STATUS == 2
    assert "\n" not in message
    assert "finds no usable GPU (CUDA initialization: The NVIDIA driver" in message
    assert "NVIDIA driver >= 580.65.06" in message and "make install GPU=0" in message


def test_hidden_gpus_are_named(monkeypatch: pytest.MonkeyPatch, cuda_build: None) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.setitem(sys.modules, "torch", fake_torch(False, []))
    with pytest.raises(gpu.NoUsableGpuError, match="CUDA_VISIBLE_DEVICES hides every GPU"):
        gpu.require_usable_cuda()


def test_cpu_torch_beside_cuda_vllm(monkeypatch: pytest.MonkeyPatch, cuda_build: None) -> None:
    monkeypatch.setitem(sys.modules, "torch", fake_torch(False, [], cuda=None))
    with pytest.raises(gpu.NoUsableGpuError, match=r"torch 2.13.0\+cpu is a CPU build"):
        gpu.require_usable_cuda()


def test_cuda_build_with_a_gpu_goes_on(monkeypatch: pytest.MonkeyPatch, cuda_build: None) -> None:
    monkeypatch.setitem(sys.modules, "torch", fake_torch(True, [0]))
    gpu.require_usable_cuda()


def test_cpu_build_checks_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gpu, "vllm_cpu_build", lambda: True)
    monkeypatch.setitem(sys.modules, "torch", None)  # importing torch would fail
    assert not gpu.cuda_build_installed()
    gpu.require_usable_cuda()


def test_cuda_vllm_distribution_is_the_cuda_build(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gpu, "vllm_cpu_build", lambda: False)
    monkeypatch.setattr(gpu.importlib.metadata, "distribution", lambda name: object())
    assert gpu.cuda_build_installed()


def test_eval_stops_before_the_run_folder_is_written(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, cuda_build: None, tmp_path
) -> None:
    from harness.cli import run

    monkeypatch.setitem(sys.modules, "torch", fake_torch(False, []))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv("HARNESS_DEBUG", "")
    runs = tmp_path / "runs"
    monkeypatch.setattr(sys, "argv", ["harness", "eval", "-c", "configs/tiny.yaml",
                                      "--set", f"runs_dir={runs}"])  # fmt: skip
    with pytest.raises(SystemExit) as exit_info:
        run()
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err.strip().count("\n") == 0
    assert "finds no usable GPU (torch.cuda.is_available() is false)" in err
    assert not runs.exists()
