"""Benchmark: the same debate work through every CPU engine candidate, as ratios to batched generate.

    python bench/generation.py                                  # embedded default (Qwen2.5-Coder-0.5B)
    python bench/generation.py --model qwen2.5-coder-1.5b-instruct --arms generate llamacpp llamacpp-raw
    python bench/generation.py --random-init --device cuda --arms generate hf   # GPU, random weights

Every arm runs identical work: 16 arithmetic questions x 3 agents x 2 rounds of debate, every turn
forced to exactly ``--max-new-tokens`` tokens (EOS ignored), greedy, no early stop. Arms:

* ``naive``        the hf engine called one conversation at a time (the loop a first script writes);
* ``generate``     batched, left-padded ``model.generate`` per round (what a transformers user writes);
* ``hf``           AgentArk's hf engine (own decode loop: shared prefill, finished rows leave the batch);
* ``llamacpp``     AgentArk's llamacpp engine on the pack's GGUF (llama.cpp's server engine in-process);
* ``llamacpp-raw`` llama.cpp's server engine with its own defaults, requests sent straight from threads:
                   the throughput a llama.cpp user gets on the same file.

Each arm runs in its own process, so its peak RSS is its own. Prints the CPU, tokens/s, ratio to
``generate`` and peak RSS per arm.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from agentark.engines.base import Completion, Conversation, SamplingParams
from agentark.models.hardware import cpu_info

ARMS = ("naive", "generate", "hf", "llamacpp", "llamacpp-raw")


class OnePromptAtATime:
    """The naive baseline: an engine called with one conversation per generate call."""

    def __init__(self, engine):
        self.engine, self.model_id = engine, engine.model_id

    def generate(self, conversations: list[Conversation], sampling: SamplingParams) -> list[Completion]:
        return [self.engine.generate([c], sampling)[0] for c in conversations]


class BatchedGenerate:
    """One left-padded ``model.generate`` call per engine call (greedy, exactly max_new_tokens)."""

    def __init__(self, model, tokenizer, model_id: str):
        self.model, self.tokenizer, self.model_id = model, tokenizer, model_id

    def generate(self, conversations: list[Conversation], sampling: SamplingParams) -> list[Completion]:
        import torch

        texts = self.tokenizer.apply_chat_template(conversations, tokenize=False, add_generation_prompt=True)
        batch = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.model.device)
        start = time.perf_counter()
        with torch.inference_mode():
            out = self.model.generate(**batch, do_sample=False, max_new_tokens=sampling.max_new_tokens,
                                      min_new_tokens=sampling.max_new_tokens, pad_token_id=self.tokenizer.pad_token_id)
        latency = time.perf_counter() - start
        new = out[:, batch["input_ids"].shape[1]:]
        return [
            Completion(
                self.tokenizer.decode(row, skip_special_tokens=True), int(mask.sum()), len(row), latency, "length"
            )
            for row, mask in zip(new, batch["attention_mask"], strict=True)
        ]


class RawLlamaCpp:
    """llama.cpp's server engine with its own default parameters, one request per conversation."""

    def __init__(self, model: str, n_parallel: int, outtype: str | None = None):
        import xllamacpp

        from agentark.models.gguf import resolve_gguf

        params = xllamacpp.CommonParams()
        params.model.path = str(resolve_gguf(model, outtype))
        params.n_parallel, params.n_ctx = n_parallel, n_parallel * 2048
        params.cpuparams.n_threads = params.cpuparams_batch.n_threads = os.cpu_count()
        self.server, self.model_id = xllamacpp.Server(params), model
        self.pool = ThreadPoolExecutor(n_parallel)

    def generate(self, conversations: list[Conversation], sampling: SamplingParams) -> list[Completion]:
        def one(c):
            out = self.server.handle_chat_completions(
                {"messages": c, "max_tokens": sampling.max_new_tokens, "temperature": 0, "ignore_eos": True})
            msg = out["choices"][0]["message"]["content"]
            return Completion(msg, out["usage"]["prompt_tokens"], out["usage"]["completion_tokens"], 0.0, "length")
        return list(self.pool.map(one, conversations))


def build_engine(arm: str, args):
    if arm in ("llamacpp", "llamacpp-raw"):
        from agentark.engines.llamacpp import LlamaCppEngine

        if arm == "llamacpp":
            return LlamaCppEngine(args.model, n_parallel=args.batch_size, outtype=args.outtype)
        return RawLlamaCpp(args.model, args.batch_size, args.outtype)
    import torch

    from agentark.engines.hf import HFEngine
    from agentark.models import load_model, load_tokenizer

    tokenizer, model = load_tokenizer(args.model), load_model(args.model, device=args.device, dtype=args.dtype)
    if args.random_init:
        from transformers import AutoModelForCausalLM

        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(model.config, dtype=model.dtype).to(model.device).eval()
    if arm == "generate":
        return BatchedGenerate(model, tokenizer, args.model)
    engine = HFEngine(model, tokenizer, model_id=args.model, batch_size=args.batch_size)
    return OnePromptAtATime(engine) if arm == "naive" else engine


def run_arm(arm: str, args) -> dict:
    """Child process: build one engine, warm it up, time the debate work."""
    from agentark.mas import RunContext, get_system
    from agentark.tasks import get_task

    start = time.perf_counter()
    engine = build_engine(arm, args)
    load_s = time.perf_counter() - start
    task = get_task("arithmetic")
    items = task.items("train", args.questions)
    system = get_system("debate", agents=args.agents, rounds=args.rounds, early_stop=False)
    system.run(
        RunContext(
            task=task, engine=engine, sampling=SamplingParams(temperature=0.0, max_new_tokens=4, ignore_eos=True)
        ),
        items[:1],
    )
    sampling = SamplingParams(temperature=0.0, max_new_tokens=args.max_new_tokens, ignore_eos=True)
    start = time.perf_counter()
    traces = system.run(RunContext(task=task, engine=engine, sampling=sampling), items)
    wall = time.perf_counter() - start
    tokens = sum(t.completion_tokens for t in traces)
    return {"arm": arm, "tokens": tokens, "wall_s": wall, "tok_s": tokens / wall, "load_s": load_s,
            "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    parser.add_argument("--arms", nargs="+", choices=ARMS, default=["generate", "hf", "llamacpp", "llamacpp-raw"])
    parser.add_argument(
        "--random-init", action="store_true", help="Random weights of the model's config (hf arms, speed only)."
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--questions", type=int, default=16)
    parser.add_argument("--agents", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--outtype", choices=["f32", "f16", "bf16", "q8_0"], default=None,
                        help="llamacpp arms: run the model converted to this GGUF type (default: a pack as shipped).")
    parser.add_argument("--batch-size", type=int, default=48, help="hf batch size / llama.cpp parallel slots.")
    parser.add_argument("--child", choices=ARMS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_arm(args.child, args)))
        return

    print(f"CPU: {cpu_info().describe()}")
    print(f"model={args.model} work: {args.questions} questions x {args.agents} agents x {args.rounds} rounds, "
          f"{args.max_new_tokens} new tokens each (EOS ignored), greedy, batch/slots={args.batch_size}, "
          f"llamacpp file: {args.outtype or 'as shipped'}")
    results = {}
    for arm in args.arms:
        cmd = [sys.executable, __file__, "--child", arm] + [
            a for a in sys.argv[1:] if a not in args.arms and a != "--arms"
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            print(
                f"{arm:13s} failed: {proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else proc.returncode}"
            )
            continue
        results[arm] = json.loads(proc.stdout.strip().splitlines()[-1])
        r = results[arm]
        print(f"{arm:13s} {r['tokens']:6d} tokens in {r['wall_s']:7.1f} s = {r['tok_s']:6.1f} tok/s  "
              f"(load {r['load_s']:.0f} s, peak RSS {r['peak_rss_gib']:.2f} GiB)", flush=True)
    if ref := results.get("generate"):
        print("\nratio to batched model.generate (tokens/s, peak RSS):")
        for arm, r in results.items():
            print(
                f"  {arm:13s} {r['tok_s'] / ref['tok_s']:5.2f}x speed   "
                f"{r['peak_rss_gib'] / ref['peak_rss_gib']:5.2f}x memory"
            )
    if "llamacpp" in results and "llamacpp-raw" in results:
        print(
            "llamacpp engine / llama.cpp's own server: "
            f"{results['llamacpp']['tok_s'] / results['llamacpp-raw']['tok_s']:.2f}x"
        )
    if "llamacpp" in results and "hf" in results:
        print(f"llamacpp engine / hf engine: {results['llamacpp']['tok_s'] / results['hf']['tok_s']:.2f}x")


if __name__ == "__main__":
    main()
