"""pytest plugin: vLLM's own OpenAI-server tests against a server that is already running.

`bench/vllm_suite.py` copies the tests of the vLLM sdist into a scratch directory and runs pytest
there with `-p bench.vllm_suite_plugin`. The plugin

- turns `tests.utils.RemoteOpenAIServer` into a handle on the running server: its constructor
  launches nothing and its `url_for`, `get_client`, ... point at `--vllm-suite-url`; any other
  launcher (and any `vllm ...` subprocess) raises instead of starting an engine;
- deselects the tests this one server cannot stand for (`DESELECT`, the same for every server);
- makes the model names the tests use resolve to the served model in the test process too
  (tests load "their" model's tokenizer or config to check the server's answers);
- writes every test's outcome to `--vllm-suite-report`.

The server must be started with `server_flags()`: the model names the selected tests ask for as
`--served-model-name` aliases and the features they need (the harness prints them).
"""

from __future__ import annotations

import fnmatch
import functools
import inspect
import json
import os
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest

SERVED_MODEL_NAME = "SmolLM2-135M-Instruct"

# The model names the selected server tests send. The server answers to each of them (vLLM takes
# several --served-model-name values; responses carry the first), and in the test process each
# resolves to the served model's directory. The tests were written for these models, so answers
# that depend on the model (exact texts, token ids, chat templates) fail on every server alike.
MODEL_ALIASES = [
    "HuggingFaceTB/SmolLM2-135M-Instruct",  # tokenize tests: the served model itself
    "Qwen/Qwen2.5-1.5B-Instruct",
    "Qwen/Qwen2-1.5B-Instruct",
    "Qwen/Qwen3-0.6B",
    "Qwen/Qwen3-1.7B",
    "HuggingFaceH4/zephyr-7b-beta",
    "facebook/opt-125m",
    "openai-community/gpt2",
    "TinyLlama/TinyLlama-1.1B-Chat-v1.0",
]

# What the selected tests need of the server beyond its engine flags: one set for every test.
FEATURE_FLAGS = [
    "--enable-auto-tool-choice", "--tool-call-parser", "hermes",  # tool tests (chat, responses)
    "--enable-prompt-tokens-details",  # completion usage tests
    "--enable-tokenizer-info-endpoint",  # /tokenizer_info tests
    "--enable-server-load-tracking",  # /load test
]
# The Responses API tests store responses and retrieve them.
SERVER_ENV = {"VLLM_ENABLE_RESPONSES_API_STORE": "1"}


def server_flags() -> list[str]:
    return ["--served-model-name", SERVED_MODEL_NAME, *MODEL_ALIASES, *FEATURE_FLAGS]


# Modules not even imported: they fail at import here.
NOT_COLLECTED = {
    "openai/completion/test_completion_with_prompt_embeds.py":
        "downloads facebook/opt-125m's config at import; prompt embeds, LoRA",
    "openai/correctness/test_lmeval.py": "needs lm_eval (heavy) and Qwen2-1.5B answers",
    "openai/test_openai_schema.py": "needs schemathesis and a multimodal model (SmolVLM)",
}

# Deselected tests, first match wins: (pattern on the node id below tests/entrypoints/, why).
# A reason names what the one running server cannot offer, so every server loses the same tests.
DESELECT = [
    # Other models or model files: only the embedded SmolLM2-135M-Instruct is served.
    ("openai/chat_completion/test_serving_chat.py::TestGPTOSS*", "needs openai/gpt-oss-20b (GPU)"),
    ("openai/chat_completion/test_serving_chat.py::TestServingChatWithHarmony::*",
     "unit tests that download openai/gpt-oss-20b's tokenizer (no network here)"),
    ("openai/chat_completion/test_serving_chat.py::test_serving_chat_truncation_side_controls_prompt_truncation",
     "unit test that downloads gpt2's tokenizer (no network here)"),
    ("openai/responses/test_harmony.py::*", "needs openai/gpt-oss-20b (GPU)"),
    ("openai/responses/test_mcp_tools.py::TestMCPEnabled::*", "needs openai/gpt-oss-20b (GPU)"),
    ("openai/responses/test_simple.py::*", "needs Qwen/Qwen3-8B and --reasoning-parser qwen3"),
    ("openai/responses/test_parsable_context.py::*", "needs Qwen/Qwen3-8B, a reasoning parser and a tool server"),
    ("openai/chat_completion/test_extra_content_fields.py::*", "multimodal model"),
    ("serve/tokenize/test_tokenization_vlm.py::*", "multimodal model"),
    ("serve/tokenize/test_tokenize_then_chat_vlm.py::*", "multimodal model"),
    ("serve/instrumentator/test_metrics.py::*multimodal*", "multimodal model"),
    ("openai/completion/test_tensorizer_entrypoint.py::*", "tensorizer: serializes a model of its own"),
    ("openai/completion/test_token_in_token_out.py::*", "downloads Qwen3-0.6B and serves it with --skip-tokenizer-init"),
    # LoRA: the server has no adapters (and SageMaker's tests are LoRA and SageMaker routes).
    ("openai/chat_completion/test_chat.py::*zephyr-lora*", "LoRA adapter zephyr-lora"),
    ("openai/models/test_models.py::*", "LoRA adapters (lists them)"),
    ("openai/test_return_tokens_as_ids.py::*", "LoRA adapters and --return-tokens-as-token-ids"),
    ("serve/lora/test_lora_adapters.py::*", "LoRA adapters"),
    ("serve/sagemaker/*", "SageMaker routes with LoRA adapters"),
    # Server flags not in FEATURE_FLAGS: most would change answers that other tests check.
    ("openai/chat_completion/test_chat_completion_with_prompt_embeds.py::*", "needs --enable-prompt-embeds"),
    ("openai/chat_completion/test_chat_echo.py::test_prompt_logprobs", "needs --max-logprobs of the vocabulary size"),
    ("openai/chat_completion/test_chat_echo.py::test_top_logprobs", "needs --max-logprobs of the vocabulary size"),
    ("openai/chat_completion/test_completion_with_function_calling.py::*watermarked*", "needs --watermark-config"),
    ("openai/chat_completion/test_enable_force_include_usage.py::*", "needs --enable-force-include-usage"),
    ("openai/chat_completion/test_include_reasoning.py::*", "needs --reasoning-parser qwen3 (Qwen3's think tokens)"),
    ("openai/chat_completion/test_thinking_token_budget.py::*", "needs --reasoning-parser qwen3 (Qwen3's think tokens)"),
    ("openai/chat_completion/test_root_path.py::*", "needs --root-path"),
    ("openai/test_chunked_prompt.py::*", "needs chunked prefill (off on the CPU servers)"),
    ("serve/instrumentator/test_metrics.py::*--enable-chunked-prefill*", "needs chunked prefill (off on the CPU servers)"),
    ("serve/instrumentator/test_metrics.py::*--show-hidden-metrics*", "needs --show-hidden-metrics-for-version"),
    ("serve/instrumentator/test_basic.py::test_request_cancellation*", "needs --max-model-len 10100"),
    ("serve/instrumentator/test_uds.py::*", "needs --uds"),
    # (test_no_api_token and test_no_request_id_header need no flag: they stay.)
    ("serve/middleware/test_optional_middleware.py::*[[]server0]", "needs --api-key"),
    ("serve/middleware/test_optional_middleware.py::*[[]--enable-request-id-headers]", "needs --enable-request-id-headers"),
    ("serve/dev/rpc/test_collective_rpc.py::*", "needs --worker-extension-cls and dev mode"),
    # Launches a process of its own.
    ("serve/instrumentator/test_metrics.py::test_metrics_exist_run_batch", "launches `vllm run-batch`"),
]


def pytest_addoption(parser):
    group = parser.getgroup("vllm_suite")
    group.addoption("--vllm-suite-url", default="http://127.0.0.1:8000",
                    help="root URL of the running server")
    group.addoption("--vllm-suite-model-dir", help="the served model's directory (model names resolve to it)")
    group.addoption("--vllm-suite-report", help="write every test's outcome here (JSON)")
    group.addoption("--vllm-suite-server-only", action="store_true",
                    help="deselect the tests that use no server")


def pytest_configure(config):
    _refuse_vllm_subprocesses()
    _attach_to(config.getoption("--vllm-suite-url"))
    _skip_flag_only_downloads()
    if model_dir := config.getoption("--vllm-suite-model-dir"):
        _resolve_aliases_to(model_dir, Path(config.rootpath))
    config.pluginmanager.register(_Report(config), "vllm_suite_report")


def _attach_to(url: str) -> None:
    """RemoteOpenAIServer(...) becomes a handle on the server at `url`; other launchers raise."""
    from tests import utils

    parts = urlsplit(url)

    def attach(self, model, vllm_serve_args, **_launch_options):
        if type(self) is not utils.RemoteOpenAIServer:
            raise RuntimeError(f"vllm_suite: {type(self).__name__} would launch a server of its own")
        self.uds = None
        self.host, self.port = parts.hostname, parts.port or 80
        self.show_hidden_metrics = False
        self._shutdown_complete = True

    def refuse(self, *args, **kwargs):
        raise RuntimeError("vllm_suite: refused to launch a server")

    utils.RemoteVLLMServer.__init__ = attach
    utils.RemoteVLLMServer._start_server = refuse
    utils.RemoteVLLMServer._shutdown = lambda self: None


def _refuse_vllm_subprocesses() -> None:
    """A safety net under the deselection: no test may start `vllm ...` or `python -m vllm...`."""
    original = subprocess.Popen.__init__

    def guarded(self, args, *rest, **kwargs):
        argv = [args] if isinstance(args, (str, bytes, os.PathLike)) else list(args)
        words = " ".join(map(os.fsdecode, argv)).split()
        if any(Path(word).name == "vllm" or word.startswith("vllm.") for word in words):
            raise RuntimeError(f"vllm_suite: refused to start {' '.join(words)!r}")
        original(self, args, *rest, **kwargs)

    subprocess.Popen.__init__ = guarded


def _resolve_aliases_to(model_dir: str, scratch: Path) -> None:
    """Each alias names `model_dir` in this process: vLLM's ModelConfig follows
    VLLM_MODEL_REDIRECT_PATH; its get_tokenizer and transformers' AutoTokenizer are wrapped."""
    import transformers
    import vllm.tokenizers

    redirect = {name: model_dir for name in MODEL_ALIASES}
    path = scratch / "model_redirect.json"
    path.write_text(json.dumps(redirect))
    os.environ["VLLM_MODEL_REDIRECT_PATH"] = str(path)

    get_tokenizer = vllm.tokenizers.get_tokenizer

    @functools.wraps(get_tokenizer)
    def get_redirected_tokenizer(tokenizer_name, *args, **kwargs):
        return get_tokenizer(redirect.get(str(tokenizer_name), tokenizer_name), *args, **kwargs)

    vllm.tokenizers.get_tokenizer = get_redirected_tokenizer

    auto_from_pretrained = transformers.AutoTokenizer.from_pretrained.__func__

    def from_pretrained(cls, name, *args, **kwargs):
        return auto_from_pretrained(cls, redirect.get(str(name), name), *args, **kwargs)

    transformers.AutoTokenizer.from_pretrained = classmethod(from_pretrained)


def _skip_flag_only_downloads() -> None:
    """test_chat.py's server fixture downloads a LoRA adapter only to name it in the server's
    flags, which are ignored here (its LoRA tests are deselected)."""
    from vllm.transformers_utils.repo_utils import hf_api

    api = hf_api()
    snapshot_download = api.snapshot_download

    def skip_flag_only_download(*args, repo_id=None, **kwargs):
        if repo_id == "typeof/zephyr-7b-beta-lora":
            return f"/nonexistent/{repo_id}"
        return snapshot_download(*args, repo_id=repo_id, **kwargs)

    api.snapshot_download = skip_flag_only_download


def pytest_ignore_collect(collection_path, config):
    return _below_entrypoints(collection_path) in NOT_COLLECTED or None


def _below_entrypoints(path) -> str:
    text = str(path).replace(os.sep, "/")
    return text.split("tests/entrypoints/", 1)[-1]


def deselect_reason(nodeid: str) -> str | None:
    short = _below_entrypoints(nodeid)
    return next((reason for pattern, reason in DESELECT if fnmatch.fnmatchcase(short, pattern)), None)


def uses_server(item) -> bool:
    """Whether the test or one of its fixtures makes a RemoteOpenAIServer (read from their source)."""
    functions = [getattr(item, "function", None)]
    for name in item.fixturenames:
        functions += [fixture.func for fixture in item._fixtureinfo.name2fixturedefs.get(name, ())]
    return any(_makes_server(function) for function in functions if function is not None)


@functools.cache
def _makes_server(function) -> bool:
    try:
        source = inspect.getsource(inspect.unwrap(function))
    except (OSError, TypeError):
        return False
    # `getfixturevalue`: a fixture that picks a server fixture by parameter (tool_use_server).
    return "RemoteOpenAIServer(" in source or "getfixturevalue(" in source


class _Report:
    """Selection at collection, outcomes while running, a JSON file and a summary at the end."""

    def __init__(self, config):
        self.config = config
        self.path = config.getoption("--vllm-suite-report")
        self.kind: dict[str, str] = {}
        self.deselected: dict[str, str] = {}
        self.outcome: dict[str, str] = {}

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, config, items):
        server_only = config.getoption("--vllm-suite-server-only")
        kept, dropped = [], []
        for item in items:
            kind = "server" if uses_server(item) else "unit"
            reason = deselect_reason(item.nodeid)
            if reason is None and server_only and kind == "unit":
                reason = "uses no server (--server-only)"
            if reason is None:
                self.kind[item.nodeid] = kind
                kept.append(item)
            else:
                self.deselected[item.nodeid] = reason
                dropped.append(item)
        if dropped:
            config.hook.pytest_deselected(items=dropped)
        items[:] = kept

    def pytest_runtest_logreport(self, report):
        previous = self.outcome.get(report.nodeid)
        if report.when == "call":
            outcome = "skipped" if report.skipped else report.outcome
        elif report.failed:
            outcome = "error"  # in a fixture, before or after the test
        elif report.skipped:
            outcome = "skipped"
        else:
            return
        if previous in (None, "passed"):
            self.outcome[report.nodeid] = outcome

    def summary(self) -> dict:
        counts = {name: 0 for name in ("passed", "failed", "skipped", "error", "not run")}
        by_kind = {kind: dict(counts) for kind in ("server", "unit")}
        for nodeid, kind in self.kind.items():
            outcome = self.outcome.get(nodeid, "not run")
            counts[outcome] += 1
            by_kind[kind][outcome] += 1
        reasons: dict[str, int] = {}
        for reason in self.deselected.values():
            reasons[reason] = reasons.get(reason, 0) + 1
        return {
            "url": self.config.getoption("--vllm-suite-url"),
            "selected": len(self.kind),
            "counts": counts,
            "counts_by_kind": by_kind,
            "deselected": len(self.deselected),
            "deselected_by_reason": dict(sorted(reasons.items(), key=lambda pair: -pair[1])),
            "not_collected": NOT_COLLECTED,
            "failing": sorted(nodeid for nodeid, outcome in self.outcome.items()
                              if outcome in ("failed", "error")),
            "tests": {nodeid: {"kind": kind, "outcome": self.outcome.get(nodeid, "not run")}
                      for nodeid, kind in sorted(self.kind.items())},
        }

    def pytest_terminal_summary(self, terminalreporter):
        summary = self.summary()
        write = terminalreporter.write_line
        terminalreporter.section("vllm_suite")
        write(f"server {summary['url']}: {summary['selected']} selected, {summary['deselected']} deselected")
        for kind, counts in summary["counts_by_kind"].items():
            write(f"  {kind:6}  " + "  ".join(f"{name} {n}" for name, n in counts.items()))
        for reason, n in summary["deselected_by_reason"].items():
            write(f"  deselected {n:4}  {reason}")
        if self.path:
            Path(self.path).write_text(json.dumps(summary, indent=1) + "\n")
            write(f"report: {self.path}")
