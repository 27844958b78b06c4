"""Multi-agent systems on a tiny random model: batching, debate prompts, early stop, voting."""

from __future__ import annotations

import pytest

from agentark.engines.base import Completion, SamplingParams
from agentark.engines.hf import HFEngine
from agentark.mas import RunContext, get_system
from agentark.mas.debate import has_consensus
from agentark.tasks import get_task


class CountingEngine:
    """Wraps a real engine and records every generate call's batch."""

    def __init__(self, inner):
        self.inner = inner
        self.model_id = inner.model_id
        self.calls: list[int] = []

    def generate(self, conversations, sampling):
        self.calls.append(len(conversations))
        return self.inner.generate(conversations, sampling)


class ScriptedEngine:
    """Answers from a fixed script keyed by (agent slot in the batch) — for exact early-stop checks.

    The debate logic under test is deterministic given completions; the script plays the model.
    """

    model_id = "scripted"

    def __init__(self, rounds: list[list[str]]):
        self.rounds = rounds
        self.calls = 0

    def generate(self, conversations, sampling):
        texts = self.rounds[self.calls]
        self.calls += 1
        assert len(texts) == len(conversations)
        return [Completion(t, 10, 5, 0.1) for t in texts]


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    return CountingEngine(HFEngine.from_pretrained(str(tiny_model_dir), batch_size=64))


def test_debate_batches_every_agent_and_question_of_a_round(engine):
    task = get_task("arithmetic")
    items = task.items("train", 4)
    system = get_system("debate", agents=3, rounds=2, early_stop=False)
    engine.calls.clear()
    traces = system.run(RunContext(task, engine, SamplingParams(max_new_tokens=8, seed=0)), items)
    assert engine.calls == [12, 12]  # one call per round, 4 questions x 3 agents
    assert [t.item_id for t in traces] == [i.id for i in items]
    for trace in traces:
        assert len(trace.turns) == 6 and trace.n_rounds == 2
        for turn in trace.round_turns(1):
            # Round 1 shows the agent its own answer and the two peers' answers.
            own = trace.round_turns(0)[turn.agent]
            assert turn.messages[1] == {"role": "assistant", "content": own.text}
            peers = [t for t in trace.round_turns(0) if t.agent != turn.agent]
            assert turn.messages[2]["content"].count("One agent solution") == 2
            for peer in peers:
                assert peer.text.strip()[:50] in turn.messages[2]["content"]
        assert trace.completion_tokens == sum(t.completion_tokens for t in trace.turns) > 0


def test_self_consistency_and_single_share_one_call(engine):
    task = get_task("arithmetic")
    items = task.items("train", 3)
    engine.calls.clear()
    sc = get_system("self_consistency", k=4).run(
        RunContext(task, engine, SamplingParams(max_new_tokens=6, seed=1)), items
    )
    single = get_system("single").run(RunContext(task, engine, SamplingParams(temperature=0, max_new_tokens=6)), items)
    assert engine.calls == [12, 3]
    assert all(len(t.turns) == 4 for t in sc) and all(len(t.turns) == 1 for t in single)
    # The k samples of a question share one prefill: the turns after the first report its prompt as cached
    # (the first may reuse a prefix an earlier test's calls left in the engine's prompt cache).
    assert all(
        [t.cached_prompt_tokens for t in trace.turns[1:]] == [trace.turns[0].prompt_tokens] * 3 for trace in sc
    )


def test_debate_early_stop_and_majority():
    task = get_task("arithmetic")
    items = task.items("train", 2)
    gold0, gold1 = items[0].answer, items[1].answer
    wrong = str(int(gold1) + 1)
    # Round 0: question 0 reaches consensus on the gold answer; question 1 splits 2:1 for a wrong answer.
    script = [
        [f"\\boxed{{{gold0}}}"] * 3 + [f"\\boxed{{{wrong}}}", f"\\boxed{{{wrong}}}", f"\\boxed{{{gold1}}}"],
        # Round 1: only question 1 is still debating (3 prompts, not 6); agent 0 flips to the gold answer.
        [f"\\boxed{{{gold1}}}", f"so it is {wrong}, I keep \\boxed{{{wrong}}}", f"\\boxed{{{gold1}}}"],
    ]
    engine = ScriptedEngine(script)
    traces = get_system("debate", agents=3, rounds=2).run(RunContext(task, engine, SamplingParams()), items)
    assert engine.calls == 2
    t0, t1 = traces
    assert t0.n_rounds == 1 and t0.final_correct and t0.meta["consensus"]
    assert t1.n_rounds == 2 and t1.final_answer == task.normalize(gold1) and t1.final_correct
    assert [t.correct for t in t1.agent_turns(0)] == [False, True]  # a corrective trajectory


def test_debate_without_early_stop_runs_all_rounds():
    task = get_task("arithmetic")
    items = task.items("train", 1)
    engine = ScriptedEngine([["no number here"] * 3, ["still nothing"] * 3])
    (trace,) = get_system("debate", agents=3, rounds=2).run(RunContext(task, engine, SamplingParams()), items)
    assert trace.n_rounds == 2 and trace.final_answer is None and not trace.final_correct
    assert all(t.answer is None and not t.correct for t in trace.turns)  # no answer, no crash
    assert not has_consensus(trace.final_turns())


def test_summarizer_decides_final_answer():
    task = get_task("arithmetic")
    items = task.items("train", 1)
    gold = items[0].answer
    wrong = str(int(gold) + 2)
    engine = ScriptedEngine(
        [[f"\\boxed{{{wrong}}}", f"\\boxed{{{wrong}}}", f"\\boxed{{{gold}}}"], [f"The answer is {gold}."]]
    )
    (trace,) = get_system("debate", agents=3, rounds=1, summarizer=True).run(
        RunContext(task, engine, SamplingParams()), items
    )
    summary = [t for t in trace.turns if t.role == "summarizer"]
    assert len(summary) == 1 and summary[0].agent == 3
    assert trace.final_correct  # the summariser overrode the 2:1 wrong majority


def test_unknown_system_lists_valid_names():
    with pytest.raises(ValueError, match="single, self_consistency, debate"):
        get_system("panel")
    with pytest.raises(ValueError, match="does not take"):
        get_system("single", agents=3)
