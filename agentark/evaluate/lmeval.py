"""lm-eval's GSM8K scoring beside ours, computed by lm-eval's own code on the same completions.

Numbers from AgentArk are compared with numbers people quote from ``lm-evaluation-harness``, whose
GSM8K task reports two: ``strict-match`` (the ``#### N`` marker of GSM8K's reference answers) and
``flexible-extract`` (the last number-like string). Rather than re-typing its patterns, the task's
YAML is read from the installed ``lm_eval`` package and its filters and ``exact_match`` metric are run
through lm-eval's own functions, so a change in lm-eval shows up here too. Our grader differs on
purpose (it reads ``\\boxed{}`` and "The answer is", and compares numbers, not strings): reporting
both lets a reader place our accuracy on lm-eval's scale.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from agentark.tasks.base import Item

LM_EVAL_TASKS = ("gsm8k", "gsm8k-cot-zeroshot")
"""lm-eval task configs (files under ``lm_eval/tasks/gsm8k``) whose scoring can be applied here."""


def _lm_eval():
    try:
        import lm_eval
        from lm_eval.api.metrics import exact_match_fn
        from lm_eval.filters import build_filter_ensemble
    except ImportError as exc:
        raise ImportError("lm-eval's scoring needs lm-eval: pip install 'agentark[lmeval]'") from exc
    return Path(lm_eval.__file__).parent, build_filter_ensemble, exact_match_fn


@cache
def task_config(task: str = "gsm8k") -> dict[str, Any]:
    """lm-eval's own YAML for ``task`` (filters, metric options), as installed."""
    import yaml

    if task not in LM_EVAL_TASKS:
        raise ValueError(f"unknown lm-eval task {task!r}; valid: {', '.join(LM_EVAL_TASKS)}")
    root, _, _ = _lm_eval()
    config = yaml.safe_load((root / "tasks" / "gsm8k" / f"{task}.yaml").read_text())
    while "include" in config:  # cot-zeroshot includes its parent file
        parent = yaml.safe_load((root / "tasks" / "gsm8k" / config.pop("include")).read_text())
        config = {**parent, **config}
    return config


def lm_eval_correct(texts: Sequence[str], golds: Sequence[str], task: str = "gsm8k") -> dict[str, list[bool]]:
    """Per filter of lm-eval's ``task`` (``strict-match``, ``flexible-extract``), whether each text is
    right under lm-eval's ``exact_match``. ``golds`` are GSM8K answers: a bare number or the worked
    solution ending in ``#### N`` (lm-eval strips everything up to ``#### `` from references)."""
    from lm_eval.api.instance import Instance

    if len(texts) != len(golds):
        raise ValueError(f"{len(texts)} texts for {len(golds)} gold answers")
    _, build_filter_ensemble, exact_match_fn = _lm_eval()
    config = task_config(task)
    metric = next(m for m in config["metric_list"] if m["metric"] == "exact_match")
    options = {k: metric[k] for k in ("ignore_case", "ignore_punctuation", "regexes_to_ignore") if k in metric}
    references = [gold if "####" in gold else f"#### {gold}" for gold in golds]
    scores: dict[str, list[bool]] = {}
    for spec in config["filter_list"]:
        instances = [Instance(request_type="generate_until", doc={}, arguments=("", {}), idx=0, resps=[text])
                     for text in texts]
        ensemble = build_filter_ensemble(spec["name"], [(f["function"], {k: v for k, v in f.items() if k != "function"})
                                                        for f in spec["filter"]])
        ensemble.apply(instances)
        predictions = [inst.filtered_resps[spec["name"]] for inst in instances]
        scores[spec["name"]] = [bool(exact_match_fn(predictions=[p], references=[r], **options)["exact_match"])
                                for p, r in zip(predictions, references, strict=True)]
    return scores


@dataclass(frozen=True)
class LMEvalSample:
    """One document as lm-eval scored it: the raw response, and per filter its extraction and verdict."""

    doc_id: int
    text: str
    gold: str
    filtered: dict[str, str]
    correct: dict[str, bool]


def write_task(folder: Path, items: Sequence[Item], task: str = "gsm8k") -> str:
    """lm-eval's own ``task`` config (prompt, stop strings, filters, metric) over ``items`` as a local
    JSON test split, zero-shot (chat servers), in ``folder``; returns the task name for ``--tasks``."""
    import yaml

    folder.mkdir(parents=True, exist_ok=True)
    data = folder / "items.jsonl"
    data.write_text("".join(json.dumps({"question": i.question, "answer": f"#### {i.answer}"}) + "\n" for i in items))
    name = f"agentark_{task.replace('-', '_')}"
    config = {**task_config(task), "task": name, "dataset_path": "json", "dataset_name": None,
              "dataset_kwargs": {"data_files": {"test": str(data)}}, "test_split": "test",
              "training_split": None, "fewshot_split": None, "num_fewshot": 0}
    config.pop("tag", None)
    (folder / f"{name}.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return name


def run_lm_eval(chat_url: str, model: str, items: Sequence[Item], out: Path, task: str = "gsm8k",
                max_gen_toks: int = 512, concurrency: int = 16) -> list[LMEvalSample]:
    """lm-eval's own CLI (``local-chat-completions``, offline) on ``items`` against an OpenAI-compatible
    ``chat_url`` (``.../v1/chat/completions``); its per-document scores, from its logged samples."""
    name = write_task(out / "task", items, task)
    shutil.rmtree(out / "lm-eval", ignore_errors=True)  # only this run's samples are read back
    command = ["lm_eval", "run", "--model", "local-chat-completions", "--tasks", name,
               "--include_path", str(out / "task"), "--apply_chat_template", "--log_samples",
               "--output_path", str(out / "lm-eval"), "--gen_kwargs", f"max_gen_toks={max_gen_toks}",
               "--model_args", f"model={model},base_url={chat_url},num_concurrent={concurrency},max_retries=1,"
               "tokenized_requests=False"]
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1",
           "OPENAI_API_KEY": os.environ.get("OPENAI_API_KEY", "unused")}
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"lm_eval failed ({done.returncode}): {done.stderr[-2000:]}")
    by_doc: dict[int, dict[str, Any]] = {}
    for path in sorted((out / "lm-eval").rglob(f"samples_{name}_*.jsonl")):
        for line in path.read_text().splitlines():
            s = json.loads(line)  # one record per document and filter
            doc = by_doc.setdefault(s["doc_id"], {"text": s["resps"][0][0], "gold": s["doc"]["answer"],
                                                  "filtered": {}, "correct": {}})
            doc["filtered"][s["filter"]] = s["filtered_resps"][0]
            doc["correct"][s["filter"]] = bool(s["exact_match"])
    return [LMEvalSample(doc_id=i, **by_doc[i]) for i in sorted(by_doc)]
