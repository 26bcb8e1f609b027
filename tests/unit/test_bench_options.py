"""bench/run.py sends what its flags say, and leaves the rest to the strategies' defaults."""

from bench.run import GREEDY, build_parser, request_options


def options(*flags: str, strategy: str = "self_consistency", extra: dict | None = None) -> dict:
    args = build_parser().parse_args(list(flags))
    return request_options(strategy, args, extra or {})


def test_searches_use_their_own_temperature_unless_one_is_given():
    search = options()["extra_body"]["search"]
    assert search == {"strategy": "self_consistency", "n": 8, "answer_format": "number", "cache": False}
    assert options("--temperature", "0.5")["extra_body"]["search"]["temperature"] == 0.5


def test_greedy_is_plain_and_extra_search_parameters_apply_per_strategy():
    assert options(strategy=GREEDY) == {"temperature": 0.0, "max_tokens": 256}
    search = options("--cache", extra={"self_consistency": {"adaptive": True}})["extra_body"]["search"]
    assert search["adaptive"] is True and "cache" not in search


def test_the_paired_bootstrap_interval_brackets_the_difference_and_narrows_when_paired():
    from bench.run import paired_bootstrap

    greedy = [True] * 30 + [False] * 70
    better = [True] * 30 + [True] * 10 + [False] * 60  # right on everything greedy got, and 10 more
    low, high = paired_bootstrap(greedy, better)
    assert 0 < low < 0.10 < high < 0.2
    assert paired_bootstrap(greedy, better) == (low, high)  # seeded
    # The same accuracies, unpaired (right on other problems): a much wider interval, across 0.
    shuffled = [False] * 30 + [True] * 40 + [False] * 30
    wide_low, wide_high = paired_bootstrap(greedy, shuffled)
    assert wide_low < 0 < wide_high and wide_high - wide_low > 2 * (high - low)
    assert paired_bootstrap(greedy, greedy) == (0.0, 0.0)


def test_the_bootstrap_needs_the_same_problems_on_both_sides():
    import pytest

    from bench.run import paired_bootstrap

    with pytest.raises(ValueError):
        paired_bootstrap([True], [True, False])
    with pytest.raises(ValueError):
        paired_bootstrap([], [])


def test_the_summaries_carry_the_interval_against_greedy():
    from bench.run import Outcome, add_ratios, format_table, summarize

    def outcomes(strategy, right):
        return [Outcome(f"p{i}", strategy, "1", "1" if ok else "2", ok, 10, 0.1) for i, ok in enumerate(right)]

    greedy, search = outcomes(GREEDY, [True, False] * 10), outcomes("self_consistency", [True] * 20)
    summaries = [summarize(GREEDY, greedy, 1.0), summarize("self_consistency", search, 2.0)]
    add_ratios(summaries, greedy + search)
    assert summaries[0]["accuracy_delta_ci95"] == [0.0, 0.0]
    low, high = summaries[1]["accuracy_delta_ci95"]
    assert 0 < low <= 0.5 <= high
    assert "[+" in format_table(summaries)


def test_a_stopped_runs_records_still_make_the_table(tmp_path, capsys):
    import json
    from dataclasses import asdict

    from bench.run import Outcome, main

    records = tmp_path / "records.jsonl"
    rows = [Outcome(f"p{i}", strategy, "1", "1" if ok else "2", ok, 10, 0.1)
            for strategy, right in ((GREEDY, [True, False]), ("mcts", [True, True])) for i, ok in enumerate(right)]
    records.write_text("".join(json.dumps(asdict(row)) + "\n" for row in rows))
    main(["--from-records", str(records)])
    table = capsys.readouterr().out
    assert "mcts" in table and "100.0%" in table and "+50.0%" in table


def test_the_pruning_bench_compares_each_pruned_run_to_its_own_unpruned_one(tmp_path):
    from bench.pruning import compare_to_unpruned, format_rows, labels_and_settings, plot
    from bench.run import Outcome, add_ratios, summarize

    labels, extra = labels_and_settings(["self_consistency", "mcts"], ["true"])
    assert labels == ["self_consistency", "self_consistency@pruned", "mcts", "mcts@pruned"]
    assert extra["mcts@pruned"] == {"prune": True}
    assert options(strategy="mcts@pruned", extra=extra)["extra_body"]["search"]["strategy"] == "mcts"

    def run(label: str, right: int, tokens: int, report: dict | None = None) -> list[Outcome]:
        return [Outcome(f"p{i}", label, "5", "5" if i < right else "7", i < right, tokens, 1.0,
                        search={"pruning": report} if report else None) for i in range(10)]

    outcomes = (run(GREEDY, 3, 100) + run("self_consistency", 4, 1600) + run("mcts", 3, 1200)
                + run("self_consistency@pruned", 4, 700, {"pruned": 9, "stopped_at_consensus": 2, "threshold": 1.5})
                + run("mcts@pruned", 2, 600, {"pruned": 3, "cut_mid_step": 1, "threshold": 2.0}))
    summaries = [summarize(label, [o for o in outcomes if o.strategy == label], 1.0) for label in [GREEDY, *labels]]
    add_ratios(summaries, outcomes)
    compare_to_unpruned(summaries, outcomes)
    by_label = {s["strategy"]: s for s in summaries}

    assert by_label["self_consistency@pruned"]["tokens_vs_unpruned"] == 700 / 1600
    assert by_label["self_consistency@pruned"]["delta_vs_unpruned_ci95"] == [0.0, 0.0]  # the same problems right
    assert by_label["mcts@pruned"]["pruning"] == {"pruned": 30, "cut_mid_step": 10, "threshold": 2.0}
    low, high = by_label["mcts@pruned"]["delta_vs_unpruned_ci95"]
    assert low < 0 and high <= 0  # it lost one problem mcts had, and won none
    table = format_rows(summaries)
    assert "| self_consistency@pruned | 40.0% (4/10) |" in table and "| 0.44 |" in table
    plot([("set", summaries)], tmp_path / "plot.png", "title")
    assert (tmp_path / "plot.png").stat().st_size > 10_000


def test_the_pruning_bench_reports_a_run_stopped_midway_from_its_records(tmp_path, capsys):
    import json
    from dataclasses import asdict

    from bench.pruning import main
    from bench.run import Outcome

    rows = [Outcome(f"p{i}", label, "5", "5", i < right, tokens, 1.0)
            for label, right, tokens in [(GREEDY, 2, 100), ("mcts", 3, 1200), ("mcts@pruned", 3, 500)]
            for i in range(6)]
    rows.append(Outcome("p0", "self_consistency@pruned", "5", "5", True, 900, 1.0))  # its unpruned run never ran
    (tmp_path / "records-dev.jsonl").write_text("".join(json.dumps(asdict(row)) + "\n" for row in rows))
    main(["--from-records", str(tmp_path)])
    printed = capsys.readouterr().out
    assert "| mcts@pruned | 50.0% (3/6) |" in printed and "| 0.42 |" in printed
    assert (tmp_path / "accuracy_vs_tokens.png").exists()


def test_a_resumed_run_asks_only_what_its_records_lack_and_must_match_the_run_it_continues(tmp_path):
    import json
    from dataclasses import asdict

    import pytest

    from bench.run import Outcome, check_resumable, recorded_problems, summarize_records

    records = tmp_path / "records.jsonl"
    rows = [Outcome("p1", GREEDY, "5", "5", True, 10, 1.0), Outcome("p2", GREEDY, "5", None, False, None, 1.0,
                                                                       error="APITimeoutError"),
            Outcome("p1", "mcts", "5", "7", False, 90, 2.0)]
    records.write_text("".join(json.dumps(asdict(row)) + "\n" for row in rows))
    assert recorded_problems(records) == {GREEDY: {"p1"}, "mcts": {"p1"}}  # the failed one is asked again
    with records.open("a") as lines:
        lines.write(json.dumps(asdict(Outcome("p2", GREEDY, "5", "5", True, 12, 1.0))) + "\n")
    greedy = next(s for s in summarize_records(records) if s["strategy"] == GREEDY)
    assert (greedy["problems"], greedy["correct"], greedy["errors"]) == (2, 2, 0)  # the retry replaced the failure

    config = {"data": "d.jsonl", "n": 8, "strategies": ["mcts"], "commit": "abc"}
    (tmp_path / "run.json").write_text(json.dumps(config))
    check_resumable(tmp_path, {**config, "commit": "def"})  # other code: said, not refused
    with pytest.raises(SystemExit, match="n"):
        check_resumable(tmp_path, {**config, "n": 16})
