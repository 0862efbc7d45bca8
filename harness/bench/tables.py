"""`bench.json` as rich tables: ratios, layouts, engine ceiling, verdict agreement, grammar
cost, scaling, GRPO step split and goals."""

from __future__ import annotations

from typing import Any

from harness.bench.sizing import COMPLETIONS_PER_GPU, CRITERIA, bench_sizing


def print_bench(result: dict[str, Any], console: Any) -> None:
    """The benchmark as rich tables: ratios, layouts, ceiling, agreement, grammar, scaling,
    step split, goals."""
    from rich.table import Table

    work, machine = result["workload"], result["machine"]
    console.print(
        f"[bold]harness bench[/bold]: {work['responses']} responses x "
        f"{work['criteria_per_rubric']} criteria over {work['prompts']} prompts, "
        f"verifier {work['verifier']} ({work['grammar']}), {work['rounds']} interleaved rounds, "
        f"{machine['cpu']}, {machine['cores']} cores, GPU {machine['gpu'] or 'none'}, "
        f"{work['seconds']:.0f} s{' (smoke run)' if work['smoke'] else ''}"
    )
    console.print(_ratios_table(result["ratios"], Table))
    console.print(_layouts_table(result, Table))
    console.print(_ceiling_table(result, Table))
    console.print(_agreement_table(result["agreement"], Table))
    console.print(_grammar_table(result, Table))
    console.print(_scaling_table(result["scaling"], Table))
    console.print(_split_table(result["train_step_split"], Table))
    sizing = bench_sizing(result)
    if sizing is not None:
        console.print(_sizing_table(sizing, Table))
    console.print(_goals_table(result["goals"], Table))


def _ceiling_table(result: dict[str, Any], table_type: type) -> Any:
    ceiling = table_type(
        "mode",
        "engine ceiling crit/s",
        "harness crit/s",
        "efficiency",
        "prefix hits",
        title="1. Engine ceiling: same tokens, raw engine (medians)",
    )
    for mode, entry in result["engine_ceiling"].items():
        ratio = result["ratios"].get(f"efficiency_{mode}")
        ceiling.add_row(
            mode,
            f"{entry['criteria_per_s']:.1f}",
            f"{entry['harness_criteria_per_s']:.1f}",
            _spread(ratio) if ratio else f"{entry['harness_efficiency']:.2f}",
            f"{entry['prefix_cache_hit_rate']:.0%}",
        )
    return ceiling


def _grammar_table(result: dict[str, Any], table_type: type) -> Any:
    grammar = table_type(
        "engine",
        "backend",
        "requests",
        "constrained s",
        "unconstrained s",
        "slowdown",
        "valid",
        title="3. Grammar cost (all-mode requests, medians)",
    )
    for name, entry in result["grammar"].items():
        if "skipped" in entry:
            grammar.add_row(name, "", "", "", "", entry["skipped"], "")
            continue
        ratio = result["ratios"].get(f"{name}_slowdown")
        grammar.add_row(
            name,
            entry["backend"],
            str(entry["requests"]),
            f"{entry['constrained_s']:.2f}",
            f"{entry['unconstrained_s']:.2f}",
            _spread(ratio, "x") if ratio else f"{entry['slowdown']:.2f}x",
            f"{entry['valid']}/{entry['requests']}",
        )
    return grammar


def _goals_table(goals_of: dict[str, Any], table_type: type) -> Any:
    goals = table_type("goal", "measured", "rounds min-max", "target", "met", "", title="Goals")
    for name, goal in goals_of.items():
        mark = "[green]met[/green]" if goal["met"] else "[red]not met[/red]"
        measured = goal["measured"]
        shown = f"{measured:.2f}" if isinstance(measured, float) else str(measured)
        spread = f"{goal['min']:.2f}-{goal['max']:.2f}" if "min" in goal else ""
        goals.add_row(name, shown, spread, str(goal["target"]), mark, goal.get("detail", ""))
    return goals


def _spread(ratio: dict[str, Any], unit: str = "") -> str:
    """A median ratio with the min-max of its rounds: `1.02x (0.98-1.05)`."""
    return f"{ratio['median']:.2f}{unit} ({ratio['min']:.2f}-{ratio['max']:.2f})"


def _ratios_table(ratios: dict[str, Any], table_type: type) -> Any:
    table = table_type(
        "ratio",
        "median",
        "min",
        "max",
        "per round",
        "others' CPU",
        "",
        title="Ratios: each measured within a round, side by side; median of the rounds",
    )
    for name, ratio in ratios.items():
        busy = ratio.get("other_cpu_share_per_round", [])
        table.add_row(
            name,
            f"{ratio['median']:.2f}",
            f"{ratio['min']:.2f}",
            f"{ratio['max']:.2f}",
            " ".join(f"{v:.2f}" for v in ratio["per_round"]),
            " ".join(f"{v:.0%}" for v in busy),
            ratio.get("detail", ""),
        )
    return table


def _layouts_table(result: dict[str, Any], table_type: type) -> Any:
    layouts, ratios = result["layouts"], result["ratios"]
    table = table_type(
        "layout",
        "criteria/s",
        "x paper",
        "prompt tok",
        "output tok",
        "prefix hits",
        "unparseable",
        "seconds",
        title="2. Verifier layouts, same (prompt, response, rubric) set (medians)",
    )
    for name, entry in layouts.items():
        ratio = ratios.get(f"{name}_vs_paper")
        table.add_row(
            name,
            f"{entry['criteria_per_s']:.1f}",
            _spread(ratio) if ratio else "1.00" if name == "paper" else "",
            str(entry["prompt_tokens"]),
            str(entry["output_tokens"]),
            f"{entry['prefix_cache_hit_rate']:.0%}",
            f"{entry['unparseable']}/{entry['criteria']}",
            f"{entry['seconds']:.2f}",
        )
    return table


def _agreement_table(agreement: dict[str, Any], table_type: type) -> Any:
    table = table_type(
        "layout",
        "vs",
        "verdicts",
        "agreement",
        "kappa",
        "yes-rate",
        "reference yes-rate",
        "unscored",
        title="Verdict agreement with all mode (first round)",
    )
    for name, entry in agreement.items():
        table.add_row(
            name,
            entry["reference"],
            str(entry["n"]),
            _percent(entry["accuracy"]),
            "n/a" if entry["kappa"] is None else f"{entry['kappa']:.2f}",
            _percent(entry["yes_rate"]),
            _percent(entry["reference_yes_rate"]),
            str(entry["unscored"]),
        )
    return table


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def _scaling_table(scaling: dict[str, list[dict[str, Any]]], table_type: type) -> Any:
    modes = list(scaling)
    table = table_type(
        "responses",
        *[f"{m} crit/s" for m in modes],
        title="4. Scaling: criteria per second by batch size",
    )
    rows: dict[int, dict[str, float]] = {}
    for mode in modes:
        for point in scaling[mode]:
            rows.setdefault(point["responses"], {})[mode] = point["criteria_per_s"]
    for responses, rates in rows.items():
        table.add_row(str(responses), *[f"{rates.get(m, 0.0):.1f}" for m in modes])
    return table


def _split_table(split: dict[str, Any], table_type: type) -> Any:
    table = table_type(
        "mode",
        "step s",
        "generation s",
        "verification s",
        "update s",
        "verifier share",
        title="5. GRPO step split (tiny training profile)",
    )
    if "skipped" in split:
        table.add_row(split["skipped"], "", "", "", "", "")
        return table
    for mode, entry in split.items():
        table.add_row(
            mode,
            f"{entry['step_s']:.2f}",
            f"{entry['generation_s']:.2f}",
            f"{entry['reward_s']:.2f}",
            f"{entry['update_s']:.2f}",
            f"{entry['verifier_share']:.0%}",
        )
    return table


def _sizing_table(sizing: dict[str, Any], table_type: type) -> Any:
    measured = sizing["measured"]
    table = table_type(
        "trainer GPUs",
        "prompts/step",
        "verdicts/step",
        "rest of step s",
        "share, 1 endpoint",
        "endpoints: share <= 50%",
        "<= 10%",
        title=(
            f"6. Verifier endpoints per trainer ({COMPLETIONS_PER_GPU} completions per GPU "
            f"and step x {CRITERIA} criteria; measured: {measured['criteria_per_s']:.1f} "
            f"criteria/s per engine, {measured['rest_s']:.2f} s of generation and update for "
            f"{measured['completions_per_step']} completions, {measured['mode']} mode)"
        ),
    )
    for row in sizing["rows"]:
        table.add_row(
            str(row["trainer_gpus"]),
            f"{row['prompts_per_step']:g}",
            str(row["verdicts_per_step"]),
            f"{row['rest_s']:.2f}",
            f"{row['share_with_one']:.0%}",
            str(row["endpoints"]),
            str(row["endpoints_small_share"]),
        )
    return table
