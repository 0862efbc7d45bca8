"""The memory plan in the terminal: one table per stage and group of engines, the trainer's
parts, the sum per GPU and each problem with its fix."""

from __future__ import annotations

from harness.memory import TrainerRow
from harness.plan import EngineRow, MemoryPlan


def print_plan(plan: MemoryPlan, console) -> None:  # console: rich.console.Console
    from rich.table import Table

    if plan.gpus:
        names = ", ".join(f"GPU {g.index}: {g.name} {g.total_gib:g} GiB" for g in plan.gpus)
        console.print(f"GPUs ({plan.gpus_from}): {names}")
    else:
        console.print("no GPU found (and no --gpus): GPU engines cannot run here; vLLM and "
                      "transformers engines are planned on the CPU, in host memory")  # fmt: skip
    for stage, reason in plan.skipped.items():
        console.print(f"{stage}: not planned ({reason})", soft_wrap=True)
    for group in plan.groups:
        table = Table(title=f"{group.stage} · group {group.group}", title_justify="left")
        for column in ("engine", "GPUs", "reserved/GPU", "weights", "overhead", "KV", "verdict"):
            table.add_column(column)
        for e in group.engines:
            kv = f"{_g(e.kv_gib)} ({e.max_model_len})" if e.max_model_len else "-"
            table.add_row(e.label, _where(e), _g(e.reservation_gib), _g(e.weights_gib),
                          _g(e.overhead_gib), kv, _verdict(e))  # fmt: skip
        t = group.trainer
        if t is not None:
            table.add_row("trainer", _trainer_gpus(t), _g(t.total_gib),
                          _g(t.weights_gib), "", "", "too big" if t.problem else "ok")  # fmt: skip
        console.print(table)
        if t is not None:
            console.print(f"  trainer: {t.dtype} weights {t.weights_gib:.1f} + LoRA and Adam "
                          f"{t.lora_optimizer_gib:.1f} + activations {t.activations_gib:.1f} + "
                          f"logits {t.logits_gib:.1f} + generation {t.generation_gib:.1f} + "
                          f"context {t.overhead_gib:.1f} GiB", soft_wrap=True)  # fmt: skip
        sums = ", ".join(f"GPU {i}: {s:.1f} GiB" for i, s in group.per_gpu_gib.items())
        if sums:
            console.print(f"  sum per GPU: {sums}")
        for problem in group.problems:
            console.print(f"  [red]{problem}[/red]", soft_wrap=True)
    verdict = "fits" if plan.ok else "does NOT fit"
    lifecycle = "idle engines stopped" if plan.stop_idle_engines else "every engine stays up"
    console.print(f"plan: {verdict} ({lifecycle})")


def _trainer_gpus(trainer: TrainerRow) -> str:
    """The GPUs of the training processes (one each), or `host` on a CPU."""
    if trainer.gpu is None:
        return "host"
    return ",".join(str(g) for g in trainer.gpus or [trainer.gpu])


def _where(engine: EngineRow) -> str:
    if engine.place == "none":
        return "none (remote or scripted)"
    if engine.place == "cpu":
        return "CPU: host memory"
    here = ",".join(str(i) for i in engine.gpus)
    return f"{here} (+{engine.elsewhere} on other nodes, unplanned)" if engine.elsewhere else here


def _verdict(engine: EngineRow) -> str:
    if engine.place == "none":
        return "-"
    if engine.size_from == "unknown size":
        return "size unknown"
    return "too big" if engine.problem else "ok"


def _g(value: float) -> str:
    return f"{value:.1f}" if value else "-"
