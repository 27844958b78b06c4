"""What one system did on a set of questions: accuracy, cost, latency and, for teams, self-correction.

Every function here is a pure function of :class:`~agentark.traces.schema.QuestionTrace` records
of *one* system on *one* set of items, so metrics can be recomputed from stored traces at any time.

Definitions (the report and the gate rely on them):

* **accuracy** — share of questions whose final answer (flexible extraction) is right, i.e.
  ``trace.final_correct``.
* **strict accuracy** — the same final-answer rule, applied to *strict* extractions only (``\\boxed{}``
  or "The answer is ..."): the summariser's strict answer when it gave one, else the majority vote
  over the final round's strict answers (a single agent's own strict answer). It measures answers
  the model *stated* rather than ones guessed from the last number in the text.
* **latency per query** — end to end as a user waits: agents of one round run in parallel and
  rounds run one after another, so it is the sum over rounds of the slowest turn of that round.
  A runner that timed each query itself passes ``wall_latencies`` instead.
* **cost** — from :class:`Pricing`: GPU time (rate x GPUs x wall time, shared by all queries of
  the run) or per-token prices.
* **self-correction** — per round transition, how many agent answers went wrong→right and
  right→wrong; accuracy per round as the mean agent and as the majority vote. A question whose
  debate stopped early on consensus keeps its last answers in later rounds (carry-forward), so every
  round is measured on every question.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, computed_field

from agentark.evaluate.stats import bootstrap_ci, mcnemar, paired_bootstrap_diff, percentiles, relative_ratio_ci
from agentark.mas.debate import has_consensus
from agentark.tasks.grading import majority_vote
from agentark.traces.schema import AgentTurn, QuestionTrace


class Pricing(BaseModel):
    """How queries are charged.

    ``gpu_hour``: a self-hosted deployment pays for GPU time, so a run's cost is
    ``usd_per_gpu_hour x gpus x wall time`` spread over its queries — batching lowers it.
    ``tokens``: an API bill, ``prompt and generated tokens x their per-million prices``.
    """

    model_config = ConfigDict(extra="forbid")

    mode: Literal["gpu_hour", "tokens"] = "gpu_hour"
    usd_per_gpu_hour: float = Field(2.5, ge=0.0)
    gpus: int = Field(1, ge=1)
    usd_per_million_prompt_tokens: float = Field(0.0, ge=0.0)
    usd_per_million_generated_tokens: float = Field(0.0, ge=0.0)

    def cost_per_query(self, n: int, wall_time_s: float, prompt_tokens_per_query: float,
                       generated_tokens_per_query: float) -> float:
        if self.mode == "gpu_hour":
            return self.usd_per_gpu_hour * self.gpus * wall_time_s / 3600.0 / n
        return (prompt_tokens_per_query * self.usd_per_million_prompt_tokens
                + generated_tokens_per_query * self.usd_per_million_generated_tokens) / 1e6


class RoundAccuracy(BaseModel):
    round: int
    mean_agent: float = Field(description="Mean over questions of the share of agents that are right.")
    majority: float = Field(description="Share of questions whose majority answer of the round is right.")


class RoundFlips(BaseModel):
    """Agent answers that changed correctness from one round to the next (all questions, all agents)."""

    from_round: int
    to_round: int
    wrong_to_right: int
    right_to_wrong: int

    @computed_field  # type: ignore[prop-decorator]
    @property
    def net(self) -> int:
        return self.wrong_to_right - self.right_to_wrong


class RoundStats(BaseModel):
    """Round-by-round behaviour of a team of agents (debate, or one round for self-consistency)."""

    agents: int
    mean_rounds_run: float
    rounds: list[RoundAccuracy]
    flips: list[RoundFlips]
    consensus_rate: float = Field(description="Share of questions whose final-round agents all gave the same answer.")


class SystemMetrics(BaseModel):
    """Everything the report and the gate need about one system; per-item vectors keep it pairable."""

    model_config = ConfigDict(ser_json_inf_nan="constants")  # an instant run has infinite throughput

    name: str
    n: int
    accuracy: float
    accuracy_ci: tuple[float, float]
    strict_accuracy: float
    strict_accuracy_ci: tuple[float, float]
    prompt_tokens_per_query: float
    generated_tokens_per_query: float
    calls_per_query: float
    latency_mean_s: float
    latency_p50_s: float
    latency_p95_s: float
    latency_p99_s: float
    wall_time_s: float
    throughput_qps: float
    generated_tokens_per_s: float
    cost_per_1k_usd: float
    rounds: RoundStats | None = Field(None, description="Only for systems with more than one agent.")
    item_ids: list[str]
    correct: list[bool]
    latencies_s: list[float]

    def correct_by_id(self) -> dict[str, bool]:
        return dict(zip(self.item_ids, self.correct, strict=True))


# --- per-question quantities ----------------------------------------------------------------------


def vote_correct(turns: Sequence[AgentTurn], strict: bool = False) -> bool:
    """Whether the majority answer of ``turns`` is right (the same answer always grades the same)."""
    answers = [t.answer_strict if strict else t.answer for t in turns]
    winner = majority_vote(answers)
    return winner is not None and any(
        (t.correct_strict if strict else t.correct) for t, a in zip(turns, answers, strict=True) if a == winner
    )


def strict_final_correct(trace: QuestionTrace) -> bool:
    """The final-answer rule of the system, applied to strict extractions (see the module docstring)."""
    summary = next((t for t in trace.turns if t.role == "summarizer" and t.answer_strict is not None), None)
    if summary is not None:
        return summary.correct_strict
    return vote_correct(trace.final_turns(), strict=True)


def query_latency(trace: QuestionTrace) -> float:
    """Sum over rounds of the slowest turn of the round (a summariser is a round of its own)."""
    slowest: dict[int, float] = {}
    for turn in trace.turns:
        slowest[turn.round] = max(slowest.get(turn.round, 0.0), turn.latency_s)
    return sum(slowest.values())


def carried_round(trace: QuestionTrace, round_: int) -> list[AgentTurn]:
    """Solver turns of ``round_``, or of the last round run when the question stopped earlier."""
    return trace.round_turns(min(round_, trace.n_rounds - 1))


# --- across questions -----------------------------------------------------------------------------


def _check_one_run(traces: Sequence[QuestionTrace]) -> None:
    """Metrics over a mix of systems or repeated questions would be silently wrong: refuse them."""
    if not traces:
        raise ValueError("no traces to compute metrics on")
    runs = {(t.system, t.model_id) for t in traces}
    if len(runs) > 1:
        raise ValueError(f"traces mix several systems/models: {sorted(runs)}")
    ids = [t.item_id for t in traces]
    if len(set(ids)) != len(ids):
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        raise ValueError(f"duplicate item ids in traces: {dupes[:5]}")


def round_accuracy(traces: Sequence[QuestionTrace]) -> list[RoundAccuracy]:
    """Mean-agent and majority accuracy of every round up to the longest debate, with carry-forward."""
    n_rounds = max(t.n_rounds for t in traces)
    return [
        RoundAccuracy(
            round=r,
            mean_agent=float(np.mean([np.mean([t.correct for t in carried_round(tr, r)]) for tr in traces])),
            majority=float(np.mean([vote_correct(carried_round(tr, r)) for tr in traces])),
        )
        for r in range(n_rounds)
    ]


def round_flips(traces: Sequence[QuestionTrace]) -> list[RoundFlips]:
    """Wrong→right and right→wrong changes of each agent's answer between consecutive rounds."""
    n_rounds = max(t.n_rounds for t in traces)
    flips = []
    for r in range(n_rounds - 1):
        up = down = 0
        for trace in traces:
            for agent in range(trace.n_agents):
                turns = trace.agent_turns(agent)
                if not turns:
                    continue
                before, after = turns[min(r, len(turns) - 1)].correct, turns[min(r + 1, len(turns) - 1)].correct
                up += (not before) and after
                down += before and not after
        flips.append(RoundFlips(from_round=r, to_round=r + 1, wrong_to_right=up, right_to_wrong=down))
    return flips


def round_stats(traces: Sequence[QuestionTrace]) -> RoundStats:
    return RoundStats(
        agents=max(t.n_agents for t in traces),
        mean_rounds_run=float(np.mean([t.n_rounds for t in traces])),
        rounds=round_accuracy(traces),
        flips=round_flips(traces),
        consensus_rate=float(np.mean([has_consensus(t.final_turns()) for t in traces])),
    )


def compute_metrics(
    traces: Sequence[QuestionTrace],
    pricing: Pricing | None = None,
    wall_time_s: float | None = None,
    concurrency: int = 1,
    wall_latencies: Mapping[str, float] | None = None,
    name: str | None = None,
    n_boot: int = 2000,
    seed: int = 0,
) -> SystemMetrics:
    """Metrics of one system's traces on one item set.

    ``wall_time_s`` is the run's measured wall time (measured by :func:`agentark.pipeline.evaluate_job`);
    without it the run is assumed to serve ``concurrency`` queries at a time, i.e. wall time
    ``sum(latency per query) / concurrency``. Throughput and GPU-hour cost follow from it.
    ``name`` labels the system in reports (default: the traces' system name).
    """
    _check_one_run(traces)
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    pricing = pricing or Pricing()
    n = len(traces)
    if wall_latencies is not None:
        missing = [t.item_id for t in traces if t.item_id not in wall_latencies]
        if missing:
            raise ValueError(f"wall_latencies lacks {len(missing)} item ids, e.g. {missing[:3]}")
        latencies = [float(wall_latencies[t.item_id]) for t in traces]
    else:
        latencies = [query_latency(t) for t in traces]
    wall = float(wall_time_s) if wall_time_s is not None else sum(latencies) / concurrency
    correct = [t.final_correct for t in traces]
    acc, acc_lo, acc_hi = bootstrap_ci(correct, n_boot=n_boot, seed=seed)
    strict, strict_lo, strict_hi = bootstrap_ci([strict_final_correct(t) for t in traces], n_boot=n_boot, seed=seed)
    prompt_tokens = sum(t.prompt_tokens for t in traces) / n
    generated_tokens = sum(t.completion_tokens for t in traces) / n
    pct = percentiles(latencies, (50, 95, 99))
    return SystemMetrics(
        name=name or traces[0].system,
        n=n,
        accuracy=acc,
        accuracy_ci=(acc_lo, acc_hi),
        strict_accuracy=strict,
        strict_accuracy_ci=(strict_lo, strict_hi),
        prompt_tokens_per_query=prompt_tokens,
        generated_tokens_per_query=generated_tokens,
        calls_per_query=sum(len(t.turns) for t in traces) / n,
        latency_mean_s=float(np.mean(latencies)),
        latency_p50_s=pct[50],
        latency_p95_s=pct[95],
        latency_p99_s=pct[99],
        wall_time_s=wall,
        throughput_qps=n / wall if wall > 0 else float("inf"),
        generated_tokens_per_s=generated_tokens * n / wall if wall > 0 else float("inf"),
        cost_per_1k_usd=1000.0 * pricing.cost_per_query(n, wall, prompt_tokens, generated_tokens),
        rounds=round_stats(traces) if max(t.n_agents for t in traces) > 1 else None,
        item_ids=[t.item_id for t in traces],
        correct=correct,
        latencies_s=latencies,
    )


def aligned_correct(a: SystemMetrics, b: SystemMetrics) -> tuple[np.ndarray, np.ndarray]:
    """Per-item correctness of ``a`` and ``b`` in one item order; the item sets must be equal."""
    only_a, only_b = set(a.item_ids) - set(b.item_ids), set(b.item_ids) - set(a.item_ids)
    if only_a or only_b:
        raise ValueError(
            f"{a.name} and {b.name} were evaluated on different items ({len(only_a)} only in {a.name}, "
            f"{len(only_b)} only in {b.name}, e.g. {sorted(only_a | only_b)[:3]}); "
            "paired comparison needs the same items"
        )
    by_id = b.correct_by_id()
    return np.array(a.correct, dtype=bool), np.array([by_id[i] for i in a.item_ids], dtype=bool)


def compare(
    student: SystemMetrics, mas: SystemMetrics, n_boot: int = 2000, alpha: float = 0.05, seed: int = 0
) -> dict[str, Any]:
    """Paired comparison of a candidate (``student``) with the multi-agent system on the same items.

    Returns ``n``, both accuracies, ``difference`` (student − MAS, with CI), ``relative`` (student / MAS,
    with CI; the gate tests its lower bound) and ``mcnemar`` (``b01`` = MAS right where the student was
    wrong, ``b10`` = the reverse, exact p-value).
    """
    s, m = aligned_correct(student, mas)
    diff, diff_lo, diff_hi = paired_bootstrap_diff(s, m, n_boot=n_boot, alpha=alpha, seed=seed)
    ratio, ratio_lo, ratio_hi = relative_ratio_ci(s, m, n_boot=n_boot, alpha=alpha, seed=seed)
    return {
        "n": int(s.size),
        "student": student.name,
        "mas": mas.name,
        "accuracy_student": float(s.mean()),
        "accuracy_mas": float(m.mean()),
        "difference": {"mean": diff, "lo": diff_lo, "hi": diff_hi},
        "relative": {"ratio": ratio, "lo": ratio_lo, "hi": ratio_hi},
        "mcnemar": mcnemar(s, m),
    }


def summarize_debate(traces: Sequence[QuestionTrace]) -> dict[str, Any]:
    """The numbers behind ``agentark summarize``, as a nested dict of scalars (easy to tabulate)."""
    _check_one_run(traces)
    stats = round_stats(traces)
    last = stats.rounds[-1]
    return {
        "questions": len(traces),
        "agents": stats.agents,
        "mean_rounds_run": stats.mean_rounds_run,
        "accuracy": {
            "final": float(np.mean([t.final_correct for t in traces])),
            "final_strict": float(np.mean([strict_final_correct(t) for t in traces])),
            "majority_minus_mean_agent": last.majority - last.mean_agent,
        },
        "per_round": {f"round_{r.round}": {"mean_agent": r.mean_agent, "majority": r.majority,
                                           "prompt_cached_share": prompt_cached_share(traces, r.round)}
                      for r in stats.rounds},
        "consensus_rate": stats.consensus_rate,
        "flips": {
            f"round_{f.from_round}->{f.to_round}": f.model_dump(include={"wrong_to_right", "right_to_wrong", "net"})
            for f in stats.flips
        },
        "tokens_per_question": {
            "prompt": sum(t.prompt_tokens for t in traces) / len(traces),
            "generated": sum(t.completion_tokens for t in traces) / len(traces),
        },
    }


def prompt_cached_share(traces: Sequence[QuestionTrace], round_: int) -> float:
    """Share of the prompt tokens sent in ``round_`` (solver turns of the questions that ran it) that
    the engine served from its prompt cache: how much of a debate round's prefill was reused."""
    turns = [t for trace in traces for t in trace.round_turns(round_)]
    sent = sum(t.prompt_tokens for t in turns)
    return sum(t.cached_prompt_tokens for t in turns) / sent if sent else 0.0


def sc_k_for_budget(debate_traces: Sequence[QuestionTrace], single_traces: Sequence[QuestionTrace]) -> int:
    """k for self-consistency so that it generates about as many tokens per query as the debate.

    "Debate or Vote" found voting explains most of debate's gain; comparing them fairly needs equal
    generation budgets, so k = round(debate tokens / single-answer tokens), at least 1.
    """
    if not debate_traces or not single_traces:
        raise ValueError("need debate and single-agent traces to match budgets")
    debate = sum(t.completion_tokens for t in debate_traces) / len(debate_traces)
    single = sum(t.completion_tokens for t in single_traces) / len(single_traces)
    if single <= 0:
        raise ValueError("single-agent traces generated no tokens; cannot match a token budget")
    return max(1, round(debate / single))


class EvalResult(BaseModel):
    """One evaluated system under its report name (e.g. ``"student-rsft"``): traces, wall time, metrics."""

    name: str
    traces: list[QuestionTrace]
    wall_time_s: float
    metrics: SystemMetrics

    @classmethod
    def from_traces(cls, name: str, traces: Sequence[QuestionTrace], wall_time_s: float,
                    pricing: Pricing | None = None) -> EvalResult:
        metrics = compute_metrics(traces, pricing, wall_time_s=wall_time_s, name=name)
        return cls(name=name, traces=list(traces), wall_time_s=wall_time_s, metrics=metrics)
