"""Name -> GGUF file, for engines that run llama.cpp: packs as shipped, HF weights converted once.

A pack is already a GGUF (quantised, a fraction of the fp32 memory) and is used as is. A Hugging Face
model (a distilled student's merged weights, a hub id) is converted to GGUF with **llama.cpp's own
converter** (``convert_hf_to_gguf.py``), the tool llama.cpp users run; it is not on PyPI as a package
of its own, but ships inside the ``llama-cpp-python`` source distribution, so AgentArk downloads that
sdist once (nothing is compiled) and keeps the converter in its cache. ``$AGENTARK_LLAMA_CPP`` may
point at a llama.cpp checkout instead.

Conversions are cached by a fingerprint of the weights' files, so a retrained student in the same
directory is converted again and an unchanged one is not. Greedy outputs of transformers and of
llama.cpp on the f16 file agree token for token (measured: ``bench/gguf_parity.py``); a quantised file
does not, so compare a base and its student on the same engine *and* the same file type.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Literal

from agentark.models.loading import resolve_model
from agentark.models.packs import MODEL_PACKS, cache_root, pack_gguf

logger = logging.getLogger(__name__)

CONVERTER_SDIST = ("llama-cpp-python", "0.3.36")
"""The source distribution that carries llama.cpp's converter (``vendor/llama.cpp``)."""
_CONVERTER_FILES = ("convert_hf_to_gguf.py", "convert_lora_to_gguf.py", "conversion/", "gguf-py/")

OutType = Literal["f32", "f16", "bf16", "q8_0"]


class GGUFError(RuntimeError):
    """A model cannot be turned into a GGUF file; the message says which and why."""


def resolve_gguf(name: str, outtype: OutType | None = None) -> Path:
    """A ``.gguf`` file as is; a pack's own GGUF; any HF model converted to ``outtype`` (cached, f16 by
    default). With an explicit ``outtype`` a pack is converted too (from its dequantised HF weights), so
    a base pack and its distilled student can run from the same file type."""
    path = Path(name)
    if path.suffix == ".gguf":
        if not path.is_file():
            raise GGUFError(f"GGUF file {name} not found")
        return path
    if name in MODEL_PACKS and outtype is None:
        return pack_gguf(name)
    outtype = outtype or "f16"
    local = Path(resolve_model(name))
    if not local.exists():  # a hub id
        from huggingface_hub import snapshot_download

        local = Path(snapshot_download(name, allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt"]))
    out = cache_root() / "gguf" / f"{local.name}-{weights_fingerprint(local)}-{outtype}.gguf"
    if not out.exists():
        convert_hf_to_gguf(local, out, outtype)
    return out


def weights_fingerprint(model_dir: Path) -> str:
    """Changes when the weights or config change: names, sizes and mtimes of the files (no full read)."""
    files = sorted(p for p in model_dir.iterdir() if p.suffix in (".safetensors", ".json") and p.is_file())
    if not any(p.suffix == ".safetensors" for p in files):
        raise GGUFError(f"{model_dir} has no .safetensors weights to convert to GGUF")
    blob = "|".join(f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def convert_hf_to_gguf(model_dir: Path, out: Path, outtype: OutType = "f16") -> Path:
    """Run llama.cpp's ``convert_hf_to_gguf.py`` on a HF model directory; ``out`` appears only when complete."""
    script = converter_dir() / "convert_hf_to_gguf.py"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.part")
    logger.info("converting %s to GGUF %s with llama.cpp's converter (once)", model_dir, outtype)
    proc = subprocess.run(
        [sys.executable, str(script), str(model_dir), "--outfile", str(tmp), "--outtype", outtype],
        capture_output=True, text=True,
        # The converter must use its own gguf-py (newer than PyPI's gguf); it does unless NO_LOCAL_GGUF is set.
        env={k: v for k, v in os.environ.items() if k != "NO_LOCAL_GGUF"},
    )
    if proc.returncode != 0 or not tmp.exists():
        tmp.unlink(missing_ok=True)
        tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
        raise GGUFError(f"llama.cpp's converter failed on {model_dir}:\n{tail}")
    os.replace(tmp, out)
    return out


def converter_dir() -> Path:
    """A directory holding llama.cpp's converter scripts: ``$AGENTARK_LLAMA_CPP`` or the cached sdist copy."""
    if env := os.environ.get("AGENTARK_LLAMA_CPP"):
        if not (Path(env) / "convert_hf_to_gguf.py").is_file():
            raise GGUFError(
                f"$AGENTARK_LLAMA_CPP={env} has no convert_hf_to_gguf.py (point it at a llama.cpp checkout)"
            )
        return Path(env)
    dist, version = CONVERTER_SDIST
    target = cache_root() / f"llama.cpp-converter-{version}"
    if (target / "convert_hf_to_gguf.py").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".converter-") as tmp:
        logger.info("downloading llama.cpp's converter (the %s %s sdist, once)", dist, version)
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
             "-q", "-d", tmp, f"{dist}=={version}"],
            capture_output=True, text=True,
        )
        sdists = list(Path(tmp).glob("*.tar.gz"))
        if not sdists:
            raise GGUFError(f"could not download llama.cpp's converter ({dist}=={version} sdist): "
                            f"{proc.stderr.strip()[-300:]}; or set $AGENTARK_LLAMA_CPP to a llama.cpp checkout")
        extracted = Path(tmp) / "converter"
        with tarfile.open(sdists[0]) as tar:
            root = f"{tar.getnames()[0].split('/')[0]}/vendor/llama.cpp/"
            members = [m for m in tar.getmembers()
                       if m.name.startswith(root) and m.name[len(root):].startswith(_CONVERTER_FILES)]
            for m in members:
                m.name = m.name[len(root):]
            tar.extractall(extracted, members=members, filter="data")
        os.replace(extracted, target)
    return target
