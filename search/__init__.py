"""Test-time search strategies over the Generator and Scorer protocols in search.types.

`parse_params` turns a request's `search` object into a strategy's validated parameters;
`STRATEGIES[name].run(ctx, params)` runs it. A `resumable` strategy also takes
`tree=Tree.from_dict(stored)`, a tree from an earlier result, and continues it.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Awaitable, Callable, NamedTuple

from search import best_of_n, critic, mcts, self_agreement, self_certainty, self_consistency
from search.params import CommonParams
from search.types import QUOTE_LIMIT, InvalidSearchParam, SearchContext, SearchResult, shown


class Strategy(NamedTuple):
    params: type[CommonParams]
    run: Callable[..., Awaitable[SearchResult]]
    resumable: bool = False


STRATEGIES: dict[str, Strategy] = {
    "best_of_n": Strategy(best_of_n.BestOfNParams, best_of_n.run),
    "self_certainty": Strategy(self_certainty.SelfCertaintyParams, self_certainty.run),
    "self_consistency": Strategy(self_consistency.SelfConsistencyParams, self_consistency.run),
    "self_agreement": Strategy(self_agreement.SelfAgreementParams, self_agreement.run),
    "mcts": Strategy(mcts.MCTSParams, mcts.run, resumable=True),
    "critic": Strategy(critic.CriticParams, critic.run),
}


def parse_params(strategy: str | None, raw: dict | None) -> CommonParams:
    """The validated parameters of `strategy` (or of `raw["strategy"]` when it is None).

    `raw["strategy"]` is accepted and left alone; any other unknown key, or a bad value, raises
    InvalidSearchParam.
    """
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise InvalidSearchParam("search", "must be an object")
    name = strategy if strategy is not None else raw.get("strategy")
    if name is None:
        raise InvalidSearchParam("search.strategy", "is required")
    if not isinstance(name, str) or name not in STRATEGIES:
        raise InvalidSearchParam(
            "search.strategy", f"unknown strategy {shown(name)}; known: {', '.join(STRATEGIES)}")
    params_class = STRATEGIES[name].params
    known = {field.name for field in fields(params_class)}
    for key in raw:
        if key not in known and key != "strategy":
            raise InvalidSearchParam(f"search.{str(key)[:QUOTE_LIMIT]}", f"unknown parameter for strategy {name}")
    return params_class(**{key: value for key, value in raw.items() if key in known})
