"""deliberate as a vLLM endpoint plugin (the `vllm.endpoint_plugins` entry point `deliberate`).

vLLM's own OpenAI server loads it when `VLLM_PLUGINS` names it: `attach_router` takes over
chat, completions and models and adds the tree routes; `init_state` builds the search service
once vLLM's own serving objects exist. deliberate's flags come from `deliberate serve`'s command
line, or, under a plain `vllm serve`, from the `DELIBERATE_ARGS` environment variable.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import json
import logging
import os
import shlex
import threading
import time

from search.types import InvalidSearchParam
from server.limits import DEFAULT_MAX_REQUEST_BYTES, RequestBodyGuard

log = logging.getLogger("deliberate")


def configure_logging() -> None:
    """deliberate's log lines (`deliberate.*`: access, tree cache, model) on stderr beside
    vLLM's, at DELIBERATE_LOG_LEVEL (default INFO); vLLM configures only its own loggers."""
    if log.handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(asctime)s [%(name)s] %(message)s", "%m-%d %H:%M:%S"))
    log.addHandler(handler)
    log.setLevel(os.environ.get("DELIBERATE_LOG_LEVEL", "INFO").upper())
    log.propagate = False

PLUGIN_NAME = "deliberate"
# On shutdown, how long searches cut short get to send the answer they have.
ANSWER_GRACE_S = 3.0
ARGS_ENV = "DELIBERATE_ARGS"
RECORDER = "server.self_certainty_recorder:SelfCertaintyRecorder"
# reasoning_effort -> the search it applies ("none": plain serving). Medium is self-consistency
# under confidence pruning, which spent about half the tokens of the same search unpruned.
DEFAULT_EFFORT_SEARCHES = {"low": "none", "medium": "self_consistency,n=16,prune=true", "high": "mcts"}
EFFORT_LEVELS = ("none", "minimal", "low", "medium", "high", "xhigh", "max")


def add_deliberate_args(parser) -> None:
    """deliberate's own flags (the one definition, for `deliberate serve` and DELIBERATE_ARGS)."""
    from scorers.http_verifier import LOOPBACK_HOSTS

    group = parser.add_argument_group("deliberate", "The search extension.")
    group.add_argument(
        "--alias", action="append", default=[], metavar="NAME=SPEC",
        help="A model name that applies a search, e.g. smollm2-sc8=self_consistency,n=8 "
        "or NAME='{\"strategy\": \"best_of_n\", \"n\": 4}'. Repeatable; listed by /v1/models.")
    group.add_argument(
        "--reasoning-effort-search", action="append", default=[], metavar="LEVEL=SPEC",
        help="The search a chat request's `reasoning_effort` (none, minimal, low, medium, high, xhigh, max) "
        "applies when it names none, e.g. high=mcts or medium=none (plain). Repeatable; defaults: "
        + ", ".join(f"{level}={spec}" for level, spec in DEFAULT_EFFORT_SEARCHES.items())
        + "; /v1/models lists the table.")
    group.add_argument("--default-search", metavar="SPEC",
                       help="A search applied to every request for the model itself (same syntax as --alias).")
    group.add_argument("--redis-url", metavar="URL",
                       help="Share search trees through Redis (e.g. redis://127.0.0.1:6379/0); default: in-process LRU.")
    group.add_argument("--tree-cache-ttl", type=int, default=3600, metavar="SECONDS",
                       help="How long a stored search tree is kept (default 3600).")
    group.add_argument("--tree-cache-entries", type=int, default=256, metavar="N",
                       help="Trees kept by the in-process store (default 256).")
    group.add_argument("--tree-secret", metavar="SECRET",
                       help="The key of tree ids, so nobody can compute one from a guessed prompt (default: one "
                       "made once and kept in Redis, so replicas agree; without Redis, one per process).")
    group.add_argument("--tree-cache-scope", choices=("key", "global"), default="key",
                       help="key (default): a tree is read and reused only with the API key that grew it; "
                       "global: shared by every client.")
    group.add_argument("--critic-model", metavar="MODEL",
                       help="A second model (directory, or `default`) that judges and critiques steps "
                       "for the critic strategy; it gets its own engine with the same engine flags.")
    group.add_argument("--critic-gpu-memory-utilization", type=float, metavar="FRACTION",
                       help="The critic engine's share of GPU memory (default: as --gpu-memory-utilization); "
                       "lower both so that the two engines fit.")
    group.add_argument("--max-concurrent-searches", type=int, metavar="N",
                       help="Searches run at once per API process (default: the engine's --max-num-seqs / 8); "
                       "they also never hold more sequences than --max-num-seqs together.")
    group.add_argument("--max-queued-searches", type=int, metavar="N",
                       help="Searches that wait for admission (default: 4x --max-concurrent-searches); "
                       "past it a search gets 429 with Retry-After.")
    group.add_argument("--max-search-tokens", type=int, metavar="TOKENS",
                       help="The most tokens one search may ask for: search.n x max_tokens and "
                       "search.budget_tokens (default: no cap); more is a 400.")
    group.add_argument("--max-search-seconds", type=float, metavar="SECONDS",
                       help="The longest a search may run (a request's search.deadline_s may ask for less): then it "
                       "answers with the best it has, marked truncated (default: no limit).")
    group.add_argument("--verifier-hosts", default=",".join(sorted(LOOPBACK_HOSTS)), metavar="HOSTS",
                       help="Comma-separated host names a request's HTTP verifier (search.scorer: {\"url\": ...}) "
                       "may be on; any other is a 400, so clients cannot make the server call into its network. "
                       "Default: this machine only (" + ", ".join(sorted(LOOPBACK_HOSTS)) + "); an empty value "
                       "turns HTTP verifiers off.")
    group.add_argument("--max-request-bytes", type=int, default=DEFAULT_MAX_REQUEST_BYTES, metavar="BYTES",
                       help=f"Request bodies over this size get 413 (default {DEFAULT_MAX_REQUEST_BYTES}).")


def deliberate_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=ARGS_ENV, add_help=False)
    add_deliberate_args(parser)
    return parser


def deliberate_args(args: argparse.Namespace) -> argparse.Namespace:
    """deliberate's flags: from `deliberate serve`'s namespace, else from DELIBERATE_ARGS."""
    parser = deliberate_parser()
    if all(hasattr(args, action.dest) for action in parser._actions):
        return args
    return parser.parse_args(shlex.split(os.environ.get(ARGS_ENV, "")))


def parse_search_spec(text: str, flag: str) -> dict:
    """A search spec as JSON (`{"strategy": "self_consistency", "n": 8}`) or compact
    (`self_consistency,n=8,temperature=0.7`)."""
    text = text.strip()
    if text.startswith("{"):
        spec = json.loads(text)
    else:
        strategy, *pairs = text.split(",")
        spec = {"strategy": strategy.strip()}
        for pair in pairs:
            key, sep, value = pair.partition("=")
            if not sep:
                raise SystemExit(f"{flag}: expected key=value, got {pair!r}")
            try:
                spec[key.strip()] = json.loads(value)
            except json.JSONDecodeError:
                spec[key.strip()] = value.strip()
    from server.search_service import parse_search

    try:
        parse_search(spec)
    except InvalidSearchParam as exc:
        raise SystemExit(f"{flag}: {exc.param}: {exc.message}")
    return spec


def parse_verifier_hosts(text: str) -> frozenset[str]:
    """--verifier-hosts as the set of host names (lower case, an IPv6 address without brackets)."""
    return frozenset(host.strip().strip("[]").lower() for host in text.split(",") if host.strip())


def parse_aliases(values: list[str]) -> dict[str, dict]:
    aliases = {}
    for value in values:
        name, sep, spec = value.partition("=")
        if not sep or not name:
            raise SystemExit(f"--alias: expected NAME=SPEC, got {value!r}")
        aliases[name.strip()] = parse_search_spec(spec, f"--alias {name}")
    return aliases


def parse_effort_searches(values: list[str]) -> dict[str, dict | None]:
    """The reasoning_effort table: the defaults, with each LEVEL=SPEC given over them."""
    table: dict[str, dict | None] = {}
    for value in [f"{level}={spec}" for level, spec in DEFAULT_EFFORT_SEARCHES.items()] + list(values):
        level, sep, spec = value.partition("=")
        level = level.strip()
        if not sep or level not in EFFORT_LEVELS:
            raise SystemExit(f"--reasoning-effort-search: expected LEVEL=SPEC with LEVEL one of "
                             f"{', '.join(EFFORT_LEVELS)}, got {value!r}")
        flag = f"--reasoning-effort-search {level}"
        table[level] = None if spec.strip() == "none" else parse_search_spec(spec, flag)
    return table


class DeliberateState:
    """What the routes need: the search service, the model names that apply a search, and
    deliberate's copies of vLLM's chat and completion serving objects (with a searching engine)."""

    def __init__(self, service, admission, root_name: str, aliases: dict[str, dict], default_search: dict | None,
                 chat, completion, effort_searches: dict[str, dict | None] | None = None):
        self.service = service
        self.admission = admission
        self.root_name = root_name
        self.aliases = aliases
        self.default_search = default_search
        self.effort_searches = effort_searches or {}
        self.chat = chat
        self.completion = completion

    def effective_search(self, model: str | None, requested: dict | None, effort: str | None = None) -> dict | None:
        """The search a request runs, or None for plain serving: what the model names (an alias),
        else what its reasoning_effort applies, else the server's default; the request's own
        `search` fields go over it (and alone, with none of those, are the search)."""
        if model in self.aliases:
            applied = self.aliases[model]
        elif effort in self.effort_searches:
            applied = self.effort_searches[effort]
            if applied is None and requested is None:
                return None
        else:
            applied = self.default_search
        if applied is None or (requested and requested.get("strategy") not in (None, applied["strategy"])):
            return requested  # a search of another strategy stands alone
        return {**applied, **(requested or {})}

    async def drain(self, timeout_s: float) -> None:
        """Before vLLM stops the engine (SIGTERM, within its --shutdown-timeout): no new searches
        (503 with Retry-After), running ones may finish, then answer with the best they have so
        that no client is left without an answer when the process exits."""
        from server.search_service import SHUTTING_DOWN

        self.admission.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.admission.idle.wait(), max(0.0, timeout_s - ANSWER_GRACE_S))
        if not self.admission.idle.is_set():
            log.info("shutting down: %d searches still running answer with what they have", self.admission.running)
            self.service.stop_searches(SHUTTING_DOWN)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.admission.idle.wait(), ANSWER_GRACE_S)

    async def close(self) -> None:
        await self.service.feeds.close()
        await self.service.tree_store.close()
        if self.service.http is not None:
            await self.service.http.aclose()
        if self.service.critic is not None:
            self.service.critic.shutdown()


class DeliberatePlugin:
    name = PLUGIN_NAME
    required_tasks = ("generate",)

    def attach_router(self, app) -> None:
        from starlette.exceptions import HTTPException as StarletteHTTPException
        from vllm.entrypoints.serve.exception_handling.handlers.http import http_exception_handler

        from vllm.v1.engine.exceptions import EngineDeadError

        from server.admission import SearchRejected
        from server.routes import CloseConnectionsWhileDraining, engine_stopped, router, search_rejected

        app.include_router(router)
        app.add_exception_handler(SearchRejected, search_rejected)
        app.add_exception_handler(EngineDeadError, engine_stopped)
        # vLLM maps fastapi's HTTPException to the OpenAI error shape, but FastAPI raises
        # starlette's (its base) for a body it cannot parse: that one got {"detail": ...}.
        app.add_exception_handler(StarletteHTTPException, http_exception_handler)
        app.add_middleware(RequestBodyGuard, max_bytes=deliberate_args(app.state.args).max_request_bytes)
        app.add_middleware(CloseConnectionsWhileDraining)
        vllm_lifespan = app.router.lifespan_context

        @contextlib.asynccontextmanager
        async def lifespan(app):
            async with vllm_lifespan(app) as state:
                try:
                    yield state
                finally:
                    deliberate = getattr(app.state, "deliberate", None)
                    if deliberate is not None:
                        await deliberate.close()

        app.router.lifespan_context = lifespan

    async def init_state(self, engine_client, state, args: argparse.Namespace) -> None:
        from server.admission import Admission, AdmissionLimits
        from server.engine import VLLMGenerator
        from server.routes import SearchingEngineClient
        from server.search_service import SearchService
        from server.tree_store import build_tree_store

        if engine_client is None:
            raise SystemExit("deliberate needs an engine: it cannot run on vLLM's render-only server.")
        configure_logging()
        options = deliberate_args(args)
        root_name = state.openai_serving_models.model_name()
        aliases = parse_aliases(options.alias)
        if root_name in aliases:
            raise SystemExit(f"--alias {root_name}: the name is already taken by the served model.")
        default_search = parse_search_spec(options.default_search, "--default-search") if options.default_search else None
        effort_searches = parse_effort_searches(options.reasoning_effort_search)
        generator = VLLMGenerator(engine_client, engine_client.model_config.model, records_self_certainty(args))
        await generator.warm_up()
        critic = None
        if options.critic_model:
            log.info("starting the critic's vLLM engine for %s", options.critic_model)
            critic = VLLMGenerator.start(critic_engine_args(args, options))
            await critic.warm_up()
        limits = AdmissionLimits.for_engine(engine_client.vllm_config.scheduler_config.max_num_seqs,
                                            options.max_concurrent_searches, options.max_queued_searches)
        # A running search holds at most a few connections at once (read, lock and its renewal, write).
        store = build_tree_store(options.redis_url, options.tree_cache_ttl, options.tree_cache_entries,
                                 max_connections=4 * limits.max_running + 16)
        secret = options.tree_secret.encode() if options.tree_secret else await store.shared_secret()
        service = SearchService(generator, store, critic, options.max_search_tokens, secret,
                                scoped_trees=options.tree_cache_scope == "key",
                                max_search_seconds=options.max_search_seconds,
                                verifier_hosts=parse_verifier_hosts(options.verifier_hosts))
        searching = SearchingEngineClient(engine_client, service)
        state.deliberate = DeliberateState(service, Admission(limits), root_name, aliases, default_search,
                                           searching_copy(state.openai_serving_chat, searching),
                                           searching_copy(state.openai_serving_completion, searching),
                                           effort_searches)
        drain_before_shutdown(engine_client, state.deliberate, asyncio.get_running_loop())
        log.info("deliberate: searches on %s; aliases: %s; admission: %s", root_name, ", ".join(aliases) or "none",
                 limits)


def drain_before_shutdown(engine_client, deliberate: DeliberateState, loop: asyncio.AbstractEventLoop) -> None:
    """vLLM's SIGTERM handler stops the engine client (in a worker thread, with its
    --shutdown-timeout): searches drain first, within the same timeout."""
    shutdown = engine_client.shutdown
    loop_thread = threading.get_ident()  # init_state runs on the server's event loop

    def draining_shutdown(timeout: float | None = None, **kwargs):
        started = time.monotonic()
        # Called on the loop itself (not by the signal handler), waiting on it would deadlock.
        if timeout is not None and not loop.is_closed() and threading.get_ident() != loop_thread:
            asyncio.run_coroutine_threadsafe(deliberate.drain(timeout), loop).result(timeout + ANSWER_GRACE_S + 1)
        left = None if timeout is None else max(0, round(timeout - (time.monotonic() - started)))
        return shutdown(timeout=left, **kwargs)

    engine_client.shutdown = draining_shutdown


def searching_copy(serving, engine_client):
    if serving is None:
        return None
    searching = copy.copy(serving)
    searching.engine_client = engine_client
    return searching


def records_self_certainty(args: argparse.Namespace) -> bool:
    """Whether the engine runs the self-certainty recorder and this API server can read its
    records: it was named in --logits-processors (deliberate serve adds it), vLLM allows logits
    processors (not under speculative decoding), and the sampler shares this machine."""
    processors = [p if isinstance(p, str) else f"{p.__module__}:{p.__qualname__}"
                  for p in (getattr(args, "logits_processors", None) or [])]
    if RECORDER not in processors or getattr(args, "speculative_config", None):
        return False
    reason = recorder_unreachable(args)
    if reason:
        log_recorder_off(reason)
    return reason is None


def log_recorder_off(reason: str) -> None:
    log.warning("self-certainty recorder off: %s. Its records reach only an API server on the sampler's machine; "
                "the self_certainty scorer falls back to its top-k estimate (P(True) in step searches).", reason)


def recorder_unreachable(args: argparse.Namespace) -> str | None:
    """Why the engine's sampler may run on another machine than this API server, which reads the
    recorder's files from its own shared memory; None when vLLM's layout keeps them together.
    Checked from the flags alone, so it errs towards "may": a Ray cluster can place any worker."""
    if getattr(args, "headless", False):
        return "--headless (these engines serve an API server on another node)"
    if (getattr(args, "nnodes", 1) or 1) > 1:
        return f"--nnodes {args.nnodes} (the sampling worker may be on another node)"
    world = (getattr(args, "tensor_parallel_size", 1) or 1) * (getattr(args, "pipeline_parallel_size", 1) or 1)
    if getattr(args, "distributed_executor_backend", None) == "ray" and world > 1:
        return "--distributed-executor-backend ray (Ray may place the sampling worker on another node)"
    data_parallel = getattr(args, "data_parallel_size", 1) or 1
    # With an external or hybrid load balancer every API server talks to its own node's engines.
    per_node_servers = (getattr(args, "data_parallel_external_lb", False) or getattr(args, "data_parallel_hybrid_lb", False)
                        or getattr(args, "data_parallel_rank", None) is not None
                        or getattr(args, "data_parallel_start_rank", None) is not None)
    if data_parallel > 1 and not per_node_servers:
        if getattr(args, "data_parallel_backend", "mp") == "ray":
            return "--data-parallel-backend ray (Ray may place engines on other nodes)"
        local = getattr(args, "data_parallel_size_local", None)
        if local is not None and local < data_parallel:
            return f"--data-parallel-size-local {local} of {data_parallel} (the other engines are on other nodes)"
    return None


def critic_engine_args(args: argparse.Namespace, options: argparse.Namespace):
    """The actor's engine flags for the critic's model. Without stats: a second engine's
    Prometheus logger would replace the actor's `vllm:` metrics in the shared registry."""
    from dataclasses import replace

    from vllm.engine.arg_utils import AsyncEngineArgs

    from server.default_model import prepare_default_model

    engine_args = AsyncEngineArgs.from_cli_args(args)
    model = str(prepare_default_model()) if options.critic_model == "default" else options.critic_model
    memory = options.critic_gpu_memory_utilization or engine_args.gpu_memory_utilization
    return replace(engine_args, model=model, tokenizer=model, served_model_name=None,
                   gpu_memory_utilization=memory, logits_processors=None, disable_log_stats=True)


def plugin() -> DeliberatePlugin:
    return DeliberatePlugin()
