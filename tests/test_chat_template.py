"""Chat template variables per role (`chat_template_kwargs`): thinking is off by default for
the proposer, verifier and judge where the harness renders the template or starts the vLLM
server, and the variables reach every backend's rendering or request, the completion cache's
key and TRL; on the models of the CPU profiles they change nothing."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from harness.backends.base import Backend, for_role, template_source
from harness.backends.cache import CachedBackend, CompletionCache, cache_key
from harness.backends.openai_api import OpenAIBackend
from harness.backends.scripted import ScriptedBackend
from harness.backends.vllm_server import model_chat_template
from harness.config import ConfigError, RoleConfig, load_config
from harness.models.manifest import WEIGHTS_DIR
from harness.models.tiny import CHATML_TEMPLATE
from harness.role_config import policy_chat_template_kwargs, template_kwargs
from harness.roles import Role
from harness.types import ChatMessage, ChatRequest, Sampling

from .fakes import FakeOpenAIServer

PROJECT = Path(__file__).resolve().parent.parent
CPU_PROFILES = ("default", "tiny", "ci")
THINKING_OFF = {"enable_thinking": False}
EMPTY_THINK = "<think>\n\n</think>\n\n"
# The switch of Qwen3's own template, after the generation prompt.
QWEN3_STYLE_TEMPLATE = CHATML_TEMPLATE.replace(
    "{{ '<|im_start|>assistant\\n' }}{% endif %}",
    "{{ '<|im_start|>assistant\\n' }}"
    "{% if enable_thinking is defined and enable_thinking is false %}"
    "{{ '<think>\\n\\n</think>\\n\\n' }}{% endif %}{% endif %}",
)


def request(content: str = "Is the answer safe?", max_tokens: int = 4) -> ChatRequest:
    return ChatRequest(
        messages=(
            ChatMessage(role="system", content="You grade answers."),
            ChatMessage(role="user", content=content),
        ),
        sampling=Sampling(temperature=0.0, max_tokens=max_tokens),
    )


@pytest.fixture
def thinking_model(tiny_models: Path, tmp_path: Path) -> Path:
    """tiny-s with a Qwen3-style chat template (an `enable_thinking` switch)."""
    folder = tmp_path / "tiny-thinking"
    folder.mkdir()
    for item in (tiny_models / "tiny-s").iterdir():
        if item.name == "model.safetensors":
            os.symlink(item.resolve(), folder / item.name)
        elif item.name != "chat_template.jinja":
            shutil.copy(item, folder / item.name)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    (folder / "chat_template.jinja").write_text(QWEN3_STYLE_TEMPLATE)
    return folder


# --- the defaults and the profile -------------------------------------------------------------


@pytest.mark.parametrize(
    ("role", "backend", "expected"),
    [
        ("verifier", "vllm", THINKING_OFF),
        ("proposer", "vllm-server", THINKING_OFF),
        ("judge", "transformers", THINKING_OFF),
        ("policy", "vllm", {}),
        ("rollouts", "vllm-server", {}),
        ("verifier", "openai", {}),  # OpenAI itself rejects unknown body fields
        ("verifier", "scripted", {}),
    ],
)
def test_thinking_is_off_by_default_where_the_harness_renders_the_template(role, backend, expected):
    fields = {"base_url": "http://127.0.0.1:1/v1"} if backend == "openai" else {}
    fields |= {"rule": "keyword"} if backend == "scripted" else {}
    config = RoleConfig(backend=backend, model="m", **fields)
    assert template_kwargs(role, config) == expected


def test_a_profile_sets_or_clears_the_variables_of_a_role():
    on = RoleConfig(backend="vllm", model="m", chat_template_kwargs={"enable_thinking": True})
    assert template_kwargs("verifier", on) == {"enable_thinking": True}
    cleared = RoleConfig(backend="vllm", model="m", chat_template_kwargs={})
    assert template_kwargs("verifier", cleared) == {}
    remote = RoleConfig(backend="openai", model="m", base_url="http://127.0.0.1:1/v1",
                        chat_template_kwargs=THINKING_OFF)  # fmt: skip
    assert template_kwargs("judge", remote) == THINKING_OFF


def test_a_non_mapping_is_a_one_line_error_naming_the_key(tmp_path):
    path = tmp_path / "profile.yaml"
    path.write_text(
        "roles:\n  verifier:\n    - {backend: vllm, model: m, chat_template_kwargs: [x]}\n"
    )
    with pytest.raises(ConfigError) as error:
        load_config(path)
    message = str(error.value)
    assert f"{path}:3: roles.verifier.0.chat_template_kwargs" in message
    assert "\n" not in message.strip()


def test_an_unset_field_leaves_the_saved_config_and_fingerprints_as_they_were():
    config = RoleConfig(backend="vllm", model="m")
    assert "chat_template_kwargs" not in config.model_dump()
    assert "chat_template_kwargs" not in config.model_dump_json()
    assert "chat_template_kwargs" not in request().model_dump()
    set_ = RoleConfig(backend="vllm", model="m", chat_template_kwargs=THINKING_OFF)
    assert set_.model_dump()["chat_template_kwargs"] == THINKING_OFF


def test_a_request_keeps_its_own_variables_and_roles_without_any_leave_it_alone():
    config = RoleConfig(backend="vllm", model="m")
    (verifier,) = for_role([request()], "verifier", config)
    assert verifier.chat_template_kwargs == THINKING_OFF
    own = request().model_copy(update={"chat_template_kwargs": {"enable_thinking": True}})
    assert for_role([own], "verifier", config)[0].chat_template_kwargs == {"enable_thinking": True}
    assert for_role([request()], "policy", config) == [request()]


# --- the models of the CPU profiles: nothing changes ---------------------------------------------


def cpu_profile_models() -> list[str]:
    models = set()
    for name in CPU_PROFILES:
        config = load_config(PROJECT / "configs" / f"{name}.yaml")
        roles = [config.roles.policy, config.roles.proposer, config.roles.judge]
        roles += [*config.roles.verifier, *config.rollout_models()]
        models |= {r.model for r in roles if r is not None}
    return sorted(models)


def test_the_cpu_profiles_render_and_cache_as_before(tiny_models, real_models):
    """The rendered prompt of every model of the CPU profiles (the default profile's
    verifiers among them) is byte-identical with and without the verifier's default
    variables, and so is the cache key of its requests: their records and caches hold."""
    from transformers import AutoTokenizer

    default = load_config(PROJECT / "configs" / "default.yaml")
    models = cpu_profile_models()
    assert {v.model for v in default.roles.verifier} <= set(models)
    for model in models:
        tokenizer = AutoTokenizer.from_pretrained(WEIGHTS_DIR / model)
        messages = [{"role": m.role, "content": m.content} for m in request().messages]
        plain = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        switched = tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True, **THINKING_OFF
        )
        assert switched == plain, model
        source = template_source(tokenizer.chat_template)
        assert source is not None and "enable_thinking" not in source, model
        verifier_request = for_role([request()], "verifier", default.roles.verifier[0])[0]
        assert verifier_request.chat_template_kwargs == THINKING_OFF

        def reads(name: str, source: str = source) -> bool:
            return name in source

        identity = {"backend": "vllm", "model": model}
        assert cache_key(identity, verifier_request, reads) == cache_key(identity, request())


# --- the completion cache -----------------------------------------------------------------------


def test_thinking_on_and_off_never_share_a_cached_answer(context):
    thinking = "{% if enable_thinking is false %}x{% endif %}"
    reads = lambda name: name in thinking  # noqa: E731
    off = request().model_copy(update={"chat_template_kwargs": THINKING_OFF})
    on = request().model_copy(update={"chat_template_kwargs": {"enable_thinking": True}})
    keys = {cache_key({}, r, reads) for r in (request(), off, on)}
    assert len(keys) == 3
    # a remote template is unknown: whatever is set counts
    assert cache_key({}, off) != cache_key({}, request())

    config = RoleConfig(backend="scripted", model="m", rule="keyword")
    thinking_off = config.model_copy(update={"chat_template_kwargs": THINKING_OFF})
    cache = CompletionCache(context.cache_dir / "completions.sqlite")
    backend = CachedBackend(ScriptedBackend("verifier", config, context), cache)
    Role("policy", config, backend).generate([request()])
    Role("verifier", thinking_off, backend).generate([request()])
    assert (backend.hits, backend.misses) == (0, 2)
    Role("verifier", thinking_off, backend).generate([request()])
    Role("verifier", config, backend).generate([request()])  # no default on a script
    assert (backend.hits, backend.misses) == (2, 2)
    backend.close()


# --- the transformers backend -------------------------------------------------------------------


def test_the_transformers_backend_renders_the_empty_think_block_for_the_verifier_only(
    thinking_model, context
):
    from harness.backends.hf_outlines import TransformersBackend

    config = RoleConfig(backend="transformers", model=str(thinking_model),
                        engine={"device": "cpu"})  # fmt: skip
    backend = TransformersBackend("policy", config, context)
    assert backend.template_reads("enable_thinking")
    rendered: list[str] = []
    render = backend.render
    backend.render = lambda r: rendered.append(render(r)) or rendered[-1]  # type: ignore[method-assign]
    with backend:
        for role in ("verifier", "policy"):  # one backend shared by both roles
            completion = Role(role, config, backend).generate([request()])[0]
            assert completion.error is None
    verifier_prompt, policy_prompt = rendered
    assert verifier_prompt.endswith("<|im_start|>assistant\n" + EMPTY_THINK)
    assert policy_prompt.endswith("<|im_start|>assistant\n")
    assert EMPTY_THINK not in policy_prompt
    assert verifier_prompt == policy_prompt + EMPTY_THINK


# --- the vLLM engine (what reaches LLM.chat) ----------------------------------------------------


class RecordingLLM:
    """Stands in for vLLM's `LLM`: records each `chat` call, answers one empty output each."""

    def __init__(self) -> None:
        self.calls: list[dict] = []

    def chat(self, messages, sampling_params, **options):
        self.calls.append({"messages": messages, **options})
        sample = type("Sample", (), {"text": "", "finish_reason": "stop", "token_ids": [],
                                     "logprobs": None})  # fmt: skip
        return [type("Output", (), {"outputs": [sample], "prompt_token_ids": [1]})
                for _ in messages]  # fmt: skip


def test_the_vllm_engine_passes_each_roles_variables_to_llm_chat(context):
    pytest.importorskip("vllm")
    from harness.backends.vllm_engine import VLLMEngineBackend

    config = RoleConfig(backend="vllm", model="m")
    backend = object.__new__(VLLMEngineBackend)
    Backend.__init__(backend, "policy", config, context)
    backend.llm = RecordingLLM()
    backend._lora_ids = {}
    off = for_role([request("a")], "verifier", config)
    mixed = [off[0], request("b"), off[0].model_copy(update={"messages": request("c").messages})]
    completions = backend._generate(mixed, None)
    assert len(completions) == 3
    calls = backend.llm.calls
    assert [c["chat_template_kwargs"] for c in calls] == [THINKING_OFF, None]
    assert [[m[-1]["content"] for m in c["messages"]] for c in calls] == [["a", "c"], ["b"]]


# --- the server and OpenAI requests -------------------------------------------------------------


@pytest.mark.parametrize(
    ("role", "backend", "kwargs", "sent"),
    [
        ("verifier", "vllm-server", None, THINKING_OFF),  # the harness's own vLLM server
        ("policy", "vllm-server", None, None),
        ("verifier", "openai", None, None),  # OpenAI proper: only when the profile says so
        ("judge", "openai", THINKING_OFF, THINKING_OFF),
        ("verifier", "vllm-server", {}, None),
    ],
)
def test_the_request_body_carries_the_variables_exactly_when_expected(
    role, backend, kwargs, sent, context
):
    with FakeOpenAIServer(lambda body: "ok") as server:
        fields = {"chat_template_kwargs": kwargs} if kwargs is not None else {}
        config = RoleConfig(backend=backend, model="m", base_url=server.base_url, **fields)
        # the vllm-server backend sends its requests as the openai one does, to its own server
        client = OpenAIBackend(role, config, context, base_url=server.base_url)
        with client:
            assert Role(role, config, client).generate([request()])[0].error is None
        (body,) = server.requests
    assert body.get("chat_template_kwargs") == sent
    if sent is None:
        assert "chat_template_kwargs" not in body


def test_the_server_backend_knows_the_template_it_serves(thinking_model, tiny_models, tmp_path):
    assert "enable_thinking" in (model_chat_template(str(thinking_model), {}) or "")
    assert "enable_thinking" not in (model_chat_template(str(tiny_models / "tiny-s"), {}) or "x")
    given = tmp_path / "given.jinja"
    given.write_text("{{ enable_thinking }}")
    assert model_chat_template(str(tiny_models / "tiny-s"), {"chat_template": str(given)}) == (
        "{{ enable_thinking }}"
    )
    assert model_chat_template(str(tmp_path / "missing"), {}) is None


# --- training -------------------------------------------------------------------------------------


def test_trl_gets_the_policys_variables(tmp_path):
    pytest.importorskip("trl")
    from harness.training import grpo_config

    profile = PROJECT / "configs" / "train-tiny.yaml"
    config = load_config(profile)
    assert policy_chat_template_kwargs(config.roles) is None
    assert grpo_config(config, tmp_path).chat_template_kwargs in (None, {})
    config = load_config(profile, ["roles.policy.chat_template_kwargs={enable_thinking: false}"])
    assert policy_chat_template_kwargs(config.roles) == THINKING_OFF
    assert grpo_config(config, tmp_path).chat_template_kwargs == THINKING_OFF


# --- the real vLLM engine -------------------------------------------------------------------------


@pytest.mark.integration
def test_the_vllm_engine_renders_the_empty_think_block_for_the_verifier_only(
    thinking_model, context
):
    from harness.backends.vllm_engine import VLLMEngineBackend

    engine = {"dtype": "float32", "enforce_eager": True, "max_model_len": 512}
    config = RoleConfig(backend="vllm", model=str(thinking_model), engine=engine)
    with VLLMEngineBackend("policy", config, context) as backend:
        assert backend.template_reads("enable_thinking")
        tokenizer = backend.llm.get_tokenizer()
        prompts = {}
        for role in ("verifier", "policy"):  # one engine shared by both roles
            (req,) = for_role([request(max_tokens=1)], role, config)
            (output,) = backend._chat([req], [None], False)  # its prompt as the engine rendered it
            prompts[role] = tokenizer.decode(output.prompt_token_ids)
        assert prompts["verifier"].endswith(EMPTY_THINK)
        assert EMPTY_THINK not in prompts["policy"]
        assert backend.prompt_too_long(req) is None
