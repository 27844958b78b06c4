"""The experiment runner on the tiny random model: stage order, commit points, resuming a killed training
from its kept checkpoint in a fresh clone, nothing redone, and kept stages never silently replaced."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from agentark.distill.training import read_manifest
from agentark.experiments import ExperimentConfig, ExperimentRunner, StageRefused
from agentark.experiments.kept import ADAPTER, CHECKPOINT, KEPT_TRACES

GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}


class Killed(Exception):
    """Stands in for a SIGKILL in the middle of a training."""


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout


def spec(model: Path) -> dict:
    common = {"task": "arithmetic", "model": str(model), "engine": "hf", "max_new_tokens": 4, "temperature": 0,
              "batch_size": 4, "chunk_size": 2}
    return {
        "name": "tiny", "root": "runs/tiny", "kept": "results/tiny/kept", "results": "results/tiny",
        "checkpoint_commit_interval_s": 0,
        "stages": [
            {"name": "train/single", "kind": "generate", "settings": {**common, "system": "single", "n": 4}},
            {"name": "students/sft", "kind": "distill", "strategy": "sft", "traces": "train/single",
             "publish": "tiny-sft",
             "settings": {"model": str(model), "max_steps": 4, "save_steps": 2, "per_device_train_batch_size": 2,
                          "gradient_accumulation_steps": 1, "learning_rate": 1e-3}},
            {"name": "eval/sft", "kind": "evaluate", "model": "students/sft",
             "settings": {k: v for k, v in common.items() if k != "model"} | {"n": 2}},
            {"name": "table", "kind": "compare", "rows": {"student": "eval/sft"}},
        ],
    }


@pytest.fixture
def repo(tmp_path, tiny_model_dir, monkeypatch) -> Path:
    for key, value in GIT_ENV.items():
        monkeypatch.setenv(key, value)
    repo = tmp_path / "a"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / ".gitignore").write_text("/runs/\n")
    (repo / "e.yaml").write_text(yaml.safe_dump(spec(tiny_model_dir)))
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "spec")
    return repo


def runner(repo: Path, on_event=None) -> ExperimentRunner:
    return ExperimentRunner(ExperimentConfig.from_yaml(repo / "e.yaml"), commit=True, on_event=on_event, cwd=repo)


def test_killed_training_resumes_from_its_kept_checkpoint_in_a_fresh_clone(repo, tmp_path):
    def kill_at_step_3(stage, message, done, total):
        if stage == "students/sft" and done == 3:
            raise Killed

    with pytest.raises(Killed):
        runner(repo, kill_at_step_3).run()
    log = git(repo, "log", "--format=%s").splitlines()[::-1]
    assert log[1].startswith("tiny: train/single 0 of 4 kept") or "train/single" in log[1]
    assert any(m.startswith("tiny: train/single done, 4 of 4") for m in log)
    assert log[-1].startswith("tiny: students/sft checkpoint at step 2 kept")  # committed before the kill
    kept = repo / "results/tiny/kept/students/sft"
    meta = json.loads((kept / CHECKPOINT / "meta.json").read_text())
    assert meta["step"] == 2 and meta["precision"] in ("fp32", "bf16") and meta["cpu"]
    assert not (kept / CHECKPOINT / "optimizer.pt").exists()  # no pickle in git

    clone = tmp_path / "b"
    git(tmp_path, "clone", "-q", str(repo), str(clone))
    assert not (clone / "runs").exists()
    first = runner(clone)
    status = {s.name: s for s in first.status()}
    assert (status["train/single"].state, status["students/sft"].state) == ("done", "partial")
    assert (status["students/sft"].done, status["students/sft"].total) == (2, 4)
    first.run(only=["students/sft"])  # the training alone, on the traces its generate stage kept
    assert read_manifest(clone / "runs/tiny/students/sft")["train"]["resumed_from"].endswith("checkpoint-2")
    rows = first.run()
    assert all(r.state == "done" for r in rows), rows
    manifest = read_manifest(clone / "runs/tiny/students/sft")
    assert manifest["train"]["resumed_from"].endswith("checkpoint-2")
    assert manifest["train"]["global_step"] == 4
    assert manifest["resources"]["steps_run"] == 2 and manifest["resources"]["peak_rss_gib"] > 0
    assert (clone / "results/tiny/kept/students/sft" / ADAPTER / "adapter_model.safetensors").is_file()
    assert not (clone / "results/tiny/kept/students/sft" / CHECKPOINT).exists()  # spent
    card = (clone / "results/students/tiny-sft/README.md").read_text()
    assert card.startswith("---\nbase_model:") and "library_name: peft" in card

    # The order of evidence, one commit per finished stage: traces, then the student, its evaluation, the table.
    log = git(clone, "log", "--format=%s").splitlines()[::-1]
    trained = next(i for i, m in enumerate(log) if m.startswith("tiny: students/sft trained"))
    evaluated = next(i for i, m in enumerate(log) if m.startswith("tiny: eval/sft done"))
    tabled = next(i for i, m in enumerate(log) if m.startswith("tiny: table table"))
    assert trained < evaluated < tabled
    assert git(clone, "status", "--porcelain", "results") == ""  # everything kept is committed

    # A third run in another fresh clone redoes nothing: no new commit, no training, no generation.
    again = tmp_path / "c"
    git(tmp_path, "clone", "-q", str(clone), str(again))
    head = git(again, "rev-parse", "HEAD")
    events: list[str] = []
    runner(again, lambda stage, message, done, total: events.append(f"{stage}:{message}:{done}")).run()
    assert git(again, "rev-parse", "HEAD") == head
    assert not any(e.startswith("students/sft:training") for e in events)
    assert not (again / "runs/tiny/students/sft/checkpoints").exists()


def test_a_stage_kept_on_another_engine_is_not_silently_replaced(repo):
    kept = repo / "results/tiny/kept/train/single"
    kept.mkdir(parents=True)
    (kept / "stage.json").write_text(
        json.dumps(
            {
                "stage": "generate",
                "fingerprint": "x",
                "complete": False,
                "config": {"engine": "llamacpp", "engine_options": {}, "batch_size": 8},
            }
        )
    )
    with pytest.raises(StageRefused, match="made on engine llamacpp.*asks for hf"):
        runner(repo).run()
    # Without an engine in the spec (auto), the kept run's engine is adopted on any machine.
    config = ExperimentConfig.from_yaml(repo / "e.yaml")
    config.stages[0].settings.pop("engine")
    assert ExperimentRunner(config, cwd=repo)._adopted_engine(config.stages[0])["engine"] == "llamacpp"


def test_a_checkpoint_kept_in_one_precision_is_not_resumed_in_another(repo):
    checkpoint = repo / "results/tiny/kept/students/sft" / CHECKPOINT
    checkpoint.mkdir(parents=True)
    (checkpoint / "meta.json").write_text(json.dumps({"step": 2, "precision": "bf16", "training_fingerprint": "x"}))
    config = ExperimentConfig.from_yaml(repo / "e.yaml")
    config.stages[1].settings["precision"] = "fp32"
    with pytest.raises(StageRefused, match="trained in bf16.*asks for fp32"):
        ExperimentRunner(config, cwd=repo)._distill_config(config.stages[1])
    config.stages[1].settings.pop("precision")  # auto: continue in the checkpoint's precision
    assert ExperimentRunner(config, cwd=repo)._distill_config(config.stages[1]).precision == "bf16"


def test_a_spec_that_reads_a_later_stage_is_refused(tmp_path, tiny_model_dir):
    data = spec(tiny_model_dir)
    data["stages"] = data["stages"][1:]
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(ValueError, match="reads 'train/single', which is not an earlier stage"):
        ExperimentConfig.from_yaml(tmp_path / "bad.yaml")


def test_kept_traces_are_gzipped_whole_lines(tmp_path):
    from agentark.experiments.kept import restore_traces, save_traces

    run = tmp_path / "run"
    run.mkdir()
    (run / "traces.jsonl").write_text('{"a": 1}\n{"b": 2}\n{"half')
    assert save_traces(run, tmp_path / "kept") == 2
    assert (tmp_path / "kept" / KEPT_TRACES).is_file()
    assert restore_traces(tmp_path / "kept", tmp_path / "fresh") == 2
    assert (tmp_path / "fresh" / "traces.jsonl").read_text() == '{"a": 1}\n{"b": 2}\n'
    assert restore_traces(tmp_path / "kept", tmp_path / "fresh") == 0  # never over local work as far along
