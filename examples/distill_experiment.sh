#!/usr/bin/env bash
# Debate traces -> one student per strategy -> held-out evaluation next to the base model, on the
# embedded default model. Every stage is resumable and a finished stage is skipped on re-run.
#
#   N_TRAIN=16 N_EVAL=24 bash examples/distill_experiment.sh                       # arithmetic
#   TASK=gsm8k DATA=../shared/data/gsm8k/train.jsonl STRATEGIES="rsft da sft pad" \
#     bash examples/distill_experiment.sh                                          # GSM8K + PAD
#
# Sized for 2 CPU cores (~30-60 min); scale N_TRAIN / N_EVAL / STEPS up on a GPU. ENGINE_OPTS is
# passed to generation and evaluation, e.g. ENGINE_OPTS="--engine-option dtype=bfloat16" (2.2x
# faster on an AVX512-BF16 CPU) or "--engine-option device=cuda".
set -euo pipefail
MODEL=${MODEL:-qwen2.5-coder-0.5b-instruct}
TASK=${TASK:-arithmetic}
N_TRAIN=${N_TRAIN:-32}
N_EVAL=${N_EVAL:-32}
ROOT=${ROOT:-runs/$TASK}
STEPS=${STEPS:-12}
PAD_STEPS=${PAD_STEPS:-3}        # one GRPO step (8 completions of 256 tokens) is ~10 min on 2 CPU cores
STRATEGIES=${STRATEGIES:-rsft da sft}
read -ra ENGINE_ARGS <<< "${ENGINE_OPTS:-}"
if [[ "$TASK" == arithmetic ]]; then
  TASK_OPTS=(--task arithmetic --task-option n_operands=3)
else
  TASK_OPTS=(--task "$TASK" --data "${DATA:?set DATA to the data file}")
fi

agentark generate "${TASK_OPTS[@]}" --system debate --agents 3 --rounds 2 --n "$N_TRAIN" \
  --model "$MODEL" --max-new-tokens 256 "${ENGINE_ARGS[@]}" --out "$ROOT/traces"
agentark summarize "$ROOT/traces"
students=()
for strategy in $STRATEGIES; do
  if [[ "$strategy" == pad ]]; then
    # PRM (stage I: last block + head, stage II: all weights) on the debate's step labels, then GRPO
    # with 2 questions x 4 completions per step against PRM(min over steps) + correctness. CPU sizes:
    # 3 PRM steps per stage, no KL term (beta=0, as TRL's default; saves the reference forward pass).
    agentark distill --strategy pad --traces "$ROOT/traces" --model "$MODEL" --out "$ROOT/students/pad" \
      --max-steps "$PAD_STEPS" --learning-rate 3e-5 --option num_generations=4 --option prompts_per_step=2 \
      --option max_completion_length=256 --option beta=0 --option "prm={max_length: 384, batch_size: 2, max_steps: 3}"
  else
    agentark distill --strategy "$strategy" --traces "$ROOT/traces" --model "$MODEL" --out "$ROOT/students/$strategy" \
      --max-steps "$STEPS" --option per_device_train_batch_size=4 --option gradient_accumulation_steps=1 \
      --option max_length=512
  fi
  students+=(--model "$ROOT/students/$strategy")
done
agentark evaluate "${students[@]}" "${TASK_OPTS[@]}" --split held-out --n "$N_EVAL" --max-new-tokens 256 \
  "${ENGINE_ARGS[@]}" --out "$ROOT/eval"
