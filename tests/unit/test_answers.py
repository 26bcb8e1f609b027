import pytest

from scorers.answers import MathAnswers, answers_equivalent, extract_answer


@pytest.mark.parametrize("text, expected", [
    ("So we get \\boxed{\\frac{1}{2}}.", "\\frac{1}{2}"),
    ("first \\boxed{3}, corrected: \\boxed{4}", "4"),
    ("\\boxed{1,000}", "1000"),
    ("The answer is 1,000 apples.", "1000"),
    ("Answer: $5", "5"),
    ("The final answer is: **42**.", "42"),
    ("so x = 5", "5"),
    ("The answer is x = 7.", "7"),
    ("3 + 4 = 7", "7"),
    ("It costs 2.50 dollars", "2.5"),
    ("That is 5.0", "5"),
    ("The temperature fell to -3 degrees.", "-3"),
    ("The answer is (B) 12", "B"),
    ("The answer is $\\frac{3}{4}$.", "\\frac{3}{4}"),
    ("I do not know.", None),
    ("", None),
])
def test_extract_auto(text, expected):
    assert extract_answer(text) == expected


def test_extract_formats():
    text = "Options (A) 3 and (C) 5. I pick (C)."
    assert extract_answer(text, "choice") == "C"
    assert extract_answer(text, "number") == "5"
    assert extract_answer(text, "boxed") is None
    assert extract_answer("The answer is B.", "choice") == "B"
    assert extract_answer("the answer is Paris.", "text") == "Paris"
    assert extract_answer("  Paris\n is   the capital ", "text") == "Paris is the capital"
    assert extract_answer("The answer is 12 dollars, i.e. 1200 cents", "number") == "12"
    with pytest.raises(ValueError):
        extract_answer("5", "xml")


@pytest.mark.parametrize("a, b", [
    ("1,000", "1000"),
    ("$5", "5"),
    ("5.0", "5"),
    ("1/2", "0.5"),
    ("\\frac{1}{2}", "0.5"),
    ("x+1", "1+x"),
    ("\\sqrt{2}", "2^{1/2}"),
    ("Paris", "paris."),
])
def test_equivalent(a, b):
    assert answers_equivalent(a, b)
    assert answers_equivalent(b, a)


@pytest.mark.parametrize("a, b", [
    ("5", "6"),
    ("1,000", "1"),
    ("A", "B"),
    ("Paris", "Sirap"),  # sympy would read both as the product of the same five symbols
    ("\\frac{1}{2}", "\\frac{1}{3}"),
])
def test_not_equivalent(a, b):
    assert not answers_equivalent(a, b)


def test_extracted_numbers_compare_equal():
    answers = MathAnswers()
    extracted = [answers.extract(t) for t in ["It is 1,000", "$1000.", "1000.0", "answer: 1000"]]
    assert all(answers.equivalent(extracted[0], other) for other in extracted)
    assert MathAnswers("choice").extract("so (D)") == "D"


def test_structured_answers_vote_on_canonical_json_or_the_exact_text():
    from scorers import StructuredAnswers

    answers = StructuredAnswers()
    calls = answers.extract('[{"name": "get_weather", "parameters": {"city": "Paris", "unit": "C"}}]')
    reordered = answers.extract('[ {"parameters": {"unit": "C", "city": "Paris"},\n "name": "get_weather"} ]')
    assert calls == reordered and answers.equivalent(calls, reordered)
    assert not answers.equivalent(calls, answers.extract('[{"name": "get_weather", "parameters": {"city": "Rome"}}]'))
    assert answers.extract(" yes \n") == "yes" and answers.extract("") is None
