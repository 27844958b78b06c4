#!/usr/bin/env bash
# E2: the 0.5B team's debate on the built-in arithmetic task -> the 135M SmolLM2 (which scores ~0
# alone, so any transferred skill is visible), and 0.5B -> 0.5B self-distillation. Token cap 512: at
# 256, 11 of 24 final turns of the 0.5B's debate in examples/demo.yaml were cut mid-derivation.
set -euo pipefail
export TEACHER=qwen2.5-coder-0.5b-instruct TASK=arithmetic
export N_TRAIN=${N_TRAIN:-200} N_EVAL=${N_EVAL:-200} N_TEAM_EVAL=${N_TEAM_EVAL:-200} TOK=${TOK:-512}
export STRATEGIES=${STRATEGIES:-"rsft da sft"}
dir=$(dirname "$0")
# One debate on the train questions and one per model on the held-out items, shared by both runs.
export TEAMS=${ROOT:-runs/e2}
export KEEP=${KEEP-results/e2/kept}   # every trace of runs/e2, kept in git (examples/keep.sh)
# The 135M's learning rate and epochs come from the dev slice (examples/e2_tune_135m.sh,
# results/e2/dev-135m.md: LoRA lr 1e-3 x 4 epochs 0.09 vs lr 2e-4 x 2 epochs 0.04, base 0.03).
STUDENT=smollm2-135m-instruct ROOT=$TEAMS/to-135m NUM_EPOCHS=4 TRAIN_OPTS="--learning-rate 1e-3 ${TRAIN_OPTS:-}" \
  bash "$dir/distill_experiment.sh"
STUDENT=qwen2.5-coder-0.5b-instruct ROOT=$TEAMS/to-0.5b bash "$dir/distill_experiment.sh"
