"""bench.fit_margins: the margin that answers the most tune problems right, the largest on a tie."""

import json

from bench.fit_margins import decisions, fit, main


def record(gold, proposed, greedy_answer, proposed_support, greedy_support, key="self_consistency/-/vote share",
           reason="weighed", correct=None):
    moved = proposed_support - greedy_support > 0
    return {"gold": gold, "correct": correct if correct is not None else (proposed if moved else greedy_answer) == gold,
            "search": {"greedy": {"margin_key": key, "reason": reason, "greedy_index": 0,
                                  "proposed_answer": proposed, "greedy_answer": greedy_answer,
                                  "proposed_support": proposed_support, "greedy_support": greedy_support}}}


def test_the_margin_keeps_the_moves_that_pay_and_drops_the_ones_that_do_not():
    records = [
        record("5", "5", "4", 0.75, 0.125),  # a big gap: moving is right
        record("5", "6", "5", 0.375, 0.25),  # a small gap: moving is wrong
        record("5", "6", "5", 0.25, 0.125),  # another small one, wrong
        record("7", "7", "7", 0.5, 0.5, reason="the search's choice has greedy's answer"),
    ]
    [(key, searches)] = decisions(records).items()
    assert key == "self_consistency/-/vote share" and searches[-1] == (None, True, True)
    fitted = fit(searches)
    # Any margin from 0.125 to just under 0.625 keeps the big move and drops the small ones: the largest seen is 0.125.
    assert fitted["margin"] == 0.125
    assert (fitted["tune_correct"], fitted["tune_correct_at_0"], fitted["tune_correct_greedy"]) == (4, 2, 3)
    assert fitted["moves_on_tune"] == 1


def test_when_moving_never_pays_the_margin_is_the_largest_gap():
    searches = [(0.5, False, True), (0.25, False, False), (None, True, True)]
    assert fit(searches)["margin"] == 0.5 and fit(searches)["moves_on_tune"] == 0


def test_it_writes_the_margins_with_their_provenance(tmp_path, capsys):
    records = tmp_path / "records.jsonl"
    records.write_text("\n".join(json.dumps(r) for r in [record("5", "5", "4", 0.75, 0.125),
                                                         record("5", "6", "5", 0.375, 0.25, key="mcts/x/value")]))
    out = tmp_path / "margins.json"
    out.write_text(json.dumps({"fitted_by": "old", "margins": {"critic/spc/path P(correct)": {"margin": 0.1}}}))
    main([str(records), "--out", str(out)])
    written = json.loads(out.read_text())
    assert str(records) in written["fitted_by"] and "arith_tune" in written["fitted_by"]
    assert set(written["margins"]) == {"critic/spc/path P(correct)", "mcts/x/value", "self_consistency/-/vote share"}
    assert written["margins"]["mcts/x/value"]["margin"] == 0.125
