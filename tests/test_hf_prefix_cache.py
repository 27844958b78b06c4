"""The hf engine's prompt cache: a later prompt that starts with a sequence an earlier call generated
prefills only the rest, and no greedy text changes.

Two versions of the tiny random model: as built (its greedy answers are runs of newlines, which
re-tokenize to the same ids, so a round-1 prompt reuses the agent's whole round-0 conversation) and
with weights redrawn at a larger scale (diverse answers of random bytes, which re-tokenize
differently after a few tokens, so rows reuse prefixes of different lengths in one batch).
"""

from __future__ import annotations

import pytest

from agentark.engines.base import SamplingParams
from agentark.engines.hf import HFEngine, PrefixStore
from agentark.mas import RunContext, get_system
from agentark.tasks import get_task

GREEDY = SamplingParams(temperature=0.0, max_new_tokens=32)


def make_engine(model_dir, prompt_cache: bool, redraw: float | None = None, batch_size: int = 64) -> HFEngine:
    import torch

    engine = HFEngine.from_pretrained(str(model_dir), dtype="float32", batch_size=batch_size,
                                      prompt_cache=prompt_cache)
    if redraw is not None:  # the same weights in every engine made with the same scale
        generator = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for p in engine.model.parameters():
                if p.dim() == 2:
                    p.copy_(torch.randn(p.shape, generator=generator) * redraw)
    return engine


def debate(engine: HFEngine, n_items: int = 4):
    task = get_task("arithmetic")
    system = get_system("debate", agents=3, rounds=2, early_stop=False)
    return system.run(RunContext(task, engine, GREEDY), task.items("train", n_items))


@pytest.mark.parametrize("redraw", [None, 0.5], ids=["as-built", "redrawn"])
def test_debate_texts_are_identical_with_and_without_reuse(tiny_model_dir, redraw):
    off = debate(make_engine(tiny_model_dir, prompt_cache=False, redraw=redraw))
    engine = make_engine(tiny_model_dir, prompt_cache=True, redraw=redraw)
    on = debate(engine)
    assert len(engine.prefixes) > 0
    for a, b in zip(off, on, strict=True):
        assert [(t.text, t.completion_tokens, t.prompt_tokens) for t in a.turns] == [
            (t.text, t.completion_tokens, t.prompt_tokens) for t in b.turns]
    if redraw is not None:
        assert len({t.text for trace in on for t in trace.round_turns(0)}) == 4  # one answer per question
    round1 = [t for trace in on for t in trace.round_turns(1)]
    for trace in on:
        for turn in trace.round_turns(1):
            # At least the agent's whole round-0 prompt (the question) came from the cache.
            assert turn.cached_prompt_tokens >= trace.round_turns(0)[turn.agent].prompt_tokens > 0
    share = sum(t.cached_prompt_tokens for t in round1) / sum(t.prompt_tokens for t in round1)
    assert share >= 0.4
    # Without reuse only twins (identical prompts in one call) count as cached.
    for trace in off:
        assert sorted(t.cached_prompt_tokens == 0 for t in trace.round_turns(1)) == [False, False, True]


def test_as_built_model_reuses_the_whole_round0_conversation(tiny_model_dir):
    (trace,) = debate(make_engine(tiny_model_dir, prompt_cache=True), n_items=1)
    first = trace.round_turns(0)[0]
    # The first row of round 1 reuses its round-0 prompt and all its answer tokens but the last (never fed back).
    reused = min(t.cached_prompt_tokens for t in trace.round_turns(1))
    assert reused == first.prompt_tokens + first.completion_tokens - 1


def test_a_batch_mixing_reused_fresh_and_twin_prompts_matches_full_prefill(tiny_model_dir):
    """Rows with different reused lengths (and none) share one left-padded batch: same texts as no reuse."""
    first = [[{"role": "user", "content": q}] for q in ("What is 3 + 4 * 2?", "Natalia sold 48 clips. Half in May?")]
    on, off = (make_engine(tiny_model_dir, prompt_cache=pc, redraw=0.5, batch_size=8) for pc in (True, False))
    answers = [c.text for c in on.generate(first, GREEDY)]
    assert answers == [c.text for c in off.generate(first, GREEDY)]
    follow = [conv + [{"role": "assistant", "content": a}, {"role": "user", "content": "Check it again."}]
              for conv, a in zip(first, answers, strict=True)]
    batch = [follow[0], [{"role": "user", "content": "7"}], follow[1], follow[0], first[1]]
    got, want = on.generate(batch, GREEDY), off.generate(batch, GREEDY)
    assert [c.text for c in got] == [c.text for c in want]
    cached = [c.cached_prompt_tokens for c in got]
    assert cached[0] >= len(on._encode([first[0]])[0])  # at least the whole first prompt
    assert 0 < cached[1] < 10 < cached[2]  # "7" shares only the template's opening with stored sequences
    assert cached[3] == got[3].prompt_tokens  # a twin of row 0 in the same call
    assert cached[4] == got[4].prompt_tokens - 1  # a repeated prompt: all but the token whose logits are needed
    assert [c.cached_prompt_tokens for c in want] == [0, 0, 0, want[3].prompt_tokens, 0]
    # Token ids straight to the decode loop: a row no stored sequence starts like (0 reused) beside reusing rows.
    ids = [on._encode([follow[0]])[0], [300, 301, 302, 303], on._encode([follow[1]])[0] + [300]]
    got, want = on._generate_chunk(ids, GREEDY), off._generate_chunk(ids, GREEDY)
    assert [c.text for c in got] == [c.text for c in want]
    assert [c.cached_prompt_tokens for c in got] == [len(ids[0]) - 1, 0, len(ids[2]) - 1]


def test_chunked_calls_reuse_across_chunks_and_change_no_text(tiny_model_dir):
    """batch_size 4: a round's 6 prompts go in 2 chunks; the second may reuse what the first stored."""
    off = debate(make_engine(tiny_model_dir, prompt_cache=False, redraw=0.5), n_items=2)
    on = debate(make_engine(tiny_model_dir, prompt_cache=True, redraw=0.5, batch_size=4), n_items=2)
    assert [t.text for trace in on for t in trace.turns] == [t.text for trace in off for t in trace.turns]
    assert all(t.cached_prompt_tokens > 0 for trace in on for t in trace.round_turns(1))


def test_prefix_store_keeps_the_longest_token_prefix_and_drops_the_least_recent():
    import torch

    def kv(n: int):
        t = torch.arange(n, dtype=torch.float32).reshape(1, n, 1)
        return [(t, t.clone())]  # one layer, 2 * n * 4 bytes

    store = PrefixStore(max_bytes=2 * 4 * 10)
    store.put([1, 2, 3, 4], kv(4))
    store.put([1, 2, 9], kv(3))
    n, layers = store.lookup([1, 2, 3, 7, 7])
    assert n == 3 and layers[0][0].shape == (1, 3, 1)
    assert store.lookup([1, 2, 3, 4])[0] == 3  # never the whole prompt: its last token must be computed
    assert store.lookup([5, 1, 2])[0] == 0
    store.put([8, 8, 8, 8], kv(4))  # 11 tokens > 10: the least recently used ([1, 2, 9]) goes
    assert len(store) == 2 and store.bytes == 2 * 4 * 8
    assert store.lookup([1, 2, 9, 9])[0] == 2  # from [1, 2, 3, 4] now
    store.put([0] * 11, kv(11))  # larger than the whole budget: not kept, nothing evicted
    assert len(store) == 2
