"""The pilot report: ``report.md`` and a self-contained ``report.html``, plus the plots as PNG files.

The decision and its per-gate reasons come first, so a reader gets the answer on one screen; the
evidence follows (systems table, paired comparison, plots). The HTML embeds every plot as a base64
PNG and has no external assets, so it can be mailed or archived as one file. Both documents are
rendered from the same list of sections, so they always say the same thing.
"""

from __future__ import annotations

import base64
import html
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from agentark.evaluate.metrics import EvalResult, SystemMetrics
from agentark.evaluate.robustness import RobustnessTable
from agentark.evaluate.table import markdown_table
from agentark.gate.decide import Decision

logger = logging.getLogger(__name__)

OUTCOME_COLOURS = {"adopt": "#1b7f3b", "hybrid": "#b36b00", "keep-multi-agent": "#a11d2b"}


@dataclass
class Section:
    """One titled block of the report: paragraphs, an optional table, an optional plot."""

    title: str
    paragraphs: list[str] = field(default_factory=list)
    headers: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    figure: str | None = None  # PNG file name


def _num(x: float | None, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:.{digits}f}"


# --- plots ----------------------------------------------------------------------------------------


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buffer = BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return buffer.getvalue()


def pareto_figure(metrics: Sequence[SystemMetrics]) -> Figure:
    """Accuracy (with CI) against generated tokens per query; the frontier joins the undominated systems."""
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    for m in metrics:
        ax.errorbar(m.generated_tokens_per_query, m.accuracy, fmt="o", capsize=3,
                    yerr=[[m.accuracy - m.accuracy_ci[0]], [m.accuracy_ci[1] - m.accuracy]])
        ax.annotate(m.name, (m.generated_tokens_per_query, m.accuracy), textcoords="offset points", xytext=(5, 5))
    frontier, best = [], -1.0
    for m in sorted(metrics, key=lambda m: (m.generated_tokens_per_query, -m.accuracy)):
        if m.accuracy > best:
            frontier.append(m)
            best = m.accuracy
    ax.plot([m.generated_tokens_per_query for m in frontier], [m.accuracy for m in frontier], "--", color="grey",
            label="Pareto frontier")
    tokens = [m.generated_tokens_per_query for m in metrics if m.generated_tokens_per_query > 0]
    if tokens and max(tokens) > 20 * min(tokens):
        ax.set_xscale("log")  # a debate can generate 10-50x a single answer
    ax.set_xlabel("generated tokens per query")
    ax.set_ylabel("accuracy")
    ax.set_title("Accuracy vs generation cost")
    ax.legend(loc="lower right")
    return fig


def robustness_figure(robustness: Mapping[str, RobustnessTable]) -> Figure:
    """Accuracy per perturbation type (and clean), grouped by type, one bar per system."""
    types = sorted({row.type for table in robustness.values() for row in table.rows})
    groups = ["clean", *types]
    fig = Figure(figsize=(max(6, 1.5 * len(groups)), 4))
    ax = fig.add_subplot()
    width = 0.8 / len(robustness)
    for j, (name, table) in enumerate(robustness.items()):
        by_type = {row.type: row.accuracy for row in table.rows}
        values = [table.clean_accuracy] + [by_type.get(t, math.nan) for t in types]
        ax.bar([i + j * width for i in range(len(groups))], values, width=width, label=name)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(groups))], groups, rotation=20)
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.set_title("Robustness per perturbation type")
    ax.legend()
    return fig


def rounds_figure(metrics: Sequence[SystemMetrics]) -> Figure:
    """Accuracy per debate round: majority vote (solid) and mean agent (dashed)."""
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    for m in metrics:
        rounds = [r.round for r in m.rounds.rounds]
        line = ax.plot(rounds, [r.majority for r in m.rounds.rounds], "o-", label=f"{m.name} majority")[0]
        ax.plot(
            rounds, [r.mean_agent for r in m.rounds.rounds], "s--", color=line.get_color(), label=f"{m.name} mean agent"
        )
    ax.set_xlabel("round")
    ax.set_ylabel("accuracy")
    ax.set_xticks(sorted({r.round for m in metrics for r in m.rounds.rounds}))
    ax.set_title("Round-by-round accuracy")
    ax.legend()
    return fig


# --- sections -------------------------------------------------------------------------------------


def _decision_section(decision: Decision) -> Section:
    paragraphs = [decision.summary]
    if decision.hybrid:
        h = decision.hybrid
        paragraphs.append(f"Hybrid estimate: threshold {h.threshold:.3g}, fallback share {h.fallback_share:.1%}, "
                          f"accuracy {h.accuracy:.3f}, cost ${1000 * h.cost_per_query:.4f} / 1k queries.")
    return Section(f"Decision: {decision.outcome}", paragraphs, ["gate", "status", "reason"],
                   [[g.name, g.status, g.reason] for g in decision.gates])


def _systems_section(metrics: Sequence[SystemMetrics], decoding: str | None = None) -> Section:
    headers = ["system", "n", "accuracy [95% CI]", "strict acc.", "prompt tok/q", "gen. tok/q", "calls/q",
               "offline batch q/s", "$ / 1k q"]
    rows = [[m.name, str(m.n), f"{_num(m.accuracy)} [{_num(m.accuracy_ci[0])}, {_num(m.accuracy_ci[1])}]",
             _num(m.strict_accuracy), _num(m.prompt_tokens_per_query, 1), _num(m.generated_tokens_per_query, 1),
             _num(m.calls_per_query, 2), _num(m.throughput_qps, 2), _num(m.cost_per_1k_usd, 4)] for m in metrics]
    notes = ["Offline batch q/s is throughput of the evaluation batches, not latency: a user's latency is in "
             "the served-latency section."]
    return Section("Systems (same items)", ([decoding] if decoding else []) + notes, headers, rows)


def _served_section(decision: Decision) -> Section:
    served = decision.served
    rows = [[s.system, s.load, f"{s.requests - s.errors}/{s.requests}", _num(s.p50_s, 2), _num(s.p95_s, 2),
             _num(s.p99_s, 2), _num(s.ttft_p50_s, 2), _num(s.throughput_rps, 3),
             ", ".join(f"{k} {v}" for k, v in sorted(s.routes.items())) or "–"] for s in served.values()]
    paragraphs = ["Each system was served in turn on this machine (agentark serve) and measured by agentark "
                  "loadtest: end-to-end latency per request as a client sees it, at the stated load."]
    student, team = served.get(decision.student), served.get(decision.mas)
    if student and team and student.p50_s and team.p50_s:
        paragraphs.append(f"Distilled p50 {student.p50_s:.2f} s vs team p50 {team.p50_s:.2f} s "
                          f"({team.p50_s / student.p50_s:.1f}x faster) at {student.load}.")
    return Section("Served latency", paragraphs, ["system", "load", "ok", "p50 s", "p95 s", "p99 s", "TTFT p50 s",
                                                  "req/s", "answered by"], rows)


def _comparison_section(decision: Decision) -> Section:
    c = decision.comparison
    d, r, mc = c["difference"], c["relative"], c["mcnemar"]
    return Section(f"{c['student']} vs {c['mas']} (paired)", [
        f"Accuracy {_num(c['accuracy_student'])} vs {_num(c['accuracy_mas'])} on {c['n']} items; "
        f"difference {d['mean']:+.3f} [{_num(d['lo'])}, {_num(d['hi'])}]; ratio {_num(r['ratio'])} "
        f"[{_num(r['lo'])}, {_num(r['hi'])}].",
        f"McNemar: {mc['b01']} items only {c['mas']} got right, {mc['b10']} only {c['student']} got right, "
        f"exact p = {mc['p_value']:.3g}.",
    ])


def _robustness_section(robustness: Mapping[str, RobustnessTable]) -> Section:
    rows = [
        [
            name,
            row.type,
            str(row.n),
            _num(row.accuracy),
            _num(row.clean_accuracy),
            _num(row.drop),
            _num(row.failure_rate),
        ]
        for name, table in robustness.items()
        for row in [*table.rows, table.overall]
    ]
    return Section("Robustness", [
        "Drop and failure rate use perturbed items whose clean source was evaluated; failure rate = share "
        "wrong among those whose clean version was right."],
        ["system", "perturbation", "n", "accuracy", "clean (paired)", "drop", "failure rate"], rows, "robustness.png")


def _rounds_section(metrics: Sequence[SystemMetrics]) -> Section:
    rows = []
    for m in metrics:
        flips = {f.to_round: f for f in m.rounds.flips}
        for r in m.rounds.rounds:
            f = flips.get(r.round)
            rows.append([m.name, str(r.round), _num(r.mean_agent), _num(r.majority),
                         str(f.wrong_to_right) if f else "–", str(f.right_to_wrong) if f else "–"])
    paragraphs = [
        f"{m.name}: consensus rate {m.rounds.consensus_rate:.1%}, mean rounds run {m.rounds.mean_rounds_run:.2f}."
        for m in metrics
    ]
    return Section(
        "Debate rounds",
        paragraphs,
        ["system", "round", "mean agent", "majority", "wrong→right", "right→wrong"],
        rows,
        "rounds.png",
    )


def _ood_section(metrics: Sequence[SystemMetrics], ood: Mapping[str, SystemMetrics]) -> Section:
    in_dist = {m.name: m for m in metrics}
    rows = [[name, str(m.n), f"{_num(m.accuracy)} [{_num(m.accuracy_ci[0])}, {_num(m.accuracy_ci[1])}]",
             _num(in_dist[name].accuracy) if name in in_dist else "–", _num(m.generated_tokens_per_query, 1)]
            for name, m in ood.items()]
    return Section("Out of distribution", [
        "Single-agent accuracy on a task the students were not trained on, next to the in-distribution accuracy."],
        ["system", "n", "OOD accuracy [95% CI]", "in-distribution accuracy", "gen. tok/q"], rows)


def _review_section(review: Mapping[str, Mapping[str, float]]) -> Section:
    rows = [[name, str(r["n"]), _num(r["accuracy_turn1"]), _num(r["accuracy_turn2"]), f"{r['delta']:+.3f}",
             str(r["wrong_to_right"]), str(r["right_to_wrong"])] for name, r in review.items()]
    return Section("Self-correction probe", [
        "Each single model answers, is asked to review its answer, and answers again (two turns)."],
        ["system", "n", "turn 1", "turn 2", "Δ", "wrong→right", "right→wrong"], rows)


def build_sections(metrics: Sequence[SystemMetrics], decision: Decision,
                   robustness: Mapping[str, RobustnessTable] | None,
                   ood: Mapping[str, SystemMetrics] | None = None,
                   review: Mapping[str, Mapping[str, float]] | None = None,
                   decoding: str | None = None,
                   ) -> tuple[list[Section], dict[str, Figure]]:
    """Report sections in reading order, and the figures they refer to by file name."""
    team = [m for m in metrics if m.rounds is not None]
    sections = [
        _decision_section(decision),
        _systems_section(metrics, decoding),
        _comparison_section(decision),
        Section("Accuracy vs generated tokens", figure="pareto.png"),
    ]
    figures = {"pareto.png": pareto_figure(metrics)}
    if decision.served:
        sections.append(_served_section(decision))
    if robustness:
        sections.append(_robustness_section(robustness))
        figures["robustness.png"] = robustness_figure(robustness)
    if team:
        sections.append(_rounds_section(team))
        figures["rounds.png"] = rounds_figure(team)
    if review:
        sections.append(_review_section(review))
    if ood:
        sections.append(_ood_section(metrics, ood))
    return sections, figures


# --- rendering ------------------------------------------------------------------------------------


def render_markdown(title: str, sections: Sequence[Section]) -> str:
    lines = [f"# {title}", ""]
    for s in sections:
        lines += [f"## {s.title}", ""]
        for p in s.paragraphs:
            lines += [p, ""]
        if s.headers:
            lines += [markdown_table(s.headers, s.rows), ""]
        if s.figure:
            lines += [f"![{s.title}]({s.figure})", ""]
    return "\n".join(lines)


_CSS = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1em}th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left}
th{background:#f3f3f3}.outcome{color:#fff;padding:.6em 1em;border-radius:6px;font-size:1.4em}
.pass{color:#1b7f3b}.fail{color:#a11d2b;font-weight:bold}.skip{color:#777}img{max-width:100%}
"""


def render_html(title: str, outcome: str, sections: Sequence[Section], images: Mapping[str, bytes]) -> str:
    e = html.escape
    parts = [
        f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{e(title)}</title>"
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{e(title)}</h1>",
        f"<p class=\"outcome\" style=\"background:{OUTCOME_COLOURS.get(outcome, '#444')}\">{e(outcome)}</p>",
    ]
    for s in sections:
        parts.append(f"<h2>{e(s.title)}</h2>")
        parts += [f"<p>{e(p)}</p>" for p in s.paragraphs]
        if s.headers:
            parts.append("<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in s.headers) + "</tr>")
            for row in s.rows:
                parts.append("<tr>" + "".join(f"<td class=\"{e(c)}\">{e(c)}</td>" if c in ("pass", "fail", "skip")
                                              else f"<td>{e(c)}</td>" for c in row) + "</tr>")
            parts.append("</table>")
        if s.figure:
            data = base64.b64encode(images[s.figure]).decode("ascii")
            parts.append(f"<img src=\"data:image/png;base64,{data}\" alt=\"{e(s.title)}\">")
    parts.append("</body></html>")
    return "\n".join(parts)


def _metrics(result: EvalResult | SystemMetrics) -> SystemMetrics:
    return result.metrics if isinstance(result, EvalResult) else result


def write_report(out_dir: str | Path, results: Sequence[EvalResult | SystemMetrics], decision: Decision,
                 robustness: Mapping[str, RobustnessTable] | None = None,
                 title: str = "AgentArk pilot report",
                 ood: Mapping[str, EvalResult | SystemMetrics] | None = None,
                 review: Mapping[str, Mapping[str, float]] | None = None,
                 decoding: str | None = None) -> dict[str, Path]:
    """Write ``report.md``, ``report.html`` and the PNG plots to ``out_dir``; returns their paths by file name.

    ``robustness`` maps a system name to its :func:`~agentark.evaluate.robustness.robustness_table`;
    ``ood`` a system name to its results on the out-of-distribution task; ``review`` a system name to
    its :func:`~agentark.evaluate.robustness.review_metrics`; ``decoding`` one sentence on how each
    system decoded. The latency section appears when ``decision.served`` holds served measurements.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    metrics = [_metrics(r) for r in results]
    ood_metrics = {name: _metrics(r) for name, r in (ood or {}).items()}
    sections, figures = build_sections(metrics, decision, robustness, ood_metrics, review, decoding)
    images = {name: _png(fig) for name, fig in figures.items()}
    paths = {}
    for name, png in images.items():
        paths[name] = out / name
        paths[name].write_bytes(png)
    paths["report.md"] = out / "report.md"
    paths["report.md"].write_text(render_markdown(title, sections), encoding="utf-8")
    paths["report.html"] = out / "report.html"
    paths["report.html"].write_text(render_html(title, decision.outcome, sections, images), encoding="utf-8")
    logger.info("report written to %s", paths["report.html"])
    return paths
