"""Backends declare what they can do; orchestration asks the declaration, never the name."""

from __future__ import annotations

import dataclasses

import pytest

from harness.backends import BACKENDS, BackendError, Capabilities, capabilities_of
from harness.backends.cache import CachedBackend
from harness.backends.scripted import ScriptedBackend
from harness.backends.vllm_engine import lora_engine, supported_lora_rank
from harness.bench import bench_verifier
from harness.config import ConfigError, HarnessConfig, RoleConfig
from harness.policy import policy_role_config
from harness.roles import build_role
from harness.training import served_verifier
from harness.types import Adapter, ChatMessage, ChatRequest

from .conftest import scripted_role


def role(backend: str, **fields) -> RoleConfig:
    needs = {"openai": {"base_url": "http://127.0.0.1:9/v1"}, "scripted": {"replies": ["x"]}}
    return RoleConfig(backend=backend, model="tiny-s", **{**needs.get(backend, {}), **fields})


@pytest.mark.parametrize(
    ("backend", "adapters", "engine_options", "endpoint", "cacheable", "engine"),
    [
        ("vllm", True, True, False, True, "vllm"),
        ("vllm-server", False, False, True, True, "vllm"),
        ("openai", False, False, False, True, None),
        ("transformers", True, False, False, True, "transformers"),
        ("scripted", False, False, False, False, None),
    ],
)
def test_every_backend_type_declares_what_it_can_do(
    backend, adapters, engine_options, endpoint, cacheable, engine
):
    capabilities = capabilities_of(role(backend))
    assert capabilities.adapters is adapters
    assert (capabilities.adapter_engine is not None) is engine_options
    assert capabilities.serves_endpoint is endpoint
    assert capabilities.cacheable is cacheable
    assert capabilities.engine == engine


def test_the_registry_and_the_declarations_cover_the_same_backends():
    assert set(BACKENDS) == {"vllm", "vllm-server", "openai", "transformers", "scripted"}
    for name in BACKENDS:
        assert isinstance(capabilities_of(role(name)), Capabilities)


def test_vllm_switches_lora_on_at_a_rank_it_accepts():
    assert lora_engine({"dtype": "float32"}, 12) == {
        "dtype": "float32",
        "enable_lora": True,
        "max_lora_rank": 16,
    }
    on = {"enable_lora": True, "max_lora_rank": 8}
    assert lora_engine(on, 64) is on  # switched on by the profile: left as it is
    assert [supported_lora_rank(r) for r in (1, 8, 9, 300, 512, 600)] == [8, 8, 16, 320, 512, 600]


def policy_config(policy: RoleConfig) -> HarnessConfig:
    return HarnessConfig(roles={"policy": policy})


def test_the_policy_gets_the_engine_options_its_backend_needs_for_adapters():
    engine = policy_role_config(policy_config(role("vllm")), max_lora_rank=20).engine
    assert engine == {"enable_lora": True, "max_lora_rank": 32}
    for backend in ("transformers", "openai", "scripted"):
        policy = role(backend)
        assert policy_role_config(policy_config(policy)) is policy  # nothing to switch on
    switched_on = role("vllm", engine={"enable_lora": True})
    assert policy_role_config(policy_config(switched_on)) is switched_on


def test_the_policy_follows_the_declaration_not_the_name(monkeypatch):
    def add_flag(engine, rank):
        return {**engine, "adapters_up_to": rank}

    declared = Capabilities(adapters=True, adapter_engine=add_flag)
    monkeypatch.setattr(ScriptedBackend, "capabilities", declared)
    config = policy_config(role("scripted"))
    assert policy_role_config(config, max_lora_rank=4).engine == {"adapters_up_to": 4}


def backend_of(context, cache: bool = True):
    built = build_role("verifier", scripted_role(["x"]), dataclasses.replace(context, cache=cache))
    built.backend.close()
    return built.backend


def test_a_role_is_cached_only_when_its_backend_is_cacheable(context, monkeypatch):
    assert not isinstance(backend_of(context), CachedBackend)
    monkeypatch.setattr(ScriptedBackend, "capabilities", Capabilities(cacheable=True))
    cached = backend_of(context)
    assert isinstance(cached, CachedBackend)
    assert cached.capabilities is ScriptedBackend.capabilities
    assert not isinstance(backend_of(context, cache=False), CachedBackend)


def adapter_request() -> ChatRequest:
    adapter = Adapter(name="trained", path="/nowhere", fingerprint="0" * 16)
    return ChatRequest(messages=(ChatMessage(role="user", content="hi"),), adapter=adapter)


def test_an_adapter_reaches_only_a_backend_that_declares_adapters(context, monkeypatch):
    backend = ScriptedBackend("policy", scripted_role(["hello"]), context)
    with pytest.raises(BackendError, match="cannot apply a LoRA adapter"):
        backend.generate([adapter_request()])
    monkeypatch.setattr(ScriptedBackend, "capabilities", Capabilities(adapters=True))
    assert backend.generate([adapter_request()])[0].text == "hello"


class FakeServer:
    base_url = "http://127.0.0.1:9/v1"
    closed = False

    def close(self) -> None:
        self.closed = True

    def template_kwargs_read(self, role: str, config: RoleConfig) -> dict[str, bool]:
        return {"enable_thinking": False}  # what its template reads of the role's variables


def test_training_starts_a_server_only_for_a_verifier_that_serves_an_endpoint(context, monkeypatch):
    import harness.backends

    servers: list[FakeServer] = []
    monkeypatch.setattr(
        harness.backends, "create_backend", lambda *a: servers.append(FakeServer()) or servers[-1]
    )
    verifier = scripted_role(["x"], name="judge-a")
    with served_verifier(verifier, context) as passed:
        assert passed is verifier and not servers
    monkeypatch.setattr(ScriptedBackend, "capabilities", Capabilities(serves_endpoint=True))
    with served_verifier(verifier, context, shared=True) as already_running:
        assert already_running is verifier and not servers
    with served_verifier(verifier, context) as served:
        assert served.backend == "openai" and served.base_url == FakeServer.base_url
        assert served.served_model_name == "judge-a" and not servers[0].closed
        assert served.chat_template_kwargs == {"enable_thinking": False}
    assert servers[0].closed


def test_the_bench_measures_only_a_verifier_on_a_vllm_engine():
    for backend in ("vllm", "vllm-server"):
        config = HarnessConfig(roles={"verifier": [role(backend)]})
        assert bench_verifier(config).backend == "vllm"
    for backend in ("openai", "transformers", "scripted"):
        config = HarnessConfig(roles={"verifier": [role(backend)]})
        with pytest.raises(ConfigError, match=f"uses backend {backend!r}"):
            bench_verifier(config)
