"""The llamacpp engine: the same contract as the hf engine, GGUF conversion, and clear errors.

A tiny random Qwen2 (real Qwen tokenizer, so llama.cpp's converter accepts it) goes through llama.cpp's
own converter to GGUF f16 and through both engines, so conversion and batching are exercised for real.
"""

from __future__ import annotations

import sys

import pytest

from agentark.engines import get_engine, resolve_engine_kind
from agentark.engines.base import SamplingParams
from agentark.engines.llamacpp import LlamaCppEngine, LlamaCppError
from agentark.models.gguf import GGUFError, resolve_gguf
from agentark.models.hardware import cpu_info

from tiny_model import build_tiny_qwen

CONVERSATIONS = [
    [{"role": "user", "content": "What is 3 + 4?"}],
    [{"role": "user", "content": "Name a colour."}],
    [{"role": "user", "content": "What is 3 + 4?"}],  # identical to the first: same greedy answer
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Count to five."}],
]


@pytest.fixture(scope="module")
def tiny_qwen(tmp_path_factory):
    from transformers import AutoTokenizer

    from agentark.models import pack_gguf

    gguf = pack_gguf("qwen2.5-coder-0.5b-instruct")  # only its tokenizer is used
    tok_dir = tmp_path_factory.mktemp("qwen-tokenizer")
    AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(tok_dir)
    return str(build_tiny_qwen(tmp_path_factory.mktemp("tiny-qwen"), tok_dir))


@pytest.fixture(scope="module", params=["hf", "llamacpp"])
def engine(request, tiny_qwen):
    options = {"n_parallel": 4, "n_ctx_per_seq": 512} if request.param == "llamacpp" else {"batch_size": 4}
    return get_engine(request.param, tiny_qwen, **options)


def test_one_completion_per_conversation_with_accounting(engine):
    out = engine.generate(CONVERSATIONS, SamplingParams(temperature=0.0, max_new_tokens=6))
    assert len(out) == len(CONVERSATIONS)
    for completion in out:
        assert 0 < completion.completion_tokens <= 6 and completion.prompt_tokens > 5
        assert completion.finish_reason in ("stop", "length") and completion.latency_s > 0
    assert out[0].text == out[2].text and out[0].prompt_tokens == out[2].prompt_tokens
    assert engine.generate([], SamplingParams()) == []


def test_greedy_is_deterministic(engine):
    sampling = SamplingParams(temperature=0.0, max_new_tokens=8)
    assert [c.text for c in engine.generate(CONVERSATIONS, sampling)] == [
        c.text for c in engine.generate(CONVERSATIONS, sampling)
    ]


def test_seeded_sampling_repeats_and_positions_differ(engine):
    sampling = SamplingParams(temperature=1.5, max_new_tokens=12, seed=11)
    same = [CONVERSATIONS[0]] * 4
    first = [c.text for c in engine.generate(same, sampling)]
    assert first == [c.text for c in engine.generate(same, sampling)]
    assert len(set(first)) > 1  # identical prompts, one seed: still different samples per position


def test_ignore_eos_forces_the_length(engine):
    out = engine.generate(CONVERSATIONS[:2], SamplingParams(temperature=0.0, max_new_tokens=10, ignore_eos=True))
    assert [c.completion_tokens for c in out] == [10, 10] and {c.finish_reason for c in out} == {"length"}


def test_gguf_f16_greedy_matches_transformers(tiny_qwen):
    """llama.cpp on the converted f16 file writes what transformers writes in fp32 (greedy)."""
    sampling = SamplingParams(temperature=0.0, max_new_tokens=12, ignore_eos=True)
    hf = get_engine("hf", tiny_qwen, batch_size=4).generate(CONVERSATIONS, sampling)
    cpp = LlamaCppEngine(tiny_qwen, n_parallel=4, n_ctx_per_seq=512).generate(CONVERSATIONS, sampling)
    assert [c.prompt_tokens for c in cpp] == [c.prompt_tokens for c in hf]  # same chat template, same tokens
    agree = sum(a.text == b.text for a, b in zip(hf, cpp, strict=True))
    assert agree >= len(CONVERSATIONS) - 1, [(a.text, b.text) for a, b in zip(hf, cpp, strict=True)]


def test_conversion_is_cached_by_weights(tiny_qwen):
    first = resolve_gguf(tiny_qwen)
    assert first.is_file() and first == resolve_gguf(tiny_qwen)


def test_a_pack_runs_as_shipped_unless_an_outtype_is_asked(tiny_qwen, monkeypatch):
    """outtype=f16 converts a pack from its HF weights, so a base and its students share a file type."""
    import agentark.models.gguf as gguf

    shipped = resolve_gguf("qwen2.5-coder-0.5b-instruct")
    assert shipped.name == "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
    monkeypatch.setattr(gguf, "resolve_model", lambda name: tiny_qwen)  # stands in for the pack's HF dir
    converted = resolve_gguf("qwen2.5-coder-0.5b-instruct", "f16")
    assert converted != shipped and converted.name.endswith("-f16.gguf") and converted == resolve_gguf(tiny_qwen, "f16")
    assert gguf.resolve_gguf(tiny_qwen) == converted  # HF weights: f16 by default


def test_prompt_longer_than_the_context_names_the_option(tiny_qwen):
    engine = LlamaCppEngine(tiny_qwen, n_parallel=1, n_ctx_per_seq=128)
    with pytest.raises(LlamaCppError, match="n_ctx_per_seq"):
        engine.generate([[{"role": "user", "content": "word " * 400}]], SamplingParams(max_new_tokens=4))


def test_missing_and_corrupt_gguf_name_the_file(tmp_path):
    with pytest.raises(GGUFError, match="nope.gguf"):
        LlamaCppEngine(str(tmp_path / "nope.gguf"))
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 64)
    with pytest.raises(LlamaCppError, match="bad.gguf"):
        LlamaCppEngine(str(bad), n_parallel=1, n_ctx_per_seq=128)
    with pytest.raises(GGUFError, match="no .safetensors"):
        resolve_gguf(str(tmp_path))


def test_missing_build_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "xllamacpp", None)
    with pytest.raises(ImportError, match="pip install xllamacpp"):
        LlamaCppEngine(str(tmp_path / "x.gguf"))


@pytest.mark.parametrize(
    "flags,expected", [("fpu avx avx2 fma", "llamacpp"), ("avx2 avx512f avx512_bf16 amx_bf16", "hf")]
)
def test_auto_engine_on_cpu_follows_the_bf16_flags(monkeypatch, flags, expected):
    import torch

    from agentark.engines import settings
    from agentark.models import hardware

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(settings, "cpu_info", lambda: hardware.CPUInfo("test CPU", frozenset(flags.split()), 2))
    assert resolve_engine_kind("auto") == expected
    with pytest.raises(ValueError, match="valid engines"):
        resolve_engine_kind("tensorrt")


@pytest.mark.parametrize("flags,fast", [("fpu avx avx2 fma", False), ("avx2 avx512f avx512_bf16", True),
                                        ("avx2 amx_tile amx_bf16 amx_int8", True)])
def test_bf16_only_where_the_cpu_has_it(flags, fast):
    info = cpu_info(f"processor\t: 0\nmodel name\t: Test CPU\nflags\t\t: {flags}\n\nprocessor\t: 1\nflags\t: sse\n")
    assert info.model == "Test CPU" and info.fast_bf16 is fast
    assert "avx2" in info.describe()


def test_vllm_missing_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)
    with pytest.raises(ImportError, match=r"agentark\[vllm\].*0\.22-0\.31"):
        get_engine("vllm", "any/model")


def test_stream_hands_out_the_greedy_text_piece_by_piece_and_stops_when_told(tiny_qwen):
    engine = get_engine("llamacpp", tiny_qwen, n_parallel=2, n_ctx_per_seq=512)
    sampling = SamplingParams(temperature=0.0, max_new_tokens=12, ignore_eos=True)
    pieces: list[str] = []
    streamed = engine.stream(CONVERSATIONS[0], sampling, lambda text: pieces.append(text) is not None)
    whole = engine.generate([CONVERSATIONS[0]], sampling)[0]
    assert len(pieces) > 1 and "".join(pieces) == streamed.text == whole.text
    assert streamed.completion_tokens == 12 and streamed.prompt_tokens == whole.prompt_tokens
    assert streamed.finish_reason == "length"
    few: list[str] = []
    stopped = engine.stream(CONVERSATIONS[0], sampling, lambda text: few.append(text) is None and len(few) >= 3)
    assert len(few) == 3 and stopped.text == "".join(few)


def test_server_streams_llamacpp_tokens_as_openai_chunks(tiny_qwen):
    import json

    import httpx

    from agentark.serve import create_app

    from server_utils import running_server

    engine = get_engine("llamacpp", tiny_qwen, n_parallel=2, n_ctx_per_seq=512)
    body = {"model": "tiny", "messages": CONVERSATIONS[1], "temperature": 0, "max_tokens": 10, "ignore_eos": True}
    with running_server(create_app(engine, served_model_name="tiny", max_batch_wait_ms=0)) as url:
        plain = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60).json()
        with httpx.stream("POST", f"{url}/v1/chat/completions", timeout=60,
                          json={**body, "stream": True, "stream_options": {"include_usage": True}}) as response:
            assert response.status_code == 200 and response.headers["x-agentark-route"] == "single"
            events = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
        too_long = httpx.post(f"{url}/v1/chat/completions", timeout=60,
                              json={**body, "stream": True, "messages": [{"role": "user", "content": "word " * 800}]})
    chunks = [json.loads(e) for e in events[:-1]]
    contents = [
        c["choices"][0]["delta"]["content"] for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")
    ]
    assert len(contents) > 1 and "".join(contents) == plain["choices"][0]["message"]["content"]
    assert chunks[-1]["usage"]["completion_tokens"] == 10 and events[-1] == "[DONE]"
    assert too_long.status_code == 400 and "n_ctx_per_seq" in too_long.json()["error"]["message"]


def test_stop_strings_end_the_text_where_they_first_appear(engine):
    sampling = SamplingParams(temperature=0.0, max_new_tokens=16, ignore_eos=True)
    full = engine.generate([CONVERSATIONS[1]], sampling)[0]
    stop = full.text[6:9]
    assert stop.strip(), f"need a visible stop string in {full.text!r}"
    cut = engine.generate(
        [CONVERSATIONS[1]], SamplingParams(temperature=0.0, max_new_tokens=16, ignore_eos=True, stop=(stop,))
    )[0]
    assert cut.text == full.text[: full.text.find(stop)]
    assert cut.finish_reason == "stop" and cut.completion_tokens < full.completion_tokens


def test_a_client_that_leaves_mid_stream_frees_its_slot(tiny_qwen):
    import httpx

    from agentark.serve import create_app

    from server_utils import running_server

    class Recording:
        """The llamacpp engine, keeping what each stream really generated."""

        def __init__(self, engine):
            self.engine, self.model_id, self.thread_safe, self.streamed = engine, "tiny", True, []

        def generate(self, conversations, sampling):
            return self.engine.generate(conversations, sampling)

        def stream(self, conversation, sampling, sink):
            completion = self.engine.stream(conversation, sampling, sink)
            self.streamed.append(completion)
            return completion

    engine = Recording(get_engine("llamacpp", tiny_qwen, n_parallel=1, n_ctx_per_seq=1024))
    body = {"model": "tiny", "messages": CONVERSATIONS[0], "temperature": 0, "max_tokens": 800, "ignore_eos": True,
            "stream": True}
    with running_server(create_app(engine, max_batch_wait_ms=0)) as url:
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=60) as response:
            lines = response.iter_lines()
            for _ in range(3):
                next(lines)
        # The only slot is free again: the next request is answered, and the first stopped early.
        after = httpx.post(f"{url}/v1/chat/completions", timeout=60, json={**body, "stream": False, "max_tokens": 4})
    assert after.status_code == 200
    assert len(engine.streamed) == 1 and engine.streamed[0].completion_tokens < 800


def test_a_debate_round_reuses_each_agents_cached_conversation_and_writes_the_same_text(tiny_qwen):
    """Round 1 goes to the slots that served round 0 and prefills only what is new, with the greedy
    text of prefilling everything (prompt_cache off: no affinity, no cache, nothing reported)."""
    from agentark.mas import RunContext, get_system
    from agentark.tasks import get_task

    task = get_task("arithmetic")
    items = task.items("train", 2)
    texts, cached = {}, {}
    for reuse in (True, False):
        engine = LlamaCppEngine(tiny_qwen, n_parallel=4, n_ctx_per_seq=1024, prompt_cache=reuse)
        ctx = RunContext(task, engine, SamplingParams(temperature=0.0, max_new_tokens=8))
        traces = get_system("debate", agents=3, rounds=2, early_stop=False).run(ctx, items)
        engine.close()
        texts[reuse] = [t.text for trace in traces for t in trace.turns]
        cached[reuse] = [(t.cached_prompt_tokens, t.prompt_tokens) for trace in traces for t in trace.round_turns(1)]
    assert texts[True] == texts[False]
    assert all(n > 0 for n, _ in cached[True]) and all(n == 0 for n, _ in cached[False])
    # Each agent's question and own answer come from the cache: well over a third of round 1's prompt.
    assert sum(n for n, _ in cached[True]) > 0.35 * sum(sent for _, sent in cached[True])
