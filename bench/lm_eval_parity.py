"""lm-eval against agentark serve on held-out GSM8K items: the same per-item scores, ours beside theirs.

    python bench/lm_eval_parity.py --n 50                                # Qwen2.5-Coder-0.5B pack
    python bench/lm_eval_parity.py --model smollm2-135m-instruct --n 8   # a quick run of the plumbing

Runs ``lm_eval --model local-chat-completions`` (lm-eval's own CLI, offline) on the first ``n`` held-out
items of the GSM8K file, pointed at ``agentark serve`` (greedy), with lm-eval's own ``gsm8k`` task
config (its prompt, stop strings, filters and metric) and the items as a local JSON file. Then, per
item, from lm-eval's logged samples:

* lm-eval's ``strict-match`` / ``flexible-extract`` scores against :func:`agentark.evaluate.lmeval.lm_eval_correct`
  on the same responses: must be identical (the numbers AgentArk reports as "lm-eval" are lm-eval's);
* our grader (the gsm8k task's extraction and numeric comparison) against lm-eval's ``flexible-extract``:
  agreement per item, and every disagreement printed with both extractions.

Writes lm-eval's output and ``parity.json`` under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from agentark.engines import get_engine
from agentark.evaluate.lmeval import lm_eval_correct, run_lm_eval
from agentark.models.hardware import cpu_info
from agentark.serve import background_server, create_app
from agentark.tasks import get_task

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "gsm8k" / "train.jsonl"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--n", type=int, default=50)
    parser.add_argument("--engine", default="llamacpp")
    parser.add_argument("--max-gen-toks", type=int, default=512)
    parser.add_argument("--out", type=Path, default=Path("runs/lm-eval-parity"))
    args = parser.parse_args()

    task = get_task("gsm8k", path=args.data)
    items = task.items("held-out", args.n)
    print(
        f"CPU: {cpu_info().describe()}\nmodel={args.model} engine={args.engine} held-out items={len(items)}", flush=True
    )
    engine = get_engine(args.engine, args.model)
    with background_server(create_app(engine, served_model_name="m", max_batch_size=16)) as base:
        docs = run_lm_eval(f"{base}/v1/chat/completions", "m", items, args.out, max_gen_toks=args.max_gen_toks)
    ours_lm = lm_eval_correct([d.text for d in docs], [d.gold for d in docs])
    same_code = all(ours_lm[f][i] == d.correct[f] for f in ours_lm for i, d in enumerate(docs))
    grader = [
        task.grade(task.normalize(task.extract(d.text).flexible), item.answer)
        for d, item in zip(docs, items, strict=True)
    ]
    flexible = [d.correct["flexible-extract"] for d in docs]
    agree = sum(g == f for g, f in zip(grader, flexible, strict=True))
    print(f"lm-eval per item == agentark.evaluate.lmeval on the same responses: {same_code}")
    for f in ours_lm:
        print(f"  {f}: lm-eval {sum(d.correct[f] for d in docs)}/{len(docs)}, ours {sum(ours_lm[f])}/{len(docs)}")
    print(f"our grader {sum(grader)}/{len(docs)} vs lm-eval flexible-extract {sum(flexible)}/{len(docs)}: "
          f"same verdict on {agree}/{len(docs)} items")
    for i, (d, g, f) in enumerate(zip(docs, grader, flexible, strict=True)):
        if g != f:
            print(f"  item {i}: ours {g} (read {task.extract(d.text).flexible!r}), lm-eval {f} "
                  f"(read {d.filtered['flexible-extract']!r}), gold {items[i].answer}; text ends {d.text[-80:]!r}")
    (args.out / "parity.json").write_text(json.dumps({
        "model": args.model, "n": len(docs), "cpu": cpu_info().describe(), "same_code": same_code,
        "lm_eval": {f: sum(d.correct[f] for d in docs) for f in ours_lm}, "ours": sum(grader),
        "grader_agrees_with_flexible": agree}, indent=2))
    sys.exit(0 if same_code else 1)


if __name__ == "__main__":
    main()
