"""A verifier over HTTP as a scorer: unit tests for code, a math checker, a hosted reward model.

It POSTs `{"question": ..., "candidates": [text, ...]}` and expects `{"scores": [...]}` with
one entry per candidate: a number, or a list of numbers, one per step of the candidate (a path
is then worth its worst step, as a process reward model's minimum). A verifier that times out,
answers with an HTTP error, with something other than that JSON, or with the wrong number of
scores, is not asked again in the request: that call and every later one is scored by the
`fallback` (the model's own judgement), and the report says so. The samples are drawn with what
the fallback needs, so it can always take over.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any, Awaitable, Callable
from urllib.parse import urlsplit

import httpx

from search.types import InvalidSearchParam, Sample, Scorer, ScoringContext, shown

DEFAULT_TIMEOUT_S = 10.0
MAX_TIMEOUT_S = 120.0
MAX_URL_LENGTH = 2048
# Who may be asked when the operator allows no other host: this machine only.
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
VERIFIER_KEYS = ("url", "timeout_s")

Post = Callable[[str, dict, float], Awaitable[Any]]  # (url, JSON body, timeout) -> parsed JSON


class VerifierFailed(Exception):
    """The verifier gave no usable scores; the message says how."""


def check_verifier_spec(spec: dict, allowed_hosts: frozenset[str]) -> tuple[str, float]:
    """The URL and timeout of a `search.scorer` object, checked; InvalidSearchParam naming the key.
    Only http(s) URLs to a host in `allowed_hosts` are asked, with no credentials in them."""
    unknown = sorted(set(spec) - set(VERIFIER_KEYS))
    if unknown:
        raise InvalidSearchParam(f"search.scorer.{str(unknown[0])[:64]}",
                                 f"unknown key; a verifier takes {', '.join(VERIFIER_KEYS)}")
    url = spec.get("url")
    if not isinstance(url, str) or not url or len(url) > MAX_URL_LENGTH:
        raise InvalidSearchParam("search.scorer.url", f"must be an http(s) URL of at most {MAX_URL_LENGTH} "
                                                      f"characters, got {shown(url)}")
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        parts.port  # a malformed port raises
    except ValueError as exc:
        raise InvalidSearchParam("search.scorer.url", f"not a URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not host:
        raise InvalidSearchParam("search.scorer.url", f"must be an http or https URL, got {shown(url)}")
    if parts.username is not None or parts.password is not None:
        raise InvalidSearchParam("search.scorer.url", "must not carry credentials")
    if host not in allowed_hosts:
        allowed = ", ".join(sorted(allowed_hosts)) or "none (verifiers are off)"
        raise InvalidSearchParam("search.scorer.url", f"host {shown(host)} is not one this server may call "
                                                      f"(--verifier-hosts: {allowed})")
    timeout = spec.get("timeout_s", DEFAULT_TIMEOUT_S)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= MAX_TIMEOUT_S:
        raise InvalidSearchParam("search.scorer.timeout_s", f"must be a number in (0, {MAX_TIMEOUT_S:g}], "
                                                            f"got {shown(timeout)}")
    return url, float(timeout)


def parse_scores(reply: Any, count: int) -> list[float]:
    """One finite score per candidate from the verifier's JSON; a list of step scores counts as
    its minimum."""
    if not isinstance(reply, dict) or not isinstance(reply.get("scores"), list):
        raise VerifierFailed('the reply is not a JSON object with a "scores" list')
    scores = reply["scores"]
    if len(scores) != count:
        raise VerifierFailed(f"{len(scores)} scores for {count} candidates")

    def finite(value) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise VerifierFailed(f"a score is not a finite number: {shown(value)}")
        return float(value)

    parsed = []
    for score in scores:
        if isinstance(score, list):
            if not score:
                raise VerifierFailed("an empty list of step scores")
            parsed.append(min(finite(step) for step in score))
        else:
            parsed.append(finite(score))
    return parsed


def httpx_post(client: httpx.AsyncClient) -> Post:
    """The transport: a POST through `client` (which must not follow redirects, or a verifier
    on an allowed host could send the request on to any other)."""
    async def post(url: str, body: dict, timeout: float) -> Any:
        try:
            response = await client.post(url, json=body, timeout=timeout)
        except httpx.TimeoutException:
            raise VerifierFailed(f"no answer within {timeout:g} s") from None
        except httpx.HTTPError as exc:
            raise VerifierFailed(f"{type(exc).__name__}: {exc}") from None
        if response.status_code != 200:
            raise VerifierFailed(f"HTTP {response.status_code}")
        try:
            return response.json()
        except ValueError:
            raise VerifierFailed("the reply is not JSON") from None
    return post


class HttpVerifier:
    """Scores candidates by asking the verifier at `url`; `fallback` scores when it fails.

    Built per request: it counts the request's calls to the verifier and their seconds (its
    cost, in the report) and remembers a failure for the rest of the request.
    """

    name = "http"

    def __init__(self, url: str, timeout_s: float, post: Post, fallback: Scorer):
        self.url = url
        self.timeout_s = timeout_s
        self.post = post
        self.fallback = fallback
        self.chosen_logprobs = fallback.chosen_logprobs
        self.logprobs_needed = fallback.logprobs_needed
        self.full_vocab = fallback.full_vocab
        self.token_self_certainty = fallback.token_self_certainty
        self.calls = 0
        self.seconds = 0.0
        self.failure: str | None = None
        self.fallback_calls = 0

    async def score(self, context: ScoringContext, candidates: list[Sample]) -> list[float]:
        if self.failure is None:
            body = {"question": context.question, "candidates": [sample.text for sample in candidates]}
            left = context.generator.budget.time_left()
            timeout = self.timeout_s if left is None else max(0.001, min(self.timeout_s, left))
            started = time.monotonic()
            self.calls += 1
            try:
                reply = await asyncio.wait_for(self.post(self.url, body, timeout), timeout)
                return parse_scores(reply, len(candidates))
            except TimeoutError:
                self.failure = f"no answer within {timeout:g} s"
            except VerifierFailed as exc:
                self.failure = str(exc)
            finally:
                self.seconds += time.monotonic() - started
        self.fallback_calls += 1
        return await self.fallback.score(context, candidates)

    def report(self) -> dict:
        """What the verifier cost, and whether it failed: the report's `verifier`."""
        report = {"url": self.url, "calls": self.calls, "seconds": round(self.seconds, 3),
                  "failed": self.failure is not None}
        if self.failure is not None:
            report["note"] = (f"the verifier failed ({self.failure}); {self.fallback_calls} scoring call(s) "
                              f"fell back to the model's own judgement ({self.fallback.name})")
        return report
