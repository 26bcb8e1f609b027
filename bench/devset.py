"""Generate the arithmetic dev set: small word problems with one or two operations.

Deterministic (fixed seed); the output bench/data/arith_dev.jsonl is committed, so rerun this
only when the templates change:  python -m bench.devset
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path
from typing import Callable

DEFAULT_OUTPUT = Path(__file__).parent / "data" / "arith_dev.jsonl"
SEED = 20261124
PROBLEMS_PER_TEMPLATE = 5

NAMES = ["Tom", "Mia", "Ravi", "Lena", "Omar", "Sofia", "Ken", "Ana", "Leo", "Zoe", "Sam", "Ida"]
# (singular, plural) of countable things.
THINGS = [
    ("apple", "apples"), ("marble", "marbles"), ("pencil", "pencils"), ("sticker", "stickers"),
    ("cookie", "cookies"), ("book", "books"), ("shell", "shells"), ("card", "cards"),
    ("egg", "eggs"), ("balloon", "balloons"), ("toy car", "toy cars"), ("orange", "oranges"),
]

Problem = tuple[str, int]


def buys_more(rng: random.Random) -> Problem:
    name, (_, things) = rng.choice(NAMES), rng.choice(THINGS)
    a, b = rng.randint(2, 15), rng.randint(2, 15)
    return f"{name} has {a} {things} and buys {b} more. How many {things} does {name} have now?", a + b


def gives_away(rng: random.Random) -> Problem:
    name, friend = rng.sample(NAMES, 2)
    _, things = rng.choice(THINGS)
    a = rng.randint(8, 20)
    b = rng.randint(2, a - 2)
    return (f"{name} had {a} {things} and gave {b} of them to {friend}. "
            f"How many {things} does {name} have left?", a - b)


def boxes_of(rng: random.Random) -> Problem:
    _, things = rng.choice(THINGS)
    boxes, per_box = rng.randint(2, 9), rng.randint(2, 9)
    return (f"There are {boxes} boxes with {per_box} {things} in each box. "
            f"How many {things} are there in total?", boxes * per_box)


def shares_equally(rng: random.Random) -> Problem:
    name, (_, things) = rng.choice(NAMES), rng.choice(THINGS)
    friends, each = rng.randint(2, 6), rng.randint(2, 8)
    return (f"{name} shares {friends * each} {things} equally among {friends} friends. "
            f"How many {things} does each friend get?", each)


def how_many_more(rng: random.Random) -> Problem:
    name, friend = rng.sample(NAMES, 2)
    _, things = rng.choice(THINGS)
    smaller = rng.randint(3, 12)
    larger = smaller + rng.randint(2, 12)
    return (f"{name} has {larger} {things} and {friend} has {smaller} {things}. "
            f"How many more {things} does {name} have than {friend}?", larger - smaller)


def unit_price(rng: random.Random) -> Problem:
    thing, things = rng.choice(THINGS)
    price, count = rng.randint(2, 9), rng.randint(2, 8)
    return f"One {thing} costs {price} dollars. How many dollars do {count} {things} cost?", price * count


def finds_then_loses(rng: random.Random) -> Problem:
    name, (_, things) = rng.choice(NAMES), rng.choice(THINGS)
    a, found = rng.randint(4, 15), rng.randint(2, 10)
    lost = rng.randint(1, a + found - 1)
    return (f"{name} has {a} {things}. Then {name} finds {found} more and loses {lost}. "
            f"How many {things} does {name} have now?", a + found - lost)


def packs_plus_extra(rng: random.Random) -> Problem:
    name, (_, things) = rng.choice(NAMES), rng.choice(THINGS)
    packs, per_pack, extra = rng.randint(2, 6), rng.randint(2, 8), rng.randint(1, 9)
    return (f"{name} buys {packs} packs of {things} with {per_pack} in each pack, "
            f"and already had {extra} {things}. How many {things} does {name} have now?",
            packs * per_pack + extra)


def pages_per_day(rng: random.Random) -> Problem:
    name = rng.choice(NAMES)
    per_day, days, extra = rng.randint(3, 12), rng.randint(2, 7), rng.randint(2, 15)
    return (f"{name} reads {per_day} pages every day for {days} days, and then reads {extra} more "
            f"pages. How many pages did {name} read in all?", per_day * days + extra)


def change_left(rng: random.Random) -> Problem:
    name, (_, things) = rng.choice(NAMES), rng.choice(THINGS)
    count, price = rng.randint(2, 5), rng.randint(2, 6)
    money = count * price + rng.randint(1, 15)
    return (f"{name} has {money} dollars and buys {count} {things} that cost {price} dollars each. "
            f"How many dollars does {name} have left?", money - count * price)


def age_later(rng: random.Random) -> Problem:
    name, friend = rng.sample(NAMES, 2)
    age, older_by, years = rng.randint(5, 12), rng.randint(2, 9), rng.randint(2, 10)
    return (f"{name} is {age} years old. {friend} is {older_by} years older than {name}. "
            f"How old will {friend} be in {years} years?", age + older_by + years)


def equal_groups(rng: random.Random) -> Problem:
    groups, per_group = rng.randint(2, 6), rng.randint(3, 7)
    class_size = groups * per_group
    boys = rng.randint(2, class_size - 2)
    girls = class_size - boys
    return (f"A class has {boys} boys and {girls} girls. The teacher splits the whole class into "
            f"{groups} equal groups. How many students are in each group?", per_group)


TEMPLATES: list[Callable[[random.Random], Problem]] = [
    buys_more, gives_away, boxes_of, shares_equally, how_many_more, unit_price,
    finds_then_loses, packs_plus_extra, pages_per_day, change_left, age_later, equal_groups,
]


def generate(seed: int = SEED, per_template: int = PROBLEMS_PER_TEMPLATE) -> list[dict]:
    """Problems in round-robin template order, so any prefix (--limit) mixes the templates."""
    rng = random.Random(seed)
    problems = []
    for _ in range(per_template):
        for template in TEMPLATES:
            question, answer = template(rng)
            problems.append({"id": f"arith-{len(problems):03d}", "question": question,
                             "answer": answer, "template": template.__name__})
    return problems


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--per-template", type=int, default=PROBLEMS_PER_TEMPLATE)
    args = parser.parse_args(argv)
    problems = generate(args.seed, args.per_template)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w") as output:
        for problem in problems:
            output.write(json.dumps(problem) + "\n")
    print(f"wrote {len(problems)} problems to {args.out}")


if __name__ == "__main__":
    main()
