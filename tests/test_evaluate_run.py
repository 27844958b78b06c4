"""evaluate_system on the tiny random model: every item answered once, in order, in batches, timed."""

from __future__ import annotations

from agentark.engines.base import SamplingParams
from agentark.engines.hf import HFEngine
from agentark.evaluate.run import EvalResult, evaluate_system
from agentark.mas import RunContext, get_system
from agentark.tasks.arithmetic import ArithmeticTask


class CountingEngine:
    def __init__(self, inner):
        self.inner, self.model_id, self.calls = inner, inner.model_id, []

    def generate(self, conversations, sampling):
        self.calls.append(len(conversations))
        return self.inner.generate(conversations, sampling)


def test_evaluate_system_runs_in_batches_and_times_the_run(tiny_model_dir):
    engine = CountingEngine(HFEngine.from_pretrained(str(tiny_model_dir), batch_size=16))
    task = ArithmeticTask()
    items = task.items("held-out", 5)
    ctx = RunContext(task, engine, SamplingParams(max_new_tokens=4, seed=0))
    traces, wall_time_s = evaluate_system(get_system("debate", agents=2, rounds=2, early_stop=False), ctx, items, batch_size=2)
    assert [t.item_id for t in traces] == [i.id for i in items]
    assert engine.calls == [4, 4, 4, 4, 2, 2]  # batches of 2, 2, 1 questions x 2 agents, 2 rounds each
    result = EvalResult.from_traces("debate", traces, wall_time_s)
    m = result.metrics
    assert wall_time_s > 0 and m.wall_time_s == wall_time_s and m.n == 5
    assert m.calls_per_query == 4 and m.generated_tokens_per_query > 0 and m.rounds is not None
    # Per-query latency (sum of its two rounds) can never exceed the whole run.
    assert 0 < m.latency_p99_s <= wall_time_s
