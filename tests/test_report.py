"""The report: files written, HTML well formed and self-contained, decision on top, text escaped."""

from __future__ import annotations

from html.parser import HTMLParser

from agentark.evaluate.metrics import compute_metrics
from agentark.evaluate.robustness import robustness_table
from agentark.gate.decide import GateConfig, ServedLatency, decide
from agentark.gate.report import write_report

from trace_factory import make_trace, single_traces


class Collector(HTMLParser):
    def __init__(self):
        super().__init__()
        self.stack, self.images, self.text, self.headings = [], [], [], []

    def handle_starttag(self, tag, attrs):
        if tag not in ("meta", "img"):
            self.stack.append(tag)
        if tag == "img":
            self.images.append(dict(attrs)["src"])

    def handle_endtag(self, tag):
        assert self.stack and self.stack.pop() == tag, f"unbalanced </{tag}>"

    def handle_data(self, data):
        self.text.append(data)
        if self.stack and self.stack[-1] in ("h1", "h2"):
            self.headings.append(data)


def test_report_files_and_html(tmp_path):
    answers = [["7", "7", "1"], ["7", "7", "7"]]
    debate = compute_metrics([make_trace(f"q{i}", answers if i % 2 else answers[:1], latencies=[[1, 2, 3], [2, 2, 2]])
                              for i in range(6)], wall_time_s=40.0, name="debate")
    student_traces = single_traces([True, False, True, True, True, True], system="student<script>")
    student = compute_metrics(student_traces, wall_time_s=5.0, name="student<script>")
    perturbed = [
        t.model_copy(update={"item_id": f"{t.item_id}~add_distractor"}) for t in single_traces([True, False] * 3)
    ]
    robustness = {student.name: robustness_table(student_traces, perturbed)}
    served = {"student<script>": ServedLatency(system="student<script>", load="concurrency 2", requests=8, errors=0,
                                               p50_s=0.5, p95_s=0.9, p99_s=1.0, throughput_rps=3.0),
              "debate": ServedLatency(system="debate", load="concurrency 2", requests=8, errors=1, p50_s=2.0,
                                      p95_s=3.0, p99_s=3.5, throughput_rps=0.8)}
    decision = decide(student, debate, robustness[student.name], GateConfig(p95_latency_s=0.8), served=served)
    assert [g.status for g in decision.gates if g.name == "latency_p95"] == ["fail"]  # served 0.9 s > 0.8 s
    assert "served, concurrency 2" in decision.gates[1].reason

    paths = write_report(tmp_path / "report", [student, debate], decision, robustness,
                         decoding="Single models greedy; voting systems sampled at T=0.7.")

    assert set(paths) == {"report.md", "report.html", "pareto.png", "robustness.png", "rounds.png"}
    for name in ("pareto.png", "robustness.png", "rounds.png"):
        assert paths[name].read_bytes().startswith(b"\x89PNG")
    page = Collector()
    page.feed(paths["report.html"].read_text())
    page.close()
    assert not page.stack
    assert len(page.images) == 3 and all(src.startswith("data:image/png;base64,") for src in page.images)
    assert page.headings[1] == f"Decision: {decision.outcome}"  # right after the title
    text = "".join(page.text)
    assert decision.outcome in text and decision.gates[0].reason in text
    assert "student<script>" in text and "<script>" not in paths["report.html"].read_text()
    md = paths["report.md"].read_text()
    assert md.index(f"## Decision: {decision.outcome}") < md.index("## Systems")
    assert "## Served latency" in md and "Distilled p50 0.50 s vs team p50 2.00 s (4.0x faster) at concurrency 2" in md
    assert "voting systems sampled" in md and "offline batch q/s" in md and "p95 s" not in md.split("## Served")[0]


def test_report_has_ood_and_self_review_sections_when_given(tmp_path):
    student = compute_metrics(
        single_traces([True, True, False, True], system="student"), wall_time_s=2.0, name="student"
    )
    debate = compute_metrics([make_trace(f"q{i}", [["7", "7", "7"]]) for i in range(4)], wall_time_s=8.0, name="debate")
    ood = {"student": compute_metrics(single_traces([True, False, False, False], system="student"), wall_time_s=1.0,
                                         name="student")}
    review = {"student": {"n": 4, "accuracy_turn1": 0.75, "accuracy_turn2": 0.5, "delta": -0.25,
                          "wrong_to_right": 0, "right_to_wrong": 1}}
    decision = decide(student, debate, None)

    md = write_report(tmp_path, [student, debate], decision, ood=ood, review=review)["report.md"].read_text()

    ood_part = md[md.index("## Out of distribution"):]
    assert "| student | 4 | 0.250 [" in ood_part and "| 0.750 |" in ood_part  # OOD next to in-distribution
    assert "| student | 4 | 0.750 | 0.500 | -0.250 | 0 | 1 |" in md[md.index("## Self-correction probe"):]
    plain = write_report(tmp_path / "plain", [student, debate], decision)["report.md"].read_text()
    assert "Out of distribution" not in plain and "Self-correction" not in plain
