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


@dataclass(frozen=True)
class GreedyAnchor:
    """How a search's answer stands against greedy's: the final rule every strategy shares.

    The search moves away from greedy's answer only when the answer it would choose has more
    support (`support` says what: vote share, score, value) than greedy's, by more than
    `margin`; otherwise it answers with greedy's candidate.
    """

    index: int  # the candidate the search answers with
    greedy_index: int | None
    answer_is_greedy: bool
    reason: str
    support: str
    margin: float
    margin_key: str  # strategy/scorer/support, as search/greedy_margins.json keys its fitted margins
    margin_source: str  # "search.greedy_margin", or where the default came from
    proposed_index: int  # what the strategy's own rule chose
    proposed_answer: str | None
    proposed_support: float | None
    greedy_answer: str | None
    greedy_support: float | None

    def report(self) -> dict:
        return {key: value for key, value in self.__dict__.items() if key != "index"}


def anchor_to_greedy(proposed: int, greedy: int | None, answers: Sequence[str | None],
                     support: Sequence[float | None], equivalent: Callable[[str, str], bool],
                     margin: float, support_name: str, margin_key: str = "",
                     margin_source: str = "search.greedy_margin") -> GreedyAnchor:
    """The candidate to answer with: `proposed` (the strategy's own choice) when its support
    beats the `greedy` candidate's by more than `margin`, else greedy's."""
    def anchored(index: int, is_greedy: bool, reason: str) -> GreedyAnchor:
        return GreedyAnchor(index, greedy, is_greedy, reason, support_name, margin, margin_key, margin_source,
                            proposed,
                            answers[proposed], support[proposed],
                            None if greedy is None else answers[greedy],
                            None if greedy is None else support[greedy])

    if greedy is None:
        return anchored(proposed, False, "no greedy candidate")
    mine, theirs = answers[proposed], answers[greedy]
    if proposed == greedy or (mine is not None and theirs is not None and equivalent(mine, theirs)):
        return anchored(proposed, True, "the search's choice has greedy's answer")
    if theirs is None and mine is not None:
        return anchored(proposed, False, "greedy's candidate has no final answer")
    ours, greedy_value = support[proposed], support[greedy]
    if ours is None or greedy_value is None:
        return anchored(greedy, True, f"no {support_name} to weigh against greedy's")
    if ours - greedy_value > margin:
        return anchored(proposed, False, f"{support_name} {ours:.4g} beats greedy's {greedy_value:.4g} "
                                         f"by more than the margin {margin:g}")
    return anchored(greedy, True, f"{support_name} {ours:.4g} does not beat greedy's {greedy_value:.4g} "
                                  f"by more than the margin {margin:g}")
