"""The final rule every strategy shares: the answer moves away from greedy's only when the
search's choice has more support than greedy's by more than the margin."""

import json

import pytest

from scorers.answers import answers_equivalent
from search import best_of_n, critic, mcts, params as search_params, self_certainty, self_consistency
from search.best_of_n import BestOfNParams
from search.critic import CriticParams
from search.mcts import MCTSParams
from search.params import greedy_margin, margin_key
from search.self_certainty import SelfCertaintyParams
from search.self_consistency import SelfConsistencyParams
from search.tree import Tree
from search.voting import anchor_to_greedy
from tests.unit.scripted import (
    FixedScorer, PathScorer, ScriptedCritic, ScriptedGenerator, continuation, search_context,
)
from tests.unit.test_greedy_first import greedy_and_sampled


def anchor(proposed=1, greedy=0, answers=("1", "2"), support=(0.25, 0.5), margin=0.1):
    return anchor_to_greedy(proposed, greedy, list(answers), list(support), answers_equivalent, margin,
                            "vote share")


def test_the_choice_moves_only_when_it_beats_greedy_by_more_than_the_margin():
    moved = anchor(margin=0.2)
    assert (moved.index, moved.answer_is_greedy) == (1, False)
    assert "beats greedy's 0.25 by more than the margin 0.2" in moved.reason
    kept = anchor(margin=0.25)  # a gap of exactly the margin is not enough
    assert (kept.index, kept.answer_is_greedy) == (0, True)
    assert "does not beat" in kept.reason
    assert (kept.proposed_index, kept.proposed_answer, kept.greedy_answer) == (1, "2", "1")
    assert (kept.proposed_support, kept.greedy_support) == (0.5, 0.25)


def test_the_rule_without_a_greedy_candidate_or_evidence():
    assert anchor(greedy=None).index == 1 and anchor(greedy=None).reason == "no greedy candidate"
    same = anchor(answers=("4", "4.0"), margin=5)
    assert (same.index, same.answer_is_greedy) == (1, True)  # equivalent answers: greedy's answer
    unanswered = anchor(answers=(None, "2"), support=(0.9, 0.1), margin=5)
    assert (unanswered.index, unanswered.answer_is_greedy) == (1, False)
    unscored = anchor(support=(0.25, None), margin=0)
    assert unscored.index == 0 and "no vote share" in unscored.reason


async def consistency(sampled, **params):
    generator = ScriptedGenerator(greedy_and_sampled(sampled))
    return await self_consistency.run(search_context(generator), SelfConsistencyParams(n=4, **params))


@pytest.mark.asyncio
async def test_self_consistency_needs_its_majority_to_beat_greedy_by_the_margin():
    # Greedy "1" has 1/4 of the votes, "2" has 2/4: a gap of 0.25.
    moved = await consistency(["2", "2", "3"], greedy_margin=0.2)
    assert moved.chosen.answer == "2" and not moved.greedy.answer_is_greedy
    kept = await consistency(["2", "2", "3"], greedy_margin=0.3)
    assert kept.selected_index == 0 and kept.chosen.answer == "1" and kept.greedy.answer_is_greedy
    assert kept.greedy.margin_source == "search.greedy_margin"
    assert kept.greedy.margin_key == "self_consistency/-/vote share"
    assert kept.trace[-1]["greedy"]["reason"] == kept.greedy.reason
    # Without a greedy sample there is nothing to anchor to: the plain majority.
    plain = await consistency(["2", "2", "3", "3"], include_greedy=False, greedy_margin=0.9)
    assert plain.chosen.answer == "2" and plain.greedy.reason == "no greedy candidate"


@pytest.mark.asyncio
async def test_best_of_n_weighs_scores_and_self_certainty_weighs_its_borda_shares():
    generator = ScriptedGenerator(greedy_and_sampled(["2", "3"]))
    ctx = search_context(generator, scorer=FixedScorer([-0.5, -0.2, -0.9]))
    kept = await best_of_n.run(ctx, BestOfNParams(n=3, greedy_margin=0.5))
    assert kept.chosen.answer == "1" and kept.greedy.support == "score"
    assert kept.greedy.proposed_answer == "2" and kept.greedy.proposed_support == -0.2

    generator = ScriptedGenerator(greedy_and_sampled(["2", "3"]))
    ctx = search_context(generator, scorer=FixedScorer([-0.5, -0.2, -0.9]))
    moved = await best_of_n.run(ctx, BestOfNParams(n=3, greedy_margin=0.1))
    assert moved.chosen.answer == "2"

    generator = ScriptedGenerator(greedy_and_sampled(["2", "2"]))
    ctx = search_context(generator, scorer=FixedScorer([1.0, 2.0, 3.0]))
    borda = await self_certainty.run(ctx, SelfCertaintyParams(n=3, power=1.0, greedy_margin=0.0))
    # Borda weights 1, 2, 3 of 6: "2" holds 5/6, greedy's "1" 1/6.
    assert borda.chosen.answer == "2" and borda.greedy.support == "weighted vote share"


def test_an_unset_margin_is_the_fitted_one_for_the_strategy_and_scorer(monkeypatch):
    fitted = {"fitted_by": "python -m bench.fit_margins (test)",
              "margins": {margin_key("self_consistency", None, "vote share"): {"margin": 0.375}}}
    monkeypatch.setattr(search_params, "fitted_margins", lambda: fitted)
    assert greedy_margin(SelfConsistencyParams(), "self_consistency", None, "vote share") == (
        0.375, "self_consistency/-/vote share", "fitted by python -m bench.fit_margins (test)")
    assert greedy_margin(SelfConsistencyParams(greedy_margin=0.1), "self_consistency", None,
                         "vote share") == (0.1, "self_consistency/-/vote share", "search.greedy_margin")
    assert greedy_margin(BestOfNParams(), "best_of_n", "http", "score") == (0.0, "best_of_n/http/score",
                                                                             "not fitted: 0")


def test_the_shipped_margins_say_how_they_were_fitted():
    shipped = json.loads(search_params.MARGINS_FILE.read_text())
    assert shipped["fitted_by"] and isinstance(shipped["margins"], dict)
    for key, entry in shipped["margins"].items():
        assert key.count("/") == 2 and entry["margin"] >= 0


# The step searches: greedy's answer is the path of greedy steps, completed greedily.

GREEDY_ANSWER = "Add 2 and 3.\n\nSo 2 + 3 = 5.\n\nThe answer is 5."
GUESS = "Guess.\n\nThe answer is 7."


def greedy_or_guess(prompt_ids, spec):
    """Greedy decoding writes GREEDY_ANSWER; every sample guesses 7."""
    path = "".join(map(chr, prompt_ids[3:]))
    if spec.temperature == 0.0:
        text = GREEDY_ANSWER[len(path):] if GREEDY_ANSWER.startswith(path) else "The answer is 7."
    else:
        text = GUESS[len(path):] if GUESS.startswith(path) else "The answer is 7."
    return [continuation(text, spec) for _ in range(spec.n)]


async def run_mcts(margin, **params):
    generator = ScriptedGenerator(greedy_or_guess)
    ctx = search_context(generator, scorer=PathScorer({GUESS: 0.9, GREEDY_ANSWER: 0.6}))
    result = await mcts.run(ctx, MCTSParams(iterations=6, root_k=3, k=2, final="highest_value",
                                            greedy_margin=margin, **params))
    return result, generator


@pytest.mark.asyncio
async def test_mcts_keeps_greedys_path_unless_a_path_beats_its_value_by_the_margin():
    kept, _ = await run_mcts(0.5)
    assert kept.chosen.sample.text == GREEDY_ANSWER and kept.greedy.answer_is_greedy
    assert kept.greedy.proposed_answer == "7" and kept.greedy.proposed_support == 0.9
    assert kept.greedy.greedy_support == 0.6 and kept.greedy.support == "value"
    assert GREEDY_ANSWER in [c.sample.text for c in kept.candidates]
    moved, _ = await run_mcts(0.2)
    assert moved.chosen.sample.text == GUESS and not moved.greedy.answer_is_greedy


@pytest.mark.asyncio
async def test_greedys_path_is_kept_in_the_stored_tree_and_not_asked_for_again():
    first, generator = await run_mcts(0.5, max_depth=1)
    # max_depth 1: only the first greedy step was grown; its completion was asked for once.
    completions = [spec for _, spec in generator.calls if spec.stop == ()]
    assert len([spec for spec in completions if spec.temperature == 0.0]) >= 1
    assert first.tree["greedy_path"][0] == 0 and first.chosen.sample.text == GREEDY_ANSWER

    generator = ScriptedGenerator(greedy_or_guess)
    ctx = search_context(generator, scorer=PathScorer({GUESS: 0.9, GREEDY_ANSWER: 0.6}))
    again = await mcts.run(ctx, MCTSParams(iterations=6, root_k=3, k=2, final="highest_value", max_depth=1,
                                           greedy_margin=0.5), tree=Tree.from_dict(first.tree))
    assert generator.calls == []
    assert again.chosen.sample.text == GREEDY_ANSWER and again.tree["greedy_path"] == first.tree["greedy_path"]


async def run_critic(margin):
    generator = ScriptedGenerator(greedy_or_guess)
    judge = ScriptedCritic({"Guess.": 0.99, "The answer is 7.": 0.99}, default=0.6)
    ctx = search_context(generator, critic=judge)
    return await critic.run(ctx, CriticParams(greedy_margin=margin))


@pytest.mark.asyncio
async def test_critic_keeps_greedys_path_unless_its_beam_beats_greedys_by_the_margin():
    # Greedy's three steps at 0.6 each: P(correct) 0.216; the guess's two at 0.99: 0.98.
    kept = await run_critic(0.9)
    assert kept.chosen.sample.text == GREEDY_ANSWER and kept.greedy.answer_is_greedy
    assert kept.greedy.support == "path P(correct)"
    assert kept.greedy.greedy_support == pytest.approx(0.216)
    moved = await run_critic(0.5)
    assert moved.chosen.sample.text == GUESS and moved.greedy.proposed_support == pytest.approx(0.9801)
