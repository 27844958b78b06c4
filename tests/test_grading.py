import threading
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentark.tasks.grading import (
    extract_numeric,
    grade_numeric,
    last_boxed,
    majority_vote,
    math_equal,
    normalize_math,
    normalize_number,
    numbers_equal,
)

# --- extraction ----------------------------------------------------------------------------------------

COMPLETIONS = [
    # (completion, strict, flexible)
    ("48 / 2 = 24 clips in May, so 48 + 24 = 72.\n\n\\boxed{72}", "72", "72"),
    ("First \\boxed{5}, but wait, I made an error. The total is \\boxed{7}.", "7", "7"),
    ("So x = \\boxed{\\frac{1}{2}} is the probability.", "\\frac{1}{2}", "\\frac{1}{2}"),
    ("The answer is $1,234.", "$1,234", "$1,234"),
    ("Adding it up... **The final answer is 42**", "42", "42"),
    ("Therefore the answer is **$18**.", "$18", "$18"),
    ("THE ANSWER IS: 3.5.\nDone.", "3.5", "3.5"),
    ("The final answer is $\\frac{3}{4}$.", "\\frac{3}{4}", "\\frac{3}{4}"),
    ("The answer is 18 dollars, because 6 * 3 = 18.", "18 dollars", "18 dollars"),
    ("I computed 12 * 3 = 36 and then 36 - 40 = -4", None, "-4"),
    ("Each costs $12 so she pays $1,234.5 in total", None, "$1,234.5"),
    ("The growth rate was 12%", None, "12%"),
    ("Subtract: 5-3 gives the difference.", None, "3"),
    ("The answer is obvious once you see it. It is 9", None, "9"),
    ("\\boxed{12", None, "12"),  # truncated box: not an explicit answer
    ("I do not know.", None, None),
    ("", None, None),
]


@pytest.mark.parametrize(("text", "strict", "flexible"), COMPLETIONS)
def test_extract_numeric(text, strict, flexible):
    got = extract_numeric(text)
    assert (got.strict, got.flexible) == (strict, flexible)


def test_boxed_takes_precedence_over_the_answer_phrase_and_handles_nesting():
    text = "The answer is 3. Actually \\boxed{\\dfrac{\\sqrt{2}}{2}} and the answer is 4"
    assert extract_numeric(text).strict == "\\dfrac{\\sqrt{2}}{2}"
    assert last_boxed("\\boxed{1} then \\boxed{{a}{b}}") == "{a}{b}"
    assert last_boxed("no box") is None


def test_extract_never_raises_on_odd_input():
    for text in ["\\boxed{", "}}}\\boxed{}", "answer is", "$$$", "-", "1,2,3,", "\\boxed{\\boxed{"]:
        extract_numeric(text)
    assert extract_numeric(None) == extract_numeric("")  # type: ignore[arg-type]


# --- normalisation -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "expected"), [
    ("18", "18"), ("18.0", "18"), ("18.", "18"), ("18.50", "18.5"), ("0.50", "0.5"), ("-3", "-3"), ("- 3", "-3"),
    ("$18", "18"), ("-$3", "-3"), ("$-3", "-3"), ("1,234", "1234"), ("$1,234.50", "1234.5"), ("12%", "12"),
    ("18 dollars", "18"), ("5 apples", "5"), ("\\text{18}", "18"), ("18 \\text{ dollars}", "18"),
    ("1{,}000", "1000"), ("x = 5", "5"), ("\\frac{1}{2}", "0.5"), ("\\dfrac{3}{4}", "0.75"), ("-\\frac{3}{4}", "-0.75"),
    ("3/4", "0.75"), ("1/3", "1/3"), ("2/4", "0.5"), ("1e3", "1000"), ("-0", "0"), ("$\\$5$", "5"),
    ("\u22127", "-7"), ("abc", None), ("", None), (None, None), ("5-3", None), ("1/0", None), ("1,2", None),
])
def test_normalize_number(raw, expected):
    assert normalize_number(raw) == expected


def test_normalize_math_keeps_expressions_but_canonicalises_numbers():
    assert normalize_math("$2x + 1$") == "2x + 1"  # not the number 2, as normalize_number would read it
    assert normalize_number("2x + 1") == "2"
    assert normalize_math("\\frac{2}{4}") == "0.5"
    assert normalize_math(" 18.0 ") == "18"
    assert normalize_math("  ") is None and normalize_math(None) is None


def test_numbers_equal_and_grade():
    assert numbers_equal("1,000.0", "1000") and numbers_equal("$18", "18 dollars")
    assert numbers_equal("0.3333333", "1/3") and not numbers_equal("0.33", "1/3")
    assert not numbers_equal("17", "18") and not numbers_equal(None, "18") and not numbers_equal("abc", "abc")
    assert numbers_equal("1e999", "1e999")  # exact arithmetic, no float overflow
    assert grade_numeric("\\frac{1}{2}", "0.5") and grade_numeric("$1,234", "1234")
    assert not grade_numeric(None, "1") and not grade_numeric("19", "18")
    assert grade_numeric("(x+1)^2", "x^2+2x+1")  # not numbers: symbolic fallback


def test_math_equal():
    assert math_equal("\\frac{\\sqrt{2}}{2}", "\\frac{1}{\\sqrt{2}}")
    assert math_equal("0.5", "\\frac{1}{2}")
    assert not math_equal("x^2", "x^3")
    assert not math_equal(None, "1") and not math_equal("1", None)
    assert not math_equal("\\frac{", "1")  # unparsable is unequal, not an error


def test_math_equal_works_off_the_main_thread():
    # math-verify's default signal-based timeouts raise in worker threads; ours are disabled.
    results: list = []

    def work():
        try:
            results.append((math_equal("(x+1)^2", "x^2+2x+1"), math_equal("\\pi/2", "\\pi")))
        except Exception as e:  # noqa: BLE001 - the assertion below shows what went wrong
            results.append(e)

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(timeout=60)
    assert results == [(True, False)]


def test_majority_vote():
    assert majority_vote(["3", None, "5", "5", "3"]) == "3"  # 2:2 tie -> first given
    assert majority_vote([None, "7", "8", "8"]) == "8"
    assert majority_vote([None, None]) is None and majority_vote([]) is None


# --- properties ----------------------------------------------------------------------------------------

integers = st.integers(min_value=-10**12, max_value=10**12)


def _formats(n: int) -> list[str]:
    sign = "-" if n < 0 else ""
    with_commas = f"{abs(n):,}"
    return [str(n), f"{n}.0", f"{n}.00", f"{sign}${with_commas}", f"{sign}{with_commas}", f"{n} dollars",
            f"{sign}{with_commas}.0 apples", f"{n}%", f"\\text{{{n}}}", f"{n}."]


@given(integers)
def test_normalize_any_formatting_of_an_integer(n):
    for text in _formats(n):
        assert normalize_number(text) == str(n), text


@given(integers, st.sampled_from(["The answer is {}.", "so **the final answer is {}**", "The answer is: ${}$.",
                                  "Work... \\boxed{{{}}}", "we end with {}"]))
def test_extract_then_normalize_recovers_the_integer(n, template):
    for text in _formats(n)[:6]:
        got = extract_numeric("Some steps: 3 + 4 = 7.\n" + template.format(text))
        assert normalize_number(got.flexible) == str(n), (template, text, got)


@given(st.decimals(min_value=-10**6, max_value=10**6, places=3, allow_nan=False, allow_infinity=False))
def test_normalized_decimals_are_canonical_and_equal(d):
    out = normalize_number(str(d))
    assert out is not None and numbers_equal(out, str(d))
    assert normalize_number(out) == out  # idempotent
    assert not out.endswith(".") and ("." not in out or not out.endswith("0"))


@given(st.lists(st.one_of(st.none(), st.sampled_from(["1", "2", "3", "42"])), max_size=12))
def test_majority_vote_returns_an_answer_with_maximal_count(answers):
    winner = majority_vote(answers)
    counts = Counter(a for a in answers if a is not None)
    if not counts:
        assert winner is None
    else:
        assert counts[winner] == max(counts.values())
        assert answers.index(winner) == min(answers.index(a) for a in counts if counts[a] == counts[winner])
