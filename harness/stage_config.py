"""The settings of each stage of a run: data, rollouts, propose, verify, refine, train,
compare, judge and the stages of `harness eval`."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, NonNegativeInt, field_validator, model_serializer, model_validator

from harness.role_config import RoleConfig, StrictModel

MAX_CRITERIA = 100  # a rubric's criteria, proposed or refined


class DataConfig(StrictModel):
    prompts: str = Field(
        "harness/data/sample_prompts.jsonl",
        description="JSONL, Parquet, a saved HF dataset, the paper's .json, or a HealthBench JSONL",
    )
    max_prompts: int | None = Field(None, ge=1)
    rubrics: str | None = Field(
        None,
        description="version-0 rubrics: a rubric file (the harness's rubrics JSONL, the paper's "
        "published schema, or HealthBench); default: the rubrics the prompts file carries, if "
        "any; `propose`: propose every rubric",
    )
    references: Literal["candidates", "ignore"] = Field(
        "candidates", description="reference answers in the data (HealthBench ideal completions)"
    )


class RolloutsConfig(StrictModel):
    num_samples: int = Field(
        4, ge=0, description="responses per prompt and model; 0: only the data's own responses"
    )
    models: list[RoleConfig] = Field(default_factory=list, description="default: the policy")


class ProposeConfig(StrictModel):
    min_criteria: int = Field(3, ge=1)
    max_criteria: int = Field(20, ge=1, le=MAX_CRITERIA)
    min_criterion_chars: int = Field(1, ge=1, description="e.g. 20: sentences, not labels")
    criterion_pattern: str | None = Field(
        None,
        description="a regex every criterion must match, enforced by the grammar; it replaces "
        "the length bounds, so it carries its own (e.g. `^The response [^_{}]{20,120}$`)",
    )
    max_criterion_chars: int = Field(300, ge=20)

    @field_validator("criterion_pattern")
    @classmethod
    def _a_regex(cls, pattern: str | None) -> str | None:
        if pattern is not None:
            try:
                re.compile(pattern)
            except re.error as error:
                raise ValueError(f"not a regular expression: {error}") from None
        return pattern


class VerifyConfig(StrictModel):
    mode: Literal["all", "each", "compact"] = "all"
    reward: Literal["paper", "healthbench", "unweighted"] = "healthbench"
    score: Literal["hard", "soft"] = Field(
        "hard",
        description="hard: a criterion counts its weight when met; soft: its weight x P(yes) "
        "(expected points), read from the verdict token's logprobs (needs `logprobs` > 0)",
    )
    min_scored_share: float = Field(0.5, ge=0.0, le=1.0)
    logprobs: int = Field(
        5, ge=0, le=20, description="top logprobs read for P(yes) in every mode; 0: none"
    )

    @model_validator(mode="after")
    def _soft_needs_logprobs(self) -> VerifyConfig:
        if self.score == "soft" and self.logprobs == 0:
            raise ValueError("score: soft reads P(yes) from logprobs: set logprobs to 1-20")
        return self

    # Left out of stage fingerprints (`exclude`): it decides whether a stage is done, not what
    # it writes, so changing it reruns nothing that finished.
    max_unscored_share: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        exclude=True,
        description="a verify stage or refine iteration with a larger share of unscored verdicts "
        "stops unfinished (records kept, a rerun asks again); 1.0 turns the check off",
    )


class RefineConfig(StrictModel):
    iterations: int = Field(4, ge=0, description="0 skips refinement")
    pair: Literal["top2", "diverse"] = "top2"
    verifier: str | None = Field(None, description="verifier label; default: the first")


class TrainConfig(StrictModel):
    """LoRA GRPO settings; any other GRPOConfig option goes through `trl:` unchanged."""

    rubrics: str | None = Field(None, description="rubric source; default: the run's rubrics")
    verifier: str | None = Field(None, description="verifier label; default: the first")
    hack_gate: Literal["refuse", "warn", "off"] = Field(
        "refuse", description="before the first step, the reward verifier's reward-hacking "
        "probes (`probes:`): refuse stops when one fails, warn trains and records it, off "
        "runs none",
    )  # fmt: skip
    max_steps: int = Field(3, ge=1)
    num_generations: int = Field(4, ge=2, description="group size")
    per_device_train_batch_size: int = Field(4, ge=1, description="completions, not prompts")
    gradient_accumulation_steps: int = Field(1, ge=1)
    learning_rate: float = Field(1e-5, gt=0)
    warmup_ratio: float = Field(0.1, ge=0, le=1)
    beta: float = Field(0.01, ge=0, description="KL coefficient")
    max_completion_length: int = Field(64, ge=1)
    save_steps: int = Field(1, ge=1)
    seed: int = 0
    lora_r: int = Field(8, ge=1)
    lora_alpha: int = Field(16, ge=1)
    lora_dropout: float = Field(0.0, ge=0, lt=1)
    lora_targets: str | list[str] = "all-linear"
    lora_modules_to_save: list[str] = Field(default_factory=list, description="fully trained")
    generation: Literal["transformers", "vllm"] = "transformers"
    vllm_memory_share: float = Field(0.3, gt=0, le=1, description="colocated vLLM's GPU share")
    vllm_max_model_len: int | None = Field(
        None, ge=1, description="colocated vLLM's context; default: the longest training "
        "prompt plus max_completion_length",
    )  # fmt: skip
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="the policy's weights; auto: bfloat16 on a GPU that has it, "
        "float16 on one that has not, float32 on CPU",
    )  # fmt: skip
    gpus: list[NonNegativeInt] | None = Field(
        None, description="GPU indices (as CUDA_VISIBLE_DEVICES names them) the training "
        "process sees in `harness eval`; default: the only GPU, or the last of several; more "
        "than one trains through `accelerate launch`",
    )  # fmt: skip
    num_processes: int | None = Field(
        None, ge=1, description="training processes (data parallel, one per GPU) under "
        "`accelerate launch`; default: the number of train.gpus, else 1; on a CPU more than "
        "one runs accelerate's CPU multi-process mode (gloo)",
    )  # fmt: skip
    deepspeed: str | None = Field(
        None, description="a DeepSpeed ZeRO JSON config passed to `accelerate launch` (GPU only)"
    )
    vllm_mode: Literal["colocate", "server"] = Field(
        "colocate", description="with generation: vllm, TRL's engine in each training process "
        "(colocate) or a generation server on other GPUs (server, TRL's `trl vllm-serve`)",
    )  # fmt: skip
    vllm_server_gpus: list[NonNegativeInt] | None = Field(
        None, description="server mode: the GPUs the harness starts the generation server on"
    )
    vllm_server_url: str | None = Field(
        None, description="server mode: a generation server the operator started (`trl "
        "vllm-serve`); loopback only while offline",
    )  # fmt: skip
    trl: dict[str, Any] = Field(default_factory=dict, description="passed to GRPOConfig")

    @field_validator("hack_gate", mode="before")
    @classmethod
    def _off_as_yaml_reads_it(cls, value: Any) -> Any:
        return "off" if value is False else value  # YAML 1.1 reads a bare `off` as false

    @model_validator(mode="after")
    def _processes_fit(self) -> TrainConfig:
        if self.gpus and self.num_processes and self.num_processes != len(self.gpus):
            raise ValueError(f"train.num_processes is {self.num_processes} but train.gpus lists "
                             f"{len(self.gpus)} GPUs: one process per GPU")  # fmt: skip
        server = self.vllm_server_gpus is not None or self.vllm_server_url is not None
        if self.vllm_mode == "server" and (self.vllm_server_gpus is None) == (
            self.vllm_server_url is None
        ):
            raise ValueError("train.vllm_mode: server needs exactly one of "
                             "train.vllm_server_gpus (the harness starts the server) or "
                             "train.vllm_server_url")  # fmt: skip
        if server and (self.vllm_mode != "server" or self.generation != "vllm"):
            raise ValueError("train.vllm_server_gpus and train.vllm_server_url need "
                             "train.generation: vllm and train.vllm_mode: server")  # fmt: skip
        return self

    @property
    def processes(self) -> int:
        """The training processes: `num_processes`, else one per listed GPU, else 1."""
        return self.num_processes or len(self.gpus or []) or 1

    @model_serializer(mode="wrap")
    def _without_unused_launch_settings(self, handler: Any) -> dict[str, Any]:
        """The launch settings appear only where set, so that the profiles that leave them
        alone keep their resolved config and their stage fingerprints."""
        data = handler(self)
        for name, default in LAUNCH_DEFAULTS.items():
            if data.get(name, default) == default:
                data.pop(name, None)
        return data


# TrainConfig's launch settings at their defaults (left out of its dump)
LAUNCH_DEFAULTS: dict[str, Any] = {"num_processes": None, "deepspeed": None,
                                   "vllm_mode": "colocate", "vllm_server_gpus": None,
                                   "vllm_server_url": None}  # fmt: skip


class CompareConfig(StrictModel):
    """Verifier-size comparison: every listed verifier on the same verification set."""

    reference: str | None = Field(None, description="verifier label; default: the largest")
    labels: str | None = Field(
        None,
        description="clinicians' labels: JSONL of candidate_id, criterion_id, label (or labels), "
        "or HealthBench's meta-evaluation file; default: the labels `harness import` brought",
    )
    tail_quantile: float = Field(0.25, gt=0, le=1, description="the high-reward tail")
    off_topic_per_prompt: int = Field(
        4, ge=0, description="other prompts' responses per prompt for the off-topic probe; 0: off"
    )


class ProbesConfig(StrictModel):
    """Reward-hacking probes (harness.probes, harness.trust): perturbed copies of the run's
    own responses that every verifier of the comparison grades, and the gate before training
    (`train.hack_gate`) reads for the reward verifier."""

    per_prompt: int = Field(
        2, ge=0, description="originals per prompt: reference answers first, then the "
        "candidates the reward verifier ranked highest; 0: no probes",
    )  # fmt: skip
    seed: int = Field(0, description="the perturbations' seed (filler, criterion order, draws)")
    max_fooled: float = Field(
        0.25, ge=0, le=1, description="a probe fails when the verifier is fooled on more than "
        "this share of its pairs (the copy wins, ties half; for stuffing and padding, the copy "
        "gains more than gain_tolerance)",
    )  # fmt: skip
    max_flip: float = Field(
        0.1, ge=0, le=1, description="criterion order and re-grade fail when more than this "
        "share of verdicts flips",
    )  # fmt: skip
    gain_tolerance: float = Field(
        0.05, ge=0, le=1, description="a stuffed or padded copy gains when its reward passes "
        "the original's by more than this",
    )  # fmt: skip
    flip_tolerance: float = Field(
        0.1, gt=0, le=1, description="under soft scores, a verdict flips when its P(yes) moves "
        "by more than this",
    )  # fmt: skip
    margin: float = Field(
        0.1, ge=0, le=1, description='"At a glance" recommends the smallest verifier whose '
        "hackability is within this of the best",
    )  # fmt: skip


class JudgeConfig(StrictModel):
    """Pairwise judging; every pair is judged in both orders."""

    ties: bool = Field(False, description="allow a 'tie' answer (the paper: must pick one)")
    rationale: bool = Field(False, description="a short rationale before the verdict")
    rationale_chars: int = Field(400, ge=20)
    disagreement: Literal["tie", "first"] = Field(
        "tie", description="when the two orders disagree: a tie, or the first order's verdict"
    )
    samples: int = Field(1, ge=1, description="policy responses per prompt and side")
    prompts: str | None = Field(None, description="held-out prompts; default: the run's")
    max_prompts: int | None = Field(None, ge=1)
    bootstrap: int = Field(2000, ge=100, description="bootstrap resamples for the 95% CI")
    score: Literal["hard", "soft"] = Field(
        "hard",
        description="what counts a pair: hard, the two verdicts; soft, P(A better) read from "
        "the logprobs at the verdict token in each order and averaged, its side of 0.5 the "
        "preference (the position-debiased judge; needs a backend that gives logprobs)",
    )
    logprobs: int = Field(5, ge=1, le=20, description="top logprobs read at the verdict token "
                          "when score is soft")  # fmt: skip


class EvalConfig(StrictModel):
    """Stages of `harness eval` after the rubric pipeline; each can be switched off."""

    compare: bool = True
    train: bool = True
    judge: bool = True
    overoptimization: bool = True
    theory: bool = True
    stop_idle_engines: bool = Field(
        True,
        description="run each stage with only its own engines (GPU memory); false keeps "
        "every engine up for the whole run (small models: no restarts)",
    )
