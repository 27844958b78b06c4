"""Benchmark: CPU inference candidates against the reference arm, batched HF ``model.generate``.

    python bench/candidates.py                              # all arms
    python bench/candidates.py --arms hf-generate ct2-int8  # a subset (hf-generate is the ratio reference)
    python bench/candidates.py --prompts 16 --threads 2

Workload, identical for every arm: ``--prompts`` chat prompts (16 arithmetic questions, repeated),
each rendered through the model's chat template and tokenised once with the HF tokenizer, so every
arm sees the same token ids; greedy decoding; exactly ``--max-new-tokens`` new tokens (EOS ignored).

Arms (each runs in its own subprocess, so peak RSS is per arm, read from ``os.wait4``):
  hf-generate   reference: fp32 ``model.generate`` on one left-padded batch
  hf-cb         transformers continuous batching, ``model.generate_batch`` + small ContinuousBatchingConfig
  hf-compile    ``torch.compile(model.forward, dynamic=True)`` + the same batched ``model.generate``
  ct2-f32/int8  CTranslate2 Generator (HF dir converted once with ct2-transformers-converter)
  ortg-fp32/int4 onnxruntime-genai (HF dir converted once with onnxruntime_genai.models.builder)

Converted models are cached under ``--cache-dir`` (outside the repo); the conversion time of the
first conversion is stored next to it and reported on later runs.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from agentark.models.hardware import cpu_info

QUESTIONS = [
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May?",
    "Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting. How much did she earn?",
    "Betty is saving money for a new wallet which costs $100. Betty has only half of the money she needs. "
    "Her parents gave her $15, and her grandparents twice as much as her parents. "
    "How much more money does Betty need?",
    "James writes a 3-page letter to 2 different friends twice a week. How many pages does he write a year?",
    "A robe takes 2 bolts of blue fiber and half that much white fiber. How many bolts in total does it take?",
    "What is 37 * 24 - 118?",
    "Tom has 5 boxes with 12 apples each. He gives away 17 apples. How many apples does he have left?",
    "A train travels 60 km per hour for 3.5 hours. How far does it travel?",
    "What is the sum of all integers from 1 to 40?",
    "A shirt costs $25 and is on sale for 20% off. What is the sale price?",
    "Maria reads 14 pages a day. How many days does she need to finish a 238-page book?",
    "What is 1234 + 5678 - 999?",
    "A rectangle is 13 cm long and 7 cm wide. What is its area and its perimeter?",
    "Sam buys 3 notebooks at $2.50 each and 2 pens at $1.25 each. How much does he spend?",
    "If 8 workers build a wall in 6 days, how many days do 12 workers need at the same rate?",
    "What is 15% of 640, plus 3 squared?",
]

ARMS = ["hf-generate", "hf-cb", "hf-compile", "ct2-f32", "ct2-int8", "ortg-fp32", "ortg-int4"]
NEEDS = {  # arm -> (import name, pip name)
    "ct2-f32": ("ctranslate2", "ctranslate2"),
    "ct2-int8": ("ctranslate2", "ctranslate2"),
    "ortg-fp32": ("onnxruntime_genai", "onnxruntime-genai onnx onnx_ir"),
    "ortg-int4": ("onnxruntime_genai", "onnxruntime-genai onnx onnx_ir"),
}


# ----------------------------------------------------------------------------- shared helpers


def prompt_ids(tokenizer, n: int) -> list[list[int]]:
    out = []
    for i in range(n):
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}], add_generation_prompt=True, tokenize=False
        )
        out.append(tokenizer(text, add_special_tokens=False)["input_ids"])
    return out


def timed(fn, *a, **kw):
    """(result, wall seconds); process CPU seconds (all threads) of the call are left in ``timed.cpu``."""
    t, c = time.perf_counter(), time.process_time()
    r = fn(*a, **kw)
    timed.cpu = time.process_time() - c
    return r, time.perf_counter() - t


def cached_convert(out_dir: Path, cmd: list[str]) -> tuple[float, str]:
    """Run a converter once; return (seconds, 'fresh'|'cached')."""
    stamp = out_dir / "convert_seconds.txt"
    if stamp.exists():
        return float(stamp.read_text()), "cached"
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=tempfile.gettempdir(), stdout=subprocess.DEVNULL)
    secs = time.perf_counter() - t
    stamp.write_text(f"{secs:.1f}")
    return secs, "fresh"


# ----------------------------------------------------------------------------- arms (run in the child)


def _hf_load(a, **kw):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(a.threads)
    tok = AutoTokenizer.from_pretrained(a.model_dir, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(a.model_dir, dtype=torch.float32, **kw).eval()
    return tok, model


def _hf_batched_generate(model, tok, ids, new_tokens):
    import torch

    batch = tok.pad({"input_ids": ids}, padding=True, return_tensors="pt")
    with torch.inference_mode():
        out = model.generate(
            **batch, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
            pad_token_id=tok.pad_token_id,
        )
    return out[:, batch["input_ids"].shape[1]:].tolist()


def arm_hf_generate(a, ids):
    (tok, model), load = timed(_hf_load, a)
    seqs, gen = timed(_hf_batched_generate, model, tok, ids, a.max_new_tokens)
    return dict(load_s=load, gen_s=gen, gen_cpu_s=timed.cpu, seqs=seqs)


def arm_hf_cb(a, ids):
    from transformers import GenerationConfig
    from transformers.generation.configuration_utils import ContinuousBatchingConfig

    (tok, model), load = timed(_hf_load, a, attn_implementation="sdpa")
    longest = max(map(len, ids)) + a.max_new_tokens
    page = 64
    cb = ContinuousBatchingConfig(
        page_size=page,
        num_blocks=len(ids) * (-(-longest // page)) + 16,  # every request fits at once, KV cache ~ tens of MB
        max_batch_tokens=2048,
        max_requests_per_batch=len(ids),
        use_cuda_graph=False,
        use_async_batching=False,
    )
    gc = GenerationConfig(
        max_new_tokens=a.max_new_tokens, do_sample=False, eos_token_id=-1, pad_token_id=tok.pad_token_id
    )
    res, gen = timed(model.generate_batch, inputs=ids, generation_config=gc, continuous_batching_config=cb)
    seqs = [r.generated_tokens for r in res.values()]
    return dict(
        load_s=load,
        gen_s=gen,
        gen_cpu_s=timed.cpu,
        seqs=seqs,
        note=f"page_size={page} num_blocks={cb.num_blocks} max_batch_tokens=2048",
    )


def arm_hf_compile(a, ids):
    import torch

    (tok, model), load = timed(_hf_load, a)
    model.forward = torch.compile(model.forward, dynamic=True)
    # warm-up on the full batch: compiles prefill + decode graphs (recompiles on new shapes are counted here)
    _, compile_s = timed(_hf_batched_generate, model, tok, ids, 4)
    seqs, gen = timed(_hf_batched_generate, model, tok, ids, a.max_new_tokens)
    return dict(
        load_s=load,
        compile_s=compile_s,
        gen_s=gen,
        gen_cpu_s=timed.cpu,
        seqs=seqs,
        note="warm-up = generate(max_new_tokens=4)",
    )


def _arm_ct2(a, ids, compute_type):
    import ctranslate2
    from transformers import AutoTokenizer

    out = Path(a.cache_dir) / "ct2-f32"
    conv, how = cached_convert(out, ["ct2-transformers-converter", "--model", a.model_dir, "--output_dir", str(out),
                                     "--quantization", "float32", "--force"])
    tok = AutoTokenizer.from_pretrained(a.model_dir)
    t = time.perf_counter()
    gen = ctranslate2.Generator(
        str(out), device="cpu", compute_type=compute_type, intra_threads=a.threads, inter_threads=1
    )
    load = time.perf_counter() - t
    tokens = [tok.convert_ids_to_tokens(x) for x in ids]
    res, gen_s = timed(gen.generate_batch, tokens, max_length=a.max_new_tokens, min_length=a.max_new_tokens,
                       sampling_topk=1, include_prompt_in_result=False, max_batch_size=len(ids), beam_size=1)
    seqs = [r.sequences_ids[0] for r in res]
    return dict(load_s=load, convert_s=conv, convert=how, gen_s=gen_s, gen_cpu_s=timed.cpu, seqs=seqs)


def arm_ct2_f32(a, ids):
    return _arm_ct2(a, ids, "float32")


def arm_ct2_int8(a, ids):
    return _arm_ct2(a, ids, "int8")


def _arm_ortg(a, ids, precision):
    import numpy as np
    import onnxruntime_genai as og

    out = Path(a.cache_dir) / f"ortg-{precision}"
    conv, how = cached_convert(out, [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", a.model_dir,
                                     "-o", str(out), "-p", precision, "-e", "cpu",
                                     "-c", str(Path(a.cache_dir) / "ortg-tmp")])
    cfg_path = out / "genai_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["model"]["decoder"]["session_options"].update(intra_op_num_threads=a.threads, inter_op_num_threads=1)
    cfg_path.write_text(json.dumps(cfg, indent=4))
    pad = cfg["model"]["pad_token_id"]
    t = time.perf_counter()
    model = og.Model(str(out))
    load = time.perf_counter() - t
    width = max(map(len, ids))
    batch = np.array([[pad] * (width - len(x)) + x for x in ids], dtype=np.int32)  # left padding, mask from pad id
    t, c = time.perf_counter(), time.process_time()
    params = og.GeneratorParams(model)
    params.set_search_options(do_sample=False, batch_size=len(ids), max_length=width + a.max_new_tokens,
                              min_length=width + a.max_new_tokens)
    gen = og.Generator(model, params)
    gen.append_tokens(batch)
    while not gen.is_done():
        gen.generate_next_token()
    seqs = [[int(t) for t in gen.get_sequence(i)[width:]] for i in range(len(ids))]
    gen_s, cpu = time.perf_counter() - t, time.process_time() - c
    return dict(load_s=load, convert_s=conv, convert=how, gen_s=gen_s, gen_cpu_s=cpu, seqs=seqs)


def arm_ortg_fp32(a, ids):
    return _arm_ortg(a, ids, "fp32")


def arm_ortg_int4(a, ids):
    return _arm_ortg(a, ids, "int4")


def child(a) -> None:
    from transformers import AutoTokenizer

    ids = prompt_ids(AutoTokenizer.from_pretrained(a.model_dir), a.prompts)
    fn = globals()["arm_" + a.child.replace("-", "_")]
    try:
        r = fn(a, ids)
        r["tokens"] = sum(len(s) for s in r["seqs"])
        r["exact"] = all(len(s) == a.max_new_tokens for s in r["seqs"]) and len(r["seqs"]) == len(ids)
        r["sample"] = AutoTokenizer.from_pretrained(a.model_dir).decode(r["seqs"][0])
    except Exception as e:  # noqa: BLE001 - report any failure of a candidate as a row
        r = dict(error=f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}")
    Path(a.out).write_text(json.dumps(r))


# ----------------------------------------------------------------------------- parent


def run_arm(arm: str, a) -> dict:
    if arm in NEEDS and importlib.util.find_spec(NEEDS[arm][0]) is None:
        return dict(error=f"not installed: pip install {NEEDS[arm][1]}")
    fd, out = tempfile.mkstemp(suffix=".json")
    os.close(fd)
    cmd = [sys.executable, __file__, "--child", arm, "--out", out, "--model-dir", a.model_dir, "--prompts",
           str(a.prompts), "--threads", str(a.threads), "--max-new-tokens", str(a.max_new_tokens), "--cache-dir",
           a.cache_dir]
    env = dict(
        os.environ,
        OMP_NUM_THREADS=str(a.threads),
        MKL_NUM_THREADS=str(a.threads),
        TOKENIZERS_PARALLELISM="false",
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        TRANSFORMERS_VERBOSITY="error",
    )
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env)
    timer = threading.Timer(a.arm_timeout, proc.kill)
    timer.start()
    _, status, ru = os.wait4(proc.pid, 0)  # per-child rusage (RUSAGE_CHILDREN would be the max over all arms)
    timer.cancel()
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t
    try:
        r = json.loads(Path(out).read_text() or "{}")
    except (OSError, json.JSONDecodeError):
        r = {}
    os.unlink(out)
    if not r:
        r = dict(error=f"child exited rc={proc.returncode} after {wall:.0f}s (timeout {a.arm_timeout}s?)")
    r["wall_s"] = wall
    r["rss_gib"] = ru.ru_maxrss / 2**20 if ru else float("nan")
    return r


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arms", nargs="+", default=ARMS, choices=ARMS)
    p.add_argument("--model", default="qwen2.5-coder-0.5b-instruct", help="agentark pack name")
    p.add_argument("--model-dir", default=None, help="HF safetensors dir (default: resolve --model)")
    p.add_argument("--prompts", type=int, default=48)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--arm-timeout", type=int, default=300)
    p.add_argument("--cache-dir", default=str(Path.home() / ".cache/agentark/bench-candidates"))
    p.add_argument("--json", default=None, help="also write the results here")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--out", default=None, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        return child(a)
    if a.model_dir is None:
        from agentark.models import resolve_model

        a.model_dir = str(resolve_model(a.model))
    print(f"CPU: {cpu_info().describe()}")
    print(
        f"model: {a.model_dir}\n"
        f"workload: {a.prompts} prompts x {a.max_new_tokens} new tokens, greedy, {a.threads} threads\n",
        flush=True,
    )

    results = {}
    for arm in a.arms:
        print(f"--- {arm}", flush=True)
        r = results[arm] = run_arm(arm, a)
        print("   ", {k: (round(v, 2) if isinstance(v, float) else v) for k, v in r.items() if k != "seqs"}, flush=True)

    ref = results.get("hf-generate")
    ref_tps = ref["tokens"] / ref["gen_s"] if ref and "error" not in ref else None
    ref_tpc = ref["tokens"] / ref["gen_cpu_s"] if ref_tps else None
    head = (f"{'arm':<12}{'tok/s':>8}{'ratio':>8}{'tok/cpu-s':>10}{'ratio':>7}{'gen s':>8}{'load s':>8}"
            f"{'conv/comp s':>13}{'RSS GiB':>9}{'exact64':>9}{'same as ref':>12}")
    print("\nCPU:", cpu_info().describe())
    print(head)
    for arm, r in results.items():
        if "error" in r:
            print(f"{arm:<12}  {r['error']}")
            continue
        tps = r["tokens"] / r["gen_s"]
        ratio = f"{tps / ref_tps:.2f}x" if ref_tps else "-"
        extra = r.get("compile_s", r.get("convert_s"))
        extra = f"{extra:.1f}" + (" (c)" if r.get("convert") == "cached" else "") if extra is not None else "-"
        same = "-"
        if ref_tps and arm != "hf-generate":
            same = f"{sum(x == y for x, y in zip(r['seqs'], ref['seqs'], strict=True))}/{len(ref['seqs'])}"
        tpc = r["tokens"] / r["gen_cpu_s"]
        ratio_c = f"{tpc / ref_tpc:.2f}x" if ref_tpc else "-"
        print(f"{arm:<12}{tps:>8.1f}{ratio:>8}{tpc:>10.1f}{ratio_c:>7}{r['gen_s']:>8.1f}{r['load_s']:>8.1f}{extra:>13}{r['rss_gib']:>9.2f}"
              f"{str(r['exact']):>9}{same:>12}")
    for arm, r in results.items():
        if "note" in r:
            print(f"  {arm}: {r['note']}")
    if a.json:
        Path(a.json).write_text(
            json.dumps({k: {kk: vv for kk, vv in v.items() if kk != "seqs"} for k, v in results.items()}, indent=1)
        )


if __name__ == "__main__":
    main()
