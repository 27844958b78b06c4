"""Benchmark: generation throughput in one process and on Ray with 1 and 2 workers, same work.

    python bench/scaleout.py                                        # SmolLM2-135M pack, 24 questions
    python bench/scaleout.py --model qwen2.5-coder-0.5b-instruct --engine llamacpp --n 32

Every arm runs the same debate (3 agents x 2 rounds, greedy, consensus stop off so the work is
equal) on the same arithmetic questions into a fresh run directory, and reports questions/s and the
ratio to one process. Arms:

* ``local``     ``agentark generate`` in one process, all cores to one engine;
* ``ray-1``     ``--backend ray --workers 1 --worker-cpus <cores>``: the Ray overhead alone;
* ``ray-2``     ``--backend ray --workers 2 --worker-cpus <cores/2>``: two engines, half the cores each.

On a 2-core machine ``ray-2`` cannot beat ``local`` by much: both engines share the same two cores
and memory bandwidth; what it shows is the overhead and that throughput scales with workers where
the cores are there. Prints the CPU.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from agentark.models.hardware import cpu_info
from agentark.pipeline import GenerateConfig, generate


def run(arm: str, args, root: Path) -> float:
    cores = os.cpu_count() or 1
    ray_arm = {"local": {}, "ray-1": {"backend": "ray", "workers": 1, "worker_cpus": cores},
               "ray-2": {"backend": "ray", "workers": 2, "worker_cpus": max(1, cores // 2)}}[arm]
    config = GenerateConfig(task="arithmetic", task_options={"n_operands": 3}, system="debate", agents=3, rounds=2,
                            early_stop=False, n=args.n, model=args.model, engine=args.engine, temperature=0.0,
                            max_new_tokens=args.max_new_tokens, chunk_size=args.chunk_size,
                            batch_size=3 * args.chunk_size, out=str(root / arm), **ray_arm)
    start = time.perf_counter()
    generate(config)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--engine", default="hf")
    parser.add_argument("--n", type=int, default=24)
    parser.add_argument("--chunk-size", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--arms", nargs="+", default=["local", "ray-1", "ray-2"], choices=["local", "ray-1", "ray-2"])
    args = parser.parse_args()
    print(f"CPU: {cpu_info().describe()}")
    print(f"model={args.model} engine={args.engine} {args.n} questions x 3 agents x 2 rounds, {args.max_new_tokens} "
          f"tokens/turn, chunks of {args.chunk_size}")
    root = Path(tempfile.mkdtemp(prefix="agentark-scaleout-"))
    try:
        walls = {}
        for arm in args.arms:
            walls[arm] = run(arm, args, root)
            ratio = f"  {walls['local'] / walls[arm]:.2f}x local" if "local" in walls else ""
            print(f"{arm:6s} {walls[arm]:7.1f} s  {args.n / walls[arm]:.3f} questions/s{ratio}", flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
