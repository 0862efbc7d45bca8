"""Where the project lives: the folder with `configs/`, `prompts/`, `models/` and `runs/` (the
checkout, or `HARNESS_HOME` for an installed harness). Relative paths in a profile resolve
against it."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(os.environ.get("HARNESS_HOME") or Path(__file__).resolve().parents[1])
