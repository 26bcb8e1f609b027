"""bench.arith_verifier: it checks the arithmetic a candidate shows, never the right answer."""

import json
import urllib.request

import pytest

from bench.arith_verifier import check, scores, serve_in_thread

QUESTION = "Tom has 3 apples and buys 4 more. How many apples does he have?"


@pytest.mark.parametrize("candidate, score", [
    ("3 + 4 = 7. The answer is 7.", 1.0),
    ("He has 5 + 4 = 9. The answer is 9.", 0.75),  # right, but 5 is not in the question
    ("3 + 4 = 7, then 7 x 2 = 14. The answer is 7.", 0.625),  # 2 from nowhere, answer not the last result
    ("The answer is 7.", 0.3),  # nothing to check
    ("3 + 4 = 8. The answer is 8.", 0.1),  # wrong arithmetic ranks below none
    ("3 + 4 = 7 and 7 - 1 = 5. The answer is 5.", 0.15),
    ("Hmm, apples.", 0.15),  # no answer, nothing to check
    ("First, 3 + 4 = 7.", 0.375),  # a partial path: right and grounded, no answer yet
])
def test_a_candidate_is_scored_by_the_work_it_shows(candidate, score):
    assert check(QUESTION, candidate).score == pytest.approx(score)


def test_it_reads_the_ways_a_model_writes_arithmetic():
    found = check("A box costs $12 and holds 3 rows of 4.", "$12 / 3 = $4, (3 + 1) × 4 = 16 and 1,000 ÷ 10 = 100. "
                                                            "The answer is 100.")
    assert (found.equations, found.right, found.consistent) == (3, 3, True)
    assert found.grounded == 1  # 1 and 1,000 and 10 are not in the question


def test_it_answers_over_http_on_loopback():
    server, url = serve_in_thread()
    try:
        body = json.dumps({"question": QUESTION, "candidates": ["3 + 4 = 7. The answer is 7.", "no"]}).encode()
        request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as reply:
            assert json.loads(reply.read()) == {"scores": [1.0, 0.15]}
        bad = urllib.request.Request(url, b"{}", {"Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(bad, timeout=10)
        assert caught.value.code == 400
    finally:
        server.shutdown()
        server.server_close()
    assert scores({"question": QUESTION, "candidates": []}) == []
