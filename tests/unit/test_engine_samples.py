"""Samples built from vLLM's outputs: whole (one final output) or grown from DELTA outputs."""

from vllm.logprobs import Logprob
from vllm.outputs import CompletionOutput

from search.pruning import ConfidenceTrack
from server.engine import extend_sample, sample_from_output
from search.types import Sample


def output(text: str, ids: list[int], finish_reason: str | None = None) -> CompletionOutput:
    # Each position's top-2, plus the sampled token when it is not among them (as vLLM adds it).
    positions = [{tid: Logprob(-0.5, rank=3), 900: Logprob(-0.1, rank=1), 901: Logprob(-1.0, rank=2)}
                 for tid in ids]
    return CompletionOutput(index=0, text=text, token_ids=ids, cumulative_logprob=None, logprobs=positions,
                            finish_reason=finish_reason, stop_reason=None)


def test_delta_outputs_grow_the_same_sample_a_whole_output_gives():
    whole = sample_from_output(output("The answer", [5, 6, 7], "stop"), 4, top_k=2)
    grown = Sample(token_ids=[], text="", logprobs=[], top_logprobs=[])
    track = ConfidenceTrack()
    for delta in (output("The", [5]), output(" answer", [6, 7], "stop")):
        extend_sample(grown, delta, top_k=2)
        assert len(track.extend(grown)) == len(grown.token_ids)
    assert (grown.token_ids, grown.text, grown.logprobs) == (whole.token_ids, whole.text, whole.logprobs)
    assert grown.top_logprobs == whole.top_logprobs == [{900: -0.1, 901: -1.0}] * 3  # exactly the top 2
    assert grown.finish_reason == "stop" and whole.cached_prompt_tokens == 4
    assert track.values == [1.1 / 2] * 3  # DeepConf's -(1/k) sum of the top-k logprobs, here k = 2
