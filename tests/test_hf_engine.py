"""The hf engine's own decode loop against ``model.generate``: same greedy tokens, whatever the batch.

The loop pads left, shares the prefill of identical prompts, reuses the KV cache of earlier calls'
sequences (tests/test_hf_prefix_cache.py) and drops finished rows from the KV cache; none of that may
change what a prompt generates.
"""

from __future__ import annotations

import pytest

from agentark.engines.base import SamplingParams
from agentark.engines.hf import HFEngine, PrefixStore

CONVERSATIONS = [
    [{"role": "user", "content": "What is 3 + 4 * 2?"}],
    [{"role": "user", "content": "Natalia sold clips to 48 of her friends in April. How many in May?"}],
    [{"role": "user", "content": "What is 3 + 4 * 2?"}],  # a twin of the first: prefilled once
    [{"role": "user", "content": "7"}],
    [{"role": "user", "content": "What is 3 + 4 * 2?"}, {"role": "assistant", "content": "11"},
     {"role": "user", "content": "Can you give an updated response?"}],
]


@pytest.fixture(scope="module")
def engine(tiny_model_dir) -> HFEngine:
    return HFEngine.from_pretrained(str(tiny_model_dir), batch_size=8)


def reference_tokens(engine: HFEngine, conversation, max_new_tokens: int) -> list[int]:
    """Greedy tokens of ``model.generate`` for one unpadded prompt, up to and including EOS."""
    import torch

    (ids,) = engine._encode([conversation])
    with torch.inference_mode():
        out = engine.model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                    max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=engine._eos_ids(),
                                    pad_token_id=engine.tokenizer.pad_token_id)
    return out[0, len(ids):].tolist()


def test_greedy_batch_matches_model_generate_prompt_by_prompt(engine):
    engine.prefixes = PrefixStore()  # an empty prompt cache: only the twin reuses a prefill
    sampling = SamplingParams(temperature=0.0, max_new_tokens=12)
    completions = engine.generate(CONVERSATIONS, sampling)
    for conversation, completion in zip(CONVERSATIONS, completions, strict=True):
        expected = reference_tokens(engine, conversation, 12)
        assert completion.text == engine.tokenizer.decode(expected, skip_special_tokens=True)
        assert completion.completion_tokens == len(expected)
        assert completion.prompt_tokens == len(engine._encode([conversation])[0])
        assert completion.finish_reason == ("length" if len(expected) == 12 and expected[-1] not in engine._eos_ids()
                                            else "stop")
    # The twin's prompt came from the first one's prefill: that is what the engine reports as cached.
    assert [c.cached_prompt_tokens for c in completions] == [0, 0, completions[0].prompt_tokens, 0, 0]


def test_greedy_with_a_warm_prompt_cache_still_matches_model_generate(engine):
    """Second turns of the conversations start with what the first call generated: the engine prefills
    only the rest (rows reusing different lengths, left-padded together), and every text is still
    ``model.generate``'s on the unpadded prompt."""
    sampling = SamplingParams(temperature=0.0, max_new_tokens=12)
    firsts = engine.generate(CONVERSATIONS, sampling)
    seconds = [conv + [{"role": "assistant", "content": c.text}, {"role": "user", "content": "Are you sure?"}]
               for conv, c in zip(CONVERSATIONS, firsts, strict=True)]
    for conversation, completion in zip(seconds, engine.generate(seconds, sampling), strict=True):
        assert completion.text == engine.tokenizer.decode(reference_tokens(engine, conversation, 12),
                                                          skip_special_tokens=True)
        assert completion.cached_prompt_tokens >= len(engine._encode([conversation[:1]])[0])


def test_identical_prompts_share_a_prefill_but_sample_independently(engine):
    sampling = SamplingParams(temperature=1.0, max_new_tokens=8, seed=3)
    twins = [CONVERSATIONS[0]] * 6
    first = [c.text for c in engine.generate(twins, sampling)]
    assert len(set(first)) > 1  # six draws from a random model's near-uniform distribution
    assert [c.text for c in engine.generate(twins, sampling)] == first  # seeded: reproducible


def test_top_p_samples_only_inside_the_nucleus():
    import torch

    from agentark.engines.hf import pick_next_tokens

    # probabilities 0.5, 0.3, 0.15, 0.05: top_p=0.7 keeps the first two tokens only.
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]])).repeat(2000, 1)
    gen = torch.Generator().manual_seed(0)
    picks = pick_next_tokens(logits, SamplingParams(temperature=1.0, top_p=0.7), generator=gen)
    counts = torch.bincount(picks, minlength=4)
    assert counts[2] == counts[3] == 0 and counts[0] > counts[1] > 0
    assert (pick_next_tokens(logits[:3], SamplingParams(temperature=0.0)) == 0).all()
