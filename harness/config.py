"""Run profiles: YAML files in `configs/`, validated by pydantic, with `--set a.b=c` overrides.

A profile maps each role (`policy`, `proposer`, `verifier` or a list of verifiers, `judge`) to a
backend, a model, sampling settings and a pass-through mapping of engine options. A bad key or
value fails with the file, the line, the key's dotted path and a hint. No torch or vLLM import
happens here, so `harness --help` stays instant.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from harness.jsonl import InputError, read_text
from harness.profile_yaml import ConfigError, compose, construct, key_lines, kind_of
from harness.project import PROJECT_ROOT
from harness.types import Sampling

DEFAULT_PROFILE = PROJECT_ROOT / "configs" / "default.yaml"
ROLE_NAMES = ("policy", "proposer", "verifier", "judge")
BackendName = Literal["vllm", "vllm-server", "openai", "transformers", "scripted"]


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RoleConfig(StrictModel):
    """How one role is served: which backend, which model, how to sample."""

    name: str | None = Field(None, description="label in tables; defaults to the model")
    backend: BackendName
    model: str
    sampling: Sampling = Sampling()
    engine: dict[str, Any] = Field(default_factory=dict, description="passed to vLLM as is")
    grammar: Literal["xgrammar", "guidance", "outlines"] = "xgrammar"
    base_url: str | None = None
    api_key_env: str | None = Field(None, description="variable holding the API key")
    served_model_name: str | None = None
    concurrency: int = Field(16, ge=1, le=1024)
    max_attempts: int = Field(3, ge=1, le=10)
    request_timeout_s: float = Field(300.0, gt=0, description="one answer; then it is retried")
    startup_timeout_s: float = Field(600.0, gt=0)
    replies: list[str] | dict[str, str] | None = Field(None, description="scripted backend")
    rule: Literal["keyword", "synthetic"] | None = Field(
        None, description="scripted backend: a built-in rule"
    )
    # changes no answer, so it stays out of fingerprints and the saved config (`exclude`)
    delay_s: float = Field(
        0.0, ge=0, le=10, exclude=True, description="scripted backend: seconds per request"
    )

    @model_validator(mode="after")
    def _backend_needs(self) -> RoleConfig:
        if self.backend == "openai" and not self.base_url:
            raise ValueError("backend 'openai' needs base_url (e.g. http://127.0.0.1:8000/v1)")
        if self.backend == "scripted" and self.replies is None and self.rule is None:
            raise ValueError("backend 'scripted' needs replies (a list or a mapping) or a rule")
        return self

    @property
    def label(self) -> str:
        return self.name or self.model


class Roles(StrictModel):
    policy: RoleConfig | None = None
    proposer: RoleConfig | None = None
    verifier: list[RoleConfig] = Field(default_factory=list)
    judge: RoleConfig | None = None

    @field_validator("verifier", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        if value == []:
            raise ValueError("an empty list: give at least one verifier, or leave the key out")
        return [value] if isinstance(value, dict) else value

    def get(self, role: str) -> RoleConfig:
        """The config of a role; for `verifier`, the first one listed."""
        if role not in ROLE_NAMES:
            raise ConfigError(f"unknown role {role!r}; roles are {', '.join(ROLE_NAMES)}")
        value = getattr(self, role)
        if isinstance(value, list):
            value = value[0] if value else None
        if value is None:
            raise ConfigError(f"role {role!r} is not configured in this profile (roles.{role})")
        return value


class DataConfig(StrictModel):
    prompts: str = Field(
        "harness/data/sample_prompts.jsonl",
        description="JSONL, Parquet, a saved HF dataset, the paper's .json, or a HealthBench JSONL",
    )
    max_prompts: int | None = Field(None, ge=1)


class RolloutsConfig(StrictModel):
    num_samples: int = Field(4, ge=1, description="responses per prompt and model")
    models: list[RoleConfig] = Field(default_factory=list, description="default: the policy")


class ProposeConfig(StrictModel):
    min_criteria: int = Field(3, ge=1)
    max_criteria: int = Field(20, ge=1, le=100)
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
    vllm_memory_share: float = Field(0.3, gt=0, le=1)
    trl: dict[str, Any] = Field(default_factory=dict, description="passed to GRPOConfig")


class CompareConfig(StrictModel):
    """Verifier-size comparison: every listed verifier on the same verification set."""

    reference: str | None = Field(None, description="verifier label; default: the largest")
    labels: str | None = Field(
        None, description="human labels JSONL: prompt_id, candidate_id, criterion_id, label"
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


class HarnessConfig(StrictModel):
    offline: bool = True
    runs_dir: str = "runs"
    run_name: str = "default"
    cache: bool = True
    prompts_dir: str | None = Field(None, description="templates; default: prompts/")
    roles: Roles = Roles()
    data: DataConfig = DataConfig()
    rollouts: RolloutsConfig = RolloutsConfig()
    propose: ProposeConfig = ProposeConfig()
    verify: VerifyConfig = VerifyConfig()
    refine: RefineConfig = RefineConfig()
    train: TrainConfig = TrainConfig()
    compare: CompareConfig = CompareConfig()
    judge: JudgeConfig = JudgeConfig()
    eval: EvalConfig = EvalConfig()

    @field_validator("run_name")
    @classmethod
    def _inside_runs_dir(cls, name: str) -> str:
        # the run folder is runs_dir/run_name, and stages write and delete inside it
        if name in ("", ".", "..") or any(c in name for c in "/\\") or not name.isprintable():
            raise ValueError(
                f"{name!r} is not a folder name: no path separators or control characters, "
                "not '.' or '..' "
                "(the run folder is always inside runs_dir; set runs_dir to move it)"
            )
        return name

    @model_validator(mode="after")
    def _criteria_bounds(self) -> HarnessConfig:
        if self.propose.min_criteria > self.propose.max_criteria:
            raise ValueError("propose.min_criteria must not exceed propose.max_criteria")
        if self.propose.min_criterion_chars > self.propose.max_criterion_chars:
            raise ValueError(
                "propose.min_criterion_chars must not exceed propose.max_criterion_chars"
            )
        lengths = {"min_criterion_chars", "max_criterion_chars"} & self.propose.model_fields_set
        if self.propose.criterion_pattern and lengths:
            raise ValueError(
                f"propose.criterion_pattern replaces propose.{sorted(lengths)[0]} (grammar "
                "engines cannot combine both): put the length into the pattern, e.g. {20,120}"
            )
        return self

    @property
    def run_dir(self) -> Path:
        return self.project_path(self.runs_dir) / self.run_name

    def project_path(self, value: str) -> Path:
        """A path from the profile: absolute, existing relative to the working directory, or
        else relative to the project root (where `configs/` and `runs/` live)."""
        path = Path(value).expanduser()
        if path.is_absolute() or path.exists():
            return path.resolve()
        return PROJECT_ROOT / path

    def verifier(self, label: str | None = None) -> RoleConfig:
        """A verifier by label; the first one listed when `label` is None."""
        if label is None:
            return self.roles.get("verifier")
        for verifier in self.roles.verifier:
            if verifier.label == label:
                return verifier
        known = ", ".join(v.label for v in self.roles.verifier) or "none"
        raise ConfigError(f"no verifier named {label!r} in roles.verifier (known: {known})")

    def rollout_models(self) -> list[RoleConfig]:
        return self.rollouts.models or [self.roles.get("policy")]


def load_config(path: Path | str | None = None, overrides: list[str] = ()) -> HarnessConfig:
    """Read a profile, apply `a.b=c` overrides, validate; errors name file, line and key."""
    path = Path(path) if path else DEFAULT_PROFILE
    try:
        text = read_text(path)
    except InputError as exc:
        raise ConfigError(str(exc).replace(": cannot read (", ": cannot read profile (")) from None
    root = compose(text, str(path))
    if root is None or (isinstance(root, yaml.MappingNode) and not root.value):
        raise ConfigError(
            f"{path}: the profile is empty; give at least its roles (see configs/default.yaml)"
        )
    if not isinstance(root, yaml.MappingNode):
        raise ConfigError(f"{path}:1: a profile is a mapping of keys, not {kind_of(root)}")
    raw = construct(root, str(path))
    lines = key_lines(root)
    for item in overrides:
        _apply_override(raw, item)
    try:
        return HarnessConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, path, lines, overrides)) from None


def dump_config(config: HarnessConfig) -> str:
    """The resolved profile as YAML (the env var name of an API key, never its value)."""
    data = config.model_dump(mode="json", exclude_none=True)
    if not data["roles"]["verifier"]:
        del data["roles"]["verifier"]  # `verifier: []` is refused on load: say nothing instead
    data["verify"]["max_unscored_share"] = config.verify.max_unscored_share
    if config.propose.criterion_pattern:
        for replaced in ("min_criterion_chars", "max_criterion_chars"):
            data["propose"].pop(replaced)
    return yaml.safe_dump(data, sort_keys=False)


def _apply_override(raw: dict[str, Any], item: str) -> None:
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. roles.verifier.model=tiny-m")
    node: Any = raw
    parts = key.split(".")
    for part in parts[:-1]:
        if isinstance(node, list):
            node = node[int(part)] if part.isdigit() and int(part) < len(node) else None
        else:
            node = node.setdefault(part, {}) if isinstance(node, dict) else None
        if node is None:
            raise ConfigError(f"--set {item!r}: {part!r} does not lead to a mapping or list item")
    last = parts[-1]
    if isinstance(node, list) and last.isdigit() and int(last) < len(node):
        node[int(last)] = _override_value(item, value)
    elif isinstance(node, dict):
        node[last] = _override_value(item, value)
    else:
        raise ConfigError(f"--set {item!r}: cannot set {last!r} there")


def _override_value(item: str, value: str) -> Any:
    """The YAML value of `--set KEY=VALUE` (`7`, `true`, `[a, b]`, `{x: 1}`, or a string)."""
    source = f"--set {item!r}: the value"
    root = compose(value, source, numbered=False)
    return None if root is None else construct(root, source, numbered=False)


def _line_of(loc: tuple[Any, ...], lines: dict[tuple[Any, ...], int]) -> int | None:
    """The line of the deepest part of `loc` present in the file (list indices may be implied)."""
    path: tuple[Any, ...] = ()
    found = None
    for part in loc:
        if path + (part,) in lines:
            path += (part,)
            found = lines[path]
        elif not isinstance(part, int):
            break
    return found


def _all_field_names() -> list[str]:
    names: set[str] = set()
    for model in (
        HarnessConfig,
        Roles,
        RoleConfig,
        Sampling,
        DataConfig,
        RolloutsConfig,
        ProposeConfig,
        VerifyConfig,
        RefineConfig,
    ):
        names.update(model.model_fields)
    return sorted(names)


def _describe(exc: ValidationError, path: Path, lines: dict, overrides: list[str]) -> str:
    messages = []
    for error in exc.errors():
        loc = tuple(error["loc"])
        dotted = ".".join(str(p) for p in loc) or "(top level)"
        line = _line_of(loc, lines)
        override = _override_of(loc, overrides)
        if override is not None:
            where = f"--set {override}"  # the value came from the command line, not the file
        else:
            where = f"{path}:{line}" if line else f"{path}"
        message = f"{where}: {dotted}: {error['msg']}"
        if error["type"] == "extra_forbidden":
            close = difflib.get_close_matches(str(loc[-1]), _all_field_names(), n=1)
            message += f" (did you mean {close[0]!r}?)" if close else " (remove it)"
        messages.append(message)
    # every problem names its file and line, or the --set it came from
    if len(messages) == 1:
        return f"invalid profile: {messages[0]}"
    return "invalid profile:\n  " + "\n  ".join(messages)


def _override_of(loc: tuple[Any, ...], overrides: list[str]) -> str | None:
    """The last `--set` whose key is `loc` or holds it; a list index the key leaves out (a
    single verifier given as a mapping is item 0 of the list) may be skipped."""
    found = None
    for item in overrides:
        parts = item.partition("=")[0].split(".")
        matched = 0
        for part in loc:
            if matched == len(parts):
                break
            if str(part) == parts[matched]:
                matched += 1
            elif not isinstance(part, int):
                break
        if matched == len(parts):
            found = item
    return found
