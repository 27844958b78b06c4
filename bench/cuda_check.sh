#!/usr/bin/env bash
# One GPU run that proves AgentArk's CUDA paths and times them, on random-init models of the real
# Qwen2.5-Coder-0.5B / 1.5B configs (no hub on the lent machine: weights are random, so the timings are
# real and the accuracies are not). Made for the device tool's H200 (results/gpu-h200.md):
#
#   bench/cuda_check.sh            # on a CUDA machine, from the repo root; writes $OUT (default /tmp/cuda-check)
#
# Inputs it expects beside the repo (prepared on the CPU machine, git-excluded):
#   .gpu/q05, .gpu/q15   config.json + tokenizer files of the two packs (`AutoConfig` of the GGUFs)
#   .gpu/data/train.jsonl  ../shared/data/gsm8k/train.jsonl (E1's debate traces point at it)
#   .whl/                optional wheels for packages the machine lacks (installed to /tmp/site)
# ENGINE_MODELS (default "q05 q15"; empty skips stage 1), OPD_STEPS, PAD_STEPS size the run.
# Stages (each bounded, each logged; one failing does not stop the others):
#   1. hf engine vs batched model.generate on debate work (bench/generation.py), 0.5B and 1.5B, bf16;
#   2. E1's RSFT recipe exactly (522 samples, 66 steps of 4 x 2, max_length 1024, LoRA) on the 0.5B;
#   3. opd, team teacher = the 1.5B config, student the 0.5B (TRL DistillationTrainer, on-policy);
#   4. pad: the PRM, then GRPO steps against PRM + verifiable reward.
set -uo pipefail
OUT=${OUT:-/tmp/cuda-check}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export AGENTARK_CACHE=/tmp/agentark-cache
t0=$(date +%s)
stage() { echo; echo "== $1 (t=$(( $(date +%s) - t0 )) s, $(date +%T))"; }
if [[ -d .whl ]]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site:$PWD || exit 1
else
  export PYTHONPATH=$PWD
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, transformers, trl, peft; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'| transformers', transformers.__version__, '| trl', trl.__version__, '| peft', peft.__version__)"
nvidia-smi --query-gpu=timestamp,memory.used --format=csv,noheader,nounits -lms 500 > "$OUT/gpu-memory.csv" &
smi=$!
trap 'kill $smi 2>/dev/null' EXIT

stage "random-init models of the real configs (bf16, seed 0, initialised on the GPU)"
python3 - <<'PY'
import shutil, torch
from pathlib import Path
from transformers import AutoConfig, AutoModelForCausalLM
for name in ("q05", "q15"):
    src, dst = Path(".gpu") / name, Path("/tmp/m") / name
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(src), dtype=torch.bfloat16)
    model.save_pretrained(dst)
    for f in src.iterdir():
        if f.name != "config.json":
            shutil.copy(f, dst / f.name)
    print(name, f"{sum(p.numel() for p in model.parameters()) / 1e9:.2f} B params ->", dst)
PY
bash examples/keep.sh restore runs/e1 results/e1/kept
TRACES=runs/e1/train/debate-qwen2.5-coder-1.5b-instruct
# The debate's record names the task's data file relative to the CPU checkout; point it at the copy here
# (the record's hash is stored beside it, so the run's identity does not change).
sed -i "s#../shared/data/gsm8k/train.jsonl#$PWD/.gpu/data/train.jsonl#" $TRACES/config.json

stage "1. engines: debate work, 32 questions x 3 agents x 2 rounds x 256 tokens, batch 96"
for m in ${ENGINE_MODELS-q05 q15}; do
  timeout 150 python3 bench/generation.py --model /tmp/m/$m --device cuda --arms generate hf \
    --questions 32 --max-new-tokens 256 --batch-size 96 2>&1 | grep -v Warning | tail -8 | tee "$OUT/engine-$m.txt"
done

stage "2. rsft, E1's recipe on the 0.5B config"
timeout 200 python3 -m agentark distill --strategy rsft --traces $TRACES --model /tmp/m/q05 --out /tmp/s/rsft \
  --max-steps -1 --option num_train_epochs=1 --option per_device_train_batch_size=4 \
  --option gradient_accumulation_steps=2 --option max_length=1024 --option per_question=all --option save_steps=100 \
  > "$OUT/rsft.log" 2>&1; echo "rsft exit $?"; tail -3 "$OUT/rsft.log"

stage "3. opd, team teacher (1.5B config) -> 0.5B config, 768-token completions"
timeout 200 python3 -m agentark distill --strategy opd --traces $TRACES --model /tmp/m/q05 --out /tmp/s/opd \
  --max-steps ${OPD_STEPS:-6} --option teacher=/tmp/m/q15 --option teacher_context=team --option max_completion_length=768 \
  > "$OUT/opd.log" 2>&1; echo "opd exit $?"; tail -3 "$OUT/opd.log"

stage "4. pad: PRM (20 steps), then GRPO (3 steps, 4 completions of 768 tokens per prompt)"
timeout 200 python3 -m agentark distill --strategy pad --traces $TRACES --model /tmp/m/q05 --out /tmp/s/pad \
  --max-steps ${PAD_STEPS:-3} --learning-rate 3e-5 --option num_generations=4 --option prompts_per_step=2 \
  --option max_completion_length=768 --option beta=0 --option "prm={max_length: 1024, batch_size: 2, max_steps: 20}" \
  > "$OUT/pad.log" 2>&1; echo "pad exit $?"; tail -3 "$OUT/pad.log"

stage "summary"
python3 - "$OUT" <<'PY' | tee "$OUT/summary.md"
import json, sys
from pathlib import Path
for name in ("rsft", "opd", "pad", "pad/prm"):
    path = Path("/tmp/s") / name / "manifest.json"
    if not path.is_file():
        print(f"- {name}: no manifest (see its log)")
        continue
    train = {k: v for k, v in json.loads(path.read_text()).get("train", {}).items() if k != "loss_curve"}
    print(f"- {name}: {json.dumps(train)}")
rows = [line.split(", ") for line in (Path(sys.argv[1]) / "gpu-memory.csv").read_text().splitlines() if ", " in line]
print(f"- peak GPU memory used over the run: {max(int(r[1]) for r in rows)} MiB")
PY
stage "done"
