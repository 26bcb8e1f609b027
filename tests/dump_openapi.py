"""Write the app's OpenAPI contract as YAML: `make openapi` refreshes openapi.yaml with it."""

import sys
from pathlib import Path

import yaml

from server.app import build_app


def contract_yaml() -> str:
    return yaml.safe_dump(build_app().openapi(), sort_keys=False, allow_unicode=True)


if __name__ == "__main__":
    Path(sys.argv[1] if len(sys.argv) > 1 else "openapi.yaml").write_text(contract_yaml())
