"""The HTTP verifier scorer: what it accepts from a client, what it takes from a verifier, and
how a failed verifier degrades to the model's own judgement (a real loopback HTTP server)."""

import asyncio
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import httpx
import pytest

from scorers.http_verifier import (
    LOOPBACK_HOSTS, HttpVerifier, VerifierFailed, check_verifier_spec, httpx_post, parse_scores,
)
from scorers.mean_logprob import MeanLogprobScorer
from search import best_of_n
from search.best_of_n import BestOfNParams
from search.types import InvalidSearchParam
from server.plugin import parse_verifier_hosts
from server.search_service import SearchRequestError, SearchService
from tests.unit.scripted import ScriptedGenerator, sample, search_context
from tests.unit.test_greedy_first import greedy_and_sampled


@pytest.mark.parametrize("url", ["http://127.0.0.1:8123/score", "https://localhost/v", "http://[::1]:9/x"])
def test_a_loopback_url_is_accepted_with_its_timeout(url):
    assert check_verifier_spec({"url": url, "timeout_s": 2.5}, LOOPBACK_HOSTS) == (url, 2.5)
    assert check_verifier_spec({"url": url}, LOOPBACK_HOSTS)[1] == 10.0


@pytest.mark.parametrize("spec, param, words", [
    ({"url": "http://169.254.169.254/latest/meta-data"}, "search.scorer.url", "is not one this server may call"),
    ({"url": "http://127.1/"}, "search.scorer.url", "is not one"),  # only the names allowed, as written
    ({"url": "http://10.0.0.5:80/"}, "search.scorer.url", "is not one"),
    ({"url": "file:///etc/passwd"}, "search.scorer.url", "http or https"),
    ({"url": "ftp://127.0.0.1/"}, "search.scorer.url", "http or https"),
    ({"url": "http://user:pw@127.0.0.1/"}, "search.scorer.url", "credentials"),
    ({"url": "http://127.0.0.1:99999/"}, "search.scorer.url", "not a URL"),
    ({"url": ""}, "search.scorer.url", "http(s) URL"),
    ({"url": 7}, "search.scorer.url", "http(s) URL"),
    ({}, "search.scorer.url", "http(s) URL"),
    ({"url": "http://127.0.0.1/", "timeout_s": 0}, "search.scorer.timeout_s", "(0, 120]"),
    ({"url": "http://127.0.0.1/", "timeout_s": True}, "search.scorer.timeout_s", "(0, 120]"),
    ({"url": "http://127.0.0.1/", "timeout_s": 1000}, "search.scorer.timeout_s", "(0, 120]"),
    ({"url": "http://127.0.0.1/", "headers": {}}, "search.scorer.headers", "unknown key"),
])
def test_a_bad_verifier_is_refused_naming_the_key(spec, param, words):
    with pytest.raises(InvalidSearchParam) as caught:
        check_verifier_spec(spec, LOOPBACK_HOSTS)
    assert caught.value.param == param and words in caught.value.message


def test_the_operator_chooses_the_hosts_and_an_empty_list_turns_verifiers_off():
    hosts = parse_verifier_hosts("verifier.internal, [::1],LOCALHOST")
    assert hosts == {"verifier.internal", "::1", "localhost"}
    assert check_verifier_spec({"url": "http://Verifier.Internal:8080/v"}, hosts)[0].endswith("/v")
    with pytest.raises(InvalidSearchParam) as caught:
        check_verifier_spec({"url": "http://127.0.0.1/"}, parse_verifier_hosts(""))
    assert "verifiers are off" in caught.value.message


def test_the_service_answers_400_for_a_bad_verifier_and_builds_one_with_the_strategys_fallback():
    service = SearchService(SimpleNamespace(records_self_certainty=True, max_logprobs=20), tree_store=None)
    with pytest.raises(SearchRequestError) as caught:
        service.plan({"strategy": "best_of_n", "scorer": {"url": "http://example.com/"}}, None)
    assert caught.value.parameter == "search.scorer.url"
    plan = service.plan({"strategy": "mcts", "scorer": {"url": "http://127.0.0.1:1/", "timeout_s": 1}}, None)
    assert isinstance(plan.scorer, HttpVerifier) and plan.scorer.fallback.name == "self_certainty"
    assert plan.scorer.token_self_certainty  # the samples carry what the fallback needs
    plan = service.plan({"strategy": "self_consistency", "scorer": {"url": "http://127.0.0.1:1/"}}, None)
    assert plan.scorer.fallback.name == "mean_logprob" and plan.scorer.chosen_logprobs
    with pytest.raises(SearchRequestError) as caught:
        service.plan({"strategy": "best_of_n", "scorer": ["http://127.0.0.1/"]}, None)
    assert caught.value.parameter == "search.scorer"


def test_scores_are_one_finite_number_per_candidate_or_a_list_of_step_scores():
    assert parse_scores({"scores": [1, 0.5, [0.9, 0.2, 0.7]]}, 3) == [1.0, 0.5, 0.2]
    for reply, words in [({"scores": [1]}, "1 scores for 2"), ([1, 2], "not a JSON object"),
                         ({"score": [1, 2]}, '"scores" list'), ({"scores": [1, "2"]}, "finite"),
                         ({"scores": [1, float("nan")]}, "finite"), ({"scores": [True, 1]}, "finite"),
                         ({"scores": [1, []]}, "empty list")]:
        with pytest.raises(VerifierFailed, match=words):
            parse_scores(reply, 2)


class Verifier(BaseHTTPRequestHandler):
    """A loopback verifier whose behaviour the path picks: /ok scores each candidate by its
    length, /slow waits, /error answers 500, /text answers non-JSON, /short one score too few,
    /redirect points elsewhere."""

    bodies: list = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        Verifier.bodies.append(body)
        status, payload = 200, {"scores": [len(text) / 100 for text in body["candidates"]]}
        if self.path == "/slow":
            threading.Event().wait(2.0)
        elif self.path == "/error":
            status = 500
        elif self.path == "/short":
            payload["scores"] = payload["scores"][1:]
        elif self.path == "/redirect":
            self.send_response(307)
            self.send_header("Location", "http://127.0.0.1:1/ok")
            self.end_headers()
            return
        data = b"not json" if self.path == "/text" else json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # /slow: the client gave up first

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def verifier_url():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Verifier)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


async def search_with(url, timeout_s=5.0, sampled=("22", "333")):
    generator = ScriptedGenerator(greedy_and_sampled(list(sampled)))
    async with httpx.AsyncClient(follow_redirects=False, trust_env=False) as client:
        scorer = HttpVerifier(url, timeout_s, httpx_post(client), MeanLogprobScorer())
        ctx = search_context(generator, scorer=scorer, question="What is 1?")
        result = await best_of_n.run(ctx, BestOfNParams(n=3, greedy_margin=0.0))
    return result, scorer


@pytest.mark.asyncio
async def test_a_working_verifier_scores_every_candidate_and_its_cost_is_reported(verifier_url):
    Verifier.bodies.clear()
    result, scorer = await search_with(verifier_url + "/ok")
    texts = [c.sample.text for c in result.candidates]
    assert Verifier.bodies == [{"question": "What is 1?", "candidates": texts}]
    assert [c.score for c in result.candidates] == [len(t) / 100 for t in texts]
    assert result.chosen.answer == "333"  # the longest text, beating greedy's score
    report = scorer.report()
    assert report["calls"] == 1 and not report["failed"] and "note" not in report and report["seconds"] >= 0


@pytest.mark.asyncio
@pytest.mark.parametrize("path, failure", [
    ("/slow", "no answer within 0.3 s"), ("/error", "HTTP 500"), ("/text", "not JSON"),
    ("/short", "2 scores for 3 candidates"), ("/redirect", "HTTP 307"),
])
async def test_a_failed_verifier_degrades_to_the_fallback_with_a_note(verifier_url, path, failure):
    # Only /slow is meant to time out; the others have time to answer on a loaded machine.
    result, scorer = await search_with(verifier_url + path, timeout_s=0.3 if path == "/slow" else 30.0)
    # mean logprob: every scripted token has logprob -1, so the scores tie and greedy's answer stays.
    assert [c.score for c in result.candidates] == [-1.0, -1.0, -1.0]
    assert result.chosen.answer == "1" and result.greedy.answer_is_greedy
    report = scorer.report()
    assert report["failed"] and failure in report["note"] and "mean_logprob" in report["note"]


@pytest.mark.asyncio
async def test_a_refused_connection_degrades_and_the_verifier_is_not_asked_again():
    calls = []

    async def post(url, body, timeout):
        calls.append(url)
        raise VerifierFailed("ConnectError: refused")

    scorer = HttpVerifier("http://127.0.0.1:1/", 1.0, post, MeanLogprobScorer())
    ctx = search_context(ScriptedGenerator([]), scorer=scorer)
    for _ in range(3):
        assert await scorer.score(ctx.scoring_context(), [sample("a")]) == [-1.0]
    assert len(calls) == 1 and scorer.report()["calls"] == 1
    assert "3 scoring call(s) fell back" in scorer.report()["note"]


@pytest.mark.asyncio
async def test_the_verifier_is_given_no_more_time_than_the_search_has_left():
    seen = []

    async def post(url, body, timeout):
        seen.append(timeout)
        await asyncio.sleep(10)

    scorer = HttpVerifier("http://127.0.0.1:1/", 60.0, post, MeanLogprobScorer())
    ctx = search_context(ScriptedGenerator([]), scorer=scorer, deadline=time.monotonic() + 0.2)
    assert await scorer.score(ctx.scoring_context(), [sample("a")]) == [-1.0]
    assert seen and seen[0] <= 0.2 and "no answer within" in scorer.report()["note"]
