"""bench/mcts_rules.py's picks, and the pairwise AUC it shares with bench/selection_sweep.py."""

from bench.mcts_rules import picks
from bench.selection_sweep import pairwise_auc
from search.tree import Node
from tests.unit.scripted import terminal


def test_each_rule_picks_from_the_same_finished_paths():
    root = Node()
    seven_a = terminal(root, "7", visits=5, score=2.0)
    five = terminal(root, "5", visits=1, score=9.0)
    seven_b = terminal(root, "7", visits=1, score=1.0)
    chosen = picks([seven_a, five, seven_b])
    assert chosen["most_visited"] is seven_a and chosen["highest_value"] is five
    assert chosen["majority"] is seven_a
    # Borda at p = 0.3 over three: ranks 2, 1, 3 weigh 2^0.3 + 1 = 2.23 for "7" against 3^0.3 = 1.39.
    assert chosen["borda"] is seven_a


def test_the_auc_compares_right_with_wrong_paths_of_one_problem_and_counts_ties_half():
    # Right 3.0 against wrong 1.0 (won) and 3.0 (a tie): 1.5 of 2; a problem all right adds no pair.
    assert pairwise_auc([([3.0, 1.0, 3.0], [True, False, False]), ([5.0, 0.0], [True, True])]) == 0.75
    assert pairwise_auc([([1.0], [True])]) is None
