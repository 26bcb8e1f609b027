"""MCTS over reasoning steps (AlphaLLM, ReST-MCTS*; ALGORITHMS §4).

Each iteration selects a leaf by PUCT, Q(c) + c_puct * P(c) * sqrt(N(parent)) / (1 + N(c)),
where Q is the mean backed-up value (min-max scaled when the scorer's values are not
probabilities) and P the softmax over siblings of each step's mean token logprob; expands it into k
steps (root_k at the root), the greedy step and k-1 samples, one engine request each (a leaf
at max_depth is instead completed greedily, as AlphaLLM rolls out at its depth limit); values
each new node, as soon as its step is back, by the scorer on its path or on a greedy rollout
of it to the end; and backs each value up along the path as a running mean.
Up to `parallel` descents are in flight at once, each selecting its leaf, growing and valuing
it, and starting over as soon as its own values are backed up, so the engine always holds
about parallel * k sequences instead of waiting for a round's slowest step. A descent counts
along its path as a visit that returned the lowest value seen (a virtual loss), so that the
others look elsewhere, and holds its leaf: no two descents grow the same leaf.

The tree counts its iterations, so a stored tree passed back in continues where it stopped:
`iterations` is the total over every run on the tree.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass
from typing import Callable

from search.params import StepParams, bounded, one_of
from search.steps import StepSearch, answer_weights
from search.tree import Node, Tree
from search.types import BudgetExhausted, InvalidSearchParam, SearchContext, SearchResult
from search.voting import group_answers, leader

FINAL_RULES = ("most_visited", "highest_value", "vote")


@dataclass
class MCTSParams(StepParams):
    # Self-certainty: the engine records it while the step is sampled, so valuing a node costs
    # no engine call (P(True) costs one, mostly prefill), and on the dev set it ranks right
    # answers above wrong ones better than P(True) does; mcts valued by either solved as many
    # problems (bench/RESULTS.md). Not mean_logprob: the prior already is each step's mean
    # logprob, and a value repeating it would turn the search into a likelihood search.
    scorer: str | dict | None = "self_certainty"
    k: int = bounded(3, 1, 16)
    # AlphaLLM keeps the root much wider than the nodes below it (at least 10 first steps on
    # GSM8K, 2-3 children deeper): the first step decides the most, and with `parallel`
    # first steps every descent has a subtree of its own from the second iteration on.
    root_k: int = bounded(8, 1, 64)
    iterations: int = bounded(16, 1, 1024)
    c_puct: float = bounded(1.0, 0.0, 100.0)
    max_depth: int = bounded(8, 1, 64)
    parallel: int = bounded(8, 1, 64)
    final: str = one_of("most_visited", FINAL_RULES)
    rollout: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.scorer is None:
            raise InvalidSearchParam("search.scorer", "mcts needs a scorer to value paths")


@dataclass(frozen=True)
class ValueScale:
    """How PUCT reads a backed-up value. Scores that are probabilities (P(True)) are taken as
    they are, as in ReST-MCTS*; in a tree with a score outside [0, 1] (self-certainty is in
    nats) values are mapped onto [0, 1] by the lowest and highest score, MuZero's min-max,
    so that they weigh against the priors as probabilities would. `low`, the lowest score, is
    also the value a virtual loss counts."""

    low: float = 0.0
    high: float = 0.0

    @classmethod
    def of(cls, tree: Tree) -> ValueScale:
        scores = [node.score for node in tree.nodes() if node.score is not None]
        return cls(min(scores), max(scores)) if scores else cls()

    def __call__(self, value: float) -> float:
        if self.high > self.low and (self.low < 0.0 or self.high > 1.0):
            return (value - self.low) / (self.high - self.low)
        return value


def puct(child: Node, parent: Node, c_puct: float, pending: dict[Node, int], scale: ValueScale) -> float:
    visits = child.visits + pending.get(child, 0)
    if visits == 0:
        return math.inf  # grown but never valued: the budget ran out in between
    value = scale((child.value_sum + pending.get(child, 0) * scale.low) / visits)
    parent_visits = parent.visits + pending.get(parent, 0)
    return value + c_puct * child.prior * math.sqrt(parent_visits) / (1 + visits)


def select_leaf(tree: Tree, c_puct: float, pending: dict[Node, int], held: set[Node],
                past_finished: bool = False) -> Node | None:
    """The leaf a descent by PUCT reaches under the virtual loss of `pending` descents, never
    entering a leaf in `held` (or a subtree with nothing else), nor with `past_finished` a
    finished path already valued; None when no leaf is left to enter."""
    scale = ValueScale.of(tree)
    blocked: dict[Node, bool] = {}

    def is_blocked(node: Node) -> bool:
        if node not in blocked:
            blocked[node] = (node in held or node.pruned or past_finished and node.terminal and node.visits > 0
                             or bool(node.children) and all(map(is_blocked, node.children)))
        return blocked[node]

    node = tree.root
    if is_blocked(node):
        return None
    while node.children:
        parent = node
        node = max((child for child in parent.children if not is_blocked(child)),
                   key=lambda child: puct(child, parent, c_puct, pending, scale))
    return node


def backup(node: Node, value: float) -> None:
    for step in node.path():
        step.visits += 1
        step.value_sum += value


async def evaluate(search: StepSearch, nodes: list[Node], rollout: bool) -> None:
    """Scores each node's path, or its greedy rollout to the end, and backs the score up."""
    if not nodes:
        return
    samples = [search.path_sample(node) for node in nodes]
    if rollout:
        unfinished = [i for i, node in enumerate(nodes) if not node.terminal]
        replies = await search.ctx.generator.generate_many(
            [search.request(nodes[i], 1, 0.0, to_end=True) for i in unfinished])
        for i, [reply] in zip(unfinished, replies):
            samples[i] = search.path_sample(nodes[i], reply)
    scores = await search.ctx.scorer.score(search.ctx.scoring_context(), samples)
    for node, score in zip(nodes, scores):
        node.score = float(score)
        backup(node, node.score)
    search.trace.append({"step": "value", "nodes": [node.address() for node in nodes],
                         "scores": [node.score for node in nodes], "rollout": rollout})


async def grow_and_value(search: StepSearch, leaf: Node, width: int, rollout: bool) -> None:
    """Grows `width` children of the leaf, valuing each one as soon as its own step is back."""
    valuations: list[asyncio.Task] = []
    try:
        async for child in search.grow(leaf, width):
            if child.pruned:
                continue  # never grown further, so never valued
            valuations.append(asyncio.ensure_future(evaluate(search, [child], rollout)))
        await asyncio.gather(*valuations)
    finally:
        for task in valuations:  # what a failed sibling left running
            task.cancel()


async def iterate(search: StepSearch, leaf: Node, params: MCTSParams) -> None:
    """One iteration: grow the leaf and value what is new, or revisit a finished path."""
    if leaf is not search.tree.root and leaf.visits == 0:
        await evaluate(search, [leaf], params.rollout)  # grown, but the budget ran out before its value
    elif leaf.terminal:
        backup(leaf, leaf.score)
        search.trace.append({"step": "revisit", "node": leaf.address()})
    elif leaf.depth < params.max_depth:
        await grow_and_value(search, leaf, params.root_k if leaf is search.tree.root else params.k,
                             params.rollout)
    else:
        await evaluate(search, await search.complete([leaf]), params.rollout)


class Descents:
    """The descents in flight on one search's tree: their virtual losses and held leaves."""

    def __init__(self, search: StepSearch, params: MCTSParams):
        self.search = search
        self.params = params
        self.pending: dict[Node, int] = {}
        self.held: set[Node] = set()
        self.released = asyncio.Condition()  # a descent let go of its leaf
        # The budget ran out in one descent: the others finish what they hold, start nothing new.
        self.stopped: BudgetExhausted | None = None

    async def run(self) -> None:
        """Until the tree has params.iterations; re-raises what stopped the search early."""
        tasks = [asyncio.ensure_future(self.descend()) for _ in range(self.params.parallel)]
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:
                task.cancel()
            raise
        if self.stopped is not None:
            raise self.stopped

    def unclaimed(self) -> int:
        return self.params.iterations - self.search.tree.iterations - len(self.held)

    async def descend(self) -> None:
        tree = self.search.tree
        revisited = False
        while self.unclaimed() > 0 and self.stopped is None:
            # Revisiting a finished path costs nothing and returns at once. While other descents
            # are in flight their virtual losses make the finished paths look best, and idle
            # descents would spend every iteration on revisits before anything new is grown:
            # after a revisit a descent looks past finished paths to a leaf that can still grow.
            past_finished = revisited and bool(self.held)
            leaf = select_leaf(tree, self.params.c_puct, self.pending, self.held, past_finished)
            if leaf is None and not self.held:
                break  # every leaf left was pruned: nothing can grow
            if leaf is None:  # every leaf it may enter is being grown: wait for one to come back
                async with self.released:
                    await self.released.wait()
                continue
            path = leaf.path()
            self.held.add(leaf)
            for node in path:
                self.pending[node] = self.pending.get(node, 0) + 1
            self.search.trace.append({"step": "descent", "node": leaf.address()})
            revisited = leaf.terminal and leaf.visits > 0
            wait_for_budget = False
            try:
                await iterate(self.search, leaf, self.params)
                tree.iterations += 1
            except BudgetExhausted as exc:
                # Descents in flight hold reservations of their worst case, which mostly come
                # back unspent: only a descent that finds the budget gone on its own stops.
                wait_for_budget = len(self.held) > 1
                if not wait_for_budget:
                    self.stopped = self.stopped or exc
            finally:
                self.held.discard(leaf)
                for node in path:
                    self.pending[node] -= 1
                async with self.released:
                    self.released.notify_all()
            if wait_for_budget:
                async with self.released:
                    await self.released.wait()
            else:
                self.search.round_done()


def rank_key(rule: str) -> Callable[[Node], tuple]:
    if rule == "most_visited":
        return lambda node: (node.visits, node.value)
    return lambda node: (node.visits > 0, node.value, node.visits)


def choose(terminals: list[Node], rule: str, equivalent: Callable[[str, str], bool]) -> Node:
    """The finished path the rule picks; "vote" takes the best-valued path of the answer with
    the most value (most_visited when no path has an answer). Ties go to the first found."""
    if rule == "vote":
        weights = answer_weights([node.score for node in terminals])
        top = leader(group_answers([node.answer for node in terminals], equivalent, weights))
        if top is not None:
            return max((terminals[i] for i in top.members), key=rank_key("highest_value"))
        rule = "most_visited"
    return max(terminals, key=rank_key(rule))


async def run(ctx: SearchContext, params: MCTSParams, tree: Tree | None = None) -> SearchResult:
    """Search on a new tree, or on `tree` (a stored one, Tree.from_dict) up to params.iterations."""
    if ctx.scorer is None:
        raise ValueError("mcts needs a scorer in its SearchContext")
    if ctx.scorer.logprobs_needed or ctx.scorer.full_vocab:
        raise ValueError(f"mcts cannot value paths by {ctx.scorer.name}: a tree keeps only the chosen "
                         "tokens' logprobs and the self-certainty the engine recorded")
    search = StepSearch(ctx, params, "mcts", tree)
    try:
        await Descents(search, params).run()
    except BudgetExhausted as exc:
        search.stop(exc)
    terminals = [node for node in search.tree.nodes() if node.terminal]
    if terminals:
        chosen = choose(terminals, params.final, ctx.answers.equivalent)
        rule = params.final
    else:
        best = search.tree.root
        while best.children:
            best = max([child for child in best.children if not child.pruned] or best.children,
                       key=rank_key(params.final))
        chosen = await search.finish(best)
        rule = f"{params.final} path, completed greedily"
    greedy = await search.greedy_answer(lambda node: evaluate(search, [node], rollout=False))
    terminals = [node for node in search.tree.nodes() if node.terminal]
    return search.result(chosen, terminals, [node.score for node in terminals], rule, greedy,
                         scorer=ctx.scorer.name)
