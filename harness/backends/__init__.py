"""Backends by name. Modules are imported only when a role asks for them, so that the CLI and
the config stay free of torch and vLLM imports.

    vllm          in-process vLLM engine, grammar-constrained through vLLM's structured outputs
    vllm-server   a vLLM OpenAI-compatible server the harness starts on 127.0.0.1
    openai        any OpenAI-compatible endpoint (loopback only while offline)
    transformers  a Hugging Face model with outlines as the structured-output layer
    scripted      deterministic replies for unit tests of orchestration
"""

from __future__ import annotations

import importlib

from harness.backends.base import Backend, BackendError, Capabilities, RunContext
from harness.config import RoleConfig
from harness.offline import apply_environment

BACKENDS = {
    "vllm": "harness.backends.vllm_engine:VLLMEngineBackend",
    "vllm-server": "harness.backends.vllm_server:VLLMServerBackend",
    "openai": "harness.backends.openai_api:OpenAIBackend",
    "transformers": "harness.backends.hf_outlines:TransformersBackend",
    "scripted": "harness.backends.scripted:ScriptedBackend",
}
# an `openai` role whose base_url lists several endpoints of one model
ENDPOINT_POOL = "harness.backends.endpoints:EndpointPoolBackend"


def backend_class(name: str) -> type[Backend]:
    if name not in BACKENDS:
        raise BackendError(f"unknown backend {name!r}; known: {', '.join(BACKENDS)}")
    return _load(BACKENDS[name])


def serving_class(config: RoleConfig) -> type[Backend]:
    """The class that serves a role with `config`: its backend's, or the endpoint pool for an
    `openai` role that lists several endpoints."""
    if config.backend == "openai" and len(config.endpoints) > 1:
        return _load(ENDPOINT_POOL)
    return backend_class(config.backend)


def _load(where: str) -> type[Backend]:
    module_name, class_name = where.split(":")
    return getattr(importlib.import_module(module_name), class_name)  # type: ignore[no-any-return]


def capabilities_of(config: RoleConfig) -> Capabilities:
    """What the backend serving a role with `config` can do, answered before it starts."""
    return backend_class(config.backend).capabilities


def create_backend(role: str, config: RoleConfig, context: RunContext) -> Backend:
    """Start the backend serving `role` (the offline environment is set before any import)."""
    apply_environment(context.offline)
    return serving_class(config)(role, config, context)


__all__ = [
    "Backend",
    "BackendError",
    "Capabilities",
    "RunContext",
    "backend_class",
    "capabilities_of",
    "create_backend",
]
