"""What the step searches (mcts, critic) share: growing a tree of reasoning steps in token ids.

A step ends at the delimiter (a stop string, "\\n\\n" by default), which stays in the path, or at
the end of the answer, which makes the node terminal. Growing a node is one engine request
with n samples continuing `prompt_ids + path_ids`, so vLLM's prefix cache serves the shared
prefix; the requests for several nodes go to the engine in one batch.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import replace
from typing import AsyncIterator, Awaitable, Callable, Sequence

from search.params import StepParams, greedy_margin
from search.pruning import StepPruning, confidence_spec
from search.tree import Growth, Node, Tree
from search.types import BudgetExhausted, Candidate, Sample, SamplingSpec, SearchContext, SearchResult, StopRule
from search.voting import anchor_to_greedy, group_answers, vote_shares


def answer_weights(scores: Sequence[float | None]) -> list[float]:
    """Vote weights: the scores shifted so that none is negative (log-probability scorers give
    negative ones), which leaves probabilities as they are. Unscored paths weigh nothing."""
    floor = min([0.0, *(score for score in scores if score is not None)])
    return [0.0 if score is None else score - floor for score in scores]


def softmax(logits: Sequence[float]) -> list[float]:
    peak = max(logits)
    exps = [math.exp(logit - peak) for logit in logits]
    return [value / sum(exps) for value in exps]


def mean_logprob(sample: Sample) -> float:
    return sum(sample.logprobs) / len(sample.logprobs) if sample.logprobs else 0.0


def set_priors(logits: dict[Node, float]) -> None:
    """Each child's prior: the softmax of its step's logit over the siblings given."""
    for child, prior in zip(logits, softmax(list(logits.values())) if logits else []):
        child.prior = prior


class StepSearch:
    """One step search in progress: its context, tree and trace, and the calls that grow it."""

    def __init__(self, ctx: SearchContext, params: StepParams, strategy: str, tree: Tree | None = None):
        self.ctx = ctx
        self.params = params
        self.strategy = strategy
        self.tree = tree if tree is not None else Tree()
        self.trace: list[dict] = []
        self.truncated = False
        self.rounds = 0
        self.requests = 0
        # A value read from the engine's self-certainty needs it recorded for every step.
        self.asks_self_certainty = bool(ctx.scorer and ctx.scorer.token_self_certainty)
        # What earlier runs on a stored tree spent: this run's call traces count after it.
        self.earlier = (self.tree.engine_calls, self.tree.spent_tokens)
        self.growth = Growth(self.tree)
        self.pruning = None if params.prune is None else StepPruning(params.prune, self.tree.prune_threshold)
        # parent -> its child by greedy decoding: from the root, the steps of greedy's answer
        self.greedy_child: dict[Node, Node] = {}
        node = self.tree.root
        for index in self.tree.greedy_path:
            self.greedy_child[node] = node.children[index]
            node = node.children[index]

    def room(self, node: Node) -> int:
        """Tokens the answer may still grow by below `node`: ctx.max_tokens caps the whole path."""
        return self.ctx.max_tokens - len(node.path_ids())

    def request_seed(self) -> int | None:
        """A distinct seed per engine request, so that no two requests repeat each other."""
        self.requests += 1
        return None if self.ctx.seed is None else self.ctx.seed + self.requests

    def request(self, parent: Node, n: int, temperature: float, to_end: bool = False,
                conversation: list[int] | None = None) -> tuple[list[int], SamplingSpec]:
        """The engine request for n continuations of `parent`'s path: each one step long, or
        `to_end` of the answer. `conversation` replaces the prompt before the path (a revision
        is asked for in a conversation that shows the critique)."""
        stop = self.ctx.stop if to_end else (self.params.step_delimiter, *self.ctx.stop)
        spec = SamplingSpec(n=n, max_tokens=self.room(parent), temperature=temperature,
                            top_p=self.params.top_p, stop=stop, seed=self.request_seed(),
                            chosen_logprobs=True,  # priors, and the path a scorer may read
                            token_self_certainty=self.asks_self_certainty, answer=True)
        if self.pruning is not None and not to_end:
            spec = confidence_spec(spec, self.ctx.generator.records_self_certainty)
        prompt = conversation if conversation is not None else self.ctx.prompt_ids
        return prompt + parent.path_ids(), spec

    def greedy_first(self, k: int, temperature: float) -> bool:
        """AlphaLLM's "a node's first child is greedy": the step a small model is likeliest to
        get right is always among the k, asked for apart from the k-1 samples."""
        return self.params.include_greedy and k > 1 and temperature > 0

    async def propose(self, parents: list[Node], n: int, temperature: float, to_end: bool = False,
                      conversations: list[list[int]] | None = None) -> list[list[Node]]:
        """`request`s for every parent in one batch; what comes back is added as their children."""
        if not parents:
            return []
        greedy_first = not to_end and conversations is None and self.greedy_first(n, temperature)
        requests = []
        for index, parent in enumerate(parents):
            conversation = conversations[index] if conversations is not None else None
            if greedy_first:
                requests += [self.request(parent, 1, 0.0), self.request(parent, n - 1, temperature)]
            else:
                requests.append(self.request(parent, n, temperature, to_end, conversation))
        replies = await self.ctx.generator.generate_many(requests, None if to_end else self.stop_rule())
        if greedy_first:
            replies = [replies[i] + replies[i + 1] for i in range(0, len(replies), 2)]
        grown = [self.add_steps(parent, samples, to_end) for parent, samples in zip(parents, replies)]
        if greedy_first or (temperature == 0.0 and conversations is None):
            for parent, children in zip(parents, grown):
                self.greedy_child.setdefault(parent, children[0])  # the greedy sample came first
        kind = "complete" if to_end else "rewrite" if conversations is not None else "expand"
        for parent, children in zip(parents, grown):
            self.trace.append({"step": kind, "node": parent.address(),
                               "children": [child.address() for child in children],
                               "terminal": [child.terminal for child in children]})
        return grown

    async def expand(self, parents: list[Node], k: int) -> list[list[Node]]:
        return await self.propose(parents, k, self.params.temperature)

    async def complete(self, parents: list[Node]) -> list[Node]:
        """One greedy continuation of each parent to the end of the answer."""
        return [children[0] for children in await self.propose(parents, 1, 0.0, to_end=True)]

    async def grow(self, parent: Node, k: int) -> AsyncIterator[Node]:
        """`expand` of one parent with each of its k samples in a request of its own: every new
        child is added and handed over as soon as its own sample is back, to be valued while
        its siblings still decode. Priors are renewed over the children back so far."""
        temperature = self.params.temperature
        greedy_first = self.greedy_first(k, temperature)
        requests = [self.request(parent, 1, 0.0 if greedy_first and index == 0 else temperature)
                    for index in range(k)]
        tasks = self.ctx.generator.start_many(requests, self.stop_rule())
        logits: dict[Node, float] = {}
        try:
            for reply in asyncio.as_completed(tasks):
                [sample] = await reply
                child = self.add_step(parent, sample, to_end=False)
                if greedy_first and tasks[0].done() and not tasks[0].cancelled() \
                        and tasks[0].exception() is None and tasks[0].result()[0] is sample:
                    self.greedy_child.setdefault(parent, child)
                if child not in logits:
                    logits[child] = mean_logprob(sample)
                    set_priors(logits)
                    yield child
        finally:
            for task in tasks:
                task.cancel()
        self.trace.append({"step": "expand", "node": parent.address(),
                           "children": [child.address() for child in logits],
                           "terminal": [child.terminal for child in logits]})

    def stop_rule(self) -> StopRule | None:
        """What stops a step while it is generated: confidence pruning's rule, when asked for."""
        return None if self.pruning is None else self.pruning.should_stop

    def add_steps(self, parent: Node, samples: list[Sample], to_end: bool) -> list[Node]:
        """The distinct children these samples make, with priors: the softmax of each step's
        mean token logprob."""
        logits: dict[Node, float] = {}
        for sample in samples:
            logits.setdefault(self.add_step(parent, sample, to_end), mean_logprob(sample))
        set_priors(logits)
        return list(logits)

    def add_step(self, parent: Node, sample: Sample, to_end: bool) -> Node:
        """The child `sample` makes: a new one, or the existing child with the same tokens."""
        fields = self.step_fields(parent, sample, to_end)
        child = next((c for c in parent.children if c.token_ids == fields["token_ids"]), None)
        return child if child is not None else parent.add_child(**fields, pruned=self.prunes(sample, fields))

    def prunes(self, sample: Sample, step: dict) -> bool:
        """Whether confidence pruning stops a new unfinished step from growing further."""
        if self.pruning is None or step["terminal"] or not sample.token_ids:
            return False
        pruned = not self.pruning.keeps(sample)
        self.tree.prune_threshold = self.pruning.threshold
        return pruned

    def step_fields(self, parent: Node, sample: Sample, to_end: bool) -> dict:
        ids, text, logprobs = list(sample.token_ids), sample.text, list(sample.logprobs)
        delimiter = self.params.step_delimiter
        ends_step = not to_end and sample.stop_reason == delimiter
        if ends_step:
            decoded = self.ctx.generator.decode(ids)
            if delimiter in decoded:
                # vLLM keeps the tokens that completed a stop string while its text drops the
                # string; their text (maybe more than the delimiter) is what the path holds.
                text += decoded[decoded.index(delimiter):]
            else:
                forced = self.ctx.generator.encode(delimiter)
                ids += forced
                logprobs += [0.0] * len(forced)  # appended by us, not sampled: certain
                text += delimiter
        ends_answer = not ends_step and sample.finish_reason == "stop"
        terminal = ends_answer or len(ids) >= self.room(parent)
        answer = self.ctx.answers.extract(parent.path_text() + text) if terminal else None
        certainty = None if sample.token_self_certainty is None else list(sample.token_self_certainty)
        call = None if sample.call is None else sample.call.shifted(*self.earlier)
        return {"token_ids": ids, "text": text, "logprobs": logprobs, "self_certainty": certainty,
                "terminal": terminal, "answer": answer, "call": call}

    def finish_reason(self, node: Node) -> str:
        return "stop" if node.terminal and self.room(node) > 0 else "length"

    def path_sample(self, node: Node, continuation: Sample | None = None) -> Sample:
        """The whole answer up to `node`: every step's tokens and text, concatenated, and then
        `continuation` if one is given."""
        certainty = node.path_self_certainty()
        if continuation is None:
            return Sample(node.path_ids(), node.path_text(), node.path_logprobs(),
                          finish_reason=self.finish_reason(node), token_self_certainty=certainty)
        more = continuation.token_self_certainty
        return Sample(node.path_ids() + continuation.token_ids, node.path_text() + continuation.text,
                      node.path_logprobs() + continuation.logprobs, finish_reason=continuation.finish_reason,
                      token_self_certainty=None if certainty is None or more is None else certainty + more)

    async def finish(self, node: Node) -> Node:
        """`node`, or when it is unfinished its greedy completion, if the budget affords one."""
        if node.terminal:
            return node
        try:
            [completed] = await self.complete([node])
            self.round_done()
            return completed
        except BudgetExhausted as exc:
            self.stop(exc)
            return node

    async def greedy_answer(self, value: Callable[[Node], Awaitable[None]]) -> Node | None:
        """Greedy's answer as a path of the tree: its steps from the root as far as the search
        grew them, completed greedily to the end, and valued by `value` when it has no score.
        None when include_greedy is off, or the budget affords no completion or no value."""
        if not self.params.include_greedy:
            return None
        node = self.tree.root
        while node in self.greedy_child:
            node = self.greedy_child[node]
        node = await self.finish(node)
        self.tree.greedy_path = [int(index) for index in node.address().split(".") if index]
        if not node.terminal:
            return None
        if node.score is None:
            try:
                await value(node)
            except BudgetExhausted as exc:
                self.stop(exc)
        return node

    def round_done(self) -> None:
        self.rounds += 1
        if self.ctx.progress is None:
            return
        usage = self.ctx.generator.usage
        nodes = list(self.tree.nodes())
        self.ctx.progress({
            "strategy": self.strategy,
            "round": self.rounds,
            "nodes": len(nodes) - 1,
            "candidates": sum(node.terminal for node in nodes),
            "completion_tokens": usage.completion_tokens,
            "engine_calls": usage.engine_calls,
            **self.growth.since_last(),
        })

    def stop(self, reason: BudgetExhausted) -> None:
        self.truncated = True
        self.trace.append({"step": "truncated", "reason": str(reason)})

    def result(self, chosen: Node, candidates: list[Node], scores: list[float | None],
               rule: str, greedy: Node | None = None, support: str = "value",
               scorer: str | None = None) -> SearchResult:
        """The SearchResult answering with `chosen`'s path, or with `greedy`'s (one of the
        candidates) when `chosen`'s score (its `support`, by `scorer`) does not beat greedy's by
        the margin; `candidates` are the finished paths and `scores` their scores, which also
        weigh their answers' vote shares. An unfinished `chosen` joins the candidates and makes
        the result truncated."""
        usage = replace(self.ctx.generator.usage)
        if chosen is self.tree.root:
            empty = Candidate(Sample(token_ids=[], text="", logprobs=[]))
            self.trace.append({"step": "select", "node": None, "rule": "nothing generated"})
            return SearchResult(self.strategy, empty, -1, [], usage, True, self.tree_dict(), self.trace,
                                self.pruning_report())
        if chosen not in candidates:
            candidates, scores = [*candidates, chosen], [*scores, chosen.score]
        weights = answer_weights(scores)
        groups = group_answers([node.answer for node in candidates], self.ctx.answers.equivalent, weights)
        votes = vote_shares(groups, len(candidates), sum(weights))
        made = [Candidate(self.path_sample(node), node.answer, score, share)
                for node, score, share in zip(candidates, scores, votes)]
        margin, key, source = greedy_margin(self.params, self.strategy, scorer, support)
        anchor = anchor_to_greedy(candidates.index(chosen), candidates.index(greedy) if greedy in candidates else None,
                                  [node.answer for node in candidates], scores, self.ctx.answers.equivalent,
                                  margin, support, key, source)
        index, chosen = anchor.index, candidates[anchor.index]
        if self.ctx.generator.budget_limited and not self.truncated:
            # A step the budget cut short shapes the tree as surely as a search stopped early.
            self.stop(BudgetExhausted("the budget cut a step short"))
        self.trace.append({"step": "select", "node": chosen.address(), "rule": rule, "answer": chosen.answer,
                           "greedy": anchor.report()})
        truncated = self.truncated or made[index].sample.finish_reason != "stop"
        return SearchResult(self.strategy, made[index], index, made, usage, truncated,
                            self.tree_dict(), self.trace, self.pruning_report(), greedy=anchor)

    def pruning_report(self) -> dict | None:
        return None if self.pruning is None else self.pruning.report()

    def tree_dict(self) -> dict:
        """The tree as stored, counting this run's engine calls and tokens into its totals."""
        usage = self.ctx.generator.usage
        self.tree.engine_calls = self.earlier[0] + usage.engine_calls
        self.tree.spent_tokens = self.earlier[1] + usage.completion_tokens
        return self.tree.to_dict()
