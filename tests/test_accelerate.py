"""The SFT stage under ``accelerate launch`` (2 CPU processes, gloo): same first step as one process at
the same effective batch, one writer, and a run killed after a checkpoint resumes and finishes."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agentark.traces import TraceStore

from test_distill_data import GOLD, make_trace

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def traces_dir(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("run")
    TraceStore(run).append([make_trace(f"q{i}", [[GOLD, "7", GOLD], [GOLD, GOLD, GOLD]]) for i in range(16)])
    return run


def distill_args(traces: Path, model: Path, out: Path, *extra: str) -> list[str]:
    return [
        "distill",
        "--strategy",
        "rsft",
        "--traces",
        str(traces),
        "--model",
        str(model),
        "--out",
        str(out),
        "--learning-rate",
        "1e-3",
        "--option",
        "per_device_train_batch_size=2",
        "--option",
        "effective_batch_size=4",
        "--option",
        "logging_steps=1",
        *extra,
    ]


def run(command: list[str], **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, **kw)


def manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


def test_two_processes_match_one_at_the_same_effective_batch(traces_dir, tiny_model_dir, tmp_path):
    one = run(
        [
            sys.executable,
            "-m",
            "agentark",
            *distill_args(traces_dir, tiny_model_dir, tmp_path / "one", "--max-steps", "2"),
        ]
    )
    assert one.returncode == 0, one.stderr[-3000:]
    # The shipped DDP config; without a GPU its processes train on CPU over gloo.
    two = run(["accelerate", "launch", "--config_file", str(REPO / "examples" / "accelerate" / "ddp.yaml"),
               "--num_processes", "2", "-m", "agentark",
               *distill_args(traces_dir, tiny_model_dir, tmp_path / "two", "--max-steps", "2")])
    assert two.returncode == 0, two.stderr[-3000:]
    m1, m2 = manifest(tmp_path / "one"), manifest(tmp_path / "two")
    assert (m1["train"]["processes"], m2["train"]["processes"]) == (1, 2)
    assert m1["train"]["effective_batch_size"] == m2["train"]["effective_batch_size"] == 4
    assert m1["fingerprint"] == m2["fingerprint"]  # the same training, however many processes run it
    # Step 1 sees the same 4 samples from the same initial weights: one process as 2 accumulated
    # micro-batches, two processes as one each, averaged over all completion tokens either way.
    # Only float summation order differs, hence the tight tolerance.
    loss1, loss2 = m1["train"]["loss_curve"][0]["loss"], m2["train"]["loss_curve"][0]["loss"]
    assert loss2 == pytest.approx(loss1, rel=1e-3)
    assert not (tmp_path / "two" / "checkpoints").exists()


BARRIER_SCRIPT = """
import os, sys, time
from pathlib import Path
from agentark.pipeline.cache import _main_process_first
marker = Path(sys.argv[1])
with _main_process_first():
    if os.environ["RANK"] == "0":
        time.sleep(2)  # the main process is slow: the other one must still wait for it
        marker.write_text("main was here")
    elif not marker.exists():
        sys.exit("rank 1 entered before the main process had finished")
"""


def test_the_main_process_goes_first_on_cpu(tmp_path):
    # Without a GPU, accelerate's default state is "not distributed" and its barrier a no-op: rank 1
    # then saw the main process's half-made stage dir as foreign files (a CI failure of the test above).
    script = tmp_path / "barrier.py"
    script.write_text(BARRIER_SCRIPT)
    done = run(["accelerate", "launch", "--config_file", str(REPO / "examples" / "accelerate" / "ddp.yaml"),
                "--num_processes", "2", str(script), str(tmp_path / "marker")])
    assert done.returncode == 0, done.stderr[-3000:]


def test_killed_after_a_checkpoint_resumes_and_finishes(traces_dir, tiny_model_dir, tmp_path):
    out = tmp_path / "student"
    args = [sys.executable, "-m", "agentark", *distill_args(traces_dir, tiny_model_dir, out, "--max-steps", "6",
                                                            "--option", "save_steps=2")]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and not (out / "checkpoints" / "checkpoint-2" / "trainer_state.json").exists():
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (out / "checkpoints" / "checkpoint-2").is_dir() and not (out / "manifest.json").exists()
    resumed = run(args)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    m = manifest(out)
    assert m["train"]["global_step"] == 6
    # The resumed run trained steps 3-6 only: its metrics count the steps it ran (not from scratch).
    assert re.search(r"checkpoint-[24]$", m["train"]["resumed_from"] or ""), m["train"]
    assert [p["step"] for p in m["train"]["loss_curve"]] == [1, 2, 3, 4, 5, 6]  # history restored + continued
