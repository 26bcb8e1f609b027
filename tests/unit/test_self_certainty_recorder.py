"""The in-engine self-certainty recorder, driven the way vLLM's sampler drives a logits processor."""

from __future__ import annotations

import pytest
import torch
from vllm import SamplingParams
from vllm.v1.sample.logits_processor import BatchUpdate, MoveDirectionality

from scorers.self_certainty import SelfCertaintyScorer
from scorers.self_certainty import token_self_certainty as numpy_self_certainty
from server import self_certainty_recorder as recorder
from server.self_certainty_recorder import RECORD_KEY, SelfCertaintyRecorder, read_record
from search.types import ScoringContext
from tests.unit.scripted import ScriptedGenerator, sample


@pytest.fixture(autouse=True)
def record_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("DELIBERATE_RECORD_DIR", str(tmp_path))
    return tmp_path


def recorded(name: str) -> SamplingParams:
    return SamplingParams(extra_args={RECORD_KEY: name})


def update(added=(), removed=(), moved=(), size=0) -> BatchUpdate:
    return BatchUpdate(batch_size=size, removed=list(removed), added=list(added), moved=list(moved))


def test_the_torch_reduction_is_the_formula():
    logits = torch.randn(3, 50) * 4
    expected = [numpy_self_certainty(row.double().numpy()) for row in logits]
    assert recorder.token_self_certainty(logits).tolist() == pytest.approx(expected, rel=1e-5)


def test_masked_entries_are_left_out_not_turned_into_infinity():
    logits = torch.randn(1, 10)
    masked = torch.cat([logits, torch.full((1, 5), float("-inf"))], dim=1)
    assert recorder.token_self_certainty(masked).item() == pytest.approx(
        recorder.token_self_certainty(logits).item(), rel=1e-5)


def test_records_each_opted_in_row_at_its_output_position_and_leaves_logits_alone():
    processor = SelfCertaintyRecorder(None, torch.device("cpu"), False)
    outputs_a, outputs_b = [], []
    processor.update_state(update(added=[(0, recorded("aa" * 6), [1], outputs_a),
                                         (1, SamplingParams(), [1], []),
                                         (2, recorded("bb" * 6), [1], outputs_b)], size=3))
    logits = torch.randn(3, 40)
    before = logits.clone()
    for step in range(3):
        assert torch.equal(processor.apply(logits), before)
        outputs_a.append(7)
        if step < 2:
            outputs_b.append(7)
    expected = recorder.token_self_certainty(logits).tolist()
    assert read_record("aa" * 6, 3) == pytest.approx([expected[0]] * 3, rel=1e-6)
    assert read_record("bb" * 6, 3) == pytest.approx([expected[2]] * 3, rel=1e-6)


def test_rows_follow_moves_and_removals():
    processor = SelfCertaintyRecorder(None, torch.device("cpu"), False)
    outputs = []
    processor.update_state(update(added=[(0, recorded("cc" * 6), [1], outputs)], size=2))
    processor.update_state(update(moved=[(0, 1, MoveDirectionality.UNIDIRECTIONAL)], size=2))
    logits = torch.stack([torch.zeros(20), torch.arange(20.0)])
    processor.apply(logits)
    assert read_record("cc" * 6, 1) == pytest.approx([recorder.token_self_certainty(logits[1:]).item()])
    processor.update_state(update(removed=[1], size=1))
    assert processor.files == {} and processor.rows == {}
    processor.apply(logits)
    assert list(recorder.record_dir().glob("*")) == []


def test_a_position_recorded_twice_keeps_the_last_value_and_a_missing_one_fails():
    path = recorder.record_path("dd" * 6)
    path.parent.mkdir()
    path.write_bytes(b"".join(recorder.RECORD.pack(p, v) for p, v in [(0, 1.0), (0, 2.0), (1, 3.0)]))
    assert read_record("dd" * 6, 2) == [2.0, 3.0]
    assert not path.exists()
    path.write_bytes(recorder.RECORD.pack(1, 3.0))
    assert read_record("dd" * 6, 2) is None
    assert read_record("ee" * 6, 1) is None  # no file at all


def test_a_record_read_while_it_grows_gives_the_positions_recorded_so_far():
    name = "ab" * 6
    reader = recorder.RecordReader(name)
    assert reader.prefix(3) == []  # the engine has not written its first step yet
    path = recorder.record_path(name)
    path.parent.mkdir()
    with open(path, "ab", buffering=0) as engine_side:
        engine_side.write(recorder.RECORD.pack(0, 1.5))
        engine_side.write(recorder.RECORD.pack(1, 2.5)[:3])  # half a record: not read yet
        assert reader.prefix(3) == [1.5]
        engine_side.write(recorder.RECORD.pack(1, 2.5)[3:] + recorder.RECORD.pack(2, 3.5))
        engine_side.write(recorder.RECORD.pack(3, 4.5))
        assert reader.prefix(3) == [1.5, 2.5, 3.5]  # the token at position 3 has not arrived
        assert reader.prefix(4) == [1.5, 2.5, 3.5, 4.5]
    reader.close()
    assert not path.exists()


@pytest.mark.parametrize("name", ["../etc/passwd", "ABC123456789", "short", 42])
def test_names_that_are_not_short_hex_are_refused(name):
    with pytest.raises((ValueError, TypeError)):
        SelfCertaintyRecorder.validate_params(recorded(name))


def test_the_engine_mode_scorer_averages_the_recorded_values():
    scorer = SelfCertaintyScorer()
    assert scorer.name == "self_certainty" and scorer.token_self_certainty
    assert scorer.logprobs_needed is None and not scorer.full_vocab
    recorded_sample = sample("abc")
    recorded_sample.token_self_certainty = [1.0, 2.0, 6.0]
    assert scorer.response_score(recorded_sample, 100) == pytest.approx(3.0)
    with pytest.raises(ValueError, match="per-token self-certainty"):
        scorer.response_score(sample("abc"), 100)
    empty = sample("")
    empty.token_self_certainty = []
    assert scorer.response_score(empty, 100) == 0.0


@pytest.mark.asyncio
async def test_a_lost_record_scores_every_candidate_alike_instead_of_failing():
    context = ScoringContext([1], "q", ScriptedGenerator([]))
    recorded_sample, lost = sample("ab"), sample("abc")
    recorded_sample.token_self_certainty = [9.0, 9.0]
    assert await SelfCertaintyScorer().score(context, [recorded_sample, lost]) == [0.0, 0.0]
