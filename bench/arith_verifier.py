"""An arithmetic-checking verifier, served over HTTP on loopback for the `http` scorer.

It recomputes the arithmetic a candidate states ("3 + 4 = 7", "5 x 2 = 10") and scores the
candidate in [0, 1]: 0.3 with no computation to check; 0.1-0.2 when a computation is wrong;
from 0.5 when all are right, up to 1 as they start from numbers the question gives (or results
stated before them) and as the final answer is what the last one gave; half that without a final
answer (a partial path, as mcts asks about). It knows nothing of the right answer: it checks the
work shown.

    .venv/bin/python -m bench.arith_verifier --port 8100
    # then: "search": {"strategy": "best_of_n", "scorer": {"url": "http://127.0.0.1:8100/"}}
"""

from __future__ import annotations

import argparse
import json
import re
import threading
from dataclasses import dataclass
from fractions import Fraction
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from bench.devset import evaluate
from scorers.answers import ANSWER_PHRASE, extract_answer

NUMBER = r"\$?\d+(?:,\d{3})*(?:\.\d+)?"
OPERATOR = r"[-+*/x×÷]"
# "12 + 3 * 2 = 18", "(4 + 5) x 2 = $18": an expression of numbers and operators, "=", a number.
EQUATION = re.compile(rf"((?:\(\s*)*{NUMBER}(?:\s*\)*\s*{OPERATOR}\s*(?:\(\s*)*{NUMBER}\s*\)*)+)\s*=\s*(-?{NUMBER})")
PLAIN_NUMBER = re.compile(NUMBER)
# A candidate with an answer and no computation to check; one whose computations are all right
# starts above it, one with a wrong computation stays below it.
UNCHECKED = 0.3
ALL_RIGHT = 0.5
SOME_WRONG = 0.1


def number(text: str) -> Fraction:
    return Fraction(text.replace("$", "").replace(",", ""))


@dataclass
class Check:
    """What the verifier found in one candidate."""

    equations: int = 0
    right: int = 0
    grounded: int = 0
    consistent: bool = False
    answer: str | None = None

    @property
    def score(self) -> float:
        if not self.equations:
            work = UNCHECKED
        elif self.right < self.equations:
            work = SOME_WRONG + 0.1 * self.right / self.equations
        else:
            work = ALL_RIGHT + 0.25 * self.grounded / self.equations + 0.25 * self.consistent
        # No final answer yet (a partial path, as mcts asks about) or at all: half the work's worth.
        return work if self.answer is not None else work / 2


def check(question: str, candidate: str) -> Check:
    known = {number(token) for token in PLAIN_NUMBER.findall(question)}
    # The answer it states ("the answer is 7"), not just its last number: a partial path has none.
    stated = ANSWER_PHRASE.findall(candidate)
    found = Check(answer=extract_answer(stated[-1], "number") if stated else None)
    last_result = None
    for match in EQUATION.finditer(candidate):
        expression, stated = match.group(1), number(match.group(2))
        operands = {number(token) for token in PLAIN_NUMBER.findall(expression)}
        plain = re.sub(r"\$|(?<=\d),(?=\d{3})", "", expression).replace("×", "*").replace("x", "*").replace("÷", "/")
        try:
            value = evaluate(plain)
        except (ValueError, SyntaxError, ZeroDivisionError):
            continue
        found.equations += 1
        found.right += value == stated
        found.grounded += operands <= known
        known.add(stated)
        last_result = stated
    if found.answer is not None and last_result is not None:
        try:
            found.consistent = number(found.answer) == last_result
        except (ValueError, ZeroDivisionError):
            found.consistent = False
    return found


def scores(body: dict) -> list[float]:
    question = body.get("question") or ""
    return [check(question, candidate).score for candidate in body["candidates"]]


class Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        try:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            status, reply = 200, {"scores": scores(body)}
        except (ValueError, KeyError, TypeError) as exc:
            status, reply = 400, {"error": str(exc)}
        data = json.dumps(reply).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:
        pass


def serve_in_thread(port: int = 0) -> tuple[ThreadingHTTPServer, str]:
    """The verifier on 127.0.0.1:`port` (0: a free one) in a daemon thread, and its URL."""
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8100)
    args = parser.parse_args(argv)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    print(f"arithmetic verifier on http://127.0.0.1:{args.port}/", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
