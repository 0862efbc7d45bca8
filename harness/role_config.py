"""How each role is served: which backend, which model, how to sample, and which options go
to the engine as they are (the `roles:` part of a profile).

`base_url` is one OpenAI-compatible endpoint or a list of them serving the same model (an
endpoint pool, `harness.backends.endpoints`): a list is non-empty and names each URL once;
while offline every URL must be loopback (`check_endpoints`: when a run is prepared, and
again when the role starts)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from harness.offline import check_endpoint
from harness.profile_yaml import ConfigError
from harness.types import Sampling

ROLE_NAMES = ("policy", "proposer", "verifier", "judge")
BackendName = Literal["vllm", "vllm-server", "openai", "transformers", "scripted"]

# Roles that answer in a fixed format (JSON under a grammar, a verdict): a model that thinks
# first (Qwen3) writes a <think> trace there that the grammar and max_tokens cut off.
THINKING_OFF_ROLES = ("proposer", "verifier", "judge")
# Backends whose chat template the harness renders, or a vLLM server it starts (OpenAI itself
# rejects unknown body fields, so the `openai` backend sends them only when a profile does).
TEMPLATE_BACKENDS = ("vllm", "vllm-server", "transformers")
THINKING_OFF = {"enable_thinking": False}


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
    base_url: str | list[str] | None = Field(
        None,
        description="an OpenAI-compatible endpoint, or a list of endpoints serving the same "
        "model (an endpoint pool: requests spread over them, with failover)",
    )
    api_key_env: str | None = Field(None, description="variable holding the API key")
    served_model_name: str | None = None
    concurrency: int = Field(16, ge=1, le=1024)
    max_attempts: int = Field(3, ge=1, le=10)
    request_timeout_s: float = Field(300.0, gt=0, description="one answer; then it is retried")
    startup_timeout_s: float = Field(600.0, gt=0)
    # changes no answer, so it stays out of fingerprints and the saved config (`exclude`)
    failover_wait_s: float = Field(
        30.0,
        gt=0,
        le=3600,
        exclude=True,
        description="endpoint pool: how long to wait for an endpoint to come back when every "
        "one is out, before the stage stops (a rerun resumes it)",
    )
    chat_template_kwargs: dict[str, Any] | None = Field(
        None,
        description="variables for the model's chat template (e.g. enable_thinking: false); "
        "unset: the role's default (see `template_kwargs`)",
        exclude_if=lambda value: value is None,  # unset: fingerprints stay as they were
    )
    replies: list[str] | dict[str, str] | None = Field(None, description="scripted backend")
    rule: Literal["keyword", "synthetic", "blind"] | None = Field(
        None, description="scripted backend: a built-in rule"
    )
    # changes no answer, so it stays out of fingerprints and the saved config (`exclude`)
    delay_s: float = Field(
        0.0, ge=0, le=10, exclude=True, description="scripted backend: seconds per request"
    )

    @field_validator("base_url")
    @classmethod
    def _endpoint_list(cls, value: str | list[str] | None) -> str | list[str] | None:
        if not isinstance(value, list):
            return value
        if not value:
            raise ValueError("an empty list: give one endpoint URL or a list of them")
        for i, url in enumerate(value):
            if not url.strip():
                raise ValueError(f"base_url[{i}] is empty")
            if url in value[:i]:
                raise ValueError(
                    f"base_url[{i}] repeats base_url[{value.index(url)}] ({url}): list each "
                    "endpoint once"
                )
        return value

    @model_validator(mode="after")
    def _backend_needs(self) -> RoleConfig:
        if self.backend == "openai" and not self.base_url:
            raise ValueError("backend 'openai' needs base_url (e.g. http://127.0.0.1:8000/v1)")
        if self.backend == "scripted" and self.replies is None and self.rule is None:
            raise ValueError("backend 'scripted' needs replies (a list or a mapping) or a rule")
        return self

    @model_validator(mode="after")
    def _engine_options(self) -> RoleConfig:
        from harness.backends.vllm_engine import engine_option_problem

        if problem := engine_option_problem(self.backend, self.engine):
            raise ValueError(problem)
        return self

    @property
    def label(self) -> str:
        return self.name or self.model

    @property
    def endpoints(self) -> list[str]:
        """The endpoint URLs of `base_url`: none, one, or the pool's."""
        if self.base_url is None:
            return []
        return [self.base_url] if isinstance(self.base_url, str) else list(self.base_url)

    def check_endpoints(self, role: str, offline: bool, place: str | None = None) -> None:
        """Refuse (OfflineError) any endpoint that is not loopback while offline, by its place
        in the profile (default `roles.<role>`): `<place>.base_url`, or `<place>.base_url[i]`
        in a pool."""
        place = place or f"roles.{role}"
        if isinstance(self.base_url, str):
            check_endpoint(self.base_url, offline=offline, where=f"{place}.base_url")
            return
        for i, url in enumerate(self.endpoints):
            check_endpoint(url, offline=offline, where=f"{place}.base_url[{i}]")


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


def template_kwargs(role: str, config: RoleConfig) -> dict[str, Any]:
    """The chat template variables of `role` served by `config`: the profile's, or by default
    thinking switched off for the proposer, verifier and judge on a backend whose template is
    rendered by the harness or its own vLLM server. The policy and rollout models answer as
    they were trained unless the profile says otherwise."""
    if config.chat_template_kwargs is not None:
        return dict(config.chat_template_kwargs)
    if role in THINKING_OFF_ROLES and config.backend in TEMPLATE_BACKENDS:
        return dict(THINKING_OFF)
    return {}


def policy_chat_template_kwargs(roles: Roles) -> dict[str, Any] | None:
    """The policy's chat template variables for training (TRL's `chat_template_kwargs`), or
    None where it has none."""
    return template_kwargs("policy", roles.get("policy")) or None
