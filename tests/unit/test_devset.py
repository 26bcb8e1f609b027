"""bench.devset: answers right by construction, halves disjoint, the committed files reproducible."""

import json
import re
from collections import Counter
from fractions import Fraction

import pytest

from bench import devset
from bench.devset import DEV_OUTPUT, TEST_OUTPUT, TUNE_OUTPUT, evaluate, generate, generate_split

NUMBER = re.compile(r"\d+")


def committed(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def halves():
    dev = generate()
    return generate_split(excluded=frozenset(problem["question"] for problem in dev))


def test_the_committed_files_are_what_the_script_writes(halves):
    assert committed(DEV_OUTPUT) == generate()
    assert (committed(TUNE_OUTPUT), committed(TEST_OUTPUT)) == halves


def test_the_generator_is_deterministic_and_the_seed_matters():
    assert generate_split() == generate_split()
    assert generate_split(seed=1)[1] != generate_split()[1]


def test_at_least_300_problems_of_four_shapes_split_in_halves(halves):
    tune, test = halves
    assert len(tune) + len(test) >= 300
    assert abs(len(tune) - len(test)) <= 1
    for half in halves:
        shapes = Counter(problem["shape"] for problem in half)
        assert set(shapes) == {"one_step", "two_step", "distractor", "multiple_choice"}
        assert min(shapes.values()) >= 25
        # every template lands in both halves
        assert {p["template"] for p in half} == {p["template"] for p in tune + test}


def test_the_halves_are_disjoint_from_each_other_and_from_the_dev_set(halves):
    tune, test = halves
    dev = {problem["question"] for problem in generate()}
    tune_questions, test_questions = [p["question"] for p in tune], [p["question"] for p in test]
    assert len(set(tune_questions)) == len(tune_questions)
    assert len(set(test_questions)) == len(test_questions)
    assert not set(tune_questions) & set(test_questions)
    assert not (set(tune_questions) | set(test_questions)) & dev
    ids = [p["id"] for p in tune + test]
    assert len(set(ids)) == len(ids)


def test_every_answer_is_its_computation_over_numbers_of_the_question(halves):
    for problem in [*halves[0], *halves[1]]:
        assert problem["answer"] == evaluate(problem["solution"]) >= 0
        assert isinstance(problem["answer"], int)
        in_question = Counter(NUMBER.findall(problem["question"]))
        used = Counter(NUMBER.findall(problem["solution"]))
        assert not used - in_question, problem


def test_a_distractor_problem_has_a_number_its_answer_does_not_use(halves):
    for problem in [*halves[0], *halves[1]]:
        if problem["shape"] == "distractor":
            unused = Counter(NUMBER.findall(problem["question"])) - Counter(NUMBER.findall(problem["solution"]))
            assert unused, problem


def test_a_multiple_choice_problem_offers_the_answer_among_three_distinct_numbers(halves):
    for problem in [*halves[0], *halves[1]]:
        if problem["shape"] == "multiple_choice":
            options = re.search(r"Choose one: (\d+), (\d+) or (\d+)\.$", problem["question"]).groups()
            assert len(set(options)) == 3
            assert str(problem["answer"]) in options


def test_evaluate_is_exact_and_refuses_anything_but_arithmetic():
    assert evaluate("(7 + 5) / 4") == 3
    assert evaluate("1 / 3 + 1 / 6") == Fraction(1, 2)
    assert evaluate("-2 * 3") == -6
    for bad in ("__import__('os')", "2 ** 3", "x + 1", "True + 1"):
        with pytest.raises(ValueError):
            evaluate(bad)


def test_a_template_whose_answer_is_not_a_whole_number_is_refused():
    with pytest.raises(AssertionError):
        devset.record("Split 7 apples among 2.", "7 / 2", id="x")
