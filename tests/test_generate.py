"""The generate stage: traces on disk, resume after kill -9, config guard, CLI errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agentark.config import SamplingConfig
from agentark.pipeline import GenerateConfig, RunConfigMismatch, generate
from agentark.traces import TraceStore, read_traces
from agentark.traces.store import TraceFileError

from server_utils import OverlapEngine


def _cli(*args: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "agentark", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kw)


def _ids(path: Path) -> list[str]:
    return [t.item_id for t in read_traces(path)]


def test_generate_writes_one_trace_per_question(tiny_model_dir, tmp_path):
    cfg = GenerateConfig(
        model=str(tiny_model_dir),
        engine="hf",
        n=5,
        agents=2,
        rounds=2,
        max_new_tokens=8,
        chunk_size=2,
        out=str(tmp_path / "run"),
    )
    record = generate(cfg)
    ids = _ids(tmp_path / "run")
    assert len(ids) == 5 == len(set(ids))
    assert json.loads((tmp_path / "run" / "stage.json").read_text())["fingerprint"] == cfg.config_hash()
    trace = next(iter(read_traces(tmp_path / "run")))
    assert trace.model_id == str(tiny_model_dir) and trace.system == "debate" and trace.n_agents == 2
    assert record.result["questions"] == 5 and not record.cached
    # Same command again: nothing new; larger n extends the set without duplicates.
    assert generate(cfg).cached
    generate(cfg.model_copy(update={"n": 7}))
    ids = _ids(tmp_path / "run")
    assert len(ids) == 7 == len(set(ids))


def test_generate_refuses_other_settings_in_same_dir(tiny_model_dir, tmp_path):
    cfg = GenerateConfig(
        model=str(tiny_model_dir), engine="hf", system="single", n=1, max_new_tokens=4, out=str(tmp_path / "run")
    )
    generate(cfg)
    with pytest.raises(RunConfigMismatch, match="different settings"):
        generate(cfg.model_copy(update={"sampling": SamplingConfig(temperature=0.1)}))


def test_kill_9_then_resume_has_exactly_one_record_per_question(tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    args = ["generate", "--model", str(tiny_model_dir), "--engine", "hf", "--n", "8", "--agents", "2", "--rounds", "2",
            "--max-new-tokens", "24", "--chunk-size", "1", "--out", str(out)]
    proc = _cli(*args, start_new_session=True)
    traces = out / "traces.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline:
        if traces.exists() and traces.read_text().count("\n") >= 2:
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    n_before = len(_ids(traces))
    assert 2 <= n_before < 8, "the run should have been killed part-way"
    # Simulate the worst case too: a torn half-written record at the end of the file.
    with open(traces, "a") as f:
        f.write('{"schema_version": 1, "task": "arith')
    done = _cli(*args)
    output, _ = done.communicate(timeout=300)
    assert done.returncode == 0, output
    ids = _ids(traces)
    assert len(ids) == 8 == len(set(ids))
    assert traces.read_text().endswith("\n")


def test_corrupt_record_in_the_middle_names_file_and_line(tmp_path):
    path = tmp_path / "traces.jsonl"
    path.write_text('{"not": "a trace"}\n{"x": 1}\n')
    with pytest.raises(TraceFileError, match=r"traces.jsonl:1"):
        TraceStore(tmp_path)


def test_cli_unknown_names_list_valid_ones(tmp_path):
    for flag, value, expected in [
        ("--task", "nope", "arithmetic"),
        ("--system", "nope", "debate"),
        ("--engine", "nope", "hf"),
    ]:
        proc = _cli("generate", flag, value, "--n", "1", "--out", str(tmp_path / value / flag.strip("-")))
        output, _ = proc.communicate(timeout=120)
        assert proc.returncode == 2, output
        assert expected in output and "error" in output


LEGACY_CONFIG = {  # runs/e1's debate config.json as `agentark generate` wrote it before stage.json (flat sampling)
    "agents": 3,
    "backend": "local",
    "batch_size": 48,
    "chunk_size": 16,
    "early_stop": True,
    "engine": "hf",
    "engine_options": {},
    "max_new_tokens": 768,
    "model": "qwen2.5-coder-1.5b-instruct",
    "model_revision": "",
    "n": 300,
    "out": "runs/e1/train/debate",
    "ray_address": None,
    "rounds": 2,
    "seed": 0,
    "split": "train",
    "summarizer": False,
    "system": "debate",
    "task": "gsm8k",
    "task_options": {"path": "../shared/data/gsm8k/train.jsonl"},
    "temperature": 0.7,
    "top_p": 1.0,
    "worker_cpus": 1.0,
    "worker_gpus": 0.0,
    "workers": 2,
}


def test_a_run_made_before_the_stage_record_keeps_its_hash_and_resumes(tmp_path):
    """A long debate started by an earlier version must resume: same settings, same hash, and its
    config.json is read as the stage record."""
    from agentark.pipeline import check_stage

    cfg = GenerateConfig(**LEGACY_CONFIG)
    assert cfg.config_hash() == "2f47db8d6e9638ec"  # the hash that earlier version stored
    # Output-neutral engine settings stay out of the hash; ones that change the text go in.
    assert GenerateConfig(**{**LEGACY_CONFIG, "engine_options": {"batch_size": 8}}).config_hash() == "2f47db8d6e9638ec"
    assert (
        GenerateConfig(**{**LEGACY_CONFIG, "engine_options": {"dtype": "float32"}}).config_hash() != "2f47db8d6e9638ec"
    )
    held_out = {**LEGACY_CONFIG["task_options"], "held_out": 500}  # a default written out: same items, same hash
    assert GenerateConfig(**{**LEGACY_CONFIG, "task_options": held_out}).config_hash() == "2f47db8d6e9638ec"
    assert GenerateConfig(**{**LEGACY_CONFIG, "skip": 0}).config_hash() == "2f47db8d6e9638ec"
    assert GenerateConfig(**{**LEGACY_CONFIG, "skip": 200}).config_hash() != "2f47db8d6e9638ec"
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"config_hash": "2f47db8d6e9638ec", "config": LEGACY_CONFIG}))
    assert check_stage(run, cfg.config_hash(), "refuse") is not None
    with pytest.raises(RunConfigMismatch):
        check_stage(run, GenerateConfig(**{**LEGACY_CONFIG, "seed": 1}).config_hash(), "refuse")


def test_skip_is_a_dev_slice_past_the_first_questions(tiny_model_dir, tmp_path):
    """`--split train --skip 3` runs the questions after the 3 a team debated, none of them."""
    from agentark.tasks import get_task

    cfg = GenerateConfig(model=str(tiny_model_dir), engine="hf", system="single", n=2, skip=3, max_new_tokens=4,
                         out=str(tmp_path / "dev"))
    generate(cfg)
    items = get_task("arithmetic").items("train", 5)
    assert _ids(tmp_path / "dev") == [item.id for item in items[3:]]


def test_bad_settings_leave_no_run_directory(tmp_path):
    out = tmp_path / "run"
    for args in (["--engine", "nope"], ["--model", str(tmp_path / "no-such-model"), "--engine", "hf"],
                 ["--n", "0"], ["--temperature", "-1"]):
        proc = (
            _cli("generate", *args, "--n", "1", "--out", str(out))
            if "--n" not in args
            else _cli("generate", *args, "--out", str(out))
        )
        output, _ = proc.communicate(timeout=120)
        assert proc.returncode == 2, output
        assert "Traceback" not in output and "For further information" not in output, output
        assert not out.exists(), args
    proc = _cli("generate", "--n", "0", "--out", str(out))
    assert "--n must be >= 1" in proc.communicate(timeout=120)[0]


@pytest.mark.parametrize("thread_safe", [True, False])
def test_chunks_overlap_on_a_thread_safe_engine_and_traces_keep_their_order(tmp_path, thread_safe):
    """Two chunks in flight on an engine that serves concurrent calls, one otherwise; the stored traces are
    the same, in the same order, as one chunk at a time."""
    def run(in_flight: int, out: str) -> tuple[list, int]:
        engine = OverlapEngine(thread_safe, delay_s=0.05)
        cfg = GenerateConfig(model="counting", engine="openai", n=7, agents=2, rounds=2, chunk_size=2,
                             chunks_in_flight=in_flight, out=str(tmp_path / out))
        generate(cfg, engine=engine)
        return [(t.item_id, [turn.text for turn in t.turns]) for t in read_traces(tmp_path / out)], engine.most

    one, overlap_one = run(1, "one")
    two, overlap_two = run(2, "two")
    assert two == one and len(one) == 7
    assert overlap_one == 1 and overlap_two == (2 if thread_safe else 1)
