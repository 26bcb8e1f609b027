"""Fit each strategy's greedy margin on the tune half, from the records of a bench.run there.

Every search reports (`search.greedy`) the answer its own rule chose with that answer's support,
and greedy's answer with its support, whatever margin it ran with. So one run on the tune half
answers, for any margin m, what the search would have answered: its own choice when the support
gap beats m, else greedy's. Per margin_key (strategy/scorer/support) this picks the m that
answers the most tune problems right (the largest such m on a tie: move away from greedy only on
evidence) and writes it, with how it was fitted, into search/greedy_margins.json.

    .venv/bin/python -m bench.run --data bench/data/arith_tune.jsonl --out bench/results/tune ...
    .venv/bin/python -m bench.fit_margins bench/results/tune/records.jsonl
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path

from scorers.answers import answers_equivalent
from search.params import MARGINS_FILE

NEVER_MOVES = "never moves"


def right(answer: str | None, gold: str) -> bool:
    return answer is not None and answers_equivalent(answer, gold)


# The rule's outcomes that no margin changes (search.voting.anchor_to_greedy).
MARGIN_FREE = ("the search's choice has greedy's answer", "no greedy candidate", "greedy's candidate has no final answer")


def decisions(records: list[dict]) -> dict[str, list[tuple[float | None, bool, bool]]]:
    """Per margin_key, per search: (support gap, right if it moves, right if it stays greedy's).
    The gap is None where no margin changes the answer (no greedy candidate, greedy's answer
    anyway, nothing to weigh): both outcomes are then the one it had."""
    by_key = defaultdict(list)
    for record in records:
        greedy = (record.get("search") or {}).get("greedy")
        if not greedy:
            continue
        if greedy["reason"] in MARGIN_FREE or None in (greedy["proposed_support"], greedy["greedy_support"]):
            by_key[greedy["margin_key"]].append((None, record["correct"], record["correct"]))
            continue
        gap = greedy["proposed_support"] - greedy["greedy_support"]
        by_key[greedy["margin_key"]].append(
            (gap, right(greedy["proposed_answer"], record["gold"]), right(greedy["greedy_answer"], record["gold"])))
    return by_key


def fit(searches: list[tuple[float | None, bool, bool]]) -> dict:
    """The margin answering the most searches right, the largest on a tie."""
    def correct(margin: float) -> int:
        return sum(moved if gap is not None and gap > margin else stayed for gap, moved, stayed in searches)

    gaps = sorted({gap for gap, _, _ in searches if gap is not None and gap >= 0})
    options = [0.0, *gaps]  # past the largest gap nothing moves; a margin of that gap already says so
    best = max(options, key=lambda margin: (correct(margin), margin))
    return {"margin": best, "tune_searches": len(searches), "tune_correct": correct(best),
            "tune_correct_at_0": correct(0.0), "tune_correct_greedy": sum(stayed for _, _, stayed in searches),
            "moves_on_tune": sum(gap is not None and gap > best for gap, _, _ in searches)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("records", type=Path, nargs="+", help="records.jsonl of bench.run on the tune half")
    parser.add_argument("--out", type=Path, default=MARGINS_FILE)
    parser.add_argument("--note", default="", help="how the tune run was made (its flags, commit), for the record")
    args = parser.parse_args(argv)
    records = [json.loads(line) for path in args.records for line in path.read_text().splitlines() if line.strip()]
    fitted = {key: fit(searches) for key, searches in sorted(decisions(records).items())}
    stored = json.loads(args.out.read_text()) if args.out.exists() else {"margins": {}}
    sources = ", ".join(str(path) for path in args.records)
    note = f" {args.note}" if args.note else ""
    stored["fitted_by"] = (f"python -m bench.fit_margins on {sources} (bench.run on bench/data/arith_tune.jsonl"
                           f"{note}), {time.strftime('%Y-%m-%d')}")
    stored["margins"].update(fitted)
    args.out.write_text(json.dumps(stored, indent=2) + "\n")
    for key, entry in fitted.items():
        print(f"{key}: margin {entry['margin']:.4g}; right on tune {entry['tune_correct']}/{entry['tune_searches']} "
              f"(greedy's answers {entry['tune_correct_greedy']}, margin 0: {entry['tune_correct_at_0']})")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
