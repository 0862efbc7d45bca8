"""The settings of each stage of a run: data, rollouts, propose, verify, refine, train,
compare, judge and the stages of `harness eval`."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, NonNegativeInt, field_validator

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
    min_scored_share: float = Field(0.5, ge=0.0, le=1.0)
    logprobs: int = Field(5, ge=0, le=20, description="top logprobs for P(yes) in `each` mode")
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
    trl: dict[str, Any] = Field(default_factory=dict, description="passed to GRPOConfig")


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
