"""Benchmark: latency as users see it, agentark serve against llama.cpp's own HTTP server, same GGUF;
and the single model vs the debate vs the hybrid at several concurrencies.

    python bench/serving.py                                   # SmolLM2-135M pack, Poisson 2 req/s, 48 requests
    python bench/serving.py --model qwen2.5-coder-0.5b-instruct --rate 0.5 --n 32
    python bench/serving.py --systems --model qwen2.5-coder-0.5b-instruct --n 16 --concurrency 1 8 32

``--systems``: the model alone (what a distilled student is served as), its 3-agent 2-round debate,
and the hybrid (3 samples, team below full agreement), each at every ``--concurrency`` (closed loop,
``--n`` requests), one engine (``--engine``, default auto) with ``--slots`` sequences shared by all.

The same held-out arithmetic questions arrive as a Poisson process (an open loop, as real traffic
does) at every arm, each a fresh server on the same file with the same slots:

* ``serial``        agentark serve with one engine call in flight at a time (the micro-batcher before
                    continuous batching): a request that arrives mid-batch waits for the whole batch;
* ``agentark``      agentark serve as shipped: batches go to llama.cpp as soon as they form, and
                    llama.cpp adds them to its next decode step (continuous batching);
* ``agentark-sse``  the same with ``stream=true``: tokens leave as they are decoded (TTFT);
* ``llama-server``  llama.cpp's own HTTP server (what a llama.cpp user deploys), streamed.

Prints the CPU, and per arm p50/p95/p99 end-to-end latency, TTFT, throughput and errors, with
ratios to llama-server.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sys

from agentark.engines.llamacpp import LlamaCppEngine
from agentark.mas.base import first_prompt
from agentark.models.gguf import resolve_gguf
from agentark.models.hardware import cpu_info
from agentark.serve.loadtest import LoadResult, measure_served, run_load
from agentark.serve.systems import SingleModel
from agentark.tasks import get_task

ARMS = ("serial", "agentark", "agentark-sse", "llama-server")


class OneCallAtATime(SingleModel):
    """The served model, but the server may not overlap engine calls (as for a transformers model)."""

    def __init__(self, engine):
        super().__init__(engine)
        self.thread_safe = False


def agentark_arm(arm: str, conversations, args) -> LoadResult:
    engine = LlamaCppEngine(args.model, n_parallel=args.slots, n_ctx_per_seq=args.ctx)
    try:
        system = OneCallAtATime(engine) if arm == "serial" else SingleModel(engine)
        return measure_served(system, conversations, n=args.n, rate=args.rate, max_tokens=args.max_tokens,
                              stream=arm == "agentark-sse", max_batch_size=args.slots, seed=args.seed)
    finally:
        engine.close()


def llama_server_arm(conversations, args) -> LoadResult:
    """llama.cpp's own server with the same slots and threads, over its own HTTP port."""
    import socket

    import xllamacpp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    key = secrets.token_urlsafe(16)
    params = xllamacpp.CommonParams()
    params.model.path = str(resolve_gguf(args.model, None))
    params.n_parallel, params.n_ctx = args.slots, args.slots * args.ctx
    params.cpuparams.n_threads = params.cpuparams_batch.n_threads = os.cpu_count() or 1
    params.port, params.api_keys, params.verbosity = port, [key], -1  # binds 127.0.0.1 by default
    server = xllamacpp.Server(params)
    url = f"{server.listening_address}/v1"
    try:
        return asyncio.run(run_load(url, "m", conversations, n=args.n, rate=args.rate, max_tokens=args.max_tokens,
                                    temperature=0.0, stream=True, api_key=key, seed=args.seed))
    finally:
        del server


def systems_mode(conversations, args) -> None:
    from agentark.engines import close_engine, get_engine, resolve_engine_kind
    from agentark.mas import Debate
    from agentark.serve.systems import Hybrid, Team

    task = get_task("arithmetic", n_operands=3)
    kind = resolve_engine_kind(args.engine)
    options = (
        {"n_parallel": args.slots, "n_ctx_per_seq": args.ctx} if kind == "llamacpp" else {"batch_size": args.slots}
    )
    engine = get_engine(kind, args.model, **options)
    print(f"engine={kind}", flush=True)
    team = Team(engine, Debate(agents=3, rounds=2), task)
    systems = {"single": (SingleModel(engine), 0.0), "debate": (team, None),
               "hybrid": (Hybrid(engine, team, task, threshold=1.0, k=3), None)}
    print(f"{'system':8s} {'load':15s} {'ok':>6s} {'p50 ms':>8s} {'p95 ms':>8s} {'p99 ms':>8s} {'req/s':>6s}  routes")
    p50 = {}
    try:
        for concurrency in args.concurrency:
            for name, (system, temperature) in systems.items():
                r = measure_served(system, conversations, n=args.n, concurrency=concurrency, max_tokens=args.max_tokens,
                                   temperature=temperature)
                p50[name, concurrency] = r.latency_p50_s
                print(f"{name:8s} {'concurrency ' + str(concurrency):15s} {r.ok:>3d}/{r.sent:<2d} "
                      f"{1000 * (r.latency_p50_s or 0):8.0f} {1000 * (r.latency_p95_s or 0):8.0f} "
                      f"{1000 * (r.latency_p99_s or 0):8.0f} {r.throughput_rps:6.2f}  {r.routes}", flush=True)
            if p50.get(("debate", concurrency)) and p50.get(("single", concurrency)):
                print(f"  debate p50 / single p50 at concurrency {concurrency}: "
                      f"{p50['debate', concurrency] / p50['single', concurrency]:.1f}x", flush=True)
    finally:
        close_engine(engine)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--n", type=int, default=48, help="requests per arm")
    parser.add_argument("--rate", type=float, default=2.0, help="Poisson arrivals per second")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--slots", type=int, default=8, help="llama.cpp parallel slots (and agentark batch size)")
    parser.add_argument("--ctx", type=int, default=1024, help="context per slot")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS))
    parser.add_argument("--systems", action="store_true", help="single vs debate vs hybrid instead of the arms")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32], help="closed-loop loads (--systems)")
    parser.add_argument("--engine", default="auto", help="engine of --systems (auto: hf on AMX CPUs, llamacpp on AVX2)")
    args = parser.parse_args()

    task = get_task("arithmetic", n_operands=3)
    conversations = [first_prompt(task, item) for item in task.items("held-out", args.n)]
    print(f"CPU: {cpu_info().describe()}")
    if args.systems:
        print(f"model={args.model} n={args.n} per load, max_tokens={args.max_tokens}/turn, slots={args.slots}, "
              f"ctx/slot={args.ctx}; single greedy, debate and hybrid sampled at 0.7")
        return systems_mode(conversations, args)
    print(f"model={args.model} n={args.n} Poisson {args.rate}/s max_tokens={args.max_tokens} greedy "
          f"slots={args.slots} ctx/slot={args.ctx}")
    results: dict[str, LoadResult] = {}
    for arm in args.arms:
        results[arm] = (
            llama_server_arm(conversations, args) if arm == "llama-server" else agentark_arm(arm, conversations, args)
        )
        r = results[arm]

        def ms(x):
            return "   -   " if x is None else f"{1000 * x:7.0f}"

        print(f"{arm:13s} ok {r.ok}/{r.sent}  p50 {ms(r.latency_p50_s)}  p95 {ms(r.latency_p95_s)}  "
              f"p99 {ms(r.latency_p99_s)} ms  TTFT p50 {ms(r.ttft_p50_s)} ms  {r.throughput_rps:.2f} req/s  "
              f"{r.completion_tokens / r.wall_s:.1f} tok/s", flush=True)
    if "llama-server" in results:
        ref = results["llama-server"]
        for arm, r in results.items():
            if arm != "llama-server" and r.latency_p50_s and ref.latency_p50_s:
                print(f"{arm} / llama-server: p50 latency {r.latency_p50_s / ref.latency_p50_s:.2f}x, "
                      f"p95 {r.latency_p95_s / ref.latency_p95_s:.2f}x")
    if "serial" in results and "agentark" in results and results["agentark"].latency_p50_s:
        s, a = results["serial"], results["agentark"]
        print(f"serial / agentark: p50 {s.latency_p50_s / a.latency_p50_s:.2f}x, p95 "
              f"{s.latency_p95_s / a.latency_p95_s:.2f}x (above 1: continuous batching is faster)")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
