"""Result tables: runs paired with a baseline on their common items, and the `agentark compare` command."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from agentark.cli import app
from agentark.evaluate.stats import mcnemar
from agentark.evaluate.table import capped_share, comparison_table, to_markdown
from agentark.traces.store import TraceStore

from trace_factory import GOLD, make_trace


def run(correct: list[bool], prefix: str = "q", system: str = "single"):
    return [make_trace(f"{prefix}{i}", [[GOLD if c else "3"]], system=system) for i, c in enumerate(correct)]


def test_rows_pair_every_run_with_the_baseline_on_common_items():
    base = run([True, False, False, False, True, False])
    student = run([True, True, True, False, True, False])
    debate = run([True, True, True, True])  # a debate on a subset: only q0..q3 are common
    rows = {r.name: r for r in comparison_table({"base": base, "student": student, "debate": debate}, "base")}
    assert {r.n for r in rows.values()} == {4}
    assert rows["base"].accuracy == 0.25 and rows["base"].mcnemar_p is None and rows["base"].difference is None
    assert rows["student"].accuracy == 0.75 and rows["student"].difference == pytest.approx(0.5)
    assert rows["student"].relative_gain == pytest.approx(2.0)
    assert rows["student"].mcnemar_p == pytest.approx(
        mcnemar([True, True, True, False], [True, False, False, False])["p_value"]
    )
    assert rows["debate"].accuracy == 1.0
    table = to_markdown(list(rows.values()), "base")
    assert "| student | 4 | 0.750" in table and "+200.0%" in table
    with pytest.raises(ValueError, match="baseline"):
        comparison_table({"a": base}, "b")
    with pytest.raises(ValueError, match="share no item"):
        comparison_table({"a": base, "b": run([True], prefix="other")}, "a")


def test_capped_share_counts_final_turns_cut_by_the_token_cap():
    traces = run([True, False])
    traces[0].turns[0].finish_reason = "length"
    assert capped_share(traces) == 0.5


def test_compare_command_writes_the_markdown_table(tmp_path):
    for name, correct in (("base", [True, False, False]), ("student", [True, True, False])):
        TraceStore(tmp_path / name).append(run(correct))
    out = tmp_path / "table.md"
    result = CliRunner().invoke(
        app, ["compare", str(tmp_path / "base"), f"rsft={tmp_path / 'student'}", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "| rsft | 3 | 0.667" in out.read_text() and "| base | 3 | 0.333" in out.read_text()
    missing = CliRunner().invoke(app, ["compare", str(tmp_path / "nope")])
    assert missing.exit_code != 0 and "nope" in missing.output
