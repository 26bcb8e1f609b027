"""What the sampling strategies share: drawing candidates, scoring them, and the result."""

from __future__ import annotations

from dataclasses import replace

from search.params import CommonParams, PruneSettings, greedy_margin
from search.pruning import PRUNED, Pruning, confidence_spec
from search.tree import Growth, Tree
from search.types import (
    BudgetExhausted,
    Candidate,
    Sample,
    SamplingSpec,
    SearchContext,
    SearchResult,
    StopRule,
)
from search.voting import AnswerGroup, anchor_to_greedy, group_answers, leader, vote_shares

VOTES = "vote share"
SCORES = "score"
# Vote shares weighted by the scorer (self-certainty's Borda vote): their margin is the scorer's.
WEIGHTED_VOTES = "weighted vote share"


class CandidatePool:
    """The samples one search has drawn, their answers and scores, and a trace of how."""

    def __init__(self, ctx: SearchContext, strategy: str):
        self.ctx = ctx
        self.strategy = strategy
        self.samples: list[Sample] = []
        self.answers: list[str | None] = []
        self.scores: list[float] | None = None
        self.trace: list[dict] = []
        self.truncated = False
        self.rounds = 0
        self.pruning: Pruning | None = None
        self.pruned: list[Sample] = []  # stopped by a stop rule: counted in the usage, never candidates
        self.tree = Tree()  # a root with a child per candidate, grown as they come
        self.growth = Growth(self.tree)
        self.params: CommonParams | None = None
        self.greedy_index: int | None = None  # the greedy sample's candidate, when one was drawn

    def call_seed(self) -> int | None:
        """A distinct seed per engine call: one seed for every call would repeat the samples."""
        return None if self.ctx.seed is None else self.ctx.seed + self.rounds

    async def draw(self, n: int, params: CommonParams, confidence: bool = False,
                   should_stop: StopRule | None = None) -> list[Sample]:
        """`n` more samples of the prompt, in one engine call (with `should_stop`, one request per
        sample); `confidence` asks for what token confidence reads. Returns the samples kept:
        those the stop rule stopped go to `pruned`."""
        self.params = params
        scorer = self.ctx.scorer
        spec = SamplingSpec(
            n=n,
            max_tokens=self.ctx.max_tokens,
            temperature=params.temperature,
            top_p=params.top_p,
            stop=self.ctx.stop,
            seed=self.call_seed(),
            logprobs=scorer.logprobs_needed if scorer else None,
            chosen_logprobs=bool(scorer and scorer.chosen_logprobs),
            full_vocab_logprobs=bool(scorer and scorer.full_vocab),
            token_self_certainty=bool(scorer and scorer.token_self_certainty),
            answer=True,
        )
        if confidence:
            spec = confidence_spec(spec, self.ctx.generator.records_self_certainty)
        if params.include_greedy and not self.samples and n > 1 and params.temperature > 0:
            greedy = replace(spec, n=1, temperature=0.0, top_p=1.0, seed=None)
            drawn = await self.ctx.generator.generate_many(
                [(self.ctx.prompt_ids, greedy), (self.ctx.prompt_ids, replace(spec, n=n - 1))])
            samples = [sample for group in drawn for sample in group]
            self.greedy_index = 0
        else:
            samples = await self.ctx.generator.generate(self.ctx.prompt_ids, spec, should_stop)
        stopped = [sample for sample in samples if sample.finish_reason == PRUNED]
        samples = [sample for sample in samples if sample.finish_reason != PRUNED]
        first = len(self.samples)
        answers = [self.ctx.answers.extract(sample.text) for sample in samples]
        self.samples.extend(samples)
        self.answers.extend(answers)
        self.pruned.extend(stopped)
        for sample, answer in zip(samples, answers):
            self.tree.root.add_child(token_ids=list(sample.token_ids), text=sample.text,
                                     terminal=sample.finish_reason != "length", answer=answer, call=sample.call)
        for sample in stopped:  # drawn in the tree (the viewer greys them), never candidates
            self.tree.root.add_child(token_ids=list(sample.token_ids), text=sample.text, call=sample.call, pruned=True)
        step = {
            "step": "sample",
            "first_index": first,
            "answers": answers,
            "tokens": [len(sample.token_ids) for sample in samples],
            "finish_reasons": [sample.finish_reason for sample in samples],
        }
        if stopped:
            step["pruned_tokens"] = [len(sample.token_ids) for sample in stopped]
        self.trace.append(step)
        self.round_done()
        return samples

    async def draw_pruned(self, n: int, params: CommonParams, settings: PruneSettings) -> None:
        """`n` samples under online confidence pruning (search.pruning): a warm-up drawn whole,
        then the rest `settings.batch` at a time (0: in one call), each stopped when its
        confidence falls below the warm-up's threshold or once the vote is settled; a settled
        vote leaves the rest undrawn."""
        answers = self.ctx.answers
        self.pruning = pruning = Pruning(settings, answers.extract, answers.equivalent, self.ctx.max_tokens)
        warmup = min(settings.warmup, n)
        warmup_samples = await self.draw(warmup, params, confidence=True)
        pruning.warm_up(warmup_samples, None if self.greedy_index is None else self.samples[self.greedy_index])
        rest = n - warmup
        while rest and not pruning.settled:
            batch = min(rest, settings.batch or rest)
            await self.draw(batch, params, confidence=True, should_stop=pruning.stop_rule(first=n - rest))
            rest -= batch
        pruning.not_drawn = rest
        self.trace.append({"step": "prune", **self.pruning_report()})

    def confidence_vote(self) -> SearchResult:
        """The first candidate of the answer with the most confidence weight (search.pruning);
        the plain majority when no candidate passed the threshold."""
        weights = [self.pruning.weight(sample) for sample in self.samples]
        groups = self.groups(weights)
        top = leader(groups)
        if top is None or top.weight <= 0:
            index, votes = self.majority()
            return self.result(index, votes, "majority (no confident answer)")
        return self.result(top.members[0], vote_shares(groups, len(self.samples), sum(weights)),
                           "confidence-weighted majority")

    async def draw_all(self, n: int, params: CommonParams) -> None:
        """`n` samples: pruned when the params ask it (search.prune), else in one call."""
        settings = getattr(params, "prune", None)
        if settings is not None:
            await self.draw_pruned(n, params, settings)
        else:
            await self.draw(n, params)

    async def score(self) -> list[float] | None:
        """Every candidate's score from the context's scorer; None without a scorer."""
        if self.ctx.scorer is None or not self.samples:
            return None
        calls_before = self.ctx.generator.usage.engine_calls
        scores = await self.ctx.scorer.score(self.ctx.scoring_context(), self.samples)
        self.scores = [float(score) for score in scores]
        for child, score in zip([child for child in self.tree.root.children if not child.pruned], self.scores):
            child.score = score
        self.trace.append({"step": "score", "scorer": self.ctx.scorer.name, "scores": self.scores})
        if self.ctx.generator.usage.engine_calls > calls_before:
            self.round_done()
        return self.scores

    def round_done(self) -> None:
        self.rounds += 1
        if self.ctx.progress is None:
            return
        usage = self.ctx.generator.usage
        top = leader(self.groups())
        self.ctx.progress({
            "strategy": self.strategy,
            "round": self.rounds,
            "candidates": len(self.samples),
            "completion_tokens": usage.completion_tokens,
            "engine_calls": usage.engine_calls,
            "leader": top.answer if top else None,
            "leader_votes": top.weight if top else 0,
            **self.growth.since_last(),
        })

    def stop(self, reason: BudgetExhausted) -> None:
        self.truncated = True
        self.trace.append({"step": "truncated", "reason": str(reason)})

    def groups(self, weights: list[float] | None = None) -> list[AnswerGroup]:
        return group_answers(self.answers, self.ctx.answers.equivalent, weights)

    def majority(self) -> tuple[int, list[float]]:
        """The first candidate carrying the most-voted answer (0 if none has an answer), and
        every candidate's vote share."""
        groups = self.groups()
        top = leader(groups)
        index = top.members[0] if top else 0
        return index, vote_shares(groups, len(self.samples), len(self.samples))

    def result(self, selected: int, votes: list[float], rule: str, support: str = VOTES) -> SearchResult:
        """The SearchResult choosing candidate `selected` by `rule` (a word for the trace), or
        greedy's candidate when `selected`'s support (its VOTES, SCORES or WEIGHTED_VOTES) does
        not beat greedy's by the margin."""
        usage = replace(self.ctx.generator.usage)
        truncated = self.truncated or self.ctx.generator.budget_limited
        candidates = [Candidate(sample, answer, self.scores[index] if self.scores is not None else None, votes[index])
                      for index, (sample, answer) in enumerate(zip(self.samples, self.answers))]
        if not candidates:
            empty = Candidate(Sample(token_ids=[], text="", logprobs=[]))
            self.trace.append({"step": "select", "index": -1, "rule": "nothing generated"})
            return SearchResult(self.strategy, empty, -1, [], usage, truncated, self.tree.to_dict(),
                                self.trace, self.pruning_report())
        scorer = None if support == VOTES or self.ctx.scorer is None else self.ctx.scorer.name
        margin, key, source = greedy_margin(self.params or CommonParams(), self.strategy, scorer, support)
        values = self.scores if support == SCORES and self.scores is not None else votes
        anchor = anchor_to_greedy(selected, self.greedy_index, self.answers, values,
                                  self.ctx.answers.equivalent, margin, support, key, source)
        self.trace.append({"step": "select", "index": anchor.index, "rule": rule,
                           "answer": self.answers[anchor.index], "greedy": anchor.report()})
        return SearchResult(self.strategy, candidates[anchor.index], anchor.index, candidates, usage,
                            truncated, self.tree.to_dict(), self.trace, self.pruning_report(), greedy=anchor)

    def pruning_report(self) -> dict | None:
        if self.pruning is None:
            return None
        return self.pruning.report([len(sample.token_ids) for sample in self.pruned])


async def sample_and_score(ctx: SearchContext, params: CommonParams, strategy: str) -> CandidatePool:
    """Best-of-N's first half: N samples in one call, then the scorer; stops at the budget."""
    if ctx.scorer is None:
        raise ValueError(f"{strategy} needs a scorer in its SearchContext")
    pool = CandidatePool(ctx, strategy)
    try:
        await pool.draw_all(params.n, params)
        await pool.score()
    except BudgetExhausted as exc:
        pool.stop(exc)
    return pool


def select_best_scored(pool: CandidatePool, prefer_answered: bool = False) -> SearchResult:
    """Argmax of the scores (ties to the lowest index). With `prefer_answered`, candidates
    without an extracted answer are chosen only when none has one. Unscored (the budget ran
    out before scoring), the majority answer is the best there is."""
    majority_index, votes = pool.majority()
    if pool.scores is None:
        return pool.result(majority_index, votes, "majority (unscored)")
    eligible = [i for i, answer in enumerate(pool.answers) if answer is not None]
    if not prefer_answered or not eligible:
        eligible = list(range(len(pool.samples)))
    index = max(eligible, key=lambda i: (pool.scores[i], -i))
    return pool.result(index, votes, "argmax score", SCORES)
