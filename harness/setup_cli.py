"""The commands around a run: `harness import` (a hospital's own data into a run folder),
`harness plan` (the memory plan before anything starts) and `harness export-rubrics`.

    harness plan -c configs/medical.yaml --gpus 2x80GB
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from harness.cli_options import config_option, set_option
from harness.config import load_config
from harness.runstate import RunPaths


@click.command()
@config_option
@set_option
@click.option(
    "--gpus",
    "gpus_text",
    metavar="NxSIZE",
    help="Plan for these GPUs, e.g. 2x80GB, 1x24GB (GB here is GiB, as nvidia-smi's MiB / "
    "1024). Default: this machine's GPUs (nvidia-smi).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
def plan(
    config_path: Path | None, overrides: tuple[str, ...], gpus_text: str | None, as_json: bool
) -> None:
    """The memory plan of a run, before anything starts: per stage, the engines up together,
    each one's GPUs, reservation, weights and KV cache, the trainer, and the sum per GPU.
    Exit status 2 when it does not fit."""
    import json

    from harness.console import console
    from harness.plan import parse_gpus, plan_record, plan_run, read_gpus
    from harness.report.plan_view import print_plan

    config = load_config(config_path, list(overrides))
    gpus = parse_gpus(gpus_text) if gpus_text else read_gpus()
    source = f"--gpus {gpus_text}" if gpus_text else ("nvidia-smi" if gpus else "none found")
    memory = plan_run(config, gpus, source)
    if as_json:
        click.echo(json.dumps(plan_record(memory), indent=2))
    else:
        print_plan(memory, console)
    if not memory.ok:
        sys.exit(2)


@click.command("export-rubrics")
@config_option
@set_option
@click.option(
    "--output", "output_path", required=True, type=click.Path(dir_okay=False, path_type=Path)
)
def export_rubrics(config_path: Path | None, overrides: tuple[str, ...], output_path: Path) -> None:
    """Write a run's latest rubrics in the paper authors' published dataset schema."""
    from harness.pipeline import export_rubrics

    config = load_config(config_path, list(overrides))
    count = export_rubrics(config.run_dir, output_path)
    click.echo(f"{count} rubrics -> {output_path}")


@click.command("import")
@config_option
@set_option
@click.argument("source", type=click.Path(path_type=Path))
@click.option("--run", "run_name", metavar="NAME", help="Run folder name (default: the profile's).")
def import_command(
    config_path: Path | None, overrides: tuple[str, ...], source: Path, run_name: str | None
) -> None:
    """Prompts, rubrics, reference answers and clinicians' labels from one file into a run.

    SOURCE: HealthBench (prompts, rubrics, ideal completions), its meta-evaluation file
    (responses and clinicians' labels), the paper's published rubric dataset, or any prompts
    file. The run then starts from them: `harness eval --set run_name=NAME`.
    """
    from harness.console import console
    from harness.importer import import_into_run
    from harness.report.terminal import import_table
    from harness.runlock import open_run_folder

    extra = [f"run_name={run_name}"] if run_name else []
    config = load_config(config_path, [*overrides, *extra])
    open_run_folder(config.run_dir)
    imported = import_into_run(source, config.run_dir)
    console.print(import_table(imported.kind, imported.counts()))
    console.print(f"imported into {RunPaths(config.run_dir).imported_dir}")
    profile = f" -c {config_path}" if config_path else ""
    settings = "".join(f" --set {item}" for item in [*overrides, *extra])
    console.print(f"next: harness eval{profile}{settings}", soft_wrap=True)
