"""deliberate as a vLLM endpoint plugin (the `vllm.endpoint_plugins` entry point `deliberate`).

vLLM's own OpenAI server loads it when `VLLM_PLUGINS` names it: `attach_router` takes over
chat, completions and models and adds the tree routes; `init_state` builds the search service
once vLLM's own serving objects exist. deliberate's flags come from `deliberate serve`'s command
line, or, under a plain `vllm serve`, from the `DELIBERATE_ARGS` environment variable.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import logging
import os
import shlex

from search.types import InvalidSearchParam

log = logging.getLogger("deliberate")

PLUGIN_NAME = "deliberate"
ARGS_ENV = "DELIBERATE_ARGS"
RECORDER = "server.self_certainty_recorder:SelfCertaintyRecorder"


def add_deliberate_args(parser) -> None:
    """deliberate's own flags (the one definition, for `deliberate serve` and DELIBERATE_ARGS)."""
    group = parser.add_argument_group("deliberate", "The search extension.")
    group.add_argument(
        "--alias", action="append", default=[], metavar="NAME=SPEC",
        help="A model name that applies a search, e.g. smollm2-sc8=self_consistency,n=8 "
        "or NAME='{\"strategy\": \"best_of_n\", \"n\": 4}'. Repeatable; listed by /v1/models.")
    group.add_argument("--default-search", metavar="SPEC",
                       help="A search applied to every request for the model itself (same syntax as --alias).")
    group.add_argument("--redis-url", metavar="URL",
                       help="Share search trees through Redis (e.g. redis://127.0.0.1:6379/0); default: in-process LRU.")
    group.add_argument("--tree-cache-ttl", type=int, default=3600, metavar="SECONDS",
                       help="How long a stored search tree is kept (default 3600).")
    group.add_argument("--tree-cache-entries", type=int, default=256, metavar="N",
                       help="Trees kept by the in-process store (default 256).")
    group.add_argument("--critic-model", metavar="MODEL",
                       help="A second model (directory, or `default`) that judges and critiques steps "
                       "for the critic strategy; it gets its own engine with the same engine flags.")
    group.add_argument("--critic-gpu-memory-utilization", type=float, metavar="FRACTION",
                       help="The critic engine's share of GPU memory (default: as --gpu-memory-utilization); "
                       "lower both so that the two engines fit.")


DELIBERATE_DESTS = ("alias", "default_search", "redis_url", "tree_cache_ttl", "tree_cache_entries",
                    "critic_model", "critic_gpu_memory_utilization")


def deliberate_args(args: argparse.Namespace) -> argparse.Namespace:
    """deliberate's flags: from `deliberate serve`'s namespace, else from DELIBERATE_ARGS."""
    if all(hasattr(args, dest) for dest in DELIBERATE_DESTS):
        return args
    parser = argparse.ArgumentParser(prog=ARGS_ENV, add_help=False)
    add_deliberate_args(parser)
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


def parse_aliases(values: list[str]) -> dict[str, dict]:
    aliases = {}
    for value in values:
        name, sep, spec = value.partition("=")
        if not sep or not name:
            raise SystemExit(f"--alias: expected NAME=SPEC, got {value!r}")
        aliases[name.strip()] = parse_search_spec(spec, f"--alias {name}")
    return aliases


class DeliberateState:
    """What the routes need: the search service, the model names that apply a search, and
    deliberate's copies of vLLM's chat and completion serving objects (with a searching engine)."""

    def __init__(self, service, root_name: str, aliases: dict[str, dict], default_search: dict | None,
                 chat, completion):
        self.service = service
        self.root_name = root_name
        self.aliases = aliases
        self.default_search = default_search
        self.chat = chat
        self.completion = completion

    def effective_search(self, model: str | None, requested: dict | None) -> dict | None:
        """The request's `search` over the alias's (or the model's default), or None for plain serving."""
        applied = self.aliases.get(model or "") if model in self.aliases else self.default_search
        if applied is None:
            return requested
        return {**applied, **(requested or {})}

    async def close(self) -> None:
        await self.service.tree_store.close()
        if self.service.critic is not None:
            self.service.critic.shutdown()


class DeliberatePlugin:
    name = PLUGIN_NAME
    required_tasks = ("generate",)

    def attach_router(self, app) -> None:
        from server.routes import router

        app.include_router(router)
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
        from server.engine import VLLMGenerator
        from server.routes import SearchingEngineClient
        from server.search_service import SearchService
        from server.tree_store import build_tree_store

        if engine_client is None:
            raise SystemExit("deliberate needs an engine: it cannot run on vLLM's render-only server.")
        options = deliberate_args(args)
        root_name = state.openai_serving_models.model_name()
        aliases = parse_aliases(options.alias)
        if root_name in aliases:
            raise SystemExit(f"--alias {root_name}: the name is already taken by the served model.")
        default_search = parse_search_spec(options.default_search, "--default-search") if options.default_search else None
        generator = VLLMGenerator(engine_client, engine_client.model_config.model, records_self_certainty(args))
        await generator.warm_up()
        critic = None
        if options.critic_model:
            log.info("starting the critic's vLLM engine for %s", options.critic_model)
            critic = VLLMGenerator.start(critic_engine_args(args, options))
            await critic.warm_up()
        store = build_tree_store(options.redis_url, options.tree_cache_ttl, options.tree_cache_entries)
        service = SearchService(generator, store, critic)
        searching = SearchingEngineClient(engine_client, service)
        state.deliberate = DeliberateState(service, root_name, aliases, default_search,
                                           searching_copy(state.openai_serving_chat, searching),
                                           searching_copy(state.openai_serving_completion, searching))
        log.info("deliberate: searches on %s; aliases: %s", root_name, ", ".join(aliases) or "none")


def searching_copy(serving, engine_client):
    if serving is None:
        return None
    searching = copy.copy(serving)
    searching.engine_client = engine_client
    return searching


def records_self_certainty(args: argparse.Namespace) -> bool:
    """Whether the engine runs the self-certainty recorder: it was named in --logits-processors
    (deliberate serve adds it), and vLLM allows logits processors (not under speculative decoding)."""
    processors = [p if isinstance(p, str) else f"{p.__module__}:{p.__qualname__}"
                  for p in (getattr(args, "logits_processors", None) or [])]
    return RECORDER in processors and not getattr(args, "speculative_config", None)


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
