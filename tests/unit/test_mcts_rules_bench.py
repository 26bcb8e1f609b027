"""bench/mcts_rules.py's arithmetic: each rule's pick, and the pairwise AUC's pairs."""

from bench.mcts_rules import pairs, picks
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


def test_pairs_compare_right_with_wrong_paths_and_count_ties_half():
    root = Node()
    paths = [terminal(root, "5", 1, 3.0), terminal(root, "7", 1, 1.0), terminal(root, "8", 1, 3.0)]
    assert pairs(paths, [True, False, False]) == (1.5, 2)
    assert pairs(paths, [True, True, True]) == (0.0, 0)
