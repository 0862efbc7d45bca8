"""A CUDA build that finds no GPU stops a command before anything starts.

With the CUDA build of vLLM or torch installed (`make install GPU=1`), a missing or broken
driver, or CUDA_VISIBLE_DEVICES hiding every GPU, would otherwise let torch fall back to the
CPU: training a GPU profile for hours on the CPU, or an engine failing minutes later with a
message about something else. On the CPU build (vllm-cpu, torch+cpu) nothing is checked.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import warnings
from pathlib import Path

from harness.machine import vllm_cpu_build
from harness.profile_yaml import ConfigError

GPU_LOCK = Path(__file__).resolve().parents[1] / "requirements" / "gpu.lock"


class NoUsableGpuError(ConfigError):
    """The CUDA build is installed but torch sees no GPU it can use (exit status 2)."""


def cuda_build_installed() -> bool:
    """Whether the installed vLLM or torch is a CUDA build, read from the installed files
    (no torch import): the `vllm` distribution (the CPU build is `vllm-cpu`), or a torch with
    its CUDA library."""
    if vllm_cpu_build():
        return False
    try:
        importlib.metadata.distribution("vllm")
        return True
    except importlib.metadata.PackageNotFoundError:
        pass
    spec = importlib.util.find_spec("torch")
    if spec is None or spec.origin is None:
        return False
    return (Path(spec.origin).parent / "lib" / "libtorch_cuda.so").is_file()


def cuda_problem() -> str | None:
    """Why torch finds no usable CUDA device (None when it finds one), in a few words."""
    import torch

    if torch.version.cuda is None:
        return f"torch {torch.__version__} is a CPU build beside the CUDA build of vLLM"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        available = torch.cuda.is_available() and torch.cuda.device_count() > 0
    if available:
        return None
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return "CUDA_VISIBLE_DEVICES hides every GPU"
    reasons = [str(warning.message).splitlines()[0] for warning in caught]
    return reasons[0] if reasons else "torch.cuda.is_available() is false"


def driver_minimum(lock: Path = GPU_LOCK) -> str | None:
    """The NVIDIA driver the GPU lock needs (its `# driver-minimum:` line); None without it."""
    if not lock.is_file():
        return None
    for line in lock.read_text(encoding="utf-8").splitlines():
        if line.startswith("# driver-minimum:"):
            return line.partition(":")[2].strip()
    return None


def require_usable_cuda() -> None:
    """Raise NoUsableGpuError when the CUDA build is installed and finds no usable GPU."""
    if not cuda_build_installed():
        return
    problem = cuda_problem()
    if problem:
        driver = f"NVIDIA driver >= {minimum}" if (minimum := driver_minimum()) else "driver"
        raise NoUsableGpuError(
            f"the CUDA build of vLLM/torch is installed but finds no usable GPU ({problem}); "
            f"check `nvidia-smi` and the {driver}, or install the CPU stack "
            "(make install GPU=0)"
        )
