"""Critic-guided step search (SPC; critique models as in MathCritique; ALGORITHMS §5).

A step-level beam search. Every open beam proposes k next steps (one engine request per beam,
all in one batch) and the critic judges every new step (one batch). A step judged below
`accept_threshold` gets a critique from the critic and is rewritten by the actor with the
critique in view, up to `max_revisions` times, keeping whichever version the critic rated
highest. Beams rank by the product of their steps' P(correct), the chance that every step is
right. A finished beam leaves the beam; as a product only falls when steps are added, the
search ends once the best finished beam outranks every open one.

The critic is `ctx.critic`: the actor model under SPC's prompt by default, or another model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from search.params import StepParams, bounded
from search.steps import StepSearch
from search.tree import Node
from search.types import BudgetExhausted, SearchContext, SearchResult, StepCritic, StepToJudge

# MathCritique's refinement turn, narrowed from the whole solution to the one rejected step.
REVISION_REQUEST = (
    "{question}\n\n"
    "I have made a critic for one step of an earlier attempt at this problem.\n\n"
    "Step: {step}\n\n"
    "Critic: {critique}\n\n"
    "Please read the critic and solve the problem step by step, correcting that step."
)
# Keeps log P finite when the critic is certain that a step is wrong.
MIN_STEP_SCORE = 1e-6


@dataclass
class CriticParams(StepParams):
    beam_width: int = bounded(2, 1, 16)
    k: int = bounded(2, 1, 16)
    max_steps: int = bounded(8, 1, 64)
    max_revisions: int = bounded(1, 0, 8)
    accept_threshold: float = bounded(0.5, 0.0, 1.0)


def beam_score(node: Node) -> float:
    """log of the product of the critic's P(correct) over the path's steps."""
    return sum(math.log(max(step.score, MIN_STEP_SCORE)) for step in node.path()[1:])


def under_review(step: Node) -> StepToJudge:
    return StepToJudge(step.parent.path_text(), step.text)


async def judge(search: StepSearch, critic: StepCritic, steps: list[Node]) -> None:
    unjudged = [step for step in steps if step.score is None]
    if not unjudged:
        return
    scores = await critic.judge(search.ctx.scoring_context(), [under_review(step) for step in unjudged])
    for step, score in zip(unjudged, scores):
        step.score = float(score)
    search.trace.append({"step": "judge", "nodes": [step.address() for step in unjudged],
                         "scores": [step.score for step in unjudged]})


def revision_conversation(ctx: SearchContext, step: Node, critique: str) -> list[int]:
    """A prompt showing the critique; the actor's reply then starts with the partial solution."""
    content = REVISION_REQUEST.format(question=ctx.question.strip(), step=step.text.strip(),
                                      critique=critique.strip())
    return ctx.generator.chat_prompt_ids([{"role": "user", "content": content}])


async def revise(search: StepSearch, critic: StepCritic, steps: list[Node],
                 params: CriticParams) -> list[Node]:
    """`steps`, each one the critic rejected replaced by its best-judged version."""
    kept = list(steps)
    for _ in range(params.max_revisions):
        weak = [i for i, step in enumerate(kept) if step.score < params.accept_threshold]
        if not weak:
            break
        critiques = await critic.critique(search.ctx.scoring_context(),
                                          [under_review(kept[i]) for i in weak])
        conversations = [revision_conversation(search.ctx, kept[i], critique)
                         for i, critique in zip(weak, critiques)]
        revisions = await search.propose([kept[i].parent for i in weak], 1, params.temperature,
                                         conversations=conversations)
        await judge(search, critic, [revision for [revision] in revisions if not revision.pruned])
        for i, critique, [revision] in zip(weak, critiques, revisions):
            search.trace.append({"step": "revise", "node": kept[i].address(), "critique": critique,
                                 "revision": revision.address(), "score": revision.score})
            if not revision.pruned and revision.score > kept[i].score:
                kept[i] = revision
    return list(dict.fromkeys(kept))  # a revision may repeat a sibling


async def run(ctx: SearchContext, params: CriticParams) -> SearchResult:
    critic = ctx.critic
    if critic is None:
        raise ValueError("critic needs a step critic in its SearchContext")
    search = StepSearch(ctx, params, "critic")
    beams = [search.tree.root]
    finished: list[Node] = []
    try:
        for _ in range(params.max_steps):
            grown = [step for group in await search.expand(beams, params.k) for step in group]
            steps = [step for step in grown if not step.pruned]  # confidence pruning: never judged
            await judge(search, critic, steps)
            steps = await revise(search, critic, steps, params)
            search.round_done()
            finished += [step for step in steps if step.terminal]
            beams = sorted((step for step in steps if not step.terminal), key=beam_score,
                           reverse=True)[:params.beam_width]
            search.trace.append({"step": "beams", "open": [beam.address() for beam in beams],
                                 "finished": [node.address() for node in finished]})
            if not beams or max(map(beam_score, finished), default=-math.inf) >= beam_score(beams[0]):
                break
    except BudgetExhausted as exc:
        search.stop(exc)
    # From the tree, not the beams: the budget may have run out amid a step's revisions.
    judged = [node for node in search.tree.nodes() if node.score is not None]
    finished = [node for node in judged if node.terminal]
    if finished:
        chosen, rule = max(finished, key=beam_score), "highest critic score"
    else:
        deepest = max((node.depth for node in judged), default=0)
        best = max((node for node in judged if node.depth == deepest), key=beam_score,
                   default=search.tree.root)
        chosen, rule = await search.finish(best), "best open beam, completed greedily"
    greedy = await search.greedy_answer(lambda node: judge(search, critic, node.path()[1:]))
    finished = [node for node in search.tree.nodes() if node.terminal and node.score is not None]
    return search.result(chosen, finished, [math.exp(beam_score(node)) for node in finished], rule, greedy,
                         "path P(correct)", critic.name)
