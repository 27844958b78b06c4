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

from agentark.config import GenerateConfig
from agentark.mas.generate import RunConfigMismatch, generate
from agentark.traces import TraceStore, read_traces
from agentark.traces.store import TraceFileError


def _cli(*args: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "agentark", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kw)


def _ids(path: Path) -> list[str]:
    return [t.item_id for t in read_traces(path)]


def test_generate_writes_one_trace_per_question(tiny_model_dir, tmp_path):
    cfg = GenerateConfig(model=str(tiny_model_dir), engine="hf", n=5, agents=2, rounds=2, max_new_tokens=8, chunk_size=2, out=str(tmp_path / "run"))
    store = generate(cfg)
    ids = _ids(store.path)
    assert len(ids) == 5 == len(set(ids))
    assert json.loads((tmp_path / "run" / "config.json").read_text())["config_hash"] == cfg.config_hash()
    trace = next(iter(read_traces(tmp_path / "run")))
    assert trace.model_id == str(tiny_model_dir) and trace.system == "debate" and trace.n_agents == 2
    # Same command again: nothing new; larger n extends the set without duplicates.
    generate(cfg)
    generate(cfg.model_copy(update={"n": 7}))
    ids = _ids(store.path)
    assert len(ids) == 7 == len(set(ids))


def test_generate_refuses_other_settings_in_same_dir(tiny_model_dir, tmp_path):
    cfg = GenerateConfig(model=str(tiny_model_dir), engine="hf", system="single", n=1, max_new_tokens=4, out=str(tmp_path / "run"))
    generate(cfg)
    with pytest.raises(RunConfigMismatch, match="different settings"):
        generate(cfg.model_copy(update={"temperature": 0.1}))


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
    for flag, value, expected in [("--task", "nope", "arithmetic"), ("--system", "nope", "debate"), ("--engine", "nope", "hf")]:
        proc = _cli("generate", flag, value, "--n", "1", "--out", str(tmp_path / value / flag.strip("-")))
        output, _ = proc.communicate(timeout=120)
        assert proc.returncode == 2, output
        assert expected in output and "error" in output
