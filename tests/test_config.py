from pathlib import Path

import pytest

from harness.config import DEFAULT_PROFILE, ConfigError, dump_config, load_config
from harness.policy import policy_role_config
from harness.roles import RolePool

TINY_PROFILE = DEFAULT_PROFILE.parent / "tiny.yaml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "profile.yaml"
    path.write_text(text)
    return path


def test_default_profile_runs_real_packaged_models_with_a_random_floor():
    config = load_config(DEFAULT_PROFILE)
    assert config.offline is True
    qwen = "qwen2.5-coder-0.5b"
    assert [v.label for v in config.roles.verifier] == [qwen, "tiny-s", "smollm2-135m",
                                                         "gemma3-270m"]  # fmt: skip
    for role in ("proposer", "verifier", "judge"):
        assert config.roles.get(role).model == qwen
    assert config.roles.get("policy").model == "smollm2-135m"
    assert [m.model for m in config.rollout_models()] == ["smollm2-135m", "gemma3-270m"]
    assert config.compare.reference == config.train.verifier == qwen
    # scored by P(yes) and P(A), where the signal of these small models is
    assert (config.verify.mode, config.verify.score, config.judge.score) == ("each", "soft", "soft")


def test_default_profile_starts_one_engine_per_model():
    """Engine starts are a third of the default run's time on 2 cores: SmolLM2's rollouts, its
    comparison verdicts and the trained adapters share one LoRA-enabled engine, Qwen's roles
    one server."""
    config = load_config(DEFAULT_PROFILE)
    smollm2 = [m for m in config.rollout_models() if m.model == "smollm2-135m"]
    smollm2 += [v for v in config.roles.verifier if v.model == "smollm2-135m"]
    smollm2.append(policy_role_config(config))
    assert len(smollm2) == 3 and len({RolePool.key(role) for role in smollm2}) == 1
    qwen = [config.roles.get(r) for r in ("proposer", "judge")] + [config.verifier()]
    assert len({RolePool.key(role) for role in qwen}) == 1


def test_tiny_profile_maps_every_role_to_a_tiny_local_model():
    config = load_config(DEFAULT_PROFILE.parent / "tiny.yaml")
    assert [v.label for v in config.roles.verifier] == ["tiny-s", "tiny-m", "tiny-l"]
    for role in ("policy", "proposer", "verifier", "judge"):
        assert config.roles.get(role).model.startswith("tiny-")


def test_unknown_key_names_file_line_path_and_a_hint(tmp_path):
    path = write(
        tmp_path, "roles:\n  verifier:\n    backend: vllm\n    model: tiny-s\n    temprature: 0\n"
    )
    with pytest.raises(ConfigError) as error:
        load_config(path)
    message = str(error.value)
    assert f"{path}:5" in message
    assert "roles.verifier.0.temprature" in message
    assert "did you mean 'temperature'" in message


def test_bad_value_names_its_line_and_path(tmp_path):
    path = write(tmp_path, "offline: true\nroles:\n  judge:\n    backend: nope\n    model: m\n")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert f"{path}:4: roles.judge.backend" in str(error.value)


def test_nested_sampling_value_out_of_range(tmp_path):
    text = "roles:\n  policy:\n    backend: vllm\n    model: m\n    sampling:\n      top_p: 3\n"
    with pytest.raises(ConfigError, match=r"profile.yaml:6: roles.policy.sampling.top_p"):
        load_config(write(tmp_path, text))


def test_overrides_are_typed_and_reach_list_items():
    config = load_config(
        DEFAULT_PROFILE,
        ["roles.verifier.1.model=tiny-l", "roles.judge.sampling.max_tokens=7", "offline=false"],
    )
    assert config.roles.verifier[1].model == "tiny-l"
    assert config.roles.judge.sampling.max_tokens == 7
    assert config.offline is False


def test_bad_override_is_a_clear_error():
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        load_config(DEFAULT_PROFILE, ["roles.judge"])
    with pytest.raises(ConfigError, match=r"roles\.judge\.sampling\.max_tokens"):
        load_config(DEFAULT_PROFILE, ["roles.judge.sampling.max_tokens=-1"])


def test_backend_specific_requirements(tmp_path):
    with pytest.raises(ConfigError, match="needs base_url"):
        load_config(write(tmp_path, "roles:\n  judge: {backend: openai, model: m}\n"))


def test_resolved_config_holds_the_key_variable_never_the_key(tmp_path, monkeypatch):
    monkeypatch.setenv("SECRET_KEY_VAR", "sk-do-not-write-me")
    text = (
        "offline: false\nroles:\n  judge: {backend: openai, model: m, "
        "base_url: 'https://api.example.com/v1', api_key_env: SECRET_KEY_VAR}\n"
    )
    dumped = dump_config(load_config(write(tmp_path, text)))
    assert "SECRET_KEY_VAR" in dumped
    assert "sk-do-not-write-me" not in dumped


@pytest.mark.parametrize(
    "profile", sorted(DEFAULT_PROFILE.parent.glob("*.yaml")), ids=lambda path: path.stem
)
def test_the_config_a_run_saves_loads_back_unchanged(profile, tmp_path):
    config = load_config(profile)
    saved = write(tmp_path, dump_config(config))
    assert load_config(saved) == config


def test_missing_role_is_named():
    config = load_config(DEFAULT_PROFILE, ["roles.judge=null"])
    with pytest.raises(ConfigError, match="role 'judge' is not configured"):
        config.roles.get("judge")


def test_criterion_length_bounds_are_checked_and_reach_the_schema(tmp_path):
    from harness.proposer import proposal_type
    from harness.types import json_schema_of

    with pytest.raises(ConfigError, match="min_criterion_chars must not exceed"):
        load_config(TINY_PROFILE, ["propose.min_criterion_chars=500"])
    with pytest.raises(ConfigError, match=r"propose.criterion_pattern: .*not a regular expression"):
        load_config(TINY_PROFILE, ["propose.criterion_pattern=(unclosed"])
    config = load_config(TINY_PROFILE, ["propose.min_criterion_chars=25"])
    item = json_schema_of(proposal_type(config.propose))["$defs"]["Item"]
    assert item["properties"]["criterion"]["minLength"] == 25
    with pytest.raises(
        ConfigError, match=r"criterion_pattern replaces propose\.m(in|ax)_criterion_chars"
    ):
        load_config(
            TINY_PROFILE, ["propose.min_criterion_chars=25", "propose.criterion_pattern=^T"]
        )
    config = load_config(write(tmp_path, "propose: {criterion_pattern: '^The [a-z]{5,40}$'}"))
    item = json_schema_of(proposal_type(config.propose))["$defs"]["Item"]
    assert item["properties"]["criterion"] == {"pattern": "^The [a-z]{5,40}$", "type": "string"}


def test_merge_keys_may_override_what_they_bring_in(tmp_path):
    text = (
        "roles:\n  policy: &base {backend: vllm, model: tiny-s, engine: {dtype: float32}}\n"
        "  judge:\n    <<: *base\n    model: tiny-m\n"
    )
    config = load_config(write(tmp_path, text))  # `model` repeats the merged one: allowed
    assert config.roles.judge.model == "tiny-m" and config.roles.judge.engine == {
        "dtype": "float32"
    }
    with pytest.raises(ConfigError, match=r"profile.yaml:6: key 'model' repeats the one on line 5"):
        load_config(write(tmp_path, text + "    model: tiny-l\n"))


def test_profile_without_verifiers_round_trips_through_the_saved_config(tmp_path):
    config = load_config(write(tmp_path, "roles:\n  judge: {backend: vllm, model: m}\n"))
    saved = tmp_path / "config.yaml"
    saved.write_text(dump_config(config))
    assert load_config(saved) == config
