import json
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentark.tasks import SPLITS, TASK_NAMES, TASK_SETTINGS, Task, get_task, task_settings
from agentark.tasks.arithmetic import ArithmeticTask, evaluate_expression, format_expression
from agentark.tasks.choice import ChoiceTask, extract_choice
from agentark.tasks.gsm8k import GSM8KTask
from agentark.tasks.tabular import DataFormatError, JsonlTask


def reference_value(operands: list[int], operators: list[str]) -> int:
    """Precedence done differently from the package: fold products into a list of terms, then sum."""
    terms, signs = [operands[0]], [1]
    for op, x in zip(operators, operands[1:], strict=True):
        if op == "*":
            terms[-1] *= x
        else:
            terms.append(x)
            signs.append(1 if op == "+" else -1)
    return sum(s * t for s, t in zip(signs, terms, strict=True))


def write_jsonl(path, rows) -> str:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return str(path)


# --- arithmetic ----------------------------------------------------------------------------------------


def test_arithmetic_items_are_deterministic_and_stable_by_index():
    a = ArithmeticTask(seed=3).items("train", 50)
    assert a == ArithmeticTask(seed=3).items("train", 50)
    assert ArithmeticTask(seed=3).items("train", 10) == a[:10]  # asking for more never renumbers
    assert [i.id for i in a[:3]] == ["arith-train-000000", "arith-train-000001", "arith-train-000002"]
    assert a != ArithmeticTask(seed=4).items("train", 50)
    five = ArithmeticTask(seed=3, n_operands=5).items("train", 1)[0]
    assert len(five.meta["operands"]) == 5 and sum(five.question.count(op) for op in "+-*") == 4


def test_arithmetic_splits_are_disjoint_even_across_seeds():
    train = {i.question for s in (0, 1) for i in ArithmeticTask(seed=s, max_value=5).items("train", 400)}
    held = ArithmeticTask(seed=0, max_value=5).items("held-out", 400)
    assert not train & {i.question for i in held}
    assert len({i.question for i in held}) == 400  # no repeats within a split
    assert all(i.id.startswith("arith-held-out-") for i in held)


def test_arithmetic_answers_match_a_reference_evaluation():
    task = ArithmeticTask(n_operands=6, seed=1)
    for item in task.items("held-out", 200):
        operands, operators = item.meta["operands"], item.meta["operators"]
        assert len(operands) == 6 and all(0 <= x <= 30 for x in operands) and set(operators) <= {"+", "-", "*"}
        assert item.question == format_expression(operands, operators)
        assert int(item.answer) == reference_value(operands, operators)


@given(st.lists(st.integers(-50, 50), min_size=1, max_size=8).flatmap(
    lambda xs: st.tuples(st.just(xs), st.lists(st.sampled_from("+-*"), min_size=len(xs) - 1, max_size=len(xs) - 1))))
def test_evaluate_expression_matches_reference(case):
    operands, operators = case
    assert evaluate_expression(operands, operators) == reference_value(operands, operators)


def test_expression_formatting_and_validation():
    assert format_expression([3, 14, 7, 2], ["+", "*", "-"]) == "3+14*7-2"
    assert evaluate_expression([3, 14, 7, 2], ["+", "*", "-"]) == 99
    assert format_expression([3, -2], ["-"]) == "3-(-2)" and evaluate_expression([3, -2], ["-"]) == 5
    with pytest.raises(ValueError, match="operator"):
        evaluate_expression([1, 2], ["+", "+"])
    with pytest.raises(ValueError, match="unsupported"):
        evaluate_expression([1, 2], ["/"])


def test_arithmetic_prompt_extract_and_grade():
    task = get_task("arithmetic")
    item = task.items("train", 1)[0]
    prompt = task.question_prompt(item)
    assert f"What is the result of {item.question}?" in prompt and "\\boxed{answer}" in prompt
    completion = f"Multiplication first... so the result is \\boxed{{{item.answer}}}."
    answer = task.normalize(task.extract(completion).flexible)
    assert answer == item.answer and task.grade(answer, item.answer)
    assert not task.grade(str(int(item.answer) + 1), item.answer) and not task.grade(None, item.answer)


def test_arithmetic_argument_errors():
    with pytest.raises(ValueError, match="n_operands"):
        ArithmeticTask(n_operands=1)
    with pytest.raises(ValueError, match="split"):
        ArithmeticTask().items("test", 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="only"):
        ArithmeticTask(n_operands=2, max_value=1).items("train", 50)  # 4*3 = 12 expressions in all
    assert len(ArithmeticTask().items("train")) == 1000 and ArithmeticTask().items("train", 0) == []


# --- gsm8k ---------------------------------------------------------------------------------------------


def test_gsm8k_shared_file_splits(gsm8k_path):
    task = get_task("gsm8k", path=str(gsm8k_path))
    train, held = task.items("train"), task.items("held-out")
    assert (len(train), len(held)) == (6973, 500)
    assert train[0].id == "gsm8k-0" and held[0].id == "gsm8k-6973" and held[-1].id == "gsm8k-7472"
    assert train[0].answer == "72" and "48/2" in train[0].meta["solution"] and "####" not in train[0].meta["solution"]
    assert not {i.id for i in train} & {i.id for i in held}
    assert task.items("held-out", 3) == held[:3]
    assert all(task.normalize(i.answer) == i.answer for i in train + held)
    prompt = task.question_prompt(train[0])
    assert train[0].question in prompt and "\\boxed{answer}" in prompt


def test_gsm8k_grades_real_looking_completions(tmp_path):
    path = write_jsonl(tmp_path / "g.jsonl", [{"question": "q", "answer": "Work <<2*500=1000>>.\n#### 1,000"}])
    task = GSM8KTask(path, held_out=0)
    (item,) = task.items()
    assert item.answer == "1000"
    for text in ["She earns 2 * 500 = $1,000.\nThe answer is $1,000.", "\\boxed{1000}", "so **1000.00 dollars**"]:
        assert task.grade(task.normalize(task.extract(text).flexible), item.answer), text
    assert not task.grade(task.normalize(task.extract("The answer is 999.").flexible), item.answer)


@pytest.mark.parametrize(("line", "message"), [
    ("{not json", "invalid JSON"),
    ('{"question": "q"}', "missing field 'answer'"),
    ('{"question": "q", "answer": "42"}', "####"),
    ('{"question": "q", "answer": "x #### many"}', "not a number"),
    ('["q", "a"]', "JSON object"),
])
def test_gsm8k_malformed_file_names_file_and_line(tmp_path, line, message):
    good = json.dumps({"question": "q", "answer": "1 #### 1"})
    path = write_jsonl(tmp_path / "bad.jsonl", [good, "", line])
    with pytest.raises(DataFormatError, match=message) as err:
        GSM8KTask(path, held_out=0).items()
    assert str(err.value).startswith(f"{path}:3: ")  # the blank line 2 still counts
    assert isinstance(err.value, ValueError)


def test_gsm8k_too_large_held_out_and_missing_file(tmp_path):
    path = write_jsonl(tmp_path / "g.jsonl", [{"question": "q", "answer": "#### 1"}])
    with pytest.raises(ValueError, match="held_out=500"):
        GSM8KTask(path).items()
    with pytest.raises(FileNotFoundError):
        GSM8KTask(tmp_path / "missing.jsonl").items()


# --- jsonl / csv ---------------------------------------------------------------------------------------


def test_jsonl_task_fields_split_and_ids(tmp_path):
    rows = [{"q": f"What is {i}+1?", "a": i + 1, "key": f"k{i}"} for i in range(5)]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    task = get_task("jsonl", path=path, question_field="q", answer_field="a", id_field="key", held_out=2)
    train, held = task.items("train"), task.items("held-out")
    assert [i.id for i in train] == ["k0", "k1", "k2"] and [i.id for i in held] == ["k3", "k4"]
    assert train[1].answer == "2" and train[1].question == "What is 1+1?"
    assert train[1].question in task.question_prompt(train[1])
    assert task.grade(task.normalize(task.extract("1+1 = 2, so the answer is 2.").flexible), "2")
    assert [i.id for i in JsonlTask(path, question_field="q", answer_field="a").items()] == [
        f"jsonl-{i}" for i in range(5)
    ]


def test_jsonl_task_errors(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"question": "a", "answer": "1"}, {"question": "b", "answer": "one"}])
    with pytest.raises(DataFormatError, match=r"d\.jsonl:2: .*not a number"):
        JsonlTask(path).items()
    dup = write_jsonl(
        tmp_path / "dup.jsonl", [{"question": "a", "answer": 1, "id": 7}, {"question": "b", "answer": 2, "id": 7}]
    )
    with pytest.raises(DataFormatError, match=r"dup\.jsonl:2: duplicate id '7'"):
        JsonlTask(dup, id_field="id").items()
    with pytest.raises(ValueError, match="answer_type"):
        JsonlTask(path, answer_type="text")  # type: ignore[arg-type]


def test_jsonl_math_answers(tmp_path):
    path = write_jsonl(tmp_path / "m.jsonl", [{"question": "Expand (x+1)^2.", "answer": "x^2+2x+1"},
                                              {"question": "Half of 1?", "answer": "\\frac{1}{2}"}])
    task = JsonlTask(path, answer_type="math")
    expand, half = task.items()
    assert expand.answer == "x^2+2x+1" and half.answer == "0.5"
    assert task.grade(task.normalize(task.extract("So \\boxed{(x+1)^2}").flexible), expand.answer)
    assert task.grade(task.normalize(task.extract("\\boxed{\\frac{2}{4}}").flexible), half.answer)
    assert not task.grade(task.normalize(task.extract("\\boxed{x^2+1}").flexible), expand.answer)


def test_csv_task(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text('question,answer\n"What is 2, doubled?",4\n"Multi\nline",5\nbroken,\n')
    task = get_task("jsonl", path=str(path))
    with pytest.raises(DataFormatError, match=r"d\.csv:5: field 'answer' is empty"):
        task.items()
    path.write_text('question,answer\n"What is 2, doubled?","$4.00"\n"Multi\nline",5\n')
    first, second = JsonlTask(path, held_out=1).items("train") + JsonlTask(path, held_out=1).items("held-out")
    assert (first.question, first.answer, second.question, second.answer) == (
        "What is 2, doubled?",
        "4",
        "Multi\nline",
        "5",
    )


# --- choice --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "strict", "flexible"), [
    ("Option B is right.\n\\boxed{B}", "B", "B"),
    ("\\boxed{\\text{(c)}}", "C", "C"),
    ("The answer is (D).", "D", "D"),
    ("So the answer is: **A**", "A", "A"),
    ("the answer is a bit subtle, but (C) fits", None, "C"),  # "a" here is an article, not option A
    ("Comparing (A) and (B), I choose\nB) since it is larger", None, "B"),
    ("(A) is wrong; (E) is right", None, "E"),
    ("I am not sure.", None, None),
    ("\\boxed{42}", None, None),
])
def test_extract_choice(text, strict, flexible):
    got = extract_choice(text)
    assert (got.strict, got.flexible) == (strict, flexible)


def test_choice_task(tmp_path):
    rows = [
        {"question": "Largest?", "choices": ["1", "3", "2"], "answer": "B"},
        {"question": "Smallest?", "choices": ["1", "3", "2"], "answer": 0},
        {"question": "Middle?", "choices": ["1", "3", "2"], "answer": "(c)"},
    ]
    task = get_task("choice", path=write_jsonl(tmp_path / "c.jsonl", rows), held_out=1)
    train, held = task.items("train"), task.items("held-out")
    assert [i.answer for i in train] == ["B", "A"] and [i.answer for i in held] == ["C"]
    assert [i.id for i in train + held] == ["choice-0", "choice-1", "choice-2"]
    prompt = task.question_prompt(train[0])
    assert "Largest?" in prompt and "(A) 1\n(B) 3\n(C) 2" in prompt and "\\boxed{X}" in prompt
    assert task.normalize("(b)") == "B" and task.normalize("nonsense") is None and task.normalize(None) is None
    assert task.grade(task.normalize(task.extract("The answer is (B).").flexible), "B")
    assert not task.grade("C", "B") and not task.grade(None, "B")


@pytest.mark.parametrize(("row", "message"), [
    ({"question": "q", "choices": "A or B", "answer": "A"}, "list of non-empty strings"),
    ({"question": "q", "choices": ["only"], "answer": "A"}, "2 to 10 choices"),
    ({"question": "q", "choices": ["x", "y"], "answer": "C"}, "out of range"),
    ({"question": "q", "choices": ["x", "y"], "answer": 2}, "out of range"),
    ({"question": "q", "choices": ["x", "y"], "answer": "maybe"}, "neither"),
    ({"question": "q", "choices": ["x", "y"]}, "missing field 'answer'"),
])
def test_choice_errors_name_file_and_line(tmp_path, row, message):
    path = write_jsonl(tmp_path / "c.jsonl", [{"question": "ok", "choices": ["x", "y"], "answer": "A"}, row])
    with pytest.raises(DataFormatError, match=message) as err:
        ChoiceTask(path).items()
    assert str(err.value).startswith(f"{path}:2: ")


# --- registry ------------------------------------------------------------------------------------------


def test_registry_builds_every_task(tmp_path, gsm8k_path):
    path = write_jsonl(tmp_path / "c.jsonl", [{"question": "q", "choices": ["x", "y"], "answer": "A", "answer2": 1}])
    options = {
        "arithmetic": {},
        "gsm8k": {"path": str(gsm8k_path)},
        "jsonl": {"path": path, "answer_field": "answer2"},
        "choice": {"path": path},
    }
    assert set(options) == set(TASK_NAMES) == {"arithmetic", "gsm8k", "jsonl", "choice"}
    for name in TASK_NAMES:
        task = get_task(name, **options[name])
        assert isinstance(task, Task) and task.name == name
        for split in SPLITS:
            assert isinstance(task.items(split, 2), list)


def test_registry_errors():
    with pytest.raises(ValueError, match="unknown task 'math'; valid tasks: arithmetic, gsm8k, jsonl, choice"):
        get_task("math")
    with pytest.raises(
        ValueError, match=r"^task arithmetic: unknown option 'n_operand'; valid options: max_value, n_operands, seed$"
    ):
        get_task("arithmetic", n_operand=3)
    with pytest.raises(ValueError, match=r"^task arithmetic: n_operands must be >= 2$"):
        get_task("arithmetic", n_operands=1)
    with pytest.raises(ValueError, match=r"^task choice: path is required \(CLI: --data FILE\)$"):
        get_task("choice")
    with pytest.raises(ValueError, match=r"^task jsonl: answer_type must be one of 'numeric', 'math' \(got 'text'\)$"):
        get_task("jsonl", path="d.jsonl", answer_type="text")
    assert len(get_task("arithmetic", n_operands=3, seed=2).items("train", 1)[0].meta["operands"]) == 3


def test_grading_a_task_from_worker_threads(tmp_path):
    # Engines and servers grade on worker threads; the math fallback must not rely on signals.
    path = write_jsonl(tmp_path / "m.jsonl", [{"question": "q", "answer": "\\sqrt{2}"}])
    task = JsonlTask(path, answer_type="math")
    (item,) = task.items()
    results = []
    thread = threading.Thread(
        target=lambda: results.append(task.grade(task.normalize("\\frac{2}{\\sqrt{2}}"), item.answer))
    )
    thread.start()
    thread.join(timeout=60)
    assert results == [True]


def test_task_settings_identity_keeps_only_options_away_from_defaults(tmp_path):
    """identity() feeds run hashes: a default written out (or a defaulted option added later) must not
    change it, a changed option must, and paths come out as text."""
    assert task_settings("arithmetic", {}).identity() == {}
    assert task_settings("arithmetic", {"n_operands": 4, "seed": 3}).identity() == {"seed": 3}
    assert task_settings("jsonl", {"path": tmp_path / "d.jsonl", "held_out": 0}).identity() == {
        "path": str(tmp_path / "d.jsonl")
    }
    assert TASK_SETTINGS["gsm8k"]().identity() == {}


@pytest.mark.parametrize("task", ["gsm8k", "jsonl", "choice"])
def test_data_file_errors_name_the_file(tmp_path, task):
    """What a new user met, for every file task: a directory, a missing, empty or non-UTF-8 file, a bad line."""
    def items(path):
        return get_task(task, path=str(path), held_out=0).items("train", 1)

    with pytest.raises(ValueError, match=f"^{tmp_path} is a directory, not a data file$"):
        items(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"^data file .*nope\.jsonl not found$"):
        items(tmp_path / "nope.jsonl")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n  \n")
    with pytest.raises(ValueError, match=r"^.*empty\.jsonl is empty \(no JSON lines\)$"):
        items(empty)
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes(b'{"question": "q", "answer": "#### 1"}\n{"question": "caf\xe9"}\n')
    with pytest.raises(ValueError, match=r"^.*latin\.jsonl:2: not UTF-8 text \(byte 0xe9 at column 18\)$"):
        items(latin)
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"question": "q", "answer": "#### 1"}\n\n{"question": \n')
    with pytest.raises(DataFormatError, match=r"^.*broken\.jsonl:3: invalid JSON \(Expecting value at column 14\)$"):
        items(broken)


def test_header_only_csv_is_empty_and_a_byte_order_mark_is_fine(tmp_path):
    header = tmp_path / "h.csv"
    header.write_text("question,answer\n")
    with pytest.raises(ValueError, match=r"h\.csv is empty \(no CSV rows\)$"):
        JsonlTask(header).items()
    bom = tmp_path / "bom.jsonl"
    bom.write_bytes(b'\xef\xbb\xbf{"question": "q", "answer": 3}\n{"question": "\xff"}\n')
    with pytest.raises(DataFormatError, match=r"bom\.jsonl:2: not UTF-8 text \(byte 0xff at column 15\)"):
        JsonlTask(bom).items()
    bom.write_bytes(b'\xef\xbb\xbf{"question": "q", "answer": 3}\n')
    assert JsonlTask(bom).items()[0].answer == "3"
