"""What reading token confidence while samples stream costs: the engine's self-certainty record
(read from its file at every output) against DeepConf's top-20 logprobs (shipped with every
output), side by side in one run on the embedded engine, in-process.

Every call draws n samples of a fixed length (ignore_eos) in one request each, as a pruned
search does, with a stop rule that reads each token's confidence and never stops; "stream" reads
nothing (what streaming itself costs) and "one request" is n samples in one unstreamed request.
Rounds alternate the modes to spread drift; the figure is generated tokens per second.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path

from bench import embedded_engine_args
from search.pruning import ConfidenceTrack, confidence_spec
from search.types import SamplingSpec

MODES = ("one request", "stream", "record", "top_k")


async def measure(args) -> dict[str, list[float]]:
    from server.engine import VLLMGenerator

    generator = VLLMGenerator.start(embedded_engine_args())
    try:
        prompt = generator.chat_prompt_ids([{"role": "user", "content": "Tell me about the sea."}])
        base = SamplingSpec(n=args.n, max_tokens=args.max_tokens, temperature=1.0, ignore_eos=True)
        rates: dict[str, list[float]] = {mode: [] for mode in MODES}
        for round_index in range(args.rounds + 1):  # round 0 warms the engine up, uncounted
            order = MODES if round_index % 2 else MODES[::-1]
            for mode in order:
                tracks: dict[int, ConfidenceTrack] = {}

                def read_confidence(index, partial) -> bool:
                    tracks.setdefault(index, ConfidenceTrack()).extend(partial)
                    return False

                spec = {"one request": base, "stream": base,
                        "record": confidence_spec(base, records_self_certainty=True),
                        "top_k": confidence_spec(base, records_self_certainty=False)}[mode]
                rule = None if mode == "one request" else (lambda i, s: False) if mode == "stream" else read_confidence
                started = time.perf_counter()
                samples = await generator.generate(prompt, spec, should_stop=rule)
                elapsed = time.perf_counter() - started
                if mode in ("record", "top_k"):
                    assert all(len(tracks[i].values) == len(s.token_ids) for i, s in enumerate(samples))
                if round_index:
                    rates[mode].append(sum(len(s.token_ids) for s in samples) / elapsed)
        return rates
    finally:
        generator.shutdown()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.confidence_cost", description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("bench/results/confidence_cost.json"))
    args = parser.parse_args(argv)
    rates = asyncio.run(measure(args))
    medians = {mode: statistics.median(values) for mode, values in rates.items()}
    print(f"| mode | tokens/s (median of {args.rounds}) | x stream |\n|---|---|---|")
    for mode in MODES:
        print(f"| {mode} | {medians[mode]:.1f} | {medians[mode] / medians['stream']:.2f} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"config": vars(args) | {"out": str(args.out)}, "rates": rates,
                                    "medians": medians}, indent=2))


if __name__ == "__main__":
    main()
