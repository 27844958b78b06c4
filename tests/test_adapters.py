"""Publishing a LoRA student as a bf16 adapter and loading it back by directory name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from agentark.cli import app
from agentark.distill.training import lora_config, save_student, write_manifest
from agentark.models.adapters import AdapterError, export_adapter, is_adapter_dir
from agentark.models.loading import resolve_model


@pytest.fixture()
def lora_student(tiny_model_dir, tmp_path):
    """A saved LoRA student whose adapter is not a no-op (random A and B), with its manifest."""
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    config = lora_config(r=4, alpha=8, dropout=0.0)
    config.init_lora_weights = False
    model = get_peft_model(base, config).eval()
    ids = torch.tensor([[5, 17, 42, 9, 3]])
    with torch.no_grad():
        logits = model(ids).logits
    out = tmp_path / "student"
    save_student(model, AutoTokenizer.from_pretrained(tiny_model_dir), out)
    write_manifest(out, {"base_model": str(tiny_model_dir), "strategy": "rsft", "fingerprint": "abc"})
    return out, ids, logits


def test_export_writes_bf16_adapter_with_portable_base_and_loads_back(lora_student, tiny_model_dir, tmp_path,
                                                                     monkeypatch):
    from transformers import AutoModelForCausalLM

    monkeypatch.setenv("AGENTARK_CACHE", str(tmp_path / "cache"))
    student, ids, logits = lora_student
    published = export_adapter(student, tmp_path / "published")

    assert sorted(p.name for p in published.iterdir()) == ["adapter_config.json", "adapter_model.safetensors",
                                                           "manifest.json"]
    tensors = load_file(published / "adapter_model.safetensors")
    assert tensors and all(t.dtype == torch.bfloat16 for t in tensors.values())
    assert json.loads((published / "adapter_config.json").read_text())["base_model_name_or_path"] == str(tiny_model_dir)
    manifest = json.loads((published / "manifest.json").read_text())
    assert manifest["strategy"] == "rsft" and manifest["exported"]["fingerprint"] == "abc"
    assert manifest["fingerprint"] != "abc"  # the bf16 copy is not the fp32 student the fingerprint named
    assert is_adapter_dir(published) and not is_adapter_dir(student)

    merged = resolve_model(str(published))
    assert merged != str(published) and (tmp_path / "cache") in Path(merged).parents
    model = AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32).eval()
    with torch.no_grad():
        got = model(ids).logits
        base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()(ids).logits
    # The adapter changes the model, and the bf16 copy reproduces the trained fp32 student up to bf16 rounding.
    assert (logits - base).abs().max() > 1e-3
    assert torch.allclose(got, logits, atol=2e-2), (got - logits).abs().max()

    # Merged once: a second resolve reuses the cached directory.
    stamp = (Path(merged) / "model.safetensors").stat().st_mtime_ns
    assert resolve_model(str(published)) == merged
    assert (Path(merged) / "model.safetensors").stat().st_mtime_ns == stamp


def test_export_errors_name_the_directory_and_field(tiny_model_dir, lora_student, tmp_path):
    with pytest.raises(AdapterError, match=r"has no LoRA adapter"):
        export_adapter(tiny_model_dir, tmp_path / "x")
    student, _, _ = lora_student
    (student / "manifest.json").write_text(json.dumps({"strategy": "rsft"}))
    with pytest.raises(AdapterError, match=r"manifest.json: no 'base_model'"):
        export_adapter(student, tmp_path / "y")
    broken = export_adapter(student, tmp_path / "z", base="somewhere/else")
    (broken / "adapter_config.json").write_text("{}")
    with pytest.raises(AdapterError, match=r"adapter_config.json: no readable field 'base_model_name_or_path'"):
        resolve_model(str(broken))


def test_cli_export(lora_student, tmp_path):
    student, _, _ = lora_student
    result = CliRunner().invoke(app, ["export", str(student), "--out", str(tmp_path / "pub")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "pub" / "adapter_model.safetensors").is_file()
    result = CliRunner().invoke(app, ["export", str(tmp_path / "pub"), "--out", str(tmp_path / "again")])
    assert result.exit_code != 0 and "has no LoRA adapter" in result.output


def test_a_published_adapter_is_not_git_ignored():
    """`agentark export --out results/students/<name>` is how a student is published: git must track it
    (a `students/` ignore rule once swallowed E1's adapter), while the working `students/` stays ignored."""
    import shutil
    import subprocess

    root = Path(__file__).resolve().parents[1]
    if shutil.which("git") is None or not (root / ".git").exists():
        pytest.skip("not a git checkout")

    def ignored(path: str) -> bool:
        return subprocess.run(["git", "check-ignore", "-q", path], cwd=root).returncode == 0

    assert not ignored("results/students/e1-rsft/adapter_model.safetensors")
    assert ignored("students/rsft/model.safetensors") and ignored("runs/e1/eval/traces.jsonl")
