"""openapi.yaml is the contract: it must equal what the app serves (`make openapi` refreshes it)."""

import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
CONTRACT = ROOT / "openapi.yaml"


def test_openapi_yaml_matches_the_app(tmp_path):
    # In a fresh interpreter: vLLM's schema names some models by what else has been imported.
    served = tmp_path / "served.yaml"
    subprocess.run([sys.executable, "-m", "tests.dump_openapi", str(served)], cwd=ROOT, check=True, timeout=300)
    assert yaml.safe_load(CONTRACT.read_text()) == yaml.safe_load(served.read_text()), \
        "openapi.yaml is stale: run `make openapi`"


def test_the_contract_is_vllms_plus_the_search_extension():
    contract = yaml.safe_load(CONTRACT.read_text())
    paths = contract["paths"]
    for path in ("/v1/chat/completions", "/v1/completions", "/v1/models", "/health", "/metrics", "/tokenize",
                 "/detokenize", "/version", "/v1/search/trees/{tree_id}", "/v1/search/trees",
                 "/v1/search/trees/{tree_id}/events", "/trees", "/trees/{tree_id}"):
        assert path in paths, path
    schemas = contract["components"]["schemas"]
    for request in ("ChatCompletionRequest", "CompletionRequest"):
        search = schemas[request]["properties"]["search"]["anyOf"][0]
        strategies = {option["title"]: option["properties"] for option in search["anyOf"]}
        assert set(strategies) == {"best_of_n", "self_certainty", "self_consistency", "self_agreement", "mcts", "critic"}
        assert strategies["mcts"]["iterations"] == {"type": "integer", "default": 16, "minimum": 1, "maximum": 1024}
        assert strategies["self_agreement"]["n"]["default"] == 5
