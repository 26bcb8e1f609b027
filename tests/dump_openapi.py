"""The served app's OpenAPI contract (vLLM's routes with deliberate's plugin attached) as YAML:
`make openapi` refreshes openapi.yaml with it. Built without an engine, as vLLM builds its app."""

import os
import sys
from pathlib import Path

import yaml


def served_contract() -> dict:
    os.environ["VLLM_PLUGINS"] = "deliberate"
    from vllm.entrypoints.launchers.app import build_app

    from server.cli import build_parser

    args = build_parser().parse_args(["serve"])
    return build_app(args, ("generate",)).openapi()


def contract_yaml() -> str:
    return yaml.safe_dump(served_contract(), sort_keys=False, allow_unicode=True)


if __name__ == "__main__":
    Path(sys.argv[1] if len(sys.argv) > 1 else "openapi.yaml").write_text(contract_yaml())
