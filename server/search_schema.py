"""The `search` request field's published schema, made from the strategies' parameter classes
(their fields, defaults, ranges and choices), so openapi.yaml documents every strategy exactly.

The field is checked by the search service against the same classes, so a bad value is a 400
that names `search.<field>`, and an alias's search can be completed by the request's.
"""

from __future__ import annotations

from dataclasses import MISSING, fields
from typing import Annotated, Any

from pydantic import WithJsonSchema

from scorers import SCORERS
from scorers.http_verifier import DEFAULT_TIMEOUT_S, MAX_TIMEOUT_S, MAX_URL_LENGTH
from search import STRATEGIES
from search.params import rules
from server.search_service import ServingOptions

JSON_TYPES = {"int": "integer", "float": "number", "bool": "boolean", "str": "string"}
VERIFIER_SCHEMA = {
    "title": "HTTP verifier",
    "description": "POST {question, candidates} to url; the reply {\"scores\": [...]} has one number (or one "
                   "list of step scores) per candidate. A failed verifier falls back to the strategy's own "
                   "scorer, with a note in the report. The host must be one of the server's --verifier-hosts.",
    "type": "object",
    "properties": {
        "url": {"type": "string", "format": "uri", "maxLength": MAX_URL_LENGTH},
        "timeout_s": {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_TIMEOUT_S,
                      "default": DEFAULT_TIMEOUT_S},
    },
    "required": ["url"],
    "additionalProperties": False,
}


def parameter_schema(params_class: type, declared) -> dict[str, Any]:
    settings = declared.metadata.get("settings")
    if settings is not None:  # a switch with settings of its own: true, false or an object of them
        properties = {inner.name: parameter_schema(settings, inner) for inner in fields(settings)}
        return {"anyOf": [{"type": "boolean"}, {"type": "object", "properties": properties,
                                                "additionalProperties": False}, {"type": "null"}],
                "default": False, "description": declared.metadata["doc"]}
    kind = str(declared.type)
    schema: dict[str, Any] = {"type": JSON_TYPES[kind.split("|")[0].strip()]}
    if "None" in kind:
        schema = {"anyOf": [schema, {"type": "null"}]}
    if declared.default is not MISSING:
        schema["default"] = declared.default
    declared_rules = rules(params_class, declared.name)
    if "range" in declared_rules:
        low, high, low_inclusive = declared_rules["range"]
        schema["minimum" if low_inclusive else "exclusiveMinimum"] = low
        schema["maximum"] = high
    if "choices" in declared_rules:
        schema["enum"] = list(declared_rules["choices"])
    if declared.metadata.get("doc"):
        schema["description"] = declared.metadata["doc"]
    if declared.name == "scorer":
        schema["anyOf"][0]["enum"] = list(SCORERS)
        schema["anyOf"].insert(1, VERIFIER_SCHEMA)
    return schema


def strategy_schema(name: str) -> dict[str, Any]:
    params_class = STRATEGIES[name].params
    properties = {"strategy": {"const": name}}
    for owner in (params_class, ServingOptions):
        properties.update({declared.name: parameter_schema(owner, declared) for declared in fields(owner)})
    return {"title": name, "type": "object", "properties": properties, "additionalProperties": False}


SEARCH_SCHEMA = {
    "title": "Search",
    "description": "deliberate extension: run a test-time search for this request. `strategy` may be left out "
                   "when the model is an alias or has a default search, whose fields the request's complete.",
    "anyOf": [strategy_schema(name) for name in STRATEGIES],
}

# Checked as a plain object (by the search service, which names the bad field), published as above.
SearchField = Annotated[dict[str, Any], WithJsonSchema(SEARCH_SCHEMA)]
