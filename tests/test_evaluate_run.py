"""The one evaluation path (pipeline.evaluate_job) on the tiny random model: every item answered once,
in order, in chunks, with its wall time measured; unchanged jobs are reused, changed ones re-run."""

from __future__ import annotations

import json

import agentark.pipeline.generation as generate_stage
from agentark.engines.hf import HFEngine
from agentark.pipeline import EvalJob, EvaluateConfig, GenerateConfig, evaluate_job, evaluate_models


class CountingEngine:
    def __init__(self, inner):
        self.inner, self.model_id, self.calls = inner, inner.model_id, []

    def generate(self, conversations, sampling):
        self.calls.append(len(conversations))
        return self.inner.generate(conversations, sampling)


def test_evaluate_job_runs_in_chunks_and_measures_the_run(tiny_model_dir, tmp_path, monkeypatch):
    engine = CountingEngine(HFEngine.from_pretrained(str(tiny_model_dir), batch_size=16))
    monkeypatch.setattr(generate_stage, "get_engine", lambda *a, **k: engine)
    run = GenerateConfig(model=str(tiny_model_dir), engine="hf", split="held-out", n=5, system="debate", agents=2,
                         rounds=2, early_stop=False, max_new_tokens=4, chunk_size=2, out=str(tmp_path / "debate"))
    done = evaluate_job(EvalJob("debate", run))
    traces = done.traces()
    assert [t.item_id for t in traces] == [i.id for i in generate_stage.get_task("arithmetic").items("held-out", 5)]
    assert engine.calls == [4, 4, 4, 4, 2, 2]  # chunks of 2, 2, 1 questions x 2 agents, 2 rounds each
    m = done.result().metrics
    assert done.wall_time_s > 0 and m.wall_time_s == done.wall_time_s and m.n == 5 and not done.cached
    assert m.calls_per_query == 4 and m.generated_tokens_per_query > 0 and m.rounds is not None
    # Per-query latency (sum of its two rounds) can never exceed the whole measured run.
    assert 0 < m.latency_p99_s <= done.wall_time_s
    assert json.loads((tmp_path / "debate" / "wall.json").read_text())["wall_time_s"] == done.wall_time_s
    # Same job again: reused, no engine call; a different batch size changes the timing, so it re-runs.
    again = evaluate_job(EvalJob("debate", run))
    assert again.cached and engine.calls == [4, 4, 4, 4, 2, 2] and again.wall_time_s == done.wall_time_s
    assert not evaluate_job(EvalJob("debate", run.model_copy(update={"batch_size": 8}))).cached


def test_evaluate_command_config_is_greedy_and_lays_out_like_the_pilot(tiny_model_dir, tmp_path):
    config = EvaluateConfig(models=[str(tiny_model_dir)], engine="hf", n=3, max_new_tokens=4, out=str(tmp_path))
    assert config.sampling.temperature == 0.0  # single-model benchmarks decode greedily
    (result,) = evaluate_models(config)
    run_dir = tmp_path / tiny_model_dir.name
    assert {p.name for p in run_dir.iterdir()} >= {"traces.jsonl", "stage.json", "wall.json"}
    assert result.metrics.n == 3 and result.wall_time_s > 0
