"""Published students: a LoRA adapter in bf16 safetensors, portable across machines, loadable by name.

A distilled LoRA student is saved with its merged weights (``save_student``), which are the base's
size (2.5 GB for the 0.5B in fp32) and useless to publish. :func:`export_adapter` keeps only what
is new — the adapter, cast to bf16 (35 MB -> 17 MB for r=16 on the 0.5B), its PEFT config with the
base named portably (a pack name or hub id, not this machine's cache path), and the student's
``manifest.json`` (data, settings, loss curve). :func:`merged_adapter` turns such a directory back
into a full HF model directory once, cached by the adapter's content, so every engine and command
that takes ``--model`` (``evaluate``, ``serve``, llama.cpp's GGUF conversion) accepts an adapter
directory like any model: ``agentark evaluate --model results/students/<name>``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

from agentark.models.packs import cache_root

logger = logging.getLogger(__name__)

ADAPTER_DIR = "adapter"
"""Where ``save_student`` keeps a LoRA student's adapter, next to its merged weights."""
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
MANIFEST = "manifest.json"


class AdapterError(ValueError):
    """An adapter directory cannot be exported or loaded; the message names the file and the field."""


def is_adapter_dir(path: str | Path) -> bool:
    """A PEFT adapter directory without full weights of its own (no ``config.json``)."""
    path = Path(path)
    return (path / ADAPTER_CONFIG).is_file() and not (path / "config.json").is_file()


def adapter_base(path: str | Path) -> str:
    """The base model an adapter directory was trained on (``base_model_name_or_path``)."""
    config_path = Path(path) / ADAPTER_CONFIG
    try:
        base = json.loads(config_path.read_text())["base_model_name_or_path"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise AdapterError(f"{config_path}: no readable field 'base_model_name_or_path' ({err})") from None
    if not isinstance(base, str) or not base:
        raise AdapterError(f"{config_path}: 'base_model_name_or_path' must name the base model, got {base!r}")
    return base


def export_adapter(student_dir: str | Path, out_dir: str | Path, base: str | None = None) -> Path:
    """Write ``student_dir``'s LoRA adapter to ``out_dir`` as bf16 safetensors + config + manifest.

    ``base`` names the base model in the exported config; by default the name the student was trained
    from (``manifest.json``'s ``base_model``: a pack name, a hub id or a path), which another machine
    resolves the same way. Only floating-point tensors are cast.
    """
    import torch
    from safetensors.torch import load_file, save_file

    student_dir, out_dir = Path(student_dir), Path(out_dir)
    adapter = student_dir / ADAPTER_DIR
    if not (adapter / ADAPTER_CONFIG).is_file() or not (adapter / ADAPTER_WEIGHTS).is_file():
        raise AdapterError(
            f"{student_dir} has no LoRA adapter ({ADAPTER_DIR}/{ADAPTER_CONFIG} and {ADAPTER_DIR}/{ADAPTER_WEIGHTS}); "
            "only a student trained with LoRA can be exported as an adapter"
        )
    manifest_path = student_dir / MANIFEST
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    base = base or manifest.get("base_model")
    if not base:
        raise AdapterError(f"{manifest_path}: no 'base_model' field; pass the base model's name explicitly")
    config = json.loads((adapter / ADAPTER_CONFIG).read_text())
    config["base_model_name_or_path"] = base
    tensors = {k: (v.to(torch.bfloat16) if v.is_floating_point() else v).contiguous()
               for k, v in load_file(adapter / ADAPTER_WEIGHTS).items()}
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(tensors, out_dir / ADAPTER_WEIGHTS, metadata={"format": "pt"})
    (out_dir / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    # The bf16 copy is a model of its own: its fingerprint (what evaluation caches key on) is its bytes'.
    manifest = {**manifest, "base_model": base,
                "fingerprint": hashlib.sha256((out_dir / ADAPTER_WEIGHTS).read_bytes()).hexdigest()[:16],
                "exported": {"from": str(student_dir), "fingerprint": manifest.get("fingerprint"), "dtype": "bfloat16"}}
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return out_dir


def _content_hash(adapter_dir: Path, base_dir: str) -> str:
    digest = hashlib.sha256(base_dir.encode())
    for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS):
        digest.update((adapter_dir / name).read_bytes())
    return digest.hexdigest()[:12]


def merged_adapter(adapter_dir: str | Path, base_dir: str) -> Path:
    """A full HF model directory: ``base_dir``'s weights with the adapter merged in (built once, cached).

    The merge runs in fp32 (PEFT upcasts the bf16 adapter) and is saved in fp32 like a converted pack, so
    the merged student loads, and converts to GGUF, like its base. The cache key is the adapter's
    content and the base, so a changed adapter is merged again; the directory appears only complete.
    """
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    adapter_dir = Path(adapter_dir)
    target = cache_root() / "students" / f"{adapter_dir.resolve().name}-{_content_hash(adapter_dir, base_dir)}"
    if (target / "config.json").is_file():
        return target
    logger.info("merging adapter %s into %s -> %s (once)", adapter_dir, base_dir, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32, use_safetensors=True)
    model = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{target.name}-") as tmp:
        out = Path(tmp) / "merged"
        model.save_pretrained(out, safe_serialization=True)
        AutoTokenizer.from_pretrained(base_dir).save_pretrained(out)
        if (adapter_dir / MANIFEST).is_file():
            shutil.copy(adapter_dir / MANIFEST, out / MANIFEST)
        if target.exists():
            shutil.rmtree(target)
        os.replace(out, target)
    return target
