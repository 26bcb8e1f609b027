"""Votes over extracted answers: grouping by equivalence, the leader, shares, Borda weights."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence


@dataclass
class AnswerGroup:
    """Candidates whose answers are equivalent to `answer`, the first spelling seen."""

    answer: str
    members: list[int]  # candidate indices, ascending
    weight: float


def group_answers(
    answers: Sequence[str | None],
    equivalent: Callable[[str, str], bool],
    weights: Sequence[float] | None = None,
) -> list[AnswerGroup]:
    """Groups in first-seen order; a candidate without an answer joins none and adds nothing."""
    groups: list[AnswerGroup] = []
    for index, answer in enumerate(answers):
        if answer is None:
            continue
        weight = 1.0 if weights is None else weights[index]
        for group in groups:
            if equivalent(group.answer, answer):
                group.members.append(index)
                group.weight += weight
                break
        else:
            groups.append(AnswerGroup(answer, [index], weight))
    return groups


def leader(groups: Sequence[AnswerGroup]) -> AnswerGroup | None:
    """The heaviest group; a tie goes to the group seen first."""
    best = None
    for group in groups:
        if best is None or group.weight > best.weight:
            best = group
    return best


def is_settled(groups: Sequence[AnswerGroup], remaining: int) -> bool:
    """True when `remaining` more unit votes cannot change the winner.

    No other answer may be able to pass the leader, or to tie it while having been seen
    first (ties go to the first seen); an answer not seen yet loses ties, so it must only be
    unable to pass.
    """
    top = leader(groups)
    if top is None:
        return False
    for group in groups:
        if group is top:
            continue
        reachable = group.weight + remaining
        if reachable > top.weight or (reachable == top.weight and group.members[0] < top.members[0]):
            return False
    return remaining <= top.weight


def vote_shares(groups: Sequence[AnswerGroup], count: int, total_weight: float) -> list[float]:
    """Each candidate's share of the total weight, through its answer's group (0 if none)."""
    shares = [0.0] * count
    if total_weight <= 0:
        return shares
    for group in groups:
        for index in group.members:
            shares[index] = group.weight / total_weight
    return shares


def borda_weights(scores: Sequence[float], power: float) -> list[float]:
    """(N - r + 1) ** power for rank r by descending score; equal scores rank by index."""
    count = len(scores)
    by_rank = sorted(range(count), key=lambda i: -scores[i])
    weights = [0.0] * count
    for rank, index in enumerate(by_rank, start=1):
        weights[index] = float(count - rank + 1) ** power
    return weights
