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
from search import STRATEGIES
from search.params import rules

SERVING_PROPERTIES = {
    "budget_tokens": {"type": "integer", "minimum": 1,
                      "description": "Hard cap on the tokens the whole search generates (a larger one continues a stored mcts tree)."},
    "cache": {"type": "boolean", "default": True, "description": "Serve from and store in the tree cache."},
    "tree_id": {"type": "string", "description": "Resume or re-read the stored tree of an earlier identical search."},
    "return_trace": {"type": "boolean", "default": False, "description": "Add the search's trace to the report."},
}
JSON_TYPES = {"int": "integer", "float": "number", "bool": "boolean", "str": "string"}


def parameter_schema(params_class: type, declared) -> dict[str, Any]:
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
    if declared.name == "scorer":
        schema["anyOf"][0]["enum"] = list(SCORERS)
    return schema


def strategy_schema(name: str) -> dict[str, Any]:
    params_class = STRATEGIES[name].params
    properties = {"strategy": {"const": name}}
    properties.update({declared.name: parameter_schema(params_class, declared) for declared in fields(params_class)})
    properties.update(SERVING_PROPERTIES)
    return {"title": name, "type": "object", "properties": properties, "additionalProperties": False}


SEARCH_SCHEMA = {
    "title": "Search",
    "description": "deliberate extension: run a test-time search for this request. `strategy` may be left out "
                   "when the model is an alias or has a default search, whose fields the request's complete.",
    "anyOf": [strategy_schema(name) for name in STRATEGIES],
}

# Checked as a plain object (by the search service, which names the bad field), published as above.
SearchField = Annotated[dict[str, Any], WithJsonSchema(SEARCH_SCHEMA)]
