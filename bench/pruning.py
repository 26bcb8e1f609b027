"""Confidence pruning side by side: greedy, each strategy as it is and with `search.prune`, in
one run against one deliberate server, on one or more JSONL problem sets (bench.run's).

Per set it prints accuracy with a 95% Wilson interval, generated tokens per problem (usage) and
their ratio to the same search unpruned, the paired-bootstrap interval of the accuracy
difference pruned - unpruned, and what pruning reported; and it plots accuracy against tokens
per problem, each strategy's pruned point joined to its unpruned one, greedy marked.
Needs a running deliberate server (--base-url); every request sets `cache: false`.

    .venv/bin/python -m bench.pruning --data bench/data/arith_dev.jsonl --data bench/data/arith_test.jsonl \\
        --strategies self_consistency,mcts --n 16 --prune-json true
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import statistics
import time
from pathlib import Path

from bench.run import (
    DEFAULT_DATA, GREEDY, INSTRUCTION, Outcome, add_ratios, correct_by_problem, log_token_axis, paired_bootstrap,
    run_benchmark, strategy_of, summarize,
)

WILSON_Z = 1.96
PRUNED = "pruned"  # the label variant: "self_consistency@pruned"


def wilson(correct: int, total: int) -> tuple[float, float]:
    """The 95% Wilson score interval of a binomial proportion."""
    if total == 0:
        return 0.0, 1.0
    p = correct / total
    centre = (p + WILSON_Z ** 2 / (2 * total)) / (1 + WILSON_Z ** 2 / total)
    half = WILSON_Z * math.sqrt(p * (1 - p) / total + WILSON_Z ** 2 / (4 * total ** 2)) / (1 + WILSON_Z ** 2 / total)
    return max(0.0, centre - half), min(1.0, centre + half)


def pruned_labels(strategy: str, variants: int) -> list[str]:
    return [f"{strategy}@{PRUNED}"] if variants == 1 else [f"{strategy}@{PRUNED}-{k + 1}" for k in range(variants)]


def labels_and_settings(strategies: list[str], prune_texts: list[str]) -> tuple[list[str], dict[str, dict]]:
    """Every run's label in order (each strategy, then its pruned variants) and each pruned
    label's `search` additions."""
    settings = [json.loads(text) for text in prune_texts]
    labels, extra = [], {}
    for strategy in strategies:
        labels.append(strategy)
        for label, prune in zip(pruned_labels(strategy, len(settings)), settings):
            labels.append(label)
            extra[label] = {"prune": prune}
    return labels, extra


def pruning_totals(outcomes: list[Outcome]) -> dict:
    """What the reports' `pruning` objects add up to (their keys differ by strategy kind)."""
    reports = [o.search["pruning"] for o in outcomes if o.search and o.search.get("pruning")]
    totals: dict = {}
    for report in reports:
        for key, value in report.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and key not in ("window", "percentile"):
                totals[key] = totals.get(key, 0) + value
    thresholds = [r["threshold"] for r in reports if r.get("threshold") is not None]
    totals["threshold"] = statistics.fmean(thresholds) if thresholds else None
    return totals


def compare_to_unpruned(summaries: list[dict], outcomes: list[Outcome]) -> None:
    """Adds Wilson intervals to every summary, and to each pruned one its tokens' ratio to the
    unpruned search, the paired interval of pruned - unpruned accuracy and the pruning totals."""
    by_label = {summary["strategy"]: summary for summary in summaries}
    for summary in summaries:
        summary["interval_95"] = list(wilson(summary["correct"], summary["problems"]))
        label = summary["strategy"]
        unpruned = by_label.get(strategy_of(label))
        if "@" not in label or unpruned is None:
            continue
        summary["tokens_vs_unpruned"] = summary["mean_completion_tokens"] / unpruned["mean_completion_tokens"]
        mine, theirs = correct_by_problem(outcomes, label), correct_by_problem(outcomes, unpruned["strategy"])
        ids = sorted(mine.keys() & theirs.keys())
        summary["delta_vs_unpruned_ci95"] = list(paired_bootstrap([theirs[i] for i in ids], [mine[i] for i in ids]))
        summary["pruning"] = pruning_totals([o for o in outcomes if o.strategy == label])


def format_rows(summaries: list[dict]) -> str:
    def ratio(value) -> str:
        return "-" if value is None else f"{value:.2f}"

    lines = ["| run | accuracy | 95% interval | Δ vs unpruned, 95% CI | tokens/problem | x unpruned | x greedy | "
             "pruned | stopped at consensus |",
             "|---|---|---|---|---|---|---|---|---|"]
    for s in summaries:
        low, high = s["interval_95"]
        delta = s.get("delta_vs_unpruned_ci95")
        pruning = s.get("pruning") or {}
        unpruned = None if s["strategy"] == GREEDY else s.get("tokens_vs_unpruned", 1.0)
        lines.append(
            f"| {s['strategy']} | {s['accuracy']:.1%} ({s['correct']}/{s['problems']}) | {low:.1%} - {high:.1%} | "
            f"{'-' if delta is None else f'[{delta[0]:+.1%}, {delta[1]:+.1%}]'} | {s['mean_completion_tokens']:.1f} | "
            f"{ratio(unpruned)} | {ratio(s['tokens_ratio_vs_greedy'])} | {pruning.get('pruned', '-')} | "
            f"{pruning.get('stopped_at_consensus', '-')} |")
    return "\n".join(lines)


def plot(sets: list[tuple[str, list[dict]]], path: Path, title: str) -> None:
    """Accuracy against tokens per problem, a panel per problem set; Wilson intervals as bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, panels = plt.subplots(1, len(sets), figsize=(6.5 * len(sets), 4.6), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for axes, (name, summaries) in zip(panels[0], sets):
        strategies = list(dict.fromkeys(strategy_of(s["strategy"]) for s in summaries if s["strategy"] != GREEDY))
        for summary in summaries:
            x, y = summary["mean_completion_tokens"], summary["accuracy"]
            low, high = summary["interval_95"]
            if summary["strategy"] == GREEDY:
                axes.errorbar(x, y, yerr=[[y - low], [high - y]], fmt="*", markersize=14, color="black",
                              capsize=3, zorder=3, label="greedy")
                axes.axhline(y, color="black", linestyle=":", linewidth=1)
                continue
            colour = colours[strategies.index(strategy_of(summary["strategy"])) % len(colours)]
            pruned = "@" in summary["strategy"]
            axes.errorbar(x, y, yerr=[[y - low], [high - y]], fmt="v" if pruned else "o", markersize=8,
                          color=colour, capsize=3, alpha=0.9, zorder=3, label=summary["strategy"])
        by_label = {s["strategy"]: s for s in summaries}
        for summary in summaries:
            base = by_label.get(strategy_of(summary["strategy"]))
            if "@" in summary["strategy"] and base is not None:
                axes.annotate("", (summary["mean_completion_tokens"], summary["accuracy"]),
                              (base["mean_completion_tokens"], base["accuracy"]),
                              arrowprops={"arrowstyle": "->", "color": "grey", "linewidth": 1})
        log_token_axis(axes)
        axes.set_xlabel("generated tokens per problem (usage.completion_tokens), log scale")
        axes.set_ylabel("accuracy (95% Wilson interval)")
        axes.set_title(f"{name} ({summaries[0]['problems']} problems)", fontsize=10)
        axes.grid(True, alpha=0.3)
        axes.legend(loc="upper left", fontsize=8)
    figure.suptitle(title, fontsize=11)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def compared(outcomes: list[Outcome]) -> list[dict]:
    """Every label's summary, in the run's order, against greedy and its unpruned search."""
    labels = list(dict.fromkeys(outcome.strategy for outcome in outcomes))
    summaries = [summarize(label, [o for o in outcomes if o.strategy == label], None) for label in labels]
    add_ratios(summaries, outcomes)
    compare_to_unpruned(summaries, outcomes)
    return summaries


def report_records(directory: Path) -> None:
    sets = []
    for records in sorted(directory.glob("records-*.jsonl")):
        outcomes = [Outcome(**json.loads(line)) for line in records.read_text().splitlines() if line.strip()]
        summaries = compared(outcomes)
        print(f"\n{records.name}\n{format_rows(summaries)}")
        sets.append((records.stem.removeprefix("records-"), summaries))
    plot(sets, directory / "accuracy_vs_tokens.png", "confidence pruning")
    print(f"plot: {directory / 'accuracy_vs_tokens.png'}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.pruning", description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-url", default="http://127.0.0.1:8000/v1")
    parser.add_argument("--api-key", default="EMPTY")
    parser.add_argument("--model")
    parser.add_argument("--data", type=Path, action="append", help=f"a problem set (repeatable); default {DEFAULT_DATA}")
    parser.add_argument("--limit", type=int, help="only the first LIMIT problems of each set")
    parser.add_argument("--strategies", default="self_consistency", help="comma-separated")
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--temperature", type=float)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--prune-json", action="append",
                        help='a search.prune value to run beside each strategy (repeatable); default "true"')
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--request-timeout", type=float, default=1800.0)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--from-records", type=Path, metavar="DIR",
                        help="tables and plot again from a run's records-*.jsonl (one stopped midway too), and exit")
    args = parser.parse_args(argv)
    if args.from_records:
        return report_records(args.from_records)
    # What bench.run's request_options and run_benchmark read.
    args.answer_format, args.cache, args.instruction, args.arith_verifier = "number", False, INSTRUCTION, False
    strategies = [name.strip() for name in args.strategies.split(",") if name.strip()]
    labels, extra = labels_and_settings(strategies, args.prune_json or ["true"])
    out = args.out or Path("bench/results") / time.strftime("pruning-%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    sets, tables, model = [], [], None
    for data in args.data or [DEFAULT_DATA]:
        args.data = data
        records = out / f"records-{data.stem}.jsonl"
        records.unlink(missing_ok=True)
        model, summaries, outcomes = asyncio.run(run_benchmark(args, labels, extra, records))
        add_ratios(summaries, outcomes)
        compare_to_unpruned(summaries, outcomes)
        table = format_rows(summaries)
        print(f"\n{data.name}\n{table}")
        sets.append((data.stem, summaries))
        tables.append({"data": str(data), "table": table, "summaries": summaries})
    settings = {label: value["prune"] for label, value in extra.items()}
    print(f"prune settings: {json.dumps(settings)}")
    config = {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()}
    (out / "results.json").write_text(json.dumps({"config": config, "model": model, "prune": settings,
                                                  "sets": tables}, indent=2))
    plot(sets, out / "accuracy_vs_tokens.png", f"{model}: confidence pruning, n={args.n}")
    print(f"results: {out / 'results.json'}, plot: {out / 'accuracy_vs_tokens.png'}")


if __name__ == "__main__":
    main()
