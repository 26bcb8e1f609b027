"""schemathesis against the real server, from openapi.yaml: generated requests, valid and not, to
every route deliberate serves, with the model pinned and generations short. No response may be
a 5xx, and every response must be one the contract declares (status, content type, body).

`make test` runs a bounded pass (FUZZ_EXAMPLES per route, default 150: about 3 minutes here); `make fuzz` a longer one.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import hypothesis
import pytest
import schemathesis
import yaml
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance, response_schema_conformance, status_code_conformance,
)

from tests.conftest import AUTH, MODEL

CONTRACT = Path(__file__).resolve().parents[2] / "openapi.yaml"
ROUTES = {"/v1/chat/completions", "/v1/completions", "/v1/models", "/v1/search/trees", "/v1/search/trees/{tree_id}",
          "/tokenize", "/detokenize", "/version", "/health"}
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "150"))
MAX_TOKENS = 8
SEARCH_INTEGER_MAX = 4
SEARCH_BUDGET = 256
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


def fuzzed_contract() -> dict:
    """openapi.yaml with deliberate's routes only, the model pinned and every length short, so
    a generated request costs milliseconds of engine time, not minutes."""
    contract = copy.deepcopy(yaml.safe_load(CONTRACT.read_text()))
    contract["paths"] = {path: ops for path, ops in contract["paths"].items() if path in ROUTES}
    short = {"type": "integer", "minimum": 1, "maximum": MAX_TOKENS}
    for name in ("ChatCompletionRequest", "CompletionRequest", "TokenizeCompletionRequest", "TokenizeChatRequest"):
        request = contract["components"]["schemas"].get(name, {})
        properties = request.get("properties", {})
        if "max_tokens" in properties:  # unset, a request may generate up to the model's whole context
            request["required"] = sorted({*request.get("required", []), "max_tokens"})
        if "model" in properties:
            properties["model"] = {"enum": [MODEL]}
        for field in ("max_tokens", "max_completion_tokens"):
            if field in properties:
                properties[field] = short
        if "min_tokens" in properties:
            properties["min_tokens"] = {"type": "integer", "minimum": 0, "maximum": MAX_TOKENS}
        if "n" in properties:
            properties["n"] = {"type": "integer", "minimum": 1, "maximum": 2}
        if "search" in properties:
            narrow_integers(properties["search"])
    return contract


def narrow_integers(schema) -> None:
    """Every integer in a search at most SEARCH_INTEGER_MAX (widths, iterations, depths) and a
    budget of at most SEARCH_BUDGET tokens: a generated mcts search then ends in seconds."""
    if isinstance(schema, list):
        for item in schema:
            narrow_integers(item)
        return
    if not isinstance(schema, dict):
        return
    for name, value in schema.get("properties", {}).items():
        if name == "budget_tokens":
            schema["properties"][name] = {"type": "integer", "minimum": 1, "maximum": SEARCH_BUDGET}
        elif isinstance(value, dict) and value.get("type") == "integer":
            value["maximum"] = min(value.get("maximum", SEARCH_INTEGER_MAX), SEARCH_INTEGER_MAX)
    for key in ("anyOf", "oneOf", "allOf", "properties"):
        narrow_integers(list(schema[key].values()) if key == "properties" and key in schema else schema.get(key))


schema = schemathesis.openapi.from_dict(fuzzed_contract())


@schema.parametrize()
@hypothesis.settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                     phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
                     suppress_health_check=list(hypothesis.HealthCheck))
def test_the_server_keeps_its_contract(case, server):
    response = case.call(base_url=server, headers=AUTH, timeout=300)
    case.validate_response(response, checks=CHECKS)


def test_the_fuzzed_routes_are_in_the_contract():
    assert ROUTES <= set(yaml.safe_load(CONTRACT.read_text())["paths"])
    with pytest.raises(KeyError):
        fuzzed_contract()["paths"]["/v1/responses"]
