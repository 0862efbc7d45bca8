"""The `harness` command. Each command loads the profile, calls one library function and
renders the result with rich. Heavy libraries (torch, vLLM) are imported inside commands only,
after the offline guard has set the environment, so `harness --help` answers at once.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import click

from harness.cli_options import config_option, set_option
from harness.config import DEFAULT_PROFILE, ConfigError, HarnessConfig, dump_config, load_config
from harness.gpu import require_usable_cuda
from harness.jsonl import check_writable, read_json
from harness.models_cli import models
from harness.runlock import open_run_folder
from harness.runstate import RunPaths
from harness.setup_cli import export_rubrics, import_command, plan

if TYPE_CHECKING:
    from harness.stages import Stage
    from harness.summary_schema import Summary


def prepare_run(
    config_path: Path | None,
    overrides: tuple[str, ...],
    stages: Sequence[Stage] = (),
    memory_plan: list[str] | None = None,
) -> HarnessConfig:
    """Load the profile, check that it has the roles of `stages`, apply the offline guard,
    and write the resolved config to the run. With `memory_plan` (stage names; empty: every
    stage switched on), on a machine with a GPU, refuse a plan that cannot fit it."""
    from harness.offline import OfflineError, apply_environment

    config = load_config(config_path, list(overrides))
    try:
        config.check_endpoints()  # offline: loopback only, said before any stage runs
    except OfflineError as exc:
        raise OfflineError(f"{config_path or DEFAULT_PROFILE}: {exc}") from None
    require_usable_cuda()  # a CUDA build without a usable GPU stops here, not on the CPU
    if stages:
        from harness.stages import check_roles

        try:
            check_roles(config, stages)
        except ConfigError as exc:
            raise ConfigError(f"{config_path or DEFAULT_PROFILE}: {exc}") from None
    if memory_plan is not None:
        from harness.plan import refuse_impossible_plan

        refuse_impossible_plan(config, memory_plan or None)
    apply_environment(config.offline)
    open_run_folder(config.run_dir)  # one process per run folder, before anything is written
    RunPaths(config.run_dir).config_path.write_text(dump_config(config), encoding="utf-8")
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


main.add_command(models)
for _command in (import_command, plan, export_rubrics):
    main.add_command(_command)


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
    from harness.console import console
    from harness.generate import generate_file
    from harness.report.terminal import generate_table

    config = prepare_run(config_path, overrides)
    result = generate_file(config, role_name, input_path, output_path, num_samples)
    console.print(generate_table(result, role_name))
    console.print(f"completions: {result.output_path}")


def stage_command(last: str, help_text: str) -> click.Command:
    @click.command(name=last, help=help_text)
    @config_option
    @set_option
    def command(config_path: Path | None, overrides: tuple[str, ...]) -> None:
        from harness.evaluation import run_through
        from harness.stages import stages_through

        config = prepare_run(config_path, overrides, stages_through(last))
        show_stages(run_through(config, last), config.run_dir)
        if last == "verify":
            show_grading(config.run_dir)

    return command


def show_stages(results: list, run_dir: Path) -> None:
    from harness.console import console
    from harness.pipeline import refine_stats
    from harness.report.terminal import refine_iterations_table, stage_results_table

    console.print(stage_results_table(results))
    refined = any(r.stage == "refine" for r in results)
    if refined and RunPaths(run_dir).refine_stats_path.exists():
        console.print(refine_iterations_table(refine_stats(run_dir)))
    console.print(f"run folder: {run_dir}")


def show_grading(run_dir: Path) -> None:
    from harness.console import console
    from harness.report.terminal import print_grading
    from harness.summary_schema import Grading, read_record

    grading = read_record(RunPaths(run_dir).grading_path, Grading)
    if grading is not None:
        print_grading(grading, console)


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
@click.option(
    "--result",
    "result_path",
    hidden=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the result as JSON here (the train stage of `harness eval` reads it).",
)
def train(config_path: Path | None, overrides: tuple[str, ...], result_path: Path | None) -> None:
    """LoRA GRPO training of the policy with the rubric reward (resumes from a checkpoint)."""
    from harness.console import console
    from harness.report.terminal import training_table
    from harness.train_process import (
        launched_process,
        main_process,
        needs_launch,
        tie_to_launcher,
        train_launched,
        write_result,
    )
    from harness.training import train as run_training
    from harness.trust import gate_before_training

    tie_to_launcher()
    config = prepare_run(config_path, overrides, memory_plan=["train"])
    if not launched_process():
        gate_before_training(config)
    result = train_launched(config) if needs_launch(config) else run_training(config)
    if result_path is not None:
        write_result(result, result_path)
    if not main_process():
        return
    console.print(training_table(result))
    if result.resumed_from:
        console.print(f"resumed from checkpoint-{result.resumed_from}")
    console.print(f"adapter: {result.adapter_dir}\nmetrics and plot: {result.train_dir}")


@main.command("eval")
@config_option
@set_option
def eval_command(config_path: Path | None, overrides: tuple[str, ...]) -> None:
    """The whole job: rubrics, verifier comparison, GRPO, judge, theory, report (resumable)."""
    from harness.evaluation import run_eval
    from harness.report.summary import build_summary
    from harness.stages import RUBRIC_STAGES

    config = prepare_run(config_path, overrides, RUBRIC_STAGES, memory_plan=[])
    results = run_eval(config)
    _write_and_show_report(build_summary(config, _profile_name(config_path), results), config)


@main.command("compare-verifiers")
@config_option
@set_option
def compare_verifiers_command(config_path: Path | None, overrides: tuple[str, ...]) -> None:
    """Every verifier of the profile on the same verification set, against a reference."""
    from harness.console import console
    from harness.evaluation import run_through
    from harness.report.terminal import print_verifier_comparison
    from harness.stages import stages_through
    from harness.summary_schema import CompareMetrics

    config = prepare_run(config_path, overrides, stages_through("compare"))
    show_stages(run_through(config, "compare"), config.run_dir)
    metrics = read_json(RunPaths(config.run_dir).compare_metrics_path)
    print_verifier_comparison(CompareMetrics.model_validate(metrics), console)


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
    from harness.console import console
    from harness.evaluation import judge_files, judge_trained_vs_base
    from harness.report import pairwise_table, rich_table
    from harness.summary_schema import Summary

    config = prepare_run(config_path, overrides)
    if (side_a is None) != (side_b is None):
        raise click.UsageError("give both --a and --b, or neither (trained vs base policy)")
    if side_a is None or side_b is None:
        summary = judge_trained_vs_base(config)
        missing = (f"{config.run_dir}: no trained adapter to judge (run `harness train` first, "
                   "or give --a and --b candidate files)")  # fmt: skip
    else:
        summary = judge_files(config, side_a, side_b)
        missing = (
            f"{side_a} and {side_b} share no (prompt_id, sample_index) among the judge prompts"
        )
    if summary is None:
        raise click.ClickException(missing)
    console.print(rich_table("pairwise judge", pairwise_table(Summary(pairwise=summary))))


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
    from harness.console import console
    from harness.report import rich_table, theory_table
    from harness.summary_schema import Summary, Theory
    from harness.theory import plot_theory, theory_summary

    check_writable(out_dir / "theory_fig2a.png")
    summary = Summary(theory=Theory.model_validate(theory_summary()))
    console.print(rich_table("win rate against KL", theory_table(summary)))
    for name, path in plot_theory(out_dir).items():
        console.print(f"{name}: {path}")


@main.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
def report(run_dir: Path) -> None:
    """Write report.md, report.html and summary.json of a run folder (no model is called)."""
    from harness.report.summary import build_summary
    from harness.summary_schema import load_summary

    paths = RunPaths(run_dir)
    saved = paths.config_path
    if not saved.is_file():
        raise click.ClickException(f"{run_dir} is not a run folder (no config.yaml)")
    config = load_config(saved).model_copy(
        update={"runs_dir": str(run_dir.parent), "run_name": run_dir.name}
    )
    open_run_folder(run_dir)
    previous = load_summary(paths.summary_path) if paths.summary_path.is_file() else None
    profile = previous.run.profile if previous and previous.run else None
    _write_and_show_report(build_summary(config, profile or "-"), config)


def _write_and_show_report(summary: Summary, config: HarnessConfig) -> None:
    from harness.console import console
    from harness.report import print_summary, write_report

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
    from harness.console import console

    config = prepare_run(config_path, overrides)
    folder = out_dir or config.run_dir
    check_writable(folder / "bench.json")
    result = run_bench(config, folder, smoke=smoke, console=console)
    print_bench(result, console)
    console.print(f"bench: {folder / 'bench.json'}")


def run() -> None:
    """Console entry point: clear one-line errors for bad input, never a traceback."""
    from harness.interrupts import Interrupted, leave, stop_on_signals

    try:
        with stop_on_signals():  # Ctrl-C and SIGTERM: stop engines, say how to resume, 130/143
            main(standalone_mode=False)
    except Interrupted as stop:
        leave(stop.code)  # past the interpreter's end, which could still exit by SIGINT
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
