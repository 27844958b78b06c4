"""What each supervised strategy would train on, from one debate run, without training anything.

    python examples/dataset_stats.py runs/e1/train/debate-qwen2.5-coder-1.5b-instruct \
        --student-run runs/e1/train/single-qwen2.5-coder-0.5b-instruct --tokenizer qwen2.5-coder-0.5b-instruct

Prints the pool (final-round turns, how many are usable targets, capped, answerless) and, per strategy,
the questions, samples, share of corrective trajectories and mean completion length: the same figures
each trained student's manifest records under ``pool`` and ``dataset``.
"""

from __future__ import annotations

import argparse

from agentark.distill.data import build_samples, dataset_stats, pool_stats, unsolved_by
from agentark.evaluate.table import markdown_table
from agentark.models.loading import load_tokenizer
from agentark.traces.store import read_traces


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("traces", help="run directory or traces.jsonl of the multi-agent run")
    parser.add_argument("--student-run", help="the student alone on the same questions (adds the unsolved rows)")
    parser.add_argument("--tokenizer", default="qwen2.5-coder-0.5b-instruct", help="student tokenizer for lengths")
    args = parser.parse_args()
    traces = list(read_traces(args.traces))
    tokenizer = load_tokenizer(args.tokenizer)
    pool = pool_stats(traces)
    print(f"pool: {pool['questions']} questions, {pool['questions_final_correct']} right at the end; "
          f"{pool['final_turns']} final turns, {pool['final_turns_correct']} correct, {pool['final_turns_target']} "
          f"targets, {pool['final_turns_capped']} capped ({pool['capped_share']:.1%}), "
          f"{pool['final_turns_no_answer']} without an answer")
    rows = [("rsft (all correct agents)", "rsft", traces, {"per_question": "all"}),
            ("rsft (one per question)", "rsft", traces, {"per_question": "one"}),
            ("da (k=3)", "da", traces, {"k": 3}), ("sft (answer only)", "sft", traces, {})]
    if args.student_run:
        unsolved = unsolved_by(traces, read_traces(args.student_run))
        rows.insert(2, ("rsft:unsolved (all)", "rsft", unsolved, {"per_question": "all"}))
    table = []
    for label, strategy, chosen, opts in rows:
        stats = dataset_stats(build_samples(strategy, chosen, **opts), tokenizer)
        table.append([label, str(stats["questions"]), str(stats["samples"]), f"{stats['corrective_share']:.3f}",
                      f"{stats['mean_completion_tokens']:.0f}"])
    print(markdown_table(["strategy", "questions", "samples", "corrective share", "mean completion tokens"], table))


if __name__ == "__main__":
    main()
