"""Accuracy vs compute: run a JSONL problem set through an OpenAI-compatible server, once with
greedy decoding and once per search strategy, and compare accuracy with generated tokens.

Each line of the data file is {"id", "question", "answer"}. Works against any OpenAI-compatible
base URL; the search strategies need a deliberate server (they travel in `extra_body`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from openai import APIError, AsyncOpenAI
from tqdm import tqdm

from bench import arith_verifier
from scorers.answers import answers_equivalent, extract_answer

# Figures come from the test half; defaults and margins are fitted on arith_tune.jsonl.
DEFAULT_DATA = Path(__file__).parent / "data" / "arith_test.jsonl"
DEFAULT_STRATEGIES = "best_of_n,self_certainty,self_consistency,self_agreement"
GREEDY = "greedy"
INSTRUCTION = 'Think step by step, then write "The answer is N." with the number N.'


@dataclass
class Outcome:
    """One problem answered under one strategy."""

    id: str
    strategy: str
    gold: str
    extracted: str | None
    correct: bool
    completion_tokens: int | None
    latency_s: float
    text: str | None = None
    search: dict | None = None
    error: str | None = None


def load_problems(path: Path, limit: int | None) -> list[dict]:
    with path.open() as lines:
        problems = [json.loads(line) for line in lines if line.strip()]
    return problems[:limit] if limit else problems


def prompt_messages(question: str, instruction: str) -> list[dict]:
    return [{"role": "user", "content": f"{question}\n{instruction}"}]


VERIFIED = "verifier"  # a label's variant: the strategy scored by --arith-verifier


def strategy_of(label: str) -> str:
    """The strategy a --strategies label runs: "best_of_n@verifier" is best_of_n with its own options."""
    return label.split("@", 1)[0]


def request_options(strategy: str, args: argparse.Namespace, extra_search: dict,
                    verifier_url: str | None = None) -> dict:
    """The chat.completions.create keyword arguments for one strategy label (besides model/messages)."""
    if strategy == GREEDY:
        return {"temperature": 0.0, "max_tokens": args.max_tokens}
    search = {"strategy": strategy_of(strategy), "n": args.n, "answer_format": args.answer_format}
    if strategy.endswith("@" + VERIFIED):
        if verifier_url is None:
            raise SystemExit(f"{strategy}: the @{VERIFIED} variants need --arith-verifier")
        search["scorer"] = {"url": verifier_url}
    if args.temperature is not None:
        search["temperature"] = args.temperature
    if not args.cache:
        # A tree cached by an earlier run would make tokens and time look free.
        search["cache"] = False
    search.update(extra_search.get(strategy, {}))
    return {"max_tokens": args.max_tokens, "extra_body": {"search": search}}


async def answer_one(client, model: str, problem: dict, strategy: str, options: dict,
                     args: argparse.Namespace) -> Outcome:
    gold = str(problem["answer"])
    started = time.perf_counter()
    try:
        response = await client.chat.completions.create(
            model=model, messages=prompt_messages(problem["question"], args.instruction), **options)
    except APIError as error:
        return Outcome(problem["id"], strategy, gold, None, False, None,
                       time.perf_counter() - started, error=f"{type(error).__name__}: {error}")
    latency = time.perf_counter() - started
    text = response.choices[0].message.content or ""
    extracted = extract_answer(text, args.answer_format)
    return Outcome(
        id=problem["id"], strategy=strategy, gold=gold, extracted=extracted,
        correct=extracted is not None and answers_equivalent(extracted, gold),
        completion_tokens=response.usage.completion_tokens if response.usage else None,
        latency_s=latency, text=text, search=(response.model_extra or {}).get("search"))


async def run_strategy(client, model: str, problems: list[dict], strategy: str, options: dict,
                       args: argparse.Namespace, records: Path | None = None) -> tuple[list[Outcome], float]:
    """All problems under one strategy, at most --concurrency in flight so the engine batches;
    each outcome is appended to `records` as soon as it is in, so a stopped run keeps it."""
    slots = asyncio.Semaphore(args.concurrency)
    progress = tqdm(total=len(problems), desc=f"{strategy:>18}", unit="q", file=sys.stderr)

    async def bounded(problem: dict) -> Outcome:
        async with slots:
            outcome = await answer_one(client, model, problem, strategy, options, args)
        if records is not None:
            with records.open("a") as lines:
                lines.write(json.dumps(asdict(outcome)) + "\n")
        progress.update()
        return outcome

    started = time.perf_counter()
    try:
        outcomes = await asyncio.gather(*(bounded(problem) for problem in problems))
    finally:
        progress.close()
    return outcomes, time.perf_counter() - started


def summarize(strategy: str, outcomes: list[Outcome], wall_s: float) -> dict:
    tokens = [o.completion_tokens for o in outcomes if o.completion_tokens is not None]
    searches = [o.search for o in outcomes if o.search]
    errors = [o.error for o in outcomes if o.error]
    return {
        "strategy": strategy,
        "problems": len(outcomes),
        "correct": sum(o.correct for o in outcomes),
        "accuracy": sum(o.correct for o in outcomes) / len(outcomes),
        "no_answer": sum(o.extracted is None and not o.error for o in outcomes),
        "mean_completion_tokens": statistics.fmean(tokens) if tokens else None,
        "mean_answer_tokens": _mean_of(searches, "answer_tokens"),
        "mean_vote_share": _mean_of(searches, "vote_share"),
        "mean_engine_calls": _mean_of(searches, "engine_calls"),
        "search_reports": len(searches),
        "truncated": sum(bool(s.get("truncated")) for s in searches),
        # the share of searches whose answer was greedy's (the `search.greedy` report)
        "answered_as_greedy": (statistics.fmean(bool(s["greedy"]["answer_is_greedy"]) for s in searches
                                                if "greedy" in s)
                               if any("greedy" in s for s in searches) else None),
        "cache_hits": sum(bool(s.get("cache_hit")) for s in searches),
        "verifier_failures": sum(bool(s.get("verifier", {}).get("failed")) for s in searches),
        "wall_s": wall_s,
        "median_latency_s": statistics.median(o.latency_s for o in outcomes),
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
    }


def _mean_of(searches: list[dict], key: str) -> float | None:
    values = [s[key] for s in searches if isinstance(s.get(key), (int, float))]
    return statistics.fmean(values) if values else None


def _ratio(value: float | None, baseline: float | None) -> float | None:
    return value / baseline if value is not None and baseline else None


BOOTSTRAP_RESAMPLES = 10_000


def paired_bootstrap(baseline: list[bool], other: list[bool], resamples: int = BOOTSTRAP_RESAMPLES,
                     seed: int = 0) -> tuple[float, float]:
    """The 95% percentile interval of accuracy(other) - accuracy(baseline), resampling problems:
    each resample draws problems with replacement and keeps both answers to each, so what the
    two have in common (which problems are easy) cancels out of the difference."""
    if len(baseline) != len(other) or not baseline:
        raise ValueError("a paired bootstrap needs the same problems, at least one, on both sides")
    differences = np.asarray(other, dtype=float) - np.asarray(baseline, dtype=float)
    picks = np.random.default_rng(seed).integers(0, len(differences), size=(resamples, len(differences)))
    means = differences[picks].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def correct_by_problem(outcomes: list[Outcome], strategy: str) -> dict[str, bool]:
    return {o.id: o.correct for o in outcomes if o.strategy == strategy}


def add_ratios(summaries: list[dict], outcomes: list[Outcome]) -> None:
    """Each summary gets accuracy, tokens and wall time relative to the greedy baseline, and the
    paired-bootstrap interval of its accuracy's difference to greedy's."""
    greedy = next(s for s in summaries if s["strategy"] == GREEDY)
    greedy_correct = correct_by_problem(outcomes, GREEDY)
    for summary in summaries:
        correct = correct_by_problem(outcomes, summary["strategy"])
        ids = sorted(greedy_correct.keys() & correct.keys())
        summary["accuracy_delta_vs_greedy"] = summary["accuracy"] - greedy["accuracy"]
        summary["accuracy_delta_ci95"] = (
            list(paired_bootstrap([greedy_correct[i] for i in ids], [correct[i] for i in ids])) if ids else None)
        summary["accuracy_ratio_vs_greedy"] = _ratio(summary["accuracy"], greedy["accuracy"])
        summary["tokens_ratio_vs_greedy"] = _ratio(summary["mean_completion_tokens"],
                                                   greedy["mean_completion_tokens"])
        summary["wall_ratio_vs_greedy"] = _ratio(summary["wall_s"], greedy["wall_s"])


def format_table(summaries: list[dict]) -> str:
    def number(value, spec: str) -> str:
        return "-" if value is None else format(value, spec)

    def interval(bounds) -> str:
        return "-" if bounds is None else f"[{bounds[0]:+.1%}, {bounds[1]:+.1%}]"

    header = ("strategy", "accuracy", "correct", "Δacc", "Δ 95% CI", "greedy's", "tokens", "×tokens",
              "wall s", "×wall", "errors")
    rows = [header]
    for s in summaries:
        rows.append((
            s["strategy"], f"{s['accuracy']:.1%}", f"{s['correct']}/{s['problems']}",
            f"{s['accuracy_delta_vs_greedy']:+.1%}", interval(s["accuracy_delta_ci95"]),
            number(s["answered_as_greedy"], ".0%"), number(s["mean_completion_tokens"], ".1f"),
            number(s["tokens_ratio_vs_greedy"], ".2f"), number(s["wall_s"], ".1f"),
            number(s["wall_ratio_vs_greedy"], ".2f"), str(s["errors"]),
        ))
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
    lines = ["  ".join(cell.rjust(width) if column else cell.ljust(width)
                       for column, (cell, width) in enumerate(zip(row, widths))) for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def log_token_axis(axes) -> None:
    """A log x axis of token counts with plain tick labels (100, 200, 500, ...)."""
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

    axes.set_xscale("log")
    axes.xaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))
    axes.xaxis.set_major_formatter(ScalarFormatter())
    axes.xaxis.set_minor_formatter(NullFormatter())


def plot_accuracy_vs_tokens(summaries: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5))
    plotted = [s for s in summaries if s["mean_completion_tokens"]]
    for summary in plotted:
        point = (summary["mean_completion_tokens"], summary["accuracy"])
        if summary["strategy"] == GREEDY:
            axes.scatter(*point, marker="*", s=220, color="black", zorder=3,
                         label="greedy (temperature 0)")
            axes.axhline(summary["accuracy"], color="black", linestyle=":", linewidth=1)
        else:
            axes.scatter(*point, s=60, zorder=3, label=summary["strategy"])
    token_counts = [s["mean_completion_tokens"] for s in plotted]
    # Searches cost N times greedy or more: a log axis keeps greedy from being squashed.
    if token_counts and max(token_counts) > 4 * min(token_counts):
        log_token_axis(axes)
    axes.set_xlabel("mean generated tokens per problem (usage.completion_tokens)")
    axes.set_ylabel("accuracy")
    axes.set_ylim(0, min(1.0, max(s["accuracy"] for s in summaries) * 1.25 + 0.05))
    axes.set_title(title, fontsize=10)
    axes.grid(True, alpha=0.3)
    axes.legend(loc="best", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def parse_extra_search(text: str | None, strategies: list[str]) -> dict[str, dict]:
    if not text:
        return {}
    extra = json.loads(text)
    if not isinstance(extra, dict) or not all(isinstance(v, dict) for v in extra.values()):
        raise SystemExit('--search-json must map strategy names to objects, '
                         'e.g. \'{"self_consistency": {"n": 16}}\'')
    unknown = set(extra) - set(strategies)
    if unknown:
        raise SystemExit(f"--search-json names strategies not in --strategies: {sorted(unknown)}")
    return extra


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--base-url", default="http://127.0.0.1:8000/v1")
    parser.add_argument("--api-key", default="EMPTY")
    parser.add_argument("--model", help="model name; default: the first one /v1/models lists")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--limit", type=int, help="only the first LIMIT problems")
    parser.add_argument("--strategies", default=DEFAULT_STRATEGIES,
                        help="comma-separated search strategies; a greedy baseline always runs; "
                             "an empty string runs greedy only")
    parser.add_argument("--n", type=int, default=8, help="candidates per search")
    parser.add_argument("--temperature", type=float,
                        help="sampling temperature of every search; default: each strategy's own")
    parser.add_argument("--max-tokens", type=int, default=256, help="per completion")
    parser.add_argument("--instruction", default=INSTRUCTION, help="appended to every question")
    parser.add_argument("--answer-format", default="number",
                        help="extract_answer format, for scoring and for the searches' votes")
    parser.add_argument("--search-json",
                        help='extra search parameters per strategy, e.g. \'{"self_certainty": {"borda_power": 0.5}}\'')
    parser.add_argument("--cache", action="store_true",
                        help="let searches use the server's tree cache (off: every search is paid for)")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight")
    parser.add_argument("--request-timeout", type=float, default=1800.0, help="seconds per request")
    parser.add_argument("--arith-verifier", action="store_true",
                        help="serve bench.arith_verifier on loopback for the strategy@verifier labels "
                             "(their search.scorer is its URL)")
    parser.add_argument("--from-records", type=Path, metavar="RECORDS",
                        help="print the table of a run's records.jsonl (one stopped midway too) and exit")
    parser.add_argument("--out", type=Path, help="results directory; default bench/results/accuracy-TIMESTAMP")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --out: ask only what its records.jsonl lacks (same flags needed)")
    return parser


async def run_benchmark(args: argparse.Namespace, strategies: list[str], extra_search: dict[str, dict],
                        records: Path | None = None) -> tuple[str, list[dict], list[Outcome]]:
    """Every strategy in turn, each outcome appended to `records` as it comes; with --resume the
    problems `records` already holds for a strategy are not asked again, and what is returned
    covers only what this call ran."""
    # No retries: a retried request would be timed and counted twice.
    client = AsyncOpenAI(base_url=args.base_url, api_key=args.api_key,
                         timeout=args.request_timeout, max_retries=0)
    verifier = arith_verifier.serve_in_thread() if args.arith_verifier else None
    async with client:
        model = args.model or (await client.models.list()).data[0].id
        problems = load_problems(args.data, args.limit)
        done = recorded_problems(records) if getattr(args, "resume", False) and records else {}
        summaries, outcomes = [], []
        for strategy in [GREEDY, *strategies]:
            left = [problem for problem in problems if problem["id"] not in done.get(strategy, set())]
            if not left:
                continue
            options = request_options(strategy, args, extra_search, verifier[1] if verifier else None)
            strategy_outcomes, wall_s = await run_strategy(client, model, left, strategy, options, args, records)
            summaries.append(summarize(strategy, strategy_outcomes, wall_s))
            outcomes.extend(strategy_outcomes)
    if verifier is not None:
        verifier[0].shutdown()
    return model, summaries, outcomes


def recorded_problems(records: Path) -> dict[str, set[str]]:
    """The problem ids a records.jsonl holds an answer for, by strategy label (failed ones not)."""
    done: dict[str, set[str]] = {}
    if records.exists():
        for line in records.read_text().splitlines():
            if line.strip():
                outcome = json.loads(line)
                if not outcome.get("error"):
                    done.setdefault(outcome["strategy"], set()).add(outcome["id"])
    return done


# What a resumed run must share with the run it continues, or its records would not compare.
RUN_SHAPING = ("data", "limit", "strategies", "n", "temperature", "max_tokens", "instruction", "answer_format",
               "search_json", "cache", "arith_verifier")


def check_resumable(out_dir: Path, config: dict) -> None:
    """Refuses a --resume whose settings differ from the run it continues; says when the code
    (this checkout's commit) differs, which the figures should then mention."""
    started = out_dir / "run.json"
    if not started.exists():
        return
    before = json.loads(started.read_text())
    changed = [key for key in RUN_SHAPING if before.get(key) != config.get(key)]
    if changed:
        raise SystemExit(f"--resume: {out_dir} was run with other {', '.join(changed)}; "
                         "use the same flags or another --out")
    if before.get("commit") != config.get("commit"):
        print(f"--resume: {out_dir} was started at commit {before.get('commit')}, this is {config.get('commit')}",
              file=sys.stderr)


def checkout_commit() -> str | None:
    import subprocess

    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def summarize_records(path: Path) -> list[dict]:
    """The summaries of a run's records.jsonl (one stopped midway, say), in the run's strategy
    order; wall times are not in the records."""
    latest = {}  # a problem asked again on --resume (it had failed) counts once, as last answered
    for line in path.read_text().splitlines():
        if line.strip():
            outcome = Outcome(**json.loads(line))
            latest[(outcome.strategy, outcome.id)] = outcome
    outcomes = list(latest.values())
    strategies = list(dict.fromkeys(outcome.strategy for outcome in outcomes))
    summaries = [summarize(strategy, [o for o in outcomes if o.strategy == strategy], None)
                 for strategy in strategies]
    add_ratios(summaries, outcomes)
    return summaries


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.from_records:
        print(format_table(summarize_records(args.from_records)))
        return
    strategies = [name.strip() for name in args.strategies.split(",") if name.strip()]
    extra_search = parse_extra_search(args.search_json, strategies)
    out_dir = args.out or Path("bench/results") / time.strftime("accuracy-%Y%m%d-%H%M%S")
    out_dir.mkdir(parents=True, exist_ok=True)

    records = out_dir / "records.jsonl"
    config = {key: str(value) if isinstance(value, Path) else value
              for key, value in vars(args).items()}
    config.update(strategies=strategies, commit=checkout_commit())
    if args.resume:
        if args.out is None:
            raise SystemExit("--resume needs the --out of the run it continues")
        check_resumable(out_dir, config)
    else:
        records.unlink(missing_ok=True)
        (out_dir / "run.json").write_text(json.dumps(config, indent=2))
    model, summaries, outcomes = asyncio.run(run_benchmark(args, strategies, extra_search, records))
    if args.resume:  # the table covers every answer on record; wall times only this part's
        summaries = summarize_records(records)
    else:
        add_ratios(summaries, outcomes)

    print(format_table(summaries))
    for summary in summaries:
        if summary["first_error"]:
            print(f"{summary['strategy']}: {summary['errors']} failed, first: {summary['first_error']}")
        if summary["strategy"] != GREEDY and summary["errors"] < summary["problems"] \
                and not summary["search_reports"]:
            print(f"{summary['strategy']}: no response carried a `search` report; "
                  f"is {args.base_url} a deliberate server?")
        if summary["verifier_failures"]:
            print(f"{summary['strategy']}: the verifier failed in {summary['verifier_failures']} searches "
                  "(scored by the fallback)")
        if summary["cache_hits"]:
            print(f"{summary['strategy']}: {summary['cache_hits']} answers came from the tree cache")

    config.update(model=model)
    (out_dir / "results.json").write_text(json.dumps({"config": config, "summaries": summaries},
                                                     indent=2))
    plot_path = out_dir / "accuracy_vs_tokens.png"
    plot_accuracy_vs_tokens(summaries, plot_path,
                            f"{model} on {args.data.name} ({summaries[0]['problems']} problems, n={args.n})")
    print(f"results: {out_dir / 'results.json'}, per problem: {out_dir / 'records.jsonl'}, "
          f"plot: {plot_path}")


if __name__ == "__main__":
    main()
