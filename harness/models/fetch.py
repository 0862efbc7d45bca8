"""Download recommended models on a connected machine, to carry them to an air-gapped one.

Models land in `models/weights/<org>--<name>/`, where name resolution finds them, so copying
`models/weights/` to the offline machine is the whole transfer. This is the one place in the
harness that downloads, and only when called with `--online`.

    harness models fetch Qwen/Qwen3-4B --online
"""

from __future__ import annotations

import os
from pathlib import Path

from harness.models.manifest import WEIGHTS_DIR, folder_name, load_manifest


def fetch_models(names: list[str], role: str | None = None) -> list[Path]:
    if role:
        names = names + [e.name for e in load_manifest() if role in e.roles and e.package is None]
    if not names:
        raise ValueError("name at least one model, or --role to take the manifest's choice")
    for variable in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ.pop(variable, None)
    os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
    from huggingface_hub import snapshot_download

    paths = []
    for name in dict.fromkeys(names):
        target = WEIGHTS_DIR / folder_name(name)
        snapshot_download(repo_id=name, local_dir=target)
        paths.append(target)
    return paths
