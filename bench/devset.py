"""Generate the arithmetic problem sets: small word problems of several shapes.

Every template returns its question and the computation that answers it ("5 * 3 + 2", over
numbers that appear in the question); the answer is that computation evaluated, so it is right
by construction. Deterministic (fixed seeds); the outputs are committed, so rerun this only when
the templates change:

    python -m bench.devset          # rewrites arith_dev.jsonl, arith_tune.jsonl, arith_test.jsonl

`arith_dev.jsonl` (60 problems, 12 templates) is the set the older defaults were measured on.
`arith_tune.jsonl` and `arith_test.jsonl` are the halves of a larger set of four shapes
(one-operation, two-step, with distractor numbers, multiple choice): defaults and margins are
fitted on tune, figures are reported on test. No question of test is in tune or in the dev set.
"""

from __future__ import annotations

import argparse
import ast
import json
import operator
import random
from fractions import Fraction
from pathlib import Path
from typing import Callable

DATA = Path(__file__).parent / "data"
DEV_OUTPUT = DATA / "arith_dev.jsonl"
TUNE_OUTPUT = DATA / "arith_tune.jsonl"
TEST_OUTPUT = DATA / "arith_test.jsonl"
SEED = 20261124
SPLIT_SEED = 20261203
PROBLEMS_PER_TEMPLATE = 5
SPLIT_ROUNDS = 14

NAMES = ["Tom", "Mia", "Ravi", "Lena", "Omar", "Sofia", "Ken", "Ana", "Leo", "Zoe", "Sam", "Ida"]
# (singular, plural) of countable things.
THINGS = [
    ("apple", "apples"), ("marble", "marbles"), ("pencil", "pencils"), ("sticker", "stickers"),
    ("cookie", "cookies"), ("book", "books"), ("shell", "shells"), ("card", "cards"),
    ("egg", "eggs"), ("balloon", "balloons"), ("toy car", "toy cars"), ("orange", "oranges"),
]

Problem = tuple[str, str]  # the question, and the computation that answers it

OPERATORS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


def evaluate(expression: str) -> Fraction:
    """The exact value of an arithmetic expression of numbers, + - * / and parentheses."""
    def value(node: ast.AST) -> Fraction:
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) \
                and not isinstance(node.value, bool):
            return Fraction(str(node.value))
        if isinstance(node, ast.BinOp) and type(node.op) in OPERATORS:
            return OPERATORS[type(node.op)](value(node.left), value(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -value(node.operand)
        raise ValueError(f"not plain arithmetic: {expression!r}")
    return value(ast.parse(expression, mode="eval").body)


def pair(rng: random.Random) -> tuple[str, str]:
    return tuple(rng.sample(NAMES, 2))


# One operation

def buys_more(rng: random.Random) -> Problem:
    name, (_, things) = rng.choice(NAMES), rng.choice(THINGS)
    a, b = rng.randint(2, 15), rng.randint(2, 15)
    return f"{name} has {a} {things} and buys {b} more. How many {things} does {name} have now?", f"{a} + {b}"


def gives_away(rng: random.Random) -> Problem:
    name, friend = pair(rng)
    _, things = rng.choice(THINGS)
    a = rng.randint(8, 20)
    b = rng.randint(2, a - 2)
    return (f"{name} had {a} {things} and gave {b} of them to {friend}. "
            f"How many {things} does {name} have left?", f"{a} - {b}")


def boxes_of(rng: random.Random) -> Problem:
    _, things = rng.choice(THINGS)
    boxes, per_box = rng.randint(2, 9), rng.randint(2, 9)
    return (f"There are {boxes} boxes with {per_box} {things} in each box. "
            f"How many {things} are there in total?", f"{boxes} * {per_box}")


def shares_equally(rng: random.Random) -> Problem:
    name, (_, things) = rng.choice(NAMES), rng.choice(THINGS)
    friends, each = rng.randint(2, 6), rng.randint(2, 8)
    return (f"{name} shares {friends * each} {things} equally among {friends} friends. "
            f"How many {things} does each friend get?", f"{friends * each} / {friends}")


def how_many_more(rng: random.Random) -> Problem:
    name, friend = pair(rng)
    _, things = rng.choice(THINGS)
    smaller = rng.randint(3, 12)
    larger = smaller + rng.randint(2, 12)
    return (f"{name} has {larger} {things} and {friend} has {smaller} {things}. "
            f"How many more {things} does {name} have than {friend}?", f"{larger} - {smaller}")


def unit_price(rng: random.Random) -> Problem:
    thing, things = rng.choice(THINGS)
    price, count = rng.randint(2, 9), rng.randint(2, 8)
    return f"One {thing} costs {price} dollars. How many dollars do {count} {things} cost?", f"{price} * {count}"


# Two steps

def finds_then_loses(rng: random.Random) -> Problem:
    name, (_, things) = rng.choice(NAMES), rng.choice(THINGS)
    a, found = rng.randint(4, 15), rng.randint(2, 10)
    lost = rng.randint(1, a + found - 1)
    return (f"{name} has {a} {things}. Then {name} finds {found} more and loses {lost}. "
            f"How many {things} does {name} have now?", f"{a} + {found} - {lost}")


def packs_plus_extra(rng: random.Random) -> Problem:
    name, (_, things) = rng.choice(NAMES), rng.choice(THINGS)
    packs, per_pack, extra = rng.randint(2, 6), rng.randint(2, 8), rng.randint(1, 9)
    return (f"{name} buys {packs} packs of {things} with {per_pack} in each pack, "
            f"and already had {extra} {things}. How many {things} does {name} have now?",
            f"{packs} * {per_pack} + {extra}")


def pages_per_day(rng: random.Random) -> Problem:
    name = rng.choice(NAMES)
    per_day, days, extra = rng.randint(3, 12), rng.randint(2, 7), rng.randint(2, 15)
    return (f"{name} reads {per_day} pages every day for {days} days, and then reads {extra} more "
            f"pages. How many pages did {name} read in all?", f"{per_day} * {days} + {extra}")


def change_left(rng: random.Random) -> Problem:
    name, (_, things) = rng.choice(NAMES), rng.choice(THINGS)
    count, price = rng.randint(2, 5), rng.randint(2, 6)
    money = count * price + rng.randint(1, 15)
    return (f"{name} has {money} dollars and buys {count} {things} that cost {price} dollars each. "
            f"How many dollars does {name} have left?", f"{money} - {count} * {price}")


def age_later(rng: random.Random) -> Problem:
    name, friend = pair(rng)
    age, older_by, years = rng.randint(5, 12), rng.randint(2, 9), rng.randint(2, 10)
    return (f"{name} is {age} years old. {friend} is {older_by} years older than {name}. "
            f"How old will {friend} be in {years} years?", f"{age} + {older_by} + {years}")


def equal_groups(rng: random.Random) -> Problem:
    groups, per_group = rng.randint(2, 6), rng.randint(3, 7)
    class_size = groups * per_group
    boys = rng.randint(2, class_size - 2)
    girls = class_size - boys
    return (f"A class has {boys} boys and {girls} girls. The teacher splits the whole class into "
            f"{groups} equal groups. How many students are in each group?", f"({boys} + {girls}) / {groups}")


# With a number the answer does not use

def age_and_buys(rng: random.Random) -> Problem:
    name, (_, things) = rng.choice(NAMES), rng.choice(THINGS)
    age, a, b = rng.randint(6, 14), rng.randint(2, 15), rng.randint(2, 15)
    return (f"{name} is {age} years old and has {a} {things}. {name} buys {b} more {things}. "
            f"How many {things} does {name} have now?", f"{a} + {b}")


def priced_gift(rng: random.Random) -> Problem:
    name, friend = pair(rng)
    _, things = rng.choice(THINGS)
    price, a = rng.randint(2, 9), rng.randint(8, 20)
    b = rng.randint(2, a - 2)
    return (f"{name} has {a} {things} that cost {price} dollars each. {name} gives {b} of them to "
            f"{friend}. How many {things} does {name} have left?", f"{a} - {b}")


def trip_day(rng: random.Random) -> Problem:
    _, things = rng.choice(THINGS)
    day, children, each = rng.randint(2, 9), rng.randint(2, 9), rng.randint(2, 9)
    return (f"On day {day} of a school trip, {children} children each bring {each} {things}. "
            f"How many {things} do the children bring in total?", f"{children} * {each}")


def shares_one_kind(rng: random.Random) -> Problem:
    name = rng.choice(NAMES)
    (_, things), (_, others) = rng.sample(THINGS, 2)
    friends, each, other = rng.randint(2, 6), rng.randint(2, 8), rng.randint(3, 20)
    return (f"{name} has {friends * each} {things} and {other} {others}. {name} shares the {things} "
            f"equally among {friends} friends. How many {things} does each friend get?",
            f"{friends * each} / {friends}")


def buys_gives_distracted(rng: random.Random) -> Problem:
    name = rng.choice(NAMES)
    (_, things), (_, others) = rng.sample(THINGS, 2)
    a, other, bought = rng.randint(5, 15), rng.randint(3, 20), rng.randint(2, 9)
    given = rng.randint(1, a + bought - 1)
    return (f"{name} has {a} {things} and {other} {others}. {name} buys {bought} more {things} and "
            f"then gives away {given} {things}. How many {things} does {name} have now?",
            f"{a} + {bought} - {given}")


ONE_STEP = [buys_more, gives_away, boxes_of, shares_equally, how_many_more, unit_price]
TWO_STEP = [finds_then_loses, packs_plus_extra, pages_per_day, change_left, age_later, equal_groups]
DISTRACTOR = [age_and_buys, priced_gift, trip_day, shares_one_kind, buys_gives_distracted]
TEMPLATES: list[Callable[[random.Random], Problem]] = ONE_STEP + TWO_STEP  # the dev set's
SHAPES = {"one_step": ONE_STEP, "two_step": TWO_STEP, "distractor": DISTRACTOR}


def multiple_choice(rng: random.Random, template: Callable[[random.Random], Problem]) -> Problem:
    """`template`'s problem with three numbers to choose from, the right one among them."""
    question, solution = template(rng)
    right = int(evaluate(solution))
    wrong = rng.sample([value for value in range(max(1, right - 6), right + 7) if value != right], 2)
    options = [right, *wrong]
    rng.shuffle(options)
    return f"{question} Choose one: {options[0]}, {options[1]} or {options[2]}.", solution


def record(question: str, solution: str, **fields) -> dict:
    answer = evaluate(solution)
    if answer.denominator != 1 or answer < 0:
        raise AssertionError(f"{solution} is not a whole number of things")
    return {**fields, "question": question, "answer": int(answer), "solution": solution}


def generate(seed: int = SEED, per_template: int = PROBLEMS_PER_TEMPLATE) -> list[dict]:
    """The dev set: problems in round-robin template order, so any prefix (--limit) mixes them."""
    rng = random.Random(seed)
    problems = []
    for _ in range(per_template):
        for template in TEMPLATES:
            question, solution = template(rng)
            problem = record(question, solution, id=f"arith-{len(problems):03d}",
                             template=template.__name__)
            problems.append({key: problem[key] for key in ("id", "question", "answer", "template")})
    return problems


def generate_split(seed: int = SPLIT_SEED, rounds: int = SPLIT_ROUNDS,
                   excluded: frozenset[str] = frozenset()) -> tuple[list[dict], list[dict]]:
    """The tune and test halves: `rounds` rounds of every template of every shape (and a
    multiple-choice form of each one-step and two-step template), round-robin, so that both
    halves and any prefix of either mix every template. A question seen before, or in
    `excluded`, is skipped; the rest go alternately to tune and test."""
    rng = random.Random(seed)
    seen = set(excluded)
    halves: tuple[list[dict], list[dict]] = ([], [])
    for _ in range(rounds):
        made = [(shape, template.__name__, template(rng))
                for shape, templates in SHAPES.items() for template in templates]
        made += [("multiple_choice", f"choice_{template.__name__}", multiple_choice(rng, template))
                 for template in ONE_STEP + TWO_STEP]
        for shape, name, (question, solution) in made:
            if question in seen:
                continue
            seen.add(question)
            half, split = (halves[0], "tune") if sum(map(len, halves)) % 2 == 0 else (halves[1], "test")
            half.append(record(question, solution, id=f"{split}-{len(half):03d}", shape=shape, template=name))
    return halves


def write_jsonl(path: Path, problems: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as output:
        for problem in problems:
            output.write(json.dumps(problem) + "\n")
    print(f"wrote {len(problems)} problems to {path}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=DATA)
    args = parser.parse_args(argv)
    dev = generate()
    tune, test = generate_split(excluded=frozenset(problem["question"] for problem in dev))
    write_jsonl(args.out_dir / DEV_OUTPUT.name, dev)
    write_jsonl(args.out_dir / TUNE_OUTPUT.name, tune)
    write_jsonl(args.out_dir / TEST_OUTPUT.name, test)


if __name__ == "__main__":
    main()
