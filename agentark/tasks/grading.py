"""Reading and comparing answers: small pure functions shared by every numeric task.

Extraction never raises: a completion that states no answer yields ``None``, which grades as wrong.
Normalisation gives one canonical string per value (``"$1,000.00"`` -> ``"1000"``) so that votes over
differently written answers count together.
"""

from __future__ import annotations

import re
from collections import Counter
from decimal import Decimal
from fractions import Fraction

from agentark.tasks.base import Extraction

_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
_ANSWER_IS = re.compile(r"\banswer\s+is\b[ \t]*:?[ \t]*(?P<rest>[^\n]*)", re.IGNORECASE)
_SENTENCE_END = re.compile(r"\.(?=\s|$)|[,;](?=\s)")
# A number in running text: optional sign (not a minus between two operands, as in "5-3"), optional
# currency sign, digits with optional thousands commas and decimals, optional percent sign.
_NUMBER_IN_TEXT = re.compile(r"(?:(?<![\w.)\]])-)?\$?(?<![\d.,])(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?%?")
_TEXT_WRAPPER = re.compile(r"\\(?:text|textbf|mathrm|mbox)\s*\{([^{}]*)\}")
_FRACTION = re.compile(r"(?P<sign>-?)\s*\\[dt]?frac\s*\{\s*(?P<num>-?\d+)\s*\}\s*\{\s*(?P<den>-?\d+)\s*\}")
_SLASH = re.compile(r"(?P<num>-?\d+)\s*/\s*(?P<den>-?\d+)")
_LEADING_NUMBER = re.compile(
    r"(?P<sign>[-+]?)\s*\$?\s*(?P<sign2>[-+]?)(?P<digits>(?:\d+(?:,\d{3})*(?:\.\d+)?|\.\d+)(?:[eE][-+]?\d{1,3})?)"
)
_MAX_DIGITS = 300
"""Longer digit strings are not answers; refusing them keeps int/str conversion limits out of the way."""
_LATEX_NOISE = {
    "\\!": "",
    "\\,": "",
    "\\;": "",
    "\\ ": " ",
    "\\left": "",
    "\\right": "",
    "\\$": "$",
    "\\%": "%",
    "{,}": ",",
    "\u2212": "-",
}


def last_boxed(text: str) -> str | None:
    """Content of the last balanced ``\\boxed{...}`` (nested braces allowed); a truncated one is skipped."""
    for match in reversed(list(_BOXED.finditer(text))):
        depth, start = 1, match.end()
        for i in range(start, len(text)):
            if text[i] == "{":
                depth += 1
            elif text[i] == "}":
                depth -= 1
                if depth == 0:
                    return text[start:i].strip()
    return None


def strip_markup(s: str) -> str:
    """Remove markdown emphasis and paired math delimiters around an answer (``**$x$**`` -> ``x``)."""
    s = s.replace("**", "").replace("__", "").replace("`", "").strip()
    for left, right in (("$$", "$$"), ("\\(", "\\)"), ("\\[", "\\]"), ("$", "$")):
        if len(s) >= len(left) + len(right) and s.startswith(left) and s.endswith(right):
            s = s[len(left):len(s) - len(right)].strip()
            break
    return s.strip("*_ ").strip()


def answer_phrases(text: str) -> list[str]:
    """What follows each "(the final) answer is" in ``text``, up to the end of its sentence, in order."""
    found = []
    for match in _ANSWER_IS.finditer(text):
        rest = strip_markup(match.group("rest"))
        end = _SENTENCE_END.search(rest)
        found.append(strip_markup(rest[: end.start()] if end else rest))
    return [p for p in found if p]


def extract_numeric(text: str) -> Extraction:
    """Strict: last ``\\boxed{}``, else last "the answer is X" that holds a digit or LaTeX.
    Flexible: the strict answer, else the last number written anywhere in ``text``."""
    if not isinstance(text, str):
        return Extraction(None, None)
    strict = last_boxed(text)
    if not strict:
        phrases = [p for p in answer_phrases(text) if re.search(r"[\d\\]", p)]
        strict = phrases[-1] if phrases else None
    if strict:
        return Extraction(strict, strict)
    numbers = _NUMBER_IN_TEXT.findall(text)
    return Extraction(None, numbers[-1] if numbers else None)


def _clean(s: str) -> str:
    """Drop notation that carries no value: ``\\text{}`` wrappers, thin spaces, ``{,}``, ``x =``."""
    s = _TEXT_WRAPPER.sub(r" \1", strip_markup(s))
    for noise, replacement in _LATEX_NOISE.items():
        s = s.replace(noise, replacement)
    if "=" in s:
        s = s.rsplit("=", 1)[1]
    return strip_markup(s)


def _canonical(value: Fraction) -> str:
    """``18``, ``0.5``, ``-3`` for values with a finite decimal expansion, else ``a/b``."""
    denominator = value.denominator
    for p in (2, 5):
        while denominator % p == 0:
            denominator //= p
    if denominator != 1:
        return f"{value.numerator}/{value.denominator}"
    if value.denominator == 1:
        return str(value.numerator)
    return format(Decimal(value.numerator) / Decimal(value.denominator), "f").rstrip("0").rstrip(".")


def _tail_is_ignorable(tail: str, allow_units: bool) -> bool:
    """What may follow a number: ``%`` or a full stop always; words or a parenthesis with ``allow_units``."""
    tail = tail.strip()
    if tail in ("", "%", ".", "%."):
        return True
    return allow_units and (tail[0].isalpha() or tail[0] == "(")


def _parse(s: str, allow_units: bool) -> Fraction | None:
    """The value ``s`` states: a fraction, or a number optionally followed by units or words."""
    s = _clean(s)
    if sum(c.isdigit() for c in s) > _MAX_DIGITS:
        return None
    fraction = _FRACTION.fullmatch(s) or _SLASH.fullmatch(s)
    if fraction:
        if int(fraction.group("den")) == 0:
            return None
        value = Fraction(int(fraction.group("num")), int(fraction.group("den")))
        return -value if fraction.groupdict().get("sign") == "-" else value
    match = _LEADING_NUMBER.match(s)
    if not match or not _tail_is_ignorable(s[match.end():], allow_units):
        return None
    value = Fraction(Decimal(match.group("digits").replace(",", "")))
    return -value if (match.group("sign") == "-") != (match.group("sign2") == "-") else value


def normalize_number(s: str | None) -> str | None:
    """Canonical form of the number ``s`` states, ignoring ``$``, commas, ``%``, units and trailing
    words (``"$1,234.50 dollars"`` -> ``"1234.5"``, ``"\\frac{1}{2}"`` -> ``"0.5"``); None when none."""
    if s is None:
        return None
    value = _parse(str(s), allow_units=True)
    return None if value is None else _canonical(value)


def normalize_math(s: str | None) -> str | None:
    """A plain number in canonical form; any other expression as written, markup and spacing removed."""
    if s is None:
        return None
    value = _parse(str(s), allow_units=False)
    if value is not None:
        return _canonical(value)
    text = " ".join(strip_markup(str(s)).split())
    return text or None


def numbers_equal(pred: str | None, gold: str | None, rel_tol: float = 1e-6) -> bool:
    """True when both state a number and the two agree up to ``rel_tol``."""
    a = None if pred is None else _parse(str(pred), allow_units=True)
    b = None if gold is None else _parse(str(gold), allow_units=True)
    if a is None or b is None:
        return False
    return abs(a - b) <= Fraction(rel_tol) * max(abs(a), abs(b))  # exact: no float overflow on 1e999


def _parse_math(s: str) -> list:
    """math-verify parse without its signal-based timeout, which fails off the main thread."""
    from math_verify import parse

    text = s.strip()
    if not any(marker in text for marker in ("$", "\\(", "\\[", "\\boxed")):
        text = f"${text}$"
    return parse(text, parsing_timeout=None)


def math_equal(pred: str | None, gold: str | None) -> bool:
    """Symbolic equivalence via math-verify (``\\frac{1}{2}`` == ``0.5``, ``(x+1)^2`` == ``x^2+2x+1``).

    Safe in worker threads: both timeouts are disabled. Never raises: unparsable input is unequal.
    """
    if pred is None or gold is None:
        return False
    if " ".join(str(pred).split()) == " ".join(str(gold).split()):
        return True
    from math_verify import verify

    try:
        gold_parsed, pred_parsed = _parse_math(str(gold)), _parse_math(str(pred))
        if not gold_parsed or not pred_parsed:
            return False
        return bool(verify(gold_parsed, pred_parsed, timeout_seconds=None))
    except Exception:  # noqa: BLE001 - sympy can fail in many ways on odd model text; that is "wrong".
        return False


def grade_numeric(pred: str | None, gold: str) -> bool:
    """Numeric comparison when both sides are numbers, symbolic comparison otherwise."""
    if pred is None:
        return False
    if _parse(str(pred), allow_units=True) is not None and _parse(str(gold), allow_units=True) is not None:
        return numbers_equal(pred, gold)
    return math_equal(pred, gold)


def majority_vote(answers: list[str | None]) -> str | None:
    """The most common non-None answer; ties go to the one given first. None when nobody answered."""
    counts = Counter(a for a in answers if a is not None)
    if not counts:
        return None
    best = max(counts.values())
    return next(a for a in answers if a is not None and counts[a] == best)


class NumericAnswers:
    """Task mixin: answers read with :func:`extract_numeric`, compared as numbers."""

    def extract(self, text: str) -> Extraction:
        return extract_numeric(text)

    def normalize(self, answer: str | None) -> str | None:
        return normalize_number(answer)

    def grade(self, predicted: str | None, gold: str) -> bool:
        return grade_numeric(predicted, gold)
