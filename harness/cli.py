"""The `harness` command. Each command loads the profile, calls one library function and
renders the result with rich. Heavy libraries (torch, vLLM) are imported inside commands only,
after the offline guard has set the environment, so `harness --help` answers at once.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path

import click

from harness.config import DEFAULT_PROFILE, ConfigError, HarnessConfig, dump_config, load_config
from harness.jsonl import check_writable, read_json

config_option = click.option(
    "--config",
    "-c",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Run profile (YAML). Default: configs/default.yaml (tiny local models).",
)
set_option = click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a profile key, e.g. --set roles.verifier.model=tiny-m (repeatable).",
)


def prepare_run(
    config_path: Path | None, overrides: tuple[str, ...], stages: tuple[str, ...] = ()
) -> HarnessConfig:
    """Load the profile, check that it has the roles of `stages`, apply the offline guard,
    and write the resolved config to the run."""
    from harness.offline import apply_environment

    config = load_config(config_path, list(overrides))
    if stages:
        from harness.pipeline import check_roles

        try:
            check_roles(config, stages)
        except ConfigError as exc:
            raise ConfigError(f"{config_path or DEFAULT_PROFILE}: {exc}") from None
    apply_environment(config.offline)
    config.run_dir.mkdir(parents=True, exist_ok=True)
    (config.run_dir / "config.yaml").write_text(dump_config(config), encoding="utf-8")
    return config


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="harness")
@click.option("--debug", is_flag=True, help="On an error, show the traceback (or HARNESS_DEBUG=1).")
def main(debug: bool) -> None:
    """Rubric rewards for LLM post-training on local, open-weight models.

    Roles (policy, proposer, verifier, judge) map to backends and models in a YAML profile;
    everything runs offline unless the profile says `offline: false`.
    """
    if debug:
        from harness.errors import DEBUG_VARIABLE

        os.environ[DEBUG_VARIABLE] = "1"


@main.group()
def models() -> None:
    """Build, fetch and list local models."""


@models.command("build-tiny")
def models_build_tiny() -> None:
    """Build the tiny local chat models (tokenizer + 3 random Qwen2 sizes) into models/weights/."""
    from rich.table import Table

    from harness.models.tiny import build_tiny_models
    from harness.offline import apply_environment
    from harness.roles import console

    apply_environment(offline=True)
    with console.status("building tiny models"):
        rows = build_tiny_models()
    table = Table("model", "parameters", "path", title="tiny models")
    for row in rows:
        table.add_row(row["name"], f"{row['num_params']:,}", row["path"])
    console.print(table)


@models.command("list")
def models_list() -> None:
    """Show the known models per role: size, license, source, and whether each is here."""
    from rich.console import Console
    from rich.table import Table

    from harness.models.manifest import PROJECT_ROOT, load_manifest, local_model_dir
    from harness.models.tiny import TINY_SIZES

    def where(name: str) -> str:
        local = local_model_dir(name)
        if local is None:
            return "-"
        return str(local.relative_to(PROJECT_ROOT) if local.is_relative_to(PROJECT_ROOT) else local)

    table = Table("model", "roles", "params", "license", "source", "local", title="models")
    for size in TINY_SIZES:
        table.add_row(size.name, "all (tests)", "tiny", "-", "harness models build-tiny",
                      where(size.name))  # fmt: skip
    for entry in load_manifest():
        table.add_row(entry.name, ", ".join(entry.roles), _params(entry.params_b),
                      entry.license, entry.source, where(entry.name))  # fmt: skip
    Console(width=max(Console().width, 160)).print(table)


def _params(billions: float) -> str:
    return f"{billions * 1000:.4g}M" if billions < 1 else f"{billions:g}B"


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
    from harness.models.gguf import import_gguf
    from harness.offline import apply_environment
    from harness.roles import console

    apply_environment(offline=True)
    with console.status(f"importing {gguf_path}"):
        result = import_gguf(gguf_path, name, chat_template_path=template_path,
                             stop_tokens=stop_tokens, dtype=dtype, force=force)  # fmt: skip
    _show_imports([result])


@models.command("import-packaged")
@click.argument("names", nargs=-1)
def models_import_packaged(names: tuple[str, ...]) -> None:
    """Import the real small models shipped in PyPI packages (run by `make install`)."""
    from harness.models.packaged import import_packaged
    from harness.offline import apply_environment
    from harness.roles import console

    apply_environment(offline=True)
    with console.status("importing packaged models"):
        results = import_packaged(list(names) or None)
    _show_imports(results)


def _show_imports(results: list) -> None:
    from rich.table import Table

    from harness.roles import console

    table = Table("model", "architecture", "GGUF type", "parameters", "path", "", title="imported")
    for r in results:
        table.add_row(r.name, r.architecture, r.file_type, f"{r.num_params:,}", str(r.path),
                      "up to date" if r.reused else "imported")  # fmt: skip
    console.print(table)


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


@main.command()
@config_option
@set_option
@click.option(
    "--role",
    "role_name",
    default="verifier",
    show_default=True,
    type=click.Choice(["policy", "proposer", "verifier", "judge"]),
)
@click.option(
    "--input",
    "input_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
)
@click.option(
    "--output",
    "output_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Default: RUN_DIR/generate/ROLE.jsonl",
)
@click.option("--samples", "num_samples", default=1, show_default=True, type=click.IntRange(1))
def generate(
    config_path: Path | None,
    overrides: tuple[str, ...],
    role_name: str,
    input_path: Path,
    output_path: Path | None,
    num_samples: int,
) -> None:
    """Send a JSONL file of chat requests to a role and write the completions."""
    from rich.table import Table

    from harness.generate import generate_file
    from harness.roles import console

    config = prepare_run(config_path, overrides)
    result = generate_file(config, role_name, input_path, output_path, num_samples)
    table = Table(
        "requests",
        "failed",
        "in tok",
        "out tok",
        "s",
        "req/s",
        "out tok/s",
        "cached",
        title=f"generate: {role_name}",
    )
    seconds = max(result.seconds, 1e-9)
    table.add_row(
        str(result.num_requests),
        str(result.num_failed),
        str(result.prompt_tokens),
        str(result.completion_tokens),
        f"{result.seconds:.1f}",
        f"{result.num_requests / seconds:.1f}",
        f"{result.completion_tokens / seconds:.0f}",
        str(result.cache_hits),
    )
    console.print(table)
    console.print(f"completions: {result.output_path}")


def stage_command(last: str, help_text: str) -> click.Command:
    @click.command(name=last, help=help_text)
    @config_option
    @set_option
    def command(config_path: Path | None, overrides: tuple[str, ...]) -> None:
        from harness.pipeline import STAGES, run_stages

        config = prepare_run(config_path, overrides, STAGES[: STAGES.index(last) + 1])
        show_stages(run_stages(config, last), config.run_dir)

    return command


def show_stages(results: list, run_dir: Path) -> None:
    from rich.table import Table

    from harness.pipeline import refine_stats
    from harness.roles import console

    table = Table("stage", "status", "counts", "seconds", title="rubric pipeline")
    for result in results:
        counts = ", ".join(f"{k} {v}" for k, v in result.counts.items() if k != "seconds")
        status = "reused" if result.reused else "ran"
        table.add_row(result.stage, status, counts, f"{result.seconds:.1f}")
    console.print(table)
    if (run_dir / "refine.jsonl").exists() and any(r.stage == "refine" for r in results):
        iterations = Table("iteration", "prompts", "refined", "failed", "tied before",
                           "separated after", "criteria (mean)", "unscored",
                           title="refinement-through-differentiation")  # fmt: skip
        for s in refine_stats(run_dir):
            iterations.add_row(*map(str, (s.iteration, s.num_prompts, s.num_refined, s.num_failed,
                                          s.tied_before, s.separated_after, s.num_criteria_mean,
                                          s.num_unscored_verdicts)))  # fmt: skip
        console.print(iterations)
    console.print(f"run folder: {run_dir}")


for _stage, _help in (
    ("rollouts", "Candidate responses to every prompt from the rollout models."),
    ("propose", "The initial rubric of every prompt, from the prompt alone (proposer)."),
    ("refine", "Refinement-through-Differentiation of the rubrics (proposer + verifier)."),
    ("verify", "Verdicts and rewards of every candidate under its latest rubric."),
):
    main.add_command(stage_command(_stage, _help))


@main.command()
@config_option
@set_option
def train(config_path: Path | None, overrides: tuple[str, ...]) -> None:
    """LoRA GRPO training of the policy with the rubric reward (resumes from a checkpoint)."""
    from rich.table import Table

    from harness.roles import console
    from harness.training import train as run_training

    config = prepare_run(config_path, overrides)
    result = run_training(config)
    split = result.step_split
    table = Table("", "", title="LoRA GRPO", show_header=False)
    for name, value in (
        ("steps", str(result.steps)),
        ("reward, first step", _fmt(result.reward_first)),
        ("reward, last step", _fmt(result.reward_last)),
        ("adapter weights changed", str(result.adapter_weights_changed)),
        ("base weights unchanged", str(result.base_weights_unchanged)),
        ("seconds per step", f"{split['step_s']:.2f}"),
        ("  generation / reward / update", f"{split['generation_s']:.2f} / "
         f"{split['reward_s']:.2f} / {split['update_s']:.2f}"),
        ("verifier share of a step", f"{split['verifier_share']:.0%}"),
        ("peak memory (MB)", f"{result.peak_memory_mb:.0f}"),
    ):  # fmt: skip
        table.add_row(name, value)
    console.print(table)
    if result.resumed_from:
        console.print(f"resumed from checkpoint-{result.resumed_from}")
    console.print(f"adapter: {result.adapter_dir}\nmetrics and plot: {result.train_dir}")


def _fmt(value: float | None) -> str:
    return "unscored" if value is None else f"{value:.3f}"


@main.command("export-rubrics")
@config_option
@set_option
@click.option(
    "--output", "output_path", required=True, type=click.Path(dir_okay=False, path_type=Path)
)
def export_rubrics(config_path: Path | None, overrides: tuple[str, ...], output_path: Path) -> None:
    """Write a run's latest rubrics in the paper authors' published dataset schema."""
    from harness.datasets import export_rubric_dataset, load_rubrics
    from harness.jsonl import read_records
    from harness.types import Prompt

    config = load_config(config_path, list(overrides))
    prompts = read_records(config.run_dir / "prompts.jsonl", Prompt)
    rubrics = load_rubrics(config.run_dir / "rubrics.jsonl")
    with_rubric = {r.prompt_id for r in rubrics}
    count = export_rubric_dataset(output_path, [p for p in prompts if p.id in with_rubric], rubrics)
    click.echo(f"{count} rubrics -> {output_path}")


@main.command("eval")
@config_option
@set_option
def eval_command(config_path: Path | None, overrides: tuple[str, ...]) -> None:
    """The whole job: rubrics, verifier comparison, GRPO, judge, theory, report (resumable)."""
    from harness.evaluation import build_summary, run_eval
    from harness.pipeline import STAGES

    config = prepare_run(config_path, overrides, STAGES)
    results = run_eval(config)
    _write_and_show_report(build_summary(config, _profile_name(config_path), results), config)


@main.command("compare-verifiers")
@config_option
@set_option
def compare_verifiers_command(config_path: Path | None, overrides: tuple[str, ...]) -> None:
    """Every verifier of the profile on the same verification set, against a reference."""
    from harness.evaluation import stage_compare
    from harness.pipeline import STAGE_FUNCTIONS, STAGES, Run
    from harness.roles import RolePool, console, run_context

    config = prepare_run(config_path, overrides, STAGES)
    with RolePool(run_context(config)) as pool:
        run = Run(config, pool)
        results = [STAGE_FUNCTIONS[stage](run) for stage in STAGES]
        results.append(stage_compare(run))
    show_stages(results, config.run_dir)
    from harness.report import rich_table, verifier_agreement_table, verifier_speed_table

    metrics = read_json(config.run_dir / "compare" / "metrics.json")
    console.print(rich_table("verifier agreement", verifier_agreement_table(metrics)))
    console.print(rich_table("verifier cost", verifier_speed_table(metrics)))
    console.print(f"reference: {metrics['reference']['label']} ({metrics['reference']['kind']})")
    if metrics.get("off_topic_per_prompt"):
        console.print(
            f"off-topic acc: own response preferred over another prompt's under the same rubric "
            f"({metrics['off_topic_per_prompt']} per prompt; 0.5 = random)"
        )


@main.command()
@config_option
@set_option
@click.option(
    "--a",
    "side_a",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Candidate JSONL of side A (default: the run's trained policy).",
)
@click.option(
    "--b",
    "side_b",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Candidate JSONL of side B (default: the run's base policy).",
)
def judge(
    config_path: Path | None, overrides: tuple[str, ...], side_a: Path | None, side_b: Path | None
) -> None:
    """Pairwise judge in both orders: win rate of A over B with a bootstrap CI."""
    from harness.roles import console

    config = prepare_run(config_path, overrides)
    if (side_a is None) != (side_b is None):
        raise click.UsageError("give both --a and --b, or neither (trained vs base policy)")
    if side_a is None:
        summary = _judge_trained_vs_base(config)
    else:
        summary = _judge_files(config, side_a, side_b)
    from harness.report import pairwise_table, rich_table

    console.print(rich_table("pairwise judge", pairwise_table({"pairwise": summary})))


def _judge_trained_vs_base(config: HarnessConfig) -> dict:
    from harness.evaluation import stage_judge
    from harness.pipeline import Run
    from harness.roles import RolePool, run_context

    with RolePool(run_context(config)) as pool:
        result = stage_judge(Run(config, pool))
    if "skipped" in result.counts:
        raise click.ClickException(
            f"{config.run_dir}: no trained adapter to judge (run `harness train` first, "
            "or give --a and --b candidate files)"
        )
    return read_json(config.run_dir / "judge" / "summary.json")


def _judge_files(config: HarnessConfig, side_a: Path, side_b: Path) -> dict:
    from harness.datasets import load_candidates
    from harness.evaluation import judge_prompts
    from harness.jsonl import write_atomic, write_records
    from harness.judge import judge_pairs, pair_up, summarise
    from harness.pipeline import Run
    from harness.roles import RolePool, run_context

    with RolePool(run_context(config)) as pool:
        run = Run(config, pool)
        prompts = judge_prompts(run)
        ids = {p.id for p in prompts}
        a = [c for c in load_candidates(side_a) if c.prompt_id in ids]
        b = [c for c in load_candidates(side_b) if c.prompt_id in ids]
        pairs = pair_up(a, b)
        if not pairs:
            raise click.ClickException(
                f"{side_a} and {side_b} share no (prompt_id, sample_index) among the judge prompts"
            )
        judge_role = pool.role("judge", config.roles.get("judge"))
        judgements = judge_pairs(judge_role, prompts, pairs, config.judge, run.templates)
    folder = config.run_dir / "judge" / f"{side_a.stem}-vs-{side_b.stem}"
    write_records(folder / "judgements.jsonl", judgements)
    summary = {"a": side_a.stem, "b": side_b.stem, "judge": judge_role.config.label,
               **summarise(judgements, config.judge)}  # fmt: skip
    write_atomic(folder / "summary.json", [json.dumps(summary, indent=2)])
    return summary


@main.command()
@click.option(
    "--out",
    "out_dir",
    default=Path("runs/theory"),
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for the plots.",
)
def theory(out_dir: Path) -> None:
    """The paper's Theorem 1 and Fig. 2: win rate against KL, closed form vs Monte Carlo."""
    from harness.report import rich_table, theory_table
    from harness.roles import console
    from harness.theory import plot_theory, theory_summary

    check_writable(out_dir / "theory_fig2a.png")
    summary = theory_summary()
    console.print(rich_table("win rate against KL", theory_table({"theory": summary})))
    for name, path in plot_theory(out_dir).items():
        console.print(f"{name}: {path}")


@main.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
def report(run_dir: Path) -> None:
    """Write report.md, report.html and summary.json of a run folder (no model is called)."""
    from harness.evaluation import build_summary

    saved = run_dir / "config.yaml"
    if not saved.is_file():
        raise click.ClickException(f"{run_dir} is not a run folder (no config.yaml)")
    config = load_config(saved).model_copy(
        update={"runs_dir": str(run_dir.parent), "run_name": run_dir.name}
    )
    previous = run_dir / "summary.json"
    profile = read_json(previous).get("run", {}).get("profile", "-") if previous.is_file() else "-"
    _write_and_show_report(build_summary(config, profile), config)


def _write_and_show_report(summary: dict, config: HarnessConfig) -> None:
    from harness.report import print_summary, write_report
    from harness.roles import console

    paths = write_report(config.run_dir, summary)
    print_summary(summary, console)
    console.print(
        f"report: {paths['html']}\n        {paths['markdown']}\nsummary: {paths['summary']}"
    )


def _profile_name(config_path: Path | None) -> str:
    return str(config_path) if config_path else "configs/default.yaml (embedded default)"


@main.command()
@click.option(
    "--config",
    "-c",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("configs/bench.yaml"),
    show_default=True,
    help="Bench profile.",
)
@set_option
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where bench.json goes. Default: RUN_DIR (runs/bench).",
)
@click.option("--smoke", is_flag=True, help="The smallest workload: checks the code paths.")
def bench(config_path: Path, overrides: tuple[str, ...], out_dir: Path | None, smoke: bool) -> None:
    """Verifier throughput: engine ceiling, layouts, grammar cost, scaling, step split."""
    from harness.bench import print_bench, run_bench
    from harness.roles import console

    config = prepare_run(config_path, overrides)
    folder = out_dir or config.run_dir
    check_writable(folder / "bench.json")
    result = run_bench(config, folder, smoke=smoke, console=console)
    print_bench(result, console)
    console.print(f"bench: {folder / 'bench.json'}")


def run() -> None:
    """Console entry point: clear one-line errors for bad input, never a traceback."""
    from harness.interrupts import stop_on_signals

    try:
        with stop_on_signals():  # Ctrl-C and SIGTERM: stop engines, say how to resume, 130/143
            main(standalone_mode=False)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except Exception as exc:
        sys.exit(_report_error(exc))


def _report_error(exc: Exception) -> int:
    """Print an error that ended the command (the traceback only with --debug); its status."""
    from harness.errors import debugging, explain

    message, status = explain(exc)
    if debugging():
        traceback.print_exception(exc)
    click.echo(f"error: {message}", err=True)
    return status
