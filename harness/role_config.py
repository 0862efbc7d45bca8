"""How each role is served: which backend, which model, how to sample, and which options go
to the engine as they are (the `roles:` part of a profile)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from harness.profile_yaml import ConfigError
from harness.types import Sampling

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
