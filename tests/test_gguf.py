"""GGUF import refuses what it cannot turn into a model folder with one line naming the file and
the fix, before any weights are loaded; packaged models are checked against their sha256.
The files here are small GGUFs written with the `gguf` package itself."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import gguf
import numpy as np
import pytest

from harness.models.gguf import GGUFImportError, import_gguf, read_gguf
from harness.models.manifest import PackageSource, load_manifest
from harness.models.packaged import assembled_gguf, packaged_entries, part_path

CHATML = "{% for message in messages %}{{ message['content'] }}{% endfor %}"


def write_gguf(path: Path, arch: str = "llama", chat_template: str | None = CHATML) -> Path:
    writer = gguf.GGUFWriter(str(path), arch=arch)
    writer.add_name("synthetic")
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    if chat_template is not None:
        writer.add_chat_template(chat_template)
    writer.add_tensor("token_embd.weight", np.ones((64, 32), dtype=np.float32))
    writer.add_tensor("output_norm.weight", np.ones(32, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_header_is_read(tmp_path: Path):
    info = read_gguf(write_gguf(tmp_path / "m.gguf"))
    assert info.architecture == "llama"
    assert info.file_type == "ALL_F32"
    assert info.tensor_types == {"F32": 2}
    assert info.chat_template == CHATML


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda p: p.write_text("not a model"), "not a GGUF file"),
        (lambda p: None, "no such file"),
        (lambda p: write_gguf(p, arch="rwkv6"), "architecture 'rwkv6' cannot be dequantised"),
        (lambda p: write_gguf(p, chat_template=None), "pass --chat-template FILE"),
    ],
    ids=["not-gguf", "missing", "unsupported-architecture", "no-chat-template"],
)
def test_bad_input_is_refused_with_the_file_and_the_fix(tmp_path: Path, make, expected):
    path = tmp_path / "m.gguf"
    make(path)
    with pytest.raises(GGUFImportError, match=expected) as error:
        import_gguf(path, "m", weights_dir=tmp_path / "weights")
    assert str(path) in str(error.value)
    assert not (tmp_path / "weights" / "m").exists()


def test_truncated_file_is_refused(tmp_path: Path):
    path = write_gguf(tmp_path / "m.gguf")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 4096])
    with pytest.raises(GGUFImportError, match="truncated"):
        read_gguf(path)


def test_a_given_chat_template_must_be_one(tmp_path: Path):
    path = write_gguf(tmp_path / "m.gguf", chat_template=None)
    not_a_template = tmp_path / "t.jinja"
    not_a_template.write_text("hello")
    with pytest.raises(GGUFImportError, match="not a chat template"):
        import_gguf(path, "m", chat_template_path=not_a_template, weights_dir=tmp_path)


@pytest.mark.parametrize("name", ["", "a/b", ".hidden", ".."])
def test_model_name_must_be_a_plain_folder_name(tmp_path: Path, name: str):
    with pytest.raises(GGUFImportError, match="plain folder name"):
        import_gguf(write_gguf(tmp_path / "m.gguf"), name, weights_dir=tmp_path)


@pytest.mark.integration  # a subprocess harness run
def test_cli_prints_one_line_not_a_traceback(tmp_path: Path):
    path = tmp_path / "m.gguf"
    path.write_text("not a model")
    result = subprocess.run(
        [sys.executable, "-m", "harness", "models", "import-gguf", str(path), "--name", "m"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {path}: not a GGUF file (it does not start with 'GGUF'); give the .gguf file "
        "itself, not a folder, archive or safetensors file"
    ]


def test_manifest_names_the_packaged_models_with_license_and_source():
    entries = {e.name: e for e in packaged_entries()}
    assert set(entries) == {"smollm2-135m", "gemma3-270m", "qwen2.5-coder-0.5b"}
    assert entries["smollm2-135m"].license == "Apache-2.0"
    assert entries["gemma3-270m"].license.startswith("Gemma Terms of Use")
    assert entries["gemma3-270m"].package.chat_template == "models/templates/gemma-turns.jinja"
    qwen = entries["qwen2.5-coder-0.5b"]
    # odd package names and no license in the wheels: the entry says what the file is
    assert qwen.license.startswith("Apache-2.0") and "no license of their own" in qwen.license
    assert qwen.source.startswith("Qwen/Qwen2.5-Coder-0.5B-Instruct")
    assert len(qwen.package.files) == 6 and qwen.package.file_name.endswith(".gguf")
    assert all("PyPI" in e.source for e in entries.values())
    hub_models = [e for e in load_manifest() if e.package is None]
    assert hub_models and all(e.license for e in hub_models)


def test_unknown_packaged_model_is_named(tmp_path: Path):
    with pytest.raises(GGUFImportError, match="no packaged model named nope"):
        packaged_entries(["nope"])


def test_package_parts_are_checked_against_the_sha256(tmp_path: Path):
    entry = next(e for e in load_manifest() if e.package is not None)
    parts = ("gguf:gguf/__init__.py", "gguf:gguf/constants.py")
    bad = replace(entry, package=PackageSource(files=parts, sha256="0" * 64))
    with pytest.raises(GGUFImportError, match="has sha256"), assembled_gguf(bad, tmp_path):
        pass
    assert list(tmp_path.iterdir()) == [], "the assembled file is removed"


def test_joined_parts_take_the_manifest_file_name(tmp_path: Path):
    entry = next(e for e in load_manifest() if e.package is not None)
    parts = ("gguf:gguf/__init__.py", "gguf:gguf/constants.py")
    joined = b"".join(part_path(spec).read_bytes() for spec in parts)
    named = PackageSource(files=parts, sha256=hashlib.sha256(joined).hexdigest(),
                          file_name="model-q4_k_m.gguf")  # fmt: skip
    with assembled_gguf(replace(entry, package=named), tmp_path) as whole:
        assert whole.name == "model-q4_k_m.gguf" and whole.read_bytes() == joined


def test_missing_package_names_the_install_command():
    with pytest.raises(GGUFImportError, match="make install"):
        part_path("no-such-distribution:x.gguf")
