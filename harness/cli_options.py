"""The options every `harness` command that reads a profile takes."""

from __future__ import annotations

from pathlib import Path

import click

config_option = click.option(
    "--config",
    "-c",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Run profile (YAML). Default: configs/default.yaml (small real local models).",
)
set_option = click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a profile key, e.g. --set roles.verifier.model=tiny-m (repeatable).",
)
