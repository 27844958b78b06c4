"""A tiny randomly initialised chat model saved as a normal HF directory (no download, ~1 s).

Tests load it through the same code path as any local model, so engines, debate and training are
exercised for real; only the weights are random.
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_CORPUS = [
    "What is 3 + 4 * 2? Let's think step by step. 4 * 2 = 8, 3 + 8 = 11. The answer is 11.",
    "These are the solutions to the problem from other agents. Using them as additional advice, "
    "can you give an updated response? Make sure to state your answer at the end.",
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May.",
    "You are a helpful assistant. Solve the problem. \\boxed{42} #### 72 (A) (B) (C) (D)",
    "0 1 2 3 4 5 6 7 8 9 + - * / = ( ) . , ? ! $ % answer question round agent debate",
]


def build_tiny_model(out_dir: str | Path, vocab_size: int = 384, seed: int = 0, hidden_size: int = 64,
                     num_hidden_layers: int = 2) -> Path:
    """Write a random Llama (2 layers, width 64 by default) + trained byte-level BPE tokenizer to ``out_dir``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    out_dir = Path(out_dir)
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
    )
    hf_tok.chat_template = CHATML_TEMPLATE
    hf_tok.save_pretrained(out_dir)

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(hf_tok),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        eos_token_id=hf_tok.eos_token_id,
        pad_token_id=hf_tok.pad_token_id,
        bos_token_id=None,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = hf_tok.eos_token_id
    model.generation_config.pad_token_id = hf_tok.pad_token_id
    model.save_pretrained(out_dir, safe_serialization=True)
    return out_dir


def build_tiny_qwen(out_dir: str | Path, tokenizer_dir: str | Path, seed: int = 0) -> Path:
    """A random 2-layer Qwen2 with a real Qwen tokenizer, so llama.cpp's converter recognises it.

    llama.cpp identifies a BPE tokenizer by the hash of its pre-tokenizer output, so the toy BPE of
    :func:`build_tiny_model` cannot become a GGUF; the Qwen tokenizer can.
    """
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    out_dir = Path(out_dir)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    tokenizer.save_pretrained(out_dir)
    torch.manual_seed(seed)
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    Qwen2ForCausalLM(config).save_pretrained(out_dir, safe_serialization=True)
    return out_dir
