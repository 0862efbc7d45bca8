"""Run profiles: YAML files in `configs/`, validated by pydantic, with `--set a.b=c` overrides.

A profile maps each role (`policy`, `proposer`, `verifier` or a list of verifiers, `judge`) to a
backend, a model, sampling settings and a pass-through mapping of engine options
(`harness.role_config`), and sets each stage (`harness.stage_config`). A bad key or value fails
with the file, the line, the key's dotted path and a hint. No torch or vLLM import happens here,
so `harness --help` stays instant.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from harness.jsonl import InputError, read_text
from harness.profile_yaml import ConfigError, compose, construct, key_lines, kind_of
from harness.project import PROJECT_ROOT
from harness.role_config import ROLE_NAMES, BackendName, RoleConfig, Roles, StrictModel
from harness.stage_config import (
    CompareConfig,
    DataConfig,
    EvalConfig,
    JudgeConfig,
    ProbesConfig,
    ProposeConfig,
    RefineConfig,
    RolloutsConfig,
    TrainConfig,
    VerifyConfig,
)
from harness.types import Sampling

__all__ = [
    "DEFAULT_PROFILE",
    "ROLE_NAMES",
    "BackendName",
    "CompareConfig",
    "ConfigError",
    "DataConfig",
    "EvalConfig",
    "HarnessConfig",
    "JudgeConfig",
    "ProbesConfig",
    "ProposeConfig",
    "RefineConfig",
    "RoleConfig",
    "Roles",
    "RolloutsConfig",
    "StrictModel",
    "TrainConfig",
    "VerifyConfig",
    "dump_config",
    "load_config",
]

DEFAULT_PROFILE = PROJECT_ROOT / "configs" / "default.yaml"


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
    probes: ProbesConfig = ProbesConfig()
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

    def check_endpoints(self) -> None:
        """Refuse before anything starts (OfflineError, naming its place in the profile) an
        endpoint that the offline guard would refuse only when its role starts."""
        for name in ("policy", "proposer", "judge"):
            if (role := getattr(self.roles, name)) is not None:
                role.check_endpoints(name, self.offline)
        for i, verifier in enumerate(self.roles.verifier):
            place = "roles.verifier" if len(self.roles.verifier) == 1 else f"roles.verifier[{i}]"
            verifier.check_endpoints("verifier", self.offline, place)
        for i, model in enumerate(self.rollouts.models):
            model.check_endpoints("rollouts", self.offline, f"rollouts.models[{i}]")


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
