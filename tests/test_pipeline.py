"""The one-command pipeline on the tiny random model: report and decision, caching, re-runs, crash resume.

One full run (module fixture) is copied for each scenario: the copy must be fully cached (paths are in
no fingerprint), and each test then changes one thing and checks which stages re-run.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from pydantic import ValidationError

import agentark.distill.sft as sft
import agentark.pipeline.generation as generate_stage
from agentark.pipeline import PipelineConfig, StageError, run_pipeline, run_stage

OUTCOMES = {"adopt", "hybrid", "keep-multi-agent"}
TRAINING = {"max_steps": 1, "per_device_train_batch_size": 2, "gradient_accumulation_steps": 1, "max_length": 128}


def make_config(out: Path, model_dir: Path, **evaluate) -> PipelineConfig:
    return PipelineConfig(
        # Large operands: a random model never hits a gold answer, so RSFT has nothing to learn from.
        out=str(out), task="arithmetic", task_options={"max_value": 999}, teacher=str(model_dir),
        engine_options={"device": "cpu"},
        generate={"agents": 2, "rounds": 2, "n_train": 4, "max_new_tokens": 8, "batch_size": 16, "chunk_size": 4},
        strategies=["sft", "rsft"], training={"sft": TRAINING, "rsft": TRAINING},
        evaluate={"n_eval": 4, "max_new_tokens": 8, "chunk_size": 2, "sc_k": 2, "hybrid_k": 2,
                  "perturbations": ["change_numbers"], **evaluate},
    )


def ran(result: dict) -> set[str]:
    return {stage for stage, status in result["stages"].items() if status == "ran"}


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, tiny_model_dir):
    out = tmp_path_factory.mktemp("pipeline") / "run"
    events: list[tuple] = []
    result = run_pipeline(make_config(out, tiny_model_dir), on_event=lambda *e: events.append(e))
    return out, result, events


@pytest.fixture
def copied_run(first_run, tmp_path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(first_run[0], out)
    return out


def test_first_run_writes_report_and_a_decision(first_run):
    out, result, events = first_run
    for name in ("report.md", "report.html", "decision.json", "summary.json"):
        assert Path(result["report"][name]).is_file(), name
    decision = json.loads((out / "report" / "decision.json").read_text())
    assert decision["outcome"] in OUTCOMES and result["decision"]["outcome"] == decision["outcome"]
    assert decision["student"] == "student-sft" and decision["mas"] == "debate"
    # A random model answers nothing right: RSFT has no sample and is skipped with its reason, not a crash.
    assert "no training samples" in result["skipped"]["rsft"] and set(result["students"]) == {"sft"}
    assert set(result["eval"]) == {"base", "base@review", "debate", "self_consistency", "student-sft",
                                   "student-sft@perturbed", "student-sft@review", "student-sft@confidence"}
    assert all(status == "ran" for status in result["stages"].values())
    stage = json.loads((out / "eval" / "debate" / "stage.json").read_text())
    assert stage["complete"] and stage["result"]["wall_time_s"] > 0 and stage["result"]["questions"] == 4
    summary = json.loads((out / "report" / "summary.json").read_text())
    assert summary["self_consistency_k"] == 2 and set(summary["review"]) == {"base", "student-sft"}
    assert ("generate", "debating", 4, 4) in events and ("eval:debate", "evaluating", 4, 4) in events
    assert events[-1] == ("report", "done", 1, 1)
    # Latency gates read the served measurement (student and team each load-tested over HTTP).
    served = json.loads((out / "served" / "stage.json").read_text())["result"]["served"]
    assert {"student-sft", "debate"} <= set(served) and all(
        v["requests"] == 16 and v["errors"] == 0 for v in served.values()
    )
    assert all("served, concurrency 2" in g["reason"] for g in decision["gates"] if g["name"].startswith("latency"))
    assert "## Served latency" in (out / "report" / "report.md").read_text()


def test_second_run_skips_every_stage(first_run, copied_run, tiny_model_dir, monkeypatch):
    monkeypatch.setattr(sft, "train_sft", lambda *a, **k: pytest.fail("retrained a cached student"))
    monkeypatch.setattr(generate_stage, "run_chunk", lambda *a, **k: pytest.fail("re-ran a cached stage"))
    report_mtime = (copied_run / "report" / "report.html").stat().st_mtime_ns
    result = run_pipeline(make_config(copied_run, tiny_model_dir))
    assert ran(result) == set() and set(result["stages"]) == set(first_run[1]["stages"])
    assert result["decision"] == first_run[1]["decision"]
    assert result["students"]["sft"].startswith(str(copied_run))  # the moved root's own student, not the original
    assert (copied_run / "report" / "report.html").stat().st_mtime_ns == report_mtime


def test_changed_sc_k_reruns_only_self_consistency_and_report(copied_run, tiny_model_dir):
    result = run_pipeline(make_config(copied_run, tiny_model_dir, sc_k=3))
    assert ran(result) == {"eval:self_consistency", "report"}
    assert json.loads((copied_run / "report" / "summary.json").read_text())["self_consistency_k"] == 3


def test_changed_n_eval_reruns_evaluation_but_not_generation_or_training(copied_run, tiny_model_dir):
    result = run_pipeline(make_config(copied_run, tiny_model_dir, n_eval=2))
    assert ran(result) == {s for s in result["stages"] if s.startswith("eval:")} | {"serve", "report"}
    assert {"generate", "distill:sft", "distill:rsft"} <= set(result["stages"]) - ran(result)
    assert len((copied_run / "eval" / "debate" / "traces.jsonl").read_text().splitlines()) == 2


def test_an_added_ood_task_runs_only_its_own_evaluations(copied_run, tiny_model_dir):
    result = run_pipeline(make_config(copied_run, tiny_model_dir, ood_task="arithmetic",
                                      ood_task_options={"n_operands": 3, "max_value": 999}))
    assert ran(result) == {"eval:base@ood", "eval:student-sft@ood", "report"}
    ood = json.loads((copied_run / "report" / "summary.json").read_text())["ood"]
    assert set(ood) == {"base", "student-sft"} and all(m["n"] == 4 for m in ood.values())


def test_a_crash_inside_one_system_resumes_where_it_stopped(copied_run, tiny_model_dir, monkeypatch):
    run_chunk = generate_stage.run_chunk
    calls: list[tuple[str, int]] = []
    crashed: list[bool] = []

    def crash_once_in_second_chunk(config, task, system, engine, chunk):
        calls.append((system.name, len(chunk)))
        if len(calls) == 2 and not crashed:
            crashed.append(True)
            raise RuntimeError("simulated crash")
        return run_chunk(config, task, system, engine, chunk)

    # A new k re-runs self-consistency only: 4 items in chunks of 2, killed in the second chunk.
    config = make_config(copied_run, tiny_model_dir, sc_k=3)
    monkeypatch.setattr(generate_stage, "run_chunk", crash_once_in_second_chunk)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_pipeline(config)
    sc = copied_run / "eval" / "self_consistency"
    assert len((sc / "traces.jsonl").read_text().splitlines()) == 2
    assert not json.loads((sc / "stage.json").read_text())["complete"]

    calls.clear()
    result = run_pipeline(config)
    assert calls == [("self_consistency", 2)]  # only the two questions the crash left undone
    assert ran(result) == {"eval:self_consistency", "report"}
    stage = json.loads((sc / "stage.json").read_text())
    assert stage["complete"] and stage["result"]["questions"] == 4
    assert json.loads((sc / "wall.json").read_text())["wall_time_s"] == stage["result"]["wall_time_s"]
    assert result["decision"]["outcome"] in OUTCOMES


def test_run_stage_skips_resumes_and_clears(tmp_path):
    out, calls = tmp_path / "stage", []

    def work(tag: str) -> dict:
        calls.append(tag)
        (out / f"{tag}.txt").write_text(tag)
        return {"tag": tag}

    assert not run_stage("s", "fp1", out, lambda: work("a")).cached
    record = run_stage("s", "fp1", out, lambda: work("b"))
    assert record.cached and record.result == {"tag": "a"} and calls == ["a"]
    run_stage("s", "fp2", out, lambda: work("c"))  # changed inputs: the old output is cleared first
    assert sorted(p.name for p in out.iterdir()) == ["c.txt", "stage.json"]

    def crash() -> dict:
        (out / "partial.txt").write_text("half")
        raise RuntimeError("crash")

    with pytest.raises(RuntimeError):
        run_stage("s", "fp3", out, crash)
    run_stage("s", "fp3", out, lambda: work("d"))  # same inputs, incomplete: resumes over what is there
    assert (out / "partial.txt").exists() and not (out / "c.txt").exists()

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "mine.txt").write_text("keep")
    with pytest.raises(StageError, match="no stage recorded"):
        run_stage("s", "fp", foreign, lambda: work("e"))
    assert (foreign / "mine.txt").exists()


@pytest.mark.parametrize("settings, message", [
    ({"evaluate": {"perturbations": ["shuffle"]}}, "unknown perturbations"),
    ({"evaluate": {"base": False}}, "set sc_k or keep base"),
    ({"strategies": ["sft"], "gate_student": "rsft"}, "not among strategies"),
    ({"training": {"sft": {"model": "x"}}, "strategies": ["sft"]}, "the pipeline sets those"),
    ({"training": {"sft": {"max_stepz": 1}}, "strategies": ["sft"]}, "max_stepz"),
])
def test_bad_settings_fail_before_anything_runs(settings, message):
    with pytest.raises(ValidationError, match=message):
        PipelineConfig(**settings)


def test_yaml_examples_load():
    root = Path(__file__).resolve().parents[1] / "examples"
    for name in ("demo.yaml", "gpu-hub-model.yaml"):
        PipelineConfig.from_yaml(root / name)


def test_teacher_and_student_of_different_models_and_engine_settings(tmp_path, tiny_model_dir):
    """The paper's setting: a teacher team of one model distilled into another (its own config and
    vocabulary); training samples are text, so the student's tokenizer renders them."""
    from transformers import AutoConfig, AutoTokenizer

    from tiny_model import build_tiny_model

    student_dir = build_tiny_model(tmp_path / "student", vocab_size=320, seed=1, hidden_size=32, num_hidden_layers=1)
    assert len(AutoTokenizer.from_pretrained(student_dir)) != len(AutoTokenizer.from_pretrained(tiny_model_dir))
    config = make_config(tmp_path / "run", tiny_model_dir).model_copy(update={
        "student": str(student_dir), "student_engine": "hf",
        "student_engine_options": {"device": "cpu", "batch_size": 3}, "strategies": ["sft"]})
    assert config.engine_for("teacher") == ("hf", {"device": "cpu", "batch_size": 16})
    assert config.engine_for("student") == ("hf", {"device": "cpu", "batch_size": 3})
    result = run_pipeline(config)
    out = tmp_path / "run"
    manifest = json.loads((out / "students" / "sft" / "manifest.json").read_text())
    assert manifest["base_model"] == str(student_dir)
    assert AutoConfig.from_pretrained(out / "students" / "sft").hidden_size == 32
    models = {name: json.loads((out / "eval" / name / "traces.jsonl").read_text().splitlines()[0])["model_id"]
              for name in ("base", "debate", "student-sft")}
    assert models["debate"] == str(tiny_model_dir) and models["base"] == str(student_dir)
    assert "sft" in result["students"]
