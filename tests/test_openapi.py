"""openapi.yaml is the contract: it must equal what the app serves (`make openapi` refreshes it)."""

from pathlib import Path

import yaml

from server.app import build_app

CONTRACT = Path(__file__).resolve().parent.parent / "openapi.yaml"


def test_openapi_yaml_matches_the_app():
    served = build_app().openapi()
    assert yaml.safe_load(CONTRACT.read_text()) == served, "openapi.yaml is stale: run `make openapi`"


def test_every_endpoint_is_in_the_contract():
    paths = yaml.safe_load(CONTRACT.read_text())["paths"]
    for path in ("/v1/chat/completions", "/v1/completions", "/v1/models", "/health", "/metrics"):
        assert path in paths
    for path in ("/v1/chat/completions", "/v1/completions"):
        responses = paths[path]["post"]["responses"]
        assert "400" in responses and "422" not in responses
