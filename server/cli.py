"""`deliberate serve`.

`serve` is vLLM's own `vllm serve`: vLLM's argument parser (every flag of vLLM's OpenAI server
and engine) with deliberate's flags added, vLLM's launcher, and deliberate's endpoint plugin
enabled. It adds only deliberate's defaults: the embedded model when none is named, the
self-certainty recorder among the logits processors, and CPU-friendly engine defaults.
"""

from __future__ import annotations

import os
import sys

from server.plugin import (
    PLUGIN_NAME, RECORDER, add_deliberate_args, configure_logging, log_recorder_off, parse_aliases, parse_effort_searches,
    parse_search_spec, recorder_unreachable,
)


def build_parser():
    from vllm.entrypoints.launchers.cli_args import make_arg_parser
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = FlexibleArgumentParser(prog="deliberate", description="An OpenAI-compatible server that thinks before it answers.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser(
        "serve", help="Start the HTTP server (vLLM's OpenAI server with deliberate's search).",
        usage="deliberate serve [MODEL] [options]",
        description="vLLM's OpenAI-compatible server with the search extension. Every `vllm serve` flag "
        "works as in vLLM; MODEL `default` (or none) is the embedded SmolLM2-135M-Instruct.")
    serve = make_arg_parser(serve)
    add_deliberate_args(serve)
    serve.set_defaults(model="default")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    serve(args)


def serve(args) -> None:
    from vllm.entrypoints.cli.serve import ServeSubcommand
    from vllm.entrypoints.launchers.cli_args import validate_parsed_serve_args

    configure_logging()
    prepare_serve_args(args)
    validate_parsed_serve_args(args)
    ServeSubcommand.cmd(args)


def prepare_serve_args(args) -> None:
    """deliberate's defaults on vLLM's parsed `serve` flags, and the plugin enabled."""
    from server.default_model import DEFAULT_MODEL_NAME, prepare_default_model
    from server.engine import apply_cpu_defaults

    if args.model_tag:
        args.model, args.model_tag = args.model_tag, None
    # Checked here so that a bad flag stops the start before the engine loads.
    parse_aliases(args.alias)
    parse_effort_searches(args.reasoning_effort_search)
    if args.default_search:
        parse_search_spec(args.default_search, "--default-search")
    if args.model == "default":
        args.model = str(prepare_default_model())
        args.served_model_name = args.served_model_name or [DEFAULT_MODEL_NAME]
    unreachable = recorder_unreachable(args)
    if unreachable:
        log_recorder_off(unreachable)
    elif not args.speculative_config:  # vLLM allows no logits processor under speculative decoding
        args.logits_processors = [*(args.logits_processors or []), RECORDER]
    from vllm.platforms import current_platform

    if current_platform.is_cpu():
        apply_cpu_defaults(args)
    os.environ["VLLM_PLUGINS"] = plugins_with_deliberate(os.environ.get("VLLM_PLUGINS"))


def plugins_with_deliberate(allowed: str | None) -> str:
    """VLLM_PLUGINS naming deliberate. Unset, it meant "every general plugin": keep that."""
    from importlib.metadata import entry_points

    if allowed is None:
        names = [plugin.name for plugin in entry_points(group="vllm.general_plugins")]
    else:
        names = [name for name in allowed.split(",") if name]
    return ",".join(dict.fromkeys([*names, PLUGIN_NAME]))
