"""Import a GGUF file as a local model folder that every backend serves.

Many air-gapped sites already hold GGUF files. transformers dequantises one (float32 by
default), the quantisation marker is dropped so that it saves as plain safetensors, and the
folder gets the tokenizer, a chat template (the file's own or one given), a generation config
whose end-of-sequence tokens include the template's end of turn, and `provenance.json`: the
source file and its sha256, the GGUF architecture and quantisation, and the versions of the
tools used. The same file gives a byte-identical folder.

    harness models import-gguf model.gguf --name my-model
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections import Counter
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from harness.jsonl import InputError
from harness.models.manifest import WEIGHTS_DIR

GGUF_MAGIC = b"GGUF"
DTYPES = ("float32", "bfloat16", "float16")
PROVENANCE = "provenance.json"
# GGUF sections transformers reads that are not model architectures
NOT_ARCHITECTURES = {"general", "tokenizer"}


class GGUFImportError(InputError):
    """A GGUF file that cannot become a model folder; the message names the file and the fix."""


@dataclass(frozen=True)
class GGUFInfo:
    """What the file's header says about the model."""

    path: Path
    architecture: str
    file_type: str
    tensor_types: dict[str, int]
    name: str | None
    license: str | None
    chat_template: str | None


@dataclass(frozen=True)
class ImportResult:
    name: str
    path: Path
    num_params: int
    architecture: str
    file_type: str
    reused: bool


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def supported_architectures() -> list[str]:
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    return sorted(set(GGUF_SUPPORTED_ARCHITECTURES) - NOT_ARCHITECTURES)


def _field(reader, key: str):
    field = reader.fields.get(key)
    return None if field is None else field.contents()


def read_gguf(path: Path) -> GGUFInfo:
    """The header of a GGUF file, with a one-line error for anything that is not one whole."""
    if not path.is_file():
        raise GGUFImportError(f"{path}: no such file")
    with path.open("rb") as handle:
        if handle.read(4) != GGUF_MAGIC:
            raise GGUFImportError(
                f"{path}: not a GGUF file (it does not start with 'GGUF'); "
                "give the .gguf file itself, not a folder, archive or safetensors file"
            )
    import gguf

    try:
        reader = gguf.GGUFReader(str(path))
    except (ValueError, IndexError, OSError) as error:
        raise GGUFImportError(
            f"{path}: unreadable GGUF ({error}); the file is probably truncated: "
            "copy it again and compare its sha256 with the source's"
        ) from None
    _check_complete(path, reader)
    file_type = _field(reader, "general.file_type")
    try:
        type_name = gguf.LlamaFileType(file_type).name if file_type is not None else "unknown"
    except ValueError:
        type_name = f"type {file_type}"
    return GGUFInfo(
        path=path,
        architecture=str(_field(reader, "general.architecture") or "unknown"),
        file_type=type_name.removeprefix("MOSTLY_"),
        tensor_types=dict(sorted(Counter(t.tensor_type.name for t in reader.tensors).items())),
        name=_field(reader, "general.name"),
        license=_field(reader, "general.license"),
        chat_template=_field(reader, "tokenizer.chat_template"),
    )


def _check_complete(path: Path, reader) -> None:
    """Every tensor's bytes lie inside the file (a cut-off copy fails here, not in a backend)."""
    size = path.stat().st_size
    end = max((t.data_offset + int(t.n_bytes) for t in reader.tensors), default=0)
    if end > size:
        raise GGUFImportError(
            f"{path}: truncated: its tensors need {end:,} bytes but the file has {size:,}; "
            "copy it again and compare its sha256 with the source's"
        )


def check_importable(info: GGUFInfo, chat_template: str | None) -> None:
    supported = supported_architectures()
    if info.architecture not in supported:
        raise GGUFImportError(
            f"{info.path}: GGUF architecture {info.architecture!r} cannot be dequantised by "
            f"transformers (it can: {', '.join(supported)}); convert the original checkpoint "
            "to safetensors and point the profile's `model:` at that folder instead"
        )
    if not (chat_template or info.chat_template):
        raise GGUFImportError(
            f"{info.path}: no chat template in the file (a base model?), and every harness role "
            "speaks in chat messages; pass --chat-template FILE with a Jinja chat template "
            "in the model's own turn format (models/templates/ has some)"
        )


def import_gguf(
    gguf_path: Path,
    name: str,
    *,
    chat_template_path: Path | None = None,
    stop_tokens: tuple[str, ...] = (),
    dtype: str = "float32",
    source: str | None = None,
    weights_dir: Path = WEIGHTS_DIR,
    force: bool = False,
) -> ImportResult:
    """Dequantise `gguf_path` into `weights_dir/name`; an up-to-date folder is left alone."""
    if dtype not in DTYPES:
        raise GGUFImportError(f"--dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
    _check_name(name)
    template = _read_template(chat_template_path)
    info = read_gguf(gguf_path)
    check_importable(info, template)
    target = weights_dir / name
    provenance = _provenance(info, file_sha256(gguf_path), template, chat_template_path,
                             stop_tokens, dtype, source)  # fmt: skip
    if not force and _is_current(target, provenance):
        return _result(name, target, info, provenance, reused=True)
    partial = weights_dir / f".{name}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    num_params = _convert(info, partial, template or info.chat_template, stop_tokens, dtype)
    provenance["num_params"] = num_params
    (partial / PROVENANCE).write_text(json.dumps(provenance, indent=2) + "\n", encoding="utf-8")
    shutil.rmtree(target, ignore_errors=True)
    os.replace(partial, target)
    return _result(name, target, info, provenance, reused=False)


def _check_name(name: str) -> None:
    if not name or "/" in name or name.startswith(".") or name in {"..", "."}:
        raise GGUFImportError(
            f"--name {name!r}: give a plain folder name such as 'smollm2-135m' "
            "(the model is then `model: NAME` in a profile)"
        )


def _read_template(path: Path | None) -> str | None:
    if path is None:
        return None
    if not path.is_file():
        raise GGUFImportError(f"--chat-template {path}: no such file")
    text = path.read_text(encoding="utf-8")
    if "messages" not in text:
        raise GGUFImportError(
            f"--chat-template {path}: not a chat template (a Jinja template that loops over "
            "`messages`)"
        )
    return text


def _provenance(
    info: GGUFInfo,
    sha256: str,
    template: str | None,
    template_path: Path | None,
    stop_tokens: tuple[str, ...],
    dtype: str,
    source: str | None,
) -> dict:
    return {
        "source": {
            "file": info.path.name,
            "sha256": sha256,
            "bytes": info.path.stat().st_size,
            "origin": source,
        },
        "gguf": {
            "architecture": info.architecture,
            "file_type": info.file_type,
            "tensor_types": info.tensor_types,
            "name": info.name,
            "license": info.license,
        },
        "chat_template": (
            {"from": "gguf"}
            if template is None
            else {
                "from": template_path.name if template_path else "given",
                "sha256": hashlib.sha256(template.encode()).hexdigest(),
            }
        ),
        "stop_tokens": list(stop_tokens),
        "dtype": dtype,
        "tools": {pkg: metadata.version(pkg) for pkg in ("transformers", "gguf", "torch")},
    }


def _is_current(target: Path, provenance: dict) -> bool:
    path = target / PROVENANCE
    if not (path.is_file() and (target / "config.json").is_file()):
        return False
    recorded = json.loads(path.read_text(encoding="utf-8"))
    recorded.pop("num_params", None)
    return recorded == provenance


def _result(
    name: str, target: Path, info: GGUFInfo, provenance: dict, *, reused: bool
) -> ImportResult:
    if reused:
        provenance = json.loads((target / PROVENANCE).read_text(encoding="utf-8"))
    return ImportResult(name, target, int(provenance.get("num_params", 0)), info.architecture,
                        info.file_type, reused)  # fmt: skip


def _convert(
    info: GGUFInfo, out_dir: Path, template: str, stop_tokens: tuple[str, ...], dtype: str
) -> int:
    """Dequantise with transformers and save a plain folder; returns the parameter count."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, file_name = str(info.path.parent), info.path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=file_name)
    model = AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=file_name, dtype=getattr(torch, dtype)
    )
    _drop_quantization(model)
    tokenizer.chat_template = template
    stop_ids = _stop_token_ids(info, tokenizer, stop_tokens)
    model.generation_config.eos_token_id = stop_ids if len(stop_ids) > 1 else stop_ids[0]
    model.config.name_or_path = ""
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    _normalise_configs(out_dir)
    return sum(p.numel() for p in model.parameters())


def _drop_quantization(model) -> None:
    """transformers refuses to save a model that still carries its GGUF quantiser; the weights
    are already dequantised, so the marker is all that is left of it."""
    model.hf_quantizer = None
    model.is_quantized = False
    for config in (model.config, getattr(model.config, "text_config", None)):
        if config is not None and hasattr(config, "quantization_config"):
            delattr(config, "quantization_config")


def _stop_token_ids(info: GGUFInfo, tokenizer, stop_tokens: tuple[str, ...]) -> list[int]:
    ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    for token in stop_tokens:
        token_id = tokenizer.convert_tokens_to_ids(token)
        if token_id is None or token_id == tokenizer.unk_token_id:
            raise GGUFImportError(
                f"{info.path}: --stop-token {token!r} is not a single token of its vocabulary"
            )
        ids.append(token_id)
    if not ids:
        raise GGUFImportError(f"{info.path}: no end-of-sequence token; pass --stop-token TOKEN")
    return list(dict.fromkeys(ids))


def _normalise_configs(out_dir: Path) -> None:
    """Drop the one path-dependent field transformers writes, so the same file gives the same
    bytes wherever it was imported from."""
    for file_name in ("config.json", "tokenizer_config.json"):
        path = out_dir / file_name
        if not path.is_file():
            continue
        data = json.loads(path.read_text(encoding="utf-8"))
        for key in ("_name_or_path", "name_or_path", "_model_name_or_path"):
            data.pop(key, None)
        path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
