"""Final-answer extraction and equivalence.

Extraction finds where the answer is (\\boxed{}, "the answer is X", the last number, a choice
letter); equivalence decides whether two answers are the same, using math-verify (symbolic,
via sympy) behind cheap exact fast paths for strings and plain numbers.
"""

from __future__ import annotations

import json
import re
import threading
from fractions import Fraction
from functools import lru_cache

from math_verify import parse, verify

NUMBER = re.compile(r"-?\$?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?|-?\$?\.\d+")
ANSWER_PHRASE = re.compile(r"answer\s*(?:is|:)\s*:?[ \t]*([^\n]*)", re.IGNORECASE)
BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
CHOICE_IN_PARENS = re.compile(r"\(([A-E])\)")
LEADING_CHOICE = re.compile(r"^\(?([A-E])\)?(?![\w'])")
MATH_SIGNS = re.compile(r"[\d\\^=+*/]")
# Longer "answers" are prose; sympy on them is slow and meaningless.
MAX_SYMBOLIC_LENGTH = 200


def normalize_number(token: str) -> str:
    """"$1,000" -> "1000", "5.0" -> "5", "2.50" -> "2.5", "6/3" -> "2"; others unchanged."""
    value = _as_number(token)
    if value is None:
        return token
    if value.denominator == 1:
        return str(value.numerator)
    if "/" in token:
        return f"{value.numerator}/{value.denominator}"
    return token.replace("$", "").replace(",", "").rstrip("0").lstrip("+")


def _as_number(text: str) -> Fraction | None:
    text = text.strip().replace("$", "")
    if re.fullmatch(r"-?(?:\d{1,3}(?:,\d{3})+)(?:\.\d+)?", text):
        text = text.replace(",", "")
    try:
        return Fraction(text)
    except (ValueError, ZeroDivisionError):
        return None


def last_boxed(text: str) -> str | None:
    """The content of the last \\boxed{...}, braces balanced; None if there is none."""
    starts = list(BOXED.finditer(text))
    if not starts:
        return None
    begin = starts[-1].end()
    depth = 1
    for position in range(begin, len(text)):
        if text[position] == "{":
            depth += 1
        elif text[position] == "}":
            depth -= 1
            if depth == 0:
                return text[begin:position].strip()
    return None


def answer_phrase(text: str) -> str | None:
    """What follows the last "answer is" / "answer:", to the end of its line, unwrapped."""
    matches = list(ANSWER_PHRASE.finditer(text))
    if not matches:
        return None
    # Unwrap markdown bold and $...$, and drop the sentence's full stop (not a leading ".5").
    phrase = re.sub(r"^[\s*$]+|[\s*$.]+$", "", matches[-1].group(1))
    return phrase or None


def _choice(phrase: str) -> str | None:
    match = LEADING_CHOICE.match(phrase)
    return match.group(1) if match else None


def _number_in_phrase(phrase: str) -> str | None:
    """The number a phrase such as "5 apples", "x = 5" or "$1,000." states."""
    if "=" in phrase:
        phrase = phrase.rsplit("=", 1)[1].strip()
    match = NUMBER.search(phrase)
    return normalize_number(match.group()) if match else None


def _clean_phrase(phrase: str) -> str:
    """A number when the phrase is a number followed by words ("5 apples."), else the phrase."""
    if "=" in phrase:
        phrase = phrase.rsplit("=", 1)[1].strip()
    match = NUMBER.match(phrase)
    if match and not re.match(r"\s*[\d\\^+*/(-]", phrase[match.end():]):
        return normalize_number(match.group())
    return phrase


def _last_number(text: str) -> str | None:
    numbers = NUMBER.findall(text)
    return normalize_number(numbers[-1]) if numbers else None


def extract_answer(text: str, answer_format: str = "auto") -> str | None:
    """The final answer in `text`, normalized, or None.

    auto: \\boxed{} content, else the "answer is" phrase, else the last number.
    number: the number in the boxed content or answer phrase, else the last number.
    boxed: the \\boxed{} content only.
    choice: a letter A-E, from the answer phrase or the last "(X)".
    text: the answer phrase, else the whole response with whitespace collapsed.
    """
    boxed = last_boxed(text)
    phrase = answer_phrase(text)
    if answer_format == "boxed":
        return _clean_phrase(boxed) if boxed else None
    if answer_format == "choice":
        for source in (boxed, phrase):
            if source and _choice(source):
                return _choice(source)
        letters = CHOICE_IN_PARENS.findall(text)
        return letters[-1] if letters else None
    if answer_format == "number":
        for source in (boxed, phrase):
            if source and _number_in_phrase(source):
                return _number_in_phrase(source)
        return _last_number(text)
    if answer_format == "text":
        if phrase:
            return phrase
        collapsed = " ".join(text.split())
        return collapsed or None
    if answer_format != "auto":
        raise ValueError(f"unknown answer format {answer_format!r}")
    if boxed:
        return _clean_phrase(boxed)
    if phrase:
        return _choice(phrase) or _clean_phrase(phrase)
    return _last_number(text)


def _plain(answer: str) -> str:
    return " ".join(answer.split()).rstrip(".").casefold()


@lru_cache(maxsize=4096)
def _symbolic(answer: str):
    # math-verify times out with signal.alarm, which only the main thread may use.
    in_main = threading.current_thread() is threading.main_thread()
    return parse(f"${answer.strip('$')}$", parsing_timeout=5 if in_main else None)


@lru_cache(maxsize=4096)
def _symbolically_equal(a: str, b: str) -> bool:
    parsed_a, parsed_b = _symbolic(a), _symbolic(b)
    if not parsed_a or not parsed_b:
        return False
    timeout = 5 if threading.current_thread() is threading.main_thread() else None
    return verify(parsed_a, parsed_b, timeout_seconds=timeout) or verify(
        parsed_b, parsed_a, timeout_seconds=timeout)


def answers_equivalent(a: str, b: str) -> bool:
    """Same answer? Exact strings, then exact rationals, then math-verify for math-looking
    answers; words ("Paris") compare case- and space-insensitively."""
    if a == b:
        return True
    number_a, number_b = _as_number(a), _as_number(b)
    if number_a is not None and number_b is not None:
        return number_a == number_b
    mathematical = all(MATH_SIGNS.search(s) and len(s) <= MAX_SYMBOLIC_LENGTH for s in (a, b))
    if not mathematical:
        return _plain(a) == _plain(b)
    first, second = sorted((a, b))  # one cache entry per unordered pair
    return _symbolically_equal(first, second)


class MathAnswers:
    """The AnswerExtractor strategies use: extract_answer in one format, answers_equivalent."""

    def __init__(self, answer_format: str = "auto"):
        self.answer_format = answer_format

    def extract(self, text: str) -> str | None:
        return extract_answer(text, self.answer_format)

    def equivalent(self, a: str, b: str) -> bool:
        return answers_equivalent(a, b)


class StructuredAnswers:
    """Answers whose form the request fixed (structured outputs, forced tool calls): what the
    client will use is the whole text, so votes compare it as canonical JSON (key order and
    spacing aside: tool calls by function name and arguments), or as the exact text when it is
    not JSON (a regex, a grammar, a choice)."""

    def extract(self, text: str) -> str | None:
        try:
            return json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        except ValueError:
            return text.strip() or None

    def equivalent(self, a: str, b: str) -> bool:
        return a == b
