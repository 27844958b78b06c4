"""The generate stage on a local Ray cluster (2 CPU workers, tiny random model): same traces as one
process, and a worker killed mid-run loses and duplicates nothing."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from agentark.pipeline import GenerateConfig, generate
from agentark.traces import read_traces

ray = pytest.importorskip("ray")

# Not outputs: wall time differs between any two runs, and the prompt tokens an engine serves from its cache
# depend on what that engine served before (one engine for every chunk here, one per Ray worker there).
NOT_OUTPUT = {"latency_s", "cached_prompt_tokens"}


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def records(path) -> dict[str, dict]:
    out = {}
    for trace in read_traces(path):
        record = trace.model_dump()
        record["turns"] = [{k: v for k, v in turn.items() if k not in NOT_OUTPUT} for turn in record["turns"]]
        out[trace.item_id] = record
    return out


def config(model, out, **overrides) -> GenerateConfig:
    settings = dict(model=str(model), engine="hf", n=6, agents=2, rounds=2, max_new_tokens=8, temperature=0.0,
                    chunk_size=2, out=str(out))
    return GenerateConfig(**{**settings, **overrides})


def test_ray_traces_equal_single_process_traces(cluster, tiny_model_dir, tmp_path):
    generate(config(tiny_model_dir, tmp_path / "local"))
    generate(config(tiny_model_dir, tmp_path / "ray", backend="ray", workers=2))
    local, distributed = records(tmp_path / "local"), records(tmp_path / "ray")
    assert len(local) == 6 and local == distributed
    # Sampled runs too: a chunk's seed is its ids', whichever worker runs it.
    generate(config(tiny_model_dir, tmp_path / "local-t", temperature=0.9))
    generate(config(tiny_model_dir, tmp_path / "ray-t", temperature=0.9, backend="ray", workers=2))
    assert records(tmp_path / "local-t") == records(tmp_path / "ray-t")


@pytest.mark.slow
def test_killed_worker_loses_and_duplicates_nothing(cluster, tiny_model_dir, tmp_path):
    import psutil

    cfg = config(tiny_model_dir, tmp_path / "run", n=10, chunk_size=1, max_new_tokens=32, backend="ray", workers=2)
    traces = tmp_path / "run" / "traces.jsonl"
    errors: list[BaseException] = []
    run = threading.Thread(target=lambda: _catch(errors, generate, cfg))
    run.start()
    killed_at = None
    deadline = time.time() + 240
    while time.time() < deadline and killed_at is None:
        done = traces.read_text().count("\n") if traces.exists() else 0
        # Ray titles an actor's process "ray::GenerateWorker..." (the state API needs the dashboard).
        alive = [
            p for p in psutil.process_iter(["cmdline"]) if "ray::GenerateWorker" in " ".join(p.info["cmdline"] or [])
        ]
        if done >= 1 and alive:
            os.kill(alive[0].pid, signal.SIGKILL)
            killed_at = done
        time.sleep(0.05)
    run.join(300)
    assert killed_at is not None and killed_at < 10, "a worker should have been killed part-way"
    # Ray restarts the worker and re-runs its chunk; if the run failed instead, re-running completes it.
    if errors:
        generate(cfg)
    ids = [t.item_id for t in read_traces(traces)]
    assert len(ids) == 10 == len(set(ids))
    generate(cfg)  # nothing left to do: still exactly one record per question
    assert len([t.item_id for t in read_traces(traces)]) == 10


def _catch(errors, fn, *args):
    try:
        fn(*args)
    except BaseException as exc:  # reported by the test above
        errors.append(exc)
