"""Exact self-certainty of every generated token, recorded inside vLLM's sampler.

Self-certainty needs the whole next-token distribution: KL(uniform || p) = logsumexp(z) -
mean(z) - log V. vLLM returns at most the top-k logprobs per token, and the cheap estimates from
those rank candidates poorly (Spearman 0.76 at k = 20, bench/self_certainty_fidelity.py), while
asking for all V logprobs ships V floats per token to Python. The full logits are on hand in the
sampler anyway, so this logits processor computes the two reductions there, leaves the logits
untouched, and appends one (position, value) record per step to a small file that the frontend
reads as the request runs (for a stop rule) or once it has finished. Only requests whose
SamplingParams.extra_args carry `RECORD_KEY` pay anything.

The engine core runs in another process, hence the file: it lies in shared memory
(/dev/shm when there is one), one per request, removed by the reader.
"""

from __future__ import annotations

import math
import os
import re
import struct
import tempfile
from pathlib import Path
from typing import BinaryIO

import torch
from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor
from vllm.v1.sample.logits_processor.builtin import process_dict_updates

RECORD_KEY = "deliberate_self_certainty"
RECORD = struct.Struct("<if")  # output position, self-certainty of the token sampled there
_NAME = re.compile(r"[0-9a-f]{8,64}")


def record_dir() -> Path:
    """Where both processes look; the engine core inherits the environment of the frontend."""
    base = os.environ.get("DELIBERATE_RECORD_DIR") or (
        "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir())
    return Path(base) / f"deliberate-self-certainty-{os.getuid()}"


def record_path(name: str) -> Path:
    if not _NAME.fullmatch(name):
        raise ValueError(f"{RECORD_KEY} must be a lowercase hex name, got {name!r}")
    return record_dir() / name


class RecordReader:
    """One request's record, read as the engine appends to it (it may be read while the request
    runs: each step's record is written before that step's token leaves the engine core)."""

    def __init__(self, name: str):
        self.path = record_path(name)
        self.file: BinaryIO | None = None
        self.pending = b""
        self.values: dict[int, float] = {}
        self.recorded: list[float] = []  # positions 0, 1, ... as far as they are recorded

    def prefix(self, tokens: int) -> list[float]:
        """The values of positions 0, 1, ... up to `tokens`, as far as they are recorded yet: the
        reader's own list, which later calls with more tokens extend.

        A position can be recorded twice (a chunked prefill samples and discards a token before
        the prompt's last chunk, before any token reaches the frontend); the last record wins."""
        if self.file is None:
            try:
                self.file = open(self.path, "rb")
            except FileNotFoundError:
                return self.recorded
        data = self.pending + self.file.read()
        whole = len(data) - len(data) % RECORD.size
        self.pending = data[whole:]
        for position, value in RECORD.iter_unpack(data[:whole]):
            self.values[position] = value
        while len(self.recorded) < tokens and len(self.recorded) in self.values:
            self.recorded.append(self.values.pop(len(self.recorded)))
        return self.recorded

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
        self.path.unlink(missing_ok=True)


def read_record(name: str, tokens: int) -> list[float] | None:
    """The value for each of the first `tokens` positions, then removes the file; None when any
    position is missing."""
    reader = RecordReader(name)
    try:
        values = reader.prefix(tokens)
        found = reader.file is not None
    finally:
        reader.close()
    return values if found and len(values) == tokens else None


def token_self_certainty(logits: torch.Tensor) -> torch.Tensor:
    """Per row: logsumexp - mean - log V, over the entries not masked to -inf."""
    values = torch.logsumexp(logits, -1) - logits.mean(-1) - math.log(logits.shape[-1])
    masked = ~torch.isfinite(values)
    if masked.any():  # a row with -inf entries (allowed_token_ids, min_tokens): the rest only
        rows = logits[masked]
        finite = torch.isfinite(rows)
        count = finite.sum(-1).clamp(min=1)
        mean = torch.where(finite, rows, 0.0).sum(-1) / count
        values[masked] = torch.logsumexp(rows, -1) - mean - count.float().log()
    return values


def _samples_here() -> bool:
    """Every tensor-parallel rank runs the sampler; only the first writes the records."""
    try:
        from vllm.distributed import get_tensor_model_parallel_rank

        return get_tensor_model_parallel_rank() == 0
    except (AssertionError, RuntimeError, ImportError):
        return True


class SelfCertaintyRecorder(LogitsProcessor):
    def __init__(self, vllm_config, device: torch.device, is_pin_memory: bool):
        self.writes = _samples_here()
        # batch row -> (record name, the request's live list of output token ids)
        self.rows: dict[int, tuple[str, list[int]]] = {}
        self.files: dict[str, BinaryIO] = {}
        if self.writes:
            record_dir().mkdir(parents=True, exist_ok=True)

    @classmethod
    def validate_params(cls, sampling_params) -> None:
        name = (sampling_params.extra_args or {}).get(RECORD_KEY)
        if name is not None:
            record_path(name)

    def is_argmax_invariant(self) -> bool:
        # It changes nothing, but argmax-invariant processors are skipped for greedy requests,
        # and the greedy candidate needs its record too.
        return False

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        def entry(params, _prompt_ids, output_ids):
            name = (params.extra_args or {}).get(RECORD_KEY)
            return (name, output_ids) if name is not None else None

        if process_dict_updates(self.rows, batch_update, entry):
            live = {name for name, _ in self.rows.values()}
            for name in [name for name in self.files if name not in live]:
                self.files.pop(name).close()

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        if not self.rows or not self.writes:
            return logits
        rows = sorted(self.rows)
        # Every row recorded (a best-of-N batch): no copy of the logits.
        recorded = logits if len(rows) == logits.shape[0] else logits[rows]
        values = token_self_certainty(recorded.float()).tolist()
        for row, value in zip(rows, values):
            name, output_ids = self.rows[row]
            file = self.files.get(name)
            if file is None:
                file = self.files[name] = open(record_path(name), "ab", buffering=0)
            file.write(RECORD.pack(len(output_ids), value if math.isfinite(value) else 0.0))
        return logits
