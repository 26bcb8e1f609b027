"""HTTP verifiers through the API on the real engine: bench's arithmetic checker on loopback
scores a best-of-n search, and a broken verifier degrades to the model's own judgement."""

from __future__ import annotations

import socket

import openai
import pytest

from bench.arith_verifier import check, serve_in_thread
from tests.conftest import MODEL

QUESTION = 'Tom has 3 apples and buys 4 more. How many apples does he have? End with "The answer is N."'
MAX_TOKENS = 48


@pytest.fixture(scope="module")
def verifier_url():
    server, url = serve_in_thread()
    yield url
    server.shutdown()
    server.server_close()


def searched(client, scorer, **search):
    return client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": QUESTION}], max_tokens=MAX_TOKENS, seed=5,
        extra_body={"search": {"strategy": "best_of_n", "n": 4, "scorer": scorer, "cache": False,
                               "return_trace": True, **search}})


def test_best_of_n_is_scored_by_a_loopback_verifier(client, verifier_url):
    response = searched(client, {"url": verifier_url, "timeout_s": 30})
    report = response.model_extra["search"]
    assert report["verifier"]["calls"] == 1 and report["verifier"]["failed"] is False
    assert "note" not in report["verifier"] and report["verifier"]["seconds"] >= 0
    [scored] = [step for step in report["trace"] if step["step"] == "score"]
    assert scored["scorer"] == "http" and len(scored["scores"]) == 4
    assert all(0.0 <= score <= 1.0 for score in scored["scores"])
    # The answer's score is what the checker makes of the answer's text.
    text = response.choices[0].message.content
    assert report["selected_score"] == pytest.approx(check(QUESTION, text).score)
    assert report["greedy"]["support"] == "score" and report["greedy"]["margin_key"] == "best_of_n/http/score"


def test_a_verifier_that_cannot_be_reached_degrades_with_a_note(client):
    with socket.socket() as probe:  # a loopback port with nobody listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    response = searched(client, {"url": f"http://127.0.0.1:{port}/", "timeout_s": 5})
    report = response.model_extra["search"]
    assert response.choices[0].message.content
    assert report["verifier"]["failed"] is True
    assert "fell back to the model's own judgement (mean_logprob)" in report["verifier"]["note"]
    [scored] = [step for step in report["trace"] if step["step"] == "score"]
    assert all(score <= 0 for score in scored["scores"])  # mean logprobs, not the checker's [0, 1]


def test_a_verifier_elsewhere_is_a_400_naming_the_url(client):
    with pytest.raises(openai.BadRequestError) as caught:
        searched(client, {"url": "http://169.254.169.254/latest/"})
    error = caught.value.response.json()["error"]
    assert caught.value.status_code == 400 and error["param"] == "search.scorer.url" and "--verifier-hosts" in error["message"]
