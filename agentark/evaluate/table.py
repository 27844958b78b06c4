"""Result tables: several runs on the same held-out items, each paired with a baseline run.

A run is any trace file or run directory (``agentark generate`` / ``evaluate`` output), whatever system
made it: a single model, self-consistency, a debate. Rows are restricted to the items every run
answered, so runs of different sizes (a debate on a stated subset) pair exactly; the table says n.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from pydantic import BaseModel

from agentark.evaluate.metrics import compare, compute_metrics
from agentark.traces.schema import QuestionTrace


class TableRow(BaseModel):
    """One run on the common items: accuracy with its 95% CI and the paired comparison with the baseline."""

    name: str
    n: int
    accuracy: float
    accuracy_ci: tuple[float, float]
    difference: float | None
    difference_ci: tuple[float, float] | None
    mcnemar_p: float | None
    relative_gain: float | None
    generated_tokens_per_query: float
    capped_share: float

    def cells(self) -> list[str]:
        """The row as the table prints it, in :data:`COLUMNS` order ("—" where nothing is paired)."""
        versus = ("—" if self.difference is None else
                  f"{self.difference:+.3f} [{self.difference_ci[0]:+.3f}, {self.difference_ci[1]:+.3f}]")
        return [self.name, str(self.n), f"{self.accuracy:.3f} [{self.accuracy_ci[0]:.3f}, {self.accuracy_ci[1]:.3f}]",
                versus, "—" if self.mcnemar_p is None else f"{self.mcnemar_p:.3g}",
                "—" if self.relative_gain is None else f"{100 * self.relative_gain:+.1f}%",
                f"{self.generated_tokens_per_query:.0f}", f"{100 * self.capped_share:.1f}%"]


COLUMNS = ("system", "n", "accuracy (95% CI)", "difference (95% CI)", "McNemar p", "relative", "gen tokens/q", "capped")


def capped_share(traces: Sequence[QuestionTrace]) -> float:
    """Share of final answers (each agent's last turn) that hit the token cap."""
    finals = [turn for trace in traces for turn in trace.final_turns()]
    return sum(t.finish_reason == "length" for t in finals) / len(finals) if finals else 0.0


def comparison_table(runs: Mapping[str, Sequence[QuestionTrace]], baseline: str) -> list[TableRow]:
    """Every run on the items all runs share, paired with ``runs[baseline]`` (McNemar, bootstrap CI)."""
    if baseline not in runs:
        raise ValueError(f"baseline {baseline!r} is not among the runs {list(runs)}")
    common = set.intersection(*({t.item_id for t in traces} for traces in runs.values()))
    if not common:
        raise ValueError("the runs share no item: compare runs on the same split and items")
    subset = {name: sorted((t for t in traces if t.item_id in common), key=lambda t: t.item_id)
              for name, traces in runs.items()}
    metrics = {name: compute_metrics(traces, name=name) for name, traces in subset.items()}
    base = metrics[baseline]
    rows = []
    for name, m in metrics.items():
        paired = None if name == baseline else compare(m, base)
        rows.append(TableRow(
            name=name, n=m.n, accuracy=m.accuracy, accuracy_ci=m.accuracy_ci,
            difference=paired and paired["difference"]["mean"],
            difference_ci=paired and (paired["difference"]["lo"], paired["difference"]["hi"]),
            mcnemar_p=paired and paired["mcnemar"]["p_value"],
            relative_gain=(m.accuracy / base.accuracy - 1) if paired and base.accuracy > 0 else None,
            generated_tokens_per_query=m.generated_tokens_per_query, capped_share=capped_share(subset[name]),
        ))
    return rows


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A Markdown table, the one renderer of every table the package writes (results/ files, the gate's
    report): a ``|`` or a line break inside a cell is escaped, so it cannot break its row."""

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in cells) + " |"

    return "\n".join([line(headers), "|" + "---|" * len(headers), *map(line, rows)])


def to_markdown(rows: Sequence[TableRow], baseline: str) -> str:
    """The comparison table as Markdown, for results/ files."""
    header = [c if c != "difference (95% CI)" else f"vs {baseline} (95% CI)" for c in COLUMNS]
    return markdown_table(header, (r.cells() for r in rows)) + "\n"
