"""Responses of the policy as it was and as training left it: the base model, the final LoRA
adapter, and every saved checkpoint, all from one engine (vLLM applies an adapter per request;
the transformers backend switches adapters in place).

    policy_role_config(config)       -> the policy role, with LoRA enabled on a vLLM engine
    final_adapter(train_dir)         -> the "trained" Adapter, or None before training ends
    checkpoint_adapters(train_dir)   -> [(3, Adapter "checkpoint-3"), ...] in step order
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from harness.backends import capabilities_of
from harness.config import HarnessConfig, RoleConfig
from harness.types import Adapter

ADAPTER_WEIGHTS = "adapter_model.safetensors"


def adapter_at(folder: Path, name: str) -> Adapter:
    """The adapter saved in `folder`, named `name`, fingerprinted by its weights."""
    weights = folder / ADAPTER_WEIGHTS
    if not weights.is_file():
        raise FileNotFoundError(f"no LoRA adapter in {folder} (missing {ADAPTER_WEIGHTS})")
    digest = hashlib.sha256(weights.read_bytes())
    digest.update((folder / "adapter_config.json").read_bytes())
    return Adapter(name=name, path=str(folder.resolve()), fingerprint=digest.hexdigest()[:16])


def checkpoint_adapters(train_dir: Path) -> list[tuple[int, Adapter]]:
    """(step, adapter) of every complete checkpoint of a training run, in step order."""
    found = []
    for folder in (train_dir / "checkpoints").glob("checkpoint-*"):
        step = folder.name.removeprefix("checkpoint-")
        if step.isdigit() and (folder / ADAPTER_WEIGHTS).is_file():
            found.append((int(step), adapter_at(folder, folder.name)))
    return sorted(found, key=lambda item: item[0])


def final_adapter(train_dir: Path) -> Adapter | None:
    folder = train_dir / "adapter"
    return adapter_at(folder, "trained") if (folder / ADAPTER_WEIGHTS).is_file() else None


def adapter_rank(train_dir: Path, default: int) -> int:
    """The largest LoRA rank among the run's adapters (what the engine must allow)."""
    ranks = [default]
    for config in train_dir.glob("**/adapter_config.json"):
        ranks.append(int(json.loads(config.read_text(encoding="utf-8")).get("r", default)))
    return max(ranks)


def policy_role_config(config: HarnessConfig, max_lora_rank: int | None = None) -> RoleConfig:
    """The policy role, able to serve adapters: an engine that needs options for LoRA (vLLM)
    gets them switched on."""
    policy = config.roles.get("policy")
    with_adapters = capabilities_of(policy).adapter_engine
    if with_adapters is None:
        return policy
    engine = with_adapters(policy.engine, max_lora_rank or config.train.lora_r)
    if engine == policy.engine:
        return policy
    return policy.model_copy(update={"engine": engine})
