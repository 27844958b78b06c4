"""SFT distillation on the tiny model: trains, saves a loadable student, caches, masks the prompt."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

import agentark.distill.sft as sft
from agentark.distill import SFTDistillConfig, build_samples, build_trainer, read_manifest, to_dataset, train_sft
from agentark.models import load_tokenizer
from agentark.traces import TraceStore

from test_distill_data import GOLD, make_trace

Q_PROJ = "model.layers.0.self_attn.q_proj.weight"
EMBED = "model.embed_tokens.weight"


@pytest.fixture(scope="module")
def traces_dir(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("run")
    traces = [make_trace(f"q{i}", [[GOLD, "7", GOLD], [GOLD, GOLD, GOLD]]) for i in range(4)]
    traces.append(make_trace("wrong", [["7", "7", "7"]], final_correct=False))
    TraceStore(run).append(traces)
    return run


def config(traces_dir: Path, model_dir: Path, out: Path, **overrides) -> SFTDistillConfig:
    settings = dict(strategy="rsft", traces=str(traces_dir), model=str(model_dir), out=str(out), max_steps=3,
                    per_device_train_batch_size=2, gradient_accumulation_steps=1, learning_rate=1e-3, logging_steps=1)
    return SFTDistillConfig(**{**settings, **overrides})


def test_train_save_reload_cache_and_force(traces_dir, tiny_model_dir, tmp_path, monkeypatch, caplog):
    cfg = config(traces_dir, tiny_model_dir, tmp_path / "student")
    out = train_sft(cfg)

    for name in ("model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json", "manifest.json",
                 "adapter/adapter_model.safetensors", "adapter/adapter_config.json"):
        assert (out / name).is_file(), name
    manifest = read_manifest(out)
    assert manifest["strategy"] == "rsft" and manifest["dataset"]["questions"] == 4
    assert manifest["dataset"]["corrective_share"] == 1.0 and manifest["traces"]["questions"] == 5
    assert [p["step"] for p in manifest["train"]["loss_curve"]] == [1, 2, 3]
    assert manifest["config"]["learning_rate"] == 1e-3 and manifest["train"]["global_step"] == 3

    # LoRA was merged into the saved weights; embeddings are not a LoRA target and stay as they were.
    base, student = load_file(tiny_model_dir / "model.safetensors"), load_file(out / "model.safetensors")
    assert not torch.equal(base[Q_PROJ], student[Q_PROJ])
    assert torch.equal(base[EMBED], student[EMBED])

    model = AutoModelForCausalLM.from_pretrained(out).eval()
    tokenizer = load_tokenizer(str(out))
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "What is 3 + 4?"}], add_generation_prompt=True,
                                        return_tensors="pt", return_dict=True)
    generated = model.generate(**ids, max_new_tokens=4, do_sample=False)
    assert generated.shape[1] > ids["input_ids"].shape[1]

    # Same config again: up to date, no trainer is even built.
    mtime = (out / "manifest.json").stat().st_mtime_ns
    monkeypatch.setattr(sft, "build_trainer", lambda *a, **k: pytest.fail("retrained an up-to-date student"))
    with caplog.at_level(logging.INFO, logger="agentark.distill.lifecycle"):
        assert train_sft(cfg) == out
    assert "up to date" in caplog.text
    assert (out / "manifest.json").stat().st_mtime_ns == mtime
    monkeypatch.undo()

    # force retrains, reproducibly (same seed, same weights).
    train_sft(cfg.model_copy(update={"force": True}))
    assert (out / "manifest.json").stat().st_mtime_ns != mtime
    assert read_manifest(out)["fingerprint"] == manifest["fingerprint"]
    assert torch.equal(load_file(out / "model.safetensors")[Q_PROJ], student[Q_PROJ])


def test_full_finetune_changes_every_weight_and_keeps_no_adapter(traces_dir, tiny_model_dir, tmp_path):
    out = train_sft(config(traces_dir, tiny_model_dir, tmp_path / "full", use_lora=False, max_steps=1))
    assert not (out / "adapter").exists()
    base, student = load_file(tiny_model_dir / "model.safetensors"), load_file(out / "model.safetensors")
    assert not torch.equal(base[EMBED], student[EMBED]) and not torch.equal(base[Q_PROJ], student[Q_PROJ])


def test_fingerprint_ignores_operational_settings_but_not_training_ones(traces_dir, tiny_model_dir, tmp_path):
    cfg = config(traces_dir, tiny_model_dir, tmp_path / "a")
    samples = build_samples("rsft", [make_trace("q", [[GOLD, GOLD]])])
    same = cfg.model_copy(update={"out": str(tmp_path / "b"), "force": True, "logging_steps": 7})
    assert sft.fingerprint(cfg, samples) == sft.fingerprint(same, samples)
    assert sft.fingerprint(cfg, samples) != sft.fingerprint(cfg.model_copy(update={"learning_rate": 1e-4}), samples)
    assert sft.fingerprint(cfg, samples) != sft.fingerprint(cfg, samples * 2)


def test_e1_team_fingerprint_is_pinned_so_its_kept_checkpoints_stay_resumable(tmp_path):
    """The team student of E1 trains across sessions from a checkpoint kept in git; a config field added later
    (source_round, max_samples, ...) must leave its fingerprint alone, or the checkpoint would be thrown away."""
    import gzip

    kept = Path(__file__).resolve().parents[1] / "results/e1/kept/train/debate-qwen2.5-coder-1.5b-instruct"
    run = tmp_path / "debate"
    run.mkdir()
    (run / "traces.jsonl").write_bytes(gzip.decompress((kept / "traces.jsonl.gz").read_bytes()))
    cfg = SFTDistillConfig(traces=str(run), model="qwen2.5-coder-0.5b-instruct", out=str(tmp_path / "s"),
                           per_question="all", num_train_epochs=1, per_device_train_batch_size=4,
                           gradient_accumulation_steps=2, max_length=1024, save_steps=2, activation_checkpointing=True)
    samples = cfg.samples(sft.training_traces(cfg))
    assert len(samples) == 522
    assert sft.fingerprint(cfg, samples) == "3604c7e0a91db377"
    control = cfg.model_copy(update={"source_round": "first"})
    assert len(control.samples(sft.training_traces(control))) == 507
    assert control.config_hash() != cfg.config_hash()
    assert cfg.model_copy(update={"max_samples": 507}).config_hash() != cfg.config_hash()


def test_loss_is_on_the_completion_only(traces_dir, tiny_model_dir, tmp_path):
    """Inspect a batch exactly as the trainer collates it: prompt tokens are -100, completion tokens are not."""
    from agentark.traces import read_traces

    cfg = config(traces_dir, tiny_model_dir, tmp_path / "mask", per_device_train_batch_size=4)
    samples = build_samples("rsft", read_traces(traces_dir))
    tokenizer = load_tokenizer(cfg.model)
    trainer = build_trainer(cfg, to_dataset(samples), tokenizer)
    batch = next(iter(trainer.get_train_dataloader()))

    completion_of = {tokenizer.apply_chat_template(s["prompt"], add_generation_prompt=True, tokenize=False):
                     s["completion"][0]["content"] for s in samples}
    assert len(batch["input_ids"]) == 4
    for ids, labels, mask in zip(batch["input_ids"], batch["labels"], batch["attention_mask"], strict=True):
        n_prompt = int((labels != -100).nonzero()[0])
        n_real = int(mask.sum())
        prompt = tokenizer.decode(ids[:n_prompt])
        assert prompt in completion_of, prompt
        assert (labels[:n_prompt] == -100).all() and (labels[n_real:] == -100).all()
        assert torch.equal(labels[n_prompt:n_real], ids[n_prompt:n_real])
        assert tokenizer.decode(labels[n_prompt:n_real]) == completion_of[prompt] + "<|im_end|>\n"


def test_samples_cut_by_max_length_are_reported(caplog):
    with caplog.at_level(logging.WARNING, logger="agentark.distill.sft"):
        sft.check_cut_samples({"input_ids": [[1] * 16, [1] * 5]}, n_samples=3, max_length=16)
    assert "1 of 3 samples cut short" in caplog.text and "1 dropped" in caplog.text
    with pytest.raises(ValueError, match="no completion token"):
        sft.check_cut_samples({"input_ids": []}, n_samples=3, max_length=16)


@pytest.mark.parametrize(
    ("offline", "preset", "expected"), [(True, None, "NO"), (True, "YES", "YES"), (False, None, None)]
)
def test_hub_kernels_off_for_offline_cuda_training(monkeypatch, offline, preset, expected):
    """Offline, transformers would fetch Hub kernels at the first CUDA training step and fail; the user's own
    USE_HUB_KERNELS always wins, and online nothing is touched."""
    from huggingface_hub import constants

    from agentark.distill import training

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", offline)
    monkeypatch.delenv("USE_HUB_KERNELS", raising=False)
    if preset is not None:
        monkeypatch.setenv("USE_HUB_KERNELS", preset)
    training._no_hub_kernels_offline()
    assert os.environ.get("USE_HUB_KERNELS") == expected
