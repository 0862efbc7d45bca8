"""The offline guard: nothing leaves the machine unless the config says `offline: false`.

`apply_environment` runs before any heavy import (torch, transformers, vLLM) and sets the
variables that stop hub downloads and usage statistics; telemetry stays off even online.
`check_endpoint` refuses any URL whose host is not a loopback address while offline.

The guard covers the harness's own requests. A vLLM server spread over several machines (Ray,
or vLLM's data parallelism across nodes) talks to them over the operator's network, as the
operator set it up; its environment keeps RAY_ADDRESS and has Ray's usage statistics off.

Proxies: offline, every `*_proxy` variable (HTTP_PROXY, HTTPS_PROXY, ALL_PROXY, either case) is
removed from the environment of the run and of everything it starts (vLLM servers, TRL), so no
request, health check or library call can reach a proxy; one line on stderr says so, naming
the variables but never their values (a proxy URL may carry credentials). Online, loopback
addresses are added to NO_PROXY, and clients of loopback endpoints ignore proxies anyway.
"""

from __future__ import annotations

import ipaddress
import os
import sys
from collections.abc import Mapping, MutableMapping
from urllib.parse import urlparse

from harness.project import PROJECT_ROOT

NO_TELEMETRY = {
    "VLLM_NO_USAGE_STATS": "1",
    "VLLM_DO_NOT_TRACK": "1",
    "DO_NOT_TRACK": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1",
    "WANDB_MODE": "disabled",
    "RAY_USAGE_STATS_ENABLED": "0",  # Ray, where a vllm-server role runs its engine over it
}
NO_DOWNLOADS = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
}
LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}
LOOPBACK_NO_PROXY = ("127.0.0.1", "localhost", "::1")


class OfflineError(PermissionError):
    """A network destination that the offline guard refuses."""


def apply_environment(offline: bool) -> None:
    """Set process-wide variables; child processes (the vLLM server) inherit them."""
    os.environ.update(NO_TELEMETRY)
    if offline:
        os.environ.update(NO_DOWNLOADS)
        removed = proxy_variables(os.environ)
        for name in removed:
            del os.environ[name]
        if removed:
            print(f"offline: ignoring {', '.join(sorted(removed))} for loopback endpoints "
                  "(removed from this run's environment and every process it starts)",
                  file=sys.stderr)  # fmt: skip
    else:
        for name in NO_DOWNLOADS:
            os.environ.pop(name, None)
        if proxy_variables(os.environ):
            _bypass_loopback(os.environ)
    cache_root = PROJECT_ROOT / ".cache"
    os.environ.setdefault("VLLM_CACHE_ROOT", str(cache_root / "vllm"))
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache_root / "inductor"))
    os.environ.setdefault("OUTLINES_CACHE_DIR", str(cache_root / "outlines"))
    # vLLM's CPU build refuses to start without an explicit KV-cache size; a CUDA build ignores it.
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")


def proxy_variables(environ: Mapping[str, str]) -> list[str]:
    """The names of every proxy setting urllib, requests and httpx read (`*_proxy`, either
    case, NO_PROXY aside)."""
    return [
        name
        for name in environ
        if name.lower().endswith("_proxy") and name.lower() != "no_proxy" and environ[name]
    ]


def _bypass_loopback(environ: MutableMapping[str, str]) -> None:
    for name in ("NO_PROXY", "no_proxy"):
        hosts = [h.strip() for h in environ.get(name, "").split(",") if h.strip()]
        environ[name] = ",".join(hosts + [h for h in LOOPBACK_NO_PROXY if h not in hosts])


def child_environment(offline: bool, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a process the harness starts: offline, without any proxy setting
    (even one set after `apply_environment`)."""
    environ = {**os.environ, **(extra or {})}
    if offline:
        for name in proxy_variables(environ):
            del environ[name]
    return environ


def is_loopback_url(url: str) -> bool:
    return is_loopback_host(urlparse(url).hostname or "")


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
