"""On-policy distillation: teacher inputs, vocabulary check, training on tiny models, resume after a kill."""

from __future__ import annotations

import json

import pytest

from agentark.distill.checkpoints import last_checkpoint
from agentark.distill.opd import OPDConfig, check_vocabularies, opd_rows, train_opd
from agentark.distill.training import TrainHooks
from agentark.models.loading import pick_dtype
from agentark.traces.store import TraceStore

from tiny_model import build_tiny_model
from trace_factory import GOLD, make_trace

TRACES = [make_trace(f"q{i}", [[GOLD, "5", GOLD], [GOLD, GOLD, "5"]]) for i in range(4)]


def test_team_teacher_reads_the_debate_and_the_student_does_not():
    rows, skipped = opd_rows(TRACES, "team")
    assert skipped == 0 and len(rows) == 4
    row = rows[0]
    assert row["prompt"] == [{"role": "user", "content": "What is 3+4?"}]
    teacher = row["teacher_prompt"][-1]["content"]
    assert teacher.startswith("What is 3+4?") and "The answer is 7." in teacher and "The answer is 5." in teacher
    assert "2 of 3 agents" in teacher and "1 of 3 agents" in teacher
    assert teacher.index("The answer is 7.") < teacher.index("The answer is 5.")  # the majority first
    assert "agents" not in row["prompt"][-1]["content"]
    model_rows, _ = opd_rows(TRACES, "model")
    assert all(r["teacher_prompt"] == r["prompt"] for r in model_rows)


def test_a_question_without_team_answers_is_skipped_and_counted():
    empty = make_trace("empty", [[GOLD, GOLD]])
    for turn in empty.turns:
        turn.text = " "
    rows, skipped = opd_rows([*TRACES[:2], empty], "team")
    assert [r["item_id"] for r in rows] == ["q0", "q1"] and skipped == 1


def test_different_vocabularies_are_one_clear_error():
    with pytest.raises(ValueError, match=r"student s/m has 320 tokens, teacher t/m has 384"):
        check_vocabularies("s/m", "t/m", 320, 384)


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("opd")
    student = build_tiny_model(root / "student", seed=1, hidden_size=32, num_hidden_layers=1)  # same vocabulary
    TraceStore(root / "traces").append(TRACES)
    return root, student


def config(root, student, teacher, **kw) -> OPDConfig:
    base = dict(traces=str(root / "traces"), model=str(student), teacher=str(teacher), max_completion_length=8,
                per_device_train_batch_size=2, learning_rate=5e-3, use_lora=False, logging_steps=1)
    return OPDConfig(**{**base, **kw})


def test_loss_falls_and_the_teacher_sees_the_team(setup, tiny_model_dir, monkeypatch):
    import trl

    root, student = setup
    seen: list[tuple[str, str]] = []
    real = trl.DistillationTrainer._get_last_hidden_state

    def spy(self, model, input_ids, attention_mask, logits_to_keep, **kw):
        who = "teacher" if model is self.accelerator.unwrap_model(self.teacher_model) else "student"
        seen.append((who, self.processing_class.decode(input_ids[0], skip_special_tokens=True)))
        return real(self, model, input_ids, attention_mask, logits_to_keep, **kw)

    monkeypatch.setattr(trl.DistillationTrainer, "_get_last_hidden_state", spy)
    out = train_opd(config(root, student, tiny_model_dir, out=str(root / "team"), max_steps=12, save_steps=100))
    manifest = json.loads((out / "manifest.json").read_text())
    losses = [p["loss"] for p in manifest["train"]["loss_curve"]]
    assert len(losses) == 12 and sum(losses[-3:]) < sum(losses[:3])
    assert manifest["resources"]["peak_rss_gib"] > 0 and manifest["train"]["metrics"]["train_runtime"] > 0
    assert manifest["resources"]["steps_run"] == 12
    assert manifest["teacher_dtype"] == str(pick_dtype("auto", "cpu")).removeprefix("torch.")
    assert not (out / "checkpoints").exists()
    teacher_inputs = [text for who, text in seen if who == "teacher"]
    student_inputs = [text for who, text in seen if who == "student"]
    assert teacher_inputs and all("agents reached this answer" in t for t in teacher_inputs)
    assert student_inputs and not any("agents reached" in t for t in student_inputs)


def test_mismatched_teacher_vocabulary_fails_before_training(setup, tmp_path):
    root, student = setup
    other = build_tiny_model(tmp_path / "other", vocab_size=320)
    with pytest.raises(ValueError, match="opd needs one vocabulary"):
        train_opd(config(root, student, other, out=str(tmp_path / "x"), max_steps=1))


def test_a_killed_run_resumes_from_its_checkpoint(setup, tiny_model_dir, tmp_path):
    root, student = setup

    class Killed(Exception):
        pass

    def kill_at_step_3(step: int, total: int) -> None:
        if step == 3:
            raise Killed

    cfg = config(root, student, tiny_model_dir, out=str(tmp_path / "opd"), max_steps=4, save_steps=2)
    steps: list[int] = []
    with pytest.raises(Killed):
        train_opd(cfg, TrainHooks(progress=kill_at_step_3))
    assert last_checkpoint(tmp_path / "opd").endswith("checkpoint-2")
    assert not (tmp_path / "opd" / "manifest.json").exists()
    train_opd(cfg, TrainHooks(progress=lambda step, total: steps.append(step)))
    manifest = json.loads((tmp_path / "opd" / "manifest.json").read_text())
    assert manifest["train"]["global_step"] == 4 and manifest["train"]["resumed_from"].endswith("checkpoint-2")
    assert steps == [3, 4] and manifest["resources"]["steps_run"] == 2  # the progress bar follows the resumed run
