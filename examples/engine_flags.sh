# Sourced by the experiment scripts: one engine choice for generation and evaluation on this machine.
# `auto` is transformers in bf16 on a CPU with AMX / AVX512-BF16 and llama.cpp on an AVX2-only CPU
# (README Speed). Base and students are compared on one engine and one file type: on llama.cpp that is
# GGUF f16 (the base pack is converted from its HF weights like the students; greedy f16 matches
# transformers fp32). Run every evaluation on one machine kind: the engine decides the numbers.
# Needs TOK (the token cap); sets ENGINE, EVAL_ARGS (EVAL_OPTS overrides) and GEN (GEN_OPTS overrides
# the engine part of it).
ENGINE=$(python -c "from agentark.engines import resolve_engine_kind as r; print(r('auto'))")
if [[ "$ENGINE" == llamacpp ]]; then DEFAULT_EVAL="--engine llamacpp --engine-option outtype=f16"; else DEFAULT_EVAL="--engine $ENGINE"; fi
read -ra EVAL_ARGS <<< "${EVAL_OPTS:-$DEFAULT_EVAL}"
# Long debates: question + own answer + two peers + the new answer must fit one llama.cpp slot.
# A chunk is 16 questions x 3 agents = 48 conversations: one batch per round.
if [[ "$ENGINE" == llamacpp ]]; then DEFAULT_GEN="--engine llamacpp --engine-option n_ctx_per_seq=$((TOK * 4 + 1024))"
else DEFAULT_GEN="--engine $ENGINE"; fi
read -ra GEN_ENGINE <<< "${GEN_OPTS-$DEFAULT_GEN --batch-size 48}"
GEN=(--max-new-tokens "$TOK" "${GEN_ENGINE[@]}")
