"""`deliberate serve` and `deliberate bench`.

`serve` takes every vLLM engine flag exactly as vLLM does: the flags come from vLLM's own
`AsyncEngineArgs.add_cli_args`, not from a copy of them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys

from search import parse_params
from search.types import InvalidSearchParam

log = logging.getLogger("deliberate")


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
    try:
        parse_params(None, spec)
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


def build_parser():
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = FlexibleArgumentParser(prog="deliberate", description="An OpenAI-compatible server that thinks before it answers.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser(
        "serve", help="Start the HTTP server.",
        description="Start the OpenAI-compatible server. Every vLLM engine flag is accepted as vLLM accepts it.")
    serve.add_argument("model_tag", nargs="?", metavar="MODEL",
                       help="Model directory, or `default` for the embedded SmolLM2-135M-Instruct "
                       "(same as --model; vLLM's `serve` takes it this way too).")
    serve.add_argument("--host", default="127.0.0.1", help="Address to listen on (default 127.0.0.1).")
    serve.add_argument("--port", type=int, default=8000, help="Port to listen on (default 8000).")
    serve.add_argument(
        "--alias", action="append", default=[], metavar="NAME=SPEC",
        help="A model name that applies a search, e.g. smollm2-sc8=self_consistency,n=8 "
        "or NAME='{\"strategy\": \"best_of_n\", \"n\": 4}'. Repeatable; listed by /v1/models.")
    serve.add_argument("--default-search", metavar="SPEC",
                       help="A search applied to every request for the model itself (same syntax as --alias).")
    serve.add_argument("--redis-url", metavar="URL",
                       help="Share search trees through Redis (e.g. redis://127.0.0.1:6379/0); default: in-process LRU.")
    serve.add_argument("--tree-cache-ttl", type=int, default=3600, metavar="SECONDS",
                       help="How long a stored search tree is kept (default 3600).")
    serve.add_argument("--tree-cache-entries", type=int, default=256, metavar="N",
                       help="Trees kept by the in-process store (default 256).")
    serve.add_argument("--critic-model", metavar="MODEL",
                       help="A second model (directory, or `default`) that judges and critiques steps "
                       "for the critic strategy; it gets its own engine with the same engine flags.")
    serve.add_argument("--critic-gpu-memory-utilization", type=float, metavar="FRACTION",
                       help="The critic engine's share of GPU memory (default: as --gpu-memory-utilization); "
                       "lower both so that the two engines fit.")
    AsyncEngineArgs.add_cli_args(serve)
    serve.set_defaults(model="default")
    commands.add_parser("bench", help="Benchmarks: `deliberate bench --help`.", add_help=False)
    return parser


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bench"]:
        from bench.run import main as bench_main

        return bench_main(argv[1:])
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    serve(args)


def serve(args) -> None:
    import uvicorn
    from vllm.engine.arg_utils import AsyncEngineArgs

    from server.app import build_app
    from server.default_model import DEFAULT_MODEL_NAME, prepare_default_model
    from server.engine import VLLMGenerator
    from server.serving import ServedModel, ServerState
    from server.tree_store import build_tree_store

    if args.model_tag:
        args.model = args.model_tag
    aliases = parse_aliases(args.alias)
    default_search = parse_search_spec(args.default_search, "--default-search") if args.default_search else None
    if args.model == "default":
        args.model = str(prepare_default_model())
        args.served_model_name = args.served_model_name or [DEFAULT_MODEL_NAME]
    names = args.served_model_name or [args.model]
    names = [names] if isinstance(names, str) else list(names)
    models = {name: ServedModel(name, default_search) for name in names}
    for alias, spec in aliases.items():
        if alias in models:
            raise SystemExit(f"--alias {alias}: the name is already taken by the served model.")
        models[alias] = ServedModel(alias, spec)
    engine_args = AsyncEngineArgs.from_cli_args(args)
    critic_args = critic_engine_args(args, engine_args) if args.critic_model else None

    async def run() -> None:
        log.info("starting the vLLM engine for %s (about 30-60 s on a CPU)", args.model)
        generator = VLLMGenerator.start(engine_args)
        critic = None
        try:
            await generator.warm_up()
            if critic_args is not None:
                log.info("starting the critic's vLLM engine for %s", critic_args.model)
                critic = VLLMGenerator.start(critic_args)
                await critic.warm_up()
            store = build_tree_store(args.redis_url, args.tree_cache_ttl, args.tree_cache_entries)
            state = ServerState(generator, models, names[0], store, generator.model_config.get_diff_sampling_param(),
                                critic)
            config = uvicorn.Config(build_app(state), host=args.host, port=args.port, log_level="info",
                                    timeout_graceful_shutdown=5)
            log.info("serving %s on http://%s:%d/v1", ", ".join(models), args.host, args.port)
            await uvicorn.Server(config).serve()
        finally:
            if critic is not None:
                critic.shutdown()
            generator.shutdown()

    # As vLLM's own server does: SIGTERM unwinds like Ctrl-C, so the engine's processes are
    # shut down (even mid-startup) instead of being orphaned.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        log.info("stopped")


def critic_engine_args(args, engine_args):
    """The actor's engine flags for the critic's model. Without stats: a second engine's
    Prometheus logger would replace the actor's `vllm:` metrics in the shared registry."""
    from dataclasses import replace

    from server.default_model import prepare_default_model

    model = str(prepare_default_model()) if args.critic_model == "default" else args.critic_model
    memory = args.critic_gpu_memory_utilization or engine_args.gpu_memory_utilization
    return replace(engine_args, model=model, tokenizer=model, served_model_name=None,
                   gpu_memory_utilization=memory, logits_processors=None, disable_log_stats=True)


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")
