"""The offline guard: nothing leaves the machine unless the config says `offline: false`.

`apply_environment` runs before any heavy import (torch, transformers, vLLM) and sets the
variables that stop hub downloads and usage statistics; telemetry stays off even online.
`check_endpoint` refuses any URL whose host is not a loopback address while offline.
"""

from __future__ import annotations

import ipaddress
import os
from urllib.parse import urlparse

from harness.models.manifest import PROJECT_ROOT

NO_TELEMETRY = {
    "VLLM_NO_USAGE_STATS": "1",
    "VLLM_DO_NOT_TRACK": "1",
    "DO_NOT_TRACK": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1",
    "WANDB_MODE": "disabled",
}
NO_DOWNLOADS = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
}
LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


class OfflineError(PermissionError):
    """A network destination that the offline guard refuses."""


def apply_environment(offline: bool) -> None:
    """Set process-wide variables; child processes (the vLLM server) inherit them."""
    os.environ.update(NO_TELEMETRY)
    if offline:
        os.environ.update(NO_DOWNLOADS)
    else:
        for name in NO_DOWNLOADS:
            os.environ.pop(name, None)
    cache_root = PROJECT_ROOT / ".cache"
    os.environ.setdefault("VLLM_CACHE_ROOT", str(cache_root / "vllm"))
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache_root / "inductor"))
    os.environ.setdefault("OUTLINES_CACHE_DIR", str(cache_root / "outlines"))
    # vLLM's CPU build refuses to start without an explicit KV-cache size; a CUDA build ignores it.
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")


def is_loopback_host(host: str) -> bool:
    host = host.strip("[]").lower()
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_endpoint(url: str, *, offline: bool, where: str = "endpoint") -> None:
    """Raise OfflineError for a non-loopback URL while offline."""
    if not offline:
        return
    host = urlparse(url).hostname or ""
    if not is_loopback_host(host):
        raise OfflineError(
            f"{where}: {url} is not a loopback address and the harness is offline. "
            "Only 127.0.0.0/8, ::1 and localhost are reachable with `offline: true`; "
            "set `offline: false` in the profile (or `--set offline=false`) to allow it."
        )
